// Element builders. The console never assigns innerHTML: every string
// from the server becomes a text node, so data cannot inject markup (and
// the Content-Security-Policy forbids inline script anyway).

export type Child = Node | string | number | null | undefined | false | Child[];
type AttrValue = string | number | boolean | null | undefined | ((ev: any) => void);
export type Attrs = Record<string, AttrValue>;

function apply(el: Element, attrs: Attrs | null | undefined, children: Child[]): void {
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (typeof v === "function") {
        el.addEventListener(k.replace(/^on/, ""), v as EventListener);
      } else if (k === "value" && "value" in el) {
        (el as HTMLInputElement).value = String(v);
      } else if (k === "checked" && el instanceof HTMLInputElement) {
        el.checked = Boolean(v);
      } else {
        el.setAttribute(k, v === true ? "" : String(v));
      }
    }
  }
  append(el, children);
}

export function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
}

/** h builds an HTML element. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs?: Attrs | null, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  apply(el, attrs, children);
  return el;
}

const SVG = "http://www.w3.org/2000/svg";

/** s builds an SVG element. */
export function s<K extends keyof SVGElementTagNameMap>(tag: K, attrs?: Attrs | null, ...children: Child[]): SVGElementTagNameMap[K] {
  const el = document.createElementNS(SVG, tag);
  apply(el, attrs, children);
  return el;
}

/** replace swaps an element's children. */
export function replace(el: Element, ...children: Child[]): void {
  el.replaceChildren();
  append(el, children);
}

let ids = 0;
/** uid returns a fresh element id for label/aria wiring. */
export function uid(prefix: string): string {
  ids++;
  return `${prefix}-${ids}`;
}

/** field is a labelled form control. */
export function field(label: string, control: HTMLElement, hint?: string): HTMLElement {
  if (!control.id) control.id = uid("f");
  const parts: Child[] = [h("label", { for: control.id }, label), control];
  if (hint) {
    const hid = uid("hint");
    control.setAttribute("aria-describedby", hid);
    parts.push(h("small", { id: hid, class: "hint" }, hint));
  }
  return h("div", { class: "field" }, parts);
}

/** table builds a table with a caption and a header row; rows are cells. */
export function table(caption: string, headers: string[], rows: Child[][], attrs?: Attrs): HTMLElement {
  // The wrapper scrolls sideways on narrow screens instead of the page.
  return h("div", { class: "table-wrap" }, h(
    "table",
    attrs ?? null,
    h("caption", null, caption),
    h("thead", null, h("tr", null, headers.map((x) => h("th", { scope: "col" }, x)))),
    h("tbody", null, rows.length === 0
      ? h("tr", null, h("td", { colspan: headers.length, class: "empty" }, "None."))
      : rows.map((r) => h("tr", null, r.map((c) => h("td", null, c))))),
  ));
}

/** link is an in-console link (the router intercepts it). */
export function link(href: string, ...children: Child[]): HTMLAnchorElement {
  return h("a", { href }, ...children);
}

/** badge shows a state word with a class for its colour. */
export function badge(text: string, kind?: string): HTMLElement {
  const k = (kind ?? text).toLowerCase().replace(/[^a-z0-9]+/g, "-");
  return h("span", { class: `badge b-${k}` }, text);
}
