package memory_test

import (
	"errors"
	"testing"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
	"github.com/oaas/pm/internal/store/memory"
	"github.com/oaas/pm/internal/store/storetest"
)

func TestFeedConformance(t *testing.T) {
	t.Parallel()
	storetest.RunFeed(t, func(*testing.T) (store.Store, storetest.Feed) {
		st := memory.New(storetest.NewClock())
		return st, st.ChangeFeed()
	})
}

// TestFeedRetention: the ring keeps the newest changes; a read from before
// them is refused, and the floor says where reads may start.
func TestFeedRetention(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	st := memory.New(nil)
	st.SetChangeRetention(3)
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		if _, err := st.CreatePackage(ctx, &pmv1.OPackage{Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	f := st.ChangeFeed()
	floor, newest, err := f.Bounds(ctx)
	if err != nil || floor != 2 || newest != 5 {
		t.Fatalf("bounds %d..%d, %v; want 2..5", floor, newest, err)
	}
	if _, err := f.Read(ctx, 1, 5); !errors.Is(err, store.ErrCursorExpired) {
		t.Errorf("read from before the floor: %v, want ErrCursorExpired", err)
	}
	cs, err := f.Read(ctx, 2, 5)
	if err != nil || len(cs) != 3 || cs[0].Key != "c" || cs[2].Key != "e" {
		t.Errorf("read from the floor: %+v, %v", cs, err)
	}
	// Shrinking keeps the newest.
	st.SetChangeRetention(1)
	if cs, err := f.Read(ctx, 4, 5); err != nil || len(cs) != 1 || cs[0].Key != "e" {
		t.Errorf("after shrinking: %+v, %v", cs, err)
	}
	if _, err := f.Read(ctx, 3, 5); !errors.Is(err, store.ErrCursorExpired) {
		t.Errorf("after shrinking, read from 3: %v", err)
	}
}
