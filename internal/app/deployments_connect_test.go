package app_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"connectrpc.com/connect"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/config"
)

// TestConnectDeployments runs the deployment lifecycle through the
// generated Go clients over every protocol, including the Connect-only
// fields: dry_run, idempotency_key, expected_revision, cluster_errors.
func TestConnectDeployments(t *testing.T) {
	t.Parallel()
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			f := startFleet(t, "east", "west")
			e := setup(t, "memory", withFleet(f), func(c *config.Config) { c.CRM.Timeout = 500 * time.Millisecond; c.CRM.RetryAttempts = 0 })
			ctx := context.Background()
			pkgs := pmv1connect.NewPackageServiceClient(e.h2c, e.base, p.opts...)
			deps := pmv1connect.NewDeploymentServiceClient(e.h2c, e.base, p.opts...)
			rts := pmv1connect.NewClassRuntimeServiceClient(e.h2c, e.base, p.opts...)

			if _, err := pkgs.CreatePackage(ctx, &pmv1.CreatePackageRequest{Package: samplePackage("echo")}); err != nil {
				t.Fatal(err)
			}
			cls := samplePackage("echo").GetClasses()[0].GetKey()
			d := &pmv1.OClassDeployment{Key: "d", PackageName: "echo", ClassKey: cls, TargetEnvs: []string{"east", "west"}}

			dry, err := deps.CreateDeployment(ctx, &pmv1.CreateDeploymentRequest{Deployment: d, DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			if dry.GetDeployment().GetStatus().GetReplicationFactor() < 1 || f["east"].Calls("Deploy") != 0 {
				t.Errorf("dry run: %v; east Deploy calls %d", dry.GetDeployment().GetStatus(), f["east"].Calls("Deploy"))
			}

			req := &pmv1.CreateDeploymentRequest{Deployment: d, IdempotencyKey: "once"}
			first, err := deps.CreateDeployment(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			again, err := deps.CreateDeployment(ctx, req)
			if err != nil {
				t.Fatalf("replay: %v", err)
			}
			if first.GetResult().GetId() != again.GetResult().GetId() || f["east"].Calls("Deploy") != 1 {
				t.Errorf("replay %v vs %v; east Deploy calls %d", again.GetResult(), first.GetResult(), f["east"].Calls("Deploy"))
			}
			if u := first.GetUnitIds(); len(u) != 2 || u["east"] == "" || u["west"] == "" {
				t.Errorf("unit_ids %v, want one per cluster", u)
			}

			got, err := deps.GetDeployment(ctx, &pmv1.GetDeploymentRequest{Key: "d"})
			if err != nil {
				t.Fatal(err)
			}
			m, err := deps.GetClusterMappings(ctx, &pmv1.GetClusterMappingsRequest{Key: "d"})
			if err != nil || len(m.GetClusterMappings()) != 2 {
				t.Fatalf("mappings %v, %v", m.GetClusterMappings(), err)
			}

			f["west"].SetHang(true)
			list, err := rts.ListClassRuntimes(ctx, &pmv1.ListClassRuntimesRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(list.GetItems()) != 1 || len(list.GetClusterErrors()) != 1 || list.GetClusterErrors()[0].GetCluster() != "west" {
				t.Errorf("runtimes %d, cluster errors %v", len(list.GetItems()), list.GetClusterErrors())
			}
			f["west"].SetHang(false)

			_, err = deps.DeleteDeployment(ctx, &pmv1.DeleteDeploymentRequest{Key: "d", ExpectedRevision: "999"})
			if connect.CodeOf(err) != connect.CodeAborted && connect.CodeOf(err) != connect.CodeFailedPrecondition {
				t.Errorf("stale delete: %v", err)
			}
			if _, err := deps.DeleteDeployment(ctx, &pmv1.DeleteDeploymentRequest{Key: "d", ExpectedRevision: got.GetRevision()}); err != nil {
				t.Fatalf("delete: %v", err)
			}
			_, err = deps.GetDeployment(ctx, &pmv1.GetDeploymentRequest{Key: "d"})
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != connect.CodeNotFound {
				t.Errorf("get after delete: %v", err)
			}
		})
	}
}
