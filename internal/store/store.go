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
	// ErrMayHaveCommitted: the connection to the database failed while a
	// write was being committed, so it may have landed or not. It is
	// Unavailable (retryable) and its message tells the client so: a retry
	// carrying the same Idempotency-Key gets the first outcome instead of an
	// "already exists" for its own write. Errors that match it also match
	// ErrUnavailable.
	ErrMayHaveCommitted = fault.New(fault.Unavailable,
		"storage did not confirm the write; it may have succeeded: retry with the same Idempotency-Key")
	// ErrBusy: a transaction kept colliding with concurrent ones and the
	// store gave up retrying it. Nothing was written; the client may retry.
	// Errors that match it also match ErrUnavailable.
	ErrBusy = fault.New(fault.Unavailable, "storage is busy with concurrent writes; retry")
	// ErrSchema: the database is reachable but its schema is not the one
	// this build expects (missing, or older); Ready returns it.
	ErrSchema = fault.New(fault.Unavailable, "storage schema is not at the expected migration")
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

// Deployment is a stored class deployment and its revision. Revisions start
// at 1 and grow by one on every write, as for packages.
type Deployment struct {
	Deployment *pmv1.OClassDeployment
	Revision   int64
}

// DeploymentFilter selects deployments for ListDeployments. The zero value
// selects all. Results are always ordered by key.
type DeploymentFilter struct {
	// PackageName and ClassKey, when set, must match exactly.
	PackageName string
	ClassKey    string
	// TargetEnv, when set, selects deployments whose target_envs contain it.
	TargetEnv string
	// After selects keys strictly greater than After (keyset paging).
	After string
	// Offset skips that many matches.
	Offset int
	// Limit caps the result; 0 means no cap.
	Limit int
}

// Mapping records that a deployment's unit on a cluster has the given id at
// that cluster's CRM.
type Mapping struct {
	DeploymentKey string
	Cluster       string
	UnitID        string
}

// Deployments stores class deployments and their per-cluster unit ids.
//
// Implementations stamp created_at/updated_at on the OClassDeployment as
// for packages and store a copy.
type Deployments interface {
	// CreateDeployment stores a new deployment; ErrAlreadyExists if the key
	// is taken.
	CreateDeployment(ctx context.Context, d *pmv1.OClassDeployment) (Deployment, error)
	// GetDeployment returns a deployment; ErrNotFound if absent.
	GetDeployment(ctx context.Context, key string) (Deployment, error)
	// ListDeployments returns the matching deployments in key order.
	ListDeployments(ctx context.Context, f DeploymentFilter) ([]Deployment, error)
	// UpdateDeployment replaces a deployment, with the same revision check as
	// UpdatePackage.
	UpdateDeployment(ctx context.Context, d *pmv1.OClassDeployment, expected int64) (Deployment, error)
	// DeleteDeployment removes a deployment and its mappings, with the same
	// revision check as update.
	DeleteDeployment(ctx context.Context, key string, expected int64) error

	// PutMapping records (or replaces) the unit ids of deployments on
	// clusters, all in one write; ErrNotFound, and nothing written, if a
	// deployment does not exist. A wide fan-out records its mappings
	// together instead of one round trip each.
	PutMapping(ctx context.Context, ms ...Mapping) error
	// DeleteMapping removes one cluster's mapping; deleting an absent
	// mapping is not an error.
	DeleteMapping(ctx context.Context, deploymentKey, cluster string) error
	// Mappings returns a deployment's mappings in cluster order (empty, not
	// ErrNotFound, for an unknown deployment).
	Mappings(ctx context.Context, deploymentKey string) ([]Mapping, error)
	// AllMappings returns every mapping, ordered by deployment key then
	// cluster; the reconciler compares them with what clusters report.
	AllMappings(ctx context.Context) ([]Mapping, error)
}

// OperationKind says what an operation does to a deployment.
type OperationKind string

// Operation kinds.
const (
	// OpDeploy sends units to clusters (create, re-plan, self-heal).
	OpDeploy OperationKind = "deploy"
	// OpDelete removes units (one cluster or all) and, when DropDeployment
	// is set, the deployment itself.
	OpDelete OperationKind = "delete"
	// OpRollback removes the units a failed deploy may have created.
	OpRollback OperationKind = "rollback"
	// OpHeal re-sends units of an existing deployment (self-heal, re-plan,
	// retry of a failed auto-deploy); unlike OpDeploy it never rolls back
	// what already runs.
	OpHeal OperationKind = "heal"
)

// OperationState is where an operation or a step is.
type OperationState string

// Operation and step states.
const (
	OpPending   OperationState = "pending"
	OpSucceeded OperationState = "succeeded"
	OpFailed    OperationState = "failed"
)

// Step is one cluster's part of an operation.
type Step struct {
	Cluster string
	UnitID  string
	State   OperationState
	// Attempts counts CRM calls made for the step, across PM restarts.
	Attempts int
	// Error is the last failure, safe to show to clients.
	Error string
}

