package deploy

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/correlation"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// Stats counts what the background loops did; metrics read it.
type Stats struct {
	resumed, abandoned, stepRetries, rollbacks atomic.Int64
	healed, orphansDeleted, reconcileSkips     atomic.Int64
}

// Snapshot returns the counters by name.
func (s *Stats) Snapshot() map[string]int64 {
	return map[string]int64{
		"operations_resumed":      s.resumed.Load(),
		"operations_abandoned":    s.abandoned.Load(),
		"step_retries":            s.stepRetries.Load(),
		"rollbacks":               s.rollbacks.Load(),
		"units_healed":            s.healed.Load(),
		"orphans_deleted":         s.orphansDeleted.Load(),
		"reconcile_cluster_skips": s.reconcileSkips.Load(),
	}
}

// Stats returns the service's counters.
func (s *Service) Stats() *Stats { return &s.stats }

// Orphan is a unit that carries PM's id scheme but that PM does not know.
type Orphan struct {
	Cluster, UnitID, PackageName, ClassKey string
	FirstSeen                              time.Time
}

type orphanBook struct {
	mu   sync.Mutex
	seen map[unitKey]Orphan
}

// Orphans returns the orphans the last reconcile passes found.
func (s *Service) Orphans() []Orphan {
	s.orphans.mu.Lock()
	defer s.orphans.mu.Unlock()
	out := make([]Orphan, 0, len(s.orphans.seen))
	for _, o := range s.orphans.seen {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b Orphan) int {
		if a.Cluster != b.Cluster {
			if a.Cluster < b.Cluster {
				return -1
			}
			return 1
		}
		switch {
		case a.UnitID < b.UnitID:
			return -1
		case a.UnitID > b.UnitID:
			return 1
		}
		return 0
	})
	return out
}

// Start runs the background loops: resuming operations whose PM died,
// drift repair, condition polling and purging expired records.
func (s *Service) Start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = cancel
	resumeEvery := max(s.cfg.Lease/3, 50*time.Millisecond)
	s.loop(ctx, "resume", resumeEvery, func(ctx context.Context) { s.ResumeOperations(ctx) })
	if s.cfg.ReconcileInterval > 0 {
		s.loop(ctx, "reconcile", s.cfg.ReconcileInterval, func(ctx context.Context) { s.Reconcile(ctx) })
	}
	if s.cfg.StatusPollInterval > 0 {
		s.loop(ctx, "status", s.cfg.StatusPollInterval, func(ctx context.Context) { s.PollConditions(ctx) })
	}
	s.loop(ctx, "purge", time.Hour, func(ctx context.Context) { s.purge(ctx) })
	return nil
}

// Stop ends the loops and the operations in flight (they stay leased and
// resume after a restart or on another PM) and waits for all of them.
func (s *Service) Stop() {
	if s.stop != nil {
		s.stop()
	}
	s.cancelBase()
	s.loops.Wait()
	s.workMu.Lock()
	s.stopped = true
	s.workMu.Unlock()
	s.work.Wait()
}

// loop runs fn every period with ±20% jitter, so PM replicas spread out.
func (s *Service) loop(ctx context.Context, name string, period time.Duration, fn func(context.Context)) {
	s.loops.Go(func() {
		for {
			jitter := time.Duration(rand.Int64N(int64(period)/5+1)) - period/10
			if err := sleep(ctx, period+jitter); err != nil {
				return
			}
			fn(correlation.With(ctx, name+"-"+correlation.New()))
		}
	})
}

// resumeBatch is how many operations one resume pass claims.
const resumeBatch = 4

