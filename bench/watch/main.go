// Command watch measures PM's watch streams (issue 14): how long a
// committed change takes to reach a watcher, what an idle watcher costs,
// whether writers keep their speed while a watcher falls behind, and what
// the change feed's triggers cost Postgres writes.
//
//	go run ./bench/watch                          # memory and postgres, every phase (~4 min)
//	go run ./bench/watch -storage memory -idle 10s -events 300
//
// PM runs as child processes of this one (the same binary, re-executed),
// so that its memory and CPU are read from /proc without the load
// client's; everything listens on loopback and every phase is bounded.
//
// Phases, per storage:
//   - latency: one writer creates -events packages at -rate per second
//     through REST; 1 and then 100 watchers (Connect over h2c) each time
//     the ADDED event from the package's updated_at (stamped by the store
//     just before its write commits) to its arrival. With Postgres, also
//     across replicas: the watchers on a second PM on the same database.
//   - idle: -watchers streams with nothing happening (heartbeats every
//     15 s): PM's RSS growth and CPU per minute, per watcher.
//   - writers: -writers closed-loop creators for -write-time, without
//     watchers, with 10 reading ones, and with 9 reading and one that
//     stopped reading: writes per second, and whether the stopped one
//     was cut off (and the reading ones were not).
//   - triggers (Postgres): the same writers on a database whose change
//     feed triggers are dropped, against one that has them.
//
// Needs PostgreSQL for the postgres runs (-database-url; the user must be
// allowed CREATE DATABASE). The figures are reported, not asserted.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"connectrpc.com/connect"

	"github.com/oaas/pm/bench/internal/loadstat"
	"github.com/oaas/pm/bench/internal/scratchdb"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/app"
	"github.com/oaas/pm/internal/config"
)

const childEnv = "WATCHBENCH_CHILD"

func main() {
	if os.Getenv(childEnv) == "1" {
		if err := child(); err != nil {
			fmt.Fprintln(os.Stderr, "watch bench child:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "watch bench:", err)
		os.Exit(1)
	}
}

// child runs one PM configured from the environment and prints its address.
func child() error {
	cfg, err := config.FromEnv()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	a, err := app.New(ctx, cfg, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return err
	}
	fmt.Println("ADDR", a.Addr())
	// The parent closing our stdin also ends us.
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); stop() }()
	return a.Run(ctx)
}

type options struct {
	storages   []string
	dbURL      string
	events     int
	rate       int
	watchers   int
	idle       time.Duration
	writers    int
	writeTime  time.Duration
	skipPhases map[string]bool
}

func run() error {
	var o options
	storages := flag.String("storage", "memory,postgres", "stores to run: memory, postgres")
	flag.StringVar(&o.dbURL, "database-url", "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable", "admin DSN of a PostgreSQL server (scratch databases are made and dropped there)")
	flag.IntVar(&o.events, "events", 1000, "changes per latency run")
	flag.IntVar(&o.rate, "rate", 200, "changes per second in the latency runs")
	flag.IntVar(&o.watchers, "watchers", 1000, "idle watchers")
	flag.DurationVar(&o.idle, "idle", time.Minute, "how long the idle watchers are measured")
	flag.IntVar(&o.writers, "writers", 8, "concurrent writers in the writer phases")
	flag.DurationVar(&o.writeTime, "write-time", 5*time.Second, "duration of each writer run")
	skip := flag.String("skip", "", "phases to skip: latency, idle, writers, triggers")
	flag.Parse()
	o.storages = strings.Split(*storages, ",")
	o.skipPhases = map[string]bool{}
	for _, s := range strings.Split(*skip, ",") {
		o.skipPhases[strings.TrimSpace(s)] = true
	}
	if o.events < 1 || o.rate < 1 || o.watchers < 1 || o.writers < 1 || o.idle > 10*time.Minute || o.writeTime > time.Minute {
		return errors.New("-events, -rate, -watchers and -writers must be positive; -idle at most 10m, -write-time at most 1m")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	fmt.Printf("load average at start: %s\n", strings.Join(loadstat.LoadAverage(), " "))
	for _, st := range o.storages {
		if err := runStorage(ctx, o, strings.TrimSpace(st)); err != nil {
			return fmt.Errorf("%s: %w", st, err)
		}
	}
	return nil
}

func runStorage(ctx context.Context, o options, storage string) error {
	fmt.Printf("\n## %s\n\n", storage)
	env := []string{"STORAGE_TYPE=" + storage}
	var db *scratchdb.DB
	if storage == "postgres" {
		var err error
		if db, err = scratchdb.Create(ctx, o.dbURL, "watchbench_"); err != nil {
			return err
		}
		defer func() { _ = db.Close() }()
		env = append(env, "DATABASE_URL="+db.URL)
	} else if storage != "memory" {
		return fmt.Errorf("unknown storage %q", storage)
	}
	a, err := startChild(ctx, env)
	if err != nil {
		return err
	}
	defer a.stop()
	if !o.skipPhases["latency"] {
		fmt.Println("| watchers on | watchers | events | p50 | p90 | p99 | max |")
		fmt.Println("|---|---|---|---|---|---|---|")
		for _, n := range []int{1, 100} {
			if err := latency(ctx, o, a, a, "same PM", n); err != nil {
				return err
			}
		}
		if db != nil {
			b, err := startChild(ctx, env)
			if err != nil {
				return err
			}
			for _, n := range []int{1, 100} {
				if err := latency(ctx, o, a, b, "other replica", n); err != nil {
					b.stop()
					return err
				}
			}
			b.stop()
		}
	}
	if !o.skipPhases["idle"] {
		// A fresh PM, so the latency runs' garbage does not hide the growth.
		fresh, err := startChild(ctx, env)
		if err != nil {
			return err
		}
		err = idle(ctx, o, fresh)
		fresh.stop()
		if err != nil {
			return err
		}
	}
	if !o.skipPhases["writers"] {
		if err := writers(ctx, o, a); err != nil {
			return err
		}
	}
	if db != nil && !o.skipPhases["triggers"] {
		if err := triggers(ctx, o); err != nil {
			return err
		}
	}
	return nil
}

// proc is a PM child process.
type proc struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	base  string
	h2c   *http.Client
	rest  *http.Client
}

