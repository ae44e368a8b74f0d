package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
)

// sqlPutRevision inserts a revision and drops the ones keep ($12) or more
// below it in one statement; the foreign key refuses a revision of a
// missing deployment and the primary key a taken number.
const sqlPutRevision = `
WITH ins AS (
    INSERT INTO deployment_revisions (deployment_key, revision, spec, target_envs, replicas, target_availability,
                                      achieved_availability, algorithm, strong, reason, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    RETURNING deployment_key, revision)
DELETE FROM deployment_revisions d USING ins
WHERE $12 > 0 AND d.deployment_key = ins.deployment_key AND d.revision <= ins.revision - $12`

// PutRevision implements store.Deployments.
func (r *repo) PutRevision(ctx context.Context, x store.RevisionRow, keep int) error {
	spec, err := encodeSpec(store.DeploymentRow{Key: x.DeploymentKey, Spec: x.Spec})
	if err != nil {
		return err
	}
	targets := x.Targets
	if targets == nil {
		targets = []string{}
	}
	_, err = r.exec(ctx, "deployment", x.DeploymentKey, sqlPutRevision,
		x.DeploymentKey, x.Revision, spec, targets, x.Replicas, x.TargetAvailability, x.AchievedAvailability,
		x.Algorithm, x.Strong, x.Reason, r.now(), keep)
	return err
}

const sqlListRevisions = `
SELECT deployment_key, revision, spec, target_envs, replicas, target_availability, achieved_availability,
       algorithm, strong, reason, created_at
FROM deployment_revisions WHERE deployment_key = $1 ORDER BY revision DESC`

// ListRevisions implements store.Deployments.
func (r *repo) ListRevisions(ctx context.Context, key string) ([]store.RevisionRow, error) {
	return queryAll(ctx, r, "list deployment revisions", sqlListRevisions, []any{key}, func(row pgx.Row) (store.RevisionRow, error) {
		var (
			x        store.RevisionRow
			replicas int32
			spec     []byte
		)
		err := row.Scan(&x.DeploymentKey, &x.Revision, &spec, &x.Targets, &replicas, &x.TargetAvailability,
			&x.AchievedAvailability, &x.Algorithm, &x.Strong, &x.Reason, &x.CreatedAt)
		if err != nil {
			return store.RevisionRow{}, err
		}
		x.Replicas, x.CreatedAt = int(replicas), x.CreatedAt.UTC()
		if x.Targets == nil {
			x.Targets = []string{}
		}
		x.Spec = new(pmv1.OClassDeployment)
		if err := docUnmarshal.Unmarshal(spec, x.Spec); err != nil {
			return store.RevisionRow{}, fmt.Errorf("deployment %q revision %d: decode stored spec: %w", x.DeploymentKey, x.Revision, err)
		}
		return x, nil
	})
}
