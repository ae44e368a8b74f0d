package postgres_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"slices"
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
	"github.com/oaas/pm/migrations"
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
	if !containsAll(migrated, "packages", "packages_disabled_name", "packages_updated_at",
		"deployments", "deployments_package_class", "deployments_target_envs_gin", "rollouts", "rollouts_cluster_unit",
		"operations", "operations_active", "operations_one_active", "idempotency_keys", "package_tags", "package_tags_pkey") {
		t.Fatalf("migrated schema has %v", migrated)
	}
	if containsAll(migrated, "packages_tags_gin") {
		t.Fatalf("migrated schema still has the GIN index on tags: %v", migrated)
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
				!strings.Contains(out, "00003_package_tags.sql") || !strings.Contains(out, "00004_deployment_core.sql") {
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
			latest := latestMigration(t)
			if !strings.Contains(out, latest) {
				return fmt.Errorf("down output %q does not name the latest migration %s", out, latest)
			}
			if !containsAll(migrated, objs...) {
				return fmt.Errorf("down left objects that up did not make: %v", objs)
			}
			if !containsAll(objs, "packages", "deployments") {
				return fmt.Errorf("down went further than one step: %v", objs)
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

// TestTagFilterPlan checks that tag filters, exactly as the store sends
// them (planned with their values each time), walk package_tags' primary
// key and read about a page of rows, never a tag's every package nor
// packages from the first name: EXPLAIN ANALYZE must show no plan node
// producing or discarding more than maxRows rows, on 20000 packages.
func TestTagFilterPlan(t *testing.T) {
	t.Parallel()
	_, dsn := setup(t)
	ctx := t.Context()
	conn := connect(t, dsn)
	// Enough rows, written directly for speed, for the planner to see the
	// real trade-off: each tN tag is on 10 of 20000 packages, "common" on
	// all of them.
	for _, stmt := range []string{`
		INSERT INTO packages (name, disabled, tags, revision, created_at, updated_at, doc)
		SELECT format('p%s', i), i % 3 = 0, ARRAY[format('t%s', i % 2000), 'common'], 1, now(), now(),
		       jsonb_build_object('name', format('p%s', i))
		FROM generate_series(1, 20000) AS i`,
		"VACUUM ANALYZE packages, package_tags",
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	const maxRows = 300
	no := false
	tests := []struct {
		name   string
		filter store.PackageFilter
	}{
		{"rare tag", store.PackageFilter{Tags: []string{"t7"}, Limit: 20}},
		{"rare tag, no limit", store.PackageFilter{Tags: []string{"t7"}}},
		{"common tag", store.PackageFilter{Tags: []string{"common"}, Limit: 20}},
		{"common tag after a name", store.PackageFilter{Tags: []string{"common"}, After: "p5", Limit: 20}},
		{"common tag, enabled", store.PackageFilter{Tags: []string{"common"}, Disabled: &no, Limit: 20}},
		{"common tag, enabled, after a name", store.PackageFilter{Tags: []string{"common"}, Disabled: &no, After: "p5", Limit: 20}},
		{"common tag, pattern, offset", store.PackageFilter{Tags: []string{"common"}, NamePattern: "1", Limit: 20, Offset: 40}},
		{"common tag, pattern, after a name", store.PackageFilter{Tags: []string{"common"}, NamePattern: "1", After: "p5", Limit: 20}},
		{"any of rare and common", store.PackageFilter{Tags: []string{"t7", "common"}, Limit: 20, Offset: 5}},
		{"any of rare and common after a name", store.PackageFilter{Tags: []string{"t7", "common"}, After: "p5", Limit: 20}},
		{"any of rare and common, enabled, after a name", store.PackageFilter{Tags: []string{"t7", "common"}, Disabled: &no, After: "p5", Limit: 20}},
		{"any of two rare, pattern", store.PackageFilter{Tags: []string{"t7", "t8"}, NamePattern: "p1", Limit: 20}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sql, args := postgres.ListQuery(tc.filter)
			var out []byte
			err := conn.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+sql, append([]any{pgx.QueryExecModeExec}, args...)...).Scan(&out)
			if err != nil {
				t.Fatal(err)
			}
			var plan []struct{ Plan planNode }
			if err := json.Unmarshal(out, &plan); err != nil || len(plan) != 1 {
				t.Fatalf("plan %s: %v", out, err)
			}
			var indexes []string
			worst := plan[0].Plan.walk(func(n planNode) { indexes = append(indexes, n.Index) })
			if !slices.Contains(indexes, "package_tags_pkey") {
				t.Errorf("plan does not use package_tags_pkey:\n%s", out)
			}
			if worst.rows > maxRows {
				t.Errorf("a %s node handles %d rows, want at most %d:\n%s", worst.node, worst.rows, maxRows, out)
			}
		})
	}
}

// planNode is a node of EXPLAIN (ANALYZE, FORMAT JSON).
type planNode struct {
	NodeType     string     `json:"Node Type"`
	Index        string     `json:"Index Name"`
	Relation     string     `json:"Relation Name"`
	ActualRows   float64    `json:"Actual Rows"`
	ActualLoops  float64    `json:"Actual Loops"`
	RowsFiltered float64    `json:"Rows Removed by Filter"`
	Plans        []planNode `json:"Plans"`
}

// walk visits every node and returns the one that handles the most rows
// (returned or filtered away, over all its loops).
func (n planNode) walk(visit func(planNode)) (worst struct {
	node string
	rows int
}) {
	visit(n)
	worst.node = strings.Join(strings.Fields(n.NodeType+" "+n.Relation+" "+n.Index), " ")
	worst.rows = int((n.ActualRows + n.RowsFiltered) * max(n.ActualLoops, 1))
	for _, c := range n.Plans {
		if w := c.walk(visit); w.rows > worst.rows {
			worst = w
		}
	}
	return worst
}

// TestPackageTagsInStep checks that package_tags says exactly what the
// packages' tags say after every kind of write, including a rolled-back
// transaction, and that migrating up fills it in for packages written
// before the table existed.
func TestPackageTagsInStep(t *testing.T) {
	t.Parallel()
	st, dsn := setup(t)
	ctx := t.Context()
	conn := connect(t, dsn)
	// mismatch lists (tag, name) pairs on one side only.
	mismatch := func() []string {
		t.Helper()
		rows, err := conn.Query(ctx, `
			(SELECT DISTINCT tag, name FROM packages, unnest(tags) AS tag EXCEPT SELECT tag, name FROM package_tags)
			UNION ALL
			(SELECT tag, name FROM package_tags EXCEPT SELECT DISTINCT tag, name FROM packages, unnest(tags) AS tag)`)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for rows.Next() {
			var tag, name string
			if err := rows.Scan(&tag, &name); err != nil {
				t.Fatal(err)
			}
			out = append(out, tag+"/"+name)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	count := func() int {
		var n int
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM package_tags").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	withTags := func(name string, tags ...string) *pmv1.OPackage {
		return &pmv1.OPackage{Name: name, Metadata: &pmv1.PackageMetadata{Tags: tags}}
	}
	steps := []struct {
		name  string
		write func() error
		rows  int
	}{
		{"create", func() error {
			for _, p := range []*pmv1.OPackage{withTags("a", "x", "y"), withTags("b", "x", "x"), withTags("c")} {
				if _, err := st.CreatePackage(ctx, p); err != nil {
					return err
				}
			}
			return nil
		}, 3},
		{"update changes tags", func() error {
			_, err := st.UpdatePackage(ctx, withTags("a", "y", "z"), store.AnyRevision)
			return err
		}, 3},
		{"update keeps tags", func() error {
			_, err := st.UpdatePackage(ctx, &pmv1.OPackage{Name: "b", Version: proto.String("2"), Metadata: &pmv1.PackageMetadata{Tags: []string{"x"}}}, store.AnyRevision)
			return err
		}, 3},
		{"update clears tags", func() error {
			_, err := st.UpdatePackage(ctx, withTags("a"), store.AnyRevision)
			return err
		}, 1},
		{"delete", func() error { return st.DeletePackage(ctx, "b", store.AnyRevision) }, 0},
		{"rolled-back transaction", func() error {
			errBoom := errors.New("boom")
			err := st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
				if _, err := tx.CreatePackage(ctx, withTags("d", "x")); err != nil {
					return err
				}
				if _, err := tx.UpdatePackage(ctx, withTags("c", "w"), store.AnyRevision); err != nil {
					return err
				}
				return errBoom
			})
			if !errors.Is(err, errBoom) {
				return fmt.Errorf("WithTx = %w", err)
			}
			return nil
		}, 0},
		{"migrate down, write, migrate up", func() error {
			if err := postgres.MigrateURL(ctx, dsn, postgres.Down, io.Discard); err != nil {
				return err
			}
			// Written while package_tags does not exist.
			if _, err := conn.Exec(ctx, `UPDATE packages SET tags = '{old,x}' WHERE name = 'c'`); err != nil {
				return err
			}
			return postgres.MigrateURL(ctx, dsn, postgres.Up, io.Discard)
		}, 2},
	}
	for _, step := range steps {
		if err := step.write(); err != nil {
			t.Fatalf("%s: %v", step.name, err)
		}
		if m := mismatch(); len(m) > 0 {
			t.Errorf("after %s, package_tags and packages.tags disagree on %v", step.name, m)
		}
		if n := count(); n != step.rows {
			t.Errorf("after %s, package_tags has %d rows, want %d", step.name, n, step.rows)
		}
	}
	// The backfilled rows serve lists.
	got, err := st.ListPackages(ctx, store.PackageFilter{Tags: []string{"old"}})
	if err != nil || len(got) != 1 || got[0].Package.GetName() != "c" {
		t.Errorf("list by a backfilled tag: %v, %v", got, err)
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
// after a bounded number of attempts with ErrBusy, an Unavailable the
// client may retry, and not a Conflict, which would tell the client its
// request conflicts with the stored state.
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
	if !errors.Is(err, store.ErrBusy) || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("WithTx = %v, want ErrBusy", err)
	}
	if k := fault.KindOf(err); k != fault.Unavailable {
		t.Errorf("kind %v, want Unavailable", k)
	}
	if err.Error() != store.ErrBusy.Msg {
		t.Errorf("message %q, want %q", err, store.ErrBusy.Msg)
	}
	if n := attempts.Load(); n != 10 {
		t.Errorf("callback ran %d times, want 10", n)
	}
	// The attempts that ran alone released their lock: transactions on
	// every pooled connection go through again.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			err := st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
				_, err := tx.CreatePackage(ctx, &pmv1.OPackage{Name: fmt.Sprintf("after-%d", i)})
				return err
			})
			if err != nil {
				t.Errorf("transaction after giving up: %v", err)
			}
		})
	}
	wg.Wait()
}

