package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// TestVerifiedTokenCache: a remembered token is served from the cache, but
// never past its expiry, and never longer than verifiedTTL after a key is
// withdrawn from the JWKS.
func TestVerifiedTokenCache(t *testing.T) {
	t.Parallel()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeKeys := func(keys ...jose.JSONWebKey) {
		b, err := json.Marshal(jose.JSONWebKeySet{Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writeKeys(jose.JSONWebKey{Key: &key.PublicKey, KeyID: "k1", Use: "sig"})
	v, err := NewOIDCVerifier(context.Background(), OIDCConfig{
		Issuer: "https://i", Audience: "pm", JWKSFile: path, ClockSkew: 10 * time.Second,
		ReloadInterval: time.Nanosecond, Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	v.now = func() time.Time { return now }
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	sign := func(exp time.Time) string {
		raw, err := jwt.Signed(signer).Claims(map[string]any{"iss": "https://i", "aud": "pm", "sub": "s", "role": "viewer", "exp": exp.Unix()}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}

	short := sign(now.Add(20 * time.Second))
	if _, err := v.Verify(context.Background(), short); err != nil {
		t.Fatal(err)
	}
	if len(v.verified) != 1 {
		t.Fatalf("verified token not remembered: %d", len(v.verified))
	}
	now = now.Add(29 * time.Second) // inside exp + skew
	if _, err := v.Verify(context.Background(), short); err != nil {
		t.Errorf("inside the skew: %v", err)
	}
	now = now.Add(2 * time.Second) // past exp + skew
	if _, err := v.Verify(context.Background(), short); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("the cache served an expired token: %v", err)
	}

	long := sign(now.Add(time.Hour))
	if _, err := v.Verify(context.Background(), long); err != nil {
		t.Fatal(err)
	}
	writeKeys() // the key is withdrawn (and the file is now invalid: no keys)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	writeKeys(jose.JSONWebKey{Key: &other.PublicKey, KeyID: "k2", Use: "sig"})
	now = now.Add(verifiedTTL - time.Second)
	if _, err := v.Verify(context.Background(), long); err != nil {
		t.Errorf("within the cache TTL: %v", err)
	}
	now = now.Add(2 * time.Second)
	if _, err := v.Verify(context.Background(), long); err == nil {
		t.Error("a token of a withdrawn key outlived the cache TTL")
	}
}
