// Package audit keeps PM's audit trail: one record for every call that may
// change something, whatever its outcome, and one for every call that was
// refused (unauthenticated, permission denied, rate limited), reads
// included. Successful reads are not recorded. A record says who (principal,
// role, authentication method), what (the RPC, the object it names), how it
// ended (ok, denied or error, with the status code and the message the
// caller got), and from where (source address, correlation id, idempotency
// key). Credentials never enter a record: the only header read is
// Idempotency-Key (and X-Forwarded-For when trusted).
//
// Recorder.Interceptor records connect calls on every protocol (REST
// arrives through the transcoder as the RPC its route maps to); which RPCs
// are mutating is read from each method's descriptor (idempotency_level
// NO_SIDE_EFFECTS means a read), so a new RPC is covered without a list to
// keep. Recorder.RecordDenied records requests that the HTTP authentication
// middleware refuses before they reach connect.
//
// # When the record is written, and what a crash can lose
//
// A record is appended right after the call returns and before its response
// leaves: a client that saw its write succeed can find the record. It is
// its own statement, not part of the transaction that made the change,
// because there is no one such transaction to join. Changes happen deep in
// the services: a package without embedded deployments is one statement,
// one with them a catalog transaction; a deployment create commits a
// transaction and then calls CRMs, whose outcome decides the call's; a
// package delete cascades through several writes. A call may commit more
// than one transaction, or commit one and then fail, so a record written
// inside "the" transaction would have to be written before the call's
// outcome is known, and every service would have to carry it down to its
// store calls. Writing after the call keeps the outcome exact and the
// services unaware of auditing.
//
// The price is a window of one insert: if PM dies (or the store fails)
// after a change committed and before its record is appended, the change
// stands with no record in the store. A record can never claim a change
// that did not happen: "ok" is only written after the call returned
// success. The "audit" log line is emitted before the append, so a log
// pipeline keeps the record even when the append fails or the process dies
// during it; a failed append is logged at error and counted (Stats
// "write_failures"), and never changes the caller's response.
package audit

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/oaas/pm/internal/auth"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/correlation"
	"github.com/oaas/pm/internal/restmodel"
	"github.com/oaas/pm/internal/store"
)

// Defaults of Options.
const (
	// DefaultWriteTimeout bounds one append.
	DefaultWriteTimeout = 5 * time.Second
	// DefaultDeniedPerMinute is how many denied-call records one source
	// may cause per minute before further ones are suppressed for a minute.
	DefaultDeniedPerMinute = 60
)

// IdempotencyKeyHeader is the header a REST client's idempotency key
// travels in.
const IdempotencyKeyHeader = "Idempotency-Key"

// maxField bounds each request-derived field of a record; the request may
// carry anything, the trail must stay small and indexable.
const maxField = 256

// Options configure a Recorder.
type Options struct {
	// TrustForwardedFor takes the source address from the first
	// X-Forwarded-For hop instead of the connection's peer
	// (AUDIT_TRUST_FORWARDED_FOR). Only for PM behind a proxy that sets the
	// header itself; otherwise any caller could write its own source.
	TrustForwardedFor bool
	// Routes maps refused REST requests to their RPCs in RecordDenied (see
	// RoutesFor); without them such requests are recorded by method and
	// path.
	Routes restmodel.Table
	// WriteTimeout bounds one append; 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// DeniedPerMinute caps the denied-call records of one source (an IPv4
	// address or an IPv6 /64) per minute: past it, its denials are counted
	// (Stats "suppressed") and logged once, not stored, for a minute, so a
	// client hammering PM without credentials cannot flood the trail.
	// 0 means DefaultDeniedPerMinute; negative means no cap.
	DeniedPerMinute int
	// Log receives the "audit" line of every record and write failures;
	// slog.Default when nil.
	Log *slog.Logger
}

// Recorder writes audit records to a store and to the log. It is safe for
// concurrent use.
type Recorder struct {
	st      store.Audit
	opts    Options
	log     *slog.Logger
	limiter *auth.Limiter

	records    atomic.Int64
	failures   atomic.Int64
	suppressed atomic.Int64
}

// New returns a Recorder appending to st.
func New(st store.Audit, opts Options) *Recorder {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.DeniedPerMinute == 0 {
		opts.DeniedPerMinute = DefaultDeniedPerMinute
	}
	return &Recorder{
		st: st, opts: opts, log: opts.Log,
		// NewLimiter returns nil (no cap) for a negative limit.
		limiter: auth.NewLimiter(opts.DeniedPerMinute, time.Minute, 0),
	}
}

