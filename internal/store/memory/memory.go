// Package memory is the in-process implementation of store.Store: PM's
// embedded default, for one replica whose data may go with the process, and
// a fast store for tests. It passes the same conformance suite as the
// Postgres store, so code tested against it behaves the same on Postgres.
package memory

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
)

// Store is a store.Store held in memory. It is safe for concurrent use.
//
// Packages are held compactly (encoded, in B-trees by name and by tag; see
// pkgTable), everything else in maps. Stored values are never mutated: a
// write replaces the entry with a new one, so readers can copy or decode an
// entry without holding the lock for long and a transaction's undo log
// only needs the old values.
type Store struct {
	clock  store.Clock
	closed atomic.Bool

	// mu guards the tables below. WithTx holds it for writing during the
	// whole callback, which makes transactions serial with every other
	// access.
	mu   sync.RWMutex
	pkgs *pkgTable
	// dep holds deployments, rollouts and operations (deployments.go).
	dep  deploymentTables
	idem map[idemKey]store.IdempotencyRecord
	// audit is the audit trail, a bounded ring (audit.go).
	audit auditLog
	// log is the change feed; pending holds the changes of the write
	// outside a transaction that holds mu (changes.go).
	log     *changeLog
	pending []store.Change
}

var _ store.Store = (*Store)(nil)

// New returns an empty Store that stamps times from clock (time.Now if nil).
func New(clock store.Clock) *Store {
	if clock == nil {
		clock = time.Now
	}
	return &Store{
		clock: clock,
		pkgs:  newPkgTable(),
		dep:   newDeploymentTables(),
		idem:  make(map[idemKey]store.IdempotencyRecord),
		log:   newChangeLog(),
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
	rec, err := packages.create(s.pkgs, s.now(), p, nil)
	if err == nil {
		s.changed(nil, store.ChangePackage, p.GetName(), "", store.ChangeInsert)
	}
	s.publishPending(err)
	return rec, err
}

// GetPackage implements store.Packages.
func (s *Store) GetPackage(ctx context.Context, name string) (store.Package, error) {
	if err := s.enter(ctx); err != nil {
		return store.Package{}, err
	}
	s.mu.RLock()
	r, ok := s.pkgs.row(name)
	s.mu.RUnlock() // rows are immutable: decode it outside the lock
	if !ok {
		return store.Package{}, packages.notFound(name)
	}
	return packages.out(r.entry()), nil
}

// ListPackages implements store.Packages.
func (s *Store) ListPackages(ctx context.Context, f store.PackageFilter) ([]store.Package, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	s.mu.RLock()
	rows := s.pkgs.list(f)
	s.mu.RUnlock() // rows are immutable: decode them outside the lock
	return decodeRows(rows), nil
}

// UpdatePackage implements store.Packages.
func (s *Store) UpdatePackage(ctx context.Context, p *pmv1.OPackage, expected int64) (store.Package, error) {
	if err := s.enter(ctx); err != nil {
		return store.Package{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	rec, err := packages.update(s.pkgs, s.now(), p, expected, nil)
	if err == nil {
		s.changed(nil, store.ChangePackage, p.GetName(), "", store.ChangeUpdate)
	}
	s.publishPending(err)
	return rec, err
}

// DeletePackage implements store.Packages.
func (s *Store) DeletePackage(ctx context.Context, name string, expected int64) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := packages.delete(s.pkgs, name, expected, nil)
	if err == nil {
		s.changed(nil, store.ChangePackage, name, "", store.ChangeDelete)
	}
	s.publishPending(err)
	return err
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
	s.log.publish(t.changes)
	return nil
}

// Ping implements store.Store; memory is there until closed.
func (s *Store) Ping(ctx context.Context) error { return s.enter(ctx) }

// Ready implements store.Store: memory has no schema to lag behind, so it
// is ready whenever Ping says so.
func (s *Store) Ready(ctx context.Context) error { return s.Ping(ctx) }

// Close implements store.Store. Later calls fail with store.ErrUnavailable,
// so that code shutting down sees the same thing on either store.
func (s *Store) Close() { s.closed.Store(true) }

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
