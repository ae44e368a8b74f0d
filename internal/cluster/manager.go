// Package cluster is PM's side of the CRM wire contract: one resilient gRPC
// client per configured cluster (deadlines, correlation ids, read retries, a
// circuit breaker), a health cache with single-flight so request storms
// become one CRM call per cluster per TTL, a background refresh, and the
// health ordering placement uses. Each client knows which of the two CRM
// wire generations its cluster speaks (generation.go) and reads runtimes
// accordingly (runtime.go). It is the only package that calls the CRM
// services.
package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"golang.org/x/sync/singleflight"

	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/correlation"
	"github.com/oaas/pm/internal/fault"
)

// Manager holds the configured clusters' CRM clients and their cached health.
// All methods are safe for concurrent use.
type Manager struct {
	cfg     config.CRM
	log     *slog.Logger
	clients map[string]*Client
	names   []string

	// base bounds health checks that outlive the request that started them
	// (single-flight shares them); Close cancels it.
	base       context.Context
	cancelBase context.CancelFunc

	flights singleflight.Group
	mu      sync.Mutex
	cache   map[string]cached
	// onHealth hears of health changes (watch.go).
	onHealth atomic.Pointer[func(Health)]

	loopMu   sync.Mutex
	stopLoop context.CancelFunc
	loopDone chan struct{}
}

// cached is one cluster's last health and when it goes stale.
type cached struct {
	health  Health
	expires time.Time
}

// Option tunes New.
type Option func(*options)

type options struct {
	interceptors []connect.Interceptor
}

// WithInterceptors adds client interceptors to every CRM call (tracing:
// the span of each call, and the trace context sent to the CRM).
func WithInterceptors(i ...connect.Interceptor) Option {
	return func(o *options) { o.interceptors = append(o.interceptors, i...) }
}

// New builds one CRM client per configured cluster. It makes no call; a
// cluster that is down shows up in its health, not here.
func New(cfg config.CRM, log *slog.Logger, opts ...Option) (*Manager, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	// The rules live with the settings (config.CRM.Validate); a manager
	// built from unchecked settings still refuses them, the same way.
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m := &Manager{
		cfg:     cfg,
		log:     log,
		clients: make(map[string]*Client, len(cfg.Clusters)),
		cache:   make(map[string]cached, len(cfg.Clusters)),
	}
	var errs []error
	for _, cl := range cfg.Clusters {
		c, err := newClient(cl, cfg, log, o.interceptors...)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		m.clients[cl.Name] = c
		m.names = append(m.names, cl.Name)
	}
	if err := errors.Join(errs...); err != nil {
		for _, c := range m.clients {
			c.transport.CloseIdleConnections()
		}
		return nil, fmt.Errorf("CRM clusters: %w", err)
	}
	slices.Sort(m.names)
	m.base, m.cancelBase = context.WithCancel(context.Background())
	return m, nil
}

// Names returns the configured cluster names, sorted.
func (m *Manager) Names() []string { return slices.Clone(m.names) }

// Has reports whether name is a configured cluster.
func (m *Manager) Has(name string) bool {
	_, ok := m.clients[name]
	return ok
}

// Client returns the named cluster's CRM client; an unknown name is
// fault.NotFound.
func (m *Manager) Client(name string) (*Client, error) {
	c, ok := m.clients[name]
	if !ok {
		return nil, fault.NotFoundf("cluster %q is not configured", name)
	}
	return c, nil
}

// Health returns the named cluster's health, from the cache while it is
// fresh (CRM_HEALTH_CACHE_TTL), else from one CRM check shared by every
// concurrent caller. An unreachable cluster is not an error: it is Unhealthy
// with the reason in Message. An unknown name is fault.NotFound.
func (m *Manager) Health(ctx context.Context, name string) (Health, error) {
	c, err := m.Client(name)
	if err != nil {
		return Health{}, err
	}
	if h, ok := m.fresh(name); ok {
		return h, nil
	}
	return m.check(ctx, c, false), nil
}

// Generation returns the CRM wire generation PM reads the named cluster
// with and how it learned it ("" while unknown), without asking the CRM.
// An unknown name is fault.NotFound.
func (m *Manager) Generation(name string) (Generation, string, error) {
	c, err := m.Client(name)
	if err != nil {
		return GenerationUnknown, "", err
	}
	g, source := c.Generation()
	return g, source, nil
}

// LastHealth returns the named cluster's last known health, however old,
// without asking its CRM; false when it was never checked. Background work
// that must not add CRM calls (re-planning) reads it; the background
// refresh keeps it current.
func (m *Manager) LastHealth(name string) (Health, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.cache[name]
	return e.health, ok
}

// HealthAll returns every cluster's health, checked in parallel so a slow
// cluster costs only its own deadline, ordered healthy, degraded, then the
// rest, ties by name.
func (m *Manager) HealthAll(ctx context.Context) []Health {
	return m.healthOf(ctx, m.names)
}

