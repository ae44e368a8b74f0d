package app_test

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/crmsim"
	"github.com/oaas/pm/internal/crmsim/crmsimtest"
)

// fleet is a set of simulated clusters a PM is configured with.
type fleet map[string]*crmsim.Sim

// startFleet starts one simulator per name.
func startFleet(t *testing.T, names ...string) fleet {
	t.Helper()
	f := fleet{}
	for _, n := range names {
		f[n] = crmsimtest.Start(t, crmsim.Config{EnvName: n})
	}
	return f
}

// withFleet points PM at the simulators with test-sized timings: no health
// cache (each test sets availabilities as it goes), fast retries, and no
// background loops (tests drive them).
func withFleet(f fleet) func(*config.Config) {
	return func(c *config.Config) {
		c.CRM.Clusters = nil
		for name, sim := range f {
			c.CRM.Clusters = append(c.CRM.Clusters, config.Cluster{Name: name, URL: sim.URL()})
		}
		c.CRM.EmbeddedSimulator = false
		c.CRM.Timeout = 2 * time.Second
		c.CRM.HealthCacheTTL = 0
		c.CRM.HealthCheckInterval = 0
		c.CRM.BreakerFailureThreshold = 1000
		c.Deploy.RetryBackoff = 5 * time.Millisecond
		c.Deploy.StatusPollInterval = 0
		c.Reconcile.Interval = 0
		c.Reconcile.OperationLease = 2 * time.Second
	}
}

func echoPackage(name string) map[string]any {
	return map[string]any{
		"name": name,
		"functions": []any{map[string]any{
			"key": "echo", "provision_config": map[string]any{"container_image": "ghcr.io/oaas/echo-fn:latest", "port": 8080},
		}},
		"classes": []any{map[string]any{
			"key": "Echo", "function_bindings": []any{map[string]any{"name": "echo", "function_key": "echo"}},
		}},
	}
}

func deployment(key, pkg string, clusters ...string) map[string]any {
	return map[string]any{"key": key, "package_name": pkg, "class_key": "Echo", "target_envs": clusters}
}

// writeResult is the REST body of a successful create.
type writeResult struct {
	ID, Status, Message string
}

func (r response) result(t *testing.T) writeResult {
	t.Helper()
	var w writeResult
	r.json(t, &w)
	return w
}

func (r response) object(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	r.json(t, &m)
	return m
}

func TestDeploySmoke(t *testing.T) {
	t.Parallel()
	for _, storage := range storages {
		t.Run(storage, func(t *testing.T) {
			t.Parallel()
			f := startFleet(t, "default")
			e := setup(t, storage, withFleet(f))
			e.send("POST", "/api/v1/packages", "application/json", fixture(t, "valid/echo.json")).expect(t, 201)

			created := e.send("POST", "/api/v1/deployments", "application/json", fixture(t, "valid/deployment-echo.json")).expect(t, 201).result(t)
			if created.Status != "created" || created.ID == "" {
				t.Fatalf("create result %+v", created)
			}
			sim := f["default"]
			unit := sim.LastUnit(created.ID)
			if unit == nil {
				t.Fatalf("the CRM has no unit %q; it has %d runtimes", created.ID, sim.RuntimeCount())
			}
			if unit.GetPackageName() != "echo-pkg" || unit.GetClassKey() != "Echo" || unit.GetTargetEnv() != "default" {
				t.Errorf("unit %v", unit)
			}

			got := e.do("GET", "/api/v1/deployments/echo-everywhere", nil).expect(t, 200)
			if got.header.Get("ETag") == "" {
				t.Error("no ETag on GET deployment")
			}
			d := got.object(t)
			if d["key"] != "echo-everywhere" || fmt.Sprint(d["target_envs"]) != "[default]" {
				t.Errorf("deployment %s", got.body)
			}
			status, _ := d["status"].(map[string]any)
			if status["replication_factor"] == nil || status["achieved_quorum_availability"] == nil {
				t.Errorf("status summary missing: %s", got.body)
			}
			if c := d["condition"]; c != "DEPLOYING" && c != "RUNNING" {
				t.Errorf("condition %v", c)
			}

			var mappings struct {
				DeploymentKey   string            `json:"deployment_key"`
				ClusterMappings map[string]string `json:"cluster_mappings"`
			}
			e.do("GET", "/api/v1/deployments/echo-everywhere/cluster-mappings", nil).expect(t, 200).json(t, &mappings)
			if mappings.ClusterMappings["default"] != created.ID {
				t.Errorf("mappings %+v, want default → %s", mappings, created.ID)
			}

			var list []map[string]any
			e.do("GET", "/api/v1/deployments?package_name=echo-pkg", nil).expect(t, 200).json(t, &list)
			if len(list) != 1 {
				t.Errorf("list: %d items", len(list))
			}
			e.do("GET", "/api/v1/deployments?package_name=other", nil).expect(t, 200).json(t, &list)
			if len(list) != 0 {
				t.Errorf("filtered list: %d items", len(list))
			}

			var runtimes []map[string]any
			for _, path := range []string{"/api/v1/class-runtimes", "/api/v1/deployment-records"} {
				e.do("GET", path, nil).expect(t, 200).json(t, &runtimes)
				if len(runtimes) != 1 || runtimes[0]["id"] != created.ID || runtimes[0]["cluster_name"] != "default" {
					t.Errorf("%s: %v", path, runtimes)
				}
			}
			rt := e.do("GET", "/api/v1/class-runtimes/"+created.ID, nil).expect(t, 200).object(t)
			if rt["deployment_unit_id"] != created.ID || rt["package_name"] != "echo-pkg" {
				t.Errorf("runtime %v", rt)
			}
			e.do("GET", "/api/v1/deployment-records/nope", nil).expect(t, 404)

			st := e.do("GET", "/api/v1/deployment-status/"+created.ID, nil).expect(t, 200).object(t)
			refs, _ := st["resource_refs"].([]any)
			if st["id"] != created.ID || len(refs) == 0 {
				t.Errorf("deployment status %v", st)
			}

			var del struct {
				Message     string   `json:"message"`
				ID          string   `json:"id"`
				DeletedEnvs []string `json:"deleted_envs"`
			}
			e.do("DELETE", "/api/v1/deployments/echo-everywhere", nil).expect(t, 200).json(t, &del)
			if del.Message != "Deployment deleted across environments" || del.ID != "echo-everywhere" || fmt.Sprint(del.DeletedEnvs) != "[default]" {
				t.Errorf("delete answered %+v, want OaaS's body", del)
			}
			if n := sim.RuntimeCount(); n != 0 {
				t.Errorf("%d runtimes left after delete", n)
			}
			e.do("GET", "/api/v1/deployments/echo-everywhere", nil).expect(t, 404)
			e.do("DELETE", "/api/v1/deployments/echo-everywhere", nil).expect(t, 404)
		})
	}
}

