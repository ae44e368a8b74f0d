package deploy

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	"github.com/oaas/pm/internal/store"
)

// ObserverConfig configures the Observer and its stages.
type ObserverConfig struct {
	// Period is how often it observes the clusters: the shorter of the
	// condition refresh and reconcile intervals that are set.
	Period time.Duration
	// PageSize is how many units one CRM list call asks for, and how many
	// rollouts one read takes.
	PageSize int
	// Parallelism bounds the clusters listed at once.
	Parallelism int
	// Drift and Orphans configure those stages; condition refresh has no
	// setting of its own: it runs on every pass.
	Drift   DriftConfig
	Orphans OrphansConfig
}

func (c ObserverConfig) validate() error {
	if c.Period < 0 || c.PageSize < 1 || c.Parallelism < 1 || c.Drift.Parallelism < 1 {
		return fmt.Errorf("observer: invalid config %+v", c)
	}
	return nil
}

// ObserveResult is what one observation pass saw and did.
type ObserveResult struct {
	// Observed are the clusters that answered; Skipped those that did not
	// (nothing was concluded about them: a failed listing never looks like
	// an empty cluster).
	Observed, Skipped []string
	// Calls counts the CRM calls the listings made.
	Calls int
	// Units counts the units the clusters run.
	Units      int
	Conditions ConditionsResult
	Drift      DriftResult
	Orphans    OrphansResult
}

// ObserverTestSignals are the Observer's test signals.
type ObserverTestSignals struct {
	Passed Signal[ObserveResult]
}

// Observer watches clusters, not deployments. Each pass lists every
// cluster's units once (paged), plus the units whose status is Available
// (and, only when some are neither, those Degraded): O(clusters × pages)
// CRM calls whatever the number of deployments. Then it pages through each
// cluster's rollouts by unit id and feeds three stages with what it found:
// condition refresh (conditions.go), drift repair (drift.go) and the
// orphan scan (orphans.go). Per-unit status calls happen only when a client
// asks (Service.Status).
type Observer struct {
	loop
	s           *Service
	cfg         ObserverConfig
	orphans     orphanBook
	TestSignals ObserverTestSignals
}

func newObserver(s *Service) *Observer {
	period := s.cfg.Deploy.StatusPollInterval
	if r := s.cfg.Reconcile.Interval; r > 0 && (period <= 0 || r < period) {
		period = r
	}
	cfg := ObserverConfig{
		Period: period, PageSize: pageSize, Parallelism: min(s.cfg.Deploy.Parallelism, 16),
		Drift: DriftConfig{
			Enabled: s.cfg.Reconcile.Interval > 0, SelfHeal: s.cfg.Reconcile.SelfHeal,
			Parallelism: min(s.cfg.Deploy.Parallelism, 8),
		},
		Orphans: OrphansConfig{Enabled: s.cfg.Reconcile.Interval > 0, Delete: s.cfg.Reconcile.DeleteOrphans},
	}
	if err := cfg.validate(); err != nil {
		panic(err)
	}
	o := &Observer{s: s, cfg: cfg, orphans: orphanBook{seen: map[unitRef]Orphan{}}}
	o.loop = loop{name: "observe", period: cfg.Period, log: s.log, pass: func(ctx context.Context) {
		if _, err := o.RunOnce(ctx); err != nil {
			s.log.WarnContext(ctx, "observation pass failed", "error", err)
		}
	}}
	return o
}

// unitRef names a unit on a cluster.
type unitRef struct{ cluster, unit string }

// UnitRef names a unit on a cluster and the deployment it belongs to.
type UnitRef struct {
	Cluster, UnitID, Deployment string
}

// snapshot is one cluster's units as one pass listed them.
type snapshot struct {
	cluster string
	units   map[string]*deploymentpb.DeploymentUnit
	// available and degraded hold the ids whose status says so; degraded
	// is nil when every unit was available (then it was not asked).
	available, degraded map[string]bool
	calls               int
}

// condition is a listed unit's condition (absent units are down).
func (sn *snapshot) condition(id string) Condition {
	switch {
	case sn.units[id] == nil:
		return CondDown
	case sn.available[id]:
		return CondRunning
	case sn.degraded[id]:
		return CondDown
	default:
		return CondDeploying
	}
}

// list pages through one filtered listing of a cluster.
func (o *Observer) list(ctx context.Context, crm CRM, status string, calls *int) ([]*deploymentpb.DeploymentUnit, error) {
	var out []*deploymentpb.DeploymentUnit
	for offset := 0; ; {
		req := &deploymentpb.ListClassRuntimesRequest{
			Limit:  proto.Uint32(uint32(o.cfg.PageSize)), //nolint:gosec // small
			Offset: proto.Uint32(uint32(offset)),         //nolint:gosec // bounded by the cluster's units
		}
		if status != "" {
			req.Status = proto.String(status)
		}
		*calls++
		resp, err := crm.List(ctx, req)
		if err != nil {
			return nil, err
		}
		out = append(out, resp.GetItems()...)
		if len(resp.GetItems()) < o.cfg.PageSize {
			return out, nil
		}
		offset += len(resp.GetItems())
	}
}

