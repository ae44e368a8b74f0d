package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
)

const sqlInsertDeployment = `
INSERT INTO deployments (key, package_name, class_key, target_envs, revision, created_at, updated_at, doc)
VALUES ($1, $2, $3, $4, 1, $5, $5, $6)`

// CreateDeployment implements store.Deployments, as CreatePackage does.
func (r *repo) CreateDeployment(ctx context.Context, d *pmv1.OClassDeployment) (store.Deployment, error) {
	dep := proto.Clone(d).(*pmv1.OClassDeployment)
	now := r.now()
	dep.CreatedAt = timestamppb.New(now)
	dep.UpdatedAt = dep.CreatedAt
	doc, err := docMarshal.Marshal(dep)
	if err != nil {
		return store.Deployment{}, fmt.Errorf("deployment %q: encode: %w", dep.GetKey(), err)
	}

	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	_, err = r.q.Exec(octx, sqlInsertDeployment,
		dep.GetKey(), dep.GetPackageName(), dep.GetClassKey(), targetEnvs(dep), now, doc)
	if err != nil {
		return store.Deployment{}, r.classify(ctx, "deployment", dep.GetKey(), err)
	}
	return store.Deployment{Deployment: dep, Revision: 1}, nil
}

const sqlGetDeployment = `SELECT revision, doc FROM deployments WHERE key = $1`

// GetDeployment implements store.Deployments.
func (r *repo) GetDeployment(ctx context.Context, key string) (store.Deployment, error) {
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var (
		rev int64
		doc []byte
	)
	if err := r.q.QueryRow(octx, sqlGetDeployment, key).Scan(&rev, &doc); err != nil {
		return store.Deployment{}, r.classify(ctx, "deployment", key, err)
	}
	return decodeDeployment(key, rev, doc)
}

// ListDeployments implements store.Deployments; like ListPackages, every
// filter is a WHERE clause.
func (r *repo) ListDeployments(ctx context.Context, f store.DeploymentFilter) ([]store.Deployment, error) {
	sql, args := deploymentListQuery(f)
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	rows, err := r.q.Query(octx, sql, args...)
	if err != nil {
		return nil, r.classify(ctx, "list deployments", "", err)
	}
	defer rows.Close()
	var (
		out []store.Deployment
		key string
		rev int64
		doc []byte
	)
	for rows.Next() {
		if err := rows.Scan(&key, &rev, &doc); err != nil {
			return nil, r.classify(ctx, "list deployments", "", err)
		}
		d, err := decodeDeployment(key, rev, doc)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, r.classify(ctx, "list deployments", "", err)
	}
	return out, nil
}

