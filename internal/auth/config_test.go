package auth_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/oaas/pm/internal/auth"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/tlsreload/tlstest"
)

func loadConfig(t *testing.T, env map[string]string) config.Config {
	t.Helper()
	c, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestFromConfig(t *testing.T) {
	t.Parallel()
	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	tlstest.WriteFile(t, tokens, []byte("tokens:\n  - {principal: ci, role: editor, sha256: "+auth.HashToken("t0ken")+"}\n"))

	a, opts, err := auth.FromConfig(context.Background(), loadConfig(t, map[string]string{"AUTH_MODE": "none"}), nil)
	if err != nil || a != nil || !opts.Disabled {
		t.Errorf("AUTH_MODE=none: %v %v %+v", a, err, opts)
	}
	a, opts, err = auth.FromConfig(context.Background(), loadConfig(t, nil), nil)
	if err != nil || a != nil || !opts.Disabled {
		t.Errorf("nothing configured: %v %v %+v", a, err, opts)
	}

	c := loadConfig(t, map[string]string{"AUTH_TOKENS_FILE": tokens, "AUTH_METRICS_OPEN": "true", "AUTH_FAILURE_LIMIT": "2"})
	a, opts, err = auth.FromConfig(context.Background(), c, nil)
	if err != nil || a == nil || opts.Disabled || !opts.MetricsOpen || opts.ReflectionOpen || a.Limiter() == nil {
		t.Fatalf("tokens file: %v %v %+v", a, err, opts)
	}
	srv := httptest.NewServer(auth.Middleware(a, opts)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := auth.FromContext(r.Context())
		_, _ = io.WriteString(w, p.Name+"/"+p.Role.String())
	})))
	t.Cleanup(srv.Close)
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL+"/api/v1/packages", nil)
	req.Header.Set("Authorization", "Bearer t0ken")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if string(body) != "ci/editor" {
		t.Errorf("principal %q", body)
	}

	missing := loadConfig(t, map[string]string{"AUTH_TOKENS_FILE": filepath.Join(t.TempDir(), "none.yaml")})
	if _, _, err := auth.FromConfig(context.Background(), missing, nil); err == nil {
		t.Error("a missing tokens file started")
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()
	inner := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })
	setupCORS := func(c config.CORS) string {
		srv := httptest.NewServer(auth.CORS(c, inner))
		t.Cleanup(srv.Close)
		return srv.URL
	}
	preflight := func(url, origin string) http.Header {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodOptions, url+"/oaas.pm.v1.PackageService/DeletePackage", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", http.MethodPost)
		// Browsers send the list lower-cased and sorted (Fetch), as rs/cors expects.
		req.Header.Set("Access-Control-Request-Headers", "authorization,connect-protocol-version,content-type")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.Header
	}

	url := setupCORS(config.CORS{AllowedOrigins: []string{"https://console.example.com"}, AllowCredentials: true})
	h := preflight(url, "https://console.example.com")
	if h.Get("Access-Control-Allow-Origin") != "https://console.example.com" || h.Get("Access-Control-Allow-Credentials") != "true" {
		t.Errorf("allowed origin: %v", h)
	}
	if h := preflight(url, "https://evil.example"); h.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("foreign origin allowed: %v", h)
	}

	open := setupCORS(config.CORS{AllowedOrigins: []string{"*"}})
	if h := preflight(open, "https://any.example"); h.Get("Access-Control-Allow-Origin") != "*" || h.Get("Access-Control-Allow-Credentials") != "" {
		t.Errorf("wildcard without credentials: %v", h)
	}
	if h := preflight(setupCORS(config.CORS{}), "https://console.example.com"); h.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("no allowlist still allowed: %v", h)
	}
}
