package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oaas/pm/bench/internal/inproc"
	"github.com/oaas/pm/bench/internal/loadstat"
	"github.com/oaas/pm/bench/internal/pace"
	"github.com/oaas/pm/bench/internal/scratchdb"
	"github.com/oaas/pm/internal/crmsim"
)

// defaultInterval is PM's default RECONCILE_INTERVAL and
// DEPLOY_STATUS_POLL_INTERVAL, used when -interval is not given.
const defaultInterval = 30 * time.Second

// result is one run's figures.
type result struct {
	n            int
	createsPerS  float64
	createErrors int64
	idle         time.Duration
	passes       float64
	passesExact  bool
	crmCalls     int64
	listCalls    int64
	callsByKind  map[string]int64
	pmCPU        time.Duration
	crmCPU       time.Duration
	rss, peak    int64
	runtimes     loadstat.Summary
	healPasses   float64
	healTime     time.Duration
	healed       bool
	healSkipped  string
}

func runOne(ctx context.Context, o options, bin, dir string, n int) (result, error) {
	r := result{n: n}
	logf("N=%d: starting %d simulated clusters", n, o.clusters)
	sims, err := inproc.StartSims(ctx, o.clusters, func(i int) crmsim.Config {
		return crmsim.Config{
			Addr: "127.0.0.1:0", EnvName: fmt.Sprintf("c%03d", i),
			// Units settle quickly, so the idle window sees a steady state.
			ProgressDelay: 200 * time.Millisecond, ReadyDelay: 300 * time.Millisecond,
		}
	})
	if err != nil {
		return r, err
	}
	defer sims.Close()

	db, err := scratchdb.Create(ctx, o.databaseURL, "deploycore_")
	if err != nil {
		return r, err
	}
	defer func() { _ = db.Close() }()

	port, err := freePort(ctx)
	if err != nil {
		return r, err
	}
	var clusters []string
	for _, s := range sims {
		clusters = append(clusters, s.EnvName()+"="+s.URL())
	}
	env := append(os.Environ(),
		"STORAGE_TYPE=postgres", "DATABASE_URL="+db.URL,
		"SERVER_HOST=127.0.0.1", "SERVER_PORT="+strconv.Itoa(port),
		"METRICS_ENABLED=true", "METRICS_PORT=0",
		"LOG_LEVEL="+o.logLevel, "CRM_CLUSTERS="+strings.Join(clusters, ","),
	)
	interval := defaultInterval
	if o.interval > 0 {
		interval = o.interval
		env = append(env, "RECONCILE_INTERVAL="+o.interval.String(), "DEPLOY_STATUS_POLL_INTERVAL="+o.interval.String())
	}
	pm, err := startPM(ctx, bin, filepath.Join(dir, fmt.Sprintf("pm-%d.log", n)), env, port)
	if err != nil {
		return r, err
	}
	defer pm.stop()
	c := &client{base: pm.url, http: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.clients}, Timeout: time.Minute}}

	if err := c.createPackage(ctx); err != nil {
		return r, err
	}
	// Warm the health cache, as a PM that has run a while has it.
	if _, err := c.get(ctx, "/api/v1/clusters/health"); err != nil {
		return r, err
	}

	if o.warmup > 0 {
		// A PM that has run a while has its database and CRM connections
		// open; the first creates of a fresh one pay for opening them.
		logf("N=%d: warming up with %d creates and deletes", n, o.warmup)
		if err := c.warmUp(ctx, o, sims.Names()); err != nil {
			return r, err
		}
	}
	logf("N=%d: creating %d deployments with %d clients", n, n, o.clients)
	start := time.Now()
	r.createErrors, err = c.createAll(ctx, n, o, sims.Names())
	if err != nil {
		return r, err
	}
	r.createsPerS = float64(n) / time.Since(start).Seconds()
	logf("N=%d: %.0f creates/s (%d failed)", n, r.createsPerS, r.createErrors)

	// Let the creates' units settle and one background pass run, so the
	// idle window measures the steady state.
	if err := pace.Sleep(ctx, min(interval, 30*time.Second)+5*time.Second); err != nil {
		return r, err
	}

	logf("N=%d: idle for %s", n, o.idle)
	callsBefore := countCalls(sims)
	passesBefore, exact := c.passes(ctx)
	cpuBefore, err := pm.cpu()
	if err != nil {
		return r, err
	}
	selfBefore := selfCPU()
	idleStart := time.Now()
	if err := pace.Sleep(ctx, o.idle); err != nil {
		return r, err
	}
	r.idle = time.Since(idleStart)
	cpuAfter, err := pm.cpu()
	if err != nil {
		return r, err
	}
	r.crmCPU = selfCPU() - selfBefore
	r.pmCPU = cpuAfter - cpuBefore
	callsAfter := countCalls(sims)
	r.callsByKind = map[string]int64{}
	for k, v := range callsAfter {
		if d := v - callsBefore[k]; d > 0 {
			r.callsByKind[k] = d
			r.crmCalls += d
			if k == "ListClassRuntimes" {
				r.listCalls += d
			}
		}
	}
	passesAfter, _ := c.passes(ctx)
	r.passesExact = exact
	if exact {
		r.passes = passesAfter - passesBefore
	} else {
		r.passes = r.idle.Seconds() / interval.Seconds()
	}
	if r.rss, r.peak, err = pm.memory(); err != nil {
		return r, err
	}

	logf("N=%d: %d × GET /api/v1/class-runtimes?limit=20", n, o.queries)
	var lat []time.Duration
	for range o.queries {
		t := time.Now()
		body, err := c.get(ctx, "/api/v1/class-runtimes?limit=20")
		if err != nil {
			return r, err
		}
		if !bytes.HasPrefix(bytes.TrimSpace(body), []byte("[")) {
			return r, fmt.Errorf("class-runtimes answered %.200s", body)
		}
		lat = append(lat, time.Since(t))
	}
	r.runtimes = loadstat.Summarize(lat)

	if o.heal {
		r.heal(ctx, o, c, sims, interval, exact)
	}
	return r, nil
}

