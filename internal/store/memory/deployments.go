package memory

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
)

// deploymentTables holds deployments, their rollouts and operations. Rows
// are values (a deployment's Spec is cloned on the way in and out), so
// readers hold the lock only while they copy, and every write records the
// entry it replaces with keep, for a transaction's undo log; inner maps are
// written through keep too.
type deploymentTables struct {
	deps map[string]store.DeploymentRow
	// rollouts is deployment key → cluster → rollout.
	rollouts map[string]map[string]store.RolloutRow
	// units is cluster → unit id → deployment key: the index that runtime
	// views and cluster observations resolve owners by.
	units map[string]map[string]string
	ops   map[string]store.OperationRow
	// active is deployment key → its active operation's id.
	active map[string]string
	// revs is deployment key → revision → spec revision.
	revs map[string]map[int64]store.RevisionRow
}

func newDeploymentTables() deploymentTables {
	return deploymentTables{
		deps:     map[string]store.DeploymentRow{},
		rollouts: map[string]map[string]store.RolloutRow{},
		units:    map[string]map[string]string{},
		ops:      map[string]store.OperationRow{},
		active:   map[string]string{},
		revs:     map[string]map[int64]store.RevisionRow{},
	}
}

// inner returns m[k], creating it (recorded for undo) when absent.
func inner[V any](u *tx, m map[string]map[string]V, k string) map[string]V {
	in, ok := m[k]
	if !ok {
		keep(u, m, k)
		in = map[string]V{}
		m[k] = in
	}
	return in
}

