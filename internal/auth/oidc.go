package auth

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/oaas/pm/internal/filewatch"
)

// signingAlgs are the JWT algorithms PM accepts: asymmetric only, since the
// keys come from a public JWKS; "none" and HMAC can never verify.
var signingAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

// OIDCConfig configures the verification of OIDC / JWT bearer tokens.
type OIDCConfig struct {
	// Issuer must equal the token's iss claim.
	Issuer string
	// Audience must be one of the token's aud values.
	Audience string
	// JWKSURL is fetched for the signing keys (and re-fetched when a token
	// names a key id it has not seen, which is how issuers rotate keys).
	JWKSURL string
	// JWKSFile holds the signing keys as a JWKS document; it is re-read when
	// it changes. Exactly one of JWKSURL and JWKSFile is set.
	JWKSFile string
	// RoleClaim names the claim carrying the role: a string, or an array of
	// strings of which the most trusted known role counts. A dotted path
	// reaches into objects ("realm_access.roles"). Default "role".
	RoleClaim string
	// PrincipalClaim names the string claim that becomes Principal.Name.
	// Default "sub".
	PrincipalClaim string
	// ClockSkew is the leeway on exp, nbf and iat.
	ClockSkew time.Duration
	// HTTPClient fetches JWKSURL; a client with a 10s timeout when nil.
	HTTPClient *http.Client
	// ReloadInterval is how often JWKSFile is re-read.
	ReloadInterval time.Duration
	// Log receives JWKS file reload events.
	Log *slog.Logger
}

// OIDCVerifier checks JWT bearer tokens against one issuer. Verified
// tokens are remembered (by their SHA-256, never the token) for up to
// verifiedTTL, so a client sending the same token on every call pays the
// signature check about once a minute instead of on each request.
type OIDCVerifier struct {
	cfg      OIDCConfig
	verifier *oidc.IDTokenVerifier
	now      func() time.Time

	mu       sync.Mutex
	verified map[[sha256.Size]byte]verifiedToken
}

type verifiedToken struct {
	principal Principal
	until     time.Time
}

const (
	// verifiedTTL bounds how long a verified token is trusted without a
	// new signature check (so a key removed from the JWKS stops working
	// within it).
	verifiedTTL = time.Minute
	// verifiedCapacity bounds the cache under a flood of distinct tokens.
	verifiedCapacity = 10_000
)

// NewOIDCVerifier builds a verifier. With JWKSURL no request is made until
// the first token arrives; a JWKSFile must load now. ctx bounds the life of
// the remote key set's fetches.
func NewOIDCVerifier(ctx context.Context, cfg OIDCConfig) (*OIDCVerifier, error) {
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, errors.New("oidc: issuer and audience are required")
	}
	if (cfg.JWKSURL == "") == (cfg.JWKSFile == "") {
		return nil, errors.New("oidc: set exactly one of the JWKS URL and the JWKS file")
	}
	if cfg.RoleClaim == "" {
		cfg.RoleClaim = "role"
	}
	if cfg.PrincipalClaim == "" {
		cfg.PrincipalClaim = "sub"
	}
	if cfg.ClockSkew < 0 {
		return nil, errors.New("oidc: clock skew must not be negative")
	}
	var keys oidc.KeySet
	if cfg.JWKSURL != "" {
		client := cfg.HTTPClient
		if client == nil {
			client = &http.Client{Timeout: 10 * time.Second}
		}
		keys = oidc.NewRemoteKeySet(oidc.ClientContext(ctx, client), cfg.JWKSURL)
	} else {
		v, err := filewatch.New(parseJWKS, filewatch.Options{Interval: cfg.ReloadInterval, Log: cfg.Log, Name: "JWKS"}, cfg.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("oidc: JWKS file: %w", err)
		}
		keys = fileKeySet{v}
	}
	algs := make([]string, len(signingAlgs))
	for i, a := range signingAlgs {
		algs[i] = string(a)
	}
	// go-oidc checks the algorithm and the signature against the key set;
	// the claims are checked below with go-jose's validator, which has the
	// configurable leeway go-oidc lacks and typed errors for each claim.
	verifier := oidc.NewVerifier(cfg.Issuer, keys, &oidc.Config{
		SupportedSigningAlgs: algs,
		SkipClientIDCheck:    true,
		SkipExpiryCheck:      true,
		SkipIssuerCheck:      true,
	})
	return &OIDCVerifier{cfg: cfg, verifier: verifier, now: time.Now, verified: map[[sha256.Size]byte]verifiedToken{}}, nil
}

// Verify checks a raw JWT and returns its principal. Errors are
// client-safe: they say which check failed, never echo the token.
func (v *OIDCVerifier) Verify(ctx context.Context, raw string) (Principal, error) {
	sum := sha256.Sum256([]byte(raw))
	now := v.now()
	v.mu.Lock()
	hit, ok := v.verified[sum]
	v.mu.Unlock()
	if ok && now.Before(hit.until) {
		return hit.principal, nil
	}
	p, until, err := v.verify(ctx, raw, now)
	if err != nil {
		return Principal{}, err
	}
	if limit := now.Add(verifiedTTL); until.After(limit) {
		until = limit
	}
	v.remember(sum, p, until, now)
	return p, nil
}

