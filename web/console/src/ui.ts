// Components shared by the views.

import { isAbort, message, problem } from "./api.js";
import { h, replace, type Child } from "./dom.js";
import { ago } from "./format.js";
import { POLL_MS, type Snapshot } from "./live.js";

/** liveStatus shows how a view's data arrives and how fresh it is. */
export function liveStatus(): { el: HTMLElement; update(s: Snapshot<unknown>): void } {
  const el = h("p", { class: "live", role: "status", "data-mode": "connecting" }, "Connecting…");
  return {
    el,
    update(s) {
      el.dataset.mode = s.mode;
      const how = s.mode === "stream" ? "Live: watch stream" : s.mode === "poll" ? `Live: polling every ${POLL_MS / 1000} s` : "Connecting…";
      const parts: Child[] = [h("span", { class: `dot dot-${s.mode}`, "aria-hidden": "true" }), how, ` · updated ${ago(s.at)}`];
      if (s.error && !isAbort(s.error)) parts.push(h("span", { class: "warn" }, ` · ${message(s.error)}`));
      replace(el, ...parts);
    },
  };
}

/** errorBox shows a failed call; a refused credential shows nothing (the sign-in form takes over). */
export function errorBox(err: unknown, what?: string): HTMLElement {
  const p = problem(err);
  if (p === "unauthenticated") return h("div", { class: "notice" }, "Sign in to see this page.");
  if (p === "forbidden") return h("div", { class: "error", role: "alert" }, what ? `${what}: ` : "", "your role may not do this. ", message(err));
  return h("div", { class: "error", role: "alert" }, what ? `${what}: ` : "", message(err));
}

/** header is a page heading with optional actions on the right. */
export function header(title: string, ...actions: Child[]): HTMLElement {
  return h("div", { class: "page-head" }, h("h1", { tabindex: "-1" }, title), h("div", { class: "actions" }, actions));
}

/**
 * confirmButton asks before a destructive action, inline (no browser
 * dialog): the first press shows the question and two buttons.
 */
export function confirmButton(label: string, question: string, action: () => Promise<void>): HTMLElement {
  const box = h("span", { class: "confirm" });
  const start = h("button", { type: "button", class: "danger" }, label);
  const reset = () => replace(box, start);
  start.addEventListener("click", () => {
    const yes = h("button", { type: "button", class: "danger" }, `Yes, ${label.toLowerCase()}`);
    const no = h("button", { type: "button" }, "Cancel");
    const status = h("span", { role: "status" });
    yes.addEventListener("click", async () => {
      yes.disabled = true;
      replace(status, "Working…");
      try {
        await action();
      } catch (err) {
        replace(status, errorBox(err, label));
        yes.disabled = false;
      }
    });
    no.addEventListener("click", () => { reset(); start.focus(); });
    replace(box, h("span", { class: "question" }, question), " ", yes, " ", no, " ", status);
    no.focus();
  });
  reset();
  return box;
}

/** dl builds a description list from label/value pairs. */
export function dl(pairs: [string, Child][]): HTMLDListElement {
  return h("dl", { class: "facts" }, pairs.map(([k, v]) => [h("dt", null, k), h("dd", null, v ?? "—")]));
}

/** flash is a one-shot message carried across a navigation. */
let pending: string | null = null;
export function setFlash(msg: string): void {
  pending = msg;
}
export function takeFlash(): HTMLElement | null {
  const m = pending;
  pending = null;
  return m ? h("p", { class: "flash", role: "status" }, m) : null;
}
