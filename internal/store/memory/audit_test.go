package memory_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/oaas/pm/internal/store"
	"github.com/oaas/pm/internal/store/memory"
	"github.com/oaas/pm/internal/store/storetest"
)

func appendN(t *testing.T, st store.Audit, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if _, err := st.AppendAudit(t.Context(), store.AuditRecord{Action: "a", Target: fmt.Sprint(i), Outcome: store.AuditOK}); err != nil {
			t.Fatal(err)
		}
	}
}

func targets(t *testing.T, st store.Audit) []string {
	t.Helper()
	recs, err := st.ListAudit(t.Context(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.Target
	}
	return out
}

// TestAuditRing checks that the memory trail keeps the newest records up
// to its capacity, and that a transaction rolled back at capacity puts the
// dropped record back.
func TestAuditRing(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		capacity int
		appended int
		want     []string
	}{
		{"under capacity", 5, 3, []string{"2", "1", "0"}},
		{"at capacity", 3, 3, []string{"2", "1", "0"}},
		{"oldest dropped", 3, 10, []string{"9", "8", "7"}},
		{"capacity one", 1, 4, []string{"3"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := memory.New(storetest.NewClock())
			st.SetAuditCapacity(tc.capacity)
			appendN(t, st, 0, tc.appended)
			if got := targets(t, st); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("trail %v, want %v", got, tc.want)
			}
		})
	}

	t.Run("shrink", func(t *testing.T) {
		t.Parallel()
		st := memory.New(storetest.NewClock())
		appendN(t, st, 0, 6)
		st.SetAuditCapacity(2)
		if got := fmt.Sprint(targets(t, st)); got != "[5 4]" {
			t.Errorf("after shrinking: %s", got)
		}
	})

	t.Run("default", func(t *testing.T) {
		t.Parallel()
		st := memory.New(storetest.NewClock())
		appendN(t, st, 0, memory.DefaultAuditCapacity+5)
		got := targets(t, st)
		if len(got) != memory.DefaultAuditCapacity || got[0] != fmt.Sprint(memory.DefaultAuditCapacity+4) || got[len(got)-1] != "5" {
			t.Errorf("default ring holds %d records, %s..%s", len(got), got[0], got[len(got)-1])
		}
	})

	t.Run("rollback at capacity", func(t *testing.T) {
		t.Parallel()
		st := memory.New(storetest.NewClock())
		st.SetAuditCapacity(3)
		appendN(t, st, 0, 3)
		boom := errors.New("boom")
		err := st.WithTx(t.Context(), func(ctx context.Context, tx store.Tx) error {
			for i := range 2 {
				if _, err := tx.AppendAudit(ctx, store.AuditRecord{Action: "a", Target: fmt.Sprint("tx", i)}); err != nil {
					return err
				}
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
		if got := fmt.Sprint(targets(t, st)); got != "[2 1 0]" {
			t.Errorf("after rollback: %s, want [2 1 0]", got)
		}
		appendN(t, st, 3, 1)
		if got := fmt.Sprint(targets(t, st)); got != "[3 2 1]" {
			t.Errorf("append after rollback: %s, want [3 2 1]", got)
		}
	})
}

// BenchmarkAuditAppend measures an append to a full ring.
func BenchmarkAuditAppend(b *testing.B) {
	st := memory.New(nil)
	rec := store.AuditRecord{Principal: "ci", Role: "editor", Action: "oaas.pm.v1.PackageService/CreatePackage", Target: "shop", Outcome: store.AuditOK}
	for b.Loop() {
		if _, err := st.AppendAudit(context.Background(), rec); err != nil {
			b.Fatal(err)
		}
	}
}
