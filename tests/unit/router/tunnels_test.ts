/** IpTunnels (IPIP and FoU tunnels to nodes in other subnets) against FakeRtnetlink and FakeFou. */
import assert from "node:assert/strict";
import { getLogger, MemorySink } from "../../../core/log.ts";
import { FakeFou, FakeRtnetlink, NetlinkError, type Rtnl } from "../../../ffi/mod.ts";
import { podMtu } from "../../../modules/router/cni_conf.ts";
import {
  encapOverhead,
  IpTunnels,
  openFou,
  TUNNEL_TABLE,
  tunnelName,
} from "../../../modules/router/tunnels.ts";

const LOCAL = { ip: "192.168.1.100", family: 4 as const };
const NODE2 = { nodeIp: "192.168.2.100", podCidrs: ["10.1.2.0/24", "fd01:2::/64"] };
const NODE3 = { nodeIp: "192.168.3.100", podCidrs: ["10.1.3.0/24"] };
const PODS = ["10.1.1.0/24", "fd01:1::/64"];

function counting(rtnl: Rtnl): { rtnl: Rtnl; calls: string[] } {
  const calls: string[] = [];
  const mutating = /^(link|route|rule)(Add|Del|Set|Replace)$/;
  const proxy = new Proxy(rtnl, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        if (mutating.test(String(prop))) calls.push(String(prop));
        return v.apply(target, args);
      };
    },
  });
  return { rtnl: proxy, calls };
}

async function setup(encap: "ipip" | "fou") {
  const fake = new FakeRtnetlink();
  await fake.linkAdd({ kind: "veth", name: "eth0", peer: "peer0", up: true });
  const eth0 = (await fake.linkGet("eth0"))!;
  await fake.addrAdd({ family: 4, index: eth0.index, address: LOCAL.ip, prefix: 24 });
  const fou = new FakeFou();
  const sink = new MemorySink();
  const log = getLogger({}, sink);
  const { rtnl, calls } = counting(fake);
  const t = new IpTunnels(rtnl, () => fou, log, { encap, port: 5555 });
  return { fake, fou, t, calls, sink };
}

Deno.test("tunnel names are kube-router's: tun- and 11 hex digits of SHA-256 of the address without dots or colons", () => {
  // Expected values computed independently (Python hashlib) from kube-router's rule.
  assert.equal(tunnelName("192.168.2.100"), "tun-f4ad7b1af72");
  assert.equal(tunnelName("fd00:2::100"), "tun-c833e11b887");
  assert.ok(tunnelName("192.168.2.100").length <= 15, "fits IFNAMSIZ");
  assert.throws(() => tunnelName("not-an-ip"), TypeError);
});

Deno.test("ipip tunnels: one device per remote node, table 77 routes to each node, a rule per pod CIDR, pod routes through them", async () => {
  const { fake, t, calls, fou } = await setup("ipip");
  const routes = await t.sync(LOCAL, [NODE2, NODE3], PODS);
  const tun2 = (await fake.linkGet("tun-f4ad7b1af72"))!;
  assert.equal(tun2.kind, "ipip");
  assert.equal(tun2.up, true);
  assert.deepEqual(tun2.tunnel, { local: "192.168.1.100", remote: "192.168.2.100", ttl: 0 });
  const tun3 = (await fake.linkGet(tunnelName("192.168.3.100")))!;
  assert.deepEqual(routes, [
    { dst: "10.1.2.0/24", dev: tun2.index },
    { dst: "10.1.3.0/24", dev: tun3.index },
  ]);
  const table = await fake.routeList({ family: 4, table: TUNNEL_TABLE });
  assert.deepEqual(table.map((r) => [r.dst, r.dev, r.protocol]).sort(), [
    ["192.168.2.100/32", tun2.index, 17],
    ["192.168.3.100/32", tun3.index, 17],
  ]);
  const rules = (await fake.ruleList(4)).filter((r) => r.table === TUNNEL_TABLE);
  assert.deepEqual(rules.map((r) => r.src), ["10.1.1.0/24"]);
  assert.deepEqual(await fou.ports(), [], "ipip opens no FoU port");

  // A second sync with the same input changes nothing.
  calls.length = 0;
  await t.sync(LOCAL, [NODE2, NODE3], PODS);
  assert.deepEqual(calls, []);

  // A node that no longer needs the tunnel loses it and its table-77 route.
  await t.sync(LOCAL, [NODE2], PODS);
  assert.equal(await fake.linkGet(tunnelName("192.168.3.100")), undefined);
  assert.deepEqual((await fake.routeList({ family: 4, table: TUNNEL_TABLE })).map((r) => r.dst), [
    "192.168.2.100/32",
  ]);

  // No remote at all: everything of the family goes.
  assert.deepEqual(await t.sync(LOCAL, [], PODS), []);
  assert.deepEqual((await fake.linkList()).filter((l) => l.name.startsWith("tun-")), []);
  assert.deepEqual(await fake.routeList({ family: 4, table: TUNNEL_TABLE }), []);
  assert.deepEqual((await fake.ruleList(4)).filter((r) => r.table === TUNNEL_TABLE), []);
});

