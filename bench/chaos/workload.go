package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oaas/pm/bench/internal/pace"
)

// The package every deployment of the workload deploys.
const (
	packageName = "chaos"
	classKey    = "Worker"
	packageJSON = `{"name": "chaos", "version": "1.0.0",
 "functions": [{"key": "work", "function_type": "CUSTOM",
   "provision_config": {"container_image": "ghcr.io/oaas/echo-fn:latest", "port": 8080}}],
 "classes": [{"key": "Worker", "function_bindings": [{"name": "work", "function_key": "work"}]}]}`
)

// client sends REST requests to a random live PM, each with a deadline.
type client struct {
	pms     []*pmSlot
	hc      *http.Client // writes
	reads   *http.Client
	verbose bool

	mu  sync.Mutex
	rng *rand.Rand
}

func newClient(pms []*pmSlot, timeout time.Duration, verbose bool) *client {
	// Writes use a connection each: net/http silently replays a request
	// that failed on a reused connection when it looks idempotent (DELETE,
	// or a POST with Idempotency-Key), and the ledger must know what each
	// answer was an answer to.
	writes := &http.Transport{DisableKeepAlives: true}
	reads := &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 30 * time.Second}
	return &client{
		pms:     pms,
		hc:      &http.Client{Timeout: timeout, Transport: writes},
		reads:   &http.Client{Timeout: timeout, Transport: reads},
		verbose: verbose,
		rng:     rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7)),
	}
}

