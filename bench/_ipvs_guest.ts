/**
 * The guest side of bench/ipvs.ts: runs inside the VM tier's guest (a Debian 6.1 kernel under qemu TCG,
 * tests/vm/_vm.ts), where IPVS exists, and prints one JSON object on stdout. Progress goes to stderr (the
 * guest's console).
 *
 * Every measurement runs in a fresh network namespace (IPVS state is per namespace): after a flush the
 * kernel keeps deleted destinations in its "dest trash" for up to two minutes and scans that list on every
 * destination added, so re-programming 100,000 destinations right after a flush would measure the trash
 * scan, not the programming. The ffi variants and the backend run in a child Deno process started with
 * `ip netns exec` (`--mode=…`; setns through FFI would move only one thread), timed inside it.
 *
 * (i) programming: `--services` TCP services × `--dests` destinations, all at once, into an empty IPVS:
 *     ours = `IpvsNetlink.apply` (many messages per sendto, no ACK each), and for information the same
 *     through one single call per change (a request and its ACK each); reference = `ipvsadm --restore`
 *     of the same set, timed around the child process (its start, ~ms, included). Rounds alternate.
 * (ii) one endpoint change through the IPVS backend's sync path: IpvsProxy on the real IPVS, nftables,
 *     rtnetlink, sysctl and conntrack over an in-memory Kubernetes holding the same number of ClusterIP
 *     Services with `--dests` endpoints each; after the cold sync, `--changes` EndpointSlice updates each
 *     replace one endpoint of one Service with a fresh address. Per change: the sync's own duration (the
 *     runner's sync function, start to end) and event to synced (put to the sync's end). Reference in the
 *     same run: the kernel work of that change done raw (`apply` of the delete + add) and `ipvsadm -d` +
 *     `ipvsadm -a` (two processes, as a shell script would do it), and `ipvsadm -e` alone.
 */
import { parseArgs } from "node:util";
import type { V1EndpointSlice, V1Node, V1Service } from "@kubernetes/client-node";
import { Bus } from "../core/bus.ts";
import { loadConfig } from "../core/config.ts";
import { getLogger, MemorySink } from "../core/log.ts";
import {
  Conntrack,
  IpvsNetlink,
  type IpvsOp,
  type IpvsServiceKey,
  Nftables,
  ProcSysctl,
  Rtnetlink,
} from "../ffi/mod.ts";
import { IpvsProxy } from "../modules/proxy/mod.ts";
import { MemorySource, moduleContext } from "../tests/_support/kube_source.ts";
import { benchService, benchSlice } from "./_service_objects.ts";

const { values } = parseArgs({
  options: {
    services: { type: "string", default: "10000" },
    dests: { type: "string", default: "10" },
    rounds: { type: "string", default: "3" },
    changes: { type: "string", default: "50" },
    /** Skip the one-call-per-change variant of (i) (slow under TCG). */
    "no-single": { type: "boolean", default: false },
    /** Internal: what a child process in a namespace does (program-batch, program-single, backend, check). */
    mode: { type: "string", default: "" },
  },
});
const MODE = values.mode!;
const N = Number(values.services);
const M = Number(values.dests);
const ROUNDS = Number(values.rounds);
const CHANGES = Number(values.changes);

if (Deno.env.get("KRT_IN_VM") !== "1") {
  throw new Error("bench/_ipvs_guest.ts flushes IPVS and reconfigures the node: it runs only in the VM");
}

