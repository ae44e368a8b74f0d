// Package storetest is the conformance suite of store.Store. Every
// implementation runs it, so the memory and Postgres stores cannot drift
// apart in what callers can observe: errors, revisions, timestamps, copying,
// filtering, ordering, transactions and concurrency.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// Run runs the conformance suite. newStore must return a new, empty store
// whose clock returns a strictly later time on every call (use NewClock);
// Run closes each store when its subtest ends (Close must tolerate being
// called twice). Subtests run in parallel, each on its own store, except
// that table cases which only read share their parent's.
func Run(t *testing.T, newStore func(t *testing.T) store.Store) {
	s := suite{newStore: newStore}
	tests := []namedTest{
		{"CreateGetRoundTrip", s.testCreateGetRoundTrip},
		{"CreateDuplicate", s.testCreateDuplicate},
		{"GetMissing", s.testGetMissing},
		{"Update", s.testUpdate},
		{"StaleRevision", s.testStaleRevision},
		{"WriteMissing", s.testWriteMissing},
		{"Delete", s.testDelete},
		{"ListEmpty", s.testListEmpty},
		{"ListOrder", s.testListOrder},
		{"ListFilters", s.testListFilters},
		{"ListKeysetPaging", s.testListKeysetPaging},
		{"ListAfterWrites", s.testListAfterWrites},
		{"ListByTags", s.testListByTags},
		{"TagIndexFollowsWrites", s.testTagIndexFollowsWrites},
		{"TxCommit", s.testTxCommit},
		{"TxRollback", s.testTxRollback},
		{"CallerMutation", s.testCallerMutation},
		{"ConcurrentUpdates", s.testConcurrentUpdates},
		{"ConcurrentCreates", s.testConcurrentCreates},
		{"ConcurrentTransactions", s.testConcurrentTransactions},
		{"CanceledContext", s.testCanceledContext},
		{"Closed", s.testClosed},
	}
	tests = append(tests, s.deploymentTests()...)
	tests = append(tests, s.auditTests()...)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.test(t)
		})
	}
}

type suite struct {
	newStore func(t *testing.T) store.Store
}

// setup returns a fresh store, closed when t ends, and t's context.
func (s suite) setup(t *testing.T) (context.Context, store.Store) {
	t.Helper()
	st := s.newStore(t)
	t.Cleanup(st.Close)
	return t.Context(), st
}

