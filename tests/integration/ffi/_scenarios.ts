/**
 * Functions the ffi integration tests run inside a throwaway namespace through `inNetns`. Each uses the
 * ffi module exactly as the agent would and returns plain JSON for the test to check, alongside what the
 * real tools (`ip`, `nft`, `conntrack`) say from outside.
 */
import dgram from "node:dgram";
import { run } from "../../_support/netns.ts";
import {
  Conntrack,
  type ConntrackFilter,
  decodeConcatKey,
  ifNameToIndex,
  IpProto,
  isExists,
  isNotFound,
  isNotSupported,
  Nftables,
  NftError,
  NftSetCounters,
  NftTransaction,
  ProcSysctl,
  type Route,
  type RouteOp,
  Rtnetlink,
  type RtnlEvent,
} from "../../../ffi/mod.ts";

function errInfo(
  e: unknown,
): { name: string; code?: string; extAck?: string; notFound: boolean; exists: boolean } {
  const err = e as Error & { code?: string; extAck?: string };
  return {
    name: err.name,
    ...(err.code ? { code: err.code } : {}),
    ...(err.extAck ? { extAck: err.extAck } : {}),
    notFound: isNotFound(e),
    exists: isExists(e),
  };
}

async function attempt(f: () => Promise<unknown>): Promise<ReturnType<typeof errInfo> | "ok"> {
  try {
    await f();
    return "ok";
  } catch (e) {
    return errInfo(e);
  }
}

/** Creates a bridge, a veth pair enslaved to it, and a VXLAN device; reports what linkList/linkGet see. */
export async function createLinks() {
  const r = new Rtnetlink();
  try {
    await r.linkAdd({ kind: "bridge", name: "kbr0", up: true, mtu: 1450 });
    await r.linkAdd({ kind: "veth", name: "kv0", peer: "kv1", master: "kbr0" });
    await r.linkSet("kv0", { up: true, mtu: 1400 });
    await r.linkAdd({
      kind: "vxlan",
      name: "kvx0",
      vni: 4242,
      port: 4789,
      local: "10.250.0.1",
      learning: false,
    });
    const duplicate = await attempt(() => r.linkAdd({ kind: "bridge", name: "kbr0" }));
    const links = await r.linkList();
    const missing = await r.linkGet("nosuch0");
    const vx = await r.linkGet("kvx0");
    await r.linkSet("kv0", { master: null });
    const afterNomaster = await r.linkGet("kv0");
    await r.linkSet("kv1", { name: "kv1renamed" });
    await r.linkDel("kvx0");
    const delMissing = await attempt(() => r.linkDel("kvx0"));
    return {
      links,
      missing: missing ?? null,
      vx,
      afterNomaster,
      duplicate,
      delMissing,
      final: (await r.linkList()).map((l) => l.name),
    };
  } finally {
    r.close();
  }
}

/** Tries to create a link of a kind this kernel may lack, reporting the error. */
export async function createKind(kind: "dummy" | "ipip") {
  const r = new Rtnetlink();
  try {
    const add = () =>
      kind === "dummy"
        ? r.linkAdd({ kind, name: "kd0", up: true })
        : r.linkAdd({ kind, name: "kt0", local: "10.0.0.1", remote: "10.0.0.2" });
    let message: string | null = null;
    let notSupported = false;
    const res = await attempt(() =>
      add().catch((e) => {
        message = e instanceof Error ? e.message : String(e);
        notSupported = isNotSupported(e);
        throw e;
      })
    );
    return { res, message, notSupported, link: (await r.linkGet(kind === "dummy" ? "kd0" : "kt0")) ?? null };
  } finally {
    r.close();
  }
}

/** Adds, lists and deletes IPv4 and IPv6 addresses on a bridge. */
export async function addresses() {
  const r = new Rtnetlink();
  try {
    await r.linkAdd({ kind: "bridge", name: "kbr0", up: true });
    const index = ifNameToIndex("kbr0")!;
    await r.addrAdd({ family: 4, index, address: "10.77.0.1", prefix: 24 });
    await r.addrAdd({ family: 4, index, address: "10.77.1.1", prefix: 32 });
    await r.addrAdd({ family: 6, index, address: "fd77::1", prefix: 64, nodad: true });
    const duplicate = await attempt(() => r.addrAdd({ family: 4, index, address: "10.77.0.1", prefix: 24 }));
    const listed = await r.addrList({ index });
    await r.addrDel({ family: 4, index, address: "10.77.1.1", prefix: 32 });
    const delMissing = await attempt(() => r.addrDel({ family: 4, index, address: "10.77.1.1", prefix: 32 }));
    const after = await r.addrList({ index, family: 4 });
    return { index, listed, duplicate, delMissing, after };
  } finally {
    r.close();
  }
}

