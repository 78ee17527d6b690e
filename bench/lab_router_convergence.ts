/**
 * Router convergence in the lab: `labUp()` of 10 nodes with agents (router, firewall and service proxy
 * on, as `deno task lab up` runs them), timed from the moment the lab reports it is starting the agents
 * until every node has a `proto 17` route to every other node's pod CIDR via that node; also from the
 * moment every agent's /healthz answers. Then CPU time and RSS of each agent process (from /proc/<pid>/stat
 * and /proc/<pid>/status) at convergence, and their CPU over the 5 s after. Three rounds; the median is
 * reported. One more round with `--external-router gobgp` times how long a real gobgpd outside the cluster
 * takes to learn all 10 pod CIDRs from the same agents, as a point of comparison.
 *
 *   deno run -A bench/lab_router_convergence.ts [--nodes 10] [--rounds 3]
 *     → bench/results/lab_router_convergence.md
 */
import { parseArgs } from "node:util";
import {
  type ExternalRouterKind,
  externalRouterRoutes,
  labDown,
  labUp,
  podCidrForIndex,
  topology,
} from "../lab/mod.ts";

const { values } = parseArgs({
  options: { nodes: { type: "string", default: "10" }, rounds: { type: "string", default: "3" } },
});
const N = Number(values.nodes);
const ROUNDS = Number(values.rounds);
const TICKS = 100; // USER_HZ

