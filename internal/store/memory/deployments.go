package memory

import (
	"context"
	"maps"
	"slices"

	"google.golang.org/protobuf/types/known/timestamppb"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
)

// deployments stores deployments. Their timestamps are fields of the
// message itself.
var deployments = docs[*pmv1.OClassDeployment, store.Deployment]{
	what:      "deployment",
	key:       (*pmv1.OClassDeployment).GetKey,
	createdAt: (*pmv1.OClassDeployment).GetCreatedAt,
	stamp: func(d *pmv1.OClassDeployment, created, updated *timestamppb.Timestamp) {
		d.CreatedAt, d.UpdatedAt = created, updated
	},
	result: func(d *pmv1.OClassDeployment, rev int64) store.Deployment {
		return store.Deployment{Deployment: d, Revision: rev}
	},
}

// CreateDeployment implements store.Deployments.
func (s *Store) CreateDeployment(ctx context.Context, d *pmv1.OClassDeployment) (store.Deployment, error) {
	if err := s.enter(ctx); err != nil {
		return store.Deployment{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return deployments.create(s.deps, s.now(), d, nil)
}

// GetDeployment implements store.Deployments.
func (s *Store) GetDeployment(ctx context.Context, key string) (store.Deployment, error) {
	if err := s.enter(ctx); err != nil {
		return store.Deployment{}, err
	}
	s.mu.RLock()
	e, err := deployments.check(s.deps, key, store.AnyRevision)
	s.mu.RUnlock() // entries are immutable: copy it outside the lock
	if err != nil {
		return store.Deployment{}, err
	}
	return deployments.out(e), nil
}

// ListDeployments implements store.Deployments.
func (s *Store) ListDeployments(ctx context.Context, f store.DeploymentFilter) ([]store.Deployment, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	s.mu.RLock()
	matched := s.listDeployments(f)
	s.mu.RUnlock()
	return deployments.outAll(matched), nil
}

// UpdateDeployment implements store.Deployments.
func (s *Store) UpdateDeployment(ctx context.Context, d *pmv1.OClassDeployment, expected int64) (store.Deployment, error) {
	if err := s.enter(ctx); err != nil {
		return store.Deployment{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return deployments.update(s.deps, s.now(), d, expected, nil)
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
func (s *Store) PutMapping(ctx context.Context, ms ...store.Mapping) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.putMapping(ms, nil)
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
	return deployments.create(t.s.deps, t.s.now(), d, t)
}

// GetDeployment implements store.Deployments inside a transaction.
func (t *tx) GetDeployment(ctx context.Context, key string) (store.Deployment, error) {
	if err := t.enter(ctx); err != nil {
		return store.Deployment{}, err
	}
	return deployments.get(t.s.deps, key)
}

// ListDeployments implements store.Deployments inside a transaction.
func (t *tx) ListDeployments(ctx context.Context, f store.DeploymentFilter) ([]store.Deployment, error) {
	if err := t.enter(ctx); err != nil {
		return nil, err
	}
	return deployments.outAll(t.s.listDeployments(f)), nil
}

// UpdateDeployment implements store.Deployments inside a transaction.
func (t *tx) UpdateDeployment(ctx context.Context, d *pmv1.OClassDeployment, expected int64) (store.Deployment, error) {
	if err := t.enter(ctx); err != nil {
		return store.Deployment{}, err
	}
	return deployments.update(t.s.deps, t.s.now(), d, expected, t)
}

// DeleteDeployment implements store.Deployments inside a transaction.
func (t *tx) DeleteDeployment(ctx context.Context, key string, expected int64) error {
	if err := t.enter(ctx); err != nil {
		return err
	}
	return t.s.deleteDeployment(key, expected, t)
}

// PutMapping implements store.Deployments inside a transaction.
func (t *tx) PutMapping(ctx context.Context, ms ...store.Mapping) error {
	if err := t.enter(ctx); err != nil {
		return err
	}
	return t.s.putMapping(ms, t)
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

func (s *Store) deleteDeployment(key string, expected int64, u *tx) error {
	if err := deployments.delete(s.deps, key, expected, u); err != nil {
		return err
	}
	// The mappings go with it, as ON DELETE CASCADE does in Postgres.
	keep(u, s.mappings, key)
	delete(s.mappings, key)
	return nil
}

// listDeployments returns the entries matching f in key order. The caller
// holds s.mu for reading.
func (s *Store) listDeployments(f store.DeploymentFilter) []docEntry[*pmv1.OClassDeployment] {
	return deployments.list(s.deps, func(d *pmv1.OClassDeployment) bool {
		return (f.PackageName == "" || d.GetPackageName() == f.PackageName) &&
			(f.ClassKey == "" || d.GetClassKey() == f.ClassKey) &&
			(f.TargetEnv == "" || slices.Contains(d.GetTargetEnvs(), f.TargetEnv))
	}, f.After, f.Offset, f.Limit)
}

func (s *Store) putMapping(ms []store.Mapping, u *tx) error {
	// Check every deployment first: a failed call writes nothing.
	byKey := map[string][]store.Mapping{}
	for _, m := range ms {
		if _, ok := s.deps[m.DeploymentKey]; !ok {
			return deployments.notFound(m.DeploymentKey)
		}
		byKey[m.DeploymentKey] = append(byKey[m.DeploymentKey], m)
	}
	for key, group := range byKey {
		next := maps.Clone(s.mappings[key])
		if next == nil {
			next = make(map[string]string, len(group))
		}
		for _, m := range group {
			next[m.Cluster] = m.UnitID
		}
		keep(u, s.mappings, key)
		s.mappings[key] = next
	}
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
