package memory

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
)

// PutRevision implements store.Deployments.
func (s *Store) PutRevision(ctx context.Context, r store.RevisionRow, keep int) error {
	_, err := write(s, ctx, func() (struct{}, error) { return struct{}{}, s.putRevision(r, keep, nil) })
	return err
}

// ListRevisions implements store.Deployments.
func (s *Store) ListRevisions(ctx context.Context, key string) ([]store.RevisionRow, error) {
	return read(s, ctx, func() ([]store.RevisionRow, error) { return s.listRevisions(key), nil })
}

// PutRevision implements store.Deployments inside a transaction.
func (t *tx) PutRevision(ctx context.Context, r store.RevisionRow, keep int) error {
	_, err := inTx(t, ctx, func() (struct{}, error) { return struct{}{}, t.s.putRevision(r, keep, t) })
	return err
}

// ListRevisions implements store.Deployments inside a transaction.
func (t *tx) ListRevisions(ctx context.Context, key string) ([]store.RevisionRow, error) {
	return inTx(t, ctx, func() ([]store.RevisionRow, error) { return t.s.listRevisions(key), nil })
}

func (s *Store) putRevision(r store.RevisionRow, keepN int, u *tx) error {
	if _, ok := s.dep.deps[r.DeploymentKey]; !ok {
		return deploymentNotFound(r.DeploymentKey)
	}
	byRev := inner64(u, s.dep.revs, r.DeploymentKey)
	if _, ok := byRev[r.Revision]; ok {
		return fmt.Errorf("deployment %q revision %d: %w", r.DeploymentKey, r.Revision, store.ErrAlreadyExists)
	}
	r = copyRevision(r)
	r.CreatedAt = s.now()
	keep(u, byRev, r.Revision)
	byRev[r.Revision] = r
	if keepN > 0 {
		for n := range byRev {
			if n <= r.Revision-int64(keepN) {
				keep(u, byRev, n)
				delete(byRev, n)
			}
		}
	}
	return nil
}

func (s *Store) listRevisions(key string) []store.RevisionRow {
	byRev := s.dep.revs[key]
	out := make([]store.RevisionRow, 0, len(byRev))
	for _, n := range slices.SortedFunc(maps.Keys(byRev), func(a, b int64) int { return cmp.Compare(b, a) }) {
		out = append(out, copyRevision(byRev[n]))
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// inner64 is inner for maps keyed by revision.
func inner64[V any](u *tx, m map[string]map[int64]V, k string) map[int64]V {
	in, ok := m[k]
	if !ok {
		keep(u, m, k)
		in = map[int64]V{}
		m[k] = in
	}
	return in
}

// copyRevision gives r its own Spec and Targets.
func copyRevision(r store.RevisionRow) store.RevisionRow {
	r.Targets = slices.Clone(r.Targets)
	if r.Targets == nil {
		r.Targets = []string{}
	}
	if r.Spec == nil {
		// As Postgres's NOT NULL column gives it back.
		r.Spec = new(pmv1.OClassDeployment)
	} else {
		r.Spec = proto.CloneOf(r.Spec)
	}
	return r
}
