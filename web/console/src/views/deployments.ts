// Deployments: the live list, one deployment's plan and per-cluster
// rollout (live), the form that previews (dry run) and creates one, and —
// when this PM serves them — update and rollback.

import { create } from "@bufbuild/protobuf";
import { stringify } from "yaml";
import type { ClusterInfo } from "../../../../gen/ts/oaas/pm/v1/cluster_service_pb.js";
import { NfrRequirementsSchema } from "../../../../gen/ts/oaas/common/common_pb.js";
import { OClassDeploymentSchema, RolloutState, type OClassDeployment } from "../../../../gen/ts/oaas/pm/v1/deployment_pb.js";
import { OperationKind, OperationState, StepState, type Operation } from "../../../../gen/ts/oaas/pm/v1/deployment_service_pb.js";
import type { OPackage } from "../../../../gen/ts/oaas/pm/v1/package_pb.js";
import { clusters, deployments, message, packages, problem, rest, RestError, serverFeatures } from "../api.js";
import { warnings, yamlEditor } from "../editor.js";
import { badge, field, h, link, replace, table, type Child } from "../dom.js";
import { condition, pct, when, word } from "../format.js";
import { subscribe } from "../live.js";
import type { View } from "../main.js";
import { BASE, go } from "../router.js";
import { deploymentSource, operationSource } from "../sources.js";
import { confirmButton, dl, errorBox, header, liveStatus, setFlash } from "../ui.js";

const enc = encodeURIComponent;

export const deploymentsView: View = (main) => {
  const status = liveStatus();
  const out = h("div", { id: "deployments-list" });
  main.append(header("Deployments", link(`${BASE}/deployments/new`, "New deployment")), status.el, out);
  return subscribe(deploymentSource(), (snap) => {
    status.update(snap);
    if (snap.error && snap.items.length === 0) {
      replace(out, errorBox(snap.error, "Listing deployments"));
      return;
    }
    replace(out, table(
      `${snap.items.length} deployment${snap.items.length === 1 ? "" : "s"}`,
      ["Key", "Package", "Class", "Targets", "Condition", "Replicas", "Availability (achieved / target)", "Updated"],
      snap.items.map((d) => [
        link(`${BASE}/deployments/${enc(d.key)}`, d.key),
        link(`${BASE}/packages/${enc(d.packageName)}`, d.packageName),
        d.classKey,
        d.targetEnvs.join(", "),
        conditionBadge(d),
        String(d.status?.replicationFactor ?? "—"),
        d.status ? `${pct(d.status.achievedQuorumAvailability)} / ${pct(d.status.targetAvailability)}` : "—",
        when(d.updatedAt),
      ]),
      { id: "deployments-table" },
    ));
  });
};

function conditionBadge(d: OClassDeployment): HTMLElement {
  const b = badge(condition(d.condition));
  b.dataset.condition = condition(d.condition);
  b.dataset.key = d.key;
  return b;
}

export const deploymentView: View = (main, { key }) => {
  const status = liveStatus();
  const body = h("div", { id: "deployment-detail" });
  const ops = h("div", { id: "deployment-operations" });
  const actions = h("div", { class: "actions" });
  main.append(
    h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, `Deployment ${key}`), actions),
    status.el,
    body,
    h("section", { "aria-labelledby": "ops-h" }, h("h2", { id: "ops-h" }, "Operations"), ops),
  );
  let seen = false;
  const stopDep = subscribe(deploymentSource(key), (snap) => {
    status.update(snap);
    const d = snap.items[0];
    if (!d) {
      if (snap.error) replace(body, errorBox(snap.error, "Reading the deployment"));
      else replace(body, h("p", { id: "deployment-gone" }, seen ? `Deployment ${key} was deleted.` : `There is no deployment called ${key}.`));
      replace(actions);
      return;
    }
    seen = true;
    replace(body, deploymentDetail(d));
    if (!actions.hasChildNodes()) void drawActions(actions, d);
  });
  const stopOps = subscribe(operationSource(key), (snap) => replace(ops, operationsTable(snap.items, false)));
  return () => {
    stopDep();
    stopOps();
  };
};

async function drawActions(el: HTMLElement, d: OClassDeployment): Promise<void> {
  const f = await serverFeatures();
  const parts: Child[] = [];
  if (f.updateDeployment) parts.push(link(`${BASE}/deployments/${enc(d.key)}/edit`, "Update"));
  if (f.rollbackPath) {
    const path = f.rollbackPath.replace("{key}", enc(d.key));
    parts.push(confirmButton("Roll back", `Roll ${d.key} back to its previous revision?`, async () => {
      await rest("POST", path, { body: "{}" });
      setFlash(`Rollback of ${d.key} started.`);
      go(`${BASE}/deployments/${enc(d.key)}`, true);
    }));
  }
  parts.push(confirmButton("Delete deployment", `Delete ${d.key} from every cluster?`, async () => {
    await deployments.deleteDeployment({ key: d.key });
    setFlash(`Deletion of ${d.key} requested.`);
    go(`${BASE}/deployments`);
  }));
  replace(el, ...parts);
}

