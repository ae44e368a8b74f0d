package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/oaas/pm/internal/store"
)

// stepDoc is a store.StepRow in the operations.steps array. Every field is
// always written (no omitempty), so that a step can be found by
// containment on its cluster.
type stepDoc struct {
	Cluster  string `json:"cluster"`
	UnitID   string `json:"unit_id"`
	State    string `json:"state"`
	Attempts int    `json:"attempts"`
	Error    string `json:"error"`
}

func encodeStep(s store.StepRow) stepDoc {
	return stepDoc{Cluster: s.Cluster, UnitID: s.UnitID, State: s.State, Attempts: s.Attempts, Error: s.Error}
}

// activeStates is the SQL of "an active operation". It is spelled out in
// each query, never passed as a parameter, so that the planner matches the
// partial indexes (migrations/00004) that carry the same predicate.
const activeStates = `state IN ('running', 'waiting')`

// opColumns is what every query returning operations selects, in the
// order scanOperation reads.
const opColumns = `id, kind, deployment_key, drop_deployment, state, steps, owner, lease_until, error, created_at, updated_at`

const sqlInsertOperation = `
INSERT INTO operations (` + opColumns + `)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)`

// oneActiveIndex is the unique partial index that allows one active
// operation per deployment.
const oneActiveIndex = "operations_one_active"

// CreateOperation implements store.Operations. The unique partial index,
// not a prior read, refuses a second active operation of a deployment.
func (r *repo) CreateOperation(ctx context.Context, op store.OperationRow) error {
	steps := make([]stepDoc, len(op.Steps))
	for i, s := range op.Steps {
		steps[i] = encodeStep(s)
	}
	doc, err := json.Marshal(steps)
	if err != nil {
		return fmt.Errorf("operation %q: encode steps: %w", op.ID, err)
	}
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	_, err = r.q.Exec(octx, sqlInsertOperation,
		op.ID, op.Kind, op.DeploymentKey, op.Drop, op.State, doc,
		op.Owner, nullTime(op.LeaseUntil), op.Error, r.now())
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.ConstraintName == oneActiveIndex {
		return fmt.Errorf("deployment %q: %w", op.DeploymentKey, store.ErrOperationActive)
	}
	if err != nil {
		return r.classify(ctx, "operation", op.ID, err)
	}
	return nil
}

const sqlGetOperation = `SELECT ` + opColumns + ` FROM operations WHERE id = $1`

// GetOperation implements store.Operations.
func (r *repo) GetOperation(ctx context.Context, id string) (store.OperationRow, error) {
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	op, err := scanOperation(r.q.QueryRow(octx, sqlGetOperation, id))
	if err != nil {
		return store.OperationRow{}, r.classify(ctx, "operation", id, err)
	}
	return op, nil
}

// ListOperations implements store.Operations: oldest first, ties (equal
// clock readings) by id in byte order, as the memory store breaks them.
func (r *repo) ListOperations(ctx context.Context, f store.OperationFilter) ([]store.OperationRow, error) {
	var w filter
	if f.Active {
		w.conds = append(w.conds, activeStates)
	}
	if f.DeploymentKey != "" {
		w.add("deployment_key = ?", f.DeploymentKey)
	}
	if !f.AfterTime.IsZero() {
		w.args = append(w.args, f.AfterTime, f.AfterID)
		n := len(w.args)
		w.conds = append(w.conds, fmt.Sprintf(`(created_at, id COLLATE "C") > ($%d, $%d)`, n-1, n))
	}
	sql, args := w.page(`SELECT `+opColumns+` FROM operations`+w.sql()+` ORDER BY created_at, id COLLATE "C"`, f.Limit, 0)
	return queryAll(ctx, r, "list operations", sql, args, scanOperation)
}

