package postgres

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/oaas/pm/internal/store"
)

const auditColumns = `id, recorded_at, principal, role, auth_method, action, target, outcome,
    status_code, message, correlation_id, source, idempotency_key`

const sqlAppendAudit = `
INSERT INTO audit_records (recorded_at, principal, role, auth_method, action, target, outcome,
    status_code, message, correlation_id, source, idempotency_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
RETURNING id`

// AppendAudit implements store.Audit.
func (r *repo) AppendAudit(ctx context.Context, rec store.AuditRecord) (store.AuditRecord, error) {
	rec.Time = r.now()
	err := r.queryRow(ctx, "audit record", "", sqlAppendAudit, []any{
		rec.Time, rec.Principal, rec.Role, rec.AuthMethod, rec.Action, rec.Target, string(rec.Outcome),
		rec.Code, rec.Message, rec.CorrelationID, rec.Source, rec.IdempotencyKey,
	}, &rec.ID)
	if err != nil {
		return store.AuditRecord{}, err
	}
	return rec, nil
}

// ListAudit implements store.Audit. The statement has only the conditions
// the filter uses (at most 256 shapes, each prepared once per connection),
// so that the planner sees plain equalities and picks the matching index
// instead of a generic plan for "empty or equal" conditions.
func (r *repo) ListAudit(ctx context.Context, f store.AuditFilter) ([]store.AuditRecord, error) {
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	for _, eq := range []struct{ col, v string }{
		{"principal", f.Principal}, {"action", f.Action}, {"target", f.Target}, {"outcome", string(f.Outcome)},
	} {
		if eq.v != "" {
			where = append(where, eq.col+" = "+arg(eq.v))
		}
	}
	if !f.Since.IsZero() {
		where = append(where, "recorded_at >= "+arg(f.Since))
	}
	if !f.Until.IsZero() {
		where = append(where, "recorded_at < "+arg(f.Until))
	}
	if f.Before.ID > 0 {
		where = append(where, "(recorded_at, id) < ("+arg(f.Before.Time)+", "+arg(f.Before.ID)+")")
	}
	var sql strings.Builder
	sql.WriteString("SELECT " + auditColumns + " FROM audit_records")
	if len(where) > 0 {
		sql.WriteString(" WHERE " + strings.Join(where, " AND "))
	}
	sql.WriteString(" ORDER BY recorded_at DESC, id DESC")
	if f.Limit > 0 {
		sql.WriteString(" LIMIT " + arg(f.Limit))
	}
	return queryAll(ctx, r, "list audit records", sql.String(), args, scanAudit)
}

// purgeAuditBatch bounds one DELETE of PurgeAudit, so that a first purge
// of a large backlog (say after AUDIT_RETENTION was lowered) is many
// statements that each finish within the per-call timeout, not one that
// never does.
const purgeAuditBatch = 5000

const sqlPurgeAudit = `
DELETE FROM audit_records WHERE id IN (
    SELECT id FROM audit_records WHERE recorded_at < $1 ORDER BY recorded_at LIMIT $2)`

// PurgeAudit implements store.Audit, in batches of purgeAuditBatch.
func (r *repo) PurgeAudit(ctx context.Context, before time.Time) (int, error) {
	total := 0
	for {
		tag, err := r.exec(ctx, "purge audit records", "", sqlPurgeAudit, before, purgeAuditBatch)
		if err != nil {
			return total, err
		}
		n := int(tag.RowsAffected())
		total += n
		if n < purgeAuditBatch {
			return total, nil
		}
	}
}

func scanAudit(row pgx.Row) (store.AuditRecord, error) {
	var (
		rec     store.AuditRecord
		outcome string
	)
	err := row.Scan(&rec.ID, &rec.Time, &rec.Principal, &rec.Role, &rec.AuthMethod, &rec.Action, &rec.Target,
		&outcome, &rec.Code, &rec.Message, &rec.CorrelationID, &rec.Source, &rec.IdempotencyKey)
	if err != nil {
		return store.AuditRecord{}, err
	}
	rec.Outcome = store.AuditOutcome(outcome)
	rec.Time = rec.Time.UTC()
	return rec, nil
}
