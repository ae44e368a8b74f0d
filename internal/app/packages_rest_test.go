package app_test

import (
	"bytes"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/oaas/pm/internal/config"
)

// forEachStorage runs fn against a fresh PM per storage backend.
func forEachStorage(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Helper()
	for _, st := range storages {
		t.Run(st, func(t *testing.T) {
			t.Parallel()
			fn(t, setup(t, st))
		})
	}
}

func TestRESTPackageLifecycle(t *testing.T) {
	t.Parallel()
	forEachStorage(t, func(t *testing.T, e *env) {
		created := e.do("POST", "/api/v1/packages", fixture(t, "valid/echo.json")).expect(t, http.StatusCreated)
		var ack map[string]any
		created.json(t, &ack)
		if ack["id"] != "echo-pkg" || ack["status"] != "created" || ack["message"] == "" || len(ack) != 3 {
			t.Fatalf("create ack = %s", created.body)
		}
		etag := created.header.Get("ETag")
		if etag != `"1"` {
			t.Fatalf("ETag after create = %q, want \"1\"", etag)
		}

		got := e.do("GET", "/api/v1/packages/echo-pkg", nil).expect(t, http.StatusOK)
		if got.header.Get("ETag") != etag {
			t.Fatalf("GET ETag %q, want %q", got.header.Get("ETag"), etag)
		}
		var pkg map[string]any
		got.json(t, &pkg)
		fn := pkg["functions"].([]any)[0].(map[string]any)
		pc := fn["provision_config"].(map[string]any)
		if fn["function_type"] != "CUSTOM" || pc["container_image"] != "registry.local/oaas/echo-fn:1.4.2" || pc["min_scale"] != 1.0 {
			t.Fatalf("function not in REST form: %v", fn)
		}
		binding := pkg["classes"].([]any)[0].(map[string]any)["function_bindings"].([]any)[0].(map[string]any)
		if binding["access_modifier"] != "PUBLIC" || binding["stateless"] != true {
			t.Fatalf("binding not in REST form: %v", binding)
		}
		meta := pkg["metadata"].(map[string]any)
		if meta["created_at"] == nil || meta["updated_at"] == nil || meta["author"] != "platform-team" {
			t.Fatalf("metadata = %v", meta)
		}
		for _, camel := range []string{"functionType", "provisionConfig", "createdAt"} {
			if bytes.Contains(got.body, []byte(camel)) {
				t.Fatalf("REST JSON has camelCase %q: %s", camel, got.body)
			}
		}

		// Duplicate create: 409 and the stored package is untouched.
		dup := e.do("POST", "/api/v1/packages", fixture(t, "valid/echo.json")).expect(t, http.StatusConflict)
		if msg := dup.errorText(t); !strings.Contains(msg, "echo-pkg") {
			t.Fatalf("duplicate message %q does not name the package", msg)
		}

		// Update: stale If-Match is refused, the matching one wins.
		pkg["version"] = "0.2.0"
		delete(pkg, "metadata")
		e.do("POST", "/api/v1/packages/echo-pkg", pkg, "If-Match", `"7"`).expect(t, http.StatusConflict).errorText(t)
		upd := e.do("POST", "/api/v1/packages/echo-pkg", pkg, "If-Match", etag).expect(t, http.StatusOK)
		var updAck map[string]any
		upd.json(t, &updAck)
		if updAck["status"] != "updated" || updAck["id"] != "echo-pkg" || upd.header.Get("ETag") != `"2"` {
			t.Fatalf("update ack %s etag %q", upd.body, upd.header.Get("ETag"))
		}
		// Without If-Match, last write wins.
		e.do("POST", "/api/v1/packages/echo-pkg", pkg).expect(t, http.StatusOK)
		var after map[string]any
		e.do("GET", "/api/v1/packages/echo-pkg", nil).expect(t, http.StatusOK).json(t, &after)
		afterMeta := after["metadata"].(map[string]any)
		if after["version"] != "0.2.0" || afterMeta["created_at"] != meta["created_at"] {
			t.Fatalf("after update version=%v created_at=%v (was %v)", after["version"], afterMeta["created_at"], meta["created_at"])
		}

		// Path and body must agree.
		pkg["name"] = "other"
		e.do("POST", "/api/v1/packages/echo-pkg", pkg).expect(t, http.StatusBadRequest).errorText(t)

		e.do("DELETE", "/api/v1/packages/echo-pkg", nil).expect(t, http.StatusNoContent)
		e.do("GET", "/api/v1/packages/echo-pkg", nil).expect(t, http.StatusNotFound).errorText(t)
		e.do("DELETE", "/api/v1/packages/echo-pkg", nil).expect(t, http.StatusNotFound).errorText(t)
		e.do("POST", "/api/v1/packages/echo-pkg", fixture(t, "valid/echo.json")).expect(t, http.StatusNotFound)
	})
}

