/** Overlay (VXLAN tunnels to nodes in other subnets) against FakeRtnetlink and FakeFdb. */
import assert from "node:assert/strict";
import { getLogger, MemorySink } from "../../../core/log.ts";
import { RouteSync } from "../../../modules/router/route_sync.ts";
import { FakeFdb, FakeRtnetlink, parseCidr, type Rtnl } from "../../../ffi/mod.ts";
import {
  needsTunnel,
  Overlay,
  OVERLAY_VNI,
  OverlayError,
  planTunnels,
  vtepMac,
  vtepNextHop,
  VXLAN6_DEVICE,
  VXLAN_DEVICE,
} from "../../../modules/router/overlay.ts";

const LOCAL = { ip: "192.168.1.100", family: 4 as const };
const NODE2 = { nodeIp: "192.168.2.100", podCidrs: ["10.1.2.0/24"] };
const NODE3 = { nodeIp: "192.168.3.100", podCidrs: ["10.1.3.0/24", "fd01:3::/64"] };

/** Counts the mutating calls made on an Rtnl, so a re-sync can be shown to change nothing. */
function counting(rtnl: Rtnl): { rtnl: Rtnl; calls: string[] } {
  const calls: string[] = [];
  const mutating = new Set(["linkAdd", "linkDel", "linkSet", "neighAdd", "neighReplace", "neighDel"]);
  const proxy = new Proxy(rtnl, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== "function") return v;
      return (...args: unknown[]) => {
        if (mutating.has(String(prop))) calls.push(String(prop));
        return v.apply(target, args);
      };
    },
  });
  return { rtnl: proxy, calls };
}

async function setup(opts: { port?: number; vni?: number; mtu?: number } = {}) {
  const fake = new FakeRtnetlink();
  await fake.linkAdd({ kind: "veth", name: "eth0", peer: "eth0p", mtu: opts.mtu ?? 1500, up: true });
  const eth0 = (await fake.linkGet("eth0"))!;
  await fake.addrAdd({ family: 4, index: eth0.index, address: "192.168.1.100", prefix: 24 });
  await fake.addrAdd({ family: 6, index: eth0.index, address: "fd00:1::100", prefix: 64 });
  const { rtnl, calls } = counting(fake);
  const fdb = new FakeFdb(fake);
  const sink = new MemorySink();
  const overlay = new Overlay(rtnl, fdb, getLogger({}, sink), {
    port: opts.port ?? 4789,
    ...(opts.vni !== undefined ? { vni: opts.vni } : {}),
  });
  return { fake, eth0, fdb, overlay, calls, sink };
}

Deno.test("needsTunnel tunnels only to nodes outside our subnets in subnet mode, to all in full mode", () => {
  const local = [parseCidr("192.168.1.0/24")!, parseCidr("fd00:1::/64")!];
  assert.equal(needsTunnel("subnet", local, "192.168.1.101"), false);
  assert.equal(needsTunnel("subnet", local, "192.168.2.100"), true);
  assert.equal(needsTunnel("subnet", local, "fd00:1::7"), false);
  assert.equal(needsTunnel("subnet", local, "fd00:2::7"), true);
  assert.equal(needsTunnel("subnet", [], "192.168.1.101"), true);
  assert.equal(needsTunnel("full", local, "192.168.1.101"), true);
  assert.equal(needsTunnel("full", local, "not-an-ip"), false);
  assert.equal(needsTunnel("subnet", local, "300.1.1.1"), false);
});

