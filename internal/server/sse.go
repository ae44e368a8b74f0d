package server

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/oaas/pm/internal/restmodel"
)

// The REST face of the watch streams: a list route called with
// ?watch=true streams Server-Sent Events. The request becomes a Connect
// call of the matching WatchService RPC on PM's own handlers (so the same
// authorization, audit and metrics apply), and each event it streams
// becomes an SSE event:
//
//	id: <cursor>           (absent on snapshot events)
//	event: <type>          SNAPSHOT, SYNCED, ADDED, CHANGED or DELETED
//	data: <object>         the REST JSON of the object, as a list item;
//	                       a deleted one's key only; {} for SYNCED
//
// Heartbeats are a comment with the current cursor as the id, and a
// stream that ends in an error after it began ends with an "error" event
// ({"error", "code", "resume_from"}). Last-Event-ID (or ?resume_from=)
// resumes after a cursor.

// WatchParam is the query parameter that turns a list route into a watch.
const WatchParam = restmodel.WatchParam

// watchRoutes finds the watch RPC of each watchable list RPC among the
// mounted services (none when WatchService is not mounted).
func watchRoutes(services []protoreflect.ServiceDescriptor) map[protoreflect.FullName]protoreflect.MethodDescriptor {
	out := map[protoreflect.FullName]protoreflect.MethodDescriptor{}
	for _, sd := range services {
		if sd.FullName() != restmodel.WatchService {
			continue
		}
		for list, name := range restmodel.WatchOf {
			if md := sd.Methods().ByName(name); md != nil {
				out[list] = md
			}
		}
	}
	return out
}

// isWatch reports whether r asks a REST list route for a watch (the guard
// exempts those from the unary timeout; the REST face checks the rest).
func isWatch(r *http.Request) bool {
	if r.Method != http.MethodGet || !strings.HasPrefix(r.URL.Path, "/api/") || !strings.Contains(r.URL.RawQuery, WatchParam) {
		return false
	}
	v, err := strconv.ParseBool(r.URL.Query().Get(WatchParam))
	return err == nil && v
}

// watchParams maps the query parameters a watch takes to WatchRequest
// fields; a list route's own filter that names one object maps too.
var watchParams = map[string]string{
	"key": "key", "resume_from": "resume_from", "resumeFrom": "resume_from",
	"heartbeat_seconds": "heartbeat_seconds", "heartbeatSeconds": "heartbeat_seconds",
	"deployment_key": "key", "deploymentKey": "key",
}

