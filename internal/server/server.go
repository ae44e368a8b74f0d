// Package server puts every protocol on one port: gRPC (h2c), gRPC-Web and
// Connect on the connect handlers, REST under /api/ through the vanguard
// transcoder onto the same handlers, plus reflection, grpc.health.v1 and
// /health.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"connectrpc.com/vanguard"
)

// Service is one connect service to mount.
type Service struct {
	// Name is the fully-qualified service name, e.g. "oaas.pm.v1.PackageService".
	Name string
	// Path and Handler are what the generated New<Service>Handler returns.
	Path    string
	Handler http.Handler
}

// HealthFunc reports PM's own health for /health and grpc.health.v1.
// healthy is false when PM cannot serve (e.g. storage unreachable); details
// are merged into the /health body.
type HealthFunc func(ctx context.Context) (healthy bool, details map[string]any)

// Config is what New needs.
type Config struct {
	Addr         string
	Services     []Service
	Health       HealthFunc
	MaxBodyBytes int64
	Log          *slog.Logger
	// Metrics, when set, is served at GET /metrics on the API port too.
	Metrics http.Handler
}

// Server is PM's API server.
type Server struct {
	http *http.Server
	log  *slog.Logger
}

// New builds the handler tree and an http.Server speaking HTTP/1.1 and h2c.
func New(cfg Config) (*Server, error) {
	h, err := Handler(cfg)
	if err != nil {
		return nil, err
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Addr:              cfg.Addr,
		Handler:           h,
		Protocols:         &protocols,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(cfg.Log.Handler(), slog.LevelWarn),
	}
	return &Server{http: srv, log: cfg.Log}, nil
}

// Serve accepts connections on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	err := s.http.Serve(ln)
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
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = 4 << 20
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
	mux.Handle("/api/", REST(transcoder, cfg.MaxBodyBytes, cfg.Log))

	reflector := grpcreflect.NewStaticReflector(append(names, grpchealth.HealthV1ServiceName)...)
	mux.Handle(grpcreflect.NewHandlerV1(reflector))
	mux.Handle(grpcreflect.NewHandlerV1Alpha(reflector))
	mux.Handle(grpchealth.NewHandler(checker{cfg.Health, names}))

	if cfg.Metrics != nil {
		mux.Handle("GET /metrics", cfg.Metrics)
	}
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		healthy, details := cfg.Health(r.Context())
		body := map[string]any{}
		for k, v := range details {
			body[k] = v
		}
		status := http.StatusOK
		body["status"] = "healthy"
		if !healthy {
			status = http.StatusServiceUnavailable
			body["status"] = "degraded"
		}
		writeJSON(w, status, body)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no route for %s %s", r.Method, r.URL.Path))
	})
	return mux, nil
}

// checker serves grpc.health.v1 from the same HealthFunc as /health.
type checker struct {
	health HealthFunc
	names  []string
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
	if ok, _ := c.health(ctx); !ok {
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
