package app_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/oaas/pm/internal/cluster"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/crmsim"
	"github.com/oaas/pm/internal/crmsim/crmsimtest"
	"github.com/oaas/pm/internal/deploy"
)

// TestMixedGenerationFleet runs one deployment across a first-generation
// and a second-generation CRM, as PM meets them in the field today: PM
// tells the generations apart by itself, sends each a unit it reads right,
// lists both clusters' runtimes the same way, heals a unit lost from each,
// and deletes from both.
func TestMixedGenerationFleet(t *testing.T) {
	t.Parallel()
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			// Each CRM runs in a namespace named after its environment, so
			// the environment a second-generation CRM reports (its
			// namespace) is the cluster's name.
			f := fleet{
				"old": crmsimtest.Start(t, crmsim.Config{EnvName: "old", Namespace: "old", Generation: 1}),
				"new": crmsimtest.Start(t, crmsim.Config{EnvName: "new", Namespace: "new", Generation: 2}),
			}
			e := setup(t, storage, withFleet(f), func(c *config.Config) {
				// Drift repair on, driven by hand: the loop's own passes
				// are an hour apart.
				c.Reconcile.Interval, c.Reconcile.SelfHeal = time.Hour, true
			})
			ctx := context.Background()

			e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, 201)
			d := deployment("d", "echo", "old", "new")
			d["env_templates"] = map[string]any{"new": "knative"}
			d["telemetry"] = map[string]any{"traces": true}
			d["odgm"] = map[string]any{
				"collections": []string{"echo.Echo"}, "partition_count": 2, "log": "debug",
				"env_node_ids": map[string]any{"old": []int{11}, "new": []int{22}},
			}
			expect2xx(t, e.do("POST", "/api/v1/deployments", d))
			ids := map[string]string{"old": deploy.UnitID("d", "old"), "new": deploy.UnitID("d", "new")}

			for name, want := range map[string]cluster.Generation{"old": cluster.Generation1, "new": cluster.Generation2} {
				if g, source, err := e.app.Clusters().Generation(name); err != nil || g != want || source != cluster.GenerationFromServices {
					t.Errorf("%s: generation %v from %q (%v), want %v from its services", name, g, source, err, want)
				}
			}
			checkUnits(t, f, ids)

			// Both clusters' runtimes, one view; the observer's pass brings
			// the conditions in from both generations' listings.
			if _, err := e.app.Deployments().Observer().RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
			var rts []map[string]any
			e.do("GET", "/api/v1/class-runtimes", nil).expect(t, 200).json(t, &rts)
			if len(rts) != 2 {
				t.Fatalf("class-runtimes = %v", rts)
			}
			for _, rt := range rts {
				name, _ := rt["cluster_name"].(string)
				status, _ := rt["status"].(map[string]any)
				if rt["id"] != ids[name] || rt["deployment_unit_id"] != ids[name] || rt["package_name"] != "echo" ||
					rt["class_key"] != "Echo" || rt["target_environment"] != name || status["condition"] != "RUNNING" {
					t.Errorf("%s: runtime %v", name, rt)
				}
			}
			for name, id := range ids {
				one := e.do("GET", "/api/v1/class-runtimes/"+id, nil).expect(t, 200).object(t)
				if one["cluster_name"] != name || one["class_key"] != "Echo" {
					t.Errorf("class-runtimes/%s = %v", id, one)
				}
				// Filters PM asks the CRM for, which a second-generation
				// CRM ignores and PM applies itself.
				var some []map[string]any
				e.do("GET", "/api/v1/class-runtimes?cluster="+name+"&package_name=echo&class_key=Echo", nil).expect(t, 200).json(t, &some)
				if len(some) != 1 || some[0]["id"] != id {
					t.Errorf("%s filtered: %v", name, some)
				}
				e.do("GET", "/api/v1/class-runtimes?cluster="+name+"&package_name=other", nil).expect(t, 200).json(t, &some)
				if len(some) != 0 {
					t.Errorf("%s filtered by another package: %v", name, some)
				}
			}

			// Heal: each cluster loses its unit behind PM's back.
			for name, id := range ids {
				if !f[name].RemoveRuntime(id) {
					t.Fatalf("%s has no unit %s", name, id)
				}
			}
			var healed []deploy.UnitRef
			for pass := 0; pass < 3 && len(healed) < 2; pass++ {
				res, err := e.app.Deployments().Observer().RunOnce(ctx)
				if err != nil {
					t.Fatal(err)
				}
				healed = append(healed, res.Drift.Healed...)
			}
			var healedClusters []string
			for _, ref := range healed {
				healedClusters = append(healedClusters, ref.Cluster)
			}
			slices.Sort(healedClusters)
			if !slices.Equal(healedClusters, []string{"new", "old"}) {
				t.Fatalf("healed %v, want a unit on each cluster", healed)
			}
			for name, id := range ids {
				if got := f[name].Runtimes(); len(got) != 1 || got[0].GetId() != id {
					t.Errorf("%s after healing runs %v", name, got)
				}
			}
			checkUnits(t, f, ids)

			// Delete from both.
			expect2xx(t, e.do("DELETE", "/api/v1/deployments/d", nil))
			for name, sim := range f {
				if n := sim.RuntimeCount(); n != 0 {
					t.Errorf("%s runs %d units after the delete", name, n)
				}
			}
			e.do("GET", "/api/v1/class-runtimes", nil).expect(t, 200).json(t, &rts)
			if len(rts) != 0 {
				t.Errorf("class-runtimes after the delete = %v", rts)
			}
			e.do("GET", "/api/v1/deployments/d", nil).expect(t, 404)
		})
	}
}

// checkUnits checks what each generation's CRM was last sent: both get the
// current fields (a first-generation CRM skips them), but only the second
// gets invocation routes that leave the URL to the CRM.
func checkUnits(t *testing.T, f fleet, ids map[string]string) {
	t.Helper()
	for name, id := range ids {
		u := f[name].LastUnit(id)
		oc := u.GetOdgmConfig()
		if u == nil || oc.GetLog() != "debug" || len(oc.GetEnvNodeIds()) != 2 || !u.GetTelemetry().GetEnabled() ||
			!u.GetTelemetry().GetTraces() || len(oc.GetCollectionAssignments()["echo.Echo"].GetAssignments()) != 2 {
			t.Errorf("%s: unit %v", name, u)
			continue
		}
		wantNode := map[string]uint64{"old": 11, "new": 22}[name]
		if oc.GetOdgmNodeId() != wantNode {
			t.Errorf("%s: odgm_node_id %d, want %d", name, oc.GetOdgmNodeId(), wantNode)
		}
		routes := oc.GetInvocations().GetFnRoutes()
		switch name {
		case "old":
			if oc.GetInvocations() != nil || u.SelectedTemplate != nil {
				t.Errorf("old: routes %v, template %v: a first-generation CRM would copy empty URLs", routes, u.SelectedTemplate)
			}
		case "new":
			if routes["echo"].GetFunctionKey() != "echo" || routes["echo"].GetUrl() != "" || u.GetSelectedTemplate() != "knative" {
				t.Errorf("new: routes %v, template %q", routes, u.GetSelectedTemplate())
			}
		}
	}
}

// expect2xx accepts any success: create and delete answers differ between
// PM's own API and the OaaS one (201/200, 204/200).
func expect2xx(t *testing.T, r response) {
	t.Helper()
	if r.status < 200 || r.status > 299 {
		t.Fatalf("status %d, want 2xx; body %s", r.status, r.body)
	}
}
