package audit

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/oaas/pm/internal/store"
	"github.com/oaas/pm/internal/store/memory"
)

// setupPurge returns a memory store holding one record per hour of the
// day before now (the oldest 24h old), and now.
func setupPurge(t *testing.T) (*memory.Store, time.Time) {
	t.Helper()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	next := now.Add(-24 * time.Hour)
	st := memory.New(func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		at := next
		next = next.Add(time.Hour)
		return at
	})
	t.Cleanup(st.Close)
	for range 24 {
		if _, err := st.AppendAudit(t.Context(), store.AuditRecord{Action: "a", Outcome: store.AuditOK, Code: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	return st, now
}

func count(t *testing.T, st store.Audit) int {
	t.Helper()
	recs, err := st.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return len(recs)
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestPurgerRunOnce(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		retention time.Duration
		deleted   int
	}{
		{"keep forever", 0, 0},
		{"keep more than there is", 48 * time.Hour, 0},
		// Records at now-24h ... now-1h; older than now-10h30m are the 14
		// at now-24h ... now-11h.
		{"ten and a half hours", 10*time.Hour + 30*time.Minute, 14},
		{"everything", time.Minute, 24},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st, now := setupPurge(t)
			p := NewPurger(st, tc.retention, time.Hour, quiet)
			p.now = func() time.Time { return now }
			n, err := p.runOnce(t.Context())
			if err != nil || n != tc.deleted {
				t.Fatalf("runOnce = %d, %v; want %d", n, err, tc.deleted)
			}
			if left := count(t, st); left != 24-tc.deleted {
				t.Errorf("%d records left, want %d", left, 24-tc.deleted)
			}
			// A second pass finds nothing more.
			if n, err := p.runOnce(t.Context()); err != nil || n != 0 {
				t.Errorf("second runOnce = %d, %v; want 0", n, err)
			}
		})
	}
}

// TestPurgerStartStop checks that Start purges at once and Stop ends the
// loop; with a retention of 0 Start does nothing.
func TestPurgerStartStop(t *testing.T) {
	t.Parallel()
	st, now := setupPurge(t)
	p := NewPurger(st, 12*time.Hour, time.Hour, quiet)
	p.now = func() time.Time { return now }
	p.Start()
	p.Start() // a second Start is harmless
	deadline := time.Now().Add(10 * time.Second)
	for count(t, st) != 12 {
		if time.Now().After(deadline) {
			t.Fatalf("%d records after Start, want 12", count(t, st))
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.Stop()
	p.Stop() // and so is a second Stop

	st2, _ := setupPurge(t)
	off := NewPurger(st2, 0, time.Millisecond, quiet)
	off.Start()
	time.Sleep(20 * time.Millisecond)
	off.Stop()
	if n := count(t, st2); n != 24 {
		t.Errorf("retention 0 purged: %d records left, want 24", n)
	}
}
