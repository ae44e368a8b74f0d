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
	out, err := s.run(ctx, op, nil, true)
	if err != nil {
		return err
	}
	if out.failure == nil {
		s.log.InfoContext(ctx, "deployment deleted", "deployment", key, "cluster", cluster)
		s.refreshed.Delete(key)
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

// StagePackage records a package's embedded deployments that do not exist
// yet, in the transaction that writes the package, as PENDING and not yet
// planned. PackageWritten then deploys them; if PM dies first, the
// reconciler finds them and does.
func (s *Service) StagePackage(ctx context.Context, tx store.Tx, pkg *pmv1.OPackage) error {
	for _, d := range pkg.GetDeployments() {
		d = embedded(pkg, d)
		if _, err := tx.GetDeployment(ctx, d.GetKey()); err == nil {
			continue
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if _, err := tx.CreateDeployment(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

// embedded is a package's embedded deployment spec as it is stored.
func embedded(pkg *pmv1.OPackage, d *pmv1.OClassDeployment) *pmv1.OClassDeployment {
	d = proto.CloneOf(d)
	if d.PackageName == "" {
		d.PackageName = pkg.GetName()
	}
	d.Condition, d.Status = pmv1.DeploymentCondition_PENDING, nil
	return d
}

// PackageWritten deploys a package's staged embedded deployments (see
// StagePackage) in the background: the package write is acknowledged
// already, and every failure is recorded on its deployment.
func (s *Service) PackageWritten(ctx context.Context, pkg *pmv1.OPackage) {
	cid := correlation.From(ctx)
	for _, d := range pkg.GetDeployments() {
		key := d.GetKey()
		s.goWork(func() {
			ctx := correlation.With(context.WithoutCancel(ctx), cid)
			rec, err := s.st.GetDeployment(ctx, key)
			if err != nil || rec.Deployment.GetStatus() != nil {
				return // deleted meanwhile, or planned before (it existed)
			}
			s.deployRecorded(ctx, rec, store.OpDeploy)
		})
	}
}

// deployRecorded plans and deploys a deployment that is stored but has no
// units anywhere: a staged embedded deployment, or one that failed
// everywhere before. It is a no-op when another operation works on it or
// it was planned meanwhile; a planning failure is recorded on it.
func (s *Service) deployRecorded(ctx context.Context, rec store.Deployment, kind store.OperationKind) bool {
	d := rec.Deployment
	p, err := s.prepare(ctx, d, 0)
	if err != nil {
		s.log.WarnContext(ctx, "auto-deploy cannot plan yet; the reconciler retries", "deployment", d.GetKey(), "error", err)
		next := proto.CloneOf(d)
		if next.Status == nil {
			next.Status = &pmv1.DeploymentStatusSummary{}
		}
		next.Condition = pmv1.DeploymentCondition_DOWN
		next.Status.LastError = proto.String(err.Error())
		// Only over what we planned from: another PM may be deploying it.
		_, _ = s.st.UpdateDeployment(ctx, next, rec.Revision)
		return false
	}
	op := s.deployOperation(kind, d.GetKey(), false, p)
	err = s.st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		cur, err := tx.GetDeployment(ctx, d.GetKey())
		if err != nil {
			return err
		}
		if cur.Revision != rec.Revision {
			return fault.New(fault.Conflict, "deployment %q changed meanwhile", d.GetKey())
		}
		next := proto.CloneOf(cur.Deployment)
		next.TargetEnvs, next.Status, next.Condition = p.targets, summary(p), pmv1.DeploymentCondition_DEPLOYING
		if le := cur.Deployment.GetStatus().GetLastError(); le != "" {
			next.Status.LastError = proto.String(le)
		}
		if _, err := tx.UpdateDeployment(ctx, next, cur.Revision); err != nil {
			return err
		}
		return startOperation(ctx, tx, op)
	})
	if err != nil {
		return false
	}
	s.log.InfoContext(ctx, "deploying a recorded deployment", "deployment", d.GetKey(), "operation", op.ID,
		"clusters", p.targets, "replicas", p.plan.Replicas)
	out, err := s.execute(ctx, op, p.units)
	return err == nil && out.failure == nil
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
	var busy []string
	for _, k := range keys {
		err := s.Delete(ctx, k, "", store.AnyRevision)
		switch {
		case err == nil, fault.KindOf(err) == fault.NotFound:
		case fault.KindOf(err) == fault.Conflict:
			// An operation is at work on it (an auto-deploy just started):
			// deleting the package now would leave that deployment running
			// without it.
			busy = append(busy, k)
		default:
			// Recorded as a pending delete that PM keeps retrying.
			s.log.WarnContext(ctx, "cascade delete of a deployment failed; continuing", "package", name, "deployment", k, "error", err)
		}
	}
	if len(busy) > 0 {
		return fault.New(fault.Conflict, "package %q: deployments %s have operations in progress; retry the delete when they finish",
			name, strings.Join(busy, ", "))
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
