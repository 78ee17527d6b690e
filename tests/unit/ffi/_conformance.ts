/**
 * ONE conformance suite for the `Rtnl` and `NftRuleset` interfaces. tests/unit/ffi/fake_conformance_test.ts
 * runs every case against the in-memory fakes; tests/integration/ffi/kernel_conformance_test.ts runs the
 * very same cases against the real kernel, each in its own throwaway namespace. A case gets a fresh
 * implementation (an empty namespace: only `lo`) and asserts only what both must do identically.
 */
import assert from "node:assert/strict";
import {
  isBusy,
  isExists,
  isNotFound,
  type NftObject,
  type NftRuleset,
  NftTransaction,
  type Route,
  RouteProtocol,
  RouteScope,
  RouteType,
  type Rtnl,
  type RtnlEvent,
} from "../../../ffi/mod.ts";
import { dumpOf, nftTxCases } from "./_nft_conformance.ts";
import { nftProxyCases } from "./_nft_proxy_conformance.ts";

export interface Case<T> {
  name: string;
  fn: (impl: T) => Promise<void>;
}

/** Asserts that `p` rejects with an error `pred` accepts. */
export async function rejects(
  p: Promise<unknown>,
  pred: (e: unknown) => boolean,
  what: string,
): Promise<void> {
  try {
    await p;
  } catch (e) {
    assert.ok(pred(e), `${what}: unexpected error ${String(e)}`);
    return;
  }
  assert.fail(`${what}: expected an error`);
}

function code(e: unknown): string | undefined {
  return (e as { code?: string }).code;
}

/** A bridge "cbr0", up, with 10.9.0.1/24 and fd09::1/64; returns its index. */
async function bridge(r: Rtnl): Promise<number> {
  await r.linkAdd({ kind: "bridge", name: "cbr0", up: true });
  const l = await r.linkGet("cbr0");
  assert.ok(l);
  await r.addrAdd({ family: 4, index: l.index, address: "10.9.0.1", prefix: 24 });
  await r.addrAdd({ family: 6, index: l.index, address: "fd09::1", prefix: 64, nodad: true });
  return l.index;
}

function key(r: Route): string {
  return `${r.family} ${r.table} ${r.dst}`;
}

