package deploy

import (
	"context"
	"encoding/base64"
	"errors"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/oaas/pm/internal/catalog"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// Get returns a deployment as PM last saw it. Conditions come from the
// background observation of the clusters (or a just-finished operation);
// a read never calls a CRM.
func (s *Service) Get(ctx context.Context, key string) (Deployment, error) {
	d, err := s.read(ctx, key)
	if err != nil {
		return Deployment{}, err
	}
	return s.answered(ctx, d), nil
}

// read loads a deployment with its rollouts.
func (s *Service) read(ctx context.Context, key string) (Deployment, error) {
	row, err := s.st.GetDeployment(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return Deployment{}, fault.NotFoundf("deployment %q not found", key)
	}
	if err != nil {
		return Deployment{}, err
	}
	rs, err := s.st.ListRollouts(ctx, store.RolloutFilter{DeploymentKeys: []string{key}})
	if err != nil {
		return Deployment{}, err
	}
	return deploymentOf(row, rs)
}

// ListQuery selects deployments.
type ListQuery struct {
	PackageName, ClassKey, TargetEnv, TargetCluster string
	// Limit is the page size (0: the default page); Offset skips matches;
	// PageToken continues after a previous page.
	Limit, Offset int
	PageToken     string
}

// List returns one page of deployments in key order and the token of the
// next page ("" on the last).
func (s *Service) List(ctx context.Context, q ListQuery) ([]Deployment, string, error) {
	limit, err := catalog.PageLimit(q.Limit)
	if err != nil {
		return nil, "", err
	}
	if q.Offset < 0 {
		return nil, "", fault.Invalidf("offset: must not be negative")
	}
	f := store.DeploymentFilter{PackageName: q.PackageName, ClassKey: q.ClassKey, Offset: q.Offset, Limit: limit + 1}
	if q.PageToken != "" {
		if f.After, err = catalog.DecodePageToken(q.PageToken); err != nil {
			return nil, "", err
		}
		f.Offset = 0
	}
	f.Target = q.TargetEnv
	if f.Target == "" {
		f.Target = q.TargetCluster
	} else if q.TargetCluster != "" && q.TargetCluster != f.Target {
		return nil, "", nil
	}
	rows, err := s.st.ListDeployments(ctx, f)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(rows) > limit {
		rows = rows[:limit]
		next = catalog.EncodePageToken(rows[len(rows)-1].Key)
	}
	ds, err := s.withRollouts(ctx, rows)
	if err != nil {
		return nil, "", err
	}
	s.withAnswers(ctx, ds)
	return ds, next, nil
}

// withRollouts joins a page of deployment rows with their rollouts, in one
// read.
func (s *Service) withRollouts(ctx context.Context, rows []store.DeploymentRow) ([]Deployment, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	keys := make([]string, len(rows))
	for i, r := range rows {
		keys[i] = r.Key
	}
	rs, err := s.st.ListRollouts(ctx, store.RolloutFilter{DeploymentKeys: keys})
	if err != nil {
		return nil, err
	}
	byKey := map[string][]store.RolloutRow{}
	for _, r := range rs {
		byKey[r.DeploymentKey] = append(byKey[r.DeploymentKey], r)
	}
	out := make([]Deployment, len(rows))
	for i, row := range rows {
		if out[i], err = deploymentOf(row, byKey[row.Key]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Mappings returns a deployment's cluster → unit id mapping: the units PM
// knows run.
func (s *Service) Mappings(ctx context.Context, key string) (map[string]string, error) {
	d, err := s.read(ctx, key)
	if err != nil {
		return nil, err
	}
	return d.Mapped(), nil
}

// DeleteResult is what a delete removed.
type DeleteResult struct {
	// Key is the deployment the delete acted on.
	Key string
	// UnitID is set when the request named a unit id, not a deployment.
	UnitID string
	// Cluster is the one cluster a delete was limited to ("" for all).
	Cluster string
	// Clusters are the clusters whose units were removed (for a whole
	// deployment: every cluster it was placed on), in placement order.
	Clusters []string
}

// Delete removes a deployment's unit from one cluster (cluster != "") or
// every unit and then the deployment. A cluster without a unit is a no-op.
// expected is the caller's revision (store.AnyRevision: any). With a
// cluster, a key no deployment has may be the id of a unit on that cluster
// (first-generation OaaS clients delete units by id): that unit goes.
func (s *Service) Delete(ctx context.Context, key, cluster string, expected int64) (DeleteResult, error) {
	res, err := s.delete(ctx, key, cluster, expected)
	if fault.KindOf(err) != fault.NotFound || cluster == "" || expected != store.AnyRevision {
		return res, err
	}
	rows, lerr := s.st.ListRollouts(ctx, store.RolloutFilter{Cluster: cluster, UnitIDs: []string{key}})
	if lerr != nil || len(rows) != 1 {
		return res, err
	}
	res, err = s.delete(ctx, rows[0].DeploymentKey, cluster, store.AnyRevision)
	if fault.KindOf(err) == fault.NotFound {
		return res, fault.NotFoundf("deployment or unit %q not found", key)
	}
	res.UnitID = key
	return res, err
}

func (s *Service) delete(ctx context.Context, key, cluster string, expected int64) (DeleteResult, error) {
	res := DeleteResult{Key: key, Cluster: cluster}
	if cluster != "" && !s.cl.Has(cluster) {
		return res, fault.Invalidf("cluster: unknown cluster %q (known: %s)", cluster, strings.Join(s.cl.Names(), ", "))
	}
	op := s.newOperation(KindDelete, key, cluster == "")
	err := s.exec.retryConflicts(ctx, func(ctx context.Context, tx store.Tx) error {
		op.Steps, res.Clusters = nil, nil
		row, err := tx.GetDeployment(ctx, key)
		if err != nil {
			return err
		}
		if expected != store.AnyRevision && row.Revision != expected {
			return fault.Wrap(fault.Conflict, store.ErrStale, "deployment %q: revision %d is stale (current %d)", key, expected, row.Revision)
		}
		rs, err := tx.ListRollouts(ctx, store.RolloutFilter{DeploymentKeys: []string{key}})
		if err != nil {
			return err
		}
		if op.Steps, err = deleteSteps(rs, cluster); err != nil {
			return err
		}
		res.Clusters = deletedClusters(row.Targets, op.Steps, cluster)
		if len(op.Steps) == 0 {
			if cluster != "" {
				return nil
			}
			// Nothing runs anywhere, but an operation at work (a deploy
			// about to send units) must finish first.
			active, err := tx.ListOperations(ctx, store.OperationFilter{DeploymentKey: key, Active: true})
			if err != nil {
				return err
			}
			if len(active) > 0 {
				return fault.Wrap(fault.Conflict, store.ErrOperationActive, "deployment %q has an operation in progress; try again when it finishes", key)
			}
			return tx.DeleteDeployment(ctx, key, row.Revision)
		}
		return startOperation(ctx, tx, &op)
	})
	if errors.Is(err, store.ErrNotFound) {
		return res, fault.NotFoundf("deployment %q not found", key)
	}
	if err != nil || len(op.Steps) == 0 {
		return res, err
	}
	out, err := s.run(ctx, op, nil, true)
	if err != nil {
		return res, err
	}
	if out.Failure == nil {
		s.log.InfoContext(ctx, "deployment deleted", "deployment", key, "cluster", cluster)
	}
	return res, out.Failure
}

// deletedClusters names what a delete removes: for a whole deployment, the
// clusters it was placed on and any other with a unit; for one cluster,
// that cluster if it had a unit.
func deletedClusters(targets []string, steps []Step, cluster string) []string {
	var out []string
	if cluster == "" {
		out = slices.Clone(targets)
	}
	var more []string
	for _, st := range steps {
		if !slices.Contains(out, st.Cluster) && !slices.Contains(more, st.Cluster) {
			more = append(more, st.Cluster)
		}
	}
	slices.Sort(more)
	return append(out, more...)
}

// deleteSteps are the units to remove: every one PM knows may run there
// (deployed, a deploy that failed with an unknown outcome, a removal not
// done yet). Deleting an absent unit is a no-op at the CRM.
func deleteSteps(rows []store.RolloutRow, cluster string) ([]Step, error) {
	var steps []Step
	for _, row := range rows {
		r, err := rolloutOf(row)
		if err != nil {
			return nil, err
		}
		if (cluster != "" && r.Cluster != cluster) || !r.State.known() {
			continue
		}
		steps = append(steps, Step{Cluster: r.Cluster, UnitID: r.UnitID, State: StepPending})
	}
	return steps, nil
}

// OperationsQuery selects operations.
type OperationsQuery struct {
	// DeploymentKey, when set, selects one deployment's operations.
	DeploymentKey string
	// Active selects only running and waiting ones.
	Active bool
	// Limit is the page size (0: the default page); PageToken continues
	// after a previous page.
	Limit     int
	PageToken string
}

// Operations returns one page of durable operations, oldest first, and
// the token of the next page.
func (s *Service) Operations(ctx context.Context, q OperationsQuery) ([]Operation, string, error) {
	limit, err := catalog.PageLimit(q.Limit)
	if err != nil {
		return nil, "", err
	}
	f := store.OperationFilter{DeploymentKey: q.DeploymentKey, Active: q.Active, Limit: limit + 1}
	if q.PageToken != "" {
		if f.AfterTime, f.AfterID, err = decodeOpToken(q.PageToken); err != nil {
			return nil, "", err
		}
	}
	rows, err := s.st.ListOperations(ctx, f)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(rows) > limit {
		rows = rows[:limit]
		last := rows[len(rows)-1]
		next = encodeOpToken(last.CreatedAt, last.ID)
	}
	out := make([]Operation, len(rows))
	for i, r := range rows {
		if out[i], err = operationOf(r); err != nil {
			return nil, "", err
		}
	}
	return out, next, nil
}

// Operations are ordered by (created_at, id); a page token carries both.
func encodeOpToken(t time.Time, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("o:" + strconv.FormatInt(t.UnixMicro(), 10) + ":" + id))
}

func decodeOpToken(tok string) (time.Time, string, error) {
	bad := fault.Invalidf("page_token: %q is not a token returned by a previous list call", tok)
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return time.Time{}, "", bad
	}
	rest, ok := strings.CutPrefix(string(raw), "o:")
	if !ok {
		return time.Time{}, "", bad
	}
	us, id, ok := strings.Cut(rest, ":")
	n, err := strconv.ParseInt(us, 10, 64)
	if !ok || err != nil {
		return time.Time{}, "", bad
	}
	return time.UnixMicro(n).UTC(), id, nil
}
