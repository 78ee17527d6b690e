/**
 * nftables load speed and memory: a table with a 100,000-element verdict map applied through ffi/ as one
 * typed transaction (`NftTransaction` built, rendered to nft's text and applied by `Nftables.run` through
 * libnftables, one atomic transaction) against `nft -f` of the same text in the same run, plus, also in the
 * same run, the path it replaced (the same ruleset as libnftables JSON through the same context), and the
 * agent's RSS after the load, before and after malloc_trim(0).
 *
 * Run: `deno run -A bench/ffi_nft.ts [elements]` (root). Writes bench/results/ffi_nft.md.
 */
import { mallocTrim, Nftables, NftTransaction } from "../ffi/mod.ts";
import { NetNs } from "../tests/_support/netns.ts";
import { median, writeResult } from "./_ffi_support.ts";

const addr = (i: number) => `10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`;

/** The benchmark's ruleset as a typed transaction: table, chain, map, n elements jumping to the chain. */
export function ruleset(n: number): NftTransaction {
  const tx = new NftTransaction("ip", "krtbench")
    .add({ table: {} })
    .add({ chain: { name: "svc" } })
    .add({ map: { name: "vips", type: "ipv4_addr", map: "verdict" } });
  for (let i = 0; i < n; i++) tx.add({ element: { set: "vips", key: [addr(i)], value: ["jump svc"] } });
  return tx;
}

/** The same ruleset in libnftables' JSON (the write path before the builder), for comparison. */
export function rulesetJson(n: number): string {
  const elem: unknown[] = [];
  for (let i = 0; i < n; i++) elem.push([addr(i), { jump: { target: "svc" } }]);
  return JSON.stringify({
    nftables: [
      { add: { table: { family: "ip", name: "krtbench" } } },
      { add: { chain: { family: "ip", table: "krtbench", name: "svc" } } },
      { add: { map: { family: "ip", table: "krtbench", name: "vips", type: "ipv4_addr", map: "verdict" } } },
      { add: { element: { family: "ip", table: "krtbench", name: "vips", elem } } },
    ],
  });
}

const dropTable = () => new NftTransaction("ip", "krtbench").delete({ table: {} });

function rssMiB(field = "VmRSS"): number {
  const m = Deno.readTextFileSync("/proc/self/status").match(new RegExp(`${field}:\\s+(\\d+) kB`));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
}

/**
 * Worker, run inside the namespace: builds and applies the ruleset `rounds` times (deleting it in between):
 * in process as configured by default (malloc_trim after each large load), in process without trimming
 * (to show what the trim saves), or through a child `nft -f -` for large inputs. With `refFile`, each round
 * first loads the same text with `nft -f FILE` (the reference) and, in process, the same ruleset as JSON
 * through the same context (the path the builder replaced), so all three see the same machine load.
 */
export async function ours(n: number, rounds: number, mode: "in" | "notrim" | "child", refFile?: string) {
  const nft = new Nftables(
    mode === "in"
      ? {}
      : mode === "notrim"
      ? { trimAboveBytes: Infinity }
      : { outOfProcessAboveBytes: 1 << 20 },
  );
  try {
    const before = rssMiB();
    const times: number[] = [];
    const refTimes: number[] = [];
    const jsonTimes: number[] = [];
    let afterLoad = 0;
    for (let i = 0; i < rounds; i++) {
      if (refFile) {
        // The reference, interleaved with ours so both see the same machine load.
        const t0 = performance.now();
        const out = await new Deno.Command("nft", { args: ["-f", refFile], stdout: "null", stderr: "piped" })
          .output();
        refTimes.push(performance.now() - t0);
        if (!out.success) throw new Error(`nft -f: ${new TextDecoder().decode(out.stderr)}`);
        await nft.run(dropTable());
        if (mode === "in") {
          let json: string | undefined = rulesetJson(n);
          const t1 = performance.now();
          await nft.runBuffer(json);
          jsonTimes.push(performance.now() - t1);
          json = undefined;
          await nft.trimmed();
          await nft.run(dropTable());
        }
      }
      // Ours: building the transaction, rendering it and applying it, all timed.
      const t0 = performance.now();
      await nft.run(ruleset(n));
      times.push(performance.now() - t0);
      await nft.trimmed();
      afterLoad = Math.max(afterLoad, rssMiB());
      if (i < rounds - 1) await nft.run(dropTable());
    }
    mallocTrim();
    const afterTrim = rssMiB();
    const peakLoad = rssMiB("VmHWM");
    // Listing the map back (a resync) is the other large transient.
    const listed = await nft.list({ map: { family: "ip", table: "krtbench", name: "vips" } });
    const count = ((listed[0]?.map as { elem?: unknown[] })?.elem ?? []).length;
    if (count !== n) throw new Error(`listed ${count} elements`);
    const afterList = rssMiB();
    mallocTrim();
    const afterListTrim = rssMiB();
    await nft.run(dropTable());
    return { times, refTimes, jsonTimes, before, afterLoad, afterTrim, peakLoad, afterList, afterListTrim };
  } finally {
    nft.close();
  }
}

