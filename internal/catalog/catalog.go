// Package catalog is the package registry: it validates packages, keeps
// server-managed fields honest, and answers catalog queries. It knows
// nothing of protocols or databases.
package catalog

import (
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/namepattern"
	"github.com/oaas/pm/internal/store"
)

// Page-size bounds of list calls.
const (
	DefaultLimit = 100
	MaxLimit     = 1000
)

// Store is what the registry needs from storage.
type Store interface {
	store.Packages
	WithTx(ctx context.Context, fn func(ctx context.Context, tx store.Tx) error) error
}

// Hooks let the deployment side react to registry writes without the
// registry importing it.
type Hooks interface {
	// StagePackage runs inside the transaction that writes a package with
	// embedded deployments, to record them with it: what the package asks
	// for survives a crash right after the write. It checks the package as
	// CheckPackageWrite does.
	StagePackage(ctx context.Context, tx store.Tx, pkg *pmv1.OPackage) error
	// CheckPackageWrite runs inside the transaction that updates a package
	// without embedded deployments: the update must not remove a class or
	// function a deployment still uses (409 listing them).
	CheckPackageWrite(ctx context.Context, tx store.Tx, pkg *pmv1.OPackage) error
	// PackageWritten runs after a package was created or updated, to
	// schedule its embedded deployments. It must not fail the write.
	PackageWritten(ctx context.Context, pkg *pmv1.OPackage)
	// BeforePackageDelete runs before a package is deleted: it cascades to
	// the package's deployments (as configured, or when the request asks:
	// cascade) or refuses with a Conflict.
	BeforePackageDelete(ctx context.Context, name string, cascade bool) error
}

// Service is the package registry.
type Service struct {
	store Store
	hooks Hooks
	log   *slog.Logger
}

// New returns a registry over st. hooks may be nil.
func New(st Store, hooks Hooks, log *slog.Logger) *Service {
	return &Service{store: st, hooks: hooks, log: log}
}

// SetHooks installs hooks; the deploy service is built after the registry.
func (s *Service) SetHooks(h Hooks) { s.hooks = h }

// Normalize fills defaults and drops client-sent server-managed fields, so
// what is stored does not depend on what a client tried to set.
func Normalize(pkg *pmv1.OPackage) {
	if pkg.Metadata == nil {
		pkg.Metadata = &pmv1.PackageMetadata{}
	}
	pkg.Metadata.CreatedAt, pkg.Metadata.UpdatedAt = nil, nil
	for _, cls := range pkg.Classes {
		if st := cls.StateSpec; st != nil {
			if st.DefaultProvider == "" {
				st.DefaultProvider = "memory"
			}
			if st.SerializationFormat == "" {
				st.SerializationFormat = "json"
			}
		}
	}
	for _, d := range pkg.Deployments {
		if d.PackageName == "" {
			d.PackageName = pkg.Name
		}
		ClearServerFields(d)
	}
}

// ClearServerFields drops the server-managed fields of a deployment spec.
func ClearServerFields(d *pmv1.OClassDeployment) {
	d.Condition = pmv1.DeploymentCondition_PENDING
	d.Status = nil
	d.CreatedAt, d.UpdatedAt = nil, nil
}

// Create validates and stores a new package.
func (s *Service) Create(ctx context.Context, pkg *pmv1.OPackage) (store.Package, error) {
	if err := ValidatePackage(pkg); err != nil {
		return store.Package{}, err
	}
	pkg = proto.CloneOf(pkg)
	Normalize(pkg)
	rec, err := s.write(ctx, pkg, false, func(ctx context.Context, tx store.Packages) (store.Package, error) {
		return tx.CreatePackage(ctx, pkg)
	})
	if err != nil {
		return store.Package{}, err
	}
	s.log.InfoContext(ctx, "package created", "package", pkg.Name, "revision", rec.Revision)
	s.written(ctx, rec.Package)
	return rec, nil
}

