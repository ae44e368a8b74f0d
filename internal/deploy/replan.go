package deploy

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/deploy/plan"
	"github.com/oaas/pm/internal/store"
)

// PlannerConfig configures the Planner.
type PlannerConfig struct {
	// Period is how often it passes over the deployments.
	Period time.Duration
	// Retry deploys staged embedded deployments whose PM died and embedded
	// ones that failed everywhere (RECONCILE_SELF_HEAL).
	Retry bool
	// Grace is how long a staged deployment is left to the PM that staged
	// it before another deploys it.
	Grace time.Duration
	// RetryBase is the first pause after a failed retry; it doubles up to
	// an hour.
	RetryBase time.Duration
	// PageSize is how many deployments one read takes.
	PageSize int
}

func (c PlannerConfig) validate() error {
	if c.Period < 0 || c.Grace <= 0 || c.RetryBase <= 0 || c.PageSize < 1 {
		return fmt.Errorf("planner: invalid config %+v", c)
	}
	return nil
}

// PlanResult is what one pass of the Planner did.
type PlanResult struct {
	// Replanned are deployments whose replica count moved and rolled out
	// to every cluster that runs them.
	Replanned []string
	// Retried are staged or failed deployments it deployed.
	Retried []string
	// Seen counts the deployments it looked at.
	Seen int
}

// PlannerTestSignals are the Planner's test signals.
type PlannerTestSignals struct {
	Passed Signal[PlanResult]
}

// Planner keeps deployments' plans current. Each pass reads the
// deployments in pages (their columns only), re-plans each from the
// clusters' last known availability (no CRM call) and, when the replica
// count moves by more than the hysteresis margin, rolls the new count out
// as a heal operation; deployments recorded but never deployed (their PM
// died) and embedded ones that failed everywhere are deployed again, with
// a backoff. Their failure is a state that heals, not a verdict.
type Planner struct {
	loop
	s           *Service
	cfg         PlannerConfig
	TestSignals PlannerTestSignals

	retryMu sync.Mutex
	retryAt map[string]retryState
}

// retryState is the backoff of one failing deployment.
type retryState struct {
	failures int
	next     time.Time
}

func newPlanner(s *Service) *Planner {
	cfg := PlannerConfig{
		Period: s.cfg.Reconcile.Interval, Retry: s.cfg.Reconcile.SelfHeal, Grace: s.cfg.Reconcile.OperationLease,
		RetryBase: max(s.cfg.Reconcile.Interval, time.Second), PageSize: pageSize,
	}
	if err := cfg.validate(); err != nil {
		panic(err)
	}
	p := &Planner{s: s, cfg: cfg, retryAt: map[string]retryState{}}
	p.loop = loop{name: "plan", period: cfg.Period, log: s.log, pass: func(ctx context.Context) {
		if _, err := p.RunOnce(ctx); err != nil {
			s.log.WarnContext(ctx, "plan pass failed", "error", err)
		}
	}}
	return p
}

// RunOnce passes over every deployment once.
func (p *Planner) RunOnce(ctx context.Context) (PlanResult, error) {
	var res PlanResult
	busy, err := p.s.busy(ctx)
	if err != nil {
		return res, err
	}
	inputs := map[string]*plan.Cluster{} // cluster → last known input (nil: none)
	plans := map[string]int{}            // plan inputs → replicas, within the pass
	after := ""
	for {
		rows, err := p.s.st.ListDeployments(ctx, store.DeploymentFilter{After: after, Limit: p.cfg.PageSize, SkipSpec: true})
		if err != nil {
			return res, err
		}
		failed, err := p.failedEverywhere(ctx, rows)
		if err != nil {
			return res, err
		}
		for _, row := range rows {
			res.Seen++
			if busy[row.Key] {
				continue
			}
			switch {
			case row.Replicas == 0 && row.LastError == "":
				if p.cfg.Retry && row.CreatedAt.Before(p.s.now().Add(-p.cfg.Grace)) && p.retry(ctx, row, KindDeploy) {
					res.Retried = append(res.Retried, row.Key)
				}
			case failed[row.Key]:
				// A retry never rolls back what it got running.
				if p.cfg.Retry && p.retry(ctx, row, KindHeal) {
					res.Retried = append(res.Retried, row.Key)
				}
			default:
				if p.moved(row, inputs, plans) && p.replan(ctx, row) {
					res.Replanned = append(res.Replanned, row.Key)
				}
			}
		}
		if len(rows) < p.cfg.PageSize {
			break
		}
		after = rows[len(rows)-1].Key
	}
	p.s.stats.replanned.Add(int64(len(res.Replanned)))
	p.s.stats.retried.Add(int64(len(res.Retried)))
	p.TestSignals.Passed.send(res)
	return res, nil
}

