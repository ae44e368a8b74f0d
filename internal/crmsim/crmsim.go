// Package crmsim simulates a Class Runtime Manager (CRM): a real gRPC server
// that speaks the CRM wire contract the way a field CRM does, of either
// generation (Config.Generation: crm-wire-contract.md, or the current
// upstream CRM of upstream-head-delta.md §2), with knobs that make it slow,
// flaky, hung, unhealthy or old, and counters that let tests see what PM
// sent.
//
// PM's tests start one per simulated cluster on a loopback port; the crmsim
// command serves them for demos. Runtimes live in memory only.
package crmsim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/protobuf/proto"

	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	"github.com/oaas/pm/gen/go/oaas/deployment/deploymentconnect"
	"github.com/oaas/pm/gen/go/oaas/health/healthconnect"
	"github.com/oaas/pm/gen/go/oaas/topology/topologyconnect"
)

// CorrelationHeader is the request metadata key a CRM echoes back in its
// response metadata, so one request can be followed across PM and CRM logs.
const CorrelationHeader = "X-Correlation-Id"

// closeTimeout bounds how long Close lets in-flight calls finish.
const closeTimeout = 5 * time.Second

// flushGrace is how long Close lets finished calls' responses reach clients
// before connections are cut.
const flushGrace = 50 * time.Millisecond

// Sim is one running simulated CRM. All methods are safe for concurrent use.
type Sim struct {
	env  string
	url  string
	addr string
	// wire is the CRM wire generation (Config.Generation), fixed at Start.
	wire int
	srv  *http.Server
	log  *slog.Logger
	// closingCtx ends when Close starts, to release hung and streaming calls.
	closingCtx    context.Context
	cancelClosing context.CancelFunc
	served        chan struct{} // closed when the serve loop has returned
	ln            net.Listener
	inflight      atomic.Int64 // HTTP requests being served, so Close can drain them

	closeOnce sync.Once
	closeErr  error
	stopCtx   func() bool

	mu             sync.Mutex
	cfg            Config
	rng            *rand.Rand
	deployFailures int // failures already served out of cfg.FailFirstDeploys
	calls          map[string]int64
	runtimes       map[string]*runtime
	lastUnits      map[string]*deploymentpb.DeploymentUnit
	created        int64
	generation     uint64
	lastCorrelID   string
	watchers       map[uint64]func()
	nextWatcher    uint64
}

// runtime is one deployment unit the simulated cluster runs.
type runtime struct {
	unit       *deploymentpb.DeploymentUnit
	createdAt  time.Time
	generation uint64
	settled    bool   // injected runtimes skip the rollout
	degraded   string // non-empty: the full "Degraded (reason): text" summary
}

// Start listens on cfg.Addr and serves the CRM services before it returns.
// The simulator closes when ctx ends or when Close is called.
func Start(ctx context.Context, cfg Config) (*Sim, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("crmsim %s: %w", cfg.EnvName, err)
	}
	var tlsConf *tls.Config
	if cfg.TLS != nil {
		var err error
		if tlsConf, err = cfg.TLS.serverTLS(); err != nil {
			return nil, fmt.Errorf("crmsim %s: %w", cfg.EnvName, err)
		}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("crmsim %s: listen: %w", cfg.EnvName, err)
	}

	s := &Sim{
		env:       cfg.EnvName,
		wire:      cfg.Generation,
		addr:      ln.Addr().String(),
		ln:        ln,
		log:       cfg.Logger.With(slog.String("env", cfg.EnvName)),
		served:    make(chan struct{}),
		cfg:       cfg,
		rng:       newRNG(cfg.Seed),
		calls:     make(map[string]int64),
		runtimes:  make(map[string]*runtime),
		lastUnits: make(map[string]*deploymentpb.DeploymentUnit),
		watchers:  make(map[uint64]func()),
	}
	s.closingCtx, s.cancelClosing = context.WithCancel(context.Background())
	scheme := "http"
	if tlsConf != nil {
		scheme = "https"
	}
	s.url = scheme + "://" + s.addr

	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	protocols.SetUnencryptedHTTP2(true)
	s.srv = &http.Server{
		Handler:           s.track(s.routes()),
		Protocols:         &protocols,
		TLSConfig:         tlsConf,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	go func() {
		defer close(s.served)
		var err error
		if tlsConf != nil {
			err = s.srv.ServeTLS(ln, "", "")
		} else {
			err = s.srv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) && s.closingCtx.Err() == nil {
			s.log.Error("crmsim serve loop stopped", slog.Any("error", err))
		}
	}()
	s.stopCtx = context.AfterFunc(ctx, func() { _ = s.shutdown() })
	s.log.Info("crmsim listening", slog.String("url", s.url), slog.Bool("mtls", tlsConf != nil && tlsConf.ClientCAs != nil))
	return s, nil
}

