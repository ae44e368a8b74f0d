package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
)

// deploymentTests are the deployment, rollout and operation cases of the
// suite.
func (s suite) deploymentTests() []namedTest {
	return []namedTest{
		{"DeploymentRoundTrip", s.testDeploymentRoundTrip},
		{"DeploymentUpdate", s.testDeploymentUpdate},
		{"DeploymentConcurrentUpdates", s.testDeploymentConcurrentUpdates},
		{"DeploymentStaleAndMissing", s.testDeploymentStaleAndMissing},
		{"DeploymentDelete", s.testDeploymentDelete},
		{"DeploymentListFilters", s.testDeploymentListFilters},
		{"Rollouts", s.testRollouts},
		{"DeploymentCreateWithRollouts", s.testDeploymentCreateWithRollouts},
		{"RolloutQueries", s.testRolloutQueries},
		{"UpdateConditions", s.testUpdateConditions},
		{"Revisions", s.testRevisions},
		{"RevisionsInTx", s.testRevisionsInTx},
		{"OperationCreateGet", s.testOperationCreateGet},
		{"OperationLease", s.testOperationLease},
		{"RecordSteps", s.testRecordSteps},
		{"OperationOneActive", s.testOperationOneActive},
		{"OperationWaiting", s.testOperationWaiting},
		{"OperationListPaging", s.testOperationListPaging},
		{"ClaimOperations", s.testClaimOperations},
		{"ClaimConcurrent", s.testClaimConcurrent},
		{"PurgeOperations", s.testPurgeOperations},
		{"Idempotency", s.testIdempotency},
		{"TxNewAggregates", s.testTxNewAggregates},
	}
}

// namedTest is one case of the suite.
type namedTest struct {
	name string
	test func(t *testing.T)
}

// FullDeploymentRow returns a deployment row that sets every field, its
// spec FullDeployment's. Each call returns a new row.
func FullDeploymentRow(key, pkg, class string) store.DeploymentRow {
	return store.DeploymentRow{
		Key: key, PackageName: pkg, ClassKey: class,
		Targets:  []string{"eu-2", "eu-1"},
		Spec:     FullDeployment(key, pkg, class),
		Replicas: 3, TargetAvailability: 0.999, AchievedAvailability: 0.9975, Algorithm: "quorum", Strong: true,
		LastError:    `eu-3: "unreachable" ünïcode`,
		RequestKey:   "idem:k1:abc",
		SpecRevision: 4, PackageDigest: 9,
		// Client-sent values the store replaces.
		Revision:  7,
		CreatedAt: time.Unix(1, 0), UpdatedAt: time.Unix(2, 0),
	}
}

func (s suite) testDeploymentRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   store.DeploymentRow
	}{
		{"every field", FullDeploymentRow("full", "pkg", "Counter")},
		{"key only", store.DeploymentRow{Key: "bare"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, st := s.setup(t)
			sent := copyDep(tc.in)

			created, err := st.CreateDeployment(ctx, tc.in)
			if err != nil {
				t.Fatalf("CreateDeployment: %v", err)
			}
			if depString(tc.in) != depString(sent) {
				t.Errorf("CreateDeployment changed its argument: %s", depString(tc.in))
			}
			if created.Revision != 1 || !created.CreatedAt.Equal(created.UpdatedAt) ||
				created.CreatedAt.Before(ClockStart.Truncate(time.Second)) || created.CreatedAt.Nanosecond()%1000 != 0 {
				t.Errorf("created %s: want revision 1 and the store's times", depString(created))
			}
			want := copyDep(tc.in)
			if want.Spec == nil {
				want.Spec = new(pmv1.OClassDeployment)
			}
			if want.Targets == nil {
				want.Targets = []string{}
			}
			want.Revision, want.CreatedAt, want.UpdatedAt = 1, created.CreatedAt, created.UpdatedAt
			assertDep(t, created, want)
			got := mustGetDeployment(t, st, tc.in.Key)
			assertDep(t, got, want)

			// What comes back is the caller's.
			got.Spec.ClassKey, got.Targets = "mutated", append(got.Targets, "x")
			assertDep(t, mustGetDeployment(t, st, tc.in.Key), want)

			_, err = st.CreateDeployment(ctx, store.DeploymentRow{Key: tc.in.Key, ClassKey: "other"})
			wantErr(t, err, store.ErrAlreadyExists, tc.in.Key)
			assertDep(t, mustGetDeployment(t, st, tc.in.Key), want)
			_, err = st.GetDeployment(ctx, "missing")
			wantErr(t, err, store.ErrNotFound, "missing")
		})
	}
}

