package crmsim_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	healthpb "github.com/oaas/pm/gen/go/oaas/health"
	"github.com/oaas/pm/internal/crmsim"
	"github.com/oaas/pm/internal/crmsim/crmsimtest"
)

func TestCorrelationIDIsEchoed(t *testing.T) {
	t.Parallel()
	sim := crmsimtest.Start(t, crmsim.Config{})
	c := newClients(t, sim)

	tests := []struct {
		name string
		id   string
		call func(ctx context.Context) error
	}{
		{"success", "corr-ok", func(ctx context.Context) error {
			_, err := c.info.GetEnvHealth(ctx, &healthpb.CrmEnvRequest{})
			return err
		}},
		{"error", "corr-err", func(ctx context.Context) error {
			_, err := c.deploy.GetClassRuntime(ctx, &deploymentpb.GetClassRuntimeRequest{DeploymentId: "missing"})
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, info := connect.NewClientContext(testCtx(t))
			info.RequestHeader().Set("x-correlation-id", tt.id)
			err := tt.call(ctx)
			got := info.ResponseHeader().Get("x-correlation-id")
			if got == "" {
				// Errors without a body travel as trailers-only; gRPC
				// clients expose that metadata with the error.
				if ce := (*connect.Error)(nil); errors.As(err, &ce) {
					got = ce.Meta().Get("x-correlation-id")
				}
			}
			if got != tt.id {
				t.Errorf("echoed correlation id = %q, want %q (err %v)", got, tt.id, err)
			}
			if sim.LastCorrelationID() != tt.id {
				t.Errorf("LastCorrelationID = %q, want %q", sim.LastCorrelationID(), tt.id)
			}
		})
	}
}

func TestHangReturnsDeadlineExceededPromptly(t *testing.T) {
	t.Parallel()
	sim := crmsimtest.Start(t, crmsim.Config{Hang: true})
	c := newClients(t, sim)

	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.deploy.Deploy(ctx, &deploymentpb.DeployRequest{DeploymentUnit: unit("u", "p", "C", "e")})
	elapsed := time.Since(start)
	wantCode(t, err, connect.CodeDeadlineExceeded)
	if elapsed > 2*time.Second {
		t.Errorf("hung call returned after %v, want about 200ms", elapsed)
	}
	if sim.RuntimeCount() != 0 {
		t.Error("a hung Deploy still created a runtime")
	}

	sim.SetHang(false)
	if _, err := c.info.GetEnvHealth(testCtx(t), &healthpb.CrmEnvRequest{}); err != nil {
		t.Errorf("after SetHang(false): %v", err)
	}
}

func TestLatencyDelaysCalls(t *testing.T) {
	t.Parallel()
	sim := crmsimtest.Start(t, crmsim.Config{Latency: 100 * time.Millisecond})
	c := newClients(t, sim)

	start := time.Now()
	if _, err := c.info.GetEnvHealth(testCtx(t), &healthpb.CrmEnvRequest{}); err != nil {
		t.Fatal(err)
	}
	if elapsed := time.Since(start); elapsed < 100*time.Millisecond {
		t.Errorf("call took %v, want at least the 100ms latency", elapsed)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer cancel()
	_, err := c.info.GetEnvHealth(ctx, &healthpb.CrmEnvRequest{})
	wantCode(t, err, connect.CodeDeadlineExceeded)
}

func TestFailFirstDeploys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name          string
		cfg           crmsim.Config
		wantCode      connect.Code // zero: failures come back as gRPC OK with a body status
		wantRuntimeAt int          // runtimes once the failures are served
	}{
		{"unavailable by default", crmsim.Config{FailFirstDeploys: 2}, connect.CodeUnavailable, 0},
		{"configured code", crmsim.Config{FailFirstDeploys: 2, FailDeployCode: connect.CodeInternal}, connect.CodeInternal, 0},
		{"in body", crmsim.Config{FailFirstDeploys: 2, FailDeployInBody: true}, 0, 0},
		{"after apply: the answer is lost", crmsim.Config{FailFirstDeploys: 2, FailDeployAfterApply: true}, connect.CodeUnavailable, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sim := crmsimtest.Start(t, tt.cfg)
			c := newClients(t, sim)
			u := unit("retry-me", "p", "C", "e", "f")
			for attempt := 1; attempt <= 2; attempt++ {
				res, err := c.deploy.Deploy(testCtx(t), &deploymentpb.DeployRequest{DeploymentUnit: u})
				if tt.wantCode != 0 {
					wantCode(t, err, tt.wantCode)
				} else if err != nil || res.GetStatus() != commonpb.StatusCode_INTERNAL_ERROR {
					t.Fatalf("attempt %d = %v, %v; want gRPC OK with INTERNAL_ERROR", attempt, res, err)
				}
				if got := sim.RuntimeCount(); got != tt.wantRuntimeAt {
					t.Fatalf("after failed attempt %d: %d runtimes, want %d", attempt, got, tt.wantRuntimeAt)
				}
			}
			// The same id retried after the failures lands exactly once.
			res := deploy(t, c, u)
			if res.GetStatus() != commonpb.StatusCode_OK || res.GetDeploymentId() != "retry-me" {
				t.Fatalf("third attempt = %v, want OK", res)
			}
			if sim.RuntimeCount() != 1 || sim.CreatedCount() != 1 || sim.Calls("Deploy") != 3 {
				t.Errorf("runtimes %d, created %d, calls %d; want 1, 1, 3",
					sim.RuntimeCount(), sim.CreatedCount(), sim.Calls("Deploy"))
			}
			if sim.LastUnit("retry-me") == nil {
				t.Error("LastUnit does not record failed attempts")
			}

			// The knob can be re-armed at runtime.
			if err := sim.SetFailFirstDeploys(1); err != nil {
				t.Fatal(err)
			}
			res, err := c.deploy.Deploy(testCtx(t), &deploymentpb.DeployRequest{DeploymentUnit: u})
			if err == nil && res.GetStatus() == commonpb.StatusCode_OK {
				t.Error("re-armed FailFirstDeploys did not fail the next Deploy")
			}
			deploy(t, c, u)
		})
	}
}