// serveWatch answers a list route's ?watch= request; false when the route
// is not watchable or watch is false (the list call goes on, without the
// parameter).
func (p *rest) serveWatch(w http.ResponseWriter, r *http.Request, rt *restmodel.Route, q url.Values) bool {
	raw, asked := q[WatchParam]
	md := p.watches[rt.Method.FullName()]
	if !asked || md == nil {
		return false
	}
	on, err := strconv.ParseBool(raw[0])
	if len(raw) != 1 || err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("query parameter %q: %q is not true or false", WatchParam, raw[0]))
		return true
	}
	q.Del(WatchParam)
	if !on {
		return false
	}
	if !acceptsEventStream(r.Header.Get("Accept")) {
		writeError(w, http.StatusNotAcceptable, "watch=true answers text/event-stream, which the Accept header does not allow")
		return true
	}
	req := dynamicpb.NewMessage(md.Input())
	set := func(field, v string) error {
		fd := md.Input().Fields().ByName(protoreflect.Name(field))
		if msg := restmodel.CheckScalar(fd, v); msg != "" {
			return fmt.Errorf("query parameter %q: %s", field, msg)
		}
		if fd.Kind() == protoreflect.Int32Kind {
			n, _ := strconv.ParseInt(v, 10, 32) // checked above
			req.Set(fd, protoreflect.ValueOfInt32(int32(n)))
			return nil
		}
		if cur := req.Get(fd).String(); cur != "" && cur != v {
			return fmt.Errorf("query parameters name two values of %s: %q and %q", field, cur, v)
		}
		req.Set(fd, protoreflect.ValueOfString(v))
		return nil
	}
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		for _, name := range []string{"resume_from", "resumeFrom"} {
			if v := q.Get(name); v != "" && v != id {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("query parameter %q and the Last-Event-ID header disagree; give one", name))
				return true
			}
		}
		q.Set("resume_from", id)
	}
	for name, vs := range q {
		field, ok := watchParams[name]
		if !ok {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("query parameter %q does not apply with watch=true (a watch takes key, resume_from and heartbeat_seconds)", name))
			return true
		}
		for _, v := range vs {
			if err := set(field, v); err != nil {
				writeError(w, http.StatusBadRequest, err.Error())
				return true
			}
		}
	}
	body, err := proto.Marshal(req)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "encoding the watch request failed")
		return true
	}
	env := make([]byte, 5, 5+len(body))
	binary.BigEndian.PutUint32(env[1:], uint32(len(body))) //nolint:gosec // a few bytes
	env = append(env, body...)
	procedure := "/" + string(md.Parent().FullName()) + "/" + string(md.Name())
	in, err := http.NewRequestWithContext(r.Context(), http.MethodPost, procedure, bytes.NewReader(env))
	if err != nil {
		writeError(w, http.StatusInternalServerError, "building the watch request failed")
		return true
	}
	in.RemoteAddr, in.TLS = r.RemoteAddr, r.TLS
	for _, h := range []string{"X-Correlation-Id", "X-Request-Id", "User-Agent", "Traceparent", "Tracestate"} {
		if v := r.Header.Get(h); v != "" {
			in.Header.Set(h, v)
		}
	}
	in.Header.Set("Content-Type", "application/connect+proto")
	in.Header.Set("Connect-Protocol-Version", "1")
	sw := &sseWriter{w: w, rc: http.NewResponseController(w), event: dynamicpb.NewMessageType(md.Output()), header: http.Header{}}
	p.local.ServeHTTP(sw, in)
	sw.finish()
	return true
}

// acceptsEventStream reports whether an Accept header allows
// text/event-stream (an absent one allows anything).
func acceptsEventStream(accept string) bool {
	if strings.TrimSpace(accept) == "" {
		return true
	}
	for _, part := range strings.Split(accept, ",") {
		mt, params, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil || params["q"] == "0" {
			continue
		}
		if mt == "text/event-stream" || mt == "text/*" || mt == "*/*" {
			return true
		}
	}
	return false
}

var (
	// sseJSON is the REST model's JSON (restCodec's options).
	sseJSON = protojson.MarshalOptions{UseProtoNames: true, EmitDefaultValues: true, Resolver: protoregistry.GlobalTypes}
	// sseKeyJSON writes a deleted object, of which only the key is left.
	sseKeyJSON = protojson.MarshalOptions{UseProtoNames: true, Resolver: protoregistry.GlobalTypes}
)

// sseWriter receives the Connect stream of a watch RPC and writes it to
// the client as Server-Sent Events.
type sseWriter struct {
	w      http.ResponseWriter
	rc     *http.ResponseController
	event  protoreflect.MessageType
	header http.Header
	// buf holds a partly received envelope.
	buf []byte
	// started: the SSE response is under way; ended: the stream's
	// end-of-stream message (or a plain HTTP error) arrived.
	started, ended bool
	status         int
	errBody        bytes.Buffer
}

// Header implements http.ResponseWriter: the Connect handler's own
// headers stay here, the client gets SSE's.
func (s *sseWriter) Header() http.Header { return s.header }

// WriteHeader implements http.ResponseWriter.
func (s *sseWriter) WriteHeader(status int) {
	if s.status == 0 {
		s.status = status
	}
}

