// Package inproc runs the system under test inside a benchmark's own
// process: simulated clusters (crmsim) on loopback and a PM configured with
// them, started and stopped in order.
package inproc

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/oaas/pm/internal/app"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/crmsim"
)

// Sims are simulated clusters running in this process.
type Sims []*crmsim.Sim

// StartSims starts n simulated clusters, the i-th (from 0) configured by
// cfg(i); if one fails to start, those already started are closed.
func StartSims(ctx context.Context, n int, cfg func(i int) crmsim.Config) (Sims, error) {
	cfgs := make([]crmsim.Config, n)
	for i := range cfgs {
		cfgs[i] = cfg(i)
	}
	return crmsim.StartMany(ctx, cfgs)
}

// Close stops every simulator.
func (s Sims) Close() {
	for _, sim := range s {
		_ = sim.Close() // a simulator that fails to stop leaves nothing behind
	}
}

// Names are the simulators' cluster names, in order.
func (s Sims) Names() []string {
	out := make([]string, len(s))
	for i, sim := range s {
		out[i] = sim.EnvName()
	}
	return out
}

// Config is PM's default configuration for a benchmark over sims: listening
// on a free loopback port, metrics off, no deployment status polling and no
// reconcile loop, and every simulator a cluster.
func Config(sims Sims) config.Config {
	cfg := config.Default()
	cfg.Server.Host, cfg.Server.Port = "127.0.0.1", 0
	cfg.Deploy.StatusPollInterval = 0
	cfg.Reconcile.Interval = 0
	cfg.Metrics.Enabled = false
	for _, s := range sims {
		cfg.CRM.Clusters = append(cfg.CRM.Clusters, config.Cluster{Name: s.EnvName(), URL: s.URL()})
	}
	return cfg
}

// ErrNotStopped is what Stop returns when PM has not stopped within its
// shutdown timeout and 5 seconds more.
var ErrNotStopped = errors.New("PM did not stop in time")

// PM is a PM serving in this process.
type PM struct {
	app     *app.App
	cancel  context.CancelFunc
	done    chan error
	stopMax time.Duration
}

// StartPM validates cfg and starts a PM with it, logging to log. It serves
// until Stop or until ctx is done.
func StartPM(ctx context.Context, cfg config.Config, log *slog.Logger) (*PM, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	a, err := app.New(runCtx, cfg, log)
	if err != nil {
		cancel()
		return nil, err
	}
	p := &PM{app: a, cancel: cancel, done: make(chan error, 1), stopMax: cfg.Server.ShutdownTimeout + 5*time.Second}
	go func() { p.done <- a.Run(runCtx) }()
	return p, nil
}

// Addr is the host:port PM listens on.
func (p *PM) Addr() string { return p.app.Addr() }

// URL is PM's base URL, http://host:port.
func (p *PM) URL() string { return "http://" + p.app.Addr() }

// Stop shuts PM down and waits until it has stopped. It returns what PM's
// Run returned, or ErrNotStopped.
func (p *PM) Stop() error {
	p.cancel()
	select {
	case err := <-p.done:
		return err
	case <-time.After(p.stopMax):
		return ErrNotStopped
	}
}
