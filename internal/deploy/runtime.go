package deploy

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// refreshTimeout bounds the CRM status reads of a refresh on the read path.
const refreshTimeout = 3 * time.Second

// refreshMinAge is how fresh a read-path refresh may be reused: a client
// polling a deployment across many clusters must not turn every GET into
// one status call per cluster.
const refreshMinAge = 2 * time.Second

// Condition maps a CRM status summary ("Available", "Progressing",
// "Degraded (reason): text") to a deployment condition and phase.
func Condition(summary string) (pmv1.DeploymentCondition, pmv1.RuntimePhase) {
	switch {
	case strings.HasPrefix(summary, "Available"), strings.HasPrefix(summary, "Running"):
		return pmv1.DeploymentCondition_RUNNING, pmv1.RuntimePhase_COMPLETED
	case strings.HasPrefix(summary, "Progressing"), strings.HasPrefix(summary, "Pending"):
		return pmv1.DeploymentCondition_DEPLOYING, pmv1.RuntimePhase_RESOURCE_PROVISIONING
	case strings.HasPrefix(summary, "Degraded"), strings.HasPrefix(summary, "Failed"), strings.HasPrefix(summary, "Error"):
		return pmv1.DeploymentCondition_DOWN, pmv1.RuntimePhase_FAILED
	default:
		return pmv1.DeploymentCondition_PENDING, pmv1.RuntimePhase_UNKNOWN
	}
}

// crmSummary turns a condition filter (as the runtimes show it) into the
// CRM's summary word; anything else is passed through as the CRM's own.
func crmSummary(status string) string {
	switch strings.ToUpper(status) {
	case "RUNNING":
		return "Available"
	case "DEPLOYING", "PENDING":
		return "Progressing"
	case "DOWN":
		return "Degraded"
	}
	return status
}

// refresh reads each mapped unit's status and stores the conditions when
// they changed. Clusters that cannot answer keep their last condition.
func (s *Service) refresh(ctx context.Context, rec store.Deployment) bool {
	key := rec.Deployment.GetKey()
	now := s.now()
	if last, ok := s.refreshed.Load(key); ok && now.Sub(last.(time.Time)) < refreshMinAge {
		return false
	}
	s.refreshed.Store(key, now)
	ms, err := s.st.Mappings(ctx, key)
	if err != nil || len(ms) == 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, refreshTimeout)
	defer cancel()
	conds := make([]pmv1.DeploymentCondition, len(ms))
	known := make([]bool, len(ms))
	var wg sync.WaitGroup
	for i, m := range ms {
		wg.Go(func() {
			crm, err := s.cl.CRM(m.Cluster)
			if err != nil {
				return
			}
			resp, err := crm.Status(ctx, m.UnitID)
			switch {
			case fault.KindOf(err) == fault.NotFound:
				conds[i], known[i] = pmv1.DeploymentCondition_DOWN, true
			case err == nil:
				conds[i], _ = Condition(resp.GetMessage())
				known[i] = true
			}
		})
	}
	wg.Wait()
	changed := false
	err = s.mutate(ctx, rec.Deployment.GetKey(), func(d *pmv1.OClassDeployment) {
		if d.Status == nil {
			d.Status = &pmv1.DeploymentStatusSummary{}
		}
		for i, m := range ms {
			if !known[i] {
				continue
			}
			r := rollout(d.Status, m.Cluster)
			if r.Condition == pmv1.DeploymentCondition_DELETED || (r.UnitId != "" && r.UnitId != m.UnitID) {
				// A delete (or re-deploy) finished while we asked: its
				// outcome is newer than our answer.
				continue
			}
			r.UnitId = m.UnitID
			r.Condition = conds[i]
		}
		d.Condition = overall(d.Status)
		changed = !proto.Equal(d, rec.Deployment)
	})
	if err != nil {
		s.log.DebugContext(ctx, "condition refresh not stored", "deployment", rec.Deployment.GetKey(), "error", err)
		return false
	}
	return changed
}

// RuntimeQuery filters class runtimes.
type RuntimeQuery struct {
	PackageName, ClassKey, Environment, Cluster, Status string
	Limit, Offset                                       int
}

// ClusterError is a cluster that could not answer a fan-out.
type ClusterError struct {
	Cluster string
	Err     error
}

