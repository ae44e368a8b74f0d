package memory

import (
	"fmt"
	"slices"
	"strings"

	"github.com/google/btree"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/namepattern"
	"github.com/oaas/pm/internal/store"
)

// packages stores packages. Their timestamps live in the message's
// metadata, which the store creates when absent since it always stamps them.
var packages = docs[*pmv1.OPackage, store.Package]{
	what:      "package",
	key:       (*pmv1.OPackage).GetName,
	createdAt: func(p *pmv1.OPackage) *timestamppb.Timestamp { return p.GetMetadata().GetCreatedAt() },
	stamp: func(p *pmv1.OPackage, created, updated *timestamppb.Timestamp) {
		md := metadata(p)
		md.CreatedAt, md.UpdatedAt = created, updated
	},
	result: func(p *pmv1.OPackage, rev int64) store.Package { return store.Package{Package: p, Revision: rev} },
}

// pkgRow is a stored package in its compact form: the deterministic binary
// protobuf of the message, decoded on every read, beside the fields that
// lists filter on. A decoded OPackage costs several times its encoding in
// Go objects, and the registry is mostly at rest, so holding bytes is what
// keeps 100k packages in a couple of hundred megabytes. Rows are values
// and never changed once stored (a write stores a new row), so a reader
// may decode one after releasing the lock.
type pkgRow struct {
	name string
	doc  []byte
	// tags are the package's distinct tags, each string shared with the
	// tag index's own (interned), in the order the package lists them.
	tags     []string
	rev      int64
	disabled bool
}

// pkgTable holds the packages: rows ordered by name in a B-tree, so that a
// page of a list is a walk from the keyset position, and for each tag the
// names carrying it, also ordered, so that a tag filter walks only that
// tag's packages. A list of one page costs about a page of entries
// whatever the table's size, like package_tags in Postgres.
//
// It implements table for docs. Its methods need the Store's lock as docs'
// do.
type pkgTable struct {
	byName *btree.BTreeG[pkgRow]
	byTag  map[string]*tagIndex
}

// tagIndex is the names carrying one tag, in byte order.
type tagIndex struct {
	// tag is the one string of this tag that rows refer to.
	tag   string
	names *btree.BTreeG[string]
}

// btreeDegree sizes B-tree nodes (up to 2·degree-1 items): wide enough
// that a tree of 100k rows is four levels deep, small enough that a write
// copies little.
const btreeDegree = 32

var _ table[*pmv1.OPackage] = (*pkgTable)(nil)

func newPkgTable() *pkgTable {
	return &pkgTable{
		byName: btree.NewG(btreeDegree, func(a, b pkgRow) bool { return a.name < b.name }),
		byTag:  make(map[string]*tagIndex),
	}
}

// encodeOpts makes a package's bytes a function of its content.
var encodeOpts = proto.MarshalOptions{Deterministic: true}

// row returns the row stored under name.
func (t *pkgTable) row(name string) (pkgRow, bool) {
	return t.byName.Get(pkgRow{name: name})
}

func (t *pkgTable) rev(key string) (int64, bool) {
	r, ok := t.row(key)
	return r.rev, ok
}

func (t *pkgTable) entry(key string) (docEntry[*pmv1.OPackage], bool) {
	r, ok := t.row(key)
	if !ok {
		return docEntry[*pmv1.OPackage]{}, false
	}
	return r.entry(), true
}

// put encodes e.doc and stores it; the message itself is not kept, so the
// entry returned is the caller's.
func (t *pkgTable) put(key string, e docEntry[*pmv1.OPackage]) docEntry[*pmv1.OPackage] {
	doc, err := encodeOpts.Marshal(e.doc)
	if err != nil {
		// Marshal fails only on invalid UTF-8 in a string field, which
		// every decoder on the way in rejects; storing a package that
		// reads back differently would be worse than stopping here.
		panic(fmt.Sprintf("memory store: encode package %q: %v", key, err))
	}
	t.putRow(pkgRow{
		name:     strings.Clone(key),
		doc:      doc,
		tags:     e.doc.GetMetadata().GetTags(),
		rev:      e.rev,
		disabled: e.doc.GetDisabled(),
	})
	e.owned = true
	return e
}

// putRow stores r, replacing the row of its name and moving the name
// between tag indexes as its tags changed. It interns r.tags.
func (t *pkgTable) putRow(r pkgRow) {
	old, had := t.byName.Get(r)
	tags := make([]string, 0, len(r.tags))
	for _, tag := range r.tags {
		if slices.Contains(tags, tag) {
			continue
		}
		idx := t.byTag[tag]
		if idx == nil {
			idx = &tagIndex{tag: strings.Clone(tag), names: btree.NewG(btreeDegree, btree.Less[string]())}
			t.byTag[idx.tag] = idx
		}
		tags = append(tags, idx.tag)
		idx.names.ReplaceOrInsert(r.name)
	}
	if len(tags) == 0 {
		tags = nil
	}
	r.tags = tags
	if had {
		for _, tag := range old.tags {
			if !slices.Contains(tags, tag) {
				t.untag(tag, r.name)
			}
		}
	}
	t.byName.ReplaceOrInsert(r)
}

