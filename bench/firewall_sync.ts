/**
 * The firewall at the issue's size: 1,000 NetworkPolicies and 5,000 pods cluster-wide (110 on this node),
 * in a throwaway network namespace with real nftables (libnftables in-process), driven by
 * bench/_firewall_agent.ts. Measured: the first sync (compile, render, one transaction), a full resync,
 * a new local pod's event to its rules in the kernel (p50/p99), a new policy's event to enforcement
 * (p50/p99), and the agent's RSS. Reference for the sync: `nft -f` of the very table the agent built
 * (the kernel's own floor for loading that ruleset, process start included). Reference for the event
 * latencies: the same agent's libnftables transaction adding one element to that table (the floor any
 * event pays, libnftables' read-back of the table's chains and sets included).
 *
 *   deno run -A bench/firewall_sync.ts [--samples 50]
 */
import { parseArgs } from "node:util";
import { NetNs } from "../tests/_support/netns.ts";
import { median, timeCmd, writeResult } from "./_ffi_support.ts";
import { DEFAULT_SIZE } from "./_firewall_cluster.ts";

const { values } = parseArgs({ options: { samples: { type: "string", default: "50" } } });
const here = new URL(".", import.meta.url).pathname;

const ns = await NetNs.create("fwbench");
let result: Record<string, unknown>;
let nftMs: number[] = [];
try {
  const out = await ns.exec([
    Deno.execPath(),
    "run",
    "-A",
    `${here}_firewall_agent.ts`,
    JSON.stringify(DEFAULT_SIZE),
    values.samples!,
  ]);
  result = JSON.parse(out.stdout.trim().split("\n").pop()!);
  // The reference: load the same table with nft -f into a fresh namespace, three times.
  const file = String(result.rulesetFile);
  for (let i = 0; i < 3; i++) {
    const ref = await NetNs.create("fwbref");
    try {
      nftMs.push(await timeCmd(["ip", "netns", "exec", ref.name, "nft", "-f", file]));
    } finally {
      await ref.remove();
    }
  }
  await Deno.remove(file).catch(() => {});
} finally {
  await ns.remove();
}
const load = (await Deno.readTextFile("/proc/loadavg")).split(" ").slice(0, 3).join(" ");
const r = result as {
  firstSyncMs: number;
  firstOps: number;
  fullMs: number[];
  podP50: number;
  podP99: number;
  policyP50: number;
  policyP99: number;
  rssMb: number;
  isolated: { ingress: number; egress: number };
  podPhasesP50: { compileMs: number; renderMs: number; applyMs: number };
  policyPhasesP50: { compileMs: number; renderMs: number; applyMs: number };
  floorP50: number;
  floorP99: number;
  table: { chains: number; sets: number };
};
nftMs = nftMs.sort((a, b) => a - b);
const f = (n: number) => n.toFixed(0);
const f1 = (n: number) => n.toFixed(1);
const md = [
  "## Firewall: 1,000 policies, 5,000 pods (110 on this node)",
  "",
  "| measure | ours | reference | ratio | target |",
  "| --- | --- | --- | --- | --- |",
  `| first sync: compile, render, one transaction (ms) | ${f(r.firstSyncMs)} | ${f(median(nftMs))} | ${
    (r.firstSyncMs / median(nftMs)).toFixed(2)
  } | under 1000 |`,
  `| full resync of the same state (ms, median of 3) | ${f(median(r.fullMs))} | ${f(median(nftMs))} | ${
    (median(r.fullMs) / median(nftMs)).toFixed(2)
  } | under 1000 |`,
  `| new local pod: event to rules in the kernel, p50 (ms) | ${f(r.podP50)} | ${f1(r.floorP50)} | ${
    (r.podP50 / r.floorP50).toFixed(1)
  } |  |`,
  `| new local pod: event to rules in the kernel, p99 (ms) | ${f(r.podP99)} | ${f1(r.floorP99)} | ${
    (r.podP99 / r.floorP99).toFixed(1)
  } | under 100 |`,
  `| new policy: event to enforcement, p50 (ms) | ${f(r.policyP50)} | ${f1(r.floorP50)} | ${
    (r.policyP50 / r.floorP50).toFixed(1)
  } |  |`,
  `| new policy: event to enforcement, p99 (ms) | ${f(r.policyP99)} | ${f1(r.floorP99)} | ${
    (r.policyP99 / r.floorP99).toFixed(1)
  } | under 250 |`,
  `| agent RSS after the run (MB) | ${f(r.rssMb)} |  |  | report |`,
  "",
  `Measured by bench/firewall_sync.ts: the agent (firewall module only, libnftables in-process) in a throwaway`,
  `network namespace over an in-memory Kubernetes source holding the synthetic cluster of`,
  `bench/_firewall_cluster.ts (100 namespaces; policies mix pod, namespace and combined selectors, ipBlock`,
  `with except, named ports, endPort and egress rules); ${r.isolated.ingress} local pods isolated for ingress,`,
  `${r.isolated.egress} for egress; the first transaction had ${r.firstOps} operations. Reference: \`nft -f\``,
  `of the table the agent built, into a fresh namespace (process start included; median of 3). Reference for`,
  `the event latencies: one libnftables transaction adding an element to that table, in the same agent`,
  `(p50 and p99 of 30): the floor every event pays, libnftables reading back the table's ${r.table.chains}`,
  `chains and ${r.table.sets} sets first. Per new pod (p50): state update and render ${
    f1(r.podPhasesP50.compileMs)
  } ms, diff ${f1(r.podPhasesP50.renderMs)} ms, apply ${f1(r.podPhasesP50.applyMs)} ms; per new policy: ${
    f1(r.policyPhasesP50.compileMs)
  }, ${f1(r.policyPhasesP50.renderMs)} and ${f1(r.policyPhasesP50.applyMs)} ms.`,
  `${values.samples} pod samples, 30 policy samples. The machine was shared with other work while this ran`,
  `(load average ${load} on 2 cores): latencies are inflated accordingly and indicative only.`,
  "",
].join("\n");
await writeResult("firewall_sync", md);
console.log(md);