function procStats(pid: number): { cpuS: number; rssMiB: number } {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields 14 and 15 (utime, stime) are at 11 and 12 once pid and comm are cut off.
  const cpuS = (Number(f[11]) + Number(f[12])) / TICKS;
  const rss = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return { cpuS, rssMiB: Number(rss?.[1] ?? 0) / 1024 };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const max = (xs: number[]) => Math.max(...xs);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function routesOf(netns: string): Promise<Set<string>> {
  const out = await new Deno.Command("ip", {
    args: ["-n", netns, "-j", "route", "show", "proto", "17"],
    stdout: "piped",
    stderr: "null",
  }).output();
  const txt = new TextDecoder().decode(out.stdout).trim();
  return new Set(
    (JSON.parse(txt || "[]") as Array<{ dst: string; gateway?: string }>).map((r) =>
      `${r.dst} via ${r.gateway}`
    ),
  );
}

interface Round {
  fromStartS: number;
  fromHealthyS: number;
  cpuS: number[];
  rssMiB: number[];
  idlePct: number[];
  externalS?: number;
}

async function round(externalRouter?: ExternalRouterKind): Promise<Round> {
  const id = crypto.randomUUID().slice(0, 6);
  const where = { stateDir: Deno.makeTempDirSync({ prefix: "krl-bench-conv-" }), prefix: `krlb${id}-` };
  const topo = topology(N, where.prefix);
  let tStart = 0;
  let tHealthy = 0;
  let started: (() => void) | undefined;
  const startedP = new Promise<void>((r) => (started = r));
  try {
    const upP = labUp({
      ...where,
      nodes: N,
      ...(externalRouter ? { externalRouter } : {}),
      say: (l) => {
        if (l.startsWith("starting ") && l.includes("agent(s)")) {
          tStart = performance.now();
          started!();
        }
        if (l.startsWith("every agent answers")) tHealthy = performance.now();
      },
    });
    upP.catch(() => started!());
    await startedP;
    const converged = new Array<number>(N).fill(0);
    let externalAt = 0;
    const deadline = performance.now() + 120_000;
    while (performance.now() < deadline) {
      await Promise.all(topo.nodes.map(async (h, i) => {
        if (converged[i]) return;
        const have = await routesOf(h.netns);
        if (topo.nodes.every((o, j) => j === i || have.has(`${podCidrForIndex(j + 1)} via ${o.ip}`))) {
          converged[i] = performance.now();
        }
      }));
      if (converged.every(Boolean)) break;
      await sleep(100);
    }
    const st = await upP;
    if (!converged.every(Boolean)) throw new Error("no full mesh within 120 s");
    const doneAt = max(converged);
    if (externalRouter) {
      while (performance.now() < deadline) {
        const learned = new Set((await externalRouterRoutes(st.externalRouter!)).map((r) => r.prefix));
        if (topo.nodes.every((_, j) => learned.has(podCidrForIndex(j + 1)))) {
          externalAt = performance.now();
          break;
        }
        await sleep(100);
      }
    }
    const pids = st.processes.filter((p) => p.role === "agent").map((p) => p.pid);
    const at = pids.map(procStats);
    await sleep(5000);
    const later = pids.map(procStats);
    return {
      fromStartS: (doneAt - tStart) / 1000,
      fromHealthyS: Math.max(0, doneAt - tHealthy) / 1000,
      cpuS: at.map((s) => s.cpuS),
      rssMiB: at.map((s) => s.rssMiB),
      idlePct: later.map((s, i) => (s.cpuS - at[i]!.cpuS) / 5 * 100),
      ...(externalRouter ? { externalS: (externalAt - tStart) / 1000 } : {}),
    };
  } finally {
    await labDown(where);
  }
}

const rounds: Round[] = [];
for (let i = 0; i < ROUNDS; i++) {
  const r = await round();
  console.log(
    `round ${i + 1}: full mesh ${r.fromStartS.toFixed(2)} s after agents started ` +
      `(${r.fromHealthyS.toFixed(2)} s after healthy); CPU median ${median(r.cpuS).toFixed(2)} s, ` +
      `RSS median ${median(r.rssMiB).toFixed(0)} MiB`,
  );
  rounds.push(r);
}
const ext = await round("gobgp");
console.log(
  `with gobgpd: full mesh ${ext.fromStartS.toFixed(2)} s, gobgpd has all pod CIDRs ${
    ext.externalS?.toFixed(2)
  } s`,
);

const pick = (f: (r: Round) => number) => median(rounds.map(f));
const cpuAll = rounds.flatMap((r) => r.cpuS);
const rssAll = rounds.flatMap((r) => r.rssMiB);
const idleAll = rounds.flatMap((r) => r.idlePct);
const row = (m: string, ours: string, ref = "—", ratio = "—", target = "") =>
  `| ${m} | ${ours} | ${ref} | ${ratio} | ${target} |`;
const fromStart = pick((r) => r.fromStartS);
const md = [
  `## Lab: router convergence, ${N} nodes`,
  "",
  "| measure | ours | reference | ratio | target |",
  "| --- | --- | --- | --- | --- |",
  row(
    `\`lab up\` reports agents starting → every node routes every other pod CIDR (s, median of ${ROUNDS})`,
    fromStart.toFixed(2),
    "—",
    "—",
    "< 30 s",
  ),
  row("every agent /healthz 200 → full mesh (s, median)", pick((r) => r.fromHealthyS).toFixed(2)),
  row(
    "agents starting → external gobgpd has all pod CIDRs (s, one round with --external-router gobgp)",
    (ext.externalS ?? NaN).toFixed(2),
    `${ext.fromStartS.toFixed(2)} (full mesh in that round)`,
    ((ext.externalS ?? NaN) / ext.fromStartS).toFixed(2),
  ),
  row(
    "CPU time per agent until converged (s, median / max)",
    `${median(cpuAll).toFixed(2)} / ${max(cpuAll).toFixed(2)}`,
  ),
  row(
    "RSS per agent at convergence (MiB, median / max)",
    `${median(rssAll).toFixed(0)} / ${max(rssAll).toFixed(0)}`,
    "—",
    "—",
    "< 256 MiB",
  ),
  row(
    "CPU per agent over 5 s after convergence (%, median / max)",
    `${median(idleAll).toFixed(1)} / ${max(idleAll).toFixed(1)}`,
  ),
  "",
  `Measured by bench/lab_router_convergence.ts: \`labUp()\` of ${N} nodes with agents (router, firewall, proxy), ` +
  'polling `ip -j route show proto 17` in every node every 100 ms from the lab\'s "starting agents" line ' +
  "(so Deno start-up, informer sync and BGP sessions are all inside the figure, with all agents starting at once " +
  "on 2 cores); CPU (utime+stime) and VmRSS of each agent from /proc at convergence. No reference " +
  "implementation is run; the gobgpd row compares when an external router learns the routes with when the " +
  "nodes do.",
  "",
].join("\n");
await Deno.mkdir(new URL("./results", import.meta.url), { recursive: true });
await Deno.writeTextFile(new URL("./results/lab_router_convergence.md", import.meta.url), md);
console.log(md);
