// Package app wires configuration, storage, cluster clients, services and
// the server together, and owns their lifecycle: start background loops,
// serve, and stop everything in order on shutdown.
package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/gen/openapi"
	"github.com/oaas/pm/internal/api"
	"github.com/oaas/pm/internal/audit"
	"github.com/oaas/pm/internal/auth"
	"github.com/oaas/pm/internal/catalog"
	"github.com/oaas/pm/internal/cluster"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/crmsim"
	"github.com/oaas/pm/internal/deploy"
	"github.com/oaas/pm/internal/gateway"
	"github.com/oaas/pm/internal/server"
	"github.com/oaas/pm/internal/store"
	"github.com/oaas/pm/internal/store/memory"
	"github.com/oaas/pm/internal/store/postgres"
	"github.com/oaas/pm/internal/telemetry"
	"github.com/oaas/pm/internal/tlsreload"
	"github.com/oaas/pm/internal/ui"
	"github.com/oaas/pm/internal/version"
	"github.com/oaas/pm/internal/watch"

	"connectrpc.com/connect"
	"connectrpc.com/otelconnect"
)

// App is a running PM.
type App struct {
	cfg      config.Config
	log      *slog.Logger
	store    store.Store
	clusters *cluster.Manager
	deploy   *deploy.Service
	metrics  http.Handler
	server   *server.Server
	listener net.Listener
	authn    *auth.Authenticator
	authOpts auth.Options
	tls      *tlsreload.Reloader
	purger   *audit.Purger
	watch    *watch.Hub
	closers  []func()
}

// NewLogger builds the slog logger the config asks for. Durations print as
// Go durations ("60s", not 60000000000), and a record logged with a traced
// context carries its trace_id and span_id.
func NewLogger(cfg config.Log, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.Level, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Value.Kind() == slog.KindDuration {
			return slog.String(a.Key, a.Value.Duration().String())
		}
		return a
	}}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if cfg.Format == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(telemetry.LogHandler{Handler: h})
}

// OpenStore opens the configured store, migrating Postgres when asked. The
// dial, the migration and the first ping are bounded by cfg.Timeout
// (DATABASE_TIMEOUT), so a database that never answers stops start-up with
// a message instead of hanging it.
func OpenStore(ctx context.Context, cfg config.Storage, log *slog.Logger) (store.Store, error) {
	switch cfg.Type {
	case "memory":
		log.Info("using in-memory storage; data is lost on restart")
		return memory.New(nil), nil
	case "postgres":
		log.Info("connecting to postgres", "timeout", cfg.Timeout.String(), "auto_migrate", cfg.AutoMigrate)
		pcfg := postgres.Config{URL: cfg.DatabaseURL, MaxConns: int32(cfg.MaxConns), Timeout: cfg.Timeout}
		if cfg.AutoMigrate {
			if err := postgres.MigrateConfig(ctx, pcfg, postgres.Up, io.Discard); err != nil {
				return nil, fmt.Errorf("applying migrations (DATABASE_URL, DATABASE_TIMEOUT): %w", err)
			}
		}
		st, err := postgres.OpenAndPing(ctx, pcfg)
		if err != nil {
			return nil, fmt.Errorf("connecting to postgres (DATABASE_URL, DATABASE_TIMEOUT): %w", err)
		}
		log.Info("using postgres storage")
		return st, nil
	}
	return nil, fmt.Errorf("STORAGE_TYPE %q is not supported", cfg.Type)
}

// New builds a PM from cfg and binds its listener; Run serves it. On error
// everything already started is released.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (*App, error) {
	a := &App{cfg: cfg, log: log}
	if err := a.build(ctx); err != nil {
		a.close()
		return nil, err
	}
	return a, nil
}