// heal removes every unit of the busiest cluster, as a cluster that lost
// its state, and counts PM's passes until it runs them all again.
func (r *result) heal(ctx context.Context, o options, c *client, sims inproc.Sims, interval time.Duration, exact bool) {
	sim := sims[0]
	for _, s := range sims {
		if s.RuntimeCount() > sim.RuntimeCount() {
			sim = s
		}
	}
	want := sim.RuntimeCount()
	if want == 0 {
		r.healSkipped = "no units"
		return
	}
	wait := o.healWait
	if wait <= 0 {
		wait = 4 * interval
	}
	logf("N=%d: removing all %d units of %s; waiting up to %s for them to come back", r.n, want, sim.EnvName(), wait)
	before, _ := c.passes(ctx)
	start := time.Now()
	for _, u := range sim.Runtimes() {
		sim.RemoveRuntime(u.GetId())
	}
	deadline := start.Add(wait)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if sim.RuntimeCount() >= want {
			r.healed = true
			break
		}
		_ = pace.Sleep(ctx, 100*time.Millisecond)
	}
	r.healTime = time.Since(start)
	after, _ := c.passes(ctx)
	if exact {
		r.healPasses = after - before
	} else {
		r.healPasses = r.healTime.Seconds() / interval.Seconds()
	}
}

// countCalls sums every simulator's calls by method name.
func countCalls(sims inproc.Sims) map[string]int64 {
	out := map[string]int64{}
	for _, s := range sims {
		for proc, n := range s.CallCounts() {
			out[proc[strings.LastIndexByte(proc, '/')+1:]] += n
		}
	}
	return out
}

// client talks REST to PM.
type client struct {
	base string
	http *http.Client
}

func (c *client) do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

func (c *client) get(ctx context.Context, path string) ([]byte, error) {
	code, b, err := c.do(ctx, "GET", path, nil)
	if err == nil && code != 200 {
		err = fmt.Errorf("GET %s: %d %.300s", path, code, b)
	}
	return b, err
}

func (c *client) createPackage(ctx context.Context) error {
	pkg := map[string]any{
		"name": "bench",
		"functions": []any{map[string]any{
			"key": "echo", "provision_config": map[string]any{"container_image": "ghcr.io/oaas/echo-fn:latest", "port": 8080},
		}},
		"classes": []any{map[string]any{
			"key": "Echo", "function_bindings": []any{map[string]any{"name": "echo", "function_key": "echo"}},
		}},
	}
	code, b, err := c.do(ctx, "POST", "/api/v1/packages", pkg)
	if err == nil && code != 201 {
		err = fmt.Errorf("create package: %d %s", code, b)
	}
	return err
}

