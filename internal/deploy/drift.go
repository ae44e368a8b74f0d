package deploy

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"sync"

	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// Drift repair, a stage of the Observer: a deployed unit missing from the
// listing of its cluster is deployed again (one heal operation per
// deployment, for its missing clusters; RECONCILE_SELF_HEAL), and a unit
// found running where its deploy looked failed (a lost answer) is adopted.
// Deployments with an operation at work are left to it.

// DriftConfig configures drift repair.
type DriftConfig struct {
	// Enabled runs the stage (RECONCILE_INTERVAL is set).
	Enabled bool
	// SelfHeal re-deploys missing units; without it they are only reported.
	SelfHeal bool
	// Parallelism bounds the heal operations run at once.
	Parallelism int
}

// DriftResult is what drift repair found and did in one pass.
type DriftResult struct {
	// Missing are deployed units their cluster no longer runs.
	Missing []UnitRef
	// Healed are the missing units deployed again.
	Healed []UnitRef
	// Adopted are units whose deploy looked failed but that run: now
	// deployed.
	Adopted []UnitRef

	heal  map[string][]UnitRef // deployment → its missing units
	adopt []UnitRef
}

// drift notes what one rollout needs, given its cluster's snapshot.
func (o *Observer) drift(sn *snapshot, key string, r Rollout, res *DriftResult) {
	present := sn.units[r.UnitID] != nil
	ref := UnitRef{Cluster: sn.cluster, UnitID: r.UnitID, Deployment: key}
	switch {
	case r.State == RolloutDeployed && !present:
		res.Missing = append(res.Missing, ref)
		if res.heal == nil {
			res.heal = map[string][]UnitRef{}
		}
		res.heal[key] = append(res.heal[key], ref)
	case r.State == RolloutFailed && present:
		res.adopt = append(res.adopt, ref)
	}
}

// repair adopts and heals what drift noted.
func (o *Observer) repair(ctx context.Context, res *DriftResult) {
	for _, ref := range res.adopt {
		if err := o.s.adopt(ctx, ref); err == nil {
			res.Adopted = append(res.Adopted, ref)
			o.s.stats.adopted.Add(1)
		}
	}
	if !o.cfg.Drift.SelfHeal {
		return
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, o.cfg.Drift.Parallelism)
	for _, key := range slices.Sorted(maps.Keys(res.heal)) {
		refs := res.heal[key]
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if healed := o.s.heal(ctx, key, refs); len(healed) > 0 {
				mu.Lock()
				res.Healed = append(res.Healed, healed...)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.SortFunc(res.Healed, func(a, b UnitRef) int { return cmpRef(a, b) })
}

func cmpRef(a, b UnitRef) int {
	return cmp.Or(cmp.Compare(a.Cluster, b.Cluster), cmp.Compare(a.UnitID, b.UnitID))
}

// heal re-deploys a deployment's missing units as a durable heal
// operation, and returns those it deployed.
func (s *Service) heal(ctx context.Context, key string, refs []UnitRef) []UnitRef {
	op := s.newOperation(KindHeal, key, false)
	for _, r := range refs {
		op.Steps = append(op.Steps, Step{Cluster: r.Cluster, UnitID: r.UnitID, State: StepPending})
	}
	err := s.st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error { return startOperation(ctx, tx, &op) })
	if err != nil {
		return nil
	}
	s.log.WarnContext(ctx, "drift repair: re-deploying units missing from their clusters", "deployment", key, "units", len(refs))
	out, err := s.exec.run(ctx, op, nil)
	if err != nil {
		return nil
	}
	var healed []UnitRef
	for _, r := range refs {
		if _, ok := out.Units[r.Cluster]; ok {
			healed = append(healed, r)
		}
	}
	s.stats.healed.Add(int64(len(healed)))
	return healed
}

// adopt records a running unit whose deploy looked failed, as if the
// deploy step had succeeded: the deployment wants it there anyway. It
// re-checks, in one transaction, that nothing changed since the pass read
// the state: no operation at work, the rollout still failed with this unit.
func (s *Service) adopt(ctx context.Context, ref UnitRef) error {
	err := s.st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		active, err := tx.ListOperations(ctx, store.OperationFilter{DeploymentKey: ref.Deployment, Active: true})
		if err != nil {
			return err
		}
		if len(active) > 0 {
			return fault.New(fault.Conflict, "an operation is at work")
		}
		rows, err := tx.ListRollouts(ctx, store.RolloutFilter{Cluster: ref.Cluster, UnitIDs: []string{ref.UnitID}})
		if err != nil {
			return err
		}
		for _, row := range rows {
			if row.DeploymentKey != ref.Deployment || row.State != string(RolloutFailed) {
				continue
			}
			r, err := rolloutOf(row)
			if err != nil {
				return err
			}
			r.State, r.Condition, r.Error = RolloutDeployed, CondDeploying, ""
			return tx.PutRollouts(ctx, rolloutRow(ref.Deployment, r))
		}
		return fault.New(fault.Conflict, "rollout changed")
	})
	if err == nil {
		s.log.InfoContext(ctx, "adopted a unit whose deploy had looked failed", "deployment", ref.Deployment, "cluster", ref.Cluster, "unit", ref.UnitID)
	}
	return err
}
