package ui_test

// The console in a real browser: Debian's Chromium, headless, driven over
// the DevTools protocol (chromedp) against a real PM. Each test starts PM
// (memory store) and a front server that serves the console under /ui/ and
// passes every other path to PM, so the page and the API share one origin
// as they do when PM mounts the console itself.
//
// Chromium must be installed (.ci/run installs Debian's package as root).
// Without it the tests fail; PM_UI_TESTS=skip skips them on a machine that
// cannot have a browser. PM_UI_SCREENSHOTS=DIR also writes the screenshots
// to DIR as console-NAME.png (`task ui:screenshots` refreshes docs/).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"google.golang.org/protobuf/types/known/timestamppb"

	pmv1 "github.com/oaas/pm/gen/go/oaas/pm/v1"
	"github.com/oaas/pm/gen/go/oaas/pm/v1/pmv1connect"
	"github.com/oaas/pm/internal/app"
	"github.com/oaas/pm/internal/auth"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/crmsim"
	"github.com/oaas/pm/internal/crmsim/crmsimtest"
	"github.com/oaas/pm/internal/ui"
)

// browser is one Chromium for the whole package; each test gets a tab.
var browser struct {
	once   sync.Once
	ctx    context.Context
	cancel context.CancelFunc
	dir    string
	err    error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if browser.cancel != nil {
		browser.cancel()
		_ = os.RemoveAll(browser.dir)
	}
	os.Exit(code)
}

// chromium finds the browser: PM_CHROMIUM, else Debian's chromium on PATH.
func chromium() (string, error) {
	if p := os.Getenv("PM_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("chromium is not installed: apt-get install -y --no-install-recommends chromium (or set PM_CHROMIUM; PM_UI_TESTS=skip skips these tests)")
}

func startBrowser() {
	path, err := chromium()
	if err != nil {
		browser.err = err
		return
	}
	browser.dir, err = os.MkdirTemp("", "pm-ui-chromium-")
	if err != nil {
		browser.err = err
		return
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox cannot start
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(browser.dir),
		chromedp.WindowSize(1280, 900),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	browser.ctx, browser.cancel = ctx, func() { cancel(); cancelAlloc() }
	// The first Run starts the browser; it must not carry a timeout.
	browser.err = chromedp.Do(ctx)
}

// page is one browser tab on one console.
type page struct {
	t    *testing.T
	ctx  context.Context
	base string
	mu   sync.Mutex
	errs []string // uncaught exceptions and policy violations
}

// openTab opens a tab; the test fails on any uncaught script error or
// Content-Security-Policy violation in it.
func openTab(t *testing.T, base string) *page {
	t.Helper()
	if os.Getenv("PM_UI_TESTS") == "skip" {
		t.Skip("PM_UI_TESTS=skip")
	}
	browser.once.Do(startBrowser)
	if browser.err != nil {
		t.Fatalf("browser: %v", browser.err)
	}
	ctx, cancel := chromedp.NewContext(browser.ctx)
	t.Cleanup(cancel)
	p := &page{t: t, ctx: ctx, base: base}
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("opening a tab: %v", err)
	}
	if err := chromedp.Listen(ctx, func(ev any) {
		var msg string
		switch e := ev.(type) {
		case *runtime.EventExceptionThrown:
			msg = "uncaught: " + e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil {
				msg += " " + e.ExceptionDetails.Exception.Description
			}
		case *runtime.EventConsoleAPICalled:
			for _, a := range e.Args {
				if strings.Contains(string(a.Value), "Content Security Policy") {
					msg = "CSP: " + string(a.Value)
				}
			}
		}
		if msg != "" {
			p.mu.Lock()
			p.errs = append(p.errs, msg)
			p.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, e := range p.errs {
			t.Errorf("browser: %s", e)
		}
	})
	return p
}

func (p *page) do(steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.t.Fatalf("browser: %v\npage: %s", err, p.text())
	}
}

func (p *page) open(path string) {
	p.t.Helper()
	p.do(chromedp.Navigate(p.base + path))
}

// eval runs a script and decodes its value into T.
func eval[T any](p *page, script string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, waitLimit)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](script))
	if err != nil {
		p.t.Fatalf("evaluating %s: %v", script, err)
	}
	return v
}

