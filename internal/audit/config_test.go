package audit_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/oaas/pm/internal/audit"
	"github.com/oaas/pm/internal/auth"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/store"
	"github.com/oaas/pm/internal/store/memory"
)

// TestFromConfig checks that the AUDIT_* settings reach the recorder and
// the memory ring: capacity, the denial cap (0 meaning none) and the
// forwarded-for trust.
func TestFromConfig(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		cfg    config.Audit
		denied int // records after 5 refusals
		source string
	}{
		{"capped", config.Audit{MemoryCapacity: 4, DeniedPerMinute: 2, Retention: time.Hour, PurgeInterval: time.Hour}, 2, "192.0.2.1"},
		{"no cap, ring bound", config.Audit{MemoryCapacity: 4, DeniedPerMinute: 0, TrustForwardedFor: true}, 4, "203.0.113.5"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := memory.New(nil)
			rec, purger := audit.FromConfig(st, tc.cfg, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
			purger.Start()
			defer purger.Stop()
			for range 5 {
				r := httptest.NewRequest(http.MethodDelete, "/oaas.pm.v1.PackageService/DeletePackage", nil)
				r.RemoteAddr = "192.0.2.1:4711"
				r.Header.Set("X-Forwarded-For", "203.0.113.5")
				rec.RecordDenied(context.Background(), r, auth.Principal{}, connect.CodeUnauthenticated, "authentication required")
			}
			recs, err := st.ListAudit(t.Context(), store.AuditFilter{})
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != tc.denied {
				t.Fatalf("%d records, want %d", len(recs), tc.denied)
			}
			r := recs[0]
			if r.Source != tc.source || r.Action != "oaas.pm.v1.PackageService/DeletePackage" || r.Code != "unauthenticated" ||
				r.Outcome != store.AuditDenied || r.Message != "authentication required" {
				t.Errorf("record %+v", r)
			}
		})
	}
}