// StartMany starts one simulator per config, as several clusters; if one
// fails to start, those already started are closed.
func StartMany(ctx context.Context, cfgs []Config) ([]*Sim, error) {
	sims := make([]*Sim, 0, len(cfgs))
	for _, cfg := range cfgs {
		s, err := Start(ctx, cfg)
		if err != nil {
			for _, started := range sims {
				_ = started.Close()
			}
			return nil, err
		}
		sims = append(sims, s)
	}
	return sims, nil
}

// routes mounts every service a field CRM serves. Reflection is left outside
// the fault knobs so grpcurl keeps working against a misbehaving simulator.
func (s *Sim) routes() http.Handler {
	opts := connect.WithHandlerOptions(connect.WithInterceptors(&interceptor{s: s}))
	mux := http.NewServeMux()
	mux.Handle(deploymentconnect.NewDeploymentServiceHandler(&deploymentServer{s: s}, opts))
	mux.Handle(healthconnect.NewHealthServiceHandler(&healthServer{s: s}, opts))
	mux.Handle(healthconnect.NewCrmInfoServiceHandler(&crmInfoServer{s: s}, opts))
	mux.Handle(grpchealth.NewHandler(&grpcHealthChecker{s: s}, opts))
	services := []string{
		deploymentconnect.DeploymentServiceName,
		healthconnect.HealthServiceName,
		healthconnect.CrmInfoServiceName,
		grpchealth.HealthV1ServiceName,
		grpcreflect.ReflectV1ServiceName,
		grpcreflect.ReflectV1AlphaServiceName,
	}
	if s.wire == 2 {
		s.mountGeneration2(mux, opts)
		services = append(services, topologyconnect.TopologyServiceName)
	} else {
		s.mountPackageStub(mux, opts)
	}
	reflector := grpcreflect.NewStaticReflector(services...)
	passive := connect.WithInterceptors(&interceptor{s: s, passive: true})
	mux.Handle(grpcreflect.NewHandlerV1(reflector, passive))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, passive))
	return mux
}

// track counts in-flight requests for Close.
func (s *Sim) track(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.inflight.Add(1)
		defer s.inflight.Add(-1)
		next.ServeHTTP(w, r)
	})
}

// Close stops the simulator: it stops accepting connections, releases hung
// and streaming calls, gives the other in-flight calls up to closeTimeout to
// finish, sends GOAWAY, then cuts the connections. It does not wait for idle
// clients to hang up, as http.Server.Shutdown alone does for HTTP/2 (a second
// per client connection, which adds up across a test suite). It is safe to
// call more than once.
func (s *Sim) Close() error {
	s.stopCtx()
	return s.shutdown()
}

// shutdown is Close without releasing the ctx watch, which runs it itself.
func (s *Sim) shutdown() error {
	s.closeOnce.Do(func() {
		s.cancelClosing()
		var errs []error
		if err := s.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
		deadline := time.Now().Add(closeTimeout)
		for s.inflight.Load() > 0 && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		if n := s.inflight.Load(); n > 0 {
			errs = append(errs, fmt.Errorf("crmsim %s: %d calls still running after %v; cut", s.env, n, closeTimeout))
		}
		// A finished handler's last frames are still being written; Shutdown
		// lets them out and sends GOAWAY, and the grace stops it from waiting
		// for every idle client to hang up.
		graceCtx, cancel := context.WithTimeout(context.Background(), flushGrace)
		_ = s.srv.Shutdown(graceCtx) // only the listener, already closed, or the grace can fail it
		cancel()
		if err := s.srv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
		<-s.served
		s.closeErr = errors.Join(errs...)
		s.log.Info("crmsim closed", slog.Any("error", s.closeErr))
	})
	return s.closeErr
}

// URL is the base URL PM should dial: http:// for h2c, https:// for TLS.
func (s *Sim) URL() string { return s.url }

// Addr is the host:port the simulator listens on.
func (s *Sim) Addr() string { return s.addr }

// EnvName is the environment name the simulator reports.
func (s *Sim) EnvName() string { return s.env }

// Config returns a copy of the current knobs.
func (s *Sim) Config() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg.withDefaults() // copies the pointer fields
}

