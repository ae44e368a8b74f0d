package cli_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oaas/pm/internal/logtest"

	"connectrpc.com/connect"
	"sigs.k8s.io/yaml"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/internal/cli"
)

// applyFixtures applies every valid fixture, as a newcomer would.
func applyFixtures(t *testing.T, e *env, extra ...string) result {
	t.Helper()
	yamls, _ := filepath.Glob(fixture("valid", "*.yaml"))
	jsons, _ := filepath.Glob(fixture("valid", "*.json"))
	if len(yamls) == 0 || len(jsons) == 0 {
		t.Fatalf("no fixtures found under %s", fixture("valid"))
	}
	// As a shell expands "pmctl apply -f valid/*.yaml -f valid/*.json".
	args := append([]string{"apply", "-f"}, yamls...)
	args = append(args, "-f")
	args = append(args, jsons...)
	return e.ok(append(args, extra...)...)
}

func TestApplyFixturesThenAgainUnchanged(t *testing.T) {
	t.Parallel()
	e := setup(t)
	r := applyFixtures(t, e, "--wait", "--interval", "100ms", "--timeout", "60s")
	r.expect(t, 0,
		"package/counter-pkg created",
		"package/echo-pkg created",
		"deployment/echo-everywhere created: 1 replica(s) on default",
		// The package's embedded deployment rolls out on east and west,
		// the standalone one on default; --wait follows all three.
		"deployment/counter-ha east: RUNNING",
		"deployment/counter-ha west: RUNNING",
		"deployment/counter-ha is RUNNING on 2 cluster(s)",
		"deployment/echo-everywhere is RUNNING on 1 cluster(s)",
	)
	// Packages are applied before deployments, whatever the file order.
	if strings.Index(r.stdout, "package/echo-pkg created") > strings.Index(r.stdout, "deployment/echo-everywhere created") {
		t.Errorf("deployment applied before its package:\n%s", r.stdout)
	}
	ctx := context.Background()
	pkg, err := e.packages.GetPackage(ctx, &pmv1.GetPackageRequest{Name: "counter-pkg"})
	if err != nil {
		t.Fatal(err)
	}
	// YAML's `HTTP_PORT: 80` reached PM as the string it means.
	if got := pkg.GetPackage().GetFunctions()[0].GetConfig()["HTTP_PORT"]; got != "80" {
		t.Errorf("HTTP_PORT = %q, want \"80\"", got)
	}
	rev := pkg.GetRevision()

	again := applyFixtures(t, e)
	again.expect(t, 0, "package/counter-pkg unchanged", "package/echo-pkg unchanged", "deployment/echo-everywhere unchanged")
	if strings.Contains(again.stdout, "created") || strings.Contains(again.stdout, "updated") {
		t.Errorf("second apply changed something:\n%s", again.stdout)
	}
	pkg, err = e.packages.GetPackage(ctx, &pmv1.GetPackageRequest{Name: "counter-pkg"})
	if err != nil {
		t.Fatal(err)
	}
	if pkg.GetRevision() != rev {
		t.Errorf("revision moved from %s to %s on an unchanged apply", rev, pkg.GetRevision())
	}
}

func TestApplyUpdatesAndDryRunDiffs(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.ok("apply", "-f", fixture("valid", "echo.json"))
	orig, err := os.ReadFile(fixture("valid", "echo.json"))
	if err != nil {
		t.Fatal(err)
	}
	changed := writeFile(t, "echo.json", strings.Replace(string(orig), `"0.1.0"`, `"0.2.0"`, 1))

	r := e.ok("apply", "-f", changed, "--dry-run")
	r.expect(t, 0, "package/echo-pkg would be updated (dry run)", "--- package/echo-pkg (stored, revision", "-version: 0.1.0", "+version: 0.2.0")
	if n := strings.Count(r.stdout, "\n-") + strings.Count(r.stdout, "\n+"); n != 4 { // ---, +++ and the two lines
		t.Errorf("diff has %d changed lines, want only the version:\n%s", n-2, r.stdout)
	}
	ctx := context.Background()
	got, err := e.packages.GetPackage(ctx, &pmv1.GetPackageRequest{Name: "echo-pkg"})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetPackage().GetVersion() != "0.1.0" {
		t.Fatalf("dry run changed the package: version %q", got.GetPackage().GetVersion())
	}

	// A dry run of things PM does not have: the package diff is all
	// additions, the deployment shows PM's plan; nothing is stored.
	dep := writeFile(t, "new.yaml", `kind: Package
name: new-pkg
version: "1"
functions: [{key: f, provision_config: {container_image: img}}]
classes: [{key: C, function_bindings: [{name: f, function_key: f}]}]
---
kind: Deployment
key: new-dep
package_name: echo-pkg
class_key: Echo
target_envs: [east, west]
`)
	r = e.ok("apply", "-f", dep, "--dry-run")
	r.expect(t, 0, "package/new-pkg would be created (dry run)", "+++ package/new-pkg", "+name: new-pkg",
		"deployment/new-dep would be created (dry run): ", "replica(s) on ", "+key: new-dep")
	if _, err := e.packages.GetPackage(ctx, &pmv1.GetPackageRequest{Name: "new-pkg"}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("dry run created the package (err %v)", err)
	}
	if _, err := e.deployments.GetDeployment(ctx, &pmv1.GetDeploymentRequest{Key: "new-dep"}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Errorf("dry run created the deployment (err %v)", err)
	}

	e.ok("apply", "-f", changed).expect(t, 0, "package/echo-pkg updated")
	got, err = e.packages.GetPackage(ctx, &pmv1.GetPackageRequest{Name: "echo-pkg"})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetPackage().GetVersion() != "0.2.0" {
		t.Errorf("version after apply = %q, want 0.2.0", got.GetPackage().GetVersion())
	}
	e.ok("apply", "-f", changed, "--dry-run").expect(t, 0, "package/echo-pkg unchanged (dry run)")
}

