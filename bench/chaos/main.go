// Command chaos checks that PM keeps every acknowledged write and leaks no
// runtime while it is killed at random moments and its database restarts.
//
// It builds pm and crmsim into a temp dir, creates a scratch database, starts
// one crmsim process serving N simulated clusters and 1-2 PM processes on
// that database (all on loopback), runs a bounded workload of deployment
// creates, updates and deletes against random live PMs while it kill -9s
// PMs (and restarts them) and cuts their database once, then waits until PM
// and the clusters agree (every acknowledged spec is the one PM stores and
// the one its clusters run) and prints one line:
//
//	faults=<n> deploys=<n> lost_writes=<n> orphans=<n> converge_s=<x>
//
// It exits non-zero when a write was lost, a runtime leaked, or convergence
// timed out.
//
//	go run ./bench/chaos                                                  # 2 PMs, 3 clusters, 40 deploys, 30s, 4 kills
//	go run ./bench/chaos -pms 2 -clusters 2 -deploys 12 -duration 10s -kills 2   # CI size
//	go run ./bench/chaos -deploys 200 -duration 60s -kills 8
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/oaas/pm/bench/internal/scratchdb"
)

// options are the command-line flags.
type options struct {
	pms             int
	clusters        int
	deploys         int
	duration        time.Duration
	kills           int
	restartPostgres bool
	dbOutage        bool
	dbOutageFor     time.Duration
	seed            uint64
	convergeTimeout time.Duration
	databaseURL     string
	keepLogs        bool
	latency         time.Duration
	failRate        float64
	deleteShare     float64
	updateShare     float64
	lease           time.Duration
	reconcile       time.Duration
	requestTimeout  time.Duration
	verbose         bool
	selfCheck       bool
	crmsimFlags     string
}

func parseFlags(args []string, out io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.IntVar(&o.pms, "pms", 2, "PM processes on the one database (1 or 2)")
	fs.IntVar(&o.clusters, "clusters", 3, "simulated clusters, served by one crmsim process")
	fs.IntVar(&o.deploys, "deploys", 40, "deployment creates the workload sends")
	fs.DurationVar(&o.duration, "duration", 30*time.Second, "length of the workload; every fault happens within it")
	fs.IntVar(&o.kills, "kills", 4, "kill -9s of a random PM (each restarted after a short pause)")
	fs.BoolVar(&o.dbOutage, "db-outage", true, "take the database away from every PM once mid-run: a loopback TCP proxy between PMs and PostgreSQL drops their connections and refuses new ones for -db-outage-for (the server itself is untouched)")
	fs.DurationVar(&o.dbOutageFor, "db-outage-for", 3*time.Second, "how long the database outage lasts")
	fs.BoolVar(&o.restartPostgres, "restart-postgres", false, "also restart the local PostgreSQL service once mid-run (pg_ctlcluster; needs root or the postgres user; never use it on a shared server)")
	fs.Uint64Var(&o.seed, "seed", 0, "seed of every random choice (0: random)")
	fs.DurationVar(&o.convergeTimeout, "converge-timeout", 60*time.Second, "how long to wait for PM and the clusters to agree")
	fs.StringVar(&o.databaseURL, "database-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
		"admin DSN; the user needs CREATEDB (a scratch database is made next to it and dropped at the end)")
	fs.BoolVar(&o.keepLogs, "keep-logs", false, "keep the temp dir with the PM and crmsim logs (kept anyway when the run fails)")
	fs.DurationVar(&o.latency, "latency", 20*time.Millisecond, "latency every simulated CRM call gets")
	fs.Float64Var(&o.failRate, "fail-rate", 0, "fraction of CRM calls failing with UNAVAILABLE (acknowledged deploys may then be partial)")
	fs.Float64Var(&o.deleteShare, "delete-share", 0.35, "share of created deployments the workload deletes again")
	fs.Float64Var(&o.updateShare, "update-share", 0.5, "share of created deployments the workload updates (once or twice: a new spec, sometimes other clusters; by POST or PUT) before any delete")
	fs.DurationVar(&o.lease, "lease", 2*time.Second, "OPERATION_LEASE of the PMs")
	fs.DurationVar(&o.reconcile, "reconcile", 2*time.Second, "RECONCILE_INTERVAL of the PMs")
	fs.DurationVar(&o.requestTimeout, "request-timeout", 8*time.Second, "deadline of every request the workload sends")
	fs.BoolVar(&o.verbose, "v", false, "log every request and every convergence check")
	fs.StringVar(&o.crmsimFlags, "crmsim-flags", "", "more crmsim flags, space-separated (e.g. \"--fail-first-deploys 3 --fail-deploy-after-apply\"); "+
		"acknowledged deploys may then be partial")
	fs.BoolVar(&o.selfCheck, "self-check", false, "after the workload, plant an orphan runtime and delete an acknowledged deployment "+
		"behind PM's back: the run must then fail (checks the checks; pair with a short -converge-timeout)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var errs []string
	if o.pms < 1 || o.pms > 8 {
		errs = append(errs, "-pms must be in [1,8]")
	}
	if o.clusters < 1 || o.clusters > 32 {
		errs = append(errs, "-clusters must be in [1,32]")
	}
	if o.deploys < 1 || o.deploys > 10000 {
		errs = append(errs, "-deploys must be in [1,10000]")
	}
	if o.duration < time.Second || o.duration > 30*time.Minute {
		errs = append(errs, "-duration must be in [1s,30m]")
	}
	if o.kills < 0 || o.kills > 1000 {
		errs = append(errs, "-kills must be in [0,1000]")
	}
	if o.convergeTimeout <= 0 || o.convergeTimeout > time.Hour {
		errs = append(errs, "-converge-timeout must be in (0,1h]")
	}
	if o.failRate < 0 || o.failRate > 0.5 {
		errs = append(errs, "-fail-rate must be in [0,0.5]")
	}
	if o.updateShare < 0 || o.updateShare > 1 {
		errs = append(errs, "-update-share must be in [0,1]")
	}
	if o.deleteShare < 0 || o.deleteShare > 1 {
		errs = append(errs, "-delete-share must be in [0,1]")
	}
	if o.lease < time.Second || o.reconcile < time.Second {
		errs = append(errs, "-lease and -reconcile must be at least 1s (PM takes whole seconds)")
	}
	if o.requestTimeout <= 0 {
		errs = append(errs, "-request-timeout must be positive")
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "; "))
	}
	if o.seed == 0 {
		o.seed = rand.Uint64()
	}
	return o, nil
}