func TestDeployRejectsBadInput(t *testing.T) {
	t.Parallel()
	f := startFleet(t, "east")
	e := setup(t, "memory", withFleet(f))
	e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, 201)
	cases := []struct {
		name string
		body any
		code int
		want string
		hdr  []string
	}{
		{"missing package", deployment("d1", "nope", "east"), 404, `package "nope"`, nil},
		{"unknown class", map[string]any{"key": "d1", "package_name": "echo", "class_key": "Nope", "target_envs": []string{"east"}}, 400, `class "Nope"`, nil},
		{"unknown cluster", deployment("d1", "echo", "east", "mars"), 400, `"mars"`, nil},
		{"no candidate cluster", map[string]any{"key": "d1", "package_name": "echo", "class_key": "Echo", "available_envs": []string{"mars", "venus"}}, 400, `available_envs: none of "mars", "venus" is a configured cluster`, nil},
		{"unknown field, strict", map[string]any{"key": "d1", "package_name": "echo", "class_key": "Echo", "target_envs": []string{"east"}, "replicas": 3}, 400, `unknown field "replicas"`, []string{"Field-Validation", "Strict"}},
		{"availability out of range", map[string]any{"key": "d1", "package_name": "echo", "class_key": "Echo", "target_envs": []string{"east"}, "nfr_requirements": map[string]any{"availability": 1.5}}, 400, "availability", nil},
		{"function not bound", map[string]any{"key": "d1", "package_name": "echo", "class_key": "Echo", "target_envs": []string{"east"}, "functions": []any{map[string]any{"function_key": "ghost"}}}, 400, "ghost", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("POST", "/api/v1/deployments", tc.body, tc.hdr...).expect(t, tc.code)
			if msg := r.errorText(t); !strings.Contains(msg, tc.want) {
				t.Errorf("error %q does not mention %q", msg, tc.want)
			}
		})
	}
	if n := f["east"].RuntimeCount(); n != 0 {
		t.Errorf("rejected requests left %d runtimes", n)
	}
	var list []any
	e.do("GET", "/api/v1/deployments", nil).expect(t, 200).json(t, &list)
	if len(list) != 0 {
		t.Errorf("rejected requests stored %d deployments", len(list))
	}
}

