import assert from "node:assert/strict";
import { needs, type NetNs, withNetns } from "../../_support/netns.ts";
import { inNetns } from "./_in_netns.ts";
import type * as S from "./_scenarios.ts";

const SCEN = new URL("./_scenarios.ts", import.meta.url);
type R<K extends keyof typeof S> = Awaited<ReturnType<(typeof S)[K]>>;

const ip = { tools: ["ip"] };

Deno.test({
  ...needs("rtnetlink creates a bridge, a veth pair enslaved to it and a vxlan device", ip),
  fn: () =>
    withNetns(["links"], async (ns) => {
      const res = await inNetns<R<"createLinks">>(ns, SCEN, "createLinks");
      const byName = new Map(res.links.map((l) => [l.name, l]));
      const br = byName.get("kbr0")!;
      assert.equal(br.kind, "bridge");
      assert.equal(br.up, true);
      // The kernel lowers a bridge's MTU to its smallest port's once kv0 (1400) is enslaved.
      assert.equal(br.mtu, 1400);
      const v0 = byName.get("kv0")!;
      assert.equal(v0.kind, "veth");
      assert.equal(v0.master, br.index);
      assert.equal(v0.mtu, 1400);
      assert.equal(v0.link, byName.get("kv1")!.index);
      assert.deepEqual(res.vx?.vxlan, { vni: 4242, port: 4789, local: "10.250.0.1", learning: false });
      assert.equal(res.missing, null);
      assert.equal(res.afterNomaster?.master, undefined);
      assert.deepEqual(res.duplicate, {
        name: "NetlinkError",
        code: "EEXIST",
        notFound: false,
        exists: true,
      });
      assert.equal(res.delMissing !== "ok" && res.delMissing.notFound, true);
      // What the real tool sees from outside agrees.
      const shown = JSON.parse((await ns.exec(["ip", "-j", "-d", "link", "show"])).stdout) as {
        ifname: string;
        master?: string;
        linkinfo?: { info_kind?: string; info_data?: { id?: number } };
      }[];
      const names = shown.map((l) => l.ifname).sort();
      assert.deepEqual(names, ["kbr0", "kv0", "kv1renamed", "lo"]);
      assert.deepEqual(res.final.sort(), names);
      assert.equal(shown.find((l) => l.ifname === "kv0")?.master, undefined);
    }),
});

/**
 * Whether `ip link add … type KIND` works in `ns`: iproute2 is the independent judge of whether this
 * kernel has the link kind (this machine's kernel lacks dummy and ipip; the VM tier's kernel has both).
 */
async function kernelHasKind(ns: NetNs, kind: string): Promise<boolean> {
  const args = kind === "ipip" ? ["local", "10.0.0.1", "remote", "10.0.0.2"] : [];
  const r = await ns.exec(["ip", "link", "add", "probe0", "type", kind, ...args], { check: false });
  if (r.code !== 0) return false;
  await ns.exec(["ip", "link", "del", "probe0"]);
  return true;
}

for (const kind of ["dummy", "ipip"] as const) {
  // Never skipped: where the kernel has the kind the link is created; where it lacks it, creating it must
  // fail with the typed error that names the kind, so callers (the IPVS backend's kube-dummy-if, the
  // overlay's tunnels) can tell the user what is missing. The VM tier runs this where the kind exists.
  Deno.test({
    ...needs(
      `rtnetlink creates a ${kind} link, or fails with EOPNOTSUPP naming ${kind} where the kernel lacks it`,
      ip,
    ),
    fn: () =>
      withNetns([kind], async (ns) => {
        const has = await kernelHasKind(ns, kind);
        if (Deno.env.get("KRT_IN_VM") === "1") assert.ok(has, `the VM tier's kernel must have ${kind}`);
        const res = await inNetns<R<"createKind">>(ns, SCEN, "createKind", [kind]);
        if (has) {
          assert.equal(res.res, "ok");
          assert.equal(res.link?.kind, kind);
          return;
        }
        assert.deepEqual(res.res, {
          name: "NetlinkError",
          code: "EOPNOTSUPP",
          extAck: "Unknown device type",
          notFound: false,
          exists: false,
        });
        assert.equal(res.notSupported, true, "isNotSupported() recognises it");
        assert.match(res.message ?? "", new RegExp(`^ip link add k[dt]0 type ${kind}: EOPNOTSUPP`));
        assert.equal(res.link, null, "nothing was created");
        const shown = (await ns.exec(["ip", "-o", "link", "show"])).stdout;
        assert.doesNotMatch(shown, /k[dt]0/);
      }),
  });
}

