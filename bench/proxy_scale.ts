/**
 * The service proxy at scale, five figures each beside a reference measured in the same run, on real
 * nftables in throwaway network namespaces:
 *
 *   (a) cold full sync of `--services` Services × `--endpoints` endpoints, from the initial lists being
 *       complete to the kernel holding all of it; reference: `nft -f` applying the same ruleset text (the
 *       proxy's renderer, every Service from scratch, as one file) in a fresh namespace;
 *   (b) p50/p99 from an EndpointSlice event to the kernel holding the change (heard on the nftables
 *       netlink notifications in the agent's namespace, bench/_nft_watch.ts), one update every
 *       `--event-ms`; reference: the same transactions applied in order through libnftables to the
 *       reference namespace's copy of the ruleset (the kernel's and libnftables' floor);
 *   (c) the agent's RSS (current and peak) with everything programmed; reference: the same harness with
 *       `--small` Services;
 *   (d) connect() latency through a cluster IP: real TCP connects from a client namespace to a server
 *       namespace through the DNAT of the agent's node namespace, with `--services` programmed vs a second
 *       node namespace whose agent holds `--small`; batches alternate between the two;
 *   (e) CPU time of each agent over `--idle-seconds` with no API event (the connect() traffic of (d) runs
 *       meanwhile: packets cost the agent nothing, the kernel handles them);
 *   (f) one periodic full resync of the big agent (what its runner starts every sync period: the kernel's
 *       table read back and compared, every chain rewritten), after (b) to (e) so it falls in none of their
 *       windows, with a few elements deleted by hand just before that it must put back: its wall time, CPU
 *       (the child nft it waits for included) and the agent's peak RSS during it; reference: the cold sync
 *       of the same run.
 *
 * Each agent is bench/_proxy_agent.ts (ServiceProxy over the in-memory Kubernetes source), started with the
 * V8 flags of `deno task start`.
 *
 *   deno run -A bench/proxy_scale.ts [--services 10000] [--endpoints 10] [--small 100] [--events 100] [--replay 20]
 *                                    [--event-ms 150] [--idle-seconds 60] [--rounds 20] [--batch 50]
 */
import { parseArgs } from "node:util";
import { linkVeth, NetNs } from "../tests/_support/netns.ts";
import { AGENT_V8_FLAGS } from "../core/mod.ts";

const { values } = parseArgs({
  options: {
    services: { type: "string", default: "10000" },
    endpoints: { type: "string", default: "10" },
    small: { type: "string", default: "100" },
    events: { type: "string", default: "100" },
    replay: { type: "string", default: "20" },
    "event-ms": { type: "string", default: "150" },
    "idle-seconds": { type: "string", default: "60" },
    rounds: { type: "string", default: "20" },
    batch: { type: "string", default: "50" },
    /**
     * "on" (default): both agents run as with --metrics-port, the per-Service counters in the ruleset (one
     * counted lookup per packet before DNAT, one on replies) and read every `--scrape-ms` while idle; "off":
     * without them, as before they existed.
     */
    counters: { type: "string", default: "on" },
    "scrape-ms": { type: "string", default: "15000" },
  },
});
const here = new URL(".", import.meta.url).pathname;
const root = new URL("..", import.meta.url).pathname;
const N = Number(values.services);
const SMALL = Number(values.small);
const fmtN = (n: number) => n.toLocaleString("en");

/** Lines of a child's stdout, as they come. */
async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buf = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      yield buf.slice(0, nl);
      buf = buf.slice(nl + 1);
    }
  }
  if (buf) yield buf;
}

