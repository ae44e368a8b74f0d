package postgres_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"google.golang.org/protobuf/proto"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
	"github.com/oaas/pm/internal/store/pgtest"
	"github.com/oaas/pm/internal/store/postgres"
	"github.com/oaas/pm/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		st, _ := setup(t)
		return st
	})
}

// setup opens a store on a fresh database, closed when t ends, and returns
// the database's DSN for tests that look under the store.
func setup(t testing.TB) (*postgres.Store, string) {
	t.Helper()
	dsn := pgtest.NewDatabase(t)
	st, err := postgres.Open(context.Background(), postgres.Config{
		URL:      dsn,
		MaxConns: 4,
		Clock:    storetest.NewClock(),
	})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(st.Close)
	return st, dsn
}

// connect opens a plain connection for looking at the database directly.
func connect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestPing(t *testing.T) {
	t.Parallel()
	st, _ := setup(t)
	if err := st.Ping(t.Context()); err != nil {
		t.Fatalf("Ping on a healthy database: %v", err)
	}
}

// TestMigrations runs the migrations down and up again on a migrated
// database: down must leave nothing behind but goose's own table, and up
// must bring back a working schema.
func TestMigrations(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	conn := connect(t, dsn)
	ctx := t.Context()

	// objects lists the schema's tables, indexes and sequences, apart from
	// goose's bookkeeping.
	objects := func() []string {
		rows, err := conn.Query(ctx, `
			SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = 'public' AND c.relname NOT LIKE 'goose\_%' ORDER BY 1`)
		if err != nil {
			t.Fatal(err)
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	migrate := func(dir postgres.Direction) string {
		t.Helper()
		var out bytes.Buffer
		if err := postgres.MigrateURL(ctx, dsn, dir, &out); err != nil {
			t.Fatalf("migrate %s: %v\n%s", dir, err, out.String())
		}
		return out.String()
	}
	migrated := objects()
	if !containsAll(migrated, "packages", "packages_tags_gin", "packages_disabled_name", "packages_updated_at",
		"deployments", "deployments_package_class", "deployments_target_envs_gin", "rollouts", "rollouts_cluster_unit",
		"operations", "operations_active", "operations_one_active", "idempotency_keys") {
		t.Fatalf("migrated schema has %v", migrated)
	}

	steps := []struct {
		dir  postgres.Direction
		want func(out string, objs []string) error
	}{
		{postgres.Up, func(out string, objs []string) error {
			if out != "" {
				return fmt.Errorf("up on an up-to-date database applied %q", out)
			}
			return nil
		}},
		{postgres.Reset, func(out string, objs []string) error {
			if !strings.Contains(out, "00001_packages.sql") || !strings.Contains(out, "00002_deployments.sql") ||
				!strings.Contains(out, "00004_deployment_core.sql") {
				return fmt.Errorf("reset output %q does not name the migrations", out)
			}
			if len(objs) != 0 {
				return fmt.Errorf("after reset the schema still has %v", objs)
			}
			return nil
		}},
		{postgres.Status, func(out string, objs []string) error {
			if !strings.Contains(out, "pending") {
				return fmt.Errorf("status after reset: %q, want pending", out)
			}
			return nil
		}},
		{postgres.Up, func(out string, objs []string) error {
			if !strings.Contains(out, "00001_packages.sql") || !strings.Contains(out, "00002_deployments.sql") || !strings.Contains(out, "OK") {
				return fmt.Errorf("up output %q", out)
			}
			if strings.Join(objs, ",") != strings.Join(migrated, ",") {
				return fmt.Errorf("after down and up the schema has %v, want %v", objs, migrated)
			}
			return nil
		}},
		{postgres.Status, func(out string, objs []string) error {
			if !strings.Contains(out, "applied") || strings.Contains(out, "pending") {
				return fmt.Errorf("status after up: %q", out)
			}
			return nil
		}},
		{postgres.Down, func(out string, objs []string) error {
			// One step: the latest migration goes, the earlier ones stay.
			for _, o := range []string{"rollouts", "operations_one_active"} {
				if containsAll(objs, o) {
					return fmt.Errorf("down left %s behind: %v", o, objs)
				}
			}
			if !containsAll(objs, "packages", "deployments", "deployment_mappings", "operations_state_lease") {
				return fmt.Errorf("down did not go back exactly one step: %v", objs)
			}
			return nil
		}},
		{postgres.Up, func(out string, objs []string) error {
			if strings.Join(objs, ",") != strings.Join(migrated, ",") {
				return fmt.Errorf("schema %v, want %v", objs, migrated)
			}
			return nil
		}},
	}
	for i, step := range steps {
		out := migrate(step.dir)
		if err := step.want(out, objects()); err != nil {
			t.Fatalf("step %d (%s): %v", i+1, step.dir, err)
		}
	}

	// The schema that came back works.
	st, err := postgres.Open(ctx, postgres.Config{URL: dsn})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := st.CreatePackage(ctx, storetest.FullPackage("after-migrations")); err != nil {
		t.Fatalf("create after down/up: %v", err)
	}
	if _, err := st.CreateDeployment(ctx, storetest.FullDeploymentRow("after-migrations", "after-migrations", "Counter")); err != nil {
		t.Fatalf("create deployment after down/up: %v", err)
	}
}

func TestParseDirection(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"up", "down", "reset", "status"} {
		if d, err := postgres.ParseDirection(s); err != nil || string(d) != s {
			t.Errorf("ParseDirection(%q) = %q, %v", s, d, err)
		}
	}
	for _, s := range []string{"", "UP", "redo"} {
		if _, err := postgres.ParseDirection(s); err == nil {
			t.Errorf("ParseDirection(%q) accepted", s)
		}
	}
}

// TestTagFilterUsesIndex checks that the tag filter's query, exactly as the
// store sends it, can be answered from the GIN index, both as a custom plan
// and as the generic plan a cached prepared statement ends up with.
// enable_seqscan=off keeps the planner from preferring a scan of the whole
// (small) table: the test is about the index plan being possible.
func TestTagFilterUsesIndex(t *testing.T) {
	t.Parallel()
	_, dsn := setup(t)
	ctx := t.Context()
	conn := connect(t, dsn)
	// Enough rows, written directly for speed, that an index is worth
	// using: each tN tag is on 10 of 5000 packages.
	for _, stmt := range []string{`
		INSERT INTO packages (name, disabled, tags, revision, created_at, updated_at, doc)
		SELECT format('p%s', i), i % 3 = 0, ARRAY[format('t%s', i % 500), 'common'], 1, now(), now(),
		       jsonb_build_object('name', format('p%s', i))
		FROM generate_series(1, 5000) AS i`,
		"ANALYZE packages",
		"SET enable_seqscan = off",
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}

	tests := []struct {
		name     string
		filter   store.PackageFilter
		planMode string
	}{
		{"tags, custom plan", store.PackageFilter{Tags: []string{"t7"}}, "force_custom_plan"},
		{"tags, generic plan", store.PackageFilter{Tags: []string{"t7"}}, "force_generic_plan"},
		{"tags and disabled", store.PackageFilter{Tags: []string{"t7", "t8"}, Disabled: new(bool)}, "force_custom_plan"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sql, args := postgres.ListQuery(tc.filter)
			if _, err := conn.Exec(ctx, "SET plan_cache_mode = "+tc.planMode); err != nil {
				t.Fatal(err)
			}
			// PREPARE + EXPLAIN EXECUTE is how to see the plan of a prepared
			// statement; parameter types come from the columns.
			name := fmt.Sprintf("q%d", i)
			if _, err := conn.Exec(ctx, "PREPARE "+name+" AS "+sql); err != nil {
				t.Fatal(err)
			}
			var params []string
			for j := range args {
				params = append(params, fmt.Sprintf("$%d", j+1))
			}
			// EXECUTE takes no bind parameters, so pgx inlines them.
			rows, err := conn.Query(ctx, "EXPLAIN EXECUTE "+name+"("+strings.Join(params, ",")+")",
				append([]any{pgx.QueryExecModeSimpleProtocol}, args...)...)
			if err != nil {
				t.Fatal(err)
			}
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			plan := strings.Join(lines, "\n")
			t.Logf("%s\n%s", sql, plan)
			if !strings.Contains(plan, "packages_tags_gin") {
				t.Errorf("plan of %s does not use packages_tags_gin:\n%s", sql, plan)
			}
		})
	}
}

