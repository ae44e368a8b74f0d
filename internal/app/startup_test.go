package app_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/oaas/pm/internal/app"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/store/pgtest"
)

// blackHole accepts TCP connections and never answers: a database behind a
// dead proxy or a firewall that drops packets after the handshake.
func blackHole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return ln.Addr().String()
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func TestStartupFailuresReportTheirCause(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = busy.Close() })
	busyPort := busy.Addr().(*net.TCPAddr).Port

	real := pgtest.NewDatabase(t)
	u, err := url.Parse(real)
	if err != nil {
		t.Fatal(err)
	}
	missing := *u
	missing.Path = "/pm_no_such_database"
	missing.User = url.UserPassword("postgres", "secret")
	badSSL := *u
	q := badSSL.Query()
	q.Set("sslmode", "maybe")
	badSSL.RawQuery = q.Encode()

	const timeout = time.Second
	cases := []struct {
		name  string
		tweak func(*config.Config)
		// mention are fragments the error must contain, naming the cause.
		mention []string
	}{
		{"API port in use", func(c *config.Config) { c.Server.Port = busyPort }, []string{"SERVER_HOST/SERVER_PORT", "address already in use"}},
		{"database refuses connections", postgresAt("postgres://postgres:secret@" + closedPort(t) + "/postgres?sslmode=disable"), []string{"connection refused"}},
		{"database never answers", postgresAt("postgres://postgres:secret@" + blackHole(t) + "/postgres?sslmode=disable"), []string{"DATABASE_TIMEOUT"}},
		{"missing database", postgresAt(missing.String()), []string{"pm_no_such_database", "does not exist"}},
		{"bad sslmode", postgresAt(badSSL.String()), []string{"sslmode"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := config.Default()
			cfg.Server.Host, cfg.Server.Port = "127.0.0.1", 0
			cfg.Metrics.Port = 0
			cfg.Storage.Timeout = timeout
			tc.tweak(&cfg)
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			start := time.Now()
			var a *app.App
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Fatalf("start-up panicked: %v", p)
					}
				}()
				a, err = app.New(context.Background(), cfg, log)
			}()
			if err == nil {
				_ = a
				t.Fatal("start-up succeeded")
			}
			if d := time.Since(start); d > timeout+3*time.Second {
				t.Errorf("start-up took %s to fail with DATABASE_TIMEOUT=%s", d, timeout)
			}
			for _, m := range tc.mention {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error leaks the password: %q", err)
			}
		})
	}
}

func postgresAt(dsn string) func(*config.Config) {
	return func(c *config.Config) {
		c.Storage.Type = "postgres"
		c.Storage.DatabaseURL = dsn
	}
}