func TestDeployRetriesSucceedWithoutRollback(t *testing.T) {
	t.Parallel()
	f := fleet{"default": crmsimtest.Start(t, crmsim.Config{EnvName: "default", FailFirstDeploys: 2, FailDeployAfterApply: true})}
	e := setup(t, "memory", withFleet(f), func(c *config.Config) { c.Deploy.MaxRetries = 2; c.Deploy.RollbackOnPartial = true })
	e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, 201)
	id := e.do("POST", "/api/v1/deployments", deployment("d", "echo", "default")).expect(t, 201).result(t).ID
	sim := f["default"]
	if got := sim.Calls("Deploy"); got != 3 {
		t.Errorf("Deploy calls = %d, want 3 (1 + 2 retries)", got)
	}
	// The failed attempts applied the unit before failing; retrying with the
	// same id must not leak a second runtime.
	if n := sim.RuntimeCount(); n != 1 {
		t.Errorf("runtimes = %d, want 1", n)
	}
	if sim.LastUnit(id) == nil {
		t.Errorf("unit %q not at the CRM", id)
	}
	d := e.do("GET", "/api/v1/deployments/d", nil).expect(t, 200).object(t)
	rollouts := d["status"].(map[string]any)["clusters"].([]any)
	if a := rollouts[0].(map[string]any)["attempts"]; a != float64(3) {
		t.Errorf("attempts recorded = %v, want 3", a)
	}
}

func TestDeployPartialFailure(t *testing.T) {
	t.Parallel()
	for _, rollback := range []bool{true, false} {
		t.Run(fmt.Sprintf("rollback=%v", rollback), func(t *testing.T) {
			t.Parallel()
			f := fleet{
				"good": crmsimtest.Start(t, crmsim.Config{EnvName: "good"}),
				"bad":  crmsimtest.Start(t, crmsim.Config{EnvName: "bad", FailFirstDeploys: 1000}),
			}
			e := setup(t, "memory", withFleet(f), func(c *config.Config) { c.Deploy.MaxRetries = 1; c.Deploy.RollbackOnPartial = rollback })
			e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, 201)
			r := e.do("POST", "/api/v1/deployments", deployment("d", "echo", "good", "bad"))
			if got := f["bad"].Calls("Deploy"); got != 2 {
				t.Errorf("bad cluster saw %d Deploy calls, want 2", got)
			}
			if rollback {
				r.expect(t, 503)
				if msg := r.errorText(t); !strings.Contains(msg, "bad") || !strings.Contains(msg, "rolled back") {
					t.Errorf("error %q", msg)
				}
				if n := f["good"].RuntimeCount(); n != 0 {
					t.Errorf("good cluster keeps %d runtimes after rollback", n)
				}
				e.do("GET", "/api/v1/deployments/d", nil).expect(t, 404)
				return
			}
			res := r.expect(t, 201).result(t)
			if f["good"].LastUnit(res.ID) == nil {
				t.Errorf("returned id %q is not the good cluster's unit", res.ID)
			}
			var m struct {
				ClusterMappings map[string]string `json:"cluster_mappings"`
			}
			e.do("GET", "/api/v1/deployments/d/cluster-mappings", nil).expect(t, 200).json(t, &m)
			if len(m.ClusterMappings) != 1 || m.ClusterMappings["good"] != res.ID {
				t.Errorf("mappings %v", m.ClusterMappings)
			}
			d := e.do("GET", "/api/v1/deployments/d", nil).expect(t, 200).object(t)
			if le, _ := d["status"].(map[string]any)["last_error"].(string); !strings.Contains(le, "bad") {
				t.Errorf("last_error %q does not name the failed cluster", le)
			}
		})
	}
}

func TestDeployAllFail(t *testing.T) {
	t.Parallel()
	f := fleet{
		"a": crmsimtest.Start(t, crmsim.Config{EnvName: "a", FailFirstDeploys: 1000}),
		"b": crmsimtest.Start(t, crmsim.Config{EnvName: "b", FailFirstDeploys: 1000}),
	}
	e := setup(t, "memory", withFleet(f), func(c *config.Config) { c.Deploy.MaxRetries = 0 })
	e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, 201)
	// The clusters failed, not the request: 503, never 400.
	msg := e.do("POST", "/api/v1/deployments", deployment("d", "echo", "a", "b")).expect(t, 503).errorText(t)
	if !strings.Contains(msg, "Deployment failed in all clusters") || !strings.Contains(msg, "a (") || !strings.Contains(msg, "b (") {
		t.Errorf("error %q", msg)
	}
	e.do("GET", "/api/v1/deployments/d", nil).expect(t, 404)
	// The key is free again: a retry once the clusters recover succeeds.
	f["a"].SetFailFirstDeploys(0)
	f["b"].SetFailFirstDeploys(0)
	e.do("POST", "/api/v1/deployments", deployment("d", "echo", "a", "b")).expect(t, 201)
}

