/**
 * `deno task compile`: builds dist/kube-router, one self-contained binary. `deno compile` needs the
 * `denort` runtime; it downloads it unless DENORT_BIN points at one (needed on machines that cannot reach
 * Deno's download server).
 */
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
  // Smaller V8 heaps: with 5,000 Services and 10,000 Pods cached the agent stays under 200 MiB (see
  // BENCHMARKS.md, watch layer) for a slower first sync that is still well within 5 s.
  "--v8-flags=--optimize-for-size",
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
