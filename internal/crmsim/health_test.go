package crmsim_test

import (
	"testing"
	"time"

	"connectrpc.com/connect"
	"connectrpc.com/grpchealth"

	healthpb "github.com/oaas/pm/gen/go/oaas/health"
	"github.com/oaas/pm/internal/crmsim"
	"github.com/oaas/pm/internal/crmsim/crmsimtest"
)

func TestGetEnvHealth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		cfg        crmsim.Config
		wantStatus string
		wantNodes  uint32
		wantReady  uint32
		wantAvail  *float64
	}{
		{"defaults", crmsim.Config{EnvName: "east"}, "Healthy", 3, 3, nil},
		{"forced availability", crmsim.Config{EnvName: "east", NodeCount: 5, Availability: new(0.999)}, "Healthy", 5, 5, new(0.999)},
		{"zero availability is present", crmsim.Config{EnvName: "east", Availability: new(0.0)}, "Healthy", 3, 3, new(0.0)},
		{"some nodes not ready", crmsim.Config{EnvName: "east", NodeCount: 4, ReadyNodes: new(uint32(2))}, "Degraded", 4, 2, nil},
		{"ready clamped to total", crmsim.Config{EnvName: "east", NodeCount: 2, ReadyNodes: new(uint32(9))}, "Healthy", 2, 2, nil},
		{"no node ready", crmsim.Config{EnvName: "east", ReadyNodes: new(uint32(0))}, "Unhealthy", 3, 0, nil},
		{"not serving", crmsim.Config{EnvName: "east", NotServing: true}, "Unhealthy", 3, 3, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim := crmsimtest.Start(t, tt.cfg)
			c := newClients(t, sim)
			before := time.Now().Add(-time.Second)
			res, err := c.info.GetEnvHealth(testCtx(t), &healthpb.CrmEnvRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if res.GetEnvName() != "east" || res.GetStatus() != tt.wantStatus {
				t.Errorf("env, status = %q, %q; want east, %q", res.GetEnvName(), res.GetStatus(), tt.wantStatus)
			}
			if res.GetNodeCount() != tt.wantNodes || res.GetReadyNodes() != tt.wantReady || res.NodeCount == nil || res.ReadyNodes == nil {
				t.Errorf("nodes = %v/%v, want %d/%d", res.ReadyNodes, res.NodeCount, tt.wantReady, tt.wantNodes)
			}
			switch {
			case tt.wantAvail == nil && res.Availability != nil:
				t.Errorf("availability = %v, want absent", res.GetAvailability())
			case tt.wantAvail != nil && (res.Availability == nil || res.GetAvailability() != *tt.wantAvail):
				t.Errorf("availability = %v, want %v", res.Availability, *tt.wantAvail)
			}
			if res.GetCrmVersion() != crmsim.DefaultCRMVersion {
				t.Errorf("crm_version = %q", res.GetCrmVersion())
			}
			if seen := time.Unix(res.GetLastSeen().GetSeconds(), int64(res.GetLastSeen().GetNanos())); seen.Before(before) {
				t.Errorf("last_seen = %v, want now", seen)
			}
		})
	}
}

func TestGetEnvHealthEnvSelection(t *testing.T) {
	t.Parallel()
	lenient := newClients(t, crmsimtest.Start(t, crmsim.Config{EnvName: "east"}))
	res, err := lenient.info.GetEnvHealth(testCtx(t), &healthpb.CrmEnvRequest{Env: "cluster-a"})
	if err != nil || res.GetEnvName() != "east" {
		t.Errorf("lenient GetEnvHealth(other env) = %v, %v; want its own env", res, err)
	}
	strict := newClients(t, crmsimtest.Start(t, crmsim.Config{EnvName: "east", StrictEnv: true}))
	_, err = strict.info.GetEnvHealth(testCtx(t), &healthpb.CrmEnvRequest{Env: "west"})
	wantCode(t, err, connect.CodeNotFound)
	if _, err := strict.info.GetEnvHealth(testCtx(t), &healthpb.CrmEnvRequest{Env: "east"}); err != nil {
		t.Errorf("strict GetEnvHealth(own env): %v", err)
	}
}