Deno.test({
  ...needs("rtnetlink adds, lists and deletes IPv4 and IPv6 addresses", ip),
  fn: () =>
    withNetns(["addr"], async (ns) => {
      const res = await inNetns<R<"addresses">>(ns, SCEN, "addresses");
      const mine = res.listed.filter((a) => a.scope === 0).map((a) => `${a.address}/${a.prefix}`).sort();
      assert.deepEqual(mine, ["10.77.0.1/24", "10.77.1.1/32", "fd77::1/64"]);
      assert.equal(res.duplicate !== "ok" && res.duplicate.exists, true);
      assert.equal(res.delMissing !== "ok" && res.delMissing.notFound, true);
      assert.deepEqual(res.after.map((a) => a.address), ["10.77.0.1"]);
      const shown = (await ns.exec(["ip", "-o", "addr", "show", "dev", "kbr0"])).stdout;
      assert.match(shown, /10\.77\.0\.1\/24/);
      assert.doesNotMatch(shown, /10\.77\.1\.1/);
      assert.match(shown, /fd77::1\/64/);
    }),
});

Deno.test({
  ...needs("rtnetlink adds 10,000 routes in a batch, lists them and deletes them", ip),
  fn: () =>
    withNetns(["routes"], async (ns) => {
      const res = await inNetns<R<"routeBulk">>(ns, SCEN, "routeBulk", [10_000, 100]);
      assert.equal(res.added, 10_000);
      assert.equal(res.addFailures, 0);
      assert.equal(res.kernelCount, 10_000);
      assert.deepEqual(res.sample, {
        family: 4,
        dst: "10.128.39.15/32",
        table: 100,
        protocol: 17,
        scope: 0,
        type: 1,
        gateway: "10.9.0.2",
        dev: 2,
      });
      // Re-adding existing routes fails per message, mapped back to the right indexes.
      assert.deepEqual(res.againFailures.map((f) => [f.index, f.code, f.exists]), [[0, "EEXIST", true], [
        1,
        "EEXIST",
        true,
      ], [2, "EEXIST", true]]);
      assert.equal(res.deleted, 10_000);
      assert.equal(res.remaining, 0);
      const shown = (await ns.exec(["ip", "route", "show", "table", "100"])).stdout.trim();
      assert.equal(shown, "");
    }),
});

Deno.test({
  ...needs("rtnetlink adds, replaces and deletes single routes with gateways, ECMP, blackhole and IPv6", ip),
  fn: () =>
    withNetns(["route1"], async (ns) => {
      const res = await inNetns<R<"routeOps">>(ns, SCEN, "routeOps");
      assert.equal(res.dup !== "ok" && res.dup.exists, true);
      assert.equal(res.unreachableGw !== "ok" && res.unreachableGw.code, "ENETUNREACH");
      assert.ok(
        res.unreachableGw !== "ok" && res.unreachableGw.extAck,
        "the kernel's extended ACK text is kept",
      );
      const t = new Map(res.table77.map((r) => [r.dst, r]));
      assert.equal(t.get("10.1.2.0/24")?.gateway, "10.9.0.3");
      assert.equal(t.get("10.1.2.0/24")?.protocol, 17);
      assert.deepEqual(t.get("10.1.3.0/24")?.nexthops, [
        { weight: 3, dev: res.dev, gateway: "10.9.0.2" },
        { weight: 1, dev: res.dev, gateway: "10.9.0.3" },
      ]);
      assert.equal(t.get("10.1.4.0/24")?.scope, 253);
      assert.equal(t.get("10.1.5.0/24")?.type, 6);
      assert.equal(t.get("fd01::/64")?.gateway, "fd09::2");
      assert.equal(t.get("fd01::/64")?.metric, 10);
      assert.equal(res.delMissing !== "ok" && res.delMissing.notFound, true);
      assert.deepEqual(res.after.sort(), ["10.1.3.0/24", "10.1.4.0/24", "10.1.5.0/24", "fd01::/64"]);
      const shown = (await ns.exec(["ip", "route", "show", "table", "77"])).stdout;
      assert.match(shown, /10\.1\.3\.0\/24\s+nexthop via 10\.9\.0\.2 dev kbr0 weight 3/);
      assert.match(shown, /blackhole 10\.1\.5\.0\/24/);
    }),
});

