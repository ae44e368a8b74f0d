package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
)

// deployments is the deployments table. Its timestamps are fields of the
// message itself.
var deployments = newDocTable(&docTable[*pmv1.OClassDeployment, store.Deployment]{
	layout: docLayout{
		Table:         "deployments",
		Key:           "key",
		Columns:       []string{"package_name", "class_key", "target_envs"},
		CreatedAtPath: "{created_at}",
	},
	what: "deployment",
	key:  (*pmv1.OClassDeployment).GetKey,
	columns: func(d *pmv1.OClassDeployment) []any {
		return []any{d.GetPackageName(), d.GetClassKey(), targetEnvs(d)}
	},
	stamp: func(d *pmv1.OClassDeployment, created, updated *timestamppb.Timestamp) {
		d.CreatedAt, d.UpdatedAt = created, updated
	},
	newDoc: func() *pmv1.OClassDeployment { return new(pmv1.OClassDeployment) },
	result: func(d *pmv1.OClassDeployment, rev int64) store.Deployment {
		return store.Deployment{Deployment: d, Revision: rev}
	},
})

// CreateDeployment implements store.Deployments, as CreatePackage does.
func (r *repo) CreateDeployment(ctx context.Context, d *pmv1.OClassDeployment) (store.Deployment, error) {
	return deployments.create(ctx, r, d)
}

// GetDeployment implements store.Deployments.
func (r *repo) GetDeployment(ctx context.Context, key string) (store.Deployment, error) {
	return deployments.get(ctx, r, key)
}

// ListDeployments implements store.Deployments; like ListPackages, every
// filter is a WHERE clause.
func (r *repo) ListDeployments(ctx context.Context, f store.DeploymentFilter) ([]store.Deployment, error) {
	sql, args := deploymentListQuery(f)
	return deployments.list(ctx, r, sql, args)
}

// deploymentListQuery builds the SELECT for f.
func deploymentListQuery(f store.DeploymentFilter) (string, []any) {
	var w where
	if f.PackageName != "" {
		w.add("package_name =", f.PackageName)
	}
	if f.ClassKey != "" {
		w.add("class_key =", f.ClassKey)
	}
	if f.TargetEnv != "" {
		// Containment, not = ANY(target_envs), so that the GIN index serves it.
		w.add("target_envs @>", []string{f.TargetEnv})
	}
	return deployments.listQuery(&w, f.After, f.Limit, f.Offset)
}

// UpdateDeployment implements store.Deployments, as UpdatePackage does.
func (r *repo) UpdateDeployment(ctx context.Context, d *pmv1.OClassDeployment, expected int64) (store.Deployment, error) {
	return deployments.update(ctx, r, d, expected)
}

// DeleteDeployment implements store.Deployments. The mappings go by ON
// DELETE CASCADE, in the same statement.
func (r *repo) DeleteDeployment(ctx context.Context, key string, expected int64) error {
	return deployments.delete(ctx, r, key, expected)
}

// sqlPutMapping keeps the first created_at of a (deployment, cluster) pair:
// a replaced unit id is still the same mapping.
// The arrays are zipped row by row; one statement writes every mapping,
// or none and names a deployment that does not exist (the foreign key
// still guards against one deleted meanwhile).
const sqlPutMapping = `
WITH missing AS (
    SELECT k FROM unnest($1::text[]) AS k
    WHERE NOT EXISTS (SELECT 1 FROM deployments d WHERE d.key = k) LIMIT 1
), ins AS (
    INSERT INTO deployment_mappings (deployment_key, cluster, unit_id, created_at)
    SELECT k, c, u, $4 FROM unnest($1::text[], $2::text[], $3::text[]) AS m(k, c, u)
    WHERE NOT EXISTS (SELECT 1 FROM missing)
    ON CONFLICT (deployment_key, cluster) DO UPDATE SET unit_id = EXCLUDED.unit_id
)
SELECT (SELECT k FROM missing)`

// PutMapping implements store.Deployments. The foreign key, not a prior
// SELECT, detects a missing deployment (classify maps its violation to
// ErrNotFound); the statement is atomic, so nothing is written then.
func (r *repo) PutMapping(ctx context.Context, ms ...store.Mapping) error {
	if len(ms) == 0 {
		return nil
	}
	// One row per (deployment, cluster), the last one winning as if the
	// mappings were put one by one: ON CONFLICT may touch a row only once.
	last := make(map[[2]string]int, len(ms))
	for i, m := range ms {
		last[[2]string{m.DeploymentKey, m.Cluster}] = i
	}
	var keys, clusters, units []string
	for i, m := range ms {
		if last[[2]string{m.DeploymentKey, m.Cluster}] == i {
			keys, clusters, units = append(keys, m.DeploymentKey), append(clusters, m.Cluster), append(units, m.UnitID)
		}
	}
	var missing *string
	if err := r.queryRow(ctx, "deployment", keys[0], sqlPutMapping, []any{keys, clusters, units, r.now()}, &missing); err != nil {
		return err
	}
	if missing != nil {
		return fmt.Errorf("deployment %q: %w", *missing, store.ErrNotFound)
	}
	return nil
}

const sqlDeleteMapping = `DELETE FROM deployment_mappings WHERE deployment_key = $1 AND cluster = $2`

// DeleteMapping implements store.Deployments.
func (r *repo) DeleteMapping(ctx context.Context, deploymentKey, cluster string) error {
	_, err := r.exec(ctx, "deployment", deploymentKey, sqlDeleteMapping, deploymentKey, cluster)
	return err
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
	return queryAll(ctx, r, what, sql, args, func(row pgx.Row) (store.Mapping, error) {
		var m store.Mapping
		err := row.Scan(&m.DeploymentKey, &m.Cluster, &m.UnitID)
		return m, err
	})
}

// targetEnvs returns d's target environments as a non-nil slice, for the
// NOT NULL column.
func targetEnvs(d *pmv1.OClassDeployment) []string {
	if e := d.GetTargetEnvs(); e != nil {
		return e
	}
	return []string{}
}
