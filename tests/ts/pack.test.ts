// Packs the npm package (clients/ts) as a user would receive it, installs the
// tarball with its peers from the registry into a fresh directory outside
// the repository, and runs a consumer script there (pack-smoke.mjs) against
// live PMs: one on the embedded defaults, one that requires API tokens.
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";

import { cleanup, repoRoot, startPM, tempDir, tokensFile } from "./pm.js";

after(cleanup);

const clientDir = join(repoRoot, "clients", "ts");
const genDir = join(repoRoot, "gen", "ts");
const rootPkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8"));
const clientPkg = JSON.parse(readFileSync(join(clientDir, "package.json"), "utf8"));

// The generated modules as subpaths of the package, e.g. "oaas/pm/v1/package_pb".
function generatedModules(dir = genDir): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? generatedModules(join(dir, e.name))
      : e.name.endsWith("_pb.ts")
        ? [relative(genDir, join(dir, e.name)).replace(/\.ts$/, "")]
        : [],
  );
}
const modules = generatedModules();
// PM's own API and the messages it shares: the root entry re-exports these.
const rootModules = modules.filter((m) => m.startsWith("oaas/pm/v1/") || m.startsWith("oaas/common/"));

interface ModuleReport {
  exports: number;
  notInRoot: string[];
  services: string[];
}
interface CallReport {
  withoutToken?: { createPackage: string; listClusters: string };
  created: { id?: string; status?: string; revision?: string };
  read: { name?: string; version?: string; functionKeys?: string[]; port?: number };
  clusters: string[];
  anonymousPackage?: string;
}
interface SmokeReport {
  modules: Record<string, ModuleReport>;
  pmServices: string[];
  calls: Record<string, CallReport>;
}