Deno.test("fou tunnels: a GUE port is opened once and the tunnels carry encap gue to it with ttl 225", async () => {
  const { fake, t, fou } = await setup("fou");
  await t.sync(LOCAL, [NODE2], PODS);
  assert.deepEqual(await fou.ports(), [{ port: 5555, family: 4, type: "gue" }]);
  const tun = (await fake.linkGet("tun-f4ad7b1af72"))!;
  assert.deepEqual(tun.tunnel, {
    local: "192.168.1.100",
    remote: "192.168.2.100",
    ttl: 225,
    encap: { type: "gue", dport: 5555, sport: 0 },
  });
  await t.cleanup();
  assert.deepEqual(await fou.ports(), []);
  assert.equal(await fake.linkGet("tun-f4ad7b1af72"), undefined);
});

Deno.test("switching --overlay-encap between ipip and fou recreates the tunnels and closes the old FoU port", async () => {
  const { fake, fou } = await setup("fou");
  const log = getLogger({}, new MemorySink());
  await new IpTunnels(fake, () => fou, log, { encap: "fou", port: 5555 }).sync(LOCAL, [NODE2], PODS);
  await new IpTunnels(fake, () => fou, log, { encap: "ipip", port: 5555 }).sync(LOCAL, [NODE2], PODS);
  assert.equal((await fake.linkGet("tun-f4ad7b1af72"))?.tunnel?.encap, undefined);
  assert.deepEqual(await fou.ports(), []);
});

Deno.test("tunnels skip bad input by name: an invalid node address or pod CIDR, our own address, another family", async () => {
  const { fake, t, sink } = await setup("ipip");
  const routes = await t.sync(LOCAL, [
    { nodeIp: "nonsense", podCidrs: ["10.1.9.0/24"] },
    { nodeIp: "192.168.2.100", podCidrs: ["10.1.2.0/33", "10.1.2.0/24"] },
    { nodeIp: "192.168.1.100", podCidrs: ["10.1.1.0/24"] },
    { nodeIp: "fd00:2::100", podCidrs: ["fd01:2::/64"] },
  ], PODS);
  assert.deepEqual(routes.map((r) => r.dst), ["10.1.2.0/24"]);
  assert.equal((await fake.linkList()).filter((l) => l.name.startsWith("tun-")).length, 1);
  const text = sink.lines.join("\n");
  assert.match(text, /nonsense/);
  assert.match(text, /10\.1\.2\.0\/33/);
});

