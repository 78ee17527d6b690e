/**
 * The VXLAN overlay against the real kernel: two "nodes" in different subnets (192.168.1.0/24 and
 * 192.168.2.0/24, plus fd00:1::/64 and fd00:2::/64) joined by a "router" namespace that forwards between
 * them but knows nothing of the pod CIDRs; a "pod" namespace behind each node. Each node runs Overlay +
 * RouteSync through a driver inside its namespace.
 */
import assert from "node:assert/strict";
import { linkVeth, needs, type NetNs, withNetns } from "../../_support/netns.ts";
import { Driver } from "../../_support/driver.ts";
import { vtepMac, vtepNextHop } from "../../../modules/router/overlay.ts";

const driverScript = new URL("./_overlay_driver.ts", import.meta.url);

interface Node {
  ns: NetNs;
  v4: string;
  v6: string;
  pod4: string;
  pod6: string;
}

async function sysctl(ns: NetNs, key: string, value: string): Promise<void> {
  await ns.exec(["sysctl", "-qw", `${key}=${value}`]);
}

/** Wires router <-> node (subnet i) and node <-> pod (pod CIDR i). */
async function wire(rt: NetNs, node: NetNs, pod: NetNs, i: number): Promise<Node> {
  await linkVeth(rt, `r${i}`, `192.168.${i}.1/24`, node, "eth0", `192.168.${i}.100/24`);
  await rt.exec(["ip", "-6", "addr", "add", `fd00:${i}::1/64`, "dev", `r${i}`, "nodad"]);
  await node.exec(["ip", "-6", "addr", "add", `fd00:${i}::100/64`, "dev", "eth0", "nodad"]);
  // The nodes reach each other's subnet through the router; pods are not its business.
  const other = i === 1 ? 2 : 1;
  await node.exec(["ip", "route", "add", `192.168.${other}.0/24`, "via", `192.168.${i}.1`]);
  await node.exec(["ip", "-6", "route", "add", `fd00:${other}::/64`, "via", `fd00:${i}::1`]);
  await linkVeth(node, "vpod", `10.1.${i}.1/24`, pod, "eth0", `10.1.${i}.2/24`);
  await node.exec(["ip", "-6", "addr", "add", `fd01:${i}::1/64`, "dev", "vpod", "nodad"]);
  await pod.exec(["ip", "-6", "addr", "add", `fd01:${i}::2/64`, "dev", "eth0", "nodad"]);
  await pod.exec(["ip", "route", "add", "default", "via", `10.1.${i}.1`]);
  await pod.exec(["ip", "-6", "route", "add", "default", "via", `fd01:${i}::1`]);
  await sysctl(node, "net.ipv4.ip_forward", "1");
  // Strict reverse-path filtering, as many hosts have: decapsulated pod traffic must still pass.
  await sysctl(node, "net.ipv4.conf.all.rp_filter", "1");
  await sysctl(node, "net.ipv4.conf.default.rp_filter", "1");
  await sysctl(node, "net.ipv6.conf.all.forwarding", "1");
  return {
    ns: node,
    v4: `192.168.${i}.100`,
    v6: `fd00:${i}::100`,
    pod4: `10.1.${i}.2`,
    pod6: `fd01:${i}::2`,
  };
}

function remotesOf(n: Node, i: number) {
  return [
    { nodeIp: n.v4, podCidrs: [`10.1.${i}.0/24`, `fd01:${i}::/64`] },
    { nodeIp: n.v6, podCidrs: [`10.1.${i}.0/24`, `fd01:${i}::/64`] },
  ];
}

/** A node that does not exist: its entries must be made all the same (and kept when another goes). */
const GHOST = [
  { nodeIp: "192.168.3.100", podCidrs: ["10.1.3.0/24"] },
  { nodeIp: "fd00:3::100", podCidrs: ["fd01:3::/64"] },
];

/** A driver call whose failure carries the driver's log, so a kernel refusal is visible. */
async function call<T = unknown>(d: Driver, method: string, params: unknown = null): Promise<T> {
  try {
    return await d.call<T>(method, params);
  } catch (err) {
    throw new Error(`${method} failed; driver log:\n${d.stderr}`, { cause: err });
  }
}

