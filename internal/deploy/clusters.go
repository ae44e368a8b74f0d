package deploy

import (
	"context"

	"github.com/oaas/pm/internal/cluster"
	"github.com/oaas/pm/internal/fault"
)

// FromManager adapts the cluster manager to Clusters. The core itself
// depends only on the narrow interface, so its tests can wrap clusters.
func FromManager(m *cluster.Manager) Clusters { return managed{m} }

type managed struct{ *cluster.Manager }

func (c managed) CRM(name string) (CRM, error) {
	cl, err := c.Client(name)
	if err != nil {
		return nil, err
	}
	return cl, nil
}

func (c managed) Signals(ctx context.Context, name string) (Signals, error) {
	h, err := c.Health(ctx, name)
	if err != nil {
		return Signals{}, err
	}
	return signalsOf(name, h)
}

func (c managed) LastSignals(name string) (Signals, bool) {
	h, ok := c.LastHealth(name)
	if !ok {
		return Signals{}, false
	}
	sig, err := signalsOf(name, h)
	return sig, err == nil
}

func signalsOf(name string, h cluster.Health) (Signals, error) {
	if h.Availability == nil && h.NodeCount == nil {
		if h.Status == cluster.StatusUnhealthy || h.Status == cluster.StatusUnknown {
			return Signals{}, fault.New(fault.Unavailable, "cluster %q is %s: %s", name, h.Status, h.Message)
		}
	}
	return Signals{Availability: h.Availability, NodeCount: h.NodeCount, ReadyNodes: h.ReadyNodes, Rank: cluster.Rank(h.Status)}, nil
}
