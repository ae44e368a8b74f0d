// `npm test`: builds pm once into a temporary directory (unless PM_BIN names
// one) for every test file to share, runs the TypeScript tests with Node's
// test runner, and removes the directory and binary at the end, also when a
// test fails or the run is interrupted.
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;

let dir;
const cleanup = () => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
};
process.once("exit", cleanup);

const env = { ...process.env };
if (!env.PM_BIN) {
  dir = mkdtempSync(join(tmpdir(), "pm-ts-bin-"));
  env.PM_BIN = join(dir, "pm");
  console.log("test:ts: building pm");
  const build = spawnSync("go", ["build", "-o", env.PM_BIN, "./cmd/pm"], { cwd: root, stdio: "inherit" });
  if (build.status !== 0) {
    console.error("test:ts: go build ./cmd/pm failed");
    process.exit(1);
  }
  console.log(`test:ts: built pm (${elapsed()})`);
}

const files = readdirSync(here)
  .filter((f) => f.endsWith(".test.ts"))
  .map((f) => join(here, f));
console.log(`test:ts: running ${files.length} test files`);
const child = spawn(process.execPath, ["--import", "tsx", "--test", ...files], { cwd: root, env, stdio: "inherit" });

// A terminal's Ctrl-C reaches the test runner too; a SIGTERM sent to this
// process alone is passed on. Either way the child's exit ends the run here,
// after the cleanup.
process.on("SIGINT", () => {});
process.on("SIGTERM", () => child.kill("SIGTERM"));

child.on("exit", (code, signal) => {
  cleanup();
  console.log(`test:ts: ${code === 0 ? "passed" : "failed"} (${elapsed()})`);
  process.exit(code ?? (signal ? 1 : 0));
});