// sqlUpdateSteps replaces, in one statement, the steps whose cluster is a
// key of $3 (a JSON object cluster → step) and appends the ones the
// operation does not have yet, keeping the existing order. It is one UPDATE
// of the operation row, so the owner check and the write cannot be split by
// a claimer: the row lock makes a concurrent claim either land first (and
// then the owner no longer matches) or wait.
const sqlUpdateSteps = `
UPDATE operations SET
    steps = COALESCE(
        (SELECT jsonb_agg(COALESCE($3::jsonb -> (e->>'cluster'), e) ORDER BY i)
         FROM jsonb_array_elements(steps) WITH ORDINALITY AS s(e, i)), '[]'::jsonb)
      || COALESCE(
        (SELECT jsonb_agg(v ORDER BY k)
         FROM jsonb_each($3::jsonb) AS n(k, v)
         WHERE NOT steps @> jsonb_build_array(jsonb_build_object('cluster', k))), '[]'::jsonb),
    updated_at = $4
WHERE id = $1 AND owner = $2 AND owner <> ''`

// UpdateSteps implements store.Operations.
func (r *repo) UpdateSteps(ctx context.Context, id, owner string, steps ...store.StepRow) error {
	byCluster := make(map[string]stepDoc, len(steps))
	for _, st := range steps {
		byCluster[st.Cluster] = encodeStep(st)
	}
	doc, err := json.Marshal(byCluster)
	if err != nil {
		return fmt.Errorf("operation %q: encode steps: %w", id, err)
	}
	return r.leasedWrite(ctx, id, owner, sqlUpdateSteps, doc, r.now())
}

// sqlRecordSteps is sqlUpdateSteps and sqlPutRollouts in one statement:
// the rollouts ($5...) are written only if the owner's update of the steps
// matched. One statement is atomic without a transaction.
const sqlRecordSteps = `
WITH op AS (
    UPDATE operations SET
        steps = COALESCE(
            (SELECT jsonb_agg(COALESCE($3::jsonb -> (e->>'cluster'), e) ORDER BY i)
             FROM jsonb_array_elements(steps) WITH ORDINALITY AS s(e, i)), '[]'::jsonb)
          || COALESCE(
            (SELECT jsonb_agg(v ORDER BY k)
             FROM jsonb_each($3::jsonb) AS n(k, v)
             WHERE NOT steps @> jsonb_build_array(jsonb_build_object('cluster', k))), '[]'::jsonb),
        updated_at = $4
    WHERE id = $1 AND owner = $2 AND owner <> ''
    RETURNING id
), ro AS (
    INSERT INTO rollouts (deployment_key, cluster, unit_id, state, condition, availability,
                          availability_source, error, attempts)
    SELECT * FROM unnest($5::text[], $6::text[], $7::text[], $8::text[], $9::text[],
                         $10::double precision[], $11::text[], $12::text[], $13::integer[])
    WHERE EXISTS (SELECT 1 FROM op)
    ON CONFLICT (deployment_key, cluster) DO UPDATE SET
        unit_id = EXCLUDED.unit_id, state = EXCLUDED.state, condition = EXCLUDED.condition,
        availability = EXCLUDED.availability, availability_source = EXCLUDED.availability_source,
        error = EXCLUDED.error, attempts = EXCLUDED.attempts
)
SELECT count(*) FROM op`