// TestDocumentMatchesColumns looks under the store: the columns that
// filters use must say what the document says, after create and update.
func TestDocumentMatchesColumns(t *testing.T) {
	t.Parallel()
	st, dsn := setup(t)
	ctx := t.Context()
	created, err := st.CreatePackage(ctx, storetest.FullPackage("pkg"))
	if err != nil {
		t.Fatal(err)
	}
	edit := storetest.FullPackage("pkg")
	edit.Version = nil
	edit.Disabled = true
	edit.Metadata.Author = proto.String("Grace")
	edit.Metadata.Tags = []string{"x", "y"}
	updated, err := st.UpdatePackage(ctx, edit, created.Revision)
	if err != nil {
		t.Fatal(err)
	}

	conn := connect(t, dsn)
	var (
		version, author      *string
		disabled             bool
		tags                 []string
		rev                  int64
		createdAt, updatedAt time.Time
		doc                  []byte
	)
	err = conn.QueryRow(ctx, `SELECT version, disabled, tags, author, revision, created_at, updated_at, doc FROM packages WHERE name = 'pkg'`).
		Scan(&version, &disabled, &tags, &author, &rev, &createdAt, &updatedAt, &doc)
	if err != nil {
		t.Fatal(err)
	}
	md := updated.Package.GetMetadata()
	checks := []struct {
		what      string
		got, want any
	}{
		{"version", version, (*string)(nil)},
		{"disabled", disabled, true},
		{"tags", strings.Join(tags, ","), "x,y"},
		{"author", deref(author), "Grace"},
		{"revision", rev, int64(2)},
		{"created_at", createdAt.UTC(), md.GetCreatedAt().AsTime()},
		{"updated_at", updatedAt.UTC(), md.GetUpdatedAt().AsTime()},
	}
	for _, c := range checks {
		if fmt.Sprint(c.got) != fmt.Sprint(c.want) {
			t.Errorf("column %s = %v, want %v", c.what, c.got, c.want)
		}
	}
	if !strings.Contains(string(doc), `"created_at"`) || !strings.Contains(string(doc), `"function_bindings"`) {
		t.Errorf("document is not in the REST snake_case form: %s", doc)
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

// TestUnavailable points stores at databases that cannot serve. Every
// operation must fail with store.ErrUnavailable, say nothing of the driver
// in its message, and give up within the configured timeout.
func TestUnavailable(t *testing.T) {
	t.Parallel()
	const timeout = 300 * time.Millisecond
	tests := []struct {
		name string
		open func(t *testing.T) *postgres.Store
	}{
		{"connection refused", func(t *testing.T) *postgres.Store {
			return open(t, "postgres://pm@127.0.0.1:1/pm?sslmode=disable", timeout)
		}},
		{"server never answers", func(t *testing.T) *postgres.Store {
			return open(t, "postgres://pm@"+blackHole(t)+"/pm?sslmode=disable", timeout)
		}},
		{"store closed", func(t *testing.T) *postgres.Store {
			st, _ := setup(t)
			st.Close()
			return st
		}},
	}
	ops := []struct {
		name string
		op   func(ctx context.Context, st *postgres.Store) error
	}{
		{"ping", func(ctx context.Context, st *postgres.Store) error { return st.Ping(ctx) }},
		{"create", func(ctx context.Context, st *postgres.Store) error {
			_, err := st.CreatePackage(ctx, &pmv1.OPackage{Name: "p"})
			return err
		}},
		{"get", func(ctx context.Context, st *postgres.Store) error {
			_, err := st.GetPackage(ctx, "p")
			return err
		}},
		{"list", func(ctx context.Context, st *postgres.Store) error {
			_, err := st.ListPackages(ctx, store.PackageFilter{Tags: []string{"a"}})
			return err
		}},
		{"update", func(ctx context.Context, st *postgres.Store) error {
			_, err := st.UpdatePackage(ctx, &pmv1.OPackage{Name: "p"}, 3)
			return err
		}},
		{"delete", func(ctx context.Context, st *postgres.Store) error {
			return st.DeletePackage(ctx, "p", store.AnyRevision)
		}},
		{"transaction", func(ctx context.Context, st *postgres.Store) error {
			return st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error { return nil })
		}},
		{"put rollouts", func(ctx context.Context, st *postgres.Store) error {
			return st.PutRollouts(ctx, store.RolloutRow{DeploymentKey: "d", Cluster: "c", UnitID: "u"})
		}},
		{"create operation", func(ctx context.Context, st *postgres.Store) error {
			return st.CreateOperation(ctx, store.OperationRow{ID: "op", DeploymentKey: "d", State: store.OperationRunning})
		}},
		{"update steps", func(ctx context.Context, st *postgres.Store) error {
			return st.UpdateSteps(ctx, "op", "me", store.StepRow{Cluster: "c"})
		}},
		{"claim operations", func(ctx context.Context, st *postgres.Store) error {
			_, err := st.ClaimOperations(ctx, "me", time.Now(), time.Now(), 1)
			return err
		}},
		{"put idempotency", func(ctx context.Context, st *postgres.Store) error {
			return st.PutIdempotency(ctx, store.IdempotencyRecord{Scope: "s", Key: "k"})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := tc.open(t)
			for _, op := range ops {
				t.Run(op.name, func(t *testing.T) {
					start := time.Now()
					err := op.op(t.Context(), st)
					elapsed := time.Since(start)
					if !errors.Is(err, store.ErrUnavailable) {
						t.Fatalf("error = %v, want ErrUnavailable", err)
					}
					if k := fault.KindOf(err); k != fault.Unavailable {
						t.Errorf("fault kind = %v, want Unavailable", k)
					}
					var fe *fault.Error
					if errors.As(err, &fe); fe.Msg != "storage unavailable" {
						t.Errorf("client-facing message = %q", fe.Msg)
					}
					for _, leak := range []string{"127.0.0.1", "dial", "connect", "pool", "timeout"} {
						if strings.Contains(err.Error(), leak) {
							t.Errorf("message %q shows driver detail %q", err, leak)
						}
					}
					if elapsed > timeout+500*time.Millisecond {
						t.Errorf("took %v with a %v timeout", elapsed, timeout)
					}
				})
			}
		})
	}
}

// TestCallerDeadline checks that a caller's deadline, shorter than the
// store's timeout, ends a call on time as DeadlineExceeded rather than as
// an unavailable database.
func TestCallerDeadline(t *testing.T) {
	t.Parallel()
	st := open(t, "postgres://pm@"+blackHole(t)+"/pm?sslmode=disable", time.Minute)
	const deadline = 200 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	start := time.Now()
	_, err := st.GetPackage(ctx, "p")
	if elapsed := time.Since(start); elapsed > deadline+500*time.Millisecond {
		t.Errorf("took %v with a %v deadline", elapsed, deadline)
	}
	if !errors.Is(err, context.DeadlineExceeded) || fault.KindOf(err) != fault.DeadlineExceeded {
		t.Errorf("error = %v (kind %v), want DeadlineExceeded", err, fault.KindOf(err))
	}
}

// TestNULIsInvalid: Postgres text cannot hold NUL, which the memory store
// would take. It must come back as the caller's mistake (Invalid) with a
// message fit for them, not as a 500.
func TestNULIsInvalid(t *testing.T) {
	t.Parallel()
	st, _ := setup(t)
	tests := []struct {
		name string
		pkg  *pmv1.OPackage
	}{
		{"column and document", &pmv1.OPackage{Name: "p1", Version: proto.String("1\x00")}},
		{"array column", &pmv1.OPackage{Name: "p2", Metadata: &pmv1.PackageMetadata{Tags: []string{"a\x00"}}}},
		{"document only", &pmv1.OPackage{Name: "p3", Classes: []*pmv1.OClass{{Key: "c\x00"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := st.CreatePackage(t.Context(), tc.pkg)
			if k := fault.KindOf(err); k != fault.Invalid {
				t.Fatalf("error = %v (kind %v), want Invalid", err, k)
			}
			if msg := err.Error(); !strings.Contains(msg, "NUL") || strings.Contains(msg, "SQLSTATE") {
				t.Errorf("message %q", msg)
			}
		})
	}
}

func open(t *testing.T, url string, timeout time.Duration) *postgres.Store {
	t.Helper()
	st, err := postgres.Open(t.Context(), postgres.Config{URL: url, Timeout: timeout})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(st.Close)
	return st
}

// blackHole returns the address of a server that accepts connections and
// never says a word, as a hung database does.
func blackHole(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		conns []net.Conn
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return l.Addr().String()
}

// TestTxRetriesSerializationFailure makes the first attempt of a
// transaction lose a write race on purpose: WithTx must run the callback
// again and the second attempt must commit.
func TestTxRetriesSerializationFailure(t *testing.T) {
	t.Parallel()
	st, _ := setup(t)
	ctx := t.Context()
	if _, err := st.CreatePackage(ctx, &pmv1.OPackage{Name: "hot"}); err != nil {
		t.Fatal(err)
	}
	var attempts atomic.Int32
	err := st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		n := attempts.Add(1)
		cur, err := tx.GetPackage(ctx, "hot")
		if err != nil {
			return err
		}
		if n == 1 {
			// Another session commits a write after this transaction took
			// its snapshot. (The Store runs outside the transaction.)
			if _, err := st.UpdatePackage(context.WithoutCancel(ctx), &pmv1.OPackage{Name: "hot", Version: proto.String("other")}, store.AnyRevision); err != nil {
				return err
			}
		}
		cur.Package.Version = proto.String("tx")
		_, err = tx.UpdatePackage(ctx, cur.Package, store.AnyRevision)
		return err
	})
	if err != nil {
		t.Fatalf("WithTx: %v", err)
	}
	if n := attempts.Load(); n != 2 {
		t.Errorf("callback ran %d times, want 2", n)
	}
	got, err := st.GetPackage(ctx, "hot")
	if err != nil {
		t.Fatal(err)
	}
	if got.Package.GetVersion() != "tx" || got.Revision != 3 {
		t.Errorf("stored version %q revision %d, want \"tx\" at 3", got.Package.GetVersion(), got.Revision)
	}
}

// TestTxGivesUpAfterRetries makes every attempt lose: WithTx must stop
// after a bounded number of attempts with a Conflict.
func TestTxGivesUpAfterRetries(t *testing.T) {
	t.Parallel()
	st, _ := setup(t)
	ctx := t.Context()
	if _, err := st.CreatePackage(ctx, &pmv1.OPackage{Name: "hot"}); err != nil {
		t.Fatal(err)
	}
	var attempts atomic.Int32
	err := st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		attempts.Add(1)
		if _, err := tx.GetPackage(ctx, "hot"); err != nil {
			return err
		}
		if _, err := st.UpdatePackage(context.WithoutCancel(ctx), &pmv1.OPackage{Name: "hot"}, store.AnyRevision); err != nil {
			return err
		}
		_, err := tx.UpdatePackage(ctx, &pmv1.OPackage{Name: "hot"}, store.AnyRevision)
		return err
	})
	if k := fault.KindOf(err); k != fault.Conflict {
		t.Fatalf("WithTx = %v (kind %v), want a Conflict", err, k)
	}
	if n := attempts.Load(); n != 5 {
		t.Errorf("callback ran %d times, want 5", n)
	}
}

