package auth_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/oaas/pm/internal/logtest"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/vanguard"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/auth"
	"github.com/oaas/pm/internal/tlsreload"
	"github.com/oaas/pm/internal/tlsreload/tlstest"
)

// packages answers GetPackage with the caller's principal in Revision
// ("name/role/method"); every other RPC is unimplemented, so an allowed
// call shows as unimplemented and a refused one as the refusal.
type packages struct {
	pmv1connect.UnimplementedPackageServiceHandler
}

func (packages) GetPackage(ctx context.Context, _ *pmv1.GetPackageRequest) (*pmv1.GetPackageResponse, error) {
	p, ok := auth.FromContext(ctx)
	if !ok {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("no principal in the handler"))
	}
	return &pmv1.GetPackageResponse{Revision: fmt.Sprintf("%s/%s/%s", p.Name, p.Role, p.Method)}, nil
}

type harnessOptions struct {
	disabled     bool
	policy       auth.Policy
	failureLimit int
	oidc         *auth.OIDCConfig
	reload       time.Duration
}

// harness is PM's request boundary in miniature: TLS with optional client
// certificates on loopback, HTTP/2, the auth middleware in front of a mux
// of connect handlers (with the authorization interceptor), the REST
// transcoder, health, reflection and /metrics.
type harness struct {
	url        string
	serverCA   *tlstest.CA
	clientCA   *tlstest.CA
	tokens     map[auth.Role]string // a valid API token per role
	tokensFile string
	logs       *logtest.Buffer
}

