package auth

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
)

// Policy says which paths are open to anyone. /health, /livez, /readyz and
// the gRPC health service are always open: probes (the kubelet's gRPC probe
// included) carry no credentials, and they reveal only serving status.
type Policy struct {
	// MetricsOpen leaves /metrics open (AUTH_METRICS_OPEN).
	MetricsOpen bool
	// ReflectionOpen leaves gRPC reflection open (AUTH_REFLECTION_OPEN).
	ReflectionOpen bool
}

// The API description and its reference page are open too: they hold no
// data, and a reader needs them before having a token.
var alwaysOpen = map[string]bool{
	"/health": true, "/livez": true, "/readyz": true,
	"/api/v1/openapi.json": true, "/docs": true,
	// The console's static files: every piece of data it shows comes
	// through the API with the user's token. "/" redirects to it.
	"/": true, "/ui": true,
}

const (
	healthPrefix          = "/grpc.health.v1.Health/"
	reflectionPrefix      = "/grpc.reflection.v1.ServerReflection/"
	reflectionAlphaPrefix = "/grpc.reflection.v1alpha.ServerReflection/"
)

// IsOpen reports whether a request path (or a procedure, which is the path
// of Connect, gRPC and gRPC-Web requests) needs no principal.
func (p Policy) IsOpen(path string) bool {
	switch {
	case alwaysOpen[path], strings.HasPrefix(path, healthPrefix), strings.HasPrefix(path, "/docs/"), strings.HasPrefix(path, "/ui/"):
		return true
	case path == "/metrics":
		return p.MetricsOpen
	case strings.HasPrefix(path, reflectionPrefix), strings.HasPrefix(path, reflectionAlphaPrefix):
		return p.ReflectionOpen
	}
	return false
}

// Options configure Middleware.
type Options struct {
	Policy
	// Disabled is AUTH_MODE=none: every request runs as Anonymous (an
	// admin), and no credential is checked.
	Disabled bool
	// Log receives one debug record per refused request (reason, source,
	// path; never a credential). slog.Default when nil.
	Log *slog.Logger
	// OnRefused, when set, hears of every request refused here (before any
	// handler runs), e.g. to audit it: code is unauthenticated or, for the
	// failure limiter, resource_exhausted.
	OnRefused func(r *http.Request, code connect.Code, reason string)
}

// Middleware authenticates every request that the policy does not leave
// open, puts the Principal in its context (FromContext), and refuses the
// others in the caller's protocol: REST (/api/) and plain HTTP get 401 with
// WWW-Authenticate: Bearer and {"error": "..."}; Connect, gRPC and gRPC-Web
// get unauthenticated. A source the limiter refuses gets 429 with
// Retry-After / resource_exhausted. authn may be nil only when Disabled.
func Middleware(authn *Authenticator, opts Options) func(http.Handler) http.Handler {
	if authn == nil && !opts.Disabled {
		panic("auth.Middleware: nil Authenticator with authentication enabled")
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	rpcErrors := connect.NewErrorWriter()
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if opts.Disabled {
				next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), Anonymous)))
				return
			}
			if opts.IsOpen(r.URL.Path) {
				next.ServeHTTP(w, r)
				return
			}
			p, err := authn.Authenticate(r)
			if err == nil {
				next.ServeHTTP(w, r.WithContext(WithPrincipal(r.Context(), p)))
				return
			}
			var f *Failure
			if !errors.As(err, &f) {
				f = &Failure{Reason: "authentication failed"}
			}
			opts.Log.Debug("request not authenticated", "reason", f.Reason, "limited", f.Limited,
				"source", r.RemoteAddr, "method", r.Method, "path", r.URL.Path)
			if opts.OnRefused != nil {
				code := connect.CodeUnauthenticated
				if f.Limited {
					code = connect.CodeResourceExhausted
				}
				opts.OnRefused(r, code, f.Reason)
			}
			refuse(w, r, rpcErrors, f)
		})
	}
}

func refuse(w http.ResponseWriter, r *http.Request, rpcErrors *connect.ErrorWriter, f *Failure) {
	if f.Limited {
		w.Header().Set("Retry-After", strconv.Itoa(retrySeconds(f.RetryAfter)))
	}
	if !strings.HasPrefix(r.URL.Path, "/api/") && rpcErrors.IsSupported(r) {
		code := connect.CodeUnauthenticated
		if f.Limited {
			code = connect.CodeResourceExhausted
		}
		_ = rpcErrors.Write(w, r, connect.NewError(code, errors.New(f.Reason)))
		return
	}
	status := http.StatusUnauthorized
	if f.Limited {
		status = http.StatusTooManyRequests
	} else {
		challenge := `Bearer realm="oaas-pm"`
		if f.TokenPresented {
			challenge += `, error="invalid_token"`
		}
		w.Header().Set("WWW-Authenticate", challenge)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": f.Reason})
}

func retrySeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}
