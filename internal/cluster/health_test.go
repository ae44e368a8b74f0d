package cluster_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oaas/pm/internal/cluster"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/crmsim"
	"github.com/oaas/pm/internal/fault"
)

const getEnvHealth = "/oaas.health.CrmInfoService/GetEnvHealth"

func TestHealthCachingReducesCRMCalls(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		ttl       time.Duration
		callers   int
		wantCalls int64 // GetEnvHealth calls after one storm
	}{
		{"ttl caches a storm into one call", 300 * time.Millisecond, 50, 1},
		{"single flight without cache still dedupes a storm", 0, 50, -1}, // at least 1, at most callers
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			// Latency keeps the storm's calls overlapping the one CRM call.
			ss := sims(t, map[string]crmsim.Config{"east": {Latency: 30 * time.Millisecond}})
			m := setup(t, ss, nil, func(c *config.CRM) { c.HealthCacheTTL = tc.ttl })
			var wg sync.WaitGroup
			for range tc.callers {
				wg.Go(func() {
					if h := health(t, m, "east"); h.Status != cluster.StatusHealthy {
						t.Errorf("status %q (%s)", h.Status, h.Message)
					}
				})
			}
			wg.Wait()
			got := ss["east"].Calls(getEnvHealth)
			if tc.wantCalls > 0 && got != tc.wantCalls {
				t.Fatalf("%d concurrent Health calls made %d GetEnvHealth calls, want %d", tc.callers, got, tc.wantCalls)
			}
			if got < 1 || got > int64(tc.callers) {
				t.Fatalf("GetEnvHealth calls %d out of [1,%d]", got, tc.callers)
			}
		})
	}

	t.Run("a fresh entry answers, a stale one calls again", func(t *testing.T) {
		t.Parallel()
		ss := sims(t, map[string]crmsim.Config{"east": {}})
		m := setup(t, ss, nil, func(c *config.CRM) { c.HealthCacheTTL = 200 * time.Millisecond })
		for range 10 {
			health(t, m, "east")
		}
		if got := ss["east"].Calls(getEnvHealth); got != 1 {
			t.Fatalf("10 calls within the TTL made %d CRM calls, want 1", got)
		}
		time.Sleep(250 * time.Millisecond)
		for range 10 {
			m.HealthAll(context.Background())
		}
		if got := ss["east"].Calls(getEnvHealth); got != 2 {
			t.Fatalf("after the TTL: %d CRM calls, want 2", got)
		}
	})

	t.Run("ttl 0 calls every time", func(t *testing.T) {
		t.Parallel()
		ss := sims(t, map[string]crmsim.Config{"east": {}})
		m := setup(t, ss, nil, func(c *config.CRM) { c.HealthCacheTTL = 0 })
		for range 5 {
			health(t, m, "east")
		}
		if got := ss["east"].Calls(getEnvHealth); got != 5 {
			t.Fatalf("5 sequential calls with TTL 0 made %d CRM calls, want 5", got)
		}
	})

	t.Run("failures are cached too", func(t *testing.T) {
		t.Parallel()
		ss := sims(t, map[string]crmsim.Config{"east": {FailRate: 1}})
		m := setup(t, ss, nil, func(c *config.CRM) { c.HealthCacheTTL = time.Second })
		for range 5 {
			if h := health(t, m, "east"); h.Status != cluster.StatusUnhealthy || !strings.Contains(h.Message, "unavailable") {
				t.Fatalf("flaky CRM health = %+v", h)
			}
		}
		if got := ss["east"].Calls(getEnvHealth); got != 1 {
			t.Fatalf("a failing cluster was called %d times within the TTL, want 1", got)
		}
	})
}

func TestHealthAggregation(t *testing.T) {
	t.Parallel()
	ss := sims(t, map[string]crmsim.Config{
		"a-serving":     {Availability: ptr(0.99)},
		"b-not-serving": {NotServing: true},
		"c-degraded":    {NodeCount: 3, ReadyNodes: ptr[uint32](2)},
		"d-serving":     {},
		// Older CRMs answer only oaas.health.HealthService.
		"e-old-not-serving": {DisableCrmInfo: true, NotServing: true},
		"f-old-serving":     {DisableCrmInfo: true},
	})
	m := setup(t, ss, []config.Cluster{{Name: "g-dead", URL: deadURL(t)}})

	got := m.HealthAll(context.Background())
	want := []struct{ name, status string }{
		{"a-serving", cluster.StatusHealthy},
		{"d-serving", cluster.StatusHealthy},
		{"f-old-serving", cluster.StatusHealthy},
		{"c-degraded", cluster.StatusDegraded},
		{"b-not-serving", cluster.StatusUnhealthy},
		{"e-old-not-serving", cluster.StatusUnhealthy},
		{"g-dead", cluster.StatusUnhealthy},
	}
	if len(got) != len(want) {
		t.Fatalf("HealthAll returned %d clusters, want %d", len(got), len(want))
	}
	for i, w := range want {
		if got[i].Cluster != w.name || got[i].Status != w.status {
			t.Errorf("position %d: %s %s (%s), want %s %s", i, got[i].Cluster, got[i].Status, got[i].Message, w.name, w.status)
		}
	}
	a := got[0]
	if a.Availability == nil || *a.Availability != 0.99 || a.NodeCount == nil || *a.NodeCount != 3 ||
		a.CRMVersion == nil || *a.CRMVersion != crmsim.DefaultCRMVersion || a.LastSeen.IsZero() || a.Source != cluster.SourceCRMInfo {
		t.Errorf("a-serving health lost fields: %+v", a)
	}
	if dead := got[6]; dead.Message == "" || !strings.Contains(dead.Message, "unavailable") || !dead.LastSeen.IsZero() {
		t.Errorf("dead cluster: %+v", dead)
	}
	if p := a.Proto(); p.GetClusterName() != "a-serving" || p.GetAvailability() != 0.99 || p.GetLastSeen() == nil || p.Message != nil {
		t.Errorf("Proto() = %v", p)
	}
	// A cluster never seen still has last_seen (the model requires it): the
	// epoch, never a recent time.
	if p := got[6].Proto(); p.GetLastSeen() == nil || p.GetLastSeen().AsTime().Unix() != 0 || p.GetMessage() == "" {
		t.Errorf("dead Proto() = %v", p)
	}

	order := m.Order(context.Background(), []string{"g-dead", "nope", "c-degraded", "a-serving"})
	if strings.Join(order, ",") != "a-serving,c-degraded,g-dead,nope" {
		t.Errorf("Order = %v", order)
	}
	if _, err := m.Health(context.Background(), "nope"); fault.KindOf(err) != fault.NotFound ||
		err.Error() != `cluster "nope" is not configured` {
		t.Errorf("Health(unknown) error = %v", err)
	}
}

