import { FakeNftables, FakeRtnetlink } from "../../../ffi/mod.ts";
import { type Case, nftCases, rtnlCases } from "./_conformance.ts";

// The same cases run against the real kernel in tests/integration/ffi/kernel_conformance_test.ts.
function conforms<T extends { close(): void }>(title: string, cases: Case<T>[], open: () => T): void {
  for (const c of cases) {
    Deno.test(`${title} conforms: ${c.name}`, async () => {
      const impl = open();
      try {
        await c.fn(impl);
      } finally {
        impl.close();
      }
    });
  }
}

conforms("FakeRtnetlink", rtnlCases, () => new FakeRtnetlink());
conforms("FakeNftables", nftCases, () => new FakeNftables());
