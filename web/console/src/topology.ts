// The topology graph in OaaS's shape (GET /api/v1/topology), and the same
// graph built in the browser from deployments and packages for a PM that
// does not serve the route: node ids package::P, class::C, function::C::F
// and env::E; edges package→class, class→function and class→env.

import type { OClassDeployment } from "../../../gen/ts/oaas/pm/v1/deployment_pb.js";
import { DeploymentCondition } from "../../../gen/ts/oaas/pm/v1/deployment_pb.js";
import type { OPackage } from "../../../gen/ts/oaas/pm/v1/package_pb.js";

export interface TopologyNode {
  id: string;
  node_type: string;
  status: string;
  metadata: Record<string, string>;
  deployed_classes: string[];
}

export interface TopologyEdge {
  from_id: string;
  to_id: string;
  metadata: Record<string, string>;
}

export interface Topology {
  nodes: TopologyNode[];
  edges: TopologyEdge[];
  timestamp?: { seconds?: number | string; nanos?: number } | string | null;
}

/** buildTopology is PM's "deployments" graph computed from its lists. */
export function buildTopology(deps: OClassDeployment[], pkgs: OPackage[]): Topology {
  const nodes = new Map<string, TopologyNode>();
  const edges = new Map<string, TopologyEdge>();
  const node = (id: string, type: string, metadata: Record<string, string> = {}) => {
    let n = nodes.get(id);
    if (!n) {
      n = { id, node_type: type, status: "healthy", metadata, deployed_classes: [] };
      nodes.set(id, n);
    }
    return n;
  };
  const edge = (from: string, to: string) => {
    const k = `${from}\u0000${to}`;
    if (!edges.has(k)) edges.set(k, { from_id: from, to_id: to, metadata: {} });
  };
  const byName = new Map(pkgs.map((p) => [p.name, p]));
  for (const d of deps) {
    if (d.condition === DeploymentCondition.DELETED) continue;
    const pid = `package::${d.packageName}`;
    const cid = `class::${d.classKey}`;
    node(pid, "package");
    const meta: Record<string, string> = { package: d.packageName };
    if (d.odgm?.partitionCount !== undefined) meta.partitions = String(d.odgm.partitionCount);
    node(cid, "class", meta);
    edge(pid, cid);
    let fns = d.functions.map((f) => f.functionKey);
    if (fns.length === 0) {
      const cls = byName.get(d.packageName)?.classes.find((c) => c.key === d.classKey);
      fns = (cls?.functionBindings ?? []).map((b) => b.functionKey);
    }
    for (const f of fns) {
      const fid = `function::${d.classKey}::${f}`;
      node(fid, "function");
      edge(cid, fid);
    }
    for (const e of d.targetEnvs) {
      const eid = `env::${e}`;
      const en = node(eid, "environment");
      if (!en.deployed_classes.includes(d.classKey)) en.deployed_classes.push(d.classKey);
      edge(cid, eid);
    }
  }
  return { nodes: [...nodes.values()], edges: [...edges.values()], timestamp: new Date().toISOString() };
}

/** label is a node's display name: the last part of its id. */
export function label(n: TopologyNode): string {
  const parts = n.id.split("::");
  return parts.length > 1 ? parts.slice(1).at(-1)! : n.id;
}

const ORDER = ["package", "class", "function", "environment"];

export interface Placed {
  node: TopologyNode;
  col: number;
  row: number;
}

/**
 * layout puts each node type in a column (packages, classes, functions,
 * environments, then any other type) and orders each column by the mean
 * row of the nodes that point at it, which keeps most edges short.
 */
export function layout(t: Topology): { placed: Map<string, Placed>; columns: string[]; rows: number } {
  const types = [...new Set(t.nodes.map((n) => n.node_type))];
  const columns = [...ORDER.filter((x) => types.includes(x)), ...types.filter((x) => !ORDER.includes(x)).sort()];
  const parents = new Map<string, string[]>();
  for (const e of t.edges) parents.set(e.to_id, [...(parents.get(e.to_id) ?? []), e.from_id]);
  const placed = new Map<string, Placed>();
  let rows = 0;
  columns.forEach((type, col) => {
    const members = t.nodes.filter((n) => n.node_type === type);
    const weight = (n: TopologyNode) => {
      const ps = (parents.get(n.id) ?? []).map((p) => placed.get(p)?.row).filter((r): r is number => r !== undefined);
      return ps.length ? ps.reduce((a, b) => a + b, 0) / ps.length : Number.MAX_SAFE_INTEGER;
    };
    members.sort((a, b) => weight(a) - weight(b) || (a.id < b.id ? -1 : 1));
    members.forEach((n, row) => placed.set(n.id, { node: n, col, row }));
    rows = Math.max(rows, members.length);
  });
  return { placed, columns, rows };
}
