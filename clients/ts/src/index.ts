// The package's root entry: PM's messages and services (oaas.pm.v1 and the
// shared oaas.common messages), typed clients for every PM service, and the
// bearer-token interceptor. The CRM wire contract (oaas.deployment,
// oaas.health) reuses names of PM's API (DeploymentService, ...), so it is
// only reachable through its subpaths, e.g.
// "@oaas/pm-client/oaas/deployment/deployment_pb".

export * from "./gen/oaas/common/common_pb.js";
export * from "./gen/oaas/pm/v1/audit_service_pb.js";
export * from "./gen/oaas/pm/v1/catalog_service_pb.js";
export * from "./gen/oaas/pm/v1/cluster_service_pb.js";
export * from "./gen/oaas/pm/v1/deployment_pb.js";
export * from "./gen/oaas/pm/v1/deployment_service_pb.js";
export * from "./gen/oaas/pm/v1/package_pb.js";
export * from "./gen/oaas/pm/v1/package_service_pb.js";
export * from "./gen/oaas/pm/v1/runtime_service_pb.js";
export * from "./gen/oaas/pm/v1/topology_service_pb.js";
export * from "./gen/oaas/pm/v1/watch_service_pb.js";

export { createPmClients, pmServices, type PmClients } from "./clients.js";
export { bearerToken, type TokenSource } from "./auth.js";