func (s suite) testCreateGetRoundTrip(t *testing.T) {
	withMetadata := &pmv1.OPackage{Name: "sent-times", Metadata: &pmv1.PackageMetadata{
		// Clients may send these; the store sets its own.
		CreatedAt: timestamppb.New(time.Unix(1, 0)),
		UpdatedAt: timestamppb.New(time.Unix(2, 0)),
	}}
	tests := []struct {
		name string
		in   *pmv1.OPackage
	}{
		{"every field", FullPackage("full")},
		{"name only", &pmv1.OPackage{Name: "bare"}},
		{"client-sent times", withMetadata},
		{"disabled with tags", &pmv1.OPackage{Name: "d", Disabled: true, Metadata: &pmv1.PackageMetadata{Tags: []string{"a"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, st := s.setup(t)
			sent := proto.Clone(tc.in)

			created, err := st.CreatePackage(ctx, tc.in)
			if err != nil {
				t.Fatalf("CreatePackage: %v", err)
			}
			if !proto.Equal(tc.in, sent) {
				t.Errorf("CreatePackage changed its argument:\n%s", diff(sent, tc.in))
			}
			if created.Revision != 1 {
				t.Errorf("created revision = %d, want 1", created.Revision)
			}
			assertEqualApartFromTimes(t, created.Package, tc.in)
			c, u := times(t, created.Package)
			if !c.Equal(u) {
				t.Errorf("on create, created_at %v != updated_at %v", c, u)
			}
			if c.Before(ClockStart.Truncate(time.Second)) {
				t.Errorf("created_at %v is not from the store's clock", c)
			}

			got, err := st.GetPackage(ctx, tc.in.GetName())
			if err != nil {
				t.Fatalf("GetPackage: %v", err)
			}
			if got.Revision != 1 {
				t.Errorf("got revision %d, want 1", got.Revision)
			}
			assertEqual(t, got.Package, created.Package)
		})
	}
}

func (s suite) testCreateDuplicate(t *testing.T) {
	ctx, st := s.setup(t)
	first := mustCreate(t, st, &pmv1.OPackage{Name: "dup", Version: proto.String("1")})

	_, err := st.CreatePackage(ctx, &pmv1.OPackage{Name: "dup", Version: proto.String("2")})
	wantErr(t, err, store.ErrAlreadyExists, "dup")

	got := mustGet(t, st, "dup")
	if got.Revision != 1 {
		t.Errorf("revision after rejected create = %d, want 1", got.Revision)
	}
	assertEqual(t, got.Package, first.Package)
}

func (s suite) testGetMissing(t *testing.T) {
	ctx, st := s.setup(t)
	mustCreate(t, st, &pmv1.OPackage{Name: "other"})
	_, err := st.GetPackage(ctx, "missing")
	wantErr(t, err, store.ErrNotFound, "missing")
}

func (s suite) testUpdate(t *testing.T) {
	ctx, st := s.setup(t)
	created := mustCreate(t, st, FullPackage("pkg"))
	createdAt, updatedAt := times(t, created.Package)

	tests := []struct {
		name     string
		edit     func(p *pmv1.OPackage)
		expected func(rev int64) int64
	}{
		{"expected revision, client-sent created_at ignored", func(p *pmv1.OPackage) {
			p.Version = proto.String("2.0.0")
			p.Disabled = true
			p.Metadata.Tags = []string{"beta"}
			p.Metadata.CreatedAt = timestamppb.New(time.Unix(1, 0))
		}, func(rev int64) int64 { return rev }},
		{"any revision, metadata dropped", func(p *pmv1.OPackage) {
			p.Metadata = nil
			p.Classes = nil
		}, func(int64) int64 { return store.AnyRevision }},
		{"any revision, fields cleared", func(p *pmv1.OPackage) {
			p.Version = nil
			p.Functions = nil
		}, func(int64) int64 { return store.AnyRevision }},
	}
	// Steps build on each other, so they run in order on one store.
	prev := created
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := proto.Clone(prev.Package).(*pmv1.OPackage)
			tc.edit(in)
			sent := proto.Clone(in)

			updated, err := st.UpdatePackage(ctx, in, tc.expected(prev.Revision))
			if err != nil {
				t.Fatalf("UpdatePackage: %v", err)
			}
			if !proto.Equal(in, sent) {
				t.Errorf("UpdatePackage changed its argument:\n%s", diff(sent, in))
			}
			if want := prev.Revision + 1; updated.Revision != want {
				t.Errorf("revision = %d, want %d", updated.Revision, want)
			}
			assertEqualApartFromTimes(t, updated.Package, in)
			c, u := times(t, updated.Package)
			if !c.Equal(createdAt) {
				t.Errorf("created_at = %v, want it kept at %v", c, createdAt)
			}
			if !u.After(updatedAt) {
				t.Errorf("updated_at = %v, want after the previous %v", u, updatedAt)
			}
			got := mustGet(t, st, "pkg")
			if got.Revision != updated.Revision {
				t.Errorf("stored revision = %d, want %d", got.Revision, updated.Revision)
			}
			assertEqual(t, got.Package, updated.Package)
			prev, updatedAt = updated, u
		})
	}
}

func (s suite) testStaleRevision(t *testing.T) {
	tests := []struct {
		name string
		op   func(ctx context.Context, st store.Store) error
	}{
		{"update with an older revision", func(ctx context.Context, st store.Store) error {
			_, err := st.UpdatePackage(ctx, &pmv1.OPackage{Name: "pkg", Version: proto.String("x")}, 1)
			return err
		}},
		{"update with a future revision", func(ctx context.Context, st store.Store) error {
			_, err := st.UpdatePackage(ctx, &pmv1.OPackage{Name: "pkg"}, 7)
			return err
		}},
		{"delete with an older revision", func(ctx context.Context, st store.Store) error {
			return st.DeletePackage(ctx, "pkg", 1)
		}},
		{"delete with a future revision", func(ctx context.Context, st store.Store) error {
			return st.DeletePackage(ctx, "pkg", 3)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, st := s.setup(t)
			mustCreate(t, st, FullPackage("pkg"))
			before, err := st.UpdatePackage(ctx, FullPackage("pkg"), 1) // now at revision 2
			if err != nil {
				t.Fatal(err)
			}

			wantErr(t, tc.op(ctx, st), store.ErrStale, "pkg")

			after := mustGet(t, st, "pkg")
			if after.Revision != 2 {
				t.Errorf("revision = %d after a stale write, want 2", after.Revision)
			}
			assertEqual(t, after.Package, before.Package)
		})
	}
}

func (s suite) testWriteMissing(t *testing.T) {
	tests := []struct {
		name string
		op   func(ctx context.Context, st store.Store) error
	}{
		{"update any revision", func(ctx context.Context, st store.Store) error {
			_, err := st.UpdatePackage(ctx, &pmv1.OPackage{Name: "ghost"}, store.AnyRevision)
			return err
		}},
		{"update expected revision", func(ctx context.Context, st store.Store) error {
			_, err := st.UpdatePackage(ctx, &pmv1.OPackage{Name: "ghost"}, 1)
			return err
		}},
		{"delete any revision", func(ctx context.Context, st store.Store) error {
			return st.DeletePackage(ctx, "ghost", store.AnyRevision)
		}},
		{"delete expected revision", func(ctx context.Context, st store.Store) error {
			return st.DeletePackage(ctx, "ghost", 1)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, st := s.setup(t)
			mustCreate(t, st, &pmv1.OPackage{Name: "other"})
			wantErr(t, tc.op(ctx, st), store.ErrNotFound, "ghost")
			_, err := st.GetPackage(ctx, "ghost")
			wantErr(t, err, store.ErrNotFound, "ghost")
		})
	}
}

