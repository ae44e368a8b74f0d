package store

import "errors"

// ChangeKind names the kind of object a committed change touched, as the
// watch streams name them.
type ChangeKind string

// The kinds of object the change feed reports.
const (
	ChangePackage    ChangeKind = "packages"
	ChangeDeployment ChangeKind = "deployments"
	ChangeOperation  ChangeKind = "operations"
)

// ChangeOp is what happened to the object's row.
type ChangeOp byte

// The row operations. A change to a deployment's rollouts is an update of
// the deployment.
const (
	ChangeInsert ChangeOp = 'I'
	ChangeUpdate ChangeOp = 'U'
	ChangeDelete ChangeOp = 'D'
)

// Change is one committed change in a store's change feed. It names the
// object, not its content: a watcher reads the object as it is when the
// change reaches it.
type Change struct {
	// Seq is the change's position in the feed: it grows with every change,
	// and a feed delivers changes in Seq order only once every change with
	// a smaller Seq has committed or rolled back.
	Seq int64
	// Tx identifies the transaction (or single write) that made the change;
	// changes of one transaction share it.
	Tx   int64
	Kind ChangeKind
	// Key is the object's identity: a package name, a deployment key, an
	// operation id.
	Key string
	// Parent is an operation's deployment key ("" for other kinds).
	Parent string
	Op     ChangeOp
}

// ErrCursorExpired is a feed's answer to a read from a position older than
// the history it keeps: the reader has to start again from a snapshot.
var ErrCursorExpired = errors.New("the change feed no longer holds changes that old")
