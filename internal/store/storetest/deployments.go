package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
)

func (s suite) testDeploymentRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   *pmv1.OClassDeployment
	}{
		{"every field", FullDeployment("full", "pkg", "Counter")},
		{"key only", &pmv1.OClassDeployment{Key: "bare"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, st := s.setup(t)
			sent := proto.Clone(tc.in)

			created, err := st.CreateDeployment(ctx, tc.in)
			if err != nil {
				t.Fatalf("CreateDeployment: %v", err)
			}
			if !proto.Equal(tc.in, sent) {
				t.Errorf("CreateDeployment changed its argument:\n%s", diff(sent, tc.in))
			}
			if created.Revision != 1 {
				t.Errorf("created revision = %d, want 1", created.Revision)
			}
			assertDeploymentApartFromTimes(t, created.Deployment, tc.in)
			c, u := depTimes(t, created.Deployment)
			if !c.Equal(u) {
				t.Errorf("on create, created_at %v != updated_at %v", c, u)
			}
			if c.Before(ClockStart.Truncate(time.Second)) {
				t.Errorf("created_at %v is not from the store's clock", c)
			}

			got := mustGetDeployment(t, st, tc.in.GetKey())
			if got.Revision != 1 {
				t.Errorf("got revision %d, want 1", got.Revision)
			}
			assertDeployment(t, got.Deployment, created.Deployment)

			_, err = st.CreateDeployment(ctx, &pmv1.OClassDeployment{Key: tc.in.GetKey(), ClassKey: "other"})
			wantErr(t, err, store.ErrAlreadyExists, tc.in.GetKey())
			assertDeployment(t, mustGetDeployment(t, st, tc.in.GetKey()).Deployment, created.Deployment)

			_, err = st.GetDeployment(ctx, "missing")
			wantErr(t, err, store.ErrNotFound, "missing")
		})
	}
}

func (s suite) testDeploymentUpdate(t *testing.T) {
	ctx, st := s.setup(t)
	created := mustCreateDeployment(t, st, FullDeployment("dep", "pkg", "Counter"))
	createdAt, updatedAt := depTimes(t, created.Deployment)

	tests := []struct {
		name     string
		edit     func(d *pmv1.OClassDeployment)
		expected func(rev int64) int64
	}{
		{"expected revision, client-sent created_at ignored", func(d *pmv1.OClassDeployment) {
			d.PackageName, d.ClassKey = "pkg2", "Other"
			d.TargetEnvs = []string{"us-1"}
			d.Condition = pmv1.DeploymentCondition_DEPLOYING
			d.CreatedAt = timestamppb.New(time.Unix(1, 0))
		}, func(rev int64) int64 { return rev }},
		{"any revision, fields cleared", func(d *pmv1.OClassDeployment) {
			d.TargetEnvs, d.Status, d.Functions, d.CreatedAt = nil, nil, nil, nil
		}, func(int64) int64 { return store.AnyRevision }},
	}
	prev := created
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := proto.Clone(prev.Deployment).(*pmv1.OClassDeployment)
			tc.edit(in)
			sent := proto.Clone(in)

			updated, err := st.UpdateDeployment(ctx, in, tc.expected(prev.Revision))
			if err != nil {
				t.Fatalf("UpdateDeployment: %v", err)
			}
			if !proto.Equal(in, sent) {
				t.Errorf("UpdateDeployment changed its argument:\n%s", diff(sent, in))
			}
			if want := prev.Revision + 1; updated.Revision != want {
				t.Errorf("revision = %d, want %d", updated.Revision, want)
			}
			assertDeploymentApartFromTimes(t, updated.Deployment, in)
			c, u := depTimes(t, updated.Deployment)
			if !c.Equal(createdAt) {
				t.Errorf("created_at = %v, want it kept at %v", c, createdAt)
			}
			if !u.After(updatedAt) {
				t.Errorf("updated_at = %v, want after the previous %v", u, updatedAt)
			}
			got := mustGetDeployment(t, st, "dep")
			if got.Revision != updated.Revision {
				t.Errorf("stored revision = %d, want %d", got.Revision, updated.Revision)
			}
			assertDeployment(t, got.Deployment, updated.Deployment)
			prev, updatedAt = updated, u
		})
	}
}

