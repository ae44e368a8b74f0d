package ui_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/oaas/pm/internal/ui"
)

// setup serves the console the way PM mounts it: on a mux whose catch-all
// answers 404 for everything else.
func setup(t *testing.T) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(ui.Prefix, ui.Handler())
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"error":"no route"}`, http.StatusNotFound)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// client neither follows redirects nor asks for gzip on its own.
var client = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Transport:     &http.Transport{DisableCompression: true},
}

// reply is a response read whole.
type reply struct {
	StatusCode int
	Header     http.Header
}

func get(t *testing.T, method, url string, headers ...string) (reply, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return reply{StatusCode: res.StatusCode, Header: res.Header}, body
}

var assetRef = regexp.MustCompile(`(?:src|href)="(/ui/assets/[^"]+)"`)

func TestIndexAndRoutes(t *testing.T) {
	t.Parallel()
	base := setup(t)
	res, index := get(t, "GET", base+"/ui/")
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /ui/: %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	if cc := res.Header.Get("Cache-Control"); cc != "no-cache" {
		t.Errorf("index Cache-Control %q, want no-cache (it names the hashed assets)", cc)
	}
	if !bytes.Contains(index, []byte(`<main id="main"`)) {
		t.Errorf("index is not the console's: %.200s", index)
	}
	// Console routes are pages: every path under /ui/ that is no file gets
	// the index, so a reload or a shared link works.
	for _, p := range []string{"/ui/packages", "/ui/packages/echo", "/ui/deployments/d1/edit", "/ui/audit?x=1"} {
		res, body := get(t, "GET", base+p)
		if res.StatusCode != http.StatusOK || !bytes.Equal(body, index) {
			t.Errorf("GET %s: %d, index=%v", p, res.StatusCode, bytes.Equal(body, index))
		}
	}
	// A missing asset is a 404, not the index (a stale tab must not run
	// HTML as script).
	if res, _ := get(t, "GET", base+"/ui/assets/app-NOPE.js"); res.StatusCode != http.StatusNotFound {
		t.Errorf("missing asset: %d, want 404", res.StatusCode)
	}
	// ServeMux itself redirects the subtree root (307 since Go 1.22).
	if res, _ := get(t, "GET", base+"/ui"); res.StatusCode/100 != 3 || res.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /ui: %d Location %q, want a redirect to /ui/", res.StatusCode, res.Header.Get("Location"))
	}
	res, _ = get(t, "POST", base+"/ui/packages")
	if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d Allow %q", res.StatusCode, res.Header.Get("Allow"))
	}
	if res, body := get(t, "HEAD", base+"/ui/"); res.StatusCode != http.StatusOK || len(body) != 0 {
		t.Errorf("HEAD: %d with %d body bytes", res.StatusCode, len(body))
	}
}

func TestAssets(t *testing.T) {
	t.Parallel()
	base := setup(t)
	_, index := get(t, "GET", base+"/ui/")
	refs := assetRef.FindAllSubmatch(index, -1)
	if len(refs) < 3 {
		t.Fatalf("index references %d assets, want script, style and icon", len(refs))
	}
	want := map[string]string{".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
	for _, m := range refs {
		path := string(m[1])
		ext := path[strings.LastIndex(path, "."):]
		res, body := get(t, "GET", base+path)
		if res.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("GET %s: %d (%d bytes)", path, res.StatusCode, len(body))
			continue
		}
		if ct := res.Header.Get("Content-Type"); ct != want[ext] {
			t.Errorf("%s: Content-Type %q, want %q", path, ct, want[ext])
		}
		if cc := res.Header.Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
			t.Errorf("%s: Cache-Control %q, want immutable (the name carries the hash)", path, cc)
		}
		if res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: no nosniff", path)
		}
		// Revalidation answers 304 without a body.
		etag := res.Header.Get("ETag")
		if res, body := get(t, "GET", base+path, "If-None-Match", etag); res.StatusCode != http.StatusNotModified || len(body) != 0 {
			t.Errorf("%s with If-None-Match: %d (%d bytes)", path, res.StatusCode, len(body))
		}
	}
}

