// Command deployfanout measures how a deployment create scales with the
// number of target clusters: it starts N simulated clusters (crmsim) on
// loopback, each adding a fixed latency to every CRM call, and one PM in
// this process configured with them, then POSTs deployments targeting all N
// clusters over REST and compares the end-to-end latency with one raw CRM
// round trip (a Deploy sent straight to one simulator). A parallel fan-out
// costs about one round trip whatever N; a sequential one costs N.
//
//	go run ./bench/deployfanout                               # 1, 10, 100 clusters, 50ms, 10 runs
//	go run ./bench/deployfanout -storage postgres             # scratch database, dropped after
//	go run ./bench/deployfanout -clusters 100 -parallelism 8 -runs 20
package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/oaas/pm/bench/internal/inproc"
	"github.com/oaas/pm/bench/internal/loadstat"
	"github.com/oaas/pm/bench/internal/pace"
	"github.com/oaas/pm/bench/internal/scratchdb"
	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	"github.com/oaas/pm/gen/go/oaas/deployment/deploymentconnect"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/crmsim"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "deployfanout:", err)
		os.Exit(1)
	}
}

// options are the command-line flags.
type options struct {
	clusters     []int
	latency      time.Duration
	runs         int
	storage      string
	databaseURL  string
	parallelism  int
	wide         bool
	cold         bool
	coldTTL      time.Duration
	baseline     int
	availability float64
	timeout      time.Duration
	cpuprofile   string
	pmLog        bool
}

// targetRatio is issue 4's goal for the create latency over one CRM round
// trip, at 10 clusters and more.
const targetRatio = 1.3

func parseFlags() (options, error) {
	var o options
	def := config.Default()
	clusters := flag.String("clusters", "1,10,100", "comma-separated numbers of simulated clusters each deployment targets")
	flag.DurationVar(&o.latency, "latency", 50*time.Millisecond, "latency every simulated CRM adds to every call")
	flag.IntVar(&o.runs, "runs", 10, "measured creates per configuration")
	flag.StringVar(&o.storage, "storage", "memory", "PM storage: memory or postgres (a scratch database, dropped after)")
	flag.StringVar(&o.databaseURL, "database-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
		"Postgres server the scratch database is created on (-storage postgres)")
	flag.IntVar(&o.parallelism, "parallelism", def.Deploy.Parallelism, "DEPLOY_PARALLELISM: concurrent CRM calls of one fan-out")
	flag.BoolVar(&o.wide, "wide", true, "also measure with DEPLOY_PARALLELISM = clusters where clusters > -parallelism")
	flag.BoolVar(&o.cold, "cold", true, "also measure creates that find the health cache expired and read every cluster's health first")
	flag.DurationVar(&o.coldTTL, "cold-ttl", 500*time.Millisecond, "CRM_HEALTH_CACHE_TTL of the cold-cache PM; each cold create waits this long after the previous one")
	flag.IntVar(&o.baseline, "baseline-calls", 20, "raw CRM Deploy round trips measured for the baseline")
	flag.Float64Var(&o.availability, "availability", 0.99, "availability every simulated CRM reports")
	flag.DurationVar(&o.timeout, "timeout", 10*time.Minute, "bound on the whole run")
	flag.StringVar(&o.cpuprofile, "cpuprofile", "", "directory to write a CPU profile of each measured configuration to")
	flag.BoolVar(&o.pmLog, "pm-log", false, "write PM's warnings and errors to stderr")
	flag.Parse()

	for f := range strings.SplitSeq(*clusters, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 1000 {
			return o, fmt.Errorf("-clusters: %q is not a number in [1,1000]", f)
		}
		o.clusters = append(o.clusters, n)
	}
	switch {
	case o.runs < 1 || o.runs > 10000:
		return o, errors.New("-runs must be in [1,10000]")
	case o.baseline < 1 || o.baseline > 10000:
		return o, errors.New("-baseline-calls must be in [1,10000]")
	case o.latency < 0 || o.latency > 10*time.Second:
		return o, errors.New("-latency must be in [0,10s]")
	case o.parallelism < 1:
		return o, errors.New("-parallelism must be at least 1")
	case o.storage != "memory" && o.storage != "postgres":
		return o, errors.New("-storage must be memory or postgres")
	case o.coldTTL <= 0:
		return o, errors.New("-cold-ttl must be positive")
	case o.availability <= 0 || o.availability > 1:
		return o, errors.New("-availability must be in (0,1]")
	case o.timeout <= 0:
		return o, errors.New("-timeout must be positive")
	}
	return o, nil
}

