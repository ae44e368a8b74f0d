package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// auditTests are the conformance cases of store.Audit; Run runs them with
// the others.
func (s suite) auditTests() []namedTest {
	return []namedTest{
		{"AuditAppendList", s.testAuditAppendList},
		{"AuditFilters", s.testAuditFilters},
		{"AuditKeysetPaging", s.testAuditKeysetPaging},
		{"AuditPurge", s.testAuditPurge},
		{"AuditTx", s.testAuditTx},
		{"AuditCanceledAndClosed", s.testAuditCanceledAndClosed},
	}
}

// auditRec is a record with every field set, told apart by target.
func auditRec(principal, action, target string, outcome store.AuditOutcome) store.AuditRecord {
	code := "ok"
	switch outcome {
	case store.AuditDenied:
		code = "permission_denied"
	case store.AuditError:
		code = "not_found"
	}
	return store.AuditRecord{
		Principal: principal, Role: "editor", AuthMethod: "token",
		Action: action, Target: target, Outcome: outcome, Code: code,
		Message: `a "quoted" ünïcode message`, CorrelationID: "corr-" + target,
		Source: "2001:db8::1", IdempotencyKey: "idem-" + target,
	}
}

func (s suite) testAuditAppendList(t *testing.T) {
	ctx, st := s.setup(t)
	if got := mustListAudit(t, st, store.AuditFilter{}); len(got) != 0 {
		t.Fatalf("empty store lists %d records", len(got))
	}
	in := []store.AuditRecord{
		auditRec("ci", "oaas.pm.v1.PackageService/CreatePackage", "a", store.AuditOK),
		auditRec("ci", "oaas.pm.v1.PackageService/DeletePackage", "b", store.AuditError),
		// Empty fields are stored as they are.
		{Action: "GET /metrics", Outcome: store.AuditDenied, Code: "unauthenticated"},
	}
	// Caller-set ids and times are the store's to replace.
	in[0].ID, in[0].Time = 42, time.Unix(1, 0)
	var appended []store.AuditRecord
	for _, rec := range in {
		got, err := st.AppendAudit(ctx, rec)
		if err != nil {
			t.Fatalf("AppendAudit: %v", err)
		}
		want := rec
		want.ID, want.Time = got.ID, got.Time
		if got != want {
			t.Errorf("AppendAudit returned\n%+v\nwant\n%+v", got, want)
		}
		if got.Time.Before(ClockStart.Truncate(time.Second)) || got.Time.Nanosecond()%1000 != 0 || got.Time.Location() != time.UTC {
			t.Errorf("time %v is not the store's clock in UTC at microseconds", got.Time)
		}
		if got.ID <= 0 {
			t.Errorf("id %d, want positive", got.ID)
		}
		if n := len(appended); n > 0 && got.ID <= appended[n-1].ID {
			t.Errorf("id %d after %d, want increasing", got.ID, appended[n-1].ID)
		}
		appended = append(appended, got)
	}
	slices.Reverse(appended)
	assertAudit(t, mustListAudit(t, st, store.AuditFilter{}), appended)

	// The result is the caller's to change.
	got := mustListAudit(t, st, store.AuditFilter{})
	got[0].Target = "changed"
	assertAudit(t, mustListAudit(t, st, store.AuditFilter{}), appended)
}

