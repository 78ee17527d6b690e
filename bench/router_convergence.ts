/**
 * Router convergence: N nodes (network namespaces on one underlay bridge, the same harness the router's
 * integration tests use), one agent each (router only) against a lab API server. From the moment every
 * agent process is spawned until every node holds a proto-17 route to every other node's pod CIDR;
 * then CPU time and RSS per agent, and their idle CPU over the following 10 s.
 *
 *   deno run -A bench/router_convergence.ts [--nodes 10]
 */
import { parseArgs } from "node:util";
import { NetNs, sweepStaleNamespaces } from "../tests/_support/netns.ts";
import { TestCluster } from "../tests/integration/router/_cluster.ts";

const { values } = parseArgs({ options: { nodes: { type: "string", default: "10" } } });
const n = Number(values.nodes);
const ticks = 100; // USER_HZ on Linux

function procStats(pid: number): { cpuMs: number; rssMiB: number } {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const cpuMs = (Number(fields[11]) + Number(fields[12])) * 1000 / ticks;
  const rss = /VmRSS:\s+(\d+) kB/.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
  return { cpuMs, rssMiB: Number(rss?.[1] ?? 0) / 1024 };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

await sweepStaleNamespaces();
const spaces: NetNs[] = [];
let c: TestCluster | undefined;
try {
  for (const tag of ["ul", ...Array.from({ length: n }, (_, i) => `b${i + 1}`)]) {
    spaces.push(await NetNs.create(tag));
  }
  c = await TestCluster.start(
    await Deno.makeTempDir({ prefix: "krt-bench-conv-" }),
    spaces[0]!,
    spaces.slice(1),
  );
  const t0 = performance.now();
  const agents = Array.from({ length: n }, (_, i) => c!.startAgent(i));
  await c.waitConverged(120_000);
  const convergeMs = performance.now() - t0;
  const convergedAt = Date.now();
  // When each agent logged "starting" (flags parsed, modules about to start): Deno start-up excluded.
  const startedAt = agents.map((a) => Date.parse(/^(\S+) INFO {2}starting /m.exec(a.log)?.[1] ?? ""));
  const afterLastStart = convergedAt - Math.max(...startedAt);
  const atConverge = agents.map((a) => procStats(a.child.pid));
  await new Promise((r) => setTimeout(r, 10_000));
  const later = agents.map((a) => procStats(a.child.pid));
  const idlePct = later.map((s, i) => (s.cpuMs - atConverge[i]!.cpuMs) / 10_000 * 100);

  const row = (m: string, ours: string) => `| ${m} | ${ours} | — | — | |`;
  const md = [
    `## Router: ${n}-node convergence`,
    "",
    "| measure | ours | reference | ratio | target |",
    "| --- | --- | --- | --- | --- |",
    row(`time from agents spawned to full mesh of routes, ${n} nodes (s)`, (convergeMs / 1000).toFixed(2)),
    row(
      "time from the last agent's start (its first log line) to full mesh (s)",
      (afterLastStart / 1000).toFixed(2),
    ),
    row(
      "CPU time per agent until converged (s, median / max)",
      `${(median(atConverge.map((s) => s.cpuMs)) / 1000).toFixed(2)} / ${
        (Math.max(...atConverge.map((s) => s.cpuMs)) / 1000).toFixed(2)
      }`,
    ),
    row(
      "RSS per agent after convergence (MiB, median / max)",
      `${median(later.map((s) => s.rssMiB)).toFixed(0)} / ${
        Math.max(...later.map((s) => s.rssMiB)).toFixed(0)
      }`,
    ),
    row(
      "idle CPU per agent over 10 s after convergence (%, median / max)",
      `${median(idlePct).toFixed(2)} / ${Math.max(...idlePct).toFixed(2)}`,
    ),
    "",
    `Measured by bench/router_convergence.ts on ${n} node namespaces on one bridge (the router integration tests'`,
    "harness), each running main.ts with only the router enabled against a lab API server; the time includes",
    "each agent's start-up (Deno, the Kubernetes client, informer sync) on this 2-core machine, with all agents",
    "starting at once. No reference is run: the figure is the issue's N.",
    "",
  ].join("\n");
  console.log(md);
  await Deno.mkdir(new URL("./results", import.meta.url), { recursive: true });
  await Deno.writeTextFile(new URL("./results/router_convergence.md", import.meta.url), md);
} finally {
  await c?.close();
  for (const s of spaces.reverse()) await s.remove();
}
