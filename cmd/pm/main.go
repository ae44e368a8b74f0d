// Command pm is the OaaS Package Manager: a package registry and the
// orchestrator of class deployments across clusters.
//
//	pm                     serve (same as "pm serve")
//	pm migrate up|down|status
//	pm env [-markdown]     every environment variable, its default and meaning
//	pm -version
//
// Configuration comes from the environment (`pm -help` lists it); a few
// flags override it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/oaas/pm/internal/app"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/store/postgres"
	"github.com/oaas/pm/internal/version"
)

// wantsHelp reports whether args ask for usage, which must print even when
// the environment holds a bad value.
func wantsHelp(args []string) bool {
	for _, a := range args {
		if a == "-h" || a == "-help" || a == "--help" || a == "help" {
			return true
		}
	}
	return false
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "pm:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	// Help, version and the variable list must work whatever the
	// environment holds, so they come before the configuration is read.
	if len(args) > 0 {
		switch args[0] {
		case "-version", "--version", "version":
			fmt.Println("pm", version.String())
			return nil
		case "env":
			if len(args) > 1 && strings.TrimLeft(args[1], "-") == "markdown" {
				config.WriteMarkdown(os.Stdout)
			} else {
				config.WriteHelp(os.Stdout)
			}
			return nil
		}
	}
	cfg, err := config.FromEnv()
	if err != nil && !wantsHelp(args) {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	fs := flag.NewFlagSet("pm", flag.ContinueOnError)
	fs.StringVar(&cfg.Server.Host, "host", cfg.Server.Host, "listen host (SERVER_HOST)")
	fs.IntVar(&cfg.Server.Port, "port", cfg.Server.Port, "listen port (SERVER_PORT)")
	fs.StringVar(&cfg.Storage.Type, "storage", cfg.Storage.Type, "memory or postgres (STORAGE_TYPE)")
	fs.StringVar(&cfg.Storage.DatabaseURL, "database-url", cfg.Storage.DatabaseURL, "Postgres DSN (DATABASE_URL)")
	fs.Usage = func() {
		out := fs.Output()
		_, _ = fmt.Fprintln(out, "usage: pm [flags] [serve | migrate up|down|status | env [-markdown]]")
		_, _ = fmt.Fprintln(out, "       pm -version")
		_, _ = fmt.Fprintln(out, "\nflags (each overrides its variable):")
		fs.PrintDefaults()
		_, _ = fmt.Fprintln(out, "\nenvironment:")
		config.WriteHelp(out)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	log := app.NewLogger(cfg.Log, os.Stderr)

	switch cmd := fs.Arg(0); cmd {
	case "", "serve":
		if cfg.Server.Workers > 0 {
			runtime.GOMAXPROCS(cfg.Server.Workers)
		}
		if os.Getenv("GOGC") == "" {
			// PM's live heap is small and its garbage is per request: a
			// larger GC target trades a little memory for a tenth less
			// CPU per request (bench/README.md). GOGC still overrides it.
			debug.SetGCPercent(200)
		}
		a, err := app.New(ctx, cfg, log)
		if err != nil {
			return err
		}
		return a.Run(ctx)
	case "help":
		fs.SetOutput(os.Stdout)
		fs.Usage()
		return nil
	case "migrate":
		if cfg.Storage.DatabaseURL == "" {
			return errors.New("migrate needs DATABASE_URL (or -database-url)")
		}
		arg := fs.Arg(1)
		if arg == "" {
			arg = "status"
		}
		dir, err := postgres.ParseDirection(arg)
		if err != nil {
			return err
		}
		return postgres.MigrateURL(ctx, cfg.Storage.DatabaseURL, dir, os.Stdout)
	default:
		fs.Usage()
		return fmt.Errorf("unknown command %q", cmd)
	}
}