func (s suite) testDeploymentStaleAndMissing(t *testing.T) {
	tests := []struct {
		name string
		op   func(ctx context.Context, st store.Store) error
		want error
		key  string
	}{
		{"update with an older revision", func(ctx context.Context, st store.Store) error {
			_, err := st.UpdateDeployment(ctx, &pmv1.OClassDeployment{Key: "dep"}, 1)
			return err
		}, store.ErrStale, "dep"},
		{"update with a future revision", func(ctx context.Context, st store.Store) error {
			_, err := st.UpdateDeployment(ctx, &pmv1.OClassDeployment{Key: "dep"}, 3)
			return err
		}, store.ErrStale, "dep"},
		{"delete with an older revision", func(ctx context.Context, st store.Store) error {
			return st.DeleteDeployment(ctx, "dep", 1)
		}, store.ErrStale, "dep"},
		{"update missing, any revision", func(ctx context.Context, st store.Store) error {
			_, err := st.UpdateDeployment(ctx, &pmv1.OClassDeployment{Key: "ghost"}, store.AnyRevision)
			return err
		}, store.ErrNotFound, "ghost"},
		{"update missing, expected revision", func(ctx context.Context, st store.Store) error {
			_, err := st.UpdateDeployment(ctx, &pmv1.OClassDeployment{Key: "ghost"}, 1)
			return err
		}, store.ErrNotFound, "ghost"},
		{"delete missing, any revision", func(ctx context.Context, st store.Store) error {
			return st.DeleteDeployment(ctx, "ghost", store.AnyRevision)
		}, store.ErrNotFound, "ghost"},
		{"delete missing, expected revision", func(ctx context.Context, st store.Store) error {
			return st.DeleteDeployment(ctx, "ghost", 2)
		}, store.ErrNotFound, "ghost"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, st := s.setup(t)
			mustCreateDeployment(t, st, FullDeployment("dep", "pkg", "Counter"))
			before, err := st.UpdateDeployment(ctx, FullDeployment("dep", "pkg", "Counter"), 1) // now at 2
			if err != nil {
				t.Fatal(err)
			}

			wantErr(t, tc.op(ctx, st), tc.want, tc.key)

			after := mustGetDeployment(t, st, "dep")
			if after.Revision != 2 {
				t.Errorf("revision = %d after a failed write, want 2", after.Revision)
			}
			assertDeployment(t, after.Deployment, before.Deployment)
			_, err = st.GetDeployment(ctx, "ghost")
			wantErr(t, err, store.ErrNotFound, "ghost")
		})
	}
}

func (s suite) testDeploymentDelete(t *testing.T) {
	for _, expected := range []int64{store.AnyRevision, 2} {
		t.Run(fmt.Sprintf("expected %d", expected), func(t *testing.T) {
			t.Parallel()
			ctx, st := s.setup(t)
			mustCreateDeployment(t, st, &pmv1.OClassDeployment{Key: "dep"})
			if _, err := st.UpdateDeployment(ctx, &pmv1.OClassDeployment{Key: "dep"}, 1); err != nil {
				t.Fatal(err)
			}
			mustCreateDeployment(t, st, &pmv1.OClassDeployment{Key: "keep"})

			if err := st.DeleteDeployment(ctx, "dep", expected); err != nil {
				t.Fatalf("DeleteDeployment: %v", err)
			}
			_, err := st.GetDeployment(ctx, "dep")
			wantErr(t, err, store.ErrNotFound, "dep")
			assertKeys(t, mustListDeployments(t, st, store.DeploymentFilter{}), "keep")
			if again := mustCreateDeployment(t, st, &pmv1.OClassDeployment{Key: "dep"}); again.Revision != 1 {
				t.Errorf("revision of re-created deployment = %d, want 1", again.Revision)
			}
		})
	}
}

// deploymentFixture is the data set of the deployment filter tests, in key
// order.
var deploymentFixture = []struct {
	key, pkg, class string
	envs            []string
}{
	{"Upper", "shop", "Cart", []string{"eu-1"}},
	{"a-cart", "shop", "Cart", []string{"eu-1", "us-1"}},
	{"a.cart", "shop", "Cart", nil},
	{"a_order", "shop", "Order", []string{"us-1"}},
	{"b", "blog", "Post", []string{"eu-1", "eu-2"}},
	{"c", "blog", "Cart", []string{"eu-2"}},
}

