package watch_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
	"github.com/oaas/pm/internal/store/memory"
	"github.com/oaas/pm/internal/watch"
)

// env is a hub over a memory store's feed.
type env struct {
	st  *memory.Store
	hub *watch.Hub
}

func setup(t *testing.T, opts watch.Options) env {
	t.Helper()
	st := memory.New(nil)
	get := func(read func(ctx context.Context, key string) (any, string, error)) watch.Resolver {
		return func(ctx context.Context, keys []string) (map[string]watch.Object, error) {
			out := map[string]watch.Object{}
			for _, k := range keys {
				v, rev, err := read(ctx, k)
				if errors.Is(err, store.ErrNotFound) {
					continue
				}
				if err != nil {
					return nil, err
				}
				out[k] = watch.Object{Value: v, Revision: rev}
			}
			return out, nil
		}
	}
	hub := watch.New(st.ChangeFeed(), map[watch.Kind]watch.Resolver{
		watch.Packages: get(func(ctx context.Context, k string) (any, string, error) {
			p, err := st.GetPackage(ctx, k)
			return p.Package, fmt.Sprint(p.Revision), err
		}),
		watch.Deployments: get(func(ctx context.Context, k string) (any, string, error) {
			d, err := st.GetDeployment(ctx, k)
			return d, fmt.Sprint(d.Revision), err
		}),
		watch.Operations: get(func(ctx context.Context, k string) (any, string, error) {
			op, err := st.GetOperation(ctx, k)
			return op, "", err
		}),
	}, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); hub.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return env{st: st, hub: hub}
}

func (e env) subscribe(t *testing.T, req watch.Request) *watch.Sub {
	t.Helper()
	s, err := e.hub.Subscribe(t.Context(), req)
	if err != nil {
		t.Fatalf("Subscribe(%+v): %v", req, err)
	}
	t.Cleanup(s.Close)
	return s
}

func (e env) createPackage(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := e.st.CreatePackage(t.Context(), &pmv1.OPackage{Name: n}); err != nil {
			t.Fatal(err)
		}
	}
}

// next returns the next event that is not a heartbeat.
func next(t *testing.T, s *watch.Sub) watch.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	for {
		ev, err := s.Next(ctx, time.Second)
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if ev.Type != watch.Heartbeat {
			return ev
		}
	}
}

func describe(ev watch.Event) string {
	name := map[watch.Type]string{watch.Added: "added", watch.Changed: "changed", watch.Deleted: "deleted", watch.Heartbeat: "heartbeat"}[ev.Type]
	return name + " " + ev.Key
}

// expect reads len(want) events and compares them; it returns them.
func expect(t *testing.T, s *watch.Sub, want ...string) []watch.Event {
	t.Helper()
	var got []watch.Event
	var names []string
	for range want {
		ev := next(t, s)
		got = append(got, ev)
		names = append(names, describe(ev))
	}
	if strings.Join(names, ", ") != strings.Join(want, ", ") {
		t.Errorf("events %q, want %q", names, want)
	}
	return got
}

// quiet asserts that s has nothing but heartbeats for a moment.
func quiet(t *testing.T, s *watch.Sub) watch.Event {
	t.Helper()
	ev, err := s.Next(t.Context(), 50*time.Millisecond)
	if err != nil || ev.Type != watch.Heartbeat {
		t.Fatalf("want a heartbeat, got %s (%v)", describe(ev), err)
	}
	return ev
}

func TestChangesAfterAFreshStart(t *testing.T) {
	t.Parallel()
	e := setup(t, watch.Options{})
	e.createPackage(t, "before")
	s := e.subscribe(t, watch.Request{Kind: watch.Packages})
	if !s.Fresh() || s.StartCursor() == "" {
		t.Fatalf("fresh %v, start cursor %q", s.Fresh(), s.StartCursor())
	}
	// Each event reads the object as it is when the hub gets the change,
	// so each write waits for its event here.
	e.createPackage(t, "p")
	evs := expect(t, s, "added p")
	if _, err := e.st.UpdatePackage(t.Context(), &pmv1.OPackage{Name: "p", Version: new("2")}, store.AnyRevision); err != nil {
		t.Fatal(err)
	}
	evs = append(evs, expect(t, s, "changed p")...)
	if err := e.st.DeletePackage(t.Context(), "p", store.AnyRevision); err != nil {
		t.Fatal(err)
	}
	evs = append(evs, expect(t, s, "deleted p")...)
	if p, ok := evs[1].Object.(*pmv1.OPackage); !ok || p.GetVersion() != "2" || evs[1].Revision != "2" {
		t.Errorf("changed event carries %v at revision %q", evs[1].Object, evs[1].Revision)
	}
	if evs[2].Object != nil {
		t.Errorf("a delete carries an object: %v", evs[2].Object)
	}
	seen := map[string]bool{s.StartCursor(): true}
	for _, ev := range evs {
		if ev.Cursor == "" || seen[ev.Cursor] {
			t.Errorf("cursor %q empty or repeated", ev.Cursor)
		}
		seen[ev.Cursor] = true
	}
}

