package app_test

// Deployment updates, revisions, rollback and the routes OaaS tools use
// for them (issue 12), over REST.

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/oaas/pm/internal/deploy"
)

// withConfig is deployment(...) with the echo function's MODE set.
func withMode(key, mode string, clusters ...string) map[string]any {
	d := deployment(key, "echo", clusters...)
	d["functions"] = []any{map[string]any{"function_key": "echo", "config": map[string]any{"MODE": mode}}}
	return d
}

func TestRESTDeploymentUpdates(t *testing.T) {
	t.Parallel()
	forEachStorageWith(t, withFleet(startFleet(t, "east", "west")), func(t *testing.T, e *env) {
		e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, http.StatusCreated)
		created := e.do("POST", "/api/v1/deployments", withMode("d", "v1", "east")).expect(t, http.StatusCreated)
		etag := created.header.Get("ETag")

		// PUT with a stale If-Match changes nothing.
		e.do("PUT", "/api/v1/deployments/d", withMode("d", "v2", "east", "west"), "If-Match", `"999"`).expect(t, http.StatusConflict)
		// A body naming another key.
		e.do("PUT", "/api/v1/deployments/d", withMode("other", "v2", "east")).expect(t, http.StatusBadRequest)
		e.do("PUT", "/api/v1/deployments/ghost", withMode("ghost", "v2", "east")).expect(t, http.StatusNotFound)

		r := e.do("PUT", "/api/v1/deployments/d", withMode("d", "v2", "east", "west"), "If-Match", etag).expect(t, http.StatusOK)
		if res := r.result(t); res.Status != "updated" || !strings.Contains(res.Message, "revision 2") {
			t.Errorf("PUT answered %+v", res)
		}
		if r.header.Get("ETag") == "" || r.header.Get("ETag") == etag || r.header.Get("X-Write-Status") != "updated" {
			t.Errorf("PUT headers %v", r.header)
		}
		var d map[string]any
		e.do("GET", "/api/v1/deployments/d", nil).expect(t, http.StatusOK).json(t, &d)
		if st, _ := d["status"].(map[string]any); st["spec_revision"] != float64(2) || fmt.Sprint(d["target_envs"]) != "[east west]" {
			t.Errorf("after PUT: %v", d)
		}

		// POST of the key again (OaaS's deploy apply --overwrite): a
		// changed spec updates, the same is unchanged.
		e.do("POST", "/api/v1/deployments", withMode("d", "v3", "east", "west")).expect(t, http.StatusOK)
		r = e.do("POST", "/api/v1/deployments", withMode("d", "v3", "east", "west")).expect(t, http.StatusOK)
		if r.result(t).Status != "unchanged" {
			t.Errorf("the same spec again: %s", r.body)
		}
		// A dry run of an update says so and changes nothing.
		r = e.do("PUT", "/api/v1/deployments/d?dry_run=true", withMode("d", "v4", "west")).expect(t, http.StatusOK)
		if res := r.result(t); res.Status != "planned" || !strings.Contains(res.Message, "would be updated to revision 4") {
			t.Errorf("dry run %+v", res)
		}

		var revs []map[string]any
		e.do("GET", "/api/v1/deployments/d/revisions", nil).expect(t, http.StatusOK).json(t, &revs)
		if len(revs) != 3 || revs[0]["revision"] != float64(3) || revs[0]["current"] != true || revs[2]["reason"] != "created" {
			t.Fatalf("revisions %v", revs)
		}
		if dep, _ := revs[2]["deployment"].(map[string]any); fmt.Sprint(dep["target_envs"]) != "[east]" {
			t.Errorf("revision 1 holds %v", revs[2]["deployment"])
		}

		r = e.do("POST", "/api/v1/deployments/d/rollback?to_revision=1", nil).expect(t, http.StatusOK)
		if res := r.result(t); res.Status != "rolled back" || !strings.Contains(res.Message, "rolled back to revision 1 (now revision 4)") {
			t.Errorf("rollback answered %+v", res)
		}
		var m map[string]any
		e.do("GET", "/api/v1/deployments/d/cluster-mappings", nil).expect(t, http.StatusOK).json(t, &m)
		if cm, _ := m["cluster_mappings"].(map[string]any); len(cm) != 1 || cm["east"] == nil {
			t.Errorf("after rolling back to revision 1 (east only): %v", m)
		}
		e.do("POST", "/api/v1/deployments/d/rollback?to_revision=42", nil).expect(t, http.StatusNotFound)
		// Previous revision by default.
		r = e.do("POST", "/api/v1/deployments/d/rollback", nil).expect(t, http.StatusOK)
		if !strings.Contains(r.result(t).Message, "rolled back to revision 3") {
			t.Errorf("default rollback: %s", r.body)
		}
	})
}