// pick returns a random ready PM, waiting briefly for one; when none gets
// ready it returns any (the request will then fail, unacknowledged).
func (c *client) pick(ctx context.Context) *pmSlot {
	for range 40 {
		var ready []*pmSlot
		for _, p := range c.pms {
			if p.ready.Load() {
				ready = append(ready, p)
			}
		}
		if len(ready) > 0 {
			c.mu.Lock()
			defer c.mu.Unlock()
			return ready[c.rng.IntN(len(ready))]
		}
		if pace.Sleep(ctx, 50*time.Millisecond) != nil {
			break
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pms[c.rng.IntN(len(c.pms))]
}

// response is what one request got; err is set when no response came.
type response struct {
	status int
	body   []byte
	pm     string
	err    error
}

func (r response) String() string {
	if r.err != nil {
		return fmt.Sprintf("%s: %v", r.pm, r.err)
	}
	return fmt.Sprintf("%s: %d %s", r.pm, r.status, strings.TrimSpace(string(r.body)))
}

// do sends one request to pm (a random live one when nil).
func (c *client) do(ctx context.Context, pm *pmSlot, method, path string, body []byte, header map[string]string) response {
	if pm == nil {
		pm = c.pick(ctx)
	}
	out := response{pm: pm.name()}
	pm.inflight.Add(1)
	defer pm.inflight.Add(-1)
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, pm.url()+path, rd)
	if err != nil {
		out.err = err
		return out
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	hc := c.hc
	if method == http.MethodGet {
		hc = c.reads
	}
	resp, err := hc.Do(req)
	if err != nil {
		out.err = err
		return out
	}
	defer func() { _ = resp.Body.Close() }() // read fully below
	out.status = resp.StatusCode
	out.body, out.err = io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if c.verbose {
		logf("%s %s -> %s", method, path, out)
	}
	return out
}

// createPackage creates the workload's package, retrying while PM settles.
func (c *client) createPackage(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := c.do(ctx, nil, http.MethodPost, "/api/v1/packages", []byte(packageJSON), nil)
		if r.err == nil && (r.status == http.StatusCreated || r.status == http.StatusConflict) {
			return nil
		}
		if r.err == nil && r.status < 500 {
			return fmt.Errorf("creating package %q: %s", packageName, r)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("creating package %q: %s", packageName, r)
		}
		_ = pace.Sleep(ctx, 200*time.Millisecond)
	}
}

// spec is what the workload asks a deployment to be: the MODE its
// function's config carries (a change the units show) and its clusters.
type spec struct {
	mode    string
	targets []string
}

func (s spec) String() string { return fmt.Sprintf("%s on %v", s.mode, s.targets) }

// entry is the ledger of one deployment key: what was asked and what PM
// acknowledged.
type entry struct {
	key string
	// targets and mode are the spec PM last acknowledged (or, before the
	// create was acknowledged, the one it was asked for).
	targets []string
	mode    string
	// maybe are specs of updates sent after the last acknowledged one and
	// not acknowledged: PM may have applied any of them.
	maybe []spec
	// updated: an update was acknowledged.
	updated bool

	createAck   bool // 201
	createSeen  bool // a retried create got 409: it exists (unacknowledged)
	deleteTried bool
	deleteAck   bool // 204, or 404 to a retry: PM says it is gone
	// lostEarly: the first delete of an acknowledged create got 404, so PM
	// had lost the deployment already.
	lostEarly bool
	notes     []string
}

// expectation is the state a deployment must end in.
type expectation int

const (
	mustExist expectation = iota
	mustBeGone
	eitherWay // unacknowledged: exists fully or not at all
)

// acceptable are the specs PM may store: the acknowledged one and those an
// unacknowledged update may have applied.
func (e *entry) acceptable() []spec {
	return append([]spec{{mode: e.mode, targets: e.targets}}, e.maybe...)
}

func (e *entry) expect() expectation {
	switch {
	case e.deleteAck:
		return mustBeGone
	case e.createAck && !e.deleteTried:
		return mustExist
	default:
		return eitherWay
	}
}

// workload creates and deletes deployments against random PMs.
type workload struct {
	api      *client
	clusters []string
	o        *options
	rng      *rand.Rand

	mu      sync.Mutex
	entries []*entry

	creates, createAcks, createFails atomic.Int64
	updates, updateAcks, updateFails atomic.Int64
	deletes, deleteAcks, deleteFails atomic.Int64
	retries                          atomic.Int64
}

func newWorkload(api *client, clusters []string, o *options, rng *rand.Rand) *workload {
	return &workload{api: api, clusters: clusters, o: o, rng: rng}
}

// plan is one create the workload sends, decided up front from the seed.
type plan struct {
	at          time.Duration
	e           *entry
	del         bool
	delFraction float64
	// updates are the specs the deployment is updated to, in order, each
	// after its share of the wait before the delete; byPUT says how each
	// is sent (PUT, or OaaS's re-POST).
	updates []spec
	byPUT   []bool
}

// pickTargets is a random non-empty subset of the clusters.
func (w *workload) pickTargets() []string {
	var targets []string
	for _, c := range w.clusters {
		if w.rng.Float64() < 0.6 {
			targets = append(targets, c)
		}
	}
	if len(targets) == 0 {
		targets = []string{w.clusters[w.rng.IntN(len(w.clusters))]}
	}
	return targets
}

// run sends o.deploys creates evenly over the first 80% of the duration,
// and deletes a share of them a random while later, all within the
// duration (plus the deadline of the requests in flight).
func (w *workload) run(ctx context.Context, start time.Time) {
	end := start.Add(w.o.duration)
	span := w.o.duration * 8 / 10
	plans := make([]plan, w.o.deploys)
	for i := range plans {
		e := &entry{key: fmt.Sprintf("dep-%05d", i), targets: w.pickTargets(), mode: "v0"}
		plans[i] = plan{
			at:          span * time.Duration(i) / time.Duration(w.o.deploys),
			e:           e,
			del:         w.rng.Float64() < w.o.deleteShare,
			delFraction: w.rng.Float64(),
		}
		if w.rng.Float64() < w.o.updateShare {
			for n := 1; n <= 1+w.rng.IntN(2); n++ {
				targets := e.targets
				if w.rng.Float64() < 0.5 {
					// Sometimes other clusters too: units move.
					targets = w.pickTargets()
				}
				plans[i].updates = append(plans[i].updates, spec{mode: fmt.Sprintf("v%d", n), targets: targets})
				plans[i].byPUT = append(plans[i].byPUT, w.rng.Float64() < 0.5)
			}
		}
		w.entries = append(w.entries, e)
	}

	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, p := range plans {
		if pace.Sleep(ctx, time.Until(start.Add(p.at))) != nil {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			acked := w.create(ctx, p.e, end)
			if acked {
				for i, u := range p.updates {
					// Spread over the first half of what is left, so that
					// updates overlap faults and leave room for a delete.
					wait := time.Duration(float64(time.Until(end)) * 0.5 / float64(len(p.updates)-i) * w.fraction())
					if time.Until(end) <= 0 || pace.Sleep(ctx, wait) != nil {
						break
					}
					w.update(ctx, p.e, u, p.byPUT[i], end)
				}
			}
			left := time.Until(end)
			var wait time.Duration
			switch {
			case left <= 0:
				return
			case !acked && p.delFraction < 0.5:
				// A client cleaning up after a create that got no answer,
				// within 3s: before, while or after PM resumes the
				// operation the crash interrupted.
				wait = time.Duration(p.delFraction * 2 * 3 * float64(time.Second))
			case p.del:
				// Somewhere in the first half of the rest of the window, so
				// that deletes overlap faults too.
				wait = time.Duration(float64(left) * 0.5 * p.delFraction)
			default:
				return
			}
			if pace.Sleep(ctx, wait) != nil {
				return
			}
			w.delete(ctx, p.e, end)
		})
	}
	wg.Wait()
}