func TestApplyFromStdinStripsKindAndRoundTrips(t *testing.T) {
	t.Parallel()
	e := setup(t)
	// kind is pmctl's, not PM's: under strict validation PM would reject
	// it, so success shows it was not sent.
	stdin := `kind: Package
name: s-pkg
functions: [{key: f, provision_config: {container_image: img}}]
classes: [{key: C, function_bindings: [{name: f, function_key: f}]}]
---
# a comment-only document is skipped
---
kind: Deployment
key: s-dep
package_name: s-pkg
class_key: C
`
	r := e.runIn(context.Background(), stdin, "apply", "-f", "-")
	r.expect(t, 0, "package/s-pkg created", "deployment/s-dep created")

	// get -o json|yaml prints what apply accepts back, unchanged.
	for _, format := range []string{"json", "yaml"} {
		out := e.ok("get", "packages", "-o", format).stdout
		e.runIn(context.Background(), out, "apply", "-f", "-").expect(t, 0, "package/s-pkg unchanged")
	}
}

func TestStrictValidation(t *testing.T) {
	t.Parallel()
	e := setup(t)
	unknown := fixture("strict", "unknown-field.json")
	ctx := context.Background()

	r := e.run("apply", "-f", unknown)
	r.expect(t, cli.ExitError, "package/typo-pkg", `unknown field`, `clases`, "strict field validation")
	if _, err := e.packages.GetPackage(ctx, &pmv1.GetPackageRequest{Name: "typo-pkg"}); connect.CodeOf(err) != connect.CodeNotFound {
		t.Fatalf("a rejected package was stored (err %v)", err)
	}
	// A dry run applies the same policy, though PM does not see the package.
	e.run("apply", "-f", unknown, "--dry-run").expect(t, cli.ExitError, `unknown field "clases"`)

	r = e.run("apply", "-f", unknown, "--validate=warn")
	r.expect(t, 0, "package/typo-pkg created")
	if !regexp.MustCompile(`warning: unknown field ".*clases"`).MatchString(r.stderr) {
		t.Errorf("no warning for the unknown field on stderr:\n%s", r.stderr)
	}
	e.run("apply", "-f", unknown, "--validate=ignore").expect(t, 0, "package/typo-pkg unchanged")
	e.run("apply", "-f", unknown, "--validate=sometimes").expect(t, cli.ExitUsage, "--validate")
}

func TestApplyReportsEveryFailedDocument(t *testing.T) {
	t.Parallel()
	e := setup(t)
	bad := writeFile(t, "two.yaml", `name: ok-pkg
functions: [{key: f, provision_config: {container_image: img}}]
classes: [{key: C, function_bindings: [{name: f, function_key: f}]}]
---
name: Bad Name!
version: "1"
---
key: orphan-dep
package_name: no-such-pkg
class_key: C
`)
	r := e.run("apply", "-f", bad)
	r.expect(t, cli.ExitError, "2 of 3 document(s) failed", "package/Bad Name!", "deployment/orphan-dep", "no-such-pkg")
	if !strings.Contains(r.stdout, "package/ok-pkg created") {
		t.Errorf("the good document was not applied:\n%s", r.stdout)
	}
	for _, tc := range []struct{ name, content, want string }{
		{"neither.yaml", "foo: 1\n", "add kind: Package or kind: Deployment"},
		{"badkind.yaml", "kind: Pod\nname: x\n", "kind Pod is not Package or Deployment"},
		{"broken.json", `{"name": "x",`, "invalid JSON"},
		{"broken.yaml", "name: [x\n", "invalid YAML"},
		{"scalar.yaml", "just text\n", "must be an object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.run("apply", "-f", writeFile(t, tc.name, tc.content)).expect(t, cli.ExitError, tc.want)
		})
	}
	e.run("apply", "-f", filepath.Join(t.TempDir(), "missing.yaml")).expect(t, cli.ExitError, "missing.yaml", "no such file")
	e.run("apply").expect(t, cli.ExitUsage, "-f")
}

