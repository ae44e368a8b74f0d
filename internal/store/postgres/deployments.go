package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/proto"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
)

// A deployment is one row of deployments: the spec as a jsonb document
// (protojson, as the REST API writes it), the plan and the filter columns
// beside it. Its rollouts are rows of rollouts, one per cluster, indexed by
// unit id; its spec revisions are rows of deployment_revisions. The schema
// is migrations/00004_deployment_core.sql and 00005_deployment_revisions.sql.

// depColumns is what every query returning deployments selects, in the
// order scanDeployment reads; the spec comes last so that a read without
// it (SkipSpec) selects NULL there.
const depColumns = `key, package_name, class_key, target_envs, replicas, target_availability,
achieved_availability, algorithm, strong, last_error, request_key, spec_revision, package_digest, revision, created_at, updated_at`

const sqlInsertDeployment = `
INSERT INTO deployments (key, package_name, class_key, target_envs, replicas, target_availability,
    achieved_availability, algorithm, strong, last_error, request_key, spec_revision, package_digest, revision, created_at, updated_at, spec)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $14, $15, 1, $12, $12, $13)`

// CreateDeployment implements store.Deployments. Outside a transaction
// the deployment and its rollouts are two statements; callers that need
// them together call it in one (as the deploy core does).
func (r *repo) CreateDeployment(ctx context.Context, d store.DeploymentRow, rs ...store.RolloutRow) (store.DeploymentRow, error) {
	spec, err := encodeSpec(d)
	if err != nil {
		return store.DeploymentRow{}, err
	}
	for _, x := range rs {
		if x.DeploymentKey != d.Key {
			return store.DeploymentRow{}, fmt.Errorf("deployment %q: %w", x.DeploymentKey, store.ErrNotFound)
		}
	}
	now := r.now()
	if _, err := r.exec(ctx, "deployment", d.Key, sqlInsertDeployment,
		d.Key, d.PackageName, d.ClassKey, targets(d), d.Replicas, d.TargetAvailability,
		d.AchievedAvailability, d.Algorithm, d.Strong, d.LastError, d.RequestKey, now, spec, d.SpecRevision, d.PackageDigest); err != nil {
		return store.DeploymentRow{}, err
	}
	if err := r.writeRollouts(ctx, sqlInsertRollouts, rs); err != nil {
		return store.DeploymentRow{}, err
	}
	d = copyRow(d)
	d.Revision, d.CreatedAt, d.UpdatedAt = 1, now, now
	return d, nil
}

const sqlGetDeployment = `SELECT ` + depColumns + `, spec FROM deployments WHERE key = $1`

// GetDeployment implements store.Deployments.
func (r *repo) GetDeployment(ctx context.Context, key string) (store.DeploymentRow, error) {
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	d, err := scanDeployment(r.q.QueryRow(octx, sqlGetDeployment, key))
	if err != nil {
		return store.DeploymentRow{}, r.classify(ctx, "deployment", key, err)
	}
	return d, nil
}

// ListDeployments implements store.Deployments; every filter is a WHERE
// clause on an indexed column.
func (r *repo) ListDeployments(ctx context.Context, f store.DeploymentFilter) ([]store.DeploymentRow, error) {
	var w filter
	if f.PackageName != "" {
		w.add("package_name = ?", f.PackageName)
	}
	if f.ClassKey != "" {
		w.add("class_key = ?", f.ClassKey)
	}
	if f.Target != "" {
		// Containment, not = ANY(target_envs), so that the GIN index serves it.
		w.add("target_envs @> ?", []string{f.Target})
	}
	if f.Keys != nil {
		w.add("key = ANY(?)", f.Keys)
	}
	if f.After != "" {
		w.add("key > ?", f.After)
	}
	spec := "spec"
	if f.SkipSpec {
		spec = "NULL::jsonb"
	}
	sql, args := w.page(`SELECT `+depColumns+`, `+spec+` FROM deployments`+w.sql()+` ORDER BY key`, f.Limit, f.Offset)
	return queryAll(ctx, r, "list deployments", sql, args, scanDeployment)
}

