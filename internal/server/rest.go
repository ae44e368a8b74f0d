package server

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/oaas/pm/internal/fieldcheck"
	"github.com/oaas/pm/internal/restmodel"
)

// DryRunHeader marks a response to a request that changed nothing (a
// planning dry run); REST answers it 200, not 201.
const DryRunHeader = "X-Dry-Run"

// rest is the REST face in front of the transcoder. Before it: the route's
// query parameters and body are checked against the field policy (unknown
// ones warned about or refused, path fields never re-targeted by the query,
// YAML turned into JSON, aliases renamed, enums checked, bodies bounded
// after decompression). After it: the REST JSON model's statuses (201 for
// creates, 204 for deletes) and {"error": "..."} bodies.
type rest struct {
	next    http.Handler
	routes  restmodel.Table
	maxBody int64
	aliases fieldcheck.Aliases
	log     *slog.Logger
}

func (p *rest) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// Compressed responses would have to be decompressed to be rewritten.
	r.Header.Del("Accept-Encoding")
	rt, vars := p.routes.Match(r.Method, r.URL.Path)
	if rt == nil {
		p.forward(w, r, nil, nil)
		return
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		writeError(w, http.StatusBadRequest, "malformed query string")
		return
	}
	modeText := q.Get(FieldValidationParam)
	q.Del(FieldValidationParam)
	if modeText == "" {
		modeText = r.Header.Get(FieldValidationHeader)
	}
	mode, err := parseFieldMode(modeText)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	pass, unknownParams, problems := checkQuery(rt, q, vars)
	if len(problems) > 0 {
		writeError(w, http.StatusBadRequest, strings.Join(problems, "; "))
		return
	}
	var warnings []string
	for _, name := range unknownParams {
		warnings = append(warnings, "unknown query parameter "+strconv.QuoteToASCII(name))
	}
	if rt.Body != "" {
		body, isYAML, status, err := readBody(w, r, p.maxBody)
		if err != nil {
			writeError(w, status, err.Error())
			return
		}
		res, err := fieldcheck.CheckJSON(rt.BodyDesc, body, fieldcheck.Options{Aliases: p.aliases, StringifyMapScalars: isYAML})
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		for _, path := range res.Unknown {
			warnings = append(warnings, "unknown field "+strconv.QuoteToASCII(path))
		}
		r.Body = io.NopCloser(bytes.NewReader(res.JSON))
		r.ContentLength = int64(len(res.JSON))
		r.Header.Set("Content-Length", strconv.Itoa(len(res.JSON)))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Del("Content-Encoding")
	}
	if mode == strictUnknown && len(warnings) > 0 {
		writeError(w, http.StatusBadRequest, strings.Join(warnings, "; ")+" (strict field validation)")
		return
	}
	r.URL.RawQuery = pass.Encode()
	p.forward(w, r, rt, func(h http.Header) {
		if mode == warnUnknown {
			addWarnings(h, warnings)
		}
	})
}

// forward runs the transcoder into a buffer and writes its answer shaped
// for REST; also sets headers of the final response.
func (p *rest) forward(w http.ResponseWriter, r *http.Request, rt *restmodel.Route, also func(http.Header)) {
	// The transcoder rewrites r.URL; remember what the client asked for.
	method, path := r.Method, r.URL.Path
	buf := &bufferedWriter{header: http.Header{}, status: http.StatusOK}
	p.next.ServeHTTP(buf, r)
	if also != nil {
		also(w.Header())
	}
	created := rt != nil && rt.Creates()
	buf.flushTo(w, method, path, created, p.log)
}

