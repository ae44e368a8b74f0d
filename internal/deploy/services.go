package deploy

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/oaas/pm/internal/correlation"
)

// The background services, in the style of river's maintenance services:
// each is a small type with its own config (validated when it is built),
// Start and Stop, a RunOnce that does one pass and returns what it did,
// paged reads, a jittered period, and test signals a test can wait on.
//
//	Resumer  (resume.go)   claims operations whose lease ran out and runs them
//	Planner  (replan.go)   re-plans replicas; deploys staged and failed deployments
//	Observer (observe.go)  lists each cluster once per pass and feeds
//	                       condition refresh (conditions.go), drift repair
//	                       (drift.go) and the orphan scan (orphans.go)
//	Purger   (purge.go)    deletes finished operations and expired keys
//
// Their cost per pass follows the number of clusters (one paged listing
// each) and pages of rows, never a CRM call per deployment.

// service is what Service starts and stops.
type service interface {
	Start(ctx context.Context) error
	Stop()
}

func (s *Service) services() []service {
	return []service{s.resumer, s.planner, s.observer, s.purger}
}

// loop is the life cycle every service shares: a goroutine that runs a
// pass every period (±10% jitter, so PM replicas spread out) until Stop.
type loop struct {
	name   string
	period time.Duration
	log    *slog.Logger
	pass   func(ctx context.Context)

	mu     sync.Mutex
	cancel context.CancelFunc
	done   chan struct{}
}

// Start runs the loop; a zero period leaves the service off. Starting a
// running service is an error.
func (l *loop) Start(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done != nil {
		return errors.New(l.name + ": already started")
	}
	if l.period <= 0 {
		return nil
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	l.cancel, l.done = cancel, make(chan struct{})
	done := l.done
	go func() {
		defer close(done)
		for {
			if sleep(ctx, jittered(l.period)) != nil {
				return
			}
			l.pass(correlation.With(ctx, l.name+"-"+correlation.New()))
		}
	}()
	l.log.Debug("background service started", "service", l.name, "period", l.period)
	return nil
}

// Stop ends the loop and waits for a pass in progress.
func (l *loop) Stop() {
	l.mu.Lock()
	cancel, done := l.cancel, l.done
	l.cancel, l.done = nil, nil
	l.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

// jittered is d ± 10%.
func jittered(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d - d/10 + time.Duration(rand.Int64N(int64(d)/5+1))
}

// Signal carries what a service did to a test waiting for it. It drops
// everything until Init is called (before the service starts), so
// production pays nothing.
type Signal[T any] struct{ ch chan T }

// Init makes the signal keep values for Wait; call it before Start.
func (s *Signal[T]) Init() { s.ch = make(chan T, 128) }

// Wait returns the next value, or ctx's error.
func (s *Signal[T]) Wait(ctx context.Context) (T, error) {
	var zero T
	if s.ch == nil {
		return zero, errors.New("signal not initialised")
	}
	select {
	case v := <-s.ch:
		return v, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	}
}

func (s *Signal[T]) send(v T) {
	if s.ch == nil {
		return
	}
	select {
	case s.ch <- v:
	default:
	}
}

// Stats counts what the core did; metrics read it.
type Stats struct {
	resumed, abandoned, stepRetries, rollbacks atomic.Int64
	healed, adopted, orphansDeleted            atomic.Int64
	clusterSkips, observePasses, listCalls     atomic.Int64
	conditionsChanged, replanned, retried      atomic.Int64
}

// Snapshot returns the counters by name.
func (s *Stats) Snapshot() map[string]int64 {
	return map[string]int64{
		"operations_resumed":      s.resumed.Load(),
		"operations_abandoned":    s.abandoned.Load(),
		"step_retries":            s.stepRetries.Load(),
		"rollbacks":               s.rollbacks.Load(),
		"units_healed":            s.healed.Load(),
		"units_adopted":           s.adopted.Load(),
		"orphans_deleted":         s.orphansDeleted.Load(),
		"reconcile_cluster_skips": s.clusterSkips.Load(),
		"observe_passes":          s.observePasses.Load(),
		"crm_list_calls":          s.listCalls.Load(),
		"conditions_changed":      s.conditionsChanged.Load(),
		"deployments_replanned":   s.replanned.Load(),
		"deployments_retried":     s.retried.Load(),
	}
}

// Stats returns the core's counters.
func (s *Service) Stats() *Stats { return &s.stats }
