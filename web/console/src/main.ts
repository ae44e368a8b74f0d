// The console's shell: navigation, routing in the browser (History API,
// every path under /ui/ is served index.html), and sign-in.

import { authEvents, clusters, message, problem, setToken, token } from "./api.js";
import { field, h, replace } from "./dom.js";
import { BASE, go, hasNavigated, markNavigated, setRenderer } from "./router.js";
import { takeFlash } from "./ui.js";
import { auditView } from "./views/audit.js";
import { clustersView } from "./views/clusters.js";
import { deploymentEditView, deploymentNewView, deploymentsView, deploymentView } from "./views/deployments.js";
import { operationsView, orphansView } from "./views/operations.js";
import { packageEditView, packageNewView, packagesView, packageView } from "./views/packages.js";
import { topologyView } from "./views/topology.js";

/** View renders one page into main and returns its cleanup. */
export type View = (main: HTMLElement, params: Record<string, string>, query: URLSearchParams) => (() => void) | void;

interface Route {
  pattern: RegExp;
  names: string[];
  view: View;
  title: string;
}

function route(path: string, title: string, view: View): Route {
  const names: string[] = [];
  const re = path.replace(/:(\w+)/g, (_, n: string) => {
    names.push(n);
    return "([^/]+)";
  });
  return { pattern: new RegExp(`^${re}/?$`), names, view, title };
}

const routes: Route[] = [
  route("/", "Deployments", deploymentsView),
  route("/deployments", "Deployments", deploymentsView),
  route("/deployments/new", "New deployment", deploymentNewView),
  route("/deployments/:key/edit", "Update deployment", deploymentEditView),
  route("/deployments/:key", "Deployment", deploymentView),
  route("/packages", "Packages", packagesView),
  route("/packages/new", "New package", packageNewView),
  route("/packages/:name/edit", "Edit package", packageEditView),
  route("/packages/:name", "Package", packageView),
  route("/clusters", "Clusters", clustersView),
  route("/operations", "Operations", operationsView),
  route("/orphans", "Orphans", orphansView),
  route("/topology", "Topology", topologyView),
  route("/audit", "Audit log", auditView),
];

const nav: [string, string][] = [
  ["/deployments", "Deployments"],
  ["/packages", "Packages"],
  ["/clusters", "Clusters"],
  ["/operations", "Operations"],
  ["/orphans", "Orphans"],
  ["/topology", "Topology"],
  ["/audit", "Audit log"],
];

const main = document.getElementById("main") as HTMLElement;
const navEl = document.getElementById("nav") as HTMLElement;
const session = document.getElementById("session") as HTMLElement;
let cleanup: (() => void) | void;
let signingIn = false;

function renderNav(path: string): void {
  replace(
    navEl,
    h("ul", null, nav.map(([p, label]) => {
      const current = path === p || path.startsWith(`${p}/`) || (path === "/" && p === "/deployments");
      return h("li", null, h("a", { href: BASE + p, "aria-current": current ? "page" : null }, label));
    })),
  );
  if (token()) {
    const out = h("button", { type: "button", id: "sign-out" }, "Sign out");
    out.addEventListener("click", () => {
      setToken(null);
      render();
    });
    replace(session, h("span", { class: "who" }, "Signed in with a token"), " ", out);
  } else {
    replace(session);
  }
}

/** render draws the page of the current location. */
function render(): void {
  if (cleanup) cleanup();
  cleanup = undefined;
  signingIn = false;
  let path = location.pathname.startsWith(BASE) ? location.pathname.slice(BASE.length) : "/";
  if (path === "") path = "/";
  renderNav(path);
  const q = new URLSearchParams(location.search);
  main.replaceChildren();
  const flash = takeFlash();
  if (flash) main.append(flash);
  for (const r of routes) {
    const m = r.pattern.exec(path);
    if (!m) continue;
    const params: Record<string, string> = {};
    r.names.forEach((n, i) => (params[n] = decodeURIComponent(m[i + 1]!)));
    document.title = `${r.title} · OaaS PM`;
    const container = h("div", { class: "view" });
    main.append(container);
    cleanup = r.view(container, params, q);
    focusHeading();
    return;
  }
  document.title = "Not found · OaaS PM";
  main.append(h("h1", { tabindex: "-1" }, "Not found"), h("p", null, "No console page at ", h("code", null, location.pathname), "."));
  focusHeading();
}

function focusHeading(): void {
  // After a navigation (not the first load) move focus to the new page's
  // heading so keyboard and screen-reader users land on it.
  if (!hasNavigated()) return;
  queueMicrotask(() => main.querySelector<HTMLElement>("h1")?.focus());
}

document.addEventListener("click", (ev) => {
  if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const a = (ev.target as Element | null)?.closest?.("a");
  if (!a || a.target || a.hasAttribute("download")) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin || !(url.pathname === BASE || url.pathname.startsWith(`${BASE}/`))) return;
  ev.preventDefault();
  go(url.pathname + url.search);
});

window.addEventListener("popstate", () => {
  markNavigated();
  render();
});

/** showSignIn replaces the page with the token form. */
function showSignIn(reason: string): void {
  if (signingIn) return;
  signingIn = true;
  if (cleanup) cleanup();
  cleanup = undefined;
  const input = h("input", { type: "password", name: "token", autocomplete: "off", required: true, spellcheck: "false" });
  const status = h("p", { id: "sign-in-status", role: "alert" });
  const form = h(
    "form",
    { id: "sign-in", class: "card narrow", "aria-labelledby": "sign-in-title" },
    h("h1", { id: "sign-in-title", tabindex: "-1" }, "Sign in"),
    h("p", null, reason),
    field("API token", input, "The token is kept in this tab only (session storage) and sent as Authorization: Bearer."),
    h("button", { type: "submit" }, "Sign in"),
    status,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const t = input.value.trim();
    if (!t) return;
    setToken(t);
    replace(status, "Checking…");
    try {
      await clusters.listClusters({});
      signingIn = false;
      render();
    } catch (err) {
      setToken(null);
      replace(status, problem(err) === "unauthenticated" ? "PM did not accept this token." : message(err));
      input.focus();
    }
  });
  renderNav("");
  main.replaceChildren(form);
  input.focus();
}

authEvents.addEventListener("unauthenticated", () => {
  const had = token() !== null;
  if (had) setToken(null);
  showSignIn(had ? "Your token was refused (expired or revoked?). Sign in again." : "Authentication is on: sign in with an API token.");
});

setRenderer(render);
render();