// RoutesFor returns the REST routes of the named services
// ("oaas.pm.v1.PackageService"), for Options.Routes.
func RoutesFor(services []string) (restmodel.Table, error) {
	descs, err := restmodel.Services(services)
	if err != nil {
		return nil, err
	}
	return restmodel.RoutesOf(descs)
}

// StatKeys are the keys of Stats, for registering counters.
var StatKeys = []string{"records", "write_failures", "suppressed"}

// Stats returns the Recorder's counters since it was made: records
// appended, appends that failed, and denied-call records suppressed by the
// per-source cap.
func (r *Recorder) Stats() map[string]int64 {
	return map[string]int64{
		"records":        r.records.Load(),
		"write_failures": r.failures.Load(),
		"suppressed":     r.suppressed.Load(),
	}
}

// WriteFailures is the number of records that could not be stored.
func (r *Recorder) WriteFailures() int64 { return r.failures.Load() }

// RecordDenied records a request that was refused before it reached
// connect, typically by the authentication middleware: code is
// connect.CodeUnauthenticated for a 401, connect.CodeResourceExhausted for
// the failure limiter's 429, connect.CodePermissionDenied for a 403 (0
// means unauthenticated). p is the caller if it is known (the zero
// Principal otherwise), reason the refusal's client-safe text ("unknown API token"). A REST request is
// recorded as the RPC its route maps to, with the path's object as target;
// a Connect, gRPC or gRPC-Web request as its procedure; anything else as
// "METHOD /path". The call blocks for the append (at most the write
// timeout), which also slows down a client that keeps failing.
func (r *Recorder) RecordDenied(ctx context.Context, req *http.Request, p auth.Principal, code connect.Code, reason string) {
	if code == 0 {
		code = connect.CodeUnauthenticated
	}
	rec := store.AuditRecord{
		Outcome:        store.AuditDenied,
		Code:           code.String(),
		Message:        clip(reason),
		Source:         r.source(req.RemoteAddr, req.Header),
		CorrelationID:  correlationID(ctx, req.Header, nil),
		IdempotencyKey: clip(req.Header.Get(IdempotencyKeyHeader)),
	}
	setPrincipal(&rec, p, p != auth.Principal{})
	if route, vars := r.opts.Routes.Match(req.Method, req.URL.Path); route != nil {
		rec.Action = procedureName(route.Method)
		rec.Target = clip(targetOfVars(vars))
	} else if proc, ok := knownProcedure(req.URL.Path); ok {
		rec.Action = proc
	} else {
		rec.Action = clip(req.Method + " " + req.URL.Path)
	}
	r.write(ctx, rec)
}

// Interceptor returns the connect interceptor that records calls. Put it
// outside (before, in connect.WithInterceptors) the authorization
// interceptor, so that it sees denials, and outside the interceptor that
// maps domain errors to connect codes, so that records carry the codes the
// caller gets. It settles each call's correlation id first (see
// withCorrelation), so its position relative to the interceptor that
// echoes ids does not matter.
func (r *Recorder) Interceptor() connect.Interceptor { return interceptor{r} }

type interceptor struct{ r *Recorder }

var _ connect.Interceptor = interceptor{}

// WrapUnary records unary calls after the handler returns.
func (i interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		ctx = withCorrelation(ctx, req.Header())
		res, err := next(ctx, req)
		if i.r.audited(req.Spec(), err) {
			var resHeader http.Header
			if res != nil {
				resHeader = res.Header()
			}
			msg, _ := req.Any().(proto.Message)
			i.r.write(ctx, i.r.callRecord(ctx, req.Spec(), req.Peer(), req.Header(), resHeader, msg, err))
		}
		return res, err
	}
}

// WrapStreamingClient leaves client streams alone: auditing is a server's
// business.
func (i interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler records streaming calls when the handler returns;
// the target and idempotency key come from the first message received.
func (i interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		ctx = withCorrelation(ctx, conn.RequestHeader())
		sc := &streamConn{StreamingHandlerConn: conn}
		err := next(ctx, sc)
		if i.r.audited(conn.Spec(), err) {
			rec := i.r.callRecord(ctx, conn.Spec(), conn.Peer(), conn.RequestHeader(), conn.ResponseHeader(), nil, err)
			if sc.received {
				rec.Target = sc.target
				if sc.idemKey != "" {
					rec.IdempotencyKey = sc.idemKey
				}
			}
			i.r.write(ctx, rec)
		}
		return err
	}
}

// streamConn notes what the first received message names, at once, since
// a handler may reuse the message for the next one.
type streamConn struct {
	connect.StreamingHandlerConn
	received bool
	target   string
	idemKey  string
}