async function withBridge(r: Rtnetlink): Promise<number> {
  await r.linkAdd({ kind: "bridge", name: "kbr0", up: true });
  const index = ifNameToIndex("kbr0")!;
  await r.addrAdd({ family: 4, index, address: "10.9.0.1", prefix: 24 });
  await r.addrAdd({ family: 6, index, address: "fd09::1", prefix: 64, nodad: true });
  return index;
}

function manyRoutes(n: number, table: number): Route[] {
  const out: Route[] = [];
  for (let i = 0; i < n; i++) {
    out.push({
      family: 4,
      dst: `10.${128 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`,
      gateway: "10.9.0.2",
      table,
      protocol: 17,
    });
  }
  return out;
}

/** Adds `n` routes in one batch, lists them, then deletes them in one batch. */
export async function routeBulk(n: number, table: number) {
  const r = new Rtnetlink();
  try {
    await withBridge(r);
    const routes = manyRoutes(n, table);
    const t0 = performance.now();
    const add = await r.routeBatch(routes.map((route): RouteOp => ({ op: "add", route })));
    const t1 = performance.now();
    const listed = await r.routeList({ family: 4, table });
    const t2 = performance.now();
    const kernelCount = listed.length;
    const sample = listed.find((x) => x.dst === routes[n - 1]!.dst) ?? null;
    const again = await r.routeBatch(routes.slice(0, 3).map((route): RouteOp => ({ op: "add", route })));
    const del = await r.routeBatch(routes.map((route): RouteOp => ({ op: "del", route })));
    const remaining = (await r.routeList({ family: 4, table })).length;
    return {
      added: add.ok,
      addFailures: add.failures.length,
      kernelCount,
      sample,
      againFailures: again.failures.map((f) => ({ index: f.index, ...errInfo(f.error) })),
      deleted: del.ok,
      remaining,
      ms: { add: t1 - t0, list: t2 - t1 },
    };
  } finally {
    r.close();
  }
}

/** Single route operations: add/replace/del in a custom table, ECMP, IPv6, and their errors. */
export async function routeOps() {
  const r = new Rtnetlink();
  try {
    const dev = await withBridge(r);
    await r.routeAdd({
      family: 4,
      dst: "10.1.2.0/24",
      gateway: "10.9.0.2",
      table: 77,
      protocol: 17,
      src: "10.9.0.1",
    });
    const dup = await attempt(() =>
      r.routeAdd({ family: 4, dst: "10.1.2.0/24", gateway: "10.9.0.2", table: 77 })
    );
    await r.routeReplace({ family: 4, dst: "10.1.2.0/24", gateway: "10.9.0.3", table: 77, protocol: 17 });
    await r.routeAdd({
      family: 4,
      dst: "10.1.3.0/24",
      table: 77,
      nexthops: [{ gateway: "10.9.0.2", weight: 3 }, { gateway: "10.9.0.3" }],
    });
    await r.routeAdd({ family: 4, dst: "10.1.4.0/24", dev, table: 77, scope: 253 });
    await r.routeAdd({ family: 4, dst: "10.1.5.0/24", table: 77, type: 6 });
    await r.routeAdd({ family: 6, dst: "fd01::/64", gateway: "fd09::2", dev, table: 77, metric: 10 });
    const unreachableGw = await attempt(() =>
      r.routeAdd({ family: 4, dst: "10.1.6.0/24", gateway: "192.0.2.1", table: 77 })
    );
    const table77 = await r.routeList({ table: 77 });
    await r.routeDel({ family: 4, dst: "10.1.2.0/24", table: 77 });
    const delMissing = await attempt(() => r.routeDel({ family: 4, dst: "10.1.2.0/24", table: 77 }));
    return {
      dev,
      dup,
      unreachableGw,
      table77,
      delMissing,
      after: (await r.routeList({ table: 77 })).map((x) => x.dst),
    };
  } finally {
    r.close();
  }
}