Deno.test("the pod MTU leaves room for the chosen encapsulation", () => {
  assert.equal(encapOverhead("ipip", 4), 20);
  assert.equal(encapOverhead("ipip", 6), 40);
  assert.equal(encapOverhead("fou", 4), 32);
  assert.equal(encapOverhead("vxlan", 4), 50);
  assert.equal(encapOverhead("vxlan", 6), 70);
  assert.equal(podMtu(1500, { enabled: true, underlay: 4, encap: "ipip" }), 1480);
  assert.equal(podMtu(1500, { enabled: true, underlay: 4, encap: "fou" }), 1468);
  assert.equal(podMtu(1500, { enabled: true, underlay: 4 }), 1450);
  assert.equal(podMtu(1500, { enabled: false, underlay: 4, encap: "ipip" }), 1500);
});

Deno.test("a routing table 77 that was never made lists as empty (the kernel answers ENOENT), so clearing works", async () => {
  const fake = new FakeRtnetlink();
  // As the kernel: a dump of a table that does not exist fails with ENOENT.
  const strict = new Proxy(fake, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (prop !== "routeList") return typeof v === "function" ? v.bind(target) : v;
      return async (filter?: { table?: number }) => {
        const all = await target.routeList(filter);
        if (filter?.table === TUNNEL_TABLE && all.length === 0) {
          throw new NetlinkError(2, "ip route show", 0, "ipv4: FIB table does not exist");
        }
        return all;
      };
    },
  });
  const t = new IpTunnels(strict, () => new FakeFou(), getLogger({}, new MemorySink()), {
    encap: "ipip",
    port: 5555,
  });
  await t.clear(4);
  await t.cleanup();
});

Deno.test("FoU is opened after loading the fou modules when the kernel does not have the family yet", () => {
  let opens = 0;
  let loads = 0;
  const fou = new FakeFou();
  const got = openFou(() => {
    if (opens++ === 0) throw new NetlinkError(2, "resolve genetlink family fou", 0);
    return fou;
  }, () => loads++);
  assert.equal(got, fou);
  assert.deepEqual([opens, loads], [2, 1]);
  // Any other failure is not hidden behind a module load.
  assert.throws(() =>
    openFou(() => {
      throw new NetlinkError(1, "resolve genetlink family fou", 0);
    }, () => loads++)
  );
  assert.equal(loads, 1);
});

Deno.test("a family cleared once is not listed again on every whole sync, until tunnels are made in it again", async () => {
  const { fake, t } = await setup("ipip");
  const reads: string[] = [];
  const watched = new Proxy(fake, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        if (/List$/.test(String(prop))) reads.push(String(prop));
        return v.apply(target, args);
      };
    },
  });
  const log = getLogger({}, new MemorySink());
  const tunnels = new IpTunnels(watched, () => new FakeFou(), log, { encap: "ipip", port: 5555 });
  const tun2 = tunnelName(NODE2.nodeIp);

  // A tunnel an earlier run left (made through the other instance, as a previous agent would have).
  await t.sync(LOCAL, [NODE2], PODS);
  assert.ok(await fake.linkGet(tun2));
  await tunnels.clear(4);
  assert.equal(await fake.linkGet(tun2), undefined, "the first clear after start removes what is left");
  assert.ok(reads.length > 0);
  reads.length = 0;
  await tunnels.clear(4);
  await tunnels.sync(LOCAL, [], PODS);
  assert.deepEqual(reads, [], "nothing to list: this agent cleared the family and made nothing since");

  await tunnels.sync(LOCAL, [NODE2], PODS);
  assert.ok(await fake.linkGet(tun2));
  reads.length = 0;
  await tunnels.sync(LOCAL, [], PODS);
  assert.equal(await fake.linkGet(tun2), undefined, "tunnels made since are cleared");
  assert.ok(reads.length > 0);

  await tunnels.sync(LOCAL, [NODE3], PODS);
  reads.length = 0;
  await tunnels.cleanup();
  assert.equal(await fake.linkGet(tunnelName(NODE3.nodeIp)), undefined, "cleanup removes them too");
  assert.ok(reads.length > 0);
  reads.length = 0;
  await tunnels.cleanup();
  await tunnels.clear(4);
  await tunnels.clear(6);
  assert.deepEqual(reads, [], "after a cleanup, nothing is listed again");
});
