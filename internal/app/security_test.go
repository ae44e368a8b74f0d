package app_test

// Security as a running PM enforces it (issue 10): tokens on every
// protocol, roles, the safe listen default, TLS and mTLS, CORS, and no
// secret in the logs. internal/auth has the exhaustive role matrix.

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oaas/pm/internal/logtest"

	"connectrpc.com/connect"
	"connectrpc.com/grpcreflect"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/app"
	"github.com/oaas/pm/internal/auth"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/store/pgtest"
	"github.com/oaas/pm/internal/tlsreload/tlstest"
)

func newToken(t testing.TB) string {
	t.Helper()
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "pm_" + hex.EncodeToString(b)
}

// tokens writes a tokens file with one principal per role (named after
// it) and returns the file and the tokens by role.
func tokens(t testing.TB, clients string) (string, map[string]string) {
	t.Helper()
	byRole := map[string]string{}
	var b strings.Builder
	b.WriteString("tokens:\n")
	for _, role := range []string{"viewer", "deployer", "editor", "admin"} {
		tok := newToken(t)
		byRole[role] = tok
		fmt.Fprintf(&b, "  - {principal: %s-bot, role: %s, sha256: %s}\n", role, role, auth.HashToken(tok))
	}
	b.WriteString(clients)
	file := filepath.Join(t.TempDir(), "tokens.yaml")
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return file, byRole
}

func withTokens(file string) func(*config.Config) {
	return func(c *config.Config) {
		c.Auth.Mode = "auto"
		c.Auth.TokensFile = file
	}
}

// bearer is a connect option that sends a token.
func bearer(token string) connect.ClientOption {
	return connect.WithInterceptors(connect.UnaryInterceptorFunc(func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			if token != "" {
				req.Header().Set("Authorization", "Bearer "+token)
			}
			return next(ctx, req)
		}
	}))
}

func TestSecurityTokensAndRolesEveryProtocol(t *testing.T) {
	t.Parallel()
	file, tok := tokens(t, "")
	logs := &logtest.Buffer{}
	e := setupLogged(t, "memory", logs, withTokens(file), withDefaultCluster(t))
	auth := func(role string) []string { return []string{"Authorization", "Bearer " + tok[role]} }

	// REST: anonymous and bad tokens get 401 with a Bearer challenge.
	r := e.do("GET", "/api/v1/packages", nil).expect(t, http.StatusUnauthorized)
	if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Errorf("WWW-Authenticate = %q", r.header.Get("WWW-Authenticate"))
	}
	r = e.do("GET", "/api/v1/packages", nil, "Authorization", "Bearer not-a-token").expect(t, http.StatusUnauthorized)
	if !strings.Contains(r.header.Get("WWW-Authenticate"), "invalid_token") {
		t.Errorf("WWW-Authenticate = %q", r.header.Get("WWW-Authenticate"))
	}
	for _, open := range []string{"/health", "/livez", "/readyz", "/ui/", "/api/v1/openapi.json", "/docs/"} {
		e.do("GET", open, nil).expect(t, http.StatusOK)
	}
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if res, err := noRedirect.Get(e.base + "/"); err != nil || res.StatusCode != http.StatusFound || res.Header.Get("Location") != "/ui/" {
		t.Errorf("GET / should send browsers to the console: %v %v", err, res)
	} else {
		_ = res.Body.Close()
	}
	e.do("GET", "/metrics", nil).expect(t, http.StatusUnauthorized)
	e.do("GET", "/metrics", nil, auth("viewer")...).expect(t, http.StatusOK)

	// Roles through REST: the refusal names the role needed.
	e.do("GET", "/api/v1/packages", nil, auth("viewer")...).expect(t, http.StatusOK)
	msg := e.do("POST", "/api/v1/packages", echoPackage("echo"), auth("viewer")...).expect(t, http.StatusForbidden).errorText(t)
	if !strings.Contains(msg, "editor") {
		t.Errorf("403 %q does not name the role needed", msg)
	}
	e.do("POST", "/api/v1/packages", echoPackage("echo"), auth("deployer")...).expect(t, http.StatusForbidden)
	e.do("POST", "/api/v1/packages", echoPackage("echo"), auth("editor")...).expect(t, http.StatusCreated)
	e.do("POST", "/api/v1/deployments", deployment("d", "echo", "default"), auth("viewer")...).expect(t, http.StatusForbidden)
	e.do("POST", "/api/v1/deployments", deployment("d", "echo", "default"), auth("deployer")...).expect(t, http.StatusCreated)
	e.do("DELETE", "/api/v1/packages/echo", nil, auth("deployer")...).expect(t, http.StatusForbidden)
	e.do("GET", "/api/v1/packages/echo", nil, auth("admin")...).expect(t, http.StatusOK)

	// Connect, gRPC and gRPC-Web: the same table.
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			call := func(token string) error {
				c := pmv1connect.NewPackageServiceClient(e.h2c, e.base, append(p.opts, bearer(token))...)
				_, err := c.ListPackages(context.Background(), &pmv1.ListPackagesRequest{})
				return err
			}
			if err := call(""); connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Errorf("anonymous: %v", err)
			}
			if err := call("wrong"); connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Errorf("bad token: %v", err)
			}
			if err := call(tok["viewer"]); err != nil {
				t.Errorf("viewer list: %v", err)
			}
			c := pmv1connect.NewPackageServiceClient(e.h2c, e.base, append(p.opts, bearer(tok["viewer"]))...)
			_, err := c.DeletePackage(context.Background(), &pmv1.DeletePackageRequest{Name: "echo"})
			if connect.CodeOf(err) != connect.CodePermissionDenied || !strings.Contains(err.Error(), "editor") {
				t.Errorf("viewer delete: %v", err)
			}
		})
	}
	// Reflection is closed by default when auth is on.
	rc := grpcreflect.NewClient(e.h2c, e.base)
	stream := rc.NewStream(context.Background())
	if _, err := stream.ListServices(); connect.CodeOf(err) != connect.CodeUnauthenticated {
		t.Errorf("reflection without a token: %v", err)
	}
	_, _ = stream.Close()

	e.do("GET", "/api/v1/packages/echo", nil, auth("viewer")...).expect(t, http.StatusOK)
	for role, token := range tok {
		if strings.Contains(logs.String(), token) {
			t.Errorf("the %s token appears in PM's log", role)
		}
	}
}

