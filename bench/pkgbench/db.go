package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgbenchTable is the pgbench side's table, a copy of packages' shape
// (columns, defaults, constraints, indexes); seedPrefix names the rows the
// select phase reads.
const (
	pgbenchTable = "pkgbench_packages"
	seedPrefix   = "pgs-"
)

// scratch is the benchmark's own database.
type scratch struct {
	admin    string // the -database-url the database was made from
	name     string
	url      string
	seeded   int // rows seedPrefix-1..seeded exist in pgbenchTable
	adminTTL time.Duration
}

// newScratch creates a fresh database next to the one adminURL names.
func newScratch(ctx context.Context, adminURL string) (*scratch, error) {
	conn, err := connect(ctx, adminURL)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to Postgres at %s: %w\n"+
			"start PostgreSQL (e.g. pg_ctlcluster <version> main start) or point -database-url at a running server", redact(adminURL), err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }() // nothing to do about a failed goodbye
	b := make([]byte, 6)
	_, _ = rand.Read(b) // never fails
	s := &scratch{admin: adminURL, name: "pkgbench_" + hex.EncodeToString(b), adminTTL: time.Minute}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+s.name); err != nil {
		return nil, fmt.Errorf("CREATE DATABASE %s (the -database-url user needs CREATEDB): %w", s.name, err)
	}
	s.url = withDatabase(adminURL, s.name)
	return s, nil
}

// drop removes the database, forcing out sessions left behind. A server
// that is restarting (someone else's doing) is waited for, within adminTTL.
func (s *scratch) drop() error {
	ctx, cancel := context.WithTimeout(context.Background(), s.adminTTL)
	defer cancel()
	for {
		err := s.tryDrop(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("dropping scratch database %s (drop it by hand): %w", s.name, err)
		case <-time.After(time.Second):
		}
	}
}

func (s *scratch) tryDrop(ctx context.Context) error {
	conn, err := connect(ctx, s.admin)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(ctx) }() // nothing to do about a failed goodbye
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+s.name+" WITH (FORCE)")
	return err
}

// exec runs statements on the scratch database, one connection.
func (s *scratch) exec(ctx context.Context, sql string, args ...any) error {
	conn, err := connect(ctx, s.url)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }() // nothing to do about a failed goodbye
	_, err = conn.Exec(ctx, sql, args...)
	return err
}

// serverVersion is the server's version string.
func (s *scratch) serverVersion(ctx context.Context) (string, error) {
	conn, err := connect(ctx, s.url)
	if err != nil {
		return "", err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }() // nothing to do about a failed goodbye
	var v string
	err = conn.QueryRow(ctx, "SHOW server_version").Scan(&v)
	return v, err
}

// preparePgbench creates the pgbench table once PM has migrated the
// database: same columns, defaults, constraints and indexes (GIN on tags
// included) as packages.
func (s *scratch) preparePgbench(ctx context.Context) error {
	err := s.exec(ctx, "CREATE TABLE "+pgbenchTable+" (LIKE packages INCLUDING ALL)")
	if err != nil {
		return fmt.Errorf("creating %s like packages (did PM migrate the database?): %w", pgbenchTable, err)
	}
	return nil
}

// sampleDoc returns a document PM stored, so pgbench writes documents of
// the same size and shape.
func (s *scratch) sampleDoc(ctx context.Context) (string, error) {
	conn, err := connect(ctx, s.url)
	if err != nil {
		return "", err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }() // nothing to do about a failed goodbye
	var doc string
	if err := conn.QueryRow(ctx, "SELECT doc::text FROM packages LIMIT 1").Scan(&doc); err != nil {
		return "", fmt.Errorf("reading a stored package document: %w", err)
	}
	return doc, nil
}

// seedSelect makes sure rows seedPrefix-1..n exist in the pgbench table,
// so the select phase reads among as many rows as PM's get does, and
// refreshes the planner statistics of both tables.
func (s *scratch) seedSelect(ctx context.Context, n int, doc string) error {
	if n > s.seeded {
		err := s.exec(ctx, `INSERT INTO `+pgbenchTable+` (name, version, disabled, tags, author, revision, created_at, updated_at, doc)
SELECT $1 || g, '0.1.0', false, '{demo,stateless}', 'platform-team', 1, now(), now(), $2::jsonb
FROM generate_series($3::int, $4::int) AS g`, seedPrefix, doc, s.seeded+1, n)
		if err != nil {
			return fmt.Errorf("seeding %s: %w", pgbenchTable, err)
		}
		s.seeded = n
	}
	return s.exec(ctx, "ANALYZE packages, "+pgbenchTable)
}

// checkpoint flushes dirty buffers so that a phase does not pay for the
// previous one's writes. Not being allowed to is not fatal.
func (s *scratch) checkpoint(ctx context.Context) error {
	err := s.exec(ctx, "CHECKPOINT")
	if err != nil && ctx.Err() != nil {
		return err
	}
	return nil
}

// connect opens one connection with a bounded connect time.
func connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	return pgx.ConnectConfig(ctx, cfg)
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

// errNoPgbench is returned when no pgbench binary can be found.
var errNoPgbench = errors.New("pgbench not found in PATH or /usr/lib/postgresql/*/bin; " +
	"install the PostgreSQL client tools (Debian/Ubuntu: apt-get install postgresql-client) or pass -pgbench PATH")
