/**
 * BGP receive benchmark: a gobgpd holding 100,000 IPv4 prefixes sends its table over one session, to
 * our speaker and, in the same run, to a second gobgpd (the reference). Measured: time from adding the
 * peer until the receiver's Loc-RIB holds every prefix, and our speaker's RSS afterwards.
 *
 * Loading the sender: `gobgp mrt inject` and `gobgp global rib add` manage only tens of paths per second
 * through gobgpd 3.10's API, so a feeder (our speaker in a fourth namespace) announces the table to the
 * sending gobgpd over BGP, which takes about a second.
 *
 * Run: `deno run -A bench/bgp_receive.ts` (root; gobgpd, gobgp). Writes bench/results/bgp_receive.md.
 */
import { linkVeth, NetNs, skipReason } from "../tests/_support/netns.ts";
import { Gobgp, gobgpConfig, SpeakerDriver, waitFor } from "../tests/integration/bgp/_interop.ts";

const COUNT = Number(Deno.env.get("BGP_BENCH_COUNT") ?? 100_000);
const ROUNDS = 3;
const resultPath = new URL("./results/bgp_receive.md", import.meta.url).pathname;

async function gobgpRibCount(g: Gobgp): Promise<number> {
  const r = await g.cli("global", "rib", "summary", "-a", "ipv4");
  const m = /Destination:\s*(\d+)/.exec(r.stdout);
  return m ? Number(m[1]) : 0;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

async function main(): Promise<void> {
  const skip = skipReason({ tools: ["gobgpd", "gobgp"] });
  if (skip) {
    await Deno.writeTextFile(
      resultPath,
      `## BGP: receive ${COUNT} IPv4 prefixes over one session\n\nSkipped: ${skip}.\n`,
    );
    console.log(`skipped: ${skip}`);
    return;
  }
  const dir = await Deno.makeTempDir({ prefix: "krt-bgpbench-" });
  const made: NetNs[] = [];
  const procs: { stop(): Promise<void> }[] = [];
  try {
    const feed = await NetNs.create("bb-feed"), src = await NetNs.create("bb-src");
    const us = await NetNs.create("bb-us"), ref = await NetNs.create("bb-ref");
    made.push(feed, src, us, ref);
    await linkVeth(feed, "eth0", "10.0.29.1/24", src, "eth2", "10.0.29.2/24");
    await linkVeth(src, "eth0", "10.0.30.2/24", us, "eth0", "10.0.30.1/24");
    await linkVeth(src, "eth1", "10.0.31.2/24", ref, "eth0", "10.0.31.1/24");
    const sender = new Gobgp(src, dir, "sender");
    procs.push(sender);
    await sender.start(gobgpConfig({
      asn: 65002,
      routerId: "10.0.30.2",
      neighbors: [
        { address: "10.0.29.1", asn: 65100, passive: true, families: ["ipv4-unicast"] },
        { address: "10.0.30.1", asn: 65001, passive: true, families: ["ipv4-unicast"] },
        { address: "10.0.31.1", asn: 65003, passive: true, families: ["ipv4-unicast"] },
      ],
    }));
    const feeder = await SpeakerDriver.start(feed);
    procs.push({ stop: () => feeder.close() });
    await feeder.call("start", {
      asn: 65100,
      routerId: "10.0.29.1",
      listenAddresses: [],
      routeEvents: false,
    });
    const routes = Array.from({ length: COUNT }, (_, i) => {
      const net = (20 << 16) + i; // 20.0.0.0/24 upward
      return { prefix: `${(net >> 16) & 255}.${(net >> 8) & 255}.${net & 255}.0/24` };
    });
    await feeder.call("set", { family: "ipv4-unicast", routes });
    const tl = performance.now();
    await feeder.call("addPeer", { address: "10.0.29.2", asn: 65002, connectRetry: 1 });
    const target = COUNT;
    await waitFor("sender holds the table", async () => (await gobgpRibCount(sender)) >= target, 120_000);
    console.log(
      `sender gobgpd loaded ${target} prefixes in ${((performance.now() - tl) / 1000).toFixed(1)} s`,
    );

    const oursMs: number[] = [], refMs: number[] = [];
    let rss = 0;
    for (let round = 0; round < ROUNDS; round++) {
      // Reference: a second gobgpd receiving the same table.
      const receiver = new Gobgp(ref, dir, `ref${round}`);
      await receiver.start(gobgpConfig({
        asn: 65003,
        routerId: "10.0.31.1",
        neighbors: [{ address: "10.0.31.2", asn: 65002, families: ["ipv4-unicast"] }],
      }));
      // Both clocks start when the session is Established: connect jitter is not receive speed.
      await waitFor(
        "reference session",
        async () => (await receiver.neighborState("10.0.31.2")) === "established",
        60_000,
        20,
      );
      const t0 = performance.now();
      await waitFor(
        "reference receives the table",
        async () => (await gobgpRibCount(receiver)) >= target,
        120_000,
        100,
      );
      refMs.push(performance.now() - t0);
      await receiver.stop();

      // Ours.
      const drv = await SpeakerDriver.start(us);
      try {
        await drv.call("start", {
          asn: 65001,
          routerId: "10.0.30.1",
          listenAddresses: [],
          routeEvents: false,
        });
        await drv.call("addPeer", { address: "10.0.30.2", asn: 65002, connectRetry: 1 });
        const r = await drv.call<{ ms: number; sinceEstablishedMs: number; rss: number }>("waitRibSize", {
          count: target,
          timeoutMs: 120_000,
          peer: "10.0.30.2",
        });
        oursMs.push(r.sinceEstablishedMs);
        rss = Math.max(rss, r.rss);
      } finally {
        await drv.close();
      }
      console.log(
        `round ${round + 1}: ours ${oursMs.at(-1)!.toFixed(0)} ms, gobgpd ${refMs.at(-1)!.toFixed(0)} ms`,
      );
    }
    const ours = median(oursMs) / 1000, reference = median(refMs) / 1000;
    const rssMiB = rss / 1048576;
    const md = [
      `## BGP: receive ${target.toLocaleString("en")} IPv4 prefixes over one session`,
      "",
      "| measure | ours | reference | ratio | target |",
      "| --- | --- | --- | --- | --- |",
      `| time until the Loc-RIB holds every prefix | ${ours.toFixed(2)} s | ${
        reference.toFixed(2)
      } s (gobgpd 3.10) | ${(ours / reference).toFixed(2)}x | within 2x |`,
      `| speaker RSS after the load | ${rssMiB.toFixed(0)} MiB | — | — | under 200 MiB |`,
      "",
      `Measured by bench/bgp_receive.ts: a gobgpd holding the table sends ${target} /24s over one session to our speaker and to a second gobgpd, each in its own netns; time from the session reaching Established until the receiver's RIB holds every prefix (median of ${ROUNDS} rounds; gobgpd polled through its CLI every 100 ms plus the CLI's own run time, so its figure may be up to ~0.15 s late, ours in-process every 5 ms); RSS is the speaker process's after the load. Machine load average during the run: ${
        Deno.loadavg()[0]!.toFixed(1)
      } on ${navigator.hardwareConcurrency} cores (other work shares them, so single rounds vary).`,
      "",
    ].join("\n");
    await Deno.mkdir(new URL("./results/", import.meta.url).pathname, { recursive: true });
    await Deno.writeTextFile(resultPath, md);
    console.log(md);
  } finally {
    for (const p of procs) await p.stop().catch(() => {});
    for (const ns of made.reverse()) await ns.remove();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

if (import.meta.main) await main();
