// Package gateway is PM's reverse proxy to the OaaS invocation gateway:
// /api/gateway/{path}?{query} is sent to {GATEWAY_URL}/{path}?{query}, as
// the current OaaS PM does, so a console or CLI that reaches PM reaches the
// gateway through PM's authentication and TLS.
package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"time"
)

// Prefix is the path under which PM proxies to the gateway.
const Prefix = "/api/gateway/"

// Config configures the proxy.
type Config struct {
	// URL is the gateway's base URL; empty answers 503.
	URL string
	// Timeout bounds one proxied call.
	Timeout time.Duration
	// MaxBodyBytes bounds a proxied request body.
	MaxBodyBytes int64
	Log          *slog.Logger
}

// Handler returns the proxy for Prefix.
func Handler(cfg Config) (http.Handler, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.URL == "" {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			writeError(w, http.StatusServiceUnavailable, "gateway not configured (GATEWAY_URL)")
		}), nil
	}
	target, err := url.Parse(cfg.URL)
	if err != nil || (target.Scheme != "http" && target.Scheme != "https") || target.Host == "" {
		return nil, fmt.Errorf("GATEWAY_URL %q is not an http(s) URL", cfg.URL)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.ResponseHeaderTimeout = cfg.Timeout
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.URL.Path = strings.TrimSuffix(target.Path, "/") + "/" + strings.TrimPrefix(pr.In.URL.Path, Prefix)
			pr.Out.URL.RawPath = ""
			pr.Out.URL.RawQuery = pr.In.URL.RawQuery
			// PM's credential is for PM; the gateway has its own.
			pr.Out.Header.Del("Authorization")
			pr.Out.Header.Del("Cookie")
			pr.SetXForwarded()
		},
		Transport: transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			status, msg := http.StatusBadGateway, "the gateway did not answer"
			var tooLarge *http.MaxBytesError
			switch {
			case errors.As(err, &tooLarge):
				status, msg = http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes (GATEWAY_MAX_PAYLOAD_BYTES)", cfg.MaxBodyBytes)
			case isTimeout(err):
				status, msg = http.StatusGatewayTimeout, "the gateway did not answer in time"
			}
			cfg.Log.WarnContext(r.Context(), "gateway proxy", "path", r.URL.Path, "error", err.Error())
			writeError(w, status, msg)
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cfg.MaxBodyBytes > 0 && r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, cfg.MaxBodyBytes)
		}
		proxy.ServeHTTP(w, r)
	}), nil
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

func writeError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}
