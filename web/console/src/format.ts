// Display helpers shared by the views.

import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { DeploymentCondition } from "../../../gen/ts/oaas/pm/v1/deployment_pb.js";

/** condition is a condition's name as REST writes it ("RUNNING"). */
export function condition(c: DeploymentCondition): string {
  return DeploymentCondition[c] ?? String(c);
}

/**
 * word is an enum value as a plain word: its name without the type's
 * prefix, lower-cased (RolloutState.ROLLOUT_STATE_DEPLOYED → "deployed");
 * the unspecified zero is `zero`.
 */
export function word(e: Record<number, string>, v: number, zero = "—"): string {
  if (v === 0) return zero;
  const name = e[v] ?? String(v);
  const parts = name.split("_");
  // The prefix is the type's name in upper snake case, e.g. ROLLOUT_STATE.
  const prefix = Object.values(e).find((n) => typeof n === "string" && n.endsWith("_UNSPECIFIED"));
  const p = typeof prefix === "string" ? prefix.slice(0, -"UNSPECIFIED".length) : "";
  return (p && name.startsWith(p) ? name.slice(p.length) : parts.join("_")).toLowerCase().replace(/_/g, " ");
}

/** whenText formats a protobuf timestamp (or an RFC 3339 string) in UTC. */
export function whenText(t: Timestamp | string | undefined | null): string {
  if (!t) return "—";
  const d = typeof t === "string" ? new Date(t) : timestampDate(t);
  if (Number.isNaN(d.getTime())) return String(t);
  return d.toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

/** when is a <time> element that does not wrap inside table cells. */
export function when(t: Timestamp | string | undefined | null): HTMLElement | string {
  const text = whenText(t);
  if (text === "—") return text;
  const el = document.createElement("time");
  el.className = "ts";
  el.dateTime = text.replace(" ", "T");
  el.textContent = text;
  return el;
}

/** pct formats an availability in [0,1] as a percentage. */
export function pct(a: number | undefined | null): string {
  if (a === undefined || a === null || Number.isNaN(a)) return "—";
  // Up to three decimals, no trailing zeros: 99.9%, 99.995%, 100%.
  return `${Number((a * 100).toFixed(3))}%`;
}

/** ago says how long ago a date was, for "updated" lines. */
export function ago(d: Date): string {
  const s = Math.max(0, Math.round((Date.now() - d.getTime()) / 1000));
  if (s < 2) return "just now";
  if (s < 60) return `${s}s ago`;
  return `${Math.round(s / 60)}m ago`;
}
