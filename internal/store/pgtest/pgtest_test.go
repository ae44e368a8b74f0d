package pgtest

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connect %s: %v", dsn, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func databaseExists(t *testing.T, name string) bool {
	t.Helper()
	var exists bool
	err := connect(t, AdminDSN(t)).QueryRow(t.Context(),
		"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists)
	if err != nil {
		t.Fatal(err)
	}
	return exists
}

// TestNewDatabase checks that each call gives a separate, migrated
// database, and that it is gone once its test ends even with a session
// still open on it.
func TestNewDatabase(t *testing.T) {
	t.Parallel()
	var names []string
	t.Run("use", func(t *testing.T) {
		for range 2 {
			dsn := NewDatabase(t)
			conn := connect(t, dsn)
			var name string
			var migrated bool
			err := conn.QueryRow(t.Context(),
				"SELECT current_database(), to_regclass('public.packages') IS NOT NULL").Scan(&name, &migrated)
			if err != nil {
				t.Fatal(err)
			}
			if !migrated {
				t.Errorf("database %s has no packages table", name)
			}
			if !strings.HasPrefix(name, testDBPrefix) {
				t.Errorf("database name %q lacks the %s prefix", name, testDBPrefix)
			}
			names = append(names, name)
			// Never closed, like a store a test forgot: the drop must
			// force it out rather than fail or wait.
			if _, err := pgx.Connect(context.Background(), dsn); err != nil {
				t.Fatal(err)
			}
		}
		if names[0] == names[1] {
			t.Errorf("two calls gave the same database %s", names[0])
		}
	})
	for _, name := range names {
		if databaseExists(t, name) {
			t.Errorf("database %s still exists after its test", name)
		}
	}
}

func TestTemplateIsCurrent(t *testing.T) {
	t.Parallel()
	srv := get(t)
	hash, err := migrationsHash()
	if err != nil {
		t.Fatal(err)
	}
	if want := templatePrefix + hash; srv.template != want {
		t.Errorf("template %q, want %q", srv.template, want)
	}
	if !databaseExists(t, srv.template) {
		t.Errorf("template %s does not exist", srv.template)
	}
}

func TestWithDatabase(t *testing.T) {
	t.Parallel()
	tests := []struct{ dsn, want string }{
		{"postgres://u@h:5432/postgres?sslmode=disable", "postgres://u@h:5432/db1?sslmode=disable"},
		{"postgresql://u:p@h/", "postgresql://u:p@h/db1"},
		{"host=h user=u dbname=postgres", "host=h user=u dbname=postgres dbname=db1"},
	}
	for _, tc := range tests {
		if got := withDatabase(tc.dsn, "db1"); got != tc.want {
			t.Errorf("withDatabase(%q) = %q, want %q", tc.dsn, got, tc.want)
		}
		cfg, err := pgx.ParseConfig(withDatabase(tc.dsn, "db1"))
		if err != nil {
			t.Fatalf("%q: %v", tc.dsn, err)
		}
		if cfg.Database != "db1" {
			t.Errorf("%q: pgx reads database %q, want db1", tc.dsn, cfg.Database)
		}
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	tests := []struct{ dsn, want string }{
		{"postgres://u:secret@h/db", "postgres://u:xxxxx@h/db"},
		{"postgres://u@h/db", "postgres://u@h/db"},
		{"host=h password=secret user=u", "host=h password=xxxxx user=u"},
		{"host=h password='se cret' user=u", "host=h password=xxxxx user=u"},
	}
	for _, tc := range tests {
		if got := redact(tc.dsn); got != tc.want {
			t.Errorf("redact(%q) = %q, want %q", tc.dsn, got, tc.want)
		}
	}
}

func TestLeaked(t *testing.T) {
	t.Parallel()
	stamp := func(d time.Duration) string {
		return testDBPrefix + strconv.FormatInt(time.Now().Add(-d).Unix(), 10) + "_abc"
	}
	tests := []struct {
		name string
		want bool
	}{
		{stamp(time.Minute), false},
		{stamp(leakedAfter + time.Minute), true},
		{testDBPrefix + "nonsense", false},
		{testDBPrefix + "x_y", false},
	}
	for _, tc := range tests {
		if got := leaked(tc.name); got != tc.want {
			t.Errorf("leaked(%q) = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestTemplateRebuilt drops the template, as a test process with other
// migrations does when it builds its own, and expects the next database to
// be made anyway. Not parallel: the other tests here expect the template to
// exist, and sequential tests finish before parallel ones start.
func TestTemplateRebuilt(t *testing.T) {
	srv := get(t)
	conn := connect(t, AdminDSN(t))
	ctx := t.Context()
	// Under the exclusive lock, as prepareTemplate drops templates.
	for _, stmt := range []string{
		"SELECT pg_advisory_lock(" + strconv.FormatInt(lockKey, 10) + ")",
		"DROP DATABASE " + srv.template + " WITH (FORCE)",
		"SELECT pg_advisory_unlock(" + strconv.FormatInt(lockKey, 10) + ")",
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	var migrated bool
	err := connect(t, NewDatabase(t)).QueryRow(ctx, "SELECT to_regclass('public.packages') IS NOT NULL").Scan(&migrated)
	if err != nil || !migrated {
		t.Fatalf("database after the template was dropped: migrated %v, %v", migrated, err)
	}
	if !databaseExists(t, srv.template) {
		t.Errorf("template %s was not rebuilt", srv.template)
	}
}

func TestStaleTemplate(t *testing.T) {
	t.Parallel()
	built := func(d time.Duration) string {
		return builtPrefix + strconv.FormatInt(time.Now().Add(-d).Unix(), 10)
	}
	tests := []struct {
		comment string
		want    bool
	}{
		{built(time.Minute), false},
		{built(leakedAfter + time.Minute), true},
		{"", true},                   // never finished, or built by an older pgtest
		{builtPrefix + "soon", true}, // not ours to trust
		{"someone's database", true}, // prefix matched, comment did not
	}
	for _, tc := range tests {
		if got := staleTemplate(tc.comment); got != tc.want {
			t.Errorf("staleTemplate(%q) = %v, want %v", tc.comment, got, tc.want)
		}
	}
}
