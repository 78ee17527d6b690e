import assert from "node:assert/strict";
import {
  decodeEvent,
  decodeRoute,
  decodeRule,
  encodeAddr,
  encodeLinkAdd,
  encodeLinkSet,
  encodeNeigh,
  encodeRoute,
  encodeRule,
  NetlinkDecodeError,
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REPLACE,
  NLM_F_REQUEST,
  NLMSG_DONE,
  type NlWriter,
  parseMessages,
  RouteProtocol,
  RouteType,
  RTM_DELROUTE,
  RTM_NEWADDR,
  RTM_NEWLINK,
  RTM_NEWNEIGH,
  RTM_NEWROUTE,
  RTM_NEWRULE,
  watchGroups,
} from "../../../ffi/mod.ts";
import { NlWriter as Writer } from "../../../ffi/mod.ts";

const golden = JSON.parse(await Deno.readTextFile(new URL("./golden/iproute2.json", import.meta.url))) as {
  requests: Record<string, string>;
  dumps: Record<string, string[]>;
};

function hex(s: string): Uint8Array {
  return new Uint8Array(s.match(/../g)!.map((b) => parseInt(b, 16)));
}
function toHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

const ADD = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
const REPLACE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
const PLAIN = NLM_F_REQUEST | NLM_F_ACK;
/** br0's interface index in the capture namespace (lo is 1). */
const BR0 = 2;

