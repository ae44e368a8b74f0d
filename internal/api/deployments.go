package api

import (
	"context"
	"fmt"
	"strings"

	"google.golang.org/protobuf/types/known/timestamppb"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/catalog"
	"github.com/oaas/pm/internal/deploy"
	"github.com/oaas/pm/internal/fault"
)

// Deployments serves oaas.pm.v1.DeploymentService and ClassRuntimeService.
type Deployments struct {
	svc  *deploy.Service
	idem *Idempotency
}

var (
	_ pmv1connect.DeploymentServiceHandler   = (*Deployments)(nil)
	_ pmv1connect.ClassRuntimeServiceHandler = (*Deployments)(nil)
)

// NewDeployments returns the deployment and class runtime handlers.
func NewDeployments(svc *deploy.Service, idem *Idempotency) *Deployments {
	return &Deployments{svc: svc, idem: idem}
}

// CreateDeployment implements DeploymentService.
func (h *Deployments) CreateDeployment(ctx context.Context, req *pmv1.CreateDeploymentRequest) (*pmv1.CreateDeploymentResponse, error) {
	dryRun := req.GetDryRun() || callInfo(ctx).RequestHeader().Get("X-Dry-Run") == "true"
	// A keyed create runs detached and may outlast the client's wait: it
	// then finishes and stores its result for the retry.
	keyed := idempotencyKey(ctx, req.GetIdempotencyKey()) != ""
	run := func(ctx context.Context) (*pmv1.CreateDeploymentResponse, error) {
		res, err := h.svc.Create(ctx, req.GetDeployment(), deploy.CreateOptions{DryRun: dryRun, Detached: keyed})
		if err != nil {
			return nil, err
		}
		d := res.Deployment.Deployment
		if dryRun {
			callInfo(ctx).ResponseHeader().Set("X-Dry-Run", "true")
			return &pmv1.CreateDeploymentResponse{
				Result: &pmv1.WriteResult{
					Id: d.GetKey(), Status: "planned",
					Message: fmt.Sprintf("dry run: %d replica(s) on %s, availability %.6g (target %.6g)",
						res.Plan.Replicas, strings.Join(d.GetTargetEnvs(), ", "), res.Plan.Achieved, res.Plan.Target),
				},
				Deployment: d,
			}, nil
		}
		return &pmv1.CreateDeploymentResponse{
			Result: &pmv1.WriteResult{
				Id: res.UnitID, Status: "created",
				Message: fmt.Sprintf("deployment %q created with %d replica(s) on %s", d.GetKey(),
					d.GetStatus().GetReplicationFactor(), strings.Join(d.GetStatus().GetSelectedEnvs(), ", ")),
			},
			Deployment: d,
			Revision:   catalog.FormatRevision(res.Deployment.Revision),
		}, nil
	}
	if dryRun {
		return run(ctx)
	}
	res, err := idempotent(ctx, h.idem, "CreateDeployment", req.GetIdempotencyKey(), req, run)
	if err != nil {
		return nil, err
	}
	if res.Revision != "" {
		callInfo(ctx).ResponseHeader().Set("ETag", fmt.Sprintf("%q", res.Revision))
	}
	return res, nil
}

// ListDeployments implements DeploymentService.
func (h *Deployments) ListDeployments(ctx context.Context, req *pmv1.ListDeploymentsRequest) (*pmv1.ListDeploymentsResponse, error) {
	limit, err := catalog.PageLimit(int(req.GetLimit()))
	if err != nil {
		return nil, err
	}
	if req.GetOffset() < 0 {
		return nil, fault.Invalidf("offset: must not be negative")
	}
	var after string
	if tok := req.GetPageToken(); tok != "" {
		if after, err = catalog.DecodePageToken(tok); err != nil {
			return nil, err
		}
	}
	recs, err := h.svc.List(ctx, deploy.ListQuery{
		PackageName: req.GetPackageName(), ClassKey: req.GetClassKey(),
		TargetEnv: req.GetTargetEnv(), TargetCluster: req.GetTargetCluster(),
		Limit: limit + 1, Offset: int(req.GetOffset()), After: after,
	})
	if err != nil {
		return nil, err
	}
	next := ""
	if len(recs) > limit {
		recs = recs[:limit]
		next = catalog.EncodePageToken(recs[len(recs)-1].Deployment.GetKey())
	}
	setNextPage(ctx, next)
	items := make([]*pmv1.OClassDeployment, len(recs))
	for i, r := range recs {
		items[i] = r.Deployment
	}
	return &pmv1.ListDeploymentsResponse{Items: items, NextPageToken: next}, nil
}

// GetDeployment implements DeploymentService.
func (h *Deployments) GetDeployment(ctx context.Context, req *pmv1.GetDeploymentRequest) (*pmv1.GetDeploymentResponse, error) {
	rec, err := h.svc.Get(ctx, req.GetKey())
	if err != nil {
		return nil, err
	}
	setETag(ctx, rec.Revision)
	return &pmv1.GetDeploymentResponse{Deployment: rec.Deployment, Revision: catalog.FormatRevision(rec.Revision)}, nil
}

// DeleteDeployment implements DeploymentService.
func (h *Deployments) DeleteDeployment(ctx context.Context, req *pmv1.DeleteDeploymentRequest) (*pmv1.DeleteDeploymentResponse, error) {
	rev, err := catalog.ParseRevision(ifMatch(ctx, req.GetExpectedRevision()))
	if err != nil {
		return nil, err
	}
	if err := h.svc.Delete(ctx, req.GetKey(), req.GetCluster(), rev); err != nil {
		return nil, err
	}
	return &pmv1.DeleteDeploymentResponse{}, nil
}