// setup starts a harness; tokens are random per test, so a log grep
// cannot pass by accident.
func setup(t *testing.T, o harnessOptions) *harness {
	t.Helper()
	h := &harness{serverCA: tlstest.NewCA(t, "server CA"), clientCA: tlstest.NewCA(t, "client CA"), logs: &logtest.Buffer{}, tokens: map[auth.Role]string{}}
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	dir := t.TempDir()

	files := tlsreload.Files{ClientCAFile: filepath.Join(dir, "client-ca.pem")}
	files.CertFile, files.KeyFile = h.serverCA.Issue(t, tlstest.Loopback()).WriteFiles(t, dir)
	tlstest.WriteFile(t, files.ClientCAFile, h.clientCA.PEM)
	reloader, err := tlsreload.New(files, tlsreload.Options{Log: log})
	if err != nil {
		t.Fatal(err)
	}

	var file strings.Builder
	file.WriteString("tokens:\n")
	for _, r := range auth.Roles() {
		h.tokens[r] = r.String() + "-" + randomHex(t)
		fmt.Fprintf(&file, "  - {principal: %s-bot, role: %s, sha256: %s}\n", r, r, auth.HashToken(h.tokens[r]))
	}
	file.WriteString("clients:\n  - {principal: deploy-bot, role: deployer, subject: CN=deploy-bot}\n")
	file.WriteString("  - {principal: argo, role: admin, subject: \"URI:spiffe://cluster.local/ns/argocd/sa/argo\"}\n")
	h.tokensFile = filepath.Join(dir, "tokens.yaml")
	tlstest.WriteFile(t, h.tokensFile, []byte(file.String()))

	var authn *auth.Authenticator
	if !o.disabled {
		authn, err = auth.New(context.Background(), auth.Config{
			TokensFile: h.tokensFile, OIDC: o.oidc, FailureLimit: o.failureLimit, Log: log, ReloadInterval: o.reload,
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	interceptors := connect.WithInterceptors(auth.NewInterceptor(o.policy, log))
	mux := http.NewServeMux()
	var services []*vanguard.Service
	mount := func(path string, handler http.Handler) {
		mux.Handle(path, handler)
		services = append(services, vanguard.NewService(path, handler))
	}
	mount(pmv1connect.NewPackageServiceHandler(packages{}, interceptors))
	mount(pmv1connect.NewDeploymentServiceHandler(pmv1connect.UnimplementedDeploymentServiceHandler{}, interceptors))
	mount(pmv1connect.NewClusterServiceHandler(pmv1connect.UnimplementedClusterServiceHandler{}, interceptors))
	mount(pmv1connect.NewCatalogServiceHandler(pmv1connect.UnimplementedCatalogServiceHandler{}, interceptors))
	mount(pmv1connect.NewClassRuntimeServiceHandler(pmv1connect.UnimplementedClassRuntimeServiceHandler{}, interceptors))
	mount(pmv1connect.NewAuditServiceHandler(pmv1connect.UnimplementedAuditServiceHandler{}, interceptors))
	mount(pmv1connect.NewWatchServiceHandler(pmv1connect.UnimplementedWatchServiceHandler{}, interceptors))
	mount(pmv1connect.NewTopologyServiceHandler(pmv1connect.UnimplementedTopologyServiceHandler{}, interceptors))
	transcoder, err := vanguard.NewTranscoder(services)
	if err != nil {
		t.Fatal(err)
	}
	mux.Handle("/api/", transcoder)
	// A streaming RPC on a reserved admin procedure exercises the
	// interceptor's streaming path.
	mux.Handle(auth.ProcedureDeleteOrphan, connect.NewServerStreamHandler(auth.ProcedureDeleteOrphan,
		func(ctx context.Context, _ *connect.Request[emptypb.Empty], stream *connect.ServerStream[wrapperspb.StringValue]) error {
			p, _ := auth.FromContext(ctx)
			return stream.Send(wrapperspb.String(p.Name))
		}, interceptors))
	mux.Handle(grpchealth.NewHandler(grpchealth.NewStaticChecker(pmv1connect.PackageServiceName), interceptors))
	reflector := grpcreflect.NewStaticReflector(pmv1connect.PackageServiceName)
	mux.Handle(grpcreflect.NewHandlerV1(reflector, interceptors))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, interceptors))
	ok := func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }
	for _, p := range []string{"/health", "/livez", "/readyz", "/metrics"} {
		mux.HandleFunc(p, ok)
	}

	handler := auth.Middleware(authn, auth.Options{Policy: o.policy, Disabled: o.disabled, Log: log})(mux)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	srv := &http.Server{
		Handler: handler, TLSConfig: reloader.TLSConfig(), Protocols: &protocols,
		ReadHeaderTimeout: 5 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	h.url = "https://" + ln.Addr().String()
	return h
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// httpClient speaks HTTP/2 over TLS, presenting cert when non-nil.
func (h *harness) httpClient(t *testing.T, cert *tls.Certificate) *http.Client {
	t.Helper()
	cfg := &tls.Config{RootCAs: h.serverCA.Pool(), MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// protocol is one way to call an RPC.
type protocol string

const (
	protoConnect protocol = "connect"
	protoGRPC    protocol = "grpc"
	protoGRPCWeb protocol = "grpc-web"
	protoREST    protocol = "rest"
)

var rpcProtocols = []protocol{protoConnect, protoGRPC, protoGRPCWeb}

func (p protocol) option() connect.ClientOption {
	switch p {
	case protoGRPC:
		return connect.WithGRPC()
	case protoGRPCWeb:
		return connect.WithGRPCWeb()
	}
	return connect.WithProtoJSON()
}

func bearer(token string) http.Header {
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	return h
}

// call makes a unary RPC with an empty request through a schema-driven
// client, so one function reaches every method of the registry.
func (h *harness) call(t *testing.T, client *http.Client, p protocol, md protoreflect.MethodDescriptor, header http.Header) (*dynamicpb.Message, error) {
	t.Helper()
	procedure := "/" + string(md.Parent().FullName()) + "/" + string(md.Name())
	c := connect.NewClient[dynamicpb.Message, dynamicpb.Message](client, h.url+procedure,
		connect.WithSchema(md), p.option(),
		connect.WithResponseInitializer(func(_ connect.Spec, msg any) error {
			*msg.(*dynamicpb.Message) = *dynamicpb.NewMessage(md.Output())
			return nil
		}))
	req := connect.NewRequest(dynamicpb.NewMessage(md.Input()))
	for k, v := range header {
		req.Header()[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if md.IsStreamingServer() {
		// A server stream's refusal arrives when its first message is read.
		stream, err := c.CallServerStream(ctx, req)
		if err != nil {
			return nil, err
		}
		defer func() { _ = stream.Close() }()
		if stream.Receive() {
			return stream.Msg(), nil
		}
		return nil, stream.Err()
	}
	resp, err := c.CallUnary(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.Msg, nil
}

// restResult is one REST response.
type restResult struct {
	status int
	header http.Header
	body   string
}

var pathParam = regexp.MustCompile(`\{[^}]+\}`)

// rest calls md's REST route (its google.api.http rule, parameters "x").
func (h *harness) rest(t *testing.T, client *http.Client, md protoreflect.MethodDescriptor, header http.Header) restResult {
	t.Helper()
	rule, _ := proto.GetExtension(md.Options(), annotations.E_Http).(*annotations.HttpRule)
	if rule == nil {
		t.Fatalf("%s has no REST route", md.FullName())
	}
	var method, path string
	switch p := rule.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		method, path = http.MethodGet, p.Get
	case *annotations.HttpRule_Post:
		method, path = http.MethodPost, p.Post
	case *annotations.HttpRule_Put:
		method, path = http.MethodPut, p.Put
	case *annotations.HttpRule_Patch:
		method, path = http.MethodPatch, p.Patch
	case *annotations.HttpRule_Delete:
		method, path = http.MethodDelete, p.Delete
	default:
		t.Fatalf("%s: unsupported rule %T", md.FullName(), p)
	}
	var body io.Reader
	if rule.GetBody() != "" {
		body = strings.NewReader("{}")
	}
	return h.do(t, client, method, pathParam.ReplaceAllString(path, "x"), body, header)
}

func (h *harness) do(t *testing.T, client *http.Client, method, path string, body io.Reader, header http.Header) restResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, h.url+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("%s %s served over %s, want HTTP/2", method, path, resp.Proto)
	}
	return restResult{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// pmMethods lists every method of every oaas.pm.v1 service registered.
func pmMethods(t *testing.T) []protoreflect.MethodDescriptor {
	t.Helper()
	var out []protoreflect.MethodDescriptor
	protoregistry.GlobalFiles.RangeFilesByPackage("oaas.pm.v1", func(fd protoreflect.FileDescriptor) bool {
		for i := range fd.Services().Len() {
			sd := fd.Services().Get(i)
			for j := range sd.Methods().Len() {
				out = append(out, sd.Methods().Get(j))
			}
		}
		return true
	})
	if len(out) < 20 {
		t.Fatalf("only %d oaas.pm.v1 methods registered", len(out))
	}
	return out
}

func methodByName(t *testing.T, procedure string) protoreflect.MethodDescriptor {
	t.Helper()
	svc, method, _ := strings.Cut(strings.TrimPrefix(procedure, "/"), "/")
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
	if err != nil {
		t.Fatal(err)
	}
	md := d.(protoreflect.ServiceDescriptor).Methods().ByName(protoreflect.Name(method))
	if md == nil {
		t.Fatalf("no method %s", procedure)
	}
	return md
}

func procedureOf(md protoreflect.MethodDescriptor) string {
	return "/" + string(md.Parent().FullName()) + "/" + string(md.Name())
}
