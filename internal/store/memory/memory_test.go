package memory_test

import (
	"context"
	"errors"
	"testing"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
	"github.com/oaas/pm/internal/store/memory"
	"github.com/oaas/pm/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		return memory.New(storetest.NewClock())
	})
}

// TestStoreCallInsideTx checks the guard against the one way to deadlock
// the memory store: calling the Store, whose lock the transaction holds,
// from inside WithTx.
func TestStoreCallInsideTx(t *testing.T) {
	t.Parallel()
	s := memory.New(storetest.NewClock())
	err := s.WithTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		_, err := s.CreatePackage(ctx, &pmv1.OPackage{Name: "p"})
		return err
	})
	if err == nil {
		t.Fatal("Store call inside WithTx succeeded; want an error")
	}
	if errors.Is(err, store.ErrAlreadyExists) || errors.Is(err, store.ErrNotFound) {
		t.Fatalf("got %v, want the inside-transaction error", err)
	}
	if _, err := s.GetPackage(t.Context(), "p"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after the failed transaction: %v, want ErrNotFound", err)
	}
}

// TestTxUseAfterEnd checks that a tx kept past its WithTx fails instead of
// writing without the lock.
func TestTxUseAfterEnd(t *testing.T) {
	t.Parallel()
	s := memory.New(storetest.NewClock())
	var leaked store.Tx
	if err := s.WithTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
		leaked = tx
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := leaked.CreatePackage(t.Context(), &pmv1.OPackage{Name: "p"}); err == nil {
		t.Error("CreatePackage on a finished tx succeeded")
	}
}

// TestTxPanicRollsBack checks that a panicking callback leaves nothing
// behind and does not leave the store locked.
func TestTxPanicRollsBack(t *testing.T) {
	t.Parallel()
	s := memory.New(storetest.NewClock())
	func() {
		defer func() {
			if recover() == nil {
				t.Error("WithTx swallowed the callback's panic")
			}
		}()
		_ = s.WithTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
			if _, err := tx.CreatePackage(ctx, &pmv1.OPackage{Name: "p"}); err != nil {
				return err
			}
			panic("boom")
		})
	}()
	if _, err := s.GetPackage(t.Context(), "p"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after the panic: %v, want ErrNotFound", err)
	}
}
