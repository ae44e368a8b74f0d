package app

import (
	"context"

	"github.com/oaas/pm/internal/cluster"
	"github.com/oaas/pm/internal/deploy"
	"github.com/oaas/pm/internal/fault"
)

// deployClusters adapts the cluster manager to what the deploy service
// needs, so deploy depends on a narrow interface rather than on gRPC clients.
type deployClusters struct{ *cluster.Manager }

func (c deployClusters) CRM(name string) (deploy.CRM, error) {
	cl, err := c.Client(name)
	if err != nil {
		return nil, err
	}
	return cl, nil
}

func (c deployClusters) Signals(ctx context.Context, name string) (deploy.Signals, error) {
	h, err := c.Health(ctx, name)
	if err != nil {
		return deploy.Signals{}, err
	}
	if h.Availability == nil && h.NodeCount == nil {
		if h.Status == cluster.StatusUnhealthy || h.Status == cluster.StatusUnknown {
			return deploy.Signals{}, fault.New(fault.Unavailable, "cluster %q is %s: %s", name, h.Status, h.Message)
		}
	}
	return deploy.Signals{Availability: h.Availability, NodeCount: h.NodeCount, ReadyNodes: h.ReadyNodes}, nil
}