Deno.test("planTunnels sends routes to nodes in other subnets through the tunnel, grouped by node", () => {
  const local = [parseCidr("192.168.1.0/24")!, parseCidr("fd00:1::/64")!];
  const learned = [
    { prefix: "10.1.2.0/24", nextHop: "192.168.1.101" },
    { prefix: "10.1.3.0/24", nextHop: "192.168.2.100" },
    { prefix: "fd01:3::/64", nextHop: "fd00:2:0::100" },
    { prefix: "10.1.4.0/24", nextHop: "192.168.2.100" },
    { prefix: "10.1.4.0/24", nextHop: "192.168.2.100" },
    { prefix: "172.20.0.0/16", nextHop: "10.99.0.1" },
    { prefix: "10.1.5.0/24", nextHop: "garbage" },
  ];
  const nodes = ["192.168.1.101", "192.168.2.100", "fd00:2::100"];
  const subnet = planTunnels("subnet", local, learned, nodes);
  assert.deepEqual(subnet.remotes, [
    { nodeIp: "192.168.2.100", podCidrs: ["10.1.3.0/24", "10.1.4.0/24"] },
    { nodeIp: "fd00:2::100", podCidrs: ["fd01:3::/64"] },
  ]);
  assert.deepEqual(subnet.direct.map((r) => r.prefix), ["10.1.2.0/24", "172.20.0.0/16", "10.1.5.0/24"]);

  const full = planTunnels("full", local, learned, nodes);
  assert.deepEqual(full.remotes.map((r) => r.nodeIp), ["192.168.1.101", "192.168.2.100", "fd00:2::100"]);
  assert.deepEqual(
    full.direct.map((r) => r.prefix),
    ["172.20.0.0/16", "10.1.5.0/24"],
    "not nodes: no tunnel",
  );

  // Without a node list every next hop outside our subnets is taken for a node.
  assert.deepEqual(
    planTunnels("subnet", local, learned).remotes.map((r) => r.nodeIp),
    ["192.168.2.100", "fd00:2::100", "10.99.0.1"],
  );
});

Deno.test("vtepMac is a locally administered unicast MAC derived from the node address", () => {
  assert.equal(vtepMac("192.168.2.100"), "0a:58:c0:a8:02:64");
  assert.equal(vtepMac("10.0.0.1"), "0a:58:0a:00:00:01");
  // IPv6: a hash, so nodes in different subnets with the same interface id still differ.
  assert.match(vtepMac("fd00:2::100"), /^0a:59(:[0-9a-f]{2}){4}$/);
  assert.notEqual(vtepMac("fd00:2::100"), vtepMac("fd00:3::100"));
  assert.equal(vtepMac("fd00:2::100"), vtepMac("fd00:2:0:0::100"), "the same address, however written");
  for (const ip of ["1.2.3.4", "fd00::1"]) {
    const first = parseInt(vtepMac(ip).slice(0, 2), 16);
    assert.equal(first & 0x02, 0x02, "locally administered");
    assert.equal(first & 0x01, 0, "unicast");
  }
  assert.throws(() => vtepMac("192.168.2"), TypeError);
});

Deno.test("vtepNextHop is the IPv4 node address, or the EUI-64 link-local address of the IPv6 VTEP MAC", () => {
  assert.equal(vtepNextHop("192.168.2.100"), "192.168.2.100");
  // 0a:59:27:2e:0f:e7 -> flip the U/L bit (0x0a -> 0x08), insert ff:fe in the middle.
  assert.equal(vtepMac("fd00:2::100"), "0a:59:27:2e:0f:e7");
  assert.equal(vtepNextHop("fd00:2::100"), "fe80::859:27ff:fe2e:fe7");
  assert.throws(() => vtepNextHop("nope"), TypeError);
});

