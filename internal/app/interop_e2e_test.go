package app_test

// The request sequence of the current OaaS end-to-end test
// (upstream-head-delta §4.2), sent as its CLI sends it, with documents in
// the shapes its CLI writes (§1.4), against PM on PostgreSQL and simulated
// CRMs. The documents are written for this test: the HEAD shape (nulls for
// unset options, "functions": [], "condition": "PENDING", odgm.log) and,
// for the package of the first generation, the fields that generation
// requires (disabled, key_specs[].nullable, max_latency_ms).

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/oaas/pm/internal/deploy"
)

// headPackage is e2e/fixtures/package.yaml as the current CLI sends it,
// with ${REGISTRY}/${IMAGE_TAG} filled in.
func headPackage(tag string) string {
	fn := func(key string) string {
		return fmt.Sprintf(`{"key": %q, "function_type": "CUSTOM", "description": null,
   "provision_config": {"container_image": "registry.local/oaas/%s:%s", "port": 8080, "max_concurrency": 0,
     "need_http2": false, "cpu_request": null, "memory_request": null, "cpu_limit": null, "memory_limit": null,
     "min_scale": null, "max_scale": null},
   "config": {"HTTP_PORT": "8080"}}`, key, key, tag)
	}
	return `{"name": "e2e-test", "version": "0.1.0",
 "metadata": {"author": null, "description": null, "tags": []},
 "classes": [{"key": "E2EClass", "description": null, "state_spec": null,
   "function_bindings": [
     {"name": "echo", "function_key": "echo", "access_modifier": "PUBLIC", "stateless": true, "parameters": []},
     {"name": "random", "function_key": "random", "access_modifier": "PUBLIC", "stateless": false, "parameters": []}]}],
 "functions": [` + fn("echo") + `, ` + fn("random") + `],
 "dependencies": [], "deployments": []}`
}

// headDeployment is e2e/fixtures/deployment.yaml's deployment as the
// current CLI's deploy apply sends it.
const headDeployment = `{"key": "E2EClass", "package_name": "e2e-test", "class_key": "E2EClass",
 "target_envs": ["oaas-1"],
 "nfr_requirements": {"min_throughput_rps": null, "availability": null, "cpu_utilization_target": null},
 "functions": [], "condition": "PENDING", "odgm": {"log": "debug"}}`

const wasmPackage = `{"name": "e2e-wasm-test", "version": "0.1.0",
 "metadata": {"author": null, "description": null, "tags": []},
 "classes": [{"key": "WasmClass", "description": null, "state_spec": null,
   "function_bindings": [{"name": "echo", "function_key": "wasm-echo", "access_modifier": "PUBLIC", "stateless": true, "parameters": []}]}],
 "functions": [{"key": "wasm-echo", "function_type": "WASM", "description": null,
   "provision_config": {"wasm_module_url": "http://artifacts.local/wasm_guest_echo.wasm", "port": null, "max_concurrency": 0,
     "need_http2": false, "cpu_request": null, "memory_request": null, "cpu_limit": null, "memory_limit": null,
     "min_scale": null, "max_scale": null},
   "config": {}}],
 "dependencies": [], "deployments": []}`

const wasmDeployment = `{"key": "WasmClass", "package_name": "e2e-wasm-test", "class_key": "WasmClass",
 "target_envs": ["oaas-1"],
 "nfr_requirements": {"min_throughput_rps": null, "availability": null, "cpu_utilization_target": null},
 "functions": [], "condition": "PENDING", "odgm": {"log": "debug"}}`

// firstGenPackage is a package as a first-generation (c19a68a) client
// writes it: every required field present, disabled, key_specs[].nullable,
// and an embedded deployment with max_latency_ms and the two times.
const firstGenPackage = `{"name": "legacy-pkg", "version": null, "disabled": false,
 "metadata": {"author": "ops", "description": null, "tags": ["legacy"]},
 "classes": [{"key": "Counter", "description": null, "disabled": false,
   "state_spec": {"key_specs": [{"name": "count", "key_type": "i64", "nullable": true}],
     "default_provider": "memory", "consistency_model": "NONE", "persistent": false, "serialization_format": "json"},
   "function_bindings": [{"name": "inc", "function_key": "inc", "access_modifier": "PUBLIC", "stateless": false, "parameters": []}]}],
 "functions": [{"key": "inc", "function_type": "CUSTOM", "description": null,
   "provision_config": {"container_image": "registry.local/oaas/inc:1", "port": 8080, "max_concurrency": 0, "need_http2": false,
     "cpu_request": null, "memory_request": null, "cpu_limit": null, "memory_limit": null, "min_scale": null, "max_scale": null},
   "config": {}}],
 "dependencies": [], "deployments": []}`