// busy is the set of deployments with an active operation, read by index.
func (s *Service) busy(ctx context.Context) (map[string]bool, error) {
	ops, err := s.st.ListOperations(ctx, store.OperationFilter{Active: true})
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(ops))
	for _, op := range ops {
		out[op.DeploymentKey] = true
	}
	return out, nil
}

// failedEverywhere picks, from a page, the deployments that failed and run
// nowhere: a last error and no deployed rollout.
func (p *Planner) failedEverywhere(ctx context.Context, rows []store.DeploymentRow) (map[string]bool, error) {
	var keys []string
	for _, r := range rows {
		if r.LastError != "" {
			keys = append(keys, r.Key)
		}
	}
	out := map[string]bool{}
	if len(keys) == 0 {
		return out, nil
	}
	rs, err := p.s.st.ListRollouts(ctx, store.RolloutFilter{DeploymentKeys: keys})
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		out[k] = true
	}
	for _, r := range rs {
		if r.State == string(RolloutDeployed) || r.State == string(RolloutDeleted) {
			// Something runs, or a user removed a cluster: not for a retry.
			out[r.DeploymentKey] = false
		}
	}
	return out, nil
}

// moved reports whether a deployment's plan, computed from the clusters'
// last known availability, differs from its stored one by more than the
// hysteresis margin. Deployments with the same inputs share one
// computation per pass.
func (p *Planner) moved(row store.DeploymentRow, inputs map[string]*plan.Cluster, plans map[string]int) bool {
	if row.Replicas == 0 || len(row.Targets) == 0 {
		return false
	}
	clusters := make([]plan.Cluster, 0, len(row.Targets))
	for _, name := range row.Targets {
		in, seen := inputs[name]
		if !seen {
			if sig, ok := p.s.cl.LastSignals(name); ok {
				if c, _, err := clusterInput(name, sig); err == nil {
					in = &c
				}
			}
			inputs[name] = in
		}
		if in == nil {
			return false // nothing known yet: no opinion
		}
		clusters = append(clusters, *in)
	}
	var b strings.Builder
	for _, c := range clusters {
		fmt.Fprintf(&b, "%s=%g/", c.Name, c.Availability)
	}
	fmt.Fprintf(&b, "%g/%t/%d", row.TargetAvailability, row.Strong, row.Replicas)
	key := b.String()
	replicas, ok := plans[key]
	if !ok {
		target := row.TargetAvailability
		if target <= 0 {
			target = p.s.cfg.Deploy.DefaultAvailability
		}
		pl, err := p.s.plan(target, clusters, row.Strong, row.Replicas)
		replicas = row.Replicas
		if err == nil {
			replicas = pl.Replicas
		}
		plans[key] = replicas
	}
	return replicas != row.Replicas
}