// specBody is a deployment document of key with spec s.
func specBody(key string, s spec) []byte {
	body, err := json.Marshal(map[string]any{
		"key": key, "package_name": packageName, "class_key": classKey, "target_envs": s.targets,
		"functions": []any{map[string]any{"function_key": "work", "config": map[string]string{"MODE": s.mode}}},
	})
	if err != nil {
		panic(err) // strings only: cannot happen
	}
	return body
}

// update sends an update of e to s, by PUT or by POSTing the key again (as
// OaaS's deploy apply --overwrite does), retried on other PMs while no
// answer came, the answer was a 5xx (the update may still be under way, or
// was reverted) or a 409 (an operation on the deployment is at work).
func (w *workload) update(ctx context.Context, e *entry, s spec, byPUT bool, end time.Time) {
	method, path := http.MethodPost, "/api/v1/deployments"
	if byPUT {
		method, path = http.MethodPut, "/api/v1/deployments/"+e.key
	}
	body := specBody(e.key, s)
	w.updates.Add(1)
	w.mu.Lock()
	e.maybe = append(e.maybe, s) // from now on PM may apply it
	w.mu.Unlock()
	for attempt := 1; attempt <= 8 && ctx.Err() == nil; attempt++ {
		if attempt > 1 {
			w.retries.Add(1)
			if time.Now().After(end.Add(10*time.Second)) || pace.Sleep(ctx, time.Duration(200+w.jitter(800))*time.Millisecond) != nil {
				break
			}
		}
		r := w.api.do(ctx, nil, method, path, body, nil)
		w.note(e, "update(%s)#%d %s %s", s, attempt, method, r)
		switch {
		case r.err != nil || r.status >= 500, r.status == http.StatusConflict:
			continue
		case r.status == http.StatusOK:
			w.mu.Lock()
			e.mode, e.targets, e.maybe, e.updated = s.mode, s.targets, nil, true
			w.mu.Unlock()
			w.updateAcks.Add(1)
			return
		default:
			logf("update %s: unexpected answer %s", e.key, r)
			w.updateFails.Add(1)
			return
		}
	}
	w.updateFails.Add(1)
}

// fraction is a random number in [0,1).
func (w *workload) fraction() float64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rng.Float64()
}