func startChild(ctx context.Context, env []string) (*proc, error) {
	cmd := exec.CommandContext(ctx, os.Args[0]) //nolint:gosec // this very binary
	cmd.Env = append(os.Environ(), childEnv+"=1", "SERVER_HOST=127.0.0.1", "SERVER_PORT=0", "METRICS_ENABLED=false",
		"LOG_LEVEL=warn", "SERVER_MAX_CONNECTIONS=4096", "DATABASE_MAX_CONNS=16")
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "ADDR ")
	if err != nil || !ok {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("PM did not start (%q): %w", line, err)
	}
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	return &proc{
		cmd: cmd, stdin: stdin, base: "http://" + addr,
		h2c:  &http.Client{Transport: &http.Transport{Protocols: &protocols}},
		rest: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second},
	}, nil
}

func (p *proc) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_ = p.stdin.Close()
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// usage reads the child's RSS and CPU time from /proc.
func (p *proc) usage() (rss int64, cpu time.Duration, err error) {
	pid := p.cmd.Process.Pid
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			rss = kb << 10
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// Fields after the command name (which may hold spaces): utime and
	// stime are the 12th and 13th after it, in clock ticks (100 Hz).
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+2:])
	f := strings.Fields(rest)
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return rss, time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// create makes one package through REST.
func (p *proc) create(ctx context.Context, name string) error {
	body := `{"name":"` + name + `","functions":[{"key":"f","provision_config":{"container_image":"img:1"}}],"classes":[{"key":"C","function_bindings":[{"name":"f","function_key":"f"}]}]}`
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.base+"/api/v1/packages", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := p.rest.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, res.Body)
	_ = res.Body.Close()
	if res.StatusCode != http.StatusCreated {
		return fmt.Errorf("create %s: status %d", name, res.StatusCode)
	}
	return nil
}

// watcher is one open WatchPackages stream past its snapshot.
type watcher struct {
	stream *connect.ServerStreamForClient[pmv1.PackageEvent]
	cancel context.CancelFunc
}

