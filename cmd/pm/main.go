// Command pm is the OaaS Package Manager: a package registry and the
// orchestrator of class deployments across clusters.
//
//	pm                     serve (same as "pm serve")
//	pm migrate up|down|status
//
// Configuration comes from the environment (see README); a few flags
// override it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/oaas/pm/internal/app"
	"github.com/oaas/pm/internal/config"
	"github.com/oaas/pm/internal/store/postgres"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "pm:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	cfg, err := config.FromEnv()
	if err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	fs := flag.NewFlagSet("pm", flag.ContinueOnError)
	fs.StringVar(&cfg.Server.Host, "host", cfg.Server.Host, "listen host (SERVER_HOST)")
	fs.IntVar(&cfg.Server.Port, "port", cfg.Server.Port, "listen port (SERVER_PORT)")
	fs.StringVar(&cfg.Storage.Type, "storage", cfg.Storage.Type, "memory or postgres (STORAGE_TYPE)")
	fs.StringVar(&cfg.Storage.DatabaseURL, "database-url", cfg.Storage.DatabaseURL, "Postgres DSN (DATABASE_URL)")
	fs.Usage = func() {
		_, _ = fmt.Fprintln(fs.Output(), "usage: pm [flags] [serve | migrate up|down|status]")
		fs.PrintDefaults()
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
		a, err := app.New(ctx, cfg, log)
		if err != nil {
			return err
		}
		return a.Run(ctx)
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
