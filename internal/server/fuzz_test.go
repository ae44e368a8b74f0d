package server

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/fault"
	"github.com/oaas/pm/internal/fieldcheck"
	"github.com/oaas/pm/internal/restmodel"
)

var testAliases = fieldcheck.Aliases{"oaas.pm.v1.OClassDeployment": {"target_clusters": "target_envs"}}

// leaky are fragments no client message may carry.
var leaky = []string{"proto:", "unmarshal", "pmv1", "jsontext", "interface {}", "yaml:"}

func checkClean(t *testing.T, msg string) {
	t.Helper()
	for _, l := range leaky {
		if strings.Contains(msg, l) {
			t.Fatalf("message %q leaks %q", msg, l)
		}
	}
}

func seedFixtures(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "fixtures", "*", "*"))
	if len(files) == 0 {
		f.Fatal("no fixtures found")
	}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw, strings.HasSuffix(file, ".yaml"))
	}
}

// FuzzRESTBody drives a REST create body, JSON or YAML, through reading,
// YAML conversion and the field walk: no panic, and every refusal is a 4xx
// with a clean message.
func FuzzRESTBody(f *testing.F) {
	seedFixtures(f)
	f.Add([]byte("name: x\nfunctions:\n- key: f\n  config: {PORT: 80}\n"), true)
	rts := table(f, pmv1connect.PackageServiceName)
	rt, _ := rts.Match(http.MethodPost, "/api/v1/packages")
	if rt == nil {
		f.Fatal("no create route")
	}
	f.Fuzz(func(t *testing.T, data []byte, isYAML bool) {
		ct := "application/json"
		if isYAML {
			ct = "application/yaml"
		}
		r := httptest.NewRequest(http.MethodPost, "/api/v1/packages", bytes.NewReader(data))
		r.Header.Set("Content-Type", ct)
		body, yamlIn, status, err := readBody(httptest.NewRecorder(), r, 1<<20)
		if err != nil {
			if status < 400 || status > 499 {
				t.Fatalf("status %d for %v", status, err)
			}
			checkClean(t, err.Error())
			return
		}
		if _, err := fieldcheck.CheckJSON(rt.BodyDesc, body, fieldcheck.Options{Aliases: testAliases, StringifyMapScalars: yamlIn}); err != nil {
			checkClean(t, err.Error())
		}
	})
}

// FuzzQuery drives query strings through the REST query policy of a route
// with a path field (delete deployment) and of a list route.
func FuzzQuery(f *testing.F) {
	for _, s := range []string{"cluster=east", "key=other", "cluster=", "limit=5&offset=2", "tags=a&tags=b,c", "name_pattern=%2A&disabled=true", "x.y=1", "expected_revision=3&colour=red"} {
		f.Add(s)
	}
	rts := table(f, pmv1connect.DeploymentServiceName, pmv1connect.PackageServiceName)
	del, vars := rts.Match(http.MethodDelete, "/api/v1/deployments/d1")
	list, _ := rts.Match(http.MethodGet, "/api/v1/packages")
	if del == nil || list == nil {
		f.Fatal("routes missing")
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		for _, c := range []struct {
			rt   *restmodel.Route
			vars map[string]string
		}{{del, vars}, {list, nil}} {
			pass, unknown, problems := checkQuery(c.rt, q, c.vars)
			for _, p := range problems {
				checkClean(t, p)
			}
			for name, vals := range pass {
				fd, why := c.rt.QueryField(name)
				if why != "" {
					t.Fatalf("passed %q: %s", name, why)
				}
				for _, v := range vals {
					if msg := restmodel.CheckScalar(fd, v); msg != "" {
						t.Fatalf("passed %q=%q: %s", name, v, msg)
					}
				}
				if _, isPath := c.vars[name]; isPath {
					t.Fatalf("passed a path field %q", name)
				}
			}
			for _, u := range unknown {
				if _, ok := pass[u]; ok {
					t.Fatalf("%q both unknown and passed", u)
				}
			}
		}
	})
}

func table(f *testing.F, names ...string) restmodel.Table {
	descs, err := restmodel.Services(names)
	if err != nil {
		f.Fatal(err)
	}
	rts, err := restmodel.RoutesOf(descs)
	if err != nil {
		f.Fatal(err)
	}
	return rts
}

// FuzzConnectJSON drives Connect JSON request bodies through the codec and
// the policy check: no panic, and failures are fault.Invalid with clean text.
func FuzzConnectJSON(f *testing.F) {
	f.Add([]byte(`{"package":{"name":"p","clases":[]}}`))
	f.Add([]byte(`{"deployment":{"key":"d","targetClusters":["x"],"functions":[{"functionKey":"f"}]}}`))
	f.Add([]byte(`{"package":{"functions":[{"functionType":"NOPE"}]}}`))
	f.Add([]byte(``))
	fields := NewFields(testAliases)
	codec := &jsonCodec{f: fields, name: "json"}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, msg := range []any{&pmv1.CreatePackageRequest{}, &pmv1.CreateDeploymentRequest{}} {
			if err := codec.Unmarshal(data, msg); err != nil {
				t.Fatalf("codec failed itself: %v", err)
			}
			for _, mode := range []string{"", "Strict"} {
				_, err := fields.check(context.Background(), msg, func(string) string { return mode })
				if err == nil {
					continue
				}
				var fe *fault.Error
				if !errors.As(err, &fe) || fe.Kind != fault.Invalid {
					t.Fatalf("error %v is not fault.Invalid", err)
				}
				checkClean(t, err.Error())
				// The note is consumed: put it back for the second mode.
				_ = codec.Unmarshal(data, msg)
			}
		}
	})
}