func run() error {
	o, err := parseFlags()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if o.cpuprofile != "" {
		if err := os.MkdirAll(o.cpuprofile, 0o755); err != nil {
			return err
		}
	}

	dbURL := ""
	if o.storage == "postgres" {
		db, err := scratchdb.Create(ctx, o.databaseURL, "deployfanout_")
		if err != nil {
			return err
		}
		defer func() {
			if err := db.Close(); err != nil {
				fmt.Fprintln(os.Stderr, "deployfanout:", err)
			}
		}()
		dbURL = db.URL
	}

	fmt.Printf("deployfanout: crm latency %s, %d runs per row, storage %s, GOMAXPROCS %d, load average %s\n",
		o.latency, o.runs, o.storage, runtime.GOMAXPROCS(0), loadAverage())
	base, err := baseline(ctx, o)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	fmt.Printf("baseline: one raw CRM Deploy round trip (connect gRPC client, h2c, straight to a simulator), %d calls: p50 %s p99 %s mean %s\n\n",
		o.baseline, ms(base.P50), ms(base.P99), ms(base.Mean))

	var rows []row
	for _, n := range o.clusters {
		got, err := measureFleet(ctx, o, n, dbURL)
		if err != nil {
			return fmt.Errorf("%d clusters: %w", n, err)
		}
		rows = append(rows, got...)
	}
	report(o, base, rows)
	return nil
}

// baseline measures one CRM round trip the way PM makes it: a Deploy over
// the generated connect client with the gRPC protocol on h2c, to a
// simulator with the same latency. The first call (connection setup) is not
// measured.
func baseline(ctx context.Context, o options) (loadstat.Summary, error) {
	sim, err := crmsim.Start(ctx, crmsim.Config{EnvName: "baseline", Latency: o.latency})
	if err != nil {
		return loadstat.Summary{}, err
	}
	defer func() { _ = sim.Close() }()
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	transport := &http.Transport{Protocols: &protocols, Proxy: nil}
	defer transport.CloseIdleConnections()
	client := deploymentconnect.NewDeploymentServiceClient(&http.Client{Transport: transport, Timeout: 30 * time.Second},
		sim.URL(), connect.WithGRPC())
	var lat []time.Duration
	for i := range o.baseline + 1 {
		unit := &deploymentpb.DeploymentUnit{Id: fmt.Sprintf("baseline-%d", i), PackageName: "fanout", ClassKey: "Echo"}
		start := time.Now()
		res, err := client.Deploy(ctx, &deploymentpb.DeployRequest{DeploymentUnit: unit})
		if err != nil {
			return loadstat.Summary{}, err
		}
		if res.GetDeploymentId() == "" {
			return loadstat.Summary{}, fmt.Errorf("deploy answered %v", res)
		}
		if i > 0 {
			lat = append(lat, time.Since(start))
		}
	}
	return loadstat.Summarize(lat), nil
}

// rawFanout is the floor of any fan-out on this machine: one connect
// client per simulator (as PM has), a Deploy to every simulator at once,
// timed until the last answers. It runs next to each measured create, so
// both see the same machine load.
type rawFanout struct {
	clients    []deploymentconnect.DeploymentServiceClient
	transports []*http.Transport
}

func newRawFanout(sims []*crmsim.Sim) *rawFanout {
	f := &rawFanout{}
	for _, s := range sims {
		var protocols http.Protocols
		protocols.SetUnencryptedHTTP2(true)
		t := &http.Transport{Protocols: &protocols, Proxy: nil}
		f.transports = append(f.transports, t)
		f.clients = append(f.clients, deploymentconnect.NewDeploymentServiceClient(
			&http.Client{Transport: t, Timeout: 30 * time.Second}, s.URL(), connect.WithGRPC()))
	}
	return f
}

// once sends one Deploy of unit id to every simulator at once.
func (f *rawFanout) once(ctx context.Context, id string) (time.Duration, error) {
	errs := make([]error, len(f.clients))
	var wg sync.WaitGroup
	start := time.Now()
	for i, c := range f.clients {
		wg.Go(func() {
			unit := &deploymentpb.DeploymentUnit{Id: id, PackageName: "fanout", ClassKey: "Echo"}
			_, errs[i] = c.Deploy(ctx, &deploymentpb.DeployRequest{DeploymentUnit: unit})
		})
	}
	wg.Wait()
	return time.Since(start), errors.Join(errs...)
}