func (a *App) build(ctx context.Context) error {
	cfg, log := a.cfg, a.log
	if err := cfg.CheckExposure(); err != nil {
		return err
	}
	for _, w := range cfg.SecurityWarnings() {
		log.Warn(w)
	}
	authn, authOpts, err := auth.FromConfig(ctx, cfg, log.With("component", "auth"))
	if err != nil {
		return fmt.Errorf("authentication: %w", err)
	}
	a.authn = authn
	var tlsConfig *tls.Config
	if cfg.TLS.Enabled() {
		rl, err := tlsreload.New(tlsreload.Files{CertFile: cfg.TLS.CertFile, KeyFile: cfg.TLS.KeyFile, ClientCAFile: cfg.TLS.ClientCAFile},
			tlsreload.Options{Interval: cfg.Auth.ReloadInterval, Log: log.With("component", "tls")})
		if err != nil {
			return fmt.Errorf("server TLS (SERVER_TLS_CERT_FILE, SERVER_TLS_KEY_FILE): %w", err)
		}
		a.tls = rl
		tlsConfig = rl.TLSConfig()
	}

	tracing, err := telemetry.SetupTracing(ctx, cfg.Tracing, log)
	if err != nil {
		return err
	}
	a.closers = append(a.closers, func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := tracing.Shutdown(sctx); err != nil {
			log.Warn("flushing traces", "error", err.Error())
		}
	})

	st, err := OpenStore(ctx, cfg.Storage, log)
	if err != nil {
		return err
	}
	a.store = st
	a.closers = append(a.closers, st.Close)

	var crmOpts []cluster.Option
	if cfg.Tracing.Enabled {
		// Every CRM call is a client span, and the CRM receives the trace
		// context (traceparent) of the request or operation behind it.
		crmTracing, err := otelconnect.NewInterceptor(otelconnect.WithTracerProvider(tracing.Provider),
			otelconnect.WithPropagator(tracing.Propagator), otelconnect.WithoutMetrics())
		if err != nil {
			return fmt.Errorf("tracing interceptor: %w", err)
		}
		crmOpts = append(crmOpts, cluster.WithInterceptors(crmTracing))
	}
	clusters, err := openClusters(ctx, cfg.CRM, log, &a.closers, crmOpts...)
	if err != nil {
		return err
	}
	a.clusters = clusters

	deployments, err := deploy.New(st, deploy.FromManager(clusters), deploy.ConfigFrom(cfg), log.With("component", "deploy"))
	if err != nil {
		return err
	}
	a.deploy = deployments
	a.closers = append(a.closers, deployments.Stop)

	registry := catalog.New(st, deployments, log)
	idem := api.NewIdempotency(st, cfg.Reconcile.IdempotencyTTL, cfg.CRM.Timeout+2*time.Second)
	serviceNames := []string{pmv1connect.PackageServiceName, pmv1connect.CatalogServiceName, pmv1connect.ClusterServiceName,
		pmv1connect.DeploymentServiceName, pmv1connect.ClassRuntimeServiceName, pmv1connect.AuditServiceName,
		pmv1connect.WatchServiceName, pmv1connect.TopologyServiceName}
	fields := server.NewFields(api.FieldAliases)
	authz := auth.NewInterceptor(authOpts.Policy, log.With("component", "auth"))
	routes, err := audit.RoutesFor(serviceNames)
	if err != nil {
		return err
	}
	recorder, purger := audit.FromConfig(st, cfg.Audit, routes, log.With("component", "audit"))
	a.purger = purger
	a.closers = append(a.closers, purger.Stop)
	authOpts.OnRefused = func(r *http.Request, code connect.Code, reason string) {
		recorder.RecordDenied(r.Context(), r, auth.Principal{}, code, reason)
	}
	// Outermost first: metrics see every outcome; the audit trail records
	// writes and refusals with their final code; authorization refuses
	// before anything else runs (and outside the api interceptor, whose
	// error mapping is for the services' errors); the api interceptor gives
	// each call its correlation id and maps every error (the field policy's
	// too) to a clean connect error.
	interceptors := []connect.Interceptor{recorder.Interceptor(), authz, api.Interceptor(log), fields.Interceptor()}
	if cfg.Tracing.Enabled {
		// Outermost: the server span covers everything the call does, and
		// the caller's traceparent is its parent.
		otelInterceptor, err := otelconnect.NewInterceptor(otelconnect.WithTracerProvider(tracing.Provider),
			otelconnect.WithPropagator(tracing.Propagator), otelconnect.WithoutMetrics(), otelconnect.WithTrustRemote())
		if err != nil {
			return fmt.Errorf("tracing interceptor: %w", err)
		}
		interceptors = append([]connect.Interceptor{otelInterceptor}, interceptors...)
	}
	var metricsHandler http.Handler
	if cfg.Metrics.Enabled {
		m := telemetry.New()
		interceptors = append([]connect.Interceptor{m.Interceptor()}, interceptors...)
		stats := deployments.Stats()
		snap := stats.Snapshot()
		keys := make([]string, 0, len(snap))
		for k := range snap {
			keys = append(keys, k)
		}
		if err := errors.Join(
			m.Counters("deploy", "Deploy machinery events", keys, stats.Snapshot),
			m.Counters("audit", "Audit trail events", audit.StatKeys, recorder.Stats),
			m.Gauge("pm_orphan_units", "Units with PM's id scheme that PM does not know, as last reconciled.",
				func() float64 { return float64(len(deployments.Orphans())) }),
		); err != nil {
			return fmt.Errorf("registering metrics: %w", err)
		}
		metricsHandler = m.Handler()
		a.metrics = metricsHandler
	}
	opts := append(fields.HandlerOptions(cfg.Server.MaxBodyBytes),
		connect.WithInterceptors(interceptors...), connect.WithRecover(api.Recover(log)))
	pkgs := api.NewPackages(registry, idem)
	deps := api.NewDeployments(deployments, idem)
	var services []server.Service
	// mount takes the name first so the generated constructors' two results
	// can be passed straight through.
	mount := func(name string) func(string, http.Handler) {
		return func(path string, h http.Handler) {
			services = append(services, server.Service{Name: name, Path: path, Handler: h})
		}
	}
	mount(pmv1connect.PackageServiceName)(pmv1connect.NewPackageServiceHandler(pkgs, opts...))
	mount(pmv1connect.CatalogServiceName)(pmv1connect.NewCatalogServiceHandler(pkgs, opts...))
	mount(pmv1connect.ClusterServiceName)(pmv1connect.NewClusterServiceHandler(api.NewClusters(clusters), opts...))
	mount(pmv1connect.DeploymentServiceName)(pmv1connect.NewDeploymentServiceHandler(deps, opts...))
	mount(pmv1connect.ClassRuntimeServiceName)(pmv1connect.NewClassRuntimeServiceHandler(deps, opts...))
	mount(pmv1connect.AuditServiceName)(pmv1connect.NewAuditServiceHandler(api.NewAudit(st), opts...))
	a.watch = watch.New(changeFeed(st, log.With("component", "watch")), api.WatchResolvers(registry, deployments), watch.Options{Log: log.With("component", "watch")})
	clusters.OnHealthChange(api.PublishClusterHealth(a.watch))
	mount(pmv1connect.WatchServiceName)(pmv1connect.NewWatchServiceHandler(api.NewWatch(a.watch, registry, deployments, clusters), opts...))
	mount(pmv1connect.TopologyServiceName)(pmv1connect.NewTopologyServiceHandler(api.NewTopology(registry, deployments), opts...))

	gw, err := gateway.Handler(gateway.Config{URL: cfg.Gateway.URL, Timeout: cfg.Gateway.Timeout,
		MaxBodyBytes: cfg.Gateway.MaxPayloadBytes, Log: log.With("component", "gateway")})
	if err != nil {
		return err
	}
	a.authOpts = authOpts
	srv, err := server.New(server.Config{
		Routes: map[string]http.Handler{
			gateway.Prefix: requireRole(auth.Viewer, auth.Deployer, gw),
			ui.Prefix:      ui.Handler(),
			// The console is what a browser pointed at PM wants.
			"GET /{$}": http.RedirectHandler(ui.Prefix, http.StatusFound),
		},
		Addr: cfg.Server.Addr(), Services: services, Ready: a.ready, Aliases: api.FieldAliases,
		Limits: server.Limits{
			MaxBodyBytes: cfg.Server.MaxBodyBytes, ReadTimeout: cfg.Server.ReadTimeout,
			IdleTimeout: cfg.Server.IdleTimeout, RequestTimeout: cfg.Server.RequestTimeout,
			MaxConnections: cfg.Server.MaxConnections, MaxHeaderBytes: cfg.Server.MaxHeaderBytes,
		},
		Log: log, Metrics: metricsHandler, OpenAPI: openapi.JSON, Docs: docsFS(),
		TLS: tlsConfig, HandlerOptions: []connect.HandlerOption{connect.WithInterceptors(authz)},
		Wrap: func(h http.Handler) http.Handler {
			return auth.CORS(cfg.CORS, auth.Middleware(authn, authOpts)(h))
		},
	})
	if err != nil {
		return err
	}
	a.server = srv
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Server.Addr())
	if err != nil {
		return fmt.Errorf("listening on %s (SERVER_HOST/SERVER_PORT): %w", cfg.Server.Addr(), err)
	}
	a.listener = ln
	a.closers = append(a.closers, func() { _ = ln.Close() })
	return nil
}

