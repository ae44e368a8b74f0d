// Command clusterhealth measures GET /api/v1/clusters/health under load: it
// starts N simulated clusters and a PM in this process, drives the route at
// a fixed request rate over loopback for a bounded time, and reports CRM
// calls per cluster against the health cache TTL windows, latency
// percentiles and the process CPU.
//
//	go run ./bench/clusterhealth                      # 20 clusters, 1000 req/s, 10 s, TTL 1 s
//	go run ./bench/clusterhealth -duration 2s -rate 200
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oaas/pm/bench/internal/inproc"
	"github.com/oaas/pm/bench/internal/loadstat"
	"github.com/oaas/pm/internal/crmsim"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "clusterhealth:", err)
		os.Exit(1)
	}
}

type options struct {
	clusters    int
	rate        int
	duration    time.Duration
	ttl         time.Duration
	interval    time.Duration
	crmLatency  time.Duration
	concurrency int
}

func run() error {
	var o options
	flag.IntVar(&o.clusters, "clusters", 20, "simulated clusters")
	flag.IntVar(&o.rate, "rate", 1000, "requests per second")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "load duration (bounded: at most 5m)")
	flag.DurationVar(&o.ttl, "ttl", time.Second, "CRM_HEALTH_CACHE_TTL")
	flag.DurationVar(&o.interval, "interval", 0, "CRM_HEALTH_CHECK_INTERVAL (0: no background refresh, so every CRM call is demand-driven)")
	flag.DurationVar(&o.crmLatency, "crm-latency", 5*time.Millisecond, "latency each simulated CRM adds to every call")
	flag.IntVar(&o.concurrency, "concurrency", 512, "maximum requests in flight; beyond it a request counts as dropped")
	flag.Parse()
	switch {
	case o.clusters < 1 || o.rate < 1 || o.concurrency < 1:
		return errors.New("-clusters, -rate and -concurrency must be positive")
	case o.duration <= 0 || o.duration > 5*time.Minute:
		return errors.New("-duration must be in (0, 5m]")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	sims, err := inproc.StartSims(ctx, o.clusters, func(i int) crmsim.Config {
		a := 0.9 + float64(i%10)/100
		return crmsim.Config{EnvName: fmt.Sprintf("c%02d", i), Availability: &a, Latency: o.crmLatency}
	})
	if err != nil {
		return err
	}
	defer sims.Close()

	cfg := inproc.Config(sims)
	cfg.CRM.HealthCacheTTL = o.ttl
	cfg.CRM.HealthCheckInterval = o.interval
	cfg.CRM.Timeout = 2 * time.Second
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pm, err := inproc.StartPM(ctx, cfg, log)
	if err != nil {
		return err
	}
	url := pm.URL() + "/api/v1/clusters/health"

	client := &http.Client{
		Transport: &http.Transport{MaxIdleConnsPerHost: o.concurrency, MaxConnsPerHost: o.concurrency},
		Timeout:   10 * time.Second,
	}
	defer client.CloseIdleConnections()
	if err := checkOnce(ctx, client, url, o.clusters); err != nil {
		return err
	}
	before := callCounts(sims)

	res := drive(ctx, client, url, o)

	after := callCounts(sims)
	if err := pm.Stop(); err != nil {
		return fmt.Errorf("pm: %w", err)
	}
	report(o, res, before, after)
	return nil
}

// checkOnce makes sure the route answers with every cluster before the
// measurement, so setup costs (first connections) stay out of it.
func checkOnce(ctx context.Context, c *http.Client, url string, clusters int) error {
	resp, err := send(ctx, c, url)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	var items []map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&items); err != nil {
		return fmt.Errorf("decoding /clusters/health: %w", err)
	}
	if resp.StatusCode != http.StatusOK || len(items) != clusters || items[0]["availability"] == nil {
		return fmt.Errorf("warm-up: status %d, %d clusters", resp.StatusCode, len(items))
	}
	return nil
}

// send sends a GET to url; the caller closes the body.
func send(ctx context.Context, c *http.Client, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	return c.Do(req)
}

