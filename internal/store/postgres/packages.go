package postgres

import (
	"context"
	"strings"

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
// written, which lets the planner use the matching index (GIN for tags,
// (disabled, name) for the flag, the primary key for name order and After).
func (r *repo) ListPackages(ctx context.Context, f store.PackageFilter) ([]store.Package, error) {
	sql, args := packageListQuery(f)
	return packages.list(ctx, r, sql, args)
}

// packageListQuery builds the SELECT for f.
func packageListQuery(f store.PackageFilter) (string, []any) {
	var w where
	if f.NamePattern != "" {
		w.add("name LIKE", likePattern(f.NamePattern))
	}
	if f.Disabled != nil {
		w.add("disabled =", *f.Disabled)
	}
	if len(f.Tags) > 0 {
		w.add("tags &&", f.Tags)
	}
	return packages.listQuery(&w, f.After, f.Limit, f.Offset)
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
