/**
 * The process side of bench/proxy_scale.ts, run inside a throwaway network namespace: one service proxy
 * (ServiceProxy with real nftables through libnftables and real conntrack) over an in-memory Kubernetes
 * holding `--services` ClusterIP Services with `--endpoints` endpoints each. It reports on stdout, one
 * JSON line per phase (`{"phase": …}`), and waits for the parent's go-ahead files in `--dir`:
 *
 *   synced   the cold full sync: from the initial lists being complete (markSynced) to the first sync
 *            done, with the process's RSS and peak RSS then;
 *   (file `events`) `--events` EndpointSlice updates, one every `--event-ms`, each replacing one endpoint
 *            of one Service with a fresh address; a line `ev <n> <address> <wall ms>` when each is
 *            published (the parent times it to the kernel with `nft monitor`); the text of every
 *            transaction applied from then on goes to `<dir>/events.nft`, separated by `# tx <n>` lines;
 *   (file `idle`) the CPU time (user + sys) the process used over `--idle-seconds` with no API event;
 *   ruleset  the whole ruleset as one transaction's text in `<dir>/ruleset.nft` (what `nft -f` applies
 *            for the reference), rendered after the cold sync is measured, before any update;
 *   (file `resync`) one periodic full resync (the sync the runner starts every `--period-ms`, here asked
 *            for at once): its wall time, CPU (the child `nft` processes it waited for included) and the
 *            agent's peak RSS during it (VmHWM reset just before, through /proc/self/clear_refs);
 *   (file `stop`) exits.
 *
 * Service 0 is the probe Service of the connect() benchmark: cluster IP `--probe-vip`, endpoints
 * `--probe-endpoints` (real servers); the others' endpoints are addresses nothing answers on.
 */
import { parseArgs } from "node:util";
import type { V1EndpointSlice, V1Node, V1Service } from "@kubernetes/client-node";
import { Bus } from "../core/bus.ts";
import type { ModuleContext } from "../core/mod.ts";
import { loadConfig } from "../core/config.ts";
import { getLogger, MemorySink } from "../core/log.ts";
import { Conntrack, Nftables, type NftRunOptions, NftSetCounters, NftTransaction } from "../ffi/mod.ts";
import {
  addDeferred,
  diffService,
  nodeContext,
  PROXY_NFT_OPTIONS,
  PROXY_TABLE,
  renderBase,
  ServiceProxy,
  SharedObjects,
} from "../modules/proxy/mod.ts";
import { MemorySource, moduleContext } from "../tests/_support/kube_source.ts";
import { benchService, benchSlice } from "./_service_objects.ts";

const { values } = parseArgs({
  options: {
    services: { type: "string", default: "10000" },
    endpoints: { type: "string", default: "10" },
    events: { type: "string", default: "0" },
    "event-ms": { type: "string", default: "150" },
    "idle-seconds": { type: "string", default: "60" },
    "probe-vip": { type: "string", default: "10.100.0.1" },
    "probe-endpoints": { type: "string", default: "" },
    dir: { type: "string" },
    /** Nftables' outOfProcessAboveBytes: larger transactions go to a child `nft -f -` (default: the module's). */
    "out-of-process-above": { type: "string" },
    /** ProxyDeps.chunkOps: the largest transaction, in operations (default: the module's). */
    "chunk-ops": { type: "string" },
    /**
     * The periodic full resync (the agent's --ipvs-sync-period, 5 min): kept out of the measurements
     * by default (1 h); a full resync lists the whole table back, reported apart.
     */
    "period-ms": { type: "string", default: "3600000" },
    /** Wait for the file `resync` after the idle phase and measure one periodic full resync. */
    resync: { type: "boolean", default: false },
    /**
     * "on": the per-Service counters (what --metrics-port turns on: counting rules and three counted
     * elements per VIP and port), read once after the cold sync (phase "scrape") and every `--scrape-ms`
     * while idle, as Prometheus would.
     */
    counters: { type: "string", default: "off" },
    "scrape-ms": { type: "string", default: "15000" },
  },
});
const counters = values.counters === "on";
const N = Number(values.services);
const E = Number(values.endpoints);
const dir = values.dir!;

const TICKS = 100; // USER_HZ
/** CPU time (user + sys) of this process and of its children it waited for (the `nft -f -` it ran). */
function cpuMs(): number {
  const stat = Deno.readTextFileSync("/proc/self/stat");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * 1000 / TICKS;
}
/** VmRSS and VmHWM (peak) of this process and V8's heap (used, reserved) and external memory, in MiB. */
function rss(): Record<string, number> {
  const s = Deno.readTextFileSync("/proc/self/status");
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, "m").exec(s)?.[1] ?? NaN);
  const m = Deno.memoryUsage();
  return {
    rssMiB: kb("VmRSS") / 1024,
    peakMiB: kb("VmHWM") / 1024,
    heapUsedMiB: m.heapUsed / 2 ** 20,
    heapTotalMiB: m.heapTotal / 2 ** 20,
    externalMiB: m.external / 2 ** 20,
  };
}
const wall = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
async function waitFile(name: string): Promise<void> {
  for (;;) {
    try {
      await Deno.stat(`${dir}/${name}`);
      return;
    } catch {
      await sleep(50);
    }
  }
}
const emit = (o: Record<string, unknown>) => console.log(JSON.stringify(o));

