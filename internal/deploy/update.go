package deploy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/catalog"
	"github.com/oaas/pm/internal/deploy/plan"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// Deployment updates: a changed spec becomes a new spec revision (kept,
// bounded, for rollbacks), is re-planned, and rolls out through a durable
// update operation, one cluster at a time. The spec, its revision, the
// plan and the operation land in one transaction, so a PM that dies
// mid-rollout leaves an operation another PM finishes from the stored
// spec. When a cluster fails, the update stops there and the previous
// revision is put back (a new revision, "reverted") and re-sent to the
// clusters the update reached (a revert operation); when every cluster
// took it, the clusters the new spec no longer targets lose their units (a
// delete operation). The transitions are machine.go's; the executor starts
// the follow-up operation in the transaction that finishes the update.

// UpdateOptions tune Update.
type UpdateOptions struct {
	// Expected is the caller's revision (store.AnyRevision: any); a
	// stale one is a conflict and changes nothing.
	Expected int64
	// DryRun plans and returns the plan with no side effects.
	DryRun bool
	// Detached waits for the outcome as long as ctx allows (see
	// CreateOptions).
	Detached bool
}

// UpdateResult is what an update did.
type UpdateResult struct {
	Deployment Deployment
	// Units maps every cluster that runs the deployment to its unit id.
	Units map[string]string
	Plan  plan.Plan
	// Changed is false when the spec was the stored one: nothing was done.
	Changed   bool
	Selection Selection
}

// errChanged: the deployment moved between the read an update planned
// from and its transaction.
var errChanged = errors.New("deployment changed while the update was planned")

// Update changes the deployment called key to spec (see the top of this
// file). The same spec again changes nothing.
func (s *Service) Update(ctx context.Context, key string, spec *pmv1.OClassDeployment, opt UpdateOptions) (UpdateResult, error) {
	if spec == nil {
		return UpdateResult{}, fault.Invalidf("invalid deployment: deployment: is required")
	}
	spec = proto.CloneOf(spec)
	if spec.GetKey() == "" {
		spec.Key = key
	}
	if spec.GetKey() != key {
		return UpdateResult{}, fault.Invalidf("key in path %q does not match key in body %q", key, spec.GetKey())
	}
	if err := catalog.ValidateDeployment(spec); err != nil {
		return UpdateResult{}, err
	}
	catalog.ClearServerFields(spec)
	return s.update(ctx, spec, opt, OutcomeUpdated)
}

// update applies a validated, cleared spec; reason is recorded with the
// new revision. A deployment that moved meanwhile (a re-plan, a settled
// operation) is read again, unless the caller named its revision.
func (s *Service) update(ctx context.Context, spec *pmv1.OClassDeployment, opt UpdateOptions, reason string) (UpdateResult, error) {
	for attempt := 1; ; attempt++ {
		res, err := s.updateOnce(ctx, spec, opt, reason)
		if !errors.Is(err, errChanged) {
			return res, err
		}
		if opt.Expected != store.AnyRevision || attempt == 3 {
			return UpdateResult{}, fault.Wrap(fault.Conflict, store.ErrStale, "deployment %q changed while the update was planned; retry", spec.GetKey())
		}
	}
}

