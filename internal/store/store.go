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
	// ErrOperationActive: the deployment already has an active operation.
	ErrOperationActive = fault.New(fault.Conflict, "another operation is in progress")
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

// DeploymentRow is a stored class deployment: the user's spec, the last
// replica plan, and the columns lists filter on. Revisions start at 1 and
// grow by one on every UpdateDeployment, as for packages; rollout writes
// (conditions, unit ids) do not change them.
type DeploymentRow struct {
	Key         string
	PackageName string
	ClassKey    string
	// Targets are the clusters the deployment is on, in placement order.
	Targets []string
	// Spec is the user's document as the API took it (server-managed
	// fields cleared). Nil when read with DeploymentFilter.SkipSpec.
	Spec *pmv1.OClassDeployment
	// Replicas, TargetAvailability, AchievedAvailability, Algorithm and
	// Strong are the last plan; Replicas 0 means never planned.
	Replicas             int
	TargetAvailability   float64
	AchievedAvailability float64
	Algorithm            string
	Strong               bool
	// LastError is the last operation's failure, safe for clients.
	LastError string
	// RequestKey identifies the client request (idempotency key and body)
	// that created the deployment, so that its retry is recognised.
	RequestKey string
	// SpecRevision is the RevisionRow the spec was stored as (0 for a
	// deployment written before revisions were kept).
	SpecRevision int64
	// PackageDigest fingerprints the parts of the package the deployment
	// was last planned from (0: unknown).
	PackageDigest int64
	Revision      int64
	CreatedAt     time.Time
	UpdatedAt     time.Time
}

// DeploymentFilter selects deployments for ListDeployments. The zero value
// selects all. Results are always ordered by key.
type DeploymentFilter struct {
	// PackageName and ClassKey, when set, must match exactly.
	PackageName string
	ClassKey    string
	// Target, when set, selects deployments whose targets contain it.
	Target string
	// Keys, when set, selects those deployments (absent keys are skipped).
	Keys []string
	// After selects keys strictly greater than After (keyset paging).
	After string
	// Offset skips that many matches.
	Offset int
	// Limit caps the result; 0 means no cap.
	Limit int
	// SkipSpec leaves Spec nil: background passes read only the columns.
	SkipSpec bool
}

// RolloutRow is one cluster's part of a deployment: the unit PM sends there
// and how far it got. A deployment has at most one per cluster.
type RolloutRow struct {
	DeploymentKey string
	Cluster       string
	UnitID        string
	// State and Condition are the deployment core's vocabulary; the store
	// interprets only RolloutDeployed (see UpdateConditions).
	State              string
	Condition          string
	Availability       float64
	AvailabilitySource string
	Error              string
	Attempts           int
}

// RolloutDeployed is the rollout state of a unit the CRM accepted.
const RolloutDeployed = "deployed"

// RolloutFilter selects rollouts for ListRollouts. Set DeploymentKeys, or
// Cluster, or UnitIDs (or Cluster and UnitIDs).
type RolloutFilter struct {
	// DeploymentKeys selects the rollouts of these deployments, ordered by
	// deployment key then cluster.
	DeploymentKeys []string
	// Cluster selects the rollouts on one cluster, ordered by unit id.
	Cluster string
	// UnitIDs selects rollouts with these unit ids (on Cluster when set),
	// ordered by cluster then unit id.
	UnitIDs []string
	// After, with Cluster, selects unit ids strictly greater (keyset paging).
	After string
	// Limit caps the result; 0 means no cap.
	Limit int
}

// ConditionUpdate sets the condition of one deployed unit.
type ConditionUpdate struct {
	DeploymentKey, Cluster, UnitID, Condition string
}

// RevisionRow is one spec revision of a deployment, kept for rollbacks and
// for reverting a failed update: the spec and the plan it ran with.
// Revisions of a deployment are numbered 1, 2, 3, ... in write order.
type RevisionRow struct {
	DeploymentKey string
	Revision      int64
	Spec          *pmv1.OClassDeployment
	// Targets, Replicas, TargetAvailability, AchievedAvailability,
	// Algorithm and Strong are the plan of the revision (as on
	// DeploymentRow).
	Targets              []string
	Replicas             int
	TargetAvailability   float64
	AchievedAvailability float64
	Algorithm            string
	Strong               bool
	// Reason says what wrote it ("created", "updated", ...).
	Reason    string
	CreatedAt time.Time
}