// Order returns names in placement order: healthy clusters first, then
// degraded, then unhealthy or unknown ones, ties by name. Names that are not
// configured come last.
func (m *Manager) Order(ctx context.Context, names []string) []string {
	known := make([]string, 0, len(names))
	var unknown []string
	for _, n := range names {
		if m.Has(n) {
			known = append(known, n)
		} else {
			unknown = append(unknown, n)
		}
	}
	hs := m.healthOf(ctx, known)
	out := make([]string, 0, len(names))
	for _, h := range hs {
		out = append(out, h.Cluster)
	}
	slices.Sort(unknown)
	return append(out, unknown...)
}

// healthOf fans out to the named (configured) clusters and sorts the result.
func (m *Manager) healthOf(ctx context.Context, names []string) []Health {
	out := make([]Health, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		c := m.clients[name]
		if h, ok := m.fresh(name); ok {
			out[i] = h
			continue
		}
		wg.Go(func() { out[i] = m.check(ctx, c, false) })
	}
	wg.Wait()
	sortHealth(out)
	return out
}

// sortHealth orders by rank, then name.
func sortHealth(hs []Health) {
	slices.SortStableFunc(hs, func(a, b Health) int {
		if r := cmp.Compare(Rank(a.Status), Rank(b.Status)); r != 0 {
			return r
		}
		return cmp.Compare(a.Cluster, b.Cluster)
	})
}

// fresh returns the cached health while it is within the TTL.
func (m *Manager) fresh(name string) (Health, bool) {
	if m.cfg.HealthCacheTTL <= 0 {
		return Health{}, false
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.cache[name]
	if !ok || !time.Now().Before(e.expires) {
		return Health{}, false
	}
	return e.health, true
}

// check runs (or joins) the one in-flight health check of c and caches its
// result, failures included, so a dead cluster is not hammered either. The
// check runs under the manager's lifetime rather than ctx: callers that join
// it must not lose their answer because the first caller went away. A caller
// whose ctx ends first gets Unknown. force skips the freshness recheck (the
// background refresh).
func (m *Manager) check(ctx context.Context, c *Client, force bool) Health {
	ch := m.flights.DoChan(c.name, func() (any, error) {
		if !force {
			// A flight that finished between our cache miss and DoChan has
			// already answered for this TTL.
			if h, ok := m.fresh(c.name); ok {
				return h, nil
			}
		}
		fctx := correlation.With(m.base, correlation.From(ctx))
		prev, had := m.LastHealth(c.name)
		h := c.probe(fctx)
		m.store(h)
		m.announce(c.name, prev, had)
		return h, nil
	})
	select {
	case r := <-ch:
		return r.Val.(Health)
	case <-ctx.Done():
		return Health{Cluster: c.name, Status: StatusUnknown, Message: errNoAnswer.Error()}
	}
}

// store caches h. A failed check keeps the time the CRM last answered.
func (m *Manager) store(h Health) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h.LastSeen.IsZero() {
		h.LastSeen = m.cache[h.Cluster].health.LastSeen
	}
	m.cache[h.Cluster] = cached{health: h, expires: time.Now().Add(m.cfg.HealthCacheTTL)}
	if h.Status != StatusHealthy {
		m.log.Debug("cluster not healthy", slog.String("cluster", h.Cluster),
			slog.String("status", h.Status), slog.String("reason", h.Message))
	}
}

// Refresh checks every cluster now, bypassing the cache, and waits for the
// results (or ctx).
func (m *Manager) Refresh(ctx context.Context) {
	var wg sync.WaitGroup
	for _, name := range m.names {
		c := m.clients[name]
		wg.Go(func() { m.check(ctx, c, true) })
	}
	wg.Wait()
}

// Start refreshes every cluster's health in the background every
// CRM_HEALTH_CHECK_INTERVAL (0 disables it), starting now, until Stop or ctx
// ends. Starting twice is an error.
func (m *Manager) Start(ctx context.Context) error {
	m.loopMu.Lock()
	defer m.loopMu.Unlock()
	if m.loopDone != nil {
		return errors.New("cluster health refresh already started")
	}
	interval := m.cfg.HealthCheckInterval
	if interval <= 0 || len(m.names) == 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	m.stopLoop, m.loopDone = cancel, done
	go func() {
		defer close(done)
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		for {
			rctx, _ := correlation.Ensure(ctx)
			m.Refresh(rctx)
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	}()
	m.log.Info("cluster health refresh started", slog.Duration("interval", interval), slog.Int("clusters", len(m.names)))
	return nil
}

// Stop stops the background refresh and waits for it to return.
func (m *Manager) Stop() {
	m.loopMu.Lock()
	stop, done := m.stopLoop, m.loopDone
	m.stopLoop, m.loopDone = nil, nil
	m.loopMu.Unlock()
	if stop == nil {
		return
	}
	stop()
	<-done
}

// Close stops the refresh, cancels health checks still running and closes
// idle connections to the CRMs.
func (m *Manager) Close() {
	m.Stop()
	m.cancelBase()
	for _, c := range m.clients {
		c.transport.CloseIdleConnections()
	}
}