// TestOneTransactionOneEvent: a deployment created with its rollouts in
// one transaction is one event; a rolled-back transaction is none.
func TestOneTransactionOneEvent(t *testing.T) {
	t.Parallel()
	e := setup(t, watch.Options{})
	s := e.subscribe(t, watch.Request{Kind: watch.Deployments})
	ctx := t.Context()
	err := e.st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		_, err := tx.CreateDeployment(ctx, store.DeploymentRow{Key: "d", PackageName: "p", ClassKey: "C"},
			store.RolloutRow{DeploymentKey: "d", Cluster: "a", UnitID: "u1"}, store.RolloutRow{DeploymentKey: "d", Cluster: "b", UnitID: "u2"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	errNo := errors.New("no")
	err = e.st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.CreateDeployment(ctx, store.DeploymentRow{Key: "rolled-back", PackageName: "p", ClassKey: "C"}); err != nil {
			return err
		}
		return errNo
	})
	if !errors.Is(err, errNo) {
		t.Fatal(err)
	}
	if err := e.st.PutRollouts(ctx, store.RolloutRow{DeploymentKey: "d", Cluster: "a", UnitID: "u3"}); err != nil {
		t.Fatal(err)
	}
	expect(t, s, "added d", "changed d")
	quiet(t, s)
}

// TestResume: a watch resumed from a cursor gets exactly the events after
// it, from the hub's recent changes or from the feed, then live ones.
func TestResume(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		recent int
	}{{"from recent changes", 0}, {"from the feed", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := setup(t, watch.Options{Recent: tc.recent})
			first := e.subscribe(t, watch.Request{Kind: watch.Packages})
			e.createPackage(t, "a", "b", "c")
			evs := expect(t, first, "added a", "added b", "added c")
			resumed := e.subscribe(t, watch.Request{Kind: watch.Packages, Cursor: evs[0].Cursor})
			if resumed.Fresh() {
				t.Error("a resumed watch says it is fresh")
			}
			got := expect(t, resumed, "added b", "added c")
			if got[1].Cursor != evs[2].Cursor {
				t.Errorf("resumed cursor %q, want %q", got[1].Cursor, evs[2].Cursor)
			}
			e.createPackage(t, "d")
			expect(t, resumed, "added d")
			// From the newest cursor: nothing replayed.
			latest := e.subscribe(t, watch.Request{Kind: watch.Packages, Cursor: got[1].Cursor})
			e.createPackage(t, "e")
			expect(t, latest, "added d", "added e")
		})
	}
}

func TestResumeRefused(t *testing.T) {
	t.Parallel()
	e := setup(t, watch.Options{Recent: 1, MaxReplay: 5})
	e.st.SetChangeRetention(2)
	s := e.subscribe(t, watch.Request{Kind: watch.Packages})
	epoch, _, _ := strings.Cut(s.StartCursor(), "-")
	e.createPackage(t, "a", "b", "c", "d")
	for _, tc := range []struct {
		cursor string
		want   error
	}{
		{"garbage", watch.ErrBadCursor},
		{epoch + "-x", watch.ErrBadCursor},
		{"other-1", watch.ErrExpired},
		{epoch + "-1", watch.ErrExpired},  // pruned from the feed
		{epoch + "-99", watch.ErrExpired}, // never handed out
	} {
		if _, err := e.hub.Subscribe(t.Context(), watch.Request{Kind: watch.Packages, Cursor: tc.cursor}); !errors.Is(err, tc.want) {
			t.Errorf("cursor %q: %v, want %v", tc.cursor, err, tc.want)
		}
	}
	for i := range 6 {
		e.createPackage(t, fmt.Sprint("more-", i))
	}
	if _, err := e.hub.Subscribe(t.Context(), watch.Request{Kind: watch.Packages, Cursor: epoch + "-4"}); !errors.Is(err, watch.ErrExpired) {
		t.Errorf("a cursor further back than MaxReplay: %v", err)
	}
	// Cluster watches have no history: any cursor means a snapshot.
	c, err := e.hub.Subscribe(t.Context(), watch.Request{Kind: watch.Clusters, Cursor: "whatever"})
	if err != nil || !c.Fresh() {
		t.Errorf("cluster watch with a cursor: %v, fresh %v", err, c != nil && c.Fresh())
	}
}

