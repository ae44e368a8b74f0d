package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oaas/pm/internal/store"
)

// t0 is the "now" the operation and idempotency tests pass to stores; the
// store's own clock (NewClock) starts there too.
var t0 = ClockStart.Truncate(time.Microsecond)

// running is the state of a new operation.
const running = store.OperationRunning

func (s suite) testOperationCreateGet(t *testing.T) {
	ctx, st := s.setup(t)
	in := store.OperationRow{
		ID:            "op1",
		Kind:          "delete",
		DeploymentKey: "dep-a",
		Drop:          true,
		State:         running,
		Steps: []store.StepRow{
			{Cluster: "eu-2", UnitID: "u-2", State: "pending", Attempts: 2, Error: "was down"},
			{Cluster: "eu-1", State: "succeeded"},
		},
		Owner: "me",
		// Nanoseconds, in another zone: stored in UTC at microseconds.
		LeaseUntil: t0.Add(time.Hour + 789*time.Nanosecond).In(time.FixedZone("X", 3600)),
		// Client-sent times are replaced by the store's.
		CreatedAt: time.Unix(1, 0),
	}
	sent := copyOp(in)
	if err := st.CreateOperation(ctx, in); err != nil {
		t.Fatalf("CreateOperation: %v", err)
	}
	if opString(in) != opString(sent) {
		t.Errorf("CreateOperation changed its argument: %s", opString(in))
	}
	// The caller's slice is not the stored one.
	in.Steps[0].UnitID = "mutated"

	got := mustGetOperation(t, st, "op1")
	want := sent
	want.LeaseUntil = t0.Add(time.Hour).UTC()
	want.CreatedAt, want.UpdatedAt = got.CreatedAt, got.CreatedAt
	assertOp(t, got, want)
	if got.CreatedAt.Before(ClockStart.Truncate(time.Second)) || got.CreatedAt.Nanosecond()%1000 != 0 {
		t.Errorf("created_at %v is not from the store's clock at microseconds", got.CreatedAt)
	}

	// The result is the caller's to change.
	got.Steps[0].State = "failed"
	assertOp(t, mustGetOperation(t, st, "op1"), want)

	err := st.CreateOperation(ctx, store.OperationRow{ID: "op1", Kind: "deploy", DeploymentKey: "other", State: running})
	wantErr(t, err, store.ErrAlreadyExists, "op1")
	assertOp(t, mustGetOperation(t, st, "op1"), want)

	_, err = st.GetOperation(ctx, "ghost")
	wantErr(t, err, store.ErrNotFound, "ghost")

	// Listing: by deployment and all, oldest first.
	for _, op := range []store.OperationRow{
		{ID: "op0", Kind: "deploy", DeploymentKey: "dep-b", State: running},
		{ID: "op3", Kind: "deploy", DeploymentKey: "dep-a", State: "succeeded"},
		{ID: "op2", Kind: "rollback", DeploymentKey: "dep-a", State: "failed"},
	} {
		mustCreateOperation(t, st, op)
	}
	tests := []struct {
		key  string
		want []string
	}{
		{"dep-a", []string{"op1", "op3", "op2"}},
		{"dep-b", []string{"op0"}},
		{"", []string{"op1", "op0", "op3", "op2"}},
		{"none", nil},
	}
	for _, tc := range tests {
		ops, err := st.ListOperations(ctx, store.OperationFilter{DeploymentKey: tc.key})
		if err != nil {
			t.Fatalf("ListOperations(%q): %v", tc.key, err)
		}
		if ids := opIDs(ops); !slices.Equal(ids, tc.want) {
			t.Errorf("ListOperations(%q) = %v, want %v", tc.key, ids, tc.want)
		}
		for _, op := range ops {
			if op.ID == "op1" {
				assertOp(t, op, want)
			}
		}
	}
	op0 := mustGetOperation(t, st, "op0")
	if op0.Owner != "" || !op0.LeaseUntil.IsZero() || op0.State != running || op0.Steps != nil {
		t.Errorf("unleased operation without steps reads back as %s", opString(op0))
	}
}