func TestSecurityListenDefault(t *testing.T) {
	t.Parallel()
	base := func() config.Config {
		c := config.Default()
		c.Server.Host, c.Server.Port = "0.0.0.0", 0
		c.Metrics.Port = 0
		c.CRM.EmbeddedSimulator = true
		return c
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, err := app.New(context.Background(), base(), log)
	if err == nil || !strings.Contains(err.Error(), "AUTH_MODE=none") {
		t.Fatalf("0.0.0.0 without auth: %v, want a refusal naming AUTH_MODE=none", err)
	}
	cfg := base()
	cfg.Auth.Mode = "none"
	logs := &logtest.Buffer{}
	a, err := app.New(context.Background(), cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatalf("AUTH_MODE=none: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "AUTH_MODE=none") {
		t.Errorf("no warning logged for AUTH_MODE=none:\n%s", logs)
	}
	// The default config listens on loopback.
	d, err := config.Load(func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if d.Server.Host != "127.0.0.1" {
		t.Errorf("default host %q", d.Server.Host)
	}
}

func TestSecurityTLSAndClientCertificates(t *testing.T) {
	t.Parallel()
	ca := tlstest.NewCA(t, "pm-test-ca")
	dir := t.TempDir()
	certFile, keyFile := ca.Issue(t, tlstest.Loopback()).WriteFiles(t, dir)
	caFile := filepath.Join(dir, "ca.pem")
	tlstest.WriteFile(t, caFile, ca.PEM)
	file, tok := tokens(t, "clients:\n  - {principal: argo, role: deployer, subject: CN=argo-cd}\n")
	e := setup(t, "memory", withTokens(file), withDefaultCluster(t), func(c *config.Config) {
		c.TLS.CertFile, c.TLS.KeyFile, c.TLS.ClientCAFile = certFile, keyFile, caFile
	})
	addr := strings.TrimPrefix(e.base, "http://")
	client := func(certs ...tls.Certificate) *http.Client {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), Certificates: certs}, ForceAttemptHTTP2: true}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Transport: tr, Timeout: 10 * time.Second}
	}
	// get returns the status and protocol; the body is read and closed.
	get := func(c *http.Client, path string, hdr ...string) (status, proto int) {
		req, _ := http.NewRequest(http.MethodGet, "https://"+addr+path, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		_ = res.Body.Close()
		return res.StatusCode, res.ProtoMajor
	}
	if status, proto := get(client(), "/api/v1/packages", "Authorization", "Bearer "+tok["viewer"]); status != http.StatusOK || proto != 2 {
		t.Errorf("token over TLS: %d over HTTP/%d", status, proto)
	}
	// A mapped client certificate is a principal of its own.
	cert := ca.Issue(t, tlstest.Identity{CommonName: "argo-cd", Client: true})
	if status, _ := get(client(cert.Pair), "/api/v1/packages"); status != http.StatusOK {
		t.Errorf("client certificate: %d", status)
	}
	if status, _ := get(client(), "/api/v1/packages"); status != http.StatusUnauthorized {
		t.Errorf("no credential over TLS: %d", status)
	}
	// No plaintext listener.
	plain := &http.Client{Timeout: 5 * time.Second}
	if res, err := plain.Get("http://" + addr + "/livez"); err == nil {
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode == http.StatusOK {
			t.Errorf("plain HTTP served: %d %s", res.StatusCode, body)
		}
	}
}

