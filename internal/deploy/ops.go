package deploy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// errAbandoned stops work on an operation without finishing it: a test hook
// simulated a crash, or another PM took the lease over. The operation stays
// pending and is resumed once its lease runs out.
var errAbandoned = fault.New(fault.Unavailable, "the operation was interrupted; PM resumes it shortly")

// outcome is what executing an operation means to the caller waiting on it.
type outcome struct {
	// firstUnit is the unit id of the first cluster that succeeded.
	firstUnit string
	// failure is the client-facing failure (nil when the caller succeeded).
	failure error
}

// execute runs an operation's pending steps in parallel, records each
// outcome, then finishes the operation. units may be nil; deploy steps then
// rebuild their units from the stored deployment (a resumed operation).
func (s *Service) execute(ctx context.Context, op store.Operation, units map[string]*deploymentpb.DeploymentUnit) (outcome, error) {
	if _, busy := s.running.LoadOrStore(op.ID, struct{}{}); busy {
		return outcome{}, errAbandoned
	}
	defer s.running.Delete(op.ID)
	// The work outlives an impatient client (stopping halfway would only
	// leave more for the reconciler) but not this PM: Stop cancels it, and
	// the operation, still leased, resumes elsewhere or after a restart.
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stopBase := context.AfterFunc(s.base, cancel)
	defer stopBase()
	stopRenew := s.renewLease(ctx, cancel, op.ID)
	defer stopRenew()

	if isDeploy(op.Kind) && units == nil {
		var err error
		units, err = s.unitsFor(ctx, op)
		if err != nil && fault.KindOf(err) != fault.NotFound {
			// A transient failure (database, caller) is no verdict on the
			// operation: leave it pending.
			return outcome{}, s.abandon(ctx, op, err)
		}
		if err != nil {
			for i := range op.Steps {
				if op.Steps[i].State == store.OpPending {
					op.Steps[i].State, op.Steps[i].Error = store.OpFailed, err.Error()
					if err := s.st.UpdateStep(ctx, op.ID, s.cfg.Owner, op.Steps[i]); err != nil {
						return outcome{}, s.abandon(ctx, op, err)
					}
				}
			}
		}
	}

	rec := s.newRecorder(ctx, op)
	sem := make(chan struct{}, s.cfg.Parallelism)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var abandoned error
	for i := range op.Steps {
		if op.Steps[i].State != store.OpPending {
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := s.runStep(ctx, rec, op, op.Steps[i], units[op.Steps[i].Cluster]); err != nil {
				mu.Lock()
				abandoned = err
				mu.Unlock()
				cancel()
			}
		})
	}
	wg.Wait()
	rec.close()
	if abandoned != nil {
		return outcome{}, s.abandon(ctx, op, abandoned)
	}
	if ctx.Err() != nil { // lease lost while steps ran
		return outcome{}, s.abandon(ctx, op, ctx.Err())
	}
	return s.finish(ctx, op.ID)
}

func (s *Service) abandon(ctx context.Context, op store.Operation, cause error) error {
	s.log.WarnContext(ctx, "operation abandoned; it resumes when its lease runs out",
		"operation", op.ID, "kind", op.Kind, "deployment", op.DeploymentKey, "cause", cause)
	s.stats.abandoned.Add(1)
	return errAbandoned
}

