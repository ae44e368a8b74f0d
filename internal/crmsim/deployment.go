package crmsim

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	"github.com/oaas/pm/gen/go/oaas/deployment/deploymentconnect"
)

// deploymentServer is oaas.deployment.DeploymentService as a field CRM serves it.
type deploymentServer struct{ s *Sim }

var _ deploymentconnect.DeploymentServiceHandler = (*deploymentServer)(nil)

// isMutation reports whether a procedure changes the cluster.
func isMutation(procedure string) bool {
	return procedure == deploymentconnect.DeploymentServiceDeployProcedure ||
		procedure == deploymentconnect.DeploymentServiceDeleteDeploymentProcedure
}

// Deploy creates a runtime, or accepts an existing id without creating a
// second one; a changed spec replaces the stored one and rolls out again,
// like a Kubernetes apply, while an identical retry changes nothing.
func (d *deploymentServer) Deploy(_ context.Context, req *deploymentpb.DeployRequest) (*deploymentpb.DeployResponse, error) {
	s := d.s
	unit := req.GetDeploymentUnit()
	if unit == nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("deployment_unit is required"))
	}
	name, err := unitName(unit.GetId())
	if err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastUnits[name] = proto.CloneOf(unit)
	failing := s.deployFailures < s.cfg.FailFirstDeploys
	if failing {
		s.deployFailures++
		if !s.cfg.FailDeployAfterApply {
			return s.deployFailureLocked(name)
		}
	}

	stored := proto.CloneOf(unit)
	stored.Id = name
	msg := "accepted"
	if rt, ok := s.runtimes[name]; ok {
		if !proto.Equal(rt.unit, stored) {
			// A changed spec rolls out again, as a Kubernetes Deployment does.
			rt.unit, rt.createdAt, rt.settled, rt.degraded = stored, time.Now(), false, ""
		}
	} else {
		msg = "created"
		s.generation++
		s.created++
		s.runtimes[name] = &runtime{unit: stored, createdAt: time.Now(), generation: s.generation}
	}
	if failing {
		return s.deployFailureLocked(name)
	}
	return &deploymentpb.DeployResponse{
		Status:       commonpb.StatusCode_OK,
		DeploymentId: name,
		Message:      &msg,
	}, nil
}

// deployFailureLocked answers a Deploy that FailFirstDeploys makes fail.
func (s *Sim) deployFailureLocked(name string) (*deploymentpb.DeployResponse, error) {
	text := fmt.Sprintf("simulated deploy failure %d of %d for %s", s.deployFailures, s.cfg.FailFirstDeploys, name)
	if s.cfg.FailDeployInBody {
		return &deploymentpb.DeployResponse{
			Status:  commonpb.StatusCode_INTERNAL_ERROR,
			Message: &text,
		}, nil
	}
	return nil, connect.NewError(s.cfg.FailDeployCode, errors.New(text))
}

// GetDeploymentStatus returns the unit (the second generation only partly
// fills it), its summary and the objects it owns.
func (d *deploymentServer) GetDeploymentStatus(_ context.Context, req *deploymentpb.GetDeploymentStatusRequest) (*deploymentpb.GetDeploymentStatusResponse, error) {
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, err := s.lookupLocked(req.GetDeploymentId())
	if err != nil {
		return nil, err
	}
	summary := s.summaryLocked(rt, time.Now())
	unit := proto.CloneOf(rt.unit)
	if s.wire == 2 {
		unit = s.partialUnitLocked(rt)
	}
	return &deploymentpb.GetDeploymentStatusResponse{
		Status:             commonpb.StatusCode_OK,
		Deployment:         unit,
		Message:            &summary,
		StatusResourceRefs: s.resourceRefsLocked(rt),
	}, nil
}

