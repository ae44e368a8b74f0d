// Field errors of a rejected package, placed where they belong: PM's 400
// message names each problem by its field path ("functions[0].function_type:
// unknown value ...", "unknown field \"clases\""); this finds the line of
// that field in the YAML the user pasted.

import { isMap, isScalar, isSeq, LineCounter, parseDocument, type Node as YamlNode } from "yaml";

/** FieldError is one problem of PM's message. */
export interface FieldError {
  /** path is the field as PM names it ("" when the problem names none). */
  path: string;
  /** text is the problem as PM says it. */
  text: string;
  /** line is 1-based; 0 when the problem has no place in the text. */
  line: number;
  /** exact is false when the field is absent and line is its parent's. */
  exact: boolean;
}

const PATH = /^([A-Za-z_][\w-]*(?:\[\d+\])*(?:\.[^\s.:[\]"]+(?:\[\d+\])*)*): (.+)$/s;
const UNKNOWN = /^unknown (?:field|query parameter) "((?:[^"\\]|\\.)*)"/;

/** splitMessage turns PM's error text into the problems it lists. */
export function splitMessage(msg: string): { path: string; text: string }[] {
  let m = msg.trim();
  // "invalid package: a: ...; b: ..." and "... (strict field validation)".
  m = m.replace(/^invalid [a-z ]+?: (?=[A-Za-z_])/, "");
  m = m.replace(/ \(strict field validation\)$/, "");
  return m.split(/; (?=[A-Za-z_][\w-]*(?:\[\d+\])*[.:[ ]|unknown |and \d+ more)/).map((part) => {
    const u = UNKNOWN.exec(part);
    if (u) return { path: u[1]!.replace(/\\"/g, '"'), text: part };
    const p = PATH.exec(part);
    if (p && !/^invalid YAML body$/.test(p[1]!)) return { path: p[1]!, text: part };
    return { path: "", text: part };
  });
}

/** segments splits "functions[0].config.A" into ["functions", 0, "config", "A"]. */
export function segments(path: string): (string | number)[] {
  const out: (string | number)[] = [];
  for (const part of path.split(".")) {
    const m = /^([^[]*)((?:\[\d+\])*)$/.exec(part);
    if (!m) {
      out.push(part);
      continue;
    }
    if (m[1]) out.push(m[1]);
    for (const idx of m[2]!.matchAll(/\[(\d+)\]/g)) out.push(Number(idx[1]));
  }
  return out;
}

/** locate finds PM's problems in the YAML text. */
export function locate(yamlText: string, msg: string): FieldError[] {
  const lc = new LineCounter();
  const doc = parseDocument(yamlText, { lineCounter: lc, uniqueKeys: false });
  const lineOf = (offset: number | undefined) => (offset === undefined ? 0 : lc.linePos(offset).line);
  return splitMessage(msg).map(({ path, text }) => {
    const syntax = /line (\d+)/.exec(text);
    if (!path) return { path, text, line: syntax ? Number(syntax[1]) : 0, exact: !!syntax };
    let node: unknown = doc.contents;
    let line = lineOf((node as YamlNode | null)?.range?.[0]) || 1;
    let exact = true;
    for (const seg of segments(path)) {
      if (isMap(node)) {
        const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === String(seg));
        if (!pair) {
          exact = false;
          break;
        }
        line = lineOf((pair.key as YamlNode).range?.[0]) || line;
        node = pair.value;
      } else if (isSeq(node) && typeof seg === "number" && node.items[seg]) {
        const item = node.items[seg] as YamlNode;
        line = lineOf(item.range?.[0]) || line;
        node = item;
      } else {
        exact = false;
        break;
      }
    }
    return { path, text, line, exact };
  });
}