// TestTxRetryStopsAtDeadline: the backoff between attempts never outlasts
// the caller's deadline (here the wait is an hour, so the deadline always
// ends it).
func TestTxRetryStopsAtDeadline(t *testing.T) {
	t.Parallel()
	st, _ := setup(t)
	postgres.SetTxBackoff(st, func(int) time.Duration { return time.Hour })
	if _, err := st.CreatePackage(t.Context(), &pmv1.OPackage{Name: "hot"}); err != nil {
		t.Fatal(err)
	}
	const deadline = 150 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), deadline)
	defer cancel()
	start := time.Now()
	err := st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.GetPackage(ctx, "hot"); err != nil {
			return err
		}
		if _, err := st.UpdatePackage(context.WithoutCancel(ctx), &pmv1.OPackage{Name: "hot"}, store.AnyRevision); err != nil {
			return err
		}
		_, err := tx.UpdatePackage(ctx, &pmv1.OPackage{Name: "hot"}, store.AnyRevision)
		return err
	})
	if elapsed := time.Since(start); elapsed > deadline+time.Second {
		t.Errorf("took %v with a %v deadline", elapsed, deadline)
	}
	if !errors.Is(err, context.DeadlineExceeded) || fault.KindOf(err) != fault.DeadlineExceeded {
		t.Errorf("WithTx = %v (kind %v), want DeadlineExceeded", err, fault.KindOf(err))
	}
}