// GetClusterMappings implements DeploymentService.
func (h *Deployments) GetClusterMappings(ctx context.Context, req *pmv1.GetClusterMappingsRequest) (*pmv1.GetClusterMappingsResponse, error) {
	m, err := h.svc.Mappings(ctx, req.GetKey())
	if err != nil {
		return nil, err
	}
	return &pmv1.GetClusterMappingsResponse{DeploymentKey: req.GetKey(), ClusterMappings: m}, nil
}

// ListClassRuntimes implements ClassRuntimeService.
func (h *Deployments) ListClassRuntimes(ctx context.Context, req *pmv1.ListClassRuntimesRequest) (*pmv1.ListClassRuntimesResponse, error) {
	if req.GetLimit() < 0 || req.GetOffset() < 0 {
		return nil, fault.Invalidf("limit and offset: must not be negative")
	}
	items, failed, err := h.svc.ListRuntimes(ctx, deploy.RuntimeQuery{
		PackageName: req.GetPackageName(), ClassKey: req.GetClassKey(), Environment: req.GetEnvironment(),
		Cluster: req.GetCluster(), Status: req.GetStatus(), Limit: int(req.GetLimit()), Offset: int(req.GetOffset()),
	})
	if err != nil {
		return nil, err
	}
	return &pmv1.ListClassRuntimesResponse{Items: items, ClusterErrors: clusterErrors(ctx, failed)}, nil
}

// GetClassRuntime implements ClassRuntimeService.
func (h *Deployments) GetClassRuntime(ctx context.Context, req *pmv1.GetClassRuntimeRequest) (*pmv1.GetClassRuntimeResponse, error) {
	rt, failed, err := h.svc.GetRuntime(ctx, req.GetId(), req.GetCluster())
	if err != nil {
		return nil, err
	}
	return &pmv1.GetClassRuntimeResponse{Runtime: rt, ClusterErrors: clusterErrors(ctx, failed)}, nil
}

// GetDeploymentStatus implements ClassRuntimeService.
func (h *Deployments) GetDeploymentStatus(ctx context.Context, req *pmv1.GetDeploymentStatusRequest) (*pmv1.GetDeploymentStatusResponse, error) {
	st, err := h.svc.Status(ctx, req.GetId(), req.GetCluster())
	if err != nil {
		return nil, err
	}
	return &pmv1.GetDeploymentStatusResponse{Status: st}, nil
}

// ClusterErrorsHeader lists, on REST responses whose body is a bare array,
// the clusters that failed to answer a fan-out ("name: reason; …").
const ClusterErrorsHeader = "X-Cluster-Errors"

// clusterErrors converts failed clusters for Connect clients and sets the
// REST header.
func clusterErrors(ctx context.Context, failed []deploy.ClusterError) []*pmv1.ClusterError {
	if len(failed) == 0 {
		return nil
	}
	out := make([]*pmv1.ClusterError, len(failed))
	parts := make([]string, len(failed))
	for i, f := range failed {
		msg := ToConnectError(ctx, f.Err).Message()
		out[i] = &pmv1.ClusterError{Cluster: f.Cluster, Error: msg}
		parts[i] = f.Cluster + ": " + strings.NewReplacer("\n", " ", "\r", " ").Replace(msg)
	}
	callInfo(ctx).ResponseHeader().Set(ClusterErrorsHeader, strings.Join(parts, "; "))
	return out
}

// ListOrphans implements DeploymentService.
func (h *Deployments) ListOrphans(_ context.Context, _ *pmv1.ListOrphansRequest) (*pmv1.ListOrphansResponse, error) {
	var items []*pmv1.Orphan
	for _, o := range h.svc.Orphans() {
		items = append(items, &pmv1.Orphan{
			Cluster: o.Cluster, UnitId: o.UnitID, PackageName: o.PackageName, ClassKey: o.ClassKey,
			FirstSeen: timestamppb.New(o.FirstSeen),
		})
	}
	return &pmv1.ListOrphansResponse{Items: items}, nil
}

// ListOperations implements DeploymentService.
func (h *Deployments) ListOperations(ctx context.Context, req *pmv1.ListOperationsRequest) (*pmv1.ListOperationsResponse, error) {
	ops, err := h.svc.Operations(ctx, req.GetDeploymentKey())
	if err != nil {
		return nil, err
	}
	items := make([]*pmv1.Operation, len(ops))
	for i, op := range ops {
		o := &pmv1.Operation{
			Id: op.ID, Kind: string(op.Kind), DeploymentKey: op.DeploymentKey, State: string(op.State),
			CreatedAt: timestamppb.New(op.CreatedAt), UpdatedAt: timestamppb.New(op.UpdatedAt),
		}
		if op.Error != "" {
			o.Error = &op.Error
		}
		if op.Owner != "" {
			o.Owner = &op.Owner
		}
		for _, st := range op.Steps {
			s := &pmv1.OperationStep{Cluster: st.Cluster, UnitId: st.UnitID, State: string(st.State), Attempts: int32(st.Attempts)}
			if st.Error != "" {
				s.Error = &st.Error
			}
			o.Steps = append(o.Steps, s)
		}
		items[i] = o
	}
	return &pmv1.ListOperationsResponse{Items: items}, nil
}