export const rtnlCases: Case<Rtnl>[] = [
  {
    name: "a new namespace has only lo, which is up",
    fn: async (r) => {
      const links = await r.linkList();
      assert.deepEqual(links.map((l) => [l.name, l.up]), [["lo", true]]);
    },
  },
  {
    name: "a bridge is created once and a second add of the name fails as exists",
    fn: async (r) => {
      await r.linkAdd({ kind: "bridge", name: "cbr0", mtu: 1400 });
      const l = await r.linkGet("cbr0");
      assert.equal(l?.kind, "bridge");
      assert.equal(l?.mtu, 1400);
      assert.equal(l?.up, false);
      await rejects(r.linkAdd({ kind: "bridge", name: "cbr0" }), isExists, "second add");
    },
  },
  {
    name: "a veth pair creates both ends pointing at each other, and deleting one end removes both",
    fn: async (r) => {
      await r.linkAdd({ kind: "veth", name: "cv0", peer: "cv1" });
      const a = await r.linkGet("cv0");
      const b = await r.linkGet("cv1");
      assert.equal(a?.kind, "veth");
      assert.equal(a?.link, b?.index);
      assert.equal(b?.link, a?.index);
      await r.linkDel("cv1");
      assert.equal(await r.linkGet("cv0"), undefined);
      assert.equal(await r.linkGet("cv1"), undefined);
    },
  },
  {
    name: "linkSet changes up, mtu, master and name; nomaster clears the master",
    fn: async (r) => {
      await r.linkAdd({ kind: "bridge", name: "cbr0" });
      await r.linkAdd({ kind: "veth", name: "cv0", peer: "cv1" });
      await r.linkSet("cv0", { up: true, mtu: 1300, master: "cbr0" });
      const br = await r.linkGet("cbr0");
      let v = await r.linkGet("cv0");
      assert.equal(v?.up, true);
      assert.equal(v?.mtu, 1300);
      assert.equal(v?.master, br?.index);
      await r.linkSet("cv0", { master: null, up: false, name: "cv9" });
      v = await r.linkGet("cv9");
      assert.equal(v?.master, undefined);
      assert.equal(v?.up, false);
      assert.equal(await r.linkGet("cv0"), undefined);
    },
  },
  {
    name: "a vxlan device keeps its VNI, port, local address and learning flag",
    fn: async (r) => {
      await r.linkAdd({
        kind: "vxlan",
        name: "cvx0",
        vni: 77,
        port: 4789,
        local: "10.250.0.1",
        learning: false,
      });
      const l = await r.linkGet("cvx0");
      assert.deepEqual(l?.vxlan, { vni: 77, port: 4789, local: "10.250.0.1", learning: false });
    },
  },
  {
    name: "a link created up with a MAC address and a vxlan over it with a remote keep what was asked",
    fn: async (r) => {
      await r.linkAdd({ kind: "bridge", name: "cbr0", up: true, mac: "02:aa:bb:cc:dd:ee" });
      const br = await r.linkGet("cbr0");
      assert.deepEqual([br?.up, br?.mac], [true, "02:aa:bb:cc:dd:ee"]);
      await r.linkAdd({
        kind: "vxlan",
        name: "cvx1",
        vni: 9,
        port: 4789,
        remote: "10.250.0.9",
        dev: br!.index,
      });
      const vx = await r.linkGet("cvx1");
      assert.deepEqual([vx?.vxlan?.remote, vx?.vxlan?.dev, vx?.vxlan?.vni], ["10.250.0.9", br!.index, 9]);
      await r.linkSet("cbr0", { mac: "02:aa:bb:cc:dd:ef" });
      assert.equal((await r.linkGet("cbr0"))?.mac, "02:aa:bb:cc:dd:ef");
    },
  },
  {
    name:
      "deleting, changing or enslaving to a missing link fails as not found, and linkGet returns undefined",
    fn: async (r) => {
      assert.equal(await r.linkGet("nosuch0"), undefined);
      await rejects(r.linkDel("nosuch0"), isNotFound, "linkDel");
      await rejects(r.linkSet("nosuch0", { up: true }), isNotFound, "linkSet");
      await rejects(r.linkAdd({ kind: "bridge", name: "cbr0", master: "nosuch0" }), isNotFound, "master");
    },
  },
  {
    name: "addresses are added once, listed per interface and deleted; deleting twice fails as not found",
    fn: async (r) => {
      await r.linkAdd({ kind: "bridge", name: "cbr0", up: true });
      const index = (await r.linkGet("cbr0"))!.index;
      await r.addrAdd({ family: 4, index, address: "10.77.0.1", prefix: 24 });
      await r.addrAdd({ family: 6, index, address: "fd77:0:0::1", prefix: 64, nodad: true });
      await rejects(r.addrAdd({ family: 4, index, address: "10.77.0.1", prefix: 24 }), isExists, "duplicate");
      const listed = (await r.addrList({ index })).filter((a) => a.scope === RouteScope.universe);
      assert.deepEqual(listed.map((a) => `${a.address}/${a.prefix}`).sort(), ["10.77.0.1/24", "fd77::1/64"]);
      assert.deepEqual((await r.addrList({ index, family: 4 })).map((a) => a.address), ["10.77.0.1"]);
      await r.addrDel({ family: 4, index, address: "10.77.0.1", prefix: 24 });
      await rejects(
        r.addrDel({ family: 4, index, address: "10.77.0.1", prefix: 24 }),
        isNotFound,
        "second del",
      );
      await rejects(
        r.addrAdd({ family: 4, index: 9999, address: "10.78.0.1", prefix: 24 }),
        isNotFound,
        "no dev",
      );
    },
  },
  {
    name: "an address batch adds and deletes in order and reports each failure by index, the rest applied",
    fn: async (r) => {
      await r.linkAdd({ kind: "bridge", name: "cbr0", up: true });
      const index = (await r.linkGet("cbr0"))!.index;
      const v4 = (address: string) => ({ family: 4 as const, index, address, prefix: 32 });
      const res = await r.addrBatch([
        { op: "add", addr: v4("10.77.1.1") },
        { op: "add", addr: v4("10.77.1.2") },
        { op: "add", addr: v4("10.77.1.1") },
        { op: "add", addr: { family: 6, index, address: "fd77::5", prefix: 128, nodad: true } },
        { op: "del", addr: v4("10.77.1.9") },
        { op: "add", addr: v4("10.77.1.3") },
        { op: "del", addr: v4("10.77.1.2") },
      ]);
      assert.equal(res.ok, 5);
      assert.deepEqual(res.failures.map((f) => f.index), [2, 4]);
      assert.ok(isExists(res.failures[0]!.error), String(res.failures[0]!.error));
      assert.match(res.failures[0]!.error.message, /^ip addr add 10\.77\.1\.1\/32/);
      assert.ok(isNotFound(res.failures[1]!.error), String(res.failures[1]!.error));
      const listed = (await r.addrList({ index })).filter((a) => a.scope === RouteScope.universe);
      assert.deepEqual(listed.map((a) => `${a.address}/${a.prefix}`).sort(), [
        "10.77.1.1/32",
        "10.77.1.3/32",
        "fd77::5/128",
      ]);
      assert.deepEqual(await r.addrBatch([]), { ok: 0, failures: [] });
    },
  },
  {
    name: "a route via a gateway gets iproute2's defaults and the device of the connected subnet",
    fn: async (r) => {
      const dev = await bridge(r);
      await r.routeAdd({ family: 4, dst: "10.1.2.0/24", gateway: "10.9.0.2", table: 100 });
      const [got] = await r.routeList({ table: 100 });
      assert.deepEqual(got, {
        family: 4,
        dst: "10.1.2.0/24",
        table: 100,
        protocol: RouteProtocol.boot,
        scope: RouteScope.universe,
        type: RouteType.unicast,
        gateway: "10.9.0.2",
        dev,
      });
    },
  },
  {
    name: "a route via a device without a gateway gets link scope",
    fn: async (r) => {
      const dev = await bridge(r);
      await r.routeAdd({ family: 4, dst: "10.1.4.0/24", dev, table: 100, protocol: RouteProtocol.zebra });
      const [got] = await r.routeList({ table: 100 });
      assert.equal(got?.scope, RouteScope.link);
      assert.equal(got?.protocol, RouteProtocol.zebra);
      assert.equal(got?.gateway, undefined);
    },
  },
  {
    name:
      "adding a route twice fails as exists, replace overwrites it, and deleting twice fails as not found",
    fn: async (r) => {
      await bridge(r);
      const route: Route = { family: 4, dst: "10.1.2.0/24", gateway: "10.9.0.2", table: 100, protocol: 17 };
      await r.routeAdd(route);
      await rejects(r.routeAdd(route), isExists, "second add");
      await r.routeReplace({ ...route, gateway: "10.9.0.3" });
      const listed = await r.routeList({ table: 100 });
      assert.deepEqual(listed.map((x) => x.gateway), ["10.9.0.3"]);
      await r.routeDel({ family: 4, dst: "10.1.2.0/24", table: 100 });
      assert.deepEqual(await r.routeList({ table: 100 }), []);
      await rejects(r.routeDel({ family: 4, dst: "10.1.2.0/24", table: 100 }), isNotFound, "second del");
    },
  },
  {
    name: "a gateway outside every connected subnet is unreachable, and a missing device is not found",
    fn: async (r) => {
      await bridge(r);
      await rejects(
        r.routeAdd({ family: 4, dst: "10.1.6.0/24", gateway: "192.0.2.1", table: 100 }),
        (e) => code(e) === "ENETUNREACH",
        "unreachable gateway",
      );
      await rejects(
        r.routeAdd({ family: 4, dst: "10.1.7.0/24", dev: 9999, table: 100 }),
        isNotFound,
        "missing dev",
      );
      assert.deepEqual(await r.routeList({ table: 100 }), []);
    },
  },
  {
    name: "an ECMP route keeps its next hops and weights",
    fn: async (r) => {
      const dev = await bridge(r);
      await r.routeAdd({
        family: 4,
        dst: "10.1.3.0/24",
        table: 100,
        nexthops: [{ gateway: "10.9.0.2", weight: 3 }, { gateway: "10.9.0.3" }],
      });
      const [got] = await r.routeList({ table: 100 });
      assert.deepEqual(got?.nexthops, [{ gateway: "10.9.0.2", dev, weight: 3 }, {
        gateway: "10.9.0.3",
        dev,
        weight: 1,
      }]);
    },
  },
  {
    name: "an IPv6 route gets metric 1024 by default and an IPv4 route reports no metric",
    fn: async (r) => {
      const dev = await bridge(r);
      await r.routeAdd({ family: 6, dst: "fd01::/64", gateway: "fd09::2", dev, table: 100 });
      await r.routeAdd({ family: 4, dst: "10.1.2.0/24", gateway: "10.9.0.2", table: 100 });
      const routes = new Map((await r.routeList({ table: 100 })).map((x) => [x.dst, x]));
      assert.equal(routes.get("fd01::/64")?.metric, 1024);
      assert.equal(routes.get("fd01::/64")?.gateway, "fd09::2");
      assert.equal(routes.get("10.1.2.0/24")?.metric, undefined);
      assert.deepEqual((await r.routeList({ table: 100, family: 6 })).map((x) => x.dst), ["fd01::/64"]);
    },
  },
  {
    name: "a blackhole route needs no next hop",
    fn: async (r) => {
      await r.routeAdd({ family: 4, dst: "10.1.5.0/24", table: 100, type: RouteType.blackhole });
      const [got] = await r.routeList({ table: 100 });
      assert.equal(got?.type, RouteType.blackhole);
      assert.equal(got?.dev, undefined);
    },
  },
  {
    name: "a route batch applies what it can and reports each failure by its index",
    fn: async (r) => {
      await bridge(r);
      const mk = (i: number): Route => ({
        family: 4,
        dst: `10.2.${i}.0/24`,
        gateway: "10.9.0.2",
        table: 100,
      });
      const res = await r.routeBatch([
        { op: "add", route: mk(1) },
        { op: "add", route: mk(1) },
        { op: "add", route: mk(2) },
        { op: "del", route: mk(9) },
        { op: "replace", route: { ...mk(2), gateway: "10.9.0.4" } },
        { op: "add", route: { ...mk(3), dst: "10.2.3.0/99" } },
      ]);
      assert.equal(res.ok, 3);
      assert.deepEqual(
        res.failures.map((
          f,
        ) => [f.index, isExists(f.error), isNotFound(f.error), f.error instanceof TypeError]),
        [[1, true, false, false], [3, false, true, false], [5, false, false, true]],
      );
      const listed = (await r.routeList({ table: 100 })).sort((a, b) => key(a).localeCompare(key(b)));
      assert.deepEqual(listed.map((x) => [x.dst, x.gateway]), [["10.2.1.0/24", "10.9.0.2"], [
        "10.2.2.0/24",
        "10.9.0.4",
      ]]);
    },
  },
  {
    name: "taking a link down removes the IPv4 routes through it, and a route via a down link fails",
    fn: async (r) => {
      const dev = await bridge(r);
      await r.routeAdd({ family: 4, dst: "10.1.4.0/24", dev, table: 100 });
      await r.routeAdd({ family: 4, dst: "10.1.5.0/24", gateway: "10.9.0.2", table: 100 });
      await r.linkSet("cbr0", { up: false });
      assert.deepEqual(await r.routeList({ table: 100, family: 4 }), []);
      await rejects(
        r.routeAdd({ family: 4, dst: "10.1.6.0/24", dev, table: 100 }),
        (e) => code(e) === "ENETDOWN",
        "route via a down link",
      );
      await r.linkSet("cbr0", { up: true });
      assert.deepEqual(
        await r.routeList({ table: 100, family: 4 }),
        [],
        "routes do not come back by themselves",
      );
    },
  },
  {
    name:
      "an IPv4 address on an up link brings its connected route into main; down removes it, up restores it",
    fn: async (r) => {
      const dev = await bridge(r);
      const connected = async () =>
        (await r.routeList({ family: 4, table: 254 })).filter((x) => x.dev === dev).map((x) => [
          x.dst,
          x.protocol,
          x.scope,
          x.src,
        ]);
      assert.deepEqual(await connected(), [[
        "10.9.0.0/24",
        RouteProtocol.kernel,
        RouteScope.link,
        "10.9.0.1",
      ]]);
      await r.linkSet("cbr0", { up: false });
      assert.deepEqual(await connected(), []);
      await r.linkSet("cbr0", { up: true });
      assert.deepEqual(await connected(), [[
        "10.9.0.0/24",
        RouteProtocol.kernel,
        RouteScope.link,
        "10.9.0.1",
      ]]);
      await r.addrDel({ family: 4, index: dev, address: "10.9.0.1", prefix: 24 });
      assert.deepEqual(await connected(), []);
      await r.addrAdd({ family: 4, index: dev, address: "10.9.5.1", prefix: 32 });
      assert.deepEqual(await connected(), [], "a /32 has no connected route");
    },
  },
  {
    name: "deleting a link removes the routes through it",
    fn: async (r) => {
      const dev = await bridge(r);
      await r.routeAdd({ family: 4, dst: "10.1.4.0/24", dev, table: 100 });
      await r.linkDel("cbr0");
      assert.deepEqual(await r.routeList({ table: 100 }), []);
    },
  },
  {
    name: "policy rules are added once, listed in priority order with the defaults, and deleted",
    fn: async (r) => {
      await r.ruleAdd({ family: 4, priority: 100, src: "10.1.0.0/16", table: 77 });
      await r.ruleAdd({ family: 4, priority: 101, fwmark: 0x2000, fwmask: 0xf000, table: 300 });
      await rejects(
        r.ruleAdd({ family: 4, priority: 100, src: "10.1.0.0/16", table: 77 }),
        isExists,
        "duplicate",
      );
      const v4 = await r.ruleList(4);
      assert.deepEqual(v4.map((x) => [x.priority, x.table]), [[0, 255], [100, 77], [101, 300], [32766, 254], [
        32767,
        253,
      ]]);
      assert.equal(v4[1]?.src, "10.1.0.0/16");
      assert.deepEqual([v4[2]?.fwmark, v4[2]?.fwmask], [0x2000, 0xf000]);
      await r.ruleDel({ family: 4, priority: 100, src: "10.1.0.0/16", table: 77 });
      await rejects(
        r.ruleDel({ family: 4, priority: 100, src: "10.1.0.0/16", table: 77 }),
        isNotFound,
        "second del",
      );
      assert.deepEqual((await r.ruleList(6)).map((x) => [x.priority, x.table]), [[0, 255], [32766, 254]]);
    },
  },
  {
    name: "a rule without a priority goes just above main, a mark without a mask matches all bits",
    fn: async (r) => {
      await r.ruleAdd({ family: 4, fwmark: 0x10, table: 79 });
      await r.ruleAdd({ family: 4, iif: "cbr9", oif: "cbr8", invert: true, table: 78, priority: 200 });
      const rules = await r.ruleList(4);
      const mark = rules.find((x) => x.table === 79)!;
      assert.equal(mark.priority, 32765);
      assert.equal(mark.fwmask, 0xffffffff);
      const ifs = rules.find((x) => x.table === 78)!;
      assert.deepEqual([ifs.iif, ifs.oif, ifs.invert, ifs.priority], ["cbr9", "cbr8", true, 200]);
      await r.ruleDel({ family: 4, fwmark: 0x10, table: 79 });
      assert.equal((await r.ruleList(4)).find((x) => x.table === 79), undefined);
    },
  },
  {
    name: "neighbour entries are added once, replaced and deleted",
    fn: async (r) => {
      const dev = await bridge(r);
      await r.neighAdd({ family: 4, dev, dst: "10.9.0.7", lladdr: "02:00:00:00:00:07" });
      await rejects(
        r.neighAdd({ family: 4, dev, dst: "10.9.0.7", lladdr: "02:00:00:00:00:07" }),
        isExists,
        "duplicate",
      );
      await r.neighReplace({ family: 4, dev, dst: "10.9.0.7", lladdr: "02:00:00:00:00:08" });
      const mine = (await r.neighList({ dev, family: 4 })).filter((n) => n.dst === "10.9.0.7");
      assert.deepEqual(mine.map((n) => [n.lladdr, n.state]), [["02:00:00:00:00:08", 0x80]]);
      await r.neighDel({ family: 4, dev, dst: "10.9.0.7" });
      await rejects(r.neighDel({ family: 4, dev, dst: "10.9.0.7" }), isNotFound, "second del");
    },
  },
  {
    name: "a route watch sees a route being added and deleted",
    fn: async (r) => {
      await bridge(r);
      const w = r.watch(["route"], { families: [4] });
      const seen: RtnlEvent[] = [];
      const done = (async () => {
        for await (const ev of w) {
          if (ev.kind === "route" && ev.route.table === 100) seen.push(ev);
          if (seen.length === 2) break;
        }
      })();
      await r.routeAdd({ family: 4, dst: "10.3.0.0/16", gateway: "10.9.0.2", table: 100 });
      await r.routeDel({ family: 4, dst: "10.3.0.0/16", table: 100 });
      const timeout = new Promise<"timeout">((res) => setTimeout(() => res("timeout"), 5000));
      const outcome = await Promise.race([done.then(() => "done" as const), timeout]);
      w.close();
      assert.equal(outcome, "done");
      assert.deepEqual(
        seen.map((e) => e.kind === "route" && [e.action, e.route.dst, e.route.gateway]),
        [["new", "10.3.0.0/16", "10.9.0.2"], ["del", "10.3.0.0/16", "10.9.0.2"]],
      );
    },
  },
  {
    name: "listing one table returns only that table's routes, of the asked family",
    fn: async (r) => {
      const dev = await bridge(r);
      await r.routeAdd({ family: 4, dst: "10.4.0.0/16", gateway: "10.9.0.2", table: 100 });
      await r.routeAdd({ family: 4, dst: "10.5.0.0/16", gateway: "10.9.0.2", table: 101, protocol: 17 });
      await r.routeAdd({ family: 6, dst: "fd05::/64", gateway: "fd09::2", dev, table: 101, protocol: 17 });
      assert.deepEqual((await r.routeList({ table: 100 })).map((x) => x.dst), ["10.4.0.0/16"]);
      assert.deepEqual((await r.routeList({ table: 101, family: 4 })).map((x) => x.dst), ["10.5.0.0/16"]);
      assert.deepEqual((await r.routeList({ table: 101, family: 6 })).map((x) => x.dst), ["fd05::/64"]);
      assert.deepEqual(
        (await r.routeList({ protocol: 17 })).map((x) => x.dst).sort(),
        ["10.5.0.0/16", "fd05::/64"],
      );
    },
  },
  {
    name: "route get picks the longest matching route and reports gateway, device and source",
    fn: async (r) => {
      const dev = await bridge(r);
      await r.routeAdd({ family: 4, dst: "10.1.0.0/16", gateway: "10.9.0.2" });
      await r.routeAdd({ family: 4, dst: "10.1.2.0/24", gateway: "10.9.0.3" });
      const viaLonger = await r.routeGet("10.1.2.5");
      assert.deepEqual(
        [viaLonger?.dst, viaLonger?.gateway, viaLonger?.dev, viaLonger?.src],
        ["10.1.2.5/32", "10.9.0.3", dev, "10.9.0.1"],
      );
      assert.equal((await r.routeGet("10.1.3.5"))?.gateway, "10.9.0.2");
      const connected = await r.routeGet("10.9.0.77");
      assert.deepEqual([connected?.gateway, connected?.dev], [undefined, dev]);
      assert.equal(await r.routeGet("192.0.2.1"), undefined, "no default route: unreachable");
    },
  },
  {
    name: "a link watch sees a bridge being created and deleted, and an address watch sees its address",
    fn: async (r) => {
      const w = r.watch(["link", "addr"]);
      const seen: string[] = [];
      const done = (async () => {
        for await (const ev of w) {
          if (ev.kind === "link" && ev.link.name === "cbrw") {
            const last = seen[seen.length - 1];
            const tag = `link ${ev.action}`;
            if (last !== tag) seen.push(tag);
            if (ev.action === "del") break;
          }
          if (ev.kind === "addr" && ev.addr.address === "10.66.0.1") {
            seen.push(`addr ${ev.action} ${ev.addr.prefix}`);
          }
        }
      })();
      await r.linkAdd({ kind: "bridge", name: "cbrw", up: true });
      const index = (await r.linkGet("cbrw"))!.index;
      await r.addrAdd({ family: 4, index, address: "10.66.0.1", prefix: 24 });
      await r.linkDel("cbrw");
      const timeout = new Promise<"timeout">((res) => setTimeout(() => res("timeout"), 5000));
      const outcome = await Promise.race([done.then(() => "done" as const), timeout]);
      w.close();
      assert.equal(outcome, "done");
      assert.equal(seen[0], "link new");
      assert.ok(seen.includes("addr new 24"), seen.join(", "));
      assert.equal(seen[seen.length - 1], "link del");
    },
  },
];