// sqlUpdateDeployment keeps created_at and request_key; $13 is the
// expected revision (0: any).
const sqlUpdateDeployment = `
UPDATE deployments SET package_name = $2, class_key = $3, target_envs = $4, replicas = $5,
    target_availability = $6, achieved_availability = $7, algorithm = $8, strong = $9,
    last_error = $10, spec = $11, spec_revision = $14, package_digest = $15, revision = revision + 1, updated_at = $12
WHERE key = $1 AND ($13 = 0 OR revision = $13)
RETURNING revision, created_at, request_key`

// UpdateDeployment implements store.Deployments.
func (r *repo) UpdateDeployment(ctx context.Context, d store.DeploymentRow, expected int64) (store.DeploymentRow, error) {
	spec, err := encodeSpec(d)
	if err != nil {
		return store.DeploymentRow{}, err
	}
	now := r.now()
	out := copyRow(d)
	err = r.queryRow(ctx, "deployment", d.Key, sqlUpdateDeployment, []any{
		d.Key, d.PackageName, d.ClassKey, targets(d), d.Replicas, d.TargetAvailability,
		d.AchievedAvailability, d.Algorithm, d.Strong, d.LastError, spec, now, expected, d.SpecRevision, d.PackageDigest,
	}, &out.Revision, &out.CreatedAt, &out.RequestKey)
	if isNotFound(err) {
		return store.DeploymentRow{}, r.revisionMiss(ctx, d.Key, expected)
	}
	if err != nil {
		return store.DeploymentRow{}, err
	}
	out.CreatedAt, out.UpdatedAt = out.CreatedAt.UTC(), now
	return out, nil
}

const sqlDeleteDeployment = `DELETE FROM deployments WHERE key = $1 AND ($2 = 0 OR revision = $2)`

// DeleteDeployment implements store.Deployments. The rollouts go by ON
// DELETE CASCADE, in the same statement.
func (r *repo) DeleteDeployment(ctx context.Context, key string, expected int64) error {
	tag, err := r.exec(ctx, "deployment", key, sqlDeleteDeployment, key, expected)
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return r.revisionMiss(ctx, key, expected)
	}
	return nil
}

const sqlDeploymentExists = `SELECT true FROM deployments WHERE key = $1`

// revisionMiss tells, after a revision-checked write matched no row, an
// absent deployment (ErrNotFound) from a stale revision (ErrStale).
func (r *repo) revisionMiss(ctx context.Context, key string, expected int64) error {
	var exists bool
	if err := r.queryRow(ctx, "deployment", key, sqlDeploymentExists, []any{key}, &exists); err != nil {
		return err
	}
	return fmt.Errorf("deployment %q: revision %d: %w", key, expected, store.ErrStale)
}

// sqlInsertRollouts writes a new deployment's rollouts: plain inserts,
// which read no neighbouring rows.
const sqlInsertRollouts = `
INSERT INTO rollouts (deployment_key, cluster, unit_id, state, condition, availability,
                      availability_source, error, attempts)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::double precision[], $7::text[], $8::text[], $9::integer[])`

// sqlPutRollouts zips the arrays row by row and writes every rollout in
// one statement. The foreign key refuses a rollout of a missing deployment
// (and the statement writes nothing then); it is checked with a row lock,
// not a read of the deployments index, which in a SERIALIZABLE transaction
// would conflict with every concurrent create of a neighbouring key.
const sqlPutRollouts = `
INSERT INTO rollouts (deployment_key, cluster, unit_id, state, condition, availability,
                      availability_source, error, attempts)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[],
                     $6::double precision[], $7::text[], $8::text[], $9::integer[])
ON CONFLICT (deployment_key, cluster) DO UPDATE SET
    unit_id = EXCLUDED.unit_id, state = EXCLUDED.state, condition = EXCLUDED.condition,
    availability = EXCLUDED.availability, availability_source = EXCLUDED.availability_source,
    error = EXCLUDED.error, attempts = EXCLUDED.attempts`

// PutRollouts implements store.Deployments.
func (r *repo) PutRollouts(ctx context.Context, rs ...store.RolloutRow) error {
	return r.writeRollouts(ctx, sqlPutRollouts, rs)
}