func (s suite) testDeploymentUpdate(t *testing.T) {
	ctx, st := s.setup(t)
	created := mustCreateDeployment(t, st, FullDeploymentRow("dep", "pkg", "Counter"))
	if err := st.PutRollouts(ctx, store.RolloutRow{DeploymentKey: "dep", Cluster: "eu-1", UnitID: "u1", State: "deployed", Condition: "running"}); err != nil {
		t.Fatal(err)
	}
	prev := created
	for i, expected := range []func(int64) int64{
		func(rev int64) int64 { return rev },
		func(int64) int64 { return store.AnyRevision },
	} {
		in := copyDep(prev)
		in.PackageName, in.ClassKey, in.Targets = "pkg2", fmt.Sprintf("Other%d", i), []string{"us-1"}
		in.Spec.Odgm, in.Replicas, in.Strong, in.LastError, in.SpecRevision, in.PackageDigest = nil, 5, false, "", in.SpecRevision+1, in.PackageDigest+2
		// Clients cannot move these.
		in.CreatedAt, in.RequestKey = time.Unix(3, 0), "forged"
		sent := copyDep(in)
		updated, err := st.UpdateDeployment(ctx, in, expected(prev.Revision))
		if err != nil {
			t.Fatalf("UpdateDeployment: %v", err)
		}
		if depString(in) != depString(sent) {
			t.Errorf("UpdateDeployment changed its argument")
		}
		want := copyDep(in)
		want.Revision, want.CreatedAt, want.RequestKey = prev.Revision+1, created.CreatedAt, created.RequestKey
		want.UpdatedAt = updated.UpdatedAt
		if !updated.UpdatedAt.After(prev.UpdatedAt) {
			t.Errorf("updated_at %v not after %v", updated.UpdatedAt, prev.UpdatedAt)
		}
		assertDep(t, updated, want)
		assertDep(t, mustGetDeployment(t, st, "dep"), want)
		prev = updated
	}
	// Rollout writes leave the revision alone.
	if err := st.PutRollouts(ctx, store.RolloutRow{DeploymentKey: "dep", Cluster: "eu-1", UnitID: "u1", State: "deployed", Condition: "down"}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateConditions(ctx, store.ConditionUpdate{DeploymentKey: "dep", Cluster: "eu-1", UnitID: "u1", Condition: "running"}); err != nil {
		t.Fatal(err)
	}
	if got := mustGetDeployment(t, st, "dep"); got.Revision != prev.Revision || !got.UpdatedAt.Equal(prev.UpdatedAt) {
		t.Errorf("rollout writes moved the deployment to revision %d (%v)", got.Revision, got.UpdatedAt)
	}
}

func (s suite) testDeploymentConcurrentUpdates(t *testing.T) {
	_, st := s.setup(t)
	mustCreateDeployment(t, st, store.DeploymentRow{Key: "dep", Targets: []string{}})
	const writers = 50
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			for {
				cur, err := st.GetDeployment(context.Background(), "dep")
				if err != nil {
					t.Error(err)
					return
				}
				cur.Targets = append(cur.Targets, fmt.Sprintf("c%02d", i))
				_, err = st.UpdateDeployment(context.Background(), cur, cur.Revision)
				if errors.Is(err, store.ErrStale) || conflicted(err) {
					continue
				}
				if err != nil {
					t.Error(err)
				}
				return
			}
		})
	}
	wg.Wait()
	got := mustGetDeployment(t, st, "dep")
	if len(got.Targets) != writers || got.Revision != writers+1 {
		t.Errorf("after %d read-modify-write updaters: %d targets at revision %d", writers, len(got.Targets), got.Revision)
	}
}

