package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/oaas/pm/bench/internal/loadstat"
	"github.com/oaas/pm/bench/internal/pace"
)

// operation is one kind of request the loader sends.
type operation int

const (
	opCreate operation = iota
	opGet
	opList
)

// String names the operation as the report does.
func (o operation) String() string {
	switch o {
	case opCreate:
		return "create"
	case opGet:
		return "get"
	default:
		return "list"
	}
}

// listLimit is the page size of list requests.
const listLimit = 20

// packageJSON is the created package: small and realistic, a class with a
// binding to a function with provisioning, in the REST JSON model. NAME is
// replaced by a unique name per request.
const packageJSON = `{
  "name": "NAME",
  "version": "0.1.0",
  "metadata": {
    "author": "platform-team",
    "description": "A stateless echo class with one function",
    "tags": ["demo", "stateless"]
  },
  "classes": [
    {
      "key": "Echo",
      "description": "Echoes its input",
      "function_bindings": [
        {"name": "echo", "function_key": "Echo.echo", "access_modifier": "PUBLIC", "stateless": true}
      ]
    }
  ],
  "functions": [
    {
      "key": "Echo.echo",
      "function_type": "CUSTOM",
      "description": "echo function",
      "provision_config": {
        "container_image": "registry.local/oaas/echo-fn:1.4.2",
        "port": 8080,
        "cpu_request": "100m",
        "memory_request": "64Mi",
        "min_scale": 1,
        "max_scale": 5
      },
      "config": {"LOG_LEVEL": "info"}
    }
  ]
}`

// bodyPrefix and bodySuffix surround the name in packageJSON.
var bodyPrefix, bodySuffix = func() ([]byte, []byte) {
	before, after, _ := strings.Cut(packageJSON, "NAME")
	return []byte(before), []byte(after)
}()

// loader drives one server's REST API (PM's, or the floor's, which serves
// the same routes) and remembers the packages it created, which get phases
// read back.
type loader struct {
	base  string
	names []string
	// listTag is the tag list requests filter on.
	listTag string
}

// created is how many packages the loader has created so far.
func (l *loader) created() int { return len(l.names) }

// stats summarises one measured phase, or several slices of one merged.
type stats struct {
	ops        int
	errors     int
	firstError string
	// elapsed is the measured time; cpu this process's CPU time (server
	// and client) over it.
	elapsed, cpu time.Duration
	latencies    []time.Duration
	// allocBytes and allocs are what this process allocated over it.
	allocBytes, allocs uint64
	// sliceRates are the requests/s of each merged slice, in order.
	sliceRates []float64

	// Derived by finish.
	opsPerSec float64
	latency   loadstat.Summary
	cpuPerOp  time.Duration
}

// merge adds the slice o to s.
func (s *stats) merge(o stats) {
	s.ops += o.ops
	s.errors += o.errors
	if s.firstError == "" {
		s.firstError = o.firstError
	}
	s.elapsed += o.elapsed
	s.cpu += o.cpu
	s.allocBytes += o.allocBytes
	s.allocs += o.allocs
	if len(o.sliceRates) > 0 {
		s.sliceRates = append(s.sliceRates, o.sliceRates...)
	} else if o.elapsed > 0 {
		s.sliceRates = append(s.sliceRates, float64(o.ops)/o.elapsed.Seconds())
	}
	s.latencies = append(s.latencies, o.latencies...)
	s.finish()
}

// ratioRange is the smallest and largest ratio of s's slice rates to
// those of ref, slice by slice (slices measured next to each other).
func (s *stats) ratioRange(ref *stats) (lo, hi float64, ok bool) {
	if len(s.sliceRates) != len(ref.sliceRates) || len(s.sliceRates) < 2 {
		return 0, 0, false
	}
	for i, r := range s.sliceRates {
		if ref.sliceRates[i] <= 0 {
			return 0, 0, false
		}
		x := r / ref.sliceRates[i]
		if i == 0 || x < lo {
			lo = x
		}
		if i == 0 || x > hi {
			hi = x
		}
	}
	return lo, hi, true
}

// allocPerOp formats the allocation per request: kilobytes/count.
func (s *stats) allocPerOp() string {
	if s.ops == 0 {
		return "-"
	}
	n := uint64(s.ops)
	return fmt.Sprintf("%.1fK/%d", float64(s.allocBytes/n)/1024, s.allocs/n)
}

// finish computes the derived figures.
func (s *stats) finish() {
	if s.ops == 0 || s.elapsed <= 0 {
		return
	}
	s.latency = loadstat.Summarize(s.latencies)
	s.cpuPerOp = s.cpu / time.Duration(s.ops)
	s.opsPerSec = float64(s.ops) / s.elapsed.Seconds()
}

// worker is one client's share of a phase.
type worker struct {
	latencies  []time.Duration
	names      []string
	errors     int
	firstError string
}

