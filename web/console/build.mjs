// Builds the console into internal/ui/dist, which internal/ui embeds:
//   node web/console/build.mjs            write internal/ui/dist
//   node web/console/build.mjs --out DIR  write DIR instead
//   node web/console/build.mjs --check    build into a temp dir and fail when
//                                         it differs from internal/ui/dist
// esbuild's JS API finds its platform binary (@esbuild/<os>-<arch>) itself,
// so this works without esbuild's postinstall script (package.json denies
// it in allowScripts). The output is deterministic: same sources and same
// pinned versions give the same bytes, which is what --check relies on.

import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");
const committed = join(root, "internal/ui/dist");

const args = process.argv.slice(2);
const check = args.includes("--check");
const outIdx = args.indexOf("--out");
const out = check ? mkdtempSync(join(tmpdir(), "pm-console-")) : outIdx >= 0 ? resolve(args[outIdx + 1]) : committed;

async function build(dir) {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, "assets"), { recursive: true });
  const result = await esbuild.build({
    absWorkingDir: root,
    entryPoints: { app: "web/console/src/main.ts", style: "web/console/src/style.css" },
    outdir: join(dir, "assets"),
    entryNames: "[name]-[hash]",
    bundle: true,
    minify: true,
    format: "esm",
    target: ["es2022", "chrome110", "firefox115", "safari16"],
    platform: "browser",
    charset: "utf8",
    legalComments: "none",
    sourcemap: false,
    metafile: true,
    logLevel: "warning",
  });
  const outputs = Object.keys(result.metafile.outputs).map((p) => relative(join(dir, "assets"), resolve(root, p)));
  const js = outputs.find((f) => f.endsWith(".js"));
  const css = outputs.find((f) => f.endsWith(".css"));

  const icon = readFileSync(join(here, "src/icon.svg"));
  const iconName = `icon-${createHash("sha256").update(icon).digest("hex").slice(0, 8).toUpperCase()}.svg`;
  writeFileSync(join(dir, "assets", iconName), icon);

  const html = readFileSync(join(here, "index.html"), "utf8")
    .replaceAll("{{js}}", `/ui/assets/${js}`)
    .replaceAll("{{css}}", `/ui/assets/${css}`)
    .replaceAll("{{icon}}", `/ui/assets/${iconName}`);
  writeFileSync(join(dir, "index.html"), html);
  writeFileSync(join(dir, "licenses.txt"), licenses(result.metafile));
}

// licenses lists the npm packages bundled into the console with their
// license texts, since the minified bundle keeps no comments.
function licenses(metafile) {
  const pkgs = new Map();
  for (const input of Object.keys(metafile.inputs)) {
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (m && !pkgs.has(m[1])) pkgs.set(m[1], join(root, "node_modules", m[1]));
  }
  let text = "The OaaS PM console bundles these npm packages:\n";
  for (const [name, dir] of [...pkgs].sort(([a], [b]) => a.localeCompare(b))) {
    const meta = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
    text += `\n==== ${name} ${meta.version} (${meta.license}) ====\n`;
    const file = readdirSync(dir).find((f) => /^(licen[cs]e|copying)(\.(md|txt))?$/i.test(f));
    text += file ? readFileSync(join(dir, file), "utf8").trim() + "\n" : `License: ${meta.license}\n`;
  }
  return text;
}

function files(dir, base = dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    return statSync(p).isDirectory() ? files(p, base) : [relative(base, p)];
  }).sort();
}

await build(out);
if (check) {
  const want = files(out);
  const have = files(committed);
  const problems = [];
  for (const f of new Set([...want, ...have])) {
    if (!want.includes(f)) problems.push(`internal/ui/dist/${f} is not produced by the build (stale)`);
    else if (!have.includes(f)) problems.push(`internal/ui/dist/${f} is missing`);
    else if (!readFileSync(join(out, f)).equals(readFileSync(join(committed, f)))) problems.push(`internal/ui/dist/${f} differs from a fresh build`);
  }
  rmSync(out, { recursive: true, force: true });
  if (problems.length) {
    console.error(problems.join("\n"));
    console.error("the committed console bundle is stale: run 'go tool -modfile=tools/go.mod task ui:build' and commit internal/ui/dist");
    process.exit(1);
  }
  console.log(`console bundle up to date (${want.length} files)`);
} else {
  console.log(`console built into ${relative(process.cwd(), out) || "."}: ${files(out).join(", ")}`);
}