const progress = (s: string) => console.error(`ipvs-bench: ${s}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const vip = (i: number) => `10.96.${i >> 8}.${i & 255}`;
/** The n-th endpoint address overall (10.128.0.0/10 holds millions). */
const epIp = (n: number) => `10.${128 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`;
const key = (i: number): IpvsServiceKey => ({ family: 4, protocol: "tcp", address: vip(i), port: 80 });

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}
const median = (xs: number[]) => quantile(xs, 0.5);

async function sh(cmd: string[], stdin?: string): Promise<number> {
  const t0 = performance.now();
  const child = new Deno.Command(cmd[0]!, {
    args: cmd.slice(1),
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const ms = performance.now() - t0;
  if (!out.success) throw new Error(`${cmd.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  return ms;
}

/**
 * Checks what IPVS holds: the number of services (one listing), and the destinations of every 100th service
 * (listing all 10,000 one by one under TCG would take longer than the programming being checked).
 */
async function check(what: string, ipvs: IpvsNetlink): Promise<void> {
  const services = await ipvs.services();
  if (services.length !== N) throw new Error(`${what} left ${services.length} services, not ${N}`);
  for (let i = 0; i < N; i += 100) {
    const got = (await ipvs.destinations(key(i))).map((d) => d.address).sort();
    const want = Array.from({ length: M }, (_, j) => epIp(i * M + j)).sort();
    if (got.join() !== want.join()) throw new Error(`${what}: ${vip(i)} has ${got.join(",")}`);
  }
}

function programOps(): IpvsOp[] {
  const ops: IpvsOp[] = [];
  for (let i = 0; i < N; i++) {
    ops.push({ op: "addService", service: { ...key(i), scheduler: "rr" } });
    for (let j = 0; j < M; j++) {
      const d = { address: epIp(i * M + j), port: 8080, forward: "masq" as const, weight: 1 };
      ops.push({ op: "addDestination", service: key(i), destination: d });
    }
  }
  return ops;
}

/** Child, in its namespace: programs the set through ffi and prints the time in ms. */
async function programChild(batch: boolean): Promise<void> {
  const ipvs = new IpvsNetlink();
  const ops = programOps();
  const t0 = performance.now();
  if (batch) {
    const failures = await ipvs.apply(ops);
    if (failures.length) throw new Error(`apply: ${failures.length} failures, first ${failures[0]!.error}`);
  } else {
    for (const o of ops) {
      if (o.op === "addService") await ipvs.addService(o.service);
      else if (o.op === "addDestination") await ipvs.addDestination(o.service, o.destination);
    }
  }
  const ms = performance.now() - t0;
  await check(batch ? "ffi apply" : "ffi single calls", ipvs);
  ipvs.close();
  console.log(JSON.stringify({ ms }));
}

let nsCount = 0;
/** Runs `f` with a fresh namespace, deleted afterwards (and a pause while the kernel frees its IPVS). */
async function inFreshNs<T>(f: (ns: string) => Promise<T>): Promise<T> {
  const ns = `ipvsbench${nsCount++}`;
  await sh(["ip", "netns", "add", ns]);
  await sh(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"]);
  try {
    return await f(ns);
  } finally {
    await sh(["ip", "netns", "del", ns]);
    await sleep(3000);
  }
}

/** Runs this script in `ns` in another mode; returns its last stdout line as JSON. */
async function child<T>(ns: string, mode: string): Promise<T> {
  const out = await new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      ns,
      Deno.execPath(),
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      `--mode=${mode}`,
      `--services=${N}`,
      `--dests=${M}`,
      `--changes=${CHANGES}`,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success) throw new Error(`mode ${mode} exited ${out.code}: ${text}`);
  return JSON.parse(text.split("\n").at(-1)!) as T;
}

async function programRounds(): Promise<Record<string, number[]>> {
  const restore: string[] = [];
  for (let i = 0; i < N; i++) {
    restore.push(`-A -t ${vip(i)}:80 -s rr`);
    for (let j = 0; j < M; j++) restore.push(`-a -t ${vip(i)}:80 -r ${epIp(i * M + j)}:8080 -m -w 1`);
  }
  const restoreText = restore.join("\n") + "\n";
  const program = { ffiBatch: [] as number[], ipvsadmRestore: [] as number[], ffiSingle: [] as number[] };
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? ["ipvsadm", "ffi"] : ["ffi", "ipvsadm"];
    for (const which of order) {
      await inFreshNs(async (ns) => {
        if (which === "ffi") {
          const { ms } = await child<{ ms: number }>(ns, "program-batch");
          program.ffiBatch.push(ms);
          progress(`round ${r}: ffi apply ${ms.toFixed(0)} ms`);
        } else {
          const ms = await sh(["ip", "netns", "exec", ns, "ipvsadm", "-R"], restoreText);
          program.ipvsadmRestore.push(ms);
          progress(`round ${r}: ipvsadm -R ${ms.toFixed(0)} ms`);
          if (r === 0) await child(ns, "check");
        }
      });
    }
  }
  if (!values["no-single"]) {
    await inFreshNs(async (ns) => {
      const { ms } = await child<{ ms: number }>(ns, "program-single");
      program.ffiSingle.push(ms);
      progress(`ffi one call per change ${ms.toFixed(0)} ms`);
    });
  }
  return program;
}

// ---------------------------------------------------------------- (ii) one endpoint change via the backend
const node: V1Node = {
  metadata: { name: "guest" },
  spec: { podCIDR: "10.1.1.0/24", podCIDRs: ["10.1.1.0/24"] },
  status: { addresses: [{ type: "InternalIP", address: "192.168.77.1" }] },
};
function service(i: number): V1Service {
  return benchService(i, vip(i));
}
function slice(i: number, addresses: string[], v: number): V1EndpointSlice {
  return benchSlice(
    i,
    v,
    addresses.map((a) => ({ addresses: [a], conditions: { ready: true }, nodeName: "other" })),
  );
}

/** Child, in its namespace: the backend's cold sync, then the endpoint changes and their references. */
async function backendChild(): Promise<void> {
  const ipvs = new IpvsNetlink();
  const logSink = new MemorySink();
  const source = new MemorySource(new Bus(), { synced: false });
  const t = moduleContext({
    config: loadConfig([
      "--hostname-override=guest",
      "--service-cluster-ip-range=10.96.0.0/12",
      "--service-proxy-backend=ipvs",
    ]),
    source,
    log: getLogger({}, logSink),
    // The periodic full resync (--ipvs-sync-period) stays out of the window.
    periodMs: 3_600_000,
  });
  /** Every sync of the backend: its reason, start, duration and outcome, and a waiter for one to end. */
  const syncs: { reason: string; start: number; ms: number; end: number; error?: unknown }[] = [];
  let syncEnded: (() => void) | undefined;
  const runner = t.ctx.runner;
  t.ctx.runner = (o) =>
    runner({
      ...o,
      sync: async (reason) => {
        const t0 = performance.now();
        let error: unknown;
        try {
          await o.sync(reason);
        } catch (err) {
          error = err;
          throw err;
        } finally {
          const end = performance.now();
          syncs.push({ reason, start: t0, ms: end - t0, end, ...(error ? { error } : {}) });
          syncEnded?.();
        }
      },
    });
  /** The first sync that starts at or after `t0`, once it has ended; a failed one fails the benchmark. */
  const syncFrom = async (t0: number) => {
    for (;;) {
      const s = syncs.find((x) => x.start >= t0);
      if (s) {
        if (s.error) {
          throw new Error(`a ${s.reason} sync failed: ${s.error}\n${logSink.lines.slice(-20).join("\n")}`);
        }
        return s;
      }
      await new Promise<void>((r) => syncEnded = r);
    }
  };

  const deps = { ipvs, nft: new Nftables(), rtnl: new Rtnetlink(), conntrack: new Conntrack() };
  // Where the backend's time goes: each kernel-facing call timed, per object and method.
  const spent = new Map<string, { calls: number; ms: number }>();
  const timed = <T extends object>(name: string, o: T): T =>
    new Proxy(o, {
      get(target, prop) {
        const v = Reflect.get(target, prop, target);
        if (typeof v !== "function") return v;
        return async (...args: unknown[]) => {
          const t0 = performance.now();
          try {
            return await v.apply(target, args);
          } finally {
            const k = `${name}.${String(prop)}`;
            const e = spent.get(k) ?? { calls: 0, ms: 0 };
            e.calls++;
            e.ms += performance.now() - t0;
            spent.set(k, e);
          }
        };
      },
    });
  const breakdown = () => {
    const out = Object.fromEntries([...spent].map(([k, v]) => [k, { calls: v.calls, ms: Math.round(v.ms) }]));
    spent.clear();
    return out;
  };
  const proxy = new IpvsProxy(t.ctx, {
    ipvs: timed("ipvs", ipvs),
    nft: timed("nft", deps.nft),
    rtnl: timed("rtnl", deps.rtnl),
    conntrack: timed("conntrack", deps.conntrack),
    sysctl: timed("sysctl", new ProcSysctl()),
    serveHealthChecks: false,
  });
  source.start(["services", "endpointslices", "nodes"]);
  await proxy.start();
  source.put("nodes", node);
  const endpoints: string[][] = [];
  for (let i = 0; i < N; i++) {
    endpoints.push(Array.from({ length: M }, (_, j) => epIp(i * M + j)));
    source.put("services", service(i));
    source.put("endpointslices", slice(i, endpoints[i]!, 1));
  }
  progress(`cold sync of ${N} Services through IpvsProxy`);
  const cold0 = performance.now();
  source.markSynced();
  await syncFrom(cold0);
  const coldMs = performance.now() - cold0;
  await check("the backend's cold sync", ipvs);
  const coldBreakdown = breakdown();
  progress(`cold sync ${coldMs.toFixed(0)} ms: ${JSON.stringify(coldBreakdown)}`);
  await sleep(500);

  const change = { syncMs: [] as number[], eventMs: [] as number[], reasons: new Set<string>() };
  let fresh = N * M;
  for (let c = 0; c < CHANGES; c++) {
    const i = (c * 7919) % N;
    const j = c % M;
    const old = endpoints[i]![j]!;
    const now = epIp(fresh++);
    endpoints[i]![j] = now;
    const t0 = performance.now();
    source.put("endpointslices", slice(i, endpoints[i]!, c + 2));
    const s = await syncFrom(t0);
    change.eventMs.push(s.end - t0);
    change.syncMs.push(s.ms);
    change.reasons.add(s.reason);
    const have = new Set((await ipvs.destinations(key(i))).map((d) => d.address));
    if (!have.has(now) || have.has(old) || have.size !== M) {
      throw new Error(
        `change ${c}: service ${vip(i)} has ${[...have].join(",")} after a ${s.reason} sync ` +
          `(syncs ${t.syncs.ok} ok, ${t.syncs.failed} failed: ${t.syncs.lastError})\n${
            logSink.lines.join("\n")
          }`,
      );
    }
    // Past the runner's minimum interval between syncs (100 ms), so the next change is not held back.
    await sleep(150);
  }
  const changeBreakdown = breakdown();
  progress(`changes: sync p50 ${median(change.syncMs).toFixed(1)} ms: ${JSON.stringify(changeBreakdown)}`);

  // References in the same run: the same kernel change raw, and with ipvsadm.
  const ref = { rawApply: [] as number[], ipvsadmDelAdd: [] as number[], ipvsadmEdit: [] as number[] };
  for (let c = 0; c < CHANGES; c++) {
    const i = (c * 7919 + 13) % N;
    const j = c % M;
    const old = endpoints[i]![j]!;
    const now = epIp(fresh++);
    endpoints[i]![j] = now;
    const t0 = performance.now();
    const f = await ipvs.apply([
      { op: "delDestination", service: key(i), destination: { address: old, port: 8080 } },
      { op: "addDestination", service: key(i), destination: { address: now, port: 8080, weight: 1 } },
    ]);
    ref.rawApply.push(performance.now() - t0);
    if (f.length) throw new Error(`raw apply: ${f[0]!.error}`);
    const newer = epIp(fresh++);
    const d0 = performance.now();
    await sh(["ipvsadm", "-d", "-t", `${vip(i)}:80`, "-r", `${now}:8080`]);
    await sh(["ipvsadm", "-a", "-t", `${vip(i)}:80`, "-r", `${newer}:8080`, "-m", "-w", "1"]);
    ref.ipvsadmDelAdd.push(performance.now() - d0);
    endpoints[i]![j] = newer;
    ref.ipvsadmEdit.push(
      await sh([
        "ipvsadm",
        "-e",
        "-t",
        `${vip(i)}:80`,
        "-r",
        `${newer}:8080`,
        "-m",
        "-w",
        String(2 + (c % 2)),
      ]),
    );
  }

  await proxy.stop();
  await t.stop();
  deps.nft.close();
  deps.rtnl.close();
  deps.conntrack.close();
  ipvs.close();
  console.log(
    JSON.stringify({
      cold: { ms: coldMs, breakdown: coldBreakdown },
      change: { ...change, reasons: [...change.reasons], breakdown: changeBreakdown },
      ref,
    }),
  );
}

if (MODE === "program-batch") await programChild(true);
else if (MODE === "program-single") await programChild(false);
else if (MODE === "backend") await backendChild();
else if (MODE === "check") {
  const ipvs = new IpvsNetlink();
  await check("ipvsadm -R", ipvs);
  ipvs.close();
  console.log("{}");
} else {
  const program = await programRounds();
  const backend = await inFreshNs((ns) =>
    child<{ cold: { ms: number }; change: Record<string, unknown>; ref: Record<string, number[]> }>(
      ns,
      "backend",
    )
  );
  const uname = new TextDecoder().decode((await new Deno.Command("uname", { args: ["-r"] }).output()).stdout);
  console.log(
    JSON.stringify({ kernel: uname.trim(), services: N, dests: M, rounds: ROUNDS, program, ...backend }),
  );
}
