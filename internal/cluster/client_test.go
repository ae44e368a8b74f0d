package cluster_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	commonpb "github.com/oaas/pm/gen/go/oaas/common"
	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	"github.com/oaas/pm/internal/cluster"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/correlation"
	"github.com/oaas/pm/internal/crmsim"
	"github.com/oaas/pm/internal/crmsim/crmsimtest"
	"github.com/oaas/pm/internal/fault"
)

func unit(id string) *deploymentpb.DeploymentUnit {
	return &deploymentpb.DeploymentUnit{
		Id: id, PackageName: "pkg", ClassKey: "Counter", TargetEnv: "east",
		Functions: []*deploymentpb.FunctionDeploymentSpec{{FunctionKey: "Counter.inc"}},
	}
}

func TestClientRoundTrip(t *testing.T) {
	t.Parallel()
	ss := sims(t, map[string]crmsim.Config{"east": {}})
	m := setup(t, ss, nil)
	c := client(t, m, "east")
	ctx := context.Background()
	if c.Name() != "east" {
		t.Fatalf("Name() = %q", c.Name())
	}

	dep, err := c.Deploy(ctx, unit("pkg-counter-east"))
	if err != nil || dep.GetStatus() != commonpb.StatusCode_OK || dep.GetDeploymentId() != "pkg-counter-east" {
		t.Fatalf("Deploy: %v, %v", dep, err)
	}
	st, err := c.Status(ctx, "pkg-counter-east")
	if err != nil || st.GetDeployment().GetClassKey() != "Counter" || st.GetMessage() == "" {
		t.Fatalf("Status: %v, %v", st, err)
	}
	got, err := c.Get(ctx, "pkg-counter-east")
	if err != nil || got.GetDeployment().GetPackageName() != "pkg" {
		t.Fatalf("Get: %v, %v", got, err)
	}
	list, err := c.List(ctx, &deploymentpb.ListClassRuntimesRequest{PackageName: ptr("pkg")})
	if err != nil || len(list.GetItems()) != 1 {
		t.Fatalf("List: %v, %v", list, err)
	}
	if all, err := c.List(ctx, nil); err != nil || len(all.GetItems()) != 1 {
		t.Fatalf("List(nil): %v, %v", all, err)
	}
	del, err := c.Delete(ctx, "pkg-counter-east")
	if err != nil || del.GetStatus() != commonpb.StatusCode_OK {
		t.Fatalf("Delete: %v, %v", del, err)
	}

	notFound := []struct {
		name string
		call func() error
	}{
		{"get", func() error { _, err := c.Get(ctx, "pkg-counter-east"); return err }},
		{"delete", func() error { _, err := c.Delete(ctx, "pkg-counter-east"); return err }},
		{"status", func() error { _, err := c.Status(ctx, "pkg-counter-east"); return err }},
	}
	for _, tc := range notFound {
		err := tc.call()
		if fault.KindOf(err) != fault.NotFound || !strings.HasPrefix(err.Error(), `cluster "east": `) {
			t.Errorf("%s after delete: %v (kind %v)", tc.name, err, fault.KindOf(err))
		}
	}
	if _, err := c.Deploy(ctx, nil); fault.KindOf(err) != fault.Invalid {
		t.Errorf("Deploy(nil): %v (kind %v)", err, fault.KindOf(err))
	}
	if _, err := c.Get(ctx, ""); fault.KindOf(err) != fault.Invalid {
		t.Errorf("Get(\"\"): %v (kind %v)", err, fault.KindOf(err))
	}
	if _, err := m.Client("west"); fault.KindOf(err) != fault.NotFound || err.Error() != `cluster "west" is not configured` {
		t.Errorf("Client(unknown): %v", err)
	}
	if !m.Has("east") || m.Has("west") || strings.Join(m.Names(), ",") != "east" {
		t.Errorf("Has/Names: %v", m.Names())
	}
}