Deno.test({
  ...needs("rtnetlink adds, lists and deletes policy rules", ip),
  fn: () =>
    withNetns(["rules"], async (ns) => {
      const res = await inNetns<R<"rules">>(ns, SCEN, "rules");
      assert.equal(res.dup !== "ok" && res.dup.exists, true);
      const r100 = res.v4.find((r) => r.priority === 100)!;
      assert.equal(r100.src, "10.1.0.0/16");
      assert.equal(r100.table, 77);
      const r101 = res.v4.find((r) => r.priority === 101)!;
      assert.deepEqual([r101.fwmark, r101.fwmask, r101.table], [0x2000, 0xf000, 300]);
      assert.equal(res.v6.find((r) => r.priority === 102)?.dst, "fd00::/8");
      assert.equal(res.delMissing !== "ok" && res.delMissing.notFound, true);
      assert.deepEqual(res.after, [0, 101, 32766, 32767]);
      const shown = (await ns.exec(["ip", "rule", "show"])).stdout;
      assert.match(shown, /101:\s+from all fwmark 0x2000\/0xf000 lookup 300/);
    }),
});

Deno.test({
  ...needs("rtnetlink adds, replaces and deletes neighbour entries", ip),
  fn: () =>
    withNetns(["neigh"], async (ns) => {
      const res = await inNetns<R<"neighbours">>(ns, SCEN, "neighbours");
      assert.equal(res.dup !== "ok" && res.dup.exists, true);
      assert.deepEqual(res.listed.map((n) => [n.dst, n.lladdr, n.state]), [[
        "10.9.0.7",
        "02:00:00:00:00:08",
        0x80,
      ]]);
      assert.equal(res.delMissing !== "ok" && res.delMissing.notFound, true);
    }),
});

Deno.test({
  ...needs("a route added by another process arrives as a watch event, and closing the watch ends it", ip),
  fn: () =>
    withNetns(["event"], async (ns) => {
      const res = await inNetns<R<"routeEvent">>(ns, SCEN, "routeEvent");
      assert.ok(res.ev, "the route event arrived (within the 10 s timeout)");
      assert.equal(res.ev.kind, "route");
      if (res.ev.kind === "route") {
        assert.equal(res.ev.action, "new");
        assert.equal(res.ev.route.gateway, "10.9.0.2");
        assert.equal(res.ev.route.protocol, 17);
      }
      console.log(
        `route event latency after \`ip route add\` exited: ${res.latencyMs.toFixed(1)} ms (bound 100 ms)`,
      );
      assert.equal(res.ended, true);
    }),
});

Deno.test({
  ...needs("closing an idle watch wakes its poll and ends the iteration", ip),
  fn: () =>
    withNetns(["cancel"], async (ns) => {
      const res = await inNetns<R<"watchCancelIdle">>(ns, SCEN, "watchCancelIdle");
      assert.equal(res.ended, true);
    }),
});

Deno.test({
  ...needs("closing a watch whose consumer stopped pulling releases its sockets at once", ip),
  fn: () =>
    withNetns(["suspend"], async (ns) => {
      const res = await inNetns<R<"watchCloseWhileSuspended">>(ns, SCEN, "watchCloseWhileSuspended");
      assert.equal(res.got, true);
      assert.equal(res.during, 2, "the watch holds a netlink socket and an eventfd");
      assert.equal(res.after, 0);
      assert.equal(res.ended, true);
    }),
});

Deno.test({
  ...needs("a watch that overflowed reports resync and keeps delivering later events", ip),
  fn: () =>
    withNetns(["nobufs"], async (ns) => {
      const res = await inNetns<R<"enobufs">>(ns, SCEN, "enobufs");
      assert.equal(res.resync, "resync");
      assert.equal(res.listed, 3000);
      assert.equal(res.after?.kind, "route");
    }),
});

Deno.test({
  ...needs("sysctls are read and written in the namespace the agent runs in", { tools: ["ip", "sysctl"] }),
  fn: () =>
    withNetns(["sysctl"], async (ns) => {
      const res = await inNetns<R<"sysctl">>(ns, SCEN, "sysctl");
      assert.equal(res.before, "0");
      assert.equal(res.after, "1");
      assert.equal(res.rp, "2");
      assert.equal(res.missing !== "ok" && res.missing.name, "SysctlError");
      assert.equal((await ns.exec(["sysctl", "-n", "net.ipv4.ip_forward"])).stdout.trim(), "1");
    }),
});
