package inproc

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"testing"

	"github.com/oaas/pm/internal/crmsim"
)

// TestPMOverSims starts two simulated clusters and a PM over them, asks PM
// for their health and stops everything again.
func TestPMOverSims(t *testing.T) {
	ctx := context.Background()
	sims, err := StartSims(ctx, 2, func(i int) crmsim.Config {
		return crmsim.Config{EnvName: fmt.Sprintf("c%d", i)}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sims.Close()
	if got := sims.Names(); len(got) != 2 || got[0] != "c0" || got[1] != "c1" {
		t.Errorf("Names() = %q", got)
	}
	pm, err := StartPM(ctx, Config(sims), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, pm.URL()+"/api/v1/clusters/health", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /api/v1/clusters/health: status %d", resp.StatusCode)
	}
	if err := pm.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
}
