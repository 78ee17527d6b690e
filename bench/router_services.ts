/**
 * Router CPU under Service churn: 10,000 Services (one EndpointSlice each; every 10th has a Local external
 * IP, announced only while its local endpoint is ready) and 100 EndpointSlice updates per second for 30 s.
 * Measured: the router process's CPU time (user + sys) over the window, the syncs it ran and the kernel
 * reads (address, link and route dumps, sysctl reads) those made. The reference is the router at
 * REFERENCE_REV, the last revision where every Service or EndpointSlice event ran the whole sync; both run
 * in the same invocation, each in its own process in its own throwaway network namespace (real netlink,
 * nftables, sysctl and CNI file), driven by bench/_router_services_agent.ts.
 *
 *   deno run -A bench/router_services.ts [--services 10000] [--rate 100] [--seconds 30] [--rounds 1]
 *                                        [--only ours|reference] [--ref <rev>] [--replay <output file>]
 */
import { parseArgs } from "node:util";
import { NetNs } from "../tests/_support/netns.ts";

/** The router before Service events got their own partial sync (main after the Service model landed). */
export const REFERENCE_REV = "033fe60";

const { values } = parseArgs({
  options: {
    services: { type: "string", default: "10000" },
    rate: { type: "string", default: "100" },
    seconds: { type: "string", default: "30" },
    rounds: { type: "string", default: "1" },
    only: { type: "string" },
    ref: { type: "string", default: REFERENCE_REV },
    replay: { type: "string" },
  },
});
const here = new URL(".", import.meta.url).pathname;
const root = new URL("..", import.meta.url).pathname;

interface Result {
  updates: number;
  wallMs: number;
  cpuMs: number;
  syncs: number;
  failed: number;
  reads: Record<string, number>;
  firstSyncMs: number;
  announced: number;
  bgpEvents: number;
  /** /proc/loadavg's 1-minute figure right after the round (the machine's load while it ran). */
  load?: number;
}

async function extract(rev: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "krt-bench-ref-" });
  const r = await new Deno.Command("sh", {
    args: ["-c", `git -C '${root}' archive '${rev}' | tar -x -C '${dir}'`],
  }).output();
  if (!r.success) throw new Error(`cannot extract ${rev}: ${new TextDecoder().decode(r.stderr)}`);
  return dir;
}