func TestGetAndDescribeInEveryFormat(t *testing.T) {
	t.Parallel()
	e := setup(t)
	applyFixtures(t, e, "--wait", "--interval", "100ms", "--timeout", "60s")

	tables := []struct {
		args  []string
		wants []string
	}{
		{[]string{"get", "packages"}, []string{"NAME", "VERSION", "counter-pkg", "2.0", "echo-pkg", "0.1.0"}},
		{[]string{"get", "package", "echo-pkg"}, []string{"echo-pkg", "0.1.0"}},
		{[]string{"get", "deployments"}, []string{"KEY", "CONDITION", "counter-ha", "echo-everywhere", "RUNNING", "2/2", "1/1"}},
		{[]string{"get", "deployments", "--cluster", "east"}, []string{"counter-ha"}},
		{[]string{"get", "clusters"}, []string{"default", "east", "west", "Healthy", "crmsim-0.1.0"}},
		{[]string{"get", "cluster", "east"}, []string{"east", "Healthy"}},
		{[]string{"get", "runtimes"}, []string{"counter-ha-east-", "counter-ha-west-", "echo-everywhere-default-", "COMPLETED"}},
		{[]string{"get", "runtimes", "--cluster", "west"}, []string{"counter-ha-west-"}},
		{[]string{"get", "operations"}, []string{"deploy", "counter-ha", "echo-everywhere", "succeeded"}},
		{[]string{"get", "ops", "echo-everywhere"}, []string{"echo-everywhere", "1/1"}},
		{[]string{"describe", "package", "counter-pkg"}, []string{"Name:", "counter-pkg", "Counter: A replicated counter", "STRONG consistency", "incr -> Counter.incr", "registry.local/oaas/counter-fn:2.0.0", "counter-ha: class Counter on east, west"}},
		{[]string{"describe", "deployment", "counter-ha"}, []string{"Condition:", "RUNNING", "Rollout:", "complete", "east", "west", "Operations:", "availability 0.999"}},
		{[]string{"describe", "cluster", "default"}, []string{"Status:", "Healthy", "Nodes (ready/total):", "3/3"}},
	}
	for _, tc := range tables {
		t.Run(strings.Join(tc.args, "_"), func(t *testing.T) {
			e.ok(tc.args...).expect(t, 0, tc.wants...)
		})
	}
	if e.ok("get", "runtimes", "--cluster", "west").stdout == e.ok("get", "runtimes").stdout {
		t.Error("--cluster did not narrow the runtimes")
	}

	// JSON and YAML carry PM's JSON model: an array for a list, an object
	// for one named object.
	for _, format := range []string{"json", "yaml"} {
		t.Run(format, func(t *testing.T) {
			decode := func(out string, v any) {
				t.Helper()
				data := []byte(out)
				if format == "yaml" {
					var err error
					if data, err = yaml.YAMLToJSON(data); err != nil {
						t.Fatalf("not YAML: %v\n%s", err, out)
					}
				}
				if err := json.Unmarshal(data, v); err != nil {
					t.Fatalf("not %s: %v\n%s", format, err, out)
				}
			}
			var pkgs []map[string]any
			decode(e.ok("get", "packages", "-o", format).stdout, &pkgs)
			if len(pkgs) != 2 || pkgs[0]["name"] != "counter-pkg" || pkgs[1]["name"] != "echo-pkg" {
				t.Errorf("packages = %v", pkgs)
			}
			var pkg map[string]any
			decode(e.ok("get", "package", "echo-pkg", "-o", format).stdout, &pkg)
			if pkg["name"] != "echo-pkg" || pkg["version"] != "0.1.0" {
				t.Errorf("package = %v", pkg)
			}
			var dep map[string]any
			decode(e.ok("describe", "deployment", "echo-everywhere", "-o", format).stdout, &dep)
			if dep["key"] != "echo-everywhere" || dep["condition"] != "RUNNING" {
				t.Errorf("deployment = %v", dep)
			}
			var clusters []map[string]any
			decode(e.ok("get", "clusters", "-o", format).stdout, &clusters)
			if len(clusters) != 3 {
				t.Errorf("clusters = %v", clusters)
			}
			var rts, ops []map[string]any
			decode(e.ok("get", "runtimes", "-o", format).stdout, &rts)
			decode(e.ok("get", "operations", "-o", format).stdout, &ops)
			if len(rts) != 3 || len(ops) != 2 {
				t.Errorf("%d runtimes, %d operations; want 3 and 2", len(rts), len(ops))
			}
			var orphans []any
			decode(e.ok("get", "orphans", "-o", format).stdout, &orphans)
			if len(orphans) != 0 {
				t.Errorf("orphans = %v", orphans)
			}
			var st map[string]any
			decode(e.ok("status", "counter-ha", "-o", format).stdout, &st)
			mappings, _ := st["cluster_mappings"].(map[string]any)
			if len(mappings) != 2 || st["deployment"].(map[string]any)["key"] != "counter-ha" {
				t.Errorf("status = %v", st)
			}
		})
	}

	// One runtime and one operation, by the ids the lists gave.
	var rts []map[string]any
	if err := json.Unmarshal([]byte(e.ok("get", "runtimes", "--cluster", "east", "-o", "json").stdout), &rts); err != nil || len(rts) != 1 {
		t.Fatalf("runtimes on east: %v %v", rts, err)
	}
	id, _ := rts[0]["id"].(string)
	e.ok("describe", "runtime", id).expect(t, 0, "ID:", id, "Class:", "counter-pkg/Counter", "RUNNING")
	var ops []map[string]any
	if err := json.Unmarshal([]byte(e.ok("get", "operations", "counter-ha", "-o", "json").stdout), &ops); err != nil || len(ops) != 1 {
		t.Fatalf("operations of counter-ha: %v %v", ops, err)
	}
	opID, _ := ops[0]["id"].(string)
	e.ok("describe", "operation", opID).expect(t, 0, "Kind:", "deploy", "succeeded", "east", "west")
	e.run("get", "orphans", "no-such-unit").expect(t, cli.ExitNotFound, "no-such-unit")
	e.run("get", "runtime", "no-such-unit").expect(t, cli.ExitNotFound)
}