// DeleteDeployment removes a runtime at once; a field CRM's objects would
// linger while Kubernetes garbage-collects them, which PM cannot observe.
func (d *deploymentServer) DeleteDeployment(_ context.Context, req *deploymentpb.DeleteDeploymentRequest) (*deploymentpb.DeleteDeploymentResponse, error) {
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	id := req.GetDeploymentId()
	if _, err := s.lookupLocked(id); err != nil {
		return nil, err
	}
	delete(s.runtimes, id)
	msg := "deleted"
	return &deploymentpb.DeleteDeploymentResponse{Status: commonpb.StatusCode_OK, Message: &msg}, nil
}

// ListClassRuntimes (first generation; generation.go has the second's)
// filters by exact package, class and env; status matches
// the summary, where a bare "Degraded" matches every "Degraded (reason): text".
// The order is by id, like a Kubernetes list, so offset paging is stable.
func (d *deploymentServer) ListClassRuntimes(_ context.Context, req *deploymentpb.ListClassRuntimesRequest) (*deploymentpb.ListClassRuntimesResponse, error) {
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	var items []*deploymentpb.DeploymentUnit
	for _, id := range s.sortedIDsLocked() {
		rt := s.runtimes[id]
		u := rt.unit
		if req.PackageName != nil && u.GetPackageName() != req.GetPackageName() ||
			req.ClassKey != nil && u.GetClassKey() != req.GetClassKey() ||
			req.TargetEnv != nil && u.GetTargetEnv() != req.GetTargetEnv() ||
			req.Status != nil && !summaryMatches(s.summaryLocked(rt, now), req.GetStatus()) {
			continue
		}
		items = append(items, u)
	}
	offset := min(int(req.GetOffset()), len(items))
	items = items[offset:]
	if req.Limit != nil && req.GetLimit() > 0 && int(req.GetLimit()) < len(items) {
		items = items[:req.GetLimit()]
	}
	out := make([]*deploymentpb.DeploymentUnit, len(items))
	for i, u := range items {
		out[i] = proto.CloneOf(u)
	}
	return &deploymentpb.ListClassRuntimesResponse{Items: out}, nil
}

// GetClassRuntime returns one unit.
func (d *deploymentServer) GetClassRuntime(_ context.Context, req *deploymentpb.GetClassRuntimeRequest) (*deploymentpb.GetClassRuntimeResponse, error) {
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	rt, err := s.lookupLocked(req.GetDeploymentId())
	if err != nil {
		return nil, err
	}
	return &deploymentpb.GetClassRuntimeResponse{Deployment: proto.CloneOf(rt.unit)}, nil
}

// lookupLocked finds a runtime by the exact id Deploy returned; like a
// Kubernetes GET by name, it does not normalise.
func (s *Sim) lookupLocked(id string) (*runtime, error) {
	if id == "" {
		return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("deployment_id is required"))
	}
	rt, ok := s.runtimes[id]
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("deployment %q not found in env %s", id, s.env))
	}
	return rt, nil
}

func summaryMatches(summary, filter string) bool {
	return summary == filter || strings.HasPrefix(summary, filter+" (")
}

// resourceRefsLocked lists what a field CRM would have created for the unit:
// a Deployment and a Service per function, and the same for ODGM when the
// unit asks for it.
func (s *Sim) resourceRefsLocked(rt *runtime) []*deploymentpb.ResourceReference {
	unit := rt.unit.GetId()
	var owners []string
	for _, fn := range rt.unit.GetFunctions() {
		owners = append(owners, childName(unit, fn.GetFunctionKey()))
	}
	if rt.unit.GetOdgmConfig() != nil {
		owners = append(owners, childName(unit, "odgm"))
	}
	refs := make([]*deploymentpb.ResourceReference, 0, 2*len(owners))
	for _, name := range owners {
		for _, kind := range []string{"Deployment", "Service"} {
			refs = append(refs, &deploymentpb.ResourceReference{
				Kind:      kind,
				Name:      name,
				Namespace: proto.String(s.cfg.Namespace),
				Uid:       proto.String(objectUID(s.env, kind, name, rt.generation)),
			})
		}
	}
	return refs
}
