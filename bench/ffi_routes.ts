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

const TABLE = 100;

function dst(i: number): string {
  return `10.${128 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`;
}

async function setup(r: Rtnetlink): Promise<void> {
  await r.linkAdd({ kind: "bridge", name: "bbr0", up: true });
  await r.addrAdd({ family: 4, index: ifNameToIndex("bbr0")!, address: "10.9.0.1", prefix: 24 });
}

/** Worker, run inside the namespace: install, list, delete `n` routes; returns milliseconds. */
export async function ours(
  n: number,
): Promise<{ add: number; list: number; del: number; smallList: number; failures: number; listed: number }> {
  const r = new Rtnetlink();
  try {
    if (!ifNameToIndex("bbr0")) await setup(r);
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
    // A small table next to the big one: the kernel filters the dump (NETLINK_GET_STRICT_CHK + RTA_TABLE).
    for (let i = 0; i < 10; i++) {
      await r.routeAdd({ family: 4, dst: `10.250.${i}.0/24`, gateway: "10.9.0.2", table: 77 });
    }
    const s0 = performance.now();
    const small = (await r.routeList({ family: 4, table: 77 })).length;
    const smallList = performance.now() - s0;
    if (small !== 10) throw new Error(`listed ${small} routes of table 77`);
    const t2b = performance.now();
    const del = await r.routeBatch(ops.map((o) => ({ op: "del", route: o.route })));
    const t3 = performance.now();
    return {
      add: t1 - t0,
      list: t2 - t1,
      del: t3 - t2b,
      smallList,
      failures: add.failures.length + del.failures.length,
      listed,
    };
  } finally {
    r.close();
  }
}

async function timed(ns: NetNs, cmd: string[]): Promise<number> {
  const t0 = performance.now();
  await ns.exec(cmd);
  return performance.now() - t0;
}

if (import.meta.main) {
  // Imported here, not at the top: the worker process imports this module from _in_netns.ts.
  const { inNetns } = await import("../tests/integration/ffi/_in_netns.ts");
  const n = Number(Deno.args[0] ?? 100_000);
  const ns = await NetNs.create("bench-routes");
  const dir = await Deno.makeTempDir({ prefix: "krt-bench-routes-" });
  try {
    await ns.exec(["ip", "link", "add", "bbr0", "type", "bridge"]);
    await ns.exec(["ip", "link", "set", "bbr0", "up"]);
    await ns.exec(["ip", "addr", "add", "10.9.0.1/24", "dev", "bbr0"]);
    const us = await inNetns<Awaited<ReturnType<typeof ours>>>(ns, new URL(import.meta.url), "ours", [n], {
      timeoutMs: 170_000,
    });
    if (us.failures || us.listed !== n) throw new Error(`our run failed: ${JSON.stringify(us)}`);

    const addFile = `${dir}/add`, delFile = `${dir}/del`;
    const add: string[] = [], del: string[] = [];
    for (let i = 0; i < n; i++) {
      add.push(`route add ${dst(i)} via 10.9.0.2 table ${TABLE} proto 17`);
      del.push(`route del ${dst(i)} table ${TABLE}`);
    }
    await Deno.writeTextFile(addFile, add.join("\n") + "\n");
    await Deno.writeTextFile(delFile, del.join("\n") + "\n");
    const refAdd = await timed(ns, ["ip", "-batch", addFile]);
    const count = (await ns.exec(["sh", "-c", `ip route show table ${TABLE} | wc -l`])).stdout.trim();
    if (Number(count) !== n) throw new Error(`ip -batch installed ${count} routes`);
    const t0 = performance.now();
    await ns.exec(["ip", "-o", "route", "show", "table", String(TABLE)]);
    const refList = performance.now() - t0;
    for (let i = 0; i < 10; i++) {
      await ns.exec(["ip", "route", "replace", `10.250.${i}.0/24`, "via", "10.9.0.2", "table", "77"]);
    }
    const refSmall = await timed(ns, ["ip", "-o", "route", "show", "table", "77"]);
    const refDel = await timed(ns, ["ip", "-batch", delFile]);

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
      `Measured by bench/ffi_routes.ts in a throwaway namespace: ours = \`Rtnetlink.routeBatch\` (256 KiB of messages per sendto, ` +
      `one ACK fence per chunk) timed inside its own \`ip netns exec\` Deno process; reference = \`ip -batch\` of the same ` +
      `\`route add … via 10.9.0.2 table 100 proto 17\` lines in the same run, timed around the process (so \`ip\`'s ` +
      `start-up, a few ms, is in its figures); ratio = ours / reference.`,
      "",
    ].join("\n");
    await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
    const out = new URL("./results/ffi_routes.md", import.meta.url);
    await Deno.writeTextFile(out, md);
    // Keep the result file as \`deno fmt --check\` wants it (CI checks every file).
    await new Deno.Command(Deno.execPath(), {
      args: ["fmt", "-q", out.pathname],
      stdout: "null",
      stderr: "null",
    }).output();
    console.log(md);
  } finally {
    await ns.remove();
    await Deno.remove(dir, { recursive: true });
  }
}
