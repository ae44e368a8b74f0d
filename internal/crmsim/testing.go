package crmsim

import (
	"context"
	"testing"
)

// StartT starts a simulator for a test and closes it when the test ends; it
// fails the test at once if the simulator cannot start.
func StartT(t testing.TB, cfg Config) *Sim {
	t.Helper()
	s, err := Start(context.Background(), cfg)
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