func (c *streamConn) Receive(m any) error {
	err := c.StreamingHandlerConn.Receive(m)
	if err == nil && !c.received {
		if pm, ok := m.(proto.Message); ok {
			c.received = true
			c.target = clip(Target(pm))
			c.idemKey = clip(idempotencyField(pm))
		}
	}
	return err
}

// audited reports whether a call that ended with err gets a record: every
// call to a mutating RPC, and every denied call.
func (r *Recorder) audited(spec connect.Spec, err error) bool {
	return !ReadOnly(spec) || isDenial(connect.CodeOf(err))
}

func isDenial(c connect.Code) bool {
	return c == connect.CodePermissionDenied || c == connect.CodeUnauthenticated
}

// infrastructure are the procedure prefixes of the gRPC health and
// reflection services: reads, whose handlers carry no descriptor to say so
// (reflection is a bidirectional stream, health's Watch a server stream).
var infrastructure = []string{"/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"}

// ReadOnly reports whether an RPC declares that it changes nothing
// (option idempotency_level = NO_SIDE_EFFECTS), read from its descriptor
// and, for handlers built without one, from the spec. The gRPC health and
// reflection services count as reads.
func ReadOnly(spec connect.Spec) bool {
	for _, prefix := range infrastructure {
		if strings.HasPrefix(spec.Procedure, prefix) {
			return true
		}
	}
	if md, ok := spec.Schema.(protoreflect.MethodDescriptor); ok {
		opts, _ := md.Options().(*descriptorpb.MethodOptions)
		return opts.GetIdempotencyLevel() == descriptorpb.MethodOptions_NO_SIDE_EFFECTS
	}
	return spec.IdempotencyLevel == connect.IdempotencyNoSideEffects
}

// callRecord builds the record of a connect call that ended with err.
func (r *Recorder) callRecord(ctx context.Context, spec connect.Spec, peer connect.Peer, reqHeader, resHeader http.Header, msg proto.Message, err error) store.AuditRecord {
	rec := store.AuditRecord{
		Action: strings.TrimPrefix(spec.Procedure, "/"),
		Source: r.source(peer.Addr, reqHeader),
		Code:   "ok",
	}
	p, ok := auth.FromContext(ctx)
	setPrincipal(&rec, p, ok)
	var cerr *connect.Error
	switch {
	case err == nil:
		rec.Outcome = store.AuditOK
	case isDenial(connect.CodeOf(err)):
		rec.Outcome = store.AuditDenied
	default:
		rec.Outcome = store.AuditError
	}
	if err != nil {
		rec.Code = connect.CodeOf(err).String()
		// Only a connect error's message is what the caller saw (the error
		// mapping made it client-safe); other text stays out of the trail.
		if errors.As(err, &cerr) {
			rec.Message = clip(cerr.Message())
		}
	}
	var meta http.Header
	switch {
	case cerr != nil:
		meta = cerr.Meta()
	case resHeader != nil:
		meta = resHeader
	}
	rec.CorrelationID = correlationID(ctx, reqHeader, meta)
	if msg != nil {
		rec.Target = clip(Target(msg))
		rec.IdempotencyKey = clip(idempotencyField(msg))
	}
	if rec.IdempotencyKey == "" {
		rec.IdempotencyKey = clip(reqHeader.Get(IdempotencyKeyHeader))
	}
	return rec
}

func setPrincipal(rec *store.AuditRecord, p auth.Principal, ok bool) {
	if !ok {
		return
	}
	rec.Principal = clip(p.Name)
	rec.AuthMethod = string(p.Method)
	if p.Role != 0 {
		rec.Role = p.Role.String()
	}
}

// write logs rec and appends it. The append runs detached from the
// caller's cancellation (a client that hangs up right after its write must
// not erase the write's record) under the write timeout.
func (r *Recorder) write(ctx context.Context, rec store.AuditRecord) {
	if rec.Outcome == store.AuditDenied && r.limiter != nil {
		if blocked, _ := r.limiter.Blocked(rec.Source); blocked {
			r.suppressed.Add(1)
			return
		}
		if r.limiter.Fail(rec.Source) {
			r.log.WarnContext(ctx, "audit: too many denied calls from one source; not recording its denials for a minute",
				"source", rec.Source, "limit", r.opts.DeniedPerMinute)
		}
	}
	r.log.LogAttrs(ctx, slog.LevelInfo, "audit",
		slog.String("principal", rec.Principal), slog.String("role", rec.Role),
		slog.String("auth_method", rec.AuthMethod), slog.String("action", rec.Action),
		slog.String("target", rec.Target), slog.String("outcome", string(rec.Outcome)),
		slog.String("status_code", rec.Code), slog.String("message", rec.Message),
		slog.String("correlation_id", rec.CorrelationID), slog.String("source", rec.Source),
		slog.String("idempotency_key", rec.IdempotencyKey))
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.WriteTimeout)
	defer cancel()
	if _, err := r.st.AppendAudit(wctx, rec); err != nil {
		r.failures.Add(1)
		r.log.LogAttrs(ctx, slog.LevelError, "audit record not stored",
			slog.String("action", rec.Action), slog.String("correlation_id", rec.CorrelationID),
			slog.String("error", err.Error()))
		return
	}
	r.records.Add(1)
}