func (v *OIDCVerifier) remember(sum [sha256.Size]byte, p Principal, until, now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if len(v.verified) >= verifiedCapacity {
		for k, e := range v.verified {
			if !now.Before(e.until) {
				delete(v.verified, k)
			}
		}
		if len(v.verified) >= verifiedCapacity {
			return
		}
	}
	v.verified[sum] = verifiedToken{principal: p, until: until}
}

// verify does the full check; until is when the token stops being valid.
func (v *OIDCVerifier) verify(ctx context.Context, raw string, now time.Time) (Principal, time.Time, error) {
	if _, err := jose.ParseSignedCompact(raw, signingAlgs); err != nil {
		return Principal{}, time.Time{}, errors.New("bearer token is not a JWT signed with an accepted algorithm")
	}
	tok, err := v.verifier.Verify(ctx, raw)
	if err != nil {
		return Principal{}, time.Time{}, errors.New("bearer token signature does not verify with the issuer's keys")
	}
	var claims jwt.Claims
	var all map[string]any
	if err := tok.Claims(&claims); err != nil {
		return Principal{}, time.Time{}, errors.New("bearer token claims are malformed")
	}
	if err := tok.Claims(&all); err != nil {
		return Principal{}, time.Time{}, errors.New("bearer token claims are malformed")
	}
	if claims.Expiry == nil {
		return Principal{}, time.Time{}, errors.New("bearer token has no expiry (exp)")
	}
	err = claims.ValidateWithLeeway(jwt.Expected{
		Issuer: v.cfg.Issuer, AnyAudience: jwt.Audience{v.cfg.Audience}, Time: now,
	}, v.cfg.ClockSkew)
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return Principal{}, time.Time{}, errors.New("bearer token issuer is not accepted")
	case errors.Is(err, jwt.ErrInvalidAudience):
		return Principal{}, time.Time{}, errors.New("bearer token audience is not accepted")
	case errors.Is(err, jwt.ErrExpired):
		return Principal{}, time.Time{}, errors.New("bearer token expired")
	case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
		return Principal{}, time.Time{}, errors.New("bearer token is not valid yet")
	default:
		return Principal{}, time.Time{}, errors.New("bearer token claims are not valid")
	}

	name, ok := claimAt(all, v.cfg.PrincipalClaim).(string)
	if !ok || strings.TrimSpace(name) == "" {
		return Principal{}, time.Time{}, fmt.Errorf("bearer token has no string claim %q naming the principal", v.cfg.PrincipalClaim)
	}
	role, ok := roleFrom(claimAt(all, v.cfg.RoleClaim))
	if !ok {
		return Principal{}, time.Time{}, fmt.Errorf("bearer token claim %q names no known role (viewer, deployer, editor, admin)", v.cfg.RoleClaim)
	}
	return Principal{Name: name, Role: role, Method: MethodOIDC}, claims.Expiry.Time().Add(v.cfg.ClockSkew), nil
}

// claimAt follows a dotted path through nested objects.
func claimAt(claims map[string]any, path string) any {
	if v, ok := claims[path]; ok {
		return v // a claim whose name contains dots ("https://x.io/role")
	}
	var cur any = claims
	for _, part := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[part]
	}
	return cur
}

// roleFrom reads a role claim: one role name, or a list of names (groups)
// of which the most trusted known one counts.
func roleFrom(v any) (Role, bool) {
	switch v := v.(type) {
	case string:
		r, err := ParseRole(v)
		return r, err == nil
	case []any:
		best := Role(0)
		for _, item := range v {
			if s, ok := item.(string); ok {
				if r, err := ParseRole(s); err == nil && r > best {
					best = r
				}
			}
		}
		return best, best != 0
	}
	return 0, false
}

// fileKeySet verifies signatures with the keys of a JWKS file.
type fileKeySet struct {
	keys *filewatch.Value[[]jose.JSONWebKey]
}

func (s fileKeySet) VerifySignature(_ context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(raw, signingAlgs)
	if err != nil {
		return nil, err
	}
	kid := jws.Signatures[0].Header.KeyID
	for _, k := range s.keys.Get() {
		if kid != "" && k.KeyID != kid {
			continue
		}
		if payload, err := jws.Verify(k); err == nil {
			return payload, nil
		}
	}
	return nil, errors.New("no key of the JWKS file verifies the token")
}

func parseJWKS(contents [][]byte) ([]jose.JSONWebKey, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(contents[0], &set); err != nil {
		return nil, errors.New("JWKS file is not a JSON Web Key Set")
	}
	var keys []jose.JSONWebKey
	for _, k := range set.Keys {
		if k.Use == "enc" {
			continue
		}
		if !k.IsPublic() {
			// A private key here is a mistake; only its public half is used.
			k = k.Public()
		}
		if k.Valid() {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("JWKS file has no usable signing key")
	}
	return keys, nil
}
