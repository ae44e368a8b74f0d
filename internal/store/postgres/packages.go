package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/store"
)

// querier is what both the pool and a transaction offer, so that one set of
// operations serves the Store and the Tx handed to WithTx callbacks.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// repo implements the store operations on a querier. Each call is one
// statement under its own timeout; SQL texts are constants (or, for lists,
// one of a few shapes) so pgx's per-connection statement cache prepares each
// once.
type repo struct {
	q       querier
	timeout time.Duration
	clock   store.Clock
}

var _ store.Tx = (*repo)(nil)

var (
	// docMarshal writes the REST form: proto field names, enum names.
	docMarshal = protojson.MarshalOptions{UseProtoNames: true}
	// docUnmarshal tolerates fields it does not know, so that during a
	// rolling upgrade an older replica can still read rows a newer one wrote.
	docUnmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}
)

// now is the clock's time at the precision Postgres keeps (microseconds),
// so that what a write returns equals what a later read returns.
func (r *repo) now() time.Time {
	return r.clock().UTC().Truncate(time.Microsecond)
}

const sqlInsertPackage = `
INSERT INTO packages (name, version, disabled, tags, author, revision, created_at, updated_at, doc)
VALUES ($1, $2, $3, $4, $5, 1, $6, $6, $7)`

// CreatePackage implements store.Packages. It is a single INSERT: the
// primary key, not a prior SELECT, detects a taken name.
func (r *repo) CreatePackage(ctx context.Context, p *pmv1.OPackage) (store.Package, error) {
	pkg := proto.Clone(p).(*pmv1.OPackage)
	now := r.now()
	md := metadata(pkg)
	md.CreatedAt = timestamppb.New(now)
	md.UpdatedAt = md.CreatedAt
	doc, err := docMarshal.Marshal(pkg)
	if err != nil {
		return store.Package{}, fmt.Errorf("package %q: encode: %w", pkg.GetName(), err)
	}

	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	_, err = r.q.Exec(octx, sqlInsertPackage,
		pkg.GetName(), pkg.Version, pkg.GetDisabled(), tags(pkg), md.Author, now, doc)
	if err != nil {
		return store.Package{}, r.classify(ctx, "package", pkg.GetName(), err)
	}
	return store.Package{Package: pkg, Revision: 1}, nil
}

const sqlGetPackage = `SELECT revision, doc FROM packages WHERE name = $1`

// GetPackage implements store.Packages.
func (r *repo) GetPackage(ctx context.Context, name string) (store.Package, error) {
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var (
		rev int64
		doc []byte
	)
	if err := r.q.QueryRow(octx, sqlGetPackage, name).Scan(&rev, &doc); err != nil {
		return store.Package{}, r.classify(ctx, "package", name, err)
	}
	return decodePackage(name, rev, doc)
}

// ListPackages implements store.Packages. Every filter is a WHERE clause, so
// paging happens in the database; only the clauses a filter needs are
// written, which lets the planner use the matching index (GIN for tags,
// (disabled, name) for the flag, the primary key for name order and After).
func (r *repo) ListPackages(ctx context.Context, f store.PackageFilter) ([]store.Package, error) {
	sql, args := listQuery(f)
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	rows, err := r.q.Query(octx, sql, args...)
	if err != nil {
		return nil, r.classify(ctx, "list packages", "", err)
	}
	defer rows.Close()
	var (
		out  []store.Package
		name string
		rev  int64
		doc  []byte
	)
	for rows.Next() {
		if err := rows.Scan(&name, &rev, &doc); err != nil {
			return nil, r.classify(ctx, "list packages", "", err)
		}
		p, err := decodePackage(name, rev, doc)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, r.classify(ctx, "list packages", "", err)
	}
	return out, nil
}