// replan re-plans a deployment from current availabilities and rolls the
// new replica count out to the clusters that run it, as a heal operation.
// The new plan and the operation land in one transaction: a crash in
// between must not leave a plan that no operation applies.
func (p *Planner) replan(ctx context.Context, row store.DeploymentRow) bool {
	s := p.s
	d, err := s.read(ctx, row.Key)
	if err != nil {
		return false
	}
	prev := d.Plan.Replicas
	pr, err := s.prepare(ctx, d.Spec, prepareOpts{targets: d.Plan.Clusters, previous: prev})
	if err != nil || pr.plan.Replicas == prev {
		if err != nil {
			s.log.DebugContext(ctx, "re-plan skipped", "deployment", row.Key, "error", err)
		}
		return false
	}
	op := s.newOperation(KindHeal, d.Key, false)
	for _, c := range slices.Sorted(maps.Keys(d.Mapped())) {
		if u := pr.units[c]; u != nil {
			op.Steps = append(op.Steps, Step{Cluster: c, UnitID: u.GetId(), State: StepPending})
		}
	}
	if len(op.Steps) == 0 {
		return false
	}
	err = s.st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		cur, err := tx.GetDeployment(ctx, d.Key)
		if err != nil {
			return err
		}
		if cur.Revision != d.Revision {
			return fmt.Errorf("deployment %q changed meanwhile", d.Key)
		}
		cur.Replicas, cur.AchievedAvailability, cur.TargetAvailability = pr.plan.Replicas, pr.plan.Achieved, pr.plan.Target
		cur.PackageDigest = pr.digest
		if _, err := tx.UpdateDeployment(ctx, cur, cur.Revision); err != nil {
			return err
		}
		var rs []store.RolloutRow
		for _, r := range d.Rollouts {
			for _, c := range pr.plan.Ordered {
				if c.Name == r.Cluster && (r.Availability != c.Availability || r.AvailabilitySource != c.Source) {
					r.Availability, r.AvailabilitySource = c.Availability, c.Source
					rs = append(rs, rolloutRow(d.Key, r))
				}
			}
		}
		if err := tx.PutRollouts(ctx, rs...); err != nil {
			return err
		}
		return startOperation(ctx, tx, &op)
	})
	if err != nil {
		s.log.DebugContext(ctx, "re-plan not stored", "deployment", d.Key, "error", err)
		return false
	}
	s.log.InfoContext(ctx, "re-planned replicas", "deployment", d.Key, "from", prev, "to", pr.plan.Replicas,
		"achieved_availability", pr.plan.Achieved)
	out, err := s.exec.run(ctx, op, pr.units)
	return err == nil && out.Failure == nil
}

// retry deploys a staged or failed deployment a package still embeds (a
// create the client was told failed is not PM's to bring back), once its
// backoff has passed.
func (p *Planner) retry(ctx context.Context, row store.DeploymentRow, kind Kind) bool {
	if !p.due(row.Key) {
		return false
	}
	full, err := p.s.st.GetDeployment(ctx, row.Key)
	if err != nil || !p.s.embeddedIn(ctx, full) {
		return false
	}
	ok := p.s.deployRecorded(ctx, full, kind)
	p.retried(row.Key, ok)
	return ok
}

// embeddedIn reports whether d's package (still) embeds it.
func (s *Service) embeddedIn(ctx context.Context, d store.DeploymentRow) bool {
	pkg, err := s.st.GetPackage(ctx, d.PackageName)
	if err != nil {
		return false
	}
	return slices.ContainsFunc(pkg.Package.GetDeployments(), func(e *pmv1.OClassDeployment) bool { return e.GetKey() == d.Key })
}

// due reports whether a failed deployment's backoff has passed.
func (p *Planner) due(key string) bool {
	p.retryMu.Lock()
	defer p.retryMu.Unlock()
	return !p.s.now().Before(p.retryAt[key].next)
}

// retried records a retry's outcome: success forgets the key, a failure
// doubles the wait (from RetryBase up to an hour).
func (p *Planner) retried(key string, ok bool) {
	p.retryMu.Lock()
	defer p.retryMu.Unlock()
	if ok {
		delete(p.retryAt, key)
		return
	}
	st := p.retryAt[key]
	st.failures++
	wait := p.cfg.RetryBase << min(st.failures-1, 12)
	st.next = p.s.now().Add(min(wait, time.Hour))
	p.retryAt[key] = st
}