func TestRESTYAMLPackage(t *testing.T) {
	t.Parallel()
	for _, st := range storages {
		t.Run(st, func(t *testing.T) {
			t.Parallel()
			// The package embeds a deployment to east and west, which must
			// exist for the write to be valid.
			e := setup(t, st, withFleet(startFleet(t, "east", "west")))
			testRESTYAMLPackage(t, e)
		})
	}
}

func testRESTYAMLPackage(t *testing.T, e *env) {
	{
		e.send("POST", "/api/v1/packages", "application/yaml", fixture(t, "valid/counter-strong.yaml")).expect(t, http.StatusCreated)
		var pkg struct {
			Classes []struct {
				StateSpec struct {
					ConsistencyModel string `json:"consistency_model"`
					DefaultProvider  string `json:"default_provider"`
				} `json:"state_spec"`
			} `json:"classes"`
			Functions []struct {
				Config map[string]string `json:"config"`
			} `json:"functions"`
			Deployments []struct {
				Key        string   `json:"key"`
				TargetEnvs []string `json:"target_envs"`
			} `json:"deployments"`
		}
		e.do("GET", "/api/v1/packages/counter-pkg", nil).expect(t, http.StatusOK).json(t, &pkg)
		if pkg.Classes[0].StateSpec.ConsistencyModel != "STRONG" || pkg.Classes[0].StateSpec.DefaultProvider != "memory" {
			t.Fatalf("state spec = %+v", pkg.Classes[0].StateSpec)
		}
		if pkg.Functions[0].Config["HTTP_PORT"] != "80" {
			t.Fatalf("YAML scalar config not a string: %v", pkg.Functions[0].Config)
		}
		if len(pkg.Deployments) != 1 || strings.Join(pkg.Deployments[0].TargetEnvs, ",") != "east,west" {
			t.Fatalf("embedded deployments = %+v", pkg.Deployments)
		}
	}
}

func TestRESTInvalidFixtures(t *testing.T) {
	t.Parallel()
	cases := []struct {
		file string
		// mention is a fragment the error must contain: it names the problem.
		mention string
	}{
		{"invalid/bad-name.json", "name"},
		{"invalid/binding-to-missing-function.json", "A.run"},
		{"invalid/duplicate-class.json", `duplicate class key "A"`},
		{"invalid/not-json.txt", "JSON"},
	}
	forEachStorage(t, func(t *testing.T, e *env) {
		e.do("POST", "/api/v1/packages", fixture(t, "valid/echo.json")).expect(t, http.StatusCreated)
		before := e.do("GET", "/api/v1/packages", nil).expect(t, http.StatusOK).body
		for _, c := range cases {
			t.Run(filepath.Base(c.file), func(t *testing.T) {
				msg := e.do("POST", "/api/v1/packages", fixture(t, c.file)).expect(t, http.StatusBadRequest).errorText(t)
				if !strings.Contains(msg, c.mention) {
					t.Fatalf("error %q does not mention %q", msg, c.mention)
				}
			})
		}
		after := e.do("GET", "/api/v1/packages", nil).expect(t, http.StatusOK).body
		if !bytes.Equal(before, after) {
			t.Fatalf("invalid input changed the store:\nbefore %s\nafter  %s", before, after)
		}
	})
}

