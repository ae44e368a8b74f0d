package audit_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oaas/pm/internal/logtest"

	"connectrpc.com/connect"
	"connectrpc.com/vanguard"
	"google.golang.org/protobuf/types/known/emptypb"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/api"
	"github.com/oaas/pm/internal/audit"
	"github.com/oaas/pm/internal/auth"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
	"github.com/oaas/pm/internal/store/memory"
)

// secretText is what a failing handler's raw error carries; it must reach
// neither a record nor a client.
const secretText = "password=hunter2"

// packages is a PackageService whose outcomes the request decides:
// package "broken" fails validation, "ghost" does not exist, "crash" fails
// with an unclassified error that carries driver text.
type packages struct {
	pmv1connect.UnimplementedPackageServiceHandler
}

func outcome(name string) error {
	switch name {
	case "broken":
		return fault.Invalidf("package %q: classes: is required", name)
	case "ghost":
		return fmt.Errorf("package %q: %w", name, store.ErrNotFound)
	case "crash":
		return errors.New("driver said: " + secretText)
	}
	return nil
}

func (packages) CreatePackage(_ context.Context, req *pmv1.CreatePackageRequest) (*pmv1.CreatePackageResponse, error) {
	if err := outcome(req.GetPackage().GetName()); err != nil {
		return nil, err
	}
	return &pmv1.CreatePackageResponse{Package: req.GetPackage()}, nil
}

func (packages) UpdatePackage(_ context.Context, req *pmv1.UpdatePackageRequest) (*pmv1.UpdatePackageResponse, error) {
	if err := outcome(req.GetName()); err != nil {
		return nil, err
	}
	return &pmv1.UpdatePackageResponse{Package: req.GetPackage()}, nil
}

func (packages) DeletePackage(_ context.Context, req *pmv1.DeletePackageRequest) (*pmv1.DeletePackageResponse, error) {
	if err := outcome(req.GetName()); err != nil {
		return nil, err
	}
	return &pmv1.DeletePackageResponse{}, nil
}

func (packages) GetPackage(_ context.Context, req *pmv1.GetPackageRequest) (*pmv1.GetPackageResponse, error) {
	if err := outcome(req.GetName()); err != nil {
		return nil, err
	}
	return &pmv1.GetPackageResponse{Package: &pmv1.OPackage{Name: req.GetName()}}, nil
}

type options struct {
	trustForwardedFor bool
	deniedPerMinute   int
	// audit replaces the harness's memory store as the Recorder's store.
	audit store.Audit
}

// harness is PM's request boundary in miniature, on loopback over h2c:
// authentication in front (refusals go to RecordDenied, as the real
// middleware does), then connect handlers with the chain audit,
// authorization, api (error mapping, correlation id); the REST transcoder onto the
// same handlers; PackageService, AuditService and two streams.
type harness struct {
	url    string
	st     *memory.Store
	rec    *audit.Recorder
	logs   *logtest.Buffer
	tokens map[auth.Role]string
	client *http.Client
}

// Procedures of the test streams: a client stream that changes things and
// a server stream that only reads.
const (
	streamWrite = auth.ProcedureUpdateDeployment
	streamRead  = auth.ProcedureWatchDeployments
)