// observe lists one cluster: every unit and the available ones at once,
// then the degraded ones only if some unit is neither.
func (o *Observer) observe(ctx context.Context, name string) (*snapshot, error) {
	crm, err := o.s.cl.CRM(name)
	if err != nil {
		return nil, err
	}
	sn := &snapshot{cluster: name, units: map[string]*deploymentpb.DeploymentUnit{}, available: map[string]bool{}}
	var all, avail []*deploymentpb.DeploymentUnit
	var errAll, errAvail error
	var callsAll, callsAvail int
	var wg sync.WaitGroup
	wg.Go(func() { all, errAll = o.list(ctx, crm, "", &callsAll) })
	wg.Go(func() { avail, errAvail = o.list(ctx, crm, "Available", &callsAvail) })
	wg.Wait()
	sn.calls = callsAll + callsAvail
	if errAll != nil {
		return sn, errAll
	}
	if errAvail != nil {
		return sn, errAvail
	}
	for _, u := range all {
		sn.units[u.GetId()] = u
	}
	for _, u := range avail {
		sn.available[u.GetId()] = true
	}
	if len(sn.available) < len(sn.units) {
		degraded, err := o.list(ctx, crm, "Degraded", &sn.calls)
		if err != nil {
			return sn, err
		}
		sn.degraded = map[string]bool{}
		for _, u := range degraded {
			sn.degraded[u.GetId()] = true
		}
	}
	return sn, nil
}

// RunOnce observes every cluster once and runs the stages on what it saw.
func (o *Observer) RunOnce(ctx context.Context) (ObserveResult, error) {
	var res ObserveResult
	names := o.s.cl.Names()
	snaps := make([]*snapshot, len(names))
	errs := make([]error, len(names))
	sem := make(chan struct{}, o.cfg.Parallelism)
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			snaps[i], errs[i] = o.observe(ctx, name)
		})
	}
	wg.Wait()
	for i, name := range names {
		if snaps[i] != nil {
			res.Calls += snaps[i].calls
		}
		if errs[i] != nil {
			o.s.stats.clusterSkips.Add(1)
			res.Skipped = append(res.Skipped, name)
			o.s.log.WarnContext(ctx, "observation: cluster did not answer; skipped", "cluster", name, "error", errs[i])
			snaps[i] = nil
			continue
		}
		res.Observed = append(res.Observed, name)
		res.Units += len(snaps[i].units)
	}
	o.s.stats.listCalls.Add(int64(res.Calls))

	// PM's side is read after the clusters answered: a unit created before
	// a listing has its rollout by then (rollouts are written before any
	// CRM call), so it is never taken for an orphan.
	busy, err := o.s.busy(ctx)
	if err != nil {
		return res, err
	}
	var found []foundUnit
	for _, sn := range snaps {
		if sn == nil {
			continue
		}
		f, err := o.pass(ctx, sn, busy, &res)
		if err != nil {
			return res, err
		}
		found = append(found, f...)
	}
	if o.cfg.Drift.Enabled {
		o.repair(ctx, &res.Drift)
	}
	if o.cfg.Orphans.Enabled {
		if err := o.scan(ctx, found, res.Skipped, &res.Orphans); err != nil {
			return res, err
		}
	}
	o.s.stats.observePasses.Add(1)
	o.TestSignals.Passed.send(res)
	return res, nil
}

// foundUnit is a listed unit no rollout answers for.
type foundUnit struct {
	cluster string
	unit    *deploymentpb.DeploymentUnit
}

// pass walks one cluster's rollouts (paged, by unit id) against its
// snapshot: conditions change, missing and adoptable units go to drift
// repair, and the units no rollout knows are returned for the orphan scan.
func (o *Observer) pass(ctx context.Context, sn *snapshot, busy map[string]bool, res *ObserveResult) ([]foundUnit, error) {
	known := make(map[string]bool, len(sn.units))
	var updates []store.ConditionUpdate
	after := ""
	for {
		rows, err := o.s.st.ListRollouts(ctx, store.RolloutFilter{Cluster: sn.cluster, After: after, Limit: o.cfg.PageSize})
		if err != nil {
			return nil, err
		}
		for _, row := range rows {
			r, err := rolloutOf(row)
			if err != nil {
				return nil, err
			}
			if r.State.known() {
				known[r.UnitID] = true
			}
			if u := o.conditionOf(sn, r); u != nil {
				updates = append(updates, store.ConditionUpdate{DeploymentKey: row.DeploymentKey, Cluster: sn.cluster, UnitID: r.UnitID, Condition: string(*u)})
			}
			if o.cfg.Drift.Enabled && !busy[row.DeploymentKey] {
				o.drift(sn, row.DeploymentKey, r, &res.Drift)
			}
		}
		if len(rows) < o.cfg.PageSize {
			break
		}
		after = rows[len(rows)-1].UnitID
	}
	if len(updates) > 0 {
		n, err := o.s.st.UpdateConditions(ctx, updates...)
		if err != nil {
			return nil, err
		}
		res.Conditions.Changed += n
		o.s.stats.conditionsChanged.Add(int64(n))
	}
	var found []foundUnit
	for id, u := range sn.units {
		if !known[id] {
			found = append(found, foundUnit{cluster: sn.cluster, unit: u})
		}
	}
	return found, nil
}
