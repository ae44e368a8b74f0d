// Command chartenv runs the container environments the Helm chart produces
// through PM's own configuration loader, so the chart cannot drift from what
// PM accepts: every variable parses and validates, the listener is allowed to
// face the network, and a chart-made tokens file loads.
//
//	go run -C tools ./chartcheck -env-out DIR ../deploy/helm/oaas-pm
//	go run ./deploy/chartenv DIR
//
// DIR holds one JSON file per value profile: {"env": {...}, "files": {path: content}}.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/oaas/pm/internal/auth"
	"github.com/oaas/pm/internal/config"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: chartenv DIR")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "chartenv:", err)
		os.Exit(1)
	}
}

// containerEnv is what chartcheck writes for one profile.
type containerEnv struct {
	Env   map[string]string `json:"env"`
	Files map[string]string `json:"files"`
}

func run(dir string) error {
	names, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return fmt.Errorf("no profiles in %s", dir)
	}
	var errs []error
	for _, name := range names {
		if err := checkProfile(name); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", filepath.Base(name), err))
			continue
		}
		fmt.Printf("chartenv: %s: PM accepts it\n", filepath.Base(name))
	}
	return errors.Join(errs...)
}

func checkProfile(name string) error {
	b, err := os.ReadFile(name)
	if err != nil {
		return err
	}
	var ce containerEnv
	if err := json.Unmarshal(b, &ce); err != nil {
		return err
	}
	cfg, err := config.Load(func(k string) (string, bool) {
		v, ok := ce.Env[k]
		return v, ok
	})
	if err != nil {
		return err
	}
	if err := cfg.CheckExposure(); err != nil {
		return err
	}
	if cfg.Server.Host != "0.0.0.0" {
		return fmt.Errorf("PM would listen on %s, unreachable from the Service", cfg.Server.Host)
	}
	// An operator's existing Secret is not in the render; a chart-made file is.
	if content, ok := ce.Files[cfg.Auth.TokensFile]; ok {
		if err := auth.CheckTokensFile([]byte(content)); err != nil {
			return fmt.Errorf("AUTH_TOKENS_FILE: %w", err)
		}
	}
	return nil
}