func (s suite) testDeploymentStaleAndMissing(t *testing.T) {
	ctx, st := s.setup(t)
	mustCreateDeployment(t, st, store.DeploymentRow{Key: "dep"})
	before := mustGetDeployment(t, st, "dep")
	_, err := st.UpdateDeployment(ctx, store.DeploymentRow{Key: "dep", ClassKey: "x"}, 2)
	wantErr(t, err, store.ErrStale, "dep")
	wantErr(t, st.DeleteDeployment(ctx, "dep", 5), store.ErrStale, "dep")
	_, err = st.UpdateDeployment(ctx, store.DeploymentRow{Key: "ghost"}, store.AnyRevision)
	wantErr(t, err, store.ErrNotFound, "ghost")
	_, err = st.UpdateDeployment(ctx, store.DeploymentRow{Key: "ghost"}, 1)
	wantErr(t, err, store.ErrNotFound, "ghost")
	wantErr(t, st.DeleteDeployment(ctx, "ghost", store.AnyRevision), store.ErrNotFound, "ghost")
	wantErr(t, st.PutRollouts(ctx, store.RolloutRow{DeploymentKey: "ghost", Cluster: "c"}), store.ErrNotFound, "ghost")
	assertDep(t, mustGetDeployment(t, st, "dep"), before)
}

