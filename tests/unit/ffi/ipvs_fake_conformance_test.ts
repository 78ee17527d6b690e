import { FakeIpvs } from "../../../ffi/mod.ts";
import { ipvsCases } from "./_ipvs_conformance.ts";

// The same cases run against the kernel's IPVS in the VM tier: tests/vm/ffi/ipvs_guest.ts.
for (const c of ipvsCases) {
  Deno.test(`FakeIpvs conforms: ${c.name}`, async () => {
    const ipvs = new FakeIpvs();
    try {
      await c.fn(ipvs);
    } finally {
      ipvs.close();
    }
  });
}
