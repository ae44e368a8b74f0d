package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times; 100 on
// every Linux build that matters.
const clockTicks = 100

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s deploycore: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// buildPM compiles cmd/pm from the module in src into dir.
func buildPM(ctx context.Context, src, dir string) (string, error) {
	out := filepath.Join(dir, "pm")
	logf("building pm from %s", src)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/pm")
	cmd.Dir = src
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/pm in %s: %w\n%s", src, err, msg)
	}
	return out, nil
}

// freePort returns a loopback port nobody listens on right now.
func freePort(ctx context.Context) (int, error) {
	var lc net.ListenConfig
	l, err := lc.Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }() // only reserved the port
	return l.Addr().(*net.TCPAddr).Port, nil
}

// pmProcess is PM running as a child process.
type pmProcess struct {
	cmd  *exec.Cmd
	done chan struct{}
	url  string
	log  string
}

// startPM starts bin with env and waits until it answers /health.
func startPM(ctx context.Context, bin, logPath string, env []string, port int) (*pmProcess, error) {
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin) //nolint:noctx // stopped by stop(), bounded
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, err
	}
	p := &pmProcess{cmd: cmd, done: make(chan struct{}), url: fmt.Sprintf("http://127.0.0.1:%d", port), log: logPath}
	go func() {
		_ = cmd.Wait() // the exit is what matters
		_ = f.Close()
		close(p.done)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if ok, _ := healthy(ctx, p.url); ok {
			return p, nil
		}
		select {
		case <-p.done:
			return nil, fmt.Errorf("pm exited at start (see %s)", logPath)
		case <-ctx.Done():
			p.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("pm did not answer /health within 60s (see %s)", logPath)
		}
	}
}

// stop sends SIGTERM, then SIGKILL after 20s.
func (p *pmProcess) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// cpu is a process's user+system CPU time so far.
func (p *pmProcess) cpu() (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields count from after it.
	s := string(raw)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("short /proc stat")
	}
	ut, err1 := strconv.ParseInt(fields[11], 10, 64)
	st, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("bad /proc stat")
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// memory returns the process's resident set now and at its peak, in bytes.
func (p *pmProcess) memory() (rss, peak int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(fs[0], 10, 64)
		switch k {
		case "VmRSS":
			rss = n * 1024
		case "VmHWM":
			peak = n * 1024
		}
	}
	return rss, peak, sc.Err()
}

// selfCPU is this process's CPU time (the simulated clusters, mostly, when
// no load runs).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadAverage() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// healthy reports whether PM at base answers /health with 200.
func healthy(ctx context.Context, base string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/health", nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	_ = resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}
