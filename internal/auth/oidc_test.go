package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/oaas/pm/internal/auth"
)

const (
	testIssuer   = "https://issuer.test"
	testAudience = "oaas-pm"
)

// issuer signs tokens with keys made in the test and serves their JWKS on
// loopback.
type issuer struct {
	mu      sync.Mutex
	keys    map[string]signingKey
	public  jose.JSONWebKeySet
	fetches atomic.Int64
	url     string
}

type signingKey struct {
	alg jose.SignatureAlgorithm
	key any
}

func newIssuer(t testing.TB) *issuer {
	t.Helper()
	is := &issuer{keys: map[string]signingKey{}}
	is.addKey(t, "rsa-1", jose.RS256)
	is.addKey(t, "ec-1", jose.ES256)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		is.fetches.Add(1)
		is.mu.Lock()
		defer is.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(is.public)
	}))
	t.Cleanup(srv.Close)
	is.url = srv.URL + "/jwks"
	return is
}

// addKey makes a key and publishes its public half.
func (is *issuer) addKey(t testing.TB, kid string, alg jose.SignatureAlgorithm) {
	t.Helper()
	k := is.makeKey(t, alg)
	is.mu.Lock()
	defer is.mu.Unlock()
	is.keys[kid] = k
	is.public.Keys = append(is.public.Keys, jose.JSONWebKey{Key: publicOf(k.key), KeyID: kid, Algorithm: string(alg), Use: "sig"})
}

func (is *issuer) makeKey(t testing.TB, alg jose.SignatureAlgorithm) signingKey {
	t.Helper()
	switch alg {
	case jose.RS256:
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		return signingKey{alg, k}
	default:
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return signingKey{jose.ES256, k}
	}
}

func publicOf(k any) any {
	switch k := k.(type) {
	case *rsa.PrivateKey:
		return &k.PublicKey
	case *ecdsa.PrivateKey:
		return &k.PublicKey
	}
	panic("unknown key")
}

