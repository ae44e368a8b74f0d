package auth_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/auth"
	"github.com/oaas/pm/internal/tlsreload/tlstest"
)

// caller is one identity of the matrix: a role's token, or nobody.
type caller struct {
	name  string
	role  auth.Role // 0: anonymous
	token string
}

func callers(h *harness) []caller {
	out := []caller{{name: "anonymous"}}
	for _, r := range auth.Roles() {
		out = append(out, caller{name: r.String(), role: r, token: h.tokens[r]})
	}
	return out
}

// TestRoleMatrix walks every registered oaas.pm.v1 RPC × every role (and no
// credential) × REST, Connect, gRPC and gRPC-Web, generated from the table:
// allowed calls reach the handler (unimplemented here), others are refused
// with the protocol's unauthenticated or permission-denied answer.
func TestRoleMatrix(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{})
	client := h.httpClient(t, nil)
	for _, md := range pmMethods(t) {
		procedure := procedureOf(md)
		need, ok := auth.Required(procedure)
		if !ok {
			t.Errorf("%s has no row in the authorization table", procedure)
			continue
		}
		for _, c := range callers(h) {
			t.Run(string(md.Name())+"/"+c.name, func(t *testing.T) {
				t.Parallel()
				allowed := c.role != 0 && c.role.Allows(need)
				for _, p := range rpcProtocols {
					_, err := h.call(t, client, p, md, bearer(c.token))
					want := connect.CodeUnimplemented
					switch {
					case c.role == 0:
						want = connect.CodeUnauthenticated
					case !allowed:
						want = connect.CodePermissionDenied
					}
					if procedure == pmv1connect.PackageServiceGetPackageProcedure && allowed {
						if err != nil {
							t.Errorf("%s: %v", p, err)
						}
						continue
					}
					if got := connect.CodeOf(err); got != want {
						t.Errorf("%s: code %v (%v), want %v", p, got, err, want)
					}
					if want == connect.CodePermissionDenied {
						msg := "requires role " + need.String() + `; principal "` + c.role.String() + `-bot" has ` + c.role.String()
						if !strings.Contains(err.Error(), msg) {
							t.Errorf("%s: denial %q does not say %q", p, err, msg)
						}
					}
				}

				if md.IsStreamingServer() {
					return // streams reach REST as Server-Sent Events of list routes, tested with them
				}
				res := h.rest(t, client, md, bearer(c.token))
				wantStatus := http.StatusNotImplemented
				switch {
				case c.role == 0:
					wantStatus = http.StatusUnauthorized
				case !allowed:
					wantStatus = http.StatusForbidden
				case procedure == pmv1connect.PackageServiceGetPackageProcedure:
					wantStatus = http.StatusOK
				}
				if res.status != wantStatus {
					t.Errorf("rest: status %d (%s), want %d", res.status, res.body, wantStatus)
				}
				if wantStatus == http.StatusForbidden && !strings.Contains(res.body, "requires role "+need.String()) {
					t.Errorf("rest: 403 body %s does not name the role", res.body)
				}
			})
		}
	}
}

func TestRefusalsSpeakEachProtocol(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{})
	client := h.httpClient(t, nil)
	md := methodByName(t, pmv1connect.PackageServiceDeletePackageProcedure)

	cases := []struct {
		name, header, reason string
		invalidToken         bool
	}{
		{"no credential", "", "authentication required", false},
		{"unknown token", "Bearer not-a-token", "not a known API token", true},
		{"basic auth", "Basic dXNlcjpwYXNz", "must be Bearer", false},
		{"empty bearer", "Bearer ", "must be Bearer", false},
		{"token of another server", "Bearer " + strings.Repeat("a", 64), "not a known API token", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hdr := http.Header{}
			if tc.header != "" {
				hdr.Set("Authorization", tc.header)
			}
			res := h.rest(t, client, md, hdr)
			if res.status != http.StatusUnauthorized {
				t.Fatalf("REST status %d", res.status)
			}
			challenge := res.header.Get("WWW-Authenticate")
			if !strings.HasPrefix(challenge, "Bearer") || strings.Contains(challenge, "invalid_token") != tc.invalidToken {
				t.Errorf("WWW-Authenticate %q", challenge)
			}
			var body map[string]string
			if err := json.Unmarshal([]byte(res.body), &body); err != nil || !strings.Contains(body["error"], tc.reason) {
				t.Errorf("REST body %s, want {\"error\": ...%s...}", res.body, tc.reason)
			}
			for _, p := range rpcProtocols {
				_, err := h.call(t, client, p, md, hdr)
				if connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), tc.reason) {
					t.Errorf("%s: %v", p, err)
				}
			}
		})
	}
}

