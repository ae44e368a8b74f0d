// Package fault classifies errors by what the caller did wrong (or what went
// wrong below us), so that one boundary function can turn them into protocol
// status codes without knowing where they came from.
package fault

import (
	"errors"
	"fmt"
)

// Kind is the class of an error as a client should see it.
type Kind int

// The kinds of error. Internal is the zero value: anything unclassified is a bug.
const (
	// Internal is a bug; the client sees a generic message.
	Internal Kind = iota
	// Invalid is bad input: malformed, failed validation, unknown reference.
	Invalid
	// NotFound means the named object does not exist.
	NotFound
	// AlreadyExists means an object with that identity exists.
	AlreadyExists
	// Conflict means the caller's view is stale (revision mismatch), the
	// object is in use, or an idempotency key was reused with another body.
	Conflict
	// Unavailable means a dependency (storage, every needed CRM) is unreachable.
	Unavailable
	// DeadlineExceeded means a dependency did not answer in time.
	DeadlineExceeded
)

// String names the kind for logs.
func (k Kind) String() string {
	switch k {
	case Invalid:
		return "invalid"
	case NotFound:
		return "not_found"
	case AlreadyExists:
		return "already_exists"
	case Conflict:
		return "conflict"
	case Unavailable:
		return "unavailable"
	case DeadlineExceeded:
		return "deadline_exceeded"
	default:
		return "internal"
	}
}

// Error is an error with a Kind and a message that is safe to show a client.
type Error struct {
	Kind Kind
	// Msg is shown to clients; it never contains driver or stack text.
	Msg string
	// Err is the cause, kept for logs and errors.Is.
	Err error
}

// Error returns the client-safe message.
func (e *Error) Error() string { return e.Msg }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// New returns an Error of kind k.
func New(k Kind, format string, args ...any) *Error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...)}
}

// Wrap returns an Error of kind k with a client-safe message and a cause.
func Wrap(k Kind, cause error, format string, args ...any) *Error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...), Err: cause}
}

// Invalidf is New(Invalid, ...).
func Invalidf(format string, args ...any) *Error { return New(Invalid, format, args...) }

// NotFoundf is New(NotFound, ...).
func NotFoundf(format string, args ...any) *Error { return New(NotFound, format, args...) }

// KindOf returns the kind of the outermost *Error in err's chain, or Internal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return Internal
}
