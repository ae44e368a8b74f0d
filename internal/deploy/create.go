package deploy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/google/uuid"
	"google.golang.org/protobuf/proto"

	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/catalog"
	"github.com/oaas/pm/internal/deploy/plan"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// DefaultCluster is the cluster a deployment without target_envs goes to.
const DefaultCluster = "default"

// CreateOptions tune Create.
type CreateOptions struct {
	// DryRun plans and returns the plan with no side effects.
	DryRun bool
	// Detached waits for the outcome as long as ctx allows, past
	// Config.RequestWait: the caller (an idempotent request running
	// detached) stores the result for the client's retry.
	Detached bool
}

// CreateResult is what Create did.
type CreateResult struct {
	Deployment store.Deployment
	// UnitID is the first successful cluster's unit id (empty on dry run).
	UnitID string
	Plan   plan.Plan
}

// prepared is a deployment resolved against the registry and the clusters.
type prepared struct {
	pkg     *pmv1.OPackage
	cls     *pmv1.OClass
	targets []string // ordered healthy first
	plan    plan.Plan
	units   map[string]*deploymentpb.DeploymentUnit
}

// Create validates, plans and deploys a class deployment.
func (s *Service) Create(ctx context.Context, d *pmv1.OClassDeployment, opt CreateOptions) (CreateResult, error) {
	if err := catalog.ValidateDeployment(d); err != nil {
		return CreateResult{}, err
	}
	d = proto.CloneOf(d)
	catalog.ClearServerFields(d)
	p, err := s.prepare(ctx, d, 0)
	if err != nil {
		return CreateResult{}, err
	}
	d.TargetEnvs = p.targets
	d.Status = summary(p)
	if opt.DryRun {
		return CreateResult{Deployment: store.Deployment{Deployment: d}, Plan: p.plan}, nil
	}

	d.Condition = pmv1.DeploymentCondition_DEPLOYING
	// A client's create that fails everywhere leaves nothing behind.
	op := s.deployOperation(store.OpDeploy, d.Key, true, p)
	err = s.st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.CreateDeployment(ctx, d); err != nil {
			return err
		}
		return startOperation(ctx, tx, op)
	})
	if errors.Is(err, store.ErrAlreadyExists) {
		return CreateResult{}, fault.New(fault.AlreadyExists, "deployment %q already exists", d.Key)
	}
	if err != nil {
		return CreateResult{}, err
	}
	s.log.InfoContext(ctx, "deployment planned", "deployment", d.Key, "clusters", p.targets,
		"replicas", p.plan.Replicas, "achieved_availability", p.plan.Achieved, "target_availability", p.plan.Target,
		"operation", op.ID)

	out, err := s.run(ctx, op, p.units, !opt.Detached)
	if err != nil {
		return CreateResult{}, err
	}
	if out.failure != nil {
		return CreateResult{}, out.failure
	}
	rec, err := s.st.GetDeployment(ctx, d.Key)
	if err != nil {
		return CreateResult{}, err
	}
	return CreateResult{Deployment: rec, UnitID: out.firstUnit, Plan: p.plan}, nil
}

// prepare resolves package, class and targets, plans replicas and builds
// one unit per target. previous is the replica count of an existing plan.
func (s *Service) prepare(ctx context.Context, d *pmv1.OClassDeployment, previous int) (*prepared, error) {
	pkg, cls, err := s.resolve(ctx, d)
	if err != nil {
		return nil, err
	}
	var problems catalog.Problems
	catalog.CheckFunctionSpecs(&problems, "", d, pkg, cls)
	if err := problems.Err("deployment"); err != nil {
		return nil, err
	}

	targets, err := s.targets(d.GetTargetEnvs())
	if err != nil {
		return nil, err
	}
	inputs, ordered, err := s.availabilities(ctx, targets)
	if err != nil {
		return nil, err
	}
	target := s.cfg.DefaultTarget
	if n := d.GetNfrRequirements(); n != nil && n.Availability != nil {
		target = n.GetAvailability()
	}
	pl, err := plan.Compute(plan.Input{
		Target:    target,
		Clusters:  inputs,
		Algorithm: s.cfg.Algorithm,
		Cap:       s.cfg.ReplicaCap,
		Strong:    cls.GetStateSpec().GetConsistencyModel() == pmv1.ConsistencyModel_STRONG,
		Previous:  previous,
		Margin:    s.cfg.HysteresisMargin,
	})
	if err != nil {
		return nil, err
	}
	units := make(map[string]*deploymentpb.DeploymentUnit, len(ordered))
	now := s.now()
	for _, c := range ordered {
		u, err := BuildUnit(pkg, cls, d, c, pl.Replicas, now)
		if err != nil {
			return nil, err
		}
		units[c] = u
	}
	return &prepared{pkg: pkg, cls: cls, targets: ordered, plan: pl, units: units}, nil
}

// resolve finds a deployment's package and class.
func (s *Service) resolve(ctx context.Context, d *pmv1.OClassDeployment) (*pmv1.OPackage, *pmv1.OClass, error) {
	rec, err := s.st.GetPackage(ctx, d.GetPackageName())
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, fault.NotFoundf("package %q not found", d.GetPackageName())
	}
	if err != nil {
		return nil, nil, err
	}
	for _, c := range rec.Package.GetClasses() {
		if c.GetKey() == d.GetClassKey() {
			return rec.Package, c, nil
		}
	}
	return nil, nil, fault.Invalidf("class_key: class %q not found in package %q", d.GetClassKey(), rec.Package.GetName())
}

