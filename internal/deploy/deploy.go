// Package deploy turns class deployments into per-cluster deployment units
// and keeps them running. Where things live:
//
//   - model.go: the core's own model (deployments, rollouts, operations and
//     their typed states); rows.go converts it to the store's rows, and
//     internal/api converts it to oaas.pm.v1.
//   - machine.go: each operation kind's state machine, a table of state ×
//     event → action and next state; executor.go runs operations through
//     it, one transaction per step outcome and per transition, and survives
//     a crash at any boundary (leases, resume).
//   - create.go, update.go, lifecycle.go: the requests (plan and create,
//     apply and update with spec revisions and rollback, delete, reads)
//     and the hooks the package registry calls (hooks.go); select.go
//     places a deployment that names no clusters; effective.go is what PM
//     fills into a spec (ODGM defaults, node ids, derived functions).
//   - runtime.go: runtime views, asked of the clusters on demand.
//   - services.go and the files it names: the background services (resume,
//     re-plan, cluster observation feeding drift repair, condition refresh
//     and the orphan scan, purge), each with its own config, Start/Stop,
//     RunOnce and test signals.
//   - unit.go, plan/: unit ids and unit building, replica planning; pure.
package deploy

import (
	"context"
	"log/slog"
	"sync"
	"time"

	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	"github.com/oaas/pm/internal/deploy/plan"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// CRM is what the core needs from one cluster's CRM client.
type CRM interface {
	Deploy(ctx context.Context, unit *deploymentpb.DeploymentUnit) (*deploymentpb.DeployResponse, error)
	Delete(ctx context.Context, id string) (*deploymentpb.DeleteDeploymentResponse, error)
	Status(ctx context.Context, id string) (*deploymentpb.GetDeploymentStatusResponse, error)
	List(ctx context.Context, req *deploymentpb.ListClassRuntimesRequest) (*deploymentpb.ListClassRuntimesResponse, error)
	Get(ctx context.Context, id string) (*deploymentpb.GetClassRuntimeResponse, error)
}

// Signals is what a cluster's health says about its availability. Any field
// may be absent.
type Signals struct {
	Availability          *float64
	NodeCount, ReadyNodes *uint32
	// Rank orders clusters for placement: 0 healthy, 1 degraded, 2 other.
	Rank int
}

// Clusters is the cluster registry the core deploys to.
type Clusters interface {
	// Names lists the configured clusters, sorted.
	Names() []string
	// Has reports whether name is configured.
	Has(name string) bool
	// CRM returns the client of a configured cluster.
	CRM(name string) (CRM, error)
	// Signals returns a cluster's (possibly cached) availability signals;
	// an error means the cluster could not be asked.
	Signals(ctx context.Context, name string) (Signals, error)
	// LastSignals returns the last known signals without asking the
	// cluster; false when there are none yet.
	LastSignals(name string) (Signals, bool)
}

// Hooks let tests stop an operation at a step boundary, as a crash would.
type Hooks struct {
	// BeforeStep runs before a step's CRM call; an error abandons the
	// operation where it is (its lease stays until it runs out).
	BeforeStep func(op Operation, step Step) error
	// AfterStep runs after a step's outcome was recorded.
	AfterStep func(op Operation, step Step) error
	// BeforeFinish runs before an operation's transition is applied.
	BeforeFinish func(op Operation) error
}

// Service is the deployment core: requests, hooks for the package
// registry, and the background services.
type Service struct {
	st   store.Store
	cl   Clusters
	cfg  Config
	alg  plan.Algorithm
	log  *slog.Logger
	exec *executor

	resumer  *Resumer
	planner  *Planner
	observer *Observer
	purger   *Purger

	// work tracks operations run on behalf of requests and package writes;
	// stopped (under workMu) refuses new work once Stop began waiting.
	work    sync.WaitGroup
	workMu  sync.Mutex
	stopped bool

	stats Stats
}

// New returns the deployment core over st and cl; cfg is validated here.
func New(st store.Store, cl Clusters, cfg Config, log *slog.Logger) (*Service, error) {
	cfg, alg, err := cfg.settle()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{st: st, cl: cl, cfg: cfg, alg: alg, log: log}
	s.exec = newExecutor(s)
	s.resumer = newResumer(s)
	s.planner = newPlanner(s)
	s.observer = newObserver(s)
	s.purger = newPurger(s)
	return s, nil
}

// SetHooks installs test hooks; call before any work starts.
func (s *Service) SetHooks(h Hooks) { s.exec.hooks = h }

// Resumer is the service that resumes operations whose PM died.
func (s *Service) Resumer() *Resumer { return s.resumer }

// Planner is the service that re-plans deployments and deploys staged
// and failed ones.
func (s *Service) Planner() *Planner { return s.planner }

// Observer is the service that lists every cluster and feeds drift
// repair, condition refresh and the orphan scan.
func (s *Service) Observer() *Observer { return s.observer }

// Purger is the service that deletes expired records.
func (s *Service) Purger() *Purger { return s.purger }

func (s *Service) now() time.Time { return s.cfg.Clock() }

// Start starts the background services (those whose interval is set).
func (s *Service) Start(ctx context.Context) error {
	for _, svc := range s.services() {
		if err := svc.Start(ctx); err != nil {
			s.Stop()
			return err
		}
	}
	return nil
}

// Stop stops the background services and the operations in flight (they
// stay leased and resume after a restart or on another PM) and waits for
// all of them.
func (s *Service) Stop() {
	// Operations first: a pass waiting on one (a heal) then ends at once.
	s.exec.stop()
	for _, svc := range s.services() {
		svc.Stop()
	}
	s.workMu.Lock()
	s.stopped = true
	s.workMu.Unlock()
	s.work.Wait()
}

// Wait waits for the operations started on behalf of requests and package
// writes (not the background services).
func (s *Service) Wait() { s.work.Wait() }

// goWork runs fn as tracked work unless the service is stopping.
func (s *Service) goWork(fn func()) bool {
	s.workMu.Lock()
	defer s.workMu.Unlock()
	if s.stopped {
		return false
	}
	s.work.Go(fn)
	return true
}

// run executes an operation for a request: the request waits for the
// outcome up to its own deadline (and, when bounded, about one CRM
// timeout), and the operation goes on without it.
func (s *Service) run(ctx context.Context, op Operation, units map[string]*deploymentpb.DeploymentUnit, bounded bool) (Outcome, error) {
	type result struct {
		out Outcome
		err error
	}
	ch := make(chan result, 1)
	if !s.goWork(func() {
		out, err := s.exec.run(ctx, op, units)
		ch <- result{out, err}
	}) {
		return Outcome{}, fault.New(fault.Unavailable, "PM is shutting down; operation %s resumes on another PM or after the restart", op.ID)
	}
	var timeout <-chan time.Time
	if bounded {
		t := time.NewTimer(s.cfg.CRMTimeout + requestWaitSlack)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case r := <-ch:
		return r.out, r.err
	case <-ctx.Done():
	case <-timeout:
	}
	return Outcome{}, stillRunning(op)
}

// stillRunning is what a request that stopped waiting for its operation
// gets.
func stillRunning(op Operation) error {
	return fault.New(fault.Unavailable,
		"operation %s of deployment %q is still running (a cluster is slow to answer); it goes on, and its outcome shows on the deployment and its operations",
		op.ID, op.DeploymentKey)
}
