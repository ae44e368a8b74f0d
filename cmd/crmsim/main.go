// Command crmsim serves one or more simulated Class Runtime Managers over
// gRPC, so PM can be demonstrated and exercised without a Kubernetes cluster.
//
//	crmsim --listen 127.0.0.1:8088 --env default
//	crmsim --cluster east=127.0.0.1:8091 --cluster west=127.0.0.1:8092 --fail-rate 0.1
//	crmsim --cluster old=127.0.0.1:8091@1 --cluster new=127.0.0.1:8092@2
//
// --generation 1 (the default) plays the CRM of crm-wire-contract.md,
// --generation 2 the current upstream CRM (runtime summaries in list
// answers, TopologyService); name=addr@N sets it per cluster.
//
// Every flag can also be set through the environment: --ready-nodes is
// CRMSIM_READY_NODES, and so on; a flag on the command line wins.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "crmsim:", err)
		os.Exit(1)
	}
}
