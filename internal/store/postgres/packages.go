package postgres

import (
	"context"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/types/known/timestamppb"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
)

// packages is the packages table. Its timestamps live in the message's
// metadata, which the store creates when absent since it always stamps them.
var packages = newDocTable(&docTable[*pmv1.OPackage, store.Package]{
	layout: docLayout{
		Table:         "packages",
		Key:           "name",
		Columns:       []string{"version", "disabled", "tags", "author"},
		CreatedAtPath: "{metadata,created_at}",
	},
	what: "package",
	key:  (*pmv1.OPackage).GetName,
	columns: func(p *pmv1.OPackage) []any {
		return []any{p.Version, p.GetDisabled(), tags(p), metadata(p).Author}
	},
	stamp: func(p *pmv1.OPackage, created, updated *timestamppb.Timestamp) {
		md := metadata(p)
		md.CreatedAt, md.UpdatedAt = created, updated
	},
	newDoc: func() *pmv1.OPackage { return new(pmv1.OPackage) },
	result: func(p *pmv1.OPackage, rev int64) store.Package {
		return store.Package{Package: p, Revision: rev}
	},
})

// CreatePackage implements store.Packages.
func (r *repo) CreatePackage(ctx context.Context, p *pmv1.OPackage) (store.Package, error) {
	return packages.create(ctx, r, p)
}

// GetPackage implements store.Packages.
func (r *repo) GetPackage(ctx context.Context, name string) (store.Package, error) {
	return packages.get(ctx, r, name)
}

// ListPackages implements store.Packages. Every filter is a WHERE clause, so
// paging happens in the database; only the clauses a filter needs are
// written, which lets the planner use the matching index ((disabled, name)
// for the flag, the primary key for name order and After). A tag filter
// walks package_tags instead (see packageTagQuery).
func (r *repo) ListPackages(ctx context.Context, f store.PackageFilter) ([]store.Package, error) {
	sql, args := packageListQuery(f)
	if len(f.Tags) > 0 {
		// Planned afresh with the tag itself (an unnamed statement, still
		// one round trip), never from a cached generic plan: only the
		// tag's real frequency tells "read five entries and sort them"
		// from "walk in order and stop after the page", and a generic
		// plan guessing "rare" for a tag on every package would join and
		// sort them all.
		args = append([]any{pgx.QueryExecModeExec}, args...)
	}
	return packages.list(ctx, r, sql, args)
}

// packageListQuery builds the SELECT for f.
func packageListQuery(f store.PackageFilter) (string, []any) {
	if tags := uniqueTags(f.Tags); len(tags) > 0 {
		return packageTagQuery(f, tags)
	}
	var w where
	packageConds(&w, f, "name", "disabled")
	return packages.listQuery(&w, f.After, f.Limit, f.Offset)
}

// packageConds adds the filters on a package's own columns (name pattern,
// disabled flag) to w, with the columns named as given.
func packageConds(w *where, f store.PackageFilter, name, disabled string) {
	if f.NamePattern != "" {
		w.add(name+" LIKE", likePattern(f.NamePattern))
	}
	if f.Disabled != nil {
		w.add(disabled+" =", *f.Disabled)
	}
}