func TestDeployWaitStatusAndDelete(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.ok("apply", "-f", fixture("valid", "echo.json"))

	r := e.ok("deploy", "echo-pkg", "Echo", "--key", "echo-ew", "--env", "east,west", "--availability", "0.99",
		"--wait", "--interval", "100ms", "--timeout", "60s")
	r.expect(t, 0, "deployment/echo-ew created:", "replica(s) on ", "CLUSTER", "CONDITION",
		"deployment/echo-ew east: DEPLOYING", "deployment/echo-ew east: RUNNING",
		"deployment/echo-ew west: DEPLOYING", "deployment/echo-ew west: RUNNING",
		"deployment/echo-ew is RUNNING on 2 cluster(s)")
	// Progress comes in order: a cluster is DEPLOYING before RUNNING.
	if strings.Index(r.stdout, "east: DEPLOYING") > strings.Index(r.stdout, "east: RUNNING") {
		t.Errorf("progress out of order:\n%s", r.stdout)
	}

	ctx := context.Background()
	m, err := e.deployments.GetClusterMappings(ctx, &pmv1.GetClusterMappingsRequest{Key: "echo-ew"})
	if err != nil {
		t.Fatal(err)
	}
	st := e.ok("status", "echo-ew")
	st.expect(t, 0, "Deployment:", "echo-ew", "Condition:", "RUNNING", "complete: RUNNING on 2 cluster(s)", "target 0.99")
	for cluster, unit := range m.GetClusterMappings() {
		if !regexp.MustCompile(cluster + `\s+RUNNING\s+deployed\s.*` + regexp.QuoteMeta(unit)).MatchString(st.stdout) {
			t.Errorf("status lacks %s's row with unit %s:\n%s", cluster, unit, st.stdout)
		}
	}

	// The same key again is a conflict; a package or class that does not
	// exist is not found / invalid.
	e.run("deploy", "echo-pkg", "Echo", "--key", "echo-ew").expect(t, cli.ExitConflict, `"echo-ew" already exists`)
	e.run("deploy", "nope-pkg", "Echo", "--key", "x").expect(t, cli.ExitNotFound, `"nope-pkg" not found`)
	e.run("deploy", "echo-pkg", "Echo", "--key", "x", "--env", "mars").expect(t, cli.ExitError, `unknown cluster "mars"`)
	e.run("deploy", "echo-pkg", "Echo").expect(t, cli.ExitUsage, "key")

	e.ok("delete", "deployment", "echo-ew", "--cluster", "west").expect(t, 0, "deployment/echo-ew deleted from cluster west")
	m, err = e.deployments.GetClusterMappings(ctx, &pmv1.GetClusterMappingsRequest{Key: "echo-ew"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.GetClusterMappings()["west"]; ok || len(m.GetClusterMappings()) != 1 {
		t.Errorf("mappings after deleting west: %v", m.GetClusterMappings())
	}
	e.ok("delete", "deployment", "echo-ew").expect(t, 0, "deployment/echo-ew deleted")
	e.run("status", "echo-ew").expect(t, cli.ExitNotFound, `deployment "echo-ew" not found`)
	e.ok("delete", "package", "echo-pkg").expect(t, 0, "package/echo-pkg deleted")
	e.run("get", "package", "echo-pkg").expect(t, cli.ExitNotFound, `"echo-pkg"`)
	e.run("delete", "package", "echo-pkg", "--cluster", "x").expect(t, cli.ExitUsage, "--cluster")
	e.run("delete", "cluster", "default").expect(t, cli.ExitUsage, "package or deployment")
}

func TestWaitReportsAFailedCluster(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.ok("apply", "-f", fixture("valid", "echo.json"))
	// east's unit stays DEPLOYING until the test makes it fail.
	if err := e.sims["east"].SetDelays(0, time.Hour); err != nil {
		t.Fatal(err)
	}
	var out, errb logtest.Buffer
	var r result
	var wg sync.WaitGroup
	wg.Go(func() {
		r = e.runTo(context.Background(), "", &out, &errb, "deploy", "echo-pkg", "Echo", "--key", "doomed",
			"--env", "east,west", "--wait", "--interval", "100ms", "--timeout", "60s")
	})
	waitFor(t, &out, "deployment/doomed east: DEPLOYING")
	m, err := e.deployments.GetClusterMappings(context.Background(), &pmv1.GetClusterMappingsRequest{Key: "doomed"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.sims["east"].SetDegraded(m.GetClusterMappings()["east"], "ImagePullBackOff", "image not found"); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	r.expect(t, cli.ExitError, `deployment "doomed" failed on cluster east`, "image not found")
	if !strings.Contains(r.stdout, "deployment/doomed east: DOWN") || !strings.Contains(r.stdout, "deployment/doomed failed: cluster east") {
		t.Errorf("no progress line for the failure:\n%s", r.stdout)
	}
	e.ok("status", "doomed").expect(t, 0, "Rollout:", "failed: cluster east", "ImagePullBackOff")
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	e := setup(t)
	down := closedURL(t)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown command", []string{"frobnicate"}, cli.ExitUsage, `unknown command "frobnicate"`},
		{"unknown flag", []string{"get", "packages", "--colour"}, cli.ExitUsage, "--colour"},
		{"missing argument", []string{"status"}, cli.ExitUsage, "accepts 1 arg"},
		{"bad output", []string{"get", "packages", "-o", "xml"}, cli.ExitUsage, `--output "xml"`},
		{"bad resource", []string{"get", "pods"}, cli.ExitUsage, `unknown resource type "pods"`},
		{"not found package", []string{"get", "package", "ghost"}, cli.ExitNotFound, `package "ghost"`},
		{"not found deployment", []string{"describe", "deployment", "ghost"}, cli.ExitNotFound, `deployment "ghost" not found`},
		{"not found cluster", []string{"get", "cluster", "mars"}, cli.ExitNotFound, "mars"},
		{"not found delete", []string{"delete", "deployment", "ghost"}, cli.ExitNotFound, "ghost"},
		{"not found watch", []string{"watch", "ghost", "--timeout", "5s"}, cli.ExitNotFound, `deployment "ghost" not found`},
		{"not found operations", []string{"get", "operations", "ghost"}, cli.ExitNotFound, "ghost"},
		{"invalid name", []string{"get", "package", "bad name!"}, cli.ExitError, "name"},
		{"unreachable", []string{"get", "packages", "--server", down}, cli.ExitUnavailable, "cannot reach PM at " + down + ": connection refused"},
		{"unreachable version", []string{"version", "--server", down}, cli.ExitUnavailable, "cannot reach PM"},
		{"not a URL", []string{"get", "packages", "--server", "localhost:8080"}, cli.ExitUsage, "not an http:// or https:// URL"},
		{"rollback unknown deployment", []string{"rollback", "anything", "--to", "3"}, cli.ExitNotFound, `deployment "anything" not found`},
		{"rollback bad revision", []string{"rollback", "anything", "--to", "three"}, cli.ExitUsage, `--to "three" is not a revision number`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.run(tc.args...)
			r.expect(t, tc.code, tc.want)
			if !strings.HasPrefix(r.stderr, "error: ") || strings.Contains(r.stderr, "*connect.") || strings.Contains(r.stderr, "proto:") {
				t.Errorf("stderr is not one clean error line: %q", r.stderr)
			}
		})
	}
}

func TestHelpListsExitCodes(t *testing.T) {
	t.Parallel()
	e := &env{t: t, vars: map[string]string{}, home: t.TempDir()}
	r := e.ok("--help")
	r.expect(t, 0, "Exit codes:", "0  success", "2  usage error", "3  not found", "4  conflict", "5  PM unavailable",
		"PM_SERVER", "PM_TOKEN", "PMCTL_CONFIG", "apply", "watch", "completion")
}

func TestCompletion(t *testing.T) {
	t.Parallel()
	e := &env{t: t, vars: map[string]string{}, home: t.TempDir()}
	for shell, want := range map[string]string{
		"bash": "__start_pmctl", "zsh": "#compdef pmctl", "fish": "complete -c pmctl", "powershell": "Register-ArgumentCompleter",
	} {
		t.Run(shell, func(t *testing.T) {
			e.ok("completion", shell).expect(t, 0, want)
		})
	}
	// Dynamic completion of resource types.
	e.ok("__complete", "get", "").expect(t, 0, "packages", "deployments", "orphans")
}

func TestVersion(t *testing.T) {
	t.Parallel()
	e := setup(t)
	res, err := http.Get(e.url + "/health")
	if err != nil {
		t.Fatal(err)
	}
	var health struct {
		Version string `json:"version"`
	}
	err = json.NewDecoder(res.Body).Decode(&health)
	_ = res.Body.Close()
	if err != nil || health.Version == "" {
		t.Fatalf("/health version: %q %v", health.Version, err)
	}
	e.ok("version").expect(t, 0, "Client: ", "Server: "+health.Version+" ("+e.url+")")
	var info struct {
		Client struct{ Version, Go string }
		Server struct{ Version, URL string }
	}
	if err := json.Unmarshal([]byte(e.ok("version", "-o", "json").stdout), &info); err != nil {
		t.Fatal(err)
	}
	if info.Client.Version == "" || !strings.HasPrefix(info.Client.Go, "go") || info.Server.Version != health.Version || info.Server.URL != e.url {
		t.Errorf("version -o json = %+v", info)
	}
	r := e.ok("version", "--client", "--server", closedURL(t))
	if strings.Contains(r.stdout, "Server:") {
		t.Errorf("--client contacted the server:\n%s", r.stdout)
	}
}

func TestWatch(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.ok("apply", "-f", fixture("valid", "echo.json"))
	e.ok("deploy", "echo-pkg", "Echo", "--key", "w1", "--env", "default")

	var out, errb logtest.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	var r result
	// An hour between polls: the changes below can only arrive in time
	// through PM's watch stream.
	wg.Go(func() { r = e.runTo(ctx, "", &out, &errb, "watch", "deployments", "--interval", "1h", "-o", "json") })
	waitFor(t, &out, `"type":"ADDED"`)
	e.ok("deploy", "echo-pkg", "Echo", "--key", "w2", "--env", "east")
	waitFor(t, &out, `"key":"w2"`)
	e.ok("delete", "deployment", "w1")
	waitFor(t, &out, `"type":"DELETED"`)
	cancel() // Ctrl-C ends a watch normally
	wg.Wait()
	if r.code != 0 {
		t.Fatalf("watch exited %d: %s", r.code, r.stderr)
	}
	types := map[string]int{}
	for line := range strings.Lines(out.String()) {
		var ev struct {
			Type       string
			Deployment struct{ Key string }
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("watch line is not JSON: %q", line)
		}
		types[ev.Type+" "+ev.Deployment.Key]++
	}
	if types["ADDED w1"] != 1 || types["ADDED w2"] != 1 || types["DELETED w1"] != 1 {
		t.Errorf("events: %v", types)
	}

	// One deployment, table output, ended by --timeout with exit code 0.
	r = e.run("watch", "w2", "--interval", "50ms", "--timeout", "500ms")
	r.expect(t, 0, "deployment/w2", "ready ")
}

// waitFor waits until out contains s.
func waitFor(t *testing.T, out *logtest.Buffer, s string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in output within 20s:\n%s", s, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConfigContexts(t *testing.T) {
	t.Parallel()
	e := setup(t)
	// A second "PM" that records the Authorization header it gets.
	var mu sync.Mutex
	var auth []string
	rec := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		auth = append(auth, r.Header.Get("Authorization"))
		mu.Unlock()
		http.NotFound(w, r)
	}))
	t.Cleanup(rec.Close)
	lastAuth := func() string {
		mu.Lock()
		defer mu.Unlock()
		if len(auth) == 0 {
			return ""
		}
		return auth[len(auth)-1]
	}
	delete(e.vars, "PM_SERVER")
	cfgPath := e.vars["PMCTL_CONFIG"]

	e.ok("config", "set-context", "live", "--server", e.url).expect(t, 0, `context "live" created`)
	e.ok("config", "set-context", "rec", "--server", rec.URL, "--token", "s3cret-token").expect(t, 0, `context "rec" created`)
	r := e.ok("config", "get-contexts")
	r.expect(t, 0, "CURRENT", "live", "rec", rec.URL, "bearer token")
	if strings.Contains(r.stdout, "s3cret") {
		t.Fatalf("get-contexts printed the token:\n%s", r.stdout)
	}
	if st, err := os.Stat(cfgPath); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("config file mode: %v %v", st, err)
	}
	// The first context made is the current one.
	e.ok("config", "current-context").expect(t, 0, "live")
	e.ok("get", "clusters").expect(t, 0, "default", "east")

	e.ok("config", "use-context", "rec").expect(t, 0, `switched to context "rec"`)
	e.run("get", "packages").expect(t, cli.ExitError)
	if got := lastAuth(); got != "Bearer s3cret-token" {
		t.Errorf("Authorization = %q, want the context's token", got)
	}
	// Environment beats the context; flags beat the environment.
	e.vars["PM_TOKEN"] = "env-token"
	e.run("get", "packages")
	if got := lastAuth(); got != "Bearer env-token" {
		t.Errorf("Authorization = %q, want PM_TOKEN's", got)
	}
	e.run("get", "packages", "--token", "flag-token")
	if got := lastAuth(); got != "Bearer flag-token" {
		t.Errorf("Authorization = %q, want --token's", got)
	}
	e.ok("--context", "live", "get", "clusters").expect(t, 0, "west")
	e.vars["PM_SERVER"] = e.url
	e.ok("get", "clusters").expect(t, 0, "west")
	delete(e.vars, "PM_SERVER")

	e.run("config", "use-context", "nope").expect(t, cli.ExitNotFound, `context "nope"`)
	e.run("--context", "nope", "get", "clusters").expect(t, cli.ExitNotFound, `context "nope"`)
	var ctxs []map[string]any
	if err := json.Unmarshal([]byte(e.ok("config", "get-contexts", "-o", "json").stdout), &ctxs); err != nil || len(ctxs) != 2 {
		t.Fatalf("get-contexts -o json: %v %v", ctxs, err)
	}
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), "current-context: rec") {
		t.Errorf("config file:\n%s", data)
	}
	if err := os.WriteFile(cfgPath, []byte("contexts: [{name: a}, {name: a}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.run("get", "clusters").expect(t, cli.ExitError, `context "a" is defined twice`)
	if err := os.WriteFile(cfgPath, []byte("contxts: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.run("get", "clusters").expect(t, cli.ExitError, "is not valid", "contxts")
}

// proxy puts a TLS (HTTP/2) front on PM; before forwarding a request whose
// path ends with hookPath it runs hook.
func proxy(t *testing.T, e *env, hookPath string, hook func()) *httptest.Server {
	t.Helper()
	target, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hookPath != "" && strings.HasSuffix(r.URL.Path, hookPath) {
			hook()
		}
		rp.ServeHTTP(w, r)
	}))
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted-CA case makes handshakes fail
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestTLS(t *testing.T) {
	t.Parallel()
	e := setup(t)
	srv := proxy(t, e, "", nil)
	ca := writeFile(t, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})))
	e.vars["PM_SERVER"] = srv.URL

	e.run("get", "clusters").expect(t, cli.ExitUnavailable, "cannot reach PM at "+srv.URL, "TLS certificate is not trusted", "--ca-file")
	e.ok("get", "clusters", "--ca-file", ca).expect(t, 0, "default", "east", "west")
	e.ok("get", "clusters", "--insecure-skip-verify").expect(t, 0, "default")
	e.ok("version", "--ca-file", ca).expect(t, 0, "Server: ")
	e.run("get", "clusters", "--ca-file", filepath.Join(t.TempDir(), "none.pem")).expect(t, cli.ExitError, "--ca-file", "no such file")
	e.run("get", "clusters", "--ca-file", writeFile(t, "junk.pem", "junk")).expect(t, cli.ExitError, "holds no PEM certificate")

	// A context carries the CA too.
	delete(e.vars, "PM_SERVER")
	e.ok("config", "set-context", "tls", "--server", srv.URL, "--ca-file", ca)
	e.ok("get", "clusters").expect(t, 0, "west")
}