func TestHealthFallbackChain(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name          string
		cfg           crmsim.Config
		status        string
		source        string
		withNodeCount bool
	}{
		{"CrmInfoService answers", crmsim.Config{}, cluster.StatusHealthy, cluster.SourceCRMInfo, true},
		{"CrmInfoService reports unhealthy", crmsim.Config{NotServing: true}, cluster.StatusUnhealthy, cluster.SourceCRMInfo, true},
		{"no CrmInfoService: oaas health", crmsim.Config{DisableCrmInfo: true}, cluster.StatusHealthy, cluster.SourceOaasHealth, false},
		{"no CrmInfoService: oaas NOT_SERVING", crmsim.Config{DisableCrmInfo: true, NotServing: true}, cluster.StatusUnhealthy, cluster.SourceOaasHealth, false},
		{"only grpc.health.v1", crmsim.Config{DisableCrmInfo: true, DisableOaasHealth: true}, cluster.StatusHealthy, cluster.SourceGRPCHealth, false},
		{"only grpc.health.v1 NOT_SERVING", crmsim.Config{DisableCrmInfo: true, DisableOaasHealth: true, NotServing: true}, cluster.StatusUnhealthy, cluster.SourceGRPCHealth, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ss := sims(t, map[string]crmsim.Config{"east": tc.cfg})
			// A breaker that opens at once proves UNIMPLEMENTED does not trip it.
			m := setup(t, ss, nil, func(c *config.CRM) { c.BreakerFailureThreshold = 1 })
			for range 2 {
				h := health(t, m, "east")
				if h.Status != tc.status || h.Source != tc.source || (h.NodeCount != nil) != tc.withNodeCount {
					t.Fatalf("health = %+v, want status %s from %s", h, tc.status, tc.source)
				}
			}
			if st := client(t, m, "east").BreakerState(); st != "closed" {
				t.Fatalf("breaker %s after UNIMPLEMENTED answers", st)
			}
		})
	}
}

func TestHealthAllHangingCRMBoundedByDeadline(t *testing.T) {
	t.Parallel()
	ss := sims(t, map[string]crmsim.Config{"fast": {}, "hung": {Hang: true}, "slow-ok": {Latency: 100 * time.Millisecond}})
	const timeout = 250 * time.Millisecond
	m := setup(t, ss, nil, func(c *config.CRM) { c.Timeout = timeout })

	start := time.Now()
	hs := m.HealthAll(context.Background())
	elapsed := time.Since(start)
	if elapsed > timeout+400*time.Millisecond {
		t.Fatalf("HealthAll took %v with a %v CRM timeout", elapsed, timeout)
	}
	byName := map[string]cluster.Health{}
	for _, h := range hs {
		byName[h.Cluster] = h
	}
	if byName["fast"].Status != cluster.StatusHealthy || byName["slow-ok"].Status != cluster.StatusHealthy {
		t.Fatalf("healthy clusters delayed or failed by the hung one: %+v", hs)
	}
	if h := byName["hung"]; h.Status != cluster.StatusUnhealthy || !strings.Contains(h.Message, "did not answer in time") {
		t.Fatalf("hung cluster = %+v", h)
	}

	// A caller with an earlier deadline is not held to the CRM timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	h, err := m.Health(ctx, "hung")
	if err != nil || time.Since(start) > 200*time.Millisecond || h.Status == cluster.StatusHealthy {
		t.Fatalf("Health with a 50ms caller deadline: %+v, %v after %v", h, err, time.Since(start))
	}
}

func TestHealthBackgroundRefresh(t *testing.T) {
	t.Parallel()
	ss := sims(t, map[string]crmsim.Config{"east": {}, "west": {}})
	m := setup(t, ss, nil, func(c *config.CRM) {
		c.HealthCheckInterval = 40 * time.Millisecond
		c.HealthCacheTTL = time.Hour // only the refresh may call
	})
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err == nil {
		t.Fatal("second Start succeeded")
	}
	deadline := time.Now().Add(2 * time.Second)
	for (ss["east"].Calls(getEnvHealth) < 3 || ss["west"].Calls(getEnvHealth) < 3) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	m.Stop()
	calls := ss["east"].Calls(getEnvHealth)
	if calls < 3 {
		t.Fatalf("background refresh made %d calls", calls)
	}
	// The refresh filled the cache: reads make no call.
	health(t, m, "east")
	time.Sleep(100 * time.Millisecond)
	if got := ss["east"].Calls(getEnvHealth); got != calls {
		t.Fatalf("calls went on after Stop or a cached read called: %d → %d", calls, got)
	}
	m.Stop() // idempotent
}
