package crmsim

import (
	"context"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	"github.com/oaas/pm/gen/go/oaas/deployment/deploymentconnect"
	runtimepb "github.com/oaas/pm/gen/go/oaas/runtime"
	topologypb "github.com/oaas/pm/gen/go/oaas/topology"
	"github.com/oaas/pm/gen/go/oaas/topology/topologyconnect"
)

// This file is what sets the two CRM generations apart
// (upstream-head-delta.md §2.4, §2.6).

// packageStubProcedures are the methods of the oaas.package.PackageService
// stub first-generation CRMs serve and the second no longer does.
var packageStubProcedures = []string{
	"CreatePackage", "GetPackage", "ListPackages", "DeletePackage", "DeployClass", "ReportDeploymentStatus",
}

// packageServiceName is the stub's service.
const packageServiceName = "oaas.package.PackageService"

// mountPackageStub serves the first generation's PackageService stub: every
// method answers OK with an empty message (status OK, nothing else), which
// any of its response types decodes. PM never calls it; it is there so the
// generations differ in the services they serve, as the field CRMs do.
func (s *Sim) mountPackageStub(mux *http.ServeMux, opts connect.HandlerOption) {
	for _, m := range packageStubProcedures {
		procedure := "/" + packageServiceName + "/" + m
		mux.Handle(procedure, connect.NewUnaryHandler(procedure,
			func(context.Context, *connect.Request[emptypb.Empty]) (*connect.Response[emptypb.Empty], error) {
				return connect.NewResponse(&emptypb.Empty{}), nil
			}, opts))
	}
}

// mountGeneration2 replaces the runtime reads with the second generation's
// answers and serves TopologyService. The more specific paths win over the
// DeploymentService handler's prefix.
func (s *Sim) mountGeneration2(mux *http.ServeMux, opts connect.HandlerOption) {
	mux.Handle(deploymentconnect.DeploymentServiceListClassRuntimesProcedure, connect.NewUnaryHandler(
		deploymentconnect.DeploymentServiceListClassRuntimesProcedure, s.listSummaries, opts))
	mux.Handle(deploymentconnect.DeploymentServiceGetClassRuntimeProcedure, connect.NewUnaryHandler(
		deploymentconnect.DeploymentServiceGetClassRuntimeProcedure, s.getSummary, opts))
	mux.Handle(topologyconnect.NewTopologyServiceHandler(&topologyServer{s: s}, opts))
}

// listSummaries is ListClassRuntimes as the second generation answers it:
// it honours only the status, limit and offset filters.
func (s *Sim) listSummaries(_ context.Context, req *connect.Request[deploymentpb.ListClassRuntimesRequest]) (*connect.Response[runtimepb.ListClassRuntimesResponseV2], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	var items []*runtimepb.ClassRuntimeSummary
	for _, id := range s.sortedIDsLocked() {
		rt := s.runtimes[id]
		if req.Msg.Status != nil && !summaryMatches(s.summaryLocked(rt, now), req.Msg.GetStatus()) {
			continue
		}
		items = append(items, s.runtimeSummaryLocked(rt, now))
	}
	items = items[min(int(req.Msg.GetOffset()), len(items)):]
	if req.Msg.Limit != nil && req.Msg.GetLimit() > 0 && int(req.Msg.GetLimit()) < len(items) {
		items = items[:req.Msg.GetLimit()]
	}
	return connect.NewResponse(&runtimepb.ListClassRuntimesResponseV2{Items: items}), nil
}

// getSummary is GetClassRuntime as the second generation answers it.
func (s *Sim) getSummary(_ context.Context, req *connect.Request[deploymentpb.GetClassRuntimeRequest]) (*connect.Response[runtimepb.GetClassRuntimeResponseV2], error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, err := s.lookupLocked(req.Msg.GetDeploymentId())
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&runtimepb.GetClassRuntimeResponseV2{Deployment: s.runtimeSummaryLocked(rt, time.Now())}), nil
}

