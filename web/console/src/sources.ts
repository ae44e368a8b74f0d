// The kinds of live objects: each pairs its WatchService stream with the
// list call that replaces it when PM serves no stream.

import type { ClusterInfo } from "../../../gen/ts/oaas/pm/v1/cluster_service_pb.js";
import type { OClassDeployment } from "../../../gen/ts/oaas/pm/v1/deployment_pb.js";
import type { Operation } from "../../../gen/ts/oaas/pm/v1/deployment_service_pb.js";
import type { OPackage } from "../../../gen/ts/oaas/pm/v1/package_pb.js";
import { clusters, deployments, packages, watch } from "./api.js";
import type { Source, WatchEvent, WatchParams } from "./live.js";

async function* map<E, T>(events: AsyncIterable<E>, f: (e: E) => WatchEvent<T>): AsyncIterable<WatchEvent<T>> {
  for await (const e of events) yield f(e);
}

const PAGE = 1000;

/** deploymentSource watches every deployment, or the one named key. */
export function deploymentSource(key?: string): Source<OClassDeployment> {
  return {
    name: "deployments",
    key,
    id: (d) => d.key,
    watch: (p: WatchParams, signal) =>
      map(watch.watchDeployments(p, { signal }), (e) => ({ type: e.type, item: e.deployment, cursor: e.cursor })),
    poll: async (signal) => {
      if (key) {
        const res = await deployments.getDeployment({ key }, { signal });
        return res.deployment ? [res.deployment] : [];
      }
      return (await deployments.listDeployments({ limit: PAGE }, { signal })).items;
    },
  };
}

/** packageSource watches packages; the filters follow ListPackages' rules. */
export function packageSource(pattern: string, tags: string[]): Source<OPackage> {
  const match = namePattern(pattern);
  const wanted = tags.flatMap((t) => t.split(",")).map((t) => t.trim()).filter(Boolean);
  return {
    name: "packages",
    id: (p) => p.name,
    keep: (p) => match(p.name) && (wanted.length === 0 || (p.metadata?.tags ?? []).some((t) => wanted.includes(t))),
    watch: (p, signal) => map(watch.watchPackages(p, { signal }), (e) => ({ type: e.type, item: e.package, cursor: e.cursor })),
    poll: async (signal) =>
      (await packages.listPackages({ namePattern: pattern, tags: wanted, limit: PAGE }, { signal })).items,
  };
}

/** operationSource watches operations, of one deployment when key is set. */
export function operationSource(key?: string): Source<Operation> {
  return {
    name: "operations",
    key,
    id: (o) => o.id,
    watch: (p, signal) =>
      map(watch.watchOperations(p, { signal }), (e) => ({ type: e.type, item: e.operation, cursor: e.cursor })),
    poll: async (signal) => (await deployments.listOperations({ deploymentKey: key ?? "" }, { signal })).items,
  };
}

/** clusterSource watches cluster health. */
export function clusterSource(): Source<ClusterInfo> {
  return {
    name: "clusters",
    id: (c) => c.name,
    watch: (p, signal) => map(watch.watchClusters(p, { signal }), (e) => ({ type: e.type, item: e.cluster, cursor: e.cursor })),
    poll: async (signal) => (await clusters.listClusters({}, { signal })).items,
  };
}

/**
 * namePattern is PM's name-pattern rule (internal/namepattern): the pattern
 * matches a substring of the name and '*' matches any run of characters.
 */
export function namePattern(pattern: string): (name: string) => boolean {
  const parts = pattern.split("*");
  return (name) => {
    let rest = name;
    for (const part of parts) {
      const i = rest.indexOf(part);
      if (i < 0) return false;
      rest = rest.slice(i + part.length);
    }
    return true;
  };
}
