// Command pkgbench measures the speed of PM's package path over REST.
//
// Path mode (-mode path, the default) runs PM next to two references on
// the same PostgreSQL in the same run, driven by one closed-loop HTTP/1.1
// keep-alive client with identical request bodies:
//
//   - the floor: the least a JSON-over-HTTP registry has to do (a plain
//     net/http mux and a pgx pool of PM's size over a table shaped like
//     packages; create reads only name and tags and stores the raw body,
//     get and list serve stored JSON as it is);
//   - pgbench: the equivalent single-row INSERT and SELECT, no HTTP at all.
//
// Phases per client count: create (POST /api/v1/packages), get
// (GET /api/v1/packages/{name}), list by a tag every package carries
// (GET /api/v1/packages?tags=demo&limit=20).
//
// Scale mode (-mode scale) seeds 100k packages into PM (and the floor), a
// tag on 5 of them and another on half, and measures listing by each tag,
// for the Postgres and the memory store, with the process's memory.
//
//	go run ./bench/pkgbench -duration 10s -clients 1,32
//	go run ./bench/pkgbench -mode scale
//
// Every server listens on loopback; scratch databases (pkgbench_<random>)
// are dropped at the end unless -keep is given. PM's own settings come from
// the environment as usual (DATABASE_MAX_CONNS, LOG_LEVEL, METRICS_ENABLED,
// ...), except those the benchmark must fix: storage, database, listen
// address and the separate metrics port (off; /metrics stays on the API
// port when metrics are enabled).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/oaas/pm/bench/internal/inproc"
	"github.com/oaas/pm/bench/internal/loadstat"
	"github.com/oaas/pm/internal/app"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/store/postgres"
)

// options are the command-line flags.
type options struct {
	databaseURL string
	mode        string
	duration    time.Duration
	warmup      time.Duration
	clients     []int
	ops         []operation
	floor       bool
	pgbench     bool
	keep        bool
	pgbenchPath string
	cpuprofile  string
	memprofile  string
	timeout     time.Duration
	rounds      int

	scalePackages int
	scaleStorage  []string
}

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
	fs.StringVar(&o.mode, "mode", "path", "path (PM vs floor vs pgbench), scale (list by tag at -scale-packages) or all (both)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "measured length of each phase (pgbench rounds up to whole seconds)")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "unmeasured run before each phase (0 for none)")
	clients := fs.String("clients", "1,32", "comma-separated concurrent client counts")
	ops := fs.String("ops", "create,get,list", "path mode: comma-separated phases (get and list need create)")
	compare := fs.String("compare", "floor,pgbench", "path mode: references run next to PM (floor, pgbench; empty for PM alone)")
	fs.BoolVar(&o.keep, "keep", false, "keep the scratch databases instead of dropping them")
	fs.StringVar(&o.pgbenchPath, "pgbench", "", "pgbench binary (default: PATH, then /usr/lib/postgresql/*/bin/pgbench)")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "directory to write a CPU profile of each measured phase to (pm-<op>-c<N>.pprof, floor-...), summarised after the table")
	fs.StringVar(&o.memprofile, "memprofile", "", "file to write an allocation profile of the whole run to (every 4 KiB sampled; narrow the run with -ops/-compare/-clients)")
	fs.DurationVar(&o.timeout, "timeout", time.Hour, "stop the whole run after this long")
	fs.IntVar(&o.rounds, "rounds", 4, "split each phase into this many slices, alternating PM and the floor, so that other load hits both alike")
	fs.IntVar(&o.scalePackages, "scale-packages", 100_000, "scale mode: packages to seed")
	storage := fs.String("scale-storage", "postgres,memory", "scale mode: comma-separated stores to measure (postgres, memory)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.mode != "path" && o.mode != "scale" && o.mode != "all" {
		return o, fmt.Errorf("-mode: %q is not path, scale or all", o.mode)
	}
	if o.duration < time.Second {
		return o, errors.New("-duration must be at least 1s")
	}
	if o.warmup < 0 {
		return o, errors.New("-warmup must not be negative")
	}
	if o.rounds < 1 || o.rounds > 100 {
		return o, errors.New("-rounds must be 1 to 100")
	}
	if o.timeout <= 0 {
		return o, errors.New("-timeout must be positive")
	}
	for _, f := range strings.Split(*clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 1000 {
			return o, fmt.Errorf("-clients: %q is not a client count (1-1000)", f)
		}
		o.clients = append(o.clients, n)
	}
	for _, f := range list(*ops) {
		op, ok := map[string]operation{"create": opCreate, "get": opGet, "list": opList}[f]
		if !ok {
			return o, fmt.Errorf("-ops: %q is not create, get or list", f)
		}
		if !slices.Contains(o.ops, op) {
			o.ops = append(o.ops, op)
		}
	}
	if len(o.ops) > 0 && !slices.Contains(o.ops, opCreate) {
		return o, errors.New("-ops: get and list read what create made; include create")
	}
	slices.Sort(o.ops)
	for _, f := range list(*compare) {
		switch f {
		case "floor":
			o.floor = true
		case "pgbench":
			o.pgbench = true
		default:
			return o, fmt.Errorf("-compare: %q is not floor or pgbench", f)
		}
	}
	if o.scalePackages < 100 {
		return o, errors.New("-scale-packages must be at least 100")
	}
	for _, f := range list(*storage) {
		if f != "postgres" && f != "memory" {
			return o, fmt.Errorf("-scale-storage: %q is not postgres or memory", f)
		}
		o.scaleStorage = append(o.scaleStorage, f)
	}
	if o.mode != "path" && len(o.scaleStorage) == 0 {
		return o, errors.New("-scale-storage: name at least one store")
	}
	return o, nil
}

