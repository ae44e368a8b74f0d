package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// createRoutes answer 201 on success (rest-json-model.md "Responses").
var createRoutes = map[string]bool{
	"/api/v1/packages":    true,
	"/api/v1/deployments": true,
}

// DryRunHeader marks a response to a request that changed nothing (a
// planning dry run); REST answers it 200, not 201.
const DryRunHeader = "X-Dry-Run"

// REST wraps the transcoder with what the REST JSON model needs and vanguard
// does not do: YAML bodies, the target_clusters alias, the body size limit,
// {"error": "..."} bodies, and 201/204 statuses.
func REST(next http.Handler, maxBody int64, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Compressed responses would have to be decompressed to be rewritten.
		r.Header.Del("Accept-Encoding")
		if r.Body != nil && r.Method != http.MethodGet && r.Method != http.MethodDelete {
			body, status, err := readBody(w, r, maxBody)
			if err != nil {
				writeError(w, status, err.Error())
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
			r.Header.Set("Content-Length", strconv.Itoa(len(body)))
			r.Header.Set("Content-Type", "application/json")
		}
		// The transcoder rewrites r.URL; remember what the client asked for.
		method, path := r.Method, r.URL.Path
		buf := &bufferedWriter{header: http.Header{}, status: http.StatusOK}
		next.ServeHTTP(buf, r)
		buf.flushTo(w, method, path, log)
	})
}

// readBody reads a bounded body and turns YAML into JSON, so the transcoder
// only ever sees JSON.
func readBody(w http.ResponseWriter, r *http.Request, maxBody int64) ([]byte, int, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("request body exceeds %d bytes", maxBody)
		}
		return nil, http.StatusBadRequest, fmt.Errorf("reading request body: %w", err)
	}
	ct := r.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	// curl -d sends form encoding by default; a body that is clearly JSON is
	// taken as JSON rather than refused.
	formButJSON := mt == "application/x-www-form-urlencoded" && bytes.HasPrefix(bytes.TrimSpace(body), []byte("{"))
	switch {
	case ct == "" || mt == "application/json" || strings.HasSuffix(mt, "+json") || formButJSON:
		if len(bytes.TrimSpace(body)) == 0 {
			return nil, http.StatusBadRequest, errors.New("request body is empty")
		}
		if bytes.Contains(body, []byte(`"target_clusters"`)) {
			return rewriteJSON(body, false)
		}
		return body, 0, nil
	case mt == "application/yaml" || mt == "application/x-yaml" || mt == "text/yaml" || mt == "text/x-yaml":
		return rewriteJSON(body, true)
	default:
		return nil, http.StatusUnsupportedMediaType,
			fmt.Errorf("content type %q is not supported (use application/json or application/yaml)", ct)
	}
}

// rewriteJSON decodes a JSON or YAML body generically, applies the aliases of
// the REST model and encodes it as JSON again.
func rewriteJSON(body []byte, isYAML bool) ([]byte, int, error) {
	var doc any
	if isYAML {
		j, err := yaml.YAMLToJSON(body)
		if err != nil {
			return nil, http.StatusBadRequest, fmt.Errorf("invalid YAML body: %s", cleanYAMLError(err))
		}
		body = j
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&doc); err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("invalid JSON body: %w", err)
	}
	obj, ok := doc.(map[string]any)
	if !ok {
		return nil, http.StatusBadRequest, errors.New("request body must be a JSON object")
	}
	if err := aliasTargetClusters(obj, ""); err != nil {
		return nil, http.StatusBadRequest, err
	}
	if deps, ok := obj["deployments"].([]any); ok {
		for i, d := range deps {
			if m, ok := d.(map[string]any); ok {
				if err := aliasTargetClusters(m, fmt.Sprintf("deployments[%d].", i)); err != nil {
					return nil, http.StatusBadRequest, err
				}
			}
		}
	}
	if isYAML {
		stringifyConfig(obj)
	}
	out, err := json.Marshal(obj)
	if err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("invalid body: %w", err)
	}
	return out, 0, nil
}

// aliasTargetClusters accepts the older field name of target_envs.
func aliasTargetClusters(obj map[string]any, path string) error {
	v, ok := obj["target_clusters"]
	if !ok {
		return nil
	}
	if _, both := obj["target_envs"]; both {
		return fmt.Errorf("%starget_clusters: give either target_envs or its older name target_clusters, not both", path)
	}
	delete(obj, "target_clusters")
	obj["target_envs"] = v
	return nil
}

// stringifyConfig turns scalars of "config" maps into strings: hand-written
// YAML says `HTTP_PORT: 80` and means the string "80".
func stringifyConfig(v any) {
	switch t := v.(type) {
	case map[string]any:
		for k, child := range t {
			if m, ok := child.(map[string]any); ok && k == "config" {
				for ck, cv := range m {
					switch s := cv.(type) {
					case json.Number:
						m[ck] = s.String()
					case bool:
						m[ck] = strconv.FormatBool(s)
					}
				}
				continue
			}
			stringifyConfig(child)
		}
	case []any:
		for _, child := range t {
			stringifyConfig(child)
		}
	}
}

func cleanYAMLError(err error) string {
	return strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")
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

// unknownParam is how vanguard reports an unknown query parameter, as an
// internal error.
var unknownParam = regexp.MustCompile(`^unknown field in field path "([^"]*)"`)

// flushTo writes the response, shaping errors and statuses on the way.
func (b *bufferedWriter) flushTo(w http.ResponseWriter, method, path string, log *slog.Logger) {
	h := w.Header()
	for k, v := range b.header {
		h[k] = v
	}
	status := b.status
	if status >= 400 {
		msg := errorMessage(b.body.Bytes(), status)
		h.Del("Content-Length")
		h.Del("Content-Encoding")
		if m := unknownParam.FindStringSubmatch(msg); m != nil && status == http.StatusInternalServerError {
			status, msg = http.StatusBadRequest, fmt.Sprintf("unknown query parameter %q", m[1])
		}
		writeError(w, status, msg)
		return
	}
	switch {
	case method == http.MethodDelete && status == http.StatusOK:
		h.Del("Content-Length")
		h.Del("Content-Type")
		w.WriteHeader(http.StatusNoContent)
		return
	case method == http.MethodPost && status == http.StatusOK && createRoutes[path] && h.Get(DryRunHeader) == "":
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