func (f *rawFanout) close() {
	for _, t := range f.transports {
		t.CloseIdleConnections()
	}
}

// row is one measured configuration.
type row struct {
	clusters, parallelism int
	cold                  bool
	stats                 loadstat.Summary
	// Per create, summed over the clusters: CRM calls by kind.
	deploys, health, other float64
	// failed counts creates that did not answer 201; firstErr is the first.
	failed   int
	firstErr string
	// cpu is the process CPU time (PM, simulators and client) per create.
	cpu time.Duration
	// raw is the same fan-out without PM, measured next to each create:
	// every Deploy sent at once from this process straight to the simulators.
	raw loadstat.Summary
}

// measureFleet starts n simulated clusters and measures creates against them
// at each parallelism and cache mode asked for.
func measureFleet(ctx context.Context, o options, n int, dbURL string) ([]row, error) {
	sims, err := inproc.StartSims(ctx, n, func(i int) crmsim.Config {
		a := o.availability
		return crmsim.Config{EnvName: fmt.Sprintf("c%03d", i), Availability: &a, Latency: o.latency}
	})
	if err != nil {
		return nil, err
	}
	defer sims.Close()
	raw := newRawFanout(sims)
	defer raw.close()
	pars := []int{o.parallelism}
	if o.wide && n > o.parallelism {
		pars = append(pars, n)
	}
	modes := []bool{false}
	if o.cold {
		modes = append(modes, true)
	}
	var rows []row
	for _, p := range pars {
		for _, cold := range modes {
			r, err := measure(ctx, o, sims, raw, p, cold, dbURL)
			if err != nil {
				return nil, fmt.Errorf("parallelism %d, cold %v: %w", p, cold, err)
			}
			fmt.Printf("  measured %3d clusters, parallelism %3d, %-4s cache: p50 %s (raw fan-out %s), %d failed\n",
				n, p, cacheName(cold), ms(r.stats.P50), ms(r.raw.P50), r.failed)
			rows = append(rows, r)
		}
	}
	return rows, nil
}

func cacheName(cold bool) string {
	if cold {
		return "cold"
	}
	return "warm"
}