// ResumeOperations claims operations whose lease ran out (their PM died or
// stalled) and finishes them. Deploy is idempotent by unit id on every CRM,
// so replaying a step that had reached the CRM is safe.
func (s *Service) ResumeOperations(ctx context.Context) int {
	now := s.now()
	// A few at a time: each may fan out to every cluster.
	ops, err := s.st.ClaimOperations(ctx, s.cfg.Owner, now, now.Add(s.cfg.Lease), resumeBatch)
	if err != nil {
		s.log.WarnContext(ctx, "claiming operations failed", "error", err)
		return 0
	}
	var wg sync.WaitGroup
	for _, op := range ops {
		s.stats.resumed.Add(1)
		s.log.InfoContext(ctx, "resuming operation", "operation", op.ID, "kind", op.Kind, "deployment", op.DeploymentKey)
		wg.Go(func() {
			if _, err := s.execute(ctx, op, nil); err != nil && !errors.Is(err, errAbandoned) {
				s.log.WarnContext(ctx, "resumed operation failed", "operation", op.ID, "error", err)
			}
		})
	}
	wg.Wait()
	return len(ops)
}

// PollConditions refreshes every deployment's condition from its clusters.
func (s *Service) PollConditions(ctx context.Context) {
	ds, err := s.st.ListDeployments(ctx, store.DeploymentFilter{})
	if err != nil {
		return
	}
	sem := make(chan struct{}, s.cfg.Parallelism)
	var wg sync.WaitGroup
	for _, d := range ds {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			s.refresh(ctx, d)
		})
	}
	wg.Wait()
}

func (s *Service) purge(ctx context.Context) {
	now := s.now()
	if n, err := s.st.PurgeIdempotency(ctx, now); err == nil && n > 0 {
		s.log.InfoContext(ctx, "purged expired idempotency keys", "count", n)
	}
	if n, err := s.st.PurgeOperations(ctx, now.Add(-7*24*time.Hour)); err == nil && n > 0 {
		s.log.InfoContext(ctx, "purged old finished operations", "count", n)
	}
}

// ReconcileReport says what one reconcile pass saw and did.
type ReconcileReport struct {
	// Skipped are clusters that failed to answer; nothing was changed there.
	Skipped []string
	Healed  []Orphan // units re-deployed (Orphan fields reused: cluster, unit)
	Orphans []Orphan
	Deleted []Orphan
	// Replanned are deployments whose replica count moved.
	Replanned []string
	// Retried are deployments that had failed everywhere and were deployed
	// again.
	Retried []string
	// Adopted are units whose Deploy looked failed but that run: now
	// mapped to their deployment.
	Adopted []Orphan
}

