package server

import (
	"bytes"
	"compress/gzip"
	"context"
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

	"google.golang.org/protobuf/reflect/protoreflect"
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
// creates, 204 for deletes that answer nothing) and {"error": "..."} bodies.
type rest struct {
	next    http.Handler
	routes  restmodel.Table
	maxBody int64
	aliases fieldcheck.Aliases
	log     *slog.Logger
	// watches are the watch RPCs of watchable list RPCs, served on local,
	// the handlers' mux, as Server-Sent Events (sse.go).
	watches map[protoreflect.FullName]protoreflect.MethodDescriptor
	local   http.Handler
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
	if p.serveWatch(w, r, rt, q) {
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
	r = r.WithContext(context.WithValue(r.Context(), restChecked{}, true))
	p.forward(w, r, rt, func(h http.Header) {
		if mode == warnUnknown {
			addWarnings(h, warnings)
		}
	})
}

// forward runs the transcoder and shapes its answer for REST on the way
// out: a success streams through with its REST status (restmodel's
// SuccessStatus: 201 for a create that created, 204 for a delete whose
// answer is empty), an error is buffered and
// rewritten as {"error": "..."}. also sets headers of the final response.
func (p *rest) forward(w http.ResponseWriter, r *http.Request, rt *restmodel.Route, also func(http.Header)) {
	rw := &restWriter{w: w, created: rt != nil && rt.Creates(), noContent: rt != nil && rt.SuccessStatus() == http.StatusNoContent, also: also}
	p.next.ServeHTTP(rw, r)
	rw.finish(p.log)
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
		defer func() { _ = gz.Close() }()
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

// restWriter decides at WriteHeader whether the response streams through
// (success) or is held to be rewritten (an error).
type restWriter struct {
	w http.ResponseWriter
	// created: the route creates (201); noContent: its success carries no
	// body (204). Both come from restmodel's SuccessStatus rule.
	created, noContent bool
	also               func(http.Header)

	status  int
	decided bool
	// errBody holds an error response until finish rewrites it.
	errBody bytes.Buffer
	// discard drops a body the REST status does not carry (204).
	discard bool
}

func (rw *restWriter) Header() http.Header { return rw.w.Header() }

func (rw *restWriter) WriteHeader(status int) {
	if rw.decided {
		return
	}
	rw.decided, rw.status = true, status
	if status >= 400 {
		return
	}
	h := rw.w.Header()
	if rw.also != nil {
		rw.also(h)
	}
	switch {
	case rw.noContent && status == http.StatusOK:
		h.Del("Content-Length")
		h.Del("Content-Type")
		status, rw.discard = http.StatusNoContent, true
	case rw.created && status == http.StatusOK && h.Get(DryRunHeader) == "" && createdSomething(h):
		// A dry run, or a create that updated what existed, created
		// nothing: it stays 200.
		status = http.StatusCreated
	}
	rw.w.WriteHeader(status)
}

// createdSomething reads restmodel.WriteStatusHeader off a create's answer.
func createdSomething(h http.Header) bool {
	ws := h.Get(restmodel.WriteStatusHeader)
	return ws == "" || ws == "created"
}

func (rw *restWriter) Write(p []byte) (int, error) {
	if !rw.decided {
		rw.WriteHeader(http.StatusOK)
	}
	switch {
	case rw.status >= 400:
		return rw.errBody.Write(p)
	case rw.discard:
		return len(p), nil
	}
	return rw.w.Write(p)
}

// Flush passes through for successes; vanguard calls it.
func (rw *restWriter) Flush() {
	if rw.decided && rw.status < 400 {
		if f, ok := rw.w.(http.Flusher); ok {
			f.Flush()
		}
	}
}

// finish writes a held error response, or an empty success.
func (rw *restWriter) finish(log *slog.Logger) {
	if !rw.decided {
		rw.WriteHeader(http.StatusOK)
		return
	}
	if rw.status < 400 {
		return
	}
	h := rw.w.Header()
	if rw.also != nil {
		rw.also(h)
	}
	h.Del("Content-Length")
	h.Del("Content-Encoding")
	msg := errorMessage(rw.errBody.Bytes(), rw.status)
	log.Debug("REST error", "status", rw.status, "error", msg)
	writeError(rw.w, rw.status, msg)
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