func (s *Service) updateOnce(ctx context.Context, spec *pmv1.OClassDeployment, opt UpdateOptions, reason string) (UpdateResult, error) {
	key := spec.GetKey()
	cur, err := s.read(ctx, key)
	if err != nil {
		return UpdateResult{}, err
	}
	if opt.Expected != store.AnyRevision && cur.Revision != opt.Expected {
		return UpdateResult{}, fault.Wrap(fault.Conflict, store.ErrStale, "deployment %q: revision %d is stale (current %d)", key, opt.Expected, cur.Revision)
	}
	if s.sameSpec(ctx, spec, &cur) {
		cur = s.answered(ctx, cur)
		return UpdateResult{Deployment: cur, Units: cur.Mapped(), Plan: storedPlan(cur.Plan)}, nil
	}
	var current []string
	if len(spec.GetTargetEnvs()) == 0 && len(cur.Spec.GetTargetEnvs()) == 0 {
		current = cur.Plan.Clusters
	}
	p, err := s.prepare(ctx, spec, prepareOpts{current: current, previous: cur.Plan.Replicas})
	if err != nil {
		return UpdateResult{}, err
	}
	if reason == OutcomeUpdated && proto.Equal(spec, cur.Spec) {
		reason = fmt.Sprintf("updated to package %q revision %d", spec.GetPackageName(), p.pkgRev)
	}
	next := cur
	next.Spec, next.Plan, next.SpecRevision, next.PackageDigest = spec, planOf(p), max(cur.SpecRevision, 1)+1, p.digest
	next.Rollouts = updatedRollouts(cur.Rollouts, p)
	if opt.DryRun {
		next.Answer = answerSpec(&next, p.pkg)
		return UpdateResult{Deployment: next, Plan: p.plan, Changed: true, Selection: p.sel}, nil
	}
	op := s.newOperation(KindUpdate, key, false)
	for _, c := range p.targets {
		op.Steps = append(op.Steps, Step{Cluster: c, UnitID: p.units[c].GetId(), State: StepPending})
	}
	err = s.exec.retryConflicts(ctx, func(ctx context.Context, tx store.Tx) error {
		row, err := tx.GetDeployment(ctx, key)
		if err != nil {
			return err
		}
		if row.Revision != cur.Revision {
			return errChanged
		}
		if cur.SpecRevision == 0 {
			// Stored before revisions were kept: its spec becomes revision 1.
			old := cur
			old.SpecRevision = 1
			if err := tx.PutRevision(ctx, revisionRow(&old, "recorded before revisions were kept"), maxRevisions); err != nil {
				return err
			}
		}
		nrow := deploymentRow(&next)
		if _, err := tx.UpdateDeployment(ctx, nrow, row.Revision); err != nil {
			return err
		}
		if err := tx.PutRevision(ctx, revisionRow(&next, reason), maxRevisions); err != nil {
			return err
		}
		var rs []store.RolloutRow
		for _, r := range next.Rollouts {
			if slices.Contains(p.targets, r.Cluster) {
				rs = append(rs, rolloutRow(key, r))
			}
		}
		if err := tx.PutRollouts(ctx, rs...); err != nil {
			return err
		}
		return startOperation(ctx, tx, &op)
	})
	if errors.Is(err, store.ErrNotFound) {
		return UpdateResult{}, fault.NotFoundf("deployment %q not found", key)
	}
	if err != nil {
		return UpdateResult{}, err
	}
	s.log.InfoContext(ctx, "deployment update planned", "deployment", key, "spec_revision", next.SpecRevision,
		"clusters", p.targets, "replicas", p.plan.Replicas, "operation", op.ID, "reason", reason)
	out, err := s.run(ctx, op, p.units, !opt.Detached)
	if err != nil {
		return UpdateResult{}, err
	}
	if out.Failure != nil {
		return UpdateResult{}, out.Failure
	}
	got, err := s.read(ctx, key)
	if err != nil {
		return UpdateResult{}, err
	}
	got = s.answered(ctx, got)
	return UpdateResult{Deployment: got, Units: out.Units, Plan: p.plan, Changed: true, Selection: p.sel}, nil
}

// sameSpec reports whether spec is what cur runs: its stored spec, or
// the spec as PM answers it (a client that read the deployment and sent it
// back), planned from the package as it is. A change to the class or the
// functions it runs since the deployment was planned makes the same spec a
// change: applying it again rolls the package out, as OaaS's re-POST does.
func (s *Service) sameSpec(ctx context.Context, spec *pmv1.OClassDeployment, cur *Deployment) bool {
	if cur.PackageDigest != 0 {
		pkg, _, cls, err := s.resolve(ctx, spec)
		if err != nil || packageDigest(pkg, cls, spec) != cur.PackageDigest {
			return false
		}
	}
	if proto.Equal(spec, cur.Spec) {
		return true
	}
	ans := s.answered(ctx, *cur).Answer
	if ans == nil {
		return false
	}
	ans = proto.CloneOf(ans)
	catalog.ClearServerFields(ans)
	return proto.Equal(spec, ans)
}

