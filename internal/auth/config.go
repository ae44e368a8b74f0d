package auth

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	connectcors "connectrpc.com/cors"
	"github.com/rs/cors"

	"github.com/oaas/pm/internal/config"
)

// FromConfig builds PM's authentication from its configuration: the
// Authenticator (nil when authentication is off: AUTH_MODE=none, or nothing
// configured and so, by config's rule, loopback only) and the Middleware
// options, whose Policy the Interceptor takes too.
func FromConfig(ctx context.Context, c config.Config, log *slog.Logger) (*Authenticator, Options, error) {
	opts := Options{
		Policy:   Policy{MetricsOpen: c.Auth.MetricsOpen, ReflectionOpen: c.Auth.ReflectionOpen},
		Disabled: !c.Auth.Enabled(),
		Log:      log,
	}
	if opts.Disabled {
		return nil, opts, nil
	}
	cfg := Config{
		TokensFile:     c.Auth.TokensFile,
		ReloadInterval: c.Auth.ReloadInterval,
		FailureLimit:   c.Auth.FailureLimit,
		Log:            log,
	}
	if o := c.Auth.OIDC; o.Issuer != "" {
		cfg.OIDC = &OIDCConfig{
			Issuer: o.Issuer, Audience: o.Audience, JWKSURL: o.JWKSURL, JWKSFile: o.JWKSFile,
			RoleClaim: o.RoleClaim, PrincipalClaim: o.PrincipalClaim, ClockSkew: o.ClockSkew,
		}
	}
	a, err := New(ctx, cfg)
	if err != nil {
		return nil, opts, err
	}
	return a, opts, nil
}

// CORS wraps a handler with the CORS_ALLOWED_ORIGINS allowlist, allowing
// the methods and headers Connect, gRPC-Web and REST clients need
// (Authorization included) and exposing the ones they read. With no origins
// it returns the handler unchanged: browsers then refuse cross-origin calls.
// It belongs outside Middleware, so preflights (which carry no credential)
// are answered before authentication.
func CORS(c config.CORS, next http.Handler) http.Handler {
	if len(c.AllowedOrigins) == 0 {
		return next
	}
	methods := append(connectcors.AllowedMethods(), http.MethodPut, http.MethodPatch, http.MethodDelete)
	headers := append(connectcors.AllowedHeaders(), "Authorization", "Idempotency-Key", "X-Correlation-Id",
		"If-Match", "If-None-Match", "Field-Validation", "X-Dry-Run")
	return cors.New(cors.Options{
		AllowedOrigins: c.AllowedOrigins,
		AllowedMethods: methods,
		AllowedHeaders: headers,
		ExposedHeaders: append(connectcors.ExposedHeaders(), "Retry-After", "WWW-Authenticate", "X-Correlation-Id",
			"ETag", "Warning", "X-Next-Page-Token", "X-Cluster-Errors", "Idempotent-Replayed", "X-Dry-Run", "X-Write-Status"),
		AllowCredentials: c.AllowCredentials,
		MaxAge:           int((2 * time.Hour).Seconds()),
	}).Handler(next)
}