func (s suite) testDeploymentListFilters(t *testing.T) {
	ctx, st := s.setup(t)
	for _, i := range []int{3, 0, 5, 1, 4, 2} {
		f := deploymentFixture[i]
		mustCreateDeployment(t, st, &pmv1.OClassDeployment{Key: f.key, PackageName: f.pkg, ClassKey: f.class, TargetEnvs: f.envs})
	}
	// A write after create must be what filters see.
	if _, err := st.UpdateDeployment(ctx, &pmv1.OClassDeployment{Key: "c", PackageName: "blog", ClassKey: "Post", TargetEnvs: []string{"ap-1"}}, 1); err != nil {
		t.Fatal(err)
	}
	all := []string{"Upper", "a-cart", "a.cart", "a_order", "b", "c"}
	tests := []struct {
		name   string
		filter store.DeploymentFilter
		want   []string
	}{
		{"no filter", store.DeploymentFilter{}, all},
		{"package", store.DeploymentFilter{PackageName: "shop"}, []string{"Upper", "a-cart", "a.cart", "a_order"}},
		{"package is exact", store.DeploymentFilter{PackageName: "sho"}, nil},
		{"class", store.DeploymentFilter{ClassKey: "Cart"}, []string{"Upper", "a-cart", "a.cart"}},
		{"class after update", store.DeploymentFilter{ClassKey: "Post"}, []string{"b", "c"}},
		{"package and class", store.DeploymentFilter{PackageName: "shop", ClassKey: "Order"}, []string{"a_order"}},
		{"target env", store.DeploymentFilter{TargetEnv: "eu-1"}, []string{"Upper", "a-cart", "b"}},
		{"target env after update", store.DeploymentFilter{TargetEnv: "eu-2"}, []string{"b"}},
		{"target env is exact", store.DeploymentFilter{TargetEnv: "eu"}, nil},
		{"after", store.DeploymentFilter{After: "a.cart"}, []string{"a_order", "b", "c"}},
		{"limit", store.DeploymentFilter{Limit: 2}, []string{"Upper", "a-cart"}},
		{"offset", store.DeploymentFilter{Offset: 4}, []string{"b", "c"}},
		{"offset past the end", store.DeploymentFilter{Offset: 9}, nil},
		{"everything", store.DeploymentFilter{PackageName: "shop", TargetEnv: "us-1", After: "Upper", Offset: 1, Limit: 1}, []string{"a_order"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			assertKeys(t, mustListDeployments(t, st, tc.filter), tc.want...)
		})
	}
	t.Run("keyset paging", func(t *testing.T) {
		t.Parallel()
		var (
			got   []string
			after string
		)
		for range len(all) + 1 {
			page := mustListDeployments(t, st, store.DeploymentFilter{After: after, Limit: 4})
			if len(page) == 0 {
				break
			}
			for _, d := range page {
				got = append(got, d.Deployment.GetKey())
			}
			after = got[len(got)-1]
		}
		if !slices.Equal(got, all) {
			t.Errorf("pages gave %v, want %v", got, all)
		}
	})
	t.Run("listed equals got", func(t *testing.T) {
		t.Parallel()
		for _, d := range mustListDeployments(t, st, store.DeploymentFilter{}) {
			got := mustGetDeployment(t, st, d.Deployment.GetKey())
			if got.Revision != d.Revision {
				t.Errorf("%s: listed revision %d, got %d", d.Deployment.GetKey(), d.Revision, got.Revision)
			}
			assertDeployment(t, d.Deployment, got.Deployment)
		}
	})
}

