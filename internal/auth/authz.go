package auth

import (
	"context"
	"fmt"
	"log/slog"
	"maps"

	"connectrpc.com/connect"
)

// Procedures that code elsewhere names (the watch streams check every
// event against their rows), or that do not exist yet but whose least
// role is already decided, so the services that add them only have to
// register them.
const (
	ProcedureListAuditRecords = "/oaas.pm.v1.AuditService/ListAuditRecords"
	ProcedureDeleteOrphan     = "/oaas.pm.v1.DeploymentService/DeleteOrphan"
	ProcedureUpdateDeployment = "/oaas.pm.v1.DeploymentService/UpdateDeployment"
	ProcedureWatchDeployments = "/oaas.pm.v1.WatchService/WatchDeployments"
	ProcedureWatchPackages    = "/oaas.pm.v1.WatchService/WatchPackages"
	ProcedureWatchOperations  = "/oaas.pm.v1.WatchService/WatchOperations"
	ProcedureWatchClusters    = "/oaas.pm.v1.WatchService/WatchClusters"
)

// reserved are the rows above; the registry test skips them until their
// RPCs are registered.
var reserved = map[string]bool{
	ProcedureDeleteOrphan: true,
}

// table is the one authorization table: every procedure (and so every REST
// route, which the transcoder turns into a procedure) to the least role that
// may call it. A registered RPC without a row fails TestTableCoversRegistry
// and is denied to everyone at run time.
var table = map[string]Role{
	// Reads: viewer.
	"/oaas.pm.v1.PackageService/GetPackage":                 Viewer,
	"/oaas.pm.v1.PackageService/ListPackages":               Viewer,
	"/oaas.pm.v1.DeploymentService/ListDeployments":         Viewer,
	"/oaas.pm.v1.DeploymentService/GetDeployment":           Viewer,
	"/oaas.pm.v1.DeploymentService/GetClusterMappings":      Viewer,
	"/oaas.pm.v1.DeploymentService/ListOrphans":             Viewer,
	"/oaas.pm.v1.DeploymentService/ListOperations":          Viewer,
	"/oaas.pm.v1.DeploymentService/ListDeploymentRevisions": Viewer,
	"/oaas.pm.v1.ClusterService/ListClusters":               Viewer,
	"/oaas.pm.v1.ClusterService/ListClustersHealth":         Viewer,
	"/oaas.pm.v1.ClusterService/GetClusterHealth":           Viewer,
	"/oaas.pm.v1.CatalogService/ListClasses":                Viewer,
	"/oaas.pm.v1.CatalogService/ListFunctions":              Viewer,
	"/oaas.pm.v1.ClassRuntimeService/ListClassRuntimes":     Viewer,
	"/oaas.pm.v1.ClassRuntimeService/GetClassRuntime":       Viewer,
	"/oaas.pm.v1.ClassRuntimeService/GetDeploymentStatus":   Viewer,
	"/oaas.pm.v1.TopologyService/GetTopology":               Viewer,
	ProcedureWatchDeployments:                               Viewer,
	ProcedureWatchPackages:                                  Viewer,
	ProcedureWatchOperations:                                Viewer,
	ProcedureWatchClusters:                                  Viewer,
	// Infrastructure; open anyway when the Policy says so.
	"/grpc.health.v1.Health/Check":                                   Viewer,
	"/grpc.health.v1.Health/Watch":                                   Viewer,
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo":      Viewer,
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Viewer,

	// Deployment writes: deployer.
	"/oaas.pm.v1.DeploymentService/CreateDeployment":   Deployer,
	"/oaas.pm.v1.DeploymentService/DeleteDeployment":   Deployer,
	ProcedureUpdateDeployment:                          Deployer,
	"/oaas.pm.v1.DeploymentService/RollbackDeployment": Deployer,

	// Package writes: editor.
	"/oaas.pm.v1.PackageService/CreatePackage": Editor,
	"/oaas.pm.v1.PackageService/UpdatePackage": Editor,
	"/oaas.pm.v1.PackageService/DeletePackage": Editor,

	// Admin only.
	ProcedureDeleteOrphan:     Admin,
	ProcedureListAuditRecords: Admin,
}

// Required returns the least role that may call procedure
// ("/oaas.pm.v1.PackageService/DeletePackage"); false when the table has
// no row, which callers must treat as a denial.
func Required(procedure string) (Role, bool) {
	r, ok := table[procedure]
	return r, ok
}

// Table returns a copy of the authorization table, for generated tests
// and documentation.
func Table() map[string]Role { return maps.Clone(table) }

// Authorize checks a principal against the table. The error is a connect
// permission_denied naming the role needed.
func Authorize(p Principal, procedure string) error {
	need, ok := Required(procedure)
	if !ok {
		return connect.NewError(connect.CodePermissionDenied, fmt.Errorf("no role may call %s", procedure))
	}
	if !p.Role.Allows(need) {
		return connect.NewError(connect.CodePermissionDenied,
			fmt.Errorf("requires role %s; principal %q has %s", need, p.Name, p.Role))
	}
	return nil
}

// Interceptor is the connect interceptor that enforces the table on every
// unary and streaming call a handler receives. It relies on Middleware
// having put the Principal in the context; a call without one (a handler
// mounted outside the middleware) is refused as unauthenticated, except for
// procedures the Policy leaves open.
type Interceptor struct {
	policy Policy
	log    *slog.Logger
}

var _ connect.Interceptor = (*Interceptor)(nil)

// NewInterceptor returns the authorization interceptor; policy must be the
// Middleware's.
func NewInterceptor(policy Policy, log *slog.Logger) *Interceptor {
	if log == nil {
		log = slog.Default()
	}
	return &Interceptor{policy: policy, log: log}
}

func (i *Interceptor) check(ctx context.Context, procedure string) error {
	if i.policy.IsOpen(procedure) {
		return nil
	}
	p, ok := FromContext(ctx)
	if !ok {
		return connect.NewError(connect.CodeUnauthenticated, fmt.Errorf("authentication required"))
	}
	err := Authorize(p, procedure)
	if err != nil {
		i.log.DebugContext(ctx, "call denied", "procedure", procedure, "principal", p.Name, "role", p.Role.String(), "method", string(p.Method))
	}
	return err
}

// WrapUnary checks unary calls before the handler runs.
func (i *Interceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		if req.Spec().IsClient {
			return next(ctx, req)
		}
		if err := i.check(ctx, req.Spec().Procedure); err != nil {
			return nil, err
		}
		return next(ctx, req)
	}
}

// WrapStreamingClient leaves client streams alone: authorization is a
// server's decision.
func (i *Interceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// WrapStreamingHandler checks streaming calls before the handler runs.
func (i *Interceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		if err := i.check(ctx, conn.Spec().Procedure); err != nil {
			return err
		}
		return next(ctx, conn)
	}
}
