package cli

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/proto"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
)

// resourceNames maps every accepted spelling to its resource.
var resourceNames = map[string]string{
	"packages": "packages", "package": "packages", "pkg": "packages", "pkgs": "packages",
	"deployments": "deployments", "deployment": "deployments", "deploy": "deployments", "dep": "deployments",
	"clusters": "clusters", "cluster": "clusters", "cl": "clusters",
	"runtimes": "runtimes", "runtime": "runtimes", "rt": "runtimes", "class-runtimes": "runtimes",
	"operations": "operations", "operation": "operations", "ops": "operations", "op": "operations",
	"orphans": "orphans", "orphan": "orphans",
	"revisions": "revisions", "revision": "revisions", "rev": "revisions", "history": "revisions",
}

var resourceList = []string{"packages", "deployments", "clusters", "runtimes", "operations", "orphans", "revisions"}

func resourceOf(s string) (string, error) {
	if r, ok := resourceNames[strings.ToLower(s)]; ok {
		return r, nil
	}
	return "", usageErr("unknown resource type %q (one of %s)", s, strings.Join(resourceList, ", "))
}

// getFlags filter lists.
type getFlags struct {
	cluster, pkg string
}

func (a *app) getCommand() *cobra.Command {
	var f getFlags
	cmd := &cobra.Command{
		Use:   "get TYPE [NAME]",
		Short: "List packages, deployments, clusters, runtimes, operations, orphans or revisions, or show one",
		Long: `List objects of a type, or show one by name:

  packages [NAME]          deployments [KEY]       clusters [NAME]
  runtimes [UNIT_ID]       operations [DEPLOYMENT|OPERATION_ID]
  orphans [UNIT_ID]        revisions DEPLOYMENT (the specs pmctl rollback --to names)

-o json and -o yaml print PM's JSON model (a list as an array, which
pmctl apply -f accepts back).`,
		Example: `  pmctl get packages
  pmctl get deployment echo -o yaml
  pmctl get runtimes --cluster east`,
		Args:              cobra.RangeArgs(1, 2),
		ValidArgsFunction: a.completeTypeThenNames(resourceList),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			res, err := resourceOf(args[0])
			if err != nil {
				return err
			}
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			c, err := a.connect(cmd)
			if err != nil {
				return err
			}
			return a.get(cmd.Context(), c, res, name, f)
		}),
	}
	cmd.Flags().StringVar(&f.cluster, "cluster", "", "runtimes: ask only this cluster; deployments: only those targeting it")
	cmd.Flags().StringVar(&f.pkg, "package", "", "deployments and runtimes: only those of this package")
	return cmd
}

func (a *app) get(ctx context.Context, c *conn, res, name string, f getFlags) error {
	switch res {
	case "packages":
		items, err := a.packages(ctx, c, name)
		if err != nil {
			return err
		}
		return show(a, items, name != "", packageTable)
	case "deployments":
		items, err := a.deploymentList(ctx, c, name, f)
		if err != nil {
			return err
		}
		return show(a, items, name != "", deploymentTable)
	case "clusters":
		items, err := a.clusterList(ctx, c, name)
		if err != nil {
			return err
		}
		return show(a, items, name != "", clusterTableOf)
	case "runtimes":
		items, err := a.runtimeList(ctx, c, name, f)
		if err != nil {
			return err
		}
		return show(a, items, name != "", runtimeTable)
	case "operations":
		items, err := a.operationList(ctx, c, name)
		if err != nil {
			return err
		}
		return show(a, items, false, operationTable)
	case "revisions":
		if name == "" {
			return usageErr("get revisions needs a deployment key")
		}
		res, err := c.deployments.ListDeploymentRevisions(ctx, &pmv1.ListDeploymentRevisionsRequest{Key: name})
		if err != nil {
			return c.apiError(fmt.Sprintf("listing the revisions of deployment %q", name), err)
		}
		return show(a, res.GetItems(), false, revisionTable)
	default:
		items, err := a.orphanList(ctx, c, name)
		if err != nil {
			return err
		}
		return show(a, items, name != "", orphanTable)
	}
}