func TestDeployDuplicateKey(t *testing.T) {
	t.Parallel()
	f := startFleet(t, "default")
	e := setup(t, "memory", withFleet(f))
	e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, 201)
	e.do("POST", "/api/v1/deployments", deployment("d", "echo", "default"), "X-Correlation-Id", "corr-4711").expect(t, 201)
	// The caller's correlation id reaches the CRM with the deploy.
	if got := f["default"].LastCorrelationID(); got != "corr-4711" {
		t.Errorf("CRM saw correlation id %q, want the request's", got)
	}
	// The same key again is an apply, as OaaS's POST: the same spec changes
	// nothing (200).
	r := e.do("POST", "/api/v1/deployments", deployment("d", "echo", "default")).expect(t, 200)
	if r.header.Get("X-Write-Status") != "unchanged" || r.result(t).Status != "unchanged" {
		t.Errorf("the same spec again: %s %v", r.body, r.header)
	}
	if n := f["default"].RuntimeCount(); n != 1 {
		t.Errorf("runtimes = %d", n)
	}
	// A client polling the deployment costs the CRM one status call per
	// couple of seconds, not one per GET.
	before := f["default"].Calls("GetDeploymentStatus")
	for range 5 {
		e.do("GET", "/api/v1/deployments/d", nil).expect(t, 200)
	}
	if got := f["default"].Calls("GetDeploymentStatus") - before; got > 1 {
		t.Errorf("5 quick GETs made %d status calls", got)
	}
}

func TestAvailabilityDrivesReplicas(t *testing.T) {
	t.Parallel()
	p := func(v float64) *float64 { return &v }
	cases := []struct {
		name     string
		avail    []float64
		target   float64
		strong   bool
		replicas int
	}{
		{"three at 0.9 reach 0.97 with 3", []float64{0.9, 0.9, 0.9}, 0.97, false, 3},
		{"three at 0.9 reach 0.99 with 5", []float64{0.9, 0.9, 0.9}, 0.99, false, 5},
		{"one reliable cluster needs 1", []float64{0.999}, 0.99, false, 1},
		{"strong consistency forces 3", []float64{0.999}, 0.99, true, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := fleet{}
			var names []string
			for i, a := range tc.avail {
				n := fmt.Sprintf("c%d", i)
				f[n] = crmsimtest.Start(t, crmsim.Config{EnvName: n, Availability: p(a)})
				names = append(names, n)
			}
			e := setup(t, "memory", withFleet(f))
			pkg := echoPackage("echo")
			if tc.strong {
				pkg["classes"].([]any)[0].(map[string]any)["state_spec"] = map[string]any{"consistency_model": "STRONG"}
			}
			e.do("POST", "/api/v1/packages", pkg).expect(t, 201)
			body := deployment("d", "echo", names...)
			body["nfr_requirements"] = map[string]any{"availability": tc.target}
			body["odgm"] = map[string]any{"collections": []string{"c"}, "partition_count": 2, "shard_type": "raft"}

			// The dry run plans the same and touches nothing.
			plan := e.do("POST", "/api/v1/deployments?dry_run=true", body).expect(t, 200).object(t)
			if plan["status"] != "planned" {
				t.Errorf("dry run result %v", plan)
			}
			for _, n := range names {
				if got := f[n].Calls("Deploy"); got != 0 {
					t.Errorf("dry run called Deploy on %s", n)
				}
			}
			e.do("GET", "/api/v1/deployments/d", nil).expect(t, 404)

			e.do("POST", "/api/v1/deployments", body).expect(t, 201)
			for _, n := range names {
				rts := f[n].Runtimes()
				if len(rts) != 1 {
					t.Fatalf("%s has %d runtimes", n, len(rts))
				}
				u := rts[0]
				if got := u.GetOdgmConfig().GetReplicaCount(); int(got) != tc.replicas {
					t.Errorf("%s: odgm replica_count = %d, want %d", n, got, tc.replicas)
				}
				for _, fn := range u.GetFunctions() {
					if got := fn.GetProvisionConfig().GetMinScale(); int(got) != tc.replicas {
						t.Errorf("%s: %s min_scale = %d, want %d", n, fn.GetFunctionKey(), got, tc.replicas)
					}
				}
			}
			d := e.do("GET", "/api/v1/deployments/d", nil).expect(t, 200).object(t)
			st := d["status"].(map[string]any)
			if int(st["replication_factor"].(float64)) != tc.replicas {
				t.Errorf("status replication_factor %v", st["replication_factor"])
			}
			if a := st["achieved_quorum_availability"].(float64); a+1e-9 < tc.target && !tc.strong {
				t.Errorf("achieved %v below target %v", a, tc.target)
			}
			if tc.replicas == 3 && !tc.strong && math.Abs(st["achieved_quorum_availability"].(float64)-0.972) > 1e-9 {
				t.Errorf("achieved %v, want 0.972", st["achieved_quorum_availability"])
			}
		})
	}
}

