package app_test

// Routes and parameters the current OaaS tools use (issue 12).

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/oaas/pm/internal/config"
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
	e.do("DELETE", "/api/v1/deployments/d?env=oaas-1", nil).expect(t, http.StatusOK)
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

func TestInteropGatewayProxy(t *testing.T) {
	t.Parallel()
	type seen struct{ path, query, auth, forwarded string }
	got := make(chan seen, 4)
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.URL.Path, r.URL.RawQuery, r.Header.Get("Authorization"), r.Header.Get("X-Forwarded-For")}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"output":"hi"}`))
	}))
	t.Cleanup(upstream.Close)
	file, tok := tokens(t, "")
	e := setup(t, "memory", withTokens(file), func(c *config.Config) { c.Gateway.URL = upstream.URL + "/base" })

	r := e.do("GET", "/api/gateway/api/class/echo/0/invokes/echo?x=1", nil, "Authorization", "Bearer "+tok["viewer"]).expect(t, http.StatusOK)
	if string(r.body) != `{"output":"hi"}` {
		t.Errorf("proxied body %s", r.body)
	}
	s := <-got
	if s.path != "/base/api/class/echo/0/invokes/echo" || s.query != "x=1" || s.auth != "" || s.forwarded == "" {
		t.Errorf("upstream saw %+v", s)
	}
	e.do("GET", "/api/gateway/x", nil).expect(t, http.StatusUnauthorized)
	e.do("POST", "/api/gateway/x", "{}", "Authorization", "Bearer "+tok["viewer"]).expect(t, http.StatusForbidden)
	e.do("POST", "/api/gateway/x", "{}", "Authorization", "Bearer "+tok["deployer"]).expect(t, http.StatusOK)
	<-got

	off := setup(t, "memory")
	if msg := off.do("GET", "/api/gateway/x", nil).expect(t, http.StatusServiceUnavailable).errorText(t); !strings.Contains(msg, "GATEWAY_URL") {
		t.Errorf("unconfigured gateway: %q", msg)
	}
}

func TestPackageUpdateKeepsWhatDeploymentsUse(t *testing.T) {
	t.Parallel()
	forEachStorageWith(t, withDefaultCluster(t), func(t *testing.T, e *env) {
		e.do("POST", "/api/v1/packages", echoPackage("echo")).expect(t, http.StatusCreated)
		e.do("POST", "/api/v1/deployments", deployment("d", "echo", "default")).expect(t, http.StatusCreated)
		stripped := echoPackage("echo")
		stripped["classes"] = []any{}
		msg := e.do("POST", "/api/v1/packages/echo", stripped).expect(t, http.StatusConflict).errorText(t)
		if !strings.Contains(msg, `"d"`) && !strings.Contains(msg, "d ") {
			t.Errorf("409 %q does not name the deployment", msg)
		}
		var pkg map[string]any
		e.do("GET", "/api/v1/packages/echo", nil).expect(t, http.StatusOK).json(t, &pkg)
		if cls, _ := pkg["classes"].([]any); len(cls) != 1 {
			t.Errorf("the refused update changed the package: %v", pkg["classes"])
		}
		// Changing something else is fine.
		changed := echoPackage("echo")
		changed["version"] = "2.0.0"
		e.do("POST", "/api/v1/packages/echo", changed).expect(t, http.StatusOK)
	})
}
