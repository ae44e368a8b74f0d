package memory

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/oaas/pm/internal/store"
)

// idemKey identifies an idempotency record.
type idemKey struct{ scope, key string }

// PutIdempotency implements store.Idempotency.
func (s *Store) PutIdempotency(ctx context.Context, rec store.IdempotencyRecord) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.putIdempotency(rec, nil)
}

// GetIdempotency implements store.Idempotency.
func (s *Store) GetIdempotency(ctx context.Context, scope, key string, now time.Time) (store.IdempotencyRecord, error) {
	if err := s.enter(ctx); err != nil {
		return store.IdempotencyRecord{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.getIdempotency(scope, key, now)
}

// PurgeIdempotency implements store.Idempotency.
func (s *Store) PurgeIdempotency(ctx context.Context, before time.Time) (int, error) {
	if err := s.enter(ctx); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.purgeIdempotency(before, nil), nil
}

// PutIdempotency implements store.Idempotency inside a transaction.
func (t *tx) PutIdempotency(ctx context.Context, rec store.IdempotencyRecord) error {
	if err := t.enter(ctx); err != nil {
		return err
	}
	return t.s.putIdempotency(rec, t)
}

// GetIdempotency implements store.Idempotency inside a transaction.
func (t *tx) GetIdempotency(ctx context.Context, scope, key string, now time.Time) (store.IdempotencyRecord, error) {
	if err := t.enter(ctx); err != nil {
		return store.IdempotencyRecord{}, err
	}
	return t.s.getIdempotency(scope, key, now)
}

// PurgeIdempotency implements store.Idempotency inside a transaction.
func (t *tx) PurgeIdempotency(ctx context.Context, before time.Time) (int, error) {
	if err := t.enter(ctx); err != nil {
		return 0, err
	}
	return t.s.purgeIdempotency(before, t), nil
}

// The methods below work as the package ones do: the caller holds s.mu and
// a non-nil u records what a write replaces.

func (s *Store) putIdempotency(rec store.IdempotencyRecord, u *tx) error {
	k := idemKey{rec.Scope, rec.Key}
	if old, ok := s.idem[k]; ok && old.ExpiresAt.After(s.now()) {
		return fmt.Errorf("idempotency key %q: %w", rec.Key, store.ErrAlreadyExists)
	}
	rec.Response = bytes.Clone(rec.Response)
	rec.ExpiresAt = micro(rec.ExpiresAt)
	keep(u, s.idem, k)
	s.idem[k] = rec
	return nil
}

func (s *Store) getIdempotency(scope, key string, now time.Time) (store.IdempotencyRecord, error) {
	rec, ok := s.idem[idemKey{scope, key}]
	if !ok || !rec.ExpiresAt.After(micro(now)) {
		return store.IdempotencyRecord{}, fmt.Errorf("idempotency key %q: %w", key, store.ErrNotFound)
	}
	if len(rec.Response) == 0 {
		// Postgres gives back an empty bytea either way; so does this.
		rec.Response = nil
	} else {
		rec.Response = bytes.Clone(rec.Response)
	}
	return rec, nil
}

func (s *Store) purgeIdempotency(before time.Time, u *tx) int {
	before = micro(before)
	n := 0
	for k, rec := range s.idem {
		if rec.ExpiresAt.Before(before) {
			keep(u, s.idem, k)
			delete(s.idem, k)
			n++
		}
	}
	return n
}

// micro returns t in UTC at Postgres's precision; the zero time, which
// means "no lease", stays zero.
func micro(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

// CreateOperation implements store.Operations.
func (s *Store) CreateOperation(ctx context.Context, op store.OperationRow) error {
	_, err := write(s, ctx, func() (struct{}, error) { return struct{}{}, s.createOperation(op, nil) })
	return err
}

// GetOperation implements store.Operations.
func (s *Store) GetOperation(ctx context.Context, id string) (store.OperationRow, error) {
	return read(s, ctx, func() (store.OperationRow, error) { return s.getOperation(id) })
}

// ListOperations implements store.Operations.
func (s *Store) ListOperations(ctx context.Context, f store.OperationFilter) ([]store.OperationRow, error) {
	return read(s, ctx, func() ([]store.OperationRow, error) { return s.listOperations(f), nil })
}

// UpdateSteps implements store.Operations.
func (s *Store) UpdateSteps(ctx context.Context, id, owner string, steps ...store.StepRow) error {
	_, err := write(s, ctx, func() (struct{}, error) { return struct{}{}, s.updateSteps(id, owner, steps, nil) })
	return err
}

// RecordSteps implements store.Operations.
func (s *Store) RecordSteps(ctx context.Context, id, owner string, steps []store.StepRow, rollouts []store.RolloutRow) error {
	_, err := write(s, ctx, func() (struct{}, error) { return struct{}{}, s.recordSteps(id, owner, steps, rollouts, nil) })
	return err
}

// SetOperationState implements store.Operations.
func (s *Store) SetOperationState(ctx context.Context, id, owner, state, errText string, until time.Time) error {
	_, err := write(s, ctx, func() (struct{}, error) {
		return struct{}{}, s.setOperationState(id, owner, state, errText, until, nil)
	})
	return err
}

// RenewLease implements store.Operations.
func (s *Store) RenewLease(ctx context.Context, id, owner string, until time.Time) error {
	_, err := write(s, ctx, func() (struct{}, error) { return struct{}{}, s.renewLease(id, owner, until, nil) })
	return err
}

// ClaimOperations implements store.Operations. The write lock makes the
// select-and-lease one step, which is what SKIP LOCKED buys in Postgres.
func (s *Store) ClaimOperations(ctx context.Context, owner string, now, until time.Time, limit int) ([]store.OperationRow, error) {
	return write(s, ctx, func() ([]store.OperationRow, error) { return s.claimOperations(owner, now, until, limit, nil), nil })
}

// PurgeOperations implements store.Operations.
func (s *Store) PurgeOperations(ctx context.Context, before time.Time) (int, error) {
	return write(s, ctx, func() (int, error) { return s.purgeOperations(before, nil), nil })
}

// CreateOperation implements store.Operations inside a transaction.
func (t *tx) CreateOperation(ctx context.Context, op store.OperationRow) error {
	_, err := inTx(t, ctx, func() (struct{}, error) { return struct{}{}, t.s.createOperation(op, t) })
	return err
}

// GetOperation implements store.Operations inside a transaction.
func (t *tx) GetOperation(ctx context.Context, id string) (store.OperationRow, error) {
	return inTx(t, ctx, func() (store.OperationRow, error) { return t.s.getOperation(id) })
}

// ListOperations implements store.Operations inside a transaction.
func (t *tx) ListOperations(ctx context.Context, f store.OperationFilter) ([]store.OperationRow, error) {
	return inTx(t, ctx, func() ([]store.OperationRow, error) { return t.s.listOperations(f), nil })
}

// UpdateSteps implements store.Operations inside a transaction.
func (t *tx) UpdateSteps(ctx context.Context, id, owner string, steps ...store.StepRow) error {
	_, err := inTx(t, ctx, func() (struct{}, error) { return struct{}{}, t.s.updateSteps(id, owner, steps, t) })
	return err
}

// RecordSteps implements store.Operations inside a transaction.
func (t *tx) RecordSteps(ctx context.Context, id, owner string, steps []store.StepRow, rollouts []store.RolloutRow) error {
	_, err := inTx(t, ctx, func() (struct{}, error) { return struct{}{}, t.s.recordSteps(id, owner, steps, rollouts, t) })
	return err
}

// SetOperationState implements store.Operations inside a transaction.
func (t *tx) SetOperationState(ctx context.Context, id, owner, state, errText string, until time.Time) error {
	_, err := inTx(t, ctx, func() (struct{}, error) {
		return struct{}{}, t.s.setOperationState(id, owner, state, errText, until, t)
	})
	return err
}

// RenewLease implements store.Operations inside a transaction.
func (t *tx) RenewLease(ctx context.Context, id, owner string, until time.Time) error {
	_, err := inTx(t, ctx, func() (struct{}, error) { return struct{}{}, t.s.renewLease(id, owner, until, t) })
	return err
}

// ClaimOperations implements store.Operations inside a transaction.
func (t *tx) ClaimOperations(ctx context.Context, owner string, now, until time.Time, limit int) ([]store.OperationRow, error) {
	return inTx(t, ctx, func() ([]store.OperationRow, error) { return t.s.claimOperations(owner, now, until, limit, t), nil })
}

// PurgeOperations implements store.Operations inside a transaction.
func (t *tx) PurgeOperations(ctx context.Context, before time.Time) (int, error) {
	return inTx(t, ctx, func() (int, error) { return t.s.purgeOperations(before, t), nil })
}

func isActive(state string) bool {
	return state == store.OperationRunning || state == store.OperationWaiting
}

func (s *Store) createOperation(op store.OperationRow, u *tx) error {
	if _, ok := s.dep.ops[op.ID]; ok {
		return fmt.Errorf("operation %q: %w", op.ID, store.ErrAlreadyExists)
	}
	if isActive(op.State) {
		if other, busy := s.dep.active[op.DeploymentKey]; busy {
			return fmt.Errorf("deployment %q (operation %s): %w", op.DeploymentKey, other, store.ErrOperationActive)
		}
		keep(u, s.dep.active, op.DeploymentKey)
		s.dep.active[op.DeploymentKey] = op.ID
	}
	op = copyOperation(op)
	op.LeaseUntil = micro(op.LeaseUntil)
	op.CreatedAt = s.now()
	op.UpdatedAt = op.CreatedAt
	keep(u, s.dep.ops, op.ID)
	s.dep.ops[op.ID] = op
	s.changed(u, store.ChangeOperation, op.ID, op.DeploymentKey, store.ChangeInsert)
	return nil
}

func (s *Store) getOperation(id string) (store.OperationRow, error) {
	op, ok := s.dep.ops[id]
	if !ok {
		return store.OperationRow{}, operationNotFound(id)
	}
	return copyOperation(op), nil
}

func (s *Store) listOperations(f store.OperationFilter) []store.OperationRow {
	var out []store.OperationRow
	add := func(op store.OperationRow) {
		if f.DeploymentKey != "" && op.DeploymentKey != f.DeploymentKey {
			return
		}
		if !f.AfterTime.IsZero() && byAge(op, store.OperationRow{CreatedAt: micro(f.AfterTime), ID: f.AfterID}) <= 0 {
			return
		}
		out = append(out, op)
	}
	if f.Active {
		for _, id := range s.dep.active {
			add(s.dep.ops[id])
		}
	} else {
		for _, op := range s.dep.ops {
			add(op)
		}
	}
	slices.SortFunc(out, byAge)
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	for i := range out {
		out[i] = copyOperation(out[i])
	}
	return out
}

// held returns operation id for a write by owner: ErrNotFound if it does
// not exist, ErrStale unless owner holds its lease.
func (s *Store) held(id, owner string) (store.OperationRow, error) {
	op, ok := s.dep.ops[id]
	if !ok {
		return store.OperationRow{}, operationNotFound(id)
	}
	if owner == "" || op.Owner != owner {
		return store.OperationRow{}, fmt.Errorf("operation %q: not leased to %q: %w", id, owner, store.ErrStale)
	}
	return op, nil
}

func (s *Store) updateSteps(id, owner string, steps []store.StepRow, u *tx) error {
	op, err := s.held(id, owner)
	if err != nil {
		return err
	}
	op = copyOperation(op)
	for _, step := range steps {
		if i := slices.IndexFunc(op.Steps, func(st store.StepRow) bool { return st.Cluster == step.Cluster }); i >= 0 {
			op.Steps[i] = step
		} else {
			op.Steps = append(op.Steps, step)
		}
	}
	op.UpdatedAt = s.now()
	keep(u, s.dep.ops, id)
	s.dep.ops[id] = op
	s.changed(u, store.ChangeOperation, id, op.DeploymentKey, store.ChangeUpdate)
	return nil
}

// recordSteps checks everything before it writes, so that a failure
// writes nothing.
func (s *Store) recordSteps(id, owner string, steps []store.StepRow, rollouts []store.RolloutRow, u *tx) error {
	if _, err := s.held(id, owner); err != nil {
		return err
	}
	for _, r := range rollouts {
		if _, ok := s.dep.deps[r.DeploymentKey]; !ok {
			return deploymentNotFound(r.DeploymentKey)
		}
	}
	if err := s.putRollouts(rollouts, u); err != nil {
		return err
	}
	return s.updateSteps(id, owner, steps, u)
}

func (s *Store) setOperationState(id, owner, state, errText string, until time.Time, u *tx) error {
	op, err := s.held(id, owner)
	if err != nil {
		return err
	}
	op = copyOperation(op)
	if isActive(op.State) && !isActive(state) && s.dep.active[op.DeploymentKey] == id {
		keep(u, s.dep.active, op.DeploymentKey)
		delete(s.dep.active, op.DeploymentKey)
	}
	op.State, op.Error = state, errText
	op.Owner, op.LeaseUntil = "", micro(until)
	op.UpdatedAt = s.now()
	keep(u, s.dep.ops, id)
	s.dep.ops[id] = op
	s.changed(u, store.ChangeOperation, id, op.DeploymentKey, store.ChangeUpdate)
	return nil
}

func (s *Store) renewLease(id, owner string, until time.Time, u *tx) error {
	op, err := s.held(id, owner)
	if err != nil {
		return err
	}
	op = copyOperation(op)
	op.LeaseUntil = micro(until)
	op.UpdatedAt = s.now()
	keep(u, s.dep.ops, id)
	s.dep.ops[id] = op
	return nil
}

func (s *Store) claimOperations(owner string, now, until time.Time, limit int, u *tx) []store.OperationRow {
	if limit <= 0 {
		return nil
	}
	now = micro(now)
	var free []store.OperationRow
	for _, id := range s.dep.active {
		op := s.dep.ops[id]
		if op.LeaseUntil.IsZero() || !op.LeaseUntil.After(now) {
			free = append(free, op)
		}
	}
	slices.SortFunc(free, byAge)
	free = free[:min(limit, len(free))]
	if len(free) == 0 {
		return nil
	}
	stamp, until := s.now(), micro(until)
	out := make([]store.OperationRow, len(free))
	for i, op := range free {
		op = copyOperation(op)
		op.State, op.Owner, op.LeaseUntil, op.UpdatedAt = store.OperationRunning, owner, until, stamp
		keep(u, s.dep.ops, op.ID)
		s.dep.ops[op.ID] = op
		s.changed(u, store.ChangeOperation, op.ID, op.DeploymentKey, store.ChangeUpdate)
		out[i] = copyOperation(op)
	}
	return out
}

func (s *Store) purgeOperations(before time.Time, u *tx) int {
	before = micro(before)
	n := 0
	for id, op := range s.dep.ops {
		if !isActive(op.State) && op.UpdatedAt.Before(before) {
			keep(u, s.dep.ops, id)
			delete(s.dep.ops, id)
			s.changed(u, store.ChangeOperation, id, op.DeploymentKey, store.ChangeDelete)
			n++
		}
	}
	return n
}

// copyOperation gives op its own Steps, so that stored operations stay
// immutable and callers may change what they get.
func copyOperation(op store.OperationRow) store.OperationRow {
	if len(op.Steps) == 0 {
		op.Steps = nil // as Postgres returns an empty array
	}
	op.Steps = slices.Clone(op.Steps)
	return op
}

// byAge orders operations oldest first, ties (equal clock readings) by id,
// as the Postgres store's ORDER BY created_at, id does.
func byAge(a, b store.OperationRow) int {
	if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

func operationNotFound(id string) error {
	return fmt.Errorf("operation %q: %w", id, store.ErrNotFound)
}
