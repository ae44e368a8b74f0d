package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/oaas/pm/bench/internal/loadstat"
)

// operation is one kind of request the loader sends.
type operation int

const (
	opCreate operation = iota
	opGet
)

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

// loader drives PM's REST API and remembers the packages it created, which
// get phases read back.
type loader struct {
	base  string
	names []string
}

// created is how many packages the loader has created so far.
func (l *loader) created() int { return len(l.names) }

// stats summarises one measured phase.
type stats struct {
	ops        int
	errors     int
	firstError string
	opsPerSec  float64
	latency    loadstat.Summary
}

// worker is one client's share of a phase.
type worker struct {
	latencies  []time.Duration
	names      []string
	errors     int
	firstError string
	last       time.Time
}

// run runs op from clients concurrent clients: warmup unmeasured, then
// duration measured. onMeasure, if not nil, is called when measuring
// starts and its result when it ends (a CPU profile).
func (l *loader) run(ctx context.Context, op operation, clients int, warmup, duration time.Duration, onMeasure func() func() error) (stats, error) {
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
	var stopProfile func() error
	if onMeasure != nil {
		select {
		case <-time.After(time.Until(measureFrom)):
			stopProfile = onMeasure()
		case <-ctx.Done():
		}
	}
	wg.Wait()
	if stopProfile != nil {
		if err := stopProfile(); err != nil {
			return stats{}, fmt.Errorf("cpu profile: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return stats{}, err
	}

	var all []time.Duration
	s := stats{}
	last := measureFrom
	for _, w := range workers {
		all = append(all, w.latencies...)
		if op == opCreate {
			l.names = append(l.names, w.names...)
		}
		s.errors += w.errors
		if s.firstError == "" {
			s.firstError = w.firstError
		}
		if w.last.After(last) {
			last = w.last
		}
	}
	s.ops = len(all)
	if s.ops == 0 {
		return s, fmt.Errorf("no request succeeded in the measured window; first error: %s", s.firstError)
	}
	s.latency = loadstat.Summarize(all)
	s.opsPerSec = float64(s.ops) / last.Sub(measureFrom).Seconds()
	return s, nil
}

// work is one client's loop: it sends op until end, recording the latency
// of requests that start in the measured window.
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
		if !t0.Before(measureFrom) {
			w.latencies = append(w.latencies, done.Sub(t0))
			w.last = done
		}
	}
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