// targets validates and deduplicates target clusters.
func (s *Service) targets(envs []string) ([]string, error) {
	if len(envs) == 0 {
		if s.cl.Has(DefaultCluster) {
			return []string{DefaultCluster}, nil
		}
		return nil, fault.Invalidf("target_envs: is empty and no cluster named %q is configured (known: %s)",
			DefaultCluster, strings.Join(s.cl.Names(), ", "))
	}
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

// availabilities asks every target for its availability in parallel and
// returns them with the targets in placement order (healthy first, then
// degraded, ties by name).
func (s *Service) availabilities(ctx context.Context, targets []string) ([]plan.Cluster, []string, error) {
	out := make([]plan.Cluster, len(targets))
	ranks := make(map[string]int, len(targets))
	var mu sync.Mutex
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, name := range targets {
		wg.Go(func() {
			sig, err := s.cl.Signals(ctx, name)
			if err != nil {
				errs[i] = fault.Wrap(fault.Unavailable, err, "cannot read its availability: %v", err)
				return
			}
			a, src, err := plan.Availability(sig.Availability, sig.NodeCount, sig.ReadyNodes)
			if err != nil {
				errs[i] = fault.Invalidf("it reports no usable availability: %v", err)
				return
			}
			out[i] = plan.Cluster{Name: name, Availability: a, Source: src}
			mu.Lock()
			ranks[name] = sig.Rank
			mu.Unlock()
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		// Every target unreachable is an outage (503); some targets without
		// a usable availability is a bad target list (400, naming them).
		unreachable := 0
		var names []string
		for i, e := range errs {
			if e != nil {
				names = append(names, fmt.Sprintf("%q (%v)", targets[i], e))
				if fault.KindOf(e) == fault.Unavailable {
					unreachable++
				}
			}
		}
		if unreachable == len(targets) {
			return nil, nil, fault.Wrap(fault.Unavailable, err, "no target cluster can be reached: %s", strings.Join(names, "; "))
		}
		return nil, nil, fault.Invalidf("target_envs: no usable availability for %s", strings.Join(names, "; "))
	}
	ordered := slices.Clone(targets)
	slices.SortStableFunc(ordered, func(a, b string) int {
		return cmp.Or(cmp.Compare(ranks[a], ranks[b]), cmp.Compare(a, b))
	})
	return out, ordered, nil
}

// summary is the inspection view of a plan stored on the deployment.
func summary(p *prepared) *pmv1.DeploymentStatusSummary {
	sum := &pmv1.DeploymentStatusSummary{
		ReplicationFactor:          int32(p.plan.Replicas),
		SelectedEnvs:               slices.Clone(p.targets),
		AchievedQuorumAvailability: p.plan.Achieved,
		TargetAvailability:         p.plan.Target,
		Algorithm:                  string(p.plan.Algorithm),
	}
	avail := map[string]plan.Cluster{}
	for _, c := range p.plan.Ordered {
		avail[c.Name] = c
	}
	for _, c := range p.targets {
		sum.Clusters = append(sum.Clusters, &pmv1.ClusterRollout{
			Cluster:            c,
			Availability:       avail[c].Availability,
			AvailabilitySource: avail[c].Source,
			UnitId:             p.units[c].GetId(),
			State:              string(store.OpPending),
			Condition:          pmv1.DeploymentCondition_PENDING,
		})
	}
	return sum
}

// startOperation stores op unless its deployment already has an operation
// in progress: one operation at a time per deployment, so a delete cannot
// race a deploy (whose late mapping would outlive the deployment) and a
// repair cannot undo a delete.
func startOperation(ctx context.Context, tx store.Tx, op store.Operation) error {
	if err := noPendingOperation(ctx, tx, op.DeploymentKey); err != nil {
		return err
	}
	return tx.CreateOperation(ctx, op)
}

// noPendingOperation fails with a Conflict while key has an operation in
// progress.
func noPendingOperation(ctx context.Context, tx store.Tx, key string) error {
	ops, err := tx.ListOperations(ctx, key)
	if err != nil {
		return err
	}
	for _, o := range ops {
		if o.State == store.OpPending {
			return fault.New(fault.Conflict, "deployment %q has a %s operation in progress (%s); try again when it finishes",
				key, o.Kind, o.ID)
		}
	}
	return nil
}

// deployOperation is an operation sending p's units, one step per target.
func (s *Service) deployOperation(kind store.OperationKind, key string, drop bool, p *prepared) store.Operation {
	op := s.newOperation(kind, key, drop)
	for _, c := range p.targets {
		op.Steps = append(op.Steps, store.Step{Cluster: c, UnitID: p.units[c].GetId(), State: store.OpPending})
	}
	return op
}

func (s *Service) newOperation(kind store.OperationKind, key string, drop bool) store.Operation {
	now := s.now()
	return store.Operation{
		ID: uuid.NewString(), Kind: kind, DeploymentKey: key, DropDeployment: drop,
		State: store.OpPending, Owner: s.cfg.Owner, LeaseUntil: now.Add(s.cfg.Lease),
		CreatedAt: now, UpdatedAt: now,
	}
}
