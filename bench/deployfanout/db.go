package main

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

// scratch is the benchmark's own Postgres database, created next to the
// one -database-url names and dropped at the end.
type scratch struct {
	admin string // the -database-url the database was made from
	name  string
	url   string
}

// newScratch creates a fresh database next to the one adminURL names.
func newScratch(ctx context.Context, adminURL string) (*scratch, error) {
	conn, err := pgConnect(ctx, adminURL)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to Postgres at %s: %w\n"+
			"start PostgreSQL or point -database-url at a running server", redact(adminURL), err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }() // nothing to do about a failed goodbye
	b := make([]byte, 6)
	_, _ = rand.Read(b) // never fails
	s := &scratch{admin: adminURL, name: "deployfanout_" + hex.EncodeToString(b)}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+s.name); err != nil {
		return nil, fmt.Errorf("CREATE DATABASE %s (the -database-url user needs CREATEDB): %w", s.name, err)
	}
	s.url = withDatabase(adminURL, s.name)
	return s, nil
}

// drop removes the database, forcing out sessions left behind. It runs on
// its own deadline so that it also cleans up after Ctrl-C or -timeout.
func (s *scratch) drop() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgConnect(ctx, s.admin)
	if err != nil {
		return fmt.Errorf("dropping scratch database %s: %w", s.name, err)
	}
	defer func() { _ = conn.Close(ctx) }() // nothing to do about a failed goodbye
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+s.name+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("dropping scratch database %s (drop it by hand): %w", s.name, err)
	}
	return nil
}

// pgConnect opens one connection with a bounded connect time.
func pgConnect(ctx context.Context, dsn string) (*pgx.Conn, error) {
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