// Reconcile compares the units PM wants with what every cluster runs. A
// missing unit is re-deployed (self-heal); a unit with PM's id scheme that
// PM does not know is an orphan, reported and, when configured, deleted. A
// cluster that does not answer is skipped: a transient failure must never
// look like an empty cluster.
func (s *Service) Reconcile(ctx context.Context) ReconcileReport {
	var rep ReconcileReport
	names := s.cl.Names()
	listed, errs := fanOut(ctx, s, names, func(ctx context.Context, crm CRM) ([]*deploymentpb.DeploymentUnit, error) {
		resp, err := crm.List(ctx, &deploymentpb.ListClassRuntimesRequest{})
		return resp.GetItems(), err
	})

	// Read PM's side after the clusters answered, operations before
	// mappings: a unit created before the listing is then in one of the two
	// (a step's mapping lands in the same transaction that records it, so
	// an operation finishing between the reads leaves its mapping visible).
	inflight, busy, mappings, err := s.knownUnits(ctx)
	if err != nil {
		s.log.WarnContext(ctx, "reconcile: reading PM's state failed; skipping this pass", "error", err)
		return rep
	}
	want := map[string]map[string]string{} // cluster → unit → deployment
	for _, m := range mappings {
		if want[m.Cluster] == nil {
			want[m.Cluster] = map[string]string{}
		}
		want[m.Cluster][m.UnitID] = m.DeploymentKey
	}

	// Units PM meant to create but could not confirm (a Deploy that
	// failed with an unknown outcome): found running, they are adopted.
	failedUnits, err := s.failedUnits(ctx, want)
	if err != nil {
		s.log.WarnContext(ctx, "reconcile: reading deployments failed; skipping this pass", "error", err)
		return rep
	}

	heal := map[string][]string{} // deployment → clusters
	seen := map[unitKey]Orphan{}
	for i, name := range names {
		if errs[i] != nil {
			s.stats.reconcileSkips.Add(1)
			rep.Skipped = append(rep.Skipped, name)
			s.log.WarnContext(ctx, "reconcile: cluster did not answer; skipped", "cluster", name, "error", errs[i])
			continue
		}
		has := map[string]bool{}
		for _, u := range listed[i] {
			has[u.GetId()] = true
			k := unitKey{name, u.GetId()}
			if _, ok := want[name][u.GetId()]; ok || !looksOurs(name, u) || inflight[k] {
				continue
			}
			if key, ok := failedUnits[k]; ok {
				// PM meant to create it: adopt it (when nothing else works
				// on the deployment), never call it an orphan.
				if !busy[key] && s.adopt(ctx, key, name, u.GetId()) == nil {
					rep.Adopted = append(rep.Adopted, Orphan{Cluster: name, UnitID: u.GetId()})
				}
				continue
			}
			o := Orphan{Cluster: name, UnitID: u.GetId(), PackageName: u.GetPackageName(), ClassKey: u.GetClassKey(), FirstSeen: s.now()}
			seen[unitKey{name, u.GetId()}] = o
		}
		for unit, key := range want[name] {
			if !has[unit] && !busy[key] {
				heal[key] = append(heal[key], name)
				rep.Healed = append(rep.Healed, Orphan{Cluster: name, UnitID: unit})
			}
		}
	}

	s.orphans.mu.Lock()
	confirmed := map[unitKey]bool{} // seen in the previous pass too
	for k, o := range seen {
		if prev, ok := s.orphans.seen[k]; ok {
			o.FirstSeen = prev.FirstSeen
			seen[k] = o
			confirmed[k] = true
		}
	}
	// Clusters that were skipped keep the orphans found earlier.
	for k, o := range s.orphans.seen {
		if slices.Contains(rep.Skipped, k.cluster) {
			seen[k] = o
		}
	}
	s.orphans.seen = seen
	s.orphans.mu.Unlock()
	for _, o := range seen {
		rep.Orphans = append(rep.Orphans, o)
		s.log.WarnContext(ctx, "orphan unit: it carries PM's id scheme but PM does not know it",
			"cluster", o.Cluster, "unit", o.UnitID, "package", o.PackageName, "class", o.ClassKey,
			"will_delete", s.cfg.DeleteOrphans)
	}

	if s.cfg.DeleteOrphans && len(confirmed) > 0 {
		// Deleting is the one irreversible act here: only orphans seen in
		// two passes in a row, and only if PM still does not know them now.
		inflight, _, mappings, err := s.knownUnits(ctx)
		if err != nil {
			return rep
		}
		known := map[unitKey]bool{}
		for _, m := range mappings {
			known[unitKey{m.Cluster, m.UnitID}] = true
		}
		for k, o := range seen {
			if !confirmed[k] || slices.Contains(rep.Skipped, k.cluster) || known[k] || inflight[k] {
				continue
			}
			crm, err := s.cl.CRM(o.Cluster)
			if err != nil {
				continue
			}
			if _, err := crm.Delete(ctx, o.UnitID); err != nil && fault.KindOf(err) != fault.NotFound {
				s.log.WarnContext(ctx, "deleting an orphan failed", "cluster", o.Cluster, "unit", o.UnitID, "error", err)
				continue
			}
			s.stats.orphansDeleted.Add(1)
			rep.Deleted = append(rep.Deleted, o)
			s.orphans.mu.Lock()
			delete(s.orphans.seen, k)
			s.orphans.mu.Unlock()
		}
	}

	if s.cfg.SelfHeal {
		for key, clusters := range heal {
			s.selfHeal(ctx, key, clusters)
		}
		rep.Retried = s.retryFailed(ctx, busy, mappings)
	}
	rep.Replanned = s.Replan(ctx)
	return rep
}