async function measure(tree: string): Promise<Result> {
  const ns = await NetNs.create("rsv");
  const tmp = await Deno.makeTempDir({ prefix: "krt-bench-rsv-" });
  try {
    // A veth pair: this kernel has no dummy driver (ENVIRONMENT.md).
    await ns.exec(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]);
    await ns.exec(["ip", "link", "set", "eth0p", "up"]);
    await ns.exec(["ip", "addr", "add", "192.168.77.1/24", "dev", "eth0"]);
    await ns.exec(["ip", "link", "set", "eth0", "up"]);
    const child = ns.spawn([
      Deno.execPath(),
      "run",
      "--allow-all",
      `--config=${root}deno.json`,
      `${here}_router_services_agent.ts`,
      `--root=${tree}`,
      `--services=${values.services}`,
      `--rate=${values.rate}`,
      `--seconds=${values.seconds}`,
      `--cni=${tmp}/10-kuberouter.conflist`,
    ], { stdout: "piped", stderr: "piped" });
    const out = await child.output();
    const text = new TextDecoder().decode(out.stdout).trim();
    if (!out.success) {
      throw new Error(`agent exited ${out.code}: ${new TextDecoder().decode(out.stderr).slice(-2000)}`);
    }
    const r = JSON.parse(text.split("\n").at(-1)!) as Result;
    r.load = Number((await Deno.readTextFile("/proc/loadavg")).split(" ")[0]);
    return r;
  } finally {
    await ns.remove();
    await Deno.remove(tmp, { recursive: true });
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

const rounds = Number(values.rounds);
const runOurs = values.only !== "reference";
const runRef = values.only !== "ours";
const refTree = runRef && !values.replay ? await extract(values.ref) : undefined;
const ours: Result[] = [];
const ref: Result[] = [];
try {
  if (values.replay) {
    // Re-renders the table from a previous run's output (its "reference {…}" and "ours {…}" lines).
    for (const line of (await Deno.readTextFile(values.replay)).split("\n")) {
      const m = /^(reference|ours) (\{.*\})$/.exec(line);
      if (m) (m[1] === "ours" ? ours : ref).push(JSON.parse(m[2]!) as Result);
    }
  }
  for (let i = 0; i < (values.replay ? 0 : rounds); i++) {
    if (runRef) {
      ref.push(await measure(refTree!));
      console.log("reference", JSON.stringify(ref.at(-1)));
    }
    if (runOurs) {
      ours.push(await measure(root));
      console.log("ours", JSON.stringify(ours.at(-1)));
    }
  }
} finally {
  if (refTree) await Deno.remove(refTree, { recursive: true });
}

const loads = [...ours, ...ref].map((r) => r.load).filter((l): l is number => l !== undefined);
const load = loads.length ? `${Math.min(...loads)} to ${Math.max(...loads)}` : "not recorded";
const cpuS = (rs: Result[]) => rs.length ? median(rs.map((r) => r.cpuMs)) / 1000 : NaN;
const pct = (rs: Result[]) => rs.length ? median(rs.map((r) => r.cpuMs / r.wallMs * 100)) : NaN;
const med = (rs: Result[], f: (r: Result) => number) => rs.length ? median(rs.map(f)) : NaN;
const fmt = (x: number, d = 2) => Number.isNaN(x) ? "—" : x.toFixed(d);
const ratio = (a: number, b: number) =>
  Number.isNaN(a) || Number.isNaN(b) || b === 0 ? "—" : (a / b).toFixed(3);
const range = (rs: Result[]) =>
  rs.length
    ? `${fmt(Math.min(...rs.map((r) => r.cpuMs)) / 1000)} to ${
      fmt(Math.max(...rs.map((r) => r.cpuMs)) / 1000)
    }`
    : "—";
const dumps = (r: Result) => (r.reads.addrList ?? 0) + (r.reads.linkList ?? 0) + (r.reads.routeList ?? 0);

const rows: [string, number, number, number][] = [
  ["router CPU time over the window (s, user + sys)", cpuS(ours), cpuS(ref), 2],
  ["router CPU (% of one core)", pct(ours), pct(ref), 1],
  ["syncs run", med(ours, (r) => r.syncs), med(ref, (r) => r.syncs), 0],
  [
    "whole syncs among them (one address dump each)",
    med(ours, (r) => r.reads.addrList ?? 0),
    med(ref, (r) => r.reads.addrList ?? 0),
    0,
  ],
  ["kernel dumps (address + link + route lists)", med(ours, dumps), med(ref, dumps), 0],
  [
    "BGP events in the window (each asks for a whole sync)",
    med(ours, (r) => r.bgpEvents),
    med(ref, (r) => r.bgpEvents),
    0,
  ],
  ["sysctl reads", med(ours, (r) => r.reads.get ?? 0), med(ref, (r) => r.reads.get ?? 0), 0],
  ["EndpointSlice updates applied", med(ours, (r) => r.updates), med(ref, (r) => r.updates), 0],
  ["first sync with all Services (ms)", med(ours, (r) => r.firstSyncMs), med(ref, (r) => r.firstSyncMs), 0],
];
const md = [
  `## Router: CPU with ${
    Number(values.services).toLocaleString("en")
  } Services and ${values.rate} EndpointSlice updates/s`,
  "",
  "| measure | ours | reference | ratio | target |",
  "| --- | --- | --- | --- | --- |",
  ...rows.map(([m, o, r, d]) =>
    `| ${m} | ${fmt(o, d)} | ${fmt(r, d)} | ${ratio(o, r)} | ${
      m.startsWith("router CPU time") ? "below 1" : ""
    } |`
  ),
  "",
  `Measured by bench/router_services.ts over ${values.seconds} s (median of ${
    Math.max(ours.length, ref.length)
  } round(s) each, alternating),`,
  "each router in its own process in a throwaway network namespace with real netlink, nftables, sysctl and a",
  "CNI conf file, over the in-memory Kubernetes source (tests/_support/kube_source.ts); one external BGP peer",
  "configured (never established, so no per-peer export cost on either side). The reference is the router at",
  `revision ${values.ref}, where every Service or EndpointSlice event ran the whole sync. Every 10th Service`,
  "has a Local external IP whose announcement follows its local endpoint's readiness, so updates change VIPs.",
  "BGP events (here the unreachable external peer's connection attempts) still run the whole sync; the syncs",
  "EndpointSlice changes ask for are partial.",
  "The reference's CPU is bounded by how many whole syncs fit in the window (they run back to back, each",
  `costing ${fmt(med(ref, (r) => r.cpuMs / Math.max(1, r.syncs)), 0)} ms of CPU here), so it varies with the`,
  `machine's load, and the ratio with it: per round, ours ${range(ours)} s, reference ${range(ref)} s.`,
  `The machine was shared with other work while this ran (1-minute load average ${load} after the rounds, on 2 cores): CPU time is less`,
  "sensitive to that than wall time, but the figures are indicative.",
  "",
].join("\n");
console.log(md);
await Deno.mkdir(new URL("./results", import.meta.url), { recursive: true });
await Deno.writeTextFile(new URL("./results/router_services.md", import.meta.url), md);
