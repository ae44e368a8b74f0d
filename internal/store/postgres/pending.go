package postgres

import (
	"context"
	"time"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// errPending is what the aggregates not yet stored in Postgres answer.
// TODO(store helper): replaced by the real implementation in the next commits.
var errPending = fault.New(fault.Unavailable, "postgres store: deployments, operations and idempotency keys are not implemented yet")

// CreateDeployment is not implemented yet.
func (r *repo) CreateDeployment(context.Context, *pmv1.OClassDeployment) (store.Deployment, error) {
	return store.Deployment{}, errPending
}

// GetDeployment is not implemented yet.
func (r *repo) GetDeployment(context.Context, string) (store.Deployment, error) {
	return store.Deployment{}, errPending
}

// ListDeployments is not implemented yet.
func (r *repo) ListDeployments(context.Context, store.DeploymentFilter) ([]store.Deployment, error) {
	return nil, errPending
}

// UpdateDeployment is not implemented yet.
func (r *repo) UpdateDeployment(context.Context, *pmv1.OClassDeployment, int64) (store.Deployment, error) {
	return store.Deployment{}, errPending
}

// DeleteDeployment is not implemented yet.
func (r *repo) DeleteDeployment(context.Context, string, int64) error { return errPending }

// PutMapping is not implemented yet.
func (r *repo) PutMapping(context.Context, store.Mapping) error { return errPending }

// DeleteMapping is not implemented yet.
func (r *repo) DeleteMapping(context.Context, string, string) error { return errPending }

// Mappings is not implemented yet.
func (r *repo) Mappings(context.Context, string) ([]store.Mapping, error) { return nil, errPending }

// AllMappings is not implemented yet.
func (r *repo) AllMappings(context.Context) ([]store.Mapping, error) { return nil, errPending }

// CreateOperation is not implemented yet.
func (r *repo) CreateOperation(context.Context, store.Operation) error { return errPending }

// GetOperation is not implemented yet.
func (r *repo) GetOperation(context.Context, string) (store.Operation, error) {
	return store.Operation{}, errPending
}

// ListOperations is not implemented yet.
func (r *repo) ListOperations(context.Context, string) ([]store.Operation, error) {
	return nil, errPending
}

// UpdateStep is not implemented yet.
func (r *repo) UpdateStep(context.Context, string, string, store.Step) error { return errPending }

// FinishOperation is not implemented yet.
func (r *repo) FinishOperation(context.Context, string, string, store.OperationState, string) error {
	return errPending
}

// RenewLease is not implemented yet.
func (r *repo) RenewLease(context.Context, string, string, time.Time) error { return errPending }

// ClaimOperations is not implemented yet.
func (r *repo) ClaimOperations(context.Context, string, time.Time, time.Time, int) ([]store.Operation, error) {
	return nil, errPending
}

// PurgeOperations is not implemented yet.
func (r *repo) PurgeOperations(context.Context, time.Time) (int, error) { return 0, errPending }

// PutIdempotency is not implemented yet.
func (r *repo) PutIdempotency(context.Context, store.IdempotencyRecord) error { return errPending }

// GetIdempotency is not implemented yet.
func (r *repo) GetIdempotency(context.Context, string, string, time.Time) (store.IdempotencyRecord, error) {
	return store.IdempotencyRecord{}, errPending
}

// PurgeIdempotency is not implemented yet.
func (r *repo) PurgeIdempotency(context.Context, time.Time) (int, error) { return 0, errPending }
