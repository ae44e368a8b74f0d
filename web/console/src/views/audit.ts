// The audit log (admins only): filters, newest first, keyset pages.

import type { AuditRecord } from "../../../../gen/ts/oaas/pm/v1/audit_service_pb.js";
import { audit, problem } from "../api.js";
import { badge, field, h, replace, table } from "../dom.js";
import { when } from "../format.js";
import type { View } from "../main.js";
import { errorBox, header } from "../ui.js";

export const auditView: View = (main) => {
  const stop = new AbortController();
  const principal = h("input", { type: "search", name: "principal" });
  const action = h("input", { type: "search", name: "action", placeholder: "oaas.pm.v1.PackageService/CreatePackage" });
  const target = h("input", { type: "search", name: "target" });
  const outcome = h("select", { name: "outcome" },
    h("option", { value: "" }, "any"), h("option", { value: "ok" }, "ok"),
    h("option", { value: "denied" }, "denied"), h("option", { value: "error" }, "error"));
  const out = h("div", { id: "audit-list" });
  const more = h("button", { type: "button", hidden: true }, "Older records");
  const form = h("form", { role: "search", class: "filters", "aria-label": "Filter the audit log" },
    field("Principal", principal), field("Action", action), field("Target", target), field("Outcome", outcome),
    h("button", { type: "submit" }, "Search"));
  main.append(header("Audit log"), form, out, more);

  let rows: AuditRecord[] = [];
  let next = "";
  const load = async (append: boolean) => {
    try {
      const res = await audit.listAuditRecords({
        principal: principal.value.trim(), action: action.value.trim(), target: target.value.trim(),
        outcome: outcome.value, limit: 100, pageToken: append ? next : "",
      }, { signal: stop.signal });
      rows = append ? rows.concat(res.items) : res.items;
      next = res.nextPageToken;
      more.hidden = !next;
      replace(out, table(`${rows.length} record${rows.length === 1 ? "" : "s"}, newest first`,
        ["Time", "Principal", "Role", "Action", "Target", "Outcome", "Status", "Message", "Source", "Correlation id"],
        rows.map((r) => [
          when(r.time), r.principal || "—", r.role || "—", h("code", null, r.action), r.target || "—",
          badge(r.outcome), r.statusCode, r.message || "—", r.source || "—", r.correlationId ? h("code", null, r.correlationId) : "—",
        ]), { id: "audit-table" }));
    } catch (err) {
      if (stop.signal.aborted) return;
      more.hidden = true;
      if (problem(err) === "forbidden") {
        replace(out, h("div", { class: "notice", id: "audit-forbidden", role: "alert" },
          h("strong", null, "Admins only."), " The audit log is visible to principals with the admin role; sign in with an admin token to see it."));
      } else {
        replace(out, errorBox(err, "Reading the audit log"));
      }
    }
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void load(false);
  });
  more.addEventListener("click", () => void load(true));
  void load(false);
  return () => stop.abort();
};
