/**
 * Route programming speed: 100,000 IPv4 routes installed and deleted in a throwaway namespace through
 * ffi/ (`Rtnetlink.routeBatch`, many messages per sendto), against `ip -batch` of the same routes in the
 * same run. Our side runs in its own `ip netns exec … deno` process, as the agent would; its times are
 * taken inside that process (start-up excluded, as for a long-running agent).
 *
 * Run: `deno run -A bench/ffi_routes.ts [count]` (root). Writes bench/results/ffi_routes.md.
 */
import { ifNameToIndex, type RouteOp, Rtnetlink } from "../ffi/mod.ts";
import { NetNs } from "../tests/_support/netns.ts";
import { median, timeCmd, writeResult } from "./_ffi_support.ts";

const TABLE = 100;

function dst(i: number): string {
  return `10.${128 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`;
}

async function setup(r: Rtnetlink): Promise<void> {
  await r.linkAdd({ kind: "bridge", name: "bbr0", up: true });
  await r.addrAdd({ family: 4, index: ifNameToIndex("bbr0")!, address: "10.9.0.1", prefix: 24 });
}

interface Figures {
  add: number;
  list: number;
  del: number;
  smallList: number;
}

/** Ours, inside the namespace: install, list, delete `n` routes; milliseconds. */
async function oursOnce(r: Rtnetlink, n: number): Promise<Figures> {
  const ops: RouteOp[] = [];
  for (let i = 0; i < n; i++) {
    ops.push({
      op: "add",
      route: { family: 4, dst: dst(i), gateway: "10.9.0.2", table: TABLE, protocol: 17 },
    });
  }
  const t0 = performance.now();
  const add = await r.routeBatch(ops);
  const t1 = performance.now();
  const listed = (await r.routeList({ family: 4, table: TABLE })).length;
  const t2 = performance.now();
  if (add.failures.length || listed !== n) {
    throw new Error(`ours: ${add.failures.length} failures, ${listed} listed`);
  }
  // A small table next to the big one: the kernel filters the dump (NETLINK_GET_STRICT_CHK + RTA_TABLE).
  const s0 = performance.now();
  const small = (await r.routeList({ family: 4, table: 77 })).length;
  const smallList = performance.now() - s0;
  if (small !== 10) throw new Error(`listed ${small} routes of table 77`);
  const t2b = performance.now();
  const del = await r.routeBatch(ops.map((o) => ({ op: "del", route: o.route })));
  const t3 = performance.now();
  if (del.failures.length) throw new Error(`ours: ${del.failures.length} delete failures`);
  return { add: t1 - t0, list: t2 - t1, del: t3 - t2b, smallList };
}

/** The reference, run by the same worker: `ip -batch` of the same routes; milliseconds. */
async function referenceOnce(r: Rtnetlink, n: number, addFile: string, delFile: string): Promise<Figures> {
  const add = await timeCmd(["ip", "-batch", addFile]);
  const installed = (await r.routeList({ family: 4, table: TABLE })).length;
  if (installed !== n) throw new Error(`ip -batch installed ${installed} routes`);
  const list = await timeCmd(["ip", "-o", "route", "show", "table", String(TABLE)]);
  const smallList = await timeCmd(["ip", "-o", "route", "show", "table", "77"]);
  const del = await timeCmd(["ip", "-batch", delFile]);
  return { add, list, del, smallList };
}

/**
 * Worker, run inside the namespace: `rounds` rounds of ours and the reference, alternating which goes
 * first, so both see the same machine load.
 */
export async function compare(n: number, rounds: number, addFile: string, delFile: string) {
  const r = new Rtnetlink();
  try {
    if (!ifNameToIndex("bbr0")) await setup(r);
    for (let i = 0; i < 10; i++) {
      await r.routeAdd({ family: 4, dst: `10.250.${i}.0/24`, gateway: "10.9.0.2", table: 77 });
    }
    const ours: Figures[] = [], ref: Figures[] = [];
    for (let i = 0; i < rounds; i++) {
      if (i % 2 === 0) {
        ours.push(await oursOnce(r, n));
        ref.push(await referenceOnce(r, n, addFile, delFile));
      } else {
        ref.push(await referenceOnce(r, n, addFile, delFile));
        ours.push(await oursOnce(r, n));
      }
    }
    return { ours, ref };
  } finally {
    r.close();
  }
}