func (s suite) testDelete(t *testing.T) {
	tests := []struct {
		name     string
		expected int64
	}{
		{"any revision", store.AnyRevision},
		{"expected revision", 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, st := s.setup(t)
			first := mustCreate(t, st, &pmv1.OPackage{Name: "pkg"})
			if _, err := st.UpdatePackage(ctx, &pmv1.OPackage{Name: "pkg"}, 1); err != nil {
				t.Fatal(err)
			}
			mustCreate(t, st, &pmv1.OPackage{Name: "keep"})

			if err := st.DeletePackage(ctx, "pkg", tc.expected); err != nil {
				t.Fatalf("DeletePackage: %v", err)
			}
			_, err := st.GetPackage(ctx, "pkg")
			wantErr(t, err, store.ErrNotFound, "pkg")
			assertNames(t, mustList(t, st, store.PackageFilter{}), "keep")

			// The name is free again and its history is gone.
			again := mustCreate(t, st, &pmv1.OPackage{Name: "pkg"})
			if again.Revision != 1 {
				t.Errorf("revision of re-created package = %d, want 1", again.Revision)
			}
			c1, _ := times(t, first.Package)
			if c2, _ := times(t, again.Package); !c2.After(c1) {
				t.Errorf("re-created created_at %v, want after the first one's %v", c2, c1)
			}
		})
	}
}

func (s suite) testListEmpty(t *testing.T) {
	_, st := s.setup(t)
	if got := mustList(t, st, store.PackageFilter{}); len(got) != 0 {
		t.Errorf("empty store lists %d packages", len(got))
	}
}

func (s suite) testListOrder(t *testing.T) {
	ctx, st := s.setup(t)
	// Byte order, whatever the database's collation: upper case before
	// lower, '-' (0x2d) before '.' (0x2e) before digits before '_'.
	want := []string{"0", "A", "B", "a", "a-", "a.", "a0", "a_", "aa", "b"}
	for _, i := range []int{7, 2, 9, 0, 4, 8, 1, 6, 3, 5} {
		mustCreate(t, st, &pmv1.OPackage{Name: want[i]})
	}
	if _, err := st.UpdatePackage(ctx, &pmv1.OPackage{Name: "a."}, store.AnyRevision); err != nil {
		t.Fatal(err)
	}

	got := mustList(t, st, store.PackageFilter{})
	assertNames(t, got, want...)
	for _, p := range got {
		wantRev := int64(1)
		if p.Package.GetName() == "a." {
			wantRev = 2
		}
		if p.Revision != wantRev {
			t.Errorf("%s: listed revision %d, want %d", p.Package.GetName(), p.Revision, wantRev)
		}
		assertEqual(t, p.Package, mustGet(t, st, p.Package.GetName()).Package)
	}
}

// listFixture is the data set of the filter tests, in the order a list
// returns it.
var listFixture = []struct {
	name     string
	disabled bool
	tags     []string
}{
	{"Zeta", false, nil},
	{"alpha", false, []string{"web", "prod"}},
	{"alpha-beta", true, []string{"web"}},
	{`back\slash`, false, nil},
	{"beta", false, []string{"batch"}},
	{"betaX1", false, []string{"prod"}},
	{"beta_1", true, []string{"batch", "web"}},
	{"gamma%", false, []string{"ml"}},
	{"gammaray", true, nil},
}