func TestPrincipalReachesHandler(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{})
	md := methodByName(t, pmv1connect.PackageServiceGetPackageProcedure)
	for _, r := range auth.Roles() {
		for _, p := range rpcProtocols {
			msg, err := h.call(t, h.httpClient(t, nil), p, md, bearer(h.tokens[r]))
			if err != nil {
				t.Fatalf("%s %s: %v", r, p, err)
			}
			got := msg.Get(msg.Descriptor().Fields().ByName("revision")).String()
			if want := r.String() + "-bot/" + r.String() + "/token"; got != want {
				t.Errorf("%s %s: principal %q, want %q", r, p, got, want)
			}
		}
	}
	// Bearer is case-insensitive (RFC 7235).
	msg, err := h.call(t, h.httpClient(t, nil), protoConnect, md, http.Header{"Authorization": {"bearer " + h.tokens[auth.Viewer]}})
	if err != nil || !strings.HasPrefix(msg.Get(msg.Descriptor().Fields().ByName("revision")).String(), "viewer-bot/") {
		t.Errorf("lower-case scheme: %v", err)
	}
}

func TestStreamingCallsAreAuthorized(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{})
	for _, p := range rpcProtocols {
		for _, c := range callers(h) {
			client := connect.NewClient[emptypb.Empty, wrapperspb.StringValue](h.httpClient(t, nil), h.url+auth.ProcedureDeleteOrphan, p.option())
			req := connect.NewRequest(&emptypb.Empty{})
			req.Header().Set("Authorization", "Bearer "+c.token)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			stream, err := client.CallServerStream(ctx, req)
			var got []string
			if err == nil {
				for stream.Receive() {
					got = append(got, stream.Msg().GetValue())
				}
				err = stream.Err()
				_ = stream.Close()
			}
			cancel()
			want := connect.CodePermissionDenied
			switch c.role {
			case 0:
				want = connect.CodeUnauthenticated
			case auth.Admin:
				if err != nil || len(got) != 1 || got[0] != "admin-bot" {
					t.Errorf("%s admin stream: %v %v", p, got, err)
				}
				continue
			}
			if connect.CodeOf(err) != want || len(got) != 0 {
				t.Errorf("%s %s: %v (received %v), want %v", p, c.name, err, got, want)
			}
		}
	}
}