// writeRollouts runs sql (sqlPutRollouts or sqlInsertRollouts) on rs.
func (r *repo) writeRollouts(ctx context.Context, sql string, rs []store.RolloutRow) error {
	if len(rs) == 0 {
		return nil
	}
	cols := rolloutArrays(rs)
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	_, err := r.q.Exec(octx, sql, cols...)
	if key, ok := missingDeployment(err); ok {
		return fmt.Errorf("deployment %q: %w", key, store.ErrNotFound)
	}
	if err != nil {
		return r.classify(ctx, "rollouts", rs[0].DeploymentKey, err)
	}
	return nil
}

// rolloutArrays are rollouts as the nine column arrays the statements
// unnest, one row per (deployment, cluster), the last one winning as if
// they were put one by one: ON CONFLICT may touch a row only once.
func rolloutArrays(rs []store.RolloutRow) []any {
	last := make(map[[2]string]int, len(rs))
	for i, x := range rs {
		last[[2]string{x.DeploymentKey, x.Cluster}] = i
	}
	n := len(last)
	keys, clusters, units := make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
	states, conds, sources, errs := make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
	avail, attempts := make([]float64, 0, n), make([]int32, 0, n)
	for i, x := range rs {
		if last[[2]string{x.DeploymentKey, x.Cluster}] != i {
			continue
		}
		keys, clusters, units = append(keys, x.DeploymentKey), append(clusters, x.Cluster), append(units, x.UnitID)
		states, conds = append(states, x.State), append(conds, x.Condition)
		avail, sources = append(avail, x.Availability), append(sources, x.AvailabilitySource)
		errs, attempts = append(errs, x.Error), append(attempts, int32(min(x.Attempts, 1<<30))) //nolint:gosec // capped
	}
	return []any{keys, clusters, units, states, conds, avail, sources, errs, attempts}
}

// missingDeployment reads the key of the missing deployment out of a
// foreign key violation of rollouts ("Key (deployment_key)=(k) is not
// present ...").
func missingDeployment(err error) (string, bool) {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23503" {
		return "", false
	}
	_, rest, ok := strings.Cut(pgErr.Detail, ")=(")
	key, _, ok2 := strings.Cut(rest, ") ")
	if !ok || !ok2 {
		return "", true
	}
	return key, true
}

const rolloutColumns = `deployment_key, cluster, unit_id, state, condition, availability, availability_source, error, attempts`

// ListRollouts implements store.Deployments.
func (r *repo) ListRollouts(ctx context.Context, f store.RolloutFilter) ([]store.RolloutRow, error) {
	var w filter
	order := ` ORDER BY cluster, unit_id`
	switch {
	case f.DeploymentKeys != nil:
		w.add("deployment_key = ANY(?)", f.DeploymentKeys)
		order = ` ORDER BY deployment_key, cluster`
	case f.UnitIDs != nil:
		w.add("unit_id = ANY(?)", f.UnitIDs)
		if f.Cluster != "" {
			w.add("cluster = ?", f.Cluster)
		}
	case f.Cluster != "":
		w.add("cluster = ?", f.Cluster)
		if f.After != "" {
			w.add("unit_id > ?", f.After)
		}
		order = ` ORDER BY unit_id`
	default:
		return nil, nil
	}
	sql, args := w.page(`SELECT `+rolloutColumns+` FROM rollouts`+w.sql()+order, f.Limit, 0)
	return queryAll(ctx, r, "list rollouts", sql, args, func(row pgx.Row) (store.RolloutRow, error) {
		var x store.RolloutRow
		var attempts int32
		err := row.Scan(&x.DeploymentKey, &x.Cluster, &x.UnitID, &x.State, &x.Condition,
			&x.Availability, &x.AvailabilitySource, &x.Error, &attempts)
		x.Attempts = int(attempts)
		return x, err
	})
}

const sqlUpdateConditions = `
UPDATE rollouts r SET condition = u.c
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS u(k, cl, unit, c)
WHERE r.deployment_key = u.k AND r.cluster = u.cl AND r.unit_id = u.unit
  AND r.state = $5 AND r.condition <> u.c`

