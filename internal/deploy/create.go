package deploy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/catalog"
	"github.com/oaas/pm/internal/deploy/plan"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// DefaultCluster is the cluster runtime reads ask when a request names
// none and a cluster of that name is configured.
const DefaultCluster = "default"

// CreateOptions tune Create.
type CreateOptions struct {
	// DryRun plans and returns the plan with no side effects.
	DryRun bool
	// Detached waits for the outcome as long as ctx allows, past one CRM
	// timeout: the caller (an idempotent request running detached) stores
	// the result for the client's retry.
	Detached bool
	// RequestKey identifies the client request (its idempotency key and
	// body). A create that finds the deployment made by the same request
	// (its first attempt, cut short by a crash) waits for that attempt's
	// operation and answers with its result instead of a conflict.
	RequestKey string
	// Apply makes a create of a key that exists (made by another request)
	// an update to the spec, as OaaS's POST does, instead of a conflict.
	Apply bool
}

// Outcome words of CreateResult and UpdateResult.
const (
	OutcomeCreated   = "created"
	OutcomeUpdated   = "updated"
	OutcomeUnchanged = "unchanged"
)

// CreateResult is what Create did.
type CreateResult struct {
	Deployment Deployment
	// Units maps every cluster that runs the deployment to its unit id
	// (empty on a dry run).
	Units map[string]string
	Plan  plan.Plan
	// Outcome is OutcomeCreated, or with Apply OutcomeUpdated or
	// OutcomeUnchanged.
	Outcome string
	// Selection says how the clusters were chosen.
	Selection Selection
}

// prepared is a deployment resolved against the registry and the clusters.
type prepared struct {
	pkg    *pmv1.OPackage
	pkgRev int64
	// digest fingerprints the class and functions the units were built
	// from.
	digest  int64
	cls     *pmv1.OClass
	targets []string // ordered healthy first
	plan    plan.Plan
	units   map[string]*deploymentpb.DeploymentUnit
	sel     Selection
}

// prepareOpts say where a deployment is placed and what it ran before.
type prepareOpts struct {
	// targets, when set, are the clusters (a re-plan keeps its own);
	// otherwise the spec's target_envs, or automatic selection.
	targets []string
	// current are the clusters an earlier plan selected automatically: a
	// new selection keeps them within the hysteresis margin.
	current []string
	// previous is the replica count of an existing plan.
	previous int
}

// maxRevisions is how many spec revisions PM keeps of each deployment.
const maxRevisions = 10

// Create validates, plans and deploys a class deployment.
func (s *Service) Create(ctx context.Context, spec *pmv1.OClassDeployment, opt CreateOptions) (CreateResult, error) {
	if err := catalog.ValidateDeployment(spec); err != nil {
		return CreateResult{}, err
	}
	spec = proto.CloneOf(spec)
	catalog.ClearServerFields(spec)
	if opt.Apply {
		row, err := s.st.GetDeployment(ctx, spec.GetKey())
		switch {
		case err == nil && (opt.RequestKey == "" || row.RequestKey != opt.RequestKey):
			return s.applyExisting(ctx, spec, opt)
		case err != nil && !errors.Is(err, store.ErrNotFound):
			return CreateResult{}, err
		}
	}
	p, err := s.prepare(ctx, spec, prepareOpts{})
	if err != nil {
		return CreateResult{}, err
	}
	d := Deployment{Key: spec.GetKey(), Spec: spec, Plan: planOf(p), Rollouts: plannedRollouts(p), SpecRevision: 1, PackageDigest: p.digest}
	if opt.DryRun {
		d.Answer = answerSpec(&d, p.pkg)
		return CreateResult{Deployment: d, Plan: p.plan, Outcome: OutcomeCreated, Selection: p.sel}, nil
	}

	// A client's create that fails everywhere leaves nothing behind.
	op := s.deployOperation(KindDeploy, d.Key, true, p)
	err = s.exec.retryConflicts(ctx, func(ctx context.Context, tx store.Tx) error {
		row := deploymentRow(&d)
		row.RequestKey = opt.RequestKey
		if _, err := tx.CreateDeployment(ctx, row, rolloutRows(&d)...); err != nil {
			return err
		}
		if err := tx.PutRevision(ctx, revisionRow(&d, "created"), maxRevisions); err != nil {
			return err
		}
		return startOperation(ctx, tx, &op)
	})
	if errors.Is(err, store.ErrAlreadyExists) {
		if opt.RequestKey != "" {
			res, rerr := s.replay(ctx, d.Key, opt)
			if opt.Apply && fault.KindOf(rerr) == fault.AlreadyExists {
				// Made by another request meanwhile: apply over it.
				return s.applyExisting(ctx, spec, opt)
			}
			return res, rerr
		}
		if opt.Apply {
			return s.applyExisting(ctx, spec, opt)
		}
		return CreateResult{}, fault.New(fault.AlreadyExists, "deployment %q already exists", d.Key)
	}
	if err != nil {
		return CreateResult{}, err
	}
	s.log.InfoContext(ctx, "deployment planned", "deployment", d.Key, "clusters", p.targets,
		"replicas", p.plan.Replicas, "achieved_availability", p.plan.Achieved, "target_availability", p.plan.Target,
		"operation", op.ID, "selected", p.sel.Auto)

	out, err := s.run(ctx, op, p.units, !opt.Detached)
	if err != nil {
		return CreateResult{}, err
	}
	if out.Failure != nil {
		return CreateResult{}, out.Failure
	}
	got, err := s.read(ctx, d.Key)
	if err != nil {
		return CreateResult{}, err
	}
	got = s.answered(ctx, got)
	return CreateResult{Deployment: got, Units: out.Units, Plan: p.plan, Outcome: OutcomeCreated, Selection: p.sel}, nil
}

