import assert from "node:assert/strict";
import { needs, withNetns } from "../../_support/netns.ts";
import { fdbCases } from "../../unit/ffi/_fdb_conformance.ts";
import { inNetns } from "./_in_netns.ts";

// The same cases run against FakeFdb in tests/unit/ffi/fdb_test.ts.
const RUNNER = new URL("./_fdb_case.ts", import.meta.url);

for (const c of fdbCases) {
  Deno.test({
    ...needs(`the kernel conforms (fdb): ${c.name}`, { tools: ["ip"] }),
    fn: () =>
      withNetns(["fdbconf"], async (ns) => {
        assert.equal(await inNetns<string>(ns, RUNNER, "runFdbCase", [c.name]), "ok");
      }),
  });
}