// updatedRollouts are an update's rollouts: the clusters it targets that
// PM answers for keep their state until their step says otherwise (with
// the new plan's inputs); the others are planned; the rest are left as
// they are (a delete removes them once the update went through).
func updatedRollouts(cur []Rollout, p *prepared) []Rollout {
	avail := map[string]plan.Cluster{}
	for _, c := range p.plan.Ordered {
		avail[c.Name] = c
	}
	out := slices.Clone(cur)
	for _, c := range p.targets {
		i := slices.IndexFunc(out, func(r Rollout) bool { return r.Cluster == c })
		if i < 0 {
			out = append(out, Rollout{Cluster: c, State: RolloutPlanned, Condition: CondPending})
			i = len(out) - 1
		} else if !out[i].State.known() {
			out[i].State, out[i].Condition, out[i].Error = RolloutPlanned, CondPending, ""
		}
		out[i].UnitID = p.units[c].GetId()
		out[i].Availability, out[i].AvailabilitySource = avail[c].Availability, avail[c].Source
	}
	slices.SortFunc(out, func(a, b Rollout) int { return strings.Compare(a.Cluster, b.Cluster) })
	return out
}

// storedPlan is a stored plan as the planner's type, for answers.
func storedPlan(p Plan) plan.Plan {
	return plan.Plan{Replicas: p.Replicas, Achieved: p.Achieved, Target: p.Target, Algorithm: plan.Algorithm(p.Algorithm)}
}

// Revision is one kept spec revision of a deployment.
type Revision struct {
	Number int64
	// Spec is the spec as the client wrote it.
	Spec *pmv1.OClassDeployment
	// Clusters are the clusters it was planned on.
	Clusters []string
	Reason   string
	// Current is set on the revision the deployment's spec is.
	Current   bool
	CreatedAt time.Time
}

// Revisions lists the kept spec revisions of a deployment, newest first.
func (s *Service) Revisions(ctx context.Context, key string) ([]Revision, error) {
	cur, err := s.read(ctx, key)
	if err != nil {
		return nil, err
	}
	rows, err := s.st.ListRevisions(ctx, key)
	if err != nil {
		return nil, err
	}
	if len(rows) == 0 && cur.SpecRevision == 0 {
		// Stored before revisions were kept: its spec is the only one.
		return []Revision{{Number: 1, Spec: cur.Spec, Clusters: cur.Plan.Clusters,
			Reason: "recorded before revisions were kept", Current: true, CreatedAt: cur.UpdatedAt}}, nil
	}
	out := make([]Revision, len(rows))
	for i, r := range rows {
		out[i] = Revision{Number: r.Revision, Spec: r.Spec, Clusters: r.Targets, Reason: r.Reason,
			Current: r.Revision == cur.SpecRevision, CreatedAt: r.CreatedAt}
	}
	return out, nil
}

// Rollback updates a deployment to the spec of one of its kept revisions
// (to 0: the one before the current), recorded as a new revision. It
// returns the revision it went back to.
func (s *Service) Rollback(ctx context.Context, key string, to, expected int64) (UpdateResult, int64, error) {
	if to < 0 {
		return UpdateResult{}, 0, fault.Invalidf("to_revision: must not be negative")
	}
	revs, err := s.Revisions(ctx, key)
	if err != nil {
		return UpdateResult{}, 0, err
	}
	var target *Revision
	cur := slices.IndexFunc(revs, func(r Revision) bool { return r.Current })
	switch {
	case to == 0 && (cur < 0 || cur+1 >= len(revs)):
		return UpdateResult{}, 0, fault.Invalidf("deployment %q has no earlier revision to roll back to (kept: %s)", key, revisionNumbers(revs))
	case to == 0:
		target = &revs[cur+1]
	default:
		i := slices.IndexFunc(revs, func(r Revision) bool { return r.Number == to })
		if i < 0 {
			return UpdateResult{}, 0, fault.NotFoundf("deployment %q has no revision %d (kept: %s)", key, to, revisionNumbers(revs))
		}
		target = &revs[i]
	}
	spec := proto.CloneOf(target.Spec)
	spec.Key = key
	res, err := s.update(ctx, spec, UpdateOptions{Expected: expected}, fmt.Sprintf("rolled back to revision %d", target.Number))
	return res, target.Number, err
}

func revisionNumbers(revs []Revision) string {
	if len(revs) == 0 {
		return "none"
	}
	parts := make([]string, len(revs))
	for i, r := range revs {
		parts[i] = fmt.Sprint(r.Number)
	}
	return strings.Join(parts, ", ")
}