func (s suite) testAuditFilters(t *testing.T) {
	ctx, st := s.setup(t)
	const (
		create = "oaas.pm.v1.PackageService/CreatePackage"
		del    = "oaas.pm.v1.DeploymentService/DeleteDeployment"
	)
	byTarget := map[string]store.AuditRecord{}
	for _, rec := range []store.AuditRecord{
		auditRec("ci", create, "r1", store.AuditOK),
		auditRec("ci", del, "r2", store.AuditDenied),
		auditRec("bot", create, "r3", store.AuditError),
		auditRec("bot", del, "r4", store.AuditOK),
		auditRec("ci", create, "r5", store.AuditOK),
		auditRec("ci", del, "r5", store.AuditError),
	} {
		got, err := st.AppendAudit(ctx, rec)
		if err != nil {
			t.Fatal(err)
		}
		key := got.Target
		if _, dup := byTarget[key]; dup {
			key += "'"
		}
		byTarget[key] = got
	}
	at := func(target string) time.Time { return byTarget[target].Time }
	tests := []struct {
		name string
		f    store.AuditFilter
		want []string // targets, newest first; r5' is the second r5
	}{
		{"principal", store.AuditFilter{Principal: "bot"}, []string{"r4", "r3"}},
		{"action", store.AuditFilter{Action: del}, []string{"r5'", "r4", "r2"}},
		{"target", store.AuditFilter{Target: "r5"}, []string{"r5'", "r5"}},
		{"outcome", store.AuditFilter{Outcome: store.AuditOK}, []string{"r5", "r4", "r1"}},
		{"denied", store.AuditFilter{Outcome: store.AuditDenied}, []string{"r2"}},
		{"since is inclusive", store.AuditFilter{Since: at("r4")}, []string{"r5'", "r5", "r4"}},
		{"until is exclusive", store.AuditFilter{Until: at("r3")}, []string{"r2", "r1"}},
		{"window", store.AuditFilter{Since: at("r2"), Until: at("r5")}, []string{"r4", "r3", "r2"}},
		{"combined", store.AuditFilter{Principal: "ci", Action: create, Outcome: store.AuditOK}, []string{"r5", "r1"}},
		{"limit", store.AuditFilter{Principal: "ci", Limit: 2}, []string{"r5'", "r5"}},
		{"no match", store.AuditFilter{Principal: "nobody"}, nil},
		{"empty window", store.AuditFilter{Since: at("r4"), Until: at("r4")}, nil},
		{"exact match only", store.AuditFilter{Principal: "c"}, nil},
		{"after everything", store.AuditFilter{Since: at("r5'").Add(time.Microsecond)}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			want := make([]store.AuditRecord, 0, len(tc.want))
			for _, k := range tc.want {
				want = append(want, byTarget[k])
			}
			assertAudit(t, mustListAudit(t, st, tc.f), want)
		})
	}
}

func (s suite) testAuditKeysetPaging(t *testing.T) {
	ctx, st := s.setup(t)
	var all []store.AuditRecord
	for i := range 23 {
		outcome := store.AuditOK
		if i%3 == 0 {
			outcome = store.AuditDenied
		}
		got, err := st.AppendAudit(ctx, auditRec("ci", "a", fmt.Sprintf("t%02d", i), outcome))
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, got)
	}
	slices.Reverse(all)
	denied := slices.DeleteFunc(slices.Clone(all), func(r store.AuditRecord) bool { return r.Outcome != store.AuditDenied })
	tests := []struct {
		name string
		f    store.AuditFilter
		want []store.AuditRecord
	}{
		{"all", store.AuditFilter{}, all},
		{"filtered", store.AuditFilter{Outcome: store.AuditDenied}, denied},
	}
	for _, tc := range tests {
		for _, size := range []int{1, 5, 7, 23, 100} {
			t.Run(fmt.Sprintf("%s/%d", tc.name, size), func(t *testing.T) {
				t.Parallel()
				var got []store.AuditRecord
				f := tc.f
				f.Limit = size
				for pages := 0; ; pages++ {
					if pages > len(tc.want) {
						t.Fatal("paging does not end")
					}
					page := mustListAudit(t, st, f)
					if len(page) > size {
						t.Fatalf("page of %d records, limit %d", len(page), size)
					}
					got = append(got, page...)
					if len(page) < size {
						break
					}
					f.Before = page[len(page)-1].Cursor()
				}
				assertAudit(t, got, tc.want)
			})
		}
	}
	// A cursor between two records' times (a record purged since, or one
	// made by another replica) resumes at the next older one.
	t.Run("cursor of a missing record", func(t *testing.T) {
		t.Parallel()
		mid := store.AuditCursor{Time: all[5].Time.Add(-time.Microsecond), ID: all[5].ID}
		assertAudit(t, mustListAudit(t, st, store.AuditFilter{Before: mid, Limit: 2}), all[6:8])
		// Equal times order by id: the cursor's id decides.
		same := store.AuditCursor{Time: all[5].Time, ID: all[5].ID + 1}
		assertAudit(t, mustListAudit(t, st, store.AuditFilter{Before: same, Limit: 2}), all[5:7])
	})
}

func (s suite) testAuditPurge(t *testing.T) {
	ctx, st := s.setup(t)
	var recs []store.AuditRecord
	for i := range 5 {
		got, err := st.AppendAudit(ctx, auditRec("ci", "a", fmt.Sprint(i), store.AuditOK))
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, got)
	}
	n, err := st.PurgeAudit(ctx, recs[0].Time)
	if err != nil || n != 0 {
		t.Errorf("purge before the oldest = %d, %v; want 0", n, err)
	}
	// Strictly before: the record at the cut-off stays.
	n, err = st.PurgeAudit(ctx, recs[3].Time)
	if err != nil || n != 3 {
		t.Errorf("purge = %d, %v; want 3", n, err)
	}
	assertAudit(t, mustListAudit(t, st, store.AuditFilter{}), []store.AuditRecord{recs[4], recs[3]})
	n, err = st.PurgeAudit(ctx, recs[4].Time.Add(time.Hour))
	if err != nil || n != 2 {
		t.Errorf("purge all = %d, %v; want 2", n, err)
	}
	assertAudit(t, mustListAudit(t, st, store.AuditFilter{}), nil)
	// Appending goes on after a purge, with new ids.
	got, err := st.AppendAudit(ctx, auditRec("ci", "a", "after", store.AuditOK))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID <= recs[4].ID {
		t.Errorf("id %d after a purge reuses an old one (last was %d)", got.ID, recs[4].ID)
	}
	assertAudit(t, mustListAudit(t, st, store.AuditFilter{}), []store.AuditRecord{got})
}