func containsAll(have []string, want ...string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			found = found || h == w
		}
		if !found {
			return false
		}
	}
	return true
}

// benchPackages are the package shapes the benchmarks write: a name-only
// package, the nearest thing to pgbench's single-row statements, and one
// with every field set.
var benchPackages = []struct {
	name string
	pkg  func(name string) *pmv1.OPackage
}{
	{"small", func(name string) *pmv1.OPackage { return &pmv1.OPackage{Name: name} }},
	{"full", storetest.FullPackage},
}

// BenchmarkCreate measures CreatePackage: encoding plus one INSERT round
// trip. Compare with pgbench running a single-row INSERT.
func BenchmarkCreate(b *testing.B) {
	for _, bp := range benchPackages {
		b.Run(bp.name, func(b *testing.B) {
			st, _ := setup(b)
			ctx := b.Context()
			i := 0
			for b.Loop() {
				if _, err := st.CreatePackage(ctx, bp.pkg(fmt.Sprintf("pkg-%d", i))); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run(bp.name+"/parallel", func(b *testing.B) {
			st, _ := setup(b)
			ctx := b.Context()
			var n atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := st.CreatePackage(ctx, bp.pkg(fmt.Sprintf("pkg-%d", n.Add(1)))); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkGet measures GetPackage: one SELECT by primary key plus
// decoding. Compare with pgbench running a single-row SELECT.
func BenchmarkGet(b *testing.B) {
	const stored = 1000
	for _, bp := range benchPackages {
		st, _ := setup(b)
		ctx := b.Context()
		names := make([]string, stored)
		for i := range names {
			names[i] = fmt.Sprintf("pkg-%d", i)
			if _, err := st.CreatePackage(ctx, bp.pkg(names[i])); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(bp.name, func(b *testing.B) {
			i := 0
			for b.Loop() {
				if _, err := st.GetPackage(ctx, names[i%stored]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run(bp.name+"/parallel", func(b *testing.B) {
			var n atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := st.GetPackage(ctx, names[n.Add(1)%stored]); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
