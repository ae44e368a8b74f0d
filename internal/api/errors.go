// Package api adapts the domain services to connect handlers: request in,
// service call, response out. Domain errors become connect codes in exactly
// one place, ToConnectError.
package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"runtime/debug"

	"connectrpc.com/connect"

	"github.com/oaas/pm/internal/correlation"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/fieldcheck"
)

// ToConnectError is the one boundary between domain errors and protocol
// codes. Messages of classified errors are shown to clients (fault messages
// are client-safe by construction); anything unclassified is a bug and the
// client sees only a generic message with the correlation id.
func ToConnectError(ctx context.Context, err error) *connect.Error {
	if err == nil {
		return nil
	}
	switch fault.KindOf(err) {
	case fault.Invalid:
		return connect.NewError(connect.CodeInvalidArgument, errors.New(err.Error()))
	case fault.NotFound:
		return connect.NewError(connect.CodeNotFound, errors.New(err.Error()))
	case fault.AlreadyExists:
		return connect.NewError(connect.CodeAlreadyExists, errors.New(err.Error()))
	case fault.Conflict:
		return connect.NewError(connect.CodeAborted, errors.New(err.Error()))
	case fault.Unavailable:
		return connect.NewError(connect.CodeUnavailable, errors.New(err.Error()))
	case fault.DeadlineExceeded:
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New(err.Error()))
	}
	var ce *connect.Error
	switch {
	case errors.Is(err, context.Canceled):
		return connect.NewError(connect.CodeCanceled, errors.New("request canceled"))
	case errors.Is(err, context.DeadlineExceeded):
		return connect.NewError(connect.CodeDeadlineExceeded, errors.New("request deadline exceeded"))
	case errors.As(err, &ce):
		// A connect error that is not a fault came from a peer (a CRM):
		// its code carries over, its text (the peer's, or a Go runtime's
		// such as "context deadline exceeded") does not.
		return connect.NewError(peerCode(ce.Code()), errors.New(peerMessage(ce.Code())))
	}
	return connect.NewError(connect.CodeInternal,
		errors.New("internal error (correlation id "+correlation.From(ctx)+")"))
}

// ClientMessage is the text a client sees for err: what ToConnectError
// would send.
func ClientMessage(err error) string {
	return ToConnectError(context.Background(), err).Message()
}

// FieldAliases are older names of request fields that every face accepts
// (rest-json-model.md: target_clusters is the older name of target_envs).
var FieldAliases = fieldcheck.Aliases{
	"oaas.pm.v1.OClassDeployment": {"target_clusters": "target_envs", "targetClusters": "target_envs"},
}

// peerCode is the code PM answers with when a peer failed with c: the
// caller did nothing wrong, so a peer's complaint about its input is PM's
// failure to depend on it, not the caller's.
func peerCode(c connect.Code) connect.Code {
	switch c {
	case connect.CodeDeadlineExceeded, connect.CodeUnavailable, connect.CodeNotFound,
		connect.CodeAlreadyExists, connect.CodeResourceExhausted, connect.CodeCanceled:
		return c
	}
	return connect.CodeUnavailable
}

func peerMessage(c connect.Code) string {
	switch c {
	case connect.CodeDeadlineExceeded:
		return "the cluster did not answer in time"
	case connect.CodeUnavailable:
		return "the cluster is unreachable"
	case connect.CodeNotFound:
		return "the cluster does not have it"
	case connect.CodeAlreadyExists:
		return "the cluster already has it"
	case connect.CodeResourceExhausted:
		return "the cluster is out of capacity"
	case connect.CodeCanceled:
		return "the call to the cluster was canceled"
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition:
		return "the cluster rejected the request"
	case connect.CodeUnauthenticated, connect.CodePermissionDenied:
		return "the cluster refused PM's credentials"
	}
	return "the cluster failed (" + c.String() + ")"
}

// Interceptor gives every call a correlation id (the client's
// X-Correlation-Id or X-Request-Id, else a new one), echoes it, maps errors
// through ToConnectError and logs the outcome.
func Interceptor(log *slog.Logger) connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			id := req.Header().Get(correlation.Header)
			if id == "" {
				id = req.Header().Get("X-Request-Id")
			}
			if id == "" || len(id) > 128 {
				id = correlation.New()
			}
			ctx = correlation.With(ctx, id)
			res, err := next(ctx, req)
			if err != nil {
				cerr := ToConnectError(ctx, err)
				cerr.Meta().Set(correlation.Header, id)
				level := slog.LevelInfo
				if cerr.Code() == connect.CodeInternal || cerr.Code() == connect.CodeUnknown {
					level = slog.LevelError
				}
				log.Log(ctx, level, "request failed", "procedure", req.Spec().Procedure,
					"code", cerr.Code().String(), "error", err.Error(), "correlation_id", id)
				return nil, cerr
			}
			res.Header().Set(correlation.Header, id)
			return res, nil
		}
	}
}

// callInfo returns the call's headers; every handler runs under connect, so
// it is always present.
func callInfo(ctx context.Context) connect.CallInfo {
	ci, ok := connect.CallInfoForHandlerContext(ctx)
	if !ok {
		panic("api: handler called outside connect")
	}
	return ci
}

// ifMatch returns the caller's expected revision: the request field, else the
// If-Match header (how REST clients send it).
func ifMatch(ctx context.Context, field string) string {
	if field != "" {
		return field
	}
	return callInfo(ctx).RequestHeader().Get("If-Match")
}

// Recover turns a handler panic into an Internal error for the caller and a
// logged stack for operators, instead of a dropped connection.
func Recover(log *slog.Logger) func(context.Context, connect.Spec, http.Header, any) error {
	return func(ctx context.Context, spec connect.Spec, _ http.Header, p any) error {
		log.ErrorContext(ctx, "handler panicked", "procedure", spec.Procedure, "panic", p, "stack", string(debug.Stack()))
		return connect.NewError(connect.CodeInternal, errors.New("internal error"))
	}
}