Deno.test("overlay creates kube-vxlan with the node's address, port, VNI and MTU, and returns onlink routes", async () => {
  const { fake, eth0, fdb, overlay } = await setup();
  const routes = await overlay.sync(LOCAL, [NODE2, NODE3]);
  const vx = (await fake.linkGet(VXLAN_DEVICE))!;
  assert.equal(vx.kind, "vxlan");
  assert.equal(vx.up, true);
  assert.equal(vx.mtu, 1450);
  assert.equal(vx.mac, "0a:58:c0:a8:01:64");
  assert.deepEqual(vx.vxlan, {
    vni: OVERLAY_VNI,
    port: 4789,
    local: "192.168.1.100",
    dev: eth0.index,
    learning: false,
  });
  assert.deepEqual(
    (await fake.neighList({ dev: vx.index })).map((n) => [n.dst, n.lladdr, n.state]).sort(),
    [["192.168.2.100", "0a:58:c0:a8:02:64", 0x80], ["192.168.3.100", "0a:58:c0:a8:03:64", 0x80]],
  );
  assert.deepEqual(
    (await fdb.fdbList(vx.index)).map((e) => [e.mac, e.dst, e.flags, e.state]).sort(),
    [["0a:58:c0:a8:02:64", "192.168.2.100", 0x02, 0xc0], ["0a:58:c0:a8:03:64", "192.168.3.100", 0x02, 0xc0]],
  );
  // Only pod CIDRs of the underlay's family: fd01:3::/64 waits for an IPv6 sync.
  assert.deepEqual(routes, [
    { dst: "10.1.2.0/24", gateway: "192.168.2.100", dev: vx.index, onlink: true },
    { dst: "10.1.3.0/24", gateway: "192.168.3.100", dev: vx.index, onlink: true },
  ]);
  assert.equal(await fake.linkGet(VXLAN6_DEVICE), undefined);
});

Deno.test("a second sync with the same remotes changes nothing in the kernel", async () => {
  const { overlay, calls, fdb } = await setup();
  const first = await overlay.sync(LOCAL, [NODE2, NODE3]);
  const before = { rtnl: calls.length, fdb: fdb.calls.length };
  assert.ok(before.rtnl > 0 && before.fdb > 0);
  const second = await overlay.sync(LOCAL, [NODE3, NODE2]);
  assert.deepEqual({ rtnl: calls.length, fdb: fdb.calls.length }, before);
  assert.deepEqual(new Set(second.map((r) => r.dst)), new Set(first.map((r) => r.dst)));
});

Deno.test("overlay adds and removes neighbour and FDB entries as remotes come and go", async () => {
  const { fake, fdb, overlay } = await setup();
  await overlay.sync(LOCAL, [NODE2]);
  const vx = (await fake.linkGet(VXLAN_DEVICE))!;
  const routes = await overlay.sync(LOCAL, [NODE3]);
  assert.deepEqual((await fake.neighList({ dev: vx.index })).map((n) => n.dst), ["192.168.3.100"]);
  assert.deepEqual((await fdb.fdbList(vx.index)).map((e) => e.dst), ["192.168.3.100"]);
  assert.deepEqual(routes.map((r) => r.dst), ["10.1.3.0/24"]);
  assert.equal((await fake.linkGet(VXLAN_DEVICE))!.index, vx.index, "the device is kept");
});

Deno.test("overlay deletes the device when no remote needs the tunnel any more", async () => {
  const { fake, overlay } = await setup();
  await overlay.sync(LOCAL, [NODE2]);
  assert.ok(await fake.linkGet(VXLAN_DEVICE));
  assert.deepEqual(await overlay.sync(LOCAL, []), []);
  assert.equal(await fake.linkGet(VXLAN_DEVICE), undefined);
  assert.deepEqual(await overlay.sync(LOCAL, []), [], "and a sync without a device is a no-op");
});

Deno.test("overlay skips its own address, other-family remotes and invalid input, and logs the invalid", async () => {
  const { fake, overlay, sink } = await setup();
  const routes = await overlay.sync(LOCAL, [
    { nodeIp: "192.168.1.100", podCidrs: ["10.1.1.0/24"] },
    { nodeIp: "fd00:2::100", podCidrs: ["fd01:2::/64"] },
    { nodeIp: "bogus", podCidrs: ["10.1.9.0/24"] },
    { nodeIp: "192.168.2.100", podCidrs: ["10.1.2.7/24", "10.1.2.0/24", "10.1.300.0/24"] },
  ]);
  assert.deepEqual(routes.map((r) => [r.dst, r.gateway]), [["10.1.2.0/24", "192.168.2.100"]]);
  const vx = (await fake.linkGet(VXLAN_DEVICE))!;
  assert.deepEqual((await fake.neighList({ dev: vx.index })).map((n) => n.dst), ["192.168.2.100"]);
  assert.ok(sink.lines.some((l) => l.includes("invalid address") && l.includes("bogus")));
  assert.ok(sink.lines.some((l) => l.includes("invalid pod CIDR") && l.includes("10.1.300.0/24")));
});

