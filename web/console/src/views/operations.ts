// Operations (live) and orphans (refreshed).

import { deployments } from "../api.js";
import { field, h, replace, table } from "../dom.js";
import { when } from "../format.js";
import { every, subscribe } from "../live.js";
import type { View } from "../main.js";
import { BASE } from "../router.js";
import { operationSource } from "../sources.js";
import { errorBox, header, liveStatus } from "../ui.js";
import { operationsTable } from "./deployments.js";

export const operationsView: View = (main, _params, query) => {
  const keyIn = h("input", { type: "search", name: "deployment_key", value: query.get("deployment_key") ?? "" });
  const status = liveStatus();
  const out = h("div", { id: "operations-list" });
  main.append(
    header("Operations"),
    h("form", { role: "search", class: "filters", "aria-label": "Filter operations" },
      field("Deployment key", keyIn, "Only this deployment's operations; empty shows all.")),
    status.el,
    out,
  );
  let stop: () => void = () => {};
  const start = () => {
    stop();
    const key = keyIn.value.trim();
    history.replaceState(null, "", `${BASE}/operations${key ? `?deployment_key=${encodeURIComponent(key)}` : ""}`);
    stop = subscribe(operationSource(key || undefined), (snap) => {
      status.update(snap);
      if (snap.error && snap.items.length === 0) replace(out, errorBox(snap.error, "Listing operations"));
      else replace(out, operationsTable(snap.items, true));
    });
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  keyIn.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(start, 300);
  });
  main.querySelector("form")!.addEventListener("submit", (ev) => {
    ev.preventDefault();
    start();
  });
  start();
  return () => {
    clearTimeout(timer);
    stop();
  };
};

export const orphansView: View = (main) => {
  const out = h("div", { id: "orphans-list" }, h("p", { role: "status" }, "Loading…"));
  main.append(
    header("Orphans"),
    h("p", { class: "lede" }, "Units that carry PM's id scheme in a cluster but that PM does not know, as the last reconcile pass found them."),
    out,
  );
  return every(5000, async (signal) => {
    try {
      const res = await deployments.listOrphans({}, { signal });
      replace(out, table(`${res.items.length} orphan${res.items.length === 1 ? "" : "s"}`,
        ["Cluster", "Unit id", "Package", "Class", "First seen"],
        res.items.map((o) => [o.cluster, h("code", null, o.unitId), o.packageName || "—", o.classKey || "—", when(o.firstSeen)]),
        { id: "orphans-table" }));
    } catch (err) {
      if (!signal.aborted) replace(out, errorBox(err, "Listing orphans"));
    }
  });
};