func (s suite) testDeploymentDelete(t *testing.T) {
	ctx, st := s.setup(t)
	for _, k := range []string{"a", "b"} {
		mustCreateDeployment(t, st, store.DeploymentRow{Key: k})
		if err := st.PutRollouts(ctx, store.RolloutRow{DeploymentKey: k, Cluster: "eu-1", UnitID: "u-" + k, State: "deployed"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.DeleteDeployment(ctx, "a", 1); err != nil {
		t.Fatalf("DeleteDeployment: %v", err)
	}
	_, err := st.GetDeployment(ctx, "a")
	wantErr(t, err, store.ErrNotFound, "a")
	// Its rollouts went with it, from every index.
	assertRollouts(t, mustListRollouts(t, st, store.RolloutFilter{DeploymentKeys: []string{"a", "b"}}), "b/eu-1=u-b")
	assertRollouts(t, mustListRollouts(t, st, store.RolloutFilter{Cluster: "eu-1"}), "b/eu-1=u-b")
	assertRollouts(t, mustListRollouts(t, st, store.RolloutFilter{UnitIDs: []string{"u-a", "u-b"}}), "b/eu-1=u-b")
	// The key is free again.
	mustCreateDeployment(t, st, store.DeploymentRow{Key: "a"})
	assertRollouts(t, mustListRollouts(t, st, store.RolloutFilter{DeploymentKeys: []string{"a"}}))
}

func (s suite) testDeploymentListFilters(t *testing.T) {
	ctx, st := s.setup(t)
	for _, d := range []store.DeploymentRow{
		{Key: "d5", PackageName: "p1", ClassKey: "A", Targets: []string{"eu-1", "us-1"}},
		{Key: "d1", PackageName: "p1", ClassKey: "B", Targets: []string{"eu-1"}},
		{Key: "d3", PackageName: "p2", ClassKey: "A", Targets: []string{"us-1"}},
		{Key: "D2", PackageName: "p1", ClassKey: "A"},
		{Key: "d4", PackageName: "p2", ClassKey: "A", Targets: []string{"eu-1"}},
	} {
		d.Spec = &pmv1.OClassDeployment{Key: d.Key}
		mustCreateDeployment(t, st, d)
	}
	tests := []struct {
		name string
		f    store.DeploymentFilter
		want []string
	}{
		{"all, byte order", store.DeploymentFilter{}, []string{"D2", "d1", "d3", "d4", "d5"}},
		{"package", store.DeploymentFilter{PackageName: "p1"}, []string{"D2", "d1", "d5"}},
		{"package and class", store.DeploymentFilter{PackageName: "p1", ClassKey: "A"}, []string{"D2", "d5"}},
		{"target", store.DeploymentFilter{Target: "eu-1"}, []string{"d1", "d4", "d5"}},
		{"keys", store.DeploymentFilter{Keys: []string{"d5", "ghost", "d1", "d5"}}, []string{"d1", "d5"}},
		{"no keys", store.DeploymentFilter{Keys: []string{}}, nil},
		{"after", store.DeploymentFilter{After: "d1"}, []string{"d3", "d4", "d5"}},
		{"after and limit", store.DeploymentFilter{After: "d1", Limit: 2}, []string{"d3", "d4"}},
		{"offset and limit", store.DeploymentFilter{Offset: 1, Limit: 2}, []string{"d1", "d3"}},
		{"offset past the end", store.DeploymentFilter{Offset: 9}, nil},
		{"no match", store.DeploymentFilter{Target: "mars"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := mustListDeployments(t, st, tc.f)
			var keys []string
			for _, d := range got {
				keys = append(keys, d.Key)
				if d.Spec == nil || d.Spec.GetKey() != d.Key {
					t.Errorf("%s listed without its spec", d.Key)
				}
			}
			if !slices.Equal(keys, tc.want) {
				t.Errorf("keys %v, want %v", keys, tc.want)
			}
		})
	}
	for _, d := range mustListDeployments(t, st, store.DeploymentFilter{SkipSpec: true}) {
		if d.Spec != nil {
			t.Errorf("%s: SkipSpec read a spec", d.Key)
		}
	}
	_ = ctx
}

func (s suite) testRollouts(t *testing.T) {
	ctx, st := s.setup(t)
	mustCreateDeployment(t, st, store.DeploymentRow{Key: "dep"})
	mustCreateDeployment(t, st, store.DeploymentRow{Key: "other"})
	full := store.RolloutRow{
		DeploymentKey: "dep", Cluster: "eu-2", UnitID: "dep-eu-2-0a1b2c3d", State: "failed", Condition: "down",
		Availability: 0.95, AvailabilitySource: "ready_nodes", Error: `"quoted" ünïcode`, Attempts: 3,
	}
	if err := st.PutRollouts(ctx, full, store.RolloutRow{DeploymentKey: "dep", Cluster: "eu-1", UnitID: "u1", State: "planned", Condition: "pending"}); err != nil {
		t.Fatalf("PutRollouts: %v", err)
	}
	got := mustListRollouts(t, st, store.RolloutFilter{DeploymentKeys: []string{"dep"}})
	if len(got) != 2 || got[1] != full || got[0].Cluster != "eu-1" {
		t.Fatalf("rollouts %+v, want eu-1 then %+v", got, full)
	}
	// Replacing by (deployment, cluster); the last of a batch wins; a new
	// unit id moves the unit index along.
	moved := full
	moved.UnitID, moved.State, moved.Attempts = "u2b", "deployed", 1
	last := moved
	last.Condition = "running"
	if err := st.PutRollouts(ctx, moved, last, store.RolloutRow{DeploymentKey: "other", Cluster: "eu-2", UnitID: "o2", State: "deployed"}); err != nil {
		t.Fatal(err)
	}
	assertRollouts(t, mustListRollouts(t, st, store.RolloutFilter{DeploymentKeys: []string{"dep", "other"}}),
		"dep/eu-1=u1", "dep/eu-2=u2b", "other/eu-2=o2")
	if got := mustListRollouts(t, st, store.RolloutFilter{DeploymentKeys: []string{"dep"}}); got[1] != last {
		t.Errorf("eu-2 = %+v, want %+v", got[1], last)
	}
	assertRollouts(t, mustListRollouts(t, st, store.RolloutFilter{UnitIDs: []string{full.UnitID}}))
	assertRollouts(t, mustListRollouts(t, st, store.RolloutFilter{UnitIDs: []string{"u2b"}}), "dep/eu-2=u2b")
	// One missing deployment: nothing is written.
	err := st.PutRollouts(ctx, store.RolloutRow{DeploymentKey: "dep", Cluster: "eu-3", UnitID: "u3"}, store.RolloutRow{DeploymentKey: "ghost", Cluster: "eu-1"})
	wantErr(t, err, store.ErrNotFound, "ghost")
	assertRollouts(t, mustListRollouts(t, st, store.RolloutFilter{DeploymentKeys: []string{"dep"}}), "dep/eu-1=u1", "dep/eu-2=u2b")
	if err := st.PutRollouts(ctx); err != nil {
		t.Errorf("PutRollouts of nothing: %v", err)
	}
}

// testDeploymentCreateWithRollouts: a deployment and its first rollouts
// are written together, or not at all.
func (s suite) testDeploymentCreateWithRollouts(t *testing.T) {
	ctx, st := s.setup(t)
	a := store.RolloutRow{DeploymentKey: "dep", Cluster: "a", UnitID: "ua", State: "planned", Condition: "pending", Availability: 0.9}
	b := store.RolloutRow{DeploymentKey: "dep", Cluster: "b", UnitID: "ub", State: "planned", Condition: "pending"}
	if _, err := st.CreateDeployment(ctx, store.DeploymentRow{Key: "dep"}, a, b); err != nil {
		t.Fatalf("CreateDeployment with rollouts: %v", err)
	}
	if got := mustListRollouts(t, st, store.RolloutFilter{DeploymentKeys: []string{"dep"}}); len(got) != 2 || got[0] != a || got[1] != b {
		t.Errorf("rollouts %+v", got)
	}
	_, err := st.CreateDeployment(ctx, store.DeploymentRow{Key: "dep2"}, store.RolloutRow{DeploymentKey: "other", Cluster: "a", UnitID: "u"})
	wantErr(t, err, store.ErrNotFound, "other")
	if _, err := st.GetDeployment(ctx, "dep2"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a failed create left the deployment: %v", err)
	}
	_, err = st.CreateDeployment(ctx, store.DeploymentRow{Key: "dep"}, store.RolloutRow{DeploymentKey: "dep", Cluster: "c", UnitID: "uc"})
	wantErr(t, err, store.ErrAlreadyExists, "dep")
	assertRollouts(t, mustListRollouts(t, st, store.RolloutFilter{DeploymentKeys: []string{"dep"}}), "dep/a=ua", "dep/b=ub")
}

func (s suite) testRolloutQueries(t *testing.T) {
	ctx, st := s.setup(t)
	for i := range 5 {
		key := fmt.Sprintf("d%d", i)
		mustCreateDeployment(t, st, store.DeploymentRow{Key: key})
		for _, c := range []string{"a", "b"} {
			if i == 4 && c == "a" {
				continue
			}
			if err := st.PutRollouts(ctx, store.RolloutRow{DeploymentKey: key, Cluster: c, UnitID: fmt.Sprintf("u%d-%s", 4-i, c), State: "deployed"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name string
		f    store.RolloutFilter
		want []string
	}{
		{"cluster, unit id order", store.RolloutFilter{Cluster: "a"},
			[]string{"d3/a=u1-a", "d2/a=u2-a", "d1/a=u3-a", "d0/a=u4-a"}},
		{"cluster page", store.RolloutFilter{Cluster: "a", After: "u1-a", Limit: 2}, []string{"d2/a=u2-a", "d1/a=u3-a"}},
		{"cluster last page", store.RolloutFilter{Cluster: "a", After: "u3-a", Limit: 2}, []string{"d0/a=u4-a"}},
		{"unknown cluster", store.RolloutFilter{Cluster: "z"}, nil},
		{"units anywhere", store.RolloutFilter{UnitIDs: []string{"u0-b", "u2-a", "u2-b", "nope"}},
			[]string{"d2/a=u2-a", "d4/b=u0-b", "d2/b=u2-b"}},
		{"units on a cluster", store.RolloutFilter{Cluster: "b", UnitIDs: []string{"u2-a", "u2-b"}}, []string{"d2/b=u2-b"}},
		{"deployments", store.RolloutFilter{DeploymentKeys: []string{"d4", "d0", "ghost"}}, []string{"d0/a=u4-a", "d0/b=u4-b", "d4/b=u0-b"}},
		{"deployments, limit", store.RolloutFilter{DeploymentKeys: []string{"d4", "d0"}, Limit: 1}, []string{"d0/a=u4-a"}},
		{"no deployments", store.RolloutFilter{DeploymentKeys: []string{}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assertRollouts(t, mustListRollouts(t, st, tc.f), tc.want...)
		})
	}
}

func (s suite) testUpdateConditions(t *testing.T) {
	ctx, st := s.setup(t)
	mustCreateDeployment(t, st, store.DeploymentRow{Key: "dep"})
	if err := st.PutRollouts(ctx,
		store.RolloutRow{DeploymentKey: "dep", Cluster: "a", UnitID: "ua", State: "deployed", Condition: "deploying"},
		store.RolloutRow{DeploymentKey: "dep", Cluster: "b", UnitID: "ub", State: "deleted", Condition: "deleted"},
		store.RolloutRow{DeploymentKey: "dep", Cluster: "c", UnitID: "uc", State: "deployed", Condition: "running"},
	); err != nil {
		t.Fatal(err)
	}
	n, err := st.UpdateConditions(ctx,
		store.ConditionUpdate{DeploymentKey: "dep", Cluster: "a", UnitID: "ua", Condition: "running"},
		store.ConditionUpdate{DeploymentKey: "dep", Cluster: "b", UnitID: "ub", Condition: "running"},   // not deployed
		store.ConditionUpdate{DeploymentKey: "dep", Cluster: "c", UnitID: "old", Condition: "down"},     // another unit
		store.ConditionUpdate{DeploymentKey: "dep", Cluster: "c", UnitID: "uc", Condition: "running"},   // unchanged
		store.ConditionUpdate{DeploymentKey: "ghost", Cluster: "a", UnitID: "ua", Condition: "running"}, // no such deployment
	)
	if err != nil || n != 1 {
		t.Fatalf("UpdateConditions = %d, %v; want 1 change", n, err)
	}
	var conds []string
	for _, r := range mustListRollouts(t, st, store.RolloutFilter{DeploymentKeys: []string{"dep"}}) {
		conds = append(conds, r.Cluster+"="+r.Condition)
	}
	if want := "a=running b=deleted c=running"; strings.Join(conds, " ") != want {
		t.Errorf("conditions %v, want %s", conds, want)
	}
	if n, err := st.UpdateConditions(ctx); n != 0 || err != nil {
		t.Errorf("UpdateConditions of nothing = %d, %v", n, err)
	}
}

// testRecordSteps: a step's outcome and its rollout land together or not
// at all, under the lease.
func (s suite) testRecordSteps(t *testing.T) {
	ctx, st := s.setup(t)
	mustCreateDeployment(t, st, store.DeploymentRow{Key: "dep"}, store.RolloutRow{DeploymentKey: "dep", Cluster: "a", UnitID: "ua", State: "planned", Condition: "pending"})
	mustCreateOperation(t, st, store.OperationRow{ID: "op", Kind: "deploy", DeploymentKey: "dep", State: running, Owner: "me",
		Steps: []store.StepRow{{Cluster: "a", UnitID: "ua", State: "pending"}}})
	step := store.StepRow{Cluster: "a", UnitID: "ua", State: "succeeded", Attempts: 1}
	ro := store.RolloutRow{DeploymentKey: "dep", Cluster: "a", UnitID: "ua", State: "deployed", Condition: "deploying", Attempts: 1}
	before := mustGetOperation(t, st, "op")
	wantErr(t, st.RecordSteps(ctx, "op", "other", []store.StepRow{step}, []store.RolloutRow{ro}), store.ErrStale, "op")
	wantErr(t, st.RecordSteps(ctx, "ghost", "me", []store.StepRow{step}, []store.RolloutRow{ro}), store.ErrNotFound, "ghost")
	gone := store.RolloutRow{DeploymentKey: "gone", Cluster: "a", UnitID: "ug"}
	wantErr(t, st.RecordSteps(ctx, "op", "me", []store.StepRow{step}, []store.RolloutRow{ro, gone}), store.ErrNotFound, "gone")
	assertOp(t, mustGetOperation(t, st, "op"), before)
	if got := mustListRollouts(t, st, store.RolloutFilter{DeploymentKeys: []string{"dep"}}); got[0].State != "planned" {
		t.Errorf("a refused record changed the rollout: %+v", got[0])
	}
	if err := st.RecordSteps(ctx, "op", "me", []store.StepRow{step}, []store.RolloutRow{ro}); err != nil {
		t.Fatalf("RecordSteps: %v", err)
	}
	if op := mustGetOperation(t, st, "op"); len(op.Steps) != 1 || op.Steps[0] != step {
		t.Errorf("steps %+v", op.Steps)
	}
	if got := mustListRollouts(t, st, store.RolloutFilter{DeploymentKeys: []string{"dep"}}); len(got) != 1 || got[0] != ro {
		t.Errorf("rollouts %+v", got)
	}
	if err := st.RecordSteps(ctx, "op", "me", []store.StepRow{{Cluster: "b", State: "failed"}}, nil); err != nil {
		t.Errorf("RecordSteps without rollouts: %v", err)
	}
}

// Helpers.

func mustCreateDeployment(t *testing.T, st store.Store, d store.DeploymentRow, rs ...store.RolloutRow) store.DeploymentRow {
	t.Helper()
	out, err := st.CreateDeployment(context.Background(), d, rs...)
	if err != nil {
		t.Fatalf("CreateDeployment(%q): %v", d.Key, err)
	}
	return out
}

func mustGetDeployment(t *testing.T, st store.Store, key string) store.DeploymentRow {
	t.Helper()
	d, err := st.GetDeployment(context.Background(), key)
	if err != nil {
		t.Fatalf("GetDeployment(%q): %v", key, err)
	}
	return d
}

func mustListDeployments(t *testing.T, st store.Store, f store.DeploymentFilter) []store.DeploymentRow {
	t.Helper()
	ds, err := st.ListDeployments(context.Background(), f)
	if err != nil {
		t.Fatalf("ListDeployments(%+v): %v", f, err)
	}
	return ds
}

func mustListRollouts(t *testing.T, st store.Store, f store.RolloutFilter) []store.RolloutRow {
	t.Helper()
	rs, err := st.ListRollouts(context.Background(), f)
	if err != nil {
		t.Fatalf("ListRollouts(%+v): %v", f, err)
	}
	return rs
}

// assertRollouts compares rollouts, in order, with "key/cluster=unit".
func assertRollouts(t *testing.T, got []store.RolloutRow, want ...string) {
	t.Helper()
	var g []string
	for _, r := range got {
		g = append(g, r.DeploymentKey+"/"+r.Cluster+"="+r.UnitID)
	}
	if !slices.Equal(g, want) {
		t.Errorf("rollouts %v, want %v", g, want)
	}
}

func copyDep(d store.DeploymentRow) store.DeploymentRow {
	d.Targets = slices.Clone(d.Targets)
	if d.Spec != nil {
		d.Spec = proto.CloneOf(d.Spec)
	}
	return d
}

// depString shows every field of d but the spec (only whether there is
// one; assertDep compares specs), times as instants.
func depString(d store.DeploymentRow) string {
	return fmt.Sprintf("%s pkg=%s class=%s targets=%q replicas=%d target=%v achieved=%v alg=%s strong=%t err=%q req=%q specrev=%d pkgdigest=%d rev=%d created=%s updated=%s spec=%t",
		d.Key, d.PackageName, d.ClassKey, d.Targets, d.Replicas, d.TargetAvailability, d.AchievedAvailability,
		d.Algorithm, d.Strong, d.LastError, d.RequestKey, d.SpecRevision, d.PackageDigest, d.Revision,
		d.CreatedAt.UTC().Format(time.RFC3339Nano), d.UpdatedAt.UTC().Format(time.RFC3339Nano), d.Spec != nil)
}

func assertDep(t *testing.T, got, want store.DeploymentRow) {
	t.Helper()
	if got.Spec != nil && want.Spec != nil && !proto.Equal(got.Spec, want.Spec) {
		t.Errorf("spec differs:\n%s", diff(want.Spec, got.Spec))
	}
	if g, w := depString(got), depString(want); g != w {
		t.Errorf("deployment differs:\n got %s\nwant %s", g, w)
	}
}

// conflicted reports whether err is a transient conflict a caller retries
// (a serialization failure that outlasted the store's own retries).
func conflicted(err error) bool {
	return err != nil && strings.Contains(err.Error(), "conflict")
}