func TestClientCorrelationID(t *testing.T) {
	t.Parallel()
	ss := sims(t, map[string]crmsim.Config{"east": {}})
	m := setup(t, ss, nil)
	c := client(t, m, "east")

	ctx := correlation.With(context.Background(), "corr-from-request-1")
	if _, err := c.List(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got := ss["east"].LastCorrelationID(); got != "corr-from-request-1" {
		t.Fatalf("CRM saw correlation id %q", got)
	}
	if _, err := m.Health(correlation.With(context.Background(), "corr-health-2"), "east"); err != nil {
		t.Fatal(err)
	}
	if got := ss["east"].LastCorrelationID(); got != "corr-health-2" {
		t.Fatalf("health check carried correlation id %q", got)
	}
	if _, err := c.List(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if got := ss["east"].LastCorrelationID(); got == "" || got == "corr-health-2" {
		t.Fatalf("a call without an id should carry a new one, CRM saw %q", got)
	}
}

func TestBreaker(t *testing.T) {
	t.Parallel()
	const threshold = 3
	const openFor = 200 * time.Millisecond
	breakerCfg := func(c *config.CRM) {
		c.BreakerFailureThreshold = threshold
		c.BreakerTimeout = openFor
		c.Timeout = 150 * time.Millisecond
	}
	faults := []struct {
		name  string
		cfg   crmsim.Config
		kind  fault.Kind
		heal  func(*crmsim.Sim)
		calls string
	}{
		{"failing CRM", crmsim.Config{FailRate: 1}, fault.Unavailable,
			func(s *crmsim.Sim) { _ = s.SetFailRate(0, 0) }, "ListClassRuntimes"},
		{"hanging CRM", crmsim.Config{Hang: true}, fault.DeadlineExceeded,
			func(s *crmsim.Sim) { s.SetHang(false) }, "ListClassRuntimes"},
	}
	for _, tc := range faults {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ss := sims(t, map[string]crmsim.Config{"east": tc.cfg})
			sim := ss["east"]
			m := setup(t, ss, nil, breakerCfg)
			c := client(t, m, "east")
			ctx := context.Background()
			for i := range threshold {
				if _, err := c.List(ctx, nil); fault.KindOf(err) != tc.kind {
					t.Fatalf("call %d: %v (kind %v), want %v", i, err, fault.KindOf(err), tc.kind)
				}
			}
			if c.BreakerState() != "open" {
				t.Fatalf("breaker %s after %d failures", c.BreakerState(), threshold)
			}
			start := time.Now()
			_, err := c.List(ctx, nil)
			if fault.KindOf(err) != fault.Unavailable || err.Error() != `cluster "east": circuit breaker open` {
				t.Fatalf("call with the breaker open: %v", err)
			}
			if time.Since(start) > 50*time.Millisecond {
				t.Fatalf("an open breaker still waited %v", time.Since(start))
			}
			if h := health(t, m, "east"); h.Status != cluster.StatusUnhealthy || h.Message != "circuit breaker open" {
				t.Fatalf("health with the breaker open: %+v", h)
			}
			if got := sim.Calls(tc.calls); got != threshold {
				t.Fatalf("CRM saw %d calls, want %d (the open breaker must not call)", got, threshold)
			}
			if got := sim.Calls(getEnvHealth); got != 0 {
				t.Fatalf("health check reached the CRM through an open breaker (%d calls)", got)
			}

			tc.heal(sim)
			time.Sleep(openFor + 50*time.Millisecond)
			// Half-open: one probe call reaches the CRM and closes the breaker.
			if _, err := c.List(ctx, nil); err != nil {
				t.Fatalf("half-open probe: %v", err)
			}
			if got := sim.Calls(tc.calls); got != threshold+1 {
				t.Fatalf("CRM saw %d calls after the timeout, want %d", got, threshold+1)
			}
			if c.BreakerState() != "closed" {
				t.Fatalf("breaker %s after a good probe", c.BreakerState())
			}
			if h := health(t, m, "east"); h.Status != cluster.StatusHealthy {
				t.Fatalf("health after recovery: %+v", h)
			}
		})
	}

	t.Run("answers about the request do not trip it", func(t *testing.T) {
		t.Parallel()
		ss := sims(t, map[string]crmsim.Config{"east": {}})
		m := setup(t, ss, nil, breakerCfg)
		c := client(t, m, "east")
		for range 3 * threshold {
			if _, err := c.Get(context.Background(), "missing"); fault.KindOf(err) != fault.NotFound {
				t.Fatal(err)
			}
			if _, err := c.Deploy(context.Background(), nil); fault.KindOf(err) != fault.Invalid {
				t.Fatal(err)
			}
		}
		if c.BreakerState() != "closed" {
			t.Fatalf("breaker %s after NOT_FOUND/INVALID_ARGUMENT answers", c.BreakerState())
		}
	})

	t.Run("caller cancellations and caller deadlines do not trip it", func(t *testing.T) {
		t.Parallel()
		ss := sims(t, map[string]crmsim.Config{"east": {Latency: time.Second}})
		m := setup(t, ss, nil, breakerCfg, func(c *config.CRM) { c.Timeout = 2 * time.Second })
		c := client(t, m, "east")
		for range 2 * threshold {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(20*time.Millisecond, cancel)
			if _, err := c.List(ctx, nil); err == nil {
				t.Fatal("canceled call succeeded")
			}
			cancel()
		}
		for range 2 * threshold {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			if _, err := c.List(ctx, nil); fault.KindOf(err) != fault.DeadlineExceeded {
				t.Fatalf("call past the caller's deadline: %v", err)
			}
			cancel()
		}
		if c.BreakerState() != "closed" {
			t.Fatalf("breaker %s after calls the caller gave up on", c.BreakerState())
		}
	})
}