// failedUnits maps the unit ids of clusters whose deploy step failed (and
// that have no mapping) to their deployment.
func (s *Service) failedUnits(ctx context.Context, want map[string]map[string]string) (map[unitKey]string, error) {
	ds, err := s.st.ListDeployments(ctx, store.DeploymentFilter{})
	if err != nil {
		return nil, err
	}
	out := map[unitKey]string{}
	for _, rec := range ds {
		d := rec.Deployment
		for _, r := range d.GetStatus().GetClusters() {
			if r.GetState() != "failed" {
				continue
			}
			id := r.GetUnitId()
			if id == "" {
				id = UnitID(d.GetKey(), r.GetCluster())
			}
			if _, mapped := want[r.GetCluster()][id]; !mapped {
				out[unitKey{r.GetCluster(), id}] = d.GetKey()
			}
		}
	}
	return out, nil
}

// adopt records a running unit whose deploy looked failed, as if the
// deploy step had succeeded; the deployment wants it there anyway. It
// re-checks, in one transaction, that nothing changed since the pass read
// the state: no operation at work, the cluster's rollout still failed with
// this unit, no mapping yet.
func (s *Service) adopt(ctx context.Context, key, cluster, unit string) error {
	err := s.st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		if err := noPendingOperation(ctx, tx, key); err != nil {
			return err
		}
		cur, err := tx.GetDeployment(ctx, key)
		if err != nil {
			return err
		}
		ms, err := tx.Mappings(ctx, key)
		if err != nil {
			return err
		}
		if slices.ContainsFunc(ms, func(m store.Mapping) bool { return m.Cluster == cluster }) {
			return fault.New(fault.Conflict, "already mapped")
		}
		d := proto.CloneOf(cur.Deployment)
		r := rollout(d.Status, cluster)
		if r.GetState() != "failed" || (r.GetUnitId() != "" && r.GetUnitId() != unit) {
			return fault.New(fault.Conflict, "rollout changed")
		}
		r.UnitId, r.State, r.Error = unit, "deployed", nil
		if r.Condition == pmv1.DeploymentCondition_DOWN || r.Condition == pmv1.DeploymentCondition_PENDING {
			r.Condition = pmv1.DeploymentCondition_DEPLOYING
		}
		d.Condition = overall(d.Status)
		if err := tx.PutMapping(ctx, store.Mapping{DeploymentKey: key, Cluster: cluster, UnitID: unit}); err != nil {
			return err
		}
		_, err = tx.UpdateDeployment(ctx, d, cur.Revision)
		return err
	})
	if err == nil {
		s.log.InfoContext(ctx, "adopted a unit whose deploy had looked failed", "deployment", key, "cluster", cluster, "unit", unit)
	}
	return err
}

// embeddedIn reports whether d's package (still) embeds it.
func (s *Service) embeddedIn(ctx context.Context, d *pmv1.OClassDeployment) bool {
	pkg, err := s.st.GetPackage(ctx, d.GetPackageName())
	if err != nil {
		return false
	}
	return slices.ContainsFunc(pkg.Package.GetDeployments(), func(e *pmv1.OClassDeployment) bool { return e.GetKey() == d.GetKey() })
}

// retryState is the reconciler's backoff for one failing deployment.
type retryState struct {
	failures int
	next     time.Time
}

// retryDue reports whether a failed deployment's backoff has passed.
func (s *Service) retryDue(key string) bool {
	s.retryMu.Lock()
	defer s.retryMu.Unlock()
	return !s.now().Before(s.retryAt[key].next)
}