/** The n-th endpoint address overall (10.128.0.0/15 holds 131,072 of them). */
const epIp = (n: number) => `10.${128 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`;
const probeEndpoints = values["probe-endpoints"] ? values["probe-endpoints"].split(",") : [];

function service(i: number): V1Service {
  return benchService(i, i === 0 ? values["probe-vip"]! : `10.96.${i >> 8}.${i & 255}`);
}

function slice(i: number, addresses: string[], v: number): V1EndpointSlice {
  return benchSlice(
    i,
    v,
    addresses.map((a, j) => ({
      addresses: [a],
      nodeName: j % 2 ? "n2" : "n1",
      conditions: { ready: true, serving: true, terminating: false },
    })),
  );
}

const node = (name: string, n: number, ip: string): V1Node => ({
  metadata: { name, labels: {} },
  spec: { podCIDR: `10.1.${n}.0/24`, podCIDRs: [`10.1.${n}.0/24`] },
  status: { addresses: [{ type: "InternalIP", address: ip }] },
});

const config = loadConfig([
  "--hostname-override=n1",
  "--run-router=false",
  "--run-firewall=false",
  "--run-service-proxy=true",
  // The agent serves no metrics here; the port only turns the per-Service counters on.
  ...(counters ? ["--metrics-port=20249"] : []),
]);

// As the module makes it (modules/proxy/mod.ts), unless the command line says otherwise.
const nft = new Nftables(
  values["out-of-process-above"]
    ? { outOfProcessAboveBytes: Number(values["out-of-process-above"]) }
    : PROXY_NFT_OPTIONS,
);
let record: string[] | undefined;
const deps = {
  nft: {
    run: async (tx: NftTransaction, opts?: NftRunOptions) => {
      const q0 = performance.now();
      await nft.run(tx, opts);
      if (Deno.env.get("KRT_BENCH_TRACE")) {
        console.error(`tx ${tx.size} ops ${(performance.now() - q0).toFixed(1)} ms`);
        if (Deno.env.get("KRT_BENCH_TRACE") === "2") console.error(tx.render().slice(0, 1500));
      }
      // After the commit, so recording never delays the kernel seeing the change.
      record?.push(tx.render());
    },
    list: nft.list.bind(nft),
    listLayout: nft.listLayout.bind(nft),
    listElements: nft.listElements.bind(nft),
  },
  conntrack: new Conntrack(),
  // As the module builds it (modules/proxy/mod.ts): counters read over netlink.
  setCounters: new NftSetCounters(),
  serveHealthChecks: false,
  ...(values["chunk-ops"] ? { chunkOps: Number(values["chunk-ops"]) } : {}),
};

const bus = new Bus();
const source = new MemorySource(bus, { synced: false });
const t = moduleContext({
  config,
  source,
  log: getLogger({}, new MemorySink()),
  periodMs: Number(values["period-ms"]),
});
/** Set to make the module's next sync a periodic one (what its runner's period timer would start). */
let forcePeriodic = false;
const ctx: ModuleContext = {
  ...t.ctx,
  runner: (o) =>
    t.ctx.runner({
      ...o,
      sync: (reason) => {
        const r = forcePeriodic ? "periodic" : reason;
        forcePeriodic = false;
        return o.sync(r);
      },
    }),
};
const proxy = new ServiceProxy(ctx, deps);
await proxy.start();
source.put("nodes", node("n1", 1, "192.168.77.1"));
source.put("nodes", node("n2", 2, "192.168.77.2"));
const addrs: string[][] = [];
for (let i = 0; i < N; i++) {
  addrs.push(
    i === 0 && probeEndpoints.length ? probeEndpoints : Array.from({ length: E }, (_, j) => epIp(i * E + j)),
  );
  source.put("services", service(i));
  source.put("endpointslices", slice(i, addrs[i]!, 1));
}
const t0 = performance.now();
const cpu0 = cpuMs();
source.markSynced();
while (t.syncs.ok + t.syncs.failed === 0) await sleep(5);
if (t.syncs.failed) throw new Error(`first sync failed: ${t.syncs.lastError}`);
const coldMs = performance.now() - t0;
const coldCpuMs = cpuMs() - cpu0;
emit({
  phase: "synced",
  services: N,
  endpoints: E,
  coldMs,
  coldCpuMs,
  programmed: proxy.programmed.size,
  ...rss(),
});