/** An agent child and its JSON phase lines (`ev` lines go to onEvent). */
function startAgent(ns: NetNs, args: string[], onEvent?: (line: string) => void) {
  const child = new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      ns.name,
      Deno.execPath(),
      "run",
      "--allow-all",
      `--v8-flags=${AGENT_V8_FLAGS}`,
      `--config=${root}deno.json`,
      `${here}_proxy_agent.ts`,
      ...args,
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const phases = new Map<string, Record<string, number>>();
  const waiters = new Map<string, () => void>();
  const stderr = new Response(child.stderr).text();
  const done = (async () => {
    for await (const l of lines(child.stdout)) {
      if (l.startsWith("ev ")) onEvent?.(l);
      else if (l.startsWith("{")) {
        const o = JSON.parse(l) as Record<string, number> & { phase: string };
        phases.set(o.phase, o);
        waiters.get(o.phase)?.();
      }
    }
  })();
  return {
    child,
    async phase(name: string): Promise<Record<string, number>> {
      if (!phases.has(name)) {
        await Promise.race([
          new Promise<void>((r) => waiters.set(name, r)),
          child.status.then(async (s) => {
            await done;
            if (!phases.has(name)) {
              throw new Error(`agent exited ${s.code} before "${name}": ${(await stderr).slice(-3000)}`);
            }
          }),
        ]);
      }
      return phases.get(name)!;
    },
  };
}

/** `bash`'s `time` of a command: wall and CPU (user + sys) in ms. */
async function timed(ns: NetNs, cmd: string): Promise<{ wallMs: number; cpuMs: number }> {
  const r = await ns.exec(["bash", "-c", `TIMEFORMAT='%R %U %S'; time (${cmd}) 2>&1 >/dev/null`]);
  const [w, u, s] = r.stdout.trim().split("\n").at(-1)!.split(" ").map(Number);
  return { wallMs: w! * 1000, cpuMs: (u! + s!) * 1000 };
}

function pct(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p / 100 * s.length) - 1))]!;
}
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const load = async () => Number((await Deno.readTextFile("/proc/loadavg")).split(" ")[0]);