// openWatcher opens a watch of the packages (key: of one package) that
// starts now: resumed from the current position rather than from a
// snapshot, whose cost (every package stored) is not what is measured.
func openWatcher(ctx context.Context, p *proc, key string) (*watcher, error) {
	c := pmv1connect.NewWatchServiceClient(p.h2c, p.base)
	open := func(req *pmv1.WatchRequest) (*watcher, string, error) {
		ctx, cancel := context.WithCancel(ctx)
		stream, err := c.WatchPackages(ctx, req)
		if err != nil {
			cancel()
			return nil, "", err
		}
		for stream.Receive() {
			if t := stream.Msg().GetType(); t == pmv1.EventType_EVENT_TYPE_SYNCED || t == pmv1.EventType_EVENT_TYPE_HEARTBEAT {
				return &watcher{stream: stream, cancel: cancel}, stream.Msg().GetCursor(), nil
			}
		}
		cancel()
		return nil, "", fmt.Errorf("watch ended before it started: %w", stream.Err())
	}
	// A watch of a package that does not exist has an empty snapshot.
	probe, cursor, err := open(&pmv1.WatchRequest{Key: "no-such-package"})
	if err != nil {
		return nil, err
	}
	probe.close()
	w, _, err := open(&pmv1.WatchRequest{Key: key, ResumeFrom: cursor})
	return w, err
}

func (w *watcher) close() {
	w.cancel()
	_ = w.stream.Close()
}

var runSeq atomic.Int64

// latency writes through a and times the events at n watchers on b.
func latency(ctx context.Context, o options, a, b *proc, where string, n int) error {
	ws := make([]*watcher, n)
	for i := range ws {
		var err error
		if ws[i], err = openWatcher(ctx, b, ""); err != nil {
			return err
		}
	}
	prefix := fmt.Sprintf("lat%d-", runSeq.Add(1))
	var mu sync.Mutex
	var lat []time.Duration
	var wg sync.WaitGroup
	for _, w := range ws {
		wg.Go(func() {
			got := 0
			for got < o.events && w.stream.Receive() {
				ev := w.stream.Msg()
				if ev.GetType() != pmv1.EventType_EVENT_TYPE_ADDED || !strings.HasPrefix(ev.GetPackage().GetName(), prefix) {
					continue
				}
				d := time.Since(ev.GetPackage().GetMetadata().GetUpdatedAt().AsTime())
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
				got++
			}
		})
	}
	tick := time.NewTicker(time.Second / time.Duration(o.rate))
	for i := range o.events {
		<-tick.C
		if err := a.create(ctx, fmt.Sprintf("%s%05d", prefix, i)); err != nil {
			tick.Stop()
			return err
		}
	}
	tick.Stop()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
	}
	for _, w := range ws {
		w.close()
	}
	<-done
	s := loadstat.Summarize(lat)
	fmt.Printf("| %s | %d | %d | %s | %s | %s | %s |\n", where, n, s.N,
		loadstat.Millis(s.P50, 2), loadstat.Millis(s.P90, 2), loadstat.Millis(s.P99, 2), loadstat.Millis(s.Max, 1))
	if s.N != n*o.events {
		return fmt.Errorf("%d of %d events arrived", s.N, n*o.events)
	}
	return nil
}

// idle opens o.watchers quiet streams and measures what they cost PM.
func idle(ctx context.Context, o options, p *proc) error {
	time.Sleep(2 * time.Second)
	rss0, _, err := p.usage()
	if err != nil {
		return err
	}
	ws := make([]*watcher, o.watchers)
	for i := range ws {
		if ws[i], err = openWatcher(ctx, p, fmt.Sprintf("idle-%d", i)); err != nil {
			return err
		}
	}
	// Drain heartbeats so flow control never holds anything back.
	for _, w := range ws {
		go func() {
			for w.stream.Receive() {
			}
		}()
	}
	time.Sleep(2 * time.Second)
	rss1, cpu1, err := p.usage()
	if err != nil {
		return err
	}
	select {
	case <-time.After(o.idle):
	case <-ctx.Done():
		return ctx.Err()
	}
	rss2, cpu2, err := p.usage()
	if err != nil {
		return err
	}
	for _, w := range ws {
		w.close()
	}
	perMin := float64(cpu2-cpu1) / o.idle.Minutes()
	grow := max(rss1, rss2) - rss0
	fmt.Printf("\n%d idle watchers over %s: PM RSS %.1f MB → %.1f MB (%.1f KB per watcher); CPU %.0f ms per minute in all (%.3f ms per watcher per minute)\n",
		o.watchers, o.idle, float64(rss0)/(1<<20), float64(max(rss1, rss2))/(1<<20), float64(grow)/1024/float64(o.watchers),
		perMin/float64(time.Millisecond), perMin/float64(time.Millisecond)/float64(o.watchers))
	return nil
}