function deploymentDetail(d: OClassDeployment): HTMLElement {
  const st = d.status;
  return h("div", null,
    h("p", null, "Condition: ", conditionBadge(d)),
    dl([
      ["Package", link(`${BASE}/packages/${enc(d.packageName)}`, d.packageName)],
      ["Class", d.classKey],
      ["Target clusters", d.targetEnvs.join(", ") || "—"],
      ["Created", when(d.createdAt)],
      ["Updated", when(d.updatedAt)],
      ["Last error", st?.lastError ?? "—"],
    ]),
    h("section", { "aria-labelledby": "plan-h" },
      h("h2", { id: "plan-h" }, "Plan"),
      st ? planFacts(st) : h("p", null, "No plan yet."),
    ),
    h("section", { "aria-labelledby": "rollout-h" },
      h("h2", { id: "rollout-h" }, "Clusters"),
      table("Condition and rollout per cluster", ["Cluster", "Unit id", "State", "Condition", "Availability", "Attempts", "Error"],
        (st?.clusters ?? []).map((c) => [
          link(`${BASE}/clusters`, c.cluster),
          c.unitId ? h("code", null, c.unitId) : "—",
          badge(word(RolloutState, c.state, "planned")),
          badge(condition(c.condition)),
          `${pct(c.availability)}${c.availabilitySource ? ` (${c.availabilitySource})` : ""}`,
          String(c.attempts),
          c.error ?? "—",
        ]), { id: "rollout-table" }),
    ),
  );
}

function planFacts(st: NonNullable<OClassDeployment["status"]>): HTMLElement {
  const meter = (label: string, value: number) => {
    const m = h("meter", { min: 0, max: 1, value, "aria-label": label, low: 0.9, high: 0.99, optimum: 1 });
    return h("span", { class: "meter" }, m, " ", pct(value));
  };
  return dl([
    ["Replicas", String(st.replicationFactor)],
    ["Algorithm", st.algorithm || "—"],
    ["Selected clusters", st.selectedEnvs.join(", ") || "—"],
    ["Achieved availability", meter("Achieved availability", st.achievedQuorumAvailability)],
    ["Target availability", meter("Target availability", st.targetAvailability)],
    ["Meets target", st.achievedQuorumAvailability + 1e-12 >= st.targetAvailability ? badge("yes", "ok") : badge("no", "down")],
  ]);
}

/** operationsTable lists operations newest first. */
export function operationsTable(items: Operation[], withKey: boolean): HTMLElement {
  const sorted = [...items].sort((a, b) => Number((b.createdAt?.seconds ?? 0n) - (a.createdAt?.seconds ?? 0n)) || (a.id < b.id ? 1 : -1));
  const headers = ["Operation", "Kind", ...(withKey ? ["Deployment"] : []), "State", "Steps", "Error", "Created", "Updated"];
  return table(`${items.length} operation${items.length === 1 ? "" : "s"}`, headers, sorted.map((o) => [
    h("code", null, o.id),
    word(OperationKind, o.kind),
    ...(withKey ? [link(`${BASE}/deployments/${enc(o.deploymentKey)}`, o.deploymentKey)] : []),
    badge(word(OperationState, o.state)),
    h("ul", { class: "plain" }, o.steps.map((s) => h("li", null, `${s.cluster}: `, badge(word(StepState, s.state)), s.attempts > 1 ? ` ×${s.attempts}` : "", s.error ? ` — ${s.error}` : ""))),
    o.error ?? "—",
    when(o.createdAt),
    when(o.updatedAt),
  ]), { class: "operations" });
}