func (s suite) testListFilters(t *testing.T) {
	ctx, st := s.setup(t)
	// Shuffled, so that insertion order cannot pass for name order.
	for _, i := range []int{4, 8, 0, 6, 2, 7, 1, 5, 3} {
		f := listFixture[i]
		mustCreate(t, st, &pmv1.OPackage{Name: f.name, Disabled: f.disabled, Metadata: &pmv1.PackageMetadata{Tags: f.tags}})
	}
	var all []string
	for _, f := range listFixture {
		all = append(all, f.name)
	}
	yes, no := true, false

	tests := []struct {
		name   string
		filter store.PackageFilter
		want   []string
	}{
		{"no filter", store.PackageFilter{}, all},
		{"substring", store.PackageFilter{NamePattern: "beta"}, []string{"alpha-beta", "beta", "betaX1", "beta_1"}},
		{"case sensitive", store.PackageFilter{NamePattern: "zeta"}, nil},
		{"upper case", store.PackageFilter{NamePattern: "Zet"}, []string{"Zeta"}},
		{"whole name", store.PackageFilter{NamePattern: "alpha-beta"}, []string{"alpha-beta"}},
		{"wildcard inside", store.PackageFilter{NamePattern: "a*a"}, []string{"alpha", "alpha-beta", `back\slash`, "gamma%", "gammaray"}},
		{"wildcards around", store.PackageFilter{NamePattern: "*lpha*"}, []string{"alpha", "alpha-beta"}},
		{"lone wildcard", store.PackageFilter{NamePattern: "*"}, all},
		{"repeated wildcards", store.PackageFilter{NamePattern: "g**r*y"}, []string{"gammaray"}},
		{"underscore is literal", store.PackageFilter{NamePattern: "a_1"}, []string{"beta_1"}},
		{"percent is literal", store.PackageFilter{NamePattern: "a%"}, []string{"gamma%"}},
		{"lone percent", store.PackageFilter{NamePattern: "%"}, []string{"gamma%"}},
		{"backslash is literal", store.PackageFilter{NamePattern: `k\s`}, []string{`back\slash`}},
		{"backslash before wildcard", store.PackageFilter{NamePattern: `\*h`}, []string{`back\slash`}},
		{"no match", store.PackageFilter{NamePattern: "delta"}, nil},
		{"disabled", store.PackageFilter{Disabled: &yes}, []string{"alpha-beta", "beta_1", "gammaray"}},
		{"enabled", store.PackageFilter{Disabled: &no}, []string{"Zeta", "alpha", `back\slash`, "beta", "betaX1", "gamma%"}},
		{"one tag", store.PackageFilter{Tags: []string{"prod"}}, []string{"alpha", "betaX1"}},
		{"any of tags", store.PackageFilter{Tags: []string{"batch", "ml"}}, []string{"beta", "beta_1", "gamma%"}},
		{"unknown tag", store.PackageFilter{Tags: []string{"nope"}}, nil},
		{"after a name", store.PackageFilter{After: "beta"}, []string{"betaX1", "beta_1", "gamma%", "gammaray"}},
		{"after a non-name", store.PackageFilter{After: "b"}, []string{`back\slash`, "beta", "betaX1", "beta_1", "gamma%", "gammaray"}},
		{"after the last", store.PackageFilter{After: "gammaray"}, nil},
		{"limit", store.PackageFilter{Limit: 2}, []string{"Zeta", "alpha"}},
		{"limit above count", store.PackageFilter{Limit: 100}, all},
		{"offset", store.PackageFilter{Offset: 7}, []string{"gamma%", "gammaray"}},
		{"offset past the end", store.PackageFilter{Offset: 20}, nil},
		{"offset and limit", store.PackageFilter{Offset: 2, Limit: 3}, []string{"alpha-beta", `back\slash`, "beta"}},
		{"pattern and enabled", store.PackageFilter{NamePattern: "beta", Disabled: &no}, []string{"beta", "betaX1"}},
		{"tags and disabled", store.PackageFilter{Tags: []string{"web"}, Disabled: &yes}, []string{"alpha-beta", "beta_1"}},
		{"pattern and tags", store.PackageFilter{NamePattern: "a*a", Tags: []string{"web", "ml"}}, []string{"alpha", "alpha-beta", "gamma%"}},
		{"after and limit", store.PackageFilter{After: "alpha", Limit: 2}, []string{"alpha-beta", `back\slash`}},
		{"everything", store.PackageFilter{
			NamePattern: "a", Disabled: &no, Tags: []string{"prod", "batch", "ml"},
			After: "alpha", Offset: 1, Limit: 1,
		}, []string{"betaX1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // the store is only read from here on
			got, err := st.ListPackages(ctx, tc.filter)
			if err != nil {
				t.Fatalf("ListPackages(%+v): %v", tc.filter, err)
			}
			assertNames(t, got, tc.want...)
		})
	}
}

func (s suite) testListKeysetPaging(t *testing.T) {
	ctx, st := s.setup(t)
	var want []string
	for i := range 7 {
		name := fmt.Sprintf("p%02d", i)
		want = append(want, name)
		mustCreate(t, st, &pmv1.OPackage{Name: name})
	}
	var (
		got   []string
		after string
	)
	for pages := 0; ; pages++ {
		if pages > len(want) {
			t.Fatalf("paging does not end; so far %v", got)
		}
		page, err := st.ListPackages(ctx, store.PackageFilter{After: after, Limit: 3})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, p := range page {
			got = append(got, p.Package.GetName())
		}
		after = got[len(got)-1]
	}
	if !slices.Equal(got, want) {
		t.Errorf("pages gave %v, want %v", got, want)
	}
}