const made: NetNs[] = [];
const children: Deno.ChildProcess[] = [];
const dirs: string[] = [];
const mk = async (tag: string) => {
  const ns = await NetNs.create(tag);
  made.push(ns);
  return ns;
};
const loads: number[] = [await load()];
try {
  const [big, small, client, server, ref] = [
    await mk("pxbig"),
    await mk("pxsmall"),
    await mk("pxcli"),
    await mk("pxsrv"),
    await mk("pxref"),
  ];
  // client -- node (agent) -- server, once for each agent; the probe Service's endpoints are the server's
  // addresses behind that node.
  const nodes = [{ ns: big, n: 2, vip: "10.100.0.2" }, { ns: small, n: 1, vip: "10.100.0.1" }];
  for (const { ns, n, vip } of nodes) {
    await linkVeth(client, `c${n}`, `10.200.${n}.2/30`, ns, "eth0", `10.200.${n}.1/30`);
    await linkVeth(ns, "eth1", `10.210.${n}.254/24`, server, `s${n}`, `10.210.${n}.1/24`);
    for (let j = 2; j <= 10; j++) {
      await server.exec(["ip", "addr", "add", `10.210.${n}.${j}/24`, "dev", `s${n}`]);
    }
    await ns.exec(["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    await client.exec(["ip", "route", "add", `${vip}/32`, "via", `10.200.${n}.1`]);
  }
  const tmp = await Deno.makeTempDir({ prefix: "krt-bench-proxy-" });
  dirs.push(tmp);
  const bigDir = `${tmp}/big`, smallDir = `${tmp}/small`;
  await Deno.mkdir(bigDir);
  await Deno.mkdir(smallDir);
  const common = [
    `--endpoints=${values.endpoints}`,
    `--idle-seconds=${values["idle-seconds"]}`,
    `--counters=${values.counters}`,
    `--scrape-ms=${values["scrape-ms"]}`,
  ];
  const probe = (n: number) => Array.from({ length: 10 }, (_, j) => `10.210.${n}.${j + 1}`).join(",");

  const events = new Map<string, number>();
  const smallAgent = startAgent(small, [
    ...common,
    `--services=${SMALL}`,
    `--dir=${smallDir}`,
    "--probe-vip=10.100.0.1",
    `--probe-endpoints=${probe(1)}`,
  ]);
  children.push(smallAgent.child);
  const smallSynced = await smallAgent.phase("synced");
  const bigAgent = startAgent(big, [
    ...common,
    "--resync",
    `--services=${N}`,
    `--dir=${bigDir}`,
    `--events=${values.events}`,
    `--event-ms=${values["event-ms"]}`,
    "--probe-vip=10.100.0.2",
    `--probe-endpoints=${probe(2)}`,
  ], (l) => {
    const [, , ip, t] = l.split(" ");
    events.set(ip!, Number(t));
  });
  children.push(bigAgent.child);
  console.log(`starting ${fmtN(N)} Services × ${values.endpoints} endpoints`);
  const synced = await bigAgent.phase("synced");
  loads.push(await load());
  console.log("synced", JSON.stringify(synced));
  // (a) reference, right after the cold sync (the machine's speed drifts over the minutes this runs): the
  // ruleset the agent writes at once after it, applied by `nft -f` in a namespace of its own; measured
  // again at the end, and the nearer of the two in time is the ratio's.
  await bigAgent.phase("ruleset");
  const dump = `${bigDir}/ruleset.nft`;
  const nftNear = await timed(ref, `nft -f ${dump}`);
  await ref.exec(["nft", "flush", "ruleset"]);

  // Every Service is in the kernel's service map.
  const listed = await big.exec(["nft", "list", "map", "inet", "kube_router_proxy", "service_ips_v4"]);
  const vmapEntries = (/elements = \{([^}]*)\}/s.exec(listed.stdout)?.[1] ?? "").split(",")
    .filter((x) => x.includes(":")).length;
  if (vmapEntries !== N) throw new Error(`the kernel holds ${vmapEntries} cluster IPs, expected ${N}`);

  // (b): a netlink listener in the agent's namespace stamps when each change is committed.
  const seen = new Map<string, number>();
  const monitor = new Deno.Command("ip", {
    args: ["netns", "exec", big.name, Deno.execPath(), "run", "--allow-all", `${here}_nft_watch.ts`],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  children.push(monitor);
  let ready: () => void = () => {};
  const monitorReady = new Promise<void>((r) => ready = r);
  let overruns = 0;
  const watching = (async () => {
    for await (const l of lines(monitor.stdout)) {
      if (l === "ready") ready();
      else if (l === "overrun") overruns++;
      else {
        const [ip, at] = l.split(" ");
        seen.set(ip!, Number(at));
      }
    }
  })();
  await monitorReady;
  await Deno.writeTextFile(`${bigDir}/events`, "");
  const evDone = await bigAgent.phase("events");
  loads.push(await load());
  await sleep(500);
  try {
    monitor.kill("SIGTERM");
  } catch { /* gone */ }
  await watching.catch(() => {});
  const latencies: number[] = [];
  let missing = 0;
  for (const [ip, t] of events) {
    const s = seen.get(ip);
    if (s === undefined) missing++;
    else latencies.push(s - t);
  }
  console.log("events", JSON.stringify(evDone), `missing ${missing}`);

  // (d) and (e): both agents idle while the client connects through each node.
  const srv = server.spawn([Deno.execPath(), "run", "--allow-net", `${here}_proxy_connect.ts`, "server"], {
    stdout: "piped",
  });
  children.push(srv);
  const srvLines = lines(srv.stdout);
  if ((await srvLines.next()).value !== "listening") throw new Error("the connect() server did not start");
  await Deno.writeTextFile(`${bigDir}/idle`, "");
  await Deno.writeTextFile(`${smallDir}/idle`, "");
  const conn = await client.exec([
    Deno.execPath(),
    "run",
    "--allow-net",
    `${here}_proxy_connect.ts`,
    "client",
    "--targets=10.100.0.2:80,10.100.0.1:80",
    `--rounds=${values.rounds}`,
    `--batch=${values.batch}`,
  ]);
  const connect = JSON.parse(conn.stdout.trim().split("\n").at(-1)!) as {
    times: number[][];
    failed: number[];
  };
  loads.push(await load());
  const idleBig = await bigAgent.phase("idle");
  const idleSmall = await smallAgent.phase("idle");
  const counters = values.counters === "on";
  const scrapeBig = counters ? await bigAgent.phase("scrape") : undefined;
  const scrapeSmall = counters ? await smallAgent.phase("scrape") : undefined;
  loads.push(await load());

  // (f): hand edits the resync must repair (a cluster IP's dispatch element, an endpoint slot, a cluster
  // IP in the reject set), then one periodic full resync.
  const victims = [7, Math.floor(N / 2), N - 1].map((i) => `10.96.${i >> 8}.${i & 255}`);
  const slot = Math.min(3, Number(values.endpoints) - 1);
  const edits = victims.flatMap((vip) => [
    `delete element inet kube_router_proxy service_ips_v4 { ${vip} . tcp . 80 }`,
    `delete element inet kube_router_proxy service_endpoints_v4_tcp { ${vip} . 80 . ${slot} }`,
    `delete element inet kube_router_proxy cluster_ips_v4 { ${vip} }`,
  ]);
  await big.exec(["nft", edits.join("; ")]);
  const holds = async (vip: string) =>
    (await big.exec(["nft", "list", "map", "inet", "kube_router_proxy", "service_ips_v4"])).stdout
      .includes(`${vip} . tcp . 80 :`);
  for (const v of victims) if (await holds(v)) throw new Error(`${v} was not deleted by hand`);
  await Deno.writeTextFile(`${bigDir}/resync`, "");
  const resync = await bigAgent.phase("resync");
  loads.push(await load());
  let repaired = 0;
  for (const v of victims) if (await holds(v)) repaired++;
  const slots =
    (await big.exec(["nft", "list", "map", "inet", "kube_router_proxy", "service_endpoints_v4_tcp"]))
      .stdout;
  for (const v of victims) if (slots.includes(`${v} . 80 . ${slot} :`)) repaired++;
  const clusterIps =
    (await big.exec(["nft", "list", "set", "inet", "kube_router_proxy", "cluster_ips_v4"])).stdout;
  for (const v of victims) {
    if (new RegExp(`[ {,]${v.replaceAll(".", "\\.")}[,\\s}]`).test(clusterIps)) repaired++;
  }
  console.log("resync", JSON.stringify(resync), `repaired ${repaired} of ${edits.length}`);

  const ruleset = await bigAgent.phase("ruleset");
  await Deno.writeTextFile(`${bigDir}/stop`, "");
  await Deno.writeTextFile(`${smallDir}/stop`, "");
  await bigAgent.child.status;
  await smallAgent.child.status;

  // (a) reference again, at the end: the same ruleset text applied by `nft -f` in a namespace of its own.
  const nftEnd = await timed(ref, `nft -f ${dump}`);
  const nftF = nftNear;
  loads.push(await load());
  // (b) reference: the agent's event transactions replayed in order on that copy.
  const replay = await ref.exec([
    Deno.execPath(),
    "run",
    "--allow-all",
    `--config=${root}deno.json`,
    `${here}_nft_replay.ts`,
    `${bigDir}/events.nft`,
    values.replay!,
  ]);
  const replayed = JSON.parse(replay.stdout.trim().split("\n").at(-1)!) as { ms: number; event: boolean }[];
  const refLat = replayed.filter((r) => r.event).map((r) => r.ms);
  loads.push(await load());

  const f = (x: number, d = 1) => Number.isNaN(x) ? "—" : x.toFixed(d);
  const ratio = (
    a: number,
    b: number,
  ) => (Number.isNaN(a) || Number.isNaN(b) || b === 0 ? "—" : (a / b).toFixed(2));
  const [cBig, cSmall] = connect.times as [number[], number[]];
  const rows: string[][] = [
    [
      "(a) cold full sync, wall (s)",
      f(synced.coldMs! / 1000, 2),
      `\`nft -f\` of the same ruleset: ${f(nftF.wallMs / 1000, 2)} (at the end: ${
        f(nftEnd.wallMs / 1000, 2)
      })`,
      ratio(synced.coldMs!, nftF.wallMs),
      "under 5 s; ratio within 1.5",
    ],
    [
      "(a) cold full sync, CPU user + sys (s)",
      f(synced.coldCpuMs! / 1000, 2),
      `\`nft -f\`: ${f(nftF.cpuMs / 1000, 2)}`,
      ratio(synced.coldCpuMs!, nftF.cpuMs),
      "",
    ],
    [
      "(b) EndpointSlice event → kernel, p50 (ms)",
      f(pct(latencies, 50)),
      `same transactions through libnftables: ${f(pct(refLat, 50))}`,
      ratio(pct(latencies, 50), pct(refLat, 50)),
      "",
    ],
    [
      "(b) EndpointSlice event → kernel, p99 (ms)",
      f(pct(latencies, 99)),
      `same transactions: ${f(pct(refLat, 99))}`,
      ratio(pct(latencies, 99), pct(refLat, 99)),
      "under 50 ms (kube-proxy nftables: 141 ms)",
    ],
    [
      `(c) agent RSS after the cold sync / peak (MiB)`,
      `${f(synced.rssMiB!, 0)} / ${f(synced.peakMiB!, 0)}`,
      `${fmtN(SMALL)} Services: ${f(smallSynced.rssMiB!, 0)} / ${f(smallSynced.peakMiB!, 0)}`,
      ratio(synced.peakMiB!, smallSynced.peakMiB!),
      "under 250 MiB (kube-proxy nftables: 260 MiB at 10,000 × 2)",
    ],
    [
      "(c) agent RSS after the events / after idling (MiB)",
      `${f(evDone.rssMiB!, 0)} / ${f(idleBig.rssMiB!, 0)}`,
      `${f(idleSmall.rssMiB!, 0)} after idling`,
      ratio(idleBig.rssMiB!, idleSmall.rssMiB!),
      "",
    ],
    [
      "(d) connect() through a cluster IP, p50 (ms)",
      f(pct(cBig, 50), 3),
      `${fmtN(SMALL)} Services: ${f(pct(cSmall, 50), 3)}`,
      ratio(pct(cBig, 50), pct(cSmall, 50)),
      "within 10% (ratio ≤ 1.10)",
    ],
    [
      "(d) connect() through a cluster IP, mean / p99 (ms)",
      `${f(mean(cBig), 3)} / ${f(pct(cBig, 99), 3)}`,
      `${f(mean(cSmall), 3)} / ${f(pct(cSmall, 99), 3)}`,
      `${ratio(mean(cBig), mean(cSmall))} / ${ratio(pct(cBig, 99), pct(cSmall, 99))}`,
      "",
    ],
    [
      `(e) idle agent CPU over ${f(idleBig.wallMs! / 1000, 0)} s (ms, % of a core)`,
      `${f(idleBig.cpuMs!, 0)} (${f(idleBig.cpuMs! / idleBig.wallMs! * 100, 2)} %)`,
      `${fmtN(SMALL)} Services: ${f(idleSmall.cpuMs!, 0)} (${
        f(idleSmall.cpuMs! / idleSmall.wallMs! * 100, 2)
      } %)`,
      ratio(idleBig.cpuMs!, idleSmall.cpuMs!),
      "report",
    ],
    [
      "(f) periodic full resync, wall / CPU user + sys (s)",
      `${f(resync.resyncMs! / 1000, 2)} / ${f(resync.resyncCpuMs! / 1000, 2)}`,
      `cold sync of the same run: ${f(synced.coldMs! / 1000, 2)} / ${f(synced.coldCpuMs! / 1000, 2)}`,
      `${ratio(resync.resyncMs!, synced.coldMs!)} / ${ratio(resync.resyncCpuMs!, synced.coldCpuMs!)}`,
      `report; ${repaired} of ${edits.length} hand edits repaired`,
    ],
    [
      "(f) agent RSS before the resync / its peak during it (MiB)",
      `${f(resync.rssBeforeMiB!, 0)} / ${f(resync.peakMiB!, 0)}`,
      `cold sync's peak: ${f(synced.peakMiB!, 0)}`,
      ratio(resync.peakMiB!, synced.peakMiB!),
      "under 250 MiB",
    ],
    ...(scrapeBig && scrapeSmall
      ? [[
        `(g) a scrape reading the per-Service counters (${
          fmtN(scrapeBig.series!)
        } series): wall / CPU (ms), warm (first)`,
        `${f(scrapeBig.wallMs!, 0)} / ${f(scrapeBig.cpuMs!, 0)} (${f(scrapeBig.firstWallMs!, 0)} / ${
          f(scrapeBig.firstCpuMs!, 0)
        })`,
        `${fmtN(SMALL)} Services: ${f(scrapeSmall.wallMs!, 0)} / ${f(scrapeSmall.cpuMs!, 0)} (${
          f(scrapeSmall.firstWallMs!, 0)
        } / ${f(scrapeSmall.firstCpuMs!, 0)})`,
        ratio(scrapeBig.cpuMs!, scrapeSmall.cpuMs!),
        "report",
      ]]
      : []),
  ];
  const md = [
    `## Service proxy at ${fmtN(N)} Services × ${values.endpoints} endpoints`,
    "",
    "| measure | ours | reference (same run) | ratio | target |",
    "| --- | --- | --- | --- | --- |",
    ...rows.map((r) => `| ${r.join(" | ")} |`),
    "",
    "Measured by bench/proxy_scale.ts: the agent's ServiceProxy (bench/_proxy_agent.ts, with `deno task start`'s",
    "V8 flags) over the in-memory Kubernetes source, real nftables (libnftables) and conntrack, in a throwaway",
    `network namespace; ClusterIP Services, one TCP port each. (a) from the initial lists being complete to the`,
    `first sync done (${synced.programmed} Services programmed; the kernel's service map checked to hold all`,
    `${fmtN(N)} cluster IPs); the reference applies the same ruleset (the proxy's renderer, every Service`,
    `from scratch as the cold sync writes it: ${
      fmtN(ruleset.operations!)
    } operations) as one \`nft -f\` file`,
    `in a fresh namespace, right after the cold sync (and again at the end of the run, in brackets). (b) ${latencies.length} EndpointSlice updates (one every ${
      values["event-ms"]
    } ms, each`,
    "replacing one endpoint of one Service), from the update being published to a listener in the agent's",
    `namespace hearing the kernel announce the new endpoint's map element (nftables netlink notifications, sent at commit;
bench/_nft_watch.ts)${missing ? `; ${missing} never seen` : ""}${
      overruns ? `; ${overruns} overruns` : ""
    }; the reference`,
    `replays the first ${refLat.length} transactions that carried updates, in order, through libnftables on the reference copy.`,
    `(c) VmRSS / VmHWM of the agent process (the in-memory API objects included, as an agent's informer cache).`,
    `(d) ${cBig.length} + ${cSmall.length} TCP connects (${
      connect.failed.join(" + ")
    } failed), client and server in`,
    "namespaces of their own, routed through the node namespace whose agent's DNAT (and masquerade) carries them;",
    `batches of ${values.batch} alternate between the two nodes. (e) while (d) runs, no API events: the agent's`,
    "own timers only (the table-existence probe every 2 s; no periodic full resync falls in the window)" +
    (counters
      ? `, and a scrape every ${
        Number(values["scrape-ms"]) / 1000
      } s reading the per-Service counters. Per-Service counters were on in both agents (as with --metrics-port: a counted lookup per packet before DNAT and one per reply; (g) is a scrape: one netlink dump per counted set, decoded, the gauges set and the registry rendered; the third of three a second apart, the first in brackets; CPU in 10 ms ticks).`
      : ". Per-Service counters were off (`--counters off`)."),
    `(f) after (e), ${edits.length} elements of ${victims.length} Services deleted with \`nft\` (dispatch element, one`,
    "endpoint slot, the cluster IP in the reject set), then the sync the agent's runner starts every sync period",
    "(asked for at once instead of waiting the period): the kernel's elements read back over netlink and compared",
    "with what the agent programmed, every chain rewritten, what differs repaired; peak RSS is VmHWM reset just",
    "before (/proc/self/clear_refs), CPU includes the child `nft -f` it waits for.",
    `The machine was shared with other work while this ran (1-minute load average ${Math.min(...loads)} to ${
      Math.max(...loads)
    } on 2 cores):`,
    "wall times are inflated by waiting for a core, CPU times much less; the figures are indicative.",
    "",
  ].join("\n");
  console.log(md);
  await Deno.mkdir(new URL("./results", import.meta.url), { recursive: true });
  await Deno.writeTextFile(new URL("./results/proxy_scale.md", import.meta.url), md);
} finally {
  for (const c of children) {
    try {
      c.kill("SIGKILL");
    } catch { /* gone */ }
  }
  for (const ns of made.reverse()) await ns.remove();
  for (const d of dirs) await Deno.remove(d, { recursive: true }).catch(() => {});
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