Deno.test("overlay removes FDB entries it does not want (a default destination too) and fixes a wrong one", async () => {
  const { fake, fdb, overlay } = await setup();
  await overlay.sync(LOCAL, [NODE2]);
  const vx = (await fake.linkGet(VXLAN_DEVICE))!;
  await fdb.fdbReplace({ dev: vx.index, mac: "0a:58:c0:a8:02:64", dst: "192.168.9.8" });
  // A default destination (all-zeros MAC) would flood unknown frames to that address: not ours, it goes.
  await fdb.fdbAppend({ dev: vx.index, mac: "00:00:00:00:00:00", dst: "192.168.9.9" });
  await fdb.fdbReplace({ dev: vx.index, mac: "02:00:00:00:00:99", dst: "192.168.9.9" });
  await fake.neighReplace({ family: 4, dev: vx.index, dst: "192.168.9.9", lladdr: "02:00:00:00:00:99" });
  await fake.neighReplace({ family: 4, dev: vx.index, dst: "192.168.2.100", lladdr: "02:00:00:00:00:98" });
  await fake.neighReplace({ family: 4, dev: vx.index, dst: "192.168.9.10", state: 0x02 });
  await overlay.sync(LOCAL, [NODE2]);
  assert.deepEqual(
    (await fdb.fdbList(vx.index)).map((e) => [e.mac, e.dst]),
    [["0a:58:c0:a8:02:64", "192.168.2.100"]],
  );
  assert.deepEqual(
    (await fake.neighList({ dev: vx.index })).map((n) => [n.dst, n.lladdr]).sort(),
    [["192.168.2.100", "0a:58:c0:a8:02:64"], ["192.168.9.10", undefined]],
    "the kernel's own (non-permanent) entry is left to expire",
  );
});

Deno.test("overlay recreates a kube-vxlan with other fixed parameters and fixes MTU, MAC and state in place", async () => {
  const { fake, eth0, overlay, calls } = await setup({ port: 8472 });
  await fake.linkAdd({
    kind: "vxlan",
    name: VXLAN_DEVICE,
    vni: 1,
    port: 8472,
    local: "192.168.1.100",
    dev: eth0.index,
  });
  const old = (await fake.linkGet(VXLAN_DEVICE))!;
  await overlay.sync(LOCAL, [NODE2]);
  const vx = (await fake.linkGet(VXLAN_DEVICE))!;
  assert.notEqual(vx.index, old.index);
  assert.equal(vx.vxlan?.vni, OVERLAY_VNI);
  assert.equal(vx.vxlan?.port, 8472);
  assert.deepEqual(calls.slice(0, 2), ["linkDel", "linkAdd"]);

  await fake.linkSet(VXLAN_DEVICE, { up: false, mtu: 1400, mac: "02:11:22:33:44:55" });
  calls.length = 0;
  const routes = await overlay.sync(LOCAL, [NODE2]);
  assert.deepEqual(calls, ["linkSet"]);
  const fixed = (await fake.linkGet(VXLAN_DEVICE))!;
  assert.equal(fixed.index, vx.index);
  assert.deepEqual([fixed.up, fixed.mtu, fixed.mac], [true, 1450, "0a:58:c0:a8:01:64"]);
  assert.equal(routes[0]!.dev, vx.index);
});