/** Policy rules: add, duplicate, list, delete. */
export async function rules() {
  const r = new Rtnetlink();
  try {
    await r.ruleAdd({ family: 4, priority: 100, src: "10.1.0.0/16", table: 77 });
    await r.ruleAdd({ family: 4, priority: 101, fwmark: 0x2000, fwmask: 0xf000, table: 300 });
    await r.ruleAdd({ family: 6, priority: 102, dst: "fd00::/8", table: 78 });
    const dup = await attempt(() => r.ruleAdd({ family: 4, priority: 100, src: "10.1.0.0/16", table: 77 }));
    const v4 = await r.ruleList(4);
    const v6 = await r.ruleList(6);
    await r.ruleDel({ family: 4, priority: 100, src: "10.1.0.0/16", table: 77 });
    const delMissing = await attempt(() =>
      r.ruleDel({ family: 4, priority: 100, src: "10.1.0.0/16", table: 77 })
    );
    return { dup, v4, v6, delMissing, after: (await r.ruleList(4)).map((x) => x.priority) };
  } finally {
    r.close();
  }
}

/** Neighbour entries: add, replace, list, delete. */
export async function neighbours() {
  const r = new Rtnetlink();
  try {
    const dev = await withBridge(r);
    await r.neighAdd({ family: 4, dev, dst: "10.9.0.7", lladdr: "02:00:00:00:00:07" });
    const dup = await attempt(() =>
      r.neighAdd({ family: 4, dev, dst: "10.9.0.7", lladdr: "02:00:00:00:00:07" })
    );
    await r.neighReplace({ family: 4, dev, dst: "10.9.0.7", lladdr: "02:00:00:00:00:08" });
    const listed = (await r.neighList({ dev, family: 4 })).filter((n) => n.dst === "10.9.0.7");
    await r.neighDel({ family: 4, dev, dst: "10.9.0.7" });
    const delMissing = await attempt(() => r.neighDel({ family: 4, dev, dst: "10.9.0.7" }));
    return { dup, listed, delMissing };
  } finally {
    r.close();
  }
}

