package restmodel

import "google.golang.org/protobuf/reflect/protoreflect"

// WatchParam is the query parameter that turns a list route into a watch
// served as Server-Sent Events.
const WatchParam = "watch"

// WatchService is the service whose server streams serve the watches.
const WatchService protoreflect.FullName = "oaas.pm.v1.WatchService"

// WatchOf maps each watchable list RPC to the WatchService RPC that serves
// its ?watch=true.
var WatchOf = map[protoreflect.FullName]protoreflect.Name{
	"oaas.pm.v1.PackageService.ListPackages":       "WatchPackages",
	"oaas.pm.v1.DeploymentService.ListDeployments": "WatchDeployments",
	"oaas.pm.v1.DeploymentService.ListOperations":  "WatchOperations",
	"oaas.pm.v1.ClusterService.ListClusters":       "WatchClusters",
}
