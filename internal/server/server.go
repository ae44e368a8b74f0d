// Package server puts every protocol on one port: gRPC (h2c), gRPC-Web and
// Connect on the connect handlers, REST under /api/ through the vanguard
// transcoder onto the same handlers, plus reflection, grpc.health.v1 and the
// probes (/livez, /readyz, /health).
//
// It is also PM's request boundary: every request, whatever its protocol,
// passes the same limits (body size after decompression, read deadlines,
// connection cap, per-request timeout, valid UTF-8) and the same field
// policy (fieldcheck), and errors leave in the client's terms.
package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/vanguard"
	"golang.org/x/net/netutil"

	"github.com/oaas/pm/internal/fieldcheck"
	"github.com/oaas/pm/internal/restmodel"
)

// Service is one connect service to mount.
type Service struct {
	// Name is the fully-qualified service name, e.g. "oaas.pm.v1.PackageService".
	Name string
	// Path and Handler are what the generated New<Service>Handler returns.
	Path    string
	Handler http.Handler
}

// ProbeFunc reports whether PM can serve; details are merged into the
// /health body (they must be safe to show anyone).
type ProbeFunc func(ctx context.Context) (ok bool, details map[string]any)

// Limits bound what one request or one client may cost.
type Limits struct {
	// MaxBodyBytes caps a request message after decompression, on every
	// protocol.
	MaxBodyBytes int64
	// ReadTimeout bounds reading a request's headers and body; a client
	// that trickles its body is cut off.
	ReadTimeout time.Duration
	// IdleTimeout closes keep-alive connections that carry no request.
	IdleTimeout time.Duration
	// RequestTimeout bounds a unary call (streams are exempt).
	RequestTimeout time.Duration
	// MaxConnections caps concurrent connections; more wait in the
	// kernel's accept queue.
	MaxConnections int
	// MaxHeaderBytes caps request headers.
	MaxHeaderBytes int
}

// DefaultLimits are the limits when a Config leaves them zero.
var DefaultLimits = Limits{
	MaxBodyBytes: 4 << 20, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
	RequestTimeout: 60 * time.Second, MaxConnections: 1024, MaxHeaderBytes: 64 << 10,
}

// maxQueryBytes caps a query string; past it the request is 414.
const maxQueryBytes = 8 << 10

// Config is what New needs.
type Config struct {
	Addr     string
	Services []Service
	// Ready reports whether PM can serve requests (storage reachable, schema
	// current): /readyz, /health and grpc.health.v1 follow it.
	Ready  ProbeFunc
	Limits Limits
	// Aliases are other accepted names of request fields (all protocols).
	Aliases fieldcheck.Aliases
	Log     *slog.Logger
	// Metrics, when set, is served at GET /metrics on the API port too.
	Metrics http.Handler
	// Wrap, when set, wraps the routes inside the limits: authentication
	// and CORS, so that they apply to every protocol alike.
	Wrap func(http.Handler) http.Handler
	// HandlerOptions go to the handlers the server builds itself (gRPC
	// health and reflection), e.g. the authorization interceptor.
	HandlerOptions []connect.HandlerOption
	// Routes are further handlers by ServeMux pattern (the gateway proxy,
	// the console); they pass the same limits, authentication and CORS.
	Routes map[string]http.Handler
	// OpenAPI, when set, is served at /api/v1/openapi.json, and Docs (the
	// reference page's files) under /docs/.
	OpenAPI []byte
	Docs    fs.FS
	// TLS, when set, makes the port speak TLS only (HTTP/2 by ALPN and
	// HTTP/1.1); otherwise it speaks cleartext HTTP/1.1 and h2c.
	TLS *tls.Config
}

// Server is PM's API server.
type Server struct {
	http   *http.Server
	log    *slog.Logger
	limits Limits
}

