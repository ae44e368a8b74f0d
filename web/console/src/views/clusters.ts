// Clusters: health as PM last learned it from each CRM, the circuit
// breaker's state, and availability over time, sampled on every refresh or
// event while the console is open (inline SVG, no chart library).

import type { ClusterInfo } from "../../../../gen/ts/oaas/pm/v1/cluster_service_pb.js";
import { badge, h, replace, s, table } from "../dom.js";
import { pct, when } from "../format.js";
import { subscribe } from "../live.js";
import type { View } from "../main.js";
import { clusterSource } from "../sources.js";
import { errorBox, header, liveStatus } from "../ui.js";

interface Sample {
  t: number;
  a: number | null;
}

/** samples survive navigation: it is the console's memory of the fleet. */
const samples = new Map<string, Sample[]>();
const KEEP = 150;

function record(items: ClusterInfo[], at: Date): void {
  for (const c of items) {
    const list = samples.get(c.name) ?? [];
    const a = c.health?.availability;
    list.push({ t: at.getTime(), a: a === undefined ? null : a });
    if (list.length > KEEP) list.splice(0, list.length - KEEP);
    samples.set(c.name, list);
  }
}

/** breaker reads the circuit breaker's state from the health message. */
function breaker(msg: string | undefined): string {
  const m = /circuit breaker (open|half-open)/i.exec(msg ?? "");
  return m ? m[1]!.toLowerCase() : "closed";
}

export const clustersView: View = (main) => {
  const status = liveStatus();
  const out = h("div", { id: "clusters-list" });
  const chart = h("figure", { id: "availability-chart", class: "chart" });
  main.append(
    header("Clusters"),
    status.el,
    out,
    h("section", { "aria-labelledby": "chart-h" }, h("h2", { id: "chart-h" }, "Availability over time"), chart),
  );
  return subscribe(clusterSource(), (snap) => {
    status.update(snap);
    if (snap.error && snap.items.length === 0) {
      replace(out, errorBox(snap.error, "Reading cluster health"));
      return;
    }
    record(snap.items, snap.at);
    replace(out, table(
      `${snap.items.length} cluster${snap.items.length === 1 ? "" : "s"}`,
      ["Cluster", "Health", "Availability", "Ready nodes", "Circuit breaker", "CRM version", "Last seen", "Message"],
      snap.items.map((c) => {
        const hh = c.health;
        return [
          h("strong", null, c.name),
          badge(hh?.status ?? "Unknown"),
          pct(hh?.availability),
          hh?.nodeCount !== undefined ? `${hh.readyNodes ?? "?"} / ${hh.nodeCount}` : "—",
          badge(breaker(hh?.message), `breaker-${breaker(hh?.message)}`),
          hh?.crmVersion ?? "—",
          when(hh?.lastSeen),
          hh?.message ?? "—",
        ];
      }),
      { id: "clusters-table" },
    ));
    replace(chart, ...availabilityChart([...samples.entries()]));
  });
};

const W = 640;
const H = 200;
const PAD = { l: 48, r: 12, t: 10, b: 28 };

/** availabilityChart draws one line per cluster over the sampled window. */
export function availabilityChart(series: [string, Sample[]][]): Node[] {
  const all = series.flatMap(([, v]) => v);
  if (all.length === 0) return [h("p", null, "No samples yet.")];
  const t0 = Math.min(...all.map((p) => p.t));
  const t1 = Math.max(...all.map((p) => p.t), t0 + 1000);
  const vals = all.map((p) => p.a).filter((a): a is number => a !== null);
  // Zoom the y axis onto the values (availability lives near 1), never
  // below 0, and keep at least a 1% span so small changes stay visible.
  let lo = vals.length ? Math.min(...vals) : 0;
  lo = Math.max(0, Math.min(lo - 0.005, 0.99));
  const hi = 1;
  const x = (t: number) => PAD.l + ((t - t0) / (t1 - t0)) * (W - PAD.l - PAD.r);
  const y = (a: number) => PAD.t + (1 - (a - lo) / (hi - lo)) * (H - PAD.t - PAD.b);
  const ticks = [lo, (lo + hi) / 2, hi];
  const desc = series.map(([name, v]) => {
    const last = [...v].reverse().find((p) => p.a !== null);
    return `${name}: ${last ? pct(last.a) : "unknown"}`;
  }).join("; ");
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": "chart-title chart-desc", class: "chart-svg" },
    s("title", { id: "chart-title" }, "Cluster availability over time"),
    s("desc", { id: "chart-desc" }, `Latest: ${desc}. ${all.length} samples over ${Math.round((t1 - t0) / 1000)} s.`),
    ticks.map((v) => [
      s("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "grid" }),
      s("text", { x: PAD.l - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, pct(v)),
    ]),
    s("text", { x: PAD.l, y: H - 8, class: "axis" }, new Date(t0).toISOString().slice(11, 19)),
    s("text", { x: W - PAD.r, y: H - 8, class: "axis", "text-anchor": "end" }, new Date(t1).toISOString().slice(11, 19) + " UTC"),
    series.map(([name, v], i) => {
      const pts = v.filter((p) => p.a !== null).map((p) => `${x(p.t).toFixed(1)},${y(p.a!).toFixed(1)}`);
      const last = v.filter((p) => p.a !== null).at(-1);
      return s("g", { class: `series c${i % 6}`, "data-cluster": name },
        pts.length > 1 ? s("polyline", { points: pts.join(" "), fill: "none" }) : null,
        last ? s("circle", { cx: x(last.t), cy: y(last.a!), r: 3 }, s("title", null, `${name}: ${pct(last.a)}`)) : null,
      );
    }),
  );
  const legend = h("figcaption", { class: "legend" }, series.map(([name], i) =>
    h("span", { class: `key c${i % 6}` }, h("span", { class: "swatch", "aria-hidden": "true" }), name)));
  return [svg, legend];
}
