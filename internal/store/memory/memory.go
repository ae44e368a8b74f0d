// Package memory is the in-process implementation of store.Store: PM's
// embedded default, for one replica whose data may go with the process, and
// a fast store for tests. It passes the same conformance suite as the
// Postgres store, so code tested against it behaves the same on Postgres.
package memory

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
)

// Store is a store.Store held in maps. It is safe for concurrent use.
//
// Stored messages are never mutated: a write replaces the entry with a new
// clone, so readers can copy an entry without holding the lock for long and
// a transaction's undo log only needs the old pointers.
type Store struct {
	clock  store.Clock
	closed atomic.Bool

	// mu guards the maps below. WithTx holds it for writing during the
	// whole callback, which makes transactions serial with every other
	// access.
	mu   sync.RWMutex
	pkgs map[string]docEntry[*pmv1.OPackage]
	// dep holds deployments, rollouts and operations (deployments.go).
	dep  deploymentTables
	idem map[idemKey]store.IdempotencyRecord
}

// packages stores packages. Their timestamps live in the message's
// metadata, which the store creates when absent since it always stamps them.
var packages = docs[*pmv1.OPackage, store.Package]{
	what:      "package",
	key:       (*pmv1.OPackage).GetName,
	createdAt: func(p *pmv1.OPackage) *timestamppb.Timestamp { return p.GetMetadata().GetCreatedAt() },
	stamp: func(p *pmv1.OPackage, created, updated *timestamppb.Timestamp) {
		md := metadata(p)
		md.CreatedAt, md.UpdatedAt = created, updated
	},
	result: func(p *pmv1.OPackage, rev int64) store.Package { return store.Package{Package: p, Revision: rev} },
}

var _ store.Store = (*Store)(nil)

// New returns an empty Store that stamps times from clock (time.Now if nil).
func New(clock store.Clock) *Store {
	if clock == nil {
		clock = time.Now
	}
	return &Store{
		clock: clock,
		pkgs:  make(map[string]docEntry[*pmv1.OPackage]),
		dep:   newDeploymentTables(),
		idem:  make(map[idemKey]store.IdempotencyRecord),
	}
}

// errInsideTx is returned when a WithTx callback calls the Store instead of
// its tx: the Store's lock is held by the transaction, so the call would
// otherwise deadlock.
var errInsideTx = errors.New("memory store: Store method called inside WithTx; use the tx argument")

// txKey marks a context as belonging to a running transaction of a store.
type txKey struct{}

// errClosed is what a closed store answers, as the Postgres store does
// once its pool is closed.
var errClosed = fmt.Errorf("memory store closed: %w", store.ErrUnavailable)

// enter checks ctx and the store's state before a Store method takes the
// lock.
func (s *Store) enter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.closed.Load() {
		return errClosed
	}
	if ctx.Value(txKey{}) == s {
		return errInsideTx
	}
	return nil
}

// CreatePackage implements store.Packages.
func (s *Store) CreatePackage(ctx context.Context, p *pmv1.OPackage) (store.Package, error) {
	if err := s.enter(ctx); err != nil {
		return store.Package{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return packages.create(s.pkgs, s.now(), p, nil)
}

// GetPackage implements store.Packages.
func (s *Store) GetPackage(ctx context.Context, name string) (store.Package, error) {
	if err := s.enter(ctx); err != nil {
		return store.Package{}, err
	}
	s.mu.RLock()
	e, err := packages.check(s.pkgs, name, store.AnyRevision)
	s.mu.RUnlock() // entries are immutable: copy it outside the lock
	if err != nil {
		return store.Package{}, err
	}
	return packages.out(e), nil
}

// ListPackages implements store.Packages.
func (s *Store) ListPackages(ctx context.Context, f store.PackageFilter) ([]store.Package, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	s.mu.RLock()
	matched := s.listPackages(f)
	s.mu.RUnlock()
	return packages.outAll(matched), nil
}

// UpdatePackage implements store.Packages.
func (s *Store) UpdatePackage(ctx context.Context, p *pmv1.OPackage, expected int64) (store.Package, error) {
	if err := s.enter(ctx); err != nil {
		return store.Package{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return packages.update(s.pkgs, s.now(), p, expected, nil)
}

// DeletePackage implements store.Packages.
func (s *Store) DeletePackage(ctx context.Context, name string, expected int64) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return packages.delete(s.pkgs, name, expected, nil)
}

// WithTx implements store.Store. fn runs with the store locked, so it sees
// no one else's writes and no one sees its own until it returns; if it
// returns an error (or panics) every write it made is undone. There are no
// serialization failures here, so fn runs exactly once.
func (s *Store) WithTx(ctx context.Context, fn func(ctx context.Context, tx store.Tx) error) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := &tx{s: s}
	defer t.close()
	committed := false
	defer func() {
		if !committed {
			t.rollback()
		}
	}()
	if err := fn(context.WithValue(ctx, txKey{}, s), t); err != nil {
		return err
	}
	committed = true
	return nil
}

// Ping implements store.Store; memory is there until closed.
func (s *Store) Ping(ctx context.Context) error { return s.enter(ctx) }

// Close implements store.Store. Later calls fail with store.ErrUnavailable,
// so that code shutting down sees the same thing on either store.
func (s *Store) Close() { s.closed.Store(true) }

// listPackages returns the entries matching f in name order. The caller
// holds s.mu for reading.
func (s *Store) listPackages(f store.PackageFilter) []docEntry[*pmv1.OPackage] {
	var match func(string) bool
	if f.NamePattern != "" {
		match = patternMatcher(f.NamePattern)
	}
	return packages.list(s.pkgs, func(p *pmv1.OPackage) bool {
		return (match == nil || match(p.GetName())) &&
			(f.Disabled == nil || p.GetDisabled() == *f.Disabled) &&
			(len(f.Tags) == 0 || anyTag(p.GetMetadata().GetTags(), f.Tags))
	}, f.After, f.Offset, f.Limit)
}

// now is the clock's time at Postgres's precision, so both stores return
// the same times.
func (s *Store) now() time.Time { return s.clock().UTC().Truncate(time.Microsecond) }

// metadata returns pkg's metadata, creating it if absent, since the store
// always stamps times into it.
func metadata(pkg *pmv1.OPackage) *pmv1.PackageMetadata {
	if pkg.Metadata == nil {
		pkg.Metadata = new(pmv1.PackageMetadata)
	}
	return pkg.Metadata
}

// anyTag reports whether have and want share a tag.
func anyTag(have, want []string) bool {
	for _, t := range have {
		if slices.Contains(want, t) {
			return true
		}
	}
	return false
}

// patternMatcher returns a matcher for a name pattern: the pattern matches
// a substring of the name and '*' matches any run of characters. Because the
// match is unanchored at both ends, finding the '*'-separated parts in order,
// each at its leftmost place after the previous one, is exact.
func patternMatcher(pattern string) func(string) bool {
	parts := strings.Split(pattern, "*")
	return func(name string) bool {
		for _, part := range parts {
			i := strings.Index(name, part)
			if i < 0 {
				return false
			}
			name = name[i+len(part):]
		}
		return true
	}
}
