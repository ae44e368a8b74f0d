package config

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// Auth configures authentication and the paths left open.
type Auth struct {
	// Mode is AUTH_MODE: "auto" (authentication is on when a tokens file or
	// an OIDC issuer is configured) or "none" (the explicit opt-out: every
	// caller is an anonymous admin).
	Mode string
	// TokensFile is AUTH_TOKENS_FILE: API token hashes and mTLS client
	// mappings (see auth.Credentials).
	TokensFile string
	OIDC       OIDC
	// MetricsOpen (AUTH_METRICS_OPEN) leaves /metrics open when auth is on.
	MetricsOpen bool
	// ReflectionOpen (AUTH_REFLECTION_OPEN) leaves gRPC reflection open
	// when auth is on.
	ReflectionOpen bool
	// FailureLimit (AUTH_FAILURE_LIMIT) is how many failed authentications
	// per minute one source may have before it gets 429 for a minute;
	// 0 disables the limiter.
	FailureLimit int
	// ReloadInterval (AUTH_RELOAD_INTERVAL) is how often the tokens file,
	// a JWKS file and the server TLS files are re-checked for changes.
	ReloadInterval time.Duration
}

// OIDC configures JWT bearer tokens; on when Issuer is set.
type OIDC struct {
	Issuer         string        // AUTH_OIDC_ISSUER
	Audience       string        // AUTH_OIDC_AUDIENCE
	JWKSURL        string        // AUTH_OIDC_JWKS_URL
	JWKSFile       string        // AUTH_OIDC_JWKS_FILE
	RoleClaim      string        // AUTH_OIDC_ROLE_CLAIM, default "role"
	PrincipalClaim string        // AUTH_OIDC_PRINCIPAL_CLAIM, default "sub"
	ClockSkew      time.Duration // AUTH_OIDC_CLOCK_SKEW, default 60s
}

// TLS is the API listener's TLS; on when CertFile is set, and then the
// listener serves TLS only (HTTP/2 through ALPN).
type TLS struct {
	CertFile     string // SERVER_TLS_CERT_FILE
	KeyFile      string // SERVER_TLS_KEY_FILE
	ClientCAFile string // SERVER_TLS_CLIENT_CA_FILE: verify client certificates
}

// Enabled reports whether the listener serves TLS.
func (t TLS) Enabled() bool { return t.CertFile != "" }

// CORS configures browser access from other origins.
type CORS struct {
	// AllowedOrigins is CORS_ALLOWED_ORIGINS, a comma list of
	// scheme://host[:port] (a leading "*." in the host matches subdomains),
	// or "*" alone; empty means no cross-origin access.
	AllowedOrigins []string
	// AllowCredentials is CORS_ALLOW_CREDENTIALS: browsers may send cookies
	// and client certificates cross-origin. Never together with "*".
	AllowCredentials bool
}

// Enabled reports whether requests are authenticated: AUTH_MODE=auto with a
// tokens file or an OIDC issuer configured.
func (a Auth) Enabled() bool {
	return a.Mode == "auto" && (a.TokensFile != "" || a.OIDC.Issuer != "")
}

// CheckExposure is the start-up rule of the safe default: without
// authentication PM may only listen on loopback, unless AUTH_MODE=none says
// the operator wants it open. Call it after flags have been applied.
func (c Config) CheckExposure() error {
	if c.Auth.Enabled() || c.Auth.Mode == "none" || isLoopback(c.Server.Host) {
		return nil
	}
	return fmt.Errorf("refusing to listen on %s without authentication: configure AUTH_TOKENS_FILE or AUTH_OIDC_ISSUER, "+
		"listen on 127.0.0.1, or set AUTH_MODE=none to serve every caller as an admin", c.Server.Addr())
}

