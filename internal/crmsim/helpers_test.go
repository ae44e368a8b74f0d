package crmsim_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"
	"google.golang.org/protobuf/proto"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	"github.com/oaas/pm/gen/go/oaas/deployment/deploymentconnect"
	"github.com/oaas/pm/gen/go/oaas/health/healthconnect"
	"github.com/oaas/pm/internal/crmsim"
)

// clients are gRPC-protocol clients of one simulator, as PM dials a CRM.
type clients struct {
	deploy     deploymentconnect.DeploymentServiceClient
	health     healthconnect.HealthServiceClient
	info       healthconnect.CrmInfoServiceClient
	grpcHealth *grpchealth.Client
	http       *http.Client
}

// h2cClient speaks HTTP/2 with prior knowledge over cleartext, as gRPC does.
func h2cClient(t testing.TB) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// tlsClient speaks HTTP/2 over TLS with the given client configuration.
func tlsClient(t testing.TB, conf *tls.Config) *http.Client {
	var p http.Protocols
	p.SetHTTP2(true)
	tr := &http.Transport{Protocols: &p, TLSClientConfig: conf.Clone()} // the transport edits its config
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func newClients(t testing.TB, sim *crmsim.Sim) clients {
	return newClientsWith(h2cClient(t), sim.URL())
}

func newClientsWith(hc *http.Client, url string) clients {
	opt := connect.WithGRPC()
	return clients{
		deploy:     deploymentconnect.NewDeploymentServiceClient(hc, url, opt),
		health:     healthconnect.NewHealthServiceClient(hc, url, opt),
		info:       healthconnect.NewCrmInfoServiceClient(hc, url, opt),
		grpcHealth: grpchealth.NewClient(hc, url, opt),
		http:       hc,
	}
}

// testCtx bounds every test call so a bug cannot hang the suite.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// unit builds a deployment unit with one function per key and a min_scale,
// the shape PM sends.
func unit(id, pkg, class, env string, fnKeys ...string) *deploymentpb.DeploymentUnit {
	u := &deploymentpb.DeploymentUnit{
		Id:          id,
		PackageName: pkg,
		ClassKey:    class,
		TargetEnv:   env,
		CreatedAt:   &commonpb.Timestamp{Seconds: 1_700_000_000},
	}
	for _, k := range fnKeys {
		u.Functions = append(u.Functions, &deploymentpb.FunctionDeploymentSpec{
			FunctionKey: k,
			ProvisionConfig: &commonpb.ProvisionConfig{
				ContainerImage: proto.String("ghcr.io/oaas/" + k + ":1"),
				MinScale:       proto.Uint32(2),
			},
		})
	}
	return u
}

func deploy(t testing.TB, c clients, u *deploymentpb.DeploymentUnit) *deploymentpb.DeployResponse {
	t.Helper()
	res, err := c.deploy.Deploy(testCtx(t), &deploymentpb.DeployRequest{DeploymentUnit: u})
	if err != nil {
		t.Fatalf("Deploy(%q): %v", u.GetId(), err)
	}
	return res
}

// wantCode fails the test unless err is a gRPC status with the given code.
func wantCode(t testing.TB, err error, want connect.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", want)
	}
	if got := connect.CodeOf(err); got != want {
		t.Fatalf("got code %v (%v), want %v", got, err, want)
	}
}

// eventually polls cond until it holds or the deadline passes; it never
// sleeps longer than one poll interval, so fast paths stay fast.
func eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
