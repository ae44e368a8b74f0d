package cli_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/oaas/pm/internal/logtest"

	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/app"
	"github.com/oaas/pm/internal/cli"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/crmsim"
	"github.com/oaas/pm/internal/crmsim/crmsimtest"
)

// env is one running PM (memory store, three simulated clusters) and a
// pmctl environment pointed at it.
type env struct {
	t   *testing.T
	url string
	// vars are pmctl's environment variables (PM_SERVER, PMCTL_CONFIG...).
	vars map[string]string
	home string
	// packages and deployments check PM's state without going through
	// pmctl, so a test does not trust what it tests.
	packages    pmv1connect.PackageServiceClient
	deployments pmv1connect.DeploymentServiceClient
	// sims are the simulated clusters, by name.
	sims map[string]*crmsim.Sim
}

// setup starts PM on a loopback port with clusters "default", "east" and
// "west" (simulated CRMs whose units report DEPLOYING for readyDelay before
// RUNNING), and stops it when the test ends.
func setup(t *testing.T) *env {
	t.Helper()
	const readyDelay = 300 * time.Millisecond
	var sims []*crmsim.Sim
	byName := map[string]*crmsim.Sim{}
	for _, name := range []string{"default", "east", "west"} {
		s := crmsimtest.Start(t, crmsim.Config{EnvName: name, ReadyDelay: readyDelay})
		sims = append(sims, s)
		byName[name] = s
	}
	cfg := config.Default()
	cfg.Server.Host, cfg.Server.Port = "127.0.0.1", 0
	cfg.Server.ShutdownTimeout = 5 * time.Second
	cfg.Storage.Type = "memory"
	cfg.Metrics.Port = 0
	cfg.CRM.EmbeddedSimulator = false
	cfg.CRM.Clusters = nil
	for _, s := range sims {
		cfg.CRM.Clusters = append(cfg.CRM.Clusters, config.Cluster{Name: s.EnvName(), URL: s.URL()})
	}
	cfg.CRM.Timeout = 2 * time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("PM_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, log)
	if err != nil {
		cancel()
		t.Fatalf("starting pm: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("pm stopped with error: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("pm did not stop within 10s")
		}
	})
	url := "http://" + a.Addr()
	home := t.TempDir()
	hc := &http.Client{Timeout: 30 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	return &env{
		t: t, url: url, home: home,
		vars: map[string]string{
			"PM_SERVER":    url,
			"PMCTL_CONFIG": filepath.Join(home, "pmctl", "config.yaml"),
		},
		packages:    pmv1connect.NewPackageServiceClient(hc, url),
		deployments: pmv1connect.NewDeploymentServiceClient(hc, url),
		sims:        byName,
	}
}

// result is what one pmctl invocation printed and its exit code.
type result struct {
	stdout, stderr string
	code           int
}

// run runs pmctl with args and no standard input.
func (e *env) run(args ...string) result {
	e.t.Helper()
	return e.runIn(context.Background(), "", args...)
}

// runIn runs pmctl with ctx and stdin.
func (e *env) runIn(ctx context.Context, stdin string, args ...string) result {
	e.t.Helper()
	var out, errb logtest.Buffer
	return e.runTo(ctx, stdin, &out, &errb, args...)
}

func (e *env) runTo(ctx context.Context, stdin string, out, errb *logtest.Buffer, args ...string) result {
	e.t.Helper()
	vars := e.vars
	environ := cli.Env{
		Getenv:  func(k string) string { return vars[k] },
		HomeDir: func() (string, error) { return e.home, nil },
	}
	err := cli.Run(ctx, args, cli.Streams{In: strings.NewReader(stdin), Out: out, Err: errb}, environ)
	cli.Report(errb, err)
	r := result{stdout: out.String(), stderr: errb.String(), code: cli.ExitCode(err)}
	if testing.Verbose() {
		e.t.Logf("pmctl %s → %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// ok runs pmctl and fails the test unless it exits 0.
func (e *env) ok(args ...string) result {
	e.t.Helper()
	r := e.run(args...)
	if r.code != 0 {
		e.t.Fatalf("pmctl %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r
}

// expect fails the test unless r exited with code and its output contains
// every want (stdout for code 0, stderr otherwise).
func (r result) expect(t *testing.T, code int, wants ...string) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	text := r.stdout
	if code != 0 {
		text = r.stderr
	}
	for _, w := range wants {
		if !strings.Contains(text, w) {
			t.Errorf("output lacks %q\nstdout:\n%s\nstderr:\n%s", w, r.stdout, r.stderr)
		}
	}
}

// fixture is the path of a file under testdata/fixtures.
func fixture(parts ...string) string {
	return filepath.Join(append([]string{"..", "..", "testdata", "fixtures"}, parts...)...)
}

// writeFile writes content to a new file in a temp dir and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// closedURL is the URL of a loopback port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if err := ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		t.Fatal(err)
	}
	return "http://" + addr
}
