// Package app wires configuration, storage, cluster clients, services and
// the server together, and owns their lifecycle: start background loops,
// serve, and stop everything in order on shutdown.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/api"
	"github.com/oaas/pm/internal/catalog"
	"github.com/oaas/pm/internal/cluster"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/crmsim"
	"github.com/oaas/pm/internal/deploy"
	"github.com/oaas/pm/internal/server"
	"github.com/oaas/pm/internal/store"
	"github.com/oaas/pm/internal/store/memory"
	"github.com/oaas/pm/internal/store/postgres"
	"github.com/oaas/pm/internal/telemetry"

	"connectrpc.com/connect"
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
	closers  []func()
}

// NewLogger builds the slog logger the config asks for.
func NewLogger(cfg config.Log, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.Level}
	if cfg.Format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// OpenStore opens the configured store, migrating Postgres when asked.
func OpenStore(ctx context.Context, cfg config.Storage, log *slog.Logger) (store.Store, error) {
	switch cfg.Type {
	case "memory":
		log.Info("using in-memory storage; data is lost on restart")
		return memory.New(nil), nil
	case "postgres":
		if cfg.AutoMigrate {
			if err := postgres.MigrateURL(ctx, cfg.DatabaseURL, postgres.Up, io.Discard); err != nil {
				return nil, fmt.Errorf("applying migrations: %w", err)
			}
		}
		st, err := postgres.Open(ctx, postgres.Config{URL: cfg.DatabaseURL, MaxConns: int32(cfg.MaxConns), Timeout: cfg.Timeout})
		if err != nil {
			return nil, fmt.Errorf("opening postgres: %w", err)
		}
		log.Info("using postgres storage", "auto_migrate", cfg.AutoMigrate)
		return st, nil
	}
	return nil, fmt.Errorf("STORAGE_TYPE %q is not supported", cfg.Type)
}

// New builds a PM from cfg and binds its listener; Run serves it.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (a *App, err error) {
	a = &App{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	st, err := OpenStore(ctx, cfg.Storage, log)
	if err != nil {
		return nil, err
	}
	a.store = st
	a.closers = append(a.closers, st.Close)

	clusters, err := openClusters(ctx, cfg.CRM, log, &a.closers)
	if err != nil {
		return nil, err
	}
	a.clusters = clusters

	deployments, err := deploy.New(st, deploy.FromManager(clusters), deploy.ConfigFrom(cfg), log.With("component", "deploy"))
	if err != nil {
		return nil, err
	}
	a.deploy = deployments
	a.closers = append(a.closers, deployments.Stop)

	registry := catalog.New(st, deployments, log)
	idem := api.NewIdempotency(st, cfg.Reconcile.IdempotencyTTL, cfg.CRM.Timeout+2*time.Second)
	interceptors := []connect.Interceptor{api.Interceptor(log)}
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
			m.Gauge("pm_orphan_units", "Units with PM's id scheme that PM does not know, as last reconciled.",
				func() float64 { return float64(len(deployments.Orphans())) }),
		); err != nil {
			return nil, fmt.Errorf("registering metrics: %w", err)
		}
		metricsHandler = m.Handler()
		a.metrics = metricsHandler
	}
	opts := []connect.HandlerOption{connect.WithInterceptors(interceptors...), connect.WithRecover(api.Recover(log))}
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

	srv, err := server.New(server.Config{
		Addr: cfg.Server.Addr(), Services: services, Health: a.health,
		MaxBodyBytes: cfg.Server.MaxBodyBytes, Log: log, Metrics: metricsHandler,
	})
	if err != nil {
		return nil, err
	}
	a.server = srv
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", cfg.Server.Addr())
	if err != nil {
		return nil, fmt.Errorf("listening on %s (SERVER_HOST/SERVER_PORT): %w", cfg.Server.Addr(), err)
	}
	a.listener = ln
	return a, nil
}

// openClusters builds the cluster manager. With no CRM configured it first
// starts an in-process simulated cluster named "default", so a fresh PM can
// deploy for real. Closers are appended so the manager closes before the
// simulator, both after the server.
func openClusters(ctx context.Context, cfg config.CRM, log *slog.Logger, closers *[]func()) (*cluster.Manager, error) {
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
	m, err := cluster.New(cfg, log)
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

// health reports storage reachability.
func (a *App) health(ctx context.Context) (bool, map[string]any) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	details := map[string]any{"service": "oaas-pm", "storage": a.cfg.Storage.Type}
	if err := a.store.Ping(ctx); err != nil {
		details["storage_error"] = "storage unavailable"
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
	go func() { errc <- a.server.Serve(a.listener) }()
	a.log.Info("pm listening", "addr", a.Addr(), "storage", a.cfg.Storage.Type)
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
	mux.Handle("GET /metrics", a.metrics)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
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
