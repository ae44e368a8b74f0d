// Package pgtest gives tests a fresh, fully migrated Postgres database each,
// cheaply enough that every test can have its own and run in parallel.
//
// The server is found once per test process, in this order:
//
//  1. PM_TEST_DATABASE_URL, a DSN of a server on which the user may create
//     databases (CI sets it);
//  2. a server on 127.0.0.1:5432 with trust auth for user postgres or root,
//     started with pg_ctlcluster if it is installed but not running;
//  3. a throwaway container via testcontainers-go, when Docker runs;
//
// and if none works every test that asks fails saying how to fix it. Tests
// never skip: a suite that skips when the database is missing reports green
// while testing nothing.
//
// The schema is migrated once, into a template database named after a hash
// of the migration files; each test then gets CREATE DATABASE ... TEMPLATE,
// a block copy of a few megabytes (a few hundred milliseconds on a slow
// disk, and no slower as migrations grow), dropped again in t.Cleanup.
// Advisory locks let any number of test processes share one server.
// The server must be PostgreSQL 13 or later (DROP DATABASE ... WITH (FORCE)).
package pgtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	tcpostgres "github.com/testcontainers/testcontainers-go/modules/postgres"

	"github.com/oaas/pm/migrations"
)

// EnvDatabaseURL names the environment variable that points tests at a
// Postgres server. It takes precedence over every other way of finding one.
const EnvDatabaseURL = "PM_TEST_DATABASE_URL"

const (
	// templatePrefix starts the name of every template this package makes;
	// stale ones (other migration hashes, failed builds) are dropped by
	// that prefix.
	templatePrefix = "pm_tmpl_"
	// testDBPrefix starts the name of every per-test database. The name
	// carries its creation time so that databases leaked by a killed test
	// process can be told from ones in use and swept.
	testDBPrefix = "pm_t_"
	// leakedAfter is how old a per-test database must be before a later
	// test process drops it as leaked.
	leakedAfter = 6 * time.Hour
	// lockKey is the advisory lock under which templates are built
	// (exclusive) and cloned (shared), across test processes.
	lockKey int64 = 0x706d5f7467746d70 // "pm_tgtmp"
)

// server is the process-wide test server, found once.
type server struct {
	adminDSN string        // DSN of the server's maintenance database
	template string        // name of the migrated template database
	admin    *pgxpool.Pool // for CREATE/DROP DATABASE; lives for the process
	err      error         // why no server could be had, for every test to report
}

var (
	once   sync.Once
	shared server
)

// get returns the process-wide server, setting it up on first use, or fails t.
func get(t testing.TB) *server {
	t.Helper()
	once.Do(func() { shared = setup() })
	if shared.err != nil {
		t.Fatalf("pgtest: no Postgres for tests: %v\n\n%s", shared.err, howToFix)
	}
	return &shared
}

const howToFix = `To run the Postgres-backed tests, do one of:
  - set ` + EnvDatabaseURL + ` to a server DSN whose user may CREATE DATABASE,
    e.g. postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
  - start a local PostgreSQL on 127.0.0.1:5432 with trust auth for user
    postgres or root (Debian: pg_ctlcluster <version> main start)
  - start a Docker engine, so that testcontainers can run postgres:16-alpine`

// NewDatabase returns the DSN of a new database, migrated to the latest
// schema and used by nobody else, dropped when t ends. Tests that open a
// store on it should close the store in a t.Cleanup registered after this
// call (cleanups run last-in first-out); the drop forces out stray sessions
// anyway.
func NewDatabase(t testing.TB) string {
	t.Helper()
	srv := get(t)
	name := testDBPrefix + strconv.FormatInt(time.Now().Unix(), 10) + "_" + randomSuffix()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.clone(ctx, name); err != nil {
		t.Fatalf("pgtest: create test database: %v", err)
	}
	t.Cleanup(func() {
		// t.Context is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := srv.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: drop test database %s: %v", name, err)
		}
	})
	return withDatabase(srv.adminDSN, name)
}

// AdminDSN returns the DSN of the test server's maintenance database, for
// tests that create and drop databases themselves. Databases they create
// are theirs to drop.
func AdminDSN(t testing.TB) string {
	t.Helper()
	return get(t).adminDSN
}

// clone creates database name from the template. The shared advisory lock
// keeps another process from dropping the template mid-copy (it does so
// only under the exclusive lock, when its migrations differ). If such a
// process did drop it between two tests, clone builds it again.
func (s *server) clone(ctx context.Context, name string) error {
	err := s.cloneOnce(ctx, name)
	if sqlState(err) == "3D000" { // invalid_catalog_name: the template is gone
		if _, err := prepareTemplate(ctx, s.admin, s.adminDSN); err != nil {
			return err
		}
		err = s.cloneOnce(ctx, name)
	}
	return err
}