func TestRESTEnvMappingsAndUnitDeletes(t *testing.T) {
	t.Parallel()
	f := startFleet(t, "oaas-1", "oaas-2")
	e := setup(t, "memory", withFleet(f))
	e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, http.StatusCreated)
	e.do("POST", "/api/v1/deployments", deployment("d", "echo", "oaas-1", "oaas-2")).expect(t, http.StatusCreated)

	var m struct {
		DeploymentKey   string            `json:"deployment_key"`
		ClusterIDs      map[string]string `json:"cluster_ids"`
		EnvIDs          map[string]string `json:"env_ids"`
		ClusterMappings map[string]string `json:"cluster_mappings"`
	}
	e.do("GET", "/api/v1/deployments/d/env-mappings", nil).expect(t, http.StatusOK).json(t, &m)
	unit := deploy.UnitID("d", "oaas-2")
	if m.DeploymentKey != "d" || m.EnvIDs["oaas-2"] != unit || fmt.Sprint(m.EnvIDs) != fmt.Sprint(m.ClusterIDs) ||
		fmt.Sprint(m.EnvIDs) != fmt.Sprint(m.ClusterMappings) || len(m.EnvIDs) != 2 {
		t.Errorf("env-mappings %+v", m)
	}
	e.do("GET", "/api/v1/deployments/ghost/env-mappings", nil).expect(t, http.StatusNotFound)

	// First-generation clients delete a unit by its id and environment.
	e.do("DELETE", "/api/v1/deployments/"+unit+"?cluster=oaas-1", nil).expect(t, http.StatusNotFound)
	var del map[string]any
	e.do("DELETE", "/api/v1/deployments/"+unit+"?env=oaas-2", nil).expect(t, http.StatusOK).json(t, &del)
	if del["id"] != unit || fmt.Sprint(del["deleted_envs"]) != "[oaas-2]" || !strings.Contains(fmt.Sprint(del["message"]), `deployment "d"`) {
		t.Errorf("unit delete answered %v", del)
	}
	if f["oaas-2"].RuntimeCount() != 0 || f["oaas-1"].RuntimeCount() != 1 {
		t.Errorf("runtimes after the unit delete: oaas-1 %d, oaas-2 %d", f["oaas-1"].RuntimeCount(), f["oaas-2"].RuntimeCount())
	}
	// Without an environment the path is a deployment key.
	e.do("DELETE", "/api/v1/deployments/"+deploy.UnitID("d", "oaas-1"), nil).expect(t, http.StatusNotFound)
}

func TestRESTPackageDeleteCascadePerRequest(t *testing.T) {
	t.Parallel()
	forEachStorageWith(t, withFleet(startFleet(t, "default")), func(t *testing.T, e *env) {
		e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, http.StatusCreated)
		e.do("POST", "/api/v1/deployments", deployment("d", "echo", "default")).expect(t, http.StatusCreated)
		msg := e.do("DELETE", "/api/v1/packages/echo", nil).expect(t, http.StatusConflict).errorText(t)
		if !strings.Contains(msg, "cascade=true") {
			t.Errorf("409 %q does not say how to cascade", msg)
		}
		r := e.do("DELETE", "/api/v1/packages/echo?cascade=true", nil).expect(t, http.StatusNoContent)
		if len(r.body) != 0 {
			t.Errorf("a package delete answered a body: %s", r.body)
		}
		e.do("GET", "/api/v1/deployments/d", nil).expect(t, http.StatusNotFound)
		e.do("GET", "/api/v1/packages/echo", nil).expect(t, http.StatusNotFound)
	})
}

// TestRESTAutomaticSelection: no target_envs: PM picks, the dry run shows
// the choice, and no eligible cluster is a 503 naming why.
func TestRESTAutomaticSelection(t *testing.T) {
	t.Parallel()
	f := startFleet(t, "oaas-1", "oaas-2", "oaas-3")
	e := setup(t, "memory", withFleet(f))
	e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, http.StatusCreated)
	body := map[string]any{"key": "auto", "package_name": "echo", "class_key": "Echo", "available_envs": []string{"oaas-3", "oaas-2"}}
	r := e.do("POST", "/api/v1/deployments?dry_run=true", body).expect(t, http.StatusOK)
	if res := r.result(t); !strings.Contains(res.Message, "clusters selected automatically from oaas-3, oaas-2") || !strings.Contains(res.Message, "on oaas-2") {
		t.Errorf("dry run %+v", res)
	}
	e.do("POST", "/api/v1/deployments", body).expect(t, http.StatusCreated)
	var d map[string]any
	e.do("GET", "/api/v1/deployments/auto", nil).expect(t, http.StatusOK).json(t, &d)
	if fmt.Sprint(d["target_envs"]) != "[oaas-2]" || fmt.Sprint(d["available_envs"]) != "[oaas-3 oaas-2]" {
		t.Errorf("an automatically placed deployment: %v", d)
	}
	// The answer shows the ODGM defaults OaaS fills in; the unit of a
	// deployment that gave no odgm carries none, as first-generation PMs
	// sent it.
	if o, _ := d["odgm"].(map[string]any); o["log"] != "info" || fmt.Sprint(o["collections"]) != "[echo.Echo]" || o["replica_count"] != float64(1) {
		t.Errorf("odgm answered %v", d["odgm"])
	}
	if u := f["oaas-2"].LastUnit(deploy.UnitID("auto", "oaas-2")); u == nil || u.OdgmConfig != nil {
		t.Errorf("unit %v: want one, without odgm_config", u)
	}
	f["oaas-1"].SetNotServing(true)
	msg := e.do("POST", "/api/v1/deployments", map[string]any{"key": "sick", "package_name": "echo", "class_key": "Echo", "available_envs": []string{"oaas-1"}}).
		expect(t, http.StatusServiceUnavailable).errorText(t)
	if !strings.Contains(msg, "no eligible cluster") || !strings.Contains(msg, "oaas-1") {
		t.Errorf("503 %q", msg)
	}
}