// SecurityWarnings are the lines to log at every start about a weakened
// setup, so an opt-out never goes unnoticed.
func (c Config) SecurityWarnings() []string {
	var w []string
	if c.Auth.Mode == "none" {
		w = append(w, "AUTH_MODE=none: authentication is off and every caller is an admin")
	} else if !c.Auth.Enabled() {
		w = append(w, "no authentication configured (AUTH_TOKENS_FILE, AUTH_OIDC_ISSUER): listening on loopback only")
	}
	if c.Auth.Enabled() && !c.TLS.Enabled() {
		w = append(w, "bearer tokens travel without TLS: set SERVER_TLS_CERT_FILE and SERVER_TLS_KEY_FILE, or terminate TLS in front of PM")
	}
	return w
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// security reads the AUTH_*, SERVER_TLS_* and CORS_* variables. Without
// SERVER_HOST and without authentication, PM listens on 127.0.0.1 only, so
// a newcomer's `go run ./cmd/pm` works and exposes nothing.
func (r *reader) security(c *Config) {
	r.str("AUTH_MODE", &c.Auth.Mode)
	c.Auth.Mode = strings.ToLower(c.Auth.Mode)
	r.str("AUTH_TOKENS_FILE", &c.Auth.TokensFile)
	r.str("AUTH_OIDC_ISSUER", &c.Auth.OIDC.Issuer)
	r.str("AUTH_OIDC_AUDIENCE", &c.Auth.OIDC.Audience)
	r.str("AUTH_OIDC_JWKS_URL", &c.Auth.OIDC.JWKSURL)
	r.str("AUTH_OIDC_JWKS_FILE", &c.Auth.OIDC.JWKSFile)
	r.str("AUTH_OIDC_ROLE_CLAIM", &c.Auth.OIDC.RoleClaim)
	r.str("AUTH_OIDC_PRINCIPAL_CLAIM", &c.Auth.OIDC.PrincipalClaim)
	r.duration("AUTH_OIDC_CLOCK_SKEW", &c.Auth.OIDC.ClockSkew)
	r.bool("AUTH_METRICS_OPEN", &c.Auth.MetricsOpen)
	r.bool("AUTH_REFLECTION_OPEN", &c.Auth.ReflectionOpen)
	r.int("AUTH_FAILURE_LIMIT", &c.Auth.FailureLimit)
	r.duration("AUTH_RELOAD_INTERVAL", &c.Auth.ReloadInterval)

	r.str("SERVER_TLS_CERT_FILE", &c.TLS.CertFile)
	r.str("SERVER_TLS_KEY_FILE", &c.TLS.KeyFile)
	r.str("SERVER_TLS_CLIENT_CA_FILE", &c.TLS.ClientCAFile)

	if v, ok := r.get("CORS_ALLOWED_ORIGINS"); ok {
		c.CORS.AllowedOrigins = nil
		for _, o := range strings.Split(v, ",") {
			if o = strings.TrimSpace(o); o != "" {
				c.CORS.AllowedOrigins = append(c.CORS.AllowedOrigins, strings.TrimSuffix(o, "/"))
			}
		}
	}
	r.bool("CORS_ALLOW_CREDENTIALS", &c.CORS.AllowCredentials)

	if _, hostSet := r.get("SERVER_HOST"); !hostSet && !c.Auth.Enabled() && c.Auth.Mode != "none" {
		c.Server.Host = "127.0.0.1"
	}
}

// validateSecurity checks the Auth, TLS and CORS sections; messages name
// the variable.
func (c Config) validateSecurity() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	a, o := c.Auth, c.Auth.OIDC

	switch a.Mode {
	case "auto":
	case "none":
		if a.TokensFile != "" || o.Issuer != "" {
			bad("AUTH_MODE: none turns authentication off, but AUTH_TOKENS_FILE or AUTH_OIDC_ISSUER is set; unset one or the other")
		}
	default:
		bad("AUTH_MODE: %q is not supported (auto or none)", a.Mode)
	}
	if o.Issuer == "" {
		if o.Audience != "" || o.JWKSURL != "" || o.JWKSFile != "" {
			bad("AUTH_OIDC_ISSUER: required when AUTH_OIDC_AUDIENCE or a JWKS is set")
		}
	} else {
		if o.Audience == "" {
			bad("AUTH_OIDC_AUDIENCE: required when AUTH_OIDC_ISSUER is set")
		}
		switch {
		case o.JWKSURL == "" && o.JWKSFile == "":
			bad("AUTH_OIDC_JWKS_URL or AUTH_OIDC_JWKS_FILE: one is required when AUTH_OIDC_ISSUER is set")
		case o.JWKSURL != "" && o.JWKSFile != "":
			bad("AUTH_OIDC_JWKS_URL and AUTH_OIDC_JWKS_FILE: set only one")
		case o.JWKSURL != "":
			if u, err := url.Parse(o.JWKSURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				bad("AUTH_OIDC_JWKS_URL: %q is not an http(s) URL", o.JWKSURL)
			}
		}
	}
	if strings.TrimSpace(o.RoleClaim) == "" {
		bad("AUTH_OIDC_ROLE_CLAIM: must not be empty")
	}
	if strings.TrimSpace(o.PrincipalClaim) == "" {
		bad("AUTH_OIDC_PRINCIPAL_CLAIM: must not be empty")
	}
	if a.FailureLimit < 0 {
		bad("AUTH_FAILURE_LIMIT: must not be negative (0 disables the limiter)")
	}
	if a.ReloadInterval <= 0 {
		bad("AUTH_RELOAD_INTERVAL: must be positive")
	}

	t := c.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		bad("SERVER_TLS_CERT_FILE and SERVER_TLS_KEY_FILE: set both or neither")
	}
	if t.ClientCAFile != "" {
		if t.CertFile == "" {
			bad("SERVER_TLS_CLIENT_CA_FILE: client certificates need server TLS (SERVER_TLS_CERT_FILE, SERVER_TLS_KEY_FILE)")
		}
		if a.Mode == "auto" && a.TokensFile == "" && o.Issuer == "" {
			bad("SERVER_TLS_CLIENT_CA_FILE: client certificates map to principals in AUTH_TOKENS_FILE (clients:); set it")
		}
	}

	for _, origin := range c.CORS.AllowedOrigins {
		if origin == "*" {
			if len(c.CORS.AllowedOrigins) > 1 {
				bad("CORS_ALLOWED_ORIGINS: \"*\" allows every origin; list it alone or not at all")
			}
			if c.CORS.AllowCredentials {
				bad("CORS_ALLOWED_ORIGINS: \"*\" cannot be combined with CORS_ALLOW_CREDENTIALS=true; list the origins")
			}
			continue
		}
		// rs/cors matches one leading wildcard label ("https://*.example.com").
		u, err := url.Parse(strings.Replace(origin, "://*.", "://wildcard.", 1))
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
			u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			bad("CORS_ALLOWED_ORIGINS: %q is not an origin (scheme://host[:port])", origin)
		}
	}
	return errs
}