async function ping(from: NetNs, to: string): Promise<{ ok: boolean; out: string }> {
  const r = await from.exec(["busybox", "ping", "-c", "2", "-W", "2", to], { check: false });
  return { ok: r.code === 0, out: r.stdout + r.stderr };
}

/** Pings until tcpdump on the router sees one VXLAN packet on `iface`; returns tcpdump's line. */
async function captureVxlan(
  rt: NetNs,
  iface: string,
  port: number,
  from: NetNs,
  to: string,
): Promise<string> {
  const capture = rt.exec(
    ["timeout", "15", "tcpdump", "-i", iface, "-c", "1", "-nn", "-l", `udp port ${port}`],
    { check: false },
  );
  let done = false;
  capture.finally(() => done = true);
  for (let i = 0; i < 20 && !done; i++) {
    await from.exec(["busybox", "ping", "-c", "1", "-W", "1", to], { check: false });
  }
  const r = await capture;
  return r.stdout;
}

Deno.test({
  ...needs(
    "pods on nodes in different subnets reach each other over kube-vxlan through a router that knows no pod routes",
    { tools: ["busybox", "tcpdump", "bridge"] },
  ),
  async fn() {
    await withNetns(["ovrt", "ovn1", "ovn2", "ovp1", "ovp2"], async (rt, n1ns, n2ns, p1, p2) => {
      await sysctl(rt, "net.ipv4.ip_forward", "1");
      await sysctl(rt, "net.ipv6.conf.all.forwarding", "1");
      const n1 = await wire(rt, n1ns, p1, 1);
      const n2 = await wire(rt, n2ns, p2, 2);
      const port = 4789;
      const d1 = await Driver.start(n1.ns, driverScript, [String(port)]);
      const d2 = await Driver.start(n2.ns, driverScript, [String(port)]);
      try {
        // Before the overlay: the router has no route to pod CIDRs, so pods cannot talk.
        assert.equal((await rt.exec(["ip", "route", "get", "10.1.2.2"], { check: false })).code !== 0, true);
        assert.equal((await ping(p1, n2.pod4)).ok, false);

        const locals1 = [{ ip: n1.v4, family: 4 }, { ip: n1.v6, family: 6 }];
        const locals2 = [{ ip: n2.v4, family: 4 }, { ip: n2.v6, family: 6 }];
        const r1 = await call<{ result: { added: number } }>(d1, "sync", {
          locals: locals1,
          remotes: [...remotesOf(n2, 2), ...GHOST],
        });
        assert.equal(r1.result.added, 4, "10.1.2.0/24, 10.1.3.0/24, fd01:2::/64, fd01:3::/64");
        await call(d2, "sync", { locals: locals2, remotes: remotesOf(n1, 1) });

        // The device as specified.
        const link = (await n1.ns.exec(["ip", "-d", "link", "show", "kube-vxlan"])).stdout;
        assert.match(link, /mtu 1450 /);
        assert.match(link, /state UNKNOWN|,UP/);
        assert.match(link, /link\/ether 0a:58:c0:a8:01:64 /);
        assert.match(link, /vxlan id 19282 local 192\.168\.1\.100 dev eth0 .*dstport 4789 nolearning/);
        const link6 = (await n1.ns.exec(["ip", "-d", "link", "show", "kube-vxlan6"])).stdout;
        assert.match(link6, /mtu 1430 /);
        assert.match(link6, /vxlan id 19282 local fd00:1::100 dev eth0 .*dstport 4789 nolearning/);
        const fdb = (await n1.ns.exec(["bridge", "fdb", "show", "dev", "kube-vxlan"])).stdout;
        assert.match(fdb, /0a:58:c0:a8:02:64 dst 192\.168\.2\.100 self permanent/);
        assert.match(fdb, /0a:58:c0:a8:03:64 dst 192\.168\.3\.100 self permanent/);
        const fdb6 = (await n1.ns.exec(["bridge", "fdb", "show", "dev", "kube-vxlan6"])).stdout;
        assert.match(fdb6, new RegExp(`${vtepMac(n2.v6)} dst fd00:2::100 self permanent`));
        const neigh = (await n1.ns.exec(["ip", "neigh", "show", "dev", "kube-vxlan"])).stdout;
        assert.match(neigh, /192\.168\.2\.100 lladdr 0a:58:c0:a8:02:64 PERMANENT/);
        const routes = (await n1.ns.exec(["ip", "route", "show", "proto", "17"])).stdout;
        assert.match(routes, /10\.1\.2\.0\/24 via 192\.168\.2\.100 dev kube-vxlan onlink/);
        const routes6 = (await n1.ns.exec(["ip", "-6", "route", "show", "proto", "17"])).stdout;
        assert.match(routes6, new RegExp(`fd01:2::/64 via ${vtepNextHop(n2.v6)} dev kube-vxlan6 `));
        const neigh6 = (await n1.ns.exec(["ip", "-6", "neigh", "show", "dev", "kube-vxlan6"])).stdout;
        assert.match(neigh6, new RegExp(`${vtepNextHop(n2.v6)} lladdr ${vtepMac(n2.v6)} PERMANENT`));
        // That next hop is the address n2's kube-vxlan6 gave itself.
        assert.match(
          (await n2.ns.exec(["ip", "-6", "addr", "show", "dev", "kube-vxlan6"])).stdout,
          new RegExp(`inet6 ${vtepNextHop(n2.v6)}/64 scope link`),
        );

        // Pod to pod, both families, while the router still knows no pod route: only VXLAN can carry it.
        const p4 = await ping(p1, n2.pod4);
        assert.ok(p4.ok, `IPv4 pod to pod failed: ${p4.out}`);
        const p6 = await ping(p1, n2.pod6);
        assert.ok(p6.ok, `IPv6 pod to pod failed: ${p6.out}`);
        assert.notEqual((await rt.exec(["ip", "route", "get", "10.1.2.2"], { check: false })).code, 0);
        const seen = await captureVxlan(rt, "r2", port, p1, n2.pod4);
        assert.match(
          seen,
          /192\.168\.1\.100\.\d+ > 192\.168\.2\.100\.4789: VXLAN, flags \[I\] \(0x08\), vni 19282/,
        );
        const seen6 = await captureVxlan(rt, "r2", port, p1, n2.pod6);
        assert.match(seen6, /fd00:1::100\.\d+ > fd00:2::100\.4789: VXLAN/);

        // Re-syncing the same state changes nothing.
        const again = await call<{ result: Record<string, number> }>(d1, "sync", {
          locals: locals1,
          remotes: [...remotesOf(n2, 2), ...GHOST],
        });
        assert.deepEqual(again.result, { added: 0, replaced: 0, removed: 0, failed: 0 });

        // n2 no longer needs the tunnel: its entries and routes go, the ghost's stay, and so does the device.
        const gone = await call<{ result: Record<string, number> }>(d1, "sync", {
          locals: locals1,
          remotes: GHOST,
        });
        assert.equal(gone.result.removed, 2);
        const fdbAfter = (await n1.ns.exec(["bridge", "fdb", "show", "dev", "kube-vxlan"])).stdout;
        assert.doesNotMatch(fdbAfter, /192\.168\.2\.100/);
        assert.match(fdbAfter, /dst 192\.168\.3\.100/);
        assert.doesNotMatch(
          (await n1.ns.exec(["bridge", "fdb", "show", "dev", "kube-vxlan6"])).stdout,
          /fd00:2::100/,
        );
        assert.doesNotMatch(
          (await n1.ns.exec(["ip", "neigh", "show", "dev", "kube-vxlan"])).stdout,
          /192\.168\.2\.100/,
        );
        assert.doesNotMatch(
          (await n1.ns.exec(["ip", "-6", "neigh", "show", "dev", "kube-vxlan6"])).stdout,
          new RegExp(vtepNextHop(n2.v6)),
        );
        assert.doesNotMatch((await n1.ns.exec(["ip", "route", "show", "proto", "17"])).stdout, /10\.1\.2\.0/);
        assert.equal((await ping(p1, n2.pod4)).ok, false, "without the tunnel entry the pod is unreachable");

        // Cleanup removes both devices and the routes through them.
        await call(d1, "cleanup");
        assert.notEqual((await n1.ns.exec(["ip", "link", "show", "kube-vxlan"], { check: false })).code, 0);
        assert.notEqual((await n1.ns.exec(["ip", "link", "show", "kube-vxlan6"], { check: false })).code, 0);
        assert.equal((await n1.ns.exec(["ip", "route", "show", "proto", "17"])).stdout.trim(), "");
        assert.equal((await n1.ns.exec(["ip", "-6", "route", "show", "proto", "17"])).stdout.trim(), "");
      } finally {
        await d1.close();
        await d2.close();
      }
    });
  },
});