Deno.test("overlay follows the underlay's MTU", async () => {
  const { fake, overlay } = await setup({ mtu: 9000 });
  await overlay.sync(LOCAL, [NODE2]);
  assert.equal((await fake.linkGet(VXLAN_DEVICE))!.mtu, 8950);
  await fake.linkSet("eth0", { mtu: 1500 });
  await overlay.sync(LOCAL, [NODE2]);
  assert.equal((await fake.linkGet(VXLAN_DEVICE))!.mtu, 1450);
});

Deno.test("overlay over IPv6 node addresses uses kube-vxlan6 with the IPv6 overhead", async () => {
  const { fake, fdb, overlay, eth0 } = await setup({ vni: 77 });
  const routes = await overlay.sync({ ip: "fd00:1::100", family: 6 }, [
    { nodeIp: "fd00:2::100", podCidrs: ["fd01:2::/64", "10.1.2.0/24"] },
    NODE2,
  ]);
  const vx = (await fake.linkGet(VXLAN6_DEVICE))!;
  assert.deepEqual(vx.vxlan, { vni: 77, port: 4789, local: "fd00:1::100", dev: eth0.index, learning: false });
  assert.equal(vx.mtu, 1430);
  assert.equal(vx.mac, vtepMac("fd00:1::100"));
  // Via the remote VTEP's link-local address: the kernel refuses an onlink IPv6 gateway it routes elsewhere.
  const hop = vtepNextHop("fd00:2::100");
  assert.match(hop, /^fe80::/);
  assert.deepEqual(routes, [{ dst: "fd01:2::/64", gateway: hop, dev: vx.index }]);
  assert.deepEqual((await fdb.fdbList(vx.index)).map((e) => [e.mac, e.dst]), [[
    vtepMac("fd00:2::100"),
    "fd00:2::100",
  ]]);
  assert.deepEqual(
    (await fake.neighList({ family: 6, dev: vx.index })).map((n) => [n.dst, n.lladdr]),
    [[hop, vtepMac("fd00:2::100")]],
  );
  assert.equal(await fake.linkGet(VXLAN_DEVICE), undefined, "the IPv4 device is independent");
});

Deno.test("overlay builds on the real interface when the node address is also on lo", async () => {
  const { fake, eth0, overlay } = await setup();
  // lo's address first in the listing, as when it was configured before eth0's.
  await fake.addrDel({ family: 4, index: eth0.index, address: "192.168.1.100", prefix: 24 });
  await fake.addrAdd({ family: 4, index: 1, address: "192.168.1.100", prefix: 32 });
  await fake.addrAdd({ family: 4, index: eth0.index, address: "192.168.1.100", prefix: 24 });
  assert.equal((await fake.addrList({ family: 4 }))[0]!.index, 1);
  await overlay.sync(LOCAL, [NODE2]);
  assert.equal((await fake.linkGet(VXLAN_DEVICE))!.vxlan?.dev, eth0.index);
});

Deno.test("overlay refuses to build a tunnel from an address that is on no interface", async () => {
  const { fake, overlay } = await setup();
  await assert.rejects(overlay.sync({ ip: "192.168.7.7", family: 4 }, [NODE2]), OverlayError);
  assert.equal(await fake.linkGet(VXLAN_DEVICE), undefined);
});

Deno.test("overlay cleanup removes both devices and their entries, and is idempotent", async () => {
  const { fake, fdb, overlay } = await setup();
  await overlay.sync(LOCAL, [NODE2]);
  await overlay.sync({ ip: "fd00:1::100", family: 6 }, [{
    nodeIp: "fd00:2::100",
    podCidrs: ["fd01:2::/64"],
  }]);
  const v4 = (await fake.linkGet(VXLAN_DEVICE))!;
  const v6 = (await fake.linkGet(VXLAN6_DEVICE))!;
  await overlay.cleanup();
  assert.equal(await fake.linkGet(VXLAN_DEVICE), undefined);
  assert.equal(await fake.linkGet(VXLAN6_DEVICE), undefined);
  assert.deepEqual(await fake.neighList({ dev: v4.index }), []);
  assert.deepEqual(await fdb.fdbList(v6.index), []);
  await overlay.cleanup();
});