func (s suite) testAuditTx(t *testing.T) {
	errBoom := errors.New("boom")
	for _, fail := range []bool{false, true} {
		t.Run(map[bool]string{false: "commit", true: "rollback"}[fail], func(t *testing.T) {
			t.Parallel()
			ctx, st := s.setup(t)
			old := make([]store.AuditRecord, 0, 2)
			for _, target := range []string{"old1", "old2"} {
				got, err := st.AppendAudit(ctx, auditRec("ci", "a", target, store.AuditOK))
				if err != nil {
					t.Fatal(err)
				}
				old = append(old, got)
			}
			var inTx store.AuditRecord
			err := st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
				n, err := tx.PurgeAudit(ctx, old[1].Time)
				if err != nil {
					return err
				}
				if n != 1 {
					t.Errorf("purge in the transaction = %d, want 1", n)
				}
				if inTx, err = tx.AppendAudit(ctx, auditRec("ci", "a", "new", store.AuditOK)); err != nil {
					return err
				}
				// The transaction reads its own writes.
				got, err := tx.ListAudit(ctx, store.AuditFilter{})
				if err != nil {
					return err
				}
				assertAudit(t, got, []store.AuditRecord{inTx, old[1]})
				if fail {
					return errBoom
				}
				return nil
			})
			if fail {
				if !errors.Is(err, errBoom) {
					t.Fatalf("WithTx = %v, want %v", err, errBoom)
				}
				assertAudit(t, mustListAudit(t, st, store.AuditFilter{}), []store.AuditRecord{old[1], old[0]})
				return
			}
			if err != nil {
				t.Fatalf("WithTx: %v", err)
			}
			assertAudit(t, mustListAudit(t, st, store.AuditFilter{}), []store.AuditRecord{inTx, old[1]})
		})
	}
}

func (s suite) testAuditCanceledAndClosed(t *testing.T) {
	ops := func(ctx context.Context, st store.Store) map[string]error {
		errs := map[string]error{}
		_, errs["append"] = st.AppendAudit(ctx, auditRec("ci", "a", "t", store.AuditOK))
		_, errs["list"] = st.ListAudit(ctx, store.AuditFilter{})
		_, errs["purge"] = st.PurgeAudit(ctx, t0.Add(time.Hour))
		return errs
	}
	t.Run("canceled", func(t *testing.T) {
		t.Parallel()
		_, st := s.setup(t)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		for op, err := range ops(ctx, st) {
			if !errors.Is(err, context.Canceled) {
				t.Errorf("%s with a cancelled context: %v, want context.Canceled", op, err)
			}
		}
		assertAudit(t, mustListAudit(t, st, store.AuditFilter{}), nil)
	})
	t.Run("closed", func(t *testing.T) {
		t.Parallel()
		ctx, st := s.setup(t)
		st.Close()
		for op, err := range ops(ctx, st) {
			if !errors.Is(err, store.ErrUnavailable) || fault.KindOf(err) != fault.Unavailable {
				t.Errorf("%s on a closed store: %v, want ErrUnavailable", op, err)
			}
		}
	})
}

func mustListAudit(t *testing.T, st store.Store, f store.AuditFilter) []store.AuditRecord {
	t.Helper()
	got, err := st.ListAudit(context.Background(), f)
	if err != nil {
		t.Fatalf("ListAudit(%+v): %v", f, err)
	}
	return got
}

func assertAudit(t *testing.T, got, want []store.AuditRecord) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("audit records:\n%s\nwant\n%s", auditString(got), auditString(want))
	}
}

func auditString(recs []store.AuditRecord) string {
	out := ""
	for _, r := range recs {
		out += fmt.Sprintf("  %d %s %s %s %s %s\n", r.ID, r.Time.Format(time.RFC3339Nano), r.Principal, r.Action, r.Target, r.Outcome)
	}
	if out == "" {
		return "  (none)"
	}
	return out
}
