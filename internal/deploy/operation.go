package deploy

import (
	"context"
	"errors"

	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// Operation returns one durable operation by id (the watch streams read
// each changed one); NotFound when it is gone.
func (s *Service) Operation(ctx context.Context, id string) (Operation, error) {
	row, err := s.st.GetOperation(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return Operation{}, fault.NotFoundf("operation %q not found", id)
	}
	if err != nil {
		return Operation{}, err
	}
	return operationOf(row)
}
