package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
)

// tagFixture is the data set of the tag list tests: 60 packages whose tags
// make every kind of tag a list meets, a tag on all of them, on a third,
// on a few, on one, repeated within a package, and a package with none.
func tagFixture() []*pmv1.OPackage {
	var out []*pmv1.OPackage
	for i := range 60 {
		tags := []string{"all"}
		if i%3 == 0 {
			tags = append(tags, "third")
		}
		if i%20 == 7 {
			tags = append(tags, "few", "few") // a repeat must count once
		}
		if i == 41 {
			tags = append(tags, "one")
		}
		if i == 13 {
			tags = nil
		}
		// Names in an order unlike insertion order and unlike numeric
		// order, with bytes on both sides of the ASCII letters.
		name := fmt.Sprintf("%c%02d", "Ab_z"[i%4], 59-i)
		out = append(out, &pmv1.OPackage{Name: name, Disabled: i%4 == 1, Metadata: &pmv1.PackageMetadata{Tags: tags}})
	}
	return out
}

// refList is the reference answer to f over pkgs: the filter's semantics
// written the plain way (test every package, sort, page).
func refList(pkgs []*pmv1.OPackage, f store.PackageFilter) []string {
	var names []string
	for _, p := range pkgs {
		if f.After != "" && p.GetName() <= f.After {
			continue
		}
		if f.Disabled != nil && p.GetDisabled() != *f.Disabled {
			continue
		}
		if f.NamePattern != "" && !refMatch(f.NamePattern, p.GetName()) {
			continue
		}
		if len(f.Tags) > 0 && !slices.ContainsFunc(p.GetMetadata().GetTags(), func(t string) bool { return slices.Contains(f.Tags, t) }) {
			continue
		}
		names = append(names, p.GetName())
	}
	slices.Sort(names)
	if f.Offset > 0 {
		names = names[min(f.Offset, len(names)):]
	}
	if f.Limit > 0 && len(names) > f.Limit {
		names = names[:f.Limit]
	}
	return names
}

// refMatch is the name pattern's meaning: the '*'-separated parts occur in
// order somewhere in the name.
func refMatch(pattern, name string) bool {
	for _, part := range strings.Split(pattern, "*") {
		i := strings.Index(name, part)
		if i < 0 {
			return false
		}
		name = name[i+len(part):]
	}
	return true
}

