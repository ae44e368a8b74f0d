package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"syscall"

	"connectrpc.com/connect"
)

// The exit codes of pmctl, for scripts (listed in pmctl --help).
const (
	// ExitOK is success.
	ExitOK = 0
	// ExitError is any failure without a more specific code.
	ExitError = 1
	// ExitUsage is a command line pmctl cannot run.
	ExitUsage = 2
	// ExitNotFound means the named object does not exist.
	ExitNotFound = 3
	// ExitConflict means the object exists already, the caller's revision is
	// stale, or the object is busy.
	ExitConflict = 4
	// ExitUnavailable means PM is unreachable, unavailable, or too slow.
	ExitUnavailable = 5
)

// exitError is an error with its exit code and a message for people.
type exitError struct {
	code int
	msg  string
	err  error
}

func (e *exitError) Error() string { return e.msg }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &exitError{code: ExitUsage, msg: fmt.Sprintf(format, args...)}
}

func failf(code int, format string, args ...any) error {
	return &exitError{code: code, msg: fmt.Sprintf(format, args...)}
}

// ExitCode is the process exit code for err (nil is ExitOK).
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return codeFor(ce.Code())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return ExitUnavailable
	}
	return ExitError
}

func codeFor(c connect.Code) int {
	switch c {
	case connect.CodeNotFound:
		return ExitNotFound
	case connect.CodeAlreadyExists, connect.CodeAborted, connect.CodeFailedPrecondition:
		return ExitConflict
	case connect.CodeUnavailable, connect.CodeDeadlineExceeded:
		return ExitUnavailable
	}
	return ExitError
}

// Report writes err to w as pmctl's one-line error message.
func Report(w io.Writer, err error) {
	if err == nil {
		return
	}
	msg := err.Error()
	if ExitCode(err) == ExitUsage && !strings.Contains(msg, "--help") {
		msg += " (see 'pmctl --help')"
	}
	_, _ = fmt.Fprintf(w, "error: %s\n", msg)
}

// apiError turns an error of a call to PM into one whose message names the
// problem in PM's words (never a Go type), keeping its exit code. what
// names what was being done, e.g. `getting package "x"`.
func (c *conn) apiError(what string, err error) error {
	if err == nil {
		return nil
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	if errors.Is(err, context.Canceled) {
		return &exitError{code: ExitError, msg: prefixed(what, "interrupted"), err: err}
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return &exitError{code: ExitCode(err), msg: prefixed(what, err.Error()), err: err}
	}
	code := codeFor(ce.Code())
	if msg, ok := transportProblem(err); ok {
		return &exitError{code: ExitUnavailable, msg: prefixed(what, fmt.Sprintf("cannot reach PM at %s: %s", c.base, msg)), err: err}
	}
	msg := ce.Message()
	switch ce.Code() {
	case connect.CodeUnauthenticated:
		msg += " (check --token, PM_TOKEN or the context's token)"
	case connect.CodePermissionDenied:
		msg += " (the token is not allowed to do this)"
	case connect.CodeDeadlineExceeded:
		if msg == "" || strings.Contains(msg, "context deadline exceeded") {
			msg = "PM did not answer within --request-timeout"
		}
	case connect.CodeUnimplemented:
		msg = "this PM does not serve it (an older server?)"
	}
	if msg == "" {
		msg = ce.Code().String()
	}
	switch ce.Code() {
	case connect.CodeNotFound, connect.CodeAlreadyExists:
		// PM's message names the object: say only that.
		return &exitError{code: code, msg: msg, err: err}
	}
	return &exitError{code: code, msg: prefixed(what, msg), err: err}
}

// prefixed is "what: msg", or msg alone when what is empty.
func prefixed(what, msg string) string {
	if what == "" {
		return msg
	}
	return what + ": " + msg
}

// transportProblem explains a failure to talk to PM at all, in words.
func transportProblem(err error) (string, bool) {
	var (
		dnsErr  *net.DNSError
		opErr   *net.OpError
		urlErr  *url.Error
		certErr *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
	)
	switch {
	case errors.As(err, &certErr), errors.As(err, &unknown):
		return "its TLS certificate is not trusted (give its CA with --ca-file)", true
	case errors.As(err, &host):
		return "its TLS certificate is not valid for this host name", true
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused (is PM running there?)", true
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("cannot resolve host %q", dnsErr.Name), true
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset", true
	case errors.As(err, &opErr):
		return opErr.Err.Error(), true
	case errors.As(err, &urlErr):
		if urlErr.Timeout() {
			return "no answer within --request-timeout", true
		}
		return urlErr.Err.Error(), true
	}
	return "", false
}