if (import.meta.main) {
  // Imported here, not at the top: the worker process imports this module from _in_netns.ts.
  const { inNetns } = await import("../tests/integration/ffi/_in_netns.ts");
  const n = Number(Deno.args[0] ?? 100_000);
  const rounds = 3;
  const loadAtStart = Deno.readTextFileSync("/proc/loadavg").split(" ")[0];
  const ns = await NetNs.create("bench-nft");
  const file = await Deno.makeTempFile({ prefix: "krt-bench-nft-", suffix: ".nft" });
  try {
    await Deno.writeTextFile(file, ruleset(n).render());
    type Res = Awaited<ReturnType<typeof ours>>;
    const url = new URL(import.meta.url);
    const us = await inNetns<Res>(ns, url, "ours", [n, rounds, "in", file], { timeoutMs: 170_000 });
    const child = await inNetns<Res>(ns, url, "ours", [n, rounds, "child", file], { timeoutMs: 170_000 });
    const notrim = await inNetns<Res>(ns, url, "ours", [n, rounds, "notrim"], { timeoutMs: 170_000 });
    // Once more from here, for nft's own peak RSS and to check what it loaded.
    const ref: number[] = [];
    let refPeak = 0;
    for (let i = 0; i < 1; i++) {
      const t0 = performance.now();
      const res = await ns.exec(["/usr/bin/time", "-f", "%M", "nft", "-f", file]);
      ref.push(performance.now() - t0);
      refPeak = Math.max(refPeak, Math.round(Number(res.stderr.trim().split("\n").pop()) / 1024));
      const count =
        (await ns.exec(["sh", "-c", "nft list map ip krtbench vips | grep -o 'jump svc' | wc -l"])).stdout
          .trim();
      if (Number(count) !== n) throw new Error(`nft -f loaded ${count} elements`);
      await ns.exec(["nft", "delete", "table", "ip", "krtbench"]);
    }
    const o = median(us.times), r = median(us.refTimes), js = median(us.jsonTimes);
    const c = median(child.times), rc = median(child.refTimes);
    const ratio = (a: number, b: number) => (a / b).toFixed(2);
    const md = [
      `## nftables through libnftables FFI (${n.toLocaleString("en")}-element verdict map)`,
      "",
      "| measure | ours | reference | ratio | target |",
      "| --- | --- | --- | --- | --- |",
      `| build, render and apply table + map as one typed transaction, in process (ms, median of ${rounds}; lower is better) | ${
        Math.round(o)
      } | ${Math.round(r)} (\`nft -f\` of the same text) | ${ratio(o, r)} | <= 1.20 |`,
      `| same ruleset as libnftables JSON through the same context (the write path the builder replaced), same rounds (ms) | ${
        Math.round(js)
      } | ${Math.round(o)} (ours, above) | ${ratio(js, o)} |  |`,
      `| same, through a child \`nft -f -\` (ms) | ${Math.round(c)} | ${Math.round(rc)} | ${
        ratio(c, rc)
      } | <= 1.20 |`,
      `| agent RSS after each in-process load (default: malloc_trim(0) after large inputs) (MiB) | ${us.afterLoad} | ${us.before} (agent before) | ${
        ratio(us.afterLoad, us.before)
      } |  |`,
      `| agent peak RSS during ${rounds} in-process loads (and the JSON loads between them) (MiB) | ${us.peakLoad} | ${refPeak} (\`nft -f\` max RSS) | ${
        ratio(us.peakLoad, refPeak)
      } |  |`,
      `| same without malloc_trim: RSS after the loads / peak (MiB) | ${notrim.afterLoad} / ${notrim.peakLoad} | ${notrim.before} (agent before) | ${
        ratio(notrim.afterLoad, notrim.before)
      } |  |`,
      `| agent peak RSS during ${rounds} child-process loads (MiB) | ${child.peakLoad} | ${child.before} (agent before) | ${
        ratio(child.peakLoad, child.before)
      } |  |`,
      `| agent RSS after listing the 100k map back, then after malloc_trim (MiB) | ${us.afterList} / ${us.afterListTrim} | ${us.before} | ${
        ratio(us.afterListTrim, us.before)
      } |  |`,
      "",
      `Measured by bench/ffi_nft.ts in a throwaway namespace: ours = \`NftTransaction\` of the ruleset (${n} elements) ` +
      `built, rendered to nft's text and applied by \`Nftables.run\` in its own \`ip netns exec\` Deno process, timed ` +
      `in-process from the first \`add\` to the kernel's answer; reference = \`nft -f FILE\` of the same text, ` +
      `interleaved with ours round by round and timed around the process (includes its start-up); the JSON row loads ` +
      `the same ruleset as libnftables JSON (what \`Nftables.apply\` did before the builder) through the same context ` +
      `in the same rounds; each load is checked by listing and deleted before the next; ratio = ours / reference. ` +
      `libnftables runs on Deno's worker threads, each with its own malloc arena, which is why an untrimmed agent ` +
      `keeps several loads' worth of heap; \`outOfProcessAboveBytes\` sends large loads to a child \`nft\` instead.`,
      "",
      `Load average when the run started: ${loadAtStart} on ${navigator.hardwareConcurrency} CPUs (a busy machine ` +
      `slows ours and the references alike; compare ratios, not milliseconds, across runs).`,
      "",
    ].join("\n");
    await writeResult("ffi_nft", md);
    console.log(md);
  } finally {
    await ns.remove();
    await Deno.remove(file);
  }
}
