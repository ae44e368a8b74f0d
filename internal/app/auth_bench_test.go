package app_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/oaas/pm/internal/config"
)

// BenchmarkGetAuthCost measures the get path (REST GET of one package,
// memory store, one keep-alive client) on a PM without authentication and
// on one with an API tokens file, in the same run: what authentication
// costs a request. Reported, not asserted:
//
//	go test -run '^$' -bench BenchmarkGetAuthCost -benchtime 5s ./internal/app
func BenchmarkGetAuthCost(b *testing.B) {
	file, tokens := tokens(b, "")
	tok := tokens["viewer"]
	cases := []struct {
		name   string
		header string
		tweak  bool
	}{
		{"no-auth", "", false},
		{"api-token", "Bearer " + tok, true},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var tweaks []func(*config.Config)
			if c.tweak {
				tweaks = append(tweaks, withTokens(file))
			}
			e := setup(b, "memory", tweaks...)
			e.do("POST", "/api/v1/packages", echoPackage("bench"), "Authorization", "Bearer "+tokens["editor"]).expect(b, http.StatusCreated)
			req := func() {
				r, _ := http.NewRequest(http.MethodGet, e.base+"/api/v1/packages/bench", nil)
				if c.header != "" {
					r.Header.Set("Authorization", c.header)
				}
				res, err := e.http1.Do(r)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, res.Body)
				_ = res.Body.Close()
				if res.StatusCode != http.StatusOK {
					b.Fatalf("status %d", res.StatusCode)
				}
			}
			b.ResetTimer()
			for b.Loop() {
				req()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
		})
	}
}
