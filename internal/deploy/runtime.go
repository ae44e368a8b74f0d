package deploy

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/store"
)

// This file is the runtime views: what the clusters run, asked of their
// CRMs when a client asks, each unit's owner looked up by its id.

// ConditionOf maps a CRM status summary ("Available", "Progressing",
// "Degraded (reason): text") to a condition.
func ConditionOf(summary string) Condition {
	switch {
	case strings.HasPrefix(summary, "Available"), strings.HasPrefix(summary, "Running"):
		return CondRunning
	case strings.HasPrefix(summary, "Progressing"), strings.HasPrefix(summary, "Pending"):
		return CondDeploying
	case strings.HasPrefix(summary, "Degraded"), strings.HasPrefix(summary, "Failed"), strings.HasPrefix(summary, "Error"):
		return CondDown
	default:
		return CondPending
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

// RuntimeQuery filters class runtimes.
type RuntimeQuery struct {
	PackageName, ClassKey, Environment, Cluster, Status string
	// Limit caps the page (0: every runtime); Offset skips runtimes, in
	// (cluster, id) order.
	Limit, Offset int
}

// Runtime is a unit a cluster runs, and what PM knows of it.
type Runtime struct {
	Cluster string
	Unit    *deploymentpb.DeploymentUnit
	// Deployment is the owning deployment's key; "" for a unit PM does not
	// manage.
	Deployment string
	// Condition is the unit's condition as PM last observed it.
	Condition Condition
}

// ClusterError is a cluster that could not answer a fan-out.
type ClusterError struct {
	Cluster string
	Err     error
}

// ListRuntimes returns class runtimes in (cluster, id) order. With a
// limit it asks clusters in that order, one, then two, then four at a time,
// each for no more than the page still needs, and stops once the page is
// full: a small page costs a call or two whatever the fleet. Without a
// limit it asks every cluster at once. Clusters that fail are reported,
// not hidden.
func (s *Service) ListRuntimes(ctx context.Context, q RuntimeQuery) ([]Runtime, []ClusterError, error) {
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
	var out []Runtime
	var failed []ClusterError
	asked := 0
	collect := func(batch []string, limit int) {
		r := proto.CloneOf(req)
		if limit > 0 {
			r.Limit = proto.Uint32(uint32(min(limit, 1<<30))) //nolint:gosec // capped
		}
		lists, errs := fanOut(ctx, s, batch, func(ctx context.Context, crm CRM) ([]*deploymentpb.DeploymentUnit, error) {
			resp, err := crm.List(ctx, r)
			return resp.GetItems(), err
		})
		for i, name := range batch {
			if errs[i] != nil {
				failed = append(failed, ClusterError{Cluster: name, Err: errs[i]})
				continue
			}
			units := lists[i]
			slices.SortFunc(units, func(a, b *deploymentpb.DeploymentUnit) int { return cmp.Compare(a.GetId(), b.GetId()) })
			if limit > 0 && len(units) > limit {
				units = units[:limit]
			}
			for _, u := range units {
				out = append(out, Runtime{Cluster: name, Unit: u})
			}
		}
		asked += len(batch)
	}
	if q.Limit <= 0 {
		collect(names, 0)
	} else {
		need := q.Offset + q.Limit
		for width := 1; asked < len(names) && len(out) < need; width *= 2 {
			collect(names[asked:min(asked+width, len(names))], need-len(out))
		}
	}
	if len(failed) == asked && asked > 0 {
		return nil, failed, fault.New(fault.Unavailable, "no cluster answered: %s", joinErrs(failed))
	}
	out = out[min(q.Offset, len(out)):]
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	if err := s.resolveOwners(ctx, out); err != nil {
		return nil, failed, err
	}
	return out, failed, nil
}

// resolveOwners fills each runtime's owner and condition from the rollouts
// with its unit id, in one read. A storage error is an error: a unit is
// never called unmanaged because PM could not look.
func (s *Service) resolveOwners(ctx context.Context, rts []Runtime) error {
	if len(rts) == 0 {
		return nil
	}
	ids := make([]string, 0, len(rts))
	for _, rt := range rts {
		ids = append(ids, rt.Unit.GetId())
	}
	rows, err := s.st.ListRollouts(ctx, store.RolloutFilter{UnitIDs: ids})
	if err != nil {
		return err
	}
	type ref struct{ cluster, unit string }
	owners := make(map[ref]store.RolloutRow, len(rows))
	for _, r := range rows {
		owners[ref{r.Cluster, r.UnitID}] = r
	}
	for i := range rts {
		rts[i].Condition = CondPending
		if r, ok := owners[ref{rts[i].Cluster, rts[i].Unit.GetId()}]; ok {
			ro, err := rolloutOf(r)
			if err != nil {
				return err
			}
			rts[i].Deployment, rts[i].Condition = r.DeploymentKey, ro.Condition
		}
	}
	return nil
}

// GetRuntime returns one class runtime from the named cluster, or the first
// cluster that has it.
func (s *Service) GetRuntime(ctx context.Context, id, cluster string) (Runtime, []ClusterError, error) {
	if id == "" {
		return Runtime{}, nil, fault.Invalidf("id: is required")
	}
	names, err := s.clustersFor(cluster)
	if err != nil {
		return Runtime{}, nil, err
	}
	unit, found, failed := findFirst(ctx, s, names, func(ctx context.Context, crm CRM) (*deploymentpb.DeploymentUnit, error) {
		resp, err := crm.Get(ctx, id)
		if err == nil && resp.GetDeployment() == nil {
			err = fault.NotFoundf("class runtime %q not found", id)
		}
		return resp.GetDeployment(), err
	})
	if found != "" {
		rts := []Runtime{{Cluster: found, Unit: unit}}
		if err := s.resolveOwners(ctx, rts); err != nil {
			return Runtime{}, failed, err
		}
		return rts[0], failed, nil
	}
	if len(failed) > 0 {
		return Runtime{}, failed, fault.New(fault.Unavailable, "class runtime %q not found in the clusters that answered; %s", id, joinErrs(failed))
	}
	return Runtime{}, nil, fault.NotFoundf("class runtime %q not found", id)
}

// UnitStatus is a unit's status as its cluster's CRM reports it.
type UnitStatus struct {
	ID, Cluster string
	Condition   Condition
	// Message is the CRM's summary; HasMessage tells an empty one from none.
	Message    string
	HasMessage bool
	Resources  []*deploymentpb.ResourceReference
}

// Status asks a unit's CRM for its status, now: in the named cluster, else
// the cluster PM deployed it to, else the default cluster, else every one.
// It is the one place that calls a CRM per unit.
func (s *Service) Status(ctx context.Context, id, cluster string) (UnitStatus, error) {
	if id == "" {
		return UnitStatus{}, fault.Invalidf("id: is required")
	}
	if cluster == "" {
		rows, err := s.st.ListRollouts(ctx, store.RolloutFilter{UnitIDs: []string{id}})
		if err != nil {
			return UnitStatus{}, err
		}
		if len(rows) > 0 {
			cluster = rows[0].Cluster
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
		return UnitStatus{}, fault.Invalidf("cluster: unknown cluster %q", cluster)
	default:
		names = []string{cluster}
	}
	resp, cluster, failed := findFirst(ctx, s, names, func(ctx context.Context, crm CRM) (*deploymentpb.GetDeploymentStatusResponse, error) {
		return crm.Status(ctx, id)
	})
	if cluster == "" {
		if len(failed) > 0 {
			return UnitStatus{}, fault.New(fault.Unavailable, "deployment unit %q: %s", id, joinErrs(failed))
		}
		return UnitStatus{}, fault.NotFoundf("deployment unit %q not found in %s", id, strings.Join(names, ", "))
	}
	return UnitStatus{
		ID: id, Cluster: cluster, Condition: ConditionOf(resp.GetMessage()),
		Message: resp.GetMessage(), HasMessage: resp.Message != nil, Resources: resp.GetStatusResourceRefs(),
	}, nil
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
