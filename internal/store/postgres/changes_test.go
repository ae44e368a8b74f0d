package postgres_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
	"github.com/oaas/pm/internal/store/postgres"
	"github.com/oaas/pm/internal/store/storetest"
)

func TestFeedConformance(t *testing.T) {
	t.Parallel()
	storetest.RunFeed(t, func(t *testing.T) (store.Store, storetest.Feed) {
		st, _ := setup(t)
		return st, st.ChangeFeed(postgres.FeedOptions{})
	})
}

// collector gathers what a feed delivers.
type collector struct {
	mu    sync.Mutex
	start int64
	got   []store.Change
	more  chan struct{}
}

func collect(t *testing.T, f *postgres.Feed) *collector {
	t.Helper()
	c := &collector{start: -1, more: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	started, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Follow(ctx, func(head int64, cs []store.Change) {
			c.mu.Lock()
			if c.start < 0 {
				c.start = head
				close(started)
			}
			c.got = append(c.got, cs...)
			c.mu.Unlock()
			select {
			case c.more <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("no start position")
	}
	return c
}

func (c *collector) keys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, ch := range c.got {
		out = append(out, ch.Key)
	}
	return out
}

// waitFor waits until the delivered keys are want, within limit.
func (c *collector) waitFor(t *testing.T, limit time.Duration, want ...string) {
	t.Helper()
	deadline := time.After(limit)
	for !slices.Equal(c.keys(), want) {
		select {
		case <-c.more:
		case <-deadline:
			t.Fatalf("delivered %v within %s, want %v", c.keys(), limit, want)
		}
	}
}

// TestFeedWaitsForEarlierCommits: a change whose id comes before one that
// committed first is not skipped: the later one waits for it, and both
// arrive in id order; a rolled-back gap holds nothing up for long.
func TestFeedWaitsForEarlierCommits(t *testing.T) {
	t.Parallel()
	for _, commit := range []bool{true, false} {
		name := map[bool]string{true: "commit", false: "rollback"}[commit]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			st, dsn := setup(t)
			ctx := t.Context()
			c := collect(t, st.ChangeFeed(postgres.FeedOptions{}))
			// A writer that takes its id first and commits last.
			slow := connect(t, dsn)
			tx, err := slow.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO packages (name, revision, created_at, updated_at, doc) VALUES ('slow', 1, now(), now(), '{"name":"slow"}')`); err != nil {
				t.Fatal(err)
			}
			if _, err := st.CreatePackage(ctx, &pmv1.OPackage{Name: "fast"}); err != nil {
				t.Fatal(err)
			}
			// The fast one is committed but must wait behind the open id.
			time.Sleep(300 * time.Millisecond)
			if got := c.keys(); len(got) != 0 {
				t.Fatalf("delivered %v while an earlier id was still in flight", got)
			}
			if commit {
				err = tx.Commit(ctx)
			} else {
				err = tx.Rollback(ctx)
			}
			if err != nil {
				t.Fatal(err)
			}
			if commit {
				// The slow writer does not NOTIFY (a plain connection):
				// the fast one's wake-up, or the gap poll, finds it.
				c.waitFor(t, 5*time.Second, "slow", "fast")
			} else {
				c.waitFor(t, 5*time.Second, "fast")
			}
		})
	}
}

// TestFeedAcrossReplicas: two stores on one database are two replicas; a
// write through one reaches a feed followed through the other at once
// (NOTIFY after the commit), and still when the listening connection is
// killed (polling, then a new LISTEN).
func TestFeedAcrossReplicas(t *testing.T) {
	t.Parallel()
	a, dsn := setup(t)
	b, err := postgres.Open(t.Context(), postgres.Config{URL: dsn, MaxConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	ctx := t.Context()
	// Each replica follows the feed (as each PM's watch hub does): that is
	// what makes a replica NOTIFY the others after its own writes.
	collect(t, a.ChangeFeed(postgres.FeedOptions{}))
	c := collect(t, b.ChangeFeed(postgres.FeedOptions{Poll: 200 * time.Millisecond}))
	// LISTEN may not be up yet the instant Follow starts.
	waitListening(t, dsn, 2)

	begin := time.Now()
	if _, err := a.CreatePackage(ctx, &pmv1.OPackage{Name: "via-a"}); err != nil {
		t.Fatal(err)
	}
	// The safety poll while listening is 10 s: arriving well before it
	// means the NOTIFY woke the other replica.
	c.waitFor(t, 3*time.Second, "via-a")
	t.Logf("replica to replica: %s", time.Since(begin))

	admin := connect(t, dsn)
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN %'`); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreatePackage(ctx, &pmv1.OPackage{Name: "while-down"}); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, 5*time.Second, "via-a", "while-down")
	waitListening(t, dsn, 2)
	if _, err := a.CreatePackage(ctx, &pmv1.OPackage{Name: "after"}); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, 3*time.Second, "via-a", "while-down", "after")
}

// waitListening waits until n connections of the database LISTEN.
func waitListening(t *testing.T, dsn string, n int) {
	t.Helper()
	conn := connect(t, dsn)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var have int
		if err := conn.QueryRow(t.Context(), `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query LIKE 'LISTEN %'`).Scan(&have); err != nil {
			t.Fatal(err)
		}
		if have >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no LISTEN connection")
}

// TestFeedPrune: changes older than the retention go, and reads from
// before them are refused.
func TestFeedPrune(t *testing.T) {
	t.Parallel()
	st, _ := setup(t)
	ctx := t.Context()
	for _, name := range []string{"a", "b"} {
		if _, err := st.CreatePackage(ctx, &pmv1.OPackage{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	keep := st.ChangeFeed(postgres.FeedOptions{Retention: time.Hour})
	if n, err := keep.Prune(ctx); err != nil || n != 0 {
		t.Fatalf("prune within the retention: %d batches, %v", n, err)
	}
	if cs, err := keep.Read(ctx, 0, 2); err != nil || len(cs) != 2 {
		t.Fatalf("read: %+v, %v", cs, err)
	}
	time.Sleep(10 * time.Millisecond)
	f := st.ChangeFeed(postgres.FeedOptions{Retention: time.Millisecond})
	if n, err := f.Prune(ctx); err != nil || n != 1 {
		t.Fatalf("prune: %d batches, %v", n, err)
	}
	floor, newest, err := f.Bounds(ctx)
	if err != nil || floor != 2 || newest != 2 {
		t.Errorf("bounds after pruning %d..%d, %v; want 2..2", floor, newest, err)
	}
	if _, err := f.Read(ctx, 1, 2); !errors.Is(err, store.ErrCursorExpired) {
		t.Errorf("read from before the floor: %v", err)
	}
	if cs, err := f.Read(ctx, 2, 2); err != nil || len(cs) != 0 {
		t.Errorf("read from the floor: %+v, %v", cs, err)
	}
}