func TestOpenPaths(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		policy auth.Policy
	}{{"closed", auth.Policy{}}, {"metrics and reflection open", auth.Policy{MetricsOpen: true, ReflectionOpen: true}}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := setup(t, harnessOptions{policy: tc.policy})
			client := h.httpClient(t, nil)
			for _, path := range []string{"/health", "/livez", "/readyz"} {
				if res := h.do(t, client, http.MethodGet, path, nil, nil); res.status != http.StatusOK {
					t.Errorf("%s: %d", path, res.status)
				}
			}
			res := h.do(t, client, http.MethodGet, "/metrics", nil, nil)
			if want := map[bool]int{true: 200, false: 401}[tc.policy.MetricsOpen]; res.status != want {
				t.Errorf("/metrics anonymous: %d, want %d", res.status, want)
			}
			if res := h.do(t, client, http.MethodGet, "/metrics", nil, bearer(h.tokens[auth.Viewer])); res.status != http.StatusOK {
				t.Errorf("/metrics with a token: %d", res.status)
			}
			if res := h.do(t, client, http.MethodGet, "/nowhere", nil, nil); res.status != http.StatusUnauthorized {
				t.Errorf("unknown path anonymous: %d, want 401 before any routing", res.status)
			}

			// gRPC health is open whatever the policy: probes send no token.
			hc := grpchealth.NewClient(client, h.url, connect.WithGRPC())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if resp, err := hc.Check(ctx, &grpchealth.CheckRequest{}); err != nil || resp.Status != grpchealth.StatusServing {
				t.Errorf("anonymous gRPC health: %v %v", resp, err)
			}

			list := func(token string) error {
				rc := grpcreflect.NewClient(client, h.url, connect.WithGRPC(), connect.WithInterceptors(headerInterceptor(token)))
				stream := rc.NewStream(ctx)
				defer func() { _, _ = stream.Close() }()
				_, err := stream.ListServices()
				return err
			}
			err := list("")
			if tc.policy.ReflectionOpen && err != nil {
				t.Errorf("open reflection refused: %v", err)
			}
			if !tc.policy.ReflectionOpen && connect.CodeOf(err) != connect.CodeUnauthenticated {
				t.Errorf("closed reflection, anonymous: %v", err)
			}
			if err := list(h.tokens[auth.Viewer]); err != nil {
				t.Errorf("reflection with a viewer token: %v", err)
			}
		})
	}
}

// headerInterceptor adds a bearer token to streaming client calls.
type headerInterceptor string

func (h headerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if h != "" {
			req.Header().Set("Authorization", "Bearer "+string(h))
		}
		return next(ctx, req)
	}
}

func (h headerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return func(ctx context.Context, spec connect.Spec) connect.StreamingClientConn {
		conn := next(ctx, spec)
		if h != "" {
			conn.RequestHeader().Set("Authorization", "Bearer "+string(h))
		}
		return conn
	}
}

func (h headerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

func TestModeNoneIsAnonymousAdmin(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{disabled: true})
	client := h.httpClient(t, nil)
	md := methodByName(t, pmv1connect.PackageServiceGetPackageProcedure)
	for _, p := range rpcProtocols {
		msg, err := h.call(t, client, p, md, nil)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if got := msg.Get(msg.Descriptor().Fields().ByName("revision")).String(); got != "anonymous/admin/none" {
			t.Errorf("%s: principal %q", p, got)
		}
	}
	// Admin-only and write calls reach the handler.
	del := methodByName(t, pmv1connect.PackageServiceDeletePackageProcedure)
	if res := h.rest(t, client, del, nil); res.status != http.StatusNotImplemented {
		t.Errorf("REST delete without auth: %d %s", res.status, res.body)
	}
	if res := h.do(t, client, http.MethodGet, "/metrics", nil, nil); res.status != http.StatusOK {
		t.Errorf("/metrics: %d", res.status)
	}
}

