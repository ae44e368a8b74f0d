package deploy

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/protobuf/proto"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/correlation"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// Get returns a deployment, its condition refreshed from the clusters.
func (s *Service) Get(ctx context.Context, key string) (store.Deployment, error) {
	rec, err := s.get(ctx, key)
	if err != nil {
		return rec, err
	}
	if changed := s.refresh(ctx, rec); changed {
		if fresh, err := s.st.GetDeployment(ctx, key); err == nil {
			return fresh, nil
		}
	}
	return rec, nil
}

func (s *Service) get(ctx context.Context, key string) (store.Deployment, error) {
	rec, err := s.st.GetDeployment(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return rec, fault.NotFoundf("deployment %q not found", key)
	}
	return rec, err
}

// ListQuery selects deployments.
type ListQuery struct {
	PackageName, ClassKey, TargetEnv, TargetCluster string
	Limit, Offset                                   int
	After                                           string
}

// List returns deployments in key order.
func (s *Service) List(ctx context.Context, q ListQuery) ([]store.Deployment, error) {
	env := q.TargetEnv
	if env == "" {
		env = q.TargetCluster
	} else if q.TargetCluster != "" && q.TargetCluster != env {
		return nil, nil
	}
	return s.st.ListDeployments(ctx, store.DeploymentFilter{
		PackageName: q.PackageName, ClassKey: q.ClassKey, TargetEnv: env,
		After: q.After, Offset: q.Offset, Limit: q.Limit,
	})
}

// Mappings returns a deployment's cluster → unit id mapping.
func (s *Service) Mappings(ctx context.Context, key string) (map[string]string, error) {
	if _, err := s.get(ctx, key); err != nil {
		return nil, err
	}
	ms, err := s.st.Mappings(ctx, key)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(ms))
	for _, m := range ms {
		out[m.Cluster] = m.UnitID
	}
	return out, nil
}

// Delete removes a deployment's unit from one cluster (cluster != "") or
// every unit and then the deployment. A cluster without a unit is a no-op.
// expected is the caller's revision (store.AnyRevision: any).
func (s *Service) Delete(ctx context.Context, key, cluster string, expected int64) error {
	if _, err := s.get(ctx, key); err != nil {
		return err
	}
	if cluster != "" && !s.cl.Has(cluster) {
		return fault.Invalidf("cluster: unknown cluster %q (known: %s)", cluster, strings.Join(s.cl.Names(), ", "))
	}
	op := s.newOperation(store.OpDelete, key, cluster == "")
	err := s.st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		op.Steps = nil
		rec, err := tx.GetDeployment(ctx, key)
		if err != nil {
			return err
		}
		if expected != store.AnyRevision && rec.Revision != expected {
			return fault.New(fault.Conflict, "deployment %q: revision %d is stale (current %d)", key, expected, rec.Revision)
		}
		if err := noPendingOperation(ctx, tx, key); err != nil {
			return err
		}
		ms, err := tx.Mappings(ctx, key)
		if err != nil {
			return err
		}
		op.Steps = deleteSteps(rec.Deployment, ms, cluster)
		if len(op.Steps) == 0 {
			if cluster != "" {
				return nil
			}
			return tx.DeleteDeployment(ctx, key, rec.Revision)
		}
		return tx.CreateOperation(ctx, op)
	})
	if errors.Is(err, store.ErrNotFound) {
		return fault.NotFoundf("deployment %q not found", key)
	}
	if err != nil || len(op.Steps) == 0 {
		return err
	}
	out, err := s.run(ctx, op, nil)
	if err != nil {
		return err
	}
	if out.failure == nil {
		s.log.InfoContext(ctx, "deployment deleted", "deployment", key, "cluster", cluster)
	}
	return out.failure
}

