/**
 * The firewall benchmark's agent: runs inside a throwaway network namespace (`ip netns exec`), with the
 * real firewall module on libnftables, over an in-memory Kubernetes source holding the synthetic cluster
 * (bench/_firewall_cluster.ts). Prints one JSON line of measurements.
 *
 *   deno run -A bench/_firewall_agent.ts '{"namespaces":100,"pods":5000,"localPods":110,"policies":1000}' SAMPLES
 */
import type { V1NetworkPolicy } from "@kubernetes/client-node";
import { Agent, Bus, getLogger, loadConfig, MemorySink } from "../core/mod.ts";
import type { ModuleDefinition } from "../core/mod.ts";
import { Nftables, ProcSysctl } from "../ffi/mod.ts";
import { Firewall, firewallModule } from "../modules/firewall/mod.ts";
import { MapSource } from "../tests/unit/firewall/_fixtures.ts";
import { type ClusterSize, makeCluster, makePod } from "./_firewall_cluster.ts";

const size = JSON.parse(Deno.args[0] ?? "{}") as ClusterSize;
const samples = Number(Deno.args[1] ?? "50");
const cluster = makeCluster(size);
const bus = new Bus();
const source = new MapSource(bus);
source.put("nodes", { metadata: { name: "n1" }, spec: { podCIDRs: ["10.0.0.0/8"] } });
for (const ns of cluster.namespaces) source.put("namespaces", ns);
for (const p of cluster.pods) source.put("pods", p);
for (const p of cluster.policies) source.put("networkpolicies", p);

const nft = new Nftables();
let fw: Firewall | undefined;
const def: ModuleDefinition = {
  ...firewallModule,
  create: (ctx) => fw = new Firewall(ctx, { nft, sysctl: new ProcSysctl() }),
};
const config = loadConfig([
  "--hostname-override=n1",
  "--run-router=false",
  "--run-service-proxy=false",
  "--health-port=0",
  "--iptables-sync-period=1h",
]);
const agent = new Agent({ config, bus, source, log: getLogger({}, new MemorySink()), modules: [def] });

const settled = async () => {
  while (!fw?.settled) await new Promise((r) => setTimeout(r, 0));
};
const phasesP50 = (xs: { compileMs: number; renderMs: number; applyMs: number }[]) => ({
  compileMs: pct(xs.map((p) => p.compileMs), 50),
  renderMs: pct(xs.map((p) => p.renderMs), 50),
  applyMs: pct(xs.map((p) => p.applyMs), 50),
});
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
};

const t0 = performance.now();
await agent.start();
await settled();
const firstSyncMs = performance.now() - t0;
const firstOps = fw!.lastSync?.operations ?? 0;

// A full resync of the same state (what the periodic sync does).
const full: number[] = [];
for (let i = 0; i < 3; i++) {
  const t = performance.now();
  fw!.requestFullSync();
  await settled();
  full.push(performance.now() - t);
}

// A new local pod, selected by policies, from its event to its rules in the kernel.
const podMs: number[] = [];
const phases: { compileMs: number; renderMs: number; applyMs: number }[] = [];
for (let i = 0; i < samples; i++) {
  const pod = makePod(`ns${i % size.namespaces}`, 900_000 + i, true, `app${i % 20}`);
  const t = performance.now();
  source.put("pods", pod);
  await settled();
  podMs.push(performance.now() - t);
  phases.push(fw!.lastSync!);
}
// A new policy, from its event to enforcement.
const policyMs: number[] = [];
const policyPhases: { compileMs: number; renderMs: number; applyMs: number }[] = [];
for (let i = 0; i < Math.min(samples, 30); i++) {
  const pol = {
    metadata: { namespace: `ns${i % size.namespaces}`, name: `bench-${i}` },
    spec: {
      podSelector: { matchLabels: { app: `app${i % 20}` } },
      ingress: [{
        from: [{ namespaceSelector: { matchLabels: { team: `t${i % 10}` } } }],
        ports: [{ port: 8080 }],
      }],
    },
  } as unknown as V1NetworkPolicy;
  const t = performance.now();
  source.put("networkpolicies", pol);
  await settled();
  policyMs.push(performance.now() - t);
  policyPhases.push(fw!.lastSync!);
}
// The floor any event pays on this table: one element added (and one removed) in one libnftables
// transaction, which reads every chain and set of the ruleset back first.
const floorMs: number[] = [];
for (let i = 0; i < 30; i++) {
  const t = performance.now();
  await nft.runBuffer(
    `add element inet kube_router_firewall local-pods-v4 { 10.255.255.${i + 1} }\n` +
      (i > 0 ? `delete element inet kube_router_firewall local-pods-v4 { 10.255.255.${i} }\n` : ""),
    { json: false },
  );
  floorMs.push(performance.now() - t);
}
await nft.runBuffer("delete element inet kube_router_firewall local-pods-v4 { 10.255.255.30 }\n", {
  json: false,
});
const listing = await nft.runBuffer("list table inet kube_router_firewall", { json: false });
await Deno.writeTextFile(`/tmp/krt-bench-firewall-${Deno.pid}.nft`, listing);
const rssMb = Deno.memoryUsage().rss / 1048576;
const table = {
  chains: (listing.match(/^\tchain /gm) ?? []).length,
  sets: (listing.match(/^\t(set|map) /gm) ?? []).length,
};
await agent.stop();
console.log(JSON.stringify({
  firstSyncMs,
  firstOps,
  fullMs: full,
  podP50: pct(podMs, 50),
  podP99: pct(podMs, 99),
  policyP50: pct(policyMs, 50),
  policyP99: pct(policyMs, 99),
  rssMb,
  rulesetFile: `/tmp/krt-bench-firewall-${Deno.pid}.nft`,
  isolated: fw!.isolatedPods,
  podPhasesP50: phasesP50(phases),
  policyPhasesP50: phasesP50(policyPhases),
  floorP50: pct(floorMs, 50),
  floorP99: pct(floorMs, 99),
  table,
}));
Deno.exit(0);
