package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/oaas/pm/internal/store"
)

// revisionRow is revision n of deployment key, every field set.
func revisionRow(key string, n int64) store.RevisionRow {
	spec := FullDeployment(key, "pkg", "Counter")
	spec.TargetEnvs = []string{fmt.Sprintf("eu-%d", n)}
	return store.RevisionRow{
		DeploymentKey: key, Revision: n, Spec: spec,
		Targets: []string{fmt.Sprintf("eu-%d", n), "us-1"}, Replicas: int(n), TargetAvailability: 0.999,
		AchievedAvailability: 0.9975, Algorithm: "quorum", Strong: n%2 == 0,
		Reason:    fmt.Sprintf("updated (%d) ünïcode", n),
		CreatedAt: time.Unix(1, 0), // the store sets its own
	}
}

func revString(r store.RevisionRow) string {
	return fmt.Sprintf("%s@%d targets=%q replicas=%d target=%v achieved=%v alg=%s strong=%t reason=%q",
		r.DeploymentKey, r.Revision, r.Targets, r.Replicas, r.TargetAvailability, r.AchievedAvailability,
		r.Algorithm, r.Strong, r.Reason)
}

func mustListRevisions(t *testing.T, st store.Store, key string) []store.RevisionRow {
	t.Helper()
	got, err := st.ListRevisions(context.Background(), key)
	if err != nil {
		t.Fatalf("ListRevisions(%q): %v", key, err)
	}
	return got
}

func revisionNumbers(rs []store.RevisionRow) []int64 {
	out := []int64{}
	for _, r := range rs {
		out = append(out, r.Revision)
	}
	return out
}

// testRevisions: revisions round-trip newest first with store-set times,
// the oldest beyond keep go, numbers are unique per deployment, and a
// deployment's revisions go with it.
func (s suite) testRevisions(t *testing.T) {
	ctx, st := s.setup(t)
	mustCreateDeployment(t, st, store.DeploymentRow{Key: "dep"})
	mustCreateDeployment(t, st, store.DeploymentRow{Key: "other"})
	if got := mustListRevisions(t, st, "dep"); len(got) != 0 {
		t.Fatalf("a new deployment has revisions %v", revisionNumbers(got))
	}
	if err := st.PutRevision(ctx, revisionRow("other", 1), 0); err != nil {
		t.Fatal(err)
	}
	for n := int64(1); n <= 5; n++ {
		in := revisionRow("dep", n)
		sent := revString(in)
		if err := st.PutRevision(ctx, in, 3); err != nil {
			t.Fatalf("PutRevision %d: %v", n, err)
		}
		if revString(in) != sent {
			t.Errorf("PutRevision changed its argument")
		}
	}
	got := mustListRevisions(t, st, "dep")
	if fmt.Sprint(revisionNumbers(got)) != "[5 4 3]" {
		t.Fatalf("revisions kept with keep 3: %v, want [5 4 3]", revisionNumbers(got))
	}
	for i, r := range got {
		want := revisionRow("dep", 5-int64(i))
		if revString(r) != revString(want) {
			t.Errorf("revision differs:\n got %s\nwant %s", revString(r), revString(want))
		}
		if !proto.Equal(r.Spec, want.Spec) {
			t.Errorf("revision %d spec differs:\n%s", r.Revision, diff(want.Spec, r.Spec))
		}
		if r.CreatedAt.Before(ClockStart.Truncate(time.Second)) || r.CreatedAt.Nanosecond()%1000 != 0 {
			t.Errorf("revision %d created at %v: want the store's time", r.Revision, r.CreatedAt)
		}
	}
	// What comes back is the caller's.
	got[0].Spec.ClassKey, got[0].Targets[0] = "mutated", "mutated"
	if again := mustListRevisions(t, st, "dep"); again[0].Spec.GetClassKey() != "Counter" || again[0].Targets[0] != "eu-5" {
		t.Errorf("a caller's change reached the store: %s", revString(again[0]))
	}

	wantErr(t, st.PutRevision(ctx, revisionRow("dep", 4), 3), store.ErrAlreadyExists, "dep")
	wantErr(t, st.PutRevision(ctx, revisionRow("ghost", 1), 3), store.ErrNotFound, "ghost")
	if got := mustListRevisions(t, st, "ghost"); len(got) != 0 {
		t.Errorf("revisions of an unknown deployment: %v", revisionNumbers(got))
	}
	// keep 0 keeps everything.
	if err := st.PutRevision(ctx, revisionRow("dep", 9), 0); err != nil {
		t.Fatal(err)
	}
	if got := revisionNumbers(mustListRevisions(t, st, "dep")); fmt.Sprint(got) != "[9 5 4 3]" {
		t.Errorf("after keep 0: %v", got)
	}

	if err := st.DeleteDeployment(ctx, "dep", store.AnyRevision); err != nil {
		t.Fatal(err)
	}
	mustCreateDeployment(t, st, store.DeploymentRow{Key: "dep"})
	if got := mustListRevisions(t, st, "dep"); len(got) != 0 {
		t.Errorf("a deleted deployment's revisions outlived it: %v", revisionNumbers(got))
	}
	if got := revisionNumbers(mustListRevisions(t, st, "other")); !slices.Equal(got, []int64{1}) {
		t.Errorf("another deployment's revisions: %v", got)
	}
}

// testRevisionsInTx: a revision written with its deployment's update lands
// with it, or not at all when the transaction fails.
func (s suite) testRevisionsInTx(t *testing.T) {
	ctx, st := s.setup(t)
	mustCreateDeployment(t, st, store.DeploymentRow{Key: "dep"})
	errAbort := errors.New("abort")
	err := st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		cur, err := tx.GetDeployment(ctx, "dep")
		if err != nil {
			return err
		}
		cur.SpecRevision = 1
		if _, err := tx.UpdateDeployment(ctx, cur, cur.Revision); err != nil {
			return err
		}
		if err := tx.PutRevision(ctx, revisionRow("dep", 1), 10); err != nil {
			return err
		}
		return errAbort
	})
	if !errors.Is(err, errAbort) {
		t.Fatalf("WithTx: %v", err)
	}
	if got := mustListRevisions(t, st, "dep"); len(got) != 0 || mustGetDeployment(t, st, "dep").SpecRevision != 0 {
		t.Fatalf("a failed transaction left revisions %v", revisionNumbers(got))
	}
	err = st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		cur, err := tx.GetDeployment(ctx, "dep")
		if err != nil {
			return err
		}
		cur.SpecRevision = 1
		if _, err := tx.UpdateDeployment(ctx, cur, cur.Revision); err != nil {
			return err
		}
		if err := tx.PutRevision(ctx, revisionRow("dep", 1), 10); err != nil {
			return err
		}
		got, err := tx.ListRevisions(ctx, "dep")
		if err != nil {
			return err
		}
		if len(got) != 1 {
			return fmt.Errorf("the transaction does not read its own revision: %v", revisionNumbers(got))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := revisionNumbers(mustListRevisions(t, st, "dep")); !slices.Equal(got, []int64{1}) || mustGetDeployment(t, st, "dep").SpecRevision != 1 {
		t.Errorf("after the transaction: revisions %v", got)
	}
}