func TestDeployNeedsAvailabilitySignal(t *testing.T) {
	t.Parallel()
	f := fleet{"blind": crmsimtest.Start(t, crmsim.Config{EnvName: "blind", DisableCrmInfo: true})}
	e := setup(t, "memory", withFleet(f))
	e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, 201)
	msg := e.do("POST", "/api/v1/deployments", deployment("d", "echo", "blind")).expect(t, 400).errorText(t)
	if !strings.Contains(msg, `"blind"`) {
		t.Errorf("error %q does not name the cluster", msg)
	}
}

func TestPackageDeleteWithDeployments(t *testing.T) {
	t.Parallel()
	for _, cascade := range []bool{true, false} {
		t.Run(fmt.Sprintf("cascade=%v", cascade), func(t *testing.T) {
			t.Parallel()
			f := startFleet(t, "east", "west")
			e := setup(t, "memory", withFleet(f), func(c *config.Config) { c.PackageDelete.Cascade = cascade })
			e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, 201)
			e.do("POST", "/api/v1/deployments", deployment("d1", "echo", "east", "west")).expect(t, 201)
			e.do("POST", "/api/v1/deployments", deployment("d2", "echo", "east")).expect(t, 201)
			if !cascade {
				msg := e.do("DELETE", "/api/v1/packages/echo", nil).expect(t, 409).errorText(t)
				if !strings.Contains(msg, "d1") || !strings.Contains(msg, "d2") {
					t.Errorf("409 %q does not list the deployments", msg)
				}
				e.do("GET", "/api/v1/packages/echo", nil).expect(t, 200)
				return
			}
			// A stale If-Match changes nothing: no cascade either.
			e.do("DELETE", "/api/v1/packages/echo", nil, "If-Match", `"99"`).expect(t, 409)
			if f["east"].RuntimeCount() != 2 {
				t.Fatalf("a stale package delete cascaded: east has %d runtimes", f["east"].RuntimeCount())
			}
			e.do("DELETE", "/api/v1/packages/echo", nil).expect(t, 204)
			for n, sim := range f {
				if c := sim.RuntimeCount(); c != 0 {
					t.Errorf("%s keeps %d runtimes", n, c)
				}
			}
			var list []any
			e.do("GET", "/api/v1/deployments", nil).expect(t, 200).json(t, &list)
			if len(list) != 0 {
				t.Errorf("%d deployments left", len(list))
			}
		})
	}
}

func TestDeleteOneCluster(t *testing.T) {
	t.Parallel()
	f := startFleet(t, "east", "west")
	e := setup(t, "memory", withFleet(f))
	e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, 201)
	e.do("POST", "/api/v1/deployments", deployment("d", "echo", "east", "west")).expect(t, 201)
	var del map[string]any
	e.do("DELETE", "/api/v1/deployments/d?cluster=west", nil).expect(t, 200).json(t, &del)
	if fmt.Sprint(del["deleted_envs"]) != "[west]" || del["id"] != "d" {
		t.Errorf("delete of one cluster answered %v", del)
	}
	if f["west"].RuntimeCount() != 0 || f["east"].RuntimeCount() != 1 {
		t.Errorf("runtimes east=%d west=%d", f["east"].RuntimeCount(), f["west"].RuntimeCount())
	}
	// No mapping left for west: a no-op.
	e.do("DELETE", "/api/v1/deployments/d?cluster=west", nil).expect(t, 200).json(t, &del)
	if fmt.Sprint(del["deleted_envs"]) != "[]" {
		t.Errorf("a no-op delete answered %v", del)
	}
	var m struct {
		ClusterMappings map[string]string `json:"cluster_mappings"`
	}
	e.do("GET", "/api/v1/deployments/d/cluster-mappings", nil).expect(t, 200).json(t, &m)
	if len(m.ClusterMappings) != 1 || m.ClusterMappings["east"] == "" {
		t.Errorf("mappings %v", m.ClusterMappings)
	}
	e.do("DELETE", "/api/v1/deployments/nope?cluster=west", nil).expect(t, 404)
}