// UpdateConditions implements store.Deployments in one statement.
func (r *repo) UpdateConditions(ctx context.Context, us ...store.ConditionUpdate) (int, error) {
	if len(us) == 0 {
		return 0, nil
	}
	keys, clusters, units, conds := make([]string, len(us)), make([]string, len(us)), make([]string, len(us)), make([]string, len(us))
	for i, u := range us {
		keys[i], clusters[i], units[i], conds[i] = u.DeploymentKey, u.Cluster, u.UnitID, u.Condition
	}
	tag, err := r.exec(ctx, "rollout conditions", "", sqlUpdateConditions, keys, clusters, units, conds, store.RolloutDeployed)
	return int(tag.RowsAffected()), err
}

// scanDeployment reads one row of depColumns followed by the spec.
func scanDeployment(row pgx.Row) (store.DeploymentRow, error) {
	var (
		d        store.DeploymentRow
		replicas int32
		spec     []byte
	)
	err := row.Scan(&d.Key, &d.PackageName, &d.ClassKey, &d.Targets, &replicas, &d.TargetAvailability,
		&d.AchievedAvailability, &d.Algorithm, &d.Strong, &d.LastError, &d.RequestKey, &d.SpecRevision, &d.PackageDigest, &d.Revision,
		&d.CreatedAt, &d.UpdatedAt, &spec)
	if err != nil {
		return store.DeploymentRow{}, err
	}
	d.Replicas = int(replicas)
	d.CreatedAt, d.UpdatedAt = d.CreatedAt.UTC(), d.UpdatedAt.UTC()
	if d.Targets == nil {
		d.Targets = []string{}
	}
	if spec != nil {
		d.Spec = new(pmv1.OClassDeployment)
		if err := docUnmarshal.Unmarshal(spec, d.Spec); err != nil {
			return store.DeploymentRow{}, fmt.Errorf("deployment %q: decode stored spec: %w", d.Key, err)
		}
	}
	return d, nil
}

// encodeSpec writes d's spec in the REST form (an empty document for none).
func encodeSpec(d store.DeploymentRow) ([]byte, error) {
	if d.Spec == nil {
		return []byte("{}"), nil
	}
	b, err := docMarshal.Marshal(d.Spec)
	if err != nil {
		return nil, fmt.Errorf("deployment %q: encode spec: %w", d.Key, err)
	}
	return b, nil
}

// targets returns d's targets as a non-nil slice, for the NOT NULL column.
func targets(d store.DeploymentRow) []string {
	if d.Targets != nil {
		return d.Targets
	}
	return []string{}
}

// copyRow returns d as a caller may keep it: its own targets, a spec
// present (empty when none was given, as a read returns it).
func copyRow(d store.DeploymentRow) store.DeploymentRow {
	d.Targets = append([]string{}, d.Targets...)
	if d.Spec == nil {
		d.Spec = new(pmv1.OClassDeployment)
	} else {
		d.Spec = cloneSpec(d.Spec)
	}
	return d
}

func cloneSpec(s *pmv1.OClassDeployment) *pmv1.OClassDeployment { return proto.CloneOf(s) }

// filter builds the WHERE clause of a list query: each condition is a SQL
// fragment in which "?" stands for its one parameter.
type filter struct {
	conds []string
	args  []any
}

func (f *filter) add(cond string, v any) {
	f.args = append(f.args, v)
	f.conds = append(f.conds, strings.Replace(cond, "?", "$"+strconv.Itoa(len(f.args)), 1))
}

// sql is " WHERE a AND b", or "" without conditions.
func (f *filter) sql() string {
	if len(f.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(f.conds, " AND ")
}

// page appends LIMIT (when limit > 0) and OFFSET (when offset > 0).
func (f *filter) page(sql string, limit, offset int) (string, []any) {
	args := f.args
	if limit > 0 {
		args = append(args, limit)
		sql += " LIMIT $" + strconv.Itoa(len(args))
	}
	if offset > 0 {
		args = append(args, offset)
		sql += " OFFSET $" + strconv.Itoa(len(args))
	}
	return sql, args
}
