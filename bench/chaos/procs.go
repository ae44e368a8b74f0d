package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/oaas/pm/bench/internal/pace"
)

// binaries are the freshly built commands.
type binaries struct{ pm, crmsim string }

// build compiles pm and crmsim from this module into dir.
func build(ctx context.Context, dir string) (binaries, error) {
	b := binaries{pm: filepath.Join(dir, "pm"), crmsim: filepath.Join(dir, "crmsim")}
	logf("building pm and crmsim into %s", dir)
	for out, pkg := range map[string]string{b.pm: "github.com/oaas/pm/cmd/pm", b.crmsim: "github.com/oaas/pm/cmd/crmsim"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
		cmd.Env = os.Environ()
		if msg, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go build %s (run chaos inside the module): %w\n%s", pkg, err, msg)
		}
	}
	return b, nil
}

// freePorts returns n distinct loopback ports nobody listens on right now.
func freePorts(ctx context.Context, n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			_ = l.Close() // only reserved the port
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		var lc net.ListenConfig
		l, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free loopback port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// cluster is one simulated cluster.
type cluster struct {
	name, addr string
}

func (c cluster) url() string { return "http://" + c.addr }

// supervisor owns every process the harness starts, each in its own process
// group, and kills them all on stopAll.
type supervisor struct {
	dir string

	mu     sync.Mutex
	procs  map[int]*exec.Cmd // pid → command, while running
	slots  []*pmSlot
	cancel context.CancelFunc
	wg     sync.WaitGroup

	unexpected atomic.Int64
}

func newSupervisor(dir string) *supervisor {
	return &supervisor{dir: dir, procs: map[int]*exec.Cmd{}}
}

// spawn starts a command in its own process group with its output appended
// to logName; done is closed once it has exited and been reaped.
func (s *supervisor) spawn(bin string, args, env []string, logName string) (cmd *exec.Cmd, done chan struct{}, err error) {
	f, err := os.OpenFile(filepath.Join(s.dir, logName), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, err
	}
	_, _ = fmt.Fprintf(f, "=== chaos: starting %s at %s\n", filepath.Base(bin), time.Now().Format(time.RFC3339Nano))
	// Not CommandContext: the supervisor kills the whole group itself.
	cmd = exec.Command(bin, args...) //nolint:noctx // lifetime managed by stopAll and kill
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = procAttr()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.procs == nil {
		_ = f.Close()
		return nil, nil, errors.New("shutting down")
	}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	pid := cmd.Process.Pid
	s.procs[pid] = cmd
	done = make(chan struct{})
	go func() {
		_ = cmd.Wait() // the exit is what matters, not its status
		_ = f.Close()
		s.mu.Lock()
		if s.procs != nil {
			delete(s.procs, pid)
		}
		s.mu.Unlock()
		close(done)
	}()
	return cmd, done, nil
}

// killGroup sends SIGKILL to a process's whole group.
func killGroup(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) // gone already is fine
}

// stopAll stops the PM keepers and kills every process still running.
func (s *supervisor) stopAll() {
	s.mu.Lock()
	cancel := s.cancel
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	s.mu.Lock()
	for _, cmd := range s.procs {
		killGroup(cmd)
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		logf("some PM keeper did not stop in 10s")
	}
	s.mu.Lock()
	for _, cmd := range s.procs {
		killGroup(cmd)
	}
	s.procs = nil
	s.mu.Unlock()
}

func (s *supervisor) unexpectedExits() int64 { return s.unexpected.Load() }

