// Package scratchdb gives a benchmark a Postgres database of its own: a
// uniquely named database created next to the one an admin DSN names, and
// dropped again (with any sessions left behind) on Close.
//
// The server must be PostgreSQL 13 or later (DROP DATABASE ... WITH (FORCE))
// and the admin DSN's user needs CREATEDB. DSNs may be URLs
// (postgres://...) or key=value strings; passwords never appear in errors.
package scratchdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"regexp"
	"time"

	"github.com/jackc/pgx/v5"
)

// connectTimeout bounds a connection attempt whose DSN sets no
// connect_timeout.
const connectTimeout = 5 * time.Second

// DB is a scratch database.
type DB struct {
	// Name is the database's name: the prefix given to Create and 12
	// random hex digits.
	Name string
	// URL is the DSN of the scratch database: the admin DSN with its
	// database replaced.
	URL string
	// DropTimeout bounds Close, retries included (a server that is
	// restarting is waited for). Create sets it to one minute.
	DropTimeout time.Duration

	admin string
}

// Create makes a fresh database named prefix followed by random hex digits
// on the server adminDSN names. When the server cannot be reached, the error
// says so and how to fix it (start PostgreSQL, or point -database-url at a
// running server).
func Create(ctx context.Context, adminDSN, prefix string) (*DB, error) {
	conn, err := Connect(ctx, adminDSN)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to Postgres at %s: %w\n"+
			"start PostgreSQL (e.g. pg_ctlcluster <version> main start) or point -database-url at a running server", Redact(adminDSN), err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }() // nothing to do about a failed goodbye
	b := make([]byte, 6)
	_, _ = rand.Read(b) // never fails
	d := &DB{Name: prefix + hex.EncodeToString(b), DropTimeout: time.Minute, admin: adminDSN}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+d.Name); err != nil {
		return nil, fmt.Errorf("CREATE DATABASE %s (the -database-url user needs CREATEDB): %w", d.Name, err)
	}
	d.URL = WithDatabase(adminDSN, d.Name)
	return d, nil
}

// Close drops the database, forcing out sessions left behind. It runs on its
// own deadline (DropTimeout), so that it also cleans up after the caller's
// context has ended, and retries while the server does not answer.
func (d *DB) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), d.DropTimeout)
	defer cancel()
	for {
		err := d.tryDrop(ctx)
		if err == nil {
			return nil
		}
		t := time.NewTimer(500 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("dropping scratch database %s (drop it by hand): %w", d.Name, err)
		case <-t.C:
		}
	}
}

func (d *DB) tryDrop(ctx context.Context) error {
	conn, err := Connect(ctx, d.admin)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(ctx) }() // nothing to do about a failed goodbye
	_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+d.Name+" WITH (FORCE)")
	return err
}

// Exec runs sql on the scratch database over a connection of its own.
func (d *DB) Exec(ctx context.Context, sql string, args ...any) error {
	return d.withConn(ctx, func(conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, sql, args...)
		return err
	})
}

// QueryRow runs query on the scratch database over a connection of its own
// and scans its first row into dest.
func (d *DB) QueryRow(ctx context.Context, query string, dest ...any) error {
	return d.withConn(ctx, func(conn *pgx.Conn) error {
		return conn.QueryRow(ctx, query).Scan(dest...)
	})
}

// withConn runs f with a fresh connection to the scratch database.
func (d *DB) withConn(ctx context.Context, f func(*pgx.Conn) error) error {
	conn, err := Connect(ctx, d.URL)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }() // nothing to do about a failed goodbye
	return f(conn)
}

// Connect opens one connection to dsn, giving up after 5 seconds unless
// the DSN sets its own connect_timeout.
func Connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = connectTimeout
	}
	return pgx.ConnectConfig(ctx, cfg)
}

// WithDatabase returns dsn pointing at database name instead, in URL or
// key=value form as dsn is.
func WithDatabase(dsn, name string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		u.Path = "/" + name
		u.RawPath = ""
		return u.String()
	}
	// key=value form: a later key overrides an earlier one.
	return dsn + " dbname=" + name
}

// Redact returns dsn with its password, if any, replaced by xxxxx, for
// messages.
func Redact(dsn string) string {
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
