package api

import (
	"context"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/cluster"
)

// Clusters serves oaas.pm.v1.ClusterService.
type Clusters struct {
	m *cluster.Manager
}

var _ pmv1connect.ClusterServiceHandler = (*Clusters)(nil)

// NewClusters returns the cluster handlers.
func NewClusters(m *cluster.Manager) *Clusters { return &Clusters{m: m} }

// ListClusters implements ClusterService: every configured cluster with its
// health, healthy first.
func (h *Clusters) ListClusters(ctx context.Context, _ *pmv1.ListClustersRequest) (*pmv1.ListClustersResponse, error) {
	hs := h.m.HealthAll(ctx)
	items := make([]*pmv1.ClusterInfo, 0, len(hs))
	for _, ch := range hs {
		items = append(items, &pmv1.ClusterInfo{Name: ch.Cluster, Health: ch.Proto()})
	}
	return &pmv1.ListClustersResponse{Items: items}, nil
}

// ListClustersHealth implements ClusterService: every cluster's health,
// healthy first.
func (h *Clusters) ListClustersHealth(ctx context.Context, _ *pmv1.ListClustersHealthRequest) (*pmv1.ListClustersHealthResponse, error) {
	hs := h.m.HealthAll(ctx)
	items := make([]*pmv1.ClusterHealth, 0, len(hs))
	for _, ch := range hs {
		items = append(items, ch.Proto())
	}
	return &pmv1.ListClustersHealthResponse{Items: items}, nil
}

// GetClusterHealth implements ClusterService; an unknown name is NotFound.
func (h *Clusters) GetClusterHealth(ctx context.Context, req *pmv1.GetClusterHealthRequest) (*pmv1.GetClusterHealthResponse, error) {
	ch, err := h.m.Health(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &pmv1.GetClusterHealthResponse{Health: ch.Proto()}, nil
}
