// Packages: the list with filters, one package's classes, functions,
// deployments and YAML, and the YAML editor that creates or updates one.

import { stringify } from "yaml";
import type { OPackage } from "../../../../gen/ts/oaas/pm/v1/package_pb.js";
import { deployments, message, problem, rest, RestError } from "../api.js";
import { warnings, yamlEditor } from "../editor.js";
import { badge, field, h, link, replace, table } from "../dom.js";
import { condition, when } from "../format.js";
import { subscribe } from "../live.js";
import type { View } from "../main.js";
import { BASE, go } from "../router.js";
import { packageSource } from "../sources.js";
import { confirmButton, dl, errorBox, header, liveStatus, setFlash } from "../ui.js";

const enc = encodeURIComponent;

export const packagesView: View = (main, _params, query) => {
  const pattern = h("input", { type: "search", name: "name_pattern", value: query.get("name_pattern") ?? "", placeholder: "e.g. echo or *-pkg" });
  const tag = h("input", { type: "search", name: "tag", value: query.get("tag") ?? "", placeholder: "e.g. demo" });
  const status = liveStatus();
  const out = h("div", { id: "packages-list" });
  main.append(
    header("Packages", link(`${BASE}/packages/new`, "New package")),
    h("form", { role: "search", class: "filters", "aria-label": "Filter packages" },
      field("Name pattern", pattern, "A substring of the name; * matches anything."),
      field("Tag", tag, "Packages carrying this tag (comma-separated: any of them)."),
    ),
    status.el,
    out,
  );
  let stop: () => void = () => {};
  const start = () => {
    stop();
    const p = pattern.value.trim();
    const t = tag.value.trim();
    const q = new URLSearchParams();
    if (p) q.set("name_pattern", p);
    if (t) q.set("tag", t);
    history.replaceState(null, "", `${BASE}/packages${q.size ? `?${q}` : ""}`);
    stop = subscribe(packageSource(p, t ? [t] : []), (snap) => {
      status.update(snap);
      if (snap.error && snap.items.length === 0) {
        replace(out, errorBox(snap.error, "Listing packages"));
        return;
      }
      replace(out, packagesTable(snap.items));
    });
  };
  let timer: ReturnType<typeof setTimeout> | undefined;
  const later = () => {
    clearTimeout(timer);
    timer = setTimeout(start, 300);
  };
  pattern.addEventListener("input", later);
  tag.addEventListener("input", later);
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

function packagesTable(items: OPackage[]): HTMLElement {
  return table(
    `${items.length} package${items.length === 1 ? "" : "s"}`,
    ["Name", "Version", "Tags", "Classes", "Functions", "State"],
    items.map((p) => [
      link(`${BASE}/packages/${enc(p.name)}`, p.name),
      p.version ?? "—",
      (p.metadata?.tags ?? []).map((t) => h("span", { class: "tag" }, t)),
      String(p.classes.length),
      String(p.functions.length),
      p.disabled ? badge("disabled") : badge("enabled"),
    ]),
    { id: "packages-table" },
  );
}

// Package JSON as the REST face writes it (snake_case).
interface PkgJSON {
  name: string;
  version?: string;
  disabled?: boolean;
  metadata?: { author?: string; description?: string; tags?: string[]; created_at?: string; updated_at?: string };
  classes?: {
    key: string;
    description?: string;
    disabled?: boolean;
    state_spec?: { consistency_model?: string; persistent?: boolean; key_specs?: { name: string; key_type?: string }[] };
    function_bindings?: { name: string; function_key: string; access_modifier?: string; stateless?: boolean }[];
  }[];
  functions?: {
    key: string;
    function_type?: string;
    description?: string;
    provision_config?: { container_image?: string; wasm_module_url?: string; port?: number };
    config?: Record<string, string>;
  }[];
  dependencies?: string[];
  deployments?: unknown[];
}

export const packageView: View = (main, { name }) => {
  const stop = new AbortController();
  main.append(header(`Package ${name}`), h("p", { role: "status" }, "Loading…"));
  (async () => {
    try {
      const { body: pkg } = await rest<PkgJSON>("GET", `/api/v1/packages/${enc(name!)}`, { signal: stop.signal });
      const deps = await deployments.listDeployments({ packageName: name!, limit: 1000 }, { signal: stop.signal });
      const md = pkg.metadata ?? {};
      main.replaceChildren(
        header(
          `Package ${pkg.name}`,
          link(`${BASE}/packages/${enc(pkg.name)}/edit`, "Edit YAML"),
          link(`${BASE}/deployments/new?package=${enc(pkg.name)}`, "Deploy a class"),
          confirmButton("Delete package", `Delete package ${pkg.name}?`, async () => {
            await rest("DELETE", `/api/v1/packages/${enc(pkg.name)}`);
            setFlash(`Package ${pkg.name} deleted.`);
            go(`${BASE}/packages`);
          }),
        ),
        dl([
          ["Version", pkg.version ?? "—"],
          ["Author", md.author ?? "—"],
          ["Description", md.description ?? "—"],
          ["Tags", (md.tags ?? []).map((t) => h("span", { class: "tag" }, t))],
          ["Dependencies", (pkg.dependencies ?? []).join(", ") || "—"],
          ["State", pkg.disabled ? badge("disabled") : badge("enabled")],
          ["Created", when(md.created_at)],
          ["Updated", when(md.updated_at)],
        ]),
        h("section", { "aria-labelledby": "classes-h" },
          h("h2", { id: "classes-h" }, "Classes"),
          table("Classes of the package", ["Key", "Description", "Function bindings", "State", "Disabled"],
            (pkg.classes ?? []).map((c) => [
              h("code", null, c.key),
              c.description ?? "—",
              h("ul", { class: "plain" }, (c.function_bindings ?? []).map((b) =>
                h("li", null, h("code", null, b.name), " → ", h("code", null, b.function_key),
                  b.access_modifier && b.access_modifier !== "PUBLIC" ? ` (${b.access_modifier.toLowerCase()})` : "",
                  b.stateless ? " (stateless)" : ""))),
              c.state_spec
                ? `${c.state_spec.consistency_model ?? "NONE"}${c.state_spec.persistent ? ", persistent" : ""}; keys: ${(c.state_spec.key_specs ?? []).map((k) => k.name).join(", ") || "none"}`
                : "stateless",
              c.disabled ? "yes" : "no",
            ]), { id: "classes-table" }),
        ),
        h("section", { "aria-labelledby": "functions-h" },
          h("h2", { id: "functions-h" }, "Functions"),
          table("Functions of the package", ["Key", "Type", "Image or module", "Port", "Config", "Description"],
            (pkg.functions ?? []).map((f) => [
              h("code", null, f.key),
              f.function_type ?? "CUSTOM",
              f.provision_config?.container_image ?? f.provision_config?.wasm_module_url ?? "—",
              f.provision_config?.port !== undefined ? String(f.provision_config.port) : "—",
              Object.keys(f.config ?? {}).join(", ") || "—",
              f.description ?? "—",
            ]), { id: "functions-table" }),
        ),
        h("section", { "aria-labelledby": "pdeps-h" },
          h("h2", { id: "pdeps-h" }, "Deployments"),
          table("Deployments of the package's classes", ["Key", "Class", "Targets", "Condition"],
            deps.items.map((d) => [
              link(`${BASE}/deployments/${enc(d.key)}`, d.key),
              d.classKey,
              d.targetEnvs.join(", "),
              badge(condition(d.condition)),
            ])),
        ),
        h("section", { "aria-labelledby": "yaml-h" },
          h("h2", { id: "yaml-h" }, "YAML"),
          h("pre", { class: "code yaml", id: "package-yaml", tabindex: "0", "aria-labelledby": "yaml-h" }, stringify(pkg)),
        ),
      );
    } catch (err) {
      if (stop.signal.aborted) return;
      main.replaceChildren(header(`Package ${name}`), problem(err) === "notfound" ? h("p", null, `There is no package called ${name}.`) : errorBox(err));
    }
  })();
  return () => stop.abort();
};

const EXAMPLE = `# A package: its classes, the functions they bind, and (optionally)
# deployments created with it. Field names are the REST model's (snake_case).
name: hello-pkg
version: "0.1.0"
metadata:
  author: me
  tags: [demo]
classes:
  - key: Hello
    description: Says hello
    function_bindings:
      - { name: greet, function_key: Hello.greet, stateless: true }
functions:
  - key: Hello.greet
    function_type: CUSTOM
    provision_config:
      container_image: ghcr.io/oaas/hello-fn:latest
      port: 8080
`;

export const packageNewView: View = (main) => editorPage(main, null);
export const packageEditView: View = (main, { name }) => editorPage(main, name!);

function editorPage(main: HTMLElement, name: string | null): () => void {
  const stop = new AbortController();
  const title = name ? `Edit package ${name}` : "New package";
  main.append(header(title));
  const strict = h("input", { type: "checkbox", name: "strict", checked: true });
  const submit = h("button", { type: "submit" }, name ? "Update package" : "Create package");
  const status = h("p", { role: "status", class: "form-status" });
  let etag: string | null = null;

  const mount = (text: string) => {
    const editor = yamlEditor("Package YAML", text);
    const form = h("form", { id: "package-form", class: "stack" },
      editor.el,
      h("div", { class: "row" },
        h("label", { class: "check" }, strict, " Reject unknown fields (Field-Validation: Strict)"),
        submit,
        name ? link(`${BASE}/packages/${enc(name)}`, "Cancel") : link(`${BASE}/packages`, "Cancel"),
      ),
      status,
    );
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      editor.clear();
      replace(status, "Sending…");
      submit.disabled = true;
      const headers: Record<string, string> = {};
      if (strict.checked) headers["Field-Validation"] = "Strict";
      if (name && etag) headers["If-Match"] = etag;
      try {
        const res = await rest<{ id?: string; status?: string; message?: string }>(
          "POST", name ? `/api/v1/packages/${enc(name)}` : "/api/v1/packages",
          { body: editor.textarea.value, contentType: "application/yaml", headers },
        );
        const saved = res.body.id ?? name ?? "";
        const warn = warnings(res.headers);
        setFlash(`Package ${saved} ${name ? "updated" : "created"}.${warn.length ? ` PM ignored: ${warn.join("; ")}` : ""}`);
        go(`${BASE}/packages/${enc(saved)}`);
      } catch (err) {
        replace(status);
        if (err instanceof RestError && (err.status === 400 || err.status === 422)) {
          const found = editor.showErrors(err.message);
          replace(status, `Rejected: ${found.length} problem${found.length === 1 ? "" : "s"}, listed next to the editor.`);
        } else if (problem(err) === "conflict") {
          editor.showNotes("Not saved", [`${message(err)} — someone changed this package since you opened it. Reload to edit the current version (your text is still here).`], "error");
        } else if (problem(err) !== "unauthenticated") {
          editor.showNotes("Not saved", [message(err)], "error");
        }
      } finally {
        submit.disabled = false;
      }
    });
    main.append(form);
    editor.textarea.focus();
  };

  if (!name) {
    mount(EXAMPLE);
  } else {
    (async () => {
      try {
        const res = await rest<PkgJSON>("GET", `/api/v1/packages/${enc(name)}`, { signal: stop.signal });
        etag = res.headers.get("ETag");
        const pkg = res.body;
        // Server-set times are not the user's to edit.
        if (pkg.metadata) {
          delete pkg.metadata.created_at;
          delete pkg.metadata.updated_at;
        }
        mount(stringify(pkg));
      } catch (err) {
        if (!stop.signal.aborted) main.append(errorBox(err, `Loading package ${name}`));
      }
    })();
  }
  return () => stop.abort();
}