// Update changes knobs in one step under the simulator's lock, for the knobs
// without a dedicated setter. Addr, EnvName, Namespace, Generation, TLS and
// Logger are fixed at Start; changes to them are ignored. Changing Seed reseeds the
// FailRate RNG; changing FailFirstDeploys restarts its count.
func (s *Sim) Update(change func(*Config)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.cfg
	change(&next)
	next.Addr, next.EnvName, next.Namespace, next.Generation = s.cfg.Addr, s.cfg.EnvName, s.cfg.Namespace, s.cfg.Generation
	next.TLS, next.Logger = s.cfg.TLS, s.cfg.Logger
	next = next.withDefaults()
	if err := next.validate(); err != nil {
		return err
	}
	if next.Seed != s.cfg.Seed {
		s.rng = newRNG(next.Seed)
	}
	if next.FailFirstDeploys != s.cfg.FailFirstDeploys {
		s.deployFailures = 0
	}
	servingChanged := next.NotServing != s.cfg.NotServing
	s.cfg = next
	if servingChanged {
		s.notifyWatchersLocked()
	}
	return nil
}

// mustUpdate applies a change that cannot make the config invalid.
func (s *Sim) mustUpdate(change func(*Config)) {
	if err := s.Update(change); err != nil {
		panic("crmsim: " + err.Error())
	}
}

// SetNodes sets the node count and how many nodes are ready (clamped to total;
// a zero total means the default of 3).
func (s *Sim) SetNodes(total, ready uint32) {
	s.mustUpdate(func(c *Config) { c.NodeCount, c.ReadyNodes = total, &ready })
}

// SetAvailability forces the reported availability; nil removes the field.
func (s *Sim) SetAvailability(availability *float64) error {
	return s.Update(func(c *Config) { c.Availability = availability })
}

// SetLatency sets the delay added to every CRM call.
func (s *Sim) SetLatency(d time.Duration) error {
	return s.Update(func(c *Config) { c.Latency = d })
}

// SetFailFirstDeploys makes the next n Deploy calls fail, whatever failed before.
func (s *Sim) SetFailFirstDeploys(n int) error {
	if err := s.Update(func(c *Config) { c.FailFirstDeploys = n }); err != nil {
		return err
	}
	s.mu.Lock()
	s.deployFailures = 0
	s.mu.Unlock()
	return nil
}

// SetFailRate sets the fraction of failing calls and reseeds the RNG, so the
// same seed replays the same failures for the same sequence of calls.
func (s *Sim) SetFailRate(rate float64, seed uint64) error {
	if err := s.Update(func(c *Config) { c.FailRate, c.Seed = rate, seed }); err != nil {
		return err
	}
	s.mu.Lock()
	s.rng = newRNG(seed)
	s.mu.Unlock()
	return nil
}

// SetHang makes calls wait for the client's deadline instead of answering.
func (s *Sim) SetHang(hang bool) { s.mustUpdate(func(c *Config) { c.Hang = hang }) }

// SetNotServing flips the health services to NOT_SERVING (and back); open
// Watch streams see the change.
func (s *Sim) SetNotServing(notServing bool) {
	s.mustUpdate(func(c *Config) { c.NotServing = notServing })
}

// SetDisableCrmInfo makes CrmInfoService answer UNIMPLEMENTED.
func (s *Sim) SetDisableCrmInfo(disabled bool) {
	s.mustUpdate(func(c *Config) { c.DisableCrmInfo = disabled })
}

// SetDisableOaasHealth makes oaas.health.HealthService answer UNIMPLEMENTED.
func (s *Sim) SetDisableOaasHealth(disabled bool) {
	s.mustUpdate(func(c *Config) { c.DisableOaasHealth = disabled })
}

// SetDelays sets the rollout delays; runtimes already deployed follow the new
// values, since their phase is derived from their age.
func (s *Sim) SetDelays(progress, ready time.Duration) error {
	return s.Update(func(c *Config) { c.ProgressDelay, c.ReadyDelay = progress, ready })
}

// Calls counts the calls received for method, including those a knob made
// fail. method is a full procedure ("/oaas.deployment.DeploymentService/Deploy")
// or a bare method name ("Deploy"), which sums over every service that has it.
func (s *Sim) Calls(method string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if strings.HasPrefix(method, "/") {
		return s.calls[method]
	}
	var n int64
	for procedure, c := range s.calls {
		if strings.HasSuffix(procedure, "/"+method) {
			n += c
		}
	}
	return n
}

// CallCounts is a snapshot of the call counts by full procedure name.
func (s *Sim) CallCounts() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int64, len(s.calls))
	for k, v := range s.calls {
		out[k] = v
	}
	return out
}

// RuntimeCount is the number of runtimes the cluster runs now.
func (s *Sim) RuntimeCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.runtimes)
}

// CreatedCount is how many runtimes Deploy has created since Start; a retry
// that leaked a second unit shows up here even after a cleanup.
func (s *Sim) CreatedCount() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.created
}

