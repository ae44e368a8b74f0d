// Package deploy turns class deployments into per-cluster deployment units
// and keeps them running: it plans replicas from cluster availability,
// records every multi-step change as a durable operation before any CRM is
// called, fans the steps out to clusters in parallel, and resumes or repairs
// whatever a crash, a restart or a cluster's drift left behind.
package deploy

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/google/uuid"

	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	"github.com/oaas/pm/internal/deploy/plan"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// CRM is what the service needs from one cluster's CRM client.
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

// Clusters is the cluster registry the service deploys to.
type Clusters interface {
	// Names lists the configured clusters.
	Names() []string
	// Has reports whether name is configured.
	Has(name string) bool
	// CRM returns the client of a configured cluster.
	CRM(name string) (CRM, error)
	// Signals returns a cluster's (possibly cached) availability signals;
	// an error means the cluster could not be asked.
	Signals(ctx context.Context, name string) (Signals, error)
}

// Config is the deployment policy.
type Config struct {
	MaxRetries        int
	RetryBackoff      time.Duration
	RollbackOnPartial bool
	ReplicaCap        int
	Algorithm         plan.Algorithm
	DefaultTarget     float64
	HysteresisMargin  int
	Parallelism       int
	// Cascade deletes a package's deployments with it.
	Cascade bool
	// RequestWait bounds how long a request waits for its operation (0: as
	// long as the request lasts). Past it the request gets 503 and the
	// operation goes on, so a hanging CRM cannot hold a client for every
	// retry's timeout.
	RequestWait time.Duration
	// Lease is how long this PM owns an operation it works on before
	// another PM may resume it; renewed while the work goes on.
	Lease time.Duration
	// StatusPollInterval refreshes conditions from CRMs (0: off).
	StatusPollInterval time.Duration
	// ReconcileInterval compares desired units with clusters (0: off).
	ReconcileInterval time.Duration
	SelfHeal          bool
	DeleteOrphans     bool
	// Owner names this PM in operation leases; default a random id.
	Owner string
	// Clock, when set, replaces time.Now (tests).
	Clock func() time.Time
}

func (c Config) withDefaults() Config {
	if c.Parallelism < 1 {
		c.Parallelism = 32
	}
	if c.Lease <= 0 {
		c.Lease = 30 * time.Second
	}
	if c.MaxRetries < 0 {
		c.MaxRetries = 0
	}
	if c.Owner == "" {
		c.Owner = "pm-" + uuid.NewString()[:8]
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.Algorithm == "" {
		c.Algorithm = plan.Quorum
	}
	return c
}

// Hooks let tests stop an operation at a step boundary, as a crash would.
type Hooks struct {
	// BeforeStep runs before a step's CRM call; an error abandons the
	// operation where it is (its lease stays until it runs out).
	BeforeStep func(op store.Operation, step store.Step) error
	// AfterStep runs after a step's outcome was recorded.
	AfterStep func(op store.Operation, step store.Step) error
	// BeforeFinish runs before an operation's final state is written.
	BeforeFinish func(op store.Operation) error
}

// Service orchestrates deployments.
type Service struct {
	st    store.Store
	cl    Clusters
	cfg   Config
	log   *slog.Logger
	hooks Hooks

	// base ends every operation this process works on when it stops; the
	// operations stay leased and resume elsewhere or after a restart.
	base       context.Context
	cancelBase context.CancelFunc
	// work tracks operations run on behalf of requests; stopped (under
	// workMu) refuses new work once Stop began waiting for it.
	work    sync.WaitGroup
	workMu  sync.Mutex
	stopped bool
	// retryAt backs off the reconciler's retries of failed deployments.
	retryMu sync.Mutex
	retryAt map[string]retryState
	loops   sync.WaitGroup
	stop    context.CancelFunc
	running sync.Map // operation id → struct{}: operations this process works on
	// refreshed is deployment key → time of the last condition refresh.
	refreshed sync.Map
	orphans   orphanBook
	stats     Stats
}

// New returns a deployment service.
func New(st store.Store, cl Clusters, cfg Config, log *slog.Logger) *Service {
	base, cancel := context.WithCancel(context.Background())
	return &Service{st: st, cl: cl, cfg: cfg.withDefaults(), log: log, base: base, cancelBase: cancel, retryAt: map[string]retryState{}}
}

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
// outcome up to its own deadline, and the operation goes on without it.
func (s *Service) run(ctx context.Context, op store.Operation, units map[string]*deploymentpb.DeploymentUnit, bounded bool) (outcome, error) {
	type result struct {
		out outcome
		err error
	}
	ch := make(chan result, 1)
	if !s.goWork(func() {
		out, err := s.execute(ctx, op, units)
		ch <- result{out, err}
	}) {
		return outcome{}, fault.New(fault.Unavailable, "PM is shutting down; operation %s resumes on another PM or after the restart", op.ID)
	}
	var timeout <-chan time.Time
	if bounded && s.cfg.RequestWait > 0 {
		t := time.NewTimer(s.cfg.RequestWait)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case r := <-ch:
		return r.out, r.err
	case <-ctx.Done():
	case <-timeout:
	}
	return outcome{}, fault.New(fault.Unavailable,
		"operation %s is still running (a cluster is slow to answer); it goes on: GET /api/v1/operations?deployment_key=%s",
		op.ID, op.DeploymentKey)
}

// SetHooks installs test hooks; call before any work starts.
func (s *Service) SetHooks(h Hooks) { s.hooks = h }

func (s *Service) now() time.Time { return s.cfg.Clock() }

// backoff is the pause before attempt n+1: linear in n with ±20% jitter, so
// PMs retrying one CRM do not march in step.
func (s *Service) backoff(n int) time.Duration {
	base := s.cfg.RetryBackoff * time.Duration(n)
	if base <= 0 {
		return 0
	}
	jitter := time.Duration(rand.Int64N(int64(base)/5 + 1))
	return base - base/10 + jitter
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
