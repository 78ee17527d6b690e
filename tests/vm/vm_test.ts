/**
 * The VM tier's host side: one boot of a Debian 6.1 kernel under qemu runs every guest test below, and each
 * test the guest ran becomes a step here, passing or failing with the guest's own message. A guest test
 * that skipped fails its step: these tests are here because the guest kernel has what they need, so a skip
 * inside the VM means the tier is broken, not that the test does not apply.
 *
 * `deno task test:vm` runs only this file; `KRT_VM_ONLY=substring` narrows the plan to matching files.
 */
import { needs } from "../_support/netns.ts";
import assert from "node:assert/strict";
import { type GuestTest, runGuest, VM_TOOLS, VmError } from "./_vm.ts";

/** Every test file (and filter) the guest runs, in order. */
export const GUEST_TESTS: GuestTest[] = [
  // Skipped on this machine's kernel (no dummy, no ipip module); run for real here.
  { file: "tests/integration/ffi/rtnetlink_test.ts", filter: "/rtnetlink creates a (dummy|ipip) link/" },
  // main.ts's IPVS preflight where IPVS exists (on this machine's kernel the same test sees exit code 2).
  { file: "tests/integration/core/main_process_test.ts", filter: "ipvs is checked before start" },
  // The IPVS conformance suite (tests/unit/ffi/_ipvs_conformance.ts) against the kernel's IPVS.
  { file: "tests/vm/ffi/ipvs_guest.ts" },
  // The service proxy's IPVS backend with real traffic between namespaces (issue 13): the Service semantics
  // cases the nftables backend passes on the host, case for case, then schedulers, graceful termination,
  // IPVS counters and --cleanup-config.
  { file: "tests/vm/proxy/ipvs_cases_guest.ts" },
  // Direct server return (kube-router.io/service.dsr=tunnel): pods answer the client themselves; fallback to NAT.
  { file: "tests/vm/proxy/dsr_guest.ts" },
  // IPIP and FoU overlay tunnels between two nodes in different subnets, then --cleanup-config.
  { file: "tests/vm/router/overlay_guest.ts" },
  // SCTP (absent from this machine's kernel) through the NetworkPolicy firewall and the nftables proxy.
  { file: "tests/vm/sctp_guest.ts" },
];

const only = Deno.env.get("KRT_VM_ONLY");
const plan = only ? GUEST_TESTS.filter((t) => t.file.includes(only)) : GUEST_TESTS;

Deno.test({
  ...needs("the guest kernel boots under qemu and runs the VM-tier tests", { tools: VM_TOOLS }),
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async (t) => {
    const run = await runGuest(plan, { log: (s) => console.log(`vm: ${s}`) });
    console.log(
      `vm: kernel ${run.kernel}, ${plan.length} test files, booted in ${run.bootSeconds.toFixed(1)} s, ` +
        `finished in ${run.totalSeconds.toFixed(1)} s`,
    );
    const failures: string[] = [];
    for (const [i, entry] of plan.entries()) {
      const mine = run.results.filter((r) => r.file === entry.file);
      const label = `${entry.file}${entry.filter ? ` (${entry.filter})` : ""}`;
      if (mine.length === 0) {
        failures.push(`${label}: the guest ran no test (exit code ${run.exitCodes[i]})`);
      } else if (run.exitCodes[i] !== 0 && !mine.some((r) => r.status === "failed")) {
        failures.push(`${label}: deno test exited ${run.exitCodes[i]} in the guest without a failed test`);
      }
      for (const r of mine) {
        const ok = await t.step(`[vm] ${r.name}`, () => {
          if (r.status === "failed") throw new Error(`failed in the VM:\n${r.message}`);
          if (r.status === "skipped") throw new Error("skipped in the VM, where it must run");
        });
        if (!ok) failures.push(`${entry.file}: ${r.name}`);
      }
    }
    if (failures.length) {
      const tail = run.console.split("\n").slice(-40).join("\n");
      throw new Error(
        `VM tier failures:\n${failures.join("\n")}\n--- guest console (last lines) ---\n${tail}`,
      );
    }
  },
});

Deno.test({
  ...needs("a guest that does not finish in time fails the tier with the console's tail, never passes", {
    tools: VM_TOOLS,
  }),
  fn: async () => {
    await assert.rejects(
      () => runGuest(plan, { timeoutMs: 1500 }),
      (e: unknown) => e instanceof VmError && /did not finish within 1\.5 s/.test(e.message),
    );
  },
});