// The reference's text: the whole ruleset as the cold sync writes it (base, then every Service's chains,
// rules and elements from scratch, element additions grouped by map as the proxy's chunks group them), one
// file that `nft -f` applies as one transaction, rendered once the cold sync is measured and before any
// update (the state the reference's replay of the updates starts from). Written a few thousand Services
// at a time, so rendering it grows the agent (whose RSS is measured) as little as possible.
const nctx = nodeContext(config, source.list("nodes"));
const file = await Deno.open(`${dir}/ruleset.nft`, { write: true, create: true, truncate: true });
const enc = new TextEncoder();
const head = new NftTransaction("inet", PROXY_TABLE);
renderBase(head, nctx);
await file.write(enc.encode(head.render()));
let operations = head.size;
const shared = new SharedObjects();
const kernelElements = new Map<string, string>();
const services = [...proxy.programmed.values()];
for (let i = 0; i < services.length; i += 2000) {
  const part = new NftTransaction("inet", PROXY_TABLE);
  const adds: string[] = [];
  for (const r of services.slice(i, i + 2000)) {
    diffService(part, undefined, r, { rewrite: true, kernelElements, shared, deferAdds: adds });
  }
  addDeferred(part, adds);
  await file.write(enc.encode(part.render()));
  operations += part.size;
}
file.close();
// That text is the benchmark's, not the agent's: its garbage is collected at once (the agent runs with
// --expose-gc) so it does not weigh on the RSS measured after the events.
(globalThis as { gc?: () => void }).gc?.();
emit({ phase: "ruleset", operations });

const events = Number(values.events);
if (events > 0) {
  await waitFile("events");
  record = [];
  const every = Number(values["event-ms"]);
  const version = new Map<number, number>();
  for (let e = 0; e < events; e++) {
    const i = 1 + (e * 7919) % (N - 1);
    const fresh = `10.250.${e >> 8}.${e & 255}`;
    addrs[i]![e % addrs[i]!.length] = fresh;
    const v = (version.get(i) ?? 1) + 1;
    version.set(i, v);
    console.log(`ev ${e} ${fresh} ${wall().toFixed(3)}`);
    source.put("endpointslices", slice(i, addrs[i]!, v));
    await sleep(every);
  }
  // Until the last update is programmed (syncs coalesce updates that come while one runs), then the
  // second after which unused chains are deleted.
  const lastKey = `bench/svc-${1 + ((events - 1) * 7919) % (N - 1)}`;
  const lastIp = `10.250.${(events - 1) >> 8}.${(events - 1) & 255}`;
  const programmed = () =>
    [...(proxy.programmed.get(lastKey)?.elements.values() ?? [])].some((v) => v.startsWith(`${lastIp} . `));
  while (!programmed()) await sleep(50);
  await sleep(1500);
  const texts = record;
  record = undefined;
  await Deno.writeTextFile(`${dir}/events.nft`, texts.map((x, n) => `# tx ${n}\n${x}`).join("\n"));
  emit({
    phase: "events",
    events,
    syncs: t.syncs.ok,
    failed: t.syncs.failed,
    transactions: texts.length,
    ...rss(),
  });
}

if (counters) {
  // Scrapes' readings of the counted sets at this size: the first (code not yet compiled) and the third
  // (warm), a reading interval apart (a scrape within 1 s of the last reuses it).
  const readings: { wallMs: number; cpuMs: number }[] = [];
  let text = "";
  for (let i = 0; i < 3; i++) {
    if (i) await sleep(1100);
    const c = cpuMs(), w = performance.now();
    await t.ctx.metrics.collect();
    text = t.ctx.metrics.render();
    readings.push({ wallMs: performance.now() - w, cpuMs: cpuMs() - c });
  }
  emit({
    phase: "scrape",
    firstWallMs: readings[0]!.wallMs,
    firstCpuMs: readings[0]!.cpuMs,
    wallMs: readings[2]!.wallMs,
    cpuMs: readings[2]!.cpuMs,
    series: text.split("\n").filter((l) => l.startsWith("kube_router_service_packets_in{")).length,
    ...rss(),
  });
}

await waitFile("idle");
const seconds = Number(values["idle-seconds"]);
const c0 = cpuMs();
const w0 = performance.now();
const s0 = t.syncs.ok;
const scrapeMs = Number(values["scrape-ms"]);
const scraper = counters && scrapeMs > 0
  ? setInterval(() => void t.ctx.metrics.collect(), scrapeMs)
  : undefined;
await sleep(seconds * 1000);
clearInterval(scraper);
emit({
  phase: "idle",
  cpuMs: cpuMs() - c0,
  wallMs: performance.now() - w0,
  syncs: t.syncs.ok - s0,
  ...rss(),
});

if (values["resync"]) {
  await waitFile("resync");
  // Peak RSS from here on: writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+).
  Deno.writeTextFileSync("/proc/self/clear_refs", "5");
  const before = rss();
  const s1 = t.syncs.ok + t.syncs.failed;
  const r0 = performance.now();
  const rc0 = cpuMs();
  forcePeriodic = true;
  t.runners[0]!.run();
  while (t.syncs.ok + t.syncs.failed === s1) await sleep(5);
  const resyncMs = performance.now() - r0;
  const resyncCpuMs = cpuMs() - rc0;
  emit({
    phase: "resync",
    resyncMs,
    resyncCpuMs,
    failed: t.syncs.failed,
    programmed: proxy.programmed.size,
    rssBeforeMiB: before.rssMiB,
    ...rss(),
  });
}

await waitFile("stop");
await proxy.stop();
await t.stop();
Deno.exit(0);
