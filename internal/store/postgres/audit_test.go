package postgres_test

import (
	"context"
	"testing"

	"github.com/oaas/pm/internal/store"
	"github.com/oaas/pm/internal/store/postgres"
	"github.com/oaas/pm/internal/store/storetest"
)

// TestAuditSurvivesRestart appends records, closes the store, opens a new
// one on the same database (as a restarted PM does) and reads them back.
func TestAuditSurvivesRestart(t *testing.T) {
	t.Parallel()
	first, dsn := setup(t)
	ctx := t.Context()
	var want []store.AuditRecord
	for _, rec := range []store.AuditRecord{
		{Principal: "ci", Role: "editor", AuthMethod: "token", Action: "oaas.pm.v1.PackageService/CreatePackage",
			Target: "shop", Outcome: store.AuditOK, Code: "ok", CorrelationID: "c1", Source: "10.0.0.7", IdempotencyKey: "k1"},
		{Principal: "viewer-bot", Role: "viewer", AuthMethod: "oidc", Action: "oaas.pm.v1.PackageService/DeletePackage",
			Target: "shop", Outcome: store.AuditDenied, Code: "permission_denied",
			Message: `requires role editor; principal "viewer-bot" has viewer`, CorrelationID: "c2", Source: "10.0.0.8"},
	} {
		got, err := first.AppendAudit(ctx, rec)
		if err != nil {
			t.Fatal(err)
		}
		want = append([]store.AuditRecord{got}, want...)
	}
	first.Close()

	second, err := postgres.Open(ctx, postgres.Config{URL: dsn, MaxConns: 2, Clock: storetest.NewClock()})
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	got, err := second.ListAudit(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("after reopening: %d records, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("after reopening, record %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	// The new store goes on numbering after the old one.
	next, err := second.AppendAudit(context.WithoutCancel(ctx), store.AuditRecord{Action: "a", Outcome: store.AuditOK, Code: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	if next.ID <= want[0].ID {
		t.Errorf("id %d after restart, want more than %d", next.ID, want[0].ID)
	}
}

// BenchmarkAuditAppend measures one audit append, the cost the audit
// interceptor adds to every write call on Postgres.
func BenchmarkAuditAppend(b *testing.B) {
	st, _ := setup(b)
	rec := store.AuditRecord{Principal: "ci", Role: "editor", AuthMethod: "token", Action: "oaas.pm.v1.PackageService/CreatePackage",
		Target: "shop", Outcome: store.AuditOK, Code: "ok", CorrelationID: "0123456789abcdef01234567", Source: "10.0.0.7"}
	for b.Loop() {
		if _, err := st.AppendAudit(context.Background(), rec); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuditListPage measures a filtered first page of 100 over a
// trail of 50,000 records.
func BenchmarkAuditListPage(b *testing.B) {
	st, dsn := setup(b)
	conn := connect(b, dsn)
	if _, err := conn.Exec(context.Background(), `
		INSERT INTO audit_records (recorded_at, principal, role, auth_method, action, target, outcome,
		    status_code, message, correlation_id, source, idempotency_key)
		SELECT now() - (i || ' seconds')::interval, 'p' || (i % 20), 'editor', 'token', 'a' || (i % 10), 't' || (i % 500),
		    (ARRAY['ok','denied','error'])[1 + i % 3], 'ok', '', '', '', ''
		FROM generate_series(1, 50000) i;
		ANALYZE audit_records`); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		recs, err := st.ListAudit(context.Background(), store.AuditFilter{Principal: "p3", Limit: 101})
		if err != nil || len(recs) != 101 {
			b.Fatalf("%d records, %v", len(recs), err)
		}
	}
}