// createAll creates n deployments, each on o.perDep clusters spread round
// robin, with o.clients concurrent clients. Failed creates are counted; an
// error is returned only when most fail.
func (c *client) createAll(ctx context.Context, n int, o options, clusters []string) (int64, error) {
	var next, failed, retries atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range o.clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				targets := make([]string, o.perDep)
				for j := range targets {
					targets[j] = clusters[(i*o.perDep+j)%len(clusters)]
				}
				key := fmt.Sprintf("d%06d", i)
				d := map[string]any{"key": key, "package_name": "bench", "class_key": "Echo", "target_envs": targets}
				if err := c.create(ctx, key, d, &retries); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	wg.Wait()
	if n := retries.Load(); n > 0 {
		logf("%d create attempts were retried (409 conflict or 503)", n)
	}
	if err := ctx.Err(); err != nil {
		return failed.Load(), err
	}
	if f := failed.Load(); f > int64(n)/10 {
		return f, fmt.Errorf("%d of %d creates failed, first: %v", f, n, firstErr.Load())
	}
	return failed.Load(), nil
}

// create posts one deployment as a careful client does: with an
// Idempotency-Key, retrying a transient failure (a 503, or a 409 for a
// transaction that conflicted) a few times. A retry that finds the
// deployment created by an earlier attempt counts as created.
func (c *client) create(ctx context.Context, key string, d any, retries *atomic.Int64) error {
	body, err := json.Marshal(d)
	if err != nil {
		return err
	}
	var last error
	for attempt := range 6 {
		if attempt > 0 {
			retries.Add(1)
			if err := pace.Sleep(ctx, time.Duration(attempt)*50*time.Millisecond); err != nil {
				return err
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/api/v1/deployments", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", "deploycore-"+key)
		resp, err := c.http.Do(req)
		if err != nil {
			last = err
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		switch {
		case resp.StatusCode == http.StatusCreated, resp.StatusCode == http.StatusOK && attempt > 0:
			// 200 to a retry: the key exists and was applied again unchanged.
			return nil
		case resp.StatusCode == http.StatusConflict && attempt > 0 && bytes.Contains(b, []byte("already exists")):
			return nil
		case resp.StatusCode == http.StatusServiceUnavailable, resp.StatusCode == http.StatusConflict && bytes.Contains(b, []byte("conflict")):
			last = fmt.Errorf("create: %d %.300s", resp.StatusCode, b)
		default:
			return fmt.Errorf("create: %d %.300s", resp.StatusCode, b)
		}
	}
	return last
}

// warmUp creates o.warmup deployments spread over every cluster, with
// o.clients clients, and deletes them again.
func (c *client) warmUp(ctx context.Context, o options, clusters []string) error {
	var retries atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, o.warmup)
	sem := make(chan struct{}, o.clients)
	for i := range o.warmup {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			key := fmt.Sprintf("warm%04d", i)
			targets := make([]string, o.perDep)
			for j := range targets {
				targets[j] = clusters[(i*o.perDep+j)%len(clusters)]
			}
			d := map[string]any{"key": key, "package_name": "bench", "class_key": "Echo", "target_envs": targets}
			if err := c.create(ctx, key, d, &retries); err != nil {
				errs <- err
				return
			}
			// Retried like a create: a transaction that conflicted (409) or
			// an operation still at work (409, 503) passes.
			for attempt := 0; ; attempt++ {
				code, b, err := c.do(ctx, http.MethodDelete, "/api/v1/deployments/"+key, nil)
				// 200 with what was deleted (204 from a PM before the OaaS bodies).
				if err == nil && (code == http.StatusOK || code == http.StatusNoContent || code == http.StatusNotFound && attempt > 0) {
					return // a 404 to a retry: the earlier attempt got through
				}
				if attempt == 60 || (err == nil && code != http.StatusConflict && code != http.StatusServiceUnavailable) {
					if err == nil {
						err = fmt.Errorf("%d %.200s", code, b)
					}
					errs <- fmt.Errorf("warm-up delete %s: %w", key, err)
					return
				}
				if pace.Sleep(ctx, min(time.Duration(attempt+1)*50*time.Millisecond, 500*time.Millisecond)) != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// passes reads PM's count of background observation passes from /metrics;
// false when this PM does not export it (an older build).
func (c *client) passes(ctx context.Context) (float64, bool) {
	b, err := c.get(ctx, "/metrics")
	if err != nil {
		return 0, false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "pm_deploy_observe_passes_total "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}
