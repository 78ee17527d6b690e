import { FakeNftables, FakeRtnetlink } from "../../../ffi/mod.ts";
import { nftCases, rtnlCases } from "./_conformance.ts";

// The same cases run against the real kernel in tests/integration/ffi/kernel_conformance_test.ts.
for (const c of rtnlCases) {
  Deno.test(`FakeRtnetlink conforms: ${c.name}`, async () => {
    const r = new FakeRtnetlink();
    try {
      await c.fn(r);
    } finally {
      r.close();
    }
  });
}

for (const c of nftCases) {
  Deno.test(`FakeNftables conforms: ${c.name}`, async () => {
    const n = new FakeNftables();
    try {
      await c.fn(n);
    } finally {
      n.close();
    }
  });
}
