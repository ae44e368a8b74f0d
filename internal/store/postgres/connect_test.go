package postgres_test

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
	"github.com/oaas/pm/internal/store/pgtest"
	"github.com/oaas/pm/internal/store/postgres"
	"github.com/oaas/pm/migrations"
)

// closedPort returns a loopback address nothing listens on: a port that
// was just bound and released.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// missingDatabase returns a DSN of the test server naming a database that
// does not exist, with a password added to check it never shows.
func missingDatabase(t *testing.T) (dsn, name string) {
	t.Helper()
	u, err := url.Parse(pgtest.AdminDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	name = "pm_nope_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	u.Path = "/" + name
	u.User = url.UserPassword(u.User.Username(), "hunter2")
	return u.String(), name
}

// TestStartupErrors points the two start-up paths, OpenAndPing and
// MigrateConfig, at databases that cannot be used. Each must fail within
// the configured timeout (plus a margin for a loaded machine) with a
// message that names the cause in an operator's terms and never the
// password.
func TestStartupErrors(t *testing.T) {
	t.Parallel()
	const timeout = 700 * time.Millisecond
	tests := []struct {
		name string
		dsn  func(t *testing.T) string
		// want are the substrings the message must hold.
		want        func(dsn string) []string
		unreachable bool
	}{
		{"connection refused", func(t *testing.T) string {
			return "postgres://pm:hunter2@" + closedPort(t) + "/pmdb?sslmode=disable"
		}, func(dsn string) []string {
			u, _ := url.Parse(dsn)
			return []string{`connecting to postgres ` + u.Host + ` database "pmdb": connection refused`}
		}, true},
		{"server never answers", func(t *testing.T) string {
			return "postgres://pm:hunter2@" + blackHole(t) + "/pmdb?sslmode=disable"
		}, func(dsn string) []string {
			u, _ := url.Parse(dsn)
			return []string{`connecting to postgres ` + u.Host + ` database "pmdb": no answer within 700ms`}
		}, true},
		{"missing database", func(t *testing.T) string {
			dsn, _ := missingDatabase(t)
			return dsn
		}, func(dsn string) []string {
			u, _ := url.Parse(dsn)
			db := strings.TrimPrefix(u.Path, "/")
			return []string{`connecting to postgres ` + u.Host + ` database "` + db + `": database "` + db + `" does not exist`}
		}, false},
		{"bad sslmode in a URL", func(t *testing.T) string {
			return "postgres://pm:hunter2@127.0.0.1:5432/pmdb?sslmode=maybe"
		}, func(string) []string { return []string{`invalid sslmode "maybe"`, "verify-full"} }, false},
		{"bad sslmode in key=value form", func(t *testing.T) string {
			return "host=127.0.0.1 password=hunter2 sslmode='maybe'"
		}, func(string) []string { return []string{`invalid sslmode "maybe"`} }, false},
		{"bad port", func(t *testing.T) string {
			return "postgres://pm:hunter2@127.0.0.1:99999/pmdb"
		}, func(string) []string { return []string{"invalid database URL", "port"} }, false},
	}
	paths := []struct {
		name string
		run  func(ctx context.Context, dsn string) error
	}{
		{"OpenAndPing", func(ctx context.Context, dsn string) error {
			st, err := postgres.OpenAndPing(ctx, postgres.Config{URL: dsn, Timeout: timeout})
			if err == nil {
				st.Close()
			}
			return err
		}},
		{"MigrateConfig", func(ctx context.Context, dsn string) error {
			return postgres.MigrateConfig(ctx, postgres.Config{URL: dsn, Timeout: timeout}, postgres.Up, io.Discard)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dsn := tc.dsn(t)
			for _, p := range paths {
				t.Run(p.name, func(t *testing.T) {
					start := time.Now()
					err := p.run(t.Context(), dsn) // no deadline: the store's bound must hold alone
					elapsed := time.Since(start)
					if err == nil {
						t.Fatal("succeeded")
					}
					msg := err.Error()
					t.Logf("%v: %s", elapsed.Round(time.Millisecond), msg)
					for _, w := range tc.want(dsn) {
						if !strings.Contains(msg, w) {
							t.Errorf("message %q does not say %q", msg, w)
						}
					}
					if strings.Contains(msg, "hunter2") {
						t.Errorf("message %q shows the password", msg)
					}
					var se *postgres.StartupError
					if !errors.As(err, &se) {
						t.Errorf("error %T is not a *StartupError", err)
					}
					if got := errors.Is(err, store.ErrUnavailable); got != tc.unreachable {
						t.Errorf("errors.Is(err, ErrUnavailable) = %v, want %v", got, tc.unreachable)
					}
					if elapsed > timeout+2*time.Second {
						t.Errorf("took %v with a %v timeout", elapsed, timeout)
					}
				})
			}
		})
	}
}

// TestOpenAndPing checks the good path: a store that answers at once.
func TestOpenAndPing(t *testing.T) {
	t.Parallel()
	st, err := postgres.OpenAndPing(t.Context(), postgres.Config{URL: pgtest.NewDatabase(t), MaxConns: 2})
	if err != nil {
		t.Fatalf("OpenAndPing: %v", err)
	}
	defer st.Close()
	if err := st.Ready(t.Context()); err != nil {
		t.Errorf("Ready on a migrated database: %v", err)
	}
}

// TestReady checks readiness against the schema: a database without
// migrations, one a migration behind, one migrated, and one that cannot be
// reached.
func TestReady(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		dsn  func(t *testing.T) string
		// want is the message Ready must give; "" means ready.
		want      string
		wantErrIs error
	}{
		{"migrated", func(t *testing.T) string { return pgtest.NewDatabase(t) }, "", nil},
		{"no migrations", func(t *testing.T) string { return pgtest.NewEmptyDatabase(t) },
			"database schema is missing (no migrations applied); run `pm migrate up`", store.ErrSchema},
		{"reset", func(t *testing.T) string {
			dsn := pgtest.NewDatabase(t)
			if err := postgres.MigrateURL(t.Context(), dsn, postgres.Reset, io.Discard); err != nil {
				t.Fatal(err)
			}
			return dsn
		}, "database schema is missing (no migrations applied); run `pm migrate up`", store.ErrSchema},
		{"one migration behind", func(t *testing.T) string {
			dsn := pgtest.NewDatabase(t)
			if err := postgres.MigrateURL(t.Context(), dsn, postgres.Down, io.Discard); err != nil {
				t.Fatal(err)
			}
			return dsn
		}, "database schema is at migration " + itoa(previousMigration(t)) + " but this PM needs " +
			itoa(postgres.SchemaVersion()) + "; run `pm migrate up`", store.ErrSchema},
		{"newer schema (a later PM migrated it during a rolling upgrade)", func(t *testing.T) string {
			dsn := pgtest.NewDatabase(t)
			_, err := connect(t, dsn).Exec(t.Context(),
				"INSERT INTO goose_db_version (version_id, is_applied) VALUES ($1, true)", postgres.SchemaVersion()+1)
			if err != nil {
				t.Fatal(err)
			}
			return dsn
		}, "", nil},
		{"unreachable", func(t *testing.T) string {
			return "postgres://pm@" + closedPort(t) + "/pm?sslmode=disable"
		}, "storage unavailable", store.ErrUnavailable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st := open(t, tc.dsn(t), 2*time.Second)
			err := st.Ready(t.Context())
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Ready: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.wantErrIs) {
				t.Fatalf("Ready = %v, want %v", err, tc.wantErrIs)
			}
			if k := fault.KindOf(err); k != fault.Unavailable {
				t.Errorf("kind %v, want Unavailable", k)
			}
			var fe *fault.Error
			if !errors.As(err, &fe) || !strings.Contains(fe.Msg, tc.want) {
				t.Errorf("client message %q, want it to contain %q", fe.Msg, tc.want)
			}
			if errors.Is(tc.wantErrIs, store.ErrSchema) {
				// Reachable but unmigrated is still reachable.
				if err := st.Ping(t.Context()); err != nil {
					t.Errorf("Ping: %v", err)
				}
			}
		})
	}
}

func itoa(v int64) string { return strconv.FormatInt(v, 10) }

// previousMigration is the version before the newest one among the embedded
// migrations (versions need not be consecutive).
func previousMigration(t *testing.T) int64 {
	t.Helper()
	entries, err := fs.Glob(migrations.FS, "*.sql")
	if err != nil || len(entries) < 2 {
		t.Fatalf("migrations: %v %v", entries, err)
	}
	var versions []int64
	for _, e := range entries {
		n, err := strconv.ParseInt(strings.SplitN(e, "_", 2)[0], 10, 64)
		if err != nil {
			t.Fatalf("migration file %q: %v", e, err)
		}
		versions = append(versions, n)
	}
	slices.Sort(versions)
	return versions[len(versions)-2]
}