// TestSlowSubscriberIsCutOff: a subscriber that stops reading is cut off
// once its buffer is full, with the cursor of what it last got; writers
// never wait for it, and resuming from that cursor loses nothing.
func TestSlowSubscriberIsCutOff(t *testing.T) {
	t.Parallel()
	e := setup(t, watch.Options{Buffer: 4})
	slow := e.subscribe(t, watch.Request{Kind: watch.Packages})
	fast := e.subscribe(t, watch.Request{Kind: watch.Packages})
	e.createPackage(t, "p0")
	got := expect(t, slow, "added p0")
	expect(t, fast, "added p0")
	const n = 40
	var want []string
	for i := range n {
		name := fmt.Sprint("p", i+1)
		want = append(want, "added "+name)
		e.createPackage(t, name)
		// The fast one keeps up (its buffer is as small).
		expect(t, fast, "added "+name)
	}
	_, err := slow.Next(t.Context(), time.Second)
	var slowErr *watch.SlowError
	if !errors.As(err, &slowErr) || slowErr.Cursor != got[0].Cursor {
		t.Fatalf("slow subscriber: %v, want a SlowError with cursor %q", err, got[0].Cursor)
	}
	resumed := e.subscribe(t, watch.Request{Kind: watch.Packages, Cursor: slowErr.Cursor})
	expect(t, resumed, want...)
}

func TestKeyFilter(t *testing.T) {
	t.Parallel()
	e := setup(t, watch.Options{})
	pkg := e.subscribe(t, watch.Request{Kind: watch.Packages, Key: "b"})
	ops := e.subscribe(t, watch.Request{Kind: watch.Operations, Key: "dep-1"})
	e.createPackage(t, "a", "b", "c")
	expect(t, pkg, "added b")
	for i, dep := range []string{"dep-2", "dep-1"} {
		op := store.OperationRow{ID: fmt.Sprint("op", i), Kind: "deploy", DeploymentKey: dep, State: "succeeded"}
		if err := e.st.CreateOperation(t.Context(), op); err != nil {
			t.Fatal(err)
		}
	}
	expect(t, ops, "added op1")
	// A heartbeat moves past what the filter left out: resuming from it
	// (without the filter) replays neither a nor c.
	hb := quiet(t, pkg)
	resumed := e.subscribe(t, watch.Request{Kind: watch.Packages, Cursor: hb.Cursor})
	e.createPackage(t, "d")
	expect(t, resumed, "added d")
}

// TestEachEventIsAuthorized: events the subscriber may not see are
// skipped, and its cursor still moves past them.
func TestEachEventIsAuthorized(t *testing.T) {
	t.Parallel()
	e := setup(t, watch.Options{})
	s := e.subscribe(t, watch.Request{Kind: watch.Packages, Allow: func(ev watch.Event) bool {
		return !strings.HasPrefix(ev.Key, "secret")
	}})
	e.createPackage(t, "secret-1", "open", "secret-2")
	evs := expect(t, s, "added open")
	hb := quiet(t, s)
	if hb.Cursor == evs[0].Cursor {
		t.Errorf("heartbeat cursor %q did not move past the skipped event", hb.Cursor)
	}
}

func TestPublishedKind(t *testing.T) {
	t.Parallel()
	e := setup(t, watch.Options{})
	all := e.subscribe(t, watch.Request{Kind: watch.Clusters})
	west := e.subscribe(t, watch.Request{Kind: watch.Clusters, Key: "west"})
	e.hub.Publish(watch.Clusters, "east", watch.Object{Value: "east is down"})
	e.hub.Publish(watch.Clusters, "west", watch.Object{Value: "west is up"})
	evs := expect(t, all, "changed east", "changed west")
	if evs[0].Object != "east is down" {
		t.Errorf("object %v", evs[0].Object)
	}
	expect(t, west, "changed west")
	quiet(t, west)
}

func TestCloseEndsNext(t *testing.T) {
	t.Parallel()
	e := setup(t, watch.Options{})
	s := e.subscribe(t, watch.Request{Kind: watch.Packages})
	before := e.hub.Subscribers()
	s.Close()
	if _, err := s.Next(t.Context(), time.Second); !errors.Is(err, watch.ErrUnavailable) {
		t.Errorf("Next after Close: %v", err)
	}
	if e.hub.Subscribers() != before-1 {
		t.Errorf("subscribers %d after Close, want %d", e.hub.Subscribers(), before-1)
	}
}