// claims are the standard claims of a good token plus extras.
func goodClaims(extra map[string]any) map[string]any {
	now := time.Now()
	c := map[string]any{
		"iss": testIssuer, "aud": []string{testAudience, "other"}, "sub": "alice",
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix(),
		"role": "editor",
	}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

// sign signs claims with the issuer's key kid.
func (is *issuer) sign(t testing.TB, kid string, claims map[string]any) string {
	t.Helper()
	is.mu.Lock()
	k, ok := is.keys[kid]
	is.mu.Unlock()
	if !ok {
		t.Fatalf("no key %s", kid)
	}
	return signWith(t, k, kid, claims)
}

func signWith(t testing.TB, k signingKey, kid string, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: jose.JSONWebKey{Key: k.key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func unsignedToken(claims map[string]any) string {
	enc := base64.RawURLEncoding
	header, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	payload, _ := json.Marshal(claims)
	return enc.EncodeToString(header) + "." + enc.EncodeToString(payload) + "."
}

func (is *issuer) config() auth.OIDCConfig {
	return auth.OIDCConfig{Issuer: testIssuer, Audience: testAudience, JWKSURL: is.url, ClockSkew: 30 * time.Second}
}

func newVerifier(t *testing.T, cfg auth.OIDCConfig) *auth.OIDCVerifier {
	t.Helper()
	v, err := auth.NewOIDCVerifier(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestOIDCVerify(t *testing.T) {
	t.Parallel()
	is := newIssuer(t)
	v := newVerifier(t, is.config())
	stranger := is.makeKey(t, jose.RS256)
	hmac := signingKey{jose.HS256, []byte("0123456789abcdef0123456789abcdef")}

	cases := []struct {
		name  string
		token string
		want  auth.Principal
		err   string
	}{
		{"valid RSA", is.sign(t, "rsa-1", goodClaims(nil)), auth.Principal{Name: "alice", Role: auth.Editor, Method: auth.MethodOIDC}, ""},
		{"valid EC", is.sign(t, "ec-1", goodClaims(map[string]any{"role": "viewer"})), auth.Principal{Name: "alice", Role: auth.Viewer, Method: auth.MethodOIDC}, ""},
		{"audience as a string", is.sign(t, "rsa-1", goodClaims(map[string]any{"aud": testAudience})), auth.Principal{Name: "alice", Role: auth.Editor, Method: auth.MethodOIDC}, ""},
		{"expired inside the skew", is.sign(t, "rsa-1", goodClaims(map[string]any{"exp": time.Now().Add(-10 * time.Second).Unix()})), auth.Principal{Name: "alice", Role: auth.Editor, Method: auth.MethodOIDC}, ""},
		{"role list picks the most trusted", is.sign(t, "rsa-1", goodClaims(map[string]any{"role": []string{"viewer", "nobody", "deployer"}})), auth.Principal{Name: "alice", Role: auth.Deployer, Method: auth.MethodOIDC}, ""},
		{"expired", is.sign(t, "rsa-1", goodClaims(map[string]any{"exp": time.Now().Add(-2 * time.Minute).Unix()})), auth.Principal{}, "expired"},
		{"no expiry", is.sign(t, "rsa-1", goodClaims(map[string]any{"exp": nil})), auth.Principal{}, "no expiry"},
		{"not valid yet", is.sign(t, "rsa-1", goodClaims(map[string]any{"nbf": time.Now().Add(5 * time.Minute).Unix()})), auth.Principal{}, "not valid yet"},
		{"wrong issuer", is.sign(t, "rsa-1", goodClaims(map[string]any{"iss": "https://evil.test"})), auth.Principal{}, "issuer"},
		{"wrong audience", is.sign(t, "rsa-1", goodClaims(map[string]any{"aud": "someone-else"})), auth.Principal{}, "audience"},
		{"unknown key", signWith(t, stranger, "rsa-2", goodClaims(nil)), auth.Principal{}, "signature"},
		{"known kid, wrong key", signWith(t, stranger, "rsa-1", goodClaims(nil)), auth.Principal{}, "signature"},
		{"missing role claim", is.sign(t, "rsa-1", goodClaims(map[string]any{"role": nil})), auth.Principal{}, `claim "role"`},
		{"unknown role", is.sign(t, "rsa-1", goodClaims(map[string]any{"role": "superuser"})), auth.Principal{}, `claim "role"`},
		{"missing subject", is.sign(t, "rsa-1", goodClaims(map[string]any{"sub": nil})), auth.Principal{}, `claim "sub"`},
		{"alg none", unsignedToken(goodClaims(nil)), auth.Principal{}, "accepted algorithm"},
		{"HMAC", signWith(t, hmac, "rsa-1", goodClaims(nil)), auth.Principal{}, "accepted algorithm"},
		{"garbage", "a.b.c", auth.Principal{}, "accepted algorithm"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := v.Verify(context.Background(), tc.token)
			if tc.err == "" {
				if err != nil || got != tc.want {
					t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one containing %q (principal %+v)", err, tc.err, got)
			}
			if strings.Contains(err.Error(), tc.token) {
				t.Error("error quotes the token")
			}
		})
	}
}

func TestOIDCCustomClaims(t *testing.T) {
	t.Parallel()
	is := newIssuer(t)
	cfg := is.config()
	cfg.RoleClaim = "realm_access.roles"
	cfg.PrincipalClaim = "email"
	v := newVerifier(t, cfg)
	tok := is.sign(t, "ec-1", goodClaims(map[string]any{
		"email": "bob@example.com", "realm_access": map[string]any{"roles": []string{"offline_access", "admin"}},
	}))
	got, err := v.Verify(context.Background(), tok)
	if err != nil || got != (auth.Principal{Name: "bob@example.com", Role: auth.Admin, Method: auth.MethodOIDC}) {
		t.Errorf("got %+v, %v", got, err)
	}
}

func TestOIDCKeyRotationRefetchesJWKS(t *testing.T) {
	t.Parallel()
	is := newIssuer(t)
	v := newVerifier(t, is.config())
	if _, err := v.Verify(context.Background(), is.sign(t, "rsa-1", goodClaims(nil))); err != nil {
		t.Fatal(err)
	}
	before := is.fetches.Load()
	// Cached keys serve further tokens without a fetch.
	if _, err := v.Verify(context.Background(), is.sign(t, "ec-1", goodClaims(nil))); err != nil {
		t.Fatal(err)
	}
	if is.fetches.Load() != before {
		t.Error("a known key caused a JWKS fetch")
	}
	is.addKey(t, "rsa-2", jose.RS256)
	if _, err := v.Verify(context.Background(), is.sign(t, "rsa-2", goodClaims(nil))); err != nil {
		t.Fatalf("token signed with a newly published key: %v", err)
	}
	if is.fetches.Load() == before {
		t.Error("a new key id did not refetch the JWKS")
	}
}

func TestOIDCJWKSFile(t *testing.T) {
	t.Parallel()
	is := newIssuer(t)
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS := func() {
		is.mu.Lock()
		b, err := json.Marshal(is.public)
		is.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeJWKS()
	cfg := is.config()
	cfg.JWKSURL, cfg.JWKSFile, cfg.ReloadInterval = "", path, 10*time.Millisecond
	cfg.Log = slog.New(slog.DiscardHandler)
	v := newVerifier(t, cfg)
	if _, err := v.Verify(context.Background(), is.sign(t, "ec-1", goodClaims(nil))); err != nil {
		t.Fatal(err)
	}
	is.addKey(t, "ec-2", jose.ES256)
	tok := is.sign(t, "ec-2", goodClaims(nil))
	if _, err := v.Verify(context.Background(), tok); err == nil {
		t.Fatal("key not in the file accepted")
	}
	writeJWKS()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := v.Verify(context.Background(), tok)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rewritten JWKS file never picked up: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if is.fetches.Load() != 0 {
		t.Error("file mode fetched the URL")
	}
}

func TestOIDCConfigErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	garbage := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(garbage, []byte(`{"keys": []}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]auth.OIDCConfig{
		"no issuer":      {Audience: "a", JWKSURL: "http://127.0.0.1:1/"},
		"no audience":    {Issuer: "i", JWKSURL: "http://127.0.0.1:1/"},
		"no keys":        {Issuer: "i", Audience: "a"},
		"both key kinds": {Issuer: "i", Audience: "a", JWKSURL: "http://127.0.0.1:1/", JWKSFile: garbage},
		"empty JWKS":     {Issuer: "i", Audience: "a", JWKSFile: garbage},
		"negative skew":  {Issuer: "i", Audience: "a", JWKSURL: "http://127.0.0.1:1/", ClockSkew: -time.Second},
	} {
		if _, err := auth.NewOIDCVerifier(context.Background(), cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