// show prints items as a table, or as JSON/YAML: one object when a single
// one was asked for by name, else an array.
func show[T proto.Message](a *app, items []T, one bool, tbl func(*app, []T) error) error {
	switch {
	case a.output == "table":
		if len(items) == 0 {
			_, _ = fmt.Fprintln(a.streams.Err, "No resources found.")
			return nil
		}
		return tbl(a, items)
	case one && len(items) == 1:
		return a.printProto(items[0])
	}
	return printProtos(a, items)
}

func (a *app) packages(ctx context.Context, c *conn, name string) ([]*pmv1.OPackage, error) {
	if name != "" {
		res, err := c.packages.GetPackage(ctx, &pmv1.GetPackageRequest{Name: name})
		if err != nil {
			return nil, c.apiError(fmt.Sprintf("reading package %q", name), err)
		}
		return []*pmv1.OPackage{res.GetPackage()}, nil
	}
	var out []*pmv1.OPackage
	token := ""
	for {
		res, err := c.packages.ListPackages(ctx, &pmv1.ListPackagesRequest{Limit: 1000, PageToken: token})
		if err != nil {
			return nil, c.apiError("listing packages", err)
		}
		out = append(out, res.GetItems()...)
		if token = res.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}

func packageTable(a *app, items []*pmv1.OPackage) error {
	t := newTable(a.streams.Out, "NAME", "VERSION", "CLASSES", "FUNCTIONS", "DEPLOYMENTS", "DISABLED", "AGE")
	for _, p := range items {
		t.row(p.GetName(), dash(p.GetVersion()), strconv.Itoa(len(p.GetClasses())), strconv.Itoa(len(p.GetFunctions())),
			strconv.Itoa(len(p.GetDeployments())), strconv.FormatBool(p.GetDisabled()), age(p.GetMetadata().GetCreatedAt()))
	}
	return t.flush()
}

func (a *app) deploymentList(ctx context.Context, c *conn, key string, f getFlags) ([]*pmv1.OClassDeployment, error) {
	if key != "" {
		res, err := c.deployments.GetDeployment(ctx, &pmv1.GetDeploymentRequest{Key: key})
		if err != nil {
			return nil, c.apiError(fmt.Sprintf("reading deployment %q", key), err)
		}
		return []*pmv1.OClassDeployment{res.GetDeployment()}, nil
	}
	var out []*pmv1.OClassDeployment
	token := ""
	for {
		res, err := c.deployments.ListDeployments(ctx, &pmv1.ListDeploymentsRequest{
			PackageName: f.pkg, TargetEnv: f.cluster, Limit: 1000, PageToken: token,
		})
		if err != nil {
			return nil, c.apiError("listing deployments", err)
		}
		out = append(out, res.GetItems()...)
		if token = res.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}

// readyText is "running/total" clusters of a deployment.
func readyText(d *pmv1.OClassDeployment) string {
	cls := d.GetStatus().GetClusters()
	n := 0
	for _, r := range cls {
		if r.GetCondition() == pmv1.DeploymentCondition_RUNNING {
			n++
		}
	}
	return fmt.Sprintf("%d/%d", n, len(cls))
}

func deploymentTable(a *app, items []*pmv1.OClassDeployment) error {
	t := newTable(a.streams.Out, "KEY", "PACKAGE", "CLASS", "CONDITION", "READY", "CLUSTERS", "REPLICAS", "AVAILABILITY", "AGE")
	for _, d := range items {
		st := d.GetStatus()
		t.row(d.GetKey(), d.GetPackageName(), d.GetClassKey(), d.GetCondition().String(), readyText(d),
			dash(strings.Join(d.GetTargetEnvs(), ",")), strconv.Itoa(int(st.GetReplicationFactor())),
			ratio(st.GetAchievedQuorumAvailability()), age(d.GetCreatedAt()))
	}
	return t.flush()
}

func (a *app) clusterList(ctx context.Context, c *conn, name string) ([]*pmv1.ClusterInfo, error) {
	if name != "" {
		res, err := c.clusters.GetClusterHealth(ctx, &pmv1.GetClusterHealthRequest{Name: name})
		if err != nil {
			return nil, c.apiError(fmt.Sprintf("reading cluster %q", name), err)
		}
		return []*pmv1.ClusterInfo{{Name: name, Health: res.GetHealth()}}, nil
	}
	res, err := c.clusters.ListClusters(ctx, &pmv1.ListClustersRequest{})
	if err != nil {
		return nil, c.apiError("listing clusters", err)
	}
	return res.GetItems(), nil
}

func nodesText(h *pmv1.ClusterHealth) string {
	if h.NodeCount == nil {
		return "-"
	}
	return fmt.Sprintf("%d/%d", h.GetReadyNodes(), h.GetNodeCount())
}

func clusterTableOf(a *app, items []*pmv1.ClusterInfo) error {
	t := newTable(a.streams.Out, "NAME", "STATUS", "AVAILABILITY", "NODES", "CRM", "LAST SEEN", "MESSAGE")
	for _, ci := range items {
		h := ci.GetHealth()
		avail := "-"
		if h.Availability != nil {
			avail = ratio(h.GetAvailability())
		}
		t.row(ci.GetName(), dash(h.GetStatus()), avail, nodesText(h), dash(h.GetCrmVersion()), age(h.GetLastSeen()), dash(h.GetMessage()))
	}
	return t.flush()
}

// warnClusterErrors prints the clusters a fan-out could not reach.
func (a *app) warnClusterErrors(errs []*pmv1.ClusterError) {
	for _, e := range errs {
		_, _ = fmt.Fprintf(a.streams.Err, "warning: cluster %s did not answer: %s\n", e.GetCluster(), e.GetError())
	}
}

func (a *app) runtimeList(ctx context.Context, c *conn, id string, f getFlags) ([]*pmv1.ClassRuntime, error) {
	if id != "" {
		res, err := c.runtimes.GetClassRuntime(ctx, &pmv1.GetClassRuntimeRequest{Id: id, Cluster: f.cluster})
		if err != nil {
			return nil, c.apiError(fmt.Sprintf("reading runtime %q", id), err)
		}
		a.warnClusterErrors(res.GetClusterErrors())
		return []*pmv1.ClassRuntime{res.GetRuntime()}, nil
	}
	res, err := c.runtimes.ListClassRuntimes(ctx, &pmv1.ListClassRuntimesRequest{PackageName: f.pkg, Cluster: f.cluster})
	if err != nil {
		return nil, c.apiError("listing runtimes", err)
	}
	a.warnClusterErrors(res.GetClusterErrors())
	return res.GetItems(), nil
}

func runtimeTable(a *app, items []*pmv1.ClassRuntime) error {
	t := newTable(a.streams.Out, "ID", "CLUSTER", "PACKAGE", "CLASS", "CONDITION", "PHASE", "COMPLIANT", "AGE")
	for _, r := range items {
		cl := r.GetClusterName()
		if cl == "" {
			cl = r.GetTargetEnvironment()
		}
		compliant := "-"
		if r.NfrCompliance != nil {
			compliant = strconv.FormatBool(r.GetNfrCompliance().GetCompliant())
		}
		t.row(r.GetId(), dash(cl), r.GetPackageName(), r.GetClassKey(), r.GetStatus().GetCondition().String(),
			r.GetStatus().GetPhase().String(), compliant, age(r.GetCreatedAt()))
	}
	return t.flush()
}

// operationList lists the operations of a deployment (name is its key),
// or the one operation with that id, or all.
func (a *app) operationList(ctx context.Context, c *conn, name string) ([]*pmv1.Operation, error) {
	res, err := c.deployments.ListOperations(ctx, &pmv1.ListOperationsRequest{DeploymentKey: name})
	if err != nil {
		return nil, c.apiError("listing operations", err)
	}
	if name == "" || len(res.GetItems()) > 0 {
		return res.GetItems(), nil
	}
	all, err := c.deployments.ListOperations(ctx, &pmv1.ListOperationsRequest{})
	if err != nil {
		return nil, c.apiError("listing operations", err)
	}
	for _, op := range all.GetItems() {
		if op.GetId() == name {
			return []*pmv1.Operation{op}, nil
		}
	}
	return nil, failf(ExitNotFound, "no operation with id %q and no operation of a deployment %q", name, name)
}

func stepsText(op *pmv1.Operation) string {
	ok := 0
	for _, s := range op.GetSteps() {
		if s.GetState() == pmv1.StepState_STEP_STATE_SUCCEEDED {
			ok++
		}
	}
	return fmt.Sprintf("%d/%d", ok, len(op.GetSteps()))
}

func operationTable(a *app, items []*pmv1.Operation) error {
	t := newTable(a.streams.Out, "ID", "KIND", "DEPLOYMENT", "STATE", "STEPS", "ERROR", "AGE")
	for _, op := range items {
		t.row(op.GetId(), word(op.GetKind()), op.GetDeploymentKey(), word(op.GetState()), stepsText(op), dash(op.GetError()), age(op.GetCreatedAt()))
	}
	return t.flush()
}

func revisionTable(a *app, items []*pmv1.DeploymentRevision) error {
	t := newTable(a.streams.Out, "REVISION", "CURRENT", "CLUSTERS", "REASON", "AGE")
	for _, r := range items {
		cur := ""
		if r.GetCurrent() {
			cur = "*"
		}
		t.row(strconv.Itoa(int(r.GetRevision())), cur, dash(strings.Join(r.GetClusters(), ",")), r.GetReason(), age(r.GetCreatedAt()))
	}
	return t.flush()
}

func (a *app) orphanList(ctx context.Context, c *conn, unit string) ([]*pmv1.Orphan, error) {
	res, err := c.deployments.ListOrphans(ctx, &pmv1.ListOrphansRequest{})
	if err != nil {
		return nil, c.apiError("listing orphans", err)
	}
	if unit == "" {
		return res.GetItems(), nil
	}
	var out []*pmv1.Orphan
	for _, o := range res.GetItems() {
		if o.GetUnitId() == unit {
			out = append(out, o)
		}
	}
	if len(out) == 0 {
		return nil, failf(ExitNotFound, "no orphan unit %q", unit)
	}
	return out, nil
}

func orphanTable(a *app, items []*pmv1.Orphan) error {
	t := newTable(a.streams.Out, "CLUSTER", "UNIT", "PACKAGE", "CLASS", "FIRST SEEN")
	for _, o := range items {
		t.row(o.GetCluster(), o.GetUnitId(), dash(o.GetPackageName()), dash(o.GetClassKey()), age(o.GetFirstSeen()))
	}
	return t.flush()
}

// completeTypeThenNames completes a resource type, then names of it.
func (a *app) completeTypeThenNames(types []string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) == 0 {
			return types, cobra.ShellCompDirectiveNoFileComp
		}
		res, err := resourceOf(args[0])
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return a.completeNames(res)(cmd, nil, toComplete)
	}
}

// completeNames asks PM for the names of a resource type.
func (a *app) completeNames(res string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, err := a.connect(cmd)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx := cmd.Context()
		var names []string
		switch res {
		case "packages":
			items, _ := a.packages(ctx, c, "")
			for _, p := range items {
				names = append(names, p.GetName())
			}
		case "deployments", "revisions", "operations":
			items, _ := a.deploymentList(ctx, c, "", getFlags{})
			for _, d := range items {
				names = append(names, d.GetKey())
			}
		case "clusters":
			items, _ := a.clusterList(ctx, c, "")
			for _, ci := range items {
				names = append(names, ci.GetName())
			}
		}
		slices.Sort(names)
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}
