/**
 * `deno task compile`: builds dist/kube-router, one self-contained binary. `deno compile` needs the
 * `denort` runtime; it downloads it unless DENORT_BIN points at one (needed on machines that cannot reach
 * Deno's download server).
 */
import { AGENT_V8_FLAGS } from "../core/mod.ts";

const root = new URL("..", import.meta.url).pathname;
const out = `${root}dist/kube-router`;
const denort = Deno.env.get("DENORT_BIN");
if (denort) {
  try {
    Deno.statSync(denort);
  } catch {
    console.error(`DENORT_BIN=${denort} does not exist`);
    Deno.exit(2);
  }
}
const args = [
  "compile",
  "--allow-all",
  // The agent's V8 flags (core/v8_flags.ts: smaller heaps, grown by half at a time).
  `--v8-flags=${AGENT_V8_FLAGS}`,
  "--no-check=remote",
  "--output",
  out,
  `${root}main.ts`,
];
console.log(`deno ${args.join(" ")}${denort ? ` (DENORT_BIN=${denort})` : ""}`);
const r = await new Deno.Command(Deno.execPath(), { args, stdout: "inherit", stderr: "inherit" }).output();
if (!r.success) {
  console.error(
    "deno compile failed. If it could not download denort, set DENORT_BIN to a denort binary of the same " +
      `Deno version (${Deno.version.deno}).`,
  );
  Deno.exit(r.code || 1);
}
console.log(`built ${out}`);