// startCRMSim starts one crmsim process serving o.clusters clusters c1..cN
// and waits until each listens.
func (s *supervisor) startCRMSim(ctx context.Context, bin string, o *options) ([]cluster, error) {
	ports, err := freePorts(ctx, o.clusters)
	if err != nil {
		return nil, err
	}
	clusters := make([]cluster, o.clusters)
	args := []string{
		"--latency", o.latency.String(),
		"--fail-rate", strconv.FormatFloat(o.failRate, 'f', -1, 64),
		"--seed", strconv.FormatUint(o.seed, 10),
		"--progress-delay", "200ms", "--ready-delay", "300ms",
		"--log-level", "warn",
	}
	args = append(args, strings.Fields(o.crmsimFlags)...)
	for i, p := range ports {
		clusters[i] = cluster{name: fmt.Sprintf("c%d", i+1), addr: fmt.Sprintf("127.0.0.1:%d", p)}
		args = append(args, "--cluster", clusters[i].name+"="+clusters[i].addr)
	}
	if _, _, err := s.spawn(bin, args, os.Environ(), "crmsim.log"); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, c := range clusters {
		for {
			d := net.Dialer{Timeout: time.Second}
			conn, err := d.DialContext(ctx, "tcp", c.addr)
			if err == nil {
				_ = conn.Close()
				break
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if time.Now().After(deadline) {
				return nil, fmt.Errorf("crmsim does not listen on %s after 20s (see %s)", c.addr, filepath.Join(s.dir, "crmsim.log"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	logf("crmsim serves %d clusters (latency %s, fail rate %g %s)", len(clusters), o.latency, o.failRate, o.crmsimFlags)
	return clusters, nil
}

// pmEnv is the environment every PM runs with.
func pmEnv(o *options, dbURL string, clusters []cluster) []string {
	crms := make([]string, len(clusters))
	for i, c := range clusters {
		crms[i] = c.name + "=" + c.url()
	}
	env := []string{}
	for _, kv := range os.Environ() {
		// PM reads its whole configuration from the environment; keep only
		// what a process needs, so a developer's PM settings cannot leak in.
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "PATH", "HOME", "TMPDIR", "TZ", "GODEBUG", "GOTRACEBACK":
			env = append(env, kv)
		}
	}
	secs := func(d time.Duration) string { return strconv.Itoa(max(int(d.Round(time.Second)/time.Second), 1)) }
	return append(env,
		"SERVER_HOST=127.0.0.1",
		"STORAGE_TYPE=postgres",
		"DATABASE_URL="+dbURL,
		"CRM_CLUSTERS="+strings.Join(crms, ","),
		"CRM_DEFAULT_TIMEOUT=5",
		// A breaker opened by injected CRM faults (-fail-rate,
		// -crmsim-flags) closes again within the convergence wait.
		"CRM_CIRCUIT_BREAKER_TIMEOUT=5",
		"OPERATION_LEASE="+secs(o.lease),
		"RECONCILE_INTERVAL="+secs(o.reconcile),
		"DEPLOY_STATUS_POLL_INTERVAL=0",
		"METRICS_ENABLED=false",
		"LOG_FORMAT=json",
		"LOG_LEVEL=info",
		"SERVER_SHUTDOWN_TIMEOUT=2",
	)
}

// pmSlot is one PM replica: a port and the process currently serving it,
// restarted by its keeper whenever it dies.
type pmSlot struct {
	id   int
	port int
	s    *supervisor
	bin  string
	env  []string

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	pause    time.Duration // set by kill: how long to stay down
	killed   bool
	ready    atomic.Bool
	starts   atomic.Int64
	inflight atomic.Int64  // workload requests this slot is serving
	readyCh  chan struct{} // closed when the current process is ready
	readyAt  time.Time
	lastKill time.Time
}

func (p *pmSlot) url() string { return fmt.Sprintf("http://127.0.0.1:%d", p.port) }

func (p *pmSlot) name() string { return fmt.Sprintf("pm-%d", p.id) }

// startPMs starts n PM replicas, the first alone (it migrates the
// database), and waits until all are healthy.
func (s *supervisor) startPMs(ctx context.Context, bin string, n int, env []string) ([]*pmSlot, error) {
	ports, err := freePorts(ctx, n)
	if err != nil {
		return nil, err
	}
	kctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.mu.Lock()
	s.cancel = cancel
	s.mu.Unlock()
	slots := make([]*pmSlot, n)
	for i := range slots {
		slots[i] = &pmSlot{id: i + 1, port: ports[i], s: s, bin: bin, env: env}
		p := slots[i]
		s.wg.Go(func() { p.keep(kctx) })
		if err := p.waitReady(ctx, 60*time.Second); err != nil {
			return nil, fmt.Errorf("%s did not become healthy: %w (see %s)", p.name(), err, filepath.Join(s.dir, p.name()+".log"))
		}
	}
	s.mu.Lock()
	s.slots = slots
	s.mu.Unlock()
	logf("%d PM(s) healthy on ports %v", n, ports)
	return slots, nil
}

// waitReady waits until the slot's current (or next) process is healthy.
func (p *pmSlot) waitReady(ctx context.Context, d time.Duration) error {
	p.mu.Lock()
	if p.ready.Load() {
		p.mu.Unlock()
		return nil
	}
	if p.readyCh == nil {
		p.readyCh = make(chan struct{})
	}
	ch := p.readyCh
	p.mu.Unlock()
	return pace.WaitClosed(ctx, ch, d)
}

// keep runs the slot's PM until ctx ends, restarting it after each exit:
// after a kill by the harness once the pause is over, after an exit of its
// own (logged and counted) at once.
func (p *pmSlot) keep(ctx context.Context) {
	for ctx.Err() == nil {
		cmd, done, err := p.s.spawn(p.bin, []string{"-port", strconv.Itoa(p.port)}, p.env, p.name()+".log")
		if err != nil {
			logf("%s: %v", p.name(), err)
			if pace.Sleep(ctx, time.Second) != nil {
				return
			}
			continue
		}
		p.starts.Add(1)
		p.mu.Lock()
		p.cmd, p.done = cmd, done
		p.mu.Unlock()
		go p.watchReady(ctx, done)

		select {
		case <-done:
		case <-ctx.Done():
			killGroup(cmd)
			<-done
			return
		}
		p.ready.Store(false)
		p.mu.Lock()
		killed, pause := p.killed, p.pause
		p.killed, p.cmd, p.done = false, nil, nil
		p.mu.Unlock()
		if !killed {
			p.s.unexpected.Add(1)
			logf("%s exited on its own (%s); restarting", p.name(), cmd.ProcessState)
			pause = 500 * time.Millisecond
		}
		if pace.Sleep(ctx, pause) != nil {
			return
		}
	}
}

// watchReady polls /health until the process answers 200, then marks the
// slot ready.
func (p *pmSlot) watchReady(ctx context.Context, done <-chan struct{}) {
	hc := &http.Client{Timeout: time.Second}
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url()+"/health", nil)
		if err != nil {
			return
		}
		resp, err := hc.Do(req)
		if err != nil {
			continue
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			continue
		}
		p.mu.Lock()
		if p.done != done { // a stale watcher of a process already gone
			p.mu.Unlock()
			return
		}
		p.ready.Store(true)
		p.readyAt = time.Now()
		if p.readyCh == nil {
			p.readyCh = make(chan struct{})
		}
		close(p.readyCh)
		p.readyCh = nil
		p.mu.Unlock()
		return
	}
}

// kill sends SIGKILL to the slot's process group; the keeper restarts it
// after pause. It reports false when no process was running.
func (p *pmSlot) kill(pause time.Duration) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.killed {
		return false
	}
	p.killed, p.pause, p.lastKill = true, pause, time.Now()
	p.ready.Store(false)
	killGroup(p.cmd)
	return true
}

// running reports whether a process is up (ready or still starting) and
// not already being killed.
func (p *pmSlot) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil && !p.killed
}