func (t *pkgTable) remove(key string) {
	old, had := t.byName.Delete(pkgRow{name: key})
	if !had {
		return
	}
	for _, tag := range old.tags {
		t.untag(tag, key)
	}
}

// untag takes name out of tag's index, dropping the index once empty.
func (t *pkgTable) untag(tag, name string) {
	idx := t.byTag[tag]
	if idx == nil {
		return
	}
	idx.names.Delete(name)
	if idx.names.Len() == 0 {
		delete(t.byTag, tag)
	}
}

func (t *pkgTable) restorer(key string) func() {
	old, had := t.row(key)
	return func() {
		if had {
			t.putRow(old)
		} else {
			t.remove(key)
		}
	}
}

// entry decodes r. The message is new, so the entry is owned.
func (r pkgRow) entry() docEntry[*pmv1.OPackage] {
	p := new(pmv1.OPackage)
	if err := proto.Unmarshal(r.doc, p); err != nil {
		// The bytes are the store's own encoding of a valid message.
		panic(fmt.Sprintf("memory store: decode package %q: %v", r.name, err))
	}
	return docEntry[*pmv1.OPackage]{doc: p, rev: r.rev, owned: true}
}

// decodeRows turns rows into results; it runs outside the lock.
func decodeRows(rows []pkgRow) []store.Package {
	if len(rows) == 0 {
		return nil
	}
	out := make([]store.Package, len(rows))
	for i, r := range rows {
		out[i] = packages.out(r.entry())
	}
	return out
}

// list returns the rows matching f in name order, offset skipped and
// capped at the limit. It walks only what the page needs: the rows after
// f.After in name order, or with tags each tag's names in order, stopping
// once offset+limit rows matched.
func (t *pkgTable) list(f store.PackageFilter) []pkgRow {
	var match func(string) bool
	if f.NamePattern != "" {
		match = namepattern.Matcher(f.NamePattern)
	}
	accept := func(r pkgRow) bool {
		return (match == nil || match(r.name)) && (f.Disabled == nil || r.disabled == *f.Disabled)
	}
	need := -1 // no cap
	if f.Limit > 0 {
		need = f.Offset + f.Limit
	}
	tags := uniqueTags(f.Tags)
	var rows []pkgRow
	switch len(tags) {
	case 0:
		ascendAfter(t.byName, pkgRow{name: f.After}, f.After, rowName, func(r pkgRow) bool {
			if accept(r) {
				rows = append(rows, r)
			}
			return len(rows) != need
		})
	case 1:
		rows = t.tagged(tags[0], f.After, need, accept)
	default:
		// "Any of": each tag's first need matches, merged in name order
		// without repeats; the page can only come from those.
		for _, tag := range tags {
			rows = append(rows, t.tagged(tag, f.After, need, accept)...)
		}
		slices.SortFunc(rows, func(a, b pkgRow) int { return strings.Compare(a.name, b.name) })
		rows = slices.CompactFunc(rows, func(a, b pkgRow) bool { return a.name == b.name })
		if need >= 0 && len(rows) > need {
			rows = rows[:need]
		}
	}
	return page(rows, f.Offset, f.Limit)
}

// tagged returns, in name order, up to need (all if negative) rows that
// carry tag, come after after and pass accept.
func (t *pkgTable) tagged(tag, after string, need int, accept func(pkgRow) bool) []pkgRow {
	idx := t.byTag[tag]
	if idx == nil {
		return nil
	}
	var rows []pkgRow
	ascendAfter(idx.names, after, after, self, func(name string) bool {
		if r, ok := t.row(name); ok && accept(r) {
			rows = append(rows, r)
		}
		return len(rows) != need
	})
	return rows
}

// ascendAfter walks tree in order from the items whose key is after
// (excluded) while visit returns true; an empty after starts at the
// beginning.
func ascendAfter[T any](tree *btree.BTreeG[T], pivot T, after string, key func(T) string, visit func(T) bool) {
	tree.AscendGreaterOrEqual(pivot, func(v T) bool {
		if after != "" && key(v) == after {
			return true
		}
		return visit(v)
	})
}

func rowName(r pkgRow) string { return r.name }

func self(s string) string { return s }

// uniqueTags returns tags without repeats, in their first order.
func uniqueTags(tags []string) []string {
	if len(tags) < 2 {
		return tags
	}
	out := make([]string, 0, len(tags))
	for _, t := range tags {
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}