func TestApplyDoesNotOverwriteAConcurrentChange(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.ok("apply", "-f", fixture("valid", "echo.json"))
	orig, err := os.ReadFile(fixture("valid", "echo.json"))
	if err != nil {
		t.Fatal(err)
	}
	changed := writeFile(t, "echo.json", strings.Replace(string(orig), `"0.1.0"`, `"0.3.0"`, 1))
	// Someone else updates the package after pmctl read it and before it
	// writes: pmctl's update carries the revision it read, so PM refuses it.
	srv := proxy(t, e, "/UpdatePackage", func() {
		got, err := e.packages.GetPackage(context.Background(), &pmv1.GetPackageRequest{Name: "echo-pkg"})
		if err != nil {
			t.Error(err)
			return
		}
		p := got.GetPackage()
		p.Version = new("0.2.0-someone-else")
		if _, err := e.packages.UpdatePackage(context.Background(), &pmv1.UpdatePackageRequest{Name: "echo-pkg", Package: p}); err != nil {
			t.Error(err)
		}
	})
	e.vars["PM_SERVER"] = srv.URL
	r := e.run("apply", "-f", changed, "--insecure-skip-verify")
	r.expect(t, cli.ExitConflict, "package/echo-pkg")
	got, err := e.packages.GetPackage(context.Background(), &pmv1.GetPackageRequest{Name: "echo-pkg"})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetPackage().GetVersion() != "0.2.0-someone-else" {
		t.Errorf("the concurrent change was overwritten: version %q", got.GetPackage().GetVersion())
	}
}

