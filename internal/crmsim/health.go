package crmsim

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	"github.com/oaas/pm/gen/go/oaas/deployment/deploymentconnect"
	healthpb "github.com/oaas/pm/gen/go/oaas/health"
	"github.com/oaas/pm/gen/go/oaas/health/healthconnect"
	"github.com/oaas/pm/gen/go/oaas/topology/topologyconnect"
)

// knownService reports whether a health check names a service the CRM
// serves; the empty name asks about the whole server.
func (s *Sim) knownService(name string) bool {
	switch name {
	case "", deploymentconnect.DeploymentServiceName, healthconnect.HealthServiceName,
		healthconnect.CrmInfoServiceName, grpchealth.HealthV1ServiceName:
		return true
	case topologyconnect.TopologyServiceName:
		return s.wire == 2
	case packageServiceName:
		return s.wire != 2
	}
	return false
}

// serving reports the server's serving status (NotServing covers every service).
func (s *Sim) serving() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.cfg.NotServing
}

// healthServer is oaas.health.HealthService, the CRM's own copy of grpc.health.v1.
type healthServer struct{ s *Sim }

var _ healthconnect.HealthServiceHandler = (*healthServer)(nil)

func (h *healthServer) status(service string) *healthpb.HealthCheckResponse {
	st := healthpb.HealthCheckResponse_SERVING
	switch {
	case !h.s.knownService(service):
		st = healthpb.HealthCheckResponse_SERVICE_UNKNOWN
	case !h.s.serving():
		st = healthpb.HealthCheckResponse_NOT_SERVING
	}
	return &healthpb.HealthCheckResponse{Status: st}
}

// Check reports SERVING, NOT_SERVING, or SERVICE_UNKNOWN for a service the
// CRM does not serve (the oaas variant answers in the body, not with NOT_FOUND).
func (h *healthServer) Check(_ context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return h.status(req.GetService()), nil
}

// Watch sends the status now and again whenever it changes, until the client
// leaves or the simulator closes.
func (h *healthServer) Watch(ctx context.Context, req *healthpb.HealthCheckRequest, stream *connect.ServerStream[healthpb.HealthCheckResponse]) error {
	changed := make(chan struct{}, 1)
	stop := h.s.watch(func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	})
	defer stop()
	last := h.status(req.GetService())
	if err := stream.Send(last); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			if cur := h.status(req.GetService()); cur.GetStatus() != last.GetStatus() {
				if err := stream.Send(cur); err != nil {
					return err
				}
				last = cur
			}
		}
	}
}

// crmInfoServer is oaas.health.CrmInfoService.
type crmInfoServer struct{ s *Sim }

var _ healthconnect.CrmInfoServiceHandler = (*crmInfoServer)(nil)

// GetEnvHealth reports the cluster's health from the node knobs. A cluster
// with no ready node is Unhealthy, not merely Degraded.
func (c *crmInfoServer) GetEnvHealth(_ context.Context, req *healthpb.CrmEnvRequest) (*healthpb.CrmEnvHealth, error) {
	s := c.s
	s.mu.Lock()
	cfg := s.cfg
	s.mu.Unlock()
	if env := req.GetEnv(); cfg.StrictEnv && env != "" && env != cfg.EnvName {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("env %q is not managed by this CRM (it manages %q)", env, cfg.EnvName))
	}
	nodes := cfg.NodeCount
	ready := nodes
	if cfg.ReadyNodes != nil {
		ready = *cfg.ReadyNodes
	}
	status := "Healthy"
	switch {
	case cfg.NotServing || ready == 0:
		status = "Unhealthy"
	case ready < nodes:
		status = "Degraded"
	}
	now := time.Now()
	res := &healthpb.CrmEnvHealth{
		EnvName: cfg.EnvName,
		Status:  status,

		LastSeen:   &commonpb.Timestamp{Seconds: now.Unix(), Nanos: int32(now.Nanosecond())},
		NodeCount:  &nodes,
		ReadyNodes: &ready,
	}
	if !cfg.OmitCRMVersion {
		res.CrmVersion = &cfg.CRMVersion
	}
	if cfg.Availability != nil {
		a := *cfg.Availability
		res.Availability = &a
	}
	return res, nil
}

// grpcHealthChecker serves the standard grpc.health.v1.Health, which other CRM
// implementations offer; unknown services get NOT_FOUND as that protocol says.
type grpcHealthChecker struct{ s *Sim }

var _ grpchealth.Watcher = (*grpcHealthChecker)(nil)

// Check implements grpchealth.Checker.
func (g *grpcHealthChecker) Check(_ context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	if !g.s.knownService(req.Service) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %q", req.Service))
	}
	if !g.s.serving() {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

// Watch implements grpchealth.Watcher.
func (g *grpcHealthChecker) Watch(_ context.Context, req *grpchealth.CheckRequest, onChange func()) (func(), error) {
	if !g.s.knownService(req.Service) {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %q", req.Service))
	}
	return g.s.watch(onChange), nil
}