func TestHealthKnobsFlipAtRuntime(t *testing.T) {
	t.Parallel()
	sim := crmsimtest.Start(t, crmsim.Config{})
	c := newClients(t, sim)

	check := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		res, err := c.health.Check(testCtx(t), &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatalf("oaas Check: %v", err)
		}
		return res.GetStatus()
	}
	std := func() grpchealth.Status {
		t.Helper()
		res, err := c.grpcHealth.Check(testCtx(t), &grpchealth.CheckRequest{})
		if err != nil {
			t.Fatalf("grpc.health.v1 Check: %v", err)
		}
		return res.Status
	}

	if check() != healthpb.HealthCheckResponse_SERVING || std() != grpchealth.StatusServing {
		t.Fatal("fresh simulator is not SERVING")
	}
	sim.SetNotServing(true)
	if check() != healthpb.HealthCheckResponse_NOT_SERVING || std() != grpchealth.StatusNotServing {
		t.Error("NotServing did not reach both health services")
	}
	sim.SetNotServing(false)
	if check() != healthpb.HealthCheckResponse_SERVING {
		t.Error("SetNotServing(false) did not restore SERVING")
	}

	res, err := c.health.Check(testCtx(t), &healthpb.HealthCheckRequest{Service: "no.such.Service"})
	if err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVICE_UNKNOWN {
		t.Errorf("oaas Check(unknown) = %v, %v; want SERVICE_UNKNOWN", res, err)
	}
	_, err = c.grpcHealth.Check(testCtx(t), &grpchealth.CheckRequest{Service: "no.such.Service"})
	wantCode(t, err, connect.CodeNotFound)
	res, err = c.health.Check(testCtx(t), &healthpb.HealthCheckRequest{Service: "oaas.deployment.DeploymentService"})
	if err != nil || res.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("oaas Check(DeploymentService) = %v, %v; want SERVING", res, err)
	}

	sim.SetDisableCrmInfo(true)
	_, err = c.info.GetEnvHealth(testCtx(t), &healthpb.CrmEnvRequest{})
	wantCode(t, err, connect.CodeUnimplemented)
	sim.SetDisableOaasHealth(true)
	_, err = c.health.Check(testCtx(t), &healthpb.HealthCheckRequest{})
	wantCode(t, err, connect.CodeUnimplemented)
	if std() != grpchealth.StatusServing {
		t.Error("grpc.health.v1 must keep answering when the oaas services are disabled")
	}
	sim.SetDisableCrmInfo(false)
	if _, err := c.info.GetEnvHealth(testCtx(t), &healthpb.CrmEnvRequest{}); err != nil {
		t.Errorf("GetEnvHealth after re-enabling: %v", err)
	}

	sim.SetNodes(4, 1)
	info, err := c.info.GetEnvHealth(testCtx(t), &healthpb.CrmEnvRequest{})
	if err != nil || info.GetStatus() != "Degraded" || info.GetReadyNodes() != 1 || info.GetNodeCount() != 4 {
		t.Errorf("after SetNodes(4,1): %v, %v", info, err)
	}
	if err := sim.SetAvailability(new(0.5)); err != nil {
		t.Fatal(err)
	}
	info, _ = c.info.GetEnvHealth(testCtx(t), &healthpb.CrmEnvRequest{})
	if info.Availability == nil || info.GetAvailability() != 0.5 {
		t.Errorf("availability = %v, want 0.5", info.Availability)
	}
	if err := sim.SetAvailability(new(1.5)); err == nil {
		t.Error("SetAvailability(1.5) accepted a value outside [0,1]")
	}
	if err := sim.SetAvailability(nil); err != nil {
		t.Fatal(err)
	}
	info, _ = c.info.GetEnvHealth(testCtx(t), &healthpb.CrmEnvRequest{})
	if info.Availability != nil {
		t.Errorf("availability = %v, want absent", info.GetAvailability())
	}
}

func TestWatchSeesServingChanges(t *testing.T) {
	t.Parallel()
	sim := crmsimtest.Start(t, crmsim.Config{})
	c := newClients(t, sim)

	stream, err := c.health.Watch(testCtx(t), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	next := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		if !stream.Receive() {
			t.Fatalf("stream ended: %v", stream.Err())
		}
		return stream.Msg().GetStatus()
	}
	if got := next(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first Watch message = %v, want SERVING", got)
	}
	sim.SetNotServing(true)
	if got := next(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("after SetNotServing: %v, want NOT_SERVING", got)
	}
	sim.SetNotServing(false)
	if got := next(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("after recovery: %v, want SERVING", got)
	}

	events := c.grpcHealth.Watch(testCtx(t), &grpchealth.CheckRequest{})
	if ev := <-events; ev.Err != nil || ev.Response.Status != grpchealth.StatusServing {
		t.Fatalf("grpc.health.v1 Watch first event = %+v", ev)
	}
	sim.SetNotServing(true)
	if ev := <-events; ev.Err != nil || ev.Response.Status != grpchealth.StatusNotServing {
		t.Fatalf("grpc.health.v1 Watch after flip = %+v", ev)
	}
}