func TestSecurityCORSAllowlist(t *testing.T) {
	t.Parallel()
	file, _ := tokens(t, "")
	e := setup(t, "memory", withTokens(file), func(c *config.Config) {
		c.CORS.AllowedOrigins = []string{"https://console.example"}
	})
	preflight := func(origin string) http.Header {
		req, _ := http.NewRequest(http.MethodOptions, e.base+"/api/v1/packages", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		// Browsers send the list lowercased and sorted.
		req.Header.Set("Access-Control-Request-Headers", "authorization,content-type,idempotency-key,if-match")
		res, err := e.http1.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.Header
	}
	h := preflight("https://console.example")
	if h.Get("Access-Control-Allow-Origin") != "https://console.example" {
		t.Errorf("allowed origin: %v", h)
	}
	if allowed := strings.ToLower(h.Get("Access-Control-Allow-Headers")); !strings.Contains(allowed, "authorization") || !strings.Contains(allowed, "if-match") {
		t.Errorf("allowed headers %q", allowed)
	}
	if h := preflight("https://evil.example"); h.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("foreign origin allowed: %v", h)
	}
}

func TestSecurityAuditTrail(t *testing.T) {
	t.Parallel()
	file, tok := tokens(t, "")
	dsn := pgtest.NewDatabase(t)
	onDB := func(c *config.Config) {
		c.Storage.Type, c.Storage.DatabaseURL, c.Storage.MaxConns = "postgres", dsn, 4
	}
	e := setup(t, "memory", withTokens(file), onDB)
	as := func(role string) []string {
		return []string{"Authorization", "Bearer " + tok[role], "Idempotency-Key", "k-" + role}
	}

	e.do("POST", "/api/v1/packages", echoPackage("audited"), as("editor")...).expect(t, http.StatusCreated)
	e.do("GET", "/api/v1/packages/audited", nil, as("viewer")...).expect(t, http.StatusOK) // reads are not audited
	e.do("DELETE", "/api/v1/packages/audited", nil, as("viewer")...).expect(t, http.StatusForbidden)
	e.do("GET", "/api/v1/packages", nil).expect(t, http.StatusUnauthorized)
	e.do("GET", "/api/v1/audit", nil, as("viewer")...).expect(t, http.StatusForbidden)

	type record struct {
		Principal, Role, AuthMethod, Action, Target, Outcome, StatusCode, IdempotencyKey, Source, CorrelationID string
	}
	read := func(e *env, query string) []record {
		var raw []map[string]any
		e.do("GET", "/api/v1/audit"+query, nil, "Authorization", "Bearer "+tok["admin"]).expect(t, http.StatusOK).json(t, &raw)
		out := make([]record, len(raw))
		for i, r := range raw {
			s := func(k string) string { v, _ := r[k].(string); return v }
			out[i] = record{s("principal"), s("role"), s("auth_method"), s("action"), s("target"), s("outcome"),
				s("status_code"), s("idempotency_key"), s("source"), s("correlation_id")}
		}
		return out
	}
	check := func(e *env) {
		t.Helper()
		recs := read(e, "")
		// Newest first: the anonymous refusal, the viewer's denied delete,
		// the editor's create (the viewer's reads are absent). Denied
		// audit reads are recorded too, so filter to the package actions.
		var got []string
		for _, r := range recs {
			got = append(got, r.Principal+" "+r.Action+" "+r.Outcome)
		}
		want := []string{
			"viewer-bot oaas.pm.v1.AuditService/ListAuditRecords denied",
			" oaas.pm.v1.PackageService/ListPackages denied",
			"viewer-bot oaas.pm.v1.PackageService/DeletePackage denied",
			"editor-bot oaas.pm.v1.PackageService/CreatePackage ok",
		}
		if strings.Join(got, "|") != strings.Join(want, "|") {
			t.Fatalf("audit trail:\n got %q\nwant %q", got, want)
		}
		create := recs[3]
		if create.Target != "audited" || create.Role != "editor" || create.AuthMethod != "token" || create.IdempotencyKey != "k-editor" ||
			create.StatusCode != "ok" || create.Source == "" || create.CorrelationID == "" {
			t.Errorf("create record %+v", create)
		}
		if denied := read(e, "?principal=viewer-bot&action=oaas.pm.v1.PackageService/DeletePackage"); len(denied) != 1 || denied[0].StatusCode != "permission_denied" {
			t.Errorf("filtered: %+v", denied)
		}
	}
	check(e)
	for _, tk := range tok {
		for _, r := range read(e, "") {
			if strings.Contains(fmt.Sprint(r), tk) {
				t.Errorf("a token is in an audit record: %+v", r)
			}
		}
	}
	// Records survive a restart on PostgreSQL.
	if err := e.shutdown(); err != nil {
		t.Fatal(err)
	}
	again := setup(t, "memory", withTokens(file), onDB)
	before := len(read(again, ""))
	if before < 4 {
		t.Fatalf("after restart: %d records", before)
	}
}