// listQuery builds the SELECT for f.
func listQuery(f store.PackageFilter) (string, []any) {
	var (
		b     strings.Builder
		args  []any
		conds []string
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.NamePattern != "" {
		conds = append(conds, "name LIKE "+arg(likePattern(f.NamePattern)))
	}
	if f.Disabled != nil {
		conds = append(conds, "disabled = "+arg(*f.Disabled))
	}
	if len(f.Tags) > 0 {
		conds = append(conds, "tags && "+arg(f.Tags))
	}
	if f.After != "" {
		conds = append(conds, "name > "+arg(f.After))
	}
	b.WriteString("SELECT name, revision, doc FROM packages")
	if len(conds) > 0 {
		b.WriteString(" WHERE ")
		b.WriteString(strings.Join(conds, " AND "))
	}
	b.WriteString(" ORDER BY name")
	if f.Limit > 0 {
		b.WriteString(" LIMIT " + arg(f.Limit))
	}
	if f.Offset > 0 {
		b.WriteString(" OFFSET " + arg(f.Offset))
	}
	return b.String(), args
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

// sqlUpdatePackage keeps the stored created_at: the column is not in the SET
// list, and jsonb_set copies it over whatever the caller put in the doc. The
// format is the one protojson writes and reads (RFC 3339, UTC).
const sqlUpdatePackage = `
UPDATE packages SET
    version = $2, disabled = $3, tags = $4, author = $5,
    revision = revision + 1, updated_at = $6,
    doc = jsonb_set($7::jsonb, '{metadata,created_at}',
        to_jsonb(to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
WHERE name = $1`

const (
	sqlUpdatePackageAny      = sqlUpdatePackage + ` RETURNING revision, created_at`
	sqlUpdatePackageExpected = sqlUpdatePackage + ` AND revision = $8 RETURNING revision, created_at`
)

// UpdatePackage implements store.Packages in one statement; only when it
// matches no row does a second query tell "absent" from "stale".
func (r *repo) UpdatePackage(ctx context.Context, p *pmv1.OPackage, expected int64) (store.Package, error) {
	pkg := proto.Clone(p).(*pmv1.OPackage)
	name := pkg.GetName()
	now := r.now()
	md := metadata(pkg)
	md.UpdatedAt = timestamppb.New(now)
	md.CreatedAt = nil // the statement writes the stored one into the doc
	doc, err := docMarshal.Marshal(pkg)
	if err != nil {
		return store.Package{}, fmt.Errorf("package %q: encode: %w", name, err)
	}

	args := []any{name, pkg.Version, pkg.GetDisabled(), tags(pkg), md.Author, now, doc}
	sql := sqlUpdatePackageAny
	if expected != store.AnyRevision {
		sql = sqlUpdatePackageExpected
		args = append(args, expected)
	}
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var (
		rev     int64
		created time.Time
	)
	if err := r.q.QueryRow(octx, sql, args...).Scan(&rev, &created); err != nil {
		return store.Package{}, r.missOrStale(ctx, "package", sqlPackageRevision, name, expected, r.classify(ctx, "package", name, err))
	}
	md.CreatedAt = timestamppb.New(created)
	return store.Package{Package: pkg, Revision: rev}, nil
}

const (
	sqlDeletePackageAny      = `DELETE FROM packages WHERE name = $1 RETURNING revision`
	sqlDeletePackageExpected = `DELETE FROM packages WHERE name = $1 AND revision = $2 RETURNING revision`
)

// DeletePackage implements store.Packages, like UpdatePackage.
func (r *repo) DeletePackage(ctx context.Context, name string, expected int64) error {
	sql, args := sqlDeletePackageAny, []any{name}
	if expected != store.AnyRevision {
		sql, args = sqlDeletePackageExpected, append(args, expected)
	}
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var rev int64
	if err := r.q.QueryRow(octx, sql, args...).Scan(&rev); err != nil {
		return r.missOrStale(ctx, "package", sqlPackageRevision, name, expected, r.classify(ctx, "package", name, err))
	}
	return nil
}

const sqlPackageRevision = `SELECT revision FROM packages WHERE name = $1`

// missOrStale refines a "no row matched" from a revision-checked write: the
// row is either absent (err stands) or at another revision (ErrStale). Any
// other error is returned unchanged. revisionSQL selects the revision of
// the object what named name.
func (r *repo) missOrStale(ctx context.Context, what, revisionSQL, name string, expected int64, err error) error {
	if expected == store.AnyRevision || !isNotFound(err) {
		return err
	}
	octx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	var rev int64
	if err := r.q.QueryRow(octx, revisionSQL, name).Scan(&rev); err != nil {
		return r.classify(ctx, what, name, err)
	}
	// The row exists; it did not match only because its revision differs
	// (or differed a moment ago, which is just as stale).
	return fmt.Errorf("%s %q: %w", what, name, store.ErrStale)
}

// decodePackage turns a row back into a store.Package.
func decodePackage(name string, rev int64, doc []byte) (store.Package, error) {
	pkg := new(pmv1.OPackage)
	if err := docUnmarshal.Unmarshal(doc, pkg); err != nil {
		return store.Package{}, fmt.Errorf("package %q: decode stored document: %w", name, err)
	}
	return store.Package{Package: pkg, Revision: rev}, nil
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
