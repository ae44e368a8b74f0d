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

// CreateOperation implements store.Operations.
func (s *Store) CreateOperation(ctx context.Context, op store.Operation) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.createOperation(op, nil)
}

// GetOperation implements store.Operations.
func (s *Store) GetOperation(ctx context.Context, id string) (store.Operation, error) {
	if err := s.enter(ctx); err != nil {
		return store.Operation{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.getOperation(id)
}

// ListOperations implements store.Operations.
func (s *Store) ListOperations(ctx context.Context, deploymentKey string) ([]store.Operation, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.listOperations(deploymentKey), nil
}

// UpdateStep implements store.Operations.
func (s *Store) UpdateStep(ctx context.Context, id, owner string, steps ...store.Step) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.updateStep(id, owner, steps, nil)
}

// FinishOperation implements store.Operations.
func (s *Store) FinishOperation(ctx context.Context, id, owner string, state store.OperationState, errText string) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.finishOperation(id, owner, state, errText, nil)
}

// RenewLease implements store.Operations.
func (s *Store) RenewLease(ctx context.Context, id, owner string, until time.Time) error {
	if err := s.enter(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.renewLease(id, owner, until, nil)
}

// ClaimOperations implements store.Operations. The write lock makes the
// select-and-lease one step, which is what SKIP LOCKED buys in Postgres.
func (s *Store) ClaimOperations(ctx context.Context, owner string, now, until time.Time, limit int) ([]store.Operation, error) {
	if err := s.enter(ctx); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claimOperations(owner, now, until, limit, nil), nil
}

// PurgeOperations implements store.Operations.
func (s *Store) PurgeOperations(ctx context.Context, before time.Time) (int, error) {
	if err := s.enter(ctx); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.purgeOperations(before, nil), nil
}

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

// CreateOperation implements store.Operations inside a transaction.
func (t *tx) CreateOperation(ctx context.Context, op store.Operation) error {
	if err := t.enter(ctx); err != nil {
		return err
	}
	return t.s.createOperation(op, t)
}

// GetOperation implements store.Operations inside a transaction.
func (t *tx) GetOperation(ctx context.Context, id string) (store.Operation, error) {
	if err := t.enter(ctx); err != nil {
		return store.Operation{}, err
	}
	return t.s.getOperation(id)
}

// ListOperations implements store.Operations inside a transaction.
func (t *tx) ListOperations(ctx context.Context, deploymentKey string) ([]store.Operation, error) {
	if err := t.enter(ctx); err != nil {
		return nil, err
	}
	return t.s.listOperations(deploymentKey), nil
}

// UpdateStep implements store.Operations inside a transaction.
func (t *tx) UpdateStep(ctx context.Context, id, owner string, steps ...store.Step) error {
	if err := t.enter(ctx); err != nil {
		return err
	}
	return t.s.updateStep(id, owner, steps, t)
}

// FinishOperation implements store.Operations inside a transaction.
func (t *tx) FinishOperation(ctx context.Context, id, owner string, state store.OperationState, errText string) error {
	if err := t.enter(ctx); err != nil {
		return err
	}
	return t.s.finishOperation(id, owner, state, errText, t)
}

// RenewLease implements store.Operations inside a transaction.
func (t *tx) RenewLease(ctx context.Context, id, owner string, until time.Time) error {
	if err := t.enter(ctx); err != nil {
		return err
	}
	return t.s.renewLease(id, owner, until, t)
}

// ClaimOperations implements store.Operations inside a transaction.
func (t *tx) ClaimOperations(ctx context.Context, owner string, now, until time.Time, limit int) ([]store.Operation, error) {
	if err := t.enter(ctx); err != nil {
		return nil, err
	}
	return t.s.claimOperations(owner, now, until, limit, t), nil
}

// PurgeOperations implements store.Operations inside a transaction.
func (t *tx) PurgeOperations(ctx context.Context, before time.Time) (int, error) {
	if err := t.enter(ctx); err != nil {
		return 0, err
	}
	return t.s.purgeOperations(before, t), nil
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

func (s *Store) createOperation(op store.Operation, u *tx) error {
	if _, ok := s.ops[op.ID]; ok {
		return fmt.Errorf("operation %q: %w", op.ID, store.ErrAlreadyExists)
	}
	op = copyOperation(op)
	if op.State == "" {
		op.State = store.OpPending
	}
	for i := range op.Steps {
		if op.Steps[i].State == "" {
			op.Steps[i].State = store.OpPending
		}
	}
	op.LeaseUntil = micro(op.LeaseUntil)
	op.CreatedAt = s.now()
	op.UpdatedAt = op.CreatedAt
	keep(u, s.ops, op.ID)
	s.ops[op.ID] = op
	return nil
}

func (s *Store) getOperation(id string) (store.Operation, error) {
	op, ok := s.ops[id]
	if !ok {
		return store.Operation{}, operationNotFound(id)
	}
	return copyOperation(op), nil
}

// listOperations returns key's operations (all with an empty key), oldest
// first.
func (s *Store) listOperations(key string) []store.Operation {
	var out []store.Operation
	for _, op := range s.ops {
		if key == "" || op.DeploymentKey == key {
			out = append(out, copyOperation(op))
		}
	}
	slices.SortFunc(out, byAge)
	return out
}

// held returns operation id for a write by owner: ErrNotFound if it does
// not exist, ErrStale unless owner holds its lease.
func (s *Store) held(id, owner string) (store.Operation, error) {
	op, ok := s.ops[id]
	if !ok {
		return store.Operation{}, operationNotFound(id)
	}
	if owner == "" || op.Owner != owner {
		return store.Operation{}, fmt.Errorf("operation %q: not leased to %q: %w", id, owner, store.ErrStale)
	}
	return op, nil
}

func (s *Store) updateStep(id, owner string, steps []store.Step, u *tx) error {
	op, err := s.held(id, owner)
	if err != nil {
		return err
	}
	op = copyOperation(op)
	for _, step := range steps {
		if i := slices.IndexFunc(op.Steps, func(st store.Step) bool { return st.Cluster == step.Cluster }); i >= 0 {
			op.Steps[i] = step
		} else {
			op.Steps = append(op.Steps, step)
		}
	}
	op.UpdatedAt = s.now()
	keep(u, s.ops, id)
	s.ops[id] = op
	return nil
}

func (s *Store) finishOperation(id, owner string, state store.OperationState, errText string, u *tx) error {
	op, err := s.held(id, owner)
	if err != nil {
		return err
	}
	op = copyOperation(op)
	op.State, op.Error = state, errText
	op.Owner, op.LeaseUntil = "", time.Time{}
	op.UpdatedAt = s.now()
	keep(u, s.ops, id)
	s.ops[id] = op
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
	keep(u, s.ops, id)
	s.ops[id] = op
	return nil
}

func (s *Store) claimOperations(owner string, now, until time.Time, limit int, u *tx) []store.Operation {
	if limit <= 0 {
		return nil
	}
	now = micro(now)
	var free []store.Operation
	for _, op := range s.ops {
		if op.State == store.OpPending && (op.LeaseUntil.IsZero() || !op.LeaseUntil.After(now)) {
			free = append(free, op)
		}
	}
	slices.SortFunc(free, byAge)
	free = free[:min(limit, len(free))]
	if len(free) == 0 {
		return nil
	}
	stamp, until := s.now(), micro(until)
	out := make([]store.Operation, len(free))
	for i, op := range free {
		op = copyOperation(op)
		op.Owner, op.LeaseUntil, op.UpdatedAt = owner, until, stamp
		keep(u, s.ops, op.ID)
		s.ops[op.ID] = op
		out[i] = copyOperation(op)
	}
	return out
}

func (s *Store) purgeOperations(before time.Time, u *tx) int {
	before = micro(before)
	n := 0
	for id, op := range s.ops {
		if op.State != store.OpPending && op.UpdatedAt.Before(before) {
			keep(u, s.ops, id)
			delete(s.ops, id)
			n++
		}
	}
	return n
}

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

// copyOperation gives op its own Steps, so that stored operations stay
// immutable and callers may change what they get.
func copyOperation(op store.Operation) store.Operation {
	if len(op.Steps) == 0 {
		op.Steps = nil // as Postgres returns an empty array
	}
	op.Steps = slices.Clone(op.Steps)
	return op
}

// byAge orders operations oldest first, ties (equal clock readings) by id,
// as the Postgres store's ORDER BY created_at, id does.
func byAge(a, b store.Operation) int {
	if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
		return c
	}
	return strings.Compare(a.ID, b.ID)
}

// micro returns t in UTC at Postgres's precision; the zero time, which
// means "no lease", stays zero.
func micro(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}

func operationNotFound(id string) error {
	return fmt.Errorf("operation %q: %w", id, store.ErrNotFound)
}