func TestGzip(t *testing.T) {
	t.Parallel()
	base := setup(t)
	_, index := get(t, "GET", base+"/ui/")
	js := ""
	for _, m := range assetRef.FindAllSubmatch(index, -1) {
		if strings.HasSuffix(string(m[1]), ".js") {
			js = string(m[1])
		}
	}
	plainRes, plain := get(t, "GET", base+js)
	res, packed := get(t, "GET", base+js, "Accept-Encoding", "br, gzip;q=0.8")
	if res.Header.Get("Content-Encoding") != "gzip" || !strings.Contains(res.Header.Get("Vary"), "Accept-Encoding") {
		t.Fatalf("gzip not used: Content-Encoding %q Vary %q", res.Header.Get("Content-Encoding"), res.Header.Get("Vary"))
	}
	if len(packed) >= len(plain) {
		t.Errorf("gzip body %d bytes, plain %d", len(packed), len(plain))
	}
	zr, err := gzip.NewReader(bytes.NewReader(packed))
	if err != nil {
		t.Fatal(err)
	}
	unpacked, err := io.ReadAll(zr)
	if err != nil || !bytes.Equal(unpacked, plain) {
		t.Errorf("gzip body does not unpack to the file (err %v)", err)
	}
	if res.Header.Get("ETag") == plainRes.Header.Get("ETag") {
		t.Error("the gzip and plain bodies share an ETag")
	}
	if res, _ := get(t, "GET", base+js, "Accept-Encoding", "gzip;q=0"); res.Header.Get("Content-Encoding") != "" {
		t.Error("gzip sent to a client that refused it (q=0)")
	}
}

// TestSecurityHeaders: a strict policy with no origin but the console's
// own, on pages and assets alike.
func TestSecurityHeaders(t *testing.T) {
	t.Parallel()
	base := setup(t)
	for _, p := range []string{"/ui/", "/ui/packages/x", "/ui/licenses.txt", "/ui/assets/missing.js"} {
		res, _ := get(t, "GET", base+p)
		csp := res.Header.Get("Content-Security-Policy")
		if csp == "" {
			t.Errorf("%s: no Content-Security-Policy", p)
			continue
		}
		directives := map[string][]string{}
		for _, d := range strings.Split(csp, ";") {
			f := strings.Fields(d)
			if len(f) > 0 {
				directives[f[0]] = f[1:]
			}
		}
		if got := directives["default-src"]; len(got) != 1 || got[0] != "'none'" {
			t.Errorf("%s: default-src %v, want 'none'", p, got)
		}
		for name, sources := range directives {
			for _, s := range sources {
				if s != "'self'" && s != "'none'" {
					t.Errorf("%s: %s allows %q; only 'self' and 'none' are allowed", p, name, s)
				}
			}
		}
		for _, d := range []string{"script-src", "style-src", "connect-src", "frame-ancestors", "base-uri"} {
			if _, ok := directives[d]; !ok {
				t.Errorf("%s: CSP lacks %s", p, d)
			}
		}
		if res.Header.Get("X-Frame-Options") != "DENY" || res.Header.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s: X-Frame-Options %q Referrer-Policy %q", p, res.Header.Get("X-Frame-Options"), res.Header.Get("Referrer-Policy"))
		}
	}
}

// TestIndexHasNoInlineCode: the policy forbids inline script and style, so
// the built page must carry none (it would silently not run).
func TestIndexHasNoInlineCode(t *testing.T) {
	t.Parallel()
	base := setup(t)
	_, index := get(t, "GET", base+"/ui/")
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`<script(?:\s[^>]*)?>\s*[^<\s]`), regexp.MustCompile(`<style`), regexp.MustCompile(`\sstyle=`),
		regexp.MustCompile(`\son[a-z]+=`), regexp.MustCompile(`(?:src|href)="(?:https?:)?//`),
	} {
		if loc := bad.FindIndex(index); loc != nil {
			t.Errorf("index.html has %q, which the policy blocks or which loads from elsewhere", index[loc[0]:min(loc[1]+20, len(index))])
		}
	}
}