// text is the page's visible text, for failure messages.
func (p *page) text() string {
	ctx, cancel := context.WithTimeout(p.ctx, 3*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
	if err != nil {
		return "(unreadable: " + err.Error() + ")"
	}
	return s
}

// waitLimit bounds each wait; generous because CI shares two cores with
// other test packages, and a wait ends as soon as its condition holds.
const waitLimit = 20 * time.Second

// waitFor polls a boolean script until it holds.
func (p *page) waitFor(what, script string, within time.Duration) {
	p.t.Helper()
	deadline := time.Now().Add(within)
	for {
		if eval[bool](p, "!!("+script+")") {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("waited %s for %s; page:\n%s", within, what, p.text())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// setValue types a whole value into a field at once and fires input, as
// a paste does (SendKeys would type a long YAML key by key).
func (p *page) setValue(selector, value string) {
	p.t.Helper()
	sel, _ := json.Marshal(selector)
	val, _ := json.Marshal(value)
	if !eval[bool](p, fmt.Sprintf(`(() => { const el = document.querySelector(%s); if (!el) return false;
		el.value = %s; el.dispatchEvent(new Event("input", {bubbles: true})); el.dispatchEvent(new Event("change", {bubbles: true})); return true })()`, sel, val)) {
		p.t.Fatalf("no element %s; page:\n%s", selector, p.text())
	}
}

// shot saves a screenshot of the whole page as NAME.png in the test's
// artifact directory (and in PM_UI_SCREENSHOTS as console-NAME.png). Every
// page shot is also checked for controls without an accessible name.
func (p *page) shot(name string) {
	p.t.Helper()
	p.checkLabels(name)
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatalf("screenshot %s: %v", name, err)
	}
	if err := os.WriteFile(filepath.Join(p.t.ArtifactDir(), name+".png"), png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	if dir := os.Getenv("PM_UI_SCREENSHOTS"); dir != "" {
		if err := os.WriteFile(filepath.Join(dir, "console-"+name+".png"), png, 0o644); err != nil {
			p.t.Fatal(err)
		}
	}
}

// checkLabels fails the test for a form control or button that a screen
// reader could not name (no label, no aria-label, no text).
func (p *page) checkLabels(name string) {
	p.t.Helper()
	unnamed := eval[[]string](p, `[...document.querySelectorAll("input, select, textarea, button")]
		.filter(el => el.type !== "hidden" && !(el.labels && el.labels.length) && !el.getAttribute("aria-label")
			&& !el.getAttribute("aria-labelledby") && !(el.tagName === "BUTTON" && el.innerText.trim()))
		.map(el => el.outerHTML.slice(0, 120))`)
	for _, el := range unnamed {
		p.t.Errorf("%s: control without an accessible name: %s", name, el)
	}
}

// startPM runs a PM on loopback (memory store) until the test ends.
func startPM(t *testing.T, tweak ...func(*config.Config)) string {
	t.Helper()
	cfg := config.Default()
	cfg.Server.Host, cfg.Server.Port = "127.0.0.1", 0
	cfg.Server.ShutdownTimeout = 5 * time.Second
	cfg.Storage.Type = "memory"
	cfg.Metrics.Port = 0
	for _, f := range tweak {
		f(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	a, err := app.New(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		cancel()
		t.Fatalf("starting pm: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("pm stopped with error: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("pm did not stop within 10s")
		}
	})
	return "http://" + a.Addr()
}

// withClusters points PM at simulated clusters with test-sized timings:
// conditions polled every 200 ms, health never cached.
func withClusters(sims ...*crmsim.Sim) func(*config.Config) {
	return func(c *config.Config) {
		c.CRM.Clusters = nil
		for _, s := range sims {
			c.CRM.Clusters = append(c.CRM.Clusters, config.Cluster{Name: s.EnvName(), URL: s.URL()})
		}
		c.CRM.EmbeddedSimulator = false
		c.CRM.Timeout = 2 * time.Second
		c.CRM.HealthCacheTTL = 0
		c.Deploy.StatusPollInterval = 200 * time.Millisecond
	}
}

// front serves the console at /ui/ and everything else from PM, on one
// origin; extra mounts test doubles before the fallthrough to PM.
func front(t *testing.T, pm string, extra func(*http.ServeMux)) string {
	t.Helper()
	target, err := url.Parse(pm)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.FlushInterval = -1 // streams pass event by event
	mux := http.NewServeMux()
	mux.Handle(ui.Prefix, ui.Handler())
	if extra != nil {
		extra(mux)
	}
	mux.Handle("/", proxy)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// api sends a JSON REST request straight to PM.
func api(t *testing.T, method, url, token string, body any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = strings.NewReader(string(raw))
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	_, _ = io.Copy(io.Discard, res.Body)
	return res.StatusCode
}

func echoPackage(name string, tags ...string) map[string]any {
	return map[string]any{
		"name": name, "version": "1.0.0",
		"metadata": map[string]any{"author": "platform-team", "tags": tags, "description": "Echoes its input"},
		"functions": []any{
			map[string]any{"key": "echo", "provision_config": map[string]any{"container_image": "ghcr.io/oaas/echo-fn:1.4.2", "port": 8080}},
			map[string]any{"key": "reverse", "function_type": "CUSTOM", "provision_config": map[string]any{"container_image": "ghcr.io/oaas/echo-fn:1.4.2"}},
		},
		"classes": []any{map[string]any{
			"key": "Echo", "description": "Echoes its input",
			"function_bindings": []any{
				map[string]any{"name": "echo", "function_key": "echo", "stateless": true},
				map[string]any{"name": "reverse", "function_key": "reverse"},
			},
		}},
	}
}

// TestBrowserPackages: a package created through the API is listed, the
// filters narrow the list, and its page shows classes, functions and YAML.
func TestBrowserPackages(t *testing.T) {
	t.Parallel()
	pm := startPM(t)
	for _, p := range []map[string]any{echoPackage("echo-pkg", "demo", "stateless"), echoPackage("billing", "finance")} {
		if st := api(t, "POST", pm+"/api/v1/packages", "", p); st != http.StatusCreated {
			t.Fatalf("create package: %d", st)
		}
	}
	p := openTab(t, front(t, pm, nil))
	p.open("/ui/packages")
	p.waitFor("both packages listed", `document.querySelectorAll("#packages-table tbody tr").length === 2 && document.querySelector("#packages-table").innerText.includes("echo-pkg")`, waitLimit)
	p.shot("packages")

	// Filters: a name pattern, then a tag, each narrowing the list.
	p.do(chromedp.SendKeys(chromedp.CSS(`input[name="name_pattern"]`), "ech*pkg"))
	p.waitFor("the pattern to leave echo-pkg alone", `(() => { const t = document.querySelector("#packages-table").innerText; return t.includes("echo-pkg") && !t.includes("billing") })()`, waitLimit)
	p.setValue(`input[name="name_pattern"]`, "")
	p.do(chromedp.SendKeys(chromedp.CSS(`input[name="tag"]`), "finance"))
	p.waitFor("the tag filter to leave billing alone", `(() => { const t = document.querySelector("#packages-table").innerText; return t.includes("billing") && !t.includes("echo-pkg") })()`, waitLimit)
	if !strings.Contains(eval[string](p, "location.search"), "tag=finance") {
		t.Error("the filter is not in the URL (a reload or a shared link would lose it)")
	}

	// The package's page: classes, functions and the YAML view.
	p.open("/ui/packages/echo-pkg")
	p.waitFor("the package page", `document.querySelector("#package-yaml")`, waitLimit)
	if rows := eval[int](p, `document.querySelectorAll("#functions-table tbody tr").length`); rows != 2 {
		t.Errorf("functions table has %d rows, want 2", rows)
	}
	classes := eval[string](p, `document.querySelector("#classes-table").innerText`)
	if !strings.Contains(classes, "Echo") || !strings.Contains(classes, "reverse") {
		t.Errorf("classes table %q lacks the class or its bindings", classes)
	}
	yamlText := eval[string](p, `document.querySelector("#package-yaml").textContent`)
	for _, want := range []string{"name: echo-pkg", "container_image: ghcr.io/oaas/echo-fn:1.4.2", "function_key: reverse"} {
		if !strings.Contains(yamlText, want) {
			t.Errorf("YAML view lacks %q:\n%s", want, yamlText)
		}
	}
	p.shot("package")
}

// TestBrowserRejectedYAML: PM's field errors appear next to the editor,
// naming the field and its line; a corrected package is created.
func TestBrowserRejectedYAML(t *testing.T) {
	t.Parallel()
	pm := startPM(t)
	p := openTab(t, front(t, pm, nil))
	p.open("/ui/packages/new")
	p.waitFor("the editor", `document.querySelector("#package-form textarea")`, waitLimit)
	bad := strings.Join([]string{
		"name: hello-pkg",
		"classes:",
		"  - key: Hello",
		"    function_bindings:",
		"      - { name: greet, function_key: greet }",
		"functions:",
		"  - key: greet",
		"    function_type: NOPE",
		"    provision_config:",
		"      container_image: ghcr.io/oaas/hello-fn:1",
		"",
	}, "\n")
	p.setValue("#package-form textarea", bad)
	p.do(chromedp.Click(chromedp.CSS(`#package-form button[type="submit"]`)))
	p.waitFor("the field error", `document.querySelector(".field-error")`, waitLimit)
	got := eval[map[string]string](p, `(() => { const e = document.querySelector(".field-error"); return {path: e.dataset.path, line: e.dataset.line || "", text: e.innerText} })()`)
	if got["path"] != "functions[0].function_type" || got["line"] != "8" || !strings.Contains(got["text"], `NOPE`) {
		t.Errorf("field error %v, want functions[0].function_type at line 8 naming NOPE", got)
	}
	// The error sits next to the editor and is tied to it for screen readers.
	if !eval[bool](p, `(() => { const ta = document.querySelector("#package-form textarea"); return ta.getAttribute("aria-invalid") === "true" && document.getElementById(ta.getAttribute("aria-describedby")).contains(document.querySelector(".field-error")) })()`) {
		t.Error("the error list is not the editor's aria-describedby, or the editor is not marked invalid")
	}
	p.shot("package-editor-error")
	// Choosing the error selects its line in the editor.
	p.do(chromedp.Click(chromedp.CSS(".field-error button")))
	if sel := eval[string](p, `(() => { const ta = document.activeElement; return ta.value.slice(ta.selectionStart, ta.selectionEnd) })()`); !strings.Contains(sel, "function_type: NOPE") {
		t.Errorf("selected %q, want the line of the field", sel)
	}

	// A misspelt key under strict validation names the field too.
	p.setValue("#package-form textarea", strings.Replace(strings.Replace(bad, "NOPE", "CUSTOM", 1), "classes:", "clases:", 1))
	p.do(chromedp.Click(chromedp.CSS(`#package-form button[type="submit"]`)))
	p.waitFor("the unknown-field error", `document.querySelector('.field-error[data-path="clases"]')`, waitLimit)
	if line := eval[string](p, `document.querySelector('.field-error[data-path="clases"]').dataset.line`); line != "2" {
		t.Errorf("unknown field on line %q, want 2", line)
	}

	// Fixed: created, and the console shows the new package.
	p.setValue("#package-form textarea", strings.Replace(bad, "NOPE", "CUSTOM", 1))
	p.do(chromedp.Click(chromedp.CSS(`#package-form button[type="submit"]`)))
	p.waitFor("the created package's page", `location.pathname === "/ui/packages/hello-pkg" && document.querySelector("#package-yaml")`, waitLimit)
	if st := api(t, "GET", pm+"/api/v1/packages/hello-pkg", "", nil); st != http.StatusOK {
		t.Errorf("the package the console created: GET %d", st)
	}
}

// TestBrowserDeployLive: a deployment made in the console turns RUNNING on
// its page without a reload (today by polling; by the watch stream once PM
// serves it). Then the other pages, with screenshots.
func TestBrowserDeployLive(t *testing.T) {
	t.Parallel()
	high, low := 0.999, 0.995
	east := crmsimtest.Start(t, crmsim.Config{EnvName: "east", Availability: &high, ProgressDelay: 1500 * time.Millisecond, ReadyDelay: 2500 * time.Millisecond})
	west := crmsimtest.Start(t, crmsim.Config{EnvName: "west", Availability: &low, ProgressDelay: 500 * time.Millisecond})
	pm := startPM(t, withClusters(east, west))
	if st := api(t, "POST", pm+"/api/v1/packages", "", echoPackage("echo-pkg", "demo")); st != http.StatusCreated {
		t.Fatalf("create package: %d", st)
	}
	p := openTab(t, front(t, pm, nil))
	p.open("/ui/deployments/new")
	p.waitFor("the form with clusters", `document.querySelectorAll('#deployment-form input[name="target"]').length === 2 && document.querySelector('select[name="class"]').value === "Echo"`, waitLimit)
	p.do(chromedp.SendKeys(chromedp.CSS(`input[name="key"]`), "echo-live"))
	p.setValue(`input[name="availability"]`, "0.99")
	p.do(chromedp.Click(chromedp.CSS(`input[name="target"][value="west"]`)))
	p.do(chromedp.Click(chromedp.ID("dry-run")))
	p.waitFor("the plan preview", `document.querySelector("#plan-message") && document.querySelector("#plan-message").innerText.includes("dry run")`, waitLimit)
	p.shot("deployment-new")
	if st := api(t, "GET", pm+"/api/v1/deployments/echo-live", "", nil); st != http.StatusNotFound {
		t.Fatalf("the dry run stored a deployment: GET %d", st)
	}

	p.do(chromedp.Click(chromedp.CSS(`#deployment-form button[type="submit"]`)))
	p.waitFor("the deployment's page", `location.pathname === "/ui/deployments/echo-live" && document.querySelector('#deployment-detail [data-condition]')`, waitLimit)
	// A marker that a reload would wipe.
	eval[bool](p, `window.__sameDocument = true`)
	first := eval[string](p, `document.querySelector('#deployment-detail [data-condition]').dataset.condition`)
	if first == "RUNNING" {
		t.Errorf("condition RUNNING at once; east takes 4 s, so the page cannot show a change")
	}
	p.waitFor("RUNNING without a reload", `document.querySelector('#deployment-detail [data-condition]').dataset.condition === "RUNNING"`, waitLimit)
	if !eval[bool](p, `window.__sameDocument === true`) {
		t.Fatal("the page reloaded")
	}
	if mode := eval[string](p, `document.querySelector(".live").dataset.mode`); mode != "poll" && mode != "stream" {
		t.Errorf("live mode %q", mode)
	}
	rollout := eval[string](p, `document.querySelector("#rollout-table").innerText`)
	for _, want := range []string{"east", "west", "RUNNING", "deployed"} {
		if !strings.Contains(rollout, want) {
			t.Errorf("rollout table lacks %q:\n%s", want, rollout)
		}
	}
	p.waitFor("the operation", `document.querySelector("#deployment-operations").innerText.includes("succeeded")`, waitLimit)
	p.shot("deployment")

	p.open("/ui/deployments")
	p.waitFor("the list", `document.querySelector('#deployments-table [data-condition="RUNNING"]')`, waitLimit)
	p.shot("deployments")

	p.open("/ui/clusters")
	p.waitFor("two samples per cluster", `document.querySelectorAll("#availability-chart polyline").length === 2`, waitLimit)
	health := eval[string](p, `document.querySelector("#clusters-table").innerText`)
	if !strings.Contains(health, "99.9%") || !strings.Contains(health, "closed") {
		t.Errorf("health table lacks availability or breaker state:\n%s", health)
	}
	// West degrades: the table and the chart follow on the next refresh.
	dip := 0.982
	if err := west.SetAvailability(&dip); err != nil {
		t.Fatal(err)
	}
	p.waitFor("the dip in the table and the chart", `document.querySelector("#clusters-table").innerText.includes("98.2%") && document.querySelector("#chart-desc").textContent.includes("west: 98.2%")`, waitLimit)
	p.shot("clusters")

	p.open("/ui/topology")
	p.waitFor("the graph", `document.querySelectorAll("#topology g.node").length > 0`, waitLimit)
	ids := eval[[]string](p, `[...document.querySelectorAll("#topology g.node")].map(n => n.dataset.id).sort()`)
	want := []string{"class::Echo", "env::east", "env::west", "function::Echo::echo", "function::Echo::reverse", "package::echo-pkg"}
	if strings.Join(ids, ",") != strings.Join(want, ",") {
		t.Errorf("topology nodes %v, want %v", ids, want)
	}
	p.shot("topology")

	p.open("/ui/operations")
	p.waitFor("operations", `document.querySelectorAll(".operations tbody tr").length >= 1`, waitLimit)

	// Delete, confirmed inline; the list follows.
	p.open("/ui/deployments/echo-live")
	p.waitFor("the delete button", `[...document.querySelectorAll("button")].some(b => b.innerText === "Delete deployment")`, waitLimit)
	p.do(chromedp.Click(chromedp.JSPath(`[...document.querySelectorAll("button")].find(b => b.innerText === "Delete deployment")`)))
	p.do(chromedp.Click(chromedp.JSPath(`[...document.querySelectorAll("button")].find(b => b.innerText === "Yes, delete deployment")`)))
	p.waitFor("the list without it", `location.pathname === "/ui/deployments" && !document.querySelector('#deployments-table [data-key="echo-live"][data-condition="RUNNING"]')`, waitLimit)
}

// fakeWatch streams one deployment through WatchService, as PM will: a
// snapshot, SYNCED, then a change when the test says so.
type fakeWatch struct {
	pmv1connect.UnimplementedWatchServiceHandler
	change chan struct{}
}

func (f *fakeWatch) WatchDeployments(ctx context.Context, req *pmv1.WatchRequest, stream *connect.ServerStream[pmv1.DeploymentEvent]) error {
	d := &pmv1.OClassDeployment{Key: "streamed", PackageName: "p", ClassKey: "C", TargetEnvs: []string{"east"},
		Condition: pmv1.DeploymentCondition_DEPLOYING, UpdatedAt: timestamppb.Now()}
	if req.GetKey() != "" && req.GetKey() != d.Key {
		return stream.Send(&pmv1.DeploymentEvent{Type: pmv1.EventType_EVENT_TYPE_SYNCED, Cursor: "1"})
	}
	for _, ev := range []*pmv1.DeploymentEvent{
		{Type: pmv1.EventType_EVENT_TYPE_SNAPSHOT, Deployment: d, Cursor: "1"},
		{Type: pmv1.EventType_EVENT_TYPE_SYNCED, Cursor: "1"},
	} {
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	select {
	case <-f.change:
	case <-ctx.Done():
		return nil
	}
	d.Condition = pmv1.DeploymentCondition_RUNNING
	if err := stream.Send(&pmv1.DeploymentEvent{Type: pmv1.EventType_EVENT_TYPE_CHANGED, Deployment: d, Cursor: "2"}); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// TestBrowserWatchStream: when PM serves WatchService the console uses the
// stream (the deployment here exists only in the stream, so polling could
// not show it), and when PM serves /api/v1/topology it draws that graph.
func TestBrowserWatchStream(t *testing.T) {
	t.Parallel()
	pm := startPM(t)
	watch := &fakeWatch{change: make(chan struct{})}
	topology := `{"nodes":[{"id":"package::shop","node_type":"package","status":"healthy","metadata":{},"deployed_classes":[]},
		{"id":"class::Cart","node_type":"class","status":"degraded","metadata":{"package":"shop"},"deployed_classes":[]},
		{"id":"env::edge","node_type":"environment","status":"healthy","metadata":{},"deployed_classes":["Cart"]}],
		"edges":[{"from_id":"package::shop","to_id":"class::Cart","metadata":{}},{"from_id":"class::Cart","to_id":"env::edge","metadata":{}}],
		"timestamp":{"seconds":1767225600,"nanos":0}}`
	base := front(t, pm, func(mux *http.ServeMux) {
		mux.Handle(pmv1connect.NewWatchServiceHandler(watch))
		mux.HandleFunc("GET /api/v1/topology", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("source") != "deployments" {
				http.Error(w, "source", http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, topology)
		})
	})
	p := openTab(t, base)
	p.open("/ui/deployments/streamed")
	p.waitFor("the streamed deployment", `document.querySelector('#deployment-detail [data-condition="DEPLOYING"]')`, waitLimit)
	if mode := eval[string](p, `document.querySelector(".live").dataset.mode`); mode != "stream" {
		t.Errorf("live mode %q, want stream", mode)
	}
	close(watch.change)
	p.waitFor("the change event", `document.querySelector('#deployment-detail [data-condition="RUNNING"]')`, waitLimit)

	p.open("/ui/topology")
	p.waitFor("the server's graph", `document.querySelector("#topology-source").dataset.source === "server" && document.querySelectorAll("#topology g.node").length === 3`, waitLimit)
	if !eval[bool](p, `document.querySelector('#topology g.node[data-id="class::Cart"]').classList.contains("s-degraded")`) {
		t.Error("the node's status is not drawn")
	}
}

// TestBrowserSignIn: with authentication on, the console asks for a token,
// refuses a wrong one, keeps a good one for the tab, signs out, and shows
// the audit log to admins only.
func TestBrowserSignIn(t *testing.T) {
	t.Parallel()
	tokens := map[string]string{"viewer": "pm_ui_viewer_0123456789abcdef", "admin": "pm_ui_admin_0123456789abcdef"}
	var file strings.Builder
	file.WriteString("tokens:\n")
	for role, tok := range tokens {
		fmt.Fprintf(&file, "  - {principal: %s-bot, role: %s, sha256: %s}\n", role, role, auth.HashToken(tok))
	}
	path := filepath.Join(t.TempDir(), "tokens.yaml")
	if err := os.WriteFile(path, []byte(file.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	pm := startPM(t, func(c *config.Config) {
		c.Auth.Mode = "auto"
		c.Auth.TokensFile = path
	})
	if st := api(t, "POST", pm+"/api/v1/packages", tokens["admin"], echoPackage("secret-pkg")); st != http.StatusCreated {
		t.Fatalf("create package: %d", st)
	}
	p := openTab(t, front(t, pm, nil))
	p.open("/ui/packages")
	p.waitFor("the sign-in form", `document.querySelector("#sign-in")`, waitLimit)
	if eval[bool](p, `document.body.innerText.includes("secret-pkg")`) {
		t.Fatal("data shown before sign-in")
	}
	p.shot("sign-in")

	// Keyboard only: type and press Enter.
	p.do(chromedp.SendKeys(chromedp.CSS(`#sign-in input[name="token"]`), "pm_wrong_token\r"))
	p.waitFor("the refusal", `document.querySelector("#sign-in-status").innerText.includes("did not accept")`, waitLimit)
	p.setValue(`#sign-in input[name="token"]`, "")
	p.do(chromedp.SendKeys(chromedp.CSS(`#sign-in input[name="token"]`), tokens["viewer"]+"\r"))
	p.waitFor("the packages after sign-in", `document.querySelector("#packages-table") && document.querySelector("#packages-table").innerText.includes("secret-pkg")`, waitLimit)
	if got := eval[string](p, `sessionStorage.getItem("oaas-pm.token")`); got != tokens["viewer"] {
		t.Errorf("token in sessionStorage %q", got)
	}
	if eval[string](p, `localStorage.length + document.cookie`) != "0" {
		t.Error("the token leaked beyond sessionStorage")
	}

	// A viewer is not an admin: the audit log says so.
	p.open("/ui/audit")
	p.waitFor("admins only", `document.querySelector("#audit-forbidden") && document.querySelector("#audit-forbidden").innerText.includes("Admins only")`, waitLimit)

	p.do(chromedp.Click(chromedp.ID("sign-out")))
	p.waitFor("signed out", `document.querySelector("#sign-in") && sessionStorage.getItem("oaas-pm.token") === null`, waitLimit)
	p.do(chromedp.SendKeys(chromedp.CSS(`#sign-in input[name="token"]`), tokens["admin"]+"\r"))
	p.waitFor("the audit log for the admin", `document.querySelector("#audit-table") && document.querySelector("#audit-table").innerText.includes("denied")`, waitLimit)
	p.shot("audit")
}