// applyExisting is a create (with Apply) of a key that exists: an update.
func (s *Service) applyExisting(ctx context.Context, spec *pmv1.OClassDeployment, opt CreateOptions) (CreateResult, error) {
	res, err := s.update(ctx, spec, UpdateOptions{Expected: store.AnyRevision, DryRun: opt.DryRun, Detached: opt.Detached}, "updated")
	if err != nil {
		return CreateResult{}, err
	}
	out := OutcomeUpdated
	if !res.Changed {
		out = OutcomeUnchanged
	}
	return CreateResult{Deployment: res.Deployment, Units: res.Units, Plan: res.Plan, Outcome: out, Selection: res.Selection}, nil
}

// revisionRow is the revision row of d's spec and plan.
func revisionRow(d *Deployment, reason string) store.RevisionRow {
	return store.RevisionRow{
		DeploymentKey: d.Key, Revision: d.SpecRevision, Spec: d.Spec, Targets: d.Plan.Clusters,
		Replicas: d.Plan.Replicas, TargetAvailability: d.Plan.Target, AchievedAvailability: d.Plan.Achieved,
		Algorithm: d.Plan.Algorithm, Strong: d.Plan.Strong, Reason: reason,
	}
}

// replay answers a create whose deployment an earlier attempt of the same
// request made: once that attempt's operation (resumed by some PM) is over,
// with the deployment as it came out. A deployment made by another request
// is a conflict.
func (s *Service) replay(ctx context.Context, key string, opt CreateOptions) (CreateResult, error) {
	exists := fault.New(fault.AlreadyExists, "deployment %q already exists", key)
	row, err := s.st.GetDeployment(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		// Its create failed and was rolled back meanwhile.
		return CreateResult{}, fault.New(fault.Unavailable, "deployment %q: the earlier attempt of this request failed; retry", key)
	}
	if err != nil {
		return CreateResult{}, err
	}
	if row.RequestKey != opt.RequestKey {
		return CreateResult{}, exists
	}
	wait := s.cfg.CRMTimeout + requestWaitSlack
	if opt.Detached {
		wait = 0
	}
	op, err := s.awaitOperations(ctx, key, wait)
	if err != nil {
		return CreateResult{}, err
	}
	if op != nil && op.State == OpFailed && op.Kind == KindDeploy {
		return CreateResult{}, fault.New(fault.Unavailable, "%s", op.Error)
	}
	d, err := s.read(ctx, key)
	if errors.Is(err, store.ErrNotFound) || fault.KindOf(err) == fault.NotFound {
		return CreateResult{}, fault.New(fault.Unavailable, "deployment %q: the earlier attempt of this request failed; retry", key)
	}
	if err != nil {
		return CreateResult{}, err
	}
	s.log.InfoContext(ctx, "create retried after its first attempt was cut short; answering with its result", "deployment", key)
	d = s.answered(ctx, d)
	return CreateResult{Deployment: d, Units: d.Mapped(), Outcome: OutcomeCreated, Plan: plan.Plan{
		Replicas: d.Plan.Replicas, Achieved: d.Plan.Achieved, Target: d.Plan.Target, Algorithm: plan.Algorithm(d.Plan.Algorithm),
	}}, nil
}

// awaitOperations waits until key has no active operation (up to wait, or
// as long as ctx lasts when wait is 0) and returns its latest one.
func (s *Service) awaitOperations(ctx context.Context, key string, wait time.Duration) (*Operation, error) {
	var deadline <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		rows, err := s.st.ListOperations(ctx, store.OperationFilter{DeploymentKey: key})
		if err != nil {
			return nil, err
		}
		var last *Operation
		active := false
		for _, r := range rows {
			op, err := operationOf(r)
			if err != nil {
				return nil, err
			}
			active = active || op.State.Active()
			last = &op
		}
		if !active {
			return last, nil
		}
		select {
		case <-ctx.Done():
			return nil, fault.Wrap(fault.Unavailable, ctx.Err(), "deployment %q is still being deployed; retry", key)
		case <-deadline:
			return nil, fault.New(fault.Unavailable, "deployment %q is still being deployed; retry", key)
		case <-tick.C:
		}
	}
}

