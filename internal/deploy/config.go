package deploy

import (
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/deploy/plan"
)

// Config is what the deployment core runs with. Its settings are the
// configuration's own sections, validated and defaulted there (config) and
// nowhere else; the background services derive their small configs from
// it (see each service's constructor).
type Config struct {
	// Deploy is the deployment policy (retries, replicas, parallelism,
	// condition refresh interval).
	Deploy config.Deploy
	// Reconcile is the background work (drift repair interval, lease,
	// self-heal, orphans).
	Reconcile config.Reconcile
	// Cascade deletes a package's deployments with it.
	Cascade bool
	// CRMTimeout is one CRM call's deadline: a request waits for its
	// operation about that long, and observation passes are bounded by it
	// per call.
	CRMTimeout time.Duration
	// Owner names this PM in operation leases; default a random id.
	Owner string
	// Clock, when set, replaces time.Now (tests).
	Clock func() time.Time
}

// ConfigFrom takes the core's settings out of PM's configuration.
func ConfigFrom(c config.Config) Config {
	return Config{Deploy: c.Deploy, Reconcile: c.Reconcile, Cascade: c.PackageDelete.Cascade, CRMTimeout: c.CRM.Timeout}
}

// DefaultConfig is ConfigFrom(config.Default()): PM's defaults, for tests
// and tools that tweak a few settings.
func DefaultConfig() Config { return ConfigFrom(config.Default()) }

// requestWaitSlack is what a request waits for its operation beyond one CRM
// timeout: the store writes around the CRM call.
const requestWaitSlack = 2 * time.Second

// settle validates c and fills what is not a setting (owner, clock).
func (c Config) settle() (Config, plan.Algorithm, error) {
	alg, algErr := plan.ParseAlgorithm(c.Deploy.ReplicaAlgorithm)
	if algErr != nil {
		algErr = fmt.Errorf("replica algorithm: %w", algErr)
	}
	var timeoutErr error
	if c.CRMTimeout <= 0 {
		timeoutErr = errors.New("CRM timeout: must be positive")
	}
	if err := errors.Join(c.Deploy.Validate(), c.Reconcile.Validate(), algErr, timeoutErr); err != nil {
		return c, "", fmt.Errorf("deploy: %w", err)
	}
	if c.Owner == "" {
		c.Owner = "pm-" + uuid.NewString()[:8]
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return c, alg, nil
}