func (s suite) testOperationLease(t *testing.T) {
	ctx, st := s.setup(t)
	mustCreateOperation(t, st, store.OperationRow{
		ID: "op1", Kind: "deploy", DeploymentKey: "dep", State: running,
		Steps: []store.StepRow{{Cluster: "eu-1", State: "pending"}, {Cluster: "eu-2", State: "pending"}},
		Owner: "me", LeaseUntil: t0.Add(time.Hour),
	})
	before := mustGetOperation(t, st, "op1")
	step := store.StepRow{Cluster: "eu-2", UnitID: "u-2", State: "succeeded", Attempts: 1}

	// Writes by anyone but the owner, or on a missing operation, fail.
	wantErr(t, st.UpdateSteps(ctx, "op1", "other", step), store.ErrStale, "op1")
	wantErr(t, st.UpdateSteps(ctx, "op1", "", step), store.ErrStale, "op1")
	wantErr(t, st.UpdateSteps(ctx, "ghost", "me", step), store.ErrNotFound, "ghost")
	wantErr(t, st.RenewLease(ctx, "op1", "other", t0.Add(2*time.Hour)), store.ErrStale, "op1")
	wantErr(t, st.RenewLease(ctx, "ghost", "me", t0.Add(2*time.Hour)), store.ErrNotFound, "ghost")
	wantErr(t, st.SetOperationState(ctx, "op1", "other", "succeeded", "", time.Time{}), store.ErrStale, "op1")
	wantErr(t, st.SetOperationState(ctx, "ghost", "me", "succeeded", "", time.Time{}), store.ErrNotFound, "ghost")
	assertOp(t, mustGetOperation(t, st, "op1"), before)

	// The owner replaces a step in place and adds a new one at the end.
	if err := st.UpdateSteps(ctx, "op1", "me", step); err != nil {
		t.Fatalf("UpdateStep: %v", err)
	}
	added := store.StepRow{Cluster: "eu-3", State: "failed", Attempts: 3, Error: `"quoted" ünïcode`}
	if err := st.UpdateSteps(ctx, "op1", "me", added); err != nil {
		t.Fatalf("UpdateStep (new cluster): %v", err)
	}
	got := mustGetOperation(t, st, "op1")
	want := copyOp(before)
	want.Steps = []store.StepRow{{Cluster: "eu-1", State: "pending"}, step, added}
	want.UpdatedAt = got.UpdatedAt
	assertOp(t, got, want)
	if !got.UpdatedAt.After(before.UpdatedAt) {
		t.Errorf("updated_at %v did not move past %v", got.UpdatedAt, before.UpdatedAt)
	}

	// Several outcomes in one write: replacements keep their place, new
	// clusters are appended.
	first := store.StepRow{Cluster: "eu-1", UnitID: "u-1", State: "succeeded", Attempts: 2}
	step = store.StepRow{Cluster: "eu-2", UnitID: "u-2", State: "succeeded", Attempts: 5}
	fourth, fifth := store.StepRow{Cluster: "eu-4", State: "pending"}, store.StepRow{Cluster: "eu-5", State: "failed", Error: "x"}
	if err := st.UpdateSteps(ctx, "op1", "me", fifth, step, first, fourth); err != nil {
		t.Fatalf("UpdateStep (batch): %v", err)
	}
	got = mustGetOperation(t, st, "op1")
	if len(got.Steps) != 5 {
		t.Fatalf("steps after batch: %s", opString(got))
	}
	if want := []store.StepRow{first, step, added}; !slices.Equal(got.Steps[:3], want) {
		t.Errorf("replaced steps %v, want %v", got.Steps[:3], want)
	}
	tail := map[string]store.StepRow{got.Steps[3].Cluster: got.Steps[3], got.Steps[4].Cluster: got.Steps[4]}
	if tail["eu-4"] != fourth || tail["eu-5"] != fifth {
		t.Errorf("appended steps %v", got.Steps[3:])
	}
	want.Steps = got.Steps
	if err := st.UpdateSteps(ctx, "op1", "me"); err != nil {
		t.Errorf("UpdateStep with no steps: %v", err)
	}
	before = mustGetOperation(t, st, "op1")

	if err := st.RenewLease(ctx, "op1", "me", t0.Add(2*time.Hour)); err != nil {
		t.Fatalf("RenewLease: %v", err)
	}
	if got := mustGetOperation(t, st, "op1"); !got.LeaseUntil.Equal(t0.Add(2*time.Hour)) || got.Owner != "me" || len(got.Steps) != 5 {
		t.Errorf("after RenewLease: %s", opString(got))
	}

	if err := st.SetOperationState(ctx, "op1", "me", "failed", "eu-3 failed", time.Time{}); err != nil {
		t.Fatalf("FinishOperation: %v", err)
	}
	got = mustGetOperation(t, st, "op1")
	want.State, want.Error, want.Owner, want.LeaseUntil, want.UpdatedAt = "failed", "eu-3 failed", "", time.Time{}, got.UpdatedAt
	assertOp(t, got, want)

	// The lease is gone: the former owner can no longer write, and a
	// finished operation is never claimed.
	wantErr(t, st.UpdateSteps(ctx, "op1", "me", step), store.ErrStale, "op1")
	wantErr(t, st.RenewLease(ctx, "op1", "me", t0.Add(3*time.Hour)), store.ErrStale, "op1")
	wantErr(t, st.SetOperationState(ctx, "op1", "me", "succeeded", "", time.Time{}), store.ErrStale, "op1")
	wantErr(t, st.UpdateSteps(ctx, "op1", "", step), store.ErrStale, "op1")
	if ops := mustClaim(t, st, "next", t0.Add(1000*time.Hour), t0.Add(1001*time.Hour), 10); len(ops) != 0 {
		t.Errorf("claimed finished operations %v", opIDs(ops))
	}
	assertOp(t, mustGetOperation(t, st, "op1"), want)
}

