package cli

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
)

func (a *app) describeCommand() *cobra.Command {
	var f getFlags
	cmd := &cobra.Command{
		Use:   "describe TYPE NAME",
		Short: "Show one package, deployment, cluster, runtime, operation or orphan in detail",
		Example: `  pmctl describe package echo-pkg
  pmctl describe deployment echo`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: a.completeTypeThenNames(resourceList),
		RunE: a.run(func(cmd *cobra.Command, args []string) error {
			res, err := resourceOf(args[0])
			if err != nil {
				return err
			}
			c, err := a.connect(cmd)
			if err != nil {
				return err
			}
			if a.output != "table" {
				// Machine-readable describe is get's single-object output.
				return a.get(cmd.Context(), c, res, args[1], f)
			}
			return a.describe(cmd.Context(), c, res, args[1], f)
		}),
	}
	cmd.Flags().StringVar(&f.cluster, "cluster", "", "runtimes: ask only this cluster")
	return cmd
}

func (a *app) describe(ctx context.Context, c *conn, res, name string, f getFlags) error {
	w := a.streams.Out
	switch res {
	case "packages":
		r, err := c.packages.GetPackage(ctx, &pmv1.GetPackageRequest{Name: name})
		if err != nil {
			return c.apiError(fmt.Sprintf("reading package %q", name), err)
		}
		return describePackage(w, r.GetPackage(), r.GetRevision())
	case "deployments":
		r, err := c.deployments.GetDeployment(ctx, &pmv1.GetDeploymentRequest{Key: name})
		if err != nil {
			return c.apiError(fmt.Sprintf("reading deployment %q", name), err)
		}
		m, err := c.deployments.GetClusterMappings(ctx, &pmv1.GetClusterMappingsRequest{Key: name})
		if err != nil {
			return c.apiError(fmt.Sprintf("reading the cluster mappings of deployment %q", name), err)
		}
		ops, err := c.deployments.ListOperations(ctx, &pmv1.ListOperationsRequest{DeploymentKey: name})
		if err != nil {
			return c.apiError(fmt.Sprintf("listing the operations of deployment %q", name), err)
		}
		return a.describeDeployment(ctx, c, r.GetDeployment(), r.GetRevision(), m.GetClusterMappings(), ops.GetItems())
	case "clusters":
		items, err := a.clusterList(ctx, c, name)
		if err != nil {
			return err
		}
		return describeCluster(w, items[0])
	case "runtimes":
		items, err := a.runtimeList(ctx, c, name, f)
		if err != nil {
			return err
		}
		return describeRuntime(w, items[0])
	case "operations":
		items, err := a.operationList(ctx, c, name)
		if err != nil {
			return err
		}
		for i, op := range items {
			if i > 0 {
				_, _ = fmt.Fprintln(w)
			}
			if err := describeOperation(w, op); err != nil {
				return err
			}
		}
		return nil
	default:
		items, err := a.orphanList(ctx, c, name)
		if err != nil {
			return err
		}
		for _, o := range items {
			k := newKV(w)
			k.add("Unit", o.GetUnitId())
			k.add("Cluster", o.GetCluster())
			k.add("Package", dash(o.GetPackageName()))
			k.add("Class", dash(o.GetClassKey()))
			k.add("First seen", timeText(o.GetFirstSeen()))
			if err := k.flush(); err != nil {
				return err
			}
		}
		return nil
	}
}