func main() {
	opts, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	res, err := run(ctx, opts)
	interrupted := ctx.Err() != nil
	stop()
	switch {
	case interrupted:
		fmt.Fprintln(os.Stderr, "chaos: interrupted; everything it started is stopped")
		os.Exit(130)
	case err != nil:
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
	fmt.Println(res.line())
	if !res.ok() {
		os.Exit(1)
	}
}

// result is what the final line reports.
type result struct {
	faults, deploys, lost, orphans int
	converged                      bool
	convergeS                      float64
}

func (r result) line() string {
	conv := fmt.Sprintf("%.2f", r.convergeS)
	if !r.converged {
		conv = "timeout"
	}
	return fmt.Sprintf("faults=%d deploys=%d lost_writes=%d orphans=%d converge_s=%s",
		r.faults, r.deploys, r.lost, r.orphans, conv)
}

func (r result) ok() bool { return r.converged && r.lost == 0 && r.orphans == 0 }

// run sets everything up, runs the workload and the faults, waits for
// convergence and tears everything down again.
func run(ctx context.Context, o *options) (res result, err error) {
	rng := rand.New(rand.NewPCG(o.seed, o.seed^0x9e3779b97f4a7c15))
	logf("seed %d: %d PMs, %d clusters, %d deploys over %s, %d kills, database outage %v, restart postgres %v",
		o.seed, o.pms, o.clusters, o.deploys, o.duration, o.kills, o.dbOutage, o.restartPostgres)

	dir, err := os.MkdirTemp("", "pmchaos-")
	if err != nil {
		return res, err
	}
	keep := o.keepLogs
	defer func() {
		if keep || err != nil || !res.ok() {
			if !keep { // the logs are what matters after a failed run
				_ = os.Remove(filepath.Join(dir, "pm"))     // best effort
				_ = os.Remove(filepath.Join(dir, "crmsim")) // best effort
			}
			logf("logs kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir) // a temp dir; nothing to do when it fails
	}()

	bins, err := build(ctx, dir)
	if err != nil {
		return res, err
	}
	db, err := scratchdb.Create(ctx, o.databaseURL, "pmchaos_")
	if err != nil {
		return res, err
	}
	// Postgres may just have restarted; the drop waits for it, briefly.
	db.DropTimeout = 30 * time.Second
	logf("scratch database %s", db.Name)
	defer func() {
		if derr := db.Close(); derr != nil {
			logf("%v", derr)
		}
	}()
	if o.restartPostgres {
		if _, perr := pgRestartCommand(); perr != nil {
			return res, perr
		}
	}

	procs := newSupervisor(dir)
	defer procs.stopAll()

	clusters, err := procs.startCRMSim(ctx, bins.crmsim, o)
	if err != nil {
		return res, err
	}
	proxy, proxied, err := startDBProxy(ctx, db.URL)
	if err != nil {
		return res, err
	}
	defer proxy.close()
	env := pmEnv(o, proxied, clusters)
	pms, err := procs.startPMs(ctx, bins.pm, o.pms, env)
	if err != nil {
		return res, err
	}
	api := newClient(pms, o.requestTimeout, o.verbose)
	if err := api.createPackage(ctx); err != nil {
		return res, err
	}

	names := make([]string, len(clusters))
	for i, c := range clusters {
		names[i] = c.name
	}
	wl := newWorkload(api, names, o, rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64())))
	fl := newFaults(pms, o, rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64())))
	fl.proxy = proxy

	start := time.Now()
	faultsDone := make(chan time.Time, 1)
	go func() { faultsDone <- fl.run(ctx, start) }()
	wl.run(ctx, start)
	workloadEnd := time.Now()
	faultsEnd := <-faultsDone
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	logf("workload done in %.1fs: %s", workloadEnd.Sub(start).Seconds(), wl.summary())
	logf("faults done: %s", fl.summary())

	from := faultsEnd
	if workloadEnd.After(from) {
		from = workloadEnd
	}
	v := newVerifier(api, clusters, wl.ledger(), o)
	if o.selfCheck {
		if err := selfCheck(ctx, v, db); err != nil {
			return res, err
		}
	}
	out := v.converge(ctx, from, o.convergeTimeout)
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	res = result{
		faults:    fl.count(),
		deploys:   wl.acknowledgedCreates(),
		lost:      out.lost,
		orphans:   out.orphans,
		converged: out.converged,
		convergeS: out.after.Seconds(),
	}
	if u := procs.unexpectedExits(); u > 0 {
		logf("note: PM processes exited on their own %d time(s); see the pm-*.log files", u)
	}
	for _, p := range head(out.problems, 40) {
		logf("problem: %s", p)
	}
	if len(out.problems) > 40 {
		logf("... and %d more problems", len(out.problems)-40)
	}
	return res, nil
}

// logf writes a progress line to stderr; stdout carries only the result.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "chaos %s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}
