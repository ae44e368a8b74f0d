package crmsim_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"connectrpc.com/grpcreflect"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	"github.com/oaas/pm/gen/go/oaas/deployment/deploymentconnect"
	healthpb "github.com/oaas/pm/gen/go/oaas/health"
	"github.com/oaas/pm/gen/go/oaas/health/healthconnect"
	"github.com/oaas/pm/internal/crmsim"
	"github.com/oaas/pm/internal/crmsim/crmsimtest"
)

// grpcConn dials the simulator with grpc-go, a gRPC peer that shares no code
// with the connect server.
func grpcConn(t testing.TB, target string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestGRPCGoClient(t *testing.T) {
	t.Parallel()
	sim := crmsimtest.Start(t, crmsim.Config{EnvName: "east"})
	conn := grpcConn(t, sim.Addr(), insecure.NewCredentials())

	ctx := metadata.AppendToOutgoingContext(testCtx(t), "x-correlation-id", "grpc-go-1")
	var header metadata.MD
	res := new(deploymentpb.DeployResponse)
	err := conn.Invoke(ctx, deploymentconnect.DeploymentServiceDeployProcedure,
		&deploymentpb.DeployRequest{DeploymentUnit: unit("from-grpc-go", "p", "C", "east", "f")}, res, grpc.Header(&header))
	if err != nil {
		t.Fatalf("Deploy via grpc-go: %v", err)
	}
	if res.GetDeploymentId() != "from-grpc-go" || res.GetMessage() != "created" {
		t.Errorf("Deploy = %v", res)
	}
	if got := header.Get("x-correlation-id"); !slices.Equal(got, []string{"grpc-go-1"}) {
		t.Errorf("response metadata x-correlation-id = %q, want grpc-go-1", got)
	}

	tests := []struct {
		name string
		id   string
		want codes.Code
	}{
		{"unknown id", "nope", codes.NotFound},
		{"empty id", "", codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var trailer, header metadata.MD
			ctx := metadata.AppendToOutgoingContext(testCtx(t), "x-correlation-id", "grpc-go-"+tt.name)
			err := conn.Invoke(ctx, deploymentconnect.DeploymentServiceGetDeploymentStatusProcedure,
				&deploymentpb.GetDeploymentStatusRequest{DeploymentId: tt.id}, new(deploymentpb.GetDeploymentStatusResponse),
				grpc.Trailer(&trailer), grpc.Header(&header))
			if st, _ := status.FromError(err); st.Code() != tt.want {
				t.Errorf("status = %v, want %v", err, tt.want)
			}
			// Errors travel as trailers-only responses; grpc-go surfaces
			// that metadata as the header, older versions as the trailer.
			got := append(header.Get("x-correlation-id"), trailer.Get("x-correlation-id")...)
			if !slices.Equal(got, []string{"grpc-go-" + tt.name}) {
				t.Errorf("error metadata x-correlation-id = %q", got)
			}
		})
	}

	t.Run("hang honours grpc-timeout", func(t *testing.T) {
		hung := crmsimtest.Start(t, crmsim.Config{Hang: true})
		hconn := grpcConn(t, hung.Addr(), insecure.NewCredentials())
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := hconn.Invoke(ctx, healthconnect.HealthServiceCheckProcedure,
			&healthpb.HealthCheckRequest{}, new(healthpb.HealthCheckResponse))
		if st, _ := status.FromError(err); st.Code() != codes.DeadlineExceeded {
			t.Errorf("status = %v, want DeadlineExceeded", err)
		}
		if elapsed := time.Since(start); elapsed > 2*time.Second {
			t.Errorf("returned after %v", elapsed)
		}
	})
}

func TestReflectionListsServices(t *testing.T) {
	t.Parallel()
	// Reflection stays outside the fault knobs so grpcurl works on a sick CRM.
	sim := crmsimtest.Start(t, crmsim.Config{FailRate: 1, NotServing: true})
	want := []string{
		"grpc.health.v1.Health",
		"grpc.reflection.v1.ServerReflection",
		"grpc.reflection.v1alpha.ServerReflection",
		"oaas.deployment.DeploymentService",
		"oaas.health.CrmInfoService",
		"oaas.health.HealthService",
	}

	t.Run("connect grpcreflect client", func(t *testing.T) {
		t.Parallel()
		client := grpcreflect.NewClient(h2cClient(t), sim.URL(), connect.WithGRPC())
		stream := client.NewStream(testCtx(t))
		defer stream.Close()
		names, err := stream.ListServices()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, n := range names {
			got = append(got, string(n))
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("services = %q, want %q", got, want)
		}
		files, err := stream.FileContainingSymbol("oaas.deployment.DeploymentService")
		if err != nil {
			t.Fatal(err)
		}
		var fileNames []string
		for _, f := range files {
			fileNames = append(fileNames, f.GetName())
		}
		if !slices.Contains(fileNames, "oaas/deployment/deployment.proto") || !slices.Contains(fileNames, "oaas/common/common.proto") {
			t.Errorf("files for DeploymentService = %q, want deployment.proto with its common.proto import", fileNames)
		}
	})

	t.Run("grpc-go reflection client, as grpcurl", func(t *testing.T) {
		t.Parallel()
		conn := grpcConn(t, sim.Addr(), insecure.NewCredentials())
		stream, err := reflectionv1.NewServerReflectionClient(conn).ServerReflectionInfo(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&reflectionv1.ServerReflectionRequest{
			MessageRequest: &reflectionv1.ServerReflectionRequest_ListServices{},
		}); err != nil {
			t.Fatal(err)
		}
		res, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, s := range res.GetListServicesResponse().GetService() {
			got = append(got, s.GetName())
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("services = %q, want %q", got, want)
		}
		_ = stream.CloseSend()
	})
}

