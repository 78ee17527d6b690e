import assert from "node:assert/strict";
import { AGENT_V8_FLAGS } from "../../../core/mod.ts";

Deno.test("deno task start runs the agent with the V8 flags the binary, the lab and the benchmarks use", async () => {
  const denoJson = JSON.parse(await Deno.readTextFile(new URL("../../../deno.json", import.meta.url))) as {
    tasks: Record<string, string>;
  };
  assert.match(
    denoJson.tasks.start!,
    new RegExp(` --v8-flags=${AGENT_V8_FLAGS.replaceAll(/[-,=]/g, "\\$&")} `),
  );
  // Each flag is one this V8 knows: deno refuses to start on an unknown one.
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", `--v8-flags=${AGENT_V8_FLAGS}`, "console.log('ok')"],
    stderr: "piped",
    stdout: "piped",
  }).output();
  assert.equal(new TextDecoder().decode(out.stdout).trim(), "ok");
  assert.doesNotMatch(new TextDecoder().decode(out.stderr), /unrecognized|Error/i);
});