func TestMTLSPrincipals(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{})
	get := methodByName(t, pmv1connect.PackageServiceGetPackageProcedure)
	createPkg := methodByName(t, pmv1connect.PackageServiceCreatePackageProcedure)
	createDep := methodByName(t, pmv1connect.DeploymentServiceCreateDeploymentProcedure)

	deployBot := h.clientCA.Issue(t, tlstest.Identity{CommonName: "deploy-bot", Client: true})
	argo := h.clientCA.Issue(t, tlstest.Identity{CommonName: "argocd", URIs: []string{"spiffe://cluster.local/ns/argocd/sa/argo"}, Client: true})
	stranger := h.clientCA.Issue(t, tlstest.Identity{CommonName: "stranger", Client: true})
	revision := func(client *http.Client, p protocol, header http.Header) (string, error) {
		msg, err := h.call(t, client, p, get, header)
		if err != nil {
			return "", err
		}
		return msg.Get(msg.Descriptor().Fields().ByName("revision")).String(), nil
	}

	for _, p := range rpcProtocols {
		bot := h.httpClient(t, &deployBot.Pair)
		if got, err := revision(bot, p, nil); err != nil || got != "deploy-bot/deployer/mtls" {
			t.Errorf("%s CN mapping: %q %v", p, got, err)
		}
		// A mapped certificate wins over a bearer token.
		if got, err := revision(bot, p, bearer(h.tokens[auth.Admin])); err != nil || got != "deploy-bot/deployer/mtls" {
			t.Errorf("%s certificate before token: %q %v", p, got, err)
		}
		if _, err := h.call(t, bot, p, createDep, nil); connect.CodeOf(err) != connect.CodeUnimplemented {
			t.Errorf("%s deployer creates deployments: %v", p, err)
		}
		if _, err := h.call(t, bot, p, createPkg, nil); connect.CodeOf(err) != connect.CodePermissionDenied ||
			!strings.Contains(err.Error(), `requires role editor; principal "deploy-bot" has deployer`) {
			t.Errorf("%s deployer writes packages: %v", p, err)
		}
		if got, err := revision(h.httpClient(t, &argo.Pair), p, nil); err != nil || got != "argo/admin/mtls" {
			t.Errorf("%s URI SAN mapping: %q %v", p, got, err)
		}
		// An unmapped certificate falls through to the bearer token.
		other := h.httpClient(t, &stranger.Pair)
		if _, err := revision(other, p, nil); connect.CodeOf(err) != connect.CodeUnauthenticated ||
			!strings.Contains(err.Error(), "not mapped") {
			t.Errorf("%s unmapped certificate: %v", p, err)
		}
		if got, err := revision(other, p, bearer(h.tokens[auth.Viewer])); err != nil || got != "viewer-bot/viewer/token" {
			t.Errorf("%s unmapped certificate + token: %q %v", p, got, err)
		}
	}
	// REST reaches the same principal (GetPackage's REST body is only the
	// package, so the denial's message shows it).
	if res := h.rest(t, h.httpClient(t, &deployBot.Pair), createPkg, nil); res.status != http.StatusForbidden || !strings.Contains(res.body, `principal \"deploy-bot\" has deployer`) {
		t.Errorf("REST with a client certificate: %d %s", res.status, res.body)
	}
}

func TestOIDCThroughTheServer(t *testing.T) {
	t.Parallel()
	is := newIssuer(t)
	cfg := is.config()
	h := setup(t, harnessOptions{oidc: &cfg})
	client := h.httpClient(t, nil)
	get := methodByName(t, pmv1connect.PackageServiceGetPackageProcedure)
	del := methodByName(t, pmv1connect.PackageServiceDeletePackageProcedure)

	editor := is.sign(t, "rsa-1", goodClaims(nil))
	viewer := is.sign(t, "ec-1", goodClaims(map[string]any{"sub": "carol", "role": "viewer"}))
	expired := is.sign(t, "rsa-1", goodClaims(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}))
	foreign := is.sign(t, "rsa-1", goodClaims(map[string]any{"iss": "https://other.test"}))
	for _, p := range rpcProtocols {
		msg, err := h.call(t, client, p, get, bearer(editor))
		if err != nil || msg.Get(msg.Descriptor().Fields().ByName("revision")).String() != "alice/editor/oidc" {
			t.Errorf("%s editor JWT: %v", p, err)
		}
		if _, err := h.call(t, client, p, del, bearer(editor)); connect.CodeOf(err) != connect.CodeUnimplemented {
			t.Errorf("%s editor deletes a package: %v", p, err)
		}
		if _, err := h.call(t, client, p, del, bearer(viewer)); connect.CodeOf(err) != connect.CodePermissionDenied ||
			!strings.Contains(err.Error(), `principal "carol" has viewer`) {
			t.Errorf("%s viewer deletes a package: %v", p, err)
		}
		for name, tok := range map[string]string{"expired": expired, "issuer": foreign} {
			if _, err := h.call(t, client, p, get, bearer(tok)); connect.CodeOf(err) != connect.CodeUnauthenticated || !strings.Contains(err.Error(), name) {
				t.Errorf("%s %s JWT: %v", p, name, err)
			}
		}
	}
	// API tokens still work beside OIDC.
	if _, err := h.call(t, client, protoGRPC, get, bearer(h.tokens[auth.Viewer])); err != nil {
		t.Errorf("API token with OIDC configured: %v", err)
	}
	if res := h.rest(t, client, get, bearer(expired)); res.status != http.StatusUnauthorized ||
		!strings.Contains(res.header.Get("WWW-Authenticate"), "invalid_token") || !strings.Contains(res.body, "expired") {
		t.Errorf("REST expired JWT: %d %v %s", res.status, res.header, res.body)
	}
}

