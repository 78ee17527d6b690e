/**
 * nftables load speed and memory: a table with a 100,000-element verdict map applied through ffi/
 * (`Nftables.apply`, libnftables JSON API, one atomic transaction) against `nft -j -f` of the same JSON in
 * the same run, plus the agent's RSS after the load, before and after malloc_trim(0).
 *
 * Run: `deno run -A bench/ffi_nft.ts [elements]` (root). Writes bench/results/ffi_nft.md.
 */
import { mallocTrim, Nftables, type NftCommand } from "../ffi/mod.ts";
import { NetNs } from "../tests/_support/netns.ts";
import { median, writeResult } from "./_ffi_support.ts";

export function ruleset(n: number): NftCommand[] {
  const elem: unknown[] = [];
  for (let i = 0; i < n; i++) {
    elem.push([`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, { jump: { target: "svc" } }]);
  }
  return [
    { add: { table: { family: "ip", name: "krtbench" } } },
    { add: { chain: { family: "ip", table: "krtbench", name: "svc" } } },
    { add: { map: { family: "ip", table: "krtbench", name: "vips", type: "ipv4_addr", map: "verdict" } } },
    { add: { element: { family: "ip", table: "krtbench", name: "vips", elem } } },
  ];
}

function rssMiB(field = "VmRSS"): number {
  const m = Deno.readTextFileSync("/proc/self/status").match(new RegExp(`${field}:\\s+(\\d+) kB`));
  return m ? Math.round(Number(m[1]) / 1024) : NaN;
}

/**
 * Worker, run inside the namespace: applies the ruleset `rounds` times (deleting it in between): in
 * process as configured by default (malloc_trim after each large load), in process without trimming
 * (to show what the trim saves), or through a child `nft` for large inputs.
 */
export async function ours(n: number, rounds: number, mode: "in" | "notrim" | "child", refFile?: string) {
  let cmds: NftCommand[] | undefined = ruleset(n);
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
    let afterLoad = 0;
    for (let i = 0; i < rounds; i++) {
      if (refFile) {
        // The reference, interleaved with ours so both see the same machine load.
        const t0 = performance.now();
        const out = await new Deno.Command("nft", {
          args: ["-j", "-f", refFile],
          stdout: "null",
          stderr: "piped",
        })
          .output();
        refTimes.push(performance.now() - t0);
        if (!out.success) throw new Error(`nft -j -f: ${new TextDecoder().decode(out.stderr)}`);
        await nft.apply([{ delete: { table: { family: "ip", name: "krtbench" } } }]);
      }
      const t0 = performance.now();
      await nft.apply(cmds);
      times.push(performance.now() - t0);
      await nft.trimmed();
      afterLoad = Math.max(afterLoad, rssMiB());
      if (i < rounds - 1) await nft.apply([{ delete: { table: { family: "ip", name: "krtbench" } } }]);
    }
    cmds = undefined;
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
    await nft.apply([{ delete: { table: { family: "ip", name: "krtbench" } } }]);
    return { times, refTimes, before, afterLoad, afterTrim, peakLoad, afterList, afterListTrim };
  } finally {
    nft.close();
  }
}

if (import.meta.main) {
  // Imported here, not at the top: the worker process imports this module from _in_netns.ts.
  const { inNetns } = await import("../tests/integration/ffi/_in_netns.ts");
  const n = Number(Deno.args[0] ?? 100_000);
  const rounds = 3;
  const ns = await NetNs.create("bench-nft");
  const file = await Deno.makeTempFile({ prefix: "krt-bench-nft-", suffix: ".json" });
  try {
    await Deno.writeTextFile(file, JSON.stringify({ nftables: ruleset(n) }));
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
      const res = await ns.exec(["/usr/bin/time", "-f", "%M", "nft", "-j", "-f", file]);
      ref.push(performance.now() - t0);
      refPeak = Math.max(refPeak, Math.round(Number(res.stderr.trim().split("\n").pop()) / 1024));
      const count =
        (await ns.exec(["sh", "-c", "nft list map ip krtbench vips | grep -o 'jump svc' | wc -l"])).stdout
          .trim();
      if (Number(count) !== n) throw new Error(`nft -j -f loaded ${count} elements`);
      await ns.exec(["nft", "delete", "table", "ip", "krtbench"]);
    }
    const o = median(us.times), r = median(us.refTimes);
    const c = median(child.times), rc = median(child.refTimes);
    const ratio = (a: number, b: number) => (a / b).toFixed(2);
    const md = [
      "## nftables through libnftables FFI (100,000-element verdict map)",
      "",
      "| measure | ours | reference | ratio | target |",
      "| --- | --- | --- | --- | --- |",
      `| apply table + map in one transaction, in process (ms, median of ${rounds}; lower is better) | ${
        Math.round(o)
      } | ${Math.round(r)} (\`nft -j -f\`) | ${ratio(o, r)} | <= 1.20 |`,
      `| same, through a child \`nft -j -f -\` (ms) | ${Math.round(c)} | ${Math.round(rc)} | ${
        ratio(c, rc)
      } | <= 1.20 |`,
      `| agent RSS after each in-process load (default: malloc_trim(0) after large inputs) (MiB) | ${us.afterLoad} | ${us.before} (agent before) | ${
        ratio(us.afterLoad, us.before)
      } |  |`,
      `| agent peak RSS during ${rounds} in-process loads (MiB) | ${us.peakLoad} | ${refPeak} (\`nft -j -f\` max RSS) | ${
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
      `Measured by bench/ffi_nft.ts in a throwaway namespace: ours = \`Nftables.apply\` of the same JSON (${n} elements) in ` +
      `its own \`ip netns exec\` Deno process, timed in-process; reference = \`nft -j -f FILE\` of the same JSON, ` +
      `interleaved with ours round by round and timed around the process (includes its start-up); each load is checked by listing and deleted before the next; ratio = ours / ` +
      `reference. libnftables runs on Deno's worker threads, each with its own malloc arena, which is why an untrimmed ` +
      `agent keeps several loads' worth of heap; \`outOfProcessAboveBytes\` sends large loads to a child \`nft\` instead.`,
      "",
    ].join("\n");
    await writeResult("ffi_nft", md);
    console.log(md);
  } finally {
    await ns.remove();
    await Deno.remove(file);
  }
}
