package cluster_test

import (
	"context"
	"sync"
	"testing"

	"github.com/oaas/pm/internal/cluster"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/crmsim"
)

// TestOnHealthChange: the listener hears each cluster's first check and
// every change of its health, not re-checks that found the same.
func TestOnHealthChange(t *testing.T) {
	t.Parallel()
	high := 0.999
	ss := sims(t, map[string]crmsim.Config{"east": {Availability: &high}})
	m := setup(t, ss, nil, func(c *config.CRM) { c.HealthCacheTTL = 0 })
	var mu sync.Mutex
	var heard []cluster.Health
	m.OnHealthChange(func(h cluster.Health) {
		mu.Lock()
		defer mu.Unlock()
		heard = append(heard, h)
	})
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(heard)
	}
	m.Refresh(context.Background())
	m.Refresh(context.Background())
	if n := count(); n != 1 {
		t.Fatalf("heard %d changes after the first check and a same one, want 1", n)
	}
	low := 0.9
	if err := ss["east"].SetAvailability(&low); err != nil {
		t.Fatal(err)
	}
	m.Refresh(context.Background())
	if n := count(); n != 2 {
		t.Fatalf("heard %d changes after the availability moved, want 2", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if h := heard[1]; h.Cluster != "east" || h.Availability == nil || *h.Availability != low {
		t.Errorf("heard %+v", h)
	}
}