const firstGenDeployment = `{"key": "legacy-counter", "package_name": "legacy-pkg", "class_key": "Counter",
 "target_envs": ["oaas-1"],
 "nfr_requirements": {"max_latency_ms": null, "min_throughput_rps": null, "availability": 0.9, "cpu_utilization_target": null},
 "functions": [], "condition": "PENDING",
 "odgm": {"collections": [], "partition_count": 1, "replica_count": 1, "shard_type": "mst"},
 "created_at": "2025-01-02T03:04:05Z", "updated_at": "2025-01-02T03:04:05Z"}`

// oaasCLI sends requests as the current OaaS CLI does: JSON bodies, any
// 2xx a success, "not found" recognised by its 404.
type oaasCLI struct {
	t *testing.T
	e *env
	// log is the request sequence, "METHOD path -> status".
	log []string
}

func (c *oaasCLI) send(method, path, body string) response {
	c.t.Helper()
	var r response
	if body == "" {
		r = c.e.do(method, path, nil)
	} else {
		r = c.e.do(method, path, body)
	}
	c.log = append(c.log, fmt.Sprintf("%s %s -> %d", method, path, r.status))
	if r.status >= 300 && r.status != http.StatusNotFound {
		c.t.Fatalf("%s %s: %d %s", method, path, r.status, r.body)
	}
	if h := r.header.Values("Warning"); len(h) > 0 {
		c.t.Errorf("%s %s: warnings %v: a field of the OaaS documents is unknown", method, path, h)
	}
	return r
}

func nameOf(t *testing.T, doc, field string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatal(err)
	}
	return m[field].(string)
}

// packageApply is `package apply FILE --overwrite`.
func (c *oaasCLI) packageApply(doc string) {
	name := nameOf(c.t, doc, "name")
	if c.send("GET", "/api/v1/packages/"+name, "").status == http.StatusNotFound {
		c.send("POST", "/api/v1/packages", doc)
		return
	}
	c.send("POST", "/api/v1/packages/"+name, doc)
}

// deployApply is `deploy apply FILE --overwrite`: the same POST whether
// the deployment exists or not.
func (c *oaasCLI) deployApply(doc string) response {
	c.send("GET", "/api/v1/deployments/"+nameOf(c.t, doc, "key"), "")
	return c.send("POST", "/api/v1/deployments", doc)
}

