package auth

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/oaas/pm/internal/filewatch"
)

// ErrUnauthenticated matches (errors.Is) every authentication failure.
var ErrUnauthenticated = errors.New("unauthenticated")

// ErrTooManyFailures matches failures of a source the Limiter refuses.
var ErrTooManyFailures = errors.New("too many failed authentications")

// Failure is why a request was not authenticated. Its message is safe to
// send to the client and to log: it never contains a credential.
type Failure struct {
	// Reason is the client-safe explanation.
	Reason string
	// Limited is set when the source is refused by the failure limiter;
	// RetryAfter says for how long still.
	Limited    bool
	RetryAfter time.Duration
	// TokenPresented is set when a bearer token was sent and rejected
	// (RFC 6750's invalid_token), as opposed to no credential at all.
	TokenPresented bool
}

// Error returns the Reason.
func (f *Failure) Error() string { return f.Reason }

// Is makes a Failure match ErrUnauthenticated or, when Limited,
// ErrTooManyFailures.
func (f *Failure) Is(target error) bool {
	if f.Limited {
		return target == ErrTooManyFailures
	}
	return target == ErrUnauthenticated
}

// Config selects the authentication methods; at least one of TokensFile
// and OIDC must be set.
type Config struct {
	// TokensFile is AUTH_TOKENS_FILE: API tokens and mTLS client mappings
	// (see Credentials). Re-read when it changes.
	TokensFile string
	// ReloadInterval is how often the tokens file is re-checked
	// (filewatch.DefaultInterval when 0).
	ReloadInterval time.Duration
	// OIDC enables JWT bearer tokens when non-nil.
	OIDC *OIDCConfig
	// FailureLimit is how many failures per minute a source may have before
	// it is refused with ErrTooManyFailures for a minute; 0 disables.
	FailureLimit int
	// Log receives reload errors and limiter events; slog.Default when nil.
	Log *slog.Logger
}

// Authenticator finds the principal of a request: a mapped client
// certificate first, then a bearer token (API token, then JWT).
type Authenticator struct {
	creds   *filewatch.Value[*credentialSet]
	oidc    *OIDCVerifier
	limiter *Limiter
	log     *slog.Logger
}

// New loads the configured methods; a tokens file or JWKS file that does
// not load now is an error (later broken edits keep the last good file).
func New(ctx context.Context, cfg Config) (*Authenticator, error) {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	a := &Authenticator{log: cfg.Log, limiter: NewLimiter(cfg.FailureLimit, time.Minute, 0)}
	if cfg.TokensFile == "" && cfg.OIDC == nil {
		return nil, errors.New("auth: no authentication method configured")
	}
	if cfg.TokensFile != "" {
		v, err := filewatch.New(func(c [][]byte) (*credentialSet, error) { return parseCredentials(c[0]) },
			filewatch.Options{Interval: cfg.ReloadInterval, Log: cfg.Log, Name: "API tokens"}, cfg.TokensFile)
		if err != nil {
			return nil, err
		}
		a.creds = v
	}
	if cfg.OIDC != nil {
		oc := *cfg.OIDC
		if oc.Log == nil {
			oc.Log = cfg.Log
		}
		if oc.ReloadInterval == 0 {
			oc.ReloadInterval = cfg.ReloadInterval
		}
		v, err := NewOIDCVerifier(ctx, oc)
		if err != nil {
			return nil, err
		}
		a.oidc = v
	}
	return a, nil
}

// Run re-checks the tokens file on its interval until ctx ends, so a broken
// edit is logged when it happens, not at the next request. Optional: reads
// re-check on their own.
func (a *Authenticator) Run(ctx context.Context) {
	if a.creds != nil {
		a.creds.Run(ctx)
	}
}

// Limiter is the failure limiter (nil when disabled).
func (a *Authenticator) Limiter() *Limiter { return a.limiter }

// Authenticate returns the principal of r or a *Failure. It reads the
// Authorization header, the verified client certificate of r.TLS and, for
// the limiter, r.RemoteAddr. X-Forwarded-For is not trusted (any caller can
// set it), so behind a proxy the limiter counts the proxy's address.
func (a *Authenticator) Authenticate(r *http.Request) (Principal, error) {
	if blocked, left := a.limiter.Blocked(r.RemoteAddr); blocked {
		return Principal{}, &Failure{Reason: "too many failed authentications from this address; retry later", Limited: true, RetryAfter: left}
	}
	p, f := a.authenticate(r)
	if f == nil {
		return p, nil
	}
	if a.limiter.Fail(r.RemoteAddr) {
		a.log.Warn("authentication source blocked after repeated failures", "source", r.RemoteAddr, "reason", f.Reason)
	}
	return Principal{}, f
}

func (a *Authenticator) authenticate(r *http.Request) (Principal, *Failure) {
	var creds *credentialSet
	if a.creds != nil {
		creds = a.creds.Get()
	}
	certUnmapped := false
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		if creds != nil {
			if p, ok := creds.client(r.TLS.VerifiedChains[0][0]); ok {
				return p, nil
			}
		}
		certUnmapped = true
	}

	header := r.Header.Get("Authorization")
	if header == "" {
		if certUnmapped {
			return Principal{}, &Failure{Reason: "client certificate is not mapped to a principal, and no bearer token was sent"}
		}
		return Principal{}, &Failure{Reason: "authentication required: send Authorization: Bearer TOKEN"}
	}
	scheme, token, _ := strings.Cut(header, " ")
	token = strings.TrimSpace(token)
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		return Principal{}, &Failure{Reason: "Authorization header must be Bearer TOKEN"}
	}
	if creds != nil {
		if p, ok := creds.token(token); ok {
			return p, nil
		}
	}
	if a.oidc != nil && strings.Count(token, ".") == 2 {
		p, err := a.oidc.Verify(r.Context(), token)
		if err != nil {
			return Principal{}, &Failure{Reason: err.Error(), TokenPresented: true}
		}
		return p, nil
	}
	return Principal{}, &Failure{Reason: "bearer token is not a known API token", TokenPresented: true}
}
