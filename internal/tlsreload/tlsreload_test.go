package tlsreload_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/oaas/pm/internal/tlsreload"
	"github.com/oaas/pm/internal/tlsreload/tlstest"
)

type env struct {
	ca       *tlstest.CA
	dir      string
	reloader *tlsreload.Reloader
	url      string
	files    tlsreload.Files
}

// setup serves, over TLS on loopback, a handler that answers with the
// client certificate's CN (or "-").
func setup(t *testing.T, withClientCA bool) *env {
	t.Helper()
	e := &env{ca: tlstest.NewCA(t, "server CA"), dir: t.TempDir()}
	leaf := e.ca.Issue(t, tlstest.Loopback())
	e.files.CertFile, e.files.KeyFile = leaf.WriteFiles(t, e.dir)
	if withClientCA {
		e.files.ClientCAFile = filepath.Join(e.dir, "client-ca.pem")
		tlstest.WriteFile(t, e.files.ClientCAFile, tlstest.NewCA(t, "client CA placeholder").PEM)
	}
	var err error
	e.reloader, err = tlsreload.New(e.files, tlsreload.Options{Interval: time.Hour, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetHTTP2(true)
	srv := &http.Server{
		Protocols: &protocols,
		TLSConfig: e.reloader.TLSConfig(),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			cn := "-"
			if len(r.TLS.VerifiedChains) > 0 {
				cn = r.TLS.VerifiedChains[0][0].Subject.CommonName
			}
			_, _ = io.WriteString(w, r.Proto+" "+cn)
		}),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(slog.DiscardHandler, slog.LevelError),
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	e.url = "https://" + ln.Addr().String() + "/"
	return e
}

// get makes one request on a new connection and returns the body and the
// certificate the server presented.
func (e *env) get(t *testing.T, roots *x509.CertPool, client *tls.Certificate) (string, *x509.Certificate, error) {
	t.Helper()
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if client != nil {
		// Sent whatever CAs the server names, so a foreign certificate
		// reaches the server's verification.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return client, nil }
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body), resp.TLS.PeerCertificates[0], nil
}

func TestServesHTTP2AndReloadsRotatedCertificate(t *testing.T) {
	t.Parallel()
	e := setup(t, false)
	body, served, err := e.get(t, e.ca.Pool(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if body != "HTTP/2.0 -" {
		t.Errorf("body %q: want HTTP/2 over TLS", body)
	}
	if served.SerialNumber.Cmp(e.reloader.Leaf().SerialNumber) != 0 {
		t.Fatal("served certificate is not the loaded one")
	}

	// Rotate to a certificate from a new CA: old clients must now fail,
	// clients trusting the new CA succeed, without a restart.
	newCA := tlstest.NewCA(t, "rotated CA")
	rotated := newCA.Issue(t, tlstest.Loopback())
	rotated.WriteFiles(t, e.dir)
	if changed, err := e.reloader.Check(); !changed || err != nil {
		t.Fatalf("Check after rotation: changed=%v err=%v", changed, err)
	}
	_, served, err = e.get(t, newCA.Pool(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if served.SerialNumber.Cmp(rotated.Cert.SerialNumber) != 0 {
		t.Errorf("served serial %v, want the rotated %v", served.SerialNumber, rotated.Cert.SerialNumber)
	}
	if _, _, err := e.get(t, e.ca.Pool(), nil); err == nil {
		t.Error("a client trusting only the old CA still connected")
	}
}

func TestBrokenRotationKeepsServing(t *testing.T) {
	t.Parallel()
	e := setup(t, false)
	before := e.reloader.Leaf().SerialNumber
	// A new certificate with the old key: the pair does not match.
	other := e.ca.Issue(t, tlstest.Loopback())
	tlstest.WriteFile(t, e.files.CertFile, other.CertPEM)
	if _, err := e.reloader.Check(); err == nil {
		t.Fatal("mismatched pair loaded")
	}
	_, served, err := e.get(t, e.ca.Pool(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if served.SerialNumber.Cmp(before) != 0 {
		t.Error("a broken rotation changed the served certificate")
	}
	// The key arrives: the pair is complete and loads.
	tlstest.WriteFile(t, e.files.KeyFile, other.KeyPEM)
	if changed, err := e.reloader.Check(); !changed || err != nil {
		t.Fatalf("completed rotation: changed=%v err=%v", changed, err)
	}
	if _, served, _ = e.get(t, e.ca.Pool(), nil); served.SerialNumber.Cmp(other.Cert.SerialNumber) != 0 {
		t.Error("completed rotation not served")
	}
}

func TestClientCertificates(t *testing.T) {
	t.Parallel()
	e := setup(t, true)
	clientCA := tlstest.NewCA(t, "client CA")
	tlstest.WriteFile(t, e.files.ClientCAFile, clientCA.PEM)
	if _, err := e.reloader.Check(); err != nil {
		t.Fatal(err)
	}
	good := clientCA.Issue(t, tlstest.Identity{CommonName: "ci", Client: true})
	foreign := tlstest.NewCA(t, "foreign").Issue(t, tlstest.Identity{CommonName: "mallory", Client: true})

	cases := []struct {
		name    string
		cert    *tls.Certificate
		want    string
		refused bool
	}{
		{"verified client", &good.Pair, "HTTP/2.0 ci", false},
		{"no client certificate", nil, "HTTP/2.0 -", false},
		{"certificate from an unknown CA", &foreign.Pair, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body, _, err := e.get(t, e.ca.Pool(), tc.cert)
			if tc.refused {
				if err == nil {
					t.Fatalf("accepted: %q", body)
				}
				return
			}
			if err != nil || body != tc.want {
				t.Errorf("body %q err %v, want %q", body, err, tc.want)
			}
		})
	}
}

func TestNewRefusesBadFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca := tlstest.NewCA(t, "ca")
	cert, key := ca.Issue(t, tlstest.Loopback()).WriteFiles(t, dir)
	notPEM := filepath.Join(dir, "garbage.pem")
	tlstest.WriteFile(t, notPEM, []byte("not a certificate"))
	cases := map[string]tlsreload.Files{
		"no files":          {},
		"missing key":       {CertFile: cert, KeyFile: filepath.Join(dir, "none.pem")},
		"key is not a key":  {CertFile: cert, KeyFile: notPEM},
		"client CA garbage": {CertFile: cert, KeyFile: key, ClientCAFile: notPEM},
	}
	for name, files := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if _, err := tlsreload.New(files, tlsreload.Options{}); err == nil {
				t.Error("accepted")
			}
		})
	}
}
