package deploy

import (
	"fmt"
	"slices"
	"time"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
)

// This file is the deployment core's own model: what a deployment is, how
// far its rollout got on each cluster, and the durable operations that move
// it. The API converts it to oaas.pm.v1 (internal/api), the store keeps it
// in rows of its own (rows.go converts); nothing else sees it.

// Condition is what a unit's runtime is doing as its cluster reports it, or
// (for a deployment) what its clusters add up to.
type Condition string

// Conditions.
const (
	// CondPending: nothing runs yet (not planned, or the deploy has not
	// reached the cluster).
	CondPending Condition = "pending"
	// CondDeploying: the CRM has the unit and is rolling it out.
	CondDeploying Condition = "deploying"
	// CondRunning: the CRM reports the unit available.
	CondRunning Condition = "running"
	// CondDown: the unit is degraded, missing, or could not be deployed.
	CondDown Condition = "down"
	// CondDeleted: the unit was removed on purpose.
	CondDeleted Condition = "deleted"
)

// RolloutState is how far PM's work on one cluster of a deployment got.
type RolloutState string

// Rollout states.
const (
	// RolloutPlanned: a deploy step for the cluster is recorded and has not
	// finished.
	RolloutPlanned RolloutState = "planned"
	// RolloutDeployed: the CRM accepted the unit; PM maps the cluster to it.
	RolloutDeployed RolloutState = "deployed"
	// RolloutFailed: the deploy failed; the unit may exist anyway (a lost
	// answer), so a unit found running there is adopted, not orphaned.
	RolloutFailed RolloutState = "failed"
	// RolloutRolledBack: PM removed the unit after a failed deploy; the
	// deployment still wants the cluster.
	RolloutRolledBack RolloutState = "rolled_back"
	// RolloutDeleted: the unit was removed because a user asked.
	RolloutDeleted RolloutState = "deleted"
	// RolloutDeleteFailed: a removal has not succeeded yet; the unit may
	// still run and PM keeps trying.
	RolloutDeleteFailed RolloutState = "delete_failed"
)

// known reports whether a unit in this state is one PM answers for: it
// runs, is about to, may have been applied by a deploy that looked failed,
// or is still being removed. A unit in any other state that runs anyway is
// an orphan.
func (s RolloutState) known() bool {
	switch s {
	case RolloutPlanned, RolloutDeployed, RolloutFailed, RolloutDeleteFailed:
		return true
	}
	return false
}

// Plan is the replica plan of a deployment, from its last (re-)plan.
type Plan struct {
	// Replicas is the replica count every cluster's unit runs; 0 means the
	// deployment was recorded but never planned (a staged embedded one).
	Replicas int
	// Target and Achieved are the availability aimed for and reached.
	Target, Achieved float64
	// Algorithm names the replica algorithm ("quorum", "independent").
	Algorithm string
	// Strong records that the class asked for strong consistency (2f+1).
	Strong bool
	// Clusters are the target clusters in placement order.
	Clusters []string
}

// Rollout is one cluster's part of a deployment.
type Rollout struct {
	Cluster string
	// UnitID is the unit's id at the cluster's CRM.
	UnitID    string
	State     RolloutState
	Condition Condition
	// Availability and AvailabilitySource are the cluster's inputs to the
	// last plan ("crm" or "ready_nodes").
	Availability       float64
	AvailabilitySource string
	// Error is the cluster's last failure, safe to show to clients.
	Error string
	// Attempts counts the CRM calls of the last operation on the cluster.
	Attempts int
}

// Deployment is a class deployment as the core knows it.
type Deployment struct {
	Key string
	// Spec is what the user wrote, server-managed fields cleared; its
	// target_envs are the resolved targets once planned.
	Spec *pmv1.OClassDeployment
	Plan Plan
	// Rollouts are the clusters' parts, ordered by cluster name.
	Rollouts []Rollout
	// LastError is the last operation's failure, if it failed anywhere.
	LastError string
	// Revision grows by one on every change of spec or plan (not on
	// condition changes, which come from the clusters).
	Revision int64
	// SpecRevision numbers the spec among the deployment's revisions
	// (ListRevisions); 0 for a deployment stored before PM kept them.
	SpecRevision int64
	// PackageDigest fingerprints the package parts it was last planned
	// from (its class and functions; 0: unknown).
	PackageDigest        int64
	CreatedAt, UpdatedAt time.Time
	// Answer is the spec as PM answers it (answerSpec: selected clusters,
	// ODGM defaults, node ids, derived functions); set by reads.
	Answer *pmv1.OClassDeployment
}

// Rollout returns the rollout on cluster.
func (d Deployment) Rollout(cluster string) (Rollout, bool) {
	i := slices.IndexFunc(d.Rollouts, func(r Rollout) bool { return r.Cluster == cluster })
	if i < 0 {
		return Rollout{}, false
	}
	return d.Rollouts[i], true
}