Deno.test("overlay clear removes the device of one family only", async () => {
  const { fake, overlay } = await setup();
  await overlay.sync(LOCAL, [NODE2]);
  await overlay.sync({ ip: "fd00:1::100", family: 6 }, [{
    nodeIp: "fd00:2::100",
    podCidrs: ["fd01:2::/64"],
  }]);
  await overlay.clear(6);
  assert.equal(await fake.linkGet(VXLAN6_DEVICE), undefined);
  assert.ok(await fake.linkGet(VXLAN_DEVICE));
  await overlay.clear(6);
});

Deno.test("overlay keeps one of two IPv6 nodes whose VTEP MACs collide, and logs the other", async () => {
  const { fake, fdb, overlay, sink } = await setup();
  // Found by search: two addresses with the same 32-bit FNV-1a hash.
  const [a, b] = ["fd00:f5::7e4:4f5", "fd00:8::11d5:508"];
  assert.equal(vtepMac(a), vtepMac(b));
  const routes = await overlay.sync({ ip: "fd00:1::100", family: 6 }, [
    { nodeIp: a, podCidrs: ["fd01:a::/64"] },
    { nodeIp: b, podCidrs: ["fd01:b::/64"] },
  ]);
  assert.deepEqual(routes.map((r) => r.gateway), [vtepNextHop(a)]);
  const vx = (await fake.linkGet(VXLAN6_DEVICE))!;
  assert.deepEqual((await fdb.fdbList(vx.index)).map((e) => e.dst), [a]);
  assert.ok(sink.lines.some((l) => l.includes("same VTEP MAC") && l.includes(b)));
});

Deno.test("overlay refuses a local address of the wrong family", async () => {
  const { overlay } = await setup();
  await assert.rejects(overlay.sync({ ip: "fd00:1::100", family: 4 }, [NODE2]), OverlayError);
});

Deno.test("the overlay's routes install through RouteSync and go with the device", async () => {
  const { fake, overlay } = await setup();
  const sync = new RouteSync(fake, getLogger({}, new MemorySink()));
  const v4 = await overlay.sync(LOCAL, [NODE2, NODE3]);
  const v6 = await overlay.sync({ ip: "fd00:1::100", family: 6 }, [
    { nodeIp: "fd00:2::100", podCidrs: ["fd01:2::/64"] },
  ]);
  // The kernel gives an up IPv6 device its EUI-64 link-local address (hence the fe80::/64 route the
  // link-local next hop resolves through); FakeRtnetlink does not, so do it here as the kernel would.
  const vx6 = (await fake.linkGet(VXLAN6_DEVICE))!;
  await fake.addrAdd({ family: 6, index: vx6.index, address: vtepNextHop("fd00:1::100"), prefix: 64 });
  assert.deepEqual(await sync.sync([...v4, ...v6]), { added: 3, replaced: 0, removed: 0, failed: 0 });
  assert.deepEqual(await sync.sync([...v4, ...v6]), { added: 0, replaced: 0, removed: 0, failed: 0 });
  const vx = (await fake.linkGet(VXLAN_DEVICE))!;
  const kernel = await fake.routeList({ protocol: 17 });
  assert.deepEqual(
    kernel.map((r) => [r.dst, r.gateway, r.dev]).sort(),
    [
      ["10.1.2.0/24", "192.168.2.100", vx.index],
      ["10.1.3.0/24", "192.168.3.100", vx.index],
      ["fd01:2::/64", vtepNextHop("fd00:2::100"), vx6.index],
    ],
  );
  await overlay.sync(LOCAL, []);
  assert.deepEqual((await fake.routeList({ protocol: 17 })).map((r) => r.dst), ["fd01:2::/64"]);
  assert.deepEqual(await sync.sync(v6), { added: 0, replaced: 0, removed: 0, failed: 0 });
});