// deleteSteps are the units to delete: every mapped one, and those whose
// deploy failed with an unknown outcome (it may have been applied anyway;
// deleting an absent unit is a no-op at the CRM).
func deleteSteps(d *pmv1.OClassDeployment, ms []store.Mapping, cluster string) []store.Step {
	var steps []store.Step
	mapped := map[string]bool{}
	for _, m := range ms {
		mapped[m.Cluster] = true
		if cluster == "" || m.Cluster == cluster {
			steps = append(steps, store.Step{Cluster: m.Cluster, UnitID: m.UnitID, State: store.OpPending})
		}
	}
	for _, r := range d.GetStatus().GetClusters() {
		if mapped[r.Cluster] || r.State != "failed" || (cluster != "" && r.Cluster != cluster) {
			continue
		}
		id := r.UnitId
		if id == "" {
			id = UnitID(d.GetKey(), r.Cluster)
		}
		steps = append(steps, store.Step{Cluster: r.Cluster, UnitID: id, State: store.OpPending})
	}
	return steps
}

// PackageWritten schedules a package's embedded deployments that do not
// exist yet. It runs them in the background: the package write is
// acknowledged already, and every failure is recorded on its deployment.
func (s *Service) PackageWritten(ctx context.Context, pkg *pmv1.OPackage) {
	cid := correlation.From(ctx)
	for _, d := range pkg.GetDeployments() {
		d = proto.CloneOf(d)
		if d.PackageName == "" {
			d.PackageName = pkg.GetName()
		}
		if _, err := s.st.GetDeployment(ctx, d.GetKey()); err == nil {
			continue
		}
		s.work.Go(func() {
			ctx := correlation.With(context.WithoutCancel(ctx), cid)
			s.autoDeploy(ctx, d)
		})
	}
}

func (s *Service) autoDeploy(ctx context.Context, d *pmv1.OClassDeployment) {
	res, err := s.Create(ctx, d, CreateOptions{Auto: true})
	switch {
	case err == nil:
		s.log.InfoContext(ctx, "auto-deployed", "deployment", d.GetKey(), "unit", res.UnitID)
		return
	case fault.KindOf(err) == fault.AlreadyExists:
		return
	case errors.Is(err, errAbandoned), fault.KindOf(err) == fault.Conflict:
		return
	}
	s.log.WarnContext(ctx, "auto-deploy failed", "deployment", d.GetKey(), "error", err)
	// Create stored the deployment when it got as far as calling clusters;
	// when it failed before (planning), store it now with the reason, so
	// the failure is visible on the deployment.
	if _, gerr := s.st.GetDeployment(ctx, d.GetKey()); gerr == nil {
		return
	}
	d = proto.CloneOf(d)
	d.Condition = pmv1.DeploymentCondition_DOWN
	d.Status = &pmv1.DeploymentStatusSummary{LastError: proto.String(err.Error())}
	if _, cerr := s.st.CreateDeployment(ctx, d); cerr != nil && !errors.Is(cerr, store.ErrAlreadyExists) {
		s.log.ErrorContext(ctx, "could not record a failed auto-deploy", "deployment", d.GetKey(), "error", cerr)
	}
}

// BeforePackageDelete cascades a package delete to its deployments when the
// policy says so, and otherwise refuses while deployments exist.
func (s *Service) BeforePackageDelete(ctx context.Context, name string) error {
	ds, err := s.st.ListDeployments(ctx, store.DeploymentFilter{PackageName: name})
	if err != nil {
		return err
	}
	if len(ds) == 0 {
		return nil
	}
	keys := make([]string, len(ds))
	for i, d := range ds {
		keys[i] = d.Deployment.GetKey()
	}
	if !s.cfg.Cascade {
		return fault.New(fault.Conflict, "package %q has deployments (%s); delete them first or set PACKAGE_DELETE_CASCADE=true",
			name, strings.Join(keys, ", "))
	}
	for _, k := range keys {
		if err := s.Delete(ctx, k, "", store.AnyRevision); err != nil && fault.KindOf(err) != fault.NotFound {
			s.log.WarnContext(ctx, "cascade delete of a deployment failed; continuing", "package", name, "deployment", k, "error", err)
		}
	}
	return nil
}

// Wait waits for the operations started on behalf of requests and package
// writes (not the background loops).
func (s *Service) Wait() { s.work.Wait() }

// Operations returns the durable operations of a deployment (all with "").
func (s *Service) Operations(ctx context.Context, key string) ([]store.Operation, error) {
	return s.st.ListOperations(ctx, key)
}