// requireRole lets reads (GET, HEAD) through for principals of role read
// and anything else for role write: a guard for routes outside the RPC
// role table, such as the gateway proxy.
func requireRole(read, write auth.Role, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		need := write
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			need = read
		}
		if p, ok := auth.FromContext(r.Context()); !ok || !p.Role.Allows(need) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusForbidden)
			_, _ = fmt.Fprintf(w, "{\"error\": %q}\n", "requires role "+need.String())
			return
		}
		next.ServeHTTP(w, r)
	})
}

// docsFS is the reference page's files.
func docsFS() fs.FS {
	sub, err := fs.Sub(openapi.UI, "ui")
	if err != nil {
		panic(err) // the embed pattern guarantees the directory
	}
	return sub
}

// openClusters builds the cluster manager. With no CRM configured it first
// starts an in-process simulated cluster named "default", so a fresh PM can
// deploy for real. Closers are appended so the manager closes before the
// simulator, both after the server.
func openClusters(ctx context.Context, cfg config.CRM, log *slog.Logger, closers *[]func(), opts ...cluster.Option) (*cluster.Manager, error) {
	if cfg.EmbeddedSimulator && len(cfg.Clusters) == 0 {
		sim, err := crmsim.Start(context.WithoutCancel(ctx), crmsim.Config{
			Addr: "127.0.0.1:0", EnvName: "default", Logger: log.With("component", "crmsim"),
		})
		if err != nil {
			return nil, fmt.Errorf("starting the embedded simulated cluster: %w", err)
		}
		*closers = append(*closers, func() {
			if err := sim.Close(); err != nil {
				log.Warn("closing the embedded simulated cluster", "error", err)
			}
		})
		cfg.Clusters = []config.Cluster{{Name: "default", URL: sim.URL()}}
		log.Info("no CRM configured; started an embedded simulated cluster", "cluster", "default", "addr", sim.Addr())
	}
	m, err := cluster.New(cfg, log, opts...)
	if err != nil {
		return nil, err
	}
	*closers = append(*closers, m.Close)
	return m, nil
}