// runtimeSummaryLocked is a runtime as a second-generation CRM summarises
// its ClassRuntime object: the qualified class key, the namespace as the
// environment, the condition read from the status summary, creation time
// as both timestamps, and a partition count of at least 1.
func (s *Sim) runtimeSummaryLocked(rt *runtime, now time.Time) *runtimepb.ClassRuntimeSummary {
	u := rt.unit
	qualified := u.GetClassKey()
	if u.GetPackageName() != "" {
		qualified = u.GetPackageName() + "." + qualified
	}
	pkg := ""
	if i := strings.LastIndexByte(qualified, '.'); i > 0 {
		pkg = qualified[:i]
	}
	created := rt.createdAt.UTC().Format(time.RFC3339)
	phase := s.phaseLocked(rt, now)
	summary := s.summaryLocked(rt, now)
	st := &runtimepb.ClassRuntimeStatus{LastUpdated: s.phaseSinceLocked(rt, now).UTC().Format(time.RFC3339)}
	switch {
	case phase == PhasePending:
		// The object has no status yet.
		st.Condition, st.Phase, st.Message = runtimepb.DeploymentCondition_PENDING, runtimepb.DeploymentPhase_RESOURCE_PROVISIONING, proto.String("Pending")
	case strings.HasPrefix(summary, "Available"):
		st.Condition, st.Phase = runtimepb.DeploymentCondition_RUNNING, runtimepb.DeploymentPhase_PHASE_RUNNING
	case strings.HasPrefix(summary, "Progressing"):
		st.Condition, st.Phase = runtimepb.DeploymentCondition_DEPLOYING, runtimepb.DeploymentPhase_RESOURCE_PROVISIONING
	case strings.HasPrefix(summary, "Degraded"):
		st.Condition, st.Phase = runtimepb.DeploymentCondition_DOWN, runtimepb.DeploymentPhase_RESOURCE_PROVISIONING
	default:
		st.Condition, st.Phase = runtimepb.DeploymentCondition_PENDING, runtimepb.DeploymentPhase_RESOURCE_PROVISIONING
	}
	if st.Message == nil {
		st.Message = proto.String(summary)
	}
	for _, fn := range u.GetFunctions() {
		svc := childName(u.GetId(), fn.GetFunctionKey())
		st.Functions = append(st.Functions, &runtimepb.FunctionStatus{
			FunctionKey:  fn.GetFunctionKey(),
			Service:      svc,
			Port:         80,
			PredictedUrl: "http://" + svc + "." + s.cfg.Namespace + ".svc.cluster.local",
			Template:     u.GetSelectedTemplate(),
			Ready:        proto.Bool(phase == PhaseRunning),
		})
	}
	return &runtimepb.ClassRuntimeSummary{
		Id:                u.GetId(),
		DeploymentUnitId:  u.GetId(),
		PackageName:       pkg,
		ClassKey:          qualified,
		TargetEnvironment: s.cfg.Namespace,
		ClusterName:       proto.String(s.cfg.Namespace),
		Status:            st,
		CreatedAt:         created,
		UpdatedAt:         created,
		PartitionCount:    max(u.GetOdgmConfig().GetPartitionCount(), 1),
	}
}

// phaseSinceLocked is when a runtime entered its current phase.
func (s *Sim) phaseSinceLocked(rt *runtime, now time.Time) time.Time {
	switch s.phaseLocked(rt, now) {
	case PhaseDeploying:
		return rt.createdAt.Add(s.cfg.ProgressDelay)
	case PhaseRunning:
		if rt.settled {
			return rt.createdAt
		}
		return rt.createdAt.Add(s.cfg.ProgressDelay + s.cfg.ReadyDelay)
	case PhaseDegraded:
		return now
	default:
		return rt.createdAt
	}
}

// partialUnitLocked is the unit a second-generation CRM puts in
// GetDeploymentStatusResponse: only what the object's name, namespace and
// template say.
func (s *Sim) partialUnitLocked(rt *runtime) *deploymentpb.DeploymentUnit {
	return &deploymentpb.DeploymentUnit{
		Id:               rt.unit.GetId(),
		ClassKey:         rt.unit.GetId(),
		TargetEnv:        s.cfg.Namespace,
		SelectedTemplate: rt.unit.SelectedTemplate,
	}
}

// topologyServer is oaas.topology.TopologyService, second generation only.
type topologyServer struct{ s *Sim }

var _ topologyconnect.TopologyServiceHandler = (*topologyServer)(nil)

// GetTopology answers every source with the deployments view: the
// environment, each class it runs and each class's functions.
func (t *topologyServer) GetTopology(context.Context, *topologypb.TopologyRequest) (*topologypb.TopologySnapshot, error) {
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	env := "env::" + s.env
	snap := &topologypb.TopologySnapshot{
		Timestamp: &commonpb.Timestamp{Seconds: now.Unix(), Nanos: int32(now.Nanosecond())}, //nolint:gosec // < 1e9
	}
	envNode := &topologypb.TopologyNode{Id: env, NodeType: "environment", Status: "healthy"}
	snap.Nodes = append(snap.Nodes, envNode)
	for _, id := range s.sortedIDsLocked() {
		rt := s.runtimes[id]
		summary := s.runtimeSummaryLocked(rt, now)
		class := "class::" + summary.GetClassKey()
		status := "healthy"
		if rt.degraded != "" {
			status = "degraded"
		}
		envNode.DeployedClasses = append(envNode.DeployedClasses, summary.GetClassKey())
		snap.Nodes = append(snap.Nodes, &topologypb.TopologyNode{Id: class, NodeType: "class", Status: status,
			Metadata: map[string]string{"unit": id}})
		snap.Edges = append(snap.Edges, &topologypb.TopologyEdge{FromId: class, ToId: env})
		for _, fn := range rt.unit.GetFunctions() {
			fid := "function::" + summary.GetClassKey() + "::" + fn.GetFunctionKey()
			snap.Nodes = append(snap.Nodes, &topologypb.TopologyNode{Id: fid, NodeType: "function", Status: status})
			snap.Edges = append(snap.Edges, &topologypb.TopologyEdge{FromId: class, ToId: fid})
		}
	}
	return snap, nil
}