// source is the caller's address without port: the peer's, or with
// TrustForwardedFor the first X-Forwarded-For hop when it is an address.
func (r *Recorder) source(peerAddr string, h http.Header) string {
	if r.opts.TrustForwardedFor {
		if xff := h.Get("X-Forwarded-For"); xff != "" {
			first, _, _ := strings.Cut(xff, ",")
			if addr, err := netip.ParseAddr(strings.TrimSpace(first)); err == nil {
				return addr.String()
			}
		}
	}
	host := peerAddr
	if h, _, err := net.SplitHostPort(peerAddr); err == nil {
		host = h
	}
	return clip(host)
}

// maxCorrelationID is the longest client-sent correlation id PM keeps, as
// the api package does.
const maxCorrelationID = 128

// clientCorrelationID is the usable id the client sent, if any.
func clientCorrelationID(h http.Header) string {
	for _, name := range []string{correlation.Header, "X-Request-Id"} {
		if id := h.Get(name); id != "" && len(id) <= maxCorrelationID {
			return id
		}
	}
	return ""
}

// withCorrelation settles the call's correlation id before anything else
// runs: the context's, else the client's, else a new one; and writes it
// into the request's X-Correlation-Id, where the interceptor that echoes
// and logs ids (api.Interceptor) takes it from. So the record, the logs and
// the response agree whatever the interceptors' order, and a call refused
// by an interceptor before that one still has an id in its record.
func withCorrelation(ctx context.Context, h http.Header) context.Context {
	id := correlation.From(ctx)
	if id == "" {
		id = clientCorrelationID(h)
	}
	if id == "" {
		id = correlation.New()
	}
	if h.Get(correlation.Header) != id {
		h.Set(correlation.Header, id)
	}
	return correlation.With(ctx, id)
}

// correlationID is a record's id: the context's, else the one the
// response carries, else the client's.
func correlationID(ctx context.Context, req, res http.Header) string {
	if id := correlation.From(ctx); id != "" {
		return clip(id)
	}
	if id := res.Get(correlation.Header); id != "" {
		return clip(id)
	}
	return clip(clientCorrelationID(req))
}

// procedureName is "pkg.Service/Method".
func procedureName(md protoreflect.MethodDescriptor) string {
	return string(md.Parent().FullName()) + "/" + string(md.Name())
}

// knownProcedure returns the RPC of a Connect, gRPC or gRPC-Web request
// path ("/pkg.Service/Method") if it names a registered one.
func knownProcedure(path string) (string, bool) {
	svc, method, ok := strings.Cut(strings.TrimPrefix(path, "/"), "/")
	if !ok || svc == "" || method == "" {
		return "", false
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		return "", false
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return "", false
	}
	md := sd.Methods().ByName(protoreflect.Name(method))
	if md == nil {
		return "", false
	}
	return procedureName(md), true
}

// clip makes a request-derived string fit a record: valid UTF-8 without
// NUL (which Postgres text cannot hold), at most maxField bytes.
func clip(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if strings.IndexByte(s, 0) >= 0 {
		s = strings.ReplaceAll(s, "\x00", "\uFFFD")
	}
	if len(s) <= maxField {
		return s
	}
	cut := maxField
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}

// FromConfig builds the Recorder and Purger that the AUDIT_* variables
// describe, over st, and bounds st's trail to AUDIT_MEMORY_CAPACITY when
// st is the memory store. routes are the REST routes for RecordDenied (see
// RoutesFor; nil records refused REST requests by path). Start the Purger
// and Stop it at shutdown.
func FromConfig(st store.Audit, c config.Audit, routes restmodel.Table, log *slog.Logger) (*Recorder, *Purger) {
	if ring, ok := st.(interface{ SetAuditCapacity(int) }); ok {
		ring.SetAuditCapacity(c.MemoryCapacity)
	}
	denied := c.DeniedPerMinute
	if denied == 0 {
		denied = -1 // AUDIT_DENIED_PER_MINUTE=0 means no cap
	}
	rec := New(st, Options{TrustForwardedFor: c.TrustForwardedFor, Routes: routes, DeniedPerMinute: denied, Log: log})
	return rec, NewPurger(st, c.Retention, c.PurgeInterval, log)
}