// deploymentListQuery builds the SELECT for f.
func deploymentListQuery(f store.DeploymentFilter) (string, []any) {
	var (
		b     strings.Builder
		args  []any
		conds []string
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.PackageName != "" {
		conds = append(conds, "package_name = "+arg(f.PackageName))
	}
	if f.ClassKey != "" {
		conds = append(conds, "class_key = "+arg(f.ClassKey))
	}
	if f.TargetEnv != "" {
		// Containment, not = ANY(target_envs), so that the GIN index serves it.
		conds = append(conds, "target_envs @> "+arg([]string{f.TargetEnv}))
	}
	if f.After != "" {
		conds = append(conds, "key > "+arg(f.After))
	}
	b.WriteString("SELECT key, revision, doc FROM deployments")
	if len(conds) > 0 {
		b.WriteString(" WHERE ")
		b.WriteString(strings.Join(conds, " AND "))
	}
	b.WriteString(" ORDER BY key")
	if f.Limit > 0 {
		b.WriteString(" LIMIT " + arg(f.Limit))
	}
	if f.Offset > 0 {
		b.WriteString(" OFFSET " + arg(f.Offset))
	}
	return b.String(), args
}

// sqlUpdateDeployment keeps the stored created_at, as sqlUpdatePackage does.
const sqlUpdateDeployment = `
UPDATE deployments SET
    package_name = $2, class_key = $3, target_envs = $4,
    revision = revision + 1, updated_at = $5,
    doc = jsonb_set($6::jsonb, '{created_at}',
        to_jsonb(to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
WHERE key = $1`

const (
	sqlUpdateDeploymentAny      = sqlUpdateDeployment + ` RETURNING revision, created_at`
	sqlUpdateDeploymentExpected = sqlUpdateDeployment + ` AND revision = $7 RETURNING revision, created_at`
	sqlDeploymentRevision       = `SELECT revision FROM deployments WHERE key = $1`
)

// UpdateDeployment implements store.Deployments, as UpdatePackage does.
func (r *repo) UpdateDeployment(ctx context.Context, d *pmv1.OClassDeployment, expected int64) (store.Deployment, error) {
	dep := proto.Clone(d).(*pmv1.OClassDeployment)
	key := dep.GetKey()
	now := r.now()
	dep.UpdatedAt = timestamppb.New(now)
	dep.CreatedAt = nil // the statement writes the stored one into the doc
	doc, err := docMarshal.Marshal(dep)
	if err != nil {
		return store.Deployment{}, fmt.Errorf("deployment %q: encode: %w", key, err)
	}

	args := []any{key, dep.GetPackageName(), dep.GetClassKey(), targetEnvs(dep), now, doc}
	sql := sqlUpdateDeploymentAny
	if expected != store.AnyRevision {
		sql = sqlUpdateDeploymentExpected
		args = append(args, expected)
	}
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var (
		rev     int64
		created time.Time
	)
	if err := r.q.QueryRow(octx, sql, args...).Scan(&rev, &created); err != nil {
		return store.Deployment{}, r.missOrStale(ctx, "deployment", sqlDeploymentRevision, key, expected,
			r.classify(ctx, "deployment", key, err))
	}
	dep.CreatedAt = timestamppb.New(created)
	return store.Deployment{Deployment: dep, Revision: rev}, nil
}

const (
	sqlDeleteDeploymentAny      = `DELETE FROM deployments WHERE key = $1 RETURNING revision`
	sqlDeleteDeploymentExpected = `DELETE FROM deployments WHERE key = $1 AND revision = $2 RETURNING revision`
)

// DeleteDeployment implements store.Deployments. The mappings go by ON
// DELETE CASCADE, in the same statement.
func (r *repo) DeleteDeployment(ctx context.Context, key string, expected int64) error {
	sql, args := sqlDeleteDeploymentAny, []any{key}
	if expected != store.AnyRevision {
		sql, args = sqlDeleteDeploymentExpected, append(args, expected)
	}
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var rev int64
	if err := r.q.QueryRow(octx, sql, args...).Scan(&rev); err != nil {
		return r.missOrStale(ctx, "deployment", sqlDeploymentRevision, key, expected,
			r.classify(ctx, "deployment", key, err))
	}
	return nil
}

// sqlPutMapping keeps the first created_at of a (deployment, cluster) pair:
// a replaced unit id is still the same mapping.
const sqlPutMapping = `
INSERT INTO deployment_mappings (deployment_key, cluster, unit_id, created_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (deployment_key, cluster) DO UPDATE SET unit_id = EXCLUDED.unit_id`

// PutMapping implements store.Deployments. The foreign key, not a prior
// SELECT, detects a missing deployment (classify maps its violation to
// ErrNotFound).
func (r *repo) PutMapping(ctx context.Context, m store.Mapping) error {
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	if _, err := r.q.Exec(octx, sqlPutMapping, m.DeploymentKey, m.Cluster, m.UnitID, r.now()); err != nil {
		return r.classify(ctx, "deployment", m.DeploymentKey, err)
	}
	return nil
}

const sqlDeleteMapping = `DELETE FROM deployment_mappings WHERE deployment_key = $1 AND cluster = $2`

// DeleteMapping implements store.Deployments.
func (r *repo) DeleteMapping(ctx context.Context, deploymentKey, cluster string) error {
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	if _, err := r.q.Exec(octx, sqlDeleteMapping, deploymentKey, cluster); err != nil {
		return r.classify(ctx, "deployment", deploymentKey, err)
	}
	return nil
}

const (
	sqlMappings = `
SELECT deployment_key, cluster, unit_id FROM deployment_mappings
WHERE deployment_key = $1 ORDER BY cluster`
	sqlAllMappings = `
SELECT deployment_key, cluster, unit_id FROM deployment_mappings
ORDER BY deployment_key, cluster`
)

// Mappings implements store.Deployments.
func (r *repo) Mappings(ctx context.Context, deploymentKey string) ([]store.Mapping, error) {
	return r.mappings(ctx, "deployment mappings", sqlMappings, deploymentKey)
}

// AllMappings implements store.Deployments.
func (r *repo) AllMappings(ctx context.Context) ([]store.Mapping, error) {
	return r.mappings(ctx, "all mappings", sqlAllMappings)
}

func (r *repo) mappings(ctx context.Context, what, sql string, args ...any) ([]store.Mapping, error) {
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	rows, err := r.q.Query(octx, sql, args...)
	if err != nil {
		return nil, r.classify(ctx, what, "", err)
	}
	defer rows.Close()
	var (
		out []store.Mapping
		m   store.Mapping
	)
	for rows.Next() {
		if err := rows.Scan(&m.DeploymentKey, &m.Cluster, &m.UnitID); err != nil {
			return nil, r.classify(ctx, what, "", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, r.classify(ctx, what, "", err)
	}
	return out, nil
}

// decodeDeployment turns a row back into a store.Deployment.
func decodeDeployment(key string, rev int64, doc []byte) (store.Deployment, error) {
	dep := new(pmv1.OClassDeployment)
	if err := docUnmarshal.Unmarshal(doc, dep); err != nil {
		return store.Deployment{}, fmt.Errorf("deployment %q: decode stored document: %w", key, err)
	}
	return store.Deployment{Deployment: dep, Revision: rev}, nil
}

// targetEnvs returns d's target environments as a non-nil slice, for the
// NOT NULL column.
func targetEnvs(d *pmv1.OClassDeployment) []string {
	if e := d.GetTargetEnvs(); e != nil {
		return e
	}
	return []string{}
}