func describePackage(w io.Writer, p *pmv1.OPackage, rev string) error {
	k := newKV(w)
	k.add("Name", p.GetName())
	k.add("Version", dash(p.GetVersion()))
	k.add("Revision", dash(rev))
	k.add("Disabled", strconv.FormatBool(p.GetDisabled()))
	md := p.GetMetadata()
	k.add("Author", dash(md.GetAuthor()))
	k.add("Description", dash(md.GetDescription()))
	k.add("Tags", dash(strings.Join(md.GetTags(), ", ")))
	k.add("Dependencies", dash(strings.Join(p.GetDependencies(), ", ")))
	k.add("Created", timeText(md.GetCreatedAt()))
	k.add("Updated", timeText(md.GetUpdatedAt()))
	if err := k.flush(); err != nil {
		return err
	}
	_, _ = fmt.Fprintln(w, "\nClasses:")
	if len(p.GetClasses()) == 0 {
		_, _ = fmt.Fprintln(w, "  (none)")
	}
	for _, cls := range p.GetClasses() {
		line := "  " + cls.GetKey()
		if cls.GetDisabled() {
			line += " (disabled)"
		}
		if cls.Description != nil {
			line += ": " + cls.GetDescription()
		}
		_, _ = fmt.Fprintln(w, line)
		if st := cls.GetStateSpec(); st != nil {
			keys := make([]string, len(st.GetKeySpecs()))
			for i, ks := range st.GetKeySpecs() {
				keys[i] = ks.GetName() + ":" + ks.GetKeyType()
			}
			_, _ = fmt.Fprintf(w, "    state: %s consistency, provider %s, %s, persistent %t, keys %s\n",
				st.GetConsistencyModel(), dash(st.GetDefaultProvider()), dash(st.GetSerializationFormat()),
				st.GetPersistent(), dash(strings.Join(keys, ", ")))
		}
		for _, b := range cls.GetFunctionBindings() {
			extra := ""
			if b.GetStateless() {
				extra = ", stateless"
			}
			_, _ = fmt.Fprintf(w, "    %s -> %s (%s%s)\n", b.GetName(), b.GetFunctionKey(), b.GetAccessModifier(), extra)
		}
	}
	_, _ = fmt.Fprintln(w, "\nFunctions:")
	if len(p.GetFunctions()) == 0 {
		_, _ = fmt.Fprintln(w, "  (none)")
	} else {
		t := newTable(w, "  KEY", "TYPE", "IMAGE", "PORT", "SCALE", "CONFIG")
		for _, fn := range p.GetFunctions() {
			pc := fn.GetProvisionConfig()
			port, scale := "-", "-"
			if pc.Port != nil {
				port = strconv.Itoa(int(pc.GetPort()))
			}
			if pc.MinScale != nil || pc.MaxScale != nil {
				scale = fmt.Sprintf("%d-%d", pc.GetMinScale(), pc.GetMaxScale())
			}
			cfg := slices.Sorted(maps.Keys(fn.GetConfig()))
			t.row("  "+fn.GetKey(), fn.GetFunctionType().String(), dash(pc.GetContainerImage()), port, scale, dash(strings.Join(cfg, ",")))
		}
		if err := t.flush(); err != nil {
			return err
		}
	}
	if len(p.GetDeployments()) > 0 {
		_, _ = fmt.Fprintln(w, "\nEmbedded deployments:")
		for _, d := range p.GetDeployments() {
			_, _ = fmt.Fprintf(w, "  %s: class %s on %s\n", d.GetKey(), d.GetClassKey(), dash(strings.Join(d.GetTargetEnvs(), ", ")))
		}
	}
	return nil
}

func (a *app) describeDeployment(ctx context.Context, c *conn, d *pmv1.OClassDeployment, rev string, mappings map[string]string, ops []*pmv1.Operation) error {
	w := a.streams.Out
	if err := a.statusText(ctx, c, d, rev, mappings); err != nil {
		return err
	}
	k := newKV(w)
	_, _ = fmt.Fprintln(w, "\nSpec:")
	k.add("  Target clusters", dash(strings.Join(d.GetTargetEnvs(), ", ")))
	if n := d.GetNfrRequirements(); n != nil {
		var parts []string
		if n.Availability != nil {
			parts = append(parts, "availability "+ratio(n.GetAvailability()))
		}
		if n.MaxLatencyMs != nil {
			parts = append(parts, fmt.Sprintf("max latency %dms", n.GetMaxLatencyMs()))
		}
		if n.MinThroughputRps != nil {
			parts = append(parts, fmt.Sprintf("min throughput %d rps", n.GetMinThroughputRps()))
		}
		if n.CpuUtilizationTarget != nil {
			parts = append(parts, "cpu target "+ratio(n.GetCpuUtilizationTarget()))
		}
		k.add("  NFR", dash(strings.Join(parts, ", ")))
	}
	if o := d.GetOdgm(); o != nil {
		k.add("  ODGM", fmt.Sprintf("collections %s, partitions %d, replicas %d, shard %s",
			dash(strings.Join(o.GetCollections(), ",")), o.GetPartitionCount(), o.GetReplicaCount(), dash(o.GetShardType())))
	}
	for _, fn := range d.GetFunctions() {
		k.add("  Function "+fn.GetFunctionKey(), dash(fn.GetProvisionConfig().GetContainerImage()))
	}
	k.add("  Created", timeText(d.GetCreatedAt()))
	if err := k.flush(); err != nil {
		return err
	}
	if len(ops) > 0 {
		_, _ = fmt.Fprintln(w, "\nOperations:")
		return operationTable(a, ops)
	}
	return nil
}

