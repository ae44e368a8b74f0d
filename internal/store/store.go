// Package store defines PM's persistence contract. Two implementations
// satisfy it, memory (the embedded default) and postgres, and both pass the
// conformance suite in storetest.
package store

import (
	"context"
	"time"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/fault"
)

// Errors every implementation returns, wrapped with the object's name.
var (
	// ErrNotFound: the object does not exist.
	ErrNotFound = fault.New(fault.NotFound, "not found")
	// ErrAlreadyExists: an object with that identity exists.
	ErrAlreadyExists = fault.New(fault.AlreadyExists, "already exists")
	// ErrStale: the caller's expected revision is not the stored one.
	ErrStale = fault.New(fault.Conflict, "revision is stale")
	// ErrUnavailable: the backing database cannot be reached. Its message is
	// safe for clients; the cause is kept for logs.
	ErrUnavailable = fault.New(fault.Unavailable, "storage unavailable")
)

// AnyRevision as an expected revision means "last write wins".
const AnyRevision int64 = 0

// Package is a stored package and its revision. Revisions start at 1 and grow
// by one on every write.
type Package struct {
	Package  *pmv1.OPackage
	Revision int64
}

// PackageFilter selects packages for ListPackages. The zero value selects all.
// Results are always ordered by name.
type PackageFilter struct {
	// NamePattern matches a substring of the name; '*' matches any run of
	// characters. Empty matches all.
	NamePattern string
	// Disabled, when set, selects packages with that disabled flag.
	Disabled *bool
	// Tags selects packages carrying at least one of the tags.
	Tags []string
	// After selects names strictly greater than After (keyset paging).
	After string
	// Offset skips that many matches.
	Offset int
	// Limit caps the result; 0 means no cap.
	Limit int
}

// Packages is the package registry.
//
// Implementations stamp metadata.created_at on create, keep it on update, and
// set metadata.updated_at on every write from their clock. They store a copy:
// callers may reuse the message they passed in.
type Packages interface {
	// CreatePackage stores a new package; ErrAlreadyExists if the name is taken.
	CreatePackage(ctx context.Context, p *pmv1.OPackage) (Package, error)
	// GetPackage returns a package; ErrNotFound if absent.
	GetPackage(ctx context.Context, name string) (Package, error)
	// ListPackages returns the matching packages in name order.
	ListPackages(ctx context.Context, f PackageFilter) ([]Package, error)
	// UpdatePackage replaces a package. With expected != AnyRevision it fails
	// with ErrStale unless the stored revision equals expected.
	UpdatePackage(ctx context.Context, p *pmv1.OPackage, expected int64) (Package, error)
	// DeletePackage removes a package, with the same revision check as update.
	DeletePackage(ctx context.Context, name string, expected int64) error
}

// Tx is what a transaction can do. It grows with each aggregate PM stores.
type Tx interface {
	Packages
}

// Store is a PM store.
type Store interface {
	Tx
	// WithTx runs fn in one transaction: all of its writes land or none do.
	// Implementations retry fn a bounded number of times on serialization
	// failures, so fn must not have side effects outside tx.
	WithTx(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error
	// Ping reports whether the store can serve requests.
	Ping(ctx context.Context) error
	// Close releases resources.
	Close()
}

// Clock returns the current time; stores take one so tests can fix time.
type Clock func() time.Time