Deno.test({
  ...needs(
    "the overlay repairs entries deleted behind its back, moves to another UDP port and deletes kube-vxlan when unused",
    { tools: ["busybox", "bridge"] },
  ),
  async fn() {
    await withNetns(["ovrt", "ovn1", "ovn2", "ovp1", "ovp2"], async (rt, n1ns, n2ns, p1, p2) => {
      await sysctl(rt, "net.ipv4.ip_forward", "1");
      const n1 = await wire(rt, n1ns, p1, 1);
      const n2 = await wire(rt, n2ns, p2, 2);
      const drivers: Driver[] = [];
      const start = async (port: number) => {
        for (const d of drivers.splice(0)) await d.close();
        drivers.push(await Driver.start(n1.ns, driverScript, [String(port)]));
        drivers.push(await Driver.start(n2.ns, driverScript, [String(port)]));
        return drivers as [Driver, Driver];
      };
      const sync = (d: Driver, self: Node, other: Node, i: number) =>
        call<{ wanted: { dev: number }[]; result: Record<string, number> }>(d, "sync", {
          locals: [{ ip: self.v4, family: 4 }],
          remotes: [remotesOf(other, i)[0]],
        });
      try {
        let [d1, d2] = await start(8472);
        const first = await sync(d1, n1, n2, 2);
        await sync(d2, n2, n1, 1);
        assert.match((await n1.ns.exec(["ip", "-d", "link", "show", "kube-vxlan"])).stdout, /dstport 8472/);
        const p = await ping(p1, n2.pod4);
        assert.ok(p.ok, `pod to pod over port 8472 failed: ${p.out}`);
        // Without an IPv6 local no kube-vxlan6 was made.
        assert.notEqual((await n1.ns.exec(["ip", "link", "show", "kube-vxlan6"], { check: false })).code, 0);

        // Someone deletes the tunnel's entries: traffic stops until the next sync puts them back.
        await n1.ns.exec(["bridge", "fdb", "del", vtepMac(n2.v4), "dev", "kube-vxlan", "self"]);
        await n1.ns.exec(["ip", "neigh", "del", n2.v4, "dev", "kube-vxlan"]);
        assert.equal((await ping(p1, n2.pod4)).ok, false);
        const repaired = await sync(d1, n1, n2, 2);
        assert.deepEqual(repaired.result, { added: 0, replaced: 0, removed: 0, failed: 0 });
        assert.match(
          (await n1.ns.exec(["bridge", "fdb", "show", "dev", "kube-vxlan"])).stdout,
          new RegExp(`${vtepMac(n2.v4)} dst ${n2.v4} self permanent`),
        );
        const back = await ping(p1, n2.pod4);
        assert.ok(back.ok, `no traffic after the repair: ${back.out}`);

        // Another port: the device is made anew (the kernel cannot change it in place), routes follow.
        [d1, d2] = await start(4789);
        const moved = await sync(d1, n1, n2, 2);
        await sync(d2, n2, n1, 1);
        assert.match((await n1.ns.exec(["ip", "-d", "link", "show", "kube-vxlan"])).stdout, /dstport 4789/);
        assert.notEqual(moved.wanted[0]!.dev, first.wanted[0]!.dev, "a new device");
        assert.equal(moved.result.added, 1, "the old route went with the old device");
        const again = await ping(p1, n2.pod4);
        assert.ok(again.ok, `pod to pod over port 4789 failed: ${again.out}`);

        const res = await call<{ wanted: unknown[] }>(d1, "sync", {
          locals: [{ ip: n1.v4, family: 4 }],
          remotes: [],
        });
        assert.deepEqual(res.wanted, []);
        assert.notEqual((await n1.ns.exec(["ip", "link", "show", "kube-vxlan"], { check: false })).code, 0);
        assert.equal((await n1.ns.exec(["ip", "route", "show", "proto", "17"])).stdout.trim(), "");
      } finally {
        for (const d of drivers) await d.close();
      }
    });
  },
});
