// A YAML editor with line numbers and PM's field errors beside it: each
// error names its field and line, and choosing it selects that line.

import { h, replace, uid } from "./dom.js";
import { locate, type FieldError } from "./yamlerrors.js";

export interface Editor {
  el: HTMLElement;
  textarea: HTMLTextAreaElement;
  /** showErrors places PM's 400 message next to the text. */
  showErrors(msg: string): FieldError[];
  /** showNotes lists non-fatal remarks (Warning headers) or a conflict. */
  showNotes(title: string, notes: string[], kind?: "warn" | "error"): void;
  clear(): void;
}

export function yamlEditor(label: string, text: string): Editor {
  const id = uid("yaml");
  const errorsId = `${id}-errors`;
  const textarea = h("textarea", {
    id, name: "yaml", rows: 26, spellcheck: "false", autocapitalize: "off", autocomplete: "off",
    wrap: "off", "aria-describedby": errorsId, class: "code",
  });
  textarea.value = text;
  const gutter = h("pre", { class: "gutter", "aria-hidden": "true" });
  const marks = new Set<number>();
  const drawGutter = () => {
    const n = textarea.value.split("\n").length;
    const lines: (string | HTMLElement)[] = [];
    for (let i = 1; i <= n; i++) {
      lines.push(marks.has(i) ? h("span", { class: "mark" }, String(i)) : String(i), "\n");
    }
    replace(gutter, ...lines);
    gutter.scrollTop = textarea.scrollTop;
  };
  textarea.addEventListener("input", drawGutter);
  textarea.addEventListener("scroll", () => (gutter.scrollTop = textarea.scrollTop));
  // Tab indents (two spaces) instead of leaving the field; Escape then Tab
  // leaves it, so keyboard users are never trapped.
  let escaped = false;
  textarea.addEventListener("keydown", (ev) => {
    if (ev.key === "Escape") {
      escaped = true;
      return;
    }
    if (ev.key === "Tab" && !ev.shiftKey && !escaped) {
      ev.preventDefault();
      textarea.setRangeText("  ", textarea.selectionStart, textarea.selectionEnd, "end");
      drawGutter();
    }
    if (ev.key !== "Tab") escaped = false;
  });
  const panel = h("div", { id: errorsId, class: "problems", "aria-live": "polite" });
  const el = h(
    "div",
    { class: "editor" },
    h("label", { for: id }, label, h("small", { class: "hint" }, " (Tab indents; Esc then Tab leaves the editor)")),
    h("div", { class: "editor-grid" }, h("div", { class: "code-wrap" }, gutter, textarea), panel),
  );
  drawGutter();

  const selectLine = (line: number) => {
    const lines = textarea.value.split("\n");
    let start = 0;
    for (let i = 0; i < line - 1 && i < lines.length; i++) start += lines[i]!.length + 1;
    const end = start + (lines[line - 1]?.length ?? 0);
    textarea.focus();
    textarea.setSelectionRange(start, end);
    const lineHeight = textarea.scrollHeight / Math.max(lines.length, 1);
    textarea.scrollTop = Math.max(0, (line - 3) * lineHeight);
  };

  return {
    el,
    textarea,
    showErrors(msg) {
      const found = locate(textarea.value, msg);
      marks.clear();
      found.forEach((f) => f.line && marks.add(f.line));
      drawGutter();
      textarea.setAttribute("aria-invalid", "true");
      replace(
        panel,
        h("h2", null, found.length === 1 ? "PM rejected this package" : `PM rejected this package (${found.length} problems)`),
        h("ul", { class: "field-errors" }, found.map((f) => {
          const where = f.line ? `Line ${f.line}${f.exact ? "" : " (near)"}` : "";
          const item = h(
            "li",
            { class: "field-error", "data-path": f.path, "data-line": f.line || null },
            f.path ? h("code", { class: "path" }, f.path) : null,
            h("span", { class: "text" }, f.text),
          );
          if (f.line) {
            const btn = h("button", { type: "button", class: "linkish", "aria-label": `${where}: go to ${f.path || "the line"}` }, where);
            btn.addEventListener("click", () => selectLine(f.line));
            item.prepend(btn, " ");
          }
          return item;
        })),
      );
      return found;
    },
    showNotes(title, notes, kind = "warn") {
      replace(panel, h("h2", null, title), h("ul", { class: kind === "warn" ? "warnings" : "field-errors" }, notes.map((n) => h("li", null, n))));
    },
    clear() {
      marks.clear();
      drawGutter();
      textarea.removeAttribute("aria-invalid");
      replace(panel);
    },
  };
}

/** warnings reads PM's Warning headers (299 - "unknown field ..."). */
export function warnings(headers: Headers): string[] {
  const raw = headers.get("Warning");
  if (!raw) return [];
  const out: string[] = [];
  for (const m of raw.matchAll(/299 - "((?:[^"\\]|\\.)*)"/g)) out.push(m[1]!.replace(/\\(.)/g, "$1"));
  return out;
}
