package api

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/catalog"
	"github.com/oaas/pm/internal/deploy"
	"github.com/oaas/pm/internal/deploy/plan"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/restmodel"
)

// Deployments serves oaas.pm.v1.DeploymentService and ClassRuntimeService.
// The deployment core's model becomes oaas.pm.v1 here and nowhere else.
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

// CreateDeployment implements DeploymentService. A key that exists is
// updated to the spec, as OaaS's POST does (its CLI's apply re-posts): the
// answer is then 200 with status "updated" (or "unchanged" for the same
// spec), and X-Write-Status says so. create_only (If-None-Match: *) makes
// it a conflict instead.
func (h *Deployments) CreateDeployment(ctx context.Context, req *pmv1.CreateDeploymentRequest) (*pmv1.CreateDeploymentResponse, error) {
	dryRun := req.GetDryRun() || callInfo(ctx).RequestHeader().Get("X-Dry-Run") == "true"
	// A keyed create runs detached and may outlast the client's wait: it
	// then finishes and stores its result for the retry. Its key and body
	// also name the request, so that a retry after a crash recognises the
	// deployment its first attempt made.
	createOnly := req.GetCreateOnly() || strings.TrimSpace(callInfo(ctx).RequestHeader().Get("If-None-Match")) == "*"
	opt := deploy.CreateOptions{DryRun: dryRun, Apply: !createOnly}
	if key := idempotencyKey(ctx, req.GetIdempotencyKey()); key != "" && !dryRun {
		hash, err := requestHash(req)
		if err != nil {
			return nil, err
		}
		opt.Detached, opt.RequestKey = true, key+":"+hash
	}
	run := func(ctx context.Context) (*pmv1.CreateDeploymentResponse, error) {
		res, err := h.svc.Create(ctx, req.GetDeployment(), opt)
		if err != nil {
			return nil, err
		}
		d := deploymentPB(&res.Deployment)
		if dryRun {
			callInfo(ctx).ResponseHeader().Set("X-Dry-Run", "true")
			return &pmv1.CreateDeploymentResponse{
				Result:     &pmv1.WriteResult{Id: d.GetKey(), Status: "planned", Message: dryRunText(res.Outcome, &res.Deployment, res.Plan, res.Selection)},
				Deployment: d,
			}, nil
		}
		return &pmv1.CreateDeploymentResponse{
			Result:     writeResult(res.Outcome, &res.Deployment, res.Units),
			Deployment: d,
			Revision:   catalog.FormatRevision(res.Deployment.Revision),
			UnitIds:    res.Units,
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
	if st := res.GetResult().GetStatus(); st != deploy.OutcomeCreated {
		callInfo(ctx).ResponseHeader().Set(restmodel.WriteStatusHeader, st)
	}
	return res, nil
}

// writeResult is the REST acknowledgement of a create or update: the first
// unit id, and every cluster's in the message.
func writeResult(outcome string, d *deploy.Deployment, units map[string]string) *pmv1.WriteResult {
	var msg string
	switch outcome {
	case deploy.OutcomeUnchanged:
		msg = fmt.Sprintf("deployment %q unchanged: the spec is the one it runs (revision %d)", d.Key, d.SpecRevision)
	case deploy.OutcomeUpdated:
		msg = fmt.Sprintf("deployment %q updated to revision %d: %d replica(s) per cluster on %s", d.Key, d.SpecRevision,
			d.Plan.Replicas, unitList(d, units))
	default:
		msg = fmt.Sprintf("deployment %q created: %d replica(s) per cluster on %s", d.Key, d.Plan.Replicas, unitList(d, units))
	}
	return &pmv1.WriteResult{Id: firstUnit(d, units), Status: outcome, Message: msg}
}

// dryRunText says what a create or update would do.
func dryRunText(outcome string, d *deploy.Deployment, p plan.Plan, sel deploy.Selection) string {
	if outcome == deploy.OutcomeUnchanged {
		return fmt.Sprintf("dry run: deployment %q would be unchanged (the spec is the one it runs)", d.Key)
	}
	msg := fmt.Sprintf("dry run: %d replica(s) per cluster on %s, availability %.6g (target %.6g)",
		p.Replicas, strings.Join(d.Plan.Clusters, ", "), p.Achieved, p.Target)
	if outcome == deploy.OutcomeUpdated {
		msg = fmt.Sprintf("dry run: deployment %q would be updated to revision %d: ", d.Key, d.SpecRevision) + strings.TrimPrefix(msg, "dry run: ")
	}
	if sel.Auto {
		how := "selected"
		if sel.Kept {
			how = "kept (within the hysteresis margin)"
		}
		msg += fmt.Sprintf("; clusters %s automatically from %s (eligible, best first: %s)", how,
			strings.Join(sel.Candidates, ", "), strings.Join(sel.Eligible, ", "))
	}
	return msg
}

// UpdateDeployment implements DeploymentService.
func (h *Deployments) UpdateDeployment(ctx context.Context, req *pmv1.UpdateDeploymentRequest) (*pmv1.UpdateDeploymentResponse, error) {
	rev, err := catalog.ParseRevision(ifMatch(ctx, req.GetExpectedRevision()))
	if err != nil {
		return nil, err
	}
	dryRun := req.GetDryRun() || callInfo(ctx).RequestHeader().Get("X-Dry-Run") == "true"
	res, err := h.svc.Update(ctx, req.GetKey(), req.GetDeployment(), deploy.UpdateOptions{Expected: rev, DryRun: dryRun})
	if err != nil {
		return nil, err
	}
	outcome := deploy.OutcomeUpdated
	if !res.Changed {
		outcome = deploy.OutcomeUnchanged
	}
	d := deploymentPB(&res.Deployment)
	if dryRun {
		// A dry run of an update is "planned", or "unchanged" when the
		// spec is the one the deployment runs.
		status := "planned"
		if !res.Changed {
			status = deploy.OutcomeUnchanged
		}
		callInfo(ctx).ResponseHeader().Set("X-Dry-Run", "true")
		return &pmv1.UpdateDeploymentResponse{
			Result:     &pmv1.WriteResult{Id: d.GetKey(), Status: status, Message: dryRunText(outcome, &res.Deployment, res.Plan, res.Selection)},
			Deployment: d,
		}, nil
	}
	setETag(ctx, res.Deployment.Revision)
	callInfo(ctx).ResponseHeader().Set(restmodel.WriteStatusHeader, outcome)
	return &pmv1.UpdateDeploymentResponse{
		Result:     writeResult(outcome, &res.Deployment, res.Units),
		Deployment: d,
		Revision:   catalog.FormatRevision(res.Deployment.Revision),
		UnitIds:    res.Units,
	}, nil
}

// RollbackDeployment implements DeploymentService.
func (h *Deployments) RollbackDeployment(ctx context.Context, req *pmv1.RollbackDeploymentRequest) (*pmv1.RollbackDeploymentResponse, error) {
	rev, err := catalog.ParseRevision(ifMatch(ctx, req.GetExpectedRevision()))
	if err != nil {
		return nil, err
	}
	res, to, err := h.svc.Rollback(ctx, req.GetKey(), int64(req.GetToRevision()), rev)
	if err != nil {
		return nil, err
	}
	result := writeResult(deploy.OutcomeUnchanged, &res.Deployment, res.Units)
	if res.Changed {
		result = writeResult(deploy.OutcomeUpdated, &res.Deployment, res.Units)
		result.Status = "rolled back"
		result.Message = fmt.Sprintf("deployment %q rolled back to revision %d (now revision %d): %d replica(s) per cluster on %s",
			res.Deployment.Key, to, res.Deployment.SpecRevision, res.Deployment.Plan.Replicas, unitList(&res.Deployment, res.Units))
	}
	setETag(ctx, res.Deployment.Revision)
	return &pmv1.RollbackDeploymentResponse{
		Result:     result,
		Deployment: deploymentPB(&res.Deployment),
		Revision:   catalog.FormatRevision(res.Deployment.Revision),
		UnitIds:    res.Units,
	}, nil
}

// ListDeploymentRevisions implements DeploymentService.
func (h *Deployments) ListDeploymentRevisions(ctx context.Context, req *pmv1.ListDeploymentRevisionsRequest) (*pmv1.ListDeploymentRevisionsResponse, error) {
	revs, err := h.svc.Revisions(ctx, req.GetKey())
	if err != nil {
		return nil, err
	}
	items := make([]*pmv1.DeploymentRevision, len(revs))
	for i, r := range revs {
		items[i] = &pmv1.DeploymentRevision{
			Revision: int32(min(r.Number, 1<<30)), Deployment: r.Spec, Clusters: r.Clusters, Reason: r.Reason, //nolint:gosec // capped
			Current: r.Current, CreatedAt: timestamp(r.CreatedAt),
		}
	}
	return &pmv1.ListDeploymentRevisionsResponse{Items: items}, nil
}

// firstUnit is the unit id a create's result names: the first cluster's in
// placement order that runs it.
func firstUnit(d *deploy.Deployment, units map[string]string) string {
	for _, c := range d.Plan.Clusters {
		if id, ok := units[c]; ok {
			return id
		}
	}
	return ""
}

// unitList names each cluster a create deployed to with its unit id, in
// placement order: "east (unit d-east-1a2b3c4d), west (unit ...)".
func unitList(d *deploy.Deployment, units map[string]string) string {
	var parts []string
	for _, c := range d.Plan.Clusters {
		if id, ok := units[c]; ok {
			parts = append(parts, fmt.Sprintf("%s (unit %s)", c, id))
		}
	}
	return strings.Join(parts, ", ")
}

// ListDeployments implements DeploymentService.
func (h *Deployments) ListDeployments(ctx context.Context, req *pmv1.ListDeploymentsRequest) (*pmv1.ListDeploymentsResponse, error) {
	ds, next, err := h.svc.List(ctx, deploy.ListQuery{
		PackageName: req.GetPackageName(), ClassKey: req.GetClassKey(),
		TargetEnv: req.GetTargetEnv(), TargetCluster: req.GetTargetCluster(),
		Limit: int(req.GetLimit()), Offset: int(req.GetOffset()), PageToken: req.GetPageToken(),
	})
	if err != nil {
		return nil, err
	}
	setNextPage(ctx, next)
	items := make([]*pmv1.OClassDeployment, len(ds))
	for i := range ds {
		items[i] = deploymentPB(&ds[i])
	}
	return &pmv1.ListDeploymentsResponse{Items: items, NextPageToken: next}, nil
}

// GetDeployment implements DeploymentService.
func (h *Deployments) GetDeployment(ctx context.Context, req *pmv1.GetDeploymentRequest) (*pmv1.GetDeploymentResponse, error) {
	d, err := h.svc.Get(ctx, req.GetKey())
	if err != nil {
		return nil, err
	}
	setETag(ctx, d.Revision)
	return &pmv1.GetDeploymentResponse{Deployment: deploymentPB(&d), Revision: catalog.FormatRevision(d.Revision)}, nil
}

// DeleteDeployment implements DeploymentService. It answers as OaaS does:
// what was deleted, and from which clusters.
func (h *Deployments) DeleteDeployment(ctx context.Context, req *pmv1.DeleteDeploymentRequest) (*pmv1.DeleteDeploymentResponse, error) {
	rev, err := catalog.ParseRevision(ifMatch(ctx, req.GetExpectedRevision()))
	if err != nil {
		return nil, err
	}
	res, err := h.svc.Delete(ctx, req.GetKey(), req.GetCluster(), rev)
	if err != nil {
		return nil, err
	}
	out := &pmv1.DeleteDeploymentResponse{Id: req.GetKey(), DeletedEnvs: res.Clusters}
	switch {
	case res.UnitID != "":
		out.Message = fmt.Sprintf("Deployment unit %s of deployment %q deleted from environment %s", res.UnitID, res.Key, res.Cluster)
	case res.Cluster != "" && len(res.Clusters) == 0:
		out.Message = fmt.Sprintf("Deployment %q has no unit in environment %s; nothing deleted", res.Key, res.Cluster)
	case res.Cluster != "":
		out.Message = fmt.Sprintf("Deployment %q deleted from environment %s", res.Key, res.Cluster)
	default:
		out.Message = "Deployment deleted across environments"
	}
	if out.DeletedEnvs == nil {
		out.DeletedEnvs = []string{}
	}
	return out, nil
}

// GetClusterMappings implements DeploymentService.
func (h *Deployments) GetClusterMappings(ctx context.Context, req *pmv1.GetClusterMappingsRequest) (*pmv1.GetClusterMappingsResponse, error) {
	m, err := h.svc.Mappings(ctx, req.GetKey())
	if err != nil {
		return nil, err
	}
	return &pmv1.GetClusterMappingsResponse{
		DeploymentKey: req.GetKey(), ClusterMappings: m, ClusterIds: maps.Clone(m), EnvIds: maps.Clone(m),
	}, nil
}

// ListClassRuntimes implements ClassRuntimeService.
func (h *Deployments) ListClassRuntimes(ctx context.Context, req *pmv1.ListClassRuntimesRequest) (*pmv1.ListClassRuntimesResponse, error) {
	if req.GetLimit() < 0 || req.GetOffset() < 0 {
		return nil, fault.Invalidf("limit and offset: must not be negative")
	}
	rts, failed, err := h.svc.ListRuntimes(ctx, deploy.RuntimeQuery{
		PackageName: req.GetPackageName(), ClassKey: req.GetClassKey(), Environment: req.GetEnvironment(),
		Cluster: req.GetCluster(), Status: req.GetStatus(), Limit: int(req.GetLimit()), Offset: int(req.GetOffset()),
	})
	if err != nil {
		return nil, err
	}
	now := timestamppb.Now()
	items := make([]*pmv1.ClassRuntime, len(rts))
	for i := range rts {
		items[i] = runtimePB(&rts[i], now)
	}
	return &pmv1.ListClassRuntimesResponse{Items: items, ClusterErrors: clusterErrors(ctx, failed)}, nil
}

// GetClassRuntime implements ClassRuntimeService.
func (h *Deployments) GetClassRuntime(ctx context.Context, req *pmv1.GetClassRuntimeRequest) (*pmv1.GetClassRuntimeResponse, error) {
	rt, failed, err := h.svc.GetRuntime(ctx, req.GetId(), req.GetCluster())
	if err != nil {
		return nil, err
	}
	return &pmv1.GetClassRuntimeResponse{Runtime: runtimePB(&rt, timestamppb.Now()), ClusterErrors: clusterErrors(ctx, failed)}, nil
}

// GetDeploymentStatus implements ClassRuntimeService.
func (h *Deployments) GetDeploymentStatus(ctx context.Context, req *pmv1.GetDeploymentStatusRequest) (*pmv1.GetDeploymentStatusResponse, error) {
	st, err := h.svc.Status(ctx, req.GetId(), req.GetCluster())
	if err != nil {
		return nil, err
	}
	out := &pmv1.DeploymentStatus{
		Id: st.ID, Status: conditionPB(st.Condition), Phase: phaseOf(st.Condition),
		LastUpdated: timestamppb.Now(), ClusterName: st.Cluster,
	}
	if st.HasMessage {
		out.Message = proto.String(st.Message)
	}
	for _, r := range st.Resources {
		out.ResourceRefs = append(out.ResourceRefs, &pmv1.ResourceRef{Kind: r.GetKind(), Name: r.GetName(), Namespace: r.Namespace, Uid: r.Uid})
	}
	return &pmv1.GetDeploymentStatusResponse{Status: out}, nil
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
	ops, next, err := h.svc.Operations(ctx, deploy.OperationsQuery{
		DeploymentKey: req.GetDeploymentKey(), Active: req.GetActive(), Limit: int(req.GetLimit()), PageToken: req.GetPageToken(),
	})
	if err != nil {
		return nil, err
	}
	setNextPage(ctx, next)
	items := make([]*pmv1.Operation, len(ops))
	for i := range ops {
		items[i] = operationPB(&ops[i])
	}
	return &pmv1.ListOperationsResponse{Items: items, NextPageToken: next}, nil
}

// deploymentPB is the API form of a deployment: the user's spec with the
// server-managed fields (condition, status summary, times).
func deploymentPB(d *deploy.Deployment) *pmv1.OClassDeployment {
	out := new(pmv1.OClassDeployment)
	switch {
	case d.Answer != nil:
		out = proto.CloneOf(d.Answer)
	case d.Spec != nil:
		out = proto.CloneOf(d.Spec)
	}
	out.Key = d.Key
	out.Condition = conditionPB(d.Condition())
	out.CreatedAt, out.UpdatedAt = timestamp(d.CreatedAt), timestamp(d.UpdatedAt)
	out.Status = nil
	if d.Plan.Replicas == 0 && d.LastError == "" && len(d.Rollouts) == 0 {
		return out
	}
	sum := &pmv1.DeploymentStatusSummary{
		ReplicationFactor:          int32(min(d.Plan.Replicas, 1<<30)), //nolint:gosec // capped
		SelectedEnvs:               slices.Clone(d.Plan.Clusters),
		AchievedQuorumAvailability: d.Plan.Achieved,
		TargetAvailability:         d.Plan.Target,
		Algorithm:                  d.Plan.Algorithm,
		SpecRevision:               int32(min(d.SpecRevision, 1<<30)), //nolint:gosec // capped
	}
	if d.LastError != "" {
		sum.LastError = proto.String(d.LastError)
	}
	for _, r := range placementOrder(d) {
		cr := &pmv1.ClusterRollout{
			Cluster: r.Cluster, Availability: r.Availability, AvailabilitySource: r.AvailabilitySource,
			UnitId: r.UnitID, State: rolloutStatePB(r.State), Attempts: int32(min(r.Attempts, 1<<30)), //nolint:gosec // capped
			Condition: conditionPB(r.Condition),
		}
		if r.Error != "" {
			cr.Error = proto.String(r.Error)
		}
		sum.Clusters = append(sum.Clusters, cr)
	}
	out.Status = sum
	return out
}

// placementOrder lists the rollouts in the plan's cluster order, any
// others after by name.
func placementOrder(d *deploy.Deployment) []deploy.Rollout {
	rank := map[string]int{}
	for i, c := range d.Plan.Clusters {
		rank[c] = i + 1
	}
	rs := slices.Clone(d.Rollouts)
	slices.SortStableFunc(rs, func(a, b deploy.Rollout) int {
		ra, rb := rank[a.Cluster], rank[b.Cluster]
		if ra == 0 {
			ra = len(rank) + 1
		}
		if rb == 0 {
			rb = len(rank) + 1
		}
		return cmp.Or(cmp.Compare(ra, rb), cmp.Compare(a.Cluster, b.Cluster))
	})
	return rs
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func conditionPB(c deploy.Condition) pmv1.DeploymentCondition {
	switch c {
	case deploy.CondDeploying:
		return pmv1.DeploymentCondition_DEPLOYING
	case deploy.CondRunning:
		return pmv1.DeploymentCondition_RUNNING
	case deploy.CondDown:
		return pmv1.DeploymentCondition_DOWN
	case deploy.CondDeleted:
		return pmv1.DeploymentCondition_DELETED
	default:
		return pmv1.DeploymentCondition_PENDING
	}
}

// phaseOf is the runtime phase a condition stands for.
func phaseOf(c deploy.Condition) pmv1.RuntimePhase {
	switch c {
	case deploy.CondRunning:
		return pmv1.RuntimePhase_COMPLETED
	case deploy.CondDeploying:
		return pmv1.RuntimePhase_RESOURCE_PROVISIONING
	case deploy.CondDown:
		return pmv1.RuntimePhase_FAILED
	default:
		return pmv1.RuntimePhase_UNKNOWN
	}
}

var rolloutStates = map[deploy.RolloutState]pmv1.RolloutState{
	deploy.RolloutPlanned:      pmv1.RolloutState_ROLLOUT_STATE_PLANNED,
	deploy.RolloutDeployed:     pmv1.RolloutState_ROLLOUT_STATE_DEPLOYED,
	deploy.RolloutFailed:       pmv1.RolloutState_ROLLOUT_STATE_FAILED,
	deploy.RolloutRolledBack:   pmv1.RolloutState_ROLLOUT_STATE_ROLLED_BACK,
	deploy.RolloutDeleted:      pmv1.RolloutState_ROLLOUT_STATE_DELETED,
	deploy.RolloutDeleteFailed: pmv1.RolloutState_ROLLOUT_STATE_DELETE_FAILED,
}

func rolloutStatePB(s deploy.RolloutState) pmv1.RolloutState { return rolloutStates[s] }

var (
	operationKinds = map[deploy.Kind]pmv1.OperationKind{
		deploy.KindDeploy:   pmv1.OperationKind_OPERATION_KIND_DEPLOY,
		deploy.KindUpdate:   pmv1.OperationKind_OPERATION_KIND_UPDATE,
		deploy.KindDelete:   pmv1.OperationKind_OPERATION_KIND_DELETE,
		deploy.KindRollback: pmv1.OperationKind_OPERATION_KIND_ROLLBACK,
		deploy.KindHeal:     pmv1.OperationKind_OPERATION_KIND_HEAL,
		deploy.KindRevert:   pmv1.OperationKind_OPERATION_KIND_REVERT,
	}
	operationStates = map[deploy.OpState]pmv1.OperationState{
		deploy.OpRunning:   pmv1.OperationState_OPERATION_STATE_RUNNING,
		deploy.OpWaiting:   pmv1.OperationState_OPERATION_STATE_WAITING,
		deploy.OpSucceeded: pmv1.OperationState_OPERATION_STATE_SUCCEEDED,
		deploy.OpFailed:    pmv1.OperationState_OPERATION_STATE_FAILED,
	}
	stepStates = map[deploy.StepState]pmv1.StepState{
		deploy.StepPending:   pmv1.StepState_STEP_STATE_PENDING,
		deploy.StepSucceeded: pmv1.StepState_STEP_STATE_SUCCEEDED,
		deploy.StepFailed:    pmv1.StepState_STEP_STATE_FAILED,
		deploy.StepSkipped:   pmv1.StepState_STEP_STATE_SKIPPED,
	}
)

func operationPB(op *deploy.Operation) *pmv1.Operation {
	o := &pmv1.Operation{
		Id: op.ID, Kind: operationKinds[op.Kind], DeploymentKey: op.DeploymentKey, State: operationStates[op.State],
		CreatedAt: timestamp(op.CreatedAt), UpdatedAt: timestamp(op.UpdatedAt),
	}
	if op.Error != "" {
		o.Error = proto.String(op.Error)
	}
	if op.Owner != "" {
		o.Owner = proto.String(op.Owner)
	}
	for _, st := range op.Steps {
		s := &pmv1.OperationStep{Cluster: st.Cluster, UnitId: st.UnitID, State: stepStates[st.State], Attempts: int32(min(st.Attempts, 1<<30))} //nolint:gosec // capped
		if st.Error != "" {
			s.Error = proto.String(st.Error)
		}
		o.Steps = append(o.Steps, s)
	}
	return o
}

// runtimePB is the API form of a runtime; now stamps last_updated.
func runtimePB(rt *deploy.Runtime, now *timestamppb.Timestamp) *pmv1.ClassRuntime {
	u := rt.Unit
	var created *timestamppb.Timestamp
	if ts := u.GetCreatedAt(); ts != nil {
		created = &timestamppb.Timestamp{Seconds: ts.GetSeconds(), Nanos: ts.GetNanos()}
	}
	out := &pmv1.ClassRuntime{
		Id:                u.GetId(),
		DeploymentUnitId:  u.GetId(),
		PackageName:       u.GetPackageName(),
		ClassKey:          u.GetClassKey(),
		TargetEnvironment: u.GetTargetEnv(),
		ClusterName:       proto.String(rt.Cluster),
		Status:            &pmv1.ClassRuntimeStatus{Condition: conditionPB(rt.Condition), Phase: phaseOf(rt.Condition), LastUpdated: now},
		CreatedAt:         created,
		UpdatedAt:         created,
	}
	if rt.Deployment == "" {
		out.Status.Message = proto.String("not managed by this PM")
	}
	return out
}
