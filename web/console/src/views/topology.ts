// Topology: packages → classes → functions → environments, drawn as an
// inline SVG, with the same graph as a list for keyboard and screen-reader
// users. From PM's /api/v1/topology when served, else built here.

import { deployments, packages, problem, rest } from "../api.js";
import { h, replace, s, table } from "../dom.js";
import { whenText } from "../format.js";
import { every } from "../live.js";
import type { View } from "../main.js";
import { buildTopology, label, layout, type Topology } from "../topology.js";
import { errorBox, header } from "../ui.js";

const COL_W = 210;
const NODE_W = 160;
const NODE_H = 26;
const ROW_H = 38;
const TOP = 34;

/** fetchTopology asks PM, and builds the graph itself when PM has no route. */
export async function fetchTopology(signal: AbortSignal): Promise<{ graph: Topology; fromServer: boolean }> {
  try {
    const res = await rest<Topology>("GET", "/api/v1/topology?source=deployments", { signal });
    return { graph: { nodes: res.body.nodes ?? [], edges: res.body.edges ?? [], timestamp: res.body.timestamp }, fromServer: true };
  } catch (err) {
    const p = problem(err);
    if (p !== "notfound" && p !== "unimplemented") throw err;
  }
  const [d, p] = await Promise.all([
    deployments.listDeployments({ limit: 1000 }, { signal }),
    packages.listPackages({ limit: 1000 }, { signal }),
  ]);
  return { graph: buildTopology(d.items, p.items), fromServer: false };
}

export const topologyView: View = (main) => {
  const source = h("p", { class: "lede", id: "topology-source", role: "status" }, "Loading…");
  const out = h("div", { id: "topology" });
  main.append(header("Topology"), source, out);
  let lastKey = "";
  return every(5000, async (signal) => {
    try {
      const { graph, fromServer } = await fetchTopology(signal);
      source.dataset.source = fromServer ? "server" : "client";
      replace(source, fromServer
        ? `From PM's /api/v1/topology?source=deployments${graph.timestamp ? `, ${stamp(graph.timestamp)}` : ""}.`
        : "Built in the browser from packages and deployments (this PM serves no /api/v1/topology).",
        " Refreshed every 5 s.");
      // Redraw only when the graph changed, so focus in it is kept.
      const key = JSON.stringify([graph.nodes.map((n) => [n.id, n.status]), graph.edges.map((e) => [e.from_id, e.to_id])]);
      if (key !== lastKey) {
        lastKey = key;
        replace(out, ...draw(graph));
      }
    } catch (err) {
      if (!signal.aborted) replace(out, errorBox(err, "Reading the topology"));
    }
  });
};

function stamp(t: NonNullable<Topology["timestamp"]>): string {
  if (typeof t === "string") return whenText(t);
  const secs = Number(t.seconds ?? 0);
  return secs ? whenText(new Date(secs * 1000).toISOString()) : "";
}

function draw(t: Topology): Node[] {
  if (t.nodes.length === 0) return [h("p", { id: "topology-empty" }, "Nothing is deployed yet: the graph shows deployed classes.")];
  const { placed, columns, rows } = layout(t);
  const W = columns.length * COL_W;
  const H = TOP + rows * ROW_H + 8;
  const pos = (id: string) => {
    const p = placed.get(id)!;
    return { x: p.col * COL_W + 8, y: TOP + p.row * ROW_H };
  };
  const edgeEls = t.edges.filter((e) => placed.has(e.from_id) && placed.has(e.to_id)).map((e) => {
    const a = pos(e.from_id);
    const b = pos(e.to_id);
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
    const mx = (x1 + x2) / 2;
    return s("path", { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`, class: "edge", "data-from": e.from_id, "data-to": e.to_id });
  });
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "group", "aria-labelledby": "topo-title", class: "topology-svg" },
    s("title", { id: "topo-title" }, `Topology: ${t.nodes.length} nodes, ${t.edges.length} edges`),
    columns.map((c, i) => s("text", { x: i * COL_W + 8, y: 16, class: "col-head" }, columnName(c))),
    edgeEls,
    [...placed.values()].map(({ node }) => {
      const p = pos(node.id);
      const g = s("g", { class: `node t-${node.node_type} s-${node.status}`, tabindex: "0", role: "img",
        "aria-label": `${node.node_type} ${label(node)}, ${node.status}`, "data-id": node.id, transform: `translate(${p.x},${p.y})` },
        s("title", null, `${node.id} (${node.status})${Object.keys(node.metadata ?? {}).length ? `\n${Object.entries(node.metadata).map(([k, v]) => `${k}: ${v}`).join("\n")}` : ""}`),
        s("rect", { width: NODE_W, height: NODE_H, rx: 5 }),
        s("text", { x: 10, y: 17 }, clip(label(node), 20)),
      );
      const lit = (on: boolean) => {
        for (const e of edgeEls) {
          if (e.dataset.from === node.id || e.dataset.to === node.id) e.classList.toggle("lit", on);
        }
      };
      g.addEventListener("focus", () => lit(true));
      g.addEventListener("blur", () => lit(false));
      g.addEventListener("mouseenter", () => lit(true));
      g.addEventListener("mouseleave", () => lit(false));
      return g;
    }),
  );
  const byId = new Map(t.nodes.map((n) => [n.id, n]));
  const list = h("details", { class: "topology-list" },
    h("summary", null, `The graph as a list (${t.edges.length} connections)`),
    table("Connections", ["From", "To"], t.edges.map((e) => [
      `${byId.get(e.from_id)?.node_type ?? "?"} ${e.from_id}`, `${byId.get(e.to_id)?.node_type ?? "?"} ${e.to_id}`,
    ])));
  return [h("div", { class: "scroll-x" }, svg), list];
}

function columnName(type: string): string {
  return { package: "Packages", class: "Classes", function: "Functions", environment: "Environments" }[type] ?? type;
}

function clip(text: string, n: number): string {
  return text.length > n ? `${text.slice(0, n - 1)}…` : text;
}