// testListAfterWrites checks that filters see what updates changed, not
// what the package looked like when it was created.
func (s suite) testListAfterWrites(t *testing.T) {
	ctx, st := s.setup(t)
	mustCreate(t, st, &pmv1.OPackage{Name: "pkg", Metadata: &pmv1.PackageMetadata{Tags: []string{"old"}}})
	mustCreate(t, st, &pmv1.OPackage{Name: "other", Metadata: &pmv1.PackageMetadata{Tags: []string{"old"}}})
	if _, err := st.UpdatePackage(ctx, &pmv1.OPackage{Name: "pkg", Disabled: true, Metadata: &pmv1.PackageMetadata{Tags: []string{"new"}}}, 1); err != nil {
		t.Fatal(err)
	}
	if err := st.DeletePackage(ctx, "other", store.AnyRevision); err != nil {
		t.Fatal(err)
	}
	yes, no := true, false
	tests := []struct {
		name   string
		filter store.PackageFilter
		want   []string
	}{
		{"old tag", store.PackageFilter{Tags: []string{"old"}}, nil},
		{"new tag", store.PackageFilter{Tags: []string{"new"}}, []string{"pkg"}},
		{"disabled", store.PackageFilter{Disabled: &yes}, []string{"pkg"}},
		{"enabled", store.PackageFilter{Disabled: &no}, nil},
		{"deleted name", store.PackageFilter{NamePattern: "other"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			assertNames(t, mustList(t, st, tc.filter), tc.want...)
		})
	}
}

func (s suite) testTxCommit(t *testing.T) {
	ctx, st := s.setup(t)
	mustCreate(t, st, &pmv1.OPackage{Name: "keep"})
	mustCreate(t, st, &pmv1.OPackage{Name: "gone"})

	err := st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.CreatePackage(ctx, &pmv1.OPackage{Name: "new"}); err != nil {
			return err
		}
		if _, err := tx.UpdatePackage(ctx, &pmv1.OPackage{Name: "keep", Version: proto.String("2")}, 1); err != nil {
			return err
		}
		if err := tx.DeletePackage(ctx, "gone", 1); err != nil {
			return err
		}
		// The transaction reads its own writes.
		p, err := tx.GetPackage(ctx, "keep")
		if err != nil {
			return err
		}
		if p.Revision != 2 || p.Package.GetVersion() != "2" {
			t.Errorf("tx reads keep at revision %d version %q, want 2 and \"2\"", p.Revision, p.Package.GetVersion())
		}
		if _, err := tx.GetPackage(ctx, "gone"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("tx reads its deleted package: %v, want ErrNotFound", err)
		}
		list, err := tx.ListPackages(ctx, store.PackageFilter{})
		if err != nil {
			return err
		}
		assertNames(t, list, "keep", "new")
		return nil
	})
	if err != nil {
		t.Fatalf("WithTx: %v", err)
	}

	assertNames(t, mustList(t, st, store.PackageFilter{}), "keep", "new")
	if p := mustGet(t, st, "keep"); p.Revision != 2 || p.Package.GetVersion() != "2" {
		t.Errorf("keep after commit: revision %d version %q, want 2 and \"2\"", p.Revision, p.Package.GetVersion())
	}
	if p := mustGet(t, st, "new"); p.Revision != 1 {
		t.Errorf("new after commit: revision %d, want 1", p.Revision)
	}
}

func (s suite) testTxRollback(t *testing.T) {
	errBoom := errors.New("boom")
	tests := []struct {
		name string
		// last runs after the transaction's writes; its error fails the
		// transaction.
		last func(ctx context.Context, tx store.Tx) error
		want error
	}{
		{"callback error", func(context.Context, store.Tx) error { return errBoom }, errBoom},
		{"store error", func(ctx context.Context, tx store.Tx) error {
			_, err := tx.CreatePackage(ctx, &pmv1.OPackage{Name: "keep"})
			return err
		}, store.ErrAlreadyExists},
		{"stale write", func(ctx context.Context, tx store.Tx) error {
			return tx.DeletePackage(ctx, "keep", 1) // the tx moved it to 2
		}, store.ErrStale},
		{"wrapped error", func(ctx context.Context, tx store.Tx) error {
			_, err := tx.GetPackage(ctx, "nothing")
			return fmt.Errorf("looking up: %w", err)
		}, store.ErrNotFound},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, st := s.setup(t)
			mustCreate(t, st, FullPackage("keep"))
			mustCreate(t, st, &pmv1.OPackage{Name: "gone"})
			before := mustList(t, st, store.PackageFilter{})

			err := st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
				if _, err := tx.CreatePackage(ctx, &pmv1.OPackage{Name: "new"}); err != nil {
					return err
				}
				if _, err := tx.UpdatePackage(ctx, &pmv1.OPackage{Name: "keep"}, 1); err != nil {
					return err
				}
				if err := tx.DeletePackage(ctx, "gone", store.AnyRevision); err != nil {
					return err
				}
				return tc.last(ctx, tx)
			})
			if !errors.Is(err, tc.want) {
				t.Fatalf("WithTx = %v, want %v", err, tc.want)
			}

			after := mustList(t, st, store.PackageFilter{})
			if len(after) != len(before) {
				t.Fatalf("after rollback the store lists %v, want %v", names(after), names(before))
			}
			for i := range before {
				if after[i].Revision != before[i].Revision {
					t.Errorf("%s: revision %d after rollback, want %d", names(before)[i], after[i].Revision, before[i].Revision)
				}
				assertEqual(t, after[i].Package, before[i].Package)
			}
		})
	}
}