func TestOaaSEndToEndSequence(t *testing.T) {
	t.Parallel()
	f := startFleet(t, "oaas-1")
	sim := f["oaas-1"]
	e := setup(t, "postgres", withFleet(f))
	cli := &oaasCLI{t: t, e: e}

	// Steps 1-4: package apply, deploy apply, on a fresh PM.
	cli.packageApply(headPackage("v1"))
	created := cli.deployApply(headDeployment).result(t)
	unit := sim.LastUnit(created.ID)
	if unit == nil || created.ID != deploy.UnitID("E2EClass", "oaas-1") {
		t.Fatalf("deploy apply created %+v; the CRM has %d runtimes", created, sim.RuntimeCount())
	}
	if img := unit.GetFunctions()[0].GetProvisionConfig().GetContainerImage(); img != "registry.local/oaas/echo:v1" {
		t.Errorf("unit image %q", img)
	}
	if c := unit.GetOdgmConfig().GetCollections(); fmt.Sprint(c) != "[e2e-test.E2EClass]" {
		t.Errorf("unit odgm_config collections %v, want the default PM fills in", c)
	}
	// The deployment as OaaS answers it: derived functions, odgm filled.
	var d struct {
		TargetEnvs []string `json:"target_envs"`
		Functions  []struct {
			FunctionKey     string            `json:"function_key"`
			Config          map[string]string `json:"config"`
			ProvisionConfig struct {
				ContainerImage string `json:"container_image"`
			} `json:"provision_config"`
		} `json:"functions"`
		Odgm struct {
			Collections  []string             `json:"collections"`
			Log          string               `json:"log"`
			ReplicaCount int                  `json:"replica_count"`
			EnvNodeIDs   map[string][]float64 `json:"env_node_ids"`
		} `json:"odgm"`
		Status struct {
			SelectedEnvs []string `json:"selected_envs"`
		} `json:"status"`
	}
	cli.send("GET", "/api/v1/deployments/E2EClass", "").json(t, &d)
	if len(d.Functions) != 2 || d.Functions[0].FunctionKey != "echo" || d.Functions[1].FunctionKey != "random" ||
		d.Functions[0].Config["HTTP_PORT"] != "8080" || d.Functions[0].ProvisionConfig.ContainerImage != "registry.local/oaas/echo:v1" {
		t.Errorf("derived functions %+v", d.Functions)
	}
	if fmt.Sprint(d.Odgm.Collections) != "[e2e-test.E2EClass]" || d.Odgm.Log != "debug" || d.Odgm.ReplicaCount != 1 ||
		len(d.Odgm.EnvNodeIDs["oaas-1"]) != 1 || fmt.Sprint(d.Status.SelectedEnvs) != "[oaas-1]" {
		t.Errorf("odgm %+v, status %+v", d.Odgm, d.Status)
	}

	// Step 6: the WASM package and deployment.
	cli.packageApply(wasmPackage)
	wasm := cli.deployApply(wasmDeployment).result(t)
	if u := sim.LastUnit(wasm.ID); u.GetFunctions()[0].GetProvisionConfig().GetWasmModuleUrl() != "http://artifacts.local/wasm_guest_echo.wasm" {
		t.Errorf("WASM unit %v", u)
	}

	// A first-generation client's package and deployment, unchanged.
	cli.packageApply(firstGenPackage)
	cli.deployApply(firstGenDeployment)
	var pkg map[string]any
	cli.send("GET", "/api/v1/packages/legacy-pkg", "").json(t, &pkg)
	cls := pkg["classes"].([]any)[0].(map[string]any)
	if ks := cls["state_spec"].(map[string]any)["key_specs"].([]any)[0].(map[string]any); ks["nullable"] != true {
		t.Errorf("key_specs[0] %v: nullable lost", ks)
	}

	// The run again, with overwrite: every document is applied again and
	// nothing is redeployed.
	deploys := sim.Calls("Deploy")
	cli.packageApply(headPackage("v1"))
	if st := cli.deployApply(headDeployment).result(t).Status; st != "unchanged" {
		t.Errorf("deploy apply --overwrite of the same document: %q", st)
	}
	cli.packageApply(wasmPackage)
	cli.deployApply(wasmDeployment)
	if n := sim.Calls("Deploy") - deploys; n != 0 {
		t.Errorf("re-running with the same documents made %d Deploy calls", n)
	}
	// With a new image tag, the re-run redeploys, as OaaS's does.
	cli.packageApply(headPackage("v2"))
	if st := cli.deployApply(headDeployment).result(t).Status; st != "updated" {
		t.Errorf("deploy apply after the package changed: %q", st)
	}
	if img := sim.LastUnit(created.ID).GetFunctions()[0].GetProvisionConfig().GetContainerImage(); img != "registry.local/oaas/echo:v2" {
		t.Errorf("after the re-run the unit runs %q", img)
	}
	if sim.RuntimeCount() != 3 {
		t.Errorf("the CRM runs %d units, want 3 (no duplicates from re-runs)", sim.RuntimeCount())
	}

	// Step 10, cleanup. OaaS's cleanup deletes the package without
	// cascade and expects 204 while E2EClass is still deployed (OaaS drops
	// nothing then, leaving a deployment without its package). PM keeps
	// its guard: that delete is 409, so a careful tool deletes the
	// deployments first (or asks for ?cascade=true, as below for the WASM
	// package).
	if r := e.do("DELETE", "/api/v1/packages/e2e-test", nil); r.status != http.StatusConflict || !strings.Contains(r.errorText(t), "E2EClass") {
		t.Errorf("package delete with a deployment left: %d %s", r.status, r.body)
	}
	var del map[string]any
	cli.send("DELETE", "/api/v1/deployments/E2EClass", "").json(t, &del)
	if del["message"] != "Deployment deleted across environments" || del["id"] != "E2EClass" || fmt.Sprint(del["deleted_envs"]) != "[oaas-1]" {
		t.Errorf("deployment delete answered %v", del)
	}
	if r := cli.send("DELETE", "/api/v1/packages/e2e-test", ""); r.status != http.StatusNoContent {
		t.Errorf("package delete: %d", r.status)
	}
	cli.send("DELETE", "/api/v1/packages/e2e-wasm-test?cascade=true", "")
	cli.send("DELETE", "/api/v1/packages/legacy-pkg?cascade=true", "")
	if sim.RuntimeCount() != 0 {
		t.Errorf("%d runtimes left after the cleanup", sim.RuntimeCount())
	}
	var left []any
	cli.send("GET", "/api/v1/deployments", "").json(t, &left)
	if len(left) != 0 {
		t.Errorf("%d deployments left", len(left))
	}
	t.Logf("sequence:\n%s", strings.Join(cli.log, "\n"))
}