// Deployments stores class deployments and their rollouts.
//
// Implementations stamp CreatedAt and UpdatedAt and store copies.
type Deployments interface {
	// CreateDeployment stores a new deployment at revision 1 with its first
	// rollouts (whose DeploymentKey must be d.Key); ErrAlreadyExists if the
	// key is taken. Rollouts of a new deployment are plain inserts: no read
	// of neighbouring rows, which concurrent creates would conflict on.
	CreateDeployment(ctx context.Context, d DeploymentRow, rollouts ...RolloutRow) (DeploymentRow, error)
	// GetDeployment returns a deployment; ErrNotFound if absent.
	GetDeployment(ctx context.Context, key string) (DeploymentRow, error)
	// ListDeployments returns the matching deployments in key order.
	ListDeployments(ctx context.Context, f DeploymentFilter) ([]DeploymentRow, error)
	// UpdateDeployment replaces a deployment's spec, plan and columns
	// (CreatedAt and RequestKey are kept), with the revision check of
	// UpdatePackage.
	UpdateDeployment(ctx context.Context, d DeploymentRow, expected int64) (DeploymentRow, error)
	// DeleteDeployment removes a deployment and its rollouts, with the same
	// revision check.
	DeleteDeployment(ctx context.Context, key string, expected int64) error

	// PutRollouts records (or replaces, by deployment and cluster) rollouts
	// in one write; ErrNotFound, and nothing written, if a deployment does
	// not exist.
	PutRollouts(ctx context.Context, rs ...RolloutRow) error
	// ListRollouts returns the matching rollouts (see RolloutFilter).
	ListRollouts(ctx context.Context, f RolloutFilter) ([]RolloutRow, error)
	// UpdateConditions sets the conditions of deployed units in one write,
	// skipping any whose rollout no longer has that unit or state (a delete
	// or re-deploy finished meanwhile), and returns how many changed.
	UpdateConditions(ctx context.Context, us ...ConditionUpdate) (int, error)

	// PutRevision stores a spec revision of an existing deployment
	// (ErrNotFound if it does not exist, ErrAlreadyExists if it has that
	// revision number) and, when keep > 0, drops the deployment's
	// revisions numbered keep or more below it, in one write. The store
	// stamps CreatedAt. A deployment's revisions go with it.
	PutRevision(ctx context.Context, r RevisionRow, keep int) error
	// ListRevisions returns a deployment's revisions, newest first (none
	// for an unknown deployment).
	ListRevisions(ctx context.Context, key string) ([]RevisionRow, error)
}

// Operation states the store interprets: running and waiting operations are
// active, claimable once their lease (or pause) is over, and at most one
// per deployment.
const (
	OperationRunning = "running"
	OperationWaiting = "waiting"
)

// StepRow is one cluster's part of an operation.
type StepRow struct {
	Cluster  string
	UnitID   string
	State    string
	Attempts int
	Error    string
}

// OperationRow is a durable multi-step change to clusters (see the deploy
// package). Stores return times in UTC at microsecond precision
// (Postgres's), and a zero LeaseUntil for no lease. Steps keep their order.
// A lease only guards against other claimers: an owner whose lease ran out
// may still write until someone else claims the operation.
type OperationRow struct {
	ID            string
	Kind          string
	DeploymentKey string
	Drop          bool
	State         string
	Steps         []StepRow
	// Owner holds the lease until LeaseUntil; empty when nobody does (a
	// waiting operation, whose LeaseUntil is then when it may run again).
	Owner      string
	LeaseUntil time.Time
	Error      string
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

// OperationFilter selects operations for ListOperations, oldest first.
type OperationFilter struct {
	// DeploymentKey, when set, selects one deployment's operations.
	DeploymentKey string
	// Active selects only running and waiting operations (an index serves
	// it, so finished ones cost nothing).
	Active bool
	// AfterTime and AfterID select operations after (CreatedAt, ID) in
	// that order (keyset paging); a zero AfterTime selects from the start.
	AfterTime time.Time
	AfterID   string
	// Limit caps the result; 0 means no cap.
	Limit int
}

// Operations stores durable operations.
type Operations interface {
	// CreateOperation stores op leased to op.Owner until op.LeaseUntil.
	// ErrAlreadyExists if the id is taken; ErrOperationActive if op is active and its
	// deployment already has an active operation. The store stamps
	// CreatedAt and UpdatedAt.
	CreateOperation(ctx context.Context, op OperationRow) error
	// GetOperation returns an operation; ErrNotFound if absent.
	GetOperation(ctx context.Context, id string) (OperationRow, error)
	// ListOperations returns the matching operations, oldest first.
	ListOperations(ctx context.Context, f OperationFilter) ([]OperationRow, error)
	// UpdateSteps replaces the steps of operation id for each step's
	// Cluster (appending those it has no step for yet) in one write,
	// provided owner holds the lease (ErrStale otherwise; an empty owner
	// never holds one). ErrNotFound if the operation does not exist.
	UpdateSteps(ctx context.Context, id, owner string, steps ...StepRow) error
	// RecordSteps is UpdateSteps and PutRollouts as one atomic write,
	// without a transaction: a step's outcome and its cluster's rollout land
	// together, and the many operations recording at once do not conflict
	// with each other as serializable transactions would. Errors are those
	// of the two (nothing is written on any).
	RecordSteps(ctx context.Context, id, owner string, steps []StepRow, rollouts []RolloutRow) error
	// SetOperationState moves an operation held by owner to state with
	// errText and releases the lease; until is when a waiting operation may
	// be claimed again (zero for none). ErrStale if owner lost the lease.
	SetOperationState(ctx context.Context, id, owner, state, errText string, until time.Time) error
	// RenewLease extends owner's lease (ErrStale if owner lost it,
	// ErrNotFound if the operation does not exist).
	RenewLease(ctx context.Context, id, owner string, until time.Time) error
	// ClaimOperations leases up to limit active operations whose lease or
	// pause is over (LeaseUntil <= now, or none) to owner until until,
	// oldest first, sets them running and returns them as claimed. Two
	// callers never claim the same operation. A limit <= 0 claims nothing.
	ClaimOperations(ctx context.Context, owner string, now, until time.Time, limit int) ([]OperationRow, error)
	// PurgeOperations deletes finished operations last updated before t
	// and returns how many it deleted.
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