func (s suite) testClaimOperations(t *testing.T) {
	ctx, st := s.setup(t)
	for _, op := range []store.OperationRow{
		{ID: "a"},
		{ID: "b", Owner: "x", LeaseUntil: t0.Add(time.Hour)}, // leased
		{ID: "c", Owner: "x", LeaseUntil: t0.Add(time.Hour)}, // finished below
		{ID: "d", Owner: "y", LeaseUntil: t0.Add(-time.Minute)},
		{ID: "e", Owner: "y", LeaseUntil: t0}, // expires at now exactly
		{ID: "f", Owner: "x", LeaseUntil: t0.Add(-time.Hour)},
	} {
		// One deployment each: a deployment has one active operation.
		op.Kind, op.DeploymentKey, op.State = "deploy", "dep-"+op.ID, running
		op.Steps = []store.StepRow{{Cluster: "eu-1", UnitID: "u-" + op.ID}}
		mustCreateOperation(t, st, op)
	}
	if err := st.SetOperationState(ctx, "c", "x", "succeeded", "", time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := st.SetOperationState(ctx, "f", "x", "failed", "boom", time.Time{}); err != nil {
		t.Fatal(err)
	}
	// f's lease had run out, but its owner had not lost it: nobody claimed
	// it. That is by design: a lease only guards against other claimers.

	if ops := mustClaim(t, st, "me", t0, t0.Add(30*time.Minute), 0); len(ops) != 0 {
		t.Errorf("limit 0 claimed %v", opIDs(ops))
	}
	until := t0.Add(30 * time.Minute)
	first := mustClaim(t, st, "me", t0, until, 2)
	if ids := opIDs(first); !slices.Equal(ids, []string{"a", "d"}) {
		t.Fatalf("first claim = %v, want the two oldest claimable [a d]", ids)
	}
	for _, op := range first {
		if op.Owner != "me" || !op.LeaseUntil.Equal(until) || op.State != running ||
			len(op.Steps) != 1 || op.Steps[0].UnitID != "u-"+op.ID {
			t.Errorf("claimed %s", opString(op))
		}
		assertOp(t, mustGetOperation(t, st, op.ID), op)
	}
	if ids := opIDs(mustClaim(t, st, "me", t0, until, 10)); !slices.Equal(ids, []string{"e"}) {
		t.Errorf("second claim = %v, want [e]", ids)
	}
	if ids := opIDs(mustClaim(t, st, "other", t0, until, 10)); len(ids) != 0 {
		t.Errorf("third claim = %v, want nothing", ids)
	}
	if b := mustGetOperation(t, st, "b"); b.Owner != "x" || !b.LeaseUntil.Equal(t0.Add(time.Hour)) {
		t.Errorf("leased operation changed: %s", opString(b))
	}

	// Once the leases run out, everything pending is claimable again, and
	// the former owners lose their hold.
	later := t0.Add(2 * time.Hour)
	if ids := opIDs(mustClaim(t, st, "you", later, later.Add(time.Hour), 10)); !slices.Equal(ids, []string{"a", "b", "d", "e"}) {
		t.Errorf("claim after expiry = %v, want [a b d e]", ids)
	}
	wantErr(t, st.UpdateSteps(ctx, "a", "me", store.StepRow{Cluster: "eu-1"}), store.ErrStale, "a")
	wantErr(t, st.SetOperationState(ctx, "b", "x", "succeeded", "", time.Time{}), store.ErrStale, "b")
	if err := st.UpdateSteps(ctx, "a", "you", store.StepRow{Cluster: "eu-1", State: "succeeded"}); err != nil {
		t.Errorf("UpdateStep by the new owner: %v", err)
	}
}

// testClaimConcurrent has claimers race for operations: each must be
// claimed exactly once.
func (s suite) testClaimConcurrent(t *testing.T) {
	_, st := s.setup(t)
	const (
		ops      = 20
		claimers = 8
	)
	for i := range ops {
		id := fmt.Sprintf("op%02d", i)
		mustCreateOperation(t, st, store.OperationRow{ID: id, Kind: "deploy", DeploymentKey: "dep-" + id, State: running})
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		claimed = make(map[string][]string)
	)
	for c := range claimers {
		wg.Go(func() {
			owner := fmt.Sprintf("pm-%d", c)
			for {
				got, err := st.ClaimOperations(context.Background(), owner, t0, t0.Add(time.Hour), 3)
				if err != nil {
					t.Errorf("%s: ClaimOperations: %v", owner, err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, op := range got {
					claimed[op.ID] = append(claimed[op.ID], owner)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for i := range ops {
		id := fmt.Sprintf("op%02d", i)
		owners := claimed[id]
		if len(owners) != 1 {
			t.Errorf("%s claimed by %v, want exactly one claimer", id, owners)
			continue
		}
		if got := mustGetOperation(t, st, id); got.Owner != owners[0] {
			t.Errorf("%s is owned by %q, claimed by %q", id, got.Owner, owners[0])
		}
	}
}

func (s suite) testPurgeOperations(t *testing.T) {
	ctx, st := s.setup(t)
	for _, id := range []string{"done-old", "pending", "done-new"} {
		mustCreateOperation(t, st, store.OperationRow{ID: id, Kind: "deploy", DeploymentKey: "dep-" + id, State: running, Owner: "me", LeaseUntil: t0.Add(time.Hour)})
	}
	for _, id := range []string{"done-old", "done-new"} {
		if err := st.SetOperationState(ctx, id, "me", "succeeded", "", time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	oldAt := mustGetOperation(t, st, "done-old").UpdatedAt
	purge := func(before time.Time, want int) {
		t.Helper()
		n, err := st.PurgeOperations(ctx, before)
		if err != nil {
			t.Fatalf("PurgeOperations: %v", err)
		}
		if n != want {
			t.Errorf("PurgeOperations(%v) = %d, want %d", before, n, want)
		}
	}
	purge(oldAt, 0) // strictly before
	purge(oldAt.Add(time.Microsecond), 1)
	purge(t0.Add(1000*time.Hour), 1) // the pending one stays, however old
	ops, err := st.ListOperations(ctx, store.OperationFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if ids := opIDs(ops); !slices.Equal(ids, []string{"pending"}) {
		t.Errorf("after purges: %v, want [pending]", ids)
	}
}

func (s suite) testIdempotency(t *testing.T) {
	ctx, st := s.setup(t)
	rec := store.IdempotencyRecord{
		Scope: "CreateDeployment", Key: "k1", RequestHash: "h1",
		Response: []byte("\x00binary\xff"), ExpiresAt: t0.Add(time.Hour + 789*time.Nanosecond),
	}
	sent := rec
	if err := st.PutIdempotency(ctx, rec); err != nil {
		t.Fatalf("PutIdempotency: %v", err)
	}
	rec.Response[0] = 'X' // the store kept its own copy
	want := sent
	want.Response = []byte("\x00binary\xff")
	want.ExpiresAt = t0.Add(time.Hour)
	assertIdem(t, mustGetIdem(t, st, "CreateDeployment", "k1", t0), want)

	// An unexpired key is taken, whatever the request.
	err := st.PutIdempotency(ctx, store.IdempotencyRecord{Scope: "CreateDeployment", Key: "k1", RequestHash: "h2", ExpiresAt: t0.Add(2 * time.Hour)})
	wantErr(t, err, store.ErrAlreadyExists, "k1")
	got := mustGetIdem(t, st, "CreateDeployment", "k1", t0)
	assertIdem(t, got, want)
	got.Response[0] = 'Y'
	assertIdem(t, mustGetIdem(t, st, "CreateDeployment", "k1", t0), want)

	// Keys are per scope.
	other := store.IdempotencyRecord{Scope: "DeleteDeployment", Key: "k1", RequestHash: "h3", ExpiresAt: t0.Add(time.Hour)}
	if err := st.PutIdempotency(ctx, other); err != nil {
		t.Fatalf("same key, other scope: %v", err)
	}
	assertIdem(t, mustGetIdem(t, st, "DeleteDeployment", "k1", t0), other)

	// Expiry is judged at the given now: expired at ExpiresAt exactly.
	assertIdem(t, mustGetIdem(t, st, "CreateDeployment", "k1", want.ExpiresAt.Add(-time.Microsecond)), want)
	_, err = st.GetIdempotency(ctx, "CreateDeployment", "k1", want.ExpiresAt)
	wantErr(t, err, store.ErrNotFound, "k1")
	_, err = st.GetIdempotency(ctx, "CreateDeployment", "ghost", t0)
	wantErr(t, err, store.ErrNotFound, "ghost")

	// A record that expired by the store's clock is replaced by a put.
	expired := store.IdempotencyRecord{Scope: "s", Key: "k2", RequestHash: "old", ExpiresAt: t0.Add(-time.Hour)}
	if err := st.PutIdempotency(ctx, expired); err != nil {
		t.Fatal(err)
	}
	_, err = st.GetIdempotency(ctx, "s", "k2", t0)
	wantErr(t, err, store.ErrNotFound, "k2")
	fresh := store.IdempotencyRecord{Scope: "s", Key: "k2", RequestHash: "new", ExpiresAt: t0.Add(time.Hour)}
	if err := st.PutIdempotency(ctx, fresh); err != nil {
		t.Fatalf("put over an expired record: %v", err)
	}
	assertIdem(t, mustGetIdem(t, st, "s", "k2", t0), fresh)

	// Purge removes what expired strictly before t.
	for _, k := range []string{"k3", "k4"} {
		if err := st.PutIdempotency(ctx, store.IdempotencyRecord{Scope: "s", Key: k, ExpiresAt: t0.Add(-2 * time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	purge := func(before time.Time, want int) {
		t.Helper()
		n, err := st.PurgeIdempotency(ctx, before)
		if err != nil {
			t.Fatalf("PurgeIdempotency: %v", err)
		}
		if n != want {
			t.Errorf("PurgeIdempotency(%v) = %d, want %d", before, n, want)
		}
	}
	purge(t0.Add(-2*time.Hour), 0)
	purge(t0, 2)
	_, err = st.GetIdempotency(ctx, "s", "k3", t0.Add(-3*time.Hour))
	wantErr(t, err, store.ErrNotFound, "k3")
	assertIdem(t, mustGetIdem(t, st, "s", "k2", t0), fresh)
	assertIdem(t, mustGetIdem(t, st, "CreateDeployment", "k1", t0), want)
}

// testTxNewAggregates checks that deployments, rollouts, operations and
// idempotency keys commit and roll back with the rest of a transaction.
func (s suite) testTxNewAggregates(t *testing.T) {
	errBoom := errors.New("boom")
	for _, fail := range []bool{false, true} {
		t.Run(map[bool]string{false: "commit", true: "rollback"}[fail], func(t *testing.T) {
			t.Parallel()
			ctx, st := s.setup(t)
			keep := mustCreateDeployment(t, st, FullDeploymentRow("keep", "pkg", "Counter"))
			if err := st.PutRollouts(ctx, store.RolloutRow{DeploymentKey: "keep", Cluster: "eu-1", UnitID: "u1", State: "deployed"}); err != nil {
				t.Fatal(err)
			}
			mustCreateOperation(t, st, store.OperationRow{ID: "old", Kind: "deploy", DeploymentKey: "keep", State: running})
			oldOp := mustGetOperation(t, st, "old")
			idem := store.IdempotencyRecord{Scope: "s", Key: "k-old", RequestHash: "h", ExpiresAt: t0.Add(time.Hour)}
			if err := st.PutIdempotency(ctx, idem); err != nil {
				t.Fatal(err)
			}

			err := st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
				if _, err := tx.CreateDeployment(ctx, store.DeploymentRow{Key: "new"}); err != nil {
					return err
				}
				if err := tx.PutRollouts(ctx, store.RolloutRow{DeploymentKey: "new", Cluster: "eu-1", UnitID: "n1", State: "deployed"}); err != nil {
					return err
				}
				edit := copyDep(keep)
				edit.Replicas = 9
				if _, err := tx.UpdateDeployment(ctx, edit, 1); err != nil {
					return err
				}
				if err := tx.PutRollouts(ctx, store.RolloutRow{DeploymentKey: "keep", Cluster: "eu-1", UnitID: "u2", State: "deployed"}); err != nil {
					return err
				}
				if _, err := tx.UpdateConditions(ctx, store.ConditionUpdate{DeploymentKey: "keep", Cluster: "eu-1", UnitID: "u2", Condition: "running"}); err != nil {
					return err
				}
				if err := tx.CreateOperation(ctx, store.OperationRow{ID: "op-new", Kind: "delete", DeploymentKey: "gone", State: running}); err != nil {
					return err
				}
				claimed, err := tx.ClaimOperations(ctx, "me", t0, t0.Add(time.Hour), 1)
				if err != nil {
					return err
				}
				if ids := opIDs(claimed); !slices.Equal(ids, []string{"old"}) {
					t.Errorf("claimed %v in the transaction, want [old]", ids)
				}
				if err := tx.UpdateSteps(ctx, "old", "me", store.StepRow{Cluster: "eu-1", State: "pending"}); err != nil {
					return err
				}
				if err := tx.SetOperationState(ctx, "old", "me", "succeeded", "", time.Time{}); err != nil {
					return err
				}
				// A finished operation frees its deployment at once.
				if err := tx.CreateOperation(ctx, store.OperationRow{ID: "next", Kind: "heal", DeploymentKey: "keep", State: running}); err != nil {
					return err
				}
				if err := tx.PutIdempotency(ctx, store.IdempotencyRecord{Scope: "s", Key: "k-new", ExpiresAt: t0.Add(time.Hour)}); err != nil {
					return err
				}
				// The transaction reads its own writes.
				rs, err := tx.ListRollouts(ctx, store.RolloutFilter{Cluster: "eu-1"})
				if err != nil {
					return err
				}
				assertRollouts(t, rs, "new/eu-1=n1", "keep/eu-1=u2")
				if _, err := tx.GetOperation(ctx, "op-new"); err != nil {
					return err
				}
				if _, err := tx.GetIdempotency(ctx, "s", "k-new", t0); err != nil {
					return err
				}
				active, err := tx.ListOperations(ctx, store.OperationFilter{Active: true})
				if err != nil {
					return err
				}
				if ids := opIDs(active); !slices.Equal(ids, []string{"op-new", "next"}) {
					t.Errorf("active in the transaction: %v", ids)
				}
				ds, err := tx.ListDeployments(ctx, store.DeploymentFilter{})
				if err != nil {
					return err
				}
				if len(ds) != 2 || ds[0].Key != "keep" || ds[1].Key != "new" {
					t.Errorf("deployments in the transaction: %d", len(ds))
				}
				if fail {
					// Deleting takes the rollouts along; the rollback must
					// bring both back.
					if err := tx.DeleteDeployment(ctx, "keep", 2); err != nil {
						return err
					}
					return errBoom
				}
				return nil
			})

			if !fail {
				if err != nil {
					t.Fatalf("WithTx: %v", err)
				}
				if d := mustGetDeployment(t, st, "keep"); d.Revision != 2 || d.Replicas != 9 {
					t.Errorf("keep after commit: %s", depString(d))
				}
				assertRollouts(t, mustListRollouts(t, st, store.RolloutFilter{Cluster: "eu-1"}), "new/eu-1=n1", "keep/eu-1=u2")
				if op := mustGetOperation(t, st, "old"); op.State != "succeeded" || len(op.Steps) != 1 {
					t.Errorf("old after commit: %s", opString(op))
				}
				mustGetOperation(t, st, "op-new")
				mustGetIdem(t, st, "s", "k-new", t0)
				return
			}
			if !errors.Is(err, errBoom) {
				t.Fatalf("WithTx = %v, want %v", err, errBoom)
			}
			assertDep(t, mustGetDeployment(t, st, "keep"), keep)
			_, err = st.GetDeployment(ctx, "new")
			wantErr(t, err, store.ErrNotFound, "new")
			got := mustListRollouts(t, st, store.RolloutFilter{Cluster: "eu-1"})
			assertRollouts(t, got, "keep/eu-1=u1")
			if len(got) == 1 && got[0].Condition != "" {
				t.Errorf("condition after rollback %q", got[0].Condition)
			}
			for _, id := range []string{"op-new", "next"} {
				_, err = st.GetOperation(ctx, id)
				wantErr(t, err, store.ErrNotFound, id)
			}
			assertOp(t, mustGetOperation(t, st, "old"), oldOp)
			// The index of active operations was rolled back too.
			err = st.CreateOperation(ctx, store.OperationRow{ID: "again", Kind: "heal", DeploymentKey: "keep", State: running})
			wantErr(t, err, store.ErrOperationActive, "keep")
			_, err = st.GetIdempotency(ctx, "s", "k-new", t0)
			wantErr(t, err, store.ErrNotFound, "k-new")
			assertIdem(t, mustGetIdem(t, st, "s", "k-old", t0), idem)
		})
	}
}

// testOperationOneActive: a deployment has at most one active operation;
// finished ones do not count, and other deployments are not affected.
func (s suite) testOperationOneActive(t *testing.T) {
	ctx, st := s.setup(t)
	mustCreateOperation(t, st, store.OperationRow{ID: "a", Kind: "deploy", DeploymentKey: "dep", State: running, Owner: "me", LeaseUntil: t0.Add(time.Hour)})
	err := st.CreateOperation(ctx, store.OperationRow{ID: "b", Kind: "delete", DeploymentKey: "dep", State: running})
	wantErr(t, err, store.ErrOperationActive, "dep")
	err = st.CreateOperation(ctx, store.OperationRow{ID: "b", Kind: "delete", DeploymentKey: "dep", State: store.OperationWaiting})
	wantErr(t, err, store.ErrOperationActive, "dep")
	if _, err := st.GetOperation(ctx, "b"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("refused operation stored: %v", err)
	}
	// A finished record and another deployment's operation are fine.
	mustCreateOperation(t, st, store.OperationRow{ID: "c", Kind: "heal", DeploymentKey: "dep", State: "failed"})
	mustCreateOperation(t, st, store.OperationRow{ID: "d", Kind: "deploy", DeploymentKey: "other", State: running, Owner: "x", LeaseUntil: t0.Add(time.Hour)})
	// Waiting keeps the deployment busy; finishing frees it.
	if err := st.SetOperationState(ctx, "a", "me", store.OperationWaiting, "eu-1 down", t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	wantErr(t, st.CreateOperation(ctx, store.OperationRow{ID: "e", Kind: "heal", DeploymentKey: "dep", State: running}), store.ErrOperationActive, "dep")
	claimed := mustClaim(t, st, "me", t0.Add(time.Minute), t0.Add(time.Hour), 10)
	if ids := opIDs(claimed); !slices.Equal(ids, []string{"a"}) {
		t.Fatalf("claimed %v", ids)
	}
	if err := st.SetOperationState(ctx, "a", "me", "succeeded", "", time.Time{}); err != nil {
		t.Fatal(err)
	}
	mustCreateOperation(t, st, store.OperationRow{ID: "e", Kind: "heal", DeploymentKey: "dep", State: running})
}

// testOperationWaiting: a waiting operation has no owner, keeps its error,
// and is claimable (and set running) once its pause is over.
func (s suite) testOperationWaiting(t *testing.T) {
	ctx, st := s.setup(t)
	mustCreateOperation(t, st, store.OperationRow{ID: "op", Kind: "delete", DeploymentKey: "dep", State: running, Owner: "me",
		LeaseUntil: t0.Add(time.Hour), Steps: []store.StepRow{{Cluster: "eu-1", State: "failed", Attempts: 2}}})
	until := t0.Add(10 * time.Minute)
	if err := st.SetOperationState(ctx, "op", "me", store.OperationWaiting, "eu-1 unreachable", until); err != nil {
		t.Fatalf("SetOperationState waiting: %v", err)
	}
	op := mustGetOperation(t, st, "op")
	if op.State != store.OperationWaiting || op.Owner != "" || !op.LeaseUntil.Equal(until) || op.Error != "eu-1 unreachable" {
		t.Fatalf("waiting operation: %s", opString(op))
	}
	wantErr(t, st.UpdateSteps(ctx, "op", "me", store.StepRow{Cluster: "eu-1"}), store.ErrStale, "op")
	if ids := opIDs(mustClaim(t, st, "pm", until.Add(-time.Microsecond), until.Add(time.Hour), 10)); len(ids) != 0 {
		t.Errorf("claimed %v before the pause was over", ids)
	}
	claimed := mustClaim(t, st, "pm", until, until.Add(time.Hour), 10)
	if len(claimed) != 1 || claimed[0].State != running || claimed[0].Owner != "pm" || claimed[0].Steps[0].Attempts != 2 {
		t.Fatalf("claimed %v", claimed)
	}
	if active, err := st.ListOperations(ctx, store.OperationFilter{Active: true}); err != nil || len(active) != 1 {
		t.Errorf("active after the claim: %v, %v", opIDs(active), err)
	}
}

// testOperationListPaging pages through operations by (created_at, id) and
// filters active ones and one deployment's.
func (s suite) testOperationListPaging(t *testing.T) {
	ctx, st := s.setup(t)
	var all []string
	for i := range 7 {
		id := fmt.Sprintf("op%d", i)
		state := "succeeded"
		if i%3 == 0 {
			state = running
		}
		mustCreateOperation(t, st, store.OperationRow{ID: id, Kind: "deploy", DeploymentKey: fmt.Sprintf("dep%d", i%4), State: state, Owner: "me"})
		all = append(all, id)
	}
	var got []string
	f := store.OperationFilter{Limit: 3}
	for range 5 {
		page, err := st.ListOperations(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, opIDs(page)...)
		if len(page) < f.Limit {
			break
		}
		last := page[len(page)-1]
		f.AfterTime, f.AfterID = last.CreatedAt, last.ID
	}
	if !slices.Equal(got, all) {
		t.Errorf("pages gave %v, want %v", got, all)
	}
	active, err := st.ListOperations(ctx, store.OperationFilter{Active: true})
	if err != nil {
		t.Fatal(err)
	}
	if ids := opIDs(active); !slices.Equal(ids, []string{"op0", "op3", "op6"}) {
		t.Errorf("active %v", ids)
	}
	one, err := st.ListOperations(ctx, store.OperationFilter{DeploymentKey: "dep0", Active: true})
	if err != nil {
		t.Fatal(err)
	}
	if ids := opIDs(one); !slices.Equal(ids, []string{"op0"}) {
		t.Errorf("dep0 active %v", ids)
	}
}

// Helpers.

func mustCreateOperation(t *testing.T, st store.Store, op store.OperationRow) {
	t.Helper()
	if err := st.CreateOperation(context.Background(), op); err != nil {
		t.Fatalf("CreateOperation(%q): %v", op.ID, err)
	}
}

func mustGetOperation(t *testing.T, st store.Store, id string) store.OperationRow {
	t.Helper()
	op, err := st.GetOperation(context.Background(), id)
	if err != nil {
		t.Fatalf("GetOperation(%q): %v", id, err)
	}
	return op
}

func mustClaim(t *testing.T, st store.Store, owner string, now, until time.Time, limit int) []store.OperationRow {
	t.Helper()
	ops, err := st.ClaimOperations(context.Background(), owner, now, until, limit)
	if err != nil {
		t.Fatalf("ClaimOperations(%q): %v", owner, err)
	}
	return ops
}

func mustGetIdem(t *testing.T, st store.Store, scope, key string, now time.Time) store.IdempotencyRecord {
	t.Helper()
	rec, err := st.GetIdempotency(context.Background(), scope, key, now)
	if err != nil {
		t.Fatalf("GetIdempotency(%q, %q): %v", scope, key, err)
	}
	return rec
}

func opIDs(ops []store.OperationRow) []string {
	var ids []string
	for _, op := range ops {
		ids = append(ids, op.ID)
	}
	return ids
}

func copyOp(op store.OperationRow) store.OperationRow {
	op.Steps = slices.Clone(op.Steps)
	return op
}

// opString shows every field of op, times as instants, so that two
// operations are equal exactly when their strings are.
func opString(op store.OperationRow) string {
	ts := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.UTC().Format(time.RFC3339Nano)
	}
	var steps []string
	for _, s := range op.Steps {
		steps = append(steps, fmt.Sprintf("{%s %s %s %d %q}", s.Cluster, s.UnitID, s.State, s.Attempts, s.Error))
	}
	return fmt.Sprintf("%s kind=%s dep=%s drop=%t state=%s steps=[%s] owner=%q lease=%s error=%q created=%s updated=%s",
		op.ID, op.Kind, op.DeploymentKey, op.Drop, op.State, strings.Join(steps, " "),
		op.Owner, ts(op.LeaseUntil), op.Error, ts(op.CreatedAt), ts(op.UpdatedAt))
}

func assertOp(t *testing.T, got, want store.OperationRow) {
	t.Helper()
	if g, w := opString(got), opString(want); g != w {
		t.Errorf("operation differs:\n got %s\nwant %s", g, w)
	}
}

func assertIdem(t *testing.T, got, want store.IdempotencyRecord) {
	t.Helper()
	if got.Scope != want.Scope || got.Key != want.Key || got.RequestHash != want.RequestHash ||
		string(got.Response) != string(want.Response) || !got.ExpiresAt.Equal(want.ExpiresAt) {
		t.Errorf("idempotency record = %+v, want %+v", got, want)
	}
}