func TestFailureLimiter(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{failureLimit: 3})
	client := h.httpClient(t, nil)
	md := methodByName(t, pmv1connect.PackageServiceGetPackageProcedure)
	for i := range 3 {
		if _, err := h.call(t, client, protoConnect, md, bearer("guess-"+string(rune('a'+i)))); connect.CodeOf(err) != connect.CodeUnauthenticated {
			t.Fatalf("failure %d: %v", i+1, err)
		}
	}
	// The source is now refused, even with a valid token, on every protocol.
	for _, p := range rpcProtocols {
		_, err := h.call(t, client, p, md, bearer(h.tokens[auth.Admin]))
		if connect.CodeOf(err) != connect.CodeResourceExhausted {
			t.Errorf("%s after the limit: %v", p, err)
		}
	}
	res := h.rest(t, client, md, bearer(h.tokens[auth.Admin]))
	if res.status != http.StatusTooManyRequests || res.header.Get("Retry-After") == "" || !strings.Contains(res.body, "too many") {
		t.Errorf("REST after the limit: %d %v %s", res.status, res.header, res.body)
	}
	// Probes are not limited.
	if res := h.do(t, client, http.MethodGet, "/health", nil, nil); res.status != http.StatusOK {
		t.Errorf("/health of a blocked source: %d", res.status)
	}
	if !strings.Contains(h.logs.String(), "authentication source blocked") {
		t.Error("blocking not logged")
	}
}