func TestRESTValidationReportsEveryProblem(t *testing.T) {
	t.Parallel()
	e := setup(t, "memory")
	body := `{"name": "multi", "classes": [{"key": "A", "function_bindings": [{"name": "x", "function_key": "nope"}]}, {"key": "A"}],
	  "functions": [{"key": "f", "provision_config": {"cpu_request": "lots", "port": 70000, "min_scale": 5, "max_scale": 1}}],
	  "dependencies": [""]}`
	msg := e.do("POST", "/api/v1/packages", body).expect(t, http.StatusBadRequest).errorText(t)
	for _, want := range []string{`"nope"`, `duplicate class key "A"`, "cpu_request", "port", "min_scale 5", "dependencies[0]"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
}

func TestRESTListFilters(t *testing.T) {
	t.Parallel()
	forEachStorage(t, func(t *testing.T, e *env) {
		for _, p := range []struct {
			name     string
			disabled bool
			tags     []string
		}{
			{"alpha-api", false, []string{"web", "demo"}},
			{"beta-worker", true, []string{"batch"}},
			{"gamma-api", false, []string{"web"}},
			{"delta", false, nil},
		} {
			body := map[string]any{"name": p.name, "disabled": p.disabled, "metadata": map[string]any{"tags": p.tags}}
			e.do("POST", "/api/v1/packages", body).expect(t, http.StatusCreated)
		}
		names := func(query string) string {
			var list []struct {
				Name string `json:"name"`
			}
			e.do("GET", "/api/v1/packages"+query, nil).expect(t, http.StatusOK).json(t, &list)
			out := make([]string, len(list))
			for i, p := range list {
				out[i] = p.Name
			}
			return strings.Join(out, ",")
		}
		cases := []struct{ query, want string }{
			{"", "alpha-api,beta-worker,delta,gamma-api"},
			{"?name_pattern=api", "alpha-api,gamma-api"},
			{"?name_pattern=a*api", "alpha-api,gamma-api"},
			{"?name_pattern=zzz", ""},
			{"?disabled=true", "beta-worker"},
			{"?disabled=false", "alpha-api,delta,gamma-api"},
			{"?tags=batch", "beta-worker"},
			{"?tags=batch,demo", "alpha-api,beta-worker"},
			{"?tags=batch&tags=web", "alpha-api,beta-worker,gamma-api"},
			{"?tags=web&disabled=false&name_pattern=gam", "gamma-api"},
			{"?limit=2", "alpha-api,beta-worker"},
			{"?limit=2&offset=2", "delta,gamma-api"},
			{"?offset=10", ""},
		}
		for _, c := range cases {
			t.Run(c.query, func(t *testing.T) {
				if got := names(c.query); got != c.want {
					t.Fatalf("GET /api/v1/packages%s = %q, want %q", c.query, got, c.want)
				}
			})
		}
		// A truncated page tells REST clients how to continue.
		page := e.do("GET", "/api/v1/packages?limit=3", nil).expect(t, http.StatusOK)
		next := page.header.Get("X-Next-Page-Token")
		if next == "" {
			t.Fatal("no X-Next-Page-Token on a truncated page")
		}
		if got := names("?limit=3&page_token=" + next); got != "gamma-api" {
			t.Fatalf("second page = %q", got)
		}
		e.do("GET", "/api/v1/packages?limit=-1", nil).expect(t, http.StatusBadRequest).errorText(t)
		e.do("GET", "/api/v1/packages?page_token=garbage!", nil).expect(t, http.StatusBadRequest).errorText(t)
		e.do("GET", "/api/v1/packages?disabled=maybe", nil).expect(t, http.StatusBadRequest).errorText(t)
	})
}

func TestRESTCatalog(t *testing.T) {
	t.Parallel()
	e := setup(t, "memory")
	e.do("POST", "/api/v1/packages", fixture(t, "valid/echo.json")).expect(t, http.StatusCreated)
	var classes []map[string]any
	e.do("GET", "/api/v1/classes", nil).expect(t, http.StatusOK).json(t, &classes)
	if len(classes) != 1 || classes[0]["key"] != "Echo" {
		t.Fatalf("classes = %v", classes)
	}
	var fns []map[string]any
	e.do("GET", "/api/v1/functions", nil).expect(t, http.StatusOK).json(t, &fns)
	if len(fns) != 1 || fns[0]["key"] != "Echo.echo" {
		t.Fatalf("functions = %v", fns)
	}
}

func TestRESTProtocolErrors(t *testing.T) {
	t.Parallel()
	e := setup(t, "memory", func(c *config.Config) { c.Server.MaxBodyBytes = 1024 })
	cases := []struct {
		name, method, path, contentType string
		body                            string
		status                          int
		mention                         string
	}{
		{"unknown route", "GET", "/api/v1/nope", "", "", http.StatusNotFound, ""},
		{"unknown top-level route", "GET", "/nope", "", "", http.StatusNotFound, "/nope"},
		{"wrong method", "PUT", "/api/v1/packages", "application/json", "{}", http.StatusMethodNotAllowed, ""},
		{"too large", "POST", "/api/v1/packages", "application/json", `{"name": "` + strings.Repeat("x", 2000) + `"}`, http.StatusRequestEntityTooLarge, "1024"},
		{"unsupported type", "POST", "/api/v1/packages", "text/csv", "a,b", http.StatusUnsupportedMediaType, "text/csv"},
		{"empty body", "POST", "/api/v1/packages", "application/json", "", http.StatusBadRequest, "empty"},
		{"array body", "POST", "/api/v1/packages", "application/yaml", "- a\n- b\n", http.StatusBadRequest, "object"},
		{"bad yaml", "POST", "/api/v1/packages", "application/yaml", "name: [unclosed", http.StatusBadRequest, "YAML"},
		{"unknown query parameter, strict", "GET", "/api/v1/packages?colour=red&field_validation=Strict", "", "", http.StatusBadRequest, "colour"},
		{"form body", "POST", "/api/v1/packages", "application/x-www-form-urlencoded", `{"name": "f"}`, http.StatusUnsupportedMediaType, "x-www-form-urlencoded"},
		{"no content type", "POST", "/api/v1/packages", "", `{"name": "f"}`, http.StatusUnsupportedMediaType, "Content-Type"},
		{"enum number out of range", "POST", "/api/v1/packages", "application/json",
			`{"name": "e", "functions": [{"key": "f", "function_type": 42}]}`, http.StatusBadRequest, "function_type"},
		{"bad enum string", "POST", "/api/v1/packages", "application/json",
			`{"name": "e", "functions": [{"key": "f", "function_type": "SHINY"}]}`, http.StatusBadRequest, "SHINY"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.send(c.method, c.path, c.contentType, []byte(c.body)).expect(t, c.status)
			if msg := r.errorText(t); !strings.Contains(msg, c.mention) {
				t.Fatalf("error %q does not mention %q", msg, c.mention)
			}
		})
	}
}