// measure starts one PM over sims and times o.runs creates.
func measure(ctx context.Context, o options, sims inproc.Sims, raw *rawFanout, parallelism int, cold bool, dbURL string) (r row, err error) {
	n := len(sims)
	r = row{clusters: n, parallelism: parallelism, cold: cold}
	cfg := inproc.Config(sims)
	cfg.Server.ShutdownTimeout = 10 * time.Second
	cfg.Storage.Type = o.storage
	cfg.Storage.DatabaseURL = dbURL
	cfg.CRM.EmbeddedSimulator = false
	cfg.CRM.HealthCheckInterval = 0 // no background refresh: the cache is warm or cold because the bench says so
	cfg.CRM.HealthCacheTTL = 60 * time.Second
	if cold {
		cfg.CRM.HealthCacheTTL = o.coldTTL
	}
	cfg.CRM.Timeout = 10 * time.Second
	cfg.Deploy.Parallelism = parallelism
	log := slog.New(slog.DiscardHandler)
	if o.pmLog {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	pm, err := inproc.StartPM(ctx, cfg, log)
	if err != nil {
		return r, err
	}
	defer func() {
		if perr := pm.Stop(); perr != nil && err == nil {
			err = fmt.Errorf("pm: %w", perr)
		}
	}()

	c := &client{base: pm.URL(), http: &http.Client{Timeout: 60 * time.Second}}
	defer c.http.CloseIdleConnections()
	// A name of its own, as PMs may share a Postgres scratch database.
	pkg := fmt.Sprintf("fanout-%d-p%d-%s", n, parallelism, cacheName(cold))
	if err := c.post(ctx, "/api/v1/packages", echoPackage(pkg)); err != nil {
		return r, fmt.Errorf("creating the package: %w", err)
	}
	names := sims.Names()
	// Warm up: health into the cache, connections to every CRM open, and one
	// unmeasured create through every code path.
	if err := c.get(ctx, "/api/v1/clusters/health"); err != nil {
		return r, fmt.Errorf("warming the health cache: %w", err)
	}
	if err := c.post(ctx, "/api/v1/deployments", deployment(pkg+"-warmup", pkg, names)); err != nil {
		if ctx.Err() != nil {
			return r, err
		}
		fmt.Fprintf(os.Stderr, "deployfanout: %d clusters, par %d: warm-up create failed (measuring anyway): %v\n", n, parallelism, err)
	}

	if _, err := raw.once(ctx, "raw-warmup"); err != nil {
		return r, fmt.Errorf("raw fan-out: %w", err)
	}
	if o.cpuprofile != "" {
		stopProfile, err := loadstat.StartCPUProfile(fmt.Sprintf("%s/create-c%d-p%d-%s.pprof", o.cpuprofile, n, parallelism, cacheName(cold)))
		if err != nil {
			return r, err
		}
		defer func() { _ = stopProfile() }() // a truncated profile is still worth a look
	}
	var (
		lat, rawLat []time.Duration
		cpu         time.Duration
		crm         calls
	)
	for i := range o.runs {
		if cold {
			// Every cached health entry has expired: this create reads them.
			if err := pace.Sleep(ctx, o.coldTTL+10*time.Millisecond); err != nil {
				return r, err
			}
		}
		d, err := raw.once(ctx, fmt.Sprintf("raw-%d", i))
		if err != nil {
			return r, fmt.Errorf("raw fan-out: %w", err)
		}
		rawLat = append(rawLat, d)

		body := deployment(fmt.Sprintf("%s-%d", pkg, i), pkg, names)
		before, cpu0 := callTotals(sims), loadstat.CPUTime()
		start := time.Now()
		if err := c.post(ctx, "/api/v1/deployments", body); err != nil {
			if ctx.Err() != nil {
				return r, err
			}
			// Reported, not fatal: a failing create is a finding too.
			r.failed++
			if r.firstErr == "" {
				r.firstErr = fmt.Sprintf("create %d: %v", i, err)
			}
		} else {
			lat = append(lat, time.Since(start))
		}
		cpu += loadstat.CPUTime() - cpu0
		crm = crm.add(callTotals(sims).sub(before))
	}
	runs := float64(o.runs)
	r.raw = loadstat.Summarize(rawLat)
	if len(lat) > 0 {
		r.stats = loadstat.Summarize(lat)
	}
	r.cpu = cpu / time.Duration(o.runs)
	r.deploys, r.health, r.other = float64(crm.deploys)/runs, float64(crm.health)/runs, float64(crm.other)/runs
	return r, nil
}

// calls are CRM calls summed over a fleet.
type calls struct{ deploys, health, other int64 }

func (c calls) add(d calls) calls {
	return calls{c.deploys + d.deploys, c.health + d.health, c.other + d.other}
}

func (c calls) sub(d calls) calls {
	return calls{c.deploys - d.deploys, c.health - d.health, c.other - d.other}
}

func callTotals(sims []*crmsim.Sim) calls {
	var c calls
	for _, s := range sims {
		for proc, k := range s.CallCounts() {
			switch {
			case strings.HasSuffix(proc, "/Deploy"):
				c.deploys += k
			case strings.Contains(proc, "health") || strings.Contains(proc, "Health"):
				c.health += k
			default:
				c.other += k
			}
		}
	}
	return c
}

// client is a REST client of the PM under test (HTTP/1.1 keep-alive).
type client struct {
	base string
	http *http.Client
}

func (c *client) get(ctx context.Context, path string) error {
	return c.do(ctx, http.MethodGet, path, nil, http.StatusOK)
}

func (c *client) post(ctx context.Context, path string, body any) error {
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, path, raw, http.StatusCreated)
}

func (c *client) do(ctx context.Context, method, path string, body []byte, want int) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = res.Body.Close() }()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	if res.StatusCode != want {
		return fmt.Errorf("%s %s: status %d, want %d: %s", method, path, res.StatusCode, want, bytes.TrimSpace(raw))
	}
	return nil
}

func echoPackage(name string) map[string]any {
	return map[string]any{
		"name": name,
		"functions": []any{map[string]any{
			"key": "echo", "provision_config": map[string]any{"container_image": "ghcr.io/oaas/echo-fn:latest", "port": 8080},
		}},
		"classes": []any{map[string]any{
			"key": "Echo", "function_bindings": []any{map[string]any{"name": "echo", "function_key": "echo"}},
		}},
	}
}

func deployment(key, pkg string, clusters []string) map[string]any {
	return map[string]any{"key": key, "package_name": pkg, "class_key": "Echo", "target_envs": clusters}
}