func TestWaitTimesOut(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.ok("apply", "-f", fixture("valid", "echo.json"))
	if err := e.sims["west"].SetDelays(0, time.Hour); err != nil {
		t.Fatal(err)
	}
	r := e.run("deploy", "echo-pkg", "Echo", "--key", "slow", "--env", "west", "--wait", "--interval", "50ms", "--timeout", "700ms")
	r.expect(t, cli.ExitError, `timed out after 700ms waiting for deployment "slow" to roll out`)
	if !strings.Contains(r.stdout, "deployment/slow west: DEPLOYING") {
		t.Errorf("no progress before the timeout:\n%s", r.stdout)
	}
	// Ctrl-C (which cancels the context) while waiting stops at once.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(300*time.Millisecond, cancel)
	start := time.Now()
	r = e.runIn(ctx, "", "deploy", "echo-pkg", "Echo", "--key", "slow2", "--env", "west", "--wait", "--interval", "50ms")
	r.expect(t, cli.ExitError, "interrupted")
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("interrupt took %s", d)
	}
}

// TestApplyUpdatesDeploymentsAndRollback: apply updates an existing
// deployment through UpdateDeployment (a dry run shows only what the
// document changes), rollback goes back to a kept revision, and get
// revisions lists them.
func TestApplyUpdatesDeploymentsAndRollback(t *testing.T) {
	t.Parallel()
	e := setup(t)
	e.ok("apply", "-f", fixture("valid", "echo.json"))
	doc := func(mode string) string {
		return writeFile(t, "dep-"+mode+".yaml", `kind: Deployment
key: upd
package_name: echo-pkg
class_key: Echo
target_envs: [east]
functions:
- function_key: Echo.echo
  config: {MODE: `+mode+`}
`)
	}
	e.ok("apply", "-f", doc("v1")).expect(t, 0, "deployment/upd created")
	e.ok("apply", "-f", doc("v2")).expect(t, 0, "deployment/upd updated: 1 replica(s) on east")
	e.ok("apply", "-f", doc("v2")).expect(t, 0, "deployment/upd unchanged")
	r := e.ok("apply", "-f", doc("v3"), "--dry-run")
	r.expect(t, 0, "deployment/upd would be updated (dry run)", "-    MODE: v2", "+    MODE: v3")
	// Only the document's change shows, not what PM fills in.
	if n := strings.Count(r.stdout, "\n-") + strings.Count(r.stdout, "\n+"); n != 4 {
		t.Errorf("dry-run diff has %d changed lines, want only MODE:\n%s", n-2, r.stdout)
	}
	e.ok("apply", "-f", doc("v2"), "--dry-run").expect(t, 0, "deployment/upd unchanged (dry run)")

	e.ok("get", "revisions", "upd").expect(t, 0, "REVISION", "2         *", "created")
	e.ok("rollback", "upd").expect(t, 0, `deployment "upd" rolled back to revision 1 (now revision 3)`)
	got, err := e.deployments.GetDeployment(context.Background(), &pmv1.GetDeploymentRequest{Key: "upd"})
	if err != nil {
		t.Fatal(err)
	}
	if m := got.GetDeployment().GetFunctions()[0].GetConfig()["MODE"]; m != "v1" || got.GetDeployment().GetStatus().GetSpecRevision() != 3 {
		t.Errorf("after rollback: MODE %q, spec revision %d", m, got.GetDeployment().GetStatus().GetSpecRevision())
	}
	e.ok("rollback", "upd", "--to", "2").expect(t, 0, "rolled back to revision 2 (now revision 4)")
	e.run("rollback", "upd", "--to", "9").expect(t, cli.ExitNotFound, "has no revision 9")
	// The same key through deploy (create only) is still a conflict.
	e.run("deploy", "echo-pkg", "Echo", "--key", "upd", "--env", "east").expect(t, cli.ExitConflict, `"upd" already exists`)
}
