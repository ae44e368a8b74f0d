// Command deploycore measures what PM's deployment core costs as the number
// of deployments grows: create throughput, the CRM calls and CPU of an idle
// PM, its memory, the latency of a runtime view, and how fast a cluster that
// lost every unit is whole again.
//
// One run per deployment count, each from scratch: a scratch Postgres
// database, simulated clusters in this process (so their calls can be
// counted and their units removed), and PM built from -pm-src and started as
// its own process (so its CPU and memory are its own). Everything listens on
// loopback; every phase is bounded and the run stops by itself.
//
//	go run ./bench/deploycore                              # N = 100, 1000, 10000 over 100 clusters
//	go run ./bench/deploycore -n 200,2000 -clusters 10 -interval 5s -pm-src /tmp/pm-base
//
// Figures are reported, never asserted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	counts      []int
	clusters    int
	perDep      int
	clients     int
	idle        time.Duration
	interval    time.Duration
	queries     int
	heal        bool
	healWait    time.Duration
	pmSrc       string
	databaseURL string
	timeout     time.Duration
	keepLogs    bool
	logLevel    string
	warmup      int
}

func main() {
	o, err := parse(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploycore:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "deploycore:", err)
		os.Exit(1)
	}
}

func parse(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("deploycore", flag.ContinueOnError)
	counts := fs.String("n", "100,1000,10000", "deployment counts, one run each")
	fs.IntVar(&o.clusters, "clusters", 100, "simulated clusters")
	fs.IntVar(&o.perDep, "per-deployment", 2, "clusters each deployment targets")
	fs.IntVar(&o.clients, "clients", 16, "concurrent clients creating deployments")
	fs.DurationVar(&o.idle, "idle", 90*time.Second, "idle window over which CPU and CRM calls are measured")
	fs.DurationVar(&o.interval, "interval", 0, "RECONCILE_INTERVAL and DEPLOY_STATUS_POLL_INTERVAL for PM (0: PM's defaults)")
	fs.IntVar(&o.queries, "queries", 200, "GET /api/v1/class-runtimes?limit=20 requests for the latency figure")
	fs.BoolVar(&o.heal, "heal", true, "remove every unit of one cluster and count the passes until it is whole")
	fs.DurationVar(&o.healWait, "heal-wait", 0, "how long to wait for the cluster to be whole (0: 4 intervals)")
	fs.StringVar(&o.pmSrc, "pm-src", ".", "module directory to build cmd/pm from (e.g. an older checkout, for before/after)")
	fs.StringVar(&o.databaseURL, "database-url", envOr("PM_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"),
		"admin DSN of the Postgres server (a scratch database is created next to it)")
	fs.DurationVar(&o.timeout, "timeout", 45*time.Minute, "bound on the whole run")
	fs.BoolVar(&o.keepLogs, "keep-logs", false, "keep PM's log file")
	fs.StringVar(&o.logLevel, "log-level", "warn", "PM's LOG_LEVEL")
	fs.IntVar(&o.warmup, "warmup", 64, "deployments created and deleted before the measured creates (0: none)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	for part := range strings.SplitSeq(*counts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n < 1 {
			return o, fmt.Errorf("-n: %q is not a positive count", part)
		}
		o.counts = append(o.counts, n)
	}
	switch {
	case o.clusters < 1 || o.perDep < 1 || o.perDep > o.clusters:
		return o, errors.New("-clusters must be ≥ 1 and -per-deployment in [1, clusters]")
	case o.clients < 1 || o.queries < 1:
		return o, errors.New("-clients and -queries must be ≥ 1")
	case o.idle < 10*time.Second:
		return o, errors.New("-idle must be at least 10s")
	}
	return o, nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, o options) error {
	dir, err := os.MkdirTemp("", "deploycore-")
	if err != nil {
		return err
	}
	defer func() {
		if !o.keepLogs {
			_ = os.RemoveAll(dir)
		}
	}()
	bin, err := buildPM(ctx, o.pmSrc, dir)
	if err != nil {
		return err
	}
	logf("load average before the runs: %s", loadAverage())
	var results []result
	for _, n := range o.counts {
		r, err := runOne(ctx, o, bin, dir, n)
		if err != nil {
			return fmt.Errorf("run with %d deployments: %w", n, err)
		}
		results = append(results, r)
		printTable(os.Stdout, o, results)
	}
	return nil
}