if (import.meta.main) {
  // Imported here, not at the top: the worker process imports this module from _in_netns.ts.
  const { inNetns } = await import("../tests/integration/ffi/_in_netns.ts");
  const n = Number(Deno.args[0] ?? 100_000);
  const rounds = 3;
  const ns = await NetNs.create("bench-routes");
  const dir = await Deno.makeTempDir({ prefix: "krt-bench-routes-" });
  try {
    const addFile = `${dir}/add`, delFile = `${dir}/del`;
    const addLines: string[] = [], delLines: string[] = [];
    for (let i = 0; i < n; i++) {
      addLines.push(`route add ${dst(i)} via 10.9.0.2 table ${TABLE} proto 17`);
      delLines.push(`route del ${dst(i)} table ${TABLE}`);
    }
    await Deno.writeTextFile(addFile, addLines.join("\n") + "\n");
    await Deno.writeTextFile(delFile, delLines.join("\n") + "\n");
    const res = await inNetns<{ ours: Figures[]; ref: Figures[] }>(
      ns,
      new URL(import.meta.url),
      "compare",
      [n, rounds, addFile, delFile],
      { timeoutMs: 170_000 },
    );
    const pick = (fs: Figures[]) => ({
      add: median(fs.map((f) => f.add)),
      list: median(fs.map((f) => f.list)),
      del: median(fs.map((f) => f.del)),
      smallList: median(fs.map((f) => f.smallList)),
    });
    const us = pick(res.ours);
    const ref = pick(res.ref);
    const refAdd = ref.add, refDel = ref.del, refList = ref.list, refSmall = ref.smallList;

    const rate = (ms: number) => Math.round(n / (ms / 1000));
    const row = (m: string, o: number, r: number, target: string) =>
      `| ${m} | ${o} | ${r} | ${(o / r).toFixed(2)} | ${target} |`;
    const md = [
      "## Route programming through rtnetlink FFI (100,000 IPv4 routes)",
      "",
      "| measure | ours | reference | ratio | target |",
      "| --- | --- | --- | --- | --- |",
      row(`install rate (routes/s, ${n} routes; higher is better)`, rate(us.add), rate(refAdd), ">= 2.00"),
      row(`delete rate (routes/s; higher is better)`, rate(us.del), rate(refDel), ""),
      row(`install time (ms; lower is better)`, Math.round(us.add), Math.round(refAdd), "<= 0.50"),
      row(
        `list the table (ms, dump + decode vs \`ip -o route show\`; lower is better)`,
        Math.round(us.list),
        Math.round(refList),
        "",
      ),
      row(
        `list a 10-route table while ${n} routes sit in another (ms; lower is better)`,
        Number(us.smallList.toFixed(1)),
        Number(refSmall.toFixed(1)),
        "",
      ),
      "",
      `Measured by bench/ffi_routes.ts in a throwaway namespace, medians of ${rounds} rounds: ours = ` +
      `\`Rtnetlink.routeBatch\` (256 KiB of messages per sendto, one ACK fence per chunk) timed inside its own ` +
      `\`ip netns exec\` Deno process; reference = \`ip -batch\` of the same \`route add … via 10.9.0.2 table 100 ` +
      `proto 17\` lines (and \`ip -o route show\`), run by that same process alternately with ours and timed around ` +
      `the child (so \`ip\`'s start-up, a few ms, is in its figures); ratio = ours / reference.`,
      "",
    ].join("\n");
    await writeResult("ffi_routes", md);
    console.log(md);
  } finally {
    await ns.remove();
    await Deno.remove(dir, { recursive: true });
  }
}