/** Drops handles and sorts elements, so listings from nft and the fake compare equal. */
export function normalize(objs: NftObject[]): NftObject[] {
  return objs.map((o) => {
    const [k, v] = Object.entries(o)[0]!;
    const { handle: _h, ...rest } = v as Record<string, unknown>;
    if (Array.isArray(rest.elem)) {
      rest.elem = [...rest.elem].sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
    }
    return { [k]: rest };
  });
}

const T = { family: "ip", name: "ctest" };
const tx = () => new NftTransaction("ip", "ctest");
/** Table ip ctest with a chain "svc", a verdict map "vips" and a set "ips". */
const base = () =>
  tx().add({ table: {} }).add({ chain: { name: "svc" } })
    .add({ map: { name: "vips", type: "ipv4_addr", map: "verdict" } })
    .add({ set: { name: "ips", type: "ipv4_addr" } });
const mapRef = { family: "ip", table: "ctest", name: "vips" };
const setRef = { family: "ip", table: "ctest", name: "ips" };

/** Listing (libnftables' JSON) of what transactions wrote: the fake must list as nft does. */
const nftListCases: Case<NftRuleset>[] = [
  {
    name: "a verdict map applied in one transaction lists back with its elements",
    fn: async (n) => {
      await n.run(
        base()
          .add({ element: { set: "vips", key: ["10.0.0.2"], value: ["jump svc"] } })
          .add({ element: { set: "vips", key: ["10.0.0.1"], value: ["accept"] } }),
      );
      const listed = normalize(await n.list({ map: mapRef }));
      assert.deepEqual(listed, [{
        map: {
          family: "ip",
          name: "vips",
          table: "ctest",
          type: "ipv4_addr",
          map: "verdict",
          elem: [["10.0.0.1", { accept: null }], ["10.0.0.2", { jump: { target: "svc" } }]],
        },
      }]);
    },
  },
  {
    name: "listing a table shows the table, its sets and maps, and its chains",
    fn: async (n) => {
      await n.run(base());
      const kinds = (await n.list({ table: T })).map((o) => Object.keys(o)[0]);
      assert.deepEqual(kinds, ["table", "map", "set", "chain"]);
    },
  },
  {
    name: "creating an existing table fails as exists while adding it again is a no-op",
    fn: async (n) => {
      await n.run(base());
      await n.run(tx().add({ table: {} }));
      await rejects(n.run(tx().create({ table: {} })), isExists, "create");
    },
  },
  {
    name: "a transaction with one failing command changes nothing",
    fn: async (n) => {
      await n.run(base());
      const before = normalize(await n.list({ ruleset: true }));
      await rejects(
        n.run(
          tx().add({ chain: { name: "other" } })
            .add({ element: { set: "ips", key: ["10.0.0.9"] } })
            .delete({ set: { name: "absent", type: "ipv4_addr" } }),
        ),
        isNotFound,
        "failing transaction",
      );
      assert.deepEqual(normalize(await n.list({ ruleset: true })), before);
    },
  },
  {
    name: "elements are added and deleted one by one, and deleting a missing element fails as not found",
    fn: async (n) => {
      await n.run(base());
      await n.run(
        tx().add({ element: { set: "ips", key: ["10.0.0.1"] } }).add({
          element: { set: "ips", key: ["10.0.0.2"] },
        }),
      );
      await n.run(tx().delete({ element: { set: "ips", key: ["10.0.0.1"] } }));
      const [set] = normalize(await n.list({ set: setRef }));
      assert.deepEqual((set?.set as { elem?: unknown[] }).elem, ["10.0.0.2"]);
      await rejects(
        n.run(tx().delete({ element: { set: "ips", key: ["10.0.0.1"] } })),
        isNotFound,
        "missing element",
      );
    },
  },
  {
    name: "a terse listing leaves out set and map elements",
    fn: async (n) => {
      await n.run(base().add({ element: { set: "ips", key: ["10.0.0.1"] } }));
      const terse = normalize(await n.list({ table: T }, { terse: true }));
      assert.ok(terse.every((o) => !("elem" in (Object.values(o)[0] as object))));
      const full = normalize(await n.list({ set: setRef }));
      assert.deepEqual((full[0]?.set as { elem?: unknown[] }).elem, ["10.0.0.1"]);
    },
  },
  {
    name: "flushing a map empties it",
    fn: async (n) => {
      await n.run(base().add({ element: { set: "vips", key: ["10.0.0.1"], value: ["drop"] } }));
      await n.run(tx().flush({ map: { name: "vips", type: "ipv4_addr", map: "verdict" } }));
      const [m] = await n.list({ map: mapRef });
      assert.equal((m?.map as { elem?: unknown[] }).elem, undefined);
    },
  },
  {
    name: "deleting a missing table and listing a missing set fail as not found",
    fn: async (n) => {
      await rejects(n.run(tx().delete({ table: {} })), isNotFound, "delete table");
      await n.run(base());
      await rejects(
        n.list({ set: { family: "ip", table: "ctest", name: "absent" } }),
        isNotFound,
        "list set",
      );
    },
  },
  {
    name: "rules are listed with their handles and deleted by handle",
    fn: async (n) => {
      const rule = (port: number) => ({ rule: { chain: "svc", rule: `udp dport ${port} accept` } });
      await n.run(base().add(rule(53)).add(rule(54)));
      const listed = await n.list({ chain: { family: "ip", table: "ctest", name: "svc" } });
      assert.deepEqual(listed.map((o) => Object.keys(o)[0]), ["chain", "rule", "rule"]);
      const handles = listed.filter((o) => "rule" in o).map((o) => (o.rule as { handle: number }).handle);
      assert.ok(handles.every((h) => typeof h === "number"));
      await n.run(tx().delete({ rule: { chain: "svc", rule: "", handle: handles[0]! } }));
      const after = (await n.list({ chain: { family: "ip", table: "ctest", name: "svc" } })).filter((o) =>
        "rule" in o
      );
      assert.deepEqual(after.map((o) => (o.rule as { handle: number }).handle), [handles[1]]);
      assert.match(await dumpOf(n), /chain svc \{\n\t\tudp dport 54 accept\n\t\}/);
      await rejects(
        n.run(tx().delete({ rule: { chain: "svc", rule: "", handle: handles[0]! } })),
        isNotFound,
        "deleting a deleted rule",
      );
    },
  },
  {
    name: "a base chain keeps its type, hook, priority and policy",
    fn: async (n) => {
      await n.run(
        tx().add({ table: {} }).add({
          chain: { name: "pre", type: "nat", hook: "prerouting", priority: -100, policy: "accept" },
        }),
      );
      const listed = normalize(await n.list({ chain: { family: "ip", table: "ctest", name: "pre" } }));
      const chain = {
        family: "ip",
        table: "ctest",
        name: "pre",
        type: "nat",
        hook: "prerouting",
        prio: -100,
        policy: "accept",
      };
      assert.deepEqual(listed, [{ chain }]);
    },
  },
  {
    name: "interval sets and concatenated verdict maps list back in nft's JSON forms",
    fn: async (n) => {
      await n.run(
        base()
          .add({ set: { name: "cidrs", type: "ipv4_addr", flags: ["interval"] } })
          .add({ element: { set: "cidrs", key: ["10.0.0.0/8"] } })
          .add({ element: { set: "cidrs", key: ["192.168.1.1"] } })
          .add({ element: { set: "cidrs", key: ["172.16.0.1-172.16.0.9"] } })
          .add({ map: { name: "svcports", type: "ipv4_addr . inet_proto . inet_service", map: "verdict" } })
          .add({ element: { set: "svcports", key: ["10.0.0.1", "tcp", "80"], value: ["goto svc"] } }),
      );
      const [gotSet] = normalize(await n.list({ set: { family: "ip", table: "ctest", name: "cidrs" } }));
      assert.deepEqual(
        gotSet,
        normalize([{
          set: {
            family: "ip",
            table: "ctest",
            name: "cidrs",
            type: "ipv4_addr",
            flags: ["interval"],
            elem: [{ prefix: { addr: "10.0.0.0", len: 8 } }, "192.168.1.1", {
              range: ["172.16.0.1", "172.16.0.9"],
            }],
          },
        }])[0],
      );
      const [gotMap] = normalize(await n.list({ map: { family: "ip", table: "ctest", name: "svcports" } }));
      assert.deepEqual(gotMap, {
        map: {
          family: "ip",
          table: "ctest",
          name: "svcports",
          type: ["ipv4_addr", "inet_proto", "inet_service"],
          map: "verdict",
          elem: [[{ concat: ["10.0.0.1", "tcp", 80] }, { goto: { target: "svc" } }]],
        },
      });
    },
  },
  {
    name: "a verdict naming a missing chain fails as not found and changes nothing",
    fn: async (n) => {
      await n.run(base());
      await rejects(
        n.run(tx().add({ element: { set: "vips", key: ["10.0.0.1"], value: ["jump nochain"] } })),
        isNotFound,
        "jump to a missing chain",
      );
      const [m] = await n.list({ map: mapRef });
      assert.equal((m?.map as { elem?: unknown[] }).elem, undefined);
    },
  },
  {
    name: "a chain that is jumped to cannot be deleted, while a chain with rules is deleted with them",
    fn: async (n) => {
      await n.run(
        base()
          .add({ chain: { name: "other" } })
          .add({ chain: { name: "full" } })
          .add({ rule: { chain: "full", rule: "accept" } })
          .add({ element: { set: "vips", key: ["10.0.0.1"], value: ["jump svc"] } }),
      );
      await rejects(n.run(tx().delete({ chain: { name: "svc" } })), isBusy, "jumped to");
      await n.run(tx().delete({ chain: { name: "full" } }));
      await n.run(tx().delete({ chain: { name: "other" } }));
      const listed = await n.list({ table: T });
      assert.deepEqual(listed.filter((o) => "chain" in o).map((o) => (o.chain as { name: string }).name), [
        "svc",
      ]);
      assert.equal(listed.filter((o) => "rule" in o).length, 0);
    },
  },
  {
    name: "deleting a table removes everything in it",
    fn: async (n) => {
      await n.run(base());
      await n.run(tx().delete({ table: {} }));
      assert.deepEqual(await n.list({ ruleset: true }), []);
    },
  },
];

export const nftCases: Case<NftRuleset>[] = [...nftListCases, ...nftTxCases, ...nftProxyCases];