function nextEvent(
  it: AsyncIterator<RtnlEvent>,
  pred: (e: RtnlEvent) => boolean,
  timeoutMs: number,
): Promise<RtnlEvent | undefined> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => resolve(undefined), timeoutMs);
    (async () => {
      for (;;) {
        const n = await it.next();
        if (n.done) return undefined;
        if (pred(n.value)) return n.value;
      }
    })().then((v) => {
      clearTimeout(timer);
      resolve(v);
    }, (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/**
 * Watches routes, runs `ip route add` in another process, and reports the event and how long after the
 * command exited it arrived. Then closes the watch and reports that the iteration ended.
 */
export async function routeEvent() {
  const r = new Rtnetlink();
  try {
    await withBridge(r);
    const w = r.watch(["route"], { families: [4] });
    const it = w[Symbol.asyncIterator]();
    const pending = nextEvent(it, (e) => e.kind === "route" && e.route.dst === "10.42.0.0/16", 10_000);
    await run(["ip", "route", "add", "10.42.0.0/16", "via", "10.9.0.2", "proto", "17"]);
    const exited = performance.now();
    const ev = await pending;
    const latencyMs = performance.now() - exited;
    const t = performance.now();
    w.close();
    const end = await Promise.race([
      it.next(),
      new Promise<"stuck">((res) => setTimeout(() => res("stuck"), 5000)),
    ]);
    return {
      ev: ev ?? null,
      latencyMs,
      ended: end !== "stuck" && end.done === true,
      closeMs: performance.now() - t,
    };
  } finally {
    r.close();
  }
}

/** A watch closed while no event ever comes ends its iteration (the eventfd wakes the poll). */
export async function watchCancelIdle() {
  const r = new Rtnetlink();
  try {
    const w = r.watch(["link", "addr", "route", "rule", "neigh"]);
    const it = w[Symbol.asyncIterator]();
    const next = it.next();
    await new Promise((res) => setTimeout(res, 200));
    w.close();
    w.close();
    const end = await Promise.race([
      next,
      new Promise<"stuck">((res) => setTimeout(() => res("stuck"), 5000)),
    ]);
    return { ended: end !== "stuck" && end.done === true };
  } finally {
    r.close();
  }
}

/**
 * Overflows a small watch socket with 3000 route additions from another process before reading it: the
 * watch must report "resync", and still deliver events that come after.
 */
export async function enobufs() {
  const r = new Rtnetlink();
  try {
    await withBridge(r);
    const w = r.watch(["route"], { families: [4], rcvbuf: 4096 });
    const lines = [];
    for (let i = 0; i < 3000; i++) lines.push(`route add 10.60.${i >> 8}.${i & 255}/32 via 10.9.0.2`);
    const file = await Deno.makeTempFile({ prefix: "krt-enobufs-" });
    try {
      await Deno.writeTextFile(file, lines.join("\n") + "\n");
      await run(["ip", "-batch", file]);
    } finally {
      await Deno.remove(file);
    }
    const it = w[Symbol.asyncIterator]();
    const resync = await nextEvent(it, (e) => e.kind === "resync", 10_000);
    // After a resync a consumer lists again; the kernel table is complete even though events were lost.
    const listed = (await r.routeList({ family: 4, table: 254, protocol: 3 })).filter((x) =>
      x.dst.startsWith("10.60.")
    ).length;
    const pending = nextEvent(it, (e) => e.kind === "route" && e.route.dst === "10.61.0.0/16", 10_000);
    await run(["ip", "route", "add", "10.61.0.0/16", "via", "10.9.0.2"]);
    const after = await pending;
    w.close();
    return { resync: resync?.kind ?? null, listed, after: after ?? null };
  } finally {
    r.close();
  }
}

/** Applies an nft table with an n-element verdict map in one transaction and lists it back. */
export async function nftVerdictMap(n: number) {
  const nft = new Nftables();
  try {
    const tx = new NftTransaction("ip", "krt")
      .add({ table: {} })
      .add({ chain: { name: "svc" } })
      .add({ chain: { name: "pre", type: "filter", hook: "prerouting", priority: 0, policy: "accept" } })
      .add({ map: { name: "vips", type: "ipv4_addr", map: "verdict" } });
    for (let i = 0; i < n; i++) {
      tx.add({
        element: {
          set: "vips",
          key: [`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`],
          value: ["jump svc"],
        },
      });
    }
    tx.add({ rule: { chain: "pre", rule: "ip daddr vmap @vips" } });
    // libnftables runs on a worker thread: timers keep firing while the kernel loads the map.
    let ticks = 0;
    const timer = setInterval(() => ticks++, 2);
    try {
      await nft.run(tx);
    } finally {
      clearInterval(timer);
    }
    const map = await nft.list({ map: { family: "ip", table: "krt", name: "vips" } });
    const elems = ((map[0]?.map as { elem?: unknown[] })?.elem ?? []) as [string, unknown][];
    const table = await nft.list({ table: { family: "ip", name: "krt" } });
    // A child `nft -j` lists the same, elements and terse alike.
    const mapChild = await nft.list({ map: { family: "ip", table: "krt", name: "vips" } }, {
      outOfProcess: true,
    });
    const terse = await nft.list({ table: { family: "ip", name: "krt" } }, { terse: true });
    const terseChild = await nft.list({ table: { family: "ip", name: "krt" } }, {
      terse: true,
      outOfProcess: true,
    });
    return {
      elems: elems.length,
      first: elems[0] ?? null,
      kinds: table.map((o) => Object.keys(o)[0]),
      ticks,
      sameOutOfProcess: JSON.stringify(mapChild) === JSON.stringify(map) &&
        JSON.stringify(terseChild) === JSON.stringify(terse) && !JSON.stringify(terse).includes('"elem"'),
    };
  } finally {
    nft.close();
  }
}

/** A transaction whose last command fails leaves the ruleset exactly as it was. */
export async function nftFailingTransaction() {
  const nft = new Nftables();
  try {
    await nft.run(
      new NftTransaction("ip", "keep").add({ table: {} }).add({ set: { name: "s", type: "ipv4_addr" } }),
    );
    const before = await nft.list({ ruleset: true });
    const failing = new NftTransaction("ip", "keep")
      .add({ chain: { name: "krtfail" } })
      .add({ element: { set: "s", key: ["10.0.0.1"] } })
      .delete({ set: { name: "doesnotexist", type: "ipv4_addr" } });
    let operations: readonly number[] = [];
    const failure = await attempt(() =>
      nft.run(failing).catch((e) => {
        if (e instanceof NftError) operations = e.operations;
        throw e;
      })
    );
    const message = await nft.run(new NftTransaction("ip", "doesnotexist").delete({ table: {} })).then(
      () => "",
      (e) => String((e as Error).message),
    );
    const after = await nft.list({ ruleset: true });
    return { failure, operations, message, same: JSON.stringify(before) === JSON.stringify(after), after };
  } finally {
    nft.close();
  }
}

/** nft's own syntax goes through the same context. */
export async function nftText() {
  const nft = new Nftables();
  try {
    await nft.applyText(
      "add table inet krttext\nadd chain inet krttext c { type filter hook input priority 0; }\nadd rule inet krttext c udp dport 53 accept",
    );
    const listed = await nft.list({ table: { family: "inet", name: "krttext" } });
    const bad = await attempt(() => nft.applyText("add rule inet krttext nosuchchain accept"));
    return { kinds: listed.map((o) => Object.keys(o)[0]), bad };
  } finally {
    nft.close();
  }
}

/**
 * Counted sets of `addr . inet_proto . inet_service` (v4 and v6) looked up by an output rule, traffic sent
 * over loopback (UDP and TCP to closed ports: every packet still passes output), then the counters read
 * over netlink (NftSetCounters) and as libnftables lists them; an absent set's error.
 */
export async function nftSetCounters() {
  const nft = new Nftables();
  const counters = new NftSetCounters();
  try {
    await run(["ip", "link", "set", "lo", "up"]);
    await run(["ip", "-6", "addr", "add", "fd00:99::1/128", "dev", "lo", "nodad"]);
    const tx = new NftTransaction("inet", "krtcount");
    tx.add({ table: {} });
    for (const [f, addr] of [["4", "ipv4_addr"], ["6", "ipv6_addr"]]) {
      tx.add({ set: { name: `s${f}`, type: `${addr} . inet_proto . inet_service`, counter: true } });
    }
    tx.add({ chain: { name: "out", type: "filter", hook: "output", priority: -110 } });
    tx.add({ rule: { chain: "out", rule: "ip daddr . meta l4proto . th dport @s4" } });
    tx.add({ rule: { chain: "out", rule: "ip6 daddr . meta l4proto . th dport @s6" } });
    tx.add({ element: { set: "s4", key: ["127.0.0.1", "udp", "9"] } });
    tx.add({ element: { set: "s4", key: ["127.0.0.1", "tcp", "9"] } });
    tx.add({ element: { set: "s4", key: ["127.0.0.2", "sctp", "65535"] } });
    tx.add({ element: { set: "s6", key: ["fd00:99::1", "udp", "53"] } });
    await nft.run(tx);
    // node:dgram: Deno.listenDatagram needs --unstable-net, which _in_netns.ts does not pass.
    const send = async (type: "udp4" | "udp6", host: string, port: number, n: number) => {
      const sock = dgram.createSocket(type);
      for (let i = 0; i < n; i++) {
        await new Promise<void>((ok, fail) =>
          sock.send(new Uint8Array(100), port, host, (e) => e ? fail(e) : ok())
        );
      }
      sock.close();
    };
    await send("udp4", "127.0.0.1", 9, 5);
    await send("udp6", "fd00:99::1", 53, 3);
    const refused = await Deno.connect({ hostname: "127.0.0.1", port: 9 }).then(
      () => "connected",
      (e) => e.name,
    );
    const read = async (f: 4 | 6) => {
      const types = [f === 4 ? "ipv4_addr" : "ipv6_addr", "inet_proto", "inet_service"] as const;
      const out: (readonly [string | undefined, number, number])[] = [];
      await counters.read("inet", "krtcount", `s${f}`, (key, packets, bytes) => {
        out.push([decodeConcatKey(key, types)?.join(" . "), packets, bytes]);
      });
      return out.sort();
    };
    const listed = async (f: 4 | 6) => {
      const objs = await nft.list({ set: { family: "inet", table: "krtcount", name: `s${f}` } });
      const elems = (objs[0] as {
        set: {
          elem: { elem: { val: { concat: unknown[] }; counter: { packets: number; bytes: number } } }[];
        };
      })
        .set.elem;
      return elems.map((e) =>
        [e.elem.val.concat.join(" . "), e.elem.counter.packets, e.elem.counter.bytes] as const
      )
        .sort();
    };
    const missing = await counters.read("inet", "krtcount", "nosuchset", () => {}).then(
      () => undefined,
      (e) => errInfo(e),
    );
    return {
      v4: await read(4),
      v6: await read(6),
      listed4: await listed(4),
      listed6: await listed(6),
      refused,
      missing,
    };
  } finally {
    counters.close();
    nft.close();
  }
}

/** Lists and deletes conntrack entries matching a filter. */
export async function conntrackDelete(filter: ConntrackFilter, other: ConntrackFilter) {
  const ct = new Conntrack();
  try {
    const before = await ct.list(filter);
    const otherBefore = (await ct.list(other)).length;
    const deleted = await ct.deleteMatching(filter);
    const after = await ct.list(filter);
    const otherAfter = (await ct.list(other)).length;
    return { before, deleted, after: after.length, otherBefore, otherAfter, udp: IpProto.udp };
  } finally {
    ct.close();
  }
}

/** Reads and writes a per-namespace sysctl through /proc/sys. */
export async function sysctl() {
  const s = new ProcSysctl();
  const before = await s.get("net.ipv4.ip_forward");
  await s.set("net.ipv4.ip_forward", 1);
  const after = await s.get("net.ipv4.ip_forward");
  await s.set("net/ipv4/conf/lo/rp_filter", 2);
  const rp = await s.get("net.ipv4.conf.lo.rp_filter");
  const missing = await attempt(() => s.get("net.ipv4.nosuchkey"));
  return { before, after, rp, missing };
}

/** Closing a watch whose consumer stopped pulling (suspended at a yield) releases its sockets at once. */
export async function watchCloseWhileSuspended() {
  const r = new Rtnetlink();
  try {
    await withBridge(r);
    const fds = () => [...Deno.readDirSync("/proc/self/fd")].length;
    const before = fds();
    const w = r.watch(["route"], { families: [4] });
    const it = w[Symbol.asyncIterator]();
    const first = it.next();
    await run(["ip", "route", "add", "10.43.0.0/16", "via", "10.9.0.2"]);
    const got = await first;
    const during = fds();
    w.close();
    const after = fds();
    const end = await it.next();
    return { got: !got.done, during: during - before, after: after - before, ended: end.done === true };
  } finally {
    r.close();
  }
}

/** Large loads can go through a child `nft -f -`; errors (with the failing operation) and atomicity are the same. */
export async function nftChildProcess() {
  const nft = new Nftables({ outOfProcessAboveBytes: 0 });
  try {
    const tx = () => new NftTransaction("ip", "krtchild");
    await nft.run(
      tx().add({ table: {} }).add({ set: { name: "s", type: "ipv4_addr" } })
        .add({ element: { set: "s", key: ["10.0.0.1"] } }).add({ element: { set: "s", key: ["10.0.0.2"] } }),
    );
    const set = await nft.list({ set: { family: "ip", table: "krtchild", name: "s" } });
    let operations: readonly number[] = [];
    const failure = await attempt(() =>
      nft.run(
        tx().add({ element: { set: "s", key: ["10.0.0.3"] } }).delete({ chain: { name: "doesnotexist" } }),
      ).catch((e) => {
        if (e instanceof NftError) operations = e.operations;
        throw e;
      })
    );
    const after = await nft.list({ set: { family: "ip", table: "krtchild", name: "s" } });
    const dry = await attempt(() =>
      nft.check(new NftTransaction("ip", "doesnotexist").delete({ table: {} }))
    );
    await nft.check(new NftTransaction("ip", "dryonly").add({ table: {} }));
    const ruleset = (await nft.list({ ruleset: true })).map((o) => Object.values(o)[0] as { name: string })
      .map((o) => o.name);
    return { set, failure, operations, after, dry, ruleset };
  } finally {
    nft.close();
  }
}

/** With no nft binary to start, out-of-process loads and listings are done in process instead. */
export async function nftChildMissing() {
  Deno.env.set("KUBE_ROUTER_NFT", "/nonexistent/nft");
  const nft = new Nftables({ outOfProcessAboveBytes: 0 });
  try {
    await nft.run(
      new NftTransaction("ip", "krtnochild").add({ table: {} }).add({ set: { name: "s", type: "ipv4_addr" } })
        .add({ element: { set: "s", key: ["10.0.0.7"] } }),
      { outOfProcess: true },
    );
    const set = await nft.list({ set: { family: "ip", table: "krtnochild", name: "s" } }, {
      outOfProcess: true,
    });
    return { elems: (set[0]?.set as { elem?: string[] })?.elem ?? [] };
  } finally {
    nft.close();
    Deno.env.delete("KUBE_ROUTER_NFT");
  }
}

/** The proxy's kinds of maps and sets, as the netlink scenarios declare them: v6, v4, eps, pairs. */
function addServiceLikeSets(tx: NftTransaction): NftTransaction {
  return tx
    .add({ map: { name: "v6", type: "ipv6_addr . inet_proto . inet_service", map: "verdict" } })
    .add({ map: { name: "v4", type: "ipv4_addr", map: "verdict" } })
    .add({
      map: {
        name: "eps",
        type: "typeof ip daddr . th dport . numgen random mod 65536",
        map: "ip daddr . tcp dport",
      },
    })
    .add({ set: { name: "pairs", type: "ipv4_addr . ipv4_addr" } });
}

/**
 * Nftables.listLayout / listElements (read over netlink) on a table holding what nft prints in several
 * ways: IPv6 and IPv4 verdict maps with every verdict kind, a typeof map keyed by a numgen slot, a set of
 * address pairs, a counted set, a set whose elements time out, an empty map, and sets it must refuse
 * (interval, ether_addr). Returns what it read, the refusals, and 3,000 elements read in several datagrams.
 */
export async function nftNetlinkListing() {
  const nft = new Nftables();
  try {
    const tx = new NftTransaction("inet", "krtnl")
      .add({ table: {} })
      .add({ chain: { name: "a" } })
      .add({ chain: { name: "b" } });
    addServiceLikeSets(tx)
      .add({ set: { name: "counted", type: "ipv4_addr . inet_proto . inet_service", counter: true } })
      .add({ set: { name: "aff", type: "ipv4_addr", flags: ["timeout"], timeout: "1h" } })
      .add({ map: { name: "empty", type: "ipv4_addr", map: "verdict" } })
      .add({ set: { name: "cidrs", type: "ipv4_addr", flags: ["interval"] } })
      .add({ set: { name: "macs", type: "ether_addr" } })
      .add({ element: { set: "v6", key: ["fd00:172::10", "tcp", "80"], value: ["goto a"] } })
      .add({ element: { set: "v6", key: ["2001:db8::1", "udp", "53"], value: ["jump b"] } })
      .add({ element: { set: "v6", key: ["::1", "sctp", "3868"], value: ["drop"] } })
      .add({ element: { set: "v4", key: ["10.0.0.1"], value: ["accept"] } })
      .add({ element: { set: "v4", key: ["10.0.0.2"], value: ["return"] } })
      .add({ element: { set: "eps", key: ["10.96.0.1", "80", "0"], value: ["10.1.2.5", "8080"] } })
      .add({ element: { set: "eps", key: ["10.96.0.1", "80", "65535"], value: ["10.1.2.6", "8080"] } })
      .add({ element: { set: "pairs", key: ["10.1.1.5", "10.1.1.5"] } })
      .add({ element: { set: "counted", key: ["10.96.0.1", "tcp", "80"] } })
      .add({ element: { set: "aff", key: ["10.9.9.9"] } })
      .add({ element: { set: "cidrs", key: ["10.1.0.0/16"] } })
      .add({ element: { set: "macs", key: ["02:00:00:00:00:01"] } })
      .add({ map: { name: "big", type: "ipv4_addr . inet_service", map: "verdict" } });
    for (let i = 0; i < 3000; i++) {
      tx.add({
        element: { set: "big", key: [`10.200.${i >> 8}.${i & 255}`, String(1000 + i)], value: ["goto a"] },
      });
    }
    await nft.run(tx);
    const table = { family: "inet", name: "krtnl" };
    const layout = (await nft.listLayout(table))!;
    const read: Record<string, [string, string][]> = {};
    const refused: string[] = [];
    let big = 0, bigFirst = "";
    for (const s of layout.sets) {
      const got: [string, string][] = [];
      try {
        await nft.listElements(table, s, (k, v) => {
          if (s.name === "big") {
            if (!big++) bigFirst = `${k} : ${v}`;
          } else got.push([k, v]);
        });
      } catch (e) {
        refused.push(`${s.name} ${(e as Error).name}`);
        continue;
      }
      if (s.name !== "big") read[s.name] = got.sort();
    }
    return {
      chains: layout.chains.sort(),
      sets: layout.sets.map((s) => `${s.name}${s.map ? " map" : ""}${s.interval ? " interval" : ""}`).sort(),
      read,
      refused: refused.sort(),
      big,
      bigFirst,
      gone: (await nft.listLayout({ family: "inet", name: "nosuchtable" })) ?? null,
    };
  } finally {
    nft.close();
  }
}

/**
 * Nftables.run with elementsOverNetlink (and a plain run of elements only) against the same operations
 * through nft's text: two tables built from
 * one list of operations (every element type nft_elements.ts writes, elements of an interval set and of a
 * type it does not write, a chain the elements jump to declared between element runs, 3,000 elements
 * spread over several messages, deletions), one applied each way; returns both listings with the table's
 * name taken out, and the errors of refused element batches (what they name, what they left behind).
 */
export async function nftElementsOverNetlink() {
  const nft = new Nftables();
  const build = (table: string, half: "first" | "second") => {
    const tx = new NftTransaction("inet", table);
    if (half === "first") {
      addServiceLikeSets(tx.add({ table: {} }).add({ chain: { name: "a" } }))
        .add({ set: { name: "pairs6", type: "ipv6_addr . ipv6_addr" } })
        .add({ set: { name: "counted", type: "ipv4_addr . inet_proto . inet_service", counter: true } })
        .add({ set: { name: "ports", type: "inet_service" } })
        .add({ set: { name: "cidrs", type: "ipv4_addr", flags: ["interval"] } })
        .add({ set: { name: "macs", type: "ether_addr" } })
        .add({ map: { name: "big", type: "ipv4_addr . inet_service", map: "verdict" } })
        .addElement("v6", "fd00:172::10 . tcp . 80", "goto a")
        .addElement("v6", "::1 . sctp . 3868", "drop")
        .addElement("v4", "10.0.0.1", "accept")
        .addElement("v4", "10.0.0.2", "return")
        .addElement("v4", "10.0.0.3", "continue")
        .addElement("eps", "10.96.0.1 . 80 . 0", "10.1.2.5 . 8080")
        .addElement("eps", "10.96.0.1 . 80 . 65535", "10.1.2.6 . 8080")
        .addElement("eps", "10.96.0.1 . 80 . 7", "10.1.2.7 . 8080")
        .addElement("pairs", "10.1.1.5 . 10.1.1.5")
        .addElement("pairs6", "fd00::5 . fd00::5")
        .addElement("counted", "10.96.0.1 . tcp . 80")
        .addElement("counted", "10.96.0.1 . udp . 53")
        .addElement("ports", "443")
        // A chain declared between element runs; the next run's elements jump to it.
        .add({ chain: { name: "b" } })
        .addElement("v6", "2001:db8::1 . udp . 53", "jump b")
        .add({ chain: { name: "c" } })
        // A run holding elements netlink does not write (an interval, a MAC address) goes to nft whole.
        .addElement("cidrs", "10.1.0.0/16")
        .addElement("macs", "02:00:00:00:00:01")
        .addElement("ports", "8443");
      for (let i = 0; i < 3000; i++) {
        tx.addElement("big", `10.200.${i >> 8}.${i & 255} . ${1000 + i}`, "goto a");
      }
    } else {
      tx.deleteElement("v4", "10.0.0.2").deleteElement("eps", "10.96.0.1 . 80 . 7");
      for (let i = 0; i < 3000; i += 2) tx.deleteElement("big", `10.200.${i >> 8}.${i & 255} . ${1000 + i}`);
      // Identical to what is there: no error, as for nft's `add element`.
      tx.addElement("v4", "10.0.0.1", "accept");
    }
    return tx;
  };
  const listing = async (table: string) =>
    (await nft.dumpText({ family: "inet", name: table })).replaceAll(table, "T");
  const refusal = async (tx: NftTransaction) => {
    try {
      await nft.run(tx, { elementsOverNetlink: true });
      return { ok: true, message: "", operations: [] as number[], notFound: false };
    } catch (e) {
      const err = e as NftError;
      return {
        ok: false,
        name: err.name,
        message: err.nftMessage,
        operations: [...err.operations],
        notFound: isNotFound(err),
      };
    }
  };
  try {
    for (const half of ["first", "second"] as const) {
      // The reference through nft's own text; the first half split into runs, the second (elements only)
      // one plain run, which is written over netlink whole.
      await nft.applyText(build("krttext", half).render());
      await nft.run(build("krtnl", half), half === "first" ? { elementsOverNetlink: true } : {});
    }
    const text = await listing("krttext");
    const overNetlink = await listing("krtnl");
    const runs = nft.elementRuns;
    // Refused: a key already there with another value (operation 2), then a key not there (operation 1),
    // each in a batch whose other elements must not stay.
    const clash = await refusal(
      new NftTransaction("inet", "krtnl")
        .addElement("v4", "10.0.0.9", "accept")
        .addElement("v4", "10.0.0.8", "accept")
        .addElement("v4", "10.0.0.1", "drop")
        .addElement("v4", "10.0.0.7", "accept"),
    );
    const missing = await refusal(
      new NftTransaction("inet", "krtnl")
        .deleteElement("pairs", "10.1.1.5 . 10.1.1.5")
        .deleteElement("pairs", "10.9.9.9 . 10.9.9.9"),
    );
    // A chain that is not there, named by a verdict after an earlier run of operations went through.
    const noChain = await refusal(
      new NftTransaction("inet", "krtnl")
        .add({ chain: { name: "d" } })
        .addElement("v4", "10.0.0.20", "goto d")
        .addElement("v4", "10.0.0.21", "goto nosuchchain"),
    );
    return { text, overNetlink, runs, clash, missing, noChain, after: await listing("krtnl") };
  } finally {
    nft.close();
  }
}