// ListRuntimes asks every (or one) cluster for its class runtimes in
// parallel and merges them. Clusters that fail are reported, not hidden.
func (s *Service) ListRuntimes(ctx context.Context, q RuntimeQuery) ([]*pmv1.ClassRuntime, []ClusterError, error) {
	names, err := s.clustersFor(q.Cluster)
	if err != nil {
		return nil, nil, err
	}
	req := &deploymentpb.ListClassRuntimesRequest{}
	if q.PackageName != "" {
		req.PackageName = proto.String(q.PackageName)
	}
	if q.ClassKey != "" {
		req.ClassKey = proto.String(q.ClassKey)
	}
	if q.Environment != "" {
		req.TargetEnv = proto.String(q.Environment)
	}
	if q.Status != "" {
		req.Status = proto.String(crmSummary(q.Status))
	}
	lists, errs := fanOut(ctx, s, names, func(ctx context.Context, crm CRM) ([]*deploymentpb.DeploymentUnit, error) {
		resp, err := crm.List(ctx, req)
		return resp.GetItems(), err
	})
	owners := s.owners(ctx)
	var out []*pmv1.ClassRuntime
	var failed []ClusterError
	for i, name := range names {
		if errs[i] != nil {
			failed = append(failed, ClusterError{Cluster: name, Err: errs[i]})
			continue
		}
		for _, u := range lists[i] {
			out = append(out, runtimeOf(name, u, owners[unitKey{name, u.GetId()}]))
		}
	}
	slices.SortFunc(out, func(a, b *pmv1.ClassRuntime) int {
		return cmp.Or(cmp.Compare(a.GetClusterName(), b.GetClusterName()), cmp.Compare(a.Id, b.Id))
	})
	if len(failed) == len(names) && len(names) > 0 {
		return nil, failed, fault.New(fault.Unavailable, "no cluster answered: %s", joinErrs(failed))
	}
	if q.Offset > 0 {
		out = out[min(q.Offset, len(out)):]
	}
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, failed, nil
}

// GetRuntime returns one class runtime from the named cluster, or the first
// cluster that has it.
func (s *Service) GetRuntime(ctx context.Context, id, cluster string) (*pmv1.ClassRuntime, []ClusterError, error) {
	if id == "" {
		return nil, nil, fault.Invalidf("id: is required")
	}
	names, err := s.clustersFor(cluster)
	if err != nil {
		return nil, nil, err
	}
	unit, found, failed := findFirst(ctx, s, names, func(ctx context.Context, crm CRM) (*deploymentpb.DeploymentUnit, error) {
		resp, err := crm.Get(ctx, id)
		if err == nil && resp.GetDeployment() == nil {
			err = fault.NotFoundf("class runtime %q not found", id)
		}
		return resp.GetDeployment(), err
	})
	if found != "" {
		return runtimeOf(found, unit, s.owners(ctx)[unitKey{found, id}]), failed, nil
	}
	if len(failed) > 0 {
		return nil, failed, fault.New(fault.Unavailable, "class runtime %q not found in the clusters that answered; %s", id, joinErrs(failed))
	}
	return nil, nil, fault.NotFoundf("class runtime %q not found", id)
}

// Status returns the CRM's status of a unit: in the named cluster, else the
// cluster PM mapped it to, else the default cluster.
func (s *Service) Status(ctx context.Context, id, cluster string) (*pmv1.DeploymentStatus, error) {
	if id == "" {
		return nil, fault.Invalidf("id: is required")
	}
	if cluster == "" {
		for k := range s.owners(ctx) {
			if k.unit == id {
				cluster = k.cluster
				break
			}
		}
	}
	if cluster == "" && s.cl.Has(DefaultCluster) {
		cluster = DefaultCluster
	}
	var names []string
	switch {
	case cluster == "":
		names = s.cl.Names() // no default cluster: ask them all
	case !s.cl.Has(cluster):
		return nil, fault.Invalidf("cluster: unknown cluster %q", cluster)
	default:
		names = []string{cluster}
	}
	resp, cluster, failed := findFirst(ctx, s, names, func(ctx context.Context, crm CRM) (*deploymentpb.GetDeploymentStatusResponse, error) {
		return crm.Status(ctx, id)
	})
	if cluster == "" {
		if len(failed) > 0 {
			return nil, fault.New(fault.Unavailable, "deployment unit %q: %s", id, joinErrs(failed))
		}
		return nil, fault.NotFoundf("deployment unit %q not found in %s", id, strings.Join(names, ", "))
	}
	cond, phase := Condition(resp.GetMessage())
	st := &pmv1.DeploymentStatus{
		Id: id, Status: cond, Phase: phase, LastUpdated: timestamppb.New(s.now()), ClusterName: cluster,
	}
	if resp.Message != nil {
		st.Message = proto.String(resp.GetMessage())
	}
	for _, r := range resp.GetStatusResourceRefs() {
		st.ResourceRefs = append(st.ResourceRefs, &pmv1.ResourceRef{Kind: r.GetKind(), Name: r.GetName(), Namespace: r.Namespace, Uid: r.Uid})
	}
	return st, nil
}