// list splits a comma-separated flag, dropping empty entries.
func list(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
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

func run(ctx context.Context, o options, w io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	out := &printer{w: w}
	if o.cpuprofile != "" {
		if err := os.MkdirAll(o.cpuprofile, 0o755); err != nil {
			return err
		}
	}
	if o.memprofile != "" {
		runtime.MemProfileRate = 4096
		defer func() { writeMemProfile(o.memprofile) }()
	}
	out.printf("pkgbench: %s, GOMAXPROCS %d, %d CPUs; %s per phase after %s warm-up\n",
		runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU(), o.duration, o.warmup)
	loadWarning(out, "before the run")
	var errs []error
	if o.mode != "scale" {
		errs = append(errs, runPath(ctx, o, out))
	}
	if o.mode != "path" && ctx.Err() == nil {
		errs = append(errs, runScale(ctx, o, out))
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		errs = append(errs, fmt.Errorf("stopped after -timeout %s", o.timeout))
	}
	return errors.Join(append(errs, out.err)...)
}

// writeMemProfile writes the allocation profile so far to path; a failure
// is reported, not fatal (the figures are printed already).
func writeMemProfile(path string) {
	f, err := os.Create(path)
	if err == nil {
		err = pprof.Lookup("allocs").WriteTo(f, 0)
		err = errors.Join(err, f.Close())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pkgbench: memory profile:", err)
	}
}

// phaseErrors reports the failed requests of measured phases.
func phaseErrors(what string, s stats) error {
	if s.errors == 0 {
		return nil
	}
	return fmt.Errorf("%s: %d of %d requests failed, first: %s", what, s.errors, s.errors+s.ops, s.firstError)
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

// ms formats a duration in milliseconds with three decimals.
func ms(d time.Duration) string { return loadstat.Millis(d, 3) }

// pmServer is the PM under test.
type pmServer struct {
	addr string
	cfg  config.Config
	pm   *inproc.PM
}

// poolSize is the size of PM's pgx pool, which the floor's matches.
func (p *pmServer) poolSize() int32 {
	if p.cfg.Storage.MaxConns > 0 {
		return int32(p.cfg.Storage.MaxConns)
	}
	return postgres.DefaultMaxConns()
}

// stop stops PM and waits for it.
func (p *pmServer) stop() error {
	err := p.pm.Stop()
	if err != nil && !errors.Is(err, inproc.ErrNotStopped) {
		return fmt.Errorf("PM stopped with: %w", err)
	}
	return err
}

// startPM starts PM in-process with storage ("postgres" on url, or
// "memory"), configured from the environment with the benchmark's fixed
// settings on top. It runs until stop, also after ctx ends, so that it
// stops before the database is dropped.
func startPM(ctx context.Context, storage, url string) (*pmServer, error) {
	fixed := map[string]string{
		"STORAGE_TYPE": storage,
		"DATABASE_URL": url,
		"SERVER_HOST":  "127.0.0.1",
		"SERVER_PORT":  "0",
		// No second listener; with metrics enabled (PM's default) the
		// metrics interceptor still runs and /metrics is on the API port.
		"METRICS_PORT": "0",
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

// describe says how PM is configured where it matters for speed.
func (p *pmServer) describe() string {
	s := fmt.Sprintf("storage %s", p.cfg.Storage.Type)
	if p.cfg.Storage.Type == "postgres" {
		s += fmt.Sprintf(", pool %d", p.poolSize())
	}
	return s + fmt.Sprintf(", metrics %t, log %s %s", p.cfg.Metrics.Enabled, p.cfg.Log.Format, p.cfg.Log.Level)
}