// report prints the table and how to read it.
func report(o options, base loadstat.Summary, rows []row) {
	slices.SortStableFunc(rows, func(a, b row) int {
		return cmp.Or(cmp.Compare(a.clusters, b.clusters), cmp.Compare(a.parallelism, b.parallelism), cmpBool(a.cold, b.cold))
	})
	fmt.Printf("\ncreate latency, POST /api/v1/deployments targeting every cluster (REST, end to end), baseline p50 %s\n", ms(base.P50))
	fmt.Printf("%8s %4s %5s %8s %8s %8s %8s %6s %5s %8s %8s %8s %12s  %s\n",
		"clusters", "par", "cache", "p50", "p99", "mean", "baseline", "ratio", "waves", "raw-fan", "over-raw", "cpu/op", "crm/create", "target ≤1.3× (10, 100)")
	for _, r := range rows {
		ratio := float64(r.stats.P50) / float64(base.P50)
		waves := (r.clusters + r.parallelism - 1) / r.parallelism
		verdict := "-"
		switch {
		case r.failed == o.runs:
			verdict = "every create FAILED"
		case r.failed > 0 && r.clusters >= 10 && !r.cold:
			verdict = fmt.Sprintf("NOT met: %d of %d creates FAILED", r.failed, o.runs)
		case r.failed > 0:
			verdict = fmt.Sprintf("%d of %d creates FAILED", r.failed, o.runs)
		case r.clusters >= 10 && !r.cold && ratio <= targetRatio:
			verdict = "met"
		case r.clusters >= 10 && !r.cold:
			verdict = "NOT met"
		case r.clusters >= 10 && ratio <= targetRatio:
			verdict = "(cold; within 1.3× too)"
		case r.clusters >= 10:
			verdict = "(cold; not the target's case)"
		}
		if floor := float64(r.raw.P50) / float64(base.P50); r.failed == 0 && r.clusters >= 10 && !r.cold && floor > targetRatio {
			verdict += fmt.Sprintf(" (raw floor here %.2f×)", floor)
		}
		crm := fmt.Sprintf("%gD+%gH", r.deploys, r.health)
		if r.other > 0 {
			crm += fmt.Sprintf("+%g", r.other)
		}
		p50, p99, mean, ratioText, over := ms(r.stats.P50), ms(r.stats.P99), ms(r.stats.Mean), fmt.Sprintf("%.2f×", ratio), ms(r.stats.P50-r.raw.P50)
		if r.failed == o.runs {
			p50, p99, mean, ratioText, over = "-", "-", "-", "-", "-"
		}
		fmt.Printf("%8d %4d %5s %8s %8s %8s %8s %6s %5d %8s %8s %8s %12s  %s\n",
			r.clusters, r.parallelism, cacheName(r.cold), p50, p99, mean,
			ms(base.P50), ratioText, waves, ms(r.raw.P50), over, ms(r.cpu), crm, verdict)
	}
	for _, r := range rows {
		if r.failed > 0 {
			fmt.Printf("%d clusters, par %d, %s: %d of %d creates failed; first: %s\n",
				r.clusters, r.parallelism, cacheName(r.cold), r.failed, o.runs, r.firstErr)
		}
	}
	fmt.Printf("\npar: DEPLOY_PARALLELISM; waves: ceil(clusters/par), the CRM round trips the fan-out needs back to back.\n"+
		"raw-fan: p50 of as many Deploys sent at once straight to the simulators, no PM, each run next to a create\n"+
		"         (the floor of any fan-out on this machine; the simulators share the process and its CPUs);\n"+
		"over-raw: p50 minus raw-fan, what PM adds to a fully parallel fan-out.\n"+
		"cpu/op: process CPU (PM + simulators + client) per create.\n"+
		"crm/create: CRM calls per create summed over the clusters, D = Deploy, H = health reads.\n"+
		"warm: health cache (TTL 60s) filled before measuring, so the create is the deploy fan-out plus store writes.\n"+
		"cold: health cache (TTL %s) expired before every create, which first reads every target's health\n"+
		"      (all at once, not bounded by par), then sends the Deploys: two round trips at least.\n"+
		"p50/p99/mean are over the creates that answered 201; crm/create and cpu/op over all of them.\n"+
		"p99 of %d runs is close to the maximum.\n", o.coldTTL, o.runs)
}

func cmpBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// ms formats a duration in milliseconds with one decimal.
func ms(d time.Duration) string { return loadstat.Millis(d, 1) }

// loadAverage is /proc/loadavg's first three fields, or "n/a".
func loadAverage() string {
	if f := loadstat.LoadAverage(); f != nil {
		return strings.Join(f, " ")
	}
	return "n/a"
}