// Update replaces the package called name. expected is the caller's revision
// ("" for last write wins).
func (s *Service) Update(ctx context.Context, name string, pkg *pmv1.OPackage, expected string) (store.Package, error) {
	if pkg == nil {
		return store.Package{}, fault.Invalidf("invalid package: package: is required")
	}
	if pkg.GetName() == "" {
		pkg = proto.CloneOf(pkg)
		pkg.Name = name
	}
	if pkg.GetName() != name {
		return store.Package{}, fault.Invalidf("name in path %q does not match name in body %q", name, pkg.GetName())
	}
	rev, err := ParseRevision(expected)
	if err != nil {
		return store.Package{}, err
	}
	if err := ValidatePackage(pkg); err != nil {
		return store.Package{}, err
	}
	pkg = proto.CloneOf(pkg)
	Normalize(pkg)
	rec, err := s.write(ctx, pkg, true, func(ctx context.Context, tx store.Packages) (store.Package, error) {
		return tx.UpdatePackage(ctx, pkg, rev)
	})
	if err != nil {
		return store.Package{}, err
	}
	s.log.InfoContext(ctx, "package updated", "package", name, "revision", rec.Revision)
	s.written(ctx, rec.Package)
	return rec, nil
}

// write stores a package with put. One with embedded deployments is
// written in a transaction that also stages them; an update in one that
// checks no deployment loses its class or functions; a plain create needs
// no transaction (nothing can depend on a package not yet stored), the
// common and cheaper case.
func (s *Service) write(ctx context.Context, pkg *pmv1.OPackage, update bool, put func(context.Context, store.Packages) (store.Package, error)) (store.Package, error) {
	if s.hooks == nil || (!update && len(pkg.GetDeployments()) == 0) {
		return put(ctx, s.store)
	}
	var rec store.Package
	err := s.store.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		var err error
		if rec, err = put(ctx, tx); err != nil {
			return err
		}
		if len(pkg.GetDeployments()) > 0 {
			return s.hooks.StagePackage(ctx, tx, rec.Package)
		}
		return s.hooks.CheckPackageWrite(ctx, tx, rec.Package)
	})
	return rec, err
}

func (s *Service) written(ctx context.Context, pkg *pmv1.OPackage) {
	if s.hooks != nil && len(pkg.GetDeployments()) > 0 {
		s.hooks.PackageWritten(ctx, proto.CloneOf(pkg))
	}
}

// Get returns one package.
func (s *Service) Get(ctx context.Context, name string) (store.Package, error) {
	if err := CheckName(name); err != nil {
		return store.Package{}, fault.Invalidf("name: %v", err)
	}
	return s.store.GetPackage(ctx, name)
}

// Delete removes a package after the deployment side agreed (cascade, as
// configured or asked for by this request, or no deployments).
func (s *Service) Delete(ctx context.Context, name, expected string, cascade bool) error {
	if err := CheckName(name); err != nil {
		return fault.Invalidf("name: %v", err)
	}
	rev, err := ParseRevision(expected)
	if err != nil {
		return err
	}
	cur, err := s.store.GetPackage(ctx, name)
	if err != nil {
		return err
	}
	// A stale caller must change nothing, and the cascade below cannot be
	// undone: check the revision before it runs (the store checks again).
	if rev != store.AnyRevision && cur.Revision != rev {
		return fmt.Errorf("package %q: %w", name, store.ErrStale)
	}
	if s.hooks != nil {
		if err := s.hooks.BeforePackageDelete(ctx, name, cascade); err != nil {
			return err
		}
	}
	if err := s.store.DeletePackage(ctx, name, rev); err != nil {
		return err
	}
	s.log.InfoContext(ctx, "package deleted", "package", name)
	return nil
}

// ListQuery is a package listing request.
type ListQuery struct {
	NamePattern string
	Disabled    *bool
	// Tags may hold comma-separated lists; any tag matches.
	Tags      []string
	Limit     int
	Offset    int
	PageToken string
}

