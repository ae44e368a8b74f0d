package storetest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
)

// Feed is a store's change feed as the watch hub uses it.
type Feed interface {
	Epoch(ctx context.Context) (string, error)
	Follow(ctx context.Context, deliver func(head int64, cs []store.Change)) error
	Read(ctx context.Context, after, through int64) ([]store.Change, error)
	Bounds(ctx context.Context) (floor, newest int64, err error)
}

// RunFeed is the conformance suite of change feeds: newFeed returns a new,
// empty store and its feed (Run's rules for the store apply).
func RunFeed(t *testing.T, newFeed func(t *testing.T) (store.Store, Feed)) {
	tests := []struct {
		name string
		test func(t *testing.T, st store.Store, f Feed)
	}{
		{"PackageWrites", feedPackageWrites},
		{"RolledBackWritesNothing", feedRollback},
		{"DeploymentAndRollouts", feedDeployments},
		{"Operations", feedOperations},
		{"ReadAndBounds", feedRead},
		{"ConcurrentWriters", feedConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st, f := newFeed(t)
			t.Cleanup(st.Close)
			tc.test(t, st, f)
		})
	}
}

// follower collects what a Follow delivers.
type follower struct {
	mu    sync.Mutex
	start int64
	got   []store.Change
	heads []int64
	more  chan struct{}
}

func follow(t *testing.T, f Feed) *follower {
	t.Helper()
	fl := &follower{start: -1, more: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	started := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.Follow(ctx, func(head int64, cs []store.Change) {
			fl.mu.Lock()
			if fl.start < 0 {
				fl.start = head
				close(started)
			}
			fl.got = append(fl.got, cs...)
			fl.heads = append(fl.heads, head)
			fl.mu.Unlock()
			select {
			case fl.more <- struct{}{}:
			default:
			}
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("Follow delivered no start position")
	}
	return fl
}

// wait returns the changes delivered once there are at least n.
func (fl *follower) wait(t *testing.T, n int) []store.Change {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		fl.mu.Lock()
		got := slices.Clone(fl.got)
		fl.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-fl.more:
		case <-deadline:
			t.Fatalf("feed delivered %d changes, want %d: %s", len(got), n, describe(got))
		}
	}
}

func describe(cs []store.Change) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = fmt.Sprintf("%s/%s/%c", c.Kind, c.Key, c.Op)
		if c.Parent != "" {
			parts[i] += "<" + c.Parent
		}
	}
	return strings.Join(parts, " ")
}

func assertChanges(t *testing.T, got []store.Change, want string) {
	t.Helper()
	if d := describe(got); d != want {
		t.Errorf("changes:\n got %s\nwant %s", d, want)
	}
	for i := 1; i < len(got); i++ {
		if got[i].Seq <= got[i-1].Seq {
			t.Errorf("positions not increasing: %d after %d", got[i].Seq, got[i-1].Seq)
		}
	}
}

func feedPackageWrites(t *testing.T, st store.Store, f Feed) {
	ctx := t.Context()
	fl := follow(t, f)
	p := FullPackage("p1")
	if _, err := st.CreatePackage(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdatePackage(ctx, p, store.AnyRevision); err != nil {
		t.Fatal(err)
	}
	if err := st.DeletePackage(ctx, "p1", store.AnyRevision); err != nil {
		t.Fatal(err)
	}
	got := fl.wait(t, 3)
	assertChanges(t, got, "packages/p1/I packages/p1/U packages/p1/D")
	if got[0].Seq <= fl.start {
		t.Errorf("first change at %d, not after the start position %d", got[0].Seq, fl.start)
	}
	if got[0].Tx == got[1].Tx || got[1].Tx == got[2].Tx {
		t.Errorf("separate writes share a transaction id: %+v", got)
	}
	// A failed write changes nothing and records nothing.
	if _, err := st.UpdatePackage(ctx, p, store.AnyRevision); err == nil {
		t.Fatal("update of a deleted package succeeded")
	}
	if _, err := st.CreatePackage(ctx, FullPackage("p2")); err != nil {
		t.Fatal(err)
	}
	assertChanges(t, fl.wait(t, 4)[3:], "packages/p2/I")
}

func feedRollback(t *testing.T, st store.Store, f Feed) {
	ctx := t.Context()
	fl := follow(t, f)
	err := st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.CreatePackage(ctx, FullPackage("gone")); err != nil {
			return err
		}
		if _, err := tx.CreateDeployment(ctx, FullDeploymentRow("gone-d", "gone", "Counter")); err != nil {
			return err
		}
		return errRollback
	})
	if err != errRollback { //nolint:errorlint // the callback's own value
		t.Fatalf("WithTx: %v", err)
	}
	err = st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.CreatePackage(ctx, FullPackage("kept")); err != nil {
			return err
		}
		_, err := tx.UpdatePackage(ctx, FullPackage("kept"), store.AnyRevision)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	got := fl.wait(t, 2)
	assertChanges(t, got, "packages/kept/I packages/kept/U")
	if got[0].Tx != got[1].Tx {
		t.Errorf("one transaction's changes carry transaction ids %d and %d", got[0].Tx, got[1].Tx)
	}
}

var errRollback = fmt.Errorf("roll back")

