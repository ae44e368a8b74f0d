package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/oaas/pm/bench/internal/pace"
	"github.com/oaas/pm/bench/internal/scratchdb"
)

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
		conn, err := scratchdb.Connect(rctx, adminURL)
		if err == nil {
			_ = conn.Close(rctx) // only probed
			return nil
		}
		if rctx.Err() != nil {
			return fmt.Errorf("postgres did not come back within 60s: %w", err)
		}
		_ = pace.Sleep(rctx, 100*time.Millisecond)
	}
}
