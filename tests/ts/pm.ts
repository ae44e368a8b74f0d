// Shared by the TypeScript tests: a pm binary, PMs started from it on free
// loopback ports, API tokens files, and the cleanup of all of them. Every
// temporary directory and process made here is removed or stopped when the
// test file ends (its after hook), and again at process exit or on SIGINT /
// SIGTERM, so a failing or interrupted run leaves nothing in /tmp.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** repoRoot is the oaas-pm checkout these tests belong to. */
export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

const dirs = new Set<string>();
const servers = new Set<ChildProcess>();

/** tempDir makes a directory under the system temp dir, removed by cleanup. */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  dirs.add(dir);
  return dir;
}

/**
 * cleanup stops every PM started here and removes every temporary directory
 * (with the pm binary built into one). It is synchronous so that it also
 * works from an exit handler.
 */
export function cleanup(): void {
  for (const s of servers) {
    if (s.exitCode === null && s.signalCode === null) s.kill("SIGKILL");
  }
  servers.clear();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  dirs.clear();
}

process.once("exit", cleanup);
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    cleanup();
    process.kill(process.pid, signal);
  });
}

let binary: string | undefined;

/**
 * pmBinary is PM_BIN when set (the test runner builds pm once for every test
 * file), else a pm built from this repository into a temporary directory.
 */
export function pmBinary(): string {
  if (process.env.PM_BIN) return process.env.PM_BIN;
  if (!binary) {
    const bin = join(tempDir("pm-ts-bin-"), "pm");
    execFileSync("go", ["build", "-o", bin, "./cmd/pm"], { cwd: repoRoot, stdio: "inherit" });
    binary = bin;
  }
  return binary;
}

/** Token is an API token and the principal it belongs to. */
export interface Token {
  principal: string;
  role: "viewer" | "deployer" | "editor" | "admin";
  token: string;
}

/**
 * tokensFile writes an AUTH_TOKENS_FILE for the given principals and roles,
 * each with a fresh random token, and returns the file and the tokens.
 */
export function tokensFile(entries: Omit<Token, "token">[]): { file: string; tokens: Token[] } {
  const tokens = entries.map((e) => ({ ...e, token: randomBytes(32).toString("hex") }));
  const yaml =
    "tokens:\n" +
    tokens
      .map((t) => {
        const sum = createHash("sha256").update(t.token).digest("hex");
        return `  - {principal: ${t.principal}, role: ${t.role}, sha256: ${sum}}\n`;
      })
      .join("");
  const file = join(tempDir("pm-ts-auth-"), "tokens.yaml");
  writeFileSync(file, yaml, { mode: 0o600 });
  return { file, tokens };
}

/**
 * startPM starts pm on a free port of 127.0.0.1 with the memory store and
 * the embedded default cluster, plus env, and resolves to its base URL once
 * it logs that it listens.
 */
export async function startPM(env: Record<string, string> = {}): Promise<string> {
  const server = spawn(pmBinary(), [], {
    env: {
      ...process.env,
      SERVER_HOST: "127.0.0.1",
      SERVER_PORT: "0",
      METRICS_PORT: "0",
      STORAGE_TYPE: "memory",
      LOG_FORMAT: "json",
      ...env,
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  servers.add(server);
  const lines = createInterface({ input: server.stderr! });
  const tail: string[] = [];
  return await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("pm did not report its address within 30s")), 30_000);
    server.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`pm exited early with ${code}:\n${tail.join("\n")}`));
    });
    lines.on("line", (line) => {
      tail.push(line);
      if (tail.length > 20) tail.shift();
      try {
        const rec = JSON.parse(line);
        if (rec.msg === "pm listening") {
          clearTimeout(timer);
          resolve(`http://${rec.addr}`);
        }
      } catch {
        // not a log record
      }
    });
  });
}