// Write implements http.ResponseWriter, parsing Connect envelopes.
func (s *sseWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	if s.status != http.StatusOK {
		// Not a stream: a plain HTTP error from before the handler.
		return s.errBody.Write(b)
	}
	s.buf = append(s.buf, b...)
	for len(s.buf) >= 5 {
		n := int(binary.BigEndian.Uint32(s.buf[1:5]))
		if len(s.buf) < 5+n {
			break
		}
		flags, msg := s.buf[0], s.buf[5:5+n]
		var err error
		if flags&0x02 != 0 {
			err = s.end(msg)
		} else {
			err = s.message(msg)
		}
		s.buf = s.buf[5+n:]
		if err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

// Flush implements http.Flusher; every event is flushed as it is written.
func (s *sseWriter) Flush() {}

func (s *sseWriter) start() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // proxies must not hold events back
	s.w.WriteHeader(http.StatusOK)
}

func (s *sseWriter) send(text string) error {
	s.start()
	if _, err := s.w.Write([]byte(text)); err != nil {
		return err
	}
	if err := s.rc.Flush(); err != nil && err != http.ErrNotSupported { //nolint:errorlint // sentinel comparison is documented
		return err
	}
	return nil
}

// message turns one event into an SSE event.
func (s *sseWriter) message(b []byte) error {
	ev := s.event.New()
	if err := proto.Unmarshal(b, ev.Interface()); err != nil {
		return fmt.Errorf("decoding a watch event: %w", err)
	}
	fields := ev.Descriptor().Fields()
	typ := strings.TrimPrefix(string(fields.ByName("type").Enum().Values().ByNumber(ev.Get(fields.ByName("type")).Enum()).Name()), "EVENT_TYPE_")
	cursor := ev.Get(fields.ByName("cursor")).String()
	var out strings.Builder
	if typ == "HEARTBEAT" {
		out.WriteString(": heartbeat\n")
		if cursor != "" {
			// An id without data moves the client's Last-Event-ID and
			// fires no event.
			out.WriteString("id: " + cursor + "\n")
		}
		out.WriteString("\n")
		return s.send(out.String())
	}
	data := []byte("{}")
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.Message() == nil || !ev.Has(fd) {
			continue
		}
		opts := sseJSON
		if typ == "DELETED" {
			opts = sseKeyJSON
		}
		var err error
		if data, err = opts.Marshal(ev.Get(fd).Message().Interface()); err != nil {
			return fmt.Errorf("encoding a watch event: %w", err)
		}
	}
	if cursor != "" {
		out.WriteString("id: " + cursor + "\n")
	}
	out.WriteString("event: " + typ + "\n")
	out.WriteString("data: ")
	out.Write(data)
	out.WriteString("\n\n")
	return s.send(out.String())
}

// end handles the end-of-stream message: an error before the stream began
// is an HTTP error; after, an "error" event.
func (s *sseWriter) end(b []byte) error {
	s.ended = true
	type status struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	var eos struct {
		Error    *status             `json:"error"`
		Metadata map[string][]string `json:"metadata"`
	}
	if json.Unmarshal(b, &eos) != nil {
		eos.Error = &status{Code: "internal", Message: "the watch ended with a status PM could not read"}
	}
	if eos.Error == nil {
		return nil // a clean end
	}
	resume := ""
	if v := eos.Metadata["Watch-Resume-From"]; len(v) > 0 {
		resume = v[0]
	}
	msg := eos.Error.Message
	if msg == "" {
		msg = strings.ReplaceAll(eos.Error.Code, "_", " ")
	}
	if !s.started {
		writeError(s.w, sseStatus(eos.Error.Code), msg)
		s.started = true
		return nil
	}
	body, _ := json.Marshal(map[string]string{"error": msg, "code": eos.Error.Code, "resume_from": resume}) // strings only
	return s.send("event: error\ndata: " + string(body) + "\n\n")
}

// finish answers a call that never streamed (an HTTP error from before
// the handler, such as a refused authorization).
func (s *sseWriter) finish() {
	if s.started {
		return
	}
	status := s.status
	if status == 0 || status == http.StatusOK {
		status = http.StatusInternalServerError
	}
	writeError(s.w, status, errorMessage(s.errBody.Bytes(), status))
}

// sseStatus is the HTTP status of a watch that failed before it began; an
// expired cursor is 410 Gone, as Kubernetes answers a too-old
// resourceVersion.
func sseStatus(code string) int {
	switch code {
	case "invalid_argument":
		return http.StatusBadRequest
	case "out_of_range":
		return http.StatusGone
	case "unauthenticated":
		return http.StatusUnauthorized
	case "permission_denied":
		return http.StatusForbidden
	case "not_found":
		return http.StatusNotFound
	case "resource_exhausted":
		return http.StatusTooManyRequests
	case "unimplemented":
		return http.StatusNotImplemented
	case "unavailable":
		return http.StatusServiceUnavailable
	case "deadline_exceeded":
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}
