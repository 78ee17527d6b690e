/**
 * The IPVS conformance suite against the kernel's IPVS, run by the VM tier inside its guest (listed in
 * tests/vm/vm_test.ts; this file's name keeps `deno test tests/` on the host from picking it up). The
 * guest is a throwaway machine, so the cases use its own namespace, flushed and reset between cases.
 */
import { IpvsNetlink } from "../../../ffi/mod.ts";
import { ipvsCases } from "../../unit/ffi/_ipvs_conformance.ts";

if (Deno.env.get("KRT_IN_VM") !== "1") {
  throw new Error(
    "tests/vm/ffi/ipvs_guest.ts changes the IPVS state of its namespace: it runs only in the VM tier",
  );
}

for (const c of ipvsCases) {
  Deno.test(`the kernel's IPVS conforms: ${c.name}`, async () => {
    const ipvs = new IpvsNetlink();
    try {
      await ipvs.flush();
      await ipvs.setTimeouts({ tcp: 900, tcpFin: 120, udp: 300 });
      await c.fn(ipvs);
    } finally {
      await ipvs.flush().catch(() => {});
      ipvs.close();
    }
  });
}