func TestFailRateIsDeterministicPerSeed(t *testing.T) {
	t.Parallel()
	pattern := func(seed uint64) []bool {
		sim := crmsimtest.Start(t, crmsim.Config{FailRate: 0.3, Seed: seed})
		c := newClients(t, sim)
		var failed []bool
		for range 60 {
			_, err := c.info.GetEnvHealth(testCtx(t), &healthpb.CrmEnvRequest{})
			if err != nil && connect.CodeOf(err) != connect.CodeUnavailable {
				t.Fatalf("fail rate produced %v, want UNAVAILABLE", err)
			}
			failed = append(failed, err != nil)
		}
		return failed
	}
	a, b, other := pattern(42), pattern(42), pattern(7)
	if !slices.Equal(a, b) {
		t.Errorf("same seed, different failures:\n%v\n%v", a, b)
	}
	if slices.Equal(a, other) {
		t.Error("different seeds gave the same 60-call failure pattern")
	}
	n := 0
	for _, f := range a {
		if f {
			n++
		}
	}
	if n < 6 || n > 36 { // 30% of 60 is 18; the seed is fixed, so this is a sanity bound
		t.Errorf("%d of 60 calls failed at rate 0.3", n)
	}

	sim := crmsimtest.Start(t, crmsim.Config{})
	if err := sim.SetFailRate(1, 1); err != nil {
		t.Fatal(err)
	}
	c := newClients(t, sim)
	_, err := c.deploy.ListClassRuntimes(testCtx(t), &deploymentpb.ListClassRuntimesRequest{})
	wantCode(t, err, connect.CodeUnavailable)
	if err := sim.SetFailRate(2, 1); err == nil {
		t.Error("SetFailRate(2) accepted a rate above 1")
	}
}

func TestCloseReleasesHungAndStreamingCalls(t *testing.T) {
	t.Parallel()
	sim, err := crmsim.Start(t.Context(), crmsim.Config{})
	if err != nil {
		t.Fatal(err)
	}
	c := newClients(t, sim)
	stream, err := c.health.Watch(testCtx(t), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if !stream.Receive() {
		t.Fatalf("watch: %v", stream.Err())
	}
	sim.SetHang(true)
	hung := make(chan error, 1)
	go func() {
		_, err := c.deploy.ListClassRuntimes(testCtx(t), &deploymentpb.ListClassRuntimesRequest{})
		hung <- err
	}()
	eventually(t, 5*time.Second, "the hung call to arrive", func() bool { return sim.Calls("ListClassRuntimes") == 1 })

	start := time.Now()
	if err := sim.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Errorf("Close took %v with a hung call and a watch open", elapsed)
	}
	if err := <-hung; connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("hung call after Close: %v, want UNAVAILABLE", err)
	}
	if stream.Receive() {
		t.Error("watch stream still delivers after Close")
	}
	if err := sim.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestContextEndClosesSimulator(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	sims, err := crmsim.StartMany(ctx, []crmsim.Config{{EnvName: "east"}, {EnvName: "west"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, sim := range sims {
		res, err := newClients(t, sim).info.GetEnvHealth(testCtx(t), &healthpb.CrmEnvRequest{})
		if err != nil || res.GetEnvName() != sim.EnvName() {
			t.Fatalf("%s: %v, %v", sim.EnvName(), res, err)
		}
	}
	cancel()
	for _, sim := range sims {
		c := newClients(t, sim)
		eventually(t, 5*time.Second, sim.EnvName()+" to stop serving", func() bool {
			_, err := c.info.GetEnvHealth(testCtx(t), &healthpb.CrmEnvRequest{})
			return err != nil
		})
	}

	if _, err := crmsim.StartMany(t.Context(), []crmsim.Config{{}, {FailRate: 3}}); err == nil {
		t.Error("StartMany accepted an invalid config")
	}
}