func TestClientRetries(t *testing.T) {
	t.Parallel()
	t.Run("reads retry a flaky CRM", func(t *testing.T) {
		t.Parallel()
		ss := sims(t, map[string]crmsim.Config{"east": {FailRate: 0.5, Seed: 7}})
		m := setup(t, ss, nil, func(c *config.CRM) { c.RetryAttempts = 8 })
		c := client(t, m, "east")
		for i := range 10 {
			if _, err := c.List(context.Background(), nil); err != nil {
				t.Fatalf("read %d failed despite retries: %v", i, err)
			}
		}
		if got := ss["east"].Calls("ListClassRuntimes"); got <= 10 {
			t.Fatalf("a CRM failing half the calls saw only %d calls for 10 reads", got)
		}
	})
	t.Run("reads give up after RetryAttempts", func(t *testing.T) {
		t.Parallel()
		ss := sims(t, map[string]crmsim.Config{"east": {FailRate: 1}})
		m := setup(t, ss, nil, func(c *config.CRM) { c.RetryAttempts = 2 })
		_, err := client(t, m, "east").Status(context.Background(), "x")
		if fault.KindOf(err) != fault.Unavailable || !strings.HasPrefix(err.Error(), `cluster "east": CRM unavailable: `) {
			t.Fatalf("err = %v", err)
		}
		if got := ss["east"].Calls("GetDeploymentStatus"); got != 3 {
			t.Fatalf("CRM saw %d calls, want 1 + 2 retries", got)
		}
	})
	t.Run("writes are not retried", func(t *testing.T) {
		t.Parallel()
		ss := sims(t, map[string]crmsim.Config{"east": {FailFirstDeploys: 1}})
		m := setup(t, ss, nil, func(c *config.CRM) { c.RetryAttempts = 5 })
		c := client(t, m, "east")
		if _, err := c.Deploy(context.Background(), unit("u1")); fault.KindOf(err) != fault.Unavailable {
			t.Fatalf("first deploy: %v", err)
		}
		if _, err := c.Delete(context.Background(), "u1"); fault.KindOf(err) != fault.NotFound {
			t.Fatalf("delete of a never-created unit: %v", err)
		}
		if got := ss["east"].Calls("Deploy"); got != 1 {
			t.Fatalf("Deploy reached the CRM %d times, want 1", got)
		}
		if got := ss["east"].Calls("DeleteDeployment"); got != 1 {
			t.Fatalf("Delete reached the CRM %d times, want 1", got)
		}
	})
	t.Run("a hanging CRM holds a read no longer than one timeout, retries included", func(t *testing.T) {
		t.Parallel()
		ss := sims(t, map[string]crmsim.Config{"east": {Hang: true}})
		m := setup(t, ss, nil, func(c *config.CRM) { c.Timeout = 300 * time.Millisecond; c.RetryAttempts = 3 })
		start := time.Now()
		_, err := client(t, m, "east").Get(context.Background(), "x")
		if fault.KindOf(err) != fault.DeadlineExceeded || !strings.Contains(err.Error(), "did not answer in time") {
			t.Fatalf("err = %v", err)
		}
		if d := time.Since(start); d > 500*time.Millisecond {
			t.Fatalf("a read with 3 retries against a hanging CRM took %v; the timeout is 300ms", d)
		}
		var fe *fault.Error
		if !errors.As(err, &fe) || fe.Err == nil {
			t.Fatalf("cause not kept: %#v", err)
		}
	})
}

func TestTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	other := newPKI(t)
	tlsSim := crmsimtest.Start(t, crmsim.Config{EnvName: "tls", TLS: &crmsim.TLSConfig{CertPEM: p.serverCert, KeyPEM: p.serverKey}})
	mtlsSim := crmsimtest.Start(t, crmsim.Config{EnvName: "mtls", TLS: &crmsim.TLSConfig{CertPEM: p.serverCert, KeyPEM: p.serverKey, ClientCAPEM: p.caPEM}})
	cases := []struct {
		name    string
		sim     *crmsim.Sim
		tls     config.ClusterTLS
		healthy bool
	}{
		{"TLS with the CA", tlsSim, config.ClusterTLS{CAFile: p.caFile}, true},
		{"TLS with a server name override", tlsSim, config.ClusterTLS{CAFile: p.caFile, ServerName: "crm.test"}, true},
		{"TLS with a wrong server name", tlsSim, config.ClusterTLS{CAFile: p.caFile, ServerName: "other.test"}, false},
		{"TLS with another CA", tlsSim, config.ClusterTLS{CAFile: other.caFile}, false},
		{"TLS with system roots", tlsSim, config.ClusterTLS{}, false},
		{"TLS skipping verification", tlsSim, config.ClusterTLS{InsecureSkipVerify: true}, true},
		{"mTLS with a client certificate", mtlsSim, config.ClusterTLS{CAFile: p.caFile, CertFile: p.clientCert, KeyFile: p.clientKey}, true},
		{"mTLS without a client certificate", mtlsSim, config.ClusterTLS{CAFile: p.caFile}, false},
		{"mTLS with an untrusted client certificate", mtlsSim, config.ClusterTLS{CAFile: p.caFile, CertFile: other.clientCert, KeyFile: other.clientKey}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := setup(t, nil, []config.Cluster{{Name: "secure", URL: tc.sim.URL(), TLS: tc.tls}})
			h := health(t, m, "secure")
			if (h.Status == cluster.StatusHealthy) != tc.healthy {
				t.Fatalf("health = %+v, want healthy=%v", h, tc.healthy)
			}
			_, err := client(t, m, "secure").Deploy(context.Background(), unit("tls-unit"))
			if (err == nil) != tc.healthy {
				t.Fatalf("Deploy over TLS: %v", err)
			}
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	cases := []struct {
		name     string
		clusters []config.Cluster
		tweak    func(*config.CRM)
		want     string
	}{
		{"bad scheme", []config.Cluster{{Name: "a", URL: "grpc://crm:8088"}}, nil, "scheme must be http"},
		{"no host", []config.Cluster{{Name: "a", URL: "http://"}}, nil, "has no host"},
		{"path", []config.Cluster{{Name: "a", URL: "http://crm:8088/x"}}, nil, "no path"},
		{"duplicate", []config.Cluster{{Name: "a", URL: "http://crm:1"}, {Name: "a", URL: "http://crm:2"}}, nil, `cluster "a" is defined twice`},
		{"no name", []config.Cluster{{URL: "http://crm:1"}}, nil, "has no name"},
		{"missing CA file", []config.Cluster{{Name: "a", URL: "https://crm:1", TLS: config.ClusterTLS{CAFile: "/nonexistent/ca.pem"}}}, nil, "reading TLS CA file"},
		{"CA file not PEM", []config.Cluster{{Name: "a", URL: "https://crm:1", TLS: config.ClusterTLS{CAFile: p.clientKey}}}, nil, "holds no PEM certificate"},
		{"cert without key", []config.Cluster{{Name: "a", URL: "https://crm:1", TLS: config.ClusterTLS{CertFile: p.clientCert}}}, nil, "must be set together"},
		{"zero timeout", nil, func(c *config.CRM) { c.Timeout = 0 }, "CRM_DEFAULT_TIMEOUT"},
		{"zero threshold", nil, func(c *config.CRM) { c.BreakerFailureThreshold = 0 }, "CRM_CIRCUIT_BREAKER_FAILURE_THRESHOLD"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := testCRM()
			cfg.Clusters = tc.clusters
			if tc.tweak != nil {
				tc.tweak(&cfg)
			}
			m, err := cluster.New(cfg, nil)
			if err == nil {
				m.Close()
				t.Fatal("New accepted a bad config")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
	// An http cluster ignores TLS settings shared by every cluster.
	cfg := testCRM()
	cfg.Clusters = []config.Cluster{{Name: "plain", URL: "http://crm:1", TLS: config.ClusterTLS{CAFile: "/nonexistent"}}}
	m, err := cluster.New(cfg, nil)
	if err != nil {
		t.Fatalf("http cluster with TLS settings: %v", err)
	}
	m.Close()
}