// renewLease keeps this PM's lease on an operation while work goes on and
// cancels the work when the lease is lost to another PM.
func (s *Service) renewLease(ctx context.Context, cancel context.CancelFunc, id string) (stop func()) {
	every := s.cfg.Lease / 3
	lastOK := s.now()
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
				err := s.st.RenewLease(ctx, id, s.cfg.Owner, s.now().Add(s.cfg.Lease))
				switch {
				case err == nil:
					lastOK = s.now()
				case errors.Is(err, store.ErrStale) || errors.Is(err, store.ErrNotFound):
					s.log.WarnContext(ctx, "lost the lease of an operation", "operation", id)
					cancel()
					return
				case !s.now().Before(lastOK.Add(s.cfg.Lease - every)):
					// Renewals kept failing (the database is away): the lease
					// is about to run out, and another PM may claim the
					// operation. Stop before two PMs run the same steps.
					s.log.WarnContext(ctx, "cannot renew the lease of an operation; stopping work on it", "operation", id, "error", err)
					cancel()
					return
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// unitsFor rebuilds the units of a deploy operation from the stored
// deployment; unit ids are deterministic, so they match what a crashed PM
// may already have sent.
func (s *Service) unitsFor(ctx context.Context, op store.Operation) (map[string]*deploymentpb.DeploymentUnit, error) {
	rec, err := s.st.GetDeployment(ctx, op.DeploymentKey)
	if err != nil {
		return nil, fmt.Errorf("deployment %q: %w", op.DeploymentKey, err)
	}
	pkg, cls, err := s.resolve(ctx, rec.Deployment)
	if err != nil {
		return nil, err
	}
	replicas := max(int(rec.Deployment.GetStatus().GetReplicationFactor()), 1)
	units := map[string]*deploymentpb.DeploymentUnit{}
	for _, st := range op.Steps {
		u, err := BuildUnit(pkg, cls, rec.Deployment, st.Cluster, replicas, s.now())
		if err != nil {
			return nil, err
		}
		units[st.Cluster] = u
	}
	return units, nil
}

// runStep makes one cluster's CRM calls, with retries, and records the
// outcome. It returns an error only when the operation must be abandoned.
func (s *Service) runStep(ctx context.Context, rec *recorder, op store.Operation, step store.Step, unit *deploymentpb.DeploymentUnit) error {
	attempts := 1 + s.cfg.MaxRetries
	crm, cerr := s.cl.CRM(step.Cluster)
	for n := 1; n <= attempts; n++ {
		if n > 1 {
			if err := sleep(ctx, s.backoff(n-1)); err != nil {
				return err
			}
		}
		if h := s.hooks.BeforeStep; h != nil {
			if err := h(op, step); err != nil {
				return err
			}
		}
		step.Attempts++
		var err error
		w := pendingWrite{}
		switch {
		case cerr != nil:
			err = cerr
		case isDeploy(op.Kind):
			var id string
			if id, err = s.deployStep(ctx, step, crm, unit); err == nil {
				step.UnitID = id
				w.put = &store.Mapping{DeploymentKey: op.DeploymentKey, Cluster: step.Cluster, UnitID: id}
			}
		default:
			err = s.deleteStep(ctx, step, crm)
			w.drop = true
		}
		if err == nil {
			step.State, step.Error = store.OpSucceeded, ""
			w.step = step
			werr := rec.write(ctx, w)
			if errors.Is(werr, store.ErrNotFound) && w.put != nil {
				// The deployment was deleted while we deployed: take the
				// unit back rather than leave a runtime PM does not know.
				if _, derr := crm.Delete(ctx, w.put.UnitID); derr != nil && fault.KindOf(derr) != fault.NotFound {
					s.log.ErrorContext(ctx, "could not remove a unit of a deleted deployment; the reconciler reports it as an orphan",
						"cluster", step.Cluster, "unit", w.put.UnitID, "error", derr)
				}
				step.State, step.Error = store.OpFailed, "the deployment was deleted during the deploy"
				werr = rec.write(ctx, pendingWrite{step: step})
			}
			return s.afterStep(op, step, werr)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		step.Error = err.Error()
		s.stats.stepRetries.Add(1)
		s.log.WarnContext(ctx, "cluster step failed", "operation", op.ID, "kind", op.Kind,
			"deployment", op.DeploymentKey, "cluster", step.Cluster, "attempt", n, "of", attempts, "error", err)
		if cerr != nil {
			break
		}
	}
	step.State = store.OpFailed
	return s.afterStep(op, step, rec.write(ctx, pendingWrite{step: step}))
}

func (s *Service) afterStep(op store.Operation, step store.Step, writeErr error) error {
	if writeErr != nil {
		return errAbandoned
	}
	if h := s.hooks.AfterStep; h != nil {
		return h(op, step)
	}
	return nil
}

// deployStep sends the unit and returns the id the CRM knows it by.
func (s *Service) deployStep(ctx context.Context, step store.Step, crm CRM, unit *deploymentpb.DeploymentUnit) (string, error) {
	if unit == nil {
		return "", fault.New(fault.Internal, "no unit for cluster %q", step.Cluster)
	}
	resp, err := crm.Deploy(ctx, unit)
	if err != nil {
		return "", err
	}
	if resp.GetStatus() != commonpb.StatusCode_OK {
		return "", fault.New(fault.Unavailable, "cluster %q: CRM answered %s: %s", step.Cluster, resp.GetStatus(), resp.GetMessage())
	}
	if id := resp.GetDeploymentId(); id != "" {
		return id, nil
	}
	return unit.GetId(), nil
}

// deleteStep removes a unit; a unit the CRM does not know is already gone.
func (s *Service) deleteStep(ctx context.Context, step store.Step, crm CRM) error {
	resp, err := crm.Delete(ctx, step.UnitID)
	if err != nil && fault.KindOf(err) != fault.NotFound {
		return err
	}
	if err == nil && resp.GetStatus() != commonpb.StatusCode_OK && resp.GetStatus() != commonpb.StatusCode_NOT_FOUND {
		return fault.New(fault.Unavailable, "cluster %q: CRM answered %s: %s", step.Cluster, resp.GetStatus(), resp.GetMessage())
	}
	return nil
}

// pendingWrite is one step outcome to record, with the mapping change that
// must land with it.
type pendingWrite struct {
	step store.Step
	put  *store.Mapping // a deploy step's new mapping
	drop bool           // a delete step removes the cluster's mapping
	res  chan error
}

// recorder is the one writer of an operation's step outcomes. Steps finish
// together (a fan-out to many clusters answers within milliseconds), and
// every outcome updates the same operation; one writer that batches what
// has queued up turns N contending transactions into a few.
type recorder struct {
	s    *Service
	op   store.Operation
	in   chan pendingWrite
	done chan struct{}
}

func (s *Service) newRecorder(ctx context.Context, op store.Operation) *recorder {
	r := &recorder{s: s, op: op, in: make(chan pendingWrite), done: make(chan struct{})}
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
			// Isolate the write that failed (e.g. a deployment deleted
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

// flush commits a batch in one transaction, retrying when it conflicts
// with a concurrent writer (the lease renewal) beyond the store's own
// retries.
func (r *recorder) flush(ctx context.Context, batch []pendingWrite) error {
	var err error
	for attempt := 1; attempt <= 5; attempt++ {
		err = r.s.st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
			steps := make([]store.Step, 0, len(batch))
			var puts []store.Mapping
			for _, w := range batch {
				if w.put != nil {
					puts = append(puts, *w.put)
				}
				if w.drop {
					if err := tx.DeleteMapping(ctx, r.op.DeploymentKey, w.step.Cluster); err != nil {
						return err
					}
				}
				steps = append(steps, w.step)
			}
			if err := tx.PutMapping(ctx, puts...); err != nil {
				return err
			}
			return tx.UpdateStep(ctx, r.op.ID, r.s.cfg.Owner, steps...)
		})
		if err == nil || errors.Is(err, store.ErrStale) || fault.KindOf(err) != fault.Conflict {
			return err
		}
		if serr := sleep(ctx, time.Duration(attempt)*5*time.Millisecond); serr != nil {
			return serr
		}
	}
	return err
}

// finish reads the recorded steps and settles the operation and its
// deployment.
func (s *Service) finish(ctx context.Context, id string) (outcome, error) {
	op, err := s.st.GetOperation(ctx, id)
	if err != nil {
		return outcome{}, err
	}
	if h := s.hooks.BeforeFinish; h != nil {
		if err := h(op); err != nil {
			return outcome{}, s.abandon(ctx, op, err)
		}
	}
	var ok, failed []store.Step
	for _, st := range op.Steps {
		if st.State == store.OpSucceeded {
			ok = append(ok, st)
		} else {
			failed = append(failed, st)
		}
	}
	reasons := describe(failed)
	var out outcome
	if len(ok) > 0 {
		out.firstUnit = ok[0].UnitID
	}
	finishAs := func(state store.OperationState, text string, also func(context.Context, store.Tx) error) error {
		err := s.st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
			if also != nil {
				if err := also(ctx, tx); err != nil {
					return err
				}
			}
			return tx.FinishOperation(ctx, op.ID, s.cfg.Owner, state, text)
		})
		if errors.Is(err, store.ErrStale) {
			return errAbandoned
		}
		return err
	}
	dropDeployment := func(ctx context.Context, tx store.Tx) error {
		err := tx.DeleteDeployment(ctx, op.DeploymentKey, store.AnyRevision)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	}

	switch {
	case isDeploy(op.Kind) && len(failed) == 0:
		err = s.settle(ctx, op, "")
		if err == nil {
			err = finishAs(store.OpSucceeded, "", nil)
		}
	case op.Kind == store.OpHeal:
		// Repairs never take down what runs: record and carry on.
		msg := "re-deploy failed in " + reasons
		err = s.settle(ctx, op, msg)
		if err == nil {
			err = finishAs(store.OpFailed, msg, nil)
		}
		out.failure = fault.New(fault.Unavailable, "%s", msg)
	case isDeploy(op.Kind) && (len(ok) == 0 || s.cfg.RollbackOnPartial):
		// Undo every step, failed ones included: a Deploy that timed out
		// (or whose answer was lost) may well have been applied.
		msg := "Deployment failed in all clusters: " + reasons
		if len(ok) > 0 {
			msg = "Deployment failed in " + reasons
		}
		rb := s.newOperation(store.OpRollback, op.DeploymentKey, op.DropDeployment)
		rb.Error = msg
		for _, st := range op.Steps {
			rb.Steps = append(rb.Steps, store.Step{Cluster: st.Cluster, UnitID: st.UnitID, State: store.OpPending})
		}
		err = finishAs(store.OpFailed, msg, func(ctx context.Context, tx store.Tx) error {
			return tx.CreateOperation(ctx, rb)
		})
		if err != nil {
			break
		}
		s.stats.rollbacks.Add(1)
		s.log.WarnContext(ctx, "deploy failed; rolling back", "deployment", op.DeploymentKey, "failed", reasons, "succeeded", len(ok))
		rbOut, rbErr := s.execute(ctx, rb, nil)
		switch {
		case rbErr != nil:
			out.failure = fault.Invalidf("%s; rolling back (operation %s) continues in the background", msg, rb.ID)
		case rbOut.failure != nil:
			out.failure = fault.Invalidf("%s; rollback incomplete, PM keeps retrying: %v", msg, rbOut.failure)
		case len(ok) > 0:
			out.failure = fault.Invalidf("%s; rolled back the clusters that succeeded", msg)
		default:
			out.failure = fault.Invalidf("%s", msg)
		}
	case isDeploy(op.Kind):
		msg := "Deployment failed in " + reasons
		err = s.settle(ctx, op, msg)
		if err == nil {
			err = finishAs(store.OpSucceeded, msg, nil)
		}
		s.log.WarnContext(ctx, "partial deploy; keeping the clusters that succeeded", "deployment", op.DeploymentKey, "failed", reasons)
	case len(failed) == 0 && op.DropDeployment:
		err = finishAs(store.OpSucceeded, "", dropDeployment)
	case len(failed) == 0:
		err = s.settle(ctx, op, op.Error)
		if err == nil {
			err = finishAs(store.OpSucceeded, "", nil)
		}
	default:
		// A delete or rollback that could not reach a cluster must not be
		// forgotten, or the unit would run on unowned: keep the operation
		// pending and retry it after a lease's time, up to a cap.
		msg := fmt.Sprintf("%s of deployment %q failed in %s", op.Kind, op.DeploymentKey, reasons)
		giveUp := slices.ContainsFunc(failed, func(st store.Step) bool { return st.Attempts >= maxCleanupAttempts })
		if err = s.settle(ctx, op, msg); err != nil && !errors.Is(err, store.ErrNotFound) {
			break
		}
		if giveUp {
			s.log.ErrorContext(ctx, "giving up on a cleanup; the reconciler reports what is left as orphans",
				"operation", op.ID, "deployment", op.DeploymentKey, "failed", reasons)
			// A deployment that was to go, goes: what is left on the
			// unreachable cluster is an orphan now, reported (and deleted
			// when configured) by the reconciler, never re-deployed.
			var also func(context.Context, store.Tx) error
			if op.DropDeployment {
				also = dropDeployment
			}
			err = finishAs(store.OpFailed, msg, also)
			out.failure = fault.New(fault.Unavailable, "%s; gave up", msg)
			break
		}
		err = s.retryLater(ctx, op, failed)
		out.failure = fault.New(fault.Unavailable, "%s; PM keeps retrying", msg)
		if err == nil {
			s.log.WarnContext(ctx, "cleanup incomplete; retrying later", "operation", op.ID, "deployment", op.DeploymentKey, "failed", reasons)
			return out, nil
		}
	}
	if err != nil {
		if errors.Is(err, errAbandoned) {
			return outcome{}, s.abandon(ctx, op, err)
		}
		return outcome{}, err
	}
	s.log.InfoContext(ctx, "operation finished", "operation", op.ID, "kind", op.Kind, "deployment", op.DeploymentKey,
		"succeeded", len(ok), "failed", len(failed))
	return out, nil
}