func TestTokensFileReloads(t *testing.T) {
	t.Parallel()
	h := setup(t, harnessOptions{reload: 10 * time.Millisecond})
	client := h.httpClient(t, nil)
	md := methodByName(t, pmv1connect.PackageServiceGetPackageProcedure)
	old, fresh := h.tokens[auth.Viewer], "fresh-"+randomHex(t)

	tlstest.WriteFile(t, h.tokensFile, []byte("tokens:\n  - {principal: fresh, role: viewer, sha256: "+auth.HashToken(fresh)+"}\n"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, errOld := h.call(t, client, protoConnect, md, bearer(old))
		_, errNew := h.call(t, client, protoConnect, md, bearer(fresh))
		if connect.CodeOf(errOld) == connect.CodeUnauthenticated && errNew == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("reload not seen: old %v, new %v", errOld, errNew)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// A broken edit keeps the last good tokens and is logged.
	tlstest.WriteFile(t, h.tokensFile, []byte("tokens:\n  - {principal: x, role: superuser, sha256: "+auth.HashToken("x")+"}\n"))
	time.Sleep(50 * time.Millisecond)
	for range 3 {
		if _, err := h.call(t, client, protoConnect, md, bearer(fresh)); err != nil {
			t.Fatalf("broken edit locked out a good token: %v", err)
		}
	}
	if !strings.Contains(h.logs.String(), "keeping the previous API tokens") {
		t.Error("broken tokens file not logged")
	}
}

// TestNoSecretInLogs drives failures of every kind with debug logging on and
// greps the output (and every response) for the credentials.
func TestNoSecretInLogs(t *testing.T) {
	t.Parallel()
	is := newIssuer(t)
	cfg := is.config()
	h := setup(t, harnessOptions{oidc: &cfg, failureLimit: 25, reload: time.Millisecond})
	client := h.httpClient(t, nil)
	md := methodByName(t, pmv1connect.PackageServiceDeletePackageProcedure)

	secrets := []string{
		h.tokens[auth.Viewer], h.tokens[auth.Admin],
		"wrong-" + randomHex(t),
		h.tokens[auth.Viewer] + "x", // a near miss
		is.sign(t, "rsa-1", goodClaims(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})),
		is.sign(t, "rsa-1", goodClaims(map[string]any{"role": "nobody"})),
		unsignedToken(goodClaims(nil)),
	}
	var responses []string
	for _, s := range secrets {
		for _, p := range rpcProtocols {
			_, err := h.call(t, client, p, md, bearer(s))
			if err != nil {
				responses = append(responses, err.Error())
			}
		}
		res := h.rest(t, client, md, bearer(s))
		responses = append(responses, res.body, res.header.Get("WWW-Authenticate"))
	}
	// A broken reload with a raw token pasted where a hash belongs.
	pasted := "pasted-" + randomHex(t)
	secrets = append(secrets, pasted)
	tlstest.WriteFile(t, h.tokensFile, []byte("tokens:\n  - {principal: oops, role: admin, sha256: "+pasted+"}\n"))
	time.Sleep(20 * time.Millisecond)
	_, _ = h.call(t, client, protoConnect, md, bearer(h.tokens[auth.Admin]))

	logs := h.logs.String()
	if !strings.Contains(logs, "request not authenticated") || !strings.Contains(logs, "call denied") || !strings.Contains(logs, "keeping the previous") {
		t.Fatalf("the failures were not logged, so the grep proves nothing:\n%s", logs)
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("a credential appears in the logs: %.12s...", s)
		}
		for _, r := range responses {
			if strings.Contains(r, s) {
				t.Errorf("a credential appears in a response: %.12s...", s)
			}
		}
	}
	if strings.Contains(logs, "Bearer") || strings.Contains(logs, "Authorization:") {
		t.Error("an Authorization header appears in the logs")
	}
}

func TestInterceptorWithoutMiddleware(t *testing.T) {
	t.Parallel()
	i := auth.NewInterceptor(auth.Policy{}, nil)
	called := false
	next := connect.UnaryFunc(func(context.Context, connect.AnyRequest) (connect.AnyResponse, error) {
		called = true
		return nil, nil
	})
	_, err := i.WrapUnary(next)(context.Background(), fakeRequest{procedure: pmv1connect.PackageServiceGetPackageProcedure})
	if connect.CodeOf(err) != connect.CodeUnauthenticated || called {
		t.Errorf("no principal: %v (handler called %v)", err, called)
	}
	ctx := auth.WithPrincipal(context.Background(), auth.Principal{Name: "x", Role: auth.Admin, Method: auth.MethodToken})
	_, err = i.WrapUnary(next)(ctx, fakeRequest{procedure: "/oaas.pm.v1.NewService/NoRowYet"})
	if connect.CodeOf(err) != connect.CodePermissionDenied || called {
		t.Errorf("procedure without a row: %v (handler called %v)", err, called)
	}
	if _, err = i.WrapUnary(next)(ctx, fakeRequest{procedure: pmv1connect.PackageServiceDeletePackageProcedure}); err != nil || !called {
		t.Errorf("admin: %v (handler called %v)", err, called)
	}
	var ce *connect.Error
	if err := auth.Authorize(auth.Principal{Name: "ci", Role: auth.Viewer}, pmv1connect.PackageServiceCreatePackageProcedure); !errors.As(err, &ce) ||
		ce.Message() != `requires role editor; principal "ci" has viewer` {
		t.Errorf("Authorize message: %v", err)
	}
}

// fakeRequest is enough of a connect.AnyRequest for the interceptor.
type fakeRequest struct {
	connect.AnyRequest
	procedure string
}

func (f fakeRequest) Spec() connect.Spec { return connect.Spec{Procedure: f.procedure} }
