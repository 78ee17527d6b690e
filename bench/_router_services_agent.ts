/**
 * The process side of bench/router_services.ts, run inside a throwaway network namespace: one router
 * (real netlink, nftables, sysctl and CNI file; BGP speaker with one configured external peer) over an
 * in-memory Kubernetes holding `--services` Services with one EndpointSlice each. After the first sync it
 * changes `--rate` EndpointSlices per second for `--seconds` and prints one JSON line: the process's CPU
 * time (user + sys) over that window, the syncs the router ran, and the kernel reads they made.
 *
 * `--root` is the tree the router is loaded from: the working tree, or the reference revision's tree
 * extracted by the parent, so both are measured in the same run by the same driver.
 */
import { parseArgs } from "node:util";
import type { V1EndpointSlice, V1Node, V1Service } from "@kubernetes/client-node";
import { Bus } from "../core/bus.ts";
import { getLogger, MemorySink } from "../core/log.ts";
import { MemorySource, moduleContext } from "../tests/_support/kube_source.ts";
import { benchSlice } from "./_service_objects.ts";

const { values } = parseArgs({
  options: {
    root: { type: "string" },
    services: { type: "string", default: "10000" },
    rate: { type: "string", default: "100" },
    seconds: { type: "string", default: "30" },
    cni: { type: "string" },
  },
});
const root = new URL(values.root ? `file://${values.root.replace(/\/?$/, "/")}` : "../", import.meta.url);
const N = Number(values.services);
const RATE = Number(values.rate);
const SECONDS = Number(values.seconds);

// deno-lint-ignore no-explicit-any
type Any = any;
const { Router } = await import(new URL("modules/router/mod.ts", root).href) as Any;
const ffi = await import(new URL("ffi/mod.ts", root).href) as Any;
const { loadConfig } = await import(new URL("core/config.ts", root).href) as Any;

const TICKS = 100; // USER_HZ
function cpuMs(): number {
  const stat = Deno.readTextFileSync("/proc/self/stat");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) * 1000 / TICKS;
}

/** Counts calls of the named methods on an object (the kernel reads a sync makes). */
function counted<T extends object>(obj: T, names: string[], counts: Record<string, number>): T {
  for (const n of names) {
    const o = obj as Record<string, unknown>;
    const f = o[n] as (...a: unknown[]) => unknown;
    counts[n] = 0;
    o[n] = (...a: unknown[]) => {
      counts[n]!++;
      return f.apply(obj, a);
    };
  }
  return obj;
}

const node: V1Node = {
  metadata: { name: "n1", labels: {} },
  spec: { podCIDR: "10.1.1.0/24", podCIDRs: ["10.1.1.0/24"] },
  status: { addresses: [{ type: "InternalIP", address: "192.168.77.1" }] },
};

/** Service i: a cluster IP, and every 10th one a Local external IP (announced only with a local endpoint). */
function service(i: number): V1Service {
  const local = i % 10 === 0;
  return {
    metadata: { namespace: "bench", name: `svc-${i}`, uid: `u${i}` },
    spec: {
      clusterIP: `10.96.${i >> 8}.${i & 255}`,
      clusterIPs: [`10.96.${i >> 8}.${i & 255}`],
      ports: [{ name: "http", port: 80, protocol: "TCP" }],
      ...(local
        ? { externalIPs: [`172.20.${i >> 8}.${i & 255}`], externalTrafficPolicy: "Local", type: "NodePort" }
        : {}),
    },
  };
}

/** Slice of service i, version v: two endpoints, the local one ready on even versions. */
function slice(i: number, v: number): V1EndpointSlice {
  return benchSlice(i, v, [
    { addresses: [`10.1.1.${(i % 250) + 2}`], nodeName: "n1", conditions: { ready: v % 2 === 0 } },
    { addresses: [`10.1.2.${(i % 250) + 2}`], nodeName: "n2", conditions: { ready: true } },
  ]);
}

const config = loadConfig([
  "--hostname-override=n1",
  "--run-service-proxy=false",
  "--run-firewall=false",
  "--bgp-admin-port=0",
  "--peer-router-ips=192.168.77.254",
  "--peer-router-asns=65000",
  "--advertise-cluster-ip",
  "--advertise-external-ip",
  ...(values.cni ? [] : ["--enable-cni=false"]),
]);
if (values.cni) config.cniConfFile = values.cni;

const reads: Record<string, number> = {};
const rtnl = counted(new ffi.Rtnetlink(), ["addrList", "linkList", "routeList"], reads);
const sysctl = counted(new ffi.ProcSysctl(), ["get"], reads);
const deps = { rtnl, nft: new ffi.Nftables(), sysctl, fdb: new ffi.NetlinkFdb() };

const bus = new Bus();
const source = new MemorySource(bus, { synced: false });
const t = moduleContext({ config, source, log: getLogger({}, new MemorySink()) });
const router = new Router(t.ctx, deps);
await router.start();
source.put("nodes", node);
for (let i = 0; i < N; i++) {
  source.put("services", service(i));
  source.put("endpointslices", slice(i, 0));
}
const tLoad = performance.now();
source.markSynced();
while (t.syncs.ok + t.syncs.failed === 0) await new Promise((r) => setTimeout(r, 20));
if (t.syncs.failed) throw new Error(`first sync failed: ${t.syncs.lastError}`);
const firstSyncMs = performance.now() - tLoad;
// Let anything the first sync started settle.
await new Promise((r) => setTimeout(r, 1000));

// BGP events ask for the whole sync; counted to tell those apart from the syncs slice updates ask for.
let bgpEvents = 0;
router.speaker?.subscribe(() => void bgpEvents++);
const version = new Array<number>(N).fill(0);
const before = { cpu: cpuMs(), syncs: t.syncs.ok + t.syncs.failed, reads: { ...reads } };
const t0 = performance.now();
let updates = 0;
let next = 0;
const total = RATE * SECONDS;
while (updates < total) {
  // Catch up to the rate whatever the timer's lateness: updates due = elapsed × rate (a sync that blocks
  // the process delays them; the window then runs longer than `--seconds`, with the same updates).
  const due = Math.min(total, Math.floor((performance.now() - t0) / 1000 * RATE));
  while (updates < due) {
    const i = next;
    next = (next + 7919) % N; // spread over the Services
    source.put("endpointslices", slice(i, ++version[i]!));
    updates++;
  }
  await new Promise((r) => setTimeout(r, 5));
}
const wallMs = performance.now() - t0;
// Syncs the last updates asked for finish inside the window's accounting.
await new Promise((r) => setTimeout(r, 500));
const cpu = cpuMs() - before.cpu;
const delta = Object.fromEntries(Object.entries(reads).map(([k, v]) => [k, v - (before.reads[k] ?? 0)]));
const announced = router.speaker?.routes("ipv4-unicast").length ?? 0;
console.log(JSON.stringify({
  services: N,
  rate: RATE,
  seconds: SECONDS,
  updates,
  wallMs,
  cpuMs: cpu,
  syncs: t.syncs.ok + t.syncs.failed - before.syncs,
  failed: t.syncs.failed,
  reads: delta,
  firstSyncMs,
  announced,
  bgpEvents,
}));
await t.stop();
await router.stop();
Deno.exit(0);
