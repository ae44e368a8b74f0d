// Command pkgbench measures PM's package create and get over REST against
// Postgres, next to pgbench running the equivalent single-row INSERT and
// SELECT on the same database in the same run, and reports the ratio
// against the targets of issue 2 (create ≥ 40%, get ≥ 60% of pgbench).
//
// It creates a scratch database (pkgbench_<random>), starts PM in-process on
// it (loopback, port 0), and for each client count runs four timed phases:
// PM create (POST /api/v1/packages), pgbench insert, PM get
// (GET /api/v1/packages/{name}), pgbench select. The scratch database is
// dropped at the end unless -keep is given.
//
//	go run ./bench/pkgbench -duration 10s -clients 1,32
//
// PM's own settings come from the environment as usual (DATABASE_MAX_CONNS,
// LOG_LEVEL, ...), except those the benchmark must fix: storage, listen
// address and metrics (off, so nothing listens beyond loopback).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/oaas/pm/bench/internal/inproc"
	"github.com/oaas/pm/bench/internal/loadstat"
	"github.com/oaas/pm/bench/internal/scratchdb"
	"github.com/oaas/pm/internal/app"
	"github.com/oaas/pm/internal/config"
)

// options are the command-line flags.
type options struct {
	databaseURL string
	duration    time.Duration
	warmup      time.Duration
	clients     []int
	keep        bool
	pgbench     string
	cpuprofile  string
}

// Targets are the issue-2 floors of PM throughput as a share of pgbench's.
const (
	createTarget = 0.40
	getTarget    = 0.60
)

func main() {
	opts, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pkgbench:", err)
		os.Exit(2)
	}
	// SIGPIPE too: with stdout piped into head, a write fails and the run
	// stops and cleans up instead of dying with the scratch database.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGPIPE)
	err = run(ctx, opts, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "pkgbench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("pkgbench", flag.ContinueOnError)
	fs.StringVar(&o.databaseURL, "database-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
		"Postgres to benchmark; the user must be allowed to CREATE DATABASE (a scratch database is made there)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured length of each phase (pgbench rounds up to whole seconds)")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured run before each phase (0 for none)")
	clients := fs.String("clients", "1,32", "comma-separated concurrent client counts")
	fs.BoolVar(&o.keep, "keep", false, "keep the scratch database instead of dropping it")
	fs.StringVar(&o.pgbench, "pgbench", "", "pgbench binary (default: PATH, then /usr/lib/postgresql/*/bin/pgbench)")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "directory to write a CPU profile of each measured PM phase to (pm-<op>-c<N>.pprof)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.duration < time.Second {
		return o, errors.New("-duration must be at least 1s")
	}
	if o.warmup < 0 {
		return o, errors.New("-warmup must not be negative")
	}
	for _, f := range strings.Split(*clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 1000 {
			return o, fmt.Errorf("-clients: %q is not a client count (1-1000)", f)
		}
		o.clients = append(o.clients, n)
	}
	return o, nil
}

// result is one line of the report.
type result struct {
	op      string // "create" or "get"
	clients int
	pm      stats
	pgb     pgbenchResult
	target  float64
}

// printer writes to w and keeps the first write error.
type printer struct {
	w   io.Writer
	err error
}

func (p *printer) printf(format string, args ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, args...)
	}
}

func run(ctx context.Context, o options, w io.Writer) (err error) {
	out := &printer{w: w}
	pgbenchPath, pgbenchVersion, err := findPgbench(ctx, o.pgbench)
	if err != nil {
		return err
	}
	db, err := newScratch(ctx, o.databaseURL)
	if err != nil {
		return err
	}
	defer func() {
		if o.keep {
			out.printf("\nkept scratch database %s (%s)\n", db.Name, scratchdb.Redact(db.URL))
			return
		}
		err = errors.Join(err, db.Close())
	}()

	pm, err := startPM(ctx, db.URL)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, pm.stop()) }()

	if err := db.preparePgbench(ctx); err != nil {
		return err
	}
	pgb := &pgbench{path: pgbenchPath, url: db.URL, db: db}
	if pgb.dir, err = os.MkdirTemp("", "pkgbench-"); err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(pgb.dir) }() // a temp dir left behind is harmless
	if o.cpuprofile != "" {
		if err := os.MkdirAll(o.cpuprofile, 0o755); err != nil {
			return err
		}
	}

	serverVersion, err := db.serverVersion(ctx)
	if err != nil {
		return err
	}
	out.printf("pkgbench: PM %s (storage postgres, pool %s) vs %s\n", pm.addr, pm.poolSize(), pgbenchVersion)
	out.printf("postgres %s, database %s; %s, GOMAXPROCS %d, %d CPUs; %s per phase after %s warm-up\n",
		serverVersion, db.Name, runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU(), o.duration, o.warmup)
	loadWarning(out, "before the run")
	out.printf("\n")

	load := &loader{base: "http://" + pm.addr}
	var results []result
	for _, n := range o.clients {
		phase := func(name string) func() func() error {
			if o.cpuprofile == "" {
				return nil
			}
			return func() func() error {
				return profiler(filepath.Join(o.cpuprofile, fmt.Sprintf("pm-%s-c%d.pprof", name, n)))
			}
		}
		progress(out, "PM create", n)
		if err := db.checkpoint(ctx); err != nil {
			return err
		}
		create, err := load.run(ctx, opCreate, n, o.warmup, o.duration, phase("create"))
		if err != nil {
			return err
		}
		doc, err := db.sampleDoc(ctx)
		if err != nil {
			return err
		}
		progress(out, "pgbench insert", n)
		insert, err := pgb.insert(ctx, n, o.warmup, o.duration, doc)
		if err != nil {
			return err
		}
		if err := db.seedSelect(ctx, load.created(), doc); err != nil {
			return err
		}
		progress(out, "PM get", n)
		if err := db.checkpoint(ctx); err != nil {
			return err
		}
		get, err := load.run(ctx, opGet, n, o.warmup, o.duration, phase("get"))
		if err != nil {
			return err
		}
		progress(out, "pgbench select", n)
		sel, err := pgb.selectByKey(ctx, n, o.warmup, o.duration, load.created())
		if err != nil {
			return err
		}
		results = append(results,
			result{op: "create", clients: n, pm: create, pgb: insert, target: createTarget},
			result{op: "get", clients: n, pm: get, pgb: sel, target: getTarget})
	}
	out.printf("\n")
	report(out, results)
	var errs []error
	for _, r := range results {
		if r.pm.errors > 0 {
			errs = append(errs, fmt.Errorf("PM %s with %d clients: %d of %d requests failed, first: %s",
				r.op, r.clients, r.pm.errors, r.pm.errors+r.pm.ops, r.pm.firstError))
		}
	}
	return errors.Join(append(errs, out.err)...)
}

