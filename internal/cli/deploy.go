package cli

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"github.com/spf13/cobra"

	"github.com/oaas/pm/gen/go/oaas/common"
	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
)

func (a *app) deployCommand() *cobra.Command {
	var (
		key          string
		envs         []string
		availability float64
		dryRun       bool
		rf           rolloutFlags
	)
	cmd := &cobra.Command{
		Use:   "deploy PACKAGE CLASS --key KEY [--env a,b] [--availability 0.99]",
		Short: "Deploy a class of a package to clusters (creates a deployment)",
		Long: `Deploy a class of a package to clusters: PM plans the replicas from each
cluster's availability and deploys one unit per cluster, in parallel.
Without --env, PM deploys to its cluster named "default".`,
		Example: `  pmctl deploy echo-pkg Echo --key echo --env east,west --availability 0.999 --wait`,
		Args:    cobra.ExactArgs(2),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			d := &pmv1.OClassDeployment{Key: key, PackageName: args[0], ClassKey: args[1], TargetEnvs: envs}
			if cmd.Flags().Changed("availability") {
				d.NfrRequirements = &common.NfrRequirements{Availability: &availability}
			}
			c, err := a.connect(cmd)
			if err != nil {
				return err
			}
			res, err := c.deployments.CreateDeployment(cmd.Context(), &pmv1.CreateDeploymentRequest{Deployment: d, DryRun: dryRun, CreateOnly: true})
			if err != nil {
				return c.apiError(fmt.Sprintf("deploying %s/%s as %q", args[0], args[1], key), err)
			}
			dep := res.GetDeployment()
			if a.output != "table" {
				if err := a.printProto(dep); err != nil {
					return err
				}
			} else {
				verb := "created"
				if dryRun {
					verb = "would be created (dry run)"
				}
				_, _ = fmt.Fprintf(a.streams.Out, "deployment/%s %s: %s\n", key, verb, planText(dep))
				if err := clusterTable(a, dep, nil); err != nil {
					return err
				}
			}
			if !rf.wait || dryRun {
				return nil
			}
			return a.waitRollouts(cmd.Context(), c, []string{key}, rf)
		}),
	}
	cmd.Flags().StringVar(&key, "key", "", "the deployment's key (its name)")
	cmd.Flags().StringSliceVar(&envs, "env", nil, "target clusters, comma-separated")
	cmd.Flags().Float64Var(&availability, "availability", 0, "availability to reach, in (0,1], e.g. 0.999")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show the plan only; deploy nothing")
	_ = cmd.MarkFlagRequired("key")
	rf.add(cmd)
	return cmd
}

// clusterTable prints a deployment's per-cluster rollout, with the unit
// each cluster maps to when mappings are given.
func clusterTable(a *app, d *pmv1.OClassDeployment, mappings map[string]string) error {
	cls := d.GetStatus().GetClusters()
	if len(cls) == 0 {
		return nil
	}
	headers := []string{"CLUSTER", "CONDITION", "STATE", "AVAILABILITY", "SOURCE", "ATTEMPTS", "UNIT", "ERROR"}
	t := newTable(a.streams.Out, headers...)
	for _, r := range cls {
		unit := r.GetUnitId()
		if m, ok := mappings[r.GetCluster()]; ok {
			unit = m
		}
		t.row(r.GetCluster(), r.GetCondition().String(), word(r.GetState()), ratio(r.GetAvailability()),
			dash(r.GetAvailabilitySource()), strconv.Itoa(int(r.GetAttempts())), dash(unit), dash(r.GetError()))
	}
	return t.flush()
}

func (a *app) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "status DEPLOYMENT",
		Short:             "Show a deployment's condition and its rollout on each cluster",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeNames("deployments"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			c, err := a.connect(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			key := args[0]
			res, err := c.deployments.GetDeployment(ctx, &pmv1.GetDeploymentRequest{Key: key})
			if err != nil {
				return c.apiError(fmt.Sprintf("reading deployment %q", key), err)
			}
			mres, err := c.deployments.GetClusterMappings(ctx, &pmv1.GetClusterMappingsRequest{Key: key})
			if err != nil {
				return c.apiError(fmt.Sprintf("reading the cluster mappings of deployment %q", key), err)
			}
			d, mappings := res.GetDeployment(), mres.GetClusterMappings()
			if a.output != "table" {
				dj, err := protoJSON(d)
				if err != nil {
					return err
				}
				if mappings == nil {
					mappings = map[string]string{}
				}
				return a.printValue(map[string]any{
					"deployment": dj, "revision": res.GetRevision(), "cluster_mappings": mappings,
				})
			}
			return a.statusText(ctx, c, d, res.GetRevision(), mappings)
		}),
	}
}

