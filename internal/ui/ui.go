// Package ui serves PM's web console: a single-page application built from
// web/console (TypeScript) into dist/ and embedded, so a PM binary serves
// it with no Node at run time. Every file is static and holds no data: the
// console reads everything through the API with the signed-in user's token,
// which is why /ui/ can stay open when authentication is on.
package ui

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"
)

// Prefix is where the console lives; its index.html and the bundle refer
// to /ui/assets/... absolutely, so it must be mounted here.
const Prefix = "/ui/"

//go:embed all:dist
var dist embed.FS

// ContentSecurityPolicy admits only the console's own scripts, styles and
// images, and API calls to its own origin: no inline script or style, no
// external origin, no framing.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// immutable is the caching of assets whose names carry their content hash.
const immutable = "public, max-age=31536000, immutable"

// types are the content types of the files the build writes; fixed here
// rather than read from the host's mime tables, which differ between
// machines (a .js served as text/plain is refused under nosniff).
var types = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
	".png":  "image/png",
	".ico":  "image/x-icon",
	".json": "application/json",
	".txt":  "text/plain; charset=utf-8",
	".map":  "application/json",
}

// asset is one embedded file, ready to serve.
type asset struct {
	body     []byte
	gz       []byte // nil when compression does not pay
	ctype    string
	etag     string
	cache    string
	compress sync.Once
}

// gzipped returns the compressed body, computing it on first use.
func (a *asset) gzipped() []byte {
	a.compress.Do(func() {
		if len(a.body) < 1024 || !strings.HasPrefix(a.ctype, "text/") && a.ctype != "image/svg+xml" && a.ctype != "application/json" {
			return
		}
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
		_, _ = zw.Write(a.body)
		_ = zw.Close()
		if b.Len() < len(a.body) {
			a.gz = b.Bytes()
		}
	})
	return a.gz
}

// Handler returns the console's handler. Mount it at Prefix:
//
//	mux.Handle("/ui/", ui.Handler())
//
// It serves the embedded files under /ui/, index.html for every other path
// under /ui/ (the console routes in the browser, so /ui/packages/echo is a
// page), 404 for a missing file under /ui/assets/, and redirects /ui to
// /ui/. Only GET and HEAD are allowed.
func Handler() http.Handler {
	h, err := newHandler(dist)
	if err != nil {
		panic(err) // the embedded tree is fixed at build time; a test covers it
	}
	return h
}

type handler struct {
	files map[string]*asset
	index *asset
}

func newHandler(fsys fs.FS) (*handler, error) {
	root, err := fs.Sub(fsys, "dist")
	if err != nil {
		return nil, err
	}
	h := &handler{files: map[string]*asset{}}
	err = fs.WalkDir(root, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(root, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		a := &asset{body: body, ctype: types[path.Ext(name)], etag: `"` + hex.EncodeToString(sum[:12]) + `"`, cache: "no-cache"}
		if a.ctype == "" {
			a.ctype = "application/octet-stream"
		}
		if strings.HasPrefix(name, "assets/") {
			a.cache = immutable
		}
		h.files[name] = a
		return nil
	})
	if err != nil {
		return nil, err
	}
	h.index = h.files["index.html"]
	if h.index == nil {
		return nil, fs.ErrNotExist
	}
	return h, nil
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", ContentSecurityPolicy)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("Cross-Origin-Opener-Policy", "same-origin")
	hdr.Set("Cross-Origin-Resource-Policy", "same-origin")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Path == strings.TrimSuffix(Prefix, "/") {
		target := Prefix
		if r.URL.RawQuery != "" {
			target += "?" + r.URL.RawQuery
		}
		http.Redirect(w, r, target, http.StatusMovedPermanently)
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, Prefix)
	if !ok {
		http.NotFound(w, r)
		return
	}
	a := h.files[name]
	if a == nil {
		if strings.HasPrefix(name, "assets/") || !fs.ValidPath(strings.TrimSuffix(name, "/")) && name != "" {
			http.NotFound(w, r)
			return
		}
		a = h.index // a console route: the page routes itself
	}
	serve(w, r, a)
}

func serve(w http.ResponseWriter, r *http.Request, a *asset) {
	hdr := w.Header()
	hdr.Set("Content-Type", a.ctype)
	hdr.Set("Cache-Control", a.cache)
	body, etag := a.body, a.etag
	if gz := a.gzipped(); gz != nil {
		hdr.Add("Vary", "Accept-Encoding")
		if acceptsGzip(r) {
			hdr.Set("Content-Encoding", "gzip")
			body, etag = gz, strings.TrimSuffix(etag, `"`)+`-gz"`
		}
	}
	hdr.Set("ETag", etag)
	// ServeContent answers If-None-Match (304), HEAD and ranges.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
}

// acceptsGzip reports whether the client takes gzip; q=0 refuses it.
func acceptsGzip(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept-Encoding"), ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			q := strings.ReplaceAll(strings.TrimSpace(params), " ", "")
			return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
		}
	}
	return false
}
