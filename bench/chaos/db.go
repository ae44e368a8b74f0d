package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// scratch is the run's own database.
type scratch struct {
	admin string // the -database-url it was made from
	name  string
	url   string
}

// newScratch creates a fresh database next to the one adminURL names.
func newScratch(ctx context.Context, adminURL string) (*scratch, error) {
	conn, err := pgConnect(ctx, adminURL)
	if err != nil {
		return nil, fmt.Errorf("cannot connect to Postgres at %s: %w\n"+
			"start PostgreSQL (e.g. pg_ctlcluster <version> main start) or point -database-url at a running server", redact(adminURL), err)
	}
	defer func() { _ = conn.Close(context.WithoutCancel(ctx)) }() // nothing to do about a failed goodbye
	b := make([]byte, 6)
	_, _ = rand.Read(b) // never fails
	s := &scratch{admin: adminURL, name: "pmchaos_" + hex.EncodeToString(b)}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+s.name); err != nil {
		return nil, fmt.Errorf("CREATE DATABASE %s (the -database-url user needs CREATEDB): %w", s.name, err)
	}
	s.url, err = withDatabase(adminURL, s.name)
	if err != nil {
		return nil, err
	}
	logf("scratch database %s", s.name)
	return s, nil
}

// drop removes the database, forcing out sessions left behind. Postgres may
// just have restarted, so it tries for a while.
func (s *scratch) drop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var last error
	for ctx.Err() == nil {
		conn, err := pgConnect(ctx, s.admin)
		if err == nil {
			_, err = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+s.name+" WITH (FORCE)")
			_ = conn.Close(ctx) // nothing to do about a failed goodbye
			if err == nil {
				return nil
			}
		}
		last = err
		_ = sleepCtx(ctx, 500*time.Millisecond)
	}
	return fmt.Errorf("dropping scratch database %s (drop it by hand): %w", s.name, last)
}

func pgConnect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return pgx.Connect(ctx, dsn)
}

// withDatabase returns dsn with its database replaced by name (URL or
// key=value form).
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("-database-url: %w", err)
		}
		u.Path = "/" + name
		return u.String(), nil
	}
	return dsn + " dbname=" + name, nil
}

// redact hides a password in a DSN for messages.
func redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		return u.String()
	}
	return dsn
}

// pgRestartCommand is the command that restarts the local PostgreSQL
// cluster: pg_ctlcluster <version> main restart, with the only version under
// /etc/postgresql.
func pgRestartCommand() ([]string, error) {
	path, err := exec.LookPath("pg_ctlcluster")
	if err != nil {
		return nil, errors.New("-restart-postgres needs pg_ctlcluster (Debian's postgresql-common); pass -restart-postgres=false to skip the restart")
	}
	entries, err := os.ReadDir("/etc/postgresql")
	if err != nil {
		return nil, fmt.Errorf("-restart-postgres: %w (pass -restart-postgres=false to skip the restart)", err)
	}
	var versions []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join("/etc/postgresql", e.Name(), "main")); err == nil {
			versions = append(versions, e.Name())
		}
	}
	if len(versions) != 1 {
		return nil, fmt.Errorf("-restart-postgres: want exactly one cluster /etc/postgresql/<version>/main, found %v", versions)
	}
	return []string{path, "--skip-systemctl-redirect", versions[0], "main", "restart"}, nil
}

// restartPostgres restarts the server and waits until it takes connections
// again.
func restartPostgres(ctx context.Context, adminURL string) error {
	argv, err := pgRestartCommand()
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(rctx, argv[0], argv[1:]...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, out)
	}
	for {
		conn, err := pgConnect(rctx, adminURL)
		if err == nil {
			_ = conn.Close(rctx) // only probed
			return nil
		}
		if rctx.Err() != nil {
			return fmt.Errorf("postgres did not come back within 60s: %w", err)
		}
		_ = sleepCtx(rctx, 100*time.Millisecond)
	}
}