// read runs fn under the read lock after the usual checks.
func read[T any](s *Store, ctx context.Context, fn func() (T, error)) (T, error) {
	if err := s.enter(ctx); err != nil {
		return *new(T), err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return fn()
}

// write runs fn under the write lock after the usual checks.
func write[T any](s *Store, ctx context.Context, fn func() (T, error)) (T, error) {
	if err := s.enter(ctx); err != nil {
		return *new(T), err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := fn()
	s.publishPending(err)
	return v, err
}

// inTx runs fn for a transaction's call (the store is locked already).
func inTx[T any](t *tx, ctx context.Context, fn func() (T, error)) (T, error) {
	if err := t.enter(ctx); err != nil {
		return *new(T), err
	}
	return fn()
}

// CreateDeployment implements store.Deployments.
func (s *Store) CreateDeployment(ctx context.Context, d store.DeploymentRow, rs ...store.RolloutRow) (store.DeploymentRow, error) {
	return write(s, ctx, func() (store.DeploymentRow, error) { return s.createDeployment(d, rs, nil) })
}

// GetDeployment implements store.Deployments.
func (s *Store) GetDeployment(ctx context.Context, key string) (store.DeploymentRow, error) {
	return read(s, ctx, func() (store.DeploymentRow, error) { return s.getDeployment(key) })
}

// ListDeployments implements store.Deployments.
func (s *Store) ListDeployments(ctx context.Context, f store.DeploymentFilter) ([]store.DeploymentRow, error) {
	return read(s, ctx, func() ([]store.DeploymentRow, error) { return s.listDeployments(f), nil })
}

// UpdateDeployment implements store.Deployments.
func (s *Store) UpdateDeployment(ctx context.Context, d store.DeploymentRow, expected int64) (store.DeploymentRow, error) {
	return write(s, ctx, func() (store.DeploymentRow, error) { return s.updateDeployment(d, expected, nil) })
}

// DeleteDeployment implements store.Deployments.
func (s *Store) DeleteDeployment(ctx context.Context, key string, expected int64) error {
	_, err := write(s, ctx, func() (struct{}, error) { return struct{}{}, s.deleteDeployment(key, expected, nil) })
	return err
}

// PutRollouts implements store.Deployments.
func (s *Store) PutRollouts(ctx context.Context, rs ...store.RolloutRow) error {
	_, err := write(s, ctx, func() (struct{}, error) { return struct{}{}, s.putRollouts(rs, nil) })
	return err
}

// ListRollouts implements store.Deployments.
func (s *Store) ListRollouts(ctx context.Context, f store.RolloutFilter) ([]store.RolloutRow, error) {
	return read(s, ctx, func() ([]store.RolloutRow, error) { return s.listRollouts(f), nil })
}

// UpdateConditions implements store.Deployments.
func (s *Store) UpdateConditions(ctx context.Context, us ...store.ConditionUpdate) (int, error) {
	return write(s, ctx, func() (int, error) { return s.updateConditions(us, nil), nil })
}

// CreateDeployment implements store.Deployments inside a transaction.
func (t *tx) CreateDeployment(ctx context.Context, d store.DeploymentRow, rs ...store.RolloutRow) (store.DeploymentRow, error) {
	return inTx(t, ctx, func() (store.DeploymentRow, error) { return t.s.createDeployment(d, rs, t) })
}

// GetDeployment implements store.Deployments inside a transaction.
func (t *tx) GetDeployment(ctx context.Context, key string) (store.DeploymentRow, error) {
	return inTx(t, ctx, func() (store.DeploymentRow, error) { return t.s.getDeployment(key) })
}

// ListDeployments implements store.Deployments inside a transaction.
func (t *tx) ListDeployments(ctx context.Context, f store.DeploymentFilter) ([]store.DeploymentRow, error) {
	return inTx(t, ctx, func() ([]store.DeploymentRow, error) { return t.s.listDeployments(f), nil })
}

// UpdateDeployment implements store.Deployments inside a transaction.
func (t *tx) UpdateDeployment(ctx context.Context, d store.DeploymentRow, expected int64) (store.DeploymentRow, error) {
	return inTx(t, ctx, func() (store.DeploymentRow, error) { return t.s.updateDeployment(d, expected, t) })
}

// DeleteDeployment implements store.Deployments inside a transaction.
func (t *tx) DeleteDeployment(ctx context.Context, key string, expected int64) error {
	_, err := inTx(t, ctx, func() (struct{}, error) { return struct{}{}, t.s.deleteDeployment(key, expected, t) })
	return err
}

// PutRollouts implements store.Deployments inside a transaction.
func (t *tx) PutRollouts(ctx context.Context, rs ...store.RolloutRow) error {
	_, err := inTx(t, ctx, func() (struct{}, error) { return struct{}{}, t.s.putRollouts(rs, t) })
	return err
}

// ListRollouts implements store.Deployments inside a transaction.
func (t *tx) ListRollouts(ctx context.Context, f store.RolloutFilter) ([]store.RolloutRow, error) {
	return inTx(t, ctx, func() ([]store.RolloutRow, error) { return t.s.listRollouts(f), nil })
}

// UpdateConditions implements store.Deployments inside a transaction.
func (t *tx) UpdateConditions(ctx context.Context, us ...store.ConditionUpdate) (int, error) {
	return inTx(t, ctx, func() (int, error) { return t.s.updateConditions(us, t), nil })
}

// The methods below work as the package ones do: the caller holds s.mu and
// a non-nil u records what a write replaces.

func (s *Store) createDeployment(d store.DeploymentRow, rs []store.RolloutRow, u *tx) (store.DeploymentRow, error) {
	if _, ok := s.dep.deps[d.Key]; ok {
		return store.DeploymentRow{}, fmt.Errorf("deployment %q: %w", d.Key, store.ErrAlreadyExists)
	}
	for _, r := range rs {
		if r.DeploymentKey != d.Key {
			return store.DeploymentRow{}, deploymentNotFound(r.DeploymentKey)
		}
	}
	d = copyDeployment(d, false)
	d.CreatedAt = s.now()
	d.UpdatedAt, d.Revision = d.CreatedAt, 1
	keep(u, s.dep.deps, d.Key)
	s.dep.deps[d.Key] = d
	s.changed(u, store.ChangeDeployment, d.Key, "", store.ChangeInsert)
	if err := s.putRollouts(rs, u); err != nil {
		return store.DeploymentRow{}, err
	}
	return copyDeployment(d, false), nil
}

func (s *Store) getDeployment(key string) (store.DeploymentRow, error) {
	d, ok := s.dep.deps[key]
	if !ok {
		return store.DeploymentRow{}, deploymentNotFound(key)
	}
	return copyDeployment(d, false), nil
}

func (s *Store) listDeployments(f store.DeploymentFilter) []store.DeploymentRow {
	var keys []string
	if f.Keys != nil {
		for _, k := range f.Keys {
			if _, ok := s.dep.deps[k]; ok && !slices.Contains(keys, k) {
				keys = append(keys, k)
			}
		}
	} else {
		keys = slices.Collect(maps.Keys(s.dep.deps))
	}
	slices.Sort(keys)
	var out []store.DeploymentRow
	skip := f.Offset
	for _, k := range keys {
		d := s.dep.deps[k]
		if (f.After != "" && k <= f.After) ||
			(f.PackageName != "" && d.PackageName != f.PackageName) ||
			(f.ClassKey != "" && d.ClassKey != f.ClassKey) ||
			(f.Target != "" && !slices.Contains(d.Targets, f.Target)) {
			continue
		}
		if skip > 0 {
			skip--
			continue
		}
		out = append(out, copyDeployment(d, f.SkipSpec))
		if f.Limit > 0 && len(out) == f.Limit {
			break
		}
	}
	return out
}

func (s *Store) updateDeployment(d store.DeploymentRow, expected int64, u *tx) (store.DeploymentRow, error) {
	old, err := s.checkDeployment(d.Key, expected)
	if err != nil {
		return store.DeploymentRow{}, err
	}
	d = copyDeployment(d, false)
	d.CreatedAt, d.RequestKey = old.CreatedAt, old.RequestKey
	d.UpdatedAt, d.Revision = s.now(), old.Revision+1
	keep(u, s.dep.deps, d.Key)
	s.dep.deps[d.Key] = d
	s.changed(u, store.ChangeDeployment, d.Key, "", store.ChangeUpdate)
	return copyDeployment(d, false), nil
}

func (s *Store) deleteDeployment(key string, expected int64, u *tx) error {
	if _, err := s.checkDeployment(key, expected); err != nil {
		return err
	}
	keep(u, s.dep.deps, key)
	delete(s.dep.deps, key)
	s.changed(u, store.ChangeDeployment, key, "", store.ChangeDelete)
	// Its rollouts go with it, as ON DELETE CASCADE does in Postgres.
	for _, r := range s.dep.rollouts[key] {
		s.unindex(r, u)
	}
	keep(u, s.dep.rollouts, key)
	delete(s.dep.rollouts, key)
	// And its revisions, as the foreign key's ON DELETE CASCADE.
	keep(u, s.dep.revs, key)
	delete(s.dep.revs, key)
	return nil
}

// unindex removes r's unit from the unit index.
func (s *Store) unindex(r store.RolloutRow, u *tx) {
	if in := s.dep.units[r.Cluster]; in[r.UnitID] == r.DeploymentKey {
		keep(u, in, r.UnitID)
		delete(in, r.UnitID)
	}
}

// checkDeployment returns the stored deployment for a revision-checked
// write.
func (s *Store) checkDeployment(key string, expected int64) (store.DeploymentRow, error) {
	d, ok := s.dep.deps[key]
	if !ok {
		return store.DeploymentRow{}, deploymentNotFound(key)
	}
	if expected != store.AnyRevision && d.Revision != expected {
		return store.DeploymentRow{}, fmt.Errorf("deployment %q: %w", key, store.ErrStale)
	}
	return d, nil
}

func (s *Store) putRollouts(rs []store.RolloutRow, u *tx) error {
	// Check every deployment first: a failed call writes nothing.
	for _, r := range rs {
		if _, ok := s.dep.deps[r.DeploymentKey]; !ok {
			return deploymentNotFound(r.DeploymentKey)
		}
	}
	for _, r := range rs {
		byCluster := inner(u, s.dep.rollouts, r.DeploymentKey)
		if old, ok := byCluster[r.Cluster]; ok {
			s.unindex(old, u)
		}
		keep(u, byCluster, r.Cluster)
		byCluster[r.Cluster] = r
		units := inner(u, s.dep.units, r.Cluster)
		keep(u, units, r.UnitID)
		units[r.UnitID] = r.DeploymentKey
		s.changed(u, store.ChangeDeployment, r.DeploymentKey, "", store.ChangeUpdate)
	}
	return nil
}

func (s *Store) listRollouts(f store.RolloutFilter) []store.RolloutRow {
	var out []store.RolloutRow
	// owned returns the rollout that has unit id on cluster.
	owned := func(cluster, id string) (store.RolloutRow, bool) {
		key, ok := s.dep.units[cluster][id]
		if !ok {
			return store.RolloutRow{}, false
		}
		r, ok := s.dep.rollouts[key][cluster]
		return r, ok && r.UnitID == id
	}
	switch {
	case f.DeploymentKeys != nil:
		keys := slices.Clone(f.DeploymentKeys)
		slices.Sort(keys)
		for _, k := range slices.Compact(keys) {
			for _, c := range slices.Sorted(maps.Keys(s.dep.rollouts[k])) {
				out = append(out, s.dep.rollouts[k][c])
			}
		}
	case f.UnitIDs != nil:
		clusters := []string{f.Cluster}
		if f.Cluster == "" {
			clusters = slices.Sorted(maps.Keys(s.dep.units))
		}
		ids := slices.Clone(f.UnitIDs)
		slices.Sort(ids)
		ids = slices.Compact(ids)
		for _, c := range clusters {
			for _, id := range ids {
				if r, ok := owned(c, id); ok {
					out = append(out, r)
				}
			}
		}
	case f.Cluster != "":
		for id := range s.dep.units[f.Cluster] {
			if id > f.After {
				if r, ok := owned(f.Cluster, id); ok {
					out = append(out, r)
				}
			}
		}
		slices.SortFunc(out, func(a, b store.RolloutRow) int { return strings.Compare(a.UnitID, b.UnitID) })
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out
}

func (s *Store) updateConditions(us []store.ConditionUpdate, u *tx) int {
	n := 0
	for _, c := range us {
		byCluster := s.dep.rollouts[c.DeploymentKey]
		r, ok := byCluster[c.Cluster]
		if !ok || r.UnitID != c.UnitID || r.State != store.RolloutDeployed || r.Condition == c.Condition {
			continue
		}
		r.Condition = c.Condition
		keep(u, byCluster, c.Cluster)
		byCluster[c.Cluster] = r
		s.changed(u, store.ChangeDeployment, c.DeploymentKey, "", store.ChangeUpdate)
		n++
	}
	return n
}

// copyDeployment gives d its own Spec and Targets (or none, with
// skipSpec), so stored rows stay immutable and callers may change theirs.
func copyDeployment(d store.DeploymentRow, skipSpec bool) store.DeploymentRow {
	d.Targets = slices.Clone(d.Targets)
	if d.Targets == nil {
		d.Targets = []string{}
	}
	switch {
	case skipSpec:
		d.Spec = nil
	case d.Spec == nil:
		// As Postgres's NOT NULL column gives it back.
		d.Spec = new(pmv1.OClassDeployment)
	default:
		d.Spec = proto.CloneOf(d.Spec)
	}
	return d
}

func deploymentNotFound(key string) error {
	return fmt.Errorf("deployment %q: %w", key, store.ErrNotFound)
}