// writeLoad runs o.writers closed-loop creators for o.writeTime and
// returns creates per second.
func writeLoad(ctx context.Context, o options, p *proc) (float64, error) {
	prefix := fmt.Sprintf("w%d-", runSeq.Add(1))
	ctx, cancel := context.WithTimeout(ctx, o.writeTime)
	defer cancel()
	var n atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	begin := time.Now()
	for w := range o.writers {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				if err := p.create(ctx, fmt.Sprintf("%s%d-%d", prefix, w, i)); err != nil {
					if ctx.Err() == nil {
						firstErr.CompareAndSwap(nil, err)
					}
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(n.Load()) / time.Since(begin).Seconds(), nil
}

// writers compares write speed without watchers, with 100 reading ones,
// and with 99 reading and one that stopped reading.
func writers(ctx context.Context, o options, p *proc) error {
	base, err := writeLoad(ctx, o, p)
	if err != nil {
		return err
	}
	const fanout = 10
	var cut atomic.Int64 // reading watchers cut off (they could not keep up either)
	ws := make([]*watcher, fanout)
	for i := range ws {
		if ws[i], err = openWatcher(ctx, p, ""); err != nil {
			return err
		}
		go func(w *watcher) {
			for w.stream.Receive() {
			}
			if connect.CodeOf(w.stream.Err()) == connect.CodeResourceExhausted {
				cut.Add(1)
			}
		}(ws[i])
	}
	reading, err := writeLoad(ctx, o, p)
	if err != nil {
		return err
	}
	cutReading := cut.Load()
	ws[fanout-1].close()
	ws = ws[:fanout-1]
	// The stalled watcher's connection buffers little (64 KiB per stream),
	// so PM's own buffer is what fills.
	small := *p
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	small.h2c = &http.Client{Transport: &http.Transport{Protocols: &protocols,
		HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 64 << 10}}}
	stalled, err := openWatcher(ctx, &small, "")
	if err != nil {
		return err
	}
	with, err := writeLoad(ctx, o, p)
	if err != nil {
		return err
	}
	cutStalled := cut.Load() - cutReading
	// The stalled one reads now: whatever is buffered, then how it ended.
	var end error
	read := 0
	deadline := time.AfterFunc(10*time.Second, stalled.cancel)
	for stalled.stream.Receive() {
		read++
		if read > 1_000_000 {
			break
		}
	}
	deadline.Stop()
	end = stalled.stream.Err()
	resume := stalled.stream.ResponseTrailer().Get("Watch-Resume-From")
	for _, w := range ws {
		w.close()
	}
	stalled.close()
	fmt.Printf("\nwriters (%d, closed loop, %s each): %.0f creates/s without watchers; %.0f/s with %d reading watchers (%d of them cut off); %.0f/s with %d reading (%d cut off) and one that stopped reading (%.0f%% of the all-reading run)\n",
		o.writers, o.writeTime, base, reading, fanout, cutReading, with, fanout-1, cutStalled, 100*with/reading)
	if connect.CodeOf(end) == connect.CodeResourceExhausted {
		fmt.Printf("the stopped watcher was cut off (%d events were still on their way to it) with resume cursor %q\n", read, resume)
	} else {
		fmt.Printf("the stopped watcher was not cut off (%d events buffered on the way; %v): flow control and PM's buffer held everything\n", read, end)
	}
	return nil
}

// triggers measures writes on a database without the change feed's
// triggers against one with them.
func triggers(ctx context.Context, o options) error {
	rates := map[bool]float64{}
	for _, drop := range []bool{true, false} {
		db, err := scratchdb.Create(ctx, o.dbURL, "watchbench_")
		if err != nil {
			return err
		}
		p, err := startChild(ctx, []string{"STORAGE_TYPE=postgres", "DATABASE_URL=" + db.URL})
		if err != nil {
			_ = db.Close()
			return err
		}
		if drop {
			for _, tbl := range []string{"packages", "deployments", "rollouts", "operations"} {
				if err := db.Exec(ctx, "DROP TRIGGER IF EXISTS change_feed ON "+tbl+"; DROP TRIGGER IF EXISTS change_feed_update ON "+tbl); err != nil {
					p.stop()
					_ = db.Close()
					return err
				}
			}
		}
		rates[drop], err = writeLoad(ctx, o, p)
		p.stop()
		_ = db.Close()
		if err != nil {
			return err
		}
	}
	fmt.Printf("\nchange feed triggers (%d writers, %s each): %.0f creates/s without them, %.0f/s with them (%.0f%%)\n",
		o.writers, o.writeTime, rates[true], rates[false], 100*rates[false]/rates[true])
	return nil
}