// retried records a retry's outcome: success forgets the key, a failure
// doubles the wait (from one reconcile interval up to an hour).
func (s *Service) retried(key string, ok bool) {
	s.retryMu.Lock()
	defer s.retryMu.Unlock()
	if ok {
		delete(s.retryAt, key)
		return
	}
	st := s.retryAt[key]
	st.failures++
	wait := max(s.cfg.ReconcileInterval, time.Second) << min(st.failures-1, 12)
	st.next = s.now().Add(min(wait, time.Hour))
	s.retryAt[key] = st
}

// knownUnits reads the units pending operations are about to create (and
// the deployments they work on), then every mapping.
func (s *Service) knownUnits(ctx context.Context) (inflight map[unitKey]bool, busy map[string]bool, mappings []store.Mapping, err error) {
	ops, err := s.st.ListOperations(ctx, "")
	if err != nil {
		return nil, nil, nil, err
	}
	inflight, busy = map[unitKey]bool{}, map[string]bool{}
	for _, op := range ops {
		if op.State != store.OpPending {
			continue
		}
		busy[op.DeploymentKey] = true
		for _, st := range op.Steps {
			inflight[unitKey{st.Cluster, st.UnitID}] = true
		}
	}
	mappings, err = s.st.AllMappings(ctx)
	return inflight, busy, mappings, err
}

// looksOurs reports whether a runtime carries PM's id scheme for the
// cluster it runs in: a unit id PM would generate, and the target_env PM
// sets. A hand-made runtime whose name merely ends in a short hash is not
// enough to be called an orphan (and perhaps deleted).
func looksOurs(cluster string, u *deploymentpb.DeploymentUnit) bool {
	return IsUnitID(u.GetId()) && u.GetTargetEnv() == cluster && u.GetPackageName() != ""
}

// retryFailed deploys the deployments that have no unit anywhere and no
// operation at work: embedded deployments staged with their package whose
// PM died before deploying them (older than a lease), and ones that failed
// everywhere (an auto-deploy that found its clusters unreachable). Their
// failure is a state that heals, not a verdict.
func (s *Service) retryFailed(ctx context.Context, busy map[string]bool, mappings []store.Mapping) []string {
	mapped := map[string]bool{}
	for _, m := range mappings {
		mapped[m.DeploymentKey] = true
	}
	ds, err := s.st.ListDeployments(ctx, store.DeploymentFilter{})
	if err != nil {
		return nil
	}
	var out []string
	for _, rec := range ds {
		d := rec.Deployment
		if mapped[d.GetKey()] || busy[d.GetKey()] || slices.ContainsFunc(d.GetStatus().GetClusters(), func(r *pmv1.ClusterRollout) bool {
			return r.GetState() == "deleted"
		}) {
			continue
		}
		staged := d.GetCondition() == pmv1.DeploymentCondition_PENDING && d.GetStatus() == nil &&
			d.GetUpdatedAt().AsTime().Before(s.now().Add(-s.cfg.Lease))
		failed := d.GetCondition() == pmv1.DeploymentCondition_DOWN && d.GetStatus().GetLastError() != ""
		// Only what a package still asks for: a create the client was told
		// failed is not PM's to bring back.
		if !staged && !failed || !s.embeddedIn(ctx, d) || !s.retryDue(d.GetKey()) {
			continue
		}
		kind := store.OpHeal // a retry never rolls back what it got running
		if staged {
			kind = store.OpDeploy
		}
		if s.deployRecorded(ctx, rec, kind) {
			out = append(out, d.GetKey())
			s.retried(d.GetKey(), true)
		} else {
			s.retried(d.GetKey(), false)
		}
	}
	return out
}

