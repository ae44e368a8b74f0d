package auth_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oaas/pm/internal/auth"
	"github.com/oaas/pm/internal/tlsreload/tlstest"
)

// BenchmarkMiddleware is the cost authentication adds to one request,
// without the network: off (AUTH_MODE=none), an API token among n
// entries (each compared in constant time), and a JWT (signature check).
func BenchmarkMiddleware(b *testing.B) {
	log := slog.New(slog.DiscardHandler)
	next := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	run := func(b *testing.B, h http.Handler, token string) {
		b.Helper()
		req := httptest.NewRequestWithContext(context.Background(), http.MethodGet, "/api/v1/packages/x", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for b.Loop() {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				b.Fatalf("status %d", w.Code)
			}
		}
	}
	b.Run("none", func(b *testing.B) {
		run(b, auth.Middleware(nil, auth.Options{Disabled: true, Log: log})(next), "")
	})
	for _, n := range []int{4, 100} {
		b.Run(fmt.Sprintf("api-token-of-%d", n), func(b *testing.B) {
			var file strings.Builder
			file.WriteString("tokens:\n")
			for i := range n {
				fmt.Fprintf(&file, "  - {principal: p%d, role: viewer, sha256: %s}\n", i, auth.HashToken(fmt.Sprint("token-", i)))
			}
			path := filepath.Join(b.TempDir(), "tokens.yaml")
			tlstest.WriteFile(b, path, []byte(file.String()))
			a, err := auth.New(context.Background(), auth.Config{TokensFile: path, Log: log})
			if err != nil {
				b.Fatal(err)
			}
			run(b, auth.Middleware(a, auth.Options{Log: log})(next), fmt.Sprint("token-", n-1))
		})
	}
	b.Run("jwt-rs256", func(b *testing.B) {
		is := newIssuer(b)
		cfg := is.config()
		a, err := auth.New(context.Background(), auth.Config{OIDC: &cfg, Log: log})
		if err != nil {
			b.Fatal(err)
		}
		run(b, auth.Middleware(a, auth.Options{Log: log})(next), is.sign(b, "rsa-1", goodClaims(nil)))
	})
}