func feedDeployments(t *testing.T, st store.Store, f Feed) {
	ctx := t.Context()
	fl := follow(t, f)
	d := FullDeploymentRow("d1", "p", "C")
	rs := []store.RolloutRow{
		{DeploymentKey: "d1", Cluster: "a", UnitID: "u-a", State: store.RolloutDeployed, Condition: "deploying"},
		{DeploymentKey: "d1", Cluster: "b", UnitID: "u-b", State: store.RolloutDeployed, Condition: "deploying"},
	}
	// In one transaction, as the deploy core creates them (outside one, a
	// store may make them two writes).
	err := st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.CreateDeployment(ctx, d, rs...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	created := fl.wait(t, 3)
	assertChanges(t, created, "deployments/d1/I deployments/d1/U deployments/d1/U")
	if created[0].Tx != created[2].Tx {
		t.Errorf("a create's deployment and rollouts carry transaction ids %d and %d", created[0].Tx, created[2].Tx)
	}
	// A condition that changes is a change of the deployment; one that
	// does not is none.
	if n, err := st.UpdateConditions(ctx, store.ConditionUpdate{DeploymentKey: "d1", Cluster: "a", UnitID: "u-a", Condition: "running"}); err != nil || n != 1 {
		t.Fatalf("UpdateConditions: %d, %v", n, err)
	}
	if _, err := st.UpdateConditions(ctx, store.ConditionUpdate{DeploymentKey: "d1", Cluster: "a", UnitID: "u-a", Condition: "running"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateDeployment(ctx, d, store.AnyRevision); err != nil {
		t.Fatal(err)
	}
	// Deleting takes the rollouts along: one delete, no rollout changes.
	if err := st.DeleteDeployment(ctx, "d1", store.AnyRevision); err != nil {
		t.Fatal(err)
	}
	if _, err := st.CreatePackage(ctx, FullPackage("marker")); err != nil {
		t.Fatal(err)
	}
	assertChanges(t, fl.wait(t, 7)[3:], "deployments/d1/U deployments/d1/U deployments/d1/D packages/marker/I")
}

func feedOperations(t *testing.T, st store.Store, f Feed) {
	ctx := t.Context()
	fl := follow(t, f)
	now := time.Now()
	op := store.OperationRow{ID: "op1", Kind: "deploy", DeploymentKey: "dep", State: running, Owner: "me", LeaseUntil: now.Add(time.Minute),
		Steps: []store.StepRow{{Cluster: "a", State: "pending"}}}
	if err := st.CreateOperation(ctx, op); err != nil {
		t.Fatal(err)
	}
	// Renewing a lease is no change a watcher sees.
	if err := st.RenewLease(ctx, "op1", "me", now.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := st.UpdateSteps(ctx, "op1", "me", store.StepRow{Cluster: "a", State: "succeeded"}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetOperationState(ctx, "op1", "me", "succeeded", "", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if n, err := st.PurgeOperations(ctx, time.Now().Add(time.Hour*24*365*100)); err != nil || n != 1 {
		t.Fatalf("PurgeOperations: %d, %v", n, err)
	}
	assertChanges(t, fl.wait(t, 4), "operations/op1/I<dep operations/op1/U<dep operations/op1/U<dep operations/op1/D<dep")
}

func feedRead(t *testing.T, st store.Store, f Feed) {
	ctx := t.Context()
	fl := follow(t, f)
	for _, name := range []string{"r1", "r2", "r3"} {
		if _, err := st.CreatePackage(ctx, FullPackage(name)); err != nil {
			t.Fatal(err)
		}
	}
	got := fl.wait(t, 3)
	floor, newest, err := f.Bounds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if floor > fl.start || newest != got[2].Seq {
		t.Errorf("bounds %d..%d, want ≤%d..%d", floor, newest, fl.start, got[2].Seq)
	}
	part, err := f.Read(ctx, got[0].Seq, got[2].Seq)
	if err != nil {
		t.Fatal(err)
	}
	assertChanges(t, part, "packages/r2/I packages/r3/I")
	none, err := f.Read(ctx, got[2].Seq, got[2].Seq)
	if err != nil || len(none) != 0 {
		t.Errorf("Read of an empty range: %v, %v", none, err)
	}
	epoch, err := f.Epoch(ctx)
	if err != nil || epoch == "" || strings.Contains(epoch, "-") {
		t.Errorf("epoch %q, %v: want a name without '-'", epoch, err)
	}
}

func feedConcurrent(t *testing.T, st store.Store, f Feed) {
	ctx := t.Context()
	fl := follow(t, f)
	const writers, each = 8, 15
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				name := fmt.Sprintf("c-%d-%d", w, i)
				var err error
				if i%3 == 0 {
					err = st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
						_, err := tx.CreatePackage(ctx, &pmv1.OPackage{Name: name})
						return err
					})
				} else {
					_, err = st.CreatePackage(ctx, &pmv1.OPackage{Name: name})
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	got := fl.wait(t, writers*each)
	seen := map[string]bool{}
	for i, c := range got {
		if seen[c.Key] {
			t.Errorf("%s delivered twice", c.Key)
		}
		seen[c.Key] = true
		if i > 0 && c.Seq <= got[i-1].Seq {
			t.Errorf("position %d after %d", c.Seq, got[i-1].Seq)
		}
	}
	if len(got) != writers*each {
		t.Errorf("%d changes, want %d", len(got), writers*each)
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	for i := 1; i < len(fl.heads); i++ {
		if fl.heads[i] < fl.heads[i-1] {
			t.Errorf("head went back from %d to %d", fl.heads[i-1], fl.heads[i])
		}
	}
}