// callCounts is GetEnvHealth calls per simulated cluster.
func callCounts(sims []*crmsim.Sim) []int64 {
	out := make([]int64, len(sims))
	for i, s := range sims {
		out[i] = s.Calls("/oaas.health.CrmInfoService/GetEnvHealth")
	}
	return out
}

// result is what the load phase measured.
type result struct {
	sent, ok, failed, dropped int64
	latencies                 []time.Duration
	wall                      time.Duration
	cpu                       time.Duration
}

// drive sends requests open-loop at o.rate for o.duration: each request has
// a scheduled time, and its latency counts from then, so a server that falls
// behind shows it instead of slowing the generator down.
func drive(ctx context.Context, c *http.Client, url string, o options) result {
	total := int(math.Round(o.duration.Seconds() * float64(o.rate)))
	step := time.Second / time.Duration(o.rate)
	var (
		r       result
		mu      sync.Mutex
		wg      sync.WaitGroup
		ok, bad atomic.Int64
	)
	r.latencies = make([]time.Duration, 0, total)
	sem := make(chan struct{}, o.concurrency)
	cpu0 := loadstat.CPUTime()
	start := time.Now()
	for i := range total {
		due := start.Add(time.Duration(i) * step)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		select {
		case sem <- struct{}{}:
		default:
			r.dropped++
			continue
		}
		r.sent++
		wg.Go(func() {
			defer func() { <-sem }()
			if err := get(ctx, c, url); err != nil {
				bad.Add(1)
				return
			}
			lat := time.Since(due)
			ok.Add(1)
			mu.Lock()
			r.latencies = append(r.latencies, lat)
			mu.Unlock()
		})
	}
	wg.Wait()
	r.wall = time.Since(start)
	r.cpu = loadstat.CPUTime() - cpu0
	r.ok, r.failed = ok.Load(), bad.Load()
	return r
}

// get sends a GET to url and reads the answer whole; anything but 200 is
// an error.
func get(ctx context.Context, c *http.Client, url string) error {
	resp, err := send(ctx, c, url)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func report(o options, r result, before, after []int64) {
	lat := loadstat.Summarize(r.latencies)
	calls := make([]int64, len(before))
	var sum int64
	for i := range before {
		calls[i] = after[i] - before[i]
		sum += calls[i]
	}
	// Each CRM call opens a TTL window in which no other is made, so a
	// cluster gets at most floor(wall/TTL)+1 calls in the run.
	bound := int64(r.wall/o.ttl) + 1
	maxCalls := slices.Max(calls)
	fmt.Printf("clusters=%d rate=%d/s duration=%s ttl=%s interval=%s crm_latency=%s\n",
		o.clusters, o.rate, o.duration, o.ttl, o.interval, o.crmLatency)
	fmt.Printf("requests: sent=%d ok=%d failed=%d dropped=%d achieved=%.0f/s\n",
		r.sent, r.ok, r.failed, r.dropped, float64(r.ok)/r.wall.Seconds())
	fmt.Printf("latency (from scheduled send): p50=%s p90=%s p99=%s max=%s\n",
		lat.P50.Round(time.Microsecond), lat.P90.Round(time.Microsecond),
		lat.P99.Round(time.Microsecond), lat.Max.Round(time.Microsecond))
	verdict := "OK: ≤ 1 call per cluster per TTL"
	if maxCalls > bound {
		verdict = "OVER: more than 1 call per cluster per TTL"
	}
	fmt.Printf("CRM GetEnvHealth calls per cluster: min=%d max=%d mean=%.1f; bound for ≤ 1 per TTL: %d (%s); without a cache it would be %d\n",
		slices.Min(calls), maxCalls, float64(sum)/float64(len(calls)), bound, verdict, r.ok)
	fmt.Printf("process CPU (PM + %d simulators + load generator): %s over %s wall = %.2f cores\n",
		o.clusters, r.cpu.Round(time.Millisecond), r.wall.Round(time.Millisecond), r.cpu.Seconds()/r.wall.Seconds())
}
