// Command pmctl is the command-line client of the OaaS Package Manager
// (PM). Install it with
//
//	go install github.com/oaas/pm/cmd/pmctl@latest
//
// and see pmctl --help. The commands live in internal/cli.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/oaas/pm/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx)
	stop()
	cli.Report(os.Stderr, err)
	os.Exit(cli.ExitCode(err))
}

// run runs pmctl with the process's arguments, streams and environment.
func run(ctx context.Context) error {
	return cli.Run(ctx, os.Args[1:], cli.Streams{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}, cli.OSEnv())
}
