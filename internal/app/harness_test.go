package app_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/oaas/pm/internal/app"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/store/pgtest"
)

// env is one running PM for a test.
type env struct {
	t    testing.TB
	base string // http://127.0.0.1:port
	// h2c speaks HTTP/2 without TLS, as gRPC clients do.
	h2c *http.Client
	// http1 is a plain REST client.
	http1 *http.Client
	// app is the running PM, for tests that drive its background loops.
	app *app.App
	// shutdown stops PM as SIGTERM does and returns what Run returned.
	shutdown func() error
}

// storages are the stores every API scenario runs against.
var storages = []string{"memory", "postgres"}

// setup starts PM on a loopback port with the given storage and config tweaks,
// and stops it (gracefully) when the test ends.
func setup(t testing.TB, storage string, tweak ...func(*config.Config)) *env {
	t.Helper()
	return setupLogged(t, storage, nil, tweak...)
}

// setupLogged is setup with PM's log written to logs (debug level) when
// logs is not nil.
func setupLogged(t testing.TB, storage string, logs io.Writer, tweak ...func(*config.Config)) *env {
	t.Helper()
	cfg := config.Default()
	cfg.Server.Host, cfg.Server.Port = "127.0.0.1", 0
	cfg.Server.ShutdownTimeout = 5 * time.Second
	cfg.Storage.Type = storage
	cfg.Metrics.Port = 0 // /metrics on the API port only; parallel PMs must not share a port
	if storage == "postgres" {
		cfg.Storage.DatabaseURL = pgtest.NewDatabase(t)
		// Many PMs run in parallel against one server (max_connections is
		// often 100): keep each pool small.
		cfg.Storage.MaxConns = 8
	}
	for _, f := range tweak {
		f(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if logs != nil {
		log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	} else if os.Getenv("PM_TEST_LOG") != "" {
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
	var once sync.Once
	var runErr error
	shutdown := func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(10 * time.Second):
				runErr = errors.New("pm did not stop within 10s")
			}
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := shutdown(); err != nil {
			t.Errorf("pm stopped with error: %v", err)
		}
	})
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	h2c := &http.Client{Transport: &http.Transport{Protocols: &protocols}, Timeout: 30 * time.Second}
	t.Cleanup(h2c.CloseIdleConnections)
	http1 := &http.Client{Timeout: 30 * time.Second}
	t.Cleanup(http1.CloseIdleConnections)
	return &env{t: t, base: "http://" + a.Addr(), h2c: h2c, http1: http1, app: a, shutdown: shutdown}
}

// response is a REST response read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body into v, failing the test on error.
func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %q: %v", r.body, err)
	}
}

// errorText returns the "error" of an error body, failing if the body is not
// exactly {"error": "..."}.
func (r response) errorText(t *testing.T) string {
	t.Helper()
	var m map[string]any
	r.json(t, &m)
	msg, ok := m["error"].(string)
	if !ok || len(m) != 1 || msg == "" {
		t.Fatalf("error body is not {\"error\": \"...\"}: %s", r.body)
	}
	return msg
}

// do sends a JSON REST request; body may be nil, []byte, string or a value
// to encode. headers are name, value pairs.
func (e *env) do(method, path string, body any, headers ...string) response {
	e.t.Helper()
	var raw []byte
	switch b := body.(type) {
	case nil:
	case []byte:
		raw = b
	case string:
		raw = []byte(b)
	default:
		var err error
		if raw, err = json.Marshal(b); err != nil {
			e.t.Fatal(err)
		}
	}
	contentType := ""
	if body != nil {
		contentType = "application/json"
	}
	return e.send(method, path, contentType, raw, headers...)
}

// send sends a REST request with an explicit content type ("" for none).
func (e *env) send(method, path, contentType string, body []byte, headers ...string) response {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := e.http1.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{status: res.StatusCode, header: res.Header, body: raw}
}

// expect fails the test unless the response has the wanted status.
func (r response) expect(t testing.TB, want int) response {
	t.Helper()
	if r.status != want {
		t.Fatalf("status %d, want %d; body %s", r.status, want, r.body)
	}
	return r
}

// fixture reads a file of ../shared/fixtures.
func fixture(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(fixtureDir(t), name))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func fixtureDir(t *testing.T) string {
	t.Helper()
	if d := os.Getenv("PM_FIXTURES"); d != "" {
		return d
	}
	_, file, _, _ := runtime.Caller(0)
	// A copy of ../shared/fixtures kept in the repo, so a clone tests alone;
	// TestFixturesInSync catches drift.
	return filepath.Join(filepath.Dir(file), "..", "..", "testdata", "fixtures")
}