// latestMigration is the file name of the newest migration.
func latestMigration(t *testing.T) string {
	t.Helper()
	names, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(names) == 0 {
		t.Fatalf("migrations: %v %v", names, err)
	}
	slices.Sort(names)
	return names[len(names)-1]
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

// partition is a TCP proxy to the test server that can stop passing the
// server's replies on while still passing the client's requests: what a
// network partition right after a request went out looks like to PM.
type partition struct {
	addr string
	// drop, while set, discards what the server sends.
	drop atomic.Bool
}

// newPartition starts a proxy to the server of dsn and returns it and dsn
// pointed at the proxy. It stops when t ends.
func newPartition(t *testing.T, dsn string) (*partition, string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	target := u.Host
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &partition{addr: l.Addr().String()}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	wg.Go(func() {
		for {
			client, err := l.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", target)
			if err != nil {
				client.Close()
				continue
			}
			track(client)
			track(server)
			wg.Go(func() {
				_, _ = io.Copy(server, client) // ends when either side closes
				server.Close()
			})
			wg.Go(func() {
				buf := make([]byte, 32<<10)
				for {
					n, err := server.Read(buf)
					if n > 0 && !p.drop.Load() {
						if _, werr := client.Write(buf[:n]); werr != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				client.Close()
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	u.Host = p.addr
	return p, u.String()
}

// TestMayHaveCommitted loses the server's answer to a write after the
// write went out. When that write was a COMMIT (or a statement committing
// by itself) it did land, and the error must say it may have, so that a
// client retries with its Idempotency-Key instead of being told its retry
// conflicts with its own write. A statement inside a transaction that has
// not committed is plain unavailable: it certainly did not land.
func TestMayHaveCommitted(t *testing.T) {
	t.Parallel()
	const timeout = 2 * time.Second // a cut write fails after it; generous, so the warm-up never does on a loaded machine
	create := func(name string) func(ctx context.Context, tx store.Tx) error {
		return func(ctx context.Context, tx store.Tx) error {
			_, err := tx.CreatePackage(ctx, &pmv1.OPackage{Name: name})
			return err
		}
	}
	tests := []struct {
		name string
		// write runs the write under test, cutting the replies off with
		// cut at the right moment.
		write     func(ctx context.Context, st *postgres.Store, cut func()) error
		committed bool
	}{
		{"commit of a transaction", func(ctx context.Context, st *postgres.Store, cut func()) error {
			return st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
				if err := create("p")(ctx, tx); err != nil {
					return err
				}
				cut() // the next thing sent is COMMIT
				return nil
			})
		}, true},
		{"single create", func(ctx context.Context, st *postgres.Store, cut func()) error {
			cut()
			_, err := st.CreatePackage(ctx, &pmv1.OPackage{Name: "p"})
			return err
		}, true},
		{"statement inside a transaction", func(ctx context.Context, st *postgres.Store, cut func()) error {
			return st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
				cut()
				return create("p")(ctx, tx)
			})
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dsn := pgtest.NewDatabase(t)
			proxy, proxied := newPartition(t, dsn)
			st, err := postgres.Open(t.Context(), postgres.Config{URL: proxied, MaxConns: 1, Timeout: timeout})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(st.Close)
			ctx := t.Context()
			// Warm up the connection and its statement cache with the
			// same statements, so that what is cut off is the write
			// itself and not the preparing of it.
			if err := st.WithTx(ctx, create("warm-tx")); err != nil {
				t.Fatal(err)
			}
			if _, err := st.CreatePackage(ctx, &pmv1.OPackage{Name: "warm"}); err != nil {
				t.Fatal(err)
			}

			err = tc.write(ctx, st, func() { proxy.drop.Store(true) })
			proxy.drop.Store(false)
			if err == nil {
				t.Fatal("write succeeded with its answer cut off")
			}
			if !errors.Is(err, store.ErrUnavailable) || fault.KindOf(err) != fault.Unavailable {
				t.Errorf("error %v (kind %v), want Unavailable", err, fault.KindOf(err))
			}
			if got := errors.Is(err, store.ErrMayHaveCommitted); got != tc.committed {
				t.Errorf("errors.Is(%v, ErrMayHaveCommitted) = %v, want %v", err, got, tc.committed)
			}
			wantMsg := "storage unavailable"
			if tc.committed {
				wantMsg = "storage did not confirm the write; it may have succeeded: retry with the same Idempotency-Key"
			}
			if err.Error() != wantMsg {
				t.Errorf("message %q, want %q", err, wantMsg)
			}

			// What really happened, seen past the proxy.
			var exists bool
			if err := connect(t, dsn).QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM packages WHERE name = 'p')`).Scan(&exists); err != nil {
				t.Fatal(err)
			}
			if exists != tc.committed {
				t.Errorf("package stored = %v, want %v", exists, tc.committed)
			}
		})
	}
}
