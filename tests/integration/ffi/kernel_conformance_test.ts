import assert from "node:assert/strict";
import { needs, withNetns } from "../../_support/netns.ts";
import { nftCases, rtnlCases } from "../../unit/ffi/_conformance.ts";
import { inNetns } from "./_in_netns.ts";

// The same cases run against the fakes in tests/unit/ffi/fake_conformance_test.ts.
const RUNNER = new URL("./_kernel_case.ts", import.meta.url);

for (const c of rtnlCases) {
  Deno.test({
    ...needs(`the kernel conforms (rtnetlink): ${c.name}`, { tools: ["ip"] }),
    fn: () =>
      withNetns(["conf"], async (ns) => {
        assert.equal(await inNetns<string>(ns, RUNNER, "runCase", ["rtnl", c.name]), "ok");
      }),
  });
}

for (const c of nftCases) {
  Deno.test({
    ...needs(`the kernel conforms (nftables): ${c.name}`, { tools: ["ip"] }),
    fn: () =>
      withNetns(["conf"], async (ns) => {
        assert.equal(await inNetns<string>(ns, RUNNER, "runCase", ["nft", c.name]), "ok");
      }),
  });
}