func (s *server) cloneOnce(ctx context.Context, name string) error {
	conn, err := s.admin.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock_shared($1)", lockKey); err != nil {
		return err
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock_shared($1)", lockKey) //nolint:errcheck // a lost session releases the lock too
	return whileInUse(ctx, func() error {
		_, err := conn.Exec(ctx, "CREATE DATABASE "+name+" TEMPLATE "+s.template)
		return err
	})
}

// setup finds a server and prepares the template. It runs once per process.
func setup() server {
	dsn, err := findServer()
	if err != nil {
		return server{err: err}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return server{err: fmt.Errorf("parse %s: %w", redact(dsn), err)}
	}
	cfg.MaxConns = 4
	admin, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return server{err: err}
	}
	tmpl, err := prepareTemplate(ctx, admin, dsn)
	if err != nil {
		admin.Close()
		return server{err: fmt.Errorf("prepare template database on %s: %w", redact(dsn), err)}
	}
	return server{adminDSN: dsn, template: tmpl, admin: admin}
}

// findServer returns the DSN of a reachable server, trying the sources in
// the documented order.
func findServer() (string, error) {
	if dsn := os.Getenv(EnvDatabaseURL); dsn != "" {
		// An explicit choice is not second-guessed: if it does not work,
		// falling back to another server would test the wrong thing.
		if err := ping(dsn); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvDatabaseURL, redact(dsn), err)
		}
		return dsn, nil
	}
	var errs []error
	dsn, err := localServer()
	if err == nil {
		return dsn, nil
	}
	errs = append(errs, fmt.Errorf("local server on 127.0.0.1:5432: %w", err))
	dsn, err = container()
	if err == nil {
		return dsn, nil
	}
	errs = append(errs, fmt.Errorf("testcontainers: %w", err))
	return "", errors.Join(errs...)
}

// localServer connects to 127.0.0.1:5432, starting the Debian cluster first
// if nothing listens there.
func localServer() (string, error) {
	const addr = "127.0.0.1:5432"
	if !listening(addr) {
		if err := startLocalCluster(); err != nil {
			return "", err
		}
		deadline := time.Now().Add(15 * time.Second)
		for !listening(addr) {
			if time.Now().After(deadline) {
				return "", errors.New("started the cluster but nothing listens after 15s")
			}
			time.Sleep(200 * time.Millisecond) // polling a port that has no event to await
		}
	}
	var errs []error
	for _, user := range []string{"postgres", "root"} {
		dsn := "postgres://" + user + "@" + addr + "/postgres?sslmode=disable&connect_timeout=3"
		// The server accepts TCP before it accepts logins while starting.
		var err error
		for range 25 {
			if err = ping(dsn); err == nil || !startingUp(err) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err == nil {
			return dsn, nil
		}
		errs = append(errs, fmt.Errorf("user %s: %w", user, err))
	}
	return "", errors.Join(errs...)
}

// startLocalCluster starts the clusters of a Debian PostgreSQL install.
func startLocalCluster() error {
	versions, err := os.ReadDir("/etc/postgresql")
	if err != nil {
		return fmt.Errorf("nothing listens and no Debian PostgreSQL install to start: %w", err)
	}
	var errs []error
	for _, v := range versions {
		if _, err := os.Stat(filepath.Join("/etc/postgresql", v.Name(), "main")); err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, "pg_ctlcluster", "--skip-systemctl-redirect", v.Name(), "main", "start").CombinedOutput()
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("pg_ctlcluster %s main start: %w: %s", v.Name(), err, strings.TrimSpace(string(out))))
			continue
		}
		return nil
	}
	if len(errs) == 0 {
		return errors.New("nothing listens and /etc/postgresql has no main cluster")
	}
	return errors.Join(errs...)
}

// container starts postgres in Docker through testcontainers. Without a
// Docker engine it fails (some versions panic), within a short bound. The
// container is reaped by testcontainers' Ryuk sidecar when the process
// exits.
func container() (dsn string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panicked: %v", p)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ctr, err := tcpostgres.Run(ctx, "postgres:16-alpine", tcpostgres.BasicWaitStrategies())
	if err != nil {
		return "", err
	}
	dsn, err = ctr.ConnectionString(ctx, "sslmode=disable")
	if err != nil {
		return "", err
	}
	return dsn, ping(dsn)
}

