package app_test

// Routes and parameters the current OaaS tools use (issue 12).

import (
	"net/http"
	"strings"
	"testing"
)

func TestInteropEnvRoutesAndAliases(t *testing.T) {
	t.Parallel()
	e := setup(t, "memory", withFleet(startFleet(t, "oaas-1", "oaas-2")))
	var envs []map[string]any
	e.do("GET", "/api/v1/envs", nil).expect(t, http.StatusOK).json(t, &envs)
	if len(envs) != 2 {
		t.Errorf("/envs = %v", envs)
	}
	var health []map[string]any
	e.do("GET", "/api/v1/envs/health", nil).expect(t, http.StatusOK).json(t, &health)
	if len(health) != 2 {
		t.Errorf("/envs/health = %v", health)
	}
	var one map[string]any
	e.do("GET", "/api/v1/envs/oaas-1/health", nil).expect(t, http.StatusOK).json(t, &one)
	if one["cluster_name"] != "oaas-1" {
		t.Errorf("/envs/oaas-1/health = %v", one)
	}
	e.do("GET", "/api/v1/envs/mars/health", nil).expect(t, http.StatusNotFound)

	e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, http.StatusCreated)
	e.do("POST", "/api/v1/deployments", deployment("d", "echo", "oaas-1", "oaas-2")).expect(t, http.StatusCreated)
	// ?env= is the older spelling of ?cluster=.
	var rts []map[string]any
	e.do("GET", "/api/v1/class-runtimes?env=oaas-2", nil).expect(t, http.StatusOK).json(t, &rts)
	if len(rts) != 1 || rts[0]["cluster_name"] != "oaas-2" {
		t.Errorf("class-runtimes?env=oaas-2 = %v", rts)
	}
	msg := e.do("GET", "/api/v1/class-runtimes?env=oaas-2&cluster=oaas-1", nil).expect(t, http.StatusBadRequest).errorText(t)
	if !strings.Contains(msg, "disagree") {
		t.Errorf("conflicting env and cluster: %q", msg)
	}
	e.do("DELETE", "/api/v1/deployments/d?env=oaas-1", nil).expect(t, http.StatusNoContent)
	var mappings map[string]any
	e.do("GET", "/api/v1/deployments/d/cluster-mappings", nil).expect(t, http.StatusOK).json(t, &mappings)
	if m, _ := mappings["cluster_mappings"].(map[string]any); len(m) != 1 || m["oaas-2"] == nil {
		t.Errorf("after deleting oaas-1 by ?env=: %v", mappings)
	}
}

func TestInteropCatalogFilter(t *testing.T) {
	t.Parallel()
	e := setup(t, "memory")
	e.do("POST", "/api/v1/packages", fixture(t, "valid/echo.json")).expect(t, http.StatusCreated)
	e.do("POST", "/api/v1/packages", echoPackage("other")).expect(t, http.StatusCreated)
	count := func(path string) int {
		var items []map[string]any
		e.do("GET", path, nil).expect(t, http.StatusOK).json(t, &items)
		return len(items)
	}
	for path, want := range map[string]int{
		"/api/v1/classes":                 2,
		"/api/v1/classes?filter=Echo":     2,
		"/api/v1/classes?filter=nope":     0,
		"/api/v1/functions?filter=Echo.*": 1,
		"/api/v1/functions?filter=echo":   2,
	} {
		if got := count(path); got != want {
			t.Errorf("GET %s: %d items, want %d", path, got, want)
		}
	}
}