// planOf is the model's plan of a prepared deployment.
func planOf(p *prepared) Plan {
	return Plan{
		Replicas: p.plan.Replicas, Target: p.plan.Target, Achieved: p.plan.Achieved,
		Algorithm: string(p.plan.Algorithm), Strong: p.cls.GetStateSpec().GetConsistencyModel() == pmv1.ConsistencyModel_STRONG,
		Clusters: slices.Clone(p.targets),
	}
}

// plannedRollouts are a new plan's rollouts, one per target.
func plannedRollouts(p *prepared) []Rollout {
	avail := map[string]plan.Cluster{}
	for _, c := range p.plan.Ordered {
		avail[c.Name] = c
	}
	out := make([]Rollout, 0, len(p.targets))
	for _, c := range p.targets {
		out = append(out, Rollout{
			Cluster: c, UnitID: p.units[c].GetId(), State: RolloutPlanned, Condition: CondPending,
			Availability: avail[c].Availability, AvailabilitySource: avail[c].Source,
		})
	}
	slices.SortFunc(out, func(a, b Rollout) int { return cmp.Compare(a.Cluster, b.Cluster) })
	return out
}

func rolloutRows(d *Deployment) []store.RolloutRow {
	out := make([]store.RolloutRow, len(d.Rollouts))
	for i, r := range d.Rollouts {
		out[i] = rolloutRow(d.Key, r)
	}
	return out
}

// deployOperation is an operation sending p's units, one step per target.
func (s *Service) deployOperation(kind Kind, key string, drop bool, p *prepared) Operation {
	op := s.newOperation(kind, key, drop)
	for _, c := range p.targets {
		op.Steps = append(op.Steps, Step{Cluster: c, UnitID: p.units[c].GetId(), State: StepPending})
	}
	return op
}

// prepare resolves package, class and targets, plans replicas and builds
// one unit per target.
func (s *Service) prepare(ctx context.Context, spec *pmv1.OClassDeployment, o prepareOpts) (*prepared, error) {
	pkg, pkgRev, cls, err := s.resolve(ctx, spec)
	if err != nil {
		return nil, err
	}
	var problems catalog.Problems
	catalog.CheckFunctionSpecs(&problems, "", spec, pkg, cls)
	if err := problems.Err("deployment"); err != nil {
		return nil, err
	}
	strong := cls.GetStateSpec().GetConsistencyModel() == pmv1.ConsistencyModel_STRONG
	var (
		inputs  []plan.Cluster
		ordered []string
		sel     Selection
	)
	switch {
	case len(o.targets) > 0 || len(spec.GetTargetEnvs()) > 0:
		targets := o.targets
		if len(targets) == 0 {
			if targets, err = s.targets(spec.GetTargetEnvs()); err != nil {
				return nil, err
			}
		}
		inputs, ordered, err = s.availabilities(ctx, targets)
	default:
		inputs, ordered, sel, err = s.selectClusters(ctx, spec, strong, o.current)
	}
	if err != nil {
		return nil, err
	}
	pl, err := s.plan(targetOf(spec, s.cfg.Deploy.DefaultAvailability), inputs, strong, o.previous)
	if err != nil {
		return nil, err
	}
	units := make(map[string]*deploymentpb.DeploymentUnit, len(ordered))
	now := s.now()
	eff := effectiveSpec(spec, ordered)
	for _, c := range ordered {
		u, err := BuildUnit(pkg, cls, eff, c, pl.Replicas, now)
		if err != nil {
			return nil, err
		}
		units[c] = u
	}
	return &prepared{pkg: pkg, pkgRev: pkgRev, digest: packageDigest(pkg, cls, spec), cls: cls, targets: ordered, plan: pl,
		units: units, sel: sel}, nil
}

// targetOf is the availability a deployment asks for, else the default.
func targetOf(spec *pmv1.OClassDeployment, def float64) float64 {
	if n := spec.GetNfrRequirements(); n != nil && n.Availability != nil {
		return n.GetAvailability()
	}
	return def
}

// plan computes a replica plan with the policy's settings.
func (s *Service) plan(target float64, clusters []plan.Cluster, strong bool, previous int) (plan.Plan, error) {
	return plan.Compute(plan.Input{
		Target:    target,
		Clusters:  clusters,
		Algorithm: s.alg,
		Cap:       s.cfg.Deploy.ReplicaCap,
		Strong:    strong,
		Previous:  previous,
		Margin:    s.cfg.Deploy.HysteresisMargin,
	})
}