// New builds the handler tree and an http.Server speaking HTTP/1.1 and h2c.
func New(cfg Config) (*Server, error) {
	cfg.Limits = cfg.Limits.withDefaults()
	h, err := Handler(cfg)
	if err != nil {
		return nil, err
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	if cfg.TLS != nil {
		protocols.SetHTTP2(true)
	} else {
		protocols.SetUnencryptedHTTP2(true)
	}
	srv := &http.Server{
		TLSConfig: cfg.TLS,
		Addr:      cfg.Addr,
		Handler:   h,
		Protocols: &protocols,
		// Headers must come quickly; the body within ReadTimeout (HTTP/2
		// applies it per stream).
		ReadHeaderTimeout: min(10*time.Second, cfg.Limits.ReadTimeout),
		ReadTimeout:       cfg.Limits.ReadTimeout,
		IdleTimeout:       cfg.Limits.IdleTimeout,
		MaxHeaderBytes:    cfg.Limits.MaxHeaderBytes,
		HTTP2:             &http.HTTP2Config{MaxConcurrentStreams: 250},
		ErrorLog:          slog.NewLogLogger(cfg.Log.Handler(), slog.LevelWarn),
	}
	return &Server{http: srv, log: cfg.Log, limits: cfg.Limits}, nil
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = d.MaxBodyBytes
	}
	if l.ReadTimeout <= 0 {
		l.ReadTimeout = d.ReadTimeout
	}
	if l.IdleTimeout <= 0 {
		l.IdleTimeout = d.IdleTimeout
	}
	if l.RequestTimeout <= 0 {
		l.RequestTimeout = d.RequestTimeout
	}
	if l.MaxConnections <= 0 {
		l.MaxConnections = d.MaxConnections
	}
	if l.MaxHeaderBytes <= 0 {
		l.MaxHeaderBytes = d.MaxHeaderBytes
	}
	return l
}

// Serve accepts connections on ln, at most Limits.MaxConnections at once,
// until Shutdown; with TLS configured, only TLS handshakes are served.
func (s *Server) Serve(ln net.Listener) error {
	ln = netutil.LimitListener(ln, s.limits.MaxConnections)
	var err error
	if s.http.TLSConfig != nil {
		err = s.http.ServeTLS(ln, "", "")
	} else {
		err = s.http.Serve(ln)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and waits for in-flight requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

// Handler returns the whole handler tree; tests serve it on their own listeners.
func Handler(cfg Config) (http.Handler, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.Ready == nil {
		cfg.Ready = func(context.Context) (bool, map[string]any) { return true, nil }
	}
	mux := http.NewServeMux()
	names := make([]string, 0, len(cfg.Services))
	vsvcs := make([]*vanguard.Service, 0, len(cfg.Services))
	for _, s := range cfg.Services {
		// Connect handlers are mounted directly so Connect, gRPC and gRPC-Web
		// reach them unchanged; only /api/ goes through the transcoder.
		mux.Handle(s.Path, s.Handler)
		names = append(names, s.Name)
		vsvcs = append(vsvcs, vanguard.NewService(s.Path, s.Handler))
	}
	transcoder, err := vanguard.NewTranscoder(vsvcs,
		vanguard.WithCodec(restCodec),
		vanguard.WithDefaultServiceOptions(vanguard.WithTargetCodecs(vanguard.CodecProto)),
	)
	if err != nil {
		return nil, fmt.Errorf("building REST transcoder: %w", err)
	}
	descs, err := restmodel.Services(names)
	if err != nil {
		return nil, fmt.Errorf("reading REST routes: %w", err)
	}
	rts, err := restmodel.RoutesOf(descs)
	if err != nil {
		return nil, fmt.Errorf("reading REST routes: %w", err)
	}
	mux.Handle("/api/", &rest{next: transcoder, routes: rts, maxBody: cfg.Limits.MaxBodyBytes, aliases: cfg.Aliases, log: cfg.Log,
		watches: watchRoutes(descs), local: mux})

	reflector := grpcreflect.NewStaticReflector(append(names, grpchealth.HealthV1ServiceName)...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector, cfg.HandlerOptions...))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector, cfg.HandlerOptions...))
	mux.Handle(grpchealth.NewHandler(checker{cfg.Ready, names}, cfg.HandlerOptions...))

	if cfg.Metrics != nil {
		mux.Handle("GET /metrics", cfg.Metrics)
	}
	for pattern, h := range cfg.Routes {
		mux.Handle(pattern, h)
	}
	if cfg.OpenAPI != nil {
		mux.HandleFunc("GET /api/v1/openapi.json", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-cache")
			_, _ = w.Write(cfg.OpenAPI)
		})
	}
	if cfg.Docs != nil {
		mux.Handle("GET /docs", http.RedirectHandler("/docs/", http.StatusMovedPermanently))
		mux.Handle("GET /docs/", http.StripPrefix("/docs/", http.FileServerFS(cfg.Docs)))
	}
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		writeProbe(w, true, "live", "", nil) // the process answers: that is all liveness means
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ok, details := cfg.Ready(r.Context())
		writeProbe(w, ok, "ready", "not ready", details)
	})
	// /health is the probe OaaS tools know; it follows readiness.
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		ok, details := cfg.Ready(r.Context())
		writeProbe(w, ok, "healthy", "unhealthy", details)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})
	var h http.Handler = mux
	if cfg.Wrap != nil {
		h = cfg.Wrap(h)
	}
	return guard(h, cfg.Limits, restmodel.Streaming(descs)), nil
}

