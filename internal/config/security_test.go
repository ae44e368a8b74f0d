package config_test

import (
	"strings"
	"testing"
	"time"
)

func TestSecurityDefaults(t *testing.T) {
	t.Parallel()
	c, err := load(nil)
	if err != nil {
		t.Fatal(err)
	}
	a := c.Auth
	if a.Mode != "auto" || a.Enabled() || a.FailureLimit != 60 || a.MetricsOpen || a.ReflectionOpen ||
		a.OIDC.RoleClaim != "role" || a.OIDC.PrincipalClaim != "sub" || a.OIDC.ClockSkew != 60*time.Second {
		t.Errorf("auth defaults %+v", a)
	}
	if c.TLS.Enabled() || len(c.CORS.AllowedOrigins) != 0 || c.CORS.AllowCredentials {
		t.Errorf("TLS/CORS defaults %+v %+v", c.TLS, c.CORS)
	}
	if err := c.CheckExposure(); err != nil {
		t.Errorf("the default must be allowed to start: %v", err)
	}
}

func TestSecurityLoad(t *testing.T) {
	t.Parallel()
	c, err := load(map[string]string{
		"AUTH_TOKENS_FILE":          "/etc/pm/tokens.yaml",
		"AUTH_OIDC_ISSUER":          "https://idp.example.com",
		"AUTH_OIDC_AUDIENCE":        "oaas-pm",
		"AUTH_OIDC_JWKS_URL":        "https://idp.example.com/keys",
		"AUTH_OIDC_ROLE_CLAIM":      "realm_access.roles",
		"AUTH_OIDC_PRINCIPAL_CLAIM": "email",
		"AUTH_OIDC_CLOCK_SKEW":      "30s",
		"AUTH_METRICS_OPEN":         "true",
		"AUTH_REFLECTION_OPEN":      "true",
		"AUTH_FAILURE_LIMIT":        "0",
		"AUTH_RELOAD_INTERVAL":      "2",
		"SERVER_TLS_CERT_FILE":      "/tls/tls.crt", "SERVER_TLS_KEY_FILE": "/tls/tls.key",
		"SERVER_TLS_CLIENT_CA_FILE": "/tls/ca.crt",
		"CORS_ALLOWED_ORIGINS":      "https://console.example.com/, http://localhost:5173,https://*.example.org",
		"CORS_ALLOW_CREDENTIALS":    "true",
	})
	if err != nil {
		t.Fatal(err)
	}
	a, o := c.Auth, c.Auth.OIDC
	if !a.Enabled() || a.TokensFile != "/etc/pm/tokens.yaml" || !a.MetricsOpen || !a.ReflectionOpen || a.FailureLimit != 0 || a.ReloadInterval != 2*time.Second {
		t.Errorf("auth %+v", a)
	}
	if o.Issuer != "https://idp.example.com" || o.Audience != "oaas-pm" || o.JWKSURL != "https://idp.example.com/keys" ||
		o.RoleClaim != "realm_access.roles" || o.PrincipalClaim != "email" || o.ClockSkew != 30*time.Second {
		t.Errorf("oidc %+v", o)
	}
	if !c.TLS.Enabled() || c.TLS.KeyFile != "/tls/tls.key" || c.TLS.ClientCAFile != "/tls/ca.crt" {
		t.Errorf("tls %+v", c.TLS)
	}
	want := []string{"https://console.example.com", "http://localhost:5173", "https://*.example.org"}
	if strings.Join(c.CORS.AllowedOrigins, " ") != strings.Join(want, " ") || !c.CORS.AllowCredentials {
		t.Errorf("cors %+v", c.CORS)
	}
	// With authentication on, the default listener is every interface again.
	if c.Server.Host != "0.0.0.0" || c.CheckExposure() != nil {
		t.Errorf("host %q, exposure %v", c.Server.Host, c.CheckExposure())
	}
}

func TestSecurityErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	oidc := func(extra map[string]string) map[string]string {
		env := map[string]string{"AUTH_OIDC_ISSUER": "https://idp", "AUTH_OIDC_AUDIENCE": "pm", "AUTH_OIDC_JWKS_URL": "https://idp/keys"}
		for k, v := range extra {
			if v == "" {
				delete(env, k)
			} else {
				env[k] = v
			}
		}
		return env
	}
	cases := []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"mode", map[string]string{"AUTH_MODE": "off"}, []string{"AUTH_MODE"}},
		{"none with tokens", map[string]string{"AUTH_MODE": "none", "AUTH_TOKENS_FILE": "/t"}, []string{"AUTH_MODE", "AUTH_TOKENS_FILE"}},
		{"audience without issuer", map[string]string{"AUTH_OIDC_AUDIENCE": "pm"}, []string{"AUTH_OIDC_ISSUER"}},
		{"issuer without audience", oidc(map[string]string{"AUTH_OIDC_AUDIENCE": ""}), []string{"AUTH_OIDC_AUDIENCE"}},
		{"issuer without keys", oidc(map[string]string{"AUTH_OIDC_JWKS_URL": ""}), []string{"AUTH_OIDC_JWKS_URL", "AUTH_OIDC_JWKS_FILE"}},
		{"two key sources", oidc(map[string]string{"AUTH_OIDC_JWKS_FILE": "/k.json"}), []string{"AUTH_OIDC_JWKS_URL and AUTH_OIDC_JWKS_FILE"}},
		{"JWKS URL scheme", oidc(map[string]string{"AUTH_OIDC_JWKS_URL": "file:///k.json"}), []string{"AUTH_OIDC_JWKS_URL"}},
		{"clock skew", map[string]string{"AUTH_OIDC_CLOCK_SKEW": "-5s"}, []string{"AUTH_OIDC_CLOCK_SKEW"}},
		{"failure limit", map[string]string{"AUTH_FAILURE_LIMIT": "-1"}, []string{"AUTH_FAILURE_LIMIT"}},
		{"failure limit type", map[string]string{"AUTH_FAILURE_LIMIT": "many"}, []string{"AUTH_FAILURE_LIMIT"}},
		{"metrics open", map[string]string{"AUTH_METRICS_OPEN": "yes please"}, []string{"AUTH_METRICS_OPEN"}},
		{"reload interval", map[string]string{"AUTH_RELOAD_INTERVAL": "0"}, []string{"AUTH_RELOAD_INTERVAL"}},
		{"cert without key", map[string]string{"SERVER_TLS_CERT_FILE": "/c"}, []string{"SERVER_TLS_CERT_FILE", "SERVER_TLS_KEY_FILE"}},
		{"client CA without TLS", map[string]string{"SERVER_TLS_CLIENT_CA_FILE": "/ca", "AUTH_TOKENS_FILE": "/t"}, []string{"SERVER_TLS_CLIENT_CA_FILE"}},
		{"client CA without mappings", map[string]string{"SERVER_TLS_CLIENT_CA_FILE": "/ca", "SERVER_TLS_CERT_FILE": "/c", "SERVER_TLS_KEY_FILE": "/k"}, []string{"SERVER_TLS_CLIENT_CA_FILE", "AUTH_TOKENS_FILE"}},
		{"wildcard with credentials", map[string]string{"CORS_ALLOWED_ORIGINS": "*", "CORS_ALLOW_CREDENTIALS": "true"}, []string{"CORS_ALLOWED_ORIGINS", "CORS_ALLOW_CREDENTIALS"}},
		{"wildcard among origins", map[string]string{"CORS_ALLOWED_ORIGINS": "https://a.example, *"}, []string{"CORS_ALLOWED_ORIGINS"}},
		{"origin with a path", map[string]string{"CORS_ALLOWED_ORIGINS": "https://a.example/app"}, []string{"CORS_ALLOWED_ORIGINS", "/app"}},
		{"origin without scheme", map[string]string{"CORS_ALLOWED_ORIGINS": "a.example"}, []string{"CORS_ALLOWED_ORIGINS"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := load(tc.env)
			if err == nil {
				t.Fatalf("%v accepted", tc.env)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %s", err, w)
				}
			}
		})
	}
	// "*" without credentials is a valid (public, read-only by bearer) setup.
	if _, err := load(map[string]string{"CORS_ALLOWED_ORIGINS": "*"}); err != nil {
		t.Errorf("CORS_ALLOWED_ORIGINS=* alone: %v", err)
	}
}

func TestExposure(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		env     map[string]string
		host    string
		refused bool
	}{
		{"default", nil, "127.0.0.1", false},
		{"explicit all interfaces without auth", map[string]string{"SERVER_HOST": "0.0.0.0"}, "0.0.0.0", true},
		{"a public address without auth", map[string]string{"SERVER_HOST": "10.1.2.3"}, "10.1.2.3", true},
		{"IPv6 loopback", map[string]string{"SERVER_HOST": "::1"}, "::1", false},
		{"localhost", map[string]string{"SERVER_HOST": "localhost"}, "localhost", false},
		{"opt-out keeps all interfaces", map[string]string{"AUTH_MODE": "none"}, "0.0.0.0", false},
		{"opt-out, explicit host", map[string]string{"AUTH_MODE": "none", "SERVER_HOST": "0.0.0.0"}, "0.0.0.0", false},
		{"tokens", map[string]string{"AUTH_TOKENS_FILE": "/t", "SERVER_HOST": "0.0.0.0"}, "0.0.0.0", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := load(tc.env)
			if err != nil {
				t.Fatal(err)
			}
			if c.Server.Host != tc.host {
				t.Errorf("host %q, want %q", c.Server.Host, tc.host)
			}
			err = c.CheckExposure()
			if (err != nil) != tc.refused {
				t.Fatalf("CheckExposure: %v, refused want %v", err, tc.refused)
			}
			if err != nil && !strings.Contains(err.Error(), "AUTH_MODE=none") {
				t.Errorf("refusal %q does not name AUTH_MODE=none", err)
			}
		})
	}
	// A flag can still move the host after Load; the check sees it.
	c, _ := load(nil)
	c.Server.Host = "0.0.0.0"
	if c.CheckExposure() == nil {
		t.Error("host changed after Load escaped the check")
	}
}

func TestSecurityWarnings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"AUTH_MODE": "none"}, "AUTH_MODE=none"},
		{nil, "loopback only"},
		{map[string]string{"AUTH_TOKENS_FILE": "/t"}, "without TLS"},
	} {
		c, err := load(tc.env)
		if err != nil {
			t.Fatal(err)
		}
		if w := strings.Join(c.SecurityWarnings(), "\n"); !strings.Contains(w, tc.want) {
			t.Errorf("%v: warnings %q lack %q", tc.env, w, tc.want)
		}
	}
	c, _ := load(map[string]string{"AUTH_TOKENS_FILE": "/t", "SERVER_TLS_CERT_FILE": "/c", "SERVER_TLS_KEY_FILE": "/k"})
	if w := c.SecurityWarnings(); len(w) != 0 {
		t.Errorf("a secure setup warns: %q", w)
	}
}
