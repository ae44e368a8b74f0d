package app_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/store/pgtest"
)

func TestDeploymentRevision(t *testing.T) {
	t.Parallel()
	f := startFleet(t, "default")
	e := setup(t, "memory", withFleet(f))
	e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, 201)
	created := e.do("POST", "/api/v1/deployments", deployment("d", "echo", "default")).expect(t, 201)
	etag := created.header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag on create")
	}
	// The deploy wrote its results after the create's revision: the ETag of
	// a fresh GET is current, an older one is stale.
	current := e.do("GET", "/api/v1/deployments/d", nil).expect(t, 200).header.Get("ETag")
	e.do("DELETE", "/api/v1/deployments/d", nil, "If-Match", `"999"`).expect(t, 409)
	if f["default"].RuntimeCount() != 1 {
		t.Fatal("a stale delete removed the runtime")
	}
	e.do("DELETE", "/api/v1/deployments/d", nil, "If-Match", "not-a-revision").expect(t, 400)
	e.do("DELETE", "/api/v1/deployments/d", nil, "If-Match", current).expect(t, 200)
}

// TestConcurrentPackageUpdaters has 50 clients each add one tag with
// read-modify-write under If-Match: no update may be lost.
func TestConcurrentPackageUpdaters(t *testing.T) {
	t.Parallel()
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			e := setup(t, storage)
			e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, 201)
			const writers = 50
			var wg sync.WaitGroup
			for i := range writers {
				wg.Go(func() {
					for attempt := 0; attempt < 200; attempt++ {
						r := e.do("GET", "/api/v1/packages/echo", nil)
						if r.status != 200 {
							t.Errorf("get: %d %s", r.status, r.body)
							return
						}
						var pkg map[string]any
						r.json(t, &pkg)
						meta, _ := pkg["metadata"].(map[string]any)
						tags, _ := meta["tags"].([]any)
						meta["tags"] = append(tags, fmt.Sprintf("w%d", i))
						delete(meta, "created_at")
						delete(meta, "updated_at")
						u := e.do("POST", "/api/v1/packages/echo", pkg, "If-Match", r.header.Get("ETag"))
						switch u.status {
						case 200:
							return
						case 409:
							continue
						default:
							t.Errorf("update: %d %s", u.status, u.body)
							return
						}
					}
					t.Errorf("writer %d never got its update in", i)
				})
			}
			wg.Wait()
			var pkg map[string]any
			r := e.do("GET", "/api/v1/packages/echo", nil).expect(t, 200)
			r.json(t, &pkg)
			tags := pkg["metadata"].(map[string]any)["tags"].([]any)
			if len(tags) != writers {
				t.Errorf("%d tags after %d writers: lost updates", len(tags), writers)
			}
			if etag := r.header.Get("ETag"); etag != fmt.Sprintf(`"%d"`, writers+1) {
				t.Errorf("ETag %s, want revision %d", etag, writers+1)
			}
		})
	}
}

func TestOperationsOrphansAndMetrics(t *testing.T) {
	t.Parallel()
	f := startFleet(t, "east")
	e := setup(t, "memory", withFleet(f))
	e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, 201)
	e.do("POST", "/api/v1/deployments", deployment("d", "echo", "east")).expect(t, 201)

	var ops []map[string]any
	e.do("GET", "/api/v1/operations?deployment_key=d", nil).expect(t, 200).json(t, &ops)
	if len(ops) != 1 || ops[0]["kind"] != "OPERATION_KIND_DEPLOY" || ops[0]["state"] != "OPERATION_STATE_SUCCEEDED" {
		t.Errorf("operations %v", ops)
	}

	var orphans []map[string]any
	e.do("GET", "/api/v1/orphans", nil).expect(t, 200).json(t, &orphans)
	if len(orphans) != 0 {
		t.Errorf("orphans before any reconcile: %v", orphans)
	}

	metrics := string(e.do("GET", "/metrics", nil).expect(t, 200).body)
	for _, want := range []string{
		`pm_api_requests_total{code="ok",procedure="/oaas.pm.v1.DeploymentService/CreateDeployment"} 1`,
		`pm_orphan_units 0`,
		`pm_deploy_operations_resumed_total 0`,
		`go_goroutines`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// proxy is a TCP relay to Postgres that a test can cut and restore, to
// play a database outage without touching the shared server.
type proxy struct {
	t      *testing.T
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  []net.Conn
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go p.accept()
	return p
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		var d net.Dialer
		up, err := d.DialContext(context.Background(), "tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		go func() { _, _ = io.Copy(c, up); c.Close() }()
	}
}

// cut drops every connection and refuses new ones until restore.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

func TestPostgresOutage(t *testing.T) {
	t.Parallel()
	dsn := pgtest.NewDatabase(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, u.Host)
	u.Host = p.ln.Addr().String()
	f := startFleet(t, "default")
	e := setup(t, "memory", withFleet(f), func(c *config.Config) {
		c.Storage.Type = "postgres"
		c.Storage.DatabaseURL = u.String()
		c.Storage.Timeout = time.Second
	})
	e.do("POST", "/api/v1/packages", echoPackage("before")).expect(t, 201)

	p.cut()
	start := time.Now()
	r := e.do("POST", "/api/v1/packages", echoPackage("during"))
	if r.status != 503 {
		t.Errorf("write during outage: %d %s, want 503", r.status, r.body)
	}
	if msg := r.errorText(t); strings.Contains(strings.ToLower(msg), "pgx") || strings.Contains(msg, "dial") {
		t.Errorf("driver text leaked: %q", msg)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("outage answer took %v; requests must fail fast", took)
	}
	e.do("GET", "/api/v1/packages/before", nil).expect(t, 503)
	e.do("GET", "/health", nil).expect(t, 503)

	p.restore()
	waitFor(t, func() (int, bool) {
		r := e.do("GET", "/health", nil)
		return r.status, r.status == 200
	})
	e.do("GET", "/api/v1/packages/before", nil).expect(t, 200)
	e.do("GET", "/api/v1/packages/during", nil).expect(t, 404)
	e.do("POST", "/api/v1/packages", echoPackage("after")).expect(t, 201)
}