func TestAutoDeployEmbeddedDeployments(t *testing.T) {
	t.Parallel()
	f := startFleet(t, "east", "west")
	e := setup(t, "memory", withFleet(f))
	e.send("POST", "/api/v1/packages", "application/yaml", fixture(t, "valid/counter-strong.yaml")).expect(t, 201)
	// The embedded deployment is recorded with the package (PENDING) and
	// deployed right after.
	e.do("GET", "/api/v1/deployments/counter-ha", nil).expect(t, 200)
	d := waitFor(t, func() (map[string]any, bool) {
		d := e.do("GET", "/api/v1/deployments/counter-ha", nil).expect(t, 200).object(t)
		st, _ := d["status"].(map[string]any)
		clusters, _ := st["clusters"].([]any)
		return d, len(clusters) == 2 && f["east"].RuntimeCount() == 1 && f["west"].RuntimeCount() == 1
	})
	if rf := d["status"].(map[string]any)["replication_factor"].(float64); rf < 3 {
		t.Errorf("strong class deployed with %v replicas", rf)
	}
	// Updating the package does not deploy again what exists.
	pkg := e.do("GET", "/api/v1/packages/counter-pkg", nil).expect(t, 200).body
	e.send("POST", "/api/v1/packages/counter-pkg", "application/json", pkg).expect(t, 200)
	time.Sleep(100 * time.Millisecond)
	if got := f["east"].Calls("Deploy") + f["west"].Calls("Deploy"); got != 2 {
		t.Errorf("Deploy calls after update = %d, want 2", got)
	}
}

// TestEmbeddedDeploymentsValidated: an embedded deployment gets the
// standalone endpoint's checks on the package write, instead of being
// stored DOWN and retried forever: an unknown target is 400, a key that is
// another package's deployment 409; the package is not written.
func TestEmbeddedDeploymentsValidated(t *testing.T) {
	t.Parallel()
	f := startFleet(t, "east")
	e := setup(t, "memory", withFleet(f))
	pkg := echoPackage("echo")
	pkg["deployments"] = []any{deployment("auto", "echo", "nowhere")}
	if msg := e.do("POST", "/api/v1/packages", pkg).expect(t, 400).errorText(t); !strings.Contains(msg, `"nowhere"`) {
		t.Errorf("400 %q does not name the cluster", msg)
	}
	e.do("GET", "/api/v1/packages/echo", nil).expect(t, 404)

	e.do("POST", "/api/v1/packages", echoPackage("other")).expect(t, 201)
	e.do("POST", "/api/v1/deployments", deployment("taken", "other", "east")).expect(t, 201)
	pkg["deployments"] = []any{deployment("taken", "echo", "east")}
	if msg := e.do("POST", "/api/v1/packages", pkg).expect(t, 409).errorText(t); !strings.Contains(msg, `"other"`) {
		t.Errorf("409 %q does not name the other package", msg)
	}
	e.do("GET", "/api/v1/packages/echo", nil).expect(t, 404)
	pkg["deployments"] = []any{deployment("auto", "echo", "east")}
	e.do("POST", "/api/v1/packages", pkg).expect(t, 201)
}

func TestClassRuntimesReportFailingCluster(t *testing.T) {
	t.Parallel()
	f := startFleet(t, "east", "west")
	e := setup(t, "memory", withFleet(f), func(c *config.Config) { c.CRM.Timeout = 300 * time.Millisecond; c.CRM.RetryAttempts = 0 })
	e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, 201)
	e.do("POST", "/api/v1/deployments", deployment("d", "echo", "east", "west")).expect(t, 201)
	f["west"].SetHang(true)
	r := e.do("GET", "/api/v1/class-runtimes", nil).expect(t, 200)
	var items []map[string]any
	r.json(t, &items)
	if len(items) != 1 || items[0]["cluster_name"] != "east" {
		t.Errorf("items %v", items)
	}
	if h := r.header.Get("X-Cluster-Errors"); !strings.Contains(h, "west: ") || !strings.Contains(h, "did not answer in time") {
		t.Errorf("X-Cluster-Errors %q does not say west timed out", h)
	} else {
		assertClean(t, h)
	}
	e.do("GET", "/api/v1/class-runtimes?cluster=mars", nil).expect(t, 400)
}