func progress(out *printer, what string, clients int) {
	out.printf("running %-15s clients=%d\n", what, clients)
}

// loadWarning notes a busy machine: PM, its client, Postgres and pgbench
// share the CPUs, so other work skews the figures (not evenly: it hits
// whichever phase it overlaps). Only the load before the run says
// something about other work; during it, the benchmark is the load.
func loadWarning(out *printer, when string) {
	f := loadstat.LoadAverage()
	if f == nil {
		return // not Linux; nothing to say
	}
	load, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return
	}
	note := ""
	if load > float64(runtime.NumCPU())/2 {
		note = " (busy machine: other work competes for the CPUs, figures are skewed)"
	}
	out.printf("load average %s: %.2f%s\n", when, load, note)
}

// profiler starts a CPU profile into path and returns its stop function,
// or nil (after a warning) if the profile cannot be written.
func profiler(path string) func() error {
	stop, err := loadstat.StartCPUProfile(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "pkgbench: cpu profile:", err)
		return nil
	}
	return stop
}

// report prints the results table and the targets.
func report(out *printer, results []result) {
	out.printf("%-9s %7s %10s %9s %9s %9s %12s %11s %10s %7s %4s\n",
		"operation", "clients", "PM ops/s", "PM p50", "PM p99", "PM avg", "pgbench tps", "pgbench avg", "PM/pgbench", "target", "met")
	for _, r := range results {
		ratio := 0.0
		if r.pgb.tps > 0 {
			ratio = r.pm.opsPerSec / r.pgb.tps
		}
		met := "no"
		if ratio >= r.target {
			met = "yes"
		}
		out.printf("%-9s %7d %10.0f %9s %9s %9s %12.0f %11s %9.0f%% %6.0f%% %4s\n",
			r.op, r.clients, r.pm.opsPerSec, ms(r.pm.latency.P50), ms(r.pm.latency.P99), ms(r.pm.latency.Mean),
			r.pgb.tps, ms(r.pgb.latency), 100*ratio, 100*r.target, met)
	}
	out.printf("\nPM: REST over HTTP/1.1 keep-alive from an in-process client; pgbench: -M prepared single-row\n")
	out.printf("INSERT / SELECT by primary key on a table shaped like packages (same columns, indexes, doc size).\n")
}

// ms formats a duration in milliseconds with three decimals.
func ms(d time.Duration) string { return loadstat.Millis(d, 3) }

// pmServer is the PM under test.
type pmServer struct {
	addr string
	cfg  config.Config
	pm   *inproc.PM
}

// poolSize describes the configured pgx pool size.
func (p *pmServer) poolSize() string {
	if p.cfg.Storage.MaxConns == 0 {
		return fmt.Sprintf("pgx default max(4, NumCPU)=%d", max(4, runtime.NumCPU()))
	}
	return strconv.Itoa(p.cfg.Storage.MaxConns)
}

// stop stops PM and waits for it.
func (p *pmServer) stop() error {
	err := p.pm.Stop()
	if err != nil && !errors.Is(err, inproc.ErrNotStopped) {
		return fmt.Errorf("PM stopped with: %w", err)
	}
	return err
}

// startPM starts PM in-process on url, configured from the environment
// with the benchmark's fixed settings on top. It runs until stop, also
// after ctx ends, so that it stops before the database is dropped.
func startPM(ctx context.Context, url string) (*pmServer, error) {
	fixed := map[string]string{
		"STORAGE_TYPE":    "postgres",
		"DATABASE_URL":    url,
		"SERVER_HOST":     "127.0.0.1",
		"SERVER_PORT":     "0",
		"METRICS_ENABLED": "false",
	}
	cfg, err := config.Load(func(key string) (string, bool) {
		if v, ok := fixed[key]; ok {
			return v, true
		}
		return os.LookupEnv(key)
	})
	if err != nil {
		return nil, fmt.Errorf("PM config: %w", err)
	}
	// Logs are formatted as configured (their cost is part of serving)
	// and thrown away.
	log := app.NewLogger(cfg.Log, io.Discard)
	pm, err := inproc.StartPM(context.WithoutCancel(ctx), cfg, log)
	if err != nil {
		return nil, fmt.Errorf("starting PM: %w", err)
	}
	return &pmServer{addr: pm.Addr(), cfg: cfg, pm: pm}, nil
}
