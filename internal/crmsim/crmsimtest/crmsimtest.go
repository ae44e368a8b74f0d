// Package crmsimtest starts CRM simulators for tests. It lives apart from
// crmsim so that the simulator itself, which the pm binary embeds when no
// CRM is configured, does not link the testing package.
package crmsimtest

import (
	"context"
	"testing"

	"github.com/oaas/pm/internal/crmsim"
)

// Start starts a simulator for a test and closes it when the test ends; it
// fails the test at once if the simulator cannot start.
func Start(t testing.TB, cfg crmsim.Config) *crmsim.Sim {
	t.Helper()
	s, err := crmsim.Start(context.Background(), cfg)
	if err != nil {
		t.Fatalf("start CRM simulator: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("close CRM simulator %s: %v", s.EnvName(), err)
		}
	})
	return s
}
