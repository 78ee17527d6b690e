import assert from "node:assert/strict";
import { needs, withNetns } from "../../_support/netns.ts";
import { nftCases, rtnlCases } from "../../unit/ffi/_conformance.ts";
import { inNetns } from "./_in_netns.ts";

// The same cases run against the fakes in tests/unit/ffi/fake_conformance_test.ts.
const RUNNER = new URL("./_kernel_case.ts", import.meta.url);

const suites = [
  { title: "rtnetlink", kind: "rtnl", cases: rtnlCases },
  { title: "nftables", kind: "nft", cases: nftCases },
] as const;

for (const { title, kind, cases } of suites) {
  for (const c of cases) {
    Deno.test({
      ...needs(`the kernel conforms (${title}): ${c.name}`, { tools: ["ip"] }),
      fn: () =>
        withNetns(["conf"], async (ns) => {
          assert.equal(await inNetns<string>(ns, RUNNER, "runCase", [kind, c.name]), "ok");
        }),
    });
  }
}