// fanOut calls fn on every named cluster's CRM in parallel; results and
// errors are indexed like names. A slow cluster delays the others only up to
// its own CRM deadline.
func fanOut[T any](ctx context.Context, s *Service, names []string, fn func(context.Context, CRM) (T, error)) ([]T, []error) {
	out := make([]T, len(names))
	errs := make([]error, len(names))
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Go(func() {
			crm, err := s.cl.CRM(name)
			if err == nil {
				out[i], err = fn(ctx, crm)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	return out, errs
}

// findFirst asks the named clusters in parallel and returns the answer of
// the first (in names order) that has it, with that cluster's name ("" when
// none has it) and the clusters before it that failed other than NotFound.
func findFirst[T any](ctx context.Context, s *Service, names []string, fn func(context.Context, CRM) (T, error)) (T, string, []ClusterError) {
	answers, errs := fanOut(ctx, s, names, fn)
	var failed []ClusterError
	for i, name := range names {
		if errs[i] == nil {
			return answers[i], name, failed
		}
		if fault.KindOf(errs[i]) != fault.NotFound {
			failed = append(failed, ClusterError{Cluster: name, Err: errs[i]})
		}
	}
	var zero T
	return zero, "", failed
}

func (s *Service) clustersFor(cluster string) ([]string, error) {
	if cluster == "" {
		return s.cl.Names(), nil
	}
	if !s.cl.Has(cluster) {
		return nil, fault.Invalidf("cluster: unknown cluster %q (known: %s)", cluster, strings.Join(s.cl.Names(), ", "))
	}
	return []string{cluster}, nil
}

type unitKey struct{ cluster, unit string }

type owner struct {
	deployment string
	condition  pmv1.DeploymentCondition
}

// owners maps the units PM knows to their deployment and its condition per
// cluster, so runtime lists carry a condition without one status call per
// runtime.
func (s *Service) owners(ctx context.Context) map[unitKey]owner {
	ms, err := s.st.AllMappings(ctx)
	if err != nil {
		return nil
	}
	out := make(map[unitKey]owner, len(ms))
	conds := map[string]*pmv1.OClassDeployment{}
	if len(ms) > 0 {
		ds, err := s.st.ListDeployments(ctx, store.DeploymentFilter{})
		if err != nil {
			return nil
		}
		for _, rec := range ds {
			conds[rec.Deployment.GetKey()] = rec.Deployment
		}
	}
	for _, m := range ms {
		d := conds[m.DeploymentKey]
		o := owner{deployment: m.DeploymentKey, condition: pmv1.DeploymentCondition_PENDING}
		if d != nil {
			o.condition = d.GetCondition()
			for _, r := range d.GetStatus().GetClusters() {
				if r.Cluster == m.Cluster {
					o.condition = r.Condition
				}
			}
		}
		out[unitKey{m.Cluster, m.UnitID}] = o
	}
	return out
}

func runtimeOf(cluster string, u *deploymentpb.DeploymentUnit, o owner) *pmv1.ClassRuntime {
	cond := o.condition
	phase := pmv1.RuntimePhase_UNKNOWN
	switch cond {
	case pmv1.DeploymentCondition_RUNNING:
		phase = pmv1.RuntimePhase_COMPLETED
	case pmv1.DeploymentCondition_DEPLOYING:
		phase = pmv1.RuntimePhase_RESOURCE_PROVISIONING
	case pmv1.DeploymentCondition_DOWN:
		phase = pmv1.RuntimePhase_FAILED
	}
	var created *timestamppb.Timestamp
	if ts := u.GetCreatedAt(); ts != nil {
		created = &timestamppb.Timestamp{Seconds: ts.GetSeconds(), Nanos: ts.GetNanos()}
	}
	rt := &pmv1.ClassRuntime{
		Id:                u.GetId(),
		DeploymentUnitId:  u.GetId(),
		PackageName:       u.GetPackageName(),
		ClassKey:          u.GetClassKey(),
		TargetEnvironment: u.GetTargetEnv(),
		ClusterName:       proto.String(cluster),
		Status:            &pmv1.ClassRuntimeStatus{Condition: cond, Phase: phase, LastUpdated: timestamppb.Now()},
		CreatedAt:         created,
		UpdatedAt:         created,
	}
	if o.deployment == "" {
		rt.Status.Message = proto.String("not managed by this PM")
	}
	return rt
}

func joinErrs(errs []ClusterError) string {
	parts := make([]string, len(errs))
	for i, e := range errs {
		parts[i] = e.Err.Error()
		if !strings.Contains(parts[i], e.Cluster) {
			parts[i] = e.Cluster + ": " + parts[i]
		}
	}
	return strings.Join(parts, "; ")
}