func (s suite) testCallerMutation(t *testing.T) {
	tests := []struct {
		name string
		// hold returns a message the caller has after a call; mutating it
		// must not reach the store.
		hold func(ctx context.Context, t *testing.T, st store.Store) *pmv1.OPackage
	}{
		{"argument of create", func(ctx context.Context, t *testing.T, st store.Store) *pmv1.OPackage {
			p := FullPackage("pkg")
			if _, err := st.CreatePackage(ctx, p); err != nil {
				t.Fatal(err)
			}
			return p
		}},
		{"result of create", func(ctx context.Context, t *testing.T, st store.Store) *pmv1.OPackage {
			return mustCreate(t, st, FullPackage("pkg")).Package
		}},
		{"argument of update", func(ctx context.Context, t *testing.T, st store.Store) *pmv1.OPackage {
			mustCreate(t, st, FullPackage("pkg"))
			p := FullPackage("pkg")
			if _, err := st.UpdatePackage(ctx, p, store.AnyRevision); err != nil {
				t.Fatal(err)
			}
			return p
		}},
		{"result of update", func(ctx context.Context, t *testing.T, st store.Store) *pmv1.OPackage {
			mustCreate(t, st, FullPackage("pkg"))
			p, err := st.UpdatePackage(ctx, FullPackage("pkg"), store.AnyRevision)
			if err != nil {
				t.Fatal(err)
			}
			return p.Package
		}},
		{"result of get", func(ctx context.Context, t *testing.T, st store.Store) *pmv1.OPackage {
			mustCreate(t, st, FullPackage("pkg"))
			return mustGet(t, st, "pkg").Package
		}},
		{"result of list", func(ctx context.Context, t *testing.T, st store.Store) *pmv1.OPackage {
			mustCreate(t, st, FullPackage("pkg"))
			return mustList(t, st, store.PackageFilter{})[0].Package
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, st := s.setup(t)
			held := tc.hold(ctx, t, st)
			// A deep copy, in case the store hands out what it holds.
			stored := proto.Clone(mustGet(t, st, "pkg").Package).(*pmv1.OPackage)

			held.Version = proto.String("mutated")
			held.Metadata.Tags[0] = "mutated"
			held.Metadata.CreatedAt = timestamppb.New(time.Unix(3, 0))
			held.Classes[0].StateSpec.KeySpecs[0].Name = "mutated"
			held.Functions[0].Config["HTTP_PORT"] = "1"
			held.Deployments[0].TargetEnvs = append(held.Deployments[0].TargetEnvs[:0], "mutated")

			assertEqual(t, mustGet(t, st, "pkg").Package, stored)
		})
	}
}

// testConcurrentUpdates has writers race read-modify-write cycles on one
// package, retrying on ErrStale. Every writer's change must survive (no
// lost update) and every write must bump the revision exactly once.
func (s suite) testConcurrentUpdates(t *testing.T) {
	ctx, st := s.setup(t)
	raceAppendTag(t, st, 50,
		func(tag string) error { return appendTag(ctx, st, tag) },
		func(err error) bool { return errors.Is(err, store.ErrStale) })
}

// testConcurrentTransactions is testConcurrentUpdates with each cycle in a
// transaction; a store may abort one that collides (ErrStale or a Conflict
// after its own retries), and the writer then tries again.
func (s suite) testConcurrentTransactions(t *testing.T) {
	ctx, st := s.setup(t)
	raceAppendTag(t, st, 10,
		func(tag string) error {
			return st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error { return appendTag(ctx, tx, tag) })
		},
		func(err error) bool { return fault.KindOf(err) == fault.Conflict })
}