describe("the npm package, packed and installed outside the repository", () => {
  let files: string[];
  let app: string;

  before(() => {
    const dir = tempDir("pm-ts-pack-");
    // npm pack runs the package's prepack script: copy gen/ts, compile with tsc.
    const packed = JSON.parse(
      execFileSync("npm", ["pack", "--pack-destination", dir, "--json"], {
        cwd: clientDir,
        encoding: "utf8",
        stdio: ["ignore", "pipe", "inherit"],
      }),
    );
    files = packed[0].files.map((f: { path: string }) => f.path);
    const tarball = join(dir, packed[0].filename);

    app = join(dir, "app");
    mkdirSync(app);
    writeFileSync(join(app, "package.json"), JSON.stringify({ name: "pm-client-consumer", private: true, type: "module" }));
    // The peers at the versions the repository pins (those that support the
    // oldest Node the package claims), and the Node transports.
    const deps = ["@bufbuild/protobuf", "@connectrpc/connect", "@connectrpc/connect-node"].map(
      (d) => `${d}@${rootPkg.devDependencies[d]}`,
    );
    const install = spawnSync("npm", ["install", "--no-audit", "--no-fund", "--ignore-scripts", tarball, ...deps], {
      cwd: app,
      encoding: "utf8",
    });
    assert.equal(install.status, 0, `npm install failed:\n${install.stdout}\n${install.stderr}`);
    assert.doesNotMatch(
      install.stdout + install.stderr,
      /EBADENGINE/,
      `npm install warned about an unsupported engine on Node ${process.version}`,
    );
    copyFileSync(join(repoRoot, "tests", "ts", "pack-smoke.mjs"), join(app, "smoke.mjs"));
  });

  function smoke(env: Record<string, string>): SmokeReport {
    const run = spawnSync(process.execPath, ["smoke.mjs"], {
      cwd: app,
      encoding: "utf8",
      env: { PATH: process.env.PATH ?? "", PM_MODULES: JSON.stringify(modules), ...env },
    });
    assert.equal(run.status, 0, `smoke.mjs failed:\n${run.stderr}`);
    return JSON.parse(run.stdout) as SmokeReport;
  }

  test("holds compiled JavaScript and declarations for every generated and hand-written module", () => {
    assert.ok(files.includes("package.json") && files.includes("README.md"));
    for (const m of modules) {
      assert.ok(files.includes(`dist/gen/${m}.js`), `dist/gen/${m}.js packed`);
      assert.ok(files.includes(`dist/gen/${m}.d.ts`), `dist/gen/${m}.d.ts packed`);
    }
    for (const m of ["index", "clients", "auth"]) {
      assert.ok(files.includes(`dist/${m}.js`) && files.includes(`dist/${m}.d.ts`), `dist/${m} packed`);
    }
    const sources = files.filter((f) => f.endsWith(".ts") && !f.endsWith(".d.ts"));
    assert.deepEqual(sources, [], "no TypeScript sources in the tarball");
    assert.equal(clientPkg.engines.node, ">=20");
  });

  test("imports only its peers and its own modules, so it runs in browsers too", () => {
    const installed = join(app, "node_modules", "@oaas", "pm-client");
    const imports = new Set<string>();
    for (const f of files.filter((f) => f.endsWith(".js"))) {
      const code = readFileSync(join(installed, f), "utf8");
      for (const m of code.matchAll(/\b(?:from|import)\s*\(?\s*["']([^"']+)["']/g)) {
        if (!m[1].startsWith("./") && !m[1].startsWith("../")) imports.add(m[1]);
      }
    }
    const peers = Object.keys(clientPkg.peerDependencies);
    const foreign = [...imports].filter((i) => !peers.some((p) => i === p || i.startsWith(`${p}/`)));
    assert.deepEqual(foreign, [], "imports beyond the peer dependencies");
    assert.ok(imports.has("@connectrpc/connect") && imports.has("@bufbuild/protobuf/codegenv2"));
  });

  test("against a PM on the embedded defaults: creates, reads, lists over Connect, gRPC and gRPC-Web", async () => {
    const url = await startPM();
    const report = smoke({ PM_URL: url, PM_NAME: "pack-open" });

    for (const m of modules) {
      assert.ok(report.modules[m]?.exports > 0, `${m} imported through its subpath`);
    }
    for (const m of rootModules) {
      assert.deepEqual(report.modules[m].notInRoot, [], `root entry re-exports all of ${m}`);
    }
    const served = rootModules.flatMap((m) => report.modules[m].services).sort();
    assert.ok(served.includes("oaas.pm.v1.PackageService"));
    assert.deepEqual([...report.pmServices].sort(), served, "createPmClients covers every PM service");

    assert.deepEqual(Object.keys(report.calls), ["connect", "grpc", "grpc-web"]);
    for (const [protocol, call] of Object.entries(report.calls)) {
      const name = `pack-open-${protocol}`;
      assert.deepEqual(call.created, { id: name, status: "created", revision: "1" });
      assert.deepEqual(call.read, { name, version: "1.0.0", functionKeys: ["Echo.run"], port: 8080 });
      assert.ok(call.clusters.includes("default"), `${protocol}: the embedded default cluster listed`);
    }
  });

  test("against a PM that requires tokens: refused without one, served with bearerToken", async () => {
    const { file, tokens } = tokensFile([{ principal: "pack-editor", role: "editor" }]);
    const url = await startPM({ AUTH_TOKENS_FILE: file });
    const report = smoke({ PM_URL: url, PM_NAME: "pack-auth", PM_TOKEN: tokens[0].token });

    assert.deepEqual(Object.keys(report.calls), ["connect", "grpc", "grpc-web"]);
    for (const [protocol, call] of Object.entries(report.calls)) {
      const name = `pack-auth-${protocol}`;
      assert.deepEqual(call.withoutToken, { createPackage: "Unauthenticated", listClusters: "Unauthenticated" });
      assert.deepEqual(call.created, { id: name, status: "created", revision: "1" });
      assert.equal(call.read.name, name);
      assert.ok(call.clusters.includes("default"), `${protocol}: the embedded default cluster listed`);
      assert.equal(call.anonymousPackage, "NotFound", `${protocol}: the refused create changed nothing`);
    }
  });
});