// run runs op from clients concurrent clients: warmup unmeasured, then
// duration measured. onMeasure, if not nil, is called when measuring
// starts and its result when it ends (a CPU profile).
func (l *loader) run(ctx context.Context, op operation, clients int, warmup, duration time.Duration, onMeasure func() func() error) (stats, error) {
	if op == opList && l.listTag == "" {
		return stats{}, fmt.Errorf("list phase: no tag to list")
	}
	if op == opGet && len(l.names) == 0 {
		return stats{}, fmt.Errorf("get phase: no packages were created to read")
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        clients,
		MaxIdleConnsPerHost: clients,
		MaxConnsPerHost:     clients,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	tr.Protocols = &protocols
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	defer tr.CloseIdleConnections()

	start := time.Now()
	measureFrom := start.Add(warmup)
	end := measureFrom.Add(duration)
	workers := make([]*worker, clients)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{latencies: make([]time.Duration, 0, 4096)}
		workers[i] = w
		wg.Go(func() { l.work(ctx, client, op, w, measureFrom, end) })
	}
	// CPU time and the profile cover the measured window only; requests
	// still in flight at its end finish unmeasured.
	var (
		stopProfile func() error
		cpu         time.Duration
		m0, m1      runtime.MemStats
	)
	if pace.Sleep(ctx, time.Until(measureFrom)) == nil {
		runtime.ReadMemStats(&m0)
		cpu0 := loadstat.CPUTime()
		if onMeasure != nil {
			stopProfile = onMeasure()
		}
		_ = pace.Sleep(ctx, time.Until(end)) // ctx is checked below
		cpu = loadstat.CPUTime() - cpu0
		runtime.ReadMemStats(&m1)
	}
	if stopProfile != nil {
		if err := stopProfile(); err != nil {
			wg.Wait()
			return stats{}, fmt.Errorf("cpu profile: %w", err)
		}
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return stats{}, err
	}

	var all []time.Duration
	s := stats{}
	for _, w := range workers {
		all = append(all, w.latencies...)
		if op == opCreate {
			l.names = append(l.names, w.names...)
		}
		s.errors += w.errors
		if s.firstError == "" {
			s.firstError = w.firstError
		}
	}
	s.ops = len(all)
	s.latencies, s.cpu, s.elapsed = all, cpu, duration
	s.allocBytes, s.allocs = m1.TotalAlloc-m0.TotalAlloc, m1.Mallocs-m0.Mallocs
	s.finish()
	return s, nil
}

// work is one client's loop: it sends op until end, recording the latency
// of requests that complete in the measured window [measureFrom, end] (so
// that requests slower than the window still count where they end).
func (l *loader) work(ctx context.Context, client *http.Client, op operation, w *worker, measureFrom, end time.Time) {
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	var nameBuf [8]byte
	body := make([]byte, 0, len(bodyPrefix)+len(bodySuffix)+32)
	for ctx.Err() == nil {
		t0 := time.Now()
		if !t0.Before(end) {
			return
		}
		var (
			method, path string
			payload      []byte
			want         int
			name         string
		)
		switch op {
		case opCreate:
			// Random names, like the pgbench insert's, so both B-trees
			// take inserts all over rather than at one end.
			binary.BigEndian.PutUint64(nameBuf[:], rng.Uint64())
			name = "pkg-" + hex.EncodeToString(nameBuf[:])
			body = append(append(append(body[:0], bodyPrefix...), name...), bodySuffix...)
			method, path, payload, want = http.MethodPost, "/api/v1/packages", body, http.StatusCreated
		case opGet:
			name = l.names[rng.IntN(len(l.names))]
			method, path, want = http.MethodGet, "/api/v1/packages/"+name, http.StatusOK
		case opList:
			method, path, want = http.MethodGet, l.listPath(), http.StatusOK
		}
		err := l.do(ctx, client, method, path, payload, want)
		done := time.Now()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			w.errors++
			if w.firstError == "" {
				w.firstError = err.Error()
			}
			continue
		}
		if op == opCreate {
			w.names = append(w.names, name)
		}
		if !done.Before(measureFrom) && !done.After(end) {
			w.latencies = append(w.latencies, done.Sub(t0))
		}
	}
}

// listPath is the list request's path and query.
func (l *loader) listPath() string {
	return "/api/v1/packages?tags=" + url.QueryEscape(l.listTag) + "&limit=" + strconv.Itoa(listLimit)
}

// listCount sends one list request and returns how many items it got, to
// check that a server answers what the phase means to measure.
func (l *loader) listCount(ctx context.Context) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.base+l.listPath(), nil)
	if err != nil {
		return 0, err
	}
	client := &http.Client{Timeout: time.Minute}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }() // read whole below
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: status %d: %s", l.listPath(), resp.StatusCode, bytes.TrimSpace(body))
	}
	var items []json.RawMessage
	if err := json.Unmarshal(body, &items); err != nil {
		return 0, fmt.Errorf("GET %s: not a JSON array: %w", l.listPath(), err)
	}
	return len(items), nil
}

// do sends one request and reads the response whole, so the connection is
// reused.
func (l *loader) do(ctx context.Context, client *http.Client, method, path string, body []byte, want int) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, l.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }() // read whole already
	if resp.StatusCode != want {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		_, _ = io.Copy(io.Discard, resp.Body)
		return fmt.Errorf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, bytes.TrimSpace(msg))
	}
	_, err = io.Copy(io.Discard, resp.Body)
	return err
}