func TestIdempotencyKey(t *testing.T) {
	t.Parallel()
	f := startFleet(t, "default")
	e := setup(t, "memory", withFleet(f))
	e.do("POST", "/api/v1/packages", echoPackage("echo"), "Idempotency-Key", "k1").expect(t, 201)
	again := e.do("POST", "/api/v1/packages", echoPackage("echo"), "Idempotency-Key", "k1").expect(t, 201)
	if again.header.Get("Idempotent-Replayed") != "true" {
		t.Error("replay not marked")
	}
	e.do("POST", "/api/v1/packages", echoPackage("other"), "Idempotency-Key", "k1").expect(t, 409)

	// Updates (POST too) honour the header: a retried update applies once.
	upd := echoPackage("echo")
	upd["version"] = "2"
	first := e.do("POST", "/api/v1/packages/echo", upd, "Idempotency-Key", "u1").expect(t, 200)
	replay := e.do("POST", "/api/v1/packages/echo", upd, "Idempotency-Key", "u1").expect(t, 200)
	if first.header.Get("ETag") != replay.header.Get("ETag") || replay.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("update replay: ETag %s then %s", first.header.Get("ETag"), replay.header.Get("ETag"))
	}

	firstDep := e.do("POST", "/api/v1/deployments", deployment("d", "echo", "default"), "Idempotency-Key", "k2").expect(t, 201).result(t)
	second := e.do("POST", "/api/v1/deployments", deployment("d", "echo", "default"), "Idempotency-Key", "k2").expect(t, 201).result(t)
	if firstDep != second {
		t.Errorf("replayed %+v, first %+v", second, firstDep)
	}
	if got := f["default"].Calls("Deploy"); got != 1 {
		t.Errorf("Deploy calls = %d, want 1", got)
	}
	e.do("POST", "/api/v1/deployments", deployment("d2", "echo", "default"), "Idempotency-Key", "k2").expect(t, 409)

	// Concurrent retries of one request: all get the one result.
	ids := make(chan string, 10)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			r := e.do("POST", "/api/v1/deployments", deployment("d3", "echo", "default"), "Idempotency-Key", "k3")
			if r.status != 201 {
				t.Errorf("concurrent retry: %d %s", r.status, r.body)
				return
			}
			ids <- r.result(t).ID
		})
	}
	wg.Wait()
	close(ids)
	seen := map[string]bool{}
	for id := range ids {
		seen[id] = true
	}
	if len(seen) != 1 || f["default"].Calls("Deploy") != 2 {
		t.Errorf("concurrent retries got ids %v; Deploy calls %d, want 2 in total", seen, f["default"].Calls("Deploy"))
	}
}

// waitFor polls cond until it holds (or fails the test after 10 s).
func waitFor[T any](t *testing.T, cond func() (T, bool)) T {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		v, ok := cond()
		if ok {
			return v
		}
		if time.Now().After(deadline) {
			raw, _ := json.Marshal(v)
			t.Fatalf("condition not met within 10s; last value %s", raw)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDeploymentConditionFollowsClusters(t *testing.T) {
	t.Parallel()
	f := fleet{
		"east": crmsimtest.Start(t, crmsim.Config{EnvName: "east", ProgressDelay: 200 * time.Millisecond, ReadyDelay: 200 * time.Millisecond}),
		"west": crmsimtest.Start(t, crmsim.Config{EnvName: "west"}),
	}
	e := setup(t, "memory", withFleet(f), func(c *config.Config) { c.Deploy.StatusPollInterval = 50 * time.Millisecond })
	e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, 201)
	e.do("POST", "/api/v1/deployments", deployment("d", "echo", "east", "west")).expect(t, 201)
	if c := e.do("GET", "/api/v1/deployments/d", nil).expect(t, 200).object(t)["condition"]; c != "DEPLOYING" {
		t.Errorf("condition right after create = %v, want DEPLOYING (east is still progressing)", c)
	}
	waitFor(t, func() (any, bool) {
		c := e.do("GET", "/api/v1/deployments/d", nil).expect(t, 200).object(t)["condition"]
		return c, c == "RUNNING"
	})
	// The background poller notices a degraded runtime without any read.
	if err := f["west"].SetDegraded(deployUnit(t, e, "d", "west"), "CrashLoopBackOff", "container exits"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() (any, bool) {
		var list []map[string]any
		e.do("GET", "/api/v1/deployments", nil).expect(t, 200).json(t, &list)
		return list[0]["condition"], list[0]["condition"] == "DOWN"
	})
}

// deployUnit returns a deployment's unit id on a cluster.
func deployUnit(t *testing.T, e *env, key, cluster string) string {
	t.Helper()
	var m struct {
		ClusterMappings map[string]string `json:"cluster_mappings"`
	}
	e.do("GET", "/api/v1/deployments/"+key+"/cluster-mappings", nil).expect(t, 200).json(t, &m)
	return m.ClusterMappings[cluster]
}

func TestUnreachableTargets(t *testing.T) {
	t.Parallel()
	f := fleet{
		"up":   crmsimtest.Start(t, crmsim.Config{EnvName: "up"}),
		"down": crmsimtest.Start(t, crmsim.Config{EnvName: "down", Hang: true}),
	}
	e := setup(t, "memory", withFleet(f), func(c *config.Config) { c.CRM.Timeout = 300 * time.Millisecond })
	e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, 201)
	// One target without an availability: the target list is bad (400,
	// naming it); every target unreachable: an outage (503).
	if msg := e.do("POST", "/api/v1/deployments", deployment("d", "echo", "up", "down")).expect(t, 400).errorText(t); !strings.Contains(msg, `"down"`) {
		t.Errorf("400 %q does not name the cluster", msg)
	}
	e.do("POST", "/api/v1/deployments", deployment("d", "echo", "down")).expect(t, 503)
	if f["up"].Calls("Deploy") != 0 {
		t.Error("a rejected deployment reached a CRM")
	}

	// Runtime views: the status filter takes the conditions the views
	// show; deployment-status finds a unit without ?cluster= even with no
	// cluster named default; deletes name unknown clusters.
	id := e.do("POST", "/api/v1/deployments", deployment("d", "echo", "up")).expect(t, 201).result(t).ID
	waitFor(t, func() (int, bool) {
		var items []map[string]any
		e.do("GET", "/api/v1/class-runtimes?status=RUNNING&cluster=up", nil).expect(t, 200).json(t, &items)
		return len(items), len(items) == 1
	})
	if st := e.do("GET", "/api/v1/deployment-status/"+id, nil).expect(t, 200).object(t); st["cluster_name"] != "up" {
		t.Errorf("deployment-status %v", st)
	}
	e.do("DELETE", "/api/v1/deployments/d?cluster=mars", nil).expect(t, 400)
}

