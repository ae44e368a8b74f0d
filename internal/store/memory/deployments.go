package memory

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
)

// depEntry is one stored deployment. dep is owned by the store and
// immutable.
type depEntry struct {
	dep *pmv1.OClassDeployment
	rev int64
}

// out returns a copy the caller may keep and change.
func (e depEntry) out() store.Deployment {
	return store.Deployment{Deployment: proto.Clone(e.dep).(*pmv1.OClassDeployment), Revision: e.rev}
}

// CreateDeployment implements store.Deployments.
func (s *Store) CreateDeployment(ctx context.Context, d *pmv1.OClassDeployment) (store.Deployment, error) {
	if err := s.enter(ctx); err != nil {
		return store.Deployment{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.createDeployment(d, nil)
}

// GetDeployment implements store.Deployments.
func (s *Store) GetDeployment(ctx context.Context, key string) (store.Deployment, error) {
	if err := s.enter(ctx); err != nil {
		return store.Deployment{}, err
	}
	s.mu.RLock()
	e, ok := s.deps[key]
	s.mu.RUnlock()
	if !ok {
		return store.Deployment{}, deploymentNotFound(key)
	}
	return e.out(), nil
}

// ListDeployments implements store.Deployments.
func (s *Store) ListDeployments(ctx context.Context, f store.DeploymentFilter) ([]store.Deployment, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	s.mu.RLock()
	matched := s.listDeployments(f)
	s.mu.RUnlock()
	return outDeployments(matched), nil
}

// UpdateDeployment implements store.Deployments.
func (s *Store) UpdateDeployment(ctx context.Context, d *pmv1.OClassDeployment, expected int64) (store.Deployment, error) {
	if err := s.enter(ctx); err != nil {
		return store.Deployment{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.updateDeployment(d, expected, nil)
}

// DeleteDeployment implements store.Deployments.
func (s *Store) DeleteDeployment(ctx context.Context, key string, expected int64) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deleteDeployment(key, expected, nil)
}

// PutMapping implements store.Deployments.
func (s *Store) PutMapping(ctx context.Context, m store.Mapping) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.putMapping(m, nil)
}

// DeleteMapping implements store.Deployments.
func (s *Store) DeleteMapping(ctx context.Context, deploymentKey, cluster string) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleteMapping(deploymentKey, cluster, nil)
	return nil
}

// Mappings implements store.Deployments.
func (s *Store) Mappings(ctx context.Context, deploymentKey string) ([]store.Mapping, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.mappingsOf(deploymentKey), nil
}

// AllMappings implements store.Deployments.
func (s *Store) AllMappings(ctx context.Context) ([]store.Mapping, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.allMappings(), nil
}

// CreateDeployment implements store.Deployments inside a transaction.
func (t *tx) CreateDeployment(ctx context.Context, d *pmv1.OClassDeployment) (store.Deployment, error) {
	if err := t.enter(ctx); err != nil {
		return store.Deployment{}, err
	}
	return t.s.createDeployment(d, t)
}

// GetDeployment implements store.Deployments inside a transaction.
func (t *tx) GetDeployment(ctx context.Context, key string) (store.Deployment, error) {
	if err := t.enter(ctx); err != nil {
		return store.Deployment{}, err
	}
	e, ok := t.s.deps[key]
	if !ok {
		return store.Deployment{}, deploymentNotFound(key)
	}
	return e.out(), nil
}

// ListDeployments implements store.Deployments inside a transaction.
func (t *tx) ListDeployments(ctx context.Context, f store.DeploymentFilter) ([]store.Deployment, error) {
	if err := t.enter(ctx); err != nil {
		return nil, err
	}
	return outDeployments(t.s.listDeployments(f)), nil
}

// UpdateDeployment implements store.Deployments inside a transaction.
func (t *tx) UpdateDeployment(ctx context.Context, d *pmv1.OClassDeployment, expected int64) (store.Deployment, error) {
	if err := t.enter(ctx); err != nil {
		return store.Deployment{}, err
	}
	return t.s.updateDeployment(d, expected, t)
}

// DeleteDeployment implements store.Deployments inside a transaction.
func (t *tx) DeleteDeployment(ctx context.Context, key string, expected int64) error {
	if err := t.enter(ctx); err != nil {
		return err
	}
	return t.s.deleteDeployment(key, expected, t)
}

// PutMapping implements store.Deployments inside a transaction.
func (t *tx) PutMapping(ctx context.Context, m store.Mapping) error {
	if err := t.enter(ctx); err != nil {
		return err
	}
	return t.s.putMapping(m, t)
}

// DeleteMapping implements store.Deployments inside a transaction.
func (t *tx) DeleteMapping(ctx context.Context, deploymentKey, cluster string) error {
	if err := t.enter(ctx); err != nil {
		return err
	}
	t.s.deleteMapping(deploymentKey, cluster, t)
	return nil
}

// Mappings implements store.Deployments inside a transaction.
func (t *tx) Mappings(ctx context.Context, deploymentKey string) ([]store.Mapping, error) {
	if err := t.enter(ctx); err != nil {
		return nil, err
	}
	return t.s.mappingsOf(deploymentKey), nil
}

// AllMappings implements store.Deployments inside a transaction.
func (t *tx) AllMappings(ctx context.Context) ([]store.Mapping, error) {
	if err := t.enter(ctx); err != nil {
		return nil, err
	}
	return t.s.allMappings(), nil
}

// The methods below work as the package ones do: the caller holds s.mu and
// a non-nil u records what a write replaces.

func (s *Store) createDeployment(d *pmv1.OClassDeployment, u *tx) (store.Deployment, error) {
	key := d.GetKey()
	if _, ok := s.deps[key]; ok {
		return store.Deployment{}, fmt.Errorf("deployment %q: %w", key, store.ErrAlreadyExists)
	}
	dep := proto.Clone(d).(*pmv1.OClassDeployment)
	now := timestamppb.New(s.now())
	dep.CreatedAt, dep.UpdatedAt = now, now
	keep(u, s.deps, key)
	e := depEntry{dep: dep, rev: 1}
	s.deps[key] = e
	return e.out(), nil
}

func (s *Store) updateDeployment(d *pmv1.OClassDeployment, expected int64, u *tx) (store.Deployment, error) {
	key := d.GetKey()
	old, err := s.checkDeployment(key, expected)
	if err != nil {
		return store.Deployment{}, err
	}
	dep := proto.Clone(d).(*pmv1.OClassDeployment)
	dep.CreatedAt = old.dep.GetCreatedAt()
	dep.UpdatedAt = timestamppb.New(s.now())
	keep(u, s.deps, key)
	e := depEntry{dep: dep, rev: old.rev + 1}
	s.deps[key] = e
	return e.out(), nil
}

func (s *Store) deleteDeployment(key string, expected int64, u *tx) error {
	if _, err := s.checkDeployment(key, expected); err != nil {
		return err
	}
	keep(u, s.deps, key)
	delete(s.deps, key)
	// The mappings go with it, as ON DELETE CASCADE does in Postgres.
	keep(u, s.mappings, key)
	delete(s.mappings, key)
	return nil
}

// checkDeployment returns the stored entry for a revision-checked write.
func (s *Store) checkDeployment(key string, expected int64) (depEntry, error) {
	e, ok := s.deps[key]
	if !ok {
		return depEntry{}, deploymentNotFound(key)
	}
	if expected != store.AnyRevision && e.rev != expected {
		return depEntry{}, fmt.Errorf("deployment %q: %w", key, store.ErrStale)
	}
	return e, nil
}

// listDeployments returns the entries matching f in key order (bytewise,
// as for packages).
func (s *Store) listDeployments(f store.DeploymentFilter) []depEntry {
	var out []depEntry
	for key, e := range s.deps {
		switch {
		case f.PackageName != "" && e.dep.GetPackageName() != f.PackageName,
			f.ClassKey != "" && e.dep.GetClassKey() != f.ClassKey,
			f.TargetEnv != "" && !slices.Contains(e.dep.GetTargetEnvs(), f.TargetEnv),
			f.After != "" && key <= f.After:
			continue
		}
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b depEntry) int { return strings.Compare(a.dep.GetKey(), b.dep.GetKey()) })
	if f.Offset > 0 {
		out = out[min(f.Offset, len(out)):]
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out
}

func (s *Store) putMapping(m store.Mapping, u *tx) error {
	if _, ok := s.deps[m.DeploymentKey]; !ok {
		return deploymentNotFound(m.DeploymentKey)
	}
	next := maps.Clone(s.mappings[m.DeploymentKey])
	if next == nil {
		next = make(map[string]string, 1)
	}
	next[m.Cluster] = m.UnitID
	keep(u, s.mappings, m.DeploymentKey)
	s.mappings[m.DeploymentKey] = next
	return nil
}

func (s *Store) deleteMapping(key, cluster string, u *tx) {
	if _, ok := s.mappings[key][cluster]; !ok {
		return
	}
	next := maps.Clone(s.mappings[key])
	delete(next, cluster)
	keep(u, s.mappings, key)
	if len(next) == 0 {
		delete(s.mappings, key)
		return
	}
	s.mappings[key] = next
}

// mappingsOf returns key's mappings in cluster order.
func (s *Store) mappingsOf(key string) []store.Mapping {
	var out []store.Mapping
	for _, cluster := range slices.Sorted(maps.Keys(s.mappings[key])) {
		out = append(out, store.Mapping{DeploymentKey: key, Cluster: cluster, UnitID: s.mappings[key][cluster]})
	}
	return out
}

// allMappings returns every mapping by deployment key, then cluster.
func (s *Store) allMappings() []store.Mapping {
	var out []store.Mapping
	for _, key := range slices.Sorted(maps.Keys(s.mappings)) {
		out = append(out, s.mappingsOf(key)...)
	}
	return out
}

// outDeployments copies entries for a caller; see outAll.
func outDeployments(es []depEntry) []store.Deployment {
	if len(es) == 0 {
		return nil
	}
	out := make([]store.Deployment, len(es))
	for i, e := range es {
		out[i] = e.out()
	}
	return out
}

func deploymentNotFound(key string) error {
	return fmt.Errorf("deployment %q: %w", key, store.ErrNotFound)
}