// prepareTemplate makes sure a template migrated with the current migration
// files exists and returns its name. It works under the exclusive advisory
// lock, and builds a template under a temporary name and renames it when
// done, so that a template by the final name is always complete.
func prepareTemplate(ctx context.Context, admin *pgxpool.Pool, adminDSN string) (string, error) {
	hash, err := migrationsHash()
	if err != nil {
		return "", err
	}
	name := templatePrefix + hash
	conn, err := admin.Acquire(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lockKey); err != nil {
		return "", err
	}
	defer conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lockKey) //nolint:errcheck // a lost session releases the lock too

	if err := dropLeaked(ctx, conn.Conn()); err != nil {
		return "", err
	}
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", err
	}
	if exists {
		return name, nil
	}
	// Half-built templates are leftovers of a killed process (building
	// happens under the lock we hold). Complete templates of other
	// migration sets stay: several checkouts (branches, worktrees) share
	// one server, and dropping each other's templates makes their test
	// runs fail as they clone.
	if err := dropDatabases(ctx, conn.Conn(), func(n string) bool {
		return strings.HasPrefix(n, templatePrefix) && strings.HasSuffix(n, "_wip")
	}); err != nil {
		return "", err
	}
	building := name + "_wip"
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+building); err != nil {
		return "", err
	}
	if err := migrate(ctx, withDatabase(adminDSN, building)); err != nil {
		return "", fmt.Errorf("migrate: %w", err)
	}
	// A rename needs the database idle. migrate closed its connections,
	// but a server backend exits a moment after its client hangs up.
	err = whileInUse(ctx, func() error {
		_, err := conn.Exec(ctx, "ALTER DATABASE "+building+" RENAME TO "+name)
		return err
	})
	if err != nil {
		return "", err
	}
	return name, nil
}

// whileInUse runs f until it stops failing with object_in_use (55006),
// which CREATE DATABASE ... TEMPLATE and ALTER DATABASE ... RENAME report
// while a session (a backend still exiting, a developer's psql) is
// connected to the database.
func whileInUse(ctx context.Context, f func() error) error {
	for {
		err := f()
		if sqlState(err) != "55006" || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// dropLeaked drops per-test databases older than leakedAfter: a test
// process that was killed never ran its cleanups.
func dropLeaked(ctx context.Context, conn *pgx.Conn) error {
	return dropDatabases(ctx, conn, func(n string) bool {
		return strings.HasPrefix(n, testDBPrefix) && leaked(n)
	})
}

// dropDatabases drops this package's databases (by prefix) that drop
// selects. The caller holds the exclusive lock, so no clone is running.
func dropDatabases(ctx context.Context, conn *pgx.Conn, drop func(name string) bool) error {
	rows, err := conn.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE 'pm\_tmpl\_%' OR datname LIKE 'pm\_t\_%'`)
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, n := range names {
		if !drop(n) {
			continue
		}
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+n+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("drop stale %s: %w", n, err)
		}
	}
	return nil
}

// leaked reports whether a per-test database is old enough to be a leftover
// of a killed process.
func leaked(name string) bool {
	ts, _, ok := strings.Cut(strings.TrimPrefix(name, testDBPrefix), "_")
	if !ok {
		return false
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	return err == nil && time.Since(time.Unix(sec, 0)) > leakedAfter
}

// migrate applies every migration to the database at dsn.
func migrate(ctx context.Context, dsn string) error {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return err
	}
	db := stdlib.OpenDB(*cfg)
	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS)
	if err == nil {
		_, err = p.Up(ctx)
	}
	return errors.Join(err, db.Close())
}

// migrationsHash identifies the migration set: a template built from other
// files must not be reused.
func migrationsHash() (string, error) {
	h := sha256.New()
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(migrations.FS, path)
		if err != nil {
			return err
		}
		// Writes to a hash never fail.
		_, _ = fmt.Fprintf(h, "%s\x00%d\x00", path, len(b))
		_, _ = h.Write(b)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hash migrations: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// withDatabase returns dsn pointing at database db instead.
func withDatabase(dsn, db string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + db
		u.RawPath = ""
		return u.String()
	}
	// key=value form: a later key overrides an earlier one.
	return dsn + " dbname=" + db
}

// ping connects to dsn once, briefly.
func ping(dsn string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	return errors.Join(conn.Ping(ctx), conn.Close(ctx))
}

// startingUp reports whether a connection failed because the server is
// still starting (cannot_connect_now), which is worth waiting out.
func startingUp(err error) bool { return sqlState(err) == "57P03" }

// sqlState returns the SQLSTATE of a server error in err's chain, or "".
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// listening reports whether something accepts TCP connections at addr.
func listening(addr string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := new(net.Dialer).DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	_ = c.Close() // only the connect mattered
	return true
}

// redact hides a password in a DSN for messages.
func redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		return u.String()
	}
	return kvPassword.ReplaceAllString(dsn, "password=xxxxx")
}

// kvPassword finds the password in a key=value DSN.
var kvPassword = regexp.MustCompile(`password\s*=\s*('(\\.|[^'])*'|\S+)`)

// randomSuffix makes per-test database names unique across processes.
func randomSuffix() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}