func (a *app) statusText(ctx context.Context, c *conn, d *pmv1.OClassDeployment, rev string, mappings map[string]string) error {
	k := newKV(a.streams.Out)
	k.add("Deployment", d.GetKey())
	k.add("Class", d.GetPackageName()+"/"+d.GetClassKey())
	k.add("Condition", d.GetCondition().String())
	k.add("Revision", dash(rev))
	if st := d.GetStatus(); st != nil {
		k.add("Plan", fmt.Sprintf("%s; algorithm %s", planText(d), dash(st.GetAlgorithm())))
		if st.LastError != nil {
			k.add("Last error", st.GetLastError())
		}
	} else {
		k.add("Plan", "-")
	}
	state, why, bad := rolloutDetail(d)
	why = explain(ctx, c, why, bad)
	switch state {
	case rolloutDone:
		k.add("Rollout", fmt.Sprintf("complete: RUNNING on %d cluster(s)", len(d.GetStatus().GetClusters())))
	case rolloutFailed:
		k.add("Rollout", "failed: "+why)
	default:
		k.add("Rollout", "in progress")
	}
	k.add("Updated", timeText(d.GetUpdatedAt()))
	if err := k.flush(); err != nil {
		return err
	}
	_, _ = fmt.Fprintln(a.streams.Out)
	if err := clusterTable(a, d, mappings); err != nil {
		return err
	}
	// Mappings of clusters the status does not list (a unit PM still
	// tracks on a cluster no longer targeted) are shown too.
	var extra []string
	for cl := range mappings {
		if !slices.ContainsFunc(d.GetStatus().GetClusters(), func(r *pmv1.ClusterRollout) bool { return r.GetCluster() == cl }) {
			extra = append(extra, cl)
		}
	}
	slices.Sort(extra)
	if len(extra) > 0 {
		_, _ = fmt.Fprintln(a.streams.Out, "\nOther mapped units:")
		t := newTable(a.streams.Out, "CLUSTER", "UNIT")
		for _, cl := range extra {
			t.row(cl, mappings[cl])
		}
		return t.flush()
	}
	return nil
}

func (a *app) deleteCommand() *cobra.Command {
	var cluster string
	cmd := &cobra.Command{
		Use:   "delete package|deployment NAME [NAME...] [--cluster C]",
		Short: "Delete packages or deployments (or one cluster's unit of a deployment)",
		Example: `  pmctl delete package echo-pkg
  pmctl delete deployment echo --cluster east`,
		Args:              cobra.MinimumNArgs(2),
		ValidArgsFunction: a.completeTypeThenNames([]string{"package", "deployment"}),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			kind, err := resourceOf(args[0])
			if err != nil {
				return err
			}
			if kind != "packages" && kind != "deployments" {
				return usageErr("delete takes package or deployment, not %q", args[0])
			}
			if kind == "packages" && cluster != "" {
				return usageErr("--cluster applies to deployments only")
			}
			c, err := a.connect(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			for _, name := range args[1:] {
				if kind == "packages" {
					_, err = c.packages.DeletePackage(ctx, &pmv1.DeletePackageRequest{Name: name})
					if err != nil {
						return c.apiError(fmt.Sprintf("deleting package %q", name), err)
					}
					_, _ = fmt.Fprintf(a.streams.Out, "package/%s deleted\n", name)
					continue
				}
				_, err = c.deployments.DeleteDeployment(ctx, &pmv1.DeleteDeploymentRequest{Key: name, Cluster: cluster})
				if err != nil {
					return c.apiError(fmt.Sprintf("deleting deployment %q", name), err)
				}
				if cluster != "" {
					_, _ = fmt.Fprintf(a.streams.Out, "deployment/%s deleted from cluster %s\n", name, cluster)
				} else {
					_, _ = fmt.Fprintf(a.streams.Out, "deployment/%s deleted\n", name)
				}
			}
			return nil
		}),
	}
	cmd.Flags().StringVar(&cluster, "cluster", "", "delete only this cluster's unit of the deployment")
	return cmd
}

// rollbacker rolls a deployment back to an earlier revision; rpcRollback
// is DeploymentService.RollbackDeployment, the tests' fake another.
type rollbacker interface {
	// Rollback returns PM's message about what it did.
	Rollback(ctx context.Context, key, toRevision string) (string, error)
}

// rollbackProcedure is the rollback RPC; a PM that predates it answers
// 404 (Connect: unimplemented).
const rollbackProcedure = pmv1connect.DeploymentServiceRollbackDeploymentProcedure

// rpcRollback calls DeploymentService.RollbackDeployment.
type rpcRollback struct{ c *conn }

func (r rpcRollback) Rollback(ctx context.Context, key, toRevision string) (string, error) {
	req := &pmv1.RollbackDeploymentRequest{Key: key}
	if toRevision != "" {
		n, err := strconv.ParseInt(toRevision, 10, 32)
		if err != nil || n < 1 {
			return "", usageErr("--to %q is not a revision number (pmctl get revisions %s lists them)", toRevision, key)
		}
		req.ToRevision = int32(n)
	}
	res, err := r.c.deployments.RollbackDeployment(ctx, req)
	if err != nil {
		return "", err
	}
	return res.GetResult().GetMessage(), nil
}

func (a *app) rollbackCommand() *cobra.Command {
	var to string
	var rf rolloutFlags
	cmd := &cobra.Command{
		Use:               "rollback DEPLOYMENT [--to REVISION]",
		Short:             "Roll a deployment back to its previous (or a given) revision",
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: a.completeNames("deployments"),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			c, err := a.connect(cmd)
			if err != nil {
				return err
			}
			return a.rollback(cmd.Context(), c, rpcRollback{c}, args[0], to, rf)
		}),
	}
	cmd.Flags().StringVar(&to, "to", "", "revision to roll back to (default: the previous one)")
	rf.add(cmd)
	return cmd
}

func (a *app) rollback(ctx context.Context, c *conn, rb rollbacker, key, to string, rf rolloutFlags) error {
	msg, err := rb.Rollback(ctx, key, to)
	if isCode(err, connect.CodeUnimplemented) {
		return failf(ExitError, "rollback is not supported by this server: PM at %s does not serve %s", c.base,
			strings.TrimPrefix(rollbackProcedure, "/"))
	}
	if err != nil {
		return c.apiError(fmt.Sprintf("rolling back deployment %q", key), err)
	}
	_, _ = fmt.Fprintln(a.streams.Out, msg)
	if rf.wait {
		return a.waitRollouts(ctx, c, []string{key}, rf)
	}
	return nil
}
