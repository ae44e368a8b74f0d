// Package tlsreload serves TLS from certificate files that change while the
// server runs (cert-manager renewals, rotated Secrets): every handshake gets
// the configuration built from the files' last good content, re-checked on
// an interval, so renewing a certificate needs no restart.
package tlsreload

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/oaas/pm/internal/filewatch"
)

// Files are the server's PEM files.
type Files struct {
	// CertFile is SERVER_TLS_CERT_FILE: the certificate chain, leaf first.
	CertFile string
	// KeyFile is SERVER_TLS_KEY_FILE: the leaf's private key.
	KeyFile string
	// ClientCAFile is SERVER_TLS_CLIENT_CA_FILE, optional: when set, clients
	// are asked for a certificate and one that is presented must chain to
	// these CAs (a client without one may still authenticate otherwise).
	ClientCAFile string
}

// Options tune a Reloader.
type Options struct {
	// Interval is how often the files are re-checked
	// (filewatch.DefaultInterval when 0).
	Interval time.Duration
	// Log receives reload events; slog.Default when nil.
	Log *slog.Logger
}

// NextProtos are the ALPN protocols offered: HTTP/2 first.
var NextProtos = []string{"h2", "http/1.1"}

// Reloader hands out the current TLS configuration.
type Reloader struct {
	v    *filewatch.Value[*loaded]
	base *tls.Config
}

type loaded struct {
	config *tls.Config
	leaf   *x509.Certificate
}

// New loads the files; they must load now. Later broken edits (a key that
// does not match, a half-written file) keep the last good pair and log.
func New(files Files, opts Options) (*Reloader, error) {
	if files.CertFile == "" || files.KeyFile == "" {
		return nil, errors.New("tlsreload: certificate and key files are required")
	}
	paths := []string{files.CertFile, files.KeyFile}
	if files.ClientCAFile != "" {
		paths = append(paths, files.ClientCAFile)
	}
	v, err := filewatch.New(parse, filewatch.Options{Interval: opts.Interval, Log: opts.Log, Name: "server TLS certificate"}, paths...)
	if err != nil {
		return nil, err
	}
	r := &Reloader{v: v}
	r.base = &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: NextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.v.Get().config, nil
		},
		// Only reached by code that ignores GetConfigForClient.
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return &r.v.Get().config.Certificates[0], nil
		},
	}
	return r, nil
}

// TLSConfig is the server configuration to give http.Server.TLSConfig or
// tls.NewListener; each handshake resolves to the files' current content.
func (r *Reloader) TLSConfig() *tls.Config { return r.base }

// Leaf is the certificate served now.
func (r *Reloader) Leaf() *x509.Certificate { return r.v.Get().leaf }

// Check re-reads the files now; see filewatch.Value.Check.
func (r *Reloader) Check() (bool, error) { return r.v.Check() }

// Run re-checks the files every interval until ctx ends, so a renewal is
// logged (and a broken one reported) when it happens.
func (r *Reloader) Run(ctx context.Context) { r.v.Run(ctx) }

func parse(contents [][]byte) (*loaded, error) {
	pair, err := tls.X509KeyPair(contents[0], contents[1])
	if err != nil {
		// crypto/tls errors describe the PEM structure, never key material.
		return nil, fmt.Errorf("server certificate and key do not load: %w", err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("server certificate does not parse: %w", err)
		}
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		NextProtos:   NextProtos,
		Certificates: []tls.Certificate{pair},
	}
	if len(contents) > 2 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(contents[2]) {
			return nil, errors.New("client CA file holds no PEM certificate")
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return &loaded{config: cfg, leaf: leaf}, nil
}