// selfHeal re-deploys a deployment's units that vanished from clusters, as
// a durable operation like any other deploy.
func (s *Service) selfHeal(ctx context.Context, key string, clusters []string) {
	rec, err := s.st.GetDeployment(ctx, key)
	if err != nil {
		return
	}
	op := s.newOperation(store.OpHeal, key, false)
	slices.Sort(clusters)
	for _, c := range clusters {
		op.Steps = append(op.Steps, store.Step{Cluster: c, UnitID: UnitID(rec.Deployment.GetKey(), c), State: store.OpPending})
	}
	err = s.st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error { return startOperation(ctx, tx, op) })
	if err != nil {
		return
	}
	s.log.WarnContext(ctx, "self-heal: re-deploying units missing from clusters", "deployment", key, "clusters", clusters)
	if _, err := s.execute(ctx, op, nil); err == nil {
		s.stats.healed.Add(int64(len(clusters)))
	}
}

// Replan re-plans every settled deployment from current availabilities and
// rolls out a new replica count when it moved by more than the hysteresis
// margin, so brief availability wobbles do not churn the clusters. It
// returns the keys it re-planned.
func (s *Service) Replan(ctx context.Context) []string {
	ds, err := s.st.ListDeployments(ctx, store.DeploymentFilter{})
	if err != nil {
		return nil
	}
	ops, err := s.st.ListOperations(ctx, "")
	if err != nil {
		return nil
	}
	busy := map[string]bool{}
	for _, op := range ops {
		if op.State == store.OpPending {
			busy[op.DeploymentKey] = true
		}
	}
	var out []string
	for _, rec := range ds {
		if busy[rec.Deployment.GetKey()] || rec.Deployment.GetStatus().GetReplicationFactor() == 0 {
			continue
		}
		changed, err := s.replan(ctx, rec)
		if err != nil {
			s.log.DebugContext(ctx, "re-plan skipped", "deployment", rec.Deployment.GetKey(), "error", err)
			continue
		}
		if changed {
			out = append(out, rec.Deployment.GetKey())
		}
	}
	return out
}

func (s *Service) replan(ctx context.Context, rec store.Deployment) (bool, error) {
	d := rec.Deployment
	prev := int(d.GetStatus().GetReplicationFactor())
	ms, err := s.st.Mappings(ctx, d.GetKey())
	if err != nil || len(ms) == 0 {
		return false, err
	}
	p, err := s.prepare(ctx, d, prev)
	if err != nil {
		return false, err
	}
	if p.plan.Replicas == prev {
		return false, nil
	}
	op := s.newOperation(store.OpHeal, d.GetKey(), false)
	for _, m := range ms {
		if u := p.units[m.Cluster]; u != nil {
			op.Steps = append(op.Steps, store.Step{Cluster: m.Cluster, UnitID: u.GetId(), State: store.OpPending})
		}
	}
	if len(op.Steps) == 0 {
		return false, nil
	}
	// The new plan and the operation that rolls it out land together: a
	// crash in between must not leave a plan that no operation applies.
	err = s.st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		cur, err := tx.GetDeployment(ctx, d.GetKey())
		if err != nil {
			return err
		}
		next := protoClone(cur.Deployment)
		next.Status.ReplicationFactor = int32(p.plan.Replicas)
		next.Status.AchievedQuorumAvailability = p.plan.Achieved
		next.Status.TargetAvailability = p.plan.Target
		for _, r := range next.Status.Clusters {
			for _, c := range p.plan.Ordered {
				if c.Name == r.Cluster {
					r.Availability, r.AvailabilitySource = c.Availability, c.Source
				}
			}
		}
		if _, err := tx.UpdateDeployment(ctx, next, cur.Revision); err != nil {
			return err
		}
		return startOperation(ctx, tx, op)
	})
	if err != nil {
		return false, err
	}
	s.log.InfoContext(ctx, "re-planned replicas", "deployment", d.GetKey(), "from", prev, "to", p.plan.Replicas,
		"achieved_availability", p.plan.Achieved)
	_, err = s.execute(ctx, op, p.units)
	return err == nil, err
}

func protoClone(d *pmv1.OClassDeployment) *pmv1.OClassDeployment {
	c := proto.CloneOf(d)
	if c.Status == nil {
		c.Status = &pmv1.DeploymentStatusSummary{}
	}
	return c
}