// Clusters is the cluster manager, for wiring services that talk to CRMs.
func (a *App) Clusters() *cluster.Manager { return a.clusters }

// Deployments is the deployment service (tests drive its loops directly).
func (a *App) Deployments() *deploy.Service { return a.deploy }

// Addr is the bound listen address (useful with port 0).
func (a *App) Addr() string { return a.listener.Addr().String() }

// ready reports whether PM can serve: storage reachable and its schema at
// the migration this build expects. The details are the fields OaaS tools
// read from /health (service, version, storage) and are safe for anyone.
func (a *App) ready(ctx context.Context) (bool, map[string]any) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	storage := map[string]any{"status": "ok", "type": a.cfg.Storage.Type}
	details := map[string]any{"service": "oaas-pm", "version": version.String(), "storage": storage}
	if err := a.store.Ready(ctx); err != nil {
		storage["status"], storage["message"] = "error", api.ClientMessage(err)
		return false, details
	}
	return true, details
}

// Run serves until ctx is done, then drains in-flight requests within the
// shutdown timeout and releases everything.
func (a *App) Run(ctx context.Context) error {
	defer a.close()
	errc := make(chan error, 1)
	if err := a.clusters.Start(ctx); err != nil {
		return err
	}
	if err := a.deploy.Start(ctx); err != nil {
		return err
	}
	// Ends with ctx, which cuts every watch off, so shutdown does not wait
	// for open streams.
	go a.watch.Run(ctx)
	if a.authn != nil {
		go a.authn.Run(ctx)
	}
	a.purger.Start()
	if a.tls != nil {
		go a.tls.Run(ctx)
	}
	go func() { errc <- a.server.Serve(a.listener) }()
	a.log.Info("pm listening", "addr", a.Addr(), "storage", a.cfg.Storage.Type,
		"tls", a.tls != nil, "auth", a.authn != nil, "version", version.String())
	if stop := a.serveMetrics(ctx); stop != nil {
		defer stop()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	a.log.Info("shutting down", "timeout", a.cfg.Server.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.cfg.Server.ShutdownTimeout)
	defer cancel()
	err := a.server.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("in-flight requests did not finish within %s", a.cfg.Server.ShutdownTimeout)
	}
	if serveErr := <-errc; err == nil {
		err = serveErr
	}
	return err
}

// serveMetrics serves /metrics on METRICS_PORT as well as on the API port.
// A busy metrics port is logged, not fatal: the API port still serves it,
// and several PMs on one host (tests, local demos) must not collide.
func (a *App) serveMetrics(ctx context.Context) (stop func()) {
	if a.metrics == nil || a.cfg.Metrics.Port <= 0 {
		return nil
	}
	addr := net.JoinHostPort(a.cfg.Server.Host, strconv.Itoa(a.cfg.Metrics.Port))
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		a.log.Warn("metrics port unavailable; /metrics is still served on the API port", "addr", addr, "error", err)
		return nil
	}
	mux := http.NewServeMux()
	// The metrics port follows the API port's rules: the same
	// authentication (unless AUTH_METRICS_OPEN) and the same TLS.
	mux.Handle("GET /metrics", auth.Middleware(a.authn, a.authOpts)(a.metrics))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	if a.tls != nil {
		srv.TLSConfig = a.tls.TLSConfig()
		go func() { _ = srv.ServeTLS(ln, "", "") }()
	} else {
		go func() { _ = srv.Serve(ln) }()
	}
	a.log.Info("metrics listening", "addr", ln.Addr().String())
	return func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}
}

func (a *App) close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		a.closers[i]()
	}
	a.closers = nil
}