func writeProbe(w http.ResponseWriter, ok bool, good, bad string, details map[string]any) {
	body := map[string]any{}
	for k, v := range details {
		body[k] = v
	}
	body["timestamp"] = time.Now().UTC().Format(time.RFC3339Nano)
	status := http.StatusOK
	body["status"] = good
	if !ok {
		status = http.StatusServiceUnavailable
		body["status"] = bad
	}
	writeJSON(w, status, body)
}

// guard applies the limits every request passes, whatever its protocol:
// valid UTF-8 in path and query, a bounded query, and a deadline for unary
// calls.
func guard(next http.Handler, limits Limits, streams map[string]bool) http.Handler {
	errs := connect.NewErrorWriter()
	// refuse answers in the caller's protocol: connect's error format for
	// Connect, gRPC and gRPC-Web, {"error"} for everything else.
	refuse := func(w http.ResponseWriter, r *http.Request, status int, msg string) {
		if !strings.HasPrefix(r.URL.Path, "/api/") && errs.IsSupported(r) {
			_ = errs.Write(w, r, connect.NewError(connect.CodeInvalidArgument, errors.New(msg)))
			return
		}
		writeError(w, status, msg)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.URL.RawQuery) > maxQueryBytes {
			refuse(w, r, http.StatusRequestURITooLong, fmt.Sprintf("query string exceeds %d bytes", maxQueryBytes))
			return
		}
		if !utf8.ValidString(r.URL.Path) {
			refuse(w, r, http.StatusBadRequest, "request path is not valid UTF-8")
			return
		}
		if q, err := url.QueryUnescape(r.URL.RawQuery); err != nil || !utf8.ValidString(q) {
			refuse(w, r, http.StatusBadRequest, "query string is not valid UTF-8 or is malformed")
			return
		}
		// A stream (a streaming RPC, a REST watch) lives as long as its
		// client; net/http lifts the read deadline once its request is in.
		if !streams[r.URL.Path] && !isWatch(r) && !strings.HasPrefix(r.URL.Path, "/grpc.reflection.") {
			ctx, cancel := context.WithTimeout(r.Context(), limits.RequestTimeout)
			defer cancel()
			r = r.WithContext(ctx)
		}
		next.ServeHTTP(w, r)
	})
}

// checker serves grpc.health.v1 from the same probe as /readyz.
type checker struct {
	ready ProbeFunc
	names []string
}

func (c checker) Check(ctx context.Context, req *grpchealth.CheckRequest) (*grpchealth.CheckResponse, error) {
	if req.Service != "" {
		known := false
		for _, n := range c.names {
			known = known || n == req.Service
		}
		if !known {
			return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("unknown service %q", req.Service))
		}
	}
	if ok, _ := c.ready(ctx); !ok {
		return &grpchealth.CheckResponse{Status: grpchealth.StatusNotServing}, nil
	}
	return &grpchealth.CheckResponse{Status: grpchealth.StatusServing}, nil
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}
