package crmsim_test

import (
	"context"
	"fmt"
	"net/http"

	"connectrpc.com/connect"

	deploymentpb "github.com/oaas/pm/gen/go/oaas/deployment"
	"github.com/oaas/pm/gen/go/oaas/deployment/deploymentconnect"
	"github.com/oaas/pm/internal/crmsim"
)

// A simulated cluster whose first Deploy is lost after the CRM applied it:
// retrying with the same unit id leaves exactly one runtime.
func Example() {
	ctx := context.Background()
	sim, err := crmsim.Start(ctx, crmsim.Config{EnvName: "east", FailFirstDeploys: 1, FailDeployAfterApply: true})
	if err != nil {
		panic(err)
	}
	defer sim.Close()

	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true) // field CRMs speak gRPC over h2c
	transport := &http.Transport{Protocols: &protocols}
	defer transport.CloseIdleConnections()
	client := deploymentconnect.NewDeploymentServiceClient(&http.Client{Transport: transport}, sim.URL(), connect.WithGRPC())

	req := &deploymentpb.DeployRequest{DeploymentUnit: &deploymentpb.DeploymentUnit{Id: "shop-order-east", PackageName: "shop", ClassKey: "Order"}}
	_, err = client.Deploy(ctx, req)
	fmt.Println("first attempt:", connect.CodeOf(err))
	res, err := client.Deploy(ctx, req)
	fmt.Println("retry:", res.GetMessage(), err)
	fmt.Println("runtimes:", sim.RuntimeCount(), "deploy calls:", sim.Calls("Deploy"))
	// Output:
	// first attempt: unavailable
	// retry: accepted <nil>
	// runtimes: 1 deploy calls: 2
}
