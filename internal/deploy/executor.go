package deploy

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// errAbandoned stops work on an operation without finishing it: a test hook
// simulated a crash, or another PM took the lease over. The operation stays
// active and is resumed once its lease runs out.
var errAbandoned = fault.New(fault.Unavailable, "the operation was interrupted; PM resumes it shortly")

// Outcome is what executing an operation means to a caller waiting on it.
type Outcome struct {
	// Units maps each cluster whose step succeeded to its unit id.
	Units map[string]string
	// Failure is the client-facing failure; nil when the caller succeeded.
	Failure error
}

// executor runs operations: their steps in parallel (an update's one
// cluster at a time), each outcome recorded with its rollout in one
// transaction, then the transition machine.go names, in one transaction.
type executor struct {
	s     *Service
	hooks Hooks
	// running is operation id → struct{}: operations this process works on.
	running sync.Map
	// base ends every operation this process works on when it stops; the
	// operations stay leased and resume elsewhere or after a restart.
	base       context.Context
	cancelBase context.CancelFunc
}

func newExecutor(s *Service) *executor {
	base, cancel := context.WithCancel(context.Background())
	return &executor{s: s, base: base, cancelBase: cancel}
}

func (e *executor) stop() { e.cancelBase() }

// newOperation is a running operation of kind on key, leased to this PM.
func (s *Service) newOperation(kind Kind, key string, drop bool) Operation {
	now := s.now()
	return Operation{
		ID: uuid.NewString(), Kind: kind, DeploymentKey: key, Drop: drop,
		State: OpRunning, Owner: s.cfg.Owner, LeaseUntil: now.Add(s.cfg.Reconcile.OperationLease),
		CreatedAt: now, UpdatedAt: now,
	}
}

// startOperation stores op unless its deployment has an active operation
// (the store enforces one at a time: a delete cannot race a deploy, whose
// late unit would outlive the deployment, and a repair cannot undo a
// delete).
func startOperation(ctx context.Context, tx store.Tx, op *Operation) error {
	err := tx.CreateOperation(ctx, operationRow(op))
	if errors.Is(err, store.ErrOperationActive) {
		return fault.Wrap(fault.Conflict, err, "deployment %q has an operation in progress; try again when it finishes", op.DeploymentKey)
	}
	return err
}

// tracer makes the operation and step spans (a no-op unless tracing is on).
var tracer = otel.Tracer("github.com/oaas/pm/internal/deploy")