func (s suite) testDeploymentCallerMutation(t *testing.T) {
	ctx, st := s.setup(t)
	in := FullDeployment("dep", "pkg", "Counter")
	created, err := st.CreateDeployment(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	stored := proto.Clone(mustGetDeployment(t, st, "dep").Deployment).(*pmv1.OClassDeployment)
	got := mustGetDeployment(t, st, "dep")
	listed := mustListDeployments(t, st, store.DeploymentFilter{})
	for _, d := range []*pmv1.OClassDeployment{in, created.Deployment, got.Deployment, listed[0].Deployment} {
		d.TargetEnvs[0] = "mutated"
		d.Functions[0].Config["MODE"] = "mutated"
		d.Status.Clusters[0].State = "mutated"
		d.CreatedAt = timestamppb.New(time.Unix(3, 0))
	}
	assertDeployment(t, mustGetDeployment(t, st, "dep").Deployment, stored)
}

func (s suite) testMappings(t *testing.T) {
	ctx, st := s.setup(t)
	mustCreateDeployment(t, st, &pmv1.OClassDeployment{Key: "a"})
	mustCreateDeployment(t, st, &pmv1.OClassDeployment{Key: "b"})
	mustCreateDeployment(t, st, &pmv1.OClassDeployment{Key: "c"})

	if got := mustMappings(t, st, "a"); len(got) != 0 {
		t.Errorf("mappings of a new deployment: %v", got)
	}
	if got := mustMappings(t, st, "ghost"); len(got) != 0 {
		t.Errorf("mappings of an unknown deployment: %v", got)
	}
	for _, m := range []store.Mapping{
		{DeploymentKey: "b", Cluster: "eu-2", UnitID: "u-b2"},
		{DeploymentKey: "a", Cluster: "eu-2", UnitID: "u-a2"},
		{DeploymentKey: "a", Cluster: "eu-1", UnitID: "u-a1"},
		{DeploymentKey: "c", Cluster: "eu-1", UnitID: "u-c1"},
		{DeploymentKey: "a", Cluster: "eu-1", UnitID: "u-a1-new"}, // replaces
	} {
		if err := st.PutMapping(ctx, m); err != nil {
			t.Fatalf("PutMapping(%+v): %v", m, err)
		}
	}
	assertMappings(t, mustMappings(t, st, "a"), "a/eu-1=u-a1-new", "a/eu-2=u-a2")
	assertMappings(t, mustAllMappings(t, st), "a/eu-1=u-a1-new", "a/eu-2=u-a2", "b/eu-2=u-b2", "c/eu-1=u-c1")

	// Unknown deployment.
	err := st.PutMapping(ctx, store.Mapping{DeploymentKey: "ghost", Cluster: "eu-1", UnitID: "u"})
	wantErr(t, err, store.ErrNotFound, "ghost")

	// Several in one call: all land, the last of a repeated pair wins; with
	// an unknown deployment among them, none lands.
	err = st.PutMapping(ctx,
		store.Mapping{DeploymentKey: "c", Cluster: "eu-3", UnitID: "u-c3"},
		store.Mapping{DeploymentKey: "ghost", Cluster: "eu-1", UnitID: "u"},
		store.Mapping{DeploymentKey: "c", Cluster: "eu-4", UnitID: "u-c4"})
	wantErr(t, err, store.ErrNotFound, "ghost")
	assertMappings(t, mustMappings(t, st, "c"), "c/eu-1=u-c1")
	if err := st.PutMapping(ctx,
		store.Mapping{DeploymentKey: "c", Cluster: "eu-3", UnitID: "u-c3-old"},
		store.Mapping{DeploymentKey: "b", Cluster: "eu-3", UnitID: "u-b3"},
		store.Mapping{DeploymentKey: "c", Cluster: "eu-3", UnitID: "u-c3"}); err != nil {
		t.Fatalf("PutMapping (several): %v", err)
	}
	assertMappings(t, mustMappings(t, st, "c"), "c/eu-1=u-c1", "c/eu-3=u-c3")
	if err := st.PutMapping(ctx); err != nil {
		t.Errorf("PutMapping with none: %v", err)
	}
	if err := st.DeleteMapping(ctx, "c", "eu-3"); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMapping(ctx, "b", "eu-3"); err != nil {
		t.Fatal(err)
	}

	// Delete one, then an absent one (cluster and deployment).
	if err := st.DeleteMapping(ctx, "a", "eu-2"); err != nil {
		t.Fatalf("DeleteMapping: %v", err)
	}
	for _, m := range [][2]string{{"a", "eu-2"}, {"a", "eu-9"}, {"ghost", "eu-1"}} {
		if err := st.DeleteMapping(ctx, m[0], m[1]); err != nil {
			t.Errorf("DeleteMapping(%s, %s) of an absent mapping: %v", m[0], m[1], err)
		}
	}
	assertMappings(t, mustMappings(t, st, "a"), "a/eu-1=u-a1-new")

	// Deleting a deployment deletes its mappings; a deployment re-created
	// under the key starts without any.
	if err := st.DeleteDeployment(ctx, "b", store.AnyRevision); err != nil {
		t.Fatal(err)
	}
	assertMappings(t, mustAllMappings(t, st), "a/eu-1=u-a1-new", "c/eu-1=u-c1")
	mustCreateDeployment(t, st, &pmv1.OClassDeployment{Key: "b"})
	assertMappings(t, mustMappings(t, st, "b"))

	// Updating a deployment keeps them.
	if _, err := st.UpdateDeployment(ctx, &pmv1.OClassDeployment{Key: "a", ClassKey: "x"}, store.AnyRevision); err != nil {
		t.Fatal(err)
	}
	assertMappings(t, mustMappings(t, st, "a"), "a/eu-1=u-a1-new")
}

// testDeploymentConcurrentUpdates has 50 writers race read-modify-write
// cycles on one deployment (as PM's status writers do), retrying on
// ErrStale: no update may be lost.
func (s suite) testDeploymentConcurrentUpdates(t *testing.T) {
	ctx, st := s.setup(t)
	mustCreateDeployment(t, st, &pmv1.OClassDeployment{Key: "hot"})
	const writers = 50
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			for {
				cur, err := st.GetDeployment(ctx, "hot")
				if err != nil {
					t.Errorf("writer %d: get: %v", i, err)
					return
				}
				cur.Deployment.TargetEnvs = append(cur.Deployment.TargetEnvs, "c"+strconv.Itoa(i))
				_, err = st.UpdateDeployment(ctx, cur.Deployment, cur.Revision)
				if errors.Is(err, store.ErrStale) {
					continue
				}
				if err != nil {
					t.Errorf("writer %d: update: %v", i, err)
				}
				return
			}
		})
	}
	wg.Wait()
	got, err := st.GetDeployment(ctx, "hot")
	if err != nil {
		t.Fatal(err)
	}
	if got.Revision != writers+1 || len(got.Deployment.GetTargetEnvs()) != writers {
		t.Errorf("after %d writers: revision %d, %d target envs; want %d and %d",
			writers, got.Revision, len(got.Deployment.GetTargetEnvs()), writers+1, writers)
	}
}