// RecordSteps implements store.Operations.
func (r *repo) RecordSteps(ctx context.Context, id, owner string, steps []store.StepRow, rollouts []store.RolloutRow) error {
	byCluster := make(map[string]stepDoc, len(steps))
	for _, st := range steps {
		byCluster[st.Cluster] = encodeStep(st)
	}
	doc, err := json.Marshal(byCluster)
	if err != nil {
		return fmt.Errorf("operation %q: encode steps: %w", id, err)
	}
	cols := rolloutArrays(rollouts)
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var n int
	err = r.q.QueryRow(octx, sqlRecordSteps, append([]any{id, owner, doc, r.now()}, cols...)...).Scan(&n)
	if key, ok := missingDeployment(err); ok {
		return fmt.Errorf("deployment %q: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return r.classify(ctx, "operation", id, err)
	}
	if n == 1 {
		return nil
	}
	var exists bool
	if err := r.q.QueryRow(octx, sqlOperationExists, id).Scan(&exists); err != nil {
		return r.classify(ctx, "operation", id, err)
	}
	return fmt.Errorf("operation %q: not leased to %q: %w", id, owner, store.ErrStale)
}

const sqlSetOperationState = `
UPDATE operations SET state = $3, error = $4, owner = '', lease_until = $5, updated_at = $6
WHERE id = $1 AND owner = $2 AND owner <> ''`

// SetOperationState implements store.Operations.
func (r *repo) SetOperationState(ctx context.Context, id, owner, state, errText string, until time.Time) error {
	return r.leasedWrite(ctx, id, owner, sqlSetOperationState, state, errText, nullTime(until), r.now())
}

const sqlRenewLease = `
UPDATE operations SET lease_until = $3, updated_at = $4
WHERE id = $1 AND owner = $2 AND owner <> ''`

// RenewLease implements store.Operations.
func (r *repo) RenewLease(ctx context.Context, id, owner string, until time.Time) error {
	return r.leasedWrite(ctx, id, owner, sqlRenewLease, nullTime(until), r.now())
}

const sqlOperationExists = `SELECT true FROM operations WHERE id = $1`

// leasedWrite runs sql, an UPDATE guarded by "WHERE id = $1 AND owner = $2",
// with args from $3 on. Only when it matches no row does a second query
// tell an absent operation (ErrNotFound) from a lost lease (ErrStale).
func (r *repo) leasedWrite(ctx context.Context, id, owner, sql string, args ...any) error {
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	tag, err := r.q.Exec(octx, sql, append([]any{id, owner}, args...)...)
	if err != nil {
		return r.classify(ctx, "operation", id, err)
	}
	if tag.RowsAffected() == 1 {
		return nil
	}
	var exists bool
	if err := r.q.QueryRow(octx, sqlOperationExists, id).Scan(&exists); err != nil {
		return r.classify(ctx, "operation", id, err)
	}
	return fmt.Errorf("operation %q: not leased to %q: %w", id, owner, store.ErrStale)
}

// sqlClaimOperations is one statement, so one transaction even on the
// pool: the CTE locks the oldest claimable rows, skipping those another
// claimer has locked (which that claimer is about to take), and the UPDATE
// leases them. A row another claimer leased and committed meanwhile no
// longer matches when re-checked under the lock.
const sqlClaimOperations = `
WITH claimable AS (
    SELECT id FROM operations
    WHERE ` + activeStates + ` AND (lease_until IS NULL OR lease_until <= $2)
    ORDER BY created_at, id COLLATE "C"
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)
UPDATE operations o SET state = 'running', owner = $1, lease_until = $3, updated_at = $5
FROM claimable c WHERE o.id = c.id
RETURNING o.id, o.kind, o.deployment_key, o.drop_deployment, o.state, o.steps, o.owner,
          o.lease_until, o.error, o.created_at, o.updated_at`

// ClaimOperations implements store.Operations.
func (r *repo) ClaimOperations(ctx context.Context, owner string, now, until time.Time, limit int) ([]store.OperationRow, error) {
	if limit <= 0 {
		return nil, nil
	}
	ops, err := queryAll(ctx, r, "claim operations", sqlClaimOperations,
		[]any{owner, now, nullTime(until), limit, r.now()}, scanOperation)
	if err != nil {
		return nil, err
	}
	// RETURNING follows no ORDER BY.
	slices.SortFunc(ops, func(a, b store.OperationRow) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return ops, nil
}

const sqlPurgeOperations = `DELETE FROM operations WHERE NOT (` + activeStates + `) AND updated_at < $1`

// PurgeOperations implements store.Operations.
func (r *repo) PurgeOperations(ctx context.Context, before time.Time) (int, error) {
	tag, err := r.exec(ctx, "purge operations", "", sqlPurgeOperations, before)
	return int(tag.RowsAffected()), err
}

// sqlPutIdempotency replaces a row only if it has expired at $6, the
// store's clock: the ON CONFLICT ... WHERE makes "check and replace" one
// atomic step, so two requests with the same key cannot both win.
const sqlPutIdempotency = `
INSERT INTO idempotency_keys (scope, key, request_hash, response, expires_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (scope, key) DO UPDATE SET
    request_hash = EXCLUDED.request_hash, response = EXCLUDED.response, expires_at = EXCLUDED.expires_at
WHERE idempotency_keys.expires_at <= $6`

// PutIdempotency implements store.Idempotency. It takes "now" from the
// store's clock, not the database's now(), so that tests with a fixed clock
// and the memory store agree.
func (r *repo) PutIdempotency(ctx context.Context, rec store.IdempotencyRecord) error {
	resp := rec.Response
	if resp == nil {
		resp = []byte{} // the column is NOT NULL and pgx sends nil as NULL
	}
	tag, err := r.exec(ctx, "idempotency key", rec.Key, sqlPutIdempotency,
		rec.Scope, rec.Key, rec.RequestHash, resp, rec.ExpiresAt, r.now())
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("idempotency key %q: %w", rec.Key, store.ErrAlreadyExists)
	}
	return nil
}

const sqlGetIdempotency = `
SELECT request_hash, response, expires_at FROM idempotency_keys
WHERE scope = $1 AND key = $2 AND expires_at > $3`

// GetIdempotency implements store.Idempotency.
func (r *repo) GetIdempotency(ctx context.Context, scope, key string, now time.Time) (store.IdempotencyRecord, error) {
	rec := store.IdempotencyRecord{Scope: scope, Key: key}
	err := r.queryRow(ctx, "idempotency key", key, sqlGetIdempotency, []any{scope, key, now},
		&rec.RequestHash, &rec.Response, &rec.ExpiresAt)
	if err != nil {
		return store.IdempotencyRecord{}, err
	}
	if len(rec.Response) == 0 {
		rec.Response = nil // as the memory store answers
	}
	rec.ExpiresAt = rec.ExpiresAt.UTC()
	return rec, nil
}

const sqlPurgeIdempotency = `DELETE FROM idempotency_keys WHERE expires_at < $1`

// PurgeIdempotency implements store.Idempotency.
func (r *repo) PurgeIdempotency(ctx context.Context, before time.Time) (int, error) {
	tag, err := r.exec(ctx, "purge idempotency keys", "", sqlPurgeIdempotency, before)
	return int(tag.RowsAffected()), err
}

// scanOperation reads one row of opColumns.
func scanOperation(row pgx.Row) (store.OperationRow, error) {
	var (
		op    store.OperationRow
		steps []byte
		lease *time.Time
	)
	err := row.Scan(&op.ID, &op.Kind, &op.DeploymentKey, &op.Drop, &op.State, &steps,
		&op.Owner, &lease, &op.Error, &op.CreatedAt, &op.UpdatedAt)
	if err != nil {
		return store.OperationRow{}, err
	}
	if lease != nil {
		op.LeaseUntil = lease.UTC()
	}
	op.CreatedAt, op.UpdatedAt = op.CreatedAt.UTC(), op.UpdatedAt.UTC()
	var docs []stepDoc
	if err := json.Unmarshal(steps, &docs); err != nil {
		return store.OperationRow{}, fmt.Errorf("operation %q: decode stored steps: %w", op.ID, err)
	}
	for _, d := range docs {
		op.Steps = append(op.Steps, store.StepRow{
			Cluster: d.Cluster, UnitID: d.UnitID, State: d.State, Attempts: d.Attempts, Error: d.Error,
		})
	}
	return op, nil
}

// nullTime sends the zero time, which means "no lease", as NULL.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t
}
