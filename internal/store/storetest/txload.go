package storetest

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/oaas/pm/internal/store"
)

// Shape of testConcurrentDeploymentCreates: as many clients as the issue's
// measurement (16), about 300 transactions in all.
const (
	createClients    = 16
	createsPerClient = 19
)

// DeploymentCreateTx is one transaction shaped like a deployment create:
// read the package, create the deployment, check it has no operation in
// progress (a list of its operations), record the operation and map its
// unit. Writers of distinct deployments must not fail each other.
func DeploymentCreateTx(ctx context.Context, tx store.Tx, pkg, key string) error {
	if _, err := tx.GetPackage(ctx, pkg); err != nil {
		return fmt.Errorf("get package: %w", err)
	}
	if _, err := tx.CreateDeployment(ctx, FullDeployment(key, pkg, "Counter")); err != nil {
		return fmt.Errorf("create deployment: %w", err)
	}
	ops, err := tx.ListOperations(ctx, key)
	if err != nil {
		return fmt.Errorf("list operations: %w", err)
	}
	if len(ops) != 0 {
		return fmt.Errorf("new deployment %q already has %d operations", key, len(ops))
	}
	op := store.Operation{
		ID: "op-" + key, Kind: store.OpDeploy, DeploymentKey: key, DropDeployment: true,
		Owner: "pm-1", LeaseUntil: t0,
		Steps: []store.Step{{Cluster: "eu-1", UnitID: "u-" + key}, {Cluster: "eu-2", UnitID: "u2-" + key}},
	}
	if err := tx.CreateOperation(ctx, op); err != nil {
		return fmt.Errorf("create operation: %w", err)
	}
	if err := tx.PutMapping(ctx, store.Mapping{DeploymentKey: key, Cluster: "eu-1", UnitID: "u-" + key}); err != nil {
		return fmt.Errorf("put mapping: %w", err)
	}
	return nil
}

// testConcurrentDeploymentCreates has 16 clients create distinct
// deployments at once, each in a transaction shaped like the service's.
// None may fail: the keys are distinct, so nothing conflicts, and
// whatever the store's concurrency control aborts it must retry itself.
func (s suite) testConcurrentDeploymentCreates(t *testing.T) {
	ctx, st := s.setup(t)
	mustCreate(t, st, FullPackage("pkg"))
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for c := range createClients {
		wg.Go(func() {
			for i := range createsPerClient {
				key := fmt.Sprintf("dep-%02d-%02d", c, i)
				err := st.WithTx(ctx, func(ctx context.Context, tx store.Tx) error {
					return DeploymentCreateTx(ctx, tx, "pkg", key)
				})
				if err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s: %w", key, err))
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if i == 10 {
			t.Errorf("... and %d more", len(errs)-10)
			break
		}
		t.Errorf("create %v", err)
	}
	if len(errs) > 0 {
		t.Fatalf("%d of %d distinct creates failed, want none", len(errs), createClients*createsPerClient)
	}

	deps, err := st.ListDeployments(ctx, store.DeploymentFilter{})
	if err != nil {
		t.Fatal(err)
	}
	maps, err := st.AllMappings(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := st.ListOperations(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	want := createClients * createsPerClient
	if len(deps) != want || len(maps) != want || len(ops) != want {
		t.Errorf("stored %d deployments, %d mappings, %d operations; want %d of each", len(deps), len(maps), len(ops), want)
	}
	for _, d := range deps {
		if d.Revision != 1 || d.Deployment.GetPackageName() != "pkg" {
			t.Errorf("deployment %q: revision %d package %q", d.Deployment.GetKey(), d.Revision, d.Deployment.GetPackageName())
		}
	}
}