func setup(t *testing.T, o options) *harness {
	t.Helper()
	h := &harness{st: memory.New(nil), logs: &logtest.Buffer{}, tokens: map[auth.Role]string{}}
	t.Cleanup(h.st.Close)
	log := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	var file strings.Builder
	file.WriteString("tokens:\n")
	for _, r := range auth.Roles() {
		h.tokens[r] = r.String() + "-" + randomHex(t)
		fmt.Fprintf(&file, "  - {principal: %s-bot, role: %s, sha256: %s}\n", r, r, auth.HashToken(h.tokens[r]))
	}
	tokensFile := filepath.Join(t.TempDir(), "tokens.yaml")
	if err := os.WriteFile(tokensFile, []byte(file.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	authn, err := auth.New(context.Background(), auth.Config{TokensFile: tokensFile, Log: log})
	if err != nil {
		t.Fatal(err)
	}

	var st store.Audit = h.st
	if o.audit != nil {
		st = o.audit
	}
	routes, err := audit.RoutesFor([]string{pmv1connect.PackageServiceName, pmv1connect.AuditServiceName})
	if err != nil {
		t.Fatal(err)
	}
	h.rec = audit.New(st, audit.Options{
		TrustForwardedFor: o.trustForwardedFor, DeniedPerMinute: o.deniedPerMinute, Routes: routes, Log: log,
	})

	// The order PM uses: audit outermost, then authorization (whose
	// refusals the api interceptor would otherwise take for a peer's), then
	// the api interceptor's error mapping.
	opts := connect.WithInterceptors(h.rec.Interceptor(), auth.NewInterceptor(auth.Policy{}, log), api.Interceptor(log))
	mux := http.NewServeMux()
	var services []*vanguard.Service
	mount := func(path string, handler http.Handler) {
		mux.Handle(path, handler)
		services = append(services, vanguard.NewService(path, handler))
	}
	mount(pmv1connect.NewPackageServiceHandler(packages{}, opts))
	mount(pmv1connect.NewAuditServiceHandler(api.NewAudit(h.st), opts))
	transcoder, err := vanguard.NewTranscoder(services)
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/api/", transcoder)
	mux.Handle(streamWrite, connect.NewClientStreamHandler(streamWrite,
		func(_ context.Context, s *connect.ClientStream[pmv1.UpdatePackageRequest]) (*connect.Response[emptypb.Empty], error) {
			for s.Receive() {
				if err := outcome(s.Msg().GetName()); err != nil {
					return nil, connect.NewError(connect.CodeFailedPrecondition, errors.New(err.Error()))
				}
			}
			return connect.NewResponse(&emptypb.Empty{}), s.Err()
		}, opts))
	mux.Handle(streamRead, connect.NewServerStreamHandler(streamRead,
		func(_ context.Context, req *connect.Request[pmv1.GetPackageRequest], s *connect.ServerStream[pmv1.OPackage]) error {
			return s.Send(&pmv1.OPackage{Name: req.Msg.GetName()})
		}, opts, connect.WithIdempotency(connect.IdempotencyNoSideEffects)))

	handler := authenticate(authn, h.rec, mux)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: handler, Protocols: &protocols, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	h.url = "http://" + ln.Addr().String()

	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	h.client = &http.Client{Transport: tr, Timeout: 10 * time.Second}
	return h
}

// authenticate is what the auth middleware does with a Recorder: the
// principal into the context, or a refusal that is recorded first.
func authenticate(authn *auth.Authenticator, rec *audit.Recorder, next http.Handler) http.Handler {
	rpcErrors := connect.NewErrorWriter()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := authn.Authenticate(r)
		if err == nil {
			next.ServeHTTP(w, r.WithContext(auth.WithPrincipal(r.Context(), p)))
			return
		}
		code, status := connect.CodeUnauthenticated, http.StatusUnauthorized
		if errors.Is(err, auth.ErrTooManyFailures) {
			code, status = connect.CodeResourceExhausted, http.StatusTooManyRequests
		}
		rec.RecordDenied(r.Context(), r, auth.Principal{}, code, err.Error())
		if !strings.HasPrefix(r.URL.Path, "/api/") && rpcErrors.IsSupported(r) {
			_ = rpcErrors.Write(w, r, connect.NewError(code, err))
			return
		}
		http.Error(w, err.Error(), status)
	})
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// protocol is one way to call an RPC through connect's client.
type protocol string

const (
	protoConnect protocol = "connect"
	protoGRPC    protocol = "grpc"
	protoGRPCWeb protocol = "grpc-web"
)

var protocols = []protocol{protoConnect, protoGRPC, protoGRPCWeb}

func (p protocol) option() connect.ClientOption {
	switch p {
	case protoGRPC:
		return connect.WithGRPC()
	case protoGRPCWeb:
		return connect.WithGRPCWeb()
	}
	return connect.WithProtoJSON()
}

func (h *harness) packages(p protocol) pmv1connect.PackageServiceClient {
	return pmv1connect.NewPackageServiceClient(h.client, h.url, p.option())
}

// headers are a call's request headers: the role's token (none for role
// 0) and any extra pairs.
func (h *harness) headers(role auth.Role, kv ...string) http.Header {
	hd := http.Header{}
	if role != 0 {
		hd.Set("Authorization", "Bearer "+h.tokens[role])
	}
	for i := 0; i+1 < len(kv); i += 2 {
		hd.Set(kv[i], kv[i+1])
	}
	return hd
}

// withHeaders returns ctx carrying hd as the request headers of the
// generated (simple) clients' next call.
func withHeaders(ctx context.Context, hd http.Header) context.Context {
	ctx, info := connect.NewClientContext(ctx)
	for k, v := range hd {
		info.RequestHeader()[k] = v
	}
	return ctx
}

// request wraps msg with headers hd, for the generic stream clients.
func request[T any](msg *T, hd http.Header) *connect.Request[T] {
	req := connect.NewRequest(msg)
	for k, v := range hd {
		req.Header()[k] = v
	}
	return req
}

// records returns the stored trail, newest first.
func (h *harness) records(t *testing.T) []store.AuditRecord {
	t.Helper()
	recs, err := h.st.ListAudit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// only returns the one stored record, failing unless there is exactly one.
func (h *harness) only(t *testing.T) store.AuditRecord {
	t.Helper()
	recs := h.records(t)
	if len(recs) != 1 {
		t.Fatalf("%d audit records, want 1: %+v", len(recs), recs)
	}
	return recs[0]
}

// do sends a plain HTTP request (REST) and returns the status.
func (h *harness) do(t *testing.T, method, path, body string, hd http.Header) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rd *strings.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	var req *http.Request
	var err error
	if rd != nil {
		req, err = http.NewRequestWithContext(ctx, method, h.url+path, rd)
	} else {
		req, err = http.NewRequestWithContext(ctx, method, h.url+path, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hd {
		req.Header[k] = v
	}
	resp, err := h.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}