// Helpers.

func mustCreateDeployment(t *testing.T, st store.Store, d *pmv1.OClassDeployment) store.Deployment {
	t.Helper()
	got, err := st.CreateDeployment(context.Background(), d)
	if err != nil {
		t.Fatalf("CreateDeployment(%q): %v", d.GetKey(), err)
	}
	return got
}

func mustGetDeployment(t *testing.T, st store.Store, key string) store.Deployment {
	t.Helper()
	got, err := st.GetDeployment(context.Background(), key)
	if err != nil {
		t.Fatalf("GetDeployment(%q): %v", key, err)
	}
	return got
}

func mustListDeployments(t *testing.T, st store.Store, f store.DeploymentFilter) []store.Deployment {
	t.Helper()
	got, err := st.ListDeployments(context.Background(), f)
	if err != nil {
		t.Fatalf("ListDeployments(%+v): %v", f, err)
	}
	return got
}

func mustMappings(t *testing.T, st store.Store, key string) []store.Mapping {
	t.Helper()
	got, err := st.Mappings(context.Background(), key)
	if err != nil {
		t.Fatalf("Mappings(%q): %v", key, err)
	}
	return got
}

func mustAllMappings(t *testing.T, st store.Store) []store.Mapping {
	t.Helper()
	got, err := st.AllMappings(context.Background())
	if err != nil {
		t.Fatalf("AllMappings: %v", err)
	}
	return got
}

// assertMappings compares mappings written as "key/cluster=unit".
func assertMappings(t *testing.T, got []store.Mapping, want ...string) {
	t.Helper()
	var g []string
	for _, m := range got {
		g = append(g, m.DeploymentKey+"/"+m.Cluster+"="+m.UnitID)
	}
	if !slices.Equal(g, want) {
		t.Errorf("mappings %q, want %q", g, want)
	}
}

func assertKeys(t *testing.T, got []store.Deployment, want ...string) {
	t.Helper()
	var g []string
	for _, d := range got {
		g = append(g, d.Deployment.GetKey())
	}
	if !slices.Equal(g, want) {
		t.Errorf("listed %q, want %q", g, want)
	}
}

// depTimes returns the store-set times of d, as times does for packages.
func depTimes(t *testing.T, d *pmv1.OClassDeployment) (created, updated time.Time) {
	t.Helper()
	if d.GetCreatedAt() == nil || d.GetUpdatedAt() == nil {
		t.Fatalf("%s: created_at %v, updated_at %v; the store must set both", d.GetKey(), d.GetCreatedAt(), d.GetUpdatedAt())
	}
	created, updated = d.GetCreatedAt().AsTime(), d.GetUpdatedAt().AsTime()
	if created.Nanosecond()%1000 != 0 || updated.Nanosecond()%1000 != 0 {
		t.Errorf("%s: times %v, %v are finer than microseconds", d.GetKey(), created, updated)
	}
	return created, updated
}

func assertDeploymentApartFromTimes(t *testing.T, got, want *pmv1.OClassDeployment) {
	t.Helper()
	strip := func(d *pmv1.OClassDeployment) *pmv1.OClassDeployment {
		d = proto.Clone(d).(*pmv1.OClassDeployment)
		d.CreatedAt, d.UpdatedAt = nil, nil
		return d
	}
	assertDeployment(t, strip(got), strip(want))
}

func assertDeployment(t *testing.T, got, want *pmv1.OClassDeployment) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Errorf("deployment %q differs:\n%s", want.GetKey(), diff(want, got))
	}
}