// create sends a create, retried on other PMs with the same
// Idempotency-Key while no answer came or the answer was a 5xx, and
// reports whether it was acknowledged.
func (w *workload) create(ctx context.Context, e *entry, end time.Time) bool {
	body := specBody(e.key, spec{mode: e.mode, targets: e.targets})
	w.creates.Add(1)
	var last response
	for attempt := 1; attempt <= 3 && ctx.Err() == nil; attempt++ {
		if attempt > 1 {
			w.retries.Add(1)
			if time.Now().After(end.Add(5*time.Second)) || pace.Sleep(ctx, time.Duration(100+w.jitter(400))*time.Millisecond) != nil {
				break
			}
		}
		last = w.api.do(ctx, nil, http.MethodPost, "/api/v1/deployments", body, map[string]string{"Idempotency-Key": "chaos-" + e.key})
		w.note(e, "create#%d %s", attempt, last)
		switch {
		case last.err != nil || last.status >= 500:
			continue
		case last.status == http.StatusCreated:
			w.mu.Lock()
			e.createAck = true
			w.mu.Unlock()
			w.createAcks.Add(1)
			return true
		case last.status == http.StatusConflict && attempt > 1:
			// An earlier attempt got through; it is not acknowledged.
			w.mu.Lock()
			e.createSeen = true
			w.mu.Unlock()
			w.createFails.Add(1)
			return false
		default:
			logf("create %s: unexpected answer %s", e.key, last)
			w.createFails.Add(1)
			return false
		}
	}
	w.createFails.Add(1)
	return false
}

// delete sends a delete, retried like a create, and also while PM answers
// 409 because another operation on the deployment is still pending.
func (w *workload) delete(ctx context.Context, e *entry, end time.Time) {
	w.mu.Lock()
	e.deleteTried = true
	acked := e.createAck
	w.mu.Unlock()
	w.deletes.Add(1)
	for attempt := 1; attempt <= 6 && ctx.Err() == nil; attempt++ {
		if attempt > 1 {
			w.retries.Add(1)
			if time.Now().After(end.Add(10*time.Second)) || pace.Sleep(ctx, time.Duration(200+w.jitter(800))*time.Millisecond) != nil {
				break
			}
		}
		r := w.api.do(ctx, nil, http.MethodDelete, "/api/v1/deployments/"+e.key, nil, nil)
		w.note(e, "delete#%d %s", attempt, r)
		switch {
		case r.err != nil || r.status >= 500:
			continue
		case r.status == http.StatusConflict:
			// Another operation on the deployment (the create PM is
			// resuming, or an earlier attempt of this delete) is pending:
			// PM says try again when it finishes.
			continue
		case r.status == http.StatusOK || r.status == http.StatusNoContent:
			// 200 with what was deleted (OaaS's answer); 204 from a PM
			// that predates it.
			w.ack(e, false)
			return
		case r.status == http.StatusNotFound && acked:
			// To a retry: the first attempt got through. To a first
			// attempt: PM lost an acknowledged create.
			w.ack(e, attempt == 1)
			if attempt == 1 {
				logf("LOST: %s was created (201) but its first delete got 404", e.key)
			}
			return
		case r.status == http.StatusNotFound:
			// The create was never acknowledged; it may still be in
			// flight, so this says nothing final.
			w.deleteFails.Add(1)
			return
		default:
			logf("delete %s: unexpected answer %s", e.key, r)
			w.deleteFails.Add(1)
			return
		}
	}
	w.deleteFails.Add(1)
}

func (w *workload) ack(e *entry, lost bool) {
	w.mu.Lock()
	e.deleteAck = true
	e.lostEarly = e.lostEarly || lost
	w.mu.Unlock()
	w.deleteAcks.Add(1)
}

func (w *workload) jitter(n int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rng.IntN(n)
}

func (w *workload) note(e *entry, format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	e.notes = append(e.notes, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, args...))
}

// ledger returns a copy of the entries once the workload is over.
func (w *workload) ledger() []entry {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]entry, len(w.entries))
	for i, e := range w.entries {
		out[i] = *e
		out[i].targets = slices.Clone(e.targets)
		out[i].maybe = slices.Clone(e.maybe)
		out[i].notes = slices.Clone(e.notes)
	}
	return out
}

func (w *workload) acknowledgedCreates() int { return int(w.createAcks.Load()) }

func (w *workload) summary() string {
	return fmt.Sprintf("creates %d (acknowledged %d, not %d), updates %d (acknowledged %d, not %d), deletes %d (acknowledged %d, not %d), retries %d",
		w.creates.Load(), w.createAcks.Load(), w.createFails.Load(),
		w.updates.Load(), w.updateAcks.Load(), w.updateFails.Load(),
		w.deletes.Load(), w.deleteAcks.Load(), w.deleteFails.Load(), w.retries.Load())
}