export const deploymentNewView: View = (main, _params, query) => {
  const stop = new AbortController();
  main.append(header("New deployment"));
  const keyIn = h("input", { type: "text", name: "key", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]{0,62}", autocomplete: "off" });
  const pkgSel = h("select", { name: "package", required: true });
  const classSel = h("select", { name: "class", required: true });
  const avail = h("input", { type: "number", name: "availability", min: 0, max: 1, step: "any", placeholder: "PM's default" });
  const targets = h("fieldset", { class: "targets" }, h("legend", null, "Target clusters"));
  const preview = h("div", { id: "plan-preview", "aria-live": "polite" });
  const problems = h("div", { id: "deployment-errors", role: "alert" });
  const dryBtn = h("button", { type: "button", id: "dry-run" }, "Preview plan (dry run)");
  const createBtn = h("button", { type: "submit" }, "Create deployment");
  let pkgs: OPackage[] = [];

  const fillClasses = () => {
    const p = pkgs.find((x) => x.name === pkgSel.value);
    replace(classSel, (p?.classes ?? []).map((c) => h("option", { value: c.key }, c.key)));
  };
  pkgSel.addEventListener("change", fillClasses);

  const spec = (): OClassDeployment => create(OClassDeploymentSchema, {
    key: keyIn.value.trim(),
    packageName: pkgSel.value,
    classKey: classSel.value,
    targetEnvs: [...targets.querySelectorAll<HTMLInputElement>("input:checked")].map((i) => i.value),
    nfrRequirements: avail.value !== "" ? create(NfrRequirementsSchema, { availability: Number(avail.value) }) : undefined,
  });

  const form = h("form", { id: "deployment-form", class: "stack" },
    h("div", { class: "grid2" },
      h("div", null,
        field("Key", keyIn, "The deployment's name: 1-63 letters, digits, dots, dashes or underscores."),
        field("Package", pkgSel),
        field("Class", classSel),
        field("Target availability", avail, "Between 0 and 1, e.g. 0.999; empty uses PM's default."),
        targets,
        h("div", { class: "row" }, dryBtn, createBtn, link(`${BASE}/deployments`, "Cancel")),
        problems,
      ),
      h("section", { "aria-labelledby": "preview-h" }, h("h2", { id: "preview-h" }, "Plan preview"), preview),
    ),
  );

  dryBtn.addEventListener("click", async () => {
    replace(problems);
    replace(preview, "Planning…");
    try {
      const res = await deployments.createDeployment({ deployment: spec(), dryRun: true }, { headers: { "Field-Validation": "Strict" } });
      const st = res.deployment?.status;
      replace(preview,
        h("p", { id: "plan-message" }, res.result?.message ?? ""),
        st ? planFacts(st) : null,
        st ? table("Clusters the plan considered", ["Cluster", "Availability", "Source", "State"], st.clusters.map((c) => [
          c.cluster, pct(c.availability), c.availabilitySource || "—", word(RolloutState, c.state, "planned"),
        ])) : null,
      );
    } catch (err) {
      replace(preview);
      replace(problems, errorBox(err, "Dry run"));
    }
  });
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    replace(problems);
    createBtn.disabled = true;
    try {
      const d = spec();
      await deployments.createDeployment({ deployment: d }, { headers: { "Field-Validation": "Strict" } });
      setFlash(`Deployment ${d.key} created.`);
      go(`${BASE}/deployments/${enc(d.key)}`);
    } catch (err) {
      replace(problems, errorBox(err, "Create"));
    } finally {
      createBtn.disabled = false;
    }
  });
  main.append(form);

  (async () => {
    try {
      const [p, c] = await Promise.all([
        packages.listPackages({ limit: 1000 }, { signal: stop.signal }),
        clusters.listClusters({}, { signal: stop.signal }),
      ]);
      pkgs = p.items;
      replace(pkgSel, pkgs.map((x) => h("option", { value: x.name }, x.name)));
      const want = query.get("package");
      if (want && pkgs.some((x) => x.name === want)) pkgSel.value = want;
      fillClasses();
      targets.append(...c.items.map((ci: ClusterInfo, i) => h("label", { class: "check" },
        h("input", { type: "checkbox", name: "target", value: ci.name, checked: i === 0 }),
        ` ${ci.name} `, badge(ci.health?.status ?? "Unknown"), ` ${pct(ci.health?.availability)}`)));
      keyIn.focus();
    } catch (err) {
      if (!stop.signal.aborted) replace(problems, errorBox(err, "Loading packages and clusters"));
    }
  })();
  return () => stop.abort();
};

/** deploymentEditView updates a deployment (shown only when PM serves PUT). */
export const deploymentEditView: View = (main, { key }) => {
  const stop = new AbortController();
  main.append(header(`Update deployment ${key}`));
  (async () => {
    const f = await serverFeatures();
    if (!f.updateDeployment) {
      main.append(h("p", null, "This PM cannot update a deployment in place; delete it and create it again."));
      return;
    }
    try {
      const res = await rest<Record<string, unknown>>("GET", `/api/v1/deployments/${enc(key!)}`, { signal: stop.signal });
      const etag = res.headers.get("ETag");
      for (const k of ["condition", "status", "created_at", "updated_at"]) delete res.body[k];
      const editor = yamlEditor("Deployment YAML", stringify(res.body));
      const submit = h("button", { type: "submit" }, "Update deployment");
      const form = h("form", { class: "stack" }, editor.el, h("div", { class: "row" }, submit, link(`${BASE}/deployments/${enc(key!)}`, "Cancel")));
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        editor.clear();
        const headers: Record<string, string> = { "Field-Validation": "Strict" };
        if (etag) headers["If-Match"] = etag;
        try {
          const r = await rest("PUT", `/api/v1/deployments/${enc(key!)}`, { body: editor.textarea.value, contentType: "application/yaml", headers });
          const w = warnings(r.headers);
          setFlash(`Deployment ${key} updated.${w.length ? ` ${w.join("; ")}` : ""}`);
          go(`${BASE}/deployments/${enc(key!)}`);
        } catch (err) {
          if (err instanceof RestError && err.status === 400) editor.showErrors(err.message);
          else if (problem(err) !== "unauthenticated") editor.showNotes("Not saved", [message(err)], "error");
        }
      });
      main.append(form);
    } catch (err) {
      if (!stop.signal.aborted) main.append(errorBox(err, `Loading deployment ${key}`));
    }
  })();
  return () => stop.abort();
};
