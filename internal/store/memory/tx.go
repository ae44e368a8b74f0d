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
// for every map entry the transaction wrote, how to put back what was there
// before, which is all a rollback needs because stored values are immutable.
type tx struct {
	s    *Store
	undo []func()
	// changes are published when the transaction commits.
	changes []store.Change
	// done is atomic only so that a tx leaked to another goroutine fails
	// cleanly instead of racing.
	done atomic.Bool
}

var _ store.Tx = (*tx)(nil)

// errTxDone is returned when a tx is used after its WithTx returned.
var errTxDone = errors.New("memory store: transaction already finished")

// keep records m[k]'s current value (or absence) so that a rollback of t
// restores it. A nil t (a write outside any transaction) records nothing.
// Call it before every write to m[k]; rollback replays the records newest
// first, so the oldest, the value before the transaction, wins.
func keep[K comparable, V any](t *tx, m map[K]V, k K) {
	if t == nil {
		return
	}
	old, ok := m[k]
	t.undo = append(t.undo, func() {
		if ok {
			m[k] = old
		} else {
			delete(m, k)
		}
	})
}

// rollback restores every entry the transaction wrote.
func (t *tx) rollback() {
	for i := len(t.undo) - 1; i >= 0; i-- {
		t.undo[i]()
	}
	t.undo = nil
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
	rec, err := packages.create(t.s.pkgs, t.s.now(), p, t)
	if err == nil {
		t.s.changed(t, store.ChangePackage, p.GetName(), "", store.ChangeInsert)
	}
	return rec, err
}

// GetPackage implements store.Packages inside a transaction.
func (t *tx) GetPackage(ctx context.Context, name string) (store.Package, error) {
	if err := t.enter(ctx); err != nil {
		return store.Package{}, err
	}
	return packages.get(t.s.pkgs, name)
}

// ListPackages implements store.Packages inside a transaction.
func (t *tx) ListPackages(ctx context.Context, f store.PackageFilter) ([]store.Package, error) {
	if err := t.enter(ctx); err != nil {
		return nil, err
	}
	return decodeRows(t.s.pkgs.list(f)), nil
}

// UpdatePackage implements store.Packages inside a transaction.
func (t *tx) UpdatePackage(ctx context.Context, p *pmv1.OPackage, expected int64) (store.Package, error) {
	if err := t.enter(ctx); err != nil {
		return store.Package{}, err
	}
	rec, err := packages.update(t.s.pkgs, t.s.now(), p, expected, t)
	if err == nil {
		t.s.changed(t, store.ChangePackage, p.GetName(), "", store.ChangeUpdate)
	}
	return rec, err
}

// DeletePackage implements store.Packages inside a transaction.
func (t *tx) DeletePackage(ctx context.Context, name string, expected int64) error {
	if err := t.enter(ctx); err != nil {
		return err
	}
	err := packages.delete(t.s.pkgs, name, expected, t)
	if err == nil {
		t.s.changed(t, store.ChangePackage, name, "", store.ChangeDelete)
	}
	return err
}