// run executes op's pending steps and then its transition. units may be
// nil; deploy steps then rebuild them from the stored deployment (a
// resumed operation).
func (e *executor) run(ctx context.Context, op Operation, units map[string]*deploymentpb.DeploymentUnit) (Outcome, error) {
	if _, busy := e.running.LoadOrStore(op.ID, struct{}{}); busy {
		return Outcome{}, errAbandoned
	}
	defer e.running.Delete(op.ID)
	op.Steps = slices.Clone(op.Steps)
	// The work outlives an impatient client (stopping halfway would only
	// leave more for the background services) but not this PM: Stop
	// cancels it, and the operation, still leased, resumes elsewhere.
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	// One span per run of an operation: a child of the request's span when a
	// request started it, a trace of its own when a background service
	// resumed it.
	ctx, span := tracer.Start(ctx, "pm.operation "+string(op.Kind), trace.WithAttributes(
		attribute.String("pm.operation.id", op.ID), attribute.String("pm.deployment.key", op.DeploymentKey)))
	defer span.End()
	stopBase := context.AfterFunc(e.base, cancel)
	defer stopBase()
	stopRenew := e.renewLease(ctx, cancel, op.ID)
	defer stopRenew()

	rollouts, lastError, err := e.current(ctx, op.DeploymentKey)
	if err != nil {
		return Outcome{}, e.abandon(ctx, op, err)
	}
	rec := e.newRecorder(ctx, op)
	if op.Kind.sendsUnits() && units == nil {
		units, err = e.s.unitsFor(ctx, op)
		switch {
		case err != nil && fault.KindOf(err) != fault.NotFound && fault.KindOf(err) != fault.Invalid:
			// A transient failure (database, caller) is no verdict on the
			// operation: leave it active.
			rec.close()
			return Outcome{}, e.abandon(ctx, op, err)
		case err != nil:
			// The package or class is gone: nothing can be deployed.
			for i, st := range op.Steps {
				if st.State == StepPending {
					st.State, st.Error = StepFailed, err.Error()
					if werr := rec.write(ctx, e.record(op, rollouts, st)); werr != nil {
						rec.close()
						return Outcome{}, e.abandon(ctx, op, werr)
					}
					op.Steps[i] = st
				}
			}
		}
	}

	kinds := map[string]fault.Kind{}
	var mu sync.Mutex
	var abandoned error
	step := func(st Step) bool {
		kind, err := e.runStep(ctx, rec, op, rollouts, st, units[st.Cluster])
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			abandoned = err
			cancel()
			return false
		}
		if kind != 0 {
			kinds[st.Cluster] = kind
		}
		return kind == 0
	}
	if op.Kind == KindUpdate {
		// One cluster at a time; the first failure halts the rollout.
		for _, st := range op.Steps {
			if st.State == StepPending && !step(st) {
				break
			}
		}
	} else {
		sem := make(chan struct{}, e.s.cfg.Deploy.Parallelism)
		var wg sync.WaitGroup
		for _, st := range op.Steps {
			if st.State != StepPending {
				continue
			}
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				step(st)
			})
		}
		wg.Wait()
	}
	rec.close()
	if abandoned != nil {
		return Outcome{}, e.abandon(ctx, op, abandoned)
	}
	if ctx.Err() != nil { // lease lost while steps ran
		return Outcome{}, e.abandon(ctx, op, ctx.Err())
	}
	return e.finish(ctx, op.ID, kinds, lastError)
}

// current reads what an operation starts from: its deployment's rollouts by
// cluster (none when it is gone) and last error. One operation runs per
// deployment, so they stay as read but for the steps' own writes.
func (e *executor) current(ctx context.Context, key string) (map[string]Rollout, string, error) {
	row, err := e.s.st.GetDeployment(ctx, key)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return map[string]Rollout{}, "", nil
	case err != nil:
		return nil, "", err
	}
	rows, err := e.s.st.ListRollouts(ctx, store.RolloutFilter{DeploymentKeys: []string{key}})
	if err != nil {
		return nil, "", err
	}
	out := make(map[string]Rollout, len(rows))
	for _, r := range rows {
		ro, err := rolloutOf(r)
		if err != nil {
			return nil, "", err
		}
		out[r.Cluster] = ro
	}
	return out, row.LastError, nil
}

func (e *executor) abandon(ctx context.Context, op Operation, cause error) error {
	e.s.log.WarnContext(ctx, "operation abandoned; it resumes when its lease runs out",
		"operation", op.ID, "kind", op.Kind, "deployment", op.DeploymentKey, "cause", cause)
	e.s.stats.abandoned.Add(1)
	return errAbandoned
}

