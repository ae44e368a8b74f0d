package memory

import (
	"context"
	"errors"
	"sync/atomic"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
)

// tx is the store.Tx of a WithTx callback. The Store's write lock is held
// for its whole life, so its methods touch the maps directly; undo records,
// for each name the transaction wrote, what was stored before its first
// write, which is all a rollback needs because entries are immutable.
type tx struct {
	s    *Store
	undo map[string]undoEntry
	// done is atomic only so that a tx leaked to another goroutine fails
	// cleanly instead of racing.
	done atomic.Bool
}

// undoEntry is a name's state before the transaction touched it.
type undoEntry struct {
	e      entry
	exists bool
}

var _ store.Tx = (*tx)(nil)

// errTxDone is returned when a tx is used after its WithTx returned.
var errTxDone = errors.New("memory store: transaction already finished")

// remember records name's current state the first time the transaction
// writes it. A nil tx (a write outside any transaction) records nothing.
func (t *tx) remember(s *Store, name string) {
	if t == nil {
		return
	}
	if _, ok := t.undo[name]; ok {
		return
	}
	e, ok := s.pkgs[name]
	t.undo[name] = undoEntry{e: e, exists: ok}
}

// rollback restores every name the transaction wrote.
func (t *tx) rollback() {
	for name, u := range t.undo {
		if u.exists {
			t.s.pkgs[name] = u.e
		} else {
			delete(t.s.pkgs, name)
		}
	}
}

// close makes later use of t fail instead of touching maps unlocked.
func (t *tx) close() { t.done.Store(true) }

func (t *tx) enter(ctx context.Context) error {
	if t.done.Load() {
		return errTxDone
	}
	return ctx.Err()
}

// CreatePackage implements store.Packages inside a transaction.
func (t *tx) CreatePackage(ctx context.Context, p *pmv1.OPackage) (store.Package, error) {
	if err := t.enter(ctx); err != nil {
		return store.Package{}, err
	}
	return t.s.create(p, t)
}

// GetPackage implements store.Packages inside a transaction.
func (t *tx) GetPackage(ctx context.Context, name string) (store.Package, error) {
	if err := t.enter(ctx); err != nil {
		return store.Package{}, err
	}
	e, ok := t.s.pkgs[name]
	if !ok {
		return store.Package{}, notFound(name)
	}
	return e.out(), nil
}

// ListPackages implements store.Packages inside a transaction.
func (t *tx) ListPackages(ctx context.Context, f store.PackageFilter) ([]store.Package, error) {
	if err := t.enter(ctx); err != nil {
		return nil, err
	}
	return outAll(t.s.list(f)), nil
}

// UpdatePackage implements store.Packages inside a transaction.
func (t *tx) UpdatePackage(ctx context.Context, p *pmv1.OPackage, expected int64) (store.Package, error) {
	if err := t.enter(ctx); err != nil {
		return store.Package{}, err
	}
	return t.s.update(p, expected, t)
}

// DeletePackage implements store.Packages inside a transaction.
func (t *tx) DeletePackage(ctx context.Context, name string, expected int64) error {
	if err := t.enter(ctx); err != nil {
		return err
	}
	return t.s.delete(name, expected, t)
}