// Operation is a durable multi-step change to clusters. It is written before
// any CRM is called, each step's outcome is recorded as it happens, and an
// operation that is still pending when its lease runs out (its PM died) is
// claimed and finished by another PM (or the same one after a restart).
//
// Stores return times in UTC at microsecond precision (Postgres's), and a
// zero LeaseUntil for an operation nobody holds. Steps keep their order.
// A lease only guards against other claimers: an owner whose lease ran out
// may still write until someone else claims the operation.
type Operation struct {
	ID            string
	Kind          OperationKind
	DeploymentKey string
	// DropDeployment: a delete operation also removes the deployment record
	// once every step succeeded.
	DropDeployment bool
	State          OperationState
	Steps          []Step
	// Owner holds the lease until LeaseUntil; empty when unleased.
	Owner      string
	LeaseUntil time.Time
	Error      string
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// Operations stores durable operations.
type Operations interface {
	// CreateOperation stores op (ID set by the caller, State pending) leased
	// to op.Owner until op.LeaseUntil. ErrAlreadyExists if the id is taken.
	// The store stamps CreatedAt and UpdatedAt from its clock; an empty
	// State (of the operation or a step) is stored as OpPending.
	CreateOperation(ctx context.Context, op Operation) error
	// GetOperation returns an operation; ErrNotFound if absent.
	GetOperation(ctx context.Context, id string) (Operation, error)
	// ListOperations returns a deployment's operations, oldest first; with
	// an empty key, every operation.
	ListOperations(ctx context.Context, deploymentKey string) ([]Operation, error)
	// UpdateStep replaces the steps of op id for each step's Cluster
	// (appending those the operation has no step for yet) in one write,
	// provided owner still holds the lease (ErrStale otherwise, so a PM that
	// lost its lease cannot overwrite the new owner's progress; an empty
	// owner never holds one). ErrNotFound if the operation does not exist.
	// Recording many outcomes at once keeps a wide fan-out from rewriting
	// the operation once per cluster.
	UpdateStep(ctx context.Context, id, owner string, steps ...Step) error
	// FinishOperation sets the final state and error of an operation held by
	// owner and releases the lease (ErrStale if owner lost it).
	FinishOperation(ctx context.Context, id, owner string, state OperationState, errText string) error
	// RenewLease extends owner's lease (ErrStale if owner lost it,
	// ErrNotFound if the operation does not exist).
	RenewLease(ctx context.Context, id, owner string, until time.Time) error
	// ClaimOperations leases up to limit pending operations whose lease has
	// expired (LeaseUntil <= now, or no lease at all) to owner until until,
	// oldest first, and returns them as claimed. Two callers never claim the
	// same operation (Postgres: FOR UPDATE SKIP LOCKED). A limit <= 0 claims
	// nothing.
	ClaimOperations(ctx context.Context, owner string, now, until time.Time, limit int) ([]Operation, error)
	// PurgeOperations deletes finished (not pending) operations last updated
	// before t and returns how many it deleted.
	PurgeOperations(ctx context.Context, before time.Time) (int, error)
}

// IdempotencyRecord remembers the response to a request that carried an
// Idempotency-Key.
type IdempotencyRecord struct {
	// Scope is the method the key was used with; keys are per scope.
	Scope string
	Key   string
	// RequestHash identifies the request body; the same key with a
	// different hash is a conflict.
	RequestHash string
	// Response is the serialized response to replay.
	Response  []byte
	ExpiresAt time.Time
}

// Idempotency stores idempotency keys.
type Idempotency interface {
	// PutIdempotency stores rec; ErrAlreadyExists if an unexpired record
	// with the same scope and key exists (an expired one is replaced).
	// "Unexpired" is judged at the store's clock, since rec carries no now.
	PutIdempotency(ctx context.Context, rec IdempotencyRecord) error
	// GetIdempotency returns an unexpired record (ExpiresAt after now;
	// expired ones count as absent: ErrNotFound).
	GetIdempotency(ctx context.Context, scope, key string, now time.Time) (IdempotencyRecord, error)
	// PurgeIdempotency deletes records that expired before t and returns
	// how many it deleted.
	PurgeIdempotency(ctx context.Context, before time.Time) (int, error)
}

// Tx is what a transaction can do. It grows with each aggregate PM stores.
type Tx interface {
	Packages
	Deployments
	Operations
	Idempotency
	Audit
}

// Store is a PM store.
type Store interface {
	Tx
	// WithTx runs fn in one transaction: all of its writes land or none do.
	// Implementations retry fn a bounded number of times on serialization
	// failures, so fn must not have side effects outside tx. When the
	// retries run out the error is ErrBusy (Unavailable), never a Conflict:
	// a Conflict means the caller's request itself conflicts (a taken name,
	// a stale revision). A commit whose outcome is unknown fails with
	// ErrMayHaveCommitted.
	WithTx(ctx context.Context, fn func(ctx context.Context, tx Tx) error) error
	// Ping reports whether the store can be reached.
	Ping(ctx context.Context) error
	// Ready reports whether the store can serve requests: reachable (as
	// Ping) and, for a database, its schema at the migration this build
	// expects (ErrSchema otherwise, with a message that says how to fix
	// it). Readiness probes call it.
	Ready(ctx context.Context) error
	// Close releases resources.
	Close()
}

// Clock returns the current time; stores take one so tests can fix time.
type Clock func() time.Time
