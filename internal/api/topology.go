package api

import (
	"context"
	"fmt"
	"slices"
	"time"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	topologypb "github.com/oaas/pm/gen/go/oaas/topology"
	"github.com/oaas/pm/internal/catalog"
	"github.com/oaas/pm/internal/deploy"
	"github.com/oaas/pm/internal/fault"
)

// Topology serves oaas.pm.v1.TopologyService: the graph of stored
// deployments in the shape of OaaS's /api/v1/topology.
type Topology struct {
	pkgs *catalog.Service
	deps *deploy.Service
	now  func() time.Time
}

var _ pmv1connect.TopologyServiceHandler = (*Topology)(nil)

// NewTopology returns the topology handler.
func NewTopology(pkgs *catalog.Service, deps *deploy.Service) *Topology {
	return &Topology{pkgs: pkgs, deps: deps, now: time.Now}
}

// GetTopology implements TopologyService. Like OaaS, any source but
// "zenoh" (a CRM's live view, which PM does not ask for) is the
// deployments graph.
func (h *Topology) GetTopology(ctx context.Context, req *topologypb.TopologyRequest) (*topologypb.TopologySnapshot, error) {
	if req.GetSource() == "zenoh" {
		return nil, fault.Invalidf("source %q is not served: PM builds the graph from its deployments (source=deployments)", req.GetSource())
	}
	var ds []*pmv1.OClassDeployment
	for tok := ""; ; {
		page, next, err := h.deps.List(ctx, deploy.ListQuery{Limit: catalog.MaxLimit, PageToken: tok})
		if err != nil {
			return nil, err
		}
		for i := range page {
			ds = append(ds, deploymentPB(&page[i]))
		}
		if tok = next; tok == "" {
			break
		}
	}
	pkgs := map[string]*pmv1.OPackage{}
	pkg := func(name string) (*pmv1.OPackage, error) {
		if p, ok := pkgs[name]; ok {
			return p, nil
		}
		rec, err := h.pkgs.Get(ctx, name)
		if err != nil && fault.KindOf(err) != fault.NotFound {
			return nil, err
		}
		pkgs[name] = rec.Package
		return rec.Package, nil
	}
	res, err := BuildTopology(ds, pkg)
	if err != nil {
		return nil, err
	}
	now := h.now()
	res.Timestamp = &commonpb.Timestamp{Seconds: now.Unix(), Nanos: int32(now.Nanosecond())} //nolint:gosec // < 1e9
	return res, nil
}

// BuildTopology is the deployments graph, node for node and edge for edge
// what the console builds for a PM without the route
// (web/console/src/topology.ts): nodes package::P, class::C,
// function::C::F and env::E in the order deployments first name them;
// edges package→class, class→function, class→env. A deployment without
// function entries shows its class's bindings from the package (pkg; nil
// when the package is gone). Deleted deployments are left out.
func BuildTopology(ds []*pmv1.OClassDeployment, pkg func(name string) (*pmv1.OPackage, error)) (*topologypb.TopologySnapshot, error) {
	res := &topologypb.TopologySnapshot{}
	nodes := map[string]*topologypb.TopologyNode{}
	edges := map[[2]string]bool{}
	node := func(id, typ string, meta map[string]string) *topologypb.TopologyNode {
		n, ok := nodes[id]
		if !ok {
			if meta == nil {
				meta = map[string]string{}
			}
			n = &topologypb.TopologyNode{Id: id, NodeType: typ, Status: "healthy", Metadata: meta, DeployedClasses: []string{}}
			nodes[id] = n
			res.Nodes = append(res.Nodes, n)
		}
		return n
	}
	edge := func(from, to string) {
		if !edges[[2]string{from, to}] {
			edges[[2]string{from, to}] = true
			res.Edges = append(res.Edges, &topologypb.TopologyEdge{FromId: from, ToId: to, Metadata: map[string]string{}})
		}
	}
	for _, d := range ds {
		if d.GetCondition() == pmv1.DeploymentCondition_DELETED {
			continue
		}
		pid, cid := "package::"+d.GetPackageName(), "class::"+d.GetClassKey()
		node(pid, "package", nil)
		meta := map[string]string{"package": d.GetPackageName()}
		if d.GetOdgm() != nil && d.GetOdgm().PartitionCount != nil {
			meta["partitions"] = fmt.Sprint(d.GetOdgm().GetPartitionCount())
		}
		node(cid, "class", meta)
		edge(pid, cid)
		var fns []string
		for _, f := range d.GetFunctions() {
			fns = append(fns, f.GetFunctionKey())
		}
		if len(fns) == 0 {
			p, err := pkg(d.GetPackageName())
			if err != nil {
				return nil, err
			}
			for _, c := range p.GetClasses() {
				if c.GetKey() == d.GetClassKey() {
					for _, b := range c.GetFunctionBindings() {
						fns = append(fns, b.GetFunctionKey())
					}
					break
				}
			}
		}
		for _, f := range fns {
			fid := "function::" + d.GetClassKey() + "::" + f
			node(fid, "function", nil)
			edge(cid, fid)
		}
		for _, e := range d.GetTargetEnvs() {
			eid := "env::" + e
			en := node(eid, "environment", nil)
			if !slices.Contains(en.DeployedClasses, d.GetClassKey()) {
				en.DeployedClasses = append(en.DeployedClasses, d.GetClassKey())
			}
			edge(cid, eid)
		}
	}
	return res, nil
}