// raceAppendTag creates package "hot" and has writers goroutines each add
// its own tag with cycle, running it again while lost says the error means
// the cycle lost a race; then it checks the outcome with assertAllWriters.
func raceAppendTag(t *testing.T, st store.Store, writers int, cycle func(tag string) error, lost func(error) bool) {
	t.Helper()
	mustCreate(t, st, &pmv1.OPackage{Name: "hot", Metadata: &pmv1.PackageMetadata{Tags: []string{"start"}}})
	var wg sync.WaitGroup
	for i := range writers {
		wg.Go(func() {
			tag := "w" + strconv.Itoa(i)
			err := cycle(tag)
			for err != nil && lost(err) {
				err = cycle(tag)
			}
			if err != nil {
				t.Errorf("writer %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	assertAllWriters(t, mustGet(t, st, "hot"), writers)
}

// appendTag is one read-modify-write cycle: it reads package "hot" and
// writes it back with tag added, checking the revision it read.
func appendTag(ctx context.Context, tx store.Tx, tag string) error {
	cur, err := tx.GetPackage(ctx, "hot")
	if err != nil {
		return fmt.Errorf("get: %w", err)
	}
	cur.Package.Metadata.Tags = append(cur.Package.Metadata.Tags, tag)
	if _, err := tx.UpdatePackage(ctx, cur.Package, cur.Revision); err != nil {
		return fmt.Errorf("update: %w", err)
	}
	return nil
}

// assertAllWriters checks the outcome of the concurrent writer tests.
func assertAllWriters(t *testing.T, got store.Package, writers int) {
	t.Helper()
	if want := int64(writers + 1); got.Revision != want {
		t.Errorf("revision = %d after %d updates, want %d", got.Revision, writers, want)
	}
	want := []string{"start"}
	for i := range writers {
		want = append(want, "w"+strconv.Itoa(i))
	}
	tags := slices.Clone(got.Package.GetMetadata().GetTags())
	slices.Sort(tags)
	slices.Sort(want)
	if !slices.Equal(tags, want) {
		t.Errorf("tags = %v, want every writer's tag once: %v", tags, want)
	}
}

func (s suite) testConcurrentCreates(t *testing.T) {
	ctx, st := s.setup(t)
	const creators = 20
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []int
	)
	for i := range creators {
		wg.Go(func() {
			_, err := st.CreatePackage(ctx, &pmv1.OPackage{Name: "one", Version: proto.String(strconv.Itoa(i))})
			switch {
			case err == nil:
				mu.Lock()
				winners = append(winners, i)
				mu.Unlock()
			case !errors.Is(err, store.ErrAlreadyExists):
				t.Errorf("creator %d: %v, want nil or ErrAlreadyExists", i, err)
			}
		})
	}
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("%d creates succeeded (%v), want exactly 1", len(winners), winners)
	}
	got := mustGet(t, st, "one")
	if v := got.Package.GetVersion(); v != strconv.Itoa(winners[0]) || got.Revision != 1 {
		t.Errorf("stored version %q revision %d, want the winner's %d at revision 1", v, got.Revision, winners[0])
	}
}

func (s suite) testCanceledContext(t *testing.T) {
	tests := []struct {
		name string
		op   func(ctx context.Context, st store.Store) error
	}{
		{"create", func(ctx context.Context, st store.Store) error {
			_, err := st.CreatePackage(ctx, &pmv1.OPackage{Name: "new"})
			return err
		}},
		{"get", func(ctx context.Context, st store.Store) error {
			_, err := st.GetPackage(ctx, "pkg")
			return err
		}},
		{"list", func(ctx context.Context, st store.Store) error {
			_, err := st.ListPackages(ctx, store.PackageFilter{})
			return err
		}},
		{"update", func(ctx context.Context, st store.Store) error {
			_, err := st.UpdatePackage(ctx, &pmv1.OPackage{Name: "pkg"}, 1)
			return err
		}},
		{"delete", func(ctx context.Context, st store.Store) error {
			return st.DeletePackage(ctx, "pkg", 1)
		}},
		{"transaction", func(ctx context.Context, st store.Store) error {
			return st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
				_, err := tx.CreatePackage(ctx, &pmv1.OPackage{Name: "new"})
				return err
			})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, st := s.setup(t)
			mustCreate(t, st, &pmv1.OPackage{Name: "pkg"})
			ctx, cancel := context.WithCancel(t.Context())
			cancel()
			if err := tc.op(ctx, st); !errors.Is(err, context.Canceled) {
				t.Errorf("with a cancelled context: %v, want context.Canceled", err)
			}
			// Nothing happened.
			assertNames(t, mustList(t, st, store.PackageFilter{}), "pkg")
			if p := mustGet(t, st, "pkg"); p.Revision != 1 {
				t.Errorf("revision %d, want 1", p.Revision)
			}
		})
	}
}

// testClosed checks that a closed store refuses work as unavailable, which
// is what requests still in flight during shutdown get.
func (s suite) testClosed(t *testing.T) {
	ctx, st := s.setup(t)
	mustCreate(t, st, &pmv1.OPackage{Name: "pkg"})
	if err := st.Ping(ctx); err != nil {
		t.Fatalf("Ping before Close: %v", err)
	}
	if err := st.Ready(ctx); err != nil {
		t.Fatalf("Ready before Close: %v", err)
	}
	st.Close()
	ops := map[string]error{"ping": st.Ping(ctx), "ready": st.Ready(ctx)}
	_, ops["create"] = st.CreatePackage(ctx, &pmv1.OPackage{Name: "new"})
	_, ops["get"] = st.GetPackage(ctx, "pkg")
	_, ops["list"] = st.ListPackages(ctx, store.PackageFilter{})
	_, ops["update"] = st.UpdatePackage(ctx, &pmv1.OPackage{Name: "pkg"}, store.AnyRevision)
	ops["delete"] = st.DeletePackage(ctx, "pkg", store.AnyRevision)
	ops["transaction"] = st.WithTx(ctx, func(context.Context, store.Tx) error { return nil })
	_, ops["get deployment"] = st.GetDeployment(ctx, "d")
	_, ops["list deployments"] = st.ListDeployments(ctx, store.DeploymentFilter{})
	ops["put rollouts"] = st.PutRollouts(ctx, store.RolloutRow{DeploymentKey: "d", Cluster: "c", UnitID: "u"})
	_, ops["list rollouts"] = st.ListRollouts(ctx, store.RolloutFilter{Cluster: "c"})
	ops["create operation"] = st.CreateOperation(ctx, store.OperationRow{ID: "op", Kind: "deploy", State: running})
	_, ops["claim operations"] = st.ClaimOperations(ctx, "me", t0, t0, 1)
	ops["update steps"] = st.UpdateSteps(ctx, "op", "me", store.StepRow{Cluster: "c"})
	ops["put idempotency"] = st.PutIdempotency(ctx, store.IdempotencyRecord{Scope: "s", Key: "k"})
	_, ops["get idempotency"] = st.GetIdempotency(ctx, "s", "k", t0)
	for op, err := range ops {
		if !errors.Is(err, store.ErrUnavailable) || fault.KindOf(err) != fault.Unavailable {
			t.Errorf("%s on a closed store: %v, want ErrUnavailable", op, err)
		}
	}
}

// Helpers.

func mustCreate(t *testing.T, st store.Store, p *pmv1.OPackage) store.Package {
	t.Helper()
	got, err := st.CreatePackage(context.Background(), p)
	if err != nil {
		t.Fatalf("CreatePackage(%q): %v", p.GetName(), err)
	}
	return got
}

func mustGet(t *testing.T, st store.Store, name string) store.Package {
	t.Helper()
	got, err := st.GetPackage(context.Background(), name)
	if err != nil {
		t.Fatalf("GetPackage(%q): %v", name, err)
	}
	return got
}

func mustList(t *testing.T, st store.Store, f store.PackageFilter) []store.Package {
	t.Helper()
	got, err := st.ListPackages(context.Background(), f)
	if err != nil {
		t.Fatalf("ListPackages(%+v): %v", f, err)
	}
	return got
}

// wantErr checks err is target, of target's fault kind, and names the object.
func wantErr(t *testing.T, err, target error, name string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("error = %v, want %v", err, target)
	}
	if got, want := fault.KindOf(err), fault.KindOf(target); got != want {
		t.Errorf("fault kind of %q = %v, want %v", err, got, want)
	}
	if !strings.Contains(err.Error(), strconv.Quote(name)) {
		t.Errorf("error %q does not name %q", err, name)
	}
}