// Mapped returns cluster → unit id for the units PM knows run.
func (d Deployment) Mapped() map[string]string {
	out := map[string]string{}
	for _, r := range d.Rollouts {
		if r.State == RolloutDeployed {
			out[r.Cluster] = r.UnitID
		}
	}
	return out
}

// Condition is the deployment's condition from its clusters': RUNNING when
// every live cluster runs, DOWN when none is live or one is down, PENDING
// before anything was planned, else DEPLOYING (a deploy is under way).
func (d Deployment) Condition() Condition {
	if d.Plan.Replicas == 0 && len(d.Rollouts) == 0 {
		if d.LastError != "" {
			return CondDown
		}
		return CondPending
	}
	return overall(d.Rollouts)
}

func overall(rs []Rollout) Condition {
	live, running, down := 0, 0, 0
	for _, r := range rs {
		switch r.Condition {
		case CondDeleted:
			continue
		case CondRunning:
			running++
		case CondDown:
			down++
		}
		live++
	}
	switch {
	case live == 0 || down == live:
		return CondDown
	case running == live:
		return CondRunning
	case down > 0:
		return CondDown
	default:
		return CondDeploying
	}
}

// Kind says what an operation does to a deployment. Each kind has its own
// state machine (machine.go).
type Kind string

// Operation kinds.
const (
	// KindDeploy sends a new deployment's units (a create, or a staged
	// embedded deployment). A failure rolls back.
	KindDeploy Kind = "deploy"
	// KindUpdate rolls a changed deployment out one cluster at a time and
	// halts at the first cluster that fails.
	KindUpdate Kind = "update"
	// KindDelete removes units (one cluster, or all and then the
	// deployment).
	KindDelete Kind = "delete"
	// KindRollback removes the units a failed deploy may have created.
	KindRollback Kind = "rollback"
	// KindHeal re-sends units of an existing deployment (drift repair,
	// re-plan, retries); it never rolls back what runs.
	KindHeal Kind = "heal"
	// KindRevert re-sends the previous spec's units to the clusters a
	// failed update reached (the deployment's spec was put back with it).
	KindRevert Kind = "revert"
)

// kinds are every operation kind, for parsing stored ones.
var kinds = []Kind{KindDeploy, KindUpdate, KindDelete, KindRollback, KindHeal, KindRevert}

// sendsUnits reports whether the kind's steps deploy units (rather than
// remove them).
func (k Kind) sendsUnits() bool {
	return k == KindDeploy || k == KindUpdate || k == KindHeal || k == KindRevert
}

// OpState is where an operation is.
type OpState string

// Operation states. Running and waiting operations are active: at most one
// per deployment, and claimable by any PM once their lease or wait is over.
const (
	// OpRunning: steps are being worked on by the lease holder.
	OpRunning OpState = "running"
	// OpWaiting: a removal failed somewhere; the failed steps run again
	// after a pause.
	OpWaiting OpState = "waiting"
	// OpSucceeded and OpFailed are final.
	OpSucceeded OpState = "succeeded"
	OpFailed    OpState = "failed"
)

// Active reports whether the operation still has work to do.
func (s OpState) Active() bool { return s == OpRunning || s == OpWaiting }

// StepState is where one cluster's part of an operation is.
type StepState string

// Step states.
const (
	StepPending   StepState = "pending"
	StepSucceeded StepState = "succeeded"
	StepFailed    StepState = "failed"
	// StepSkipped: an update halted before the step ran.
	StepSkipped StepState = "skipped"
)

// Step is one cluster's part of an operation.
type Step struct {
	Cluster string
	UnitID  string
	State   StepState
	// Attempts counts CRM calls made for the step, across PM restarts.
	Attempts int
	// Error is the last failure, safe to show to clients.
	Error string
}

// Operation is a durable multi-step change to clusters: written before any
// CRM is called, each step's outcome recorded as it happens, each change of
// state one transaction. An active operation whose lease ran out (its PM
// died) is claimed and finished by another PM, or the same one restarted.
type Operation struct {
	ID            string
	Kind          Kind
	DeploymentKey string
	// Drop: for a deploy, a failure that rolls back also removes the
	// deployment (a client's create leaves nothing behind); for a delete or
	// rollback, the deployment goes once every step succeeded.
	Drop  bool
	State OpState
	Steps []Step
	// Owner holds the lease until LeaseUntil; a waiting operation has no
	// owner and LeaseUntil is when it may run again.
	Owner      string
	LeaseUntil time.Time
	Error      string
	CreatedAt  time.Time
	UpdatedAt  time.Time
}

func (op *Operation) String() string {
	return fmt.Sprintf("%s operation %s of deployment %q", op.Kind, op.ID, op.DeploymentKey)
}