// List returns one page of packages in name order and the token of the
// next page ("" on the last page).
func (s *Service) List(ctx context.Context, q ListQuery) ([]store.Package, string, error) {
	f := store.PackageFilter{NamePattern: q.NamePattern, Disabled: q.Disabled, Offset: q.Offset}
	for _, t := range q.Tags {
		for _, part := range strings.Split(t, ",") {
			if part = strings.TrimSpace(part); part != "" {
				f.Tags = append(f.Tags, part)
			}
		}
	}
	limit, err := PageLimit(q.Limit)
	if err != nil {
		return nil, "", err
	}
	if q.Offset < 0 {
		return nil, "", fault.Invalidf("offset: must not be negative")
	}
	if q.PageToken != "" {
		after, err := DecodePageToken(q.PageToken)
		if err != nil {
			return nil, "", err
		}
		f.After, f.Offset = after, 0
	}
	f.Limit = limit + 1 // one more tells whether another page exists
	recs, err := s.store.ListPackages(ctx, f)
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(recs) > limit {
		recs = recs[:limit]
		next = EncodePageToken(recs[len(recs)-1].Package.GetName())
	}
	return recs, next, nil
}

// ListClasses returns every class, with the name of its package, in package
// then declaration order.
// A non-empty filter keeps the classes whose key matches it as a name
// pattern.
func (s *Service) ListClasses(ctx context.Context, pkgName, filter string) ([]*pmv1.OClass, []string, error) {
	var classes []*pmv1.OClass
	var owners []string
	match := namepattern.Matcher(filter)
	err := s.each(ctx, pkgName, func(p *pmv1.OPackage) {
		for _, c := range p.GetClasses() {
			if !match(c.GetKey()) {
				continue
			}
			classes = append(classes, c)
			owners = append(owners, p.GetName())
		}
	})
	return classes, owners, err
}

// ListFunctions returns every function with the name of its package.
// A non-empty filter keeps the functions whose key matches it.
func (s *Service) ListFunctions(ctx context.Context, pkgName, filter string) ([]*pmv1.OFunction, []string, error) {
	var fns []*pmv1.OFunction
	var owners []string
	match := namepattern.Matcher(filter)
	err := s.each(ctx, pkgName, func(p *pmv1.OPackage) {
		for _, f := range p.GetFunctions() {
			if !match(f.GetKey()) {
				continue
			}
			fns = append(fns, f)
			owners = append(owners, p.GetName())
		}
	})
	return fns, owners, err
}

// each visits one package or, in pages, every package.
func (s *Service) each(ctx context.Context, pkgName string, visit func(*pmv1.OPackage)) error {
	if pkgName != "" {
		rec, err := s.Get(ctx, pkgName)
		if err != nil {
			return err
		}
		visit(rec.Package)
		return nil
	}
	after := ""
	for {
		recs, err := s.store.ListPackages(ctx, store.PackageFilter{After: after, Limit: MaxLimit})
		if err != nil {
			return err
		}
		for _, r := range recs {
			visit(r.Package)
		}
		if len(recs) < MaxLimit {
			return nil
		}
		after = recs[len(recs)-1].Package.GetName()
	}
}

// PageLimit applies the default and bounds of a page size.
func PageLimit(n int) (int, error) {
	switch {
	case n < 0:
		return 0, fault.Invalidf("limit: must not be negative")
	case n == 0:
		return DefaultLimit, nil
	case n > MaxLimit:
		return MaxLimit, nil
	}
	return n, nil
}

// EncodePageToken makes an opaque token that resumes after key.
func EncodePageToken(key string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("k:" + key))
}

// DecodePageToken reverses EncodePageToken.
func DecodePageToken(tok string) (string, error) {
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || !strings.HasPrefix(string(raw), "k:") {
		return "", fault.Invalidf("page_token: %q is not a token returned by a previous list call", tok)
	}
	return strings.TrimPrefix(string(raw), "k:"), nil
}

// ParseRevision parses a client-supplied revision: "" means any; ETag forms
// ("3", W/"3", 3) are accepted, "*" means any existing.
func ParseRevision(s string) (int64, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "W/")
	s = strings.Trim(s, `"`)
	if s == "" || s == "*" {
		return store.AnyRevision, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 1 {
		return 0, fault.Invalidf("revision %q is not a revision returned by the server", s)
	}
	return n, nil
}

// FormatRevision renders a revision for clients.
func FormatRevision(rev int64) string { return strconv.FormatInt(rev, 10) }

// ETag renders a revision as an HTTP entity tag.
func ETag(rev int64) string { return fmt.Sprintf("%q", FormatRevision(rev)) }