// maxCleanupAttempts caps the CRM calls of one delete or rollback step
// across retries; past it the operation fails and the reconciler's orphan
// report takes over.
const maxCleanupAttempts = 30

// retryLater puts failed steps back to pending and lets the lease run for
// one more period: then any PM (this one included) claims the operation
// and tries again.
func (s *Service) retryLater(ctx context.Context, op store.Operation, failed []store.Step) error {
	retry := make([]store.Step, len(failed))
	for i, st := range failed {
		st.State = store.OpPending
		retry[i] = st
	}
	err := s.st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
		if err := tx.UpdateStep(ctx, op.ID, s.cfg.Owner, retry...); err != nil {
			return err
		}
		return tx.RenewLease(ctx, op.ID, s.cfg.Owner, s.now().Add(s.cfg.Lease))
	})
	if errors.Is(err, store.ErrStale) {
		return errAbandoned
	}
	return err
}

// isDeploy reports whether an operation's steps send units.
func isDeploy(k store.OperationKind) bool { return k == store.OpDeploy || k == store.OpHeal }

// settle writes an operation's results into the deployment's status.
func (s *Service) settle(ctx context.Context, op store.Operation, lastError string) error {
	err := s.mutate(ctx, op.DeploymentKey, func(d *pmv1.OClassDeployment) {
		if d.Status == nil {
			d.Status = &pmv1.DeploymentStatusSummary{}
		}
		for _, st := range op.Steps {
			r := rollout(d.Status, st.Cluster)
			r.Attempts = int32(st.Attempts)
			r.Error = nil
			if st.Error != "" && st.State != store.OpSucceeded {
				r.Error = proto.String(st.Error)
			}
			switch {
			case isDeploy(op.Kind) && st.State == store.OpSucceeded:
				r.UnitId, r.State = st.UnitID, "deployed"
				if r.Condition == pmv1.DeploymentCondition_PENDING || r.Condition == pmv1.DeploymentCondition_DELETED {
					r.Condition = pmv1.DeploymentCondition_DEPLOYING
				}
			case isDeploy(op.Kind):
				r.State, r.Condition = "failed", pmv1.DeploymentCondition_DOWN
			case st.State == store.OpSucceeded && op.Kind == store.OpRollback:
				// Undone by PM, not removed by a user: the deployment still
				// wants this cluster, and a later retry may deploy it again.
				r.State, r.Condition = "rolled_back", pmv1.DeploymentCondition_DOWN
			case st.State == store.OpSucceeded:
				r.State, r.Condition = "deleted", pmv1.DeploymentCondition_DELETED
			default:
				r.State = "delete_failed"
			}
		}
		if lastError != "" {
			d.Status.LastError = proto.String(lastError)
		} else if isDeploy(op.Kind) {
			d.Status.LastError = nil
		}
		d.Condition = overall(d.Status)
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	return err
}

// mutate applies fn to the stored deployment with optimistic concurrency.
func (s *Service) mutate(ctx context.Context, key string, fn func(d *pmv1.OClassDeployment)) error {
	for range 16 {
		rec, err := s.st.GetDeployment(ctx, key)
		if err != nil {
			return err
		}
		d := proto.CloneOf(rec.Deployment)
		fn(d)
		if proto.Equal(d, rec.Deployment) {
			return nil
		}
		_, err = s.st.UpdateDeployment(ctx, d, rec.Revision)
		if errors.Is(err, store.ErrStale) {
			continue
		}
		return err
	}
	return fault.New(fault.Conflict, "deployment %q changes too often to update; try again", key)
}

// rollout returns (adding it if needed) a cluster's rollout entry.
func rollout(sum *pmv1.DeploymentStatusSummary, cluster string) *pmv1.ClusterRollout {
	for _, r := range sum.Clusters {
		if r.Cluster == cluster {
			return r
		}
	}
	r := &pmv1.ClusterRollout{Cluster: cluster}
	sum.Clusters = append(sum.Clusters, r)
	return r
}

// overall is a deployment's condition from its clusters': RUNNING when
// every live cluster runs, DOWN when none is live or one is down, else
// DEPLOYING.
func overall(sum *pmv1.DeploymentStatusSummary) pmv1.DeploymentCondition {
	live, running, down := 0, 0, 0
	for _, r := range sum.GetClusters() {
		switch r.Condition {
		case pmv1.DeploymentCondition_DELETED:
			continue
		case pmv1.DeploymentCondition_RUNNING:
			running++
		case pmv1.DeploymentCondition_DOWN:
			down++
		}
		live++
	}
	switch {
	case live == 0 || down == live:
		return pmv1.DeploymentCondition_DOWN
	case running == live:
		return pmv1.DeploymentCondition_RUNNING
	case down > 0:
		return pmv1.DeploymentCondition_DOWN
	default:
		return pmv1.DeploymentCondition_DEPLOYING
	}
}

// describe lists failed steps as "cluster(s) a (reason), b (reason)".
func describe(failed []store.Step) string {
	if len(failed) == 0 {
		return ""
	}
	parts := make([]string, 0, len(failed))
	for _, st := range failed {
		parts = append(parts, fmt.Sprintf("%s (%s)", st.Cluster, st.Error))
	}
	slices.Sort(parts)
	word := "cluster "
	if len(parts) > 1 {
		word = "clusters "
	}
	return word + strings.Join(parts, ", ")
}