// packageTagQuery builds the SELECT for a filter with tags. Each tag's
// packages are an ordered walk of package_tags' primary key (tag, name)
// from the keyset position, joined to packages only for the other filters
// and the document, and stopped after the page: a tag on five packages and
// a tag on all of them cost the same, a page's worth of index entries.
//
// One tag is that walk. Several ("any of") are one walk per tag, each
// limited to what the page could need (offset + limit names, since they may
// all come from one tag), merged in name order without duplicates; only
// then are the page's documents read.
func packageTagQuery(f store.PackageFilter, tags []string) (string, []any) {
	var w where
	if len(tags) == 1 {
		w.add("t.tag =", tags[0])
		if f.After != "" {
			afterConds(&w, f.After)
		}
		packageConds(&w, f, "p.name", "p.disabled")
		var b strings.Builder
		b.WriteString("SELECT p.name, p.revision, p.doc FROM package_tags t JOIN packages p ON p.name = t.name WHERE ")
		b.WriteString(strings.Join(w.conds, " AND "))
		b.WriteString(" ORDER BY t.name")
		pageClauses(&b, &w, f.Limit, f.Offset)
		return b.String(), w.args
	}

	// Parameters shared by every walk come first, so each walk's text
	// refers to the same ones.
	var shared where
	join := ""
	if f.NamePattern != "" || f.Disabled != nil {
		join = " JOIN packages p ON p.name = t.name"
		if f.After != "" {
			afterConds(&shared, f.After)
		}
	} else if f.After != "" {
		shared.add("t.name >", f.After)
	}
	packageConds(&shared, f, "p.name", "p.disabled")
	w.args = shared.args
	perTag := ""
	if f.Limit > 0 {
		perTag = " LIMIT " + w.arg(f.Limit+f.Offset)
	}
	walks := make([]string, len(tags))
	for i, tag := range tags {
		conds := append([]string{"t.tag = " + w.arg(tag)}, shared.conds...)
		walks[i] = "(SELECT t.name FROM package_tags t" + join + " WHERE " + strings.Join(conds, " AND ") +
			" ORDER BY t.name" + perTag + ")"
	}
	var b strings.Builder
	b.WriteString("SELECT p.name, p.revision, p.doc FROM (SELECT DISTINCT name FROM (")
	b.WriteString(strings.Join(walks, " UNION ALL "))
	b.WriteString(") u ORDER BY name")
	pageClauses(&b, &w, f.Limit, f.Offset)
	b.WriteString(") m JOIN packages p ON p.name = m.name ORDER BY p.name")
	return b.String(), w.args
}

// afterConds adds the keyset position to a walk that joins packages, on
// both sides: Postgres carries equalities across a join but not ranges,
// and a merge join would otherwise read packages from the first name.
func afterConds(w *where, after string) {
	p := w.arg(after)
	w.conds = append(w.conds, "t.name > "+p, "p.name > "+p)
}

// pageClauses appends LIMIT and OFFSET, each only when set.
func pageClauses(b *strings.Builder, w *where, limit, offset int) {
	if limit > 0 {
		b.WriteString(" LIMIT " + w.arg(limit))
	}
	if offset > 0 {
		b.WriteString(" OFFSET " + w.arg(offset))
	}
}

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

// likePattern turns a name pattern (substring, '*' for any run) into a LIKE
// pattern. LIKE's own wildcards and its escape character are escaped, so a
// '%' or '_' in the pattern only matches itself.
func likePattern(pattern string) string {
	var b strings.Builder
	b.Grow(len(pattern) + 4)
	b.WriteByte('%')
	for _, c := range []byte(pattern) {
		switch c {
		case '\\', '%', '_':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '*':
			b.WriteByte('%')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('%')
	return b.String()
}

// UpdatePackage implements store.Packages in one statement; only when it
// matches no row does a second query tell "absent" from "stale".
func (r *repo) UpdatePackage(ctx context.Context, p *pmv1.OPackage, expected int64) (store.Package, error) {
	return packages.update(ctx, r, p, expected)
}

// DeletePackage implements store.Packages, like UpdatePackage.
func (r *repo) DeletePackage(ctx context.Context, name string, expected int64) error {
	return packages.delete(ctx, r, name, expected)
}

// metadata returns pkg's metadata, creating it if absent, since the store
// always stamps times into it.
func metadata(pkg *pmv1.OPackage) *pmv1.PackageMetadata {
	if pkg.Metadata == nil {
		pkg.Metadata = new(pmv1.PackageMetadata)
	}
	return pkg.Metadata
}

// tags returns pkg's tags as a non-nil slice: the column is NOT NULL and pgx
// sends a nil slice as NULL.
func tags(pkg *pmv1.OPackage) []string {
	if t := pkg.GetMetadata().GetTags(); t != nil {
		return t
	}
	return []string{}
}
