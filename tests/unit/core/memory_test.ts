import assert from "node:assert/strict";
import { releaseMemory } from "../../../core/mod.ts";

Deno.test("without --expose-gc, releaseMemory does nothing and says so", () => {
  assert.equal(releaseMemory(0), false);
});

Deno.test("with the agent's V8 flags, releaseMemory collects once the heap grew past the threshold, not before", async () => {
  const script = `
    import { AGENT_V8_FLAGS, releaseMemory } from ${
    JSON.stringify(new URL("../../../core/mod.ts", import.meta.url).href)
  };
    const out = { flags: AGENT_V8_FLAGS, first: releaseMemory(), small: false, big: false, dropped: 0 };
    let keep = Array.from({ length: 1000 }, (_, i) => "x" + i);
    out.small = releaseMemory();
    keep = Array.from({ length: 1_500_000 }, (_, i) => ({ i, s: "garbage " + i }));
    const before = Deno.memoryUsage().heapUsed;
    keep = [];
    out.big = releaseMemory();
    out.dropped = (before - Deno.memoryUsage().heapUsed) / 2 ** 20;
    console.log(JSON.stringify(out));
  `;
  const { AGENT_V8_FLAGS } = await import("../../../core/mod.ts");
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["eval", `--v8-flags=${AGENT_V8_FLAGS}`, script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.ok(r.success, new TextDecoder().decode(r.stderr));
  const out = JSON.parse(new TextDecoder().decode(r.stdout));
  assert.equal(out.first, false, "a fresh process is under the threshold");
  assert.equal(out.small, false, "a little garbage is left to V8");
  assert.equal(out.big, true, "a large amount is collected at once");
  assert.ok(out.dropped > 32, `heap dropped by ${out.dropped} MiB`);
});