func describeCluster(w io.Writer, ci *pmv1.ClusterInfo) error {
	h := ci.GetHealth()
	k := newKV(w)
	k.add("Name", ci.GetName())
	k.add("Status", dash(h.GetStatus()))
	if h.Availability != nil {
		k.add("Availability", ratio(h.GetAvailability()))
	} else {
		k.add("Availability", "- (PM derives it from ready nodes)")
	}
	k.add("Nodes (ready/total)", nodesText(h))
	k.add("CRM version", dash(h.GetCrmVersion()))
	k.add("Last seen", timeText(h.GetLastSeen()))
	k.add("Message", dash(h.GetMessage()))
	return k.flush()
}

func describeRuntime(w io.Writer, r *pmv1.ClassRuntime) error {
	k := newKV(w)
	k.add("ID", r.GetId())
	k.add("Unit", dash(r.GetDeploymentUnitId()))
	k.add("Cluster", dash(r.GetClusterName()))
	k.add("Environment", dash(r.GetTargetEnvironment()))
	k.add("Class", r.GetPackageName()+"/"+r.GetClassKey())
	k.add("Condition", r.GetStatus().GetCondition().String())
	k.add("Phase", r.GetStatus().GetPhase().String())
	k.add("Message", dash(r.GetStatus().GetMessage()))
	if c := r.GetNfrCompliance(); c != nil {
		k.add("NFR compliant", strconv.FormatBool(c.GetCompliant()))
		for _, v := range c.GetViolations() {
			k.add("  violation", v)
		}
	}
	k.add("Created", timeText(r.GetCreatedAt()))
	k.add("Updated", timeText(r.GetUpdatedAt()))
	if err := k.flush(); err != nil {
		return err
	}
	if len(r.GetResourceRefs()) > 0 {
		_, _ = fmt.Fprintln(w, "\nResources:")
		t := newTable(w, "  KIND", "NAME", "NAMESPACE")
		for _, ref := range r.GetResourceRefs() {
			t.row("  "+ref.GetKind(), ref.GetName(), dash(ref.GetNamespace()))
		}
		return t.flush()
	}
	return nil
}

func describeOperation(w io.Writer, op *pmv1.Operation) error {
	k := newKV(w)
	k.add("ID", op.GetId())
	k.add("Kind", word(op.GetKind()))
	k.add("Deployment", op.GetDeploymentKey())
	k.add("State", word(op.GetState()))
	k.add("Error", dash(op.GetError()))
	k.add("Owner", dash(op.GetOwner()))
	k.add("Created", timeText(op.GetCreatedAt()))
	k.add("Updated", timeText(op.GetUpdatedAt()))
	if err := k.flush(); err != nil {
		return err
	}
	t := newTable(w, "  CLUSTER", "UNIT", "STATE", "ATTEMPTS", "ERROR")
	for _, s := range op.GetSteps() {
		t.row("  "+s.GetCluster(), dash(s.GetUnitId()), word(s.GetState()), strconv.Itoa(int(s.GetAttempts())), dash(s.GetError()))
	}
	return t.flush()
}