// LastCorrelationID is the x-correlation-id of the latest call that carried one.
func (s *Sim) LastCorrelationID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastCorrelID
}

// LastUnit returns a copy of the latest unit Deploy received for id, exactly
// as PM sent it, or nil. id is normalised like Deploy does.
func (s *Sim) LastUnit(id string) *deploymentpb.DeploymentUnit {
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.lastUnits[normalizeName(id)]
	if !ok {
		return nil
	}
	return proto.CloneOf(u)
}

// Runtimes returns copies of the stored units, ordered by id.
func (s *Sim) Runtimes() []*deploymentpb.DeploymentUnit {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*deploymentpb.DeploymentUnit, 0, len(s.runtimes))
	for _, id := range s.sortedIDsLocked() {
		out = append(out, proto.CloneOf(s.runtimes[id].unit))
	}
	return out
}

// InjectRuntime puts a unit straight into the cluster, already RUNNING, as if
// someone deployed it behind PM's back: an orphan, or drift when it replaces
// a unit PM deployed. It does not count as a call or as created by Deploy.
func (s *Sim) InjectRuntime(unit *deploymentpb.DeploymentUnit) error {
	name, err := unitName(unit.GetId())
	if err != nil {
		return err
	}
	u := proto.CloneOf(unit)
	u.Id = name
	s.mu.Lock()
	defer s.mu.Unlock()
	s.generation++
	s.runtimes[name] = &runtime{unit: u, createdAt: time.Now(), generation: s.generation, settled: true}
	return nil
}

// RemoveRuntime deletes a unit behind PM's back, as a cluster that lost it;
// it reports whether the unit existed.
func (s *Sim) RemoveRuntime(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.runtimes[id]
	delete(s.runtimes, id)
	return ok
}

// SetDegraded marks a runtime Degraded with the given reason and text, as a
// CRM reports a failing rollout; an empty reason clears it.
func (s *Sim) SetDegraded(id, reason, text string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.runtimes[id]
	if !ok {
		return fmt.Errorf("crmsim %s: no runtime %q", s.env, id)
	}
	rt.degraded = ""
	if reason != "" {
		rt.degraded = fmt.Sprintf("Degraded (%s): %s", reason, text)
	}
	return nil
}

// Phase reports where a runtime is in its rollout.
func (s *Sim) Phase(id string) (Phase, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, ok := s.runtimes[id]
	if !ok {
		return 0, false
	}
	return s.phaseLocked(rt, time.Now()), true
}

// Phase is a runtime's state in the simulated cluster.
type Phase int

// The phases a runtime goes through. PENDING and DEPLOYING both summarise as
// "Progressing" on the wire, as in a field CRM.
const (
	PhasePending Phase = iota + 1
	PhaseDeploying
	PhaseRunning
	PhaseDegraded
)

// String names the phase like the CRM's logs do.
func (p Phase) String() string {
	switch p {
	case PhasePending:
		return "PENDING"
	case PhaseDeploying:
		return "DEPLOYING"
	case PhaseRunning:
		return "RUNNING"
	case PhaseDegraded:
		return "DEGRADED"
	default:
		return fmt.Sprintf("Phase(%d)", int(p))
	}
}

// phaseLocked derives the phase from the runtime's age, so no goroutine has
// to drive transitions and delays can change at runtime.
func (s *Sim) phaseLocked(rt *runtime, now time.Time) Phase {
	switch age := now.Sub(rt.createdAt); {
	case rt.degraded != "":
		return PhaseDegraded
	case rt.settled:
		return PhaseRunning
	case age < s.cfg.ProgressDelay:
		return PhasePending
	case age < s.cfg.ProgressDelay+s.cfg.ReadyDelay:
		return PhaseDeploying
	default:
		return PhaseRunning
	}
}

// summaryLocked is the status message a field CRM gives for a runtime.
func (s *Sim) summaryLocked(rt *runtime, now time.Time) string {
	switch s.phaseLocked(rt, now) {
	case PhaseDegraded:
		return rt.degraded
	case PhaseRunning:
		return "Available"
	default:
		return "Progressing"
	}
}

func (s *Sim) sortedIDsLocked() []string {
	return slices.Sorted(maps.Keys(s.runtimes))
}

// watch registers onChange for serving-status changes until stop is called.
func (s *Sim) watch(onChange func()) (stop func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nextWatcher++
	id := s.nextWatcher
	s.watchers[id] = onChange
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.watchers, id)
	}
}

func (s *Sim) notifyWatchersLocked() {
	for _, f := range s.watchers {
		f()
	}
}

func newRNG(seed uint64) *rand.Rand {
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}