// addWarnings sets one Warning header per entry, in the form Kubernetes
// uses: 299 - "unknown field \"spec.foo\"".
func addWarnings(h http.Header, warnings []string) {
	for _, text := range warnings {
		if len(text) > 512 {
			text = text[:509] + "..."
		}
		text = strings.ReplaceAll(strings.ReplaceAll(text, `\`, `\\`), `"`, `\"`)
		h.Add("Warning", `299 - "`+text+`"`)
	}
}

// readBody reads a bounded, possibly gzip-compressed body of a JSON or YAML
// content type and returns it as JSON. The bound applies to the bytes after
// decompression, so a small compressed body cannot expand past it.
func readBody(w http.ResponseWriter, r *http.Request, maxBody int64) (body []byte, isYAML bool, status int, err error) {
	ct := r.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	switch {
	case ct == "":
		// A browser can send a body without a content type and without a
		// CORS preflight; writes must say what they carry.
		return nil, false, http.StatusUnsupportedMediaType, errors.New("Content-Type is required (application/json or application/yaml)")
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
	case mt == "application/yaml" || mt == "application/x-yaml" || mt == "text/yaml" || mt == "text/x-yaml":
		isYAML = true
	default:
		return nil, false, http.StatusUnsupportedMediaType,
			fmt.Errorf("content type %q is not supported (use application/json or application/yaml)", ct)
	}
	var src io.Reader = http.MaxBytesReader(w, r.Body, maxBody)
	switch enc := strings.ToLower(strings.TrimSpace(r.Header.Get("Content-Encoding"))); enc {
	case "", "identity":
	case "gzip":
		gz, err := gzip.NewReader(src)
		if err != nil {
			return nil, false, http.StatusBadRequest, errors.New("request body is not valid gzip")
		}
		defer gz.Close()
		src = gz
	default:
		return nil, false, http.StatusUnsupportedMediaType, fmt.Errorf("content encoding %q is not supported (use gzip or none)", enc)
	}
	body, err = io.ReadAll(io.LimitReader(src, maxBody+1))
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge) || int64(len(body)) > maxBody:
		return nil, false, http.StatusRequestEntityTooLarge, fmt.Errorf("request body exceeds %d bytes (SERVER_MAX_BODY_BYTES)", maxBody)
	case errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader):
		return nil, false, http.StatusBadRequest, errors.New("request body is not valid gzip")
	case err != nil:
		return nil, false, http.StatusBadRequest, errors.New("reading the request body failed")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, false, http.StatusBadRequest, errors.New("request body is empty")
	}
	if isYAML {
		j, err := yaml.YAMLToJSON(body)
		if err != nil {
			return nil, false, http.StatusBadRequest, fmt.Errorf("invalid YAML body: %s", cleanYAMLError(err))
		}
		body = j
	}
	return body, isYAML, 0, nil
}

func cleanYAMLError(err error) string {
	msg := strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
	msg = strings.TrimPrefix(msg, "yaml: ")
	switch {
	case strings.HasPrefix(msg, "invalid map key"):
		return "mapping keys must be plain strings"
	case strings.Contains(msg, "interface {}") || strings.Contains(msg, "map["):
		// The converter names Go types; the client needs none of them.
		return "malformed YAML"
	}
	return msg
}

// bufferedWriter holds a unary REST response so its status and body can be
// rewritten. Flush is a no-op: vanguard calls it, and the real flush happens
// once the handler returns.
type bufferedWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
	wrote  bool
}

func (b *bufferedWriter) Header() http.Header { return b.header }

func (b *bufferedWriter) WriteHeader(status int) {
	if !b.wrote {
		b.status, b.wrote = status, true
	}
}

func (b *bufferedWriter) Write(p []byte) (int, error) {
	b.wrote = true
	return b.body.Write(p)
}

func (b *bufferedWriter) Flush() {}

// flushTo writes the response, shaping errors and statuses on the way.
func (b *bufferedWriter) flushTo(w http.ResponseWriter, method, path string, created bool, log *slog.Logger) {
	h := w.Header()
	for k, v := range b.header {
		h[k] = append(h[k], v...)
	}
	status := b.status
	if status >= 400 {
		msg := errorMessage(b.body.Bytes(), status)
		h.Del("Content-Length")
		h.Del("Content-Encoding")
		writeError(w, status, msg)
		return
	}
	switch {
	case method == http.MethodDelete && status == http.StatusOK:
		h.Del("Content-Length")
		h.Del("Content-Type")
		w.WriteHeader(http.StatusNoContent)
		return
	case created && status == http.StatusOK && h.Get(DryRunHeader) == "":
		// A dry run created nothing: it stays 200.
		status = http.StatusCreated
	}
	h.Set("Content-Length", strconv.Itoa(b.body.Len()))
	w.WriteHeader(status)
	if _, err := w.Write(b.body.Bytes()); err != nil {
		log.Debug("writing REST response", "method", method, "path", path, "error", err)
	}
}

// errorMessage extracts the message of a google.rpc.Status JSON body (what
// vanguard writes) or of a plain-text body (unknown routes).
func errorMessage(body []byte, status int) string {
	var st struct {
		Message string `json:"message"`
	}
	msg := ""
	if json.Unmarshal(body, &st) == nil {
		msg = st.Message
	} else {
		msg = strings.TrimSpace(string(body))
	}
	if msg == "" {
		msg = strings.ToLower(http.StatusText(status))
	}
	return msg
}