// times returns the store-set times of p, failing if either is missing or
// finer than a microsecond (Postgres's precision, which both stores keep).
func times(t *testing.T, p *pmv1.OPackage) (created, updated time.Time) {
	t.Helper()
	md := p.GetMetadata()
	if md.GetCreatedAt() == nil || md.GetUpdatedAt() == nil {
		t.Fatalf("%s: created_at %v, updated_at %v; the store must set both", p.GetName(), md.GetCreatedAt(), md.GetUpdatedAt())
	}
	created, updated = md.GetCreatedAt().AsTime(), md.GetUpdatedAt().AsTime()
	if created.Nanosecond()%1000 != 0 || updated.Nanosecond()%1000 != 0 {
		t.Errorf("%s: times %v, %v are finer than microseconds", p.GetName(), created, updated)
	}
	return created, updated
}

// assertEqualApartFromTimes compares packages ignoring the server-set
// metadata times and an empty metadata (which the store creates to hold
// them).
func assertEqualApartFromTimes(t *testing.T, got, want *pmv1.OPackage) {
	t.Helper()
	assertEqual(t, withoutTimes(got), withoutTimes(want))
}

func withoutTimes(p *pmv1.OPackage) *pmv1.OPackage {
	p = proto.Clone(p).(*pmv1.OPackage)
	if p.Metadata != nil {
		p.Metadata.CreatedAt, p.Metadata.UpdatedAt = nil, nil
		if proto.Size(p.Metadata) == 0 {
			p.Metadata = nil
		}
	}
	return p
}

func assertEqual(t *testing.T, got, want *pmv1.OPackage) {
	t.Helper()
	if !proto.Equal(got, want) {
		t.Errorf("package %q differs:\n%s", want.GetName(), diff(want, got))
	}
}

// diff shows two messages for a failure message.
func diff(want, got proto.Message) string {
	opts := prototext.MarshalOptions{Multiline: true}
	return fmt.Sprintf("--- want\n%s\n--- got\n%s", opts.Format(want), opts.Format(got))
}

func names(ps []store.Package) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Package.GetName())
	}
	return out
}

func assertNames(t *testing.T, got []store.Package, want ...string) {
	t.Helper()
	if g := names(got); !slices.Equal(g, want) {
		t.Errorf("listed %q, want %q", g, want)
	}
}