// resolve finds a deployment's package (and its revision) and class.
func (s *Service) resolve(ctx context.Context, spec *pmv1.OClassDeployment) (*pmv1.OPackage, int64, *pmv1.OClass, error) {
	rec, err := s.st.GetPackage(ctx, spec.GetPackageName())
	if errors.Is(err, store.ErrNotFound) {
		return nil, 0, nil, fault.NotFoundf("package %q not found", spec.GetPackageName())
	}
	if err != nil {
		return nil, 0, nil, err
	}
	cls, err := classOf(rec.Package, spec.GetClassKey())
	return rec.Package, rec.Revision, cls, err
}

func classOf(pkg *pmv1.OPackage, key string) (*pmv1.OClass, error) {
	for _, c := range pkg.GetClasses() {
		if c.GetKey() == key {
			return c, nil
		}
	}
	return nil, fault.Invalidf("class_key: class %q not found in package %q", key, pkg.GetName())
}

// targets validates and deduplicates explicit target clusters.
func (s *Service) targets(envs []string) ([]string, error) {
	var out, unknown []string
	for _, e := range envs {
		if slices.Contains(out, e) {
			continue
		}
		if !s.cl.Has(e) {
			unknown = append(unknown, fmt.Sprintf("%q", e))
			continue
		}
		out = append(out, e)
	}
	if len(unknown) > 0 {
		return nil, fault.Invalidf("target_envs: unknown cluster %s (known: %s)",
			strings.Join(unknown, ", "), strings.Join(s.cl.Names(), ", "))
	}
	return out, nil
}

// checkPlacement checks what can be checked of a deployment's placement
// without asking the clusters: explicit targets are configured, or
// automatic selection has candidates.
func (s *Service) checkPlacement(spec *pmv1.OClassDeployment) error {
	if len(spec.GetTargetEnvs()) > 0 {
		_, err := s.targets(spec.GetTargetEnvs())
		return err
	}
	_, err := s.candidates(spec)
	return err
}

// availabilities asks every target for its availability in parallel and
// returns them with the targets in placement order (healthy first, then
// degraded, ties by name).
func (s *Service) availabilities(ctx context.Context, targets []string) ([]plan.Cluster, []string, error) {
	probes := s.probeAll(ctx, targets)
	out := make([]plan.Cluster, len(targets))
	var errs []error
	unreachable := 0
	var names []string
	rank := map[string]int{}
	for i, p := range probes {
		out[i], rank[p.name] = p.in, p.rank
		if p.err != nil {
			errs = append(errs, p.err)
			names = append(names, fmt.Sprintf("%q (%v)", p.name, p.err))
			if fault.KindOf(p.err) == fault.Unavailable {
				unreachable++
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		// Every target unreachable is an outage (503); some targets without
		// a usable availability is a bad target list (400, naming them).
		if unreachable == len(targets) {
			return nil, nil, fault.Wrap(fault.Unavailable, err, "no target cluster can be reached: %s", strings.Join(names, "; "))
		}
		return nil, nil, fault.Invalidf("target_envs: no usable availability for %s", strings.Join(names, "; "))
	}
	ordered := slices.Clone(targets)
	slices.SortStableFunc(ordered, func(a, b string) int {
		return cmp.Or(cmp.Compare(rank[a], rank[b]), cmp.Compare(a, b))
	})
	return out, ordered, nil
}

// clusterInput turns a cluster's signals into the planner's input.
func clusterInput(name string, sig Signals) (plan.Cluster, int, error) {
	a, src, err := plan.Availability(sig.Availability, sig.NodeCount, sig.ReadyNodes)
	if err != nil {
		return plan.Cluster{}, 0, fault.Invalidf("it reports no usable availability: %v", err)
	}
	return plan.Cluster{Name: name, Availability: a, Source: src}, sig.Rank, nil
}

// unitsFor rebuilds the units of a deploy operation from the stored
// deployment; unit ids are deterministic, so they match what a crashed PM
// may already have sent.
func (s *Service) unitsFor(ctx context.Context, op Operation) (map[string]*deploymentpb.DeploymentUnit, error) {
	row, err := s.st.GetDeployment(ctx, op.DeploymentKey)
	if err != nil {
		return nil, fmt.Errorf("deployment %q: %w", op.DeploymentKey, err)
	}
	pkg, _, cls, err := s.resolve(ctx, row.Spec)
	if err != nil {
		return nil, err
	}
	replicas := max(row.Replicas, 1)
	units := map[string]*deploymentpb.DeploymentUnit{}
	now := s.now()
	eff := effectiveSpec(row.Spec, row.Targets)
	for _, st := range op.Steps {
		u, err := BuildUnit(pkg, cls, eff, st.Cluster, replicas, now)
		if err != nil {
			return nil, err
		}
		units[st.Cluster] = u
	}
	return units, nil
}
