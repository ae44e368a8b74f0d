package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"

	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// classify translates an error from pgx into the store's vocabulary. It is
// the only place that knows pgx's error types, so every operation reports
// the same condition the same way.
//
// parent is the caller's context (not the one with the per-call timeout):
// when the caller's own deadline or cancellation ended the call, that is
// reported as such, while the per-call timeout firing means the database
// is not answering (ErrUnavailable). what names the object ("package"), name its identity; both may
// be empty for operations on no particular object.
func (r *repo) classify(parent context.Context, what, name string, err error) error {
	subject := subject(what, name)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return fmt.Errorf("%s: %w", subject, store.ErrNotFound)
	case sqlState(err) == "23505": // unique_violation
		return fmt.Errorf("%s: %w", subject, store.ErrAlreadyExists)
	case sqlState(err) == "23503": // foreign_key_violation
		// Only a row that refers to another (a mapping to its deployment)
		// can violate one, and only when that other row is missing.
		return fmt.Errorf("%s: %w", subject, store.ErrNotFound)
	case sqlState(err) == "42P01", sqlState(err) == "42703": // undefined_table, undefined_column
		// The schema is missing or older than this build: nothing the
		// caller sent is wrong, and /readyz already says how to fix it.
		return fault.Wrap(fault.Unavailable, fmt.Errorf("%s: %w: %w", subject, store.ErrSchema, err),
			"storage schema is missing or out of date")
	case sqlState(err) == "22P05", sqlState(err) == "22021":
		// untranslatable_character (a \u0000 in jsonb), character_not_in_repertoire
		// (a NUL byte in a text column): Postgres text cannot hold NUL.
		return fault.Wrap(fault.Invalid, fmt.Errorf("%s: %w", subject, err),
			"%s: text contains a NUL character, which cannot be stored", subject)
	case errors.Is(parent.Err(), context.DeadlineExceeded):
		// The caller's deadline passed while the database worked.
		return fault.Wrap(fault.DeadlineExceeded, fmt.Errorf("%s: %w", subject, parent.Err()),
			"storage did not answer in time")
	case parent.Err() != nil:
		// The caller gave up (cancelled); nobody waits for a nicer error.
		return fmt.Errorf("%s: %w", subject, parent.Err())
	case isUnavailable(err):
		return unavailable(subject, err)
	default:
		// Internal: the boundary shows clients a generic message, so the
		// driver's text may stay in the chain for logs.
		return fmt.Errorf("%s: %w", subject, err)
	}
}

// subject names an object for error messages: `package "p"`.
func subject(what, name string) string {
	switch {
	case name != "":
		return fmt.Sprintf("%s %q", what, name)
	case what != "":
		return what
	default:
		return "postgres"
	}
}

// unavailable returns the error for "the database cannot be reached". Its
// message is the client-safe "storage unavailable"; errors.Is matches
// store.ErrUnavailable and the driver error stays reachable for logs.
func unavailable(op string, cause error) error {
	return fault.Wrap(fault.Unavailable,
		fmt.Errorf("%s: %w: %w", op, store.ErrUnavailable, cause),
		"storage unavailable")
}

// mayHaveCommitted returns the error for a write whose outcome is unknown:
// the statement (or COMMIT) went out but no answer came back. It is
// store.ErrMayHaveCommitted, Unavailable, and also matches
// store.ErrUnavailable and the cause (a context error stays visible to
// errors.Is).
func mayHaveCommitted(op string, cause error) error {
	return fault.Wrap(fault.Unavailable,
		fmt.Errorf("%s: %w: %w: %w", op, store.ErrMayHaveCommitted, store.ErrUnavailable, cause),
		"%s", store.ErrMayHaveCommitted.Msg)
}

// outcomeUnknown reports whether a write that failed with err may still
// have been applied by the server: the failure is the connection's (lost,
// timed out, cancelled) rather than an answer from the server, and pgx
// cannot vouch that nothing was sent. A server error (any SQLSTATE), an
// ErrNoRows, or a failure pgx marks safe to retry (nothing sent) are
// definite outcomes.
func outcomeUnknown(err error) bool {
	var connectErr *pgconn.ConnectError
	if err == nil || sqlState(err) != "" || errors.Is(err, pgx.ErrNoRows) || pgconn.SafeToRetry(err) ||
		errors.As(err, &connectErr) || errors.Is(err, puddle.ErrClosedPool) {
		return false
	}
	return isUnavailable(err) || errors.Is(err, context.Canceled)
}

// isUnavailable reports whether err says the database cannot serve at all
// (as opposed to rejecting this one statement).
func isUnavailable(err error) bool {
	// Our per-call timeout fired (the caller's own deadline is checked
	// before this), or the pool was closed under us.
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, puddle.ErrClosedPool) {
		return true
	}
	if pgconn.Timeout(err) || pgconn.SafeToRetry(err) {
		return true
	}
	var connectErr *pgconn.ConnectError
	if errors.As(err, &connectErr) {
		return true
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return true
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) {
		return true
	}
	code := sqlState(err)
	switch {
	case strings.HasPrefix(code, "08"): // connection_exception and friends
		return true
	case code == "53300", // too_many_connections
		code == "57P01", // admin_shutdown
		code == "57P02", // crash_shutdown
		code == "57P03": // cannot_connect_now (starting up, recovering)
		return true
	}
	return false
}

// sqlState returns the SQLSTATE of a server error in err's chain, or "".
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// isNotFound reports whether err is (or wraps) store.ErrNotFound.
func isNotFound(err error) bool { return errors.Is(err, store.ErrNotFound) }