// TestGracefulShutdown: on SIGTERM (the run context ends) PM stops taking
// requests but finishes the ones in flight.
func TestGracefulShutdown(t *testing.T) {
	t.Parallel()
	f := fleet{"slow": crmsimtest.Start(t, crmsim.Config{EnvName: "slow", Latency: 400 * time.Millisecond})}
	e := setup(t, "memory", withFleet(f), func(c *config.Config) { c.CRM.HealthCacheTTL = time.Minute })
	e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, 201)
	e.do("GET", "/api/v1/clusters/health", nil).expect(t, 200) // warm the cache: the deploy is one slow CRM call
	res := make(chan response, 1)
	go func() { res <- e.do("POST", "/api/v1/deployments", deployment("d", "echo", "slow")) }()
	time.Sleep(150 * time.Millisecond) // the deploy is at the CRM now
	stopped := make(chan error, 1)
	go func() { stopped <- e.shutdown() }()
	if r := <-res; r.status != 201 {
		t.Errorf("in-flight deploy during shutdown: %d %s", r.status, r.body)
	}
	if err := <-stopped; err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if r, err := e.http1.Get(e.base + "/health"); err == nil {
		r.Body.Close()
		t.Error("PM still answers after shutdown")
	}
}

// TestCascadeWaitsForAutoDeploy: deleting a package whose embedded
// deployment is still being deployed is refused (409) rather than leaving
// that deployment running without its package.
func TestCascadeWaitsForAutoDeploy(t *testing.T) {
	t.Parallel()
	f := fleet{"slow": crmsimtest.Start(t, crmsim.Config{EnvName: "slow", Latency: 300 * time.Millisecond})}
	e := setup(t, "memory", withFleet(f), func(c *config.Config) { c.PackageDelete.Cascade = true })
	pkg := echoPackage("echo")
	pkg["deployments"] = []any{deployment("auto", "echo", "slow")}
	e.do("POST", "/api/v1/packages", pkg).expect(t, 201)
	waitFor(t, func() (int64, bool) { n := f["slow"].Calls("Deploy"); return n, n > 0 })
	if msg := e.do("DELETE", "/api/v1/packages/echo", nil).expect(t, 409).errorText(t); !strings.Contains(msg, "auto") {
		t.Errorf("409 %q does not name the deployment", msg)
	}
	waitFor(t, func() (int, bool) {
		r := e.do("DELETE", "/api/v1/packages/echo", nil)
		return r.status, r.status == 204
	})
	if n := f["slow"].RuntimeCount(); n != 0 {
		t.Errorf("%d runtimes left after the cascade", n)
	}
}

// TestCreateAnswersEveryUnit: a multi-cluster create names every cluster's
// unit id (REST: in the message; Connect: unit_ids), and its message says
// the replica count is per cluster.
func TestCreateAnswersEveryUnit(t *testing.T) {
	t.Parallel()
	f := startFleet(t, "east", "west")
	e := setup(t, "memory", withFleet(f))
	e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, 201)
	res := e.do("POST", "/api/v1/deployments", deployment("d", "echo", "east", "west")).expect(t, 201).result(t)
	var m struct {
		ClusterMappings map[string]string `json:"cluster_mappings"`
	}
	e.do("GET", "/api/v1/deployments/d/cluster-mappings", nil).expect(t, 200).json(t, &m)
	for _, c := range []string{"east", "west"} {
		if id := m.ClusterMappings[c]; id == "" || !strings.Contains(res.Message, c+" (unit "+id+")") {
			t.Errorf("message %q does not name %s's unit %q", res.Message, c, id)
		}
	}
	if !strings.Contains(res.Message, "replica(s) per cluster") {
		t.Errorf("message %q does not say the replicas are per cluster", res.Message)
	}
	if res.ID != m.ClusterMappings["east"] && res.ID != m.ClusterMappings["west"] {
		t.Errorf("id %q is not one of the units %v", res.ID, m.ClusterMappings)
	}
}
