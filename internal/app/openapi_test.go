package app_test

// The OpenAPI document cannot drift from what PM serves: every documented
// route answers, and live REST answers validate against the document.

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// openAPI loads the document PM serves and a router over it.
func openAPI(t *testing.T, e *env) (*openapi3.T, routers.Router) {
	t.Helper()
	raw := e.do("GET", "/api/v1/openapi.json", nil).expect(t, http.StatusOK).body
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(raw)
	if err != nil {
		t.Fatalf("loading the served document: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the served document is not valid OpenAPI: %v", err)
	}
	// The router matches on servers; describe the test server.
	doc.Servers = openapi3.Servers{{URL: e.base}}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	return doc, router
}

// checked sends a request and validates request and answer against the
// document.
func checked(t *testing.T, e *env, router routers.Router, method, path string, body []byte, headers ...string) response {
	t.Helper()
	var r response
	if body != nil {
		r = e.send(method, path, "application/json", body, headers...)
	} else {
		r = e.do(method, path, nil, headers...)
	}
	req, _ := http.NewRequest(method, e.base+path, bytes.NewReader(body))
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	route, params, err := router.FindRoute(req)
	if err != nil {
		t.Errorf("%s %s is not in the document: %v", method, path, err)
		return r
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
		t.Errorf("%s %s: request does not match the document: %v", method, path, err)
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: r.status, Header: r.header,
		Body:    io.NopCloser(bytes.NewReader(r.body)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		t.Errorf("%s %s → %d: answer does not match the document: %v\n%s", method, path, r.status, err, r.body)
	}
	return r
}

func TestOpenAPIDocumentMatchesTheServer(t *testing.T) {
	t.Parallel()
	e := setup(t, "memory", withDefaultCluster(t))
	doc, router := openAPI(t, e)

	echo := fixture(t, "valid/echo.json")
	checked(t, e, router, "POST", "/api/v1/packages", echo).expect(t, http.StatusCreated)
	checked(t, e, router, "POST", "/api/v1/deployments?dry_run=true", []byte(`{"key":"d","package_name":"echo-pkg","class_key":"Echo","target_envs":["default"]}`)).expect(t, http.StatusOK)
	checked(t, e, router, "POST", "/api/v1/deployments", []byte(`{"key":"d","package_name":"echo-pkg","class_key":"Echo","target_envs":["default"]}`)).expect(t, http.StatusCreated)
	var mappings struct {
		ClusterMappings map[string]string `json:"cluster_mappings"`
	}
	checked(t, e, router, "GET", "/api/v1/deployments/d/cluster-mappings", nil).expect(t, http.StatusOK).json(t, &mappings)
	unit := mappings.ClusterMappings["default"]

	// Every documented GET answers and validates, with path fields naming
	// objects that exist.
	values := map[string]string{"name": "echo-pkg", "key": "d", "id": unit}
	var paths []string
	for p := range doc.Paths.Map() {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		item := doc.Paths.Value(p)
		if item.Get == nil {
			continue
		}
		concrete := p
		for name, v := range values {
			concrete = strings.ReplaceAll(concrete, "{"+name+"}", url.PathEscape(v))
		}
		if strings.Contains(p, "/clusters/{name}") || strings.Contains(p, "/envs/{name}") {
			concrete = strings.ReplaceAll(p, "{name}", "default")
		}
		r := checked(t, e, router, "GET", concrete, nil)
		if r.status == http.StatusNotFound || r.status == http.StatusMethodNotAllowed {
			t.Errorf("documented GET %s answered %d: %s", concrete, r.status, r.body)
		}
	}
	// Errors have the documented shape too.
	checked(t, e, router, "GET", "/api/v1/packages/nope", nil).expect(t, http.StatusNotFound)
	checked(t, e, router, "POST", "/api/v1/packages", []byte(`{"name":"bad name!"}`)).expect(t, http.StatusBadRequest)
	checked(t, e, router, "POST", "/api/v1/packages/echo-pkg", echo, "If-Match", `"9"`).expect(t, http.StatusConflict)
	checked(t, e, router, "POST", "/api/v1/packages/echo-pkg", echo).expect(t, http.StatusOK)
	checked(t, e, router, "DELETE", "/api/v1/deployments/d", nil).expect(t, http.StatusOK)
	checked(t, e, router, "DELETE", "/api/v1/packages/echo-pkg", nil).expect(t, http.StatusNoContent)

	// The reference page is served from the binary.
	page := e.do("GET", "/docs/", nil).expect(t, http.StatusOK)
	if !bytes.Contains(page.body, []byte("swagger-ui-bundle.js")) || bytes.Contains(page.body, []byte("https://")) {
		t.Errorf("/docs/ page: %s", page.body)
	}
	e.do("GET", "/docs/swagger-ui-bundle.js", nil).expect(t, http.StatusOK)
}
