package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"time"

	"github.com/oaas/pm/internal/config"
)

// newTransport builds the HTTP/2 transport for one CRM. Field CRMs speak
// gRPC only, so both variants are HTTP/2-only: http:// is cleartext HTTP/2
// with prior knowledge (h2c), https:// is TLS with h2 through ALPN.
func newTransport(cl config.Cluster) (*http.Transport, error) {
	u, err := url.Parse(cl.URL)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: URL %q does not parse", cl.Name, cl.URL)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("cluster %q: URL %q has no host", cl.Name, cl.URL)
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("cluster %q: URL %q: a CRM URL has no path", cl.Name, cl.URL)
	}
	var protocols http.Protocols
	t := &http.Transport{
		Proxy:               nil, // CRMs sit on the cluster network; an HTTP proxy would break h2c
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
		// Pings find a connection whose peer vanished (node gone, NAT
		// dropped) instead of letting every call on it wait for its deadline.
		HTTP2: &http.HTTP2Config{SendPingTimeout: 30 * time.Second, PingTimeout: 10 * time.Second},
	}
	switch u.Scheme {
	case "http":
		protocols.SetUnencryptedHTTP2(true)
	case "https":
		protocols.SetHTTP2(true)
		conf, err := tlsConfig(cl)
		if err != nil {
			return nil, err
		}
		t.TLSClientConfig = conf
	default:
		return nil, fmt.Errorf("cluster %q: URL %q: scheme must be http (h2c) or https (TLS)", cl.Name, cl.URL)
	}
	t.Protocols = &protocols
	return t, nil
}

// tlsConfig loads one cluster's CA, client certificate and verification
// settings. An empty CAFile trusts the system roots.
func tlsConfig(cl config.Cluster) (*tls.Config, error) {
	s := cl.TLS
	conf := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: s.ServerName,
		// Skipping verification is an explicit operator choice (test CRMs
		// with self-signed certificates), off by default.
		InsecureSkipVerify: s.InsecureSkipVerify, //nolint:gosec // opt-in per cluster
	}
	if s.CAFile != "" {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: reading TLS CA file: %w", cl.Name, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("cluster %q: TLS CA file %s holds no PEM certificate", cl.Name, s.CAFile)
		}
		conf.RootCAs = pool
	}
	switch {
	case s.CertFile != "" && s.KeyFile != "":
		cert, err := tls.LoadX509KeyPair(s.CertFile, s.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: loading TLS client certificate: %w", cl.Name, err)
		}
		conf.Certificates = []tls.Certificate{cert}
	case s.CertFile != "" || s.KeyFile != "":
		return nil, fmt.Errorf("cluster %q: TLS client certificate and key must be set together", cl.Name)
	}
	return conf, nil
}