// testListByTags compares tag lists with the reference over every
// combination of tags, keyset position, offset, limit and the other
// filters, so that an index that walks in order and stops early cannot
// drop, repeat or misorder a package.
func (s suite) testListByTags(t *testing.T) {
	ctx, st := s.setup(t)
	pkgs := tagFixture()
	for _, p := range pkgs {
		mustCreate(t, st, p)
	}
	yes, no := true, false
	tagSets := [][]string{
		{"all"}, {"third"}, {"few"}, {"one"}, {"nope"},
		{"few", "one"}, {"third", "few"}, {"all", "third"}, {"one", "nope"}, {"few", "few"},
	}
	var checked int
	for _, tags := range tagSets {
		for _, after := range []string{"", "A20", "b", "z00", "~"} {
			for _, lim := range [][2]int{{0, 0}, {0, 1}, {0, 7}, {3, 5}, {25, 10}, {100, 0}} {
				for _, extra := range []store.PackageFilter{{}, {Disabled: &yes}, {Disabled: &no}, {NamePattern: "1"}} {
					f := store.PackageFilter{
						Tags: tags, After: after, Offset: lim[0], Limit: lim[1],
						Disabled: extra.Disabled, NamePattern: extra.NamePattern,
					}
					got, err := st.ListPackages(ctx, f)
					if err != nil {
						t.Fatalf("ListPackages(%+v): %v", f, err)
					}
					if g, w := names(got), refList(pkgs, f); !slices.Equal(g, w) {
						t.Errorf("ListPackages(%+v) = %q, want %q", f, g, w)
					}
					checked++
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no filter checked")
	}
	// Paging through a common tag by keyset gives every package once.
	var (
		seen  []string
		after string
	)
	for range 100 {
		page, err := st.ListPackages(ctx, store.PackageFilter{Tags: []string{"all", "third"}, After: after, Limit: 7})
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		seen = append(seen, names(page)...)
		after = seen[len(seen)-1]
	}
	if want := refList(pkgs, store.PackageFilter{Tags: []string{"all"}}); !slices.Equal(seen, want) {
		t.Errorf("keyset pages of a common tag gave %q, want %q", seen, want)
	}
}

// testTagIndexFollowsWrites moves packages between tags with updates,
// deletes and transactions (committed and rolled back) and checks tag
// lists after each step: whatever indexes a store keeps must follow every
// write and every undo.
func (s suite) testTagIndexFollowsWrites(t *testing.T) {
	ctx, st := s.setup(t)
	tagged := func(name string, tags ...string) *pmv1.OPackage {
		return &pmv1.OPackage{Name: name, Metadata: &pmv1.PackageMetadata{Tags: tags}}
	}
	for _, p := range []*pmv1.OPackage{tagged("a", "x"), tagged("b", "x", "y"), tagged("c", "y"), tagged("d")} {
		mustCreate(t, st, p)
	}
	errBoom := errors.New("boom")
	steps := []struct {
		name  string
		write func() error
		// want maps a tag to the names listed for it.
		want map[string][]string
	}{
		{"created", func() error { return nil },
			map[string][]string{"x": {"a", "b"}, "y": {"b", "c"}, "z": nil}},
		{"update moves a package", func() error {
			_, err := st.UpdatePackage(ctx, tagged("a", "y", "z"), store.AnyRevision)
			return err
		}, map[string][]string{"x": {"b"}, "y": {"a", "b", "c"}, "z": {"a"}}},
		{"update drops every tag", func() error {
			_, err := st.UpdatePackage(ctx, tagged("b"), store.AnyRevision)
			return err
		}, map[string][]string{"x": nil, "y": {"a", "c"}, "z": {"a"}}},
		{"delete", func() error { return st.DeletePackage(ctx, "c", store.AnyRevision) },
			map[string][]string{"y": {"a"}, "z": {"a"}}},
		{"rolled-back transaction", func() error {
			err := st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
				for _, w := range []func() error{
					func() error { _, err := tx.CreatePackage(ctx, tagged("e", "x", "z")); return err },
					func() error { _, err := tx.UpdatePackage(ctx, tagged("a", "x"), store.AnyRevision); return err },
					func() error { return tx.DeletePackage(ctx, "a", store.AnyRevision) },
					func() error { _, err := tx.CreatePackage(ctx, tagged("a", "w")); return err },
					func() error { _, err := tx.UpdatePackage(ctx, tagged("d", "z"), store.AnyRevision); return err },
				} {
					if err := w(); err != nil {
						return err
					}
				}
				// Inside, the transaction sees its own writes.
				got, err := tx.ListPackages(ctx, store.PackageFilter{Tags: []string{"z"}})
				if err != nil {
					return err
				}
				if g := names(got); !slices.Equal(g, []string{"d", "e"}) {
					t.Errorf("inside the transaction tag z lists %q, want [d e]", g)
				}
				return errBoom
			})
			if !errors.Is(err, errBoom) {
				return fmt.Errorf("WithTx = %w", err)
			}
			return nil
		}, map[string][]string{"x": nil, "y": {"a"}, "z": {"a"}, "w": nil}},
		{"committed transaction", func() error {
			return st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
				if _, err := tx.CreatePackage(ctx, tagged("e", "x", "z")); err != nil {
					return err
				}
				_, err := tx.UpdatePackage(ctx, tagged("d", "z"), store.AnyRevision)
				return err
			})
		}, map[string][]string{"x": {"e"}, "y": {"a"}, "z": {"a", "d", "e"}}},
	}
	for _, step := range steps {
		if err := step.write(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		for tag, want := range step.want {
			got := names(mustList(t, st, store.PackageFilter{Tags: []string{tag}}))
			if !slices.Equal(got, want) {
				t.Errorf("after %s, tag %q lists %q, want %q", step.name, tag, got, want)
			}
		}
	}
}