/** Each captured iproute2 command, and how our codec expresses the same request. */
const CASES: Record<string, { type: number; flags: number; body: (w: NlWriter) => void }> = {
  "ip route add 10.1.2.0/24 via 10.9.0.2 table 100 proto 17": {
    type: RTM_NEWROUTE,
    flags: ADD,
    body: (w) =>
      encodeRoute(w, { family: 4, dst: "10.1.2.0/24", gateway: "10.9.0.2", table: 100, protocol: 17 }),
  },
  "ip route add 10.1.3.0/24 via 10.9.0.2 src 10.9.0.1 metric 20 table 1000 dev br0": {
    type: RTM_NEWROUTE,
    flags: ADD,
    body: (w) =>
      encodeRoute(w, {
        family: 4,
        dst: "10.1.3.0/24",
        gateway: "10.9.0.2",
        src: "10.9.0.1",
        metric: 20,
        table: 1000,
        dev: BR0,
      }),
  },
  "ip route del 10.1.2.0/24 table 100": {
    type: RTM_DELROUTE,
    flags: PLAIN,
    body: (w) => encodeRoute(w, { family: 4, dst: "10.1.2.0/24", table: 100 }, true),
  },
  "ip route replace 10.1.4.0/24 dev br0 proto 17 scope link": {
    type: RTM_NEWROUTE,
    flags: REPLACE,
    body: (w) => encodeRoute(w, { family: 4, dst: "10.1.4.0/24", dev: BR0, protocol: 17, scope: 253 }),
  },
  "ip -6 route add fd01::/64 via fd00::2 metric 5 dev br0": {
    type: RTM_NEWROUTE,
    flags: ADD,
    body: (w) => encodeRoute(w, { family: 6, dst: "fd01::/64", gateway: "fd00::2", metric: 5, dev: BR0 }),
  },
  "ip route add 10.11.0.0/16 table 1000 nexthop via 10.9.0.2 weight 2 nexthop via 10.9.0.3": {
    type: RTM_NEWROUTE,
    flags: ADD,
    body: (w) =>
      encodeRoute(w, {
        family: 4,
        dst: "10.11.0.0/16",
        table: 1000,
        nexthops: [{ gateway: "10.9.0.2", weight: 2 }, { gateway: "10.9.0.3" }],
      }),
  },
  "ip route add blackhole 10.12.0.0/16 table 100": {
    type: RTM_NEWROUTE,
    flags: ADD,
    body: (w) => encodeRoute(w, { family: 4, dst: "10.12.0.0/16", table: 100, type: RouteType.blackhole }),
  },
  "ip rule add from 10.1.0.0/16 pref 100 table 77": {
    type: RTM_NEWRULE,
    flags: ADD,
    body: (w) => encodeRule(w, { family: 4, src: "10.1.0.0/16", priority: 100, table: 77 }),
  },
  "ip rule add fwmark 0x2000/0xf000 pref 101 table 300": {
    type: RTM_NEWRULE,
    flags: ADD,
    body: (w) => encodeRule(w, { family: 4, fwmark: 0x2000, fwmask: 0xf000, priority: 101, table: 300 }),
  },
  "ip addr add 10.9.1.1/24 dev br0": {
    type: RTM_NEWADDR,
    flags: ADD,
    body: (w) => encodeAddr(w, { family: 4, index: BR0, address: "10.9.1.1", prefix: 24 }),
  },
  "ip -6 addr add fd00::5/64 dev br0": {
    type: RTM_NEWADDR,
    flags: ADD,
    body: (w) => encodeAddr(w, { family: 6, index: BR0, address: "fd00::5", prefix: 64 }),
  },
  "ip link add v0 type veth peer name v1": {
    type: RTM_NEWLINK,
    flags: ADD,
    body: (w) => encodeLinkAdd(w, { kind: "veth", name: "v0", peer: "v1" }),
  },
  "ip link add vx0 type vxlan id 42 local 10.9.0.1 nolearning dstport 4789": {
    type: RTM_NEWLINK,
    flags: ADD,
    body: (w) =>
      encodeLinkAdd(w, {
        kind: "vxlan",
        name: "vx0",
        vni: 42,
        local: "10.9.0.1",
        learning: false,
        port: 4789,
      }),
  },
  "ip link add br1 mtu 1400 type bridge": {
    type: RTM_NEWLINK,
    flags: ADD,
    body: (w) => encodeLinkAdd(w, { kind: "bridge", name: "br1", mtu: 1400 }),
  },
  "ip link add kt0 type ipip local 10.0.0.1 remote 10.0.0.2": {
    type: RTM_NEWLINK,
    flags: ADD,
    body: (w) => encodeLinkAdd(w, { kind: "ipip", name: "kt0", local: "10.0.0.1", remote: "10.0.0.2" }),
  },
  "ip link add kt1 type ipip local 10.0.0.1 remote 10.0.0.2 ttl 64 dev br0 encap fou encap-sport auto encap-dport 5555":
    {
      type: RTM_NEWLINK,
      flags: ADD,
      body: (w) =>
        encodeLinkAdd(w, {
          kind: "ipip",
          name: "kt1",
          local: "10.0.0.1",
          remote: "10.0.0.2",
          ttl: 64,
          dev: BR0,
          fou: { dport: 5555 },
        }),
    },
  "ip link add kt2 type ip6tnl mode ip6ip6 local fd00::1 remote fd00::2": {
    type: RTM_NEWLINK,
    flags: ADD,
    body: (w) => encodeLinkAdd(w, { kind: "ip6tnl", name: "kt2", local: "fd00::1", remote: "fd00::2" }),
  },
  "ip link set br0 mtu 1450": {
    type: RTM_NEWLINK,
    flags: PLAIN,
    body: (w) => encodeLinkSet(w, BR0, { mtu: 1450 }),
  },
  "ip neigh add 10.9.0.7 lladdr 02:00:00:00:00:07 dev br0 nud permanent": {
    type: RTM_NEWNEIGH,
    flags: ADD,
    body: (w) => encodeNeigh(w, { family: 4, dev: BR0, dst: "10.9.0.7", lladdr: "02:00:00:00:00:07" }),
  },
};

for (const [cmd, c] of Object.entries(CASES)) {
  Deno.test(`encoding matches the bytes iproute2 sends for \`${cmd}\``, () => {
    const want = hex(golden.requests[cmd]!);
    const hdr = new DataView(want.buffer);
    assert.equal(hdr.getUint16(4, true), c.type, "message type");
    assert.equal(hdr.getUint16(6, true), c.flags, "flags");
    const w = new Writer();
    const off = w.beginMsg(c.type, c.flags, hdr.getUint32(8, true), hdr.getUint32(12, true));
    c.body(w);
    w.endMsg(off);
    assert.equal(toHex(w.toBytes()), toHex(want));
  });
}

Deno.test("every captured iproute2 request has an encoding case", () => {
  assert.deepEqual(Object.keys(golden.requests).sort(), Object.keys(CASES).sort());
});

