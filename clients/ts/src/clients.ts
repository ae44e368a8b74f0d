import { createClient, type Client, type Transport } from "@connectrpc/connect";

import { AuditService } from "./gen/oaas/pm/v1/audit_service_pb.js";
import { CatalogService } from "./gen/oaas/pm/v1/catalog_service_pb.js";
import { ClusterService } from "./gen/oaas/pm/v1/cluster_service_pb.js";
import { DeploymentService } from "./gen/oaas/pm/v1/deployment_service_pb.js";
import { PackageService } from "./gen/oaas/pm/v1/package_service_pb.js";
import { ClassRuntimeService } from "./gen/oaas/pm/v1/runtime_service_pb.js";
import { TopologyService } from "./gen/oaas/pm/v1/topology_service_pb.js";
import { WatchService } from "./gen/oaas/pm/v1/watch_service_pb.js";

/**
 * pmServices is every service PM serves (package oaas.pm.v1), under the name
 * createPmClients gives its client.
 */
export const pmServices = {
  packages: PackageService,
  catalog: CatalogService,
  clusters: ClusterService,
  deployments: DeploymentService,
  runtimes: ClassRuntimeService,
  audit: AuditService,
  watch: WatchService,
  topology: TopologyService,
} as const;

/** PmClients holds a typed client for every PM service, all on one transport. */
export type PmClients = {
  readonly [K in keyof typeof pmServices]: Client<(typeof pmServices)[K]>;
};

/**
 * createPmClients creates a typed client for every PM service over one
 * transport: a connect-node transport (Connect, gRPC, gRPC-Web) in Node, or a
 * connect-web one in browsers. Put `bearerToken(token)` in the transport's
 * interceptors when PM requires authentication.
 */
export function createPmClients(transport: Transport): PmClients {
  return {
    packages: createClient(PackageService, transport),
    catalog: createClient(CatalogService, transport),
    clusters: createClient(ClusterService, transport),
    deployments: createClient(DeploymentService, transport),
    runtimes: createClient(ClassRuntimeService, transport),
    watch: createClient(WatchService, transport),
    topology: createClient(TopologyService, transport),
    audit: createClient(AuditService, transport),
  };
}
