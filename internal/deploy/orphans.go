package deploy

import (
	"context"
	"slices"
	"sync"
	"time"

	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// The orphan scan, a stage of the Observer: a listed unit that carries
// PM's id scheme and that no rollout answers for is an orphan: reported
// (log, metric, API) and, with RECONCILE_DELETE_ORPHANS, deleted once two
// passes in a row saw it and a fresh read still does not know it. Units
// with other id schemes are not PM's and are left alone; orphans of a
// cluster that did not answer are kept as they were.

// OrphansConfig configures the orphan scan.
type OrphansConfig struct {
	// Enabled runs the stage (RECONCILE_INTERVAL is set).
	Enabled bool
	// Delete removes confirmed orphans (RECONCILE_DELETE_ORPHANS).
	Delete bool
}

// Orphan is a unit that carries PM's id scheme but that PM does not know.
type Orphan struct {
	Cluster, UnitID, PackageName, ClassKey string
	FirstSeen                              time.Time
}

// OrphansResult is what the orphan scan found and did in one pass.
type OrphansResult struct {
	// Found are the orphans known after the pass.
	Found []Orphan
	// Deleted are the orphans it removed.
	Deleted []Orphan
}

type orphanBook struct {
	mu   sync.Mutex
	seen map[unitRef]Orphan
}

// Orphans returns the orphans the last passes found, by cluster and unit.
func (s *Service) Orphans() []Orphan {
	o := &s.observer.orphans
	o.mu.Lock()
	defer o.mu.Unlock()
	return sortedOrphans(o.seen)
}

func sortedOrphans(m map[unitRef]Orphan) []Orphan {
	out := make([]Orphan, 0, len(m))
	for _, o := range m {
		out = append(out, o)
	}
	slices.SortFunc(out, func(a, b Orphan) int {
		return cmpRef(UnitRef{Cluster: a.Cluster, UnitID: a.UnitID}, UnitRef{Cluster: b.Cluster, UnitID: b.UnitID})
	})
	return out
}

// looksOurs reports whether a runtime carries PM's id scheme for the
// cluster it runs in: a unit id PM would generate, and the target_env PM
// sets. A hand-made runtime whose name merely ends in a short hash is not
// enough to be called an orphan (and perhaps deleted).
func looksOurs(cluster string, u *deploymentpb.DeploymentUnit) bool {
	return IsUnitID(u.GetId()) && u.GetTargetEnv() == cluster && u.GetPackageName() != ""
}

// scan books this pass's orphans and deletes the confirmed ones when
// configured.
func (o *Observer) scan(ctx context.Context, found []foundUnit, skipped []string, res *OrphansResult) error {
	now := o.s.now()
	seen := map[unitRef]Orphan{}
	confirmed := map[unitRef]bool{}
	o.orphans.mu.Lock()
	for _, f := range found {
		if !looksOurs(f.cluster, f.unit) {
			continue
		}
		k := unitRef{f.cluster, f.unit.GetId()}
		orphan := Orphan{Cluster: f.cluster, UnitID: k.unit, PackageName: f.unit.GetPackageName(), ClassKey: f.unit.GetClassKey(), FirstSeen: now}
		if prev, ok := o.orphans.seen[k]; ok {
			orphan.FirstSeen = prev.FirstSeen
			confirmed[k] = true
		}
		seen[k] = orphan
	}
	for k, orphan := range o.orphans.seen {
		if slices.Contains(skipped, k.cluster) {
			seen[k] = orphan
		}
	}
	o.orphans.seen = seen
	o.orphans.mu.Unlock()
	for _, orphan := range sortedOrphans(seen) {
		o.s.log.WarnContext(ctx, "orphan unit: it carries PM's id scheme but PM does not know it",
			"cluster", orphan.Cluster, "unit", orphan.UnitID, "package", orphan.PackageName, "class", orphan.ClassKey,
			"will_delete", o.cfg.Orphans.Delete)
	}
	if o.cfg.Orphans.Delete && len(confirmed) > 0 {
		if err := o.deleteOrphans(ctx, confirmed, res); err != nil {
			return err
		}
	}
	o.orphans.mu.Lock()
	res.Found = sortedOrphans(o.orphans.seen)
	o.orphans.mu.Unlock()
	return nil
}

// deleteOrphans deletes the confirmed orphans a fresh read still does not
// know: deleting is the one irreversible act of the observer.
func (o *Observer) deleteOrphans(ctx context.Context, confirmed map[unitRef]bool, res *OrphansResult) error {
	ids := make([]string, 0, len(confirmed))
	for k := range confirmed {
		ids = append(ids, k.unit)
	}
	rows, err := o.s.st.ListRollouts(ctx, store.RolloutFilter{UnitIDs: ids})
	if err != nil {
		return err
	}
	for _, row := range rows {
		if RolloutState(row.State).known() {
			delete(confirmed, unitRef{row.Cluster, row.UnitID})
		}
	}
	for k := range confirmed {
		o.orphans.mu.Lock()
		orphan := o.orphans.seen[k]
		o.orphans.mu.Unlock()
		crm, err := o.s.cl.CRM(k.cluster)
		if err != nil {
			continue
		}
		if _, err := crm.Delete(ctx, k.unit); err != nil && fault.KindOf(err) != fault.NotFound {
			o.s.log.WarnContext(ctx, "deleting an orphan failed", "cluster", k.cluster, "unit", k.unit, "error", err)
			continue
		}
		o.s.stats.orphansDeleted.Add(1)
		res.Deleted = append(res.Deleted, orphan)
		o.orphans.mu.Lock()
		delete(o.orphans.seen, k)
		o.orphans.mu.Unlock()
	}
	slices.SortFunc(res.Deleted, func(a, b Orphan) int {
		return cmpRef(UnitRef{Cluster: a.Cluster, UnitID: a.UnitID}, UnitRef{Cluster: b.Cluster, UnitID: b.UnitID})
	})
	return nil
}