// pki is a throwaway CA with a server and a client certificate.
type pki struct {
	caPEM, serverCertPEM, serverKeyPEM []byte
	clientCert                         tls.Certificate
	roots                              *x509.CertPool
}

func newPKI(t testing.TB) pki {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "crmsim test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial int64, cn string, usage x509.ExtKeyUsage) ([]byte, []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
			DNSNames:     []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
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
	p := pki{caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), roots: x509.NewCertPool()}
	p.roots.AddCert(caCert)
	p.serverCertPEM, p.serverKeyPEM = leaf(2, "crm-east", x509.ExtKeyUsageServerAuth)
	clientCertPEM, clientKeyPEM := leaf(3, "pm", x509.ExtKeyUsageClientAuth)
	if p.clientCert, err = tls.X509KeyPair(clientCertPEM, clientKeyPEM); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTLSAndMTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)

	tlsSim := crmsimtest.Start(t, crmsim.Config{EnvName: "tls", TLS: &crmsim.TLSConfig{
		CertPEM: p.serverCertPEM, KeyPEM: p.serverKeyPEM,
	}})
	mtlsSim := crmsimtest.Start(t, crmsim.Config{EnvName: "mtls", TLS: &crmsim.TLSConfig{
		CertPEM: p.serverCertPEM, KeyPEM: p.serverKeyPEM, ClientCAPEM: p.caPEM,
	}})
	if got := tlsSim.URL(); got[:8] != "https://" {
		t.Fatalf("TLS URL = %q, want https://", got)
	}

	withCert := &tls.Config{RootCAs: p.roots, Certificates: []tls.Certificate{p.clientCert}, MinVersion: tls.VersionTLS12}
	noCert := &tls.Config{RootCAs: p.roots, MinVersion: tls.VersionTLS12}
	untrusted := &tls.Config{MinVersion: tls.VersionTLS12}

	tests := []struct {
		name   string
		sim    *crmsim.Sim
		client *tls.Config
		ok     bool
	}{
		{"TLS, server verified", tlsSim, noCert, true},
		{"TLS, unknown CA rejected by the client", tlsSim, untrusted, false},
		{"mTLS with a client certificate", mtlsSim, withCert, true},
		{"mTLS without a client certificate", mtlsSim, noCert, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newClientsWith(tlsClient(t, tt.client), tt.sim.URL())
			res, err := c.info.GetEnvHealth(testCtx(t), &healthpb.CrmEnvRequest{})
			if tt.ok && (err != nil || res.GetEnvName() != tt.sim.EnvName()) {
				t.Fatalf("GetEnvHealth = %v, %v", res, err)
			}
			if !tt.ok && err == nil {
				t.Fatal("handshake that should fail succeeded")
			}
		})
	}

	t.Run("grpc-go over mTLS", func(t *testing.T) {
		t.Parallel()
		conn := grpcConn(t, mtlsSim.Addr(), credentials.NewTLS(withCert.Clone()))
		res := new(healthpb.HealthCheckResponse)
		if err := conn.Invoke(testCtx(t), healthconnect.HealthServiceCheckProcedure, &healthpb.HealthCheckRequest{}, res); err != nil {
			t.Fatal(err)
		}
		if res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("Check = %v", res.GetStatus())
		}
	})

	if _, err := crmsim.Start(t.Context(), crmsim.Config{TLS: &crmsim.TLSConfig{CertPEM: p.serverCertPEM}}); err == nil {
		t.Error("Start accepted TLS without a key")
	}
	if _, err := crmsim.Start(t.Context(), crmsim.Config{TLS: &crmsim.TLSConfig{
		CertPEM: p.serverCertPEM, KeyPEM: p.serverKeyPEM, ClientCAPEM: []byte("not pem"),
	}}); err == nil {
		t.Error("Start accepted a client CA without certificates")
	}
}

func TestCallCounters(t *testing.T) {
	t.Parallel()
	sim := crmsimtest.Start(t, crmsim.Config{DisableCrmInfo: true})
	c := newClients(t, sim)
	deploy(t, c, unit("counted", "p", "C", "e"))
	for range 3 {
		_, _ = c.deploy.GetDeploymentStatus(testCtx(t), &deploymentpb.GetDeploymentStatusRequest{DeploymentId: "counted"})
	}
	_, _ = c.info.GetEnvHealth(testCtx(t), &healthpb.CrmEnvRequest{})
	_, _ = c.health.Check(testCtx(t), &healthpb.HealthCheckRequest{})
	if _, err := c.grpcHealth.Check(testCtx(t), &grpchealth.CheckRequest{}); err != nil {
		t.Fatal(err)
	}

	want := map[string]int64{
		deploymentconnect.DeploymentServiceDeployProcedure:              1,
		deploymentconnect.DeploymentServiceGetDeploymentStatusProcedure: 3,
		healthconnect.CrmInfoServiceGetEnvHealthProcedure:               1, // refused calls count too
		healthconnect.HealthServiceCheckProcedure:                       1,
		"/grpc.health.v1.Health/Check":                                  1,
	}
	got := sim.CallCounts()
	for proc, n := range want {
		if got[proc] != n {
			t.Errorf("CallCounts[%s] = %d, want %d", proc, got[proc], n)
		}
	}
	if len(got) != len(want) {
		t.Errorf("CallCounts = %v, want only %v", got, want)
	}
	if sim.Calls("Check") != 2 {
		t.Errorf("Calls(Check) = %d, want 2 (both health services)", sim.Calls("Check"))
	}
	if sim.Calls("Nope") != 0 {
		t.Error("Calls of an unknown method is not zero")
	}
}