// renewLease keeps this PM's lease on an operation while work goes on and
// cancels the work when the lease is lost to another PM.
func (e *executor) renewLease(ctx context.Context, cancel context.CancelFunc, id string) (stop func()) {
	lease := e.s.cfg.Reconcile.OperationLease
	every := lease / 3
	lastOK := e.s.now()
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
				err := e.s.st.RenewLease(ctx, id, e.s.cfg.Owner, e.s.now().Add(lease))
				switch {
				case err == nil:
					lastOK = e.s.now()
				case errors.Is(err, store.ErrStale) || errors.Is(err, store.ErrNotFound):
					e.s.log.WarnContext(ctx, "lost the lease of an operation", "operation", id)
					cancel()
					return
				case !e.s.now().Before(lastOK.Add(lease - every)):
					// Renewals kept failing (the database is away): the lease
					// is about to run out, and another PM may claim the
					// operation. Stop before two PMs run the same steps.
					e.s.log.WarnContext(ctx, "cannot renew the lease of an operation; stopping work on it", "operation", id, "error", err)
					cancel()
					return
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// runStep makes one cluster's CRM calls, with retries, and records the
// outcome. It returns the kind of the failure (0 on success), and an error
// only when the operation must be abandoned.
func (e *executor) runStep(ctx context.Context, rec *recorder, op Operation, rollouts map[string]Rollout, step Step, unit *deploymentpb.DeploymentUnit) (failure fault.Kind, err error) {
	ctx, span := tracer.Start(ctx, "pm.step "+step.Cluster, trace.WithAttributes(
		attribute.String("pm.cluster", step.Cluster), attribute.String("pm.unit.id", step.UnitID)))
	defer func() {
		if failure != 0 || err != nil {
			span.SetStatus(codes.Error, failure.String())
		}
		span.End()
	}()
	attempts := 1 + e.s.cfg.Deploy.MaxRetries
	crm, cerr := e.s.cl.CRM(step.Cluster)
	var lastKind fault.Kind
	for n := 1; n <= attempts; n++ {
		if n > 1 {
			if err := sleep(ctx, e.backoff(n-1)); err != nil {
				return 0, err
			}
		}
		if h := e.hooks.BeforeStep; h != nil {
			if err := h(op, step); err != nil {
				return 0, err
			}
		}
		step.Attempts++
		var err error
		switch {
		case cerr != nil:
			err = cerr
		case op.Kind.sendsUnits():
			var id string
			if id, err = deployUnit(ctx, step.Cluster, crm, unit); err == nil {
				step.UnitID = id
			}
		default:
			err = deleteUnit(ctx, step.Cluster, step.UnitID, crm)
		}
		if err == nil {
			step.State, step.Error = StepSucceeded, ""
			werr := rec.write(ctx, e.record(op, rollouts, step))
			if errors.Is(werr, store.ErrNotFound) && op.Kind.sendsUnits() {
				// The deployment was deleted while we deployed: take the
				// unit back rather than leave a runtime PM does not know.
				if derr := deleteUnit(ctx, step.Cluster, step.UnitID, crm); derr != nil {
					e.s.log.ErrorContext(ctx, "could not remove a unit of a deleted deployment; the orphan scan reports it",
						"cluster", step.Cluster, "unit", step.UnitID, "error", derr)
				}
				step.State, step.Error = StepFailed, "the deployment was deleted during the deploy"
				werr = rec.write(ctx, pendingWrite{step: step})
			}
			return 0, e.afterStep(op, step, werr)
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		step.Error = err.Error()
		lastKind = stepFailureKind(err)
		e.s.stats.stepRetries.Add(1)
		e.s.log.WarnContext(ctx, "cluster step failed", "operation", op.ID, "kind", op.Kind,
			"deployment", op.DeploymentKey, "cluster", step.Cluster, "attempt", n, "of", attempts, "error", err)
		if cerr != nil {
			break
		}
	}
	step.State = StepFailed
	return lastKind, e.afterStep(op, step, rec.write(ctx, e.record(op, rollouts, step)))
}

// stepFailureKind tells a timed-out CRM call (504 to a waiting client)
// from any other failure to reach or satisfy a CRM (503).
func stepFailureKind(err error) fault.Kind {
	if fault.KindOf(err) == fault.DeadlineExceeded || errors.Is(err, context.DeadlineExceeded) {
		return fault.DeadlineExceeded
	}
	return fault.Unavailable
}

func (e *executor) afterStep(op Operation, step Step, writeErr error) error {
	if writeErr != nil {
		e.s.log.Warn("recording a step's outcome failed", "operation", op.ID, "cluster", step.Cluster, "error", writeErr)
		return errAbandoned
	}
	if h := e.hooks.AfterStep; h != nil {
		return h(op, step)
	}
	return nil
}

// backoff is the pause before attempt n+1: linear in n with ±10% jitter,
// so PMs retrying one CRM do not march in step.
func (e *executor) backoff(n int) time.Duration {
	base := e.s.cfg.Deploy.RetryBackoff * time.Duration(n)
	if base <= 0 {
		return 0
	}
	jitter := time.Duration(rand.Int64N(int64(base)/5 + 1))
	return base - base/10 + jitter
}

// record is the write of a step's outcome: the step, and what it means for
// the cluster's rollout.
func (e *executor) record(op Operation, rollouts map[string]Rollout, step Step) pendingWrite {
	prev, ok := rollouts[step.Cluster]
	if !ok {
		prev = Rollout{Cluster: step.Cluster, Condition: CondPending}
	}
	r := stepRollout(op.Kind, prev, step)
	return pendingWrite{step: step, rollout: &r}
}

// stepRollout is a cluster's rollout after a step's outcome.
func stepRollout(kind Kind, r Rollout, step Step) Rollout {
	r.Attempts = step.Attempts
	ok := step.State == StepSucceeded
	switch {
	case kind.sendsUnits() && ok:
		r.UnitID, r.State, r.Error = step.UnitID, RolloutDeployed, ""
		switch r.Condition {
		case CondPending, CondDeleted, CondDown, "":
			r.Condition = CondDeploying
		}
	case kind.sendsUnits():
		r.Error = step.Error
		if r.State != RolloutDeployed {
			// The unit may exist anyway (a lost answer): a unit found
			// running there is adopted, not orphaned.
			r.UnitID, r.State, r.Condition = step.UnitID, RolloutFailed, CondDown
		}
	case ok && kind == KindRollback:
		// Undone by PM, not removed by a user: the deployment still
		// wants this cluster, and a later retry may deploy it again.
		r.State, r.Condition, r.Error = RolloutRolledBack, CondDown, ""
	case ok:
		r.State, r.Condition, r.Error = RolloutDeleted, CondDeleted, ""
	default:
		r.State, r.Error = RolloutDeleteFailed, step.Error
	}
	return r
}

// deployUnit sends the unit and returns the id the CRM knows it by.
func deployUnit(ctx context.Context, cluster string, crm CRM, unit *deploymentpb.DeploymentUnit) (string, error) {
	if unit == nil {
		return "", fault.New(fault.Internal, "no unit for cluster %q", cluster)
	}
	resp, err := crm.Deploy(ctx, unit)
	if err != nil {
		return "", err
	}
	if resp.GetStatus() != commonpb.StatusCode_OK {
		return "", fault.New(fault.Unavailable, "cluster %q: CRM answered %s: %s", cluster, resp.GetStatus(), resp.GetMessage())
	}
	if id := resp.GetDeploymentId(); id != "" {
		return id, nil
	}
	return unit.GetId(), nil
}

// deleteUnit removes a unit; a unit the CRM does not know is already gone.
func deleteUnit(ctx context.Context, cluster, unit string, crm CRM) error {
	resp, err := crm.Delete(ctx, unit)
	if err != nil && fault.KindOf(err) != fault.NotFound {
		return err
	}
	if err == nil && resp.GetStatus() != commonpb.StatusCode_OK && resp.GetStatus() != commonpb.StatusCode_NOT_FOUND {
		return fault.New(fault.Unavailable, "cluster %q: CRM answered %s: %s", cluster, resp.GetStatus(), resp.GetMessage())
	}
	return nil
}

// finish applies the operation's transition: it reads the recorded steps,
// takes the event off them, looks the transition up and applies it in one
// transaction. A rollback it starts is run at once.
func (e *executor) finish(ctx context.Context, id string, kinds map[string]fault.Kind, lastError string) (Outcome, error) {
	row, err := e.s.st.GetOperation(ctx, id)
	if err != nil {
		return Outcome{}, err
	}
	op, err := operationOf(row)
	if err != nil {
		return Outcome{}, err
	}
	if h := e.hooks.BeforeFinish; h != nil {
		if err := h(op); err != nil {
			return Outcome{}, e.abandon(ctx, op, err)
		}
	}
	ev := eventOf(&op, e.s.cfg.Deploy.RollbackOnPartial)
	tr, err := Next(op.Kind, op.State, ev)
	if err != nil {
		return Outcome{}, fault.Wrap(fault.Internal, err, "%s: %v", op.String(), err)
	}
	msg := failureText(&op, ev)
	var follow *Operation
	var until time.Time
	owner := e.s.cfg.Owner
	text, changes := lastErrorAfter(&op, msg, lastError)
	if !changes && (tr.Action == ActSettle || tr.Action == ActComplete && !op.Drop) {
		// The common case is one write, which needs no transaction (and so
		// cannot conflict with the many other operations finishing).
		err = e.s.st.SetOperationState(ctx, op.ID, owner, string(tr.Next), msg, until)
	} else {
		err = e.applyTransition(ctx, &op, tr, msg, text, changes, &follow, &until)
	}
	if err != nil {
		// The transition did not land (the lease is lost, or the database
		// keeps refusing): the operation stays active, and whoever holds it
		// next applies it.
		return Outcome{}, e.abandon(ctx, op, err)
	}
	return e.outcome(ctx, &op, ev, tr, msg, kinds, follow), nil
}

// applyTransition applies a transition that writes more than the
// operation's state, in one transaction, and returns the operation it
// started (a rollback, revert or prune) in followOut.
func (e *executor) applyTransition(ctx context.Context, op *Operation, tr Transition, msg, text string, changes bool,
	followOut **Operation, untilOut *time.Time) error {
	owner := e.s.cfg.Owner
	return e.retryConflicts(ctx, func(ctx context.Context, tx store.Tx) error {
		var follow *Operation
		var until time.Time
		defer func() { *followOut, *untilOut = follow, until }()
		settle := func() error {
			if !changes {
				return nil
			}
			return setLastError(ctx, tx, op.DeploymentKey, text)
		}
		switch tr.Action {
		case ActSettle, ActComplete, ActRollBack, ActPrune:
			if err := settle(); err != nil {
				return err
			}
		case ActHalt, ActRevert:
			var skipped []store.StepRow
			for _, st := range op.Steps {
				if st.State == StepPending {
					st.State = StepSkipped
					skipped = append(skipped, stepRow(st))
				}
			}
			if err := tx.UpdateSteps(ctx, op.ID, owner, skipped...); err != nil {
				return err
			}
			if err := settle(); err != nil {
				return err
			}
		case ActRetryLater:
			var retry []store.StepRow
			for _, st := range op.Steps {
				if st.State == StepFailed {
					st.State = StepPending
					retry = append(retry, stepRow(st))
				}
			}
			if err := tx.UpdateSteps(ctx, op.ID, owner, retry...); err != nil {
				return err
			}
			if err := settle(); err != nil {
				return err
			}
			until = e.s.now().Add(e.s.cfg.Reconcile.OperationLease)
		default:
			return fault.New(fault.Internal, "%s: action %s cannot finish it", op.String(), tr.Action)
		}
		if tr.Action == ActComplete && op.Drop {
			if err := tx.DeleteDeployment(ctx, op.DeploymentKey, store.AnyRevision); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		}
		if err := tx.SetOperationState(ctx, op.ID, owner, string(tr.Next), msg, until); err != nil {
			return err
		}
		var err error
		switch tr.Action {
		case ActRollBack:
			// Undo every step, failed ones included: a Deploy that timed out
			// (or whose answer was lost) may well have been applied.
			r := e.s.newOperation(KindRollback, op.DeploymentKey, op.Drop)
			r.Error = msg
			for _, st := range op.Steps {
				r.Steps = append(r.Steps, Step{Cluster: st.Cluster, UnitID: st.UnitID, State: StepPending})
			}
			follow = &r
		case ActPrune:
			follow, err = e.pruneOperation(ctx, tx, op.DeploymentKey)
		case ActRevert:
			follow, err = e.revertOperation(ctx, tx, op, msg)
		}
		if err != nil || follow == nil {
			return err
		}
		return startOperation(ctx, tx, follow)
	})
}

// pruneOperation is the delete of the units a deployment has on clusters
// it no longer targets (an update or revert moved it); nil when there are
// none.
func (e *executor) pruneOperation(ctx context.Context, tx store.Tx, key string) (*Operation, error) {
	row, err := tx.GetDeployment(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rs, err := tx.ListRollouts(ctx, store.RolloutFilter{DeploymentKeys: []string{key}})
	if err != nil {
		return nil, err
	}
	del := e.s.newOperation(KindDelete, key, false)
	for _, x := range rs {
		r, err := rolloutOf(x)
		if err != nil {
			return nil, err
		}
		if r.State.known() && !slices.Contains(row.Targets, r.Cluster) {
			del.Steps = append(del.Steps, Step{Cluster: r.Cluster, UnitID: r.UnitID, State: StepPending})
		}
	}
	if len(del.Steps) == 0 {
		return nil, nil
	}
	return &del, nil
}

// revertOperation puts back the spec revision before the one a failed
// update wrote, as a new revision, and returns the operation that
// re-sends it to the clusters the update reached (the prune when none of
// them is one of the previous spec's); nil when there is no previous
// revision to go back to.
func (e *executor) revertOperation(ctx context.Context, tx store.Tx, op *Operation, msg string) (*Operation, error) {
	key := op.DeploymentKey
	row, err := tx.GetDeployment(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	revs, err := tx.ListRevisions(ctx, key) // newest first
	if err != nil {
		return nil, err
	}
	var prev *store.RevisionRow
	for i := range revs {
		if revs[i].Revision < row.SpecRevision {
			prev = &revs[i]
			break
		}
	}
	if prev == nil || len(revs) == 0 {
		e.s.log.WarnContext(ctx, "update failed and no earlier revision is kept; the clusters it reached keep it",
			"deployment", key, "operation", op.ID)
		return nil, nil
	}
	next := *prev
	next.Revision = max(revs[0].Revision, row.SpecRevision) + 1
	next.Reason = fmt.Sprintf("reverted to revision %d: %s", prev.Revision, msg)
	row.Spec, row.Targets, row.SpecRevision = prev.Spec, prev.Targets, next.Revision
	row.Replicas, row.TargetAvailability, row.AchievedAvailability = prev.Replicas, prev.TargetAvailability, prev.AchievedAvailability
	row.Algorithm, row.Strong = prev.Algorithm, prev.Strong
	if _, err := tx.UpdateDeployment(ctx, row, store.AnyRevision); err != nil {
		return nil, err
	}
	if err := tx.PutRevision(ctx, next, maxRevisions); err != nil {
		return nil, err
	}
	rv := e.s.newOperation(KindRevert, key, false)
	rv.Error = msg
	for _, st := range op.Steps {
		if (st.State == StepSucceeded || st.State == StepFailed) && slices.Contains(prev.Targets, st.Cluster) {
			rv.Steps = append(rv.Steps, Step{Cluster: st.Cluster, UnitID: st.UnitID, State: StepPending})
		}
	}
	e.s.log.WarnContext(ctx, "update failed; reverting to the previous revision", "deployment", key,
		"to_revision", prev.Revision, "as_revision", next.Revision, "clusters", len(rv.Steps), "failure", msg)
	if len(rv.Steps) == 0 {
		return e.pruneOperation(ctx, tx, key)
	}
	return &rv, nil
}

// outcome is what a finished transition means to a waiting client; an
// operation it started (rollback, revert, prune) is run first.
func (e *executor) outcome(ctx context.Context, op *Operation, ev Event, tr Transition, msg string, kinds map[string]fault.Kind, follow *Operation) Outcome {
	e.s.log.InfoContext(ctx, "operation finished", "operation", op.ID, "kind", op.Kind, "deployment", op.DeploymentKey,
		"event", ev, "action", tr.Action, "state", tr.Next)

	out := Outcome{Units: map[string]string{}}
	for _, st := range op.Steps {
		if st.State == StepSucceeded && op.Kind.sendsUnits() {
			out.Units[st.Cluster] = st.UnitID
		}
	}
	failKind := clientKind(op, kinds)
	switch {
	case follow != nil && tr.Action == ActRollBack:
		e.s.stats.rollbacks.Add(1)
		e.s.log.WarnContext(ctx, "deploy failed; rolling back", "deployment", op.DeploymentKey, "failure", msg)
		rbOut, rbErr := e.run(ctx, *follow, nil)
		switch {
		case rbErr != nil:
			out.Failure = fault.New(failKind, "%s; rolling back (operation %s) goes on in the background", msg, follow.ID)
		case rbOut.Failure != nil:
			out.Failure = fault.New(failKind, "%s; rollback incomplete, PM keeps trying: %v", msg, rbOut.Failure)
		default:
			out.Failure = fault.New(failKind, "%s; rolled back", msg)
		}
		out.Units = nil
	case follow != nil && tr.Action == ActRevert:
		e.s.stats.rollbacks.Add(1)
		what := "reverted to the previous revision"
		if follow.Kind == KindDelete {
			what = "reverted to the previous revision (removing the unit from the clusters it added)"
		}
		fOut, fErr := e.run(ctx, *follow, nil)
		switch {
		case fErr != nil:
			out.Failure = fault.New(failKind, "%s; reverting (operation %s) goes on in the background", msg, follow.ID)
		case fOut.Failure != nil:
			out.Failure = fault.New(failKind, "%s; reverting to the previous revision failed too: %v", msg, fOut.Failure)
		default:
			out.Failure = fault.New(failKind, "%s; %s", msg, what)
		}
	case follow != nil:
		// A prune: the deployment moved off some clusters. Its failure is
		// not the update's; the delete keeps retrying.
		if fOut, fErr := e.run(ctx, *follow, nil); fErr != nil || fOut.Failure != nil {
			e.s.log.WarnContext(ctx, "removing units from clusters a deployment left did not finish; PM keeps trying",
				"deployment", op.DeploymentKey, "operation", follow.ID)
		}
	case tr.Action == ActRetryLater:
		out.Failure = fault.New(failKind, "%s; PM keeps retrying", msg)
	case tr.Next == OpFailed && tr.Action == ActComplete:
		e.s.log.ErrorContext(ctx, "giving up on a removal; the orphan scan reports what is left",
			"operation", op.ID, "deployment", op.DeploymentKey, "failure", msg)
		out.Failure = fault.New(failKind, "%s; gave up", msg)
	case tr.Next == OpFailed:
		out.Failure = fault.New(failKind, "%s", msg)
	case msg != "":
		e.s.log.WarnContext(ctx, "partial deploy; keeping the clusters that succeeded", "deployment", op.DeploymentKey, "failure", msg)
	}
	return out
}

// lastErrorAfter is the deployment's last error once an operation is
// settled: the failure text, cleared by a deploy that went through (a
// rollback keeps the reason it rolled back for). changes is false when it
// stays as the operation found it (known), the common case, which then
// needs no write.
func lastErrorAfter(op *Operation, msg, known string) (text string, changes bool) {
	text = msg
	switch {
	case msg != "":
	case op.Kind == KindRollback || op.Kind == KindRevert:
		text = op.Error
	case !op.Kind.sendsUnits():
		return known, false
	}
	return text, text != known
}

// setLastError records text as a deployment's last error (its revision
// moves); a deployment gone meanwhile is no error.
func setLastError(ctx context.Context, tx store.Tx, key, text string) error {
	d, err := tx.GetDeployment(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil || d.LastError == text {
		return err
	}
	d.LastError = text
	_, err = tx.UpdateDeployment(ctx, d, store.AnyRevision)
	return err
}

// failureText says what failed, for the deployment's last error and the
// operation's: "" when nothing did.
func failureText(op *Operation, ev Event) string {
	var failed []string
	for _, st := range op.Steps {
		if st.State == StepFailed {
			failed = append(failed, fmt.Sprintf("%s (%s)", st.Cluster, st.Error))
		}
	}
	if len(failed) == 0 {
		return ""
	}
	slices.Sort(failed)
	where := "cluster " + failed[0]
	if len(failed) > 1 {
		where = "clusters " + strings.Join(failed, ", ")
	}
	switch {
	case op.Kind == KindDeploy && ev == EvFailed && len(failed) == len(op.Steps):
		return "Deployment failed in all clusters: " + where
	case op.Kind == KindDeploy:
		return "Deployment failed in " + where
	case op.Kind == KindHeal:
		return "re-deploy failed in " + where
	case op.Kind == KindUpdate:
		return "update failed in " + where
	case op.Kind == KindRevert:
		return "revert failed in " + where
	default:
		return fmt.Sprintf("%s of deployment %q failed in %s", op.Kind, op.DeploymentKey, where)
	}
}

// clientKind is how a waiting client hears of failed steps: 504 when every
// failure this run saw was a deadline, else 503. A cluster failing is never
// the client's fault.
func clientKind(op *Operation, kinds map[string]fault.Kind) fault.Kind {
	deadline := false
	for _, st := range op.Steps {
		if st.State != StepFailed {
			continue
		}
		if kinds[st.Cluster] != fault.DeadlineExceeded {
			return fault.Unavailable
		}
		deadline = true
	}
	if deadline {
		return fault.DeadlineExceeded
	}
	return fault.Unavailable
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

// pendingWrite is one step outcome to record, with the rollout change that
// must land with it.
type pendingWrite struct {
	step    Step
	rollout *Rollout
	res     chan error
}

// recorder is the one writer of an operation's step outcomes. Steps finish
// together (a fan-out to many clusters answers within milliseconds), and
// every outcome updates the same operation row; one writer that batches
// what has queued up turns N contending transactions into a few.
type recorder struct {
	e    *executor
	op   Operation
	in   chan pendingWrite
	done chan struct{}
}

func (e *executor) newRecorder(ctx context.Context, op Operation) *recorder {
	r := &recorder{e: e, op: op, in: make(chan pendingWrite), done: make(chan struct{})}
	go r.loop(ctx)
	return r
}

// write records w and waits until it is committed.
func (r *recorder) write(ctx context.Context, w pendingWrite) error {
	w.res = make(chan error, 1)
	select {
	case r.in <- w:
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-w.res
}

// close stops the writer once every step has returned.
func (r *recorder) close() {
	close(r.in)
	<-r.done
}

func (r *recorder) loop(ctx context.Context) {
	defer close(r.done)
	for w := range r.in {
		batch := []pendingWrite{w}
	drain:
		for {
			select {
			case more, ok := <-r.in:
				if !ok {
					break drain
				}
				batch = append(batch, more)
			default:
				break drain
			}
		}
		err := r.flush(ctx, batch)
		if err != nil && len(batch) > 1 {
			// Isolate the write that failed (a deployment deleted
			// meanwhile) so the others still land.
			for _, w := range batch {
				w.res <- r.flush(ctx, []pendingWrite{w})
			}
			continue
		}
		for _, w := range batch {
			w.res <- err
		}
	}
}

// flush records a batch in one atomic write.
func (r *recorder) flush(ctx context.Context, batch []pendingWrite) error {
	steps := make([]store.StepRow, 0, len(batch))
	var rollouts []store.RolloutRow
	for _, w := range batch {
		steps = append(steps, stepRow(w.step))
		if w.rollout != nil {
			rollouts = append(rollouts, rolloutRow(r.op.DeploymentKey, *w.rollout))
		}
	}
	return r.e.s.st.RecordSteps(ctx, r.op.ID, r.e.s.cfg.Owner, steps, rollouts)
}

// retryConflicts runs fn in a transaction, again when it conflicts with
// concurrent writers (a lease renewal, a neighbour's step, creates of
// neighbouring keys) beyond the store's own retries: an operation's writes
// are always worth landing, and giving up would leave it for another PM to
// finish a lease later, or fail a create that would go through.
func (e *executor) retryConflicts(ctx context.Context, fn func(context.Context, store.Tx) error) error {
	var err error
	for attempt := 1; attempt <= 5; attempt++ {
		err = e.s.st.WithTx(ctx, fn)
		// Worth another go: a serialization conflict the store gave up on
		// (ErrBusy), or a conflict that is neither a stale revision nor
		// another operation.
		retry := errors.Is(err, store.ErrBusy) ||
			(fault.KindOf(err) == fault.Conflict && !errors.Is(err, store.ErrStale) && !errors.Is(err, store.ErrOperationActive))
		if err == nil || !retry {
			return err
		}
		if serr := sleep(ctx, time.Duration(attempt)*time.Duration(5+rand.IntN(10))*time.Millisecond); serr != nil {
			return serr
		}
	}
	return err
}
