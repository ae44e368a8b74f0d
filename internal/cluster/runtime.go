package cluster

import (
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	runtimepb "github.com/oaas/pm/gen/go/oaas/runtime"
)

// Runtime is one class runtime as a CRM of either generation reports it, in
// PM's vocabulary: unqualified class keys, PM's condition and phase words.
type Runtime struct {
	// Cluster is the configured cluster name (upstream, too, overwrites what
	// the CRM calls it).
	Cluster string
	// Generation is the generation whose answer this was read from.
	Generation Generation
	// ID is the deployment unit id.
	ID          string
	PackageName string
	// ClassKey is the class key within the package; second-generation CRMs
	// qualify it ("<package>.<class>"), PM does not.
	ClassKey string
	// TargetEnvironment is the environment the CRM reports (a field CRM
	// reports its namespace).
	TargetEnvironment string
	// Condition is PENDING, DEPLOYING, RUNNING, DOWN or DELETED as the CRM
	// reports it; "" when it does not (first generation, or UNKNOWN).
	Condition string
	// Phase is UNKNOWN, RESOURCE_PROVISIONING, COMPLETED or FAILED (PM's
	// phases; the CRM's PHASE_RUNNING is COMPLETED); "" when not reported.
	Phase       string
	Message     *string
	LastUpdated time.Time
	// Functions are the functions' services (second generation, newest
	// CRMs only).
	Functions []*runtimepb.FunctionStatus
	// NfrCompliance is the CRM's NFR snapshot, when it sends one.
	NfrCompliance        *runtimepb.NfrCompliance
	Resources            []*deploymentpb.ResourceReference
	CreatedAt, UpdatedAt time.Time
	// PartitionCount is the runtime's ODGM partition count (at least 1 from
	// a second-generation CRM, which counts 0 as 1); 0 when not reported.
	PartitionCount uint32
	// Unit is the runtime as a deployment unit, the shape the first
	// generation answers with and the deployment core reads: the CRM's own
	// unit, or for the second generation one made from the summary (id,
	// package, class, environment, creation time).
	Unit *deploymentpb.DeploymentUnit
}

// runtimeFromUnit reads a first-generation item.
func runtimeFromUnit(cluster string, u *deploymentpb.DeploymentUnit) Runtime {
	r := Runtime{
		Cluster:           cluster,
		Generation:        Generation1,
		ID:                u.GetId(),
		PackageName:       u.GetPackageName(),
		ClassKey:          u.GetClassKey(),
		TargetEnvironment: u.GetTargetEnv(),
		PartitionCount:    u.GetOdgmConfig().GetPartitionCount(),
		Unit:              u,
	}
	if ts := u.GetCreatedAt(); ts != nil {
		r.CreatedAt = time.Unix(ts.GetSeconds(), int64(ts.GetNanos())).UTC()
		r.UpdatedAt = r.CreatedAt
	}
	return r
}

// runtimeFromSummary reads a second-generation item.
func runtimeFromSummary(cluster string, s *runtimepb.ClassRuntimeSummary) Runtime {
	id := s.GetDeploymentUnitId()
	if id == "" {
		id = s.GetId()
	}
	pkg, cls := splitClassKey(s.GetPackageName(), s.GetClassKey())
	st := s.GetStatus()
	r := Runtime{
		Cluster:           cluster,
		Generation:        Generation2,
		ID:                id,
		PackageName:       pkg,
		ClassKey:          cls,
		TargetEnvironment: s.GetTargetEnvironment(),
		Condition:         conditionWords[st.GetCondition()],
		Message:           st.Message,
		LastUpdated:       parseTime(st.GetLastUpdated()),
		Functions:         st.GetFunctions(),
		NfrCompliance:     s.GetNfrCompliance(),
		Resources:         s.GetResourceRefs(),
		CreatedAt:         parseTime(s.GetCreatedAt()),
		UpdatedAt:         parseTime(s.GetUpdatedAt()),
		PartitionCount:    max(s.GetPartitionCount(), 1),
	}
	if st != nil {
		r.Phase = phaseWords[st.GetPhase()]
	}
	r.Unit = &deploymentpb.DeploymentUnit{
		Id:          id,
		PackageName: pkg,
		ClassKey:    cls,
		TargetEnv:   r.TargetEnvironment,
	}
	if !r.CreatedAt.IsZero() {
		r.Unit.CreatedAt = &commonpb.Timestamp{Seconds: r.CreatedAt.Unix(), Nanos: int32(r.CreatedAt.Nanosecond())} //nolint:gosec // < 1e9
	}
	return r
}

// conditionWords maps the CRM's conditions onto PM's (the same words; PM
// has no "unknown", so that stays "").
var conditionWords = map[runtimepb.DeploymentCondition]string{
	runtimepb.DeploymentCondition_PENDING:   "PENDING",
	runtimepb.DeploymentCondition_DEPLOYING: "DEPLOYING",
	runtimepb.DeploymentCondition_RUNNING:   "RUNNING",
	runtimepb.DeploymentCondition_DOWN:      "DOWN",
	runtimepb.DeploymentCondition_DELETED:   "DELETED",
}

// phaseWords maps the CRM's phases onto PM's: a running runtime's rollout
// is COMPLETED.
var phaseWords = map[runtimepb.DeploymentPhase]string{
	runtimepb.DeploymentPhase_DEPLOYMENT_PHASE_UNKNOWN: "UNKNOWN",
	runtimepb.DeploymentPhase_RESOURCE_PROVISIONING:    "RESOURCE_PROVISIONING",
	runtimepb.DeploymentPhase_PHASE_RUNNING:            "COMPLETED",
	runtimepb.DeploymentPhase_FAILED:                   "FAILED",
}

// parseTime reads an RFC 3339 time; anything else is the zero time.
func parseTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

// Proto is the API view of r. The status is the CRM's when it reports one,
// else absent (PM's own observation is the caller's to add).
func (r Runtime) Proto() *pmv1.ClassRuntime {
	out := &pmv1.ClassRuntime{
		Id:                r.ID,
		DeploymentUnitId:  r.ID,
		PackageName:       r.PackageName,
		ClassKey:          r.ClassKey,
		TargetEnvironment: r.TargetEnvironment,
		ClusterName:       proto.String(r.Cluster),
		CreatedAt:         stamp(r.CreatedAt),
		UpdatedAt:         stamp(r.UpdatedAt),
	}
	if r.Condition != "" {
		out.Status = &pmv1.ClassRuntimeStatus{
			Condition:   pmv1.DeploymentCondition(pmv1.DeploymentCondition_value[r.Condition]),
			Phase:       pmv1.RuntimePhase(pmv1.RuntimePhase_value[r.Phase]),
			Message:     r.Message,
			LastUpdated: stamp(r.LastUpdated),
		}
	}
	for _, ref := range r.Resources {
		out.ResourceRefs = append(out.ResourceRefs, &pmv1.ResourceRef{
			Kind: ref.GetKind(), Name: ref.GetName(), Namespace: ref.Namespace, Uid: ref.Uid,
		})
	}
	return out
}

func stamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}
