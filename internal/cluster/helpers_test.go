package cluster_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/oaas/pm/internal/cluster"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/crmsim"
	"github.com/oaas/pm/internal/crmsim/crmsimtest"
)

// testCRM is a CRM config for tests: a timeout generous enough for a loaded
// -race run (failure tests set short ones),
// no retries, no cache, no background refresh, a breaker that needs many
// failures. Tests tweak what they exercise.
func testCRM(tweak ...func(*config.CRM)) config.CRM {
	c := config.Default().CRM
	c.Timeout = 2 * time.Second
	c.RetryAttempts = 0
	c.HealthCheckInterval = 0
	c.HealthCacheTTL = 0
	c.BreakerFailureThreshold = 100
	c.BreakerTimeout = 200 * time.Millisecond
	for _, f := range tweak {
		f(&c)
	}
	return c
}

// testLog discards logs unless PM_TEST_LOG is set.
func testLog() *slog.Logger {
	if os.Getenv("PM_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// sims starts one simulator per named config and closes them with the test.
func sims(t *testing.T, cfgs map[string]crmsim.Config) map[string]*crmsim.Sim {
	t.Helper()
	out := make(map[string]*crmsim.Sim, len(cfgs))
	for name, cfg := range cfgs {
		if cfg.EnvName == "" {
			cfg.EnvName = name
		}
		out[name] = crmsimtest.Start(t, cfg)
	}
	return out
}

// setup builds a manager over the simulators (plus extra clusters, e.g. a
// dead URL) and closes it with the test.
func setup(t *testing.T, ss map[string]*crmsim.Sim, extra []config.Cluster, tweak ...func(*config.CRM)) *cluster.Manager {
	t.Helper()
	cfg := testCRM(tweak...)
	for name, s := range ss {
		cfg.Clusters = append(cfg.Clusters, config.Cluster{Name: name, URL: s.URL()})
	}
	cfg.Clusters = append(cfg.Clusters, extra...)
	m, err := cluster.New(cfg, testLog())
	if err != nil {
		t.Fatalf("cluster.New: %v", err)
	}
	t.Cleanup(m.Close)
	return m
}

// client returns the named cluster's client, failing the test if unknown.
func client(t *testing.T, m *cluster.Manager, name string) *cluster.Client {
	t.Helper()
	c, err := m.Client(name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// deadURL is an http URL on which nothing listens (connection refused).
func deadURL(t *testing.T) string {
	t.Helper()
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return "http://" + addr
}

// health reads one cluster's health, failing the test on error.
func health(t *testing.T, m *cluster.Manager, name string) cluster.Health {
	t.Helper()
	h, err := m.Health(context.Background(), name)
	if err != nil {
		t.Fatalf("Health(%s): %v", name, err)
	}
	return h
}

func ptr[T any](v T) *T { return &v }

// pki is a CA with a server and a client certificate, as PEM and as files.
type pki struct {
	caPEM, serverCert, serverKey  []byte
	caFile, clientCert, clientKey string
}

// newPKI makes a throwaway CA that signs a server certificate for 127.0.0.1
// and crm.test, and a client certificate for mTLS.
func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	caKey := mustKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA " + t.Name()},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial int64, usage x509.ExtKeyUsage, server bool) (certPEM, keyPEM []byte) {
		key := mustKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: "leaf"},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
		if server {
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
			tmpl.DNSNames = []string{"crm.test"}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	}
	p := pki{caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})}
	p.serverCert, p.serverKey = leaf(2, x509.ExtKeyUsageServerAuth, true)
	clientCert, clientKey := leaf(3, x509.ExtKeyUsageClientAuth, false)
	p.caFile = writeFile(t, dir, "ca.pem", p.caPEM)
	p.clientCert = writeFile(t, dir, "client.pem", clientCert)
	p.clientKey = writeFile(t, dir, "client-key.pem", clientKey)
	return p
}

func mustKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