function dumpMessages(cmd: string) {
  return golden.dumps[cmd]!.flatMap((h) => parseMessages(hex(h))).filter((m) => m.type !== NLMSG_DONE);
}

Deno.test("a route dump captured from the kernel decodes to the routes that were added", () => {
  const routes = dumpMessages("ip route show table 100").map(decodeRoute).filter((r) => r !== undefined);
  const v4 = routes.find((r) => r.dst === "10.1.2.0/24")!;
  assert.deepEqual(v4, {
    family: 4,
    dst: "10.1.2.0/24",
    table: 100,
    protocol: RouteProtocol.zebra,
    scope: 0,
    type: RouteType.unicast,
    gateway: "10.9.0.2",
    dev: BR0,
  });
  const mp = routes.find((r) => r.dst === "10.11.0.0/16")!;
  assert.deepEqual(mp.nexthops, [
    { weight: 2, dev: BR0, gateway: "10.9.0.2" },
    { weight: 1, dev: BR0, gateway: "10.9.0.3" },
  ]);
  const v6 = dumpMessages("ip -6 route show table 100").map(decodeRoute).find((r) => r?.dst === "fd01::/64")!;
  assert.equal(v6.gateway, "fd00::2");
  assert.equal(v6.metric, 5);
  assert.equal(v6.table, 100);
});

Deno.test("a rule dump captured from the kernel decodes to the default rules plus the added one", () => {
  const rules = dumpMessages("ip -4 rule show").map(decodeRule).filter((r) => r !== undefined);
  assert.deepEqual(rules.map((r) => [r.priority, r.table]), [[0, 255], [100, 77], [32766, 254], [
    32767,
    253,
  ]]);
  assert.equal(rules[1]!.src, "10.1.0.0/16");
});

Deno.test("decoded dump messages become typed events", () => {
  const ev = decodeEvent(dumpMessages("ip route show table 100")[0]!);
  assert.equal(ev?.kind, "route");
});

Deno.test("a route message truncated inside its header is a NetlinkDecodeError", () => {
  const m = dumpMessages("ip route show table 100")[0]!;
  assert.throws(() => decodeRoute({ ...m, payload: m.payload.subarray(0, 6) }), NetlinkDecodeError);
});

Deno.test("a route message with a gateway of the wrong size is a NetlinkDecodeError", () => {
  const w = new Writer();
  const off = w.beginMsg(RTM_NEWROUTE, 0, 1);
  w.u8(2).u8(24).u8(0).u8(0).u8(254).u8(3).u8(0).u8(1).u32(0);
  w.attr(5, new Uint8Array(3));
  w.endMsg(off);
  assert.throws(() => decodeRoute(parseMessages(w.toBytes())[0]!), NetlinkDecodeError);
});

Deno.test("an invalid address in a route is rejected before anything is sent", () => {
  assert.throws(() => encodeRoute(new Writer(), { family: 4, dst: "10.1.2.0/33" }), TypeError);
  assert.throws(
    () => encodeRoute(new Writer(), { family: 4, dst: "10.1.2.0/24", gateway: "fd00::1" }),
    TypeError,
  );
});

Deno.test("watch groups cover the requested kinds and families", () => {
  assert.deepEqual(watchGroups(["route"], [4]), [7]);
  assert.deepEqual(watchGroups(["route", "rule", "link"]).sort((a, b) => a - b), [1, 7, 8, 11, 19]);
});

Deno.test("the IPv4 fast path and the general path encode the same route bytes", () => {
  const routes = [
    { family: 4 as const, dst: "10.1.2.0/24", gateway: "10.9.0.2", table: 100, protocol: 17 },
    { family: 4 as const, dst: "0.0.0.0/0", gateway: "10.9.0.1" },
    { family: 4 as const, dst: "10.1.2.3", dev: 4, metric: 7, table: 300 },
  ];
  for (const r of routes) {
    const a = new Writer();
    encodeRoute(a, r);
    // A (empty) nexthops list forces the general path without changing the encoding.
    const b = new Writer();
    encodeRoute(b, { ...r, nexthops: [] });
    assert.equal(toHex(a.toBytes()), toHex(b.toBytes()), r.dst);
  }
});
