// Copies the repository's generated TypeScript (gen/ts, made by `task
// generate`) into src/gen so that tsc compiles it together with the
// hand-written modules into one dist/ tree. dist/ is cleared too, so that no
// module of an older build survives into the tarball.
import { cpSync, existsSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const pkg = join(dirname(fileURLToPath(import.meta.url)), "..");
const gen = join(pkg, "..", "..", "gen", "ts");
if (!existsSync(join(gen, "oaas", "pm", "v1"))) {
  console.error(`copy-gen: ${gen} has no oaas/pm/v1: build this package inside the oaas-pm repository`);
  process.exit(1);
}
rmSync(join(pkg, "dist"), { recursive: true, force: true });
rmSync(join(pkg, "src", "gen"), { recursive: true, force: true });
cpSync(gen, join(pkg, "src", "gen"), { recursive: true });
