import assert from "node:assert/strict";
import {
  type Capability,
  decodeUpdate,
  encodeEndOfRib,
  encodeKeepalive,
  encodeNotification,
  encodeOpen,
  fromHex,
  MSG_UPDATE,
} from "../../../modules/router/bgp/message.ts";
import { addCommunities, chain, forPeers, prefixFilter } from "../../../modules/router/bgp/policy.ts";
import type { BgpEvent } from "../../../modules/router/bgp/speaker.ts";
import { AS_SEQUENCE, NO_EXPORT } from "../../../modules/router/bgp/types.ts";
import { announce, peerAttrs, RawPeer, World } from "./_harness.ts";

const states = (events: BgpEvent[], peer: string) =>
  events.filter((e): e is Extract<BgpEvent, { type: "peer" }> => e.type === "peer" && e.peer === peer).map((
    e,
  ) => e.state);

Deno.test("two speakers establish through Connect, OpenSent and OpenConfirm and exchange IPv4 and IPv6 routes", async () => {
  await using w = new World();
  const a = w.speaker("10.0.0.1", { asn: 65001, routerId: "10.0.0.1" });
  const b = w.speaker("10.0.0.2", { asn: 65002, routerId: "10.0.0.2" });
  a.addPeer({
    address: "10.0.0.2",
    asn: 65002,
    families: ["ipv4-unicast", "ipv6-unicast"],
    ipv6NextHop: "fd00::1",
  });
  b.addPeer({
    address: "10.0.0.1",
    asn: 65001,
    passive: true,
    families: ["ipv4-unicast", "ipv6-unicast"],
    ipv6NextHop: "fd00::2",
  });
  await b.start();
  await a.start();
  a.set("ipv4-unicast", [{ prefix: "10.1.0.0/24" }]);
  a.set("ipv6-unicast", [{ prefix: "2001:db8:1::/48" }]);
  await w.settle();
  assert.deepEqual(states(a.events, "10.0.0.2"), ["Connect", "OpenSent", "OpenConfirm", "Established"]);
  assert.deepEqual(states(b.events, "10.0.0.1"), ["Active", "OpenSent", "OpenConfirm", "Established"]);
  const got4 = b.routes("ipv4-unicast");
  assert.equal(got4.length, 1);
  assert.equal(got4[0]!.prefix, "10.1.0.0/24");
  assert.equal(got4[0]!.nextHop, "10.0.0.1");
  assert.deepEqual(got4[0]!.attrs.asPath, [{ type: AS_SEQUENCE, asns: [65001] }]);
  const got6 = b.routes("ipv6-unicast");
  assert.equal(got6[0]?.prefix, "2001:db8:1::/48");
  assert.equal(got6[0]?.nextHop, "fd00::1");
  assert.ok(
    b.events.some((e) => e.type === "learned" && e.prefix === "10.1.0.0/24" && e.peer === "10.0.0.1"),
  );

  // set() is a diff: dropping the IPv4 route withdraws it and leaves IPv6 alone.
  a.set("ipv4-unicast", []);
  await w.settle();
  assert.equal(b.routes("ipv4-unicast").length, 0);
  assert.equal(b.routes("ipv6-unicast").length, 1);
  assert.ok(b.events.some((e) => e.type === "withdrawn" && e.prefix === "10.1.0.0/24"));
  const st = b.peer("10.0.0.1")!;
  assert.equal(st.state, "Established");
  assert.deepEqual(st.families, ["ipv4-unicast", "ipv6-unicast"]);
  assert.ok((st.messagesReceived.update ?? 0) >= 3);
  b.refreshMetrics();
  assert.match(
    b.metrics.render(),
    /kube_router_bgp_peer_info\{asn="65001",peer="10.0.0.1",state="Established"\} 1/,
  );
});

Deno.test("the hold timer expires when the peer goes silent: NOTIFICATION 4, session down, routes withdrawn", async () => {
  await using w = new World();
  const s = w.speaker("10.0.0.1", { asn: 65001, routerId: "10.0.0.1" });
  s.addPeer({ address: "10.0.0.9", asn: 65009, passive: true, holdTime: 9 });
  await s.start();
  const raw = await RawPeer.session(w, "10.0.0.9", "10.0.0.1", {
    myAs: 65009,
    routerId: "10.0.0.9",
    holdTime: 30,
  });
  assert.equal(s.peer("10.0.0.9")?.state, "Established");
  assert.equal(s.peer("10.0.0.9")?.holdTime, 9);
  const attrs = peerAttrs(65009, "10.0.0.9");
  await raw.send(announce(attrs, ["10.9.0.0/16"]));
  await w.settle();
  assert.equal(s.routes("ipv4-unicast").length, 1);
  // Keepalives flow every 3 s while the peer is silent; at 9 s the hold timer fires.
  await w.clock.advance(8_000);
  assert.equal(s.peer("10.0.0.9")?.state, "Established");
  await w.clock.advance(1_500);
  await w.settle();
  assert.deepEqual(raw.notifications(), [{ code: 4, subcode: 0 }]);
  assert.notEqual(s.peer("10.0.0.9")?.state, "Established");
  assert.equal(s.routes("ipv4-unicast").length, 0);
  assert.ok(raw.received.filter((m) => m.type === 4).length >= 3, "keepalives were sent");
});

Deno.test("connect retries back off exponentially while the peer is unreachable", async () => {
  await using w = new World();
  const s = w.speaker("10.0.0.1", { asn: 65001, routerId: "10.0.0.1" });
  s.addPeer({ address: "10.0.0.7", asn: 65007, connectRetry: 2 });
  await s.start();
  await w.settle();
  const attempts = () => states(s.events, "10.0.0.7").filter((x) => x === "Connect").length;
  assert.equal(attempts(), 1);
  await w.clock.advance(2_100); // first retry after 2 s
  assert.equal(attempts(), 2);
  await w.clock.advance(2_100); // second waits 4 s
  assert.equal(attempts(), 2);
  await w.clock.advance(2_000);
  assert.equal(attempts(), 3);
  // Once the peer appears the next retry establishes and the backoff resets.
  const p = w.speaker("10.0.0.7", { asn: 65007, routerId: "10.0.0.7" });
  p.addPeer({ address: "10.0.0.1", asn: 65001, passive: true });
  await p.start();
  await w.clock.advance(8_100);
  await w.settle();
  assert.equal(s.peer("10.0.0.7")?.state, "Established");
});

Deno.test("a malformed UPDATE resets only that session with the right NOTIFICATION; the other peer keeps its routes", async () => {
  await using w = new World();
  const s = w.speaker("10.0.0.1", { asn: 65001, routerId: "10.0.0.1" });
  s.addPeer({ address: "10.0.0.8", asn: 65008, passive: true });
  s.addPeer({ address: "10.0.0.9", asn: 65009, passive: true });
  await s.start();
  const good = await RawPeer.connect(w, "10.0.0.8", "10.0.0.1");
  const bad = await RawPeer.connect(w, "10.0.0.9", "10.0.0.1");
  await good.handshake({ myAs: 65008, routerId: "10.0.0.8" });
  await bad.handshake({ myAs: 65009, routerId: "10.0.0.9" });
  await w.settle();
  await good.send(
    announce(peerAttrs(65008, "10.0.0.8"), ["10.8.0.0/16"]),
  );
  await w.settle();
  // Prefix length 40 in the NLRI: Invalid Network Field (3/10), a session reset under RFC 7606 too.
  const evil = announce(peerAttrs(65009, "10.0.0.9"), ["10.9.0.0/16"]);
  evil[evil.length - 3] = 40;
  await bad.send(evil);
  await w.settle();
  assert.deepEqual(bad.notifications(), [{ code: 3, subcode: 10 }]);
  assert.notEqual(s.peer("10.0.0.9")?.state, "Established");
  assert.equal(s.peer("10.0.0.8")?.state, "Established");
  assert.deepEqual(s.routes("ipv4-unicast").map((r) => r.prefix), ["10.8.0.0/16"]);
  const line = w.sink.lines.find((l) => l.includes("malformed message from peer"));
  assert.ok(
    line && line.includes("peer=10.0.0.9") && line.includes("bytes="),
    "logged with peer and bytes",
  );
});

Deno.test("a malformed attribute is treated as withdraw (RFC 7606) and the session stays up", async () => {
  await using w = new World();
  const s = w.speaker("10.0.0.1", { asn: 65001, routerId: "10.0.0.1" });
  s.addPeer({ address: "10.0.0.9", asn: 65009, passive: true });
  await s.start();
  const raw = await RawPeer.session(w, "10.0.0.9", "10.0.0.1", { myAs: 65009, routerId: "10.0.0.9" });
  const attrs = peerAttrs(65009, "10.0.0.9");
  const msg = announce(attrs, ["10.9.0.0/16", "10.10.0.0/16"]);
  await raw.send(msg);
  await w.settle();
  assert.equal(s.routes("ipv4-unicast").length, 2);
  const broken = msg.slice();
  broken[19 + 4 + 3] = 9; // ORIGIN value 9
  await raw.send(broken);
  await w.settle();
  assert.equal(s.routes("ipv4-unicast").length, 0);
  assert.equal(s.peer("10.0.0.9")?.state, "Established");
  assert.deepEqual(raw.notifications(), []);
  assert.ok(w.sink.lines.some((l) => l.includes("treat-as-withdraw") && l.includes("peer=10.0.0.9")));
  // A path that does not start with the peer's AS is withdrawn too.
  await raw.send(
    announce({ ...attrs, asPath: [{ type: AS_SEQUENCE, asns: [1, 2] }] }, ["10.11.0.0/16"]),
  );
  await w.settle();
  assert.equal(s.routes("ipv4-unicast").length, 0);
});

Deno.test("an OPEN from the wrong AS gets Bad Peer AS; garbage instead of a marker gets Connection Not Synchronized", async () => {
  await using w = new World();
  const s = w.speaker("10.0.0.1", { asn: 65001, routerId: "10.0.0.1" });
  s.addPeer({ address: "10.0.0.9", asn: 65009, passive: true });
  s.addPeer({ address: "10.0.0.8", asn: 65008, passive: true });
  await s.start();
  const raw = await RawPeer.connect(w, "10.0.0.9", "10.0.0.1");
  await raw.handshake({ myAs: 65555, routerId: "10.0.0.9" });
  const junk = await RawPeer.connect(w, "10.0.0.8", "10.0.0.1");
  await junk.send(fromHex("00".repeat(40)));
  await w.settle();
  assert.deepEqual(raw.notifications(), [{ code: 2, subcode: 2 }]);
  assert.deepEqual(junk.notifications(), [{ code: 1, subcode: 1 }]);
  assert.ok(raw.closed && junk.closed);
});

Deno.test("a connection from an unknown address is refused", async () => {
  await using w = new World();
  const s = w.speaker("10.0.0.1", { asn: 65001, routerId: "10.0.0.1" });
  await s.start();
  const raw = await RawPeer.connect(w, "10.0.0.66", "10.0.0.1");
  await w.settle();
  assert.ok(raw.closed);
});

Deno.test("when both sides connect at once, collision resolution leaves exactly one session", async () => {
  await using w = new World();
  const a = w.speaker("10.0.0.1", { asn: 65000, routerId: "10.0.0.1" });
  const b = w.speaker("10.0.0.2", { asn: 65000, routerId: "10.0.0.2" });
  // Both listen first, then both connect in the same instant: two TCP connections per pair.
  await a.start();
  await b.start();
  a.addPeer({ address: "10.0.0.2", asn: 65000 });
  b.addPeer({ address: "10.0.0.1", asn: 65000 });
  await w.settle(10);
  assert.equal(w.net.conns.length, 4, "two connections (each seen from both ends)");
  assert.ok(w.sink.lines.some((l) => l.includes("bgp connection collision")), "the collision was detected");
  assert.equal(a.peer("10.0.0.2")?.state, "Established");
  assert.equal(b.peer("10.0.0.1")?.state, "Established");
  // The survivor is the connection opened by the higher router id (10.0.0.2, i.e. b's).
  assert.equal(a.peer("10.0.0.2")?.localAddress, "10.0.0.1");
  const survivor = w.net.conns.find((c) => c.localAddress === "10.0.0.2" && c.remotePort === 179)!;
  assert.ok(!survivor.inbound.closed, "b's outgoing connection is the one kept");
  await w.clock.advance(100_000);
  assert.equal(a.peer("10.0.0.2")?.state, "Established");
  assert.equal(states(a.events, "10.0.0.2").filter((x) => x === "Established").length, 1);
  assert.equal(states(b.events, "10.0.0.1").filter((x) => x === "Established").length, 1);
});

Deno.test("a session both sides lost to one collision comes back at once, the higher router id first; another cease waits ConnectRetry", async () => {
  /** A session from a raw peer (router id `theirs`), closed by it with Cease `subcode`: when do we reconnect? */
  const reconnectAfter = async (ours: string, theirs: string, subcode: number) => {
    await using w = new World();
    const s = w.speaker("10.0.0.1", { asn: 65000, routerId: ours });
    // Active, so it connects out again; the raw peer has no listener, so our first attempts are refused.
    s.addPeer({ address: "10.0.0.9", asn: 65000, connectRetry: 5 });
    await s.start();
    await w.clock.advance(60_000);
    const raw = await RawPeer.session(w, "10.0.0.9", "10.0.0.1", { myAs: 65000, routerId: theirs });
    assert.equal(s.peer("10.0.0.9")?.state, "Established");
    const before = states(s.events, "10.0.0.9").length;
    await raw.send(encodeNotification({ code: 6, subcode, data: new Uint8Array() }));
    await w.settle();
    assert.ok(states(s.events, "10.0.0.9").slice(before).includes("Active"), "the session went down");
    for (let ms = 0; ms <= 6000; ms += 100) {
      if (states(s.events, "10.0.0.9").slice(before).includes("Connect")) return ms;
      await w.clock.advance(100);
    }
    return Infinity;
  };
  // Cease/Connection Collision Resolution (7): the higher BGP identifier reconnects at once, the lower
  // after a second (the other side's connection, which wins, usually comes first).
  assert.equal(await reconnectAfter("10.0.0.20", "10.0.0.9", 7), 0);
  assert.equal(await reconnectAfter("10.0.0.1", "10.0.0.9", 7), 1000);
  // Any other cease (here Administrative Reset, 4) is a failure: ConnectRetry, 5 s.
  assert.equal(await reconnectAfter("10.0.0.20", "10.0.0.9", 4), 5000);
});

Deno.test("a route reflector passes client routes to other clients with ORIGINATOR_ID and CLUSTER_LIST", async () => {
  await using w = new World();
  const rr = w.speaker("10.0.0.1", { asn: 65000, routerId: "10.0.0.1", clusterId: "1.1.1.1" });
  const c1 = w.speaker("10.0.0.2", { asn: 65000, routerId: "10.0.0.2" });
  const c2 = w.speaker("10.0.0.3", { asn: 65000, routerId: "10.0.0.3" });
  const plain = w.speaker("10.0.0.4", { asn: 65000, routerId: "10.0.0.4" });
  for (const a of ["10.0.0.2", "10.0.0.3"]) {
    rr.addPeer({ address: a, asn: 65000, passive: true, routeReflectorClient: true });
  }
  rr.addPeer({ address: "10.0.0.4", asn: 65000, passive: true });
  for (const c of [c1, c2, plain]) c.addPeer({ address: "10.0.0.1", asn: 65000 });
  for (const s of [rr, c1, c2, plain]) await s.start();
  c1.set("ipv4-unicast", [{ prefix: "10.2.0.0/24", communities: [NO_EXPORT] }]);
  plain.set("ipv4-unicast", [{ prefix: "10.4.0.0/24" }]);
  await w.settle(10);
  const at2 = c2.routes("ipv4-unicast").find((r) => r.prefix === "10.2.0.0/24");
  assert.ok(at2, "client route reflected to the other client");
  assert.equal(at2.nextHop, "10.0.0.2");
  assert.equal(at2.attrs.originatorId, "10.0.0.2");
  assert.deepEqual(at2.attrs.clusterList, ["1.1.1.1"]);
  assert.ok(
    plain.routes("ipv4-unicast").some((r) => r.prefix === "10.2.0.0/24"),
    "client route reflected to non-client",
  );
  assert.ok(
    c1.routes("ipv4-unicast").some((r) => r.prefix === "10.4.0.0/24"),
    "non-client route reflected to clients",
  );
  // The originator drops its own route coming back (ORIGINATOR_ID is its router id): nothing loops.
  assert.equal(c1.routes("ipv4-unicast").filter((r) => r.prefix === "10.2.0.0/24").length, 1);
});

Deno.test("eBGP export prepends our AS (plus configured prepends), sets next hop self and strips LOCAL_PREF", async () => {
  await using w = new World();
  const a = w.speaker("10.0.0.1", { asn: 64512, routerId: "10.0.0.1" });
  a.addPeer({ address: "10.0.0.9", asn: 65009, passive: true, asPathPrepend: { count: 2 } });
  await a.start();
  a.set("ipv4-unicast", [{ prefix: "10.1.0.0/24", nextHop: "192.0.2.7", localPref: 300, med: 5 }]);
  const raw = await RawPeer.session(w, "10.0.0.9", "10.0.0.1", { myAs: 65009, routerId: "10.0.0.9" });
  const ups = raw.updates();
  const ann = ups.find((u) => u.nlri.length)!;
  assert.deepEqual(ann.nlri, ["10.1.0.0/24"]);
  assert.deepEqual(ann.attrs?.asPath, [{ type: AS_SEQUENCE, asns: [64512, 64512, 64512] }]);
  assert.equal(ann.attrs?.nextHop, "10.0.0.1");
  assert.equal(ann.attrs?.localPref, undefined);
  assert.equal(ann.attrs?.med, 5);
  // End-of-RIB follows the initial table.
  assert.ok(ups.some((u) => u.nlri.length === 0 && !u.attrs));
});

Deno.test("a two-octet-AS peer gets AS_TRANS plus AS4_PATH from a four-octet-AS speaker", async () => {
  await using w = new World();
  const a = w.speaker("10.0.0.1", { asn: 4200000001, routerId: "10.0.0.1" });
  a.addPeer({ address: "10.0.0.9", asn: 65009, passive: true });
  await a.start();
  a.set("ipv4-unicast", [{ prefix: "10.1.0.0/24" }]);
  const raw = await RawPeer.connect(w, "10.0.0.9", "10.0.0.1");
  // An old speaker: no AS4 capability.
  await raw.send(encodeOpen({
    version: 4,
    myAs: 65009,
    holdTime: 90,
    routerId: "10.0.0.9",
    capabilities: [{ code: 1, afi: 1, safi: 1 }],
  }));
  await raw.send(encodeKeepalive());
  await w.settle();
  assert.equal(raw.opens()[0]?.myAs, 23456);
  const ann = raw.received.filter((m) => m.type === MSG_UPDATE).map((m) => m.bytes).find((b) =>
    b.length > 23
  )!;
  const asTwo = decodeUpdate(ann, { as4: false });
  assert.deepEqual(asTwo.attrs?.asPath, [{ type: AS_SEQUENCE, asns: [4200000001] }]);
});

Deno.test("graceful restart helper keeps a vanished peer's routes as stale and sweeps them after End-of-RIB", async () => {
  await using w = new World();
  const s = w.speaker("10.0.0.1", { asn: 65001, routerId: "10.0.0.1", gracefulRestart: { enabled: true } });
  s.addPeer({ address: "10.0.0.9", asn: 65009, passive: true });
  await s.start();
  const grCaps: Capability[] = [
    { code: 1, afi: 1, safi: 1 },
    { code: 65, asn: 65009 },
    {
      code: 64,
      restarting: false,
      notification: false,
      time: 120,
      families: [{ afi: 1, safi: 1, forwarding: true }],
    },
  ];
  let raw = await RawPeer.session(w, "10.0.0.9", "10.0.0.1", {
    myAs: 65009,
    routerId: "10.0.0.9",
    capabilities: grCaps,
  });
  const attrs = peerAttrs(65009, "10.0.0.9");
  await raw.send(
    announce(attrs, ["10.9.0.0/16", "10.10.0.0/16"]),
  );
  await w.settle();
  assert.equal(s.routes("ipv4-unicast").length, 2);
  // The peer's process dies: TCP closes without a NOTIFICATION.
  raw.conn.close();
  await w.settle();
  assert.notEqual(s.peer("10.0.0.9")?.state, "Established");
  assert.deepEqual(s.routes("ipv4-unicast").map((r) => r.stale), [true, true]);
  assert.ok(!s.events.some((e) => e.type === "withdrawn"));
  // It comes back within the restart time, re-announces one prefix, then End-of-RIB.
  await w.clock.advance(30_000);
  raw = await RawPeer.session(w, "10.0.0.9", "10.0.0.1", {
    myAs: 65009,
    routerId: "10.0.0.9",
    capabilities: grCaps,
  });
  await raw.send(announce(attrs, ["10.9.0.0/16"]));
  await w.settle();
  assert.equal(s.routes("ipv4-unicast").length, 2);
  await raw.send(encodeEndOfRib("ipv4-unicast"));
  await w.settle();
  assert.deepEqual(s.routes("ipv4-unicast").map((r) => [r.prefix, r.stale]), [["10.9.0.0/16", false]]);
  assert.ok(
    s.events.some((e) => e.type === "endOfRib" && e.peer === "10.0.0.9" && e.family === "ipv4-unicast"),
  );
  assert.ok(s.events.some((e) => e.type === "withdrawn" && e.prefix === "10.10.0.0/16"));
});

Deno.test("graceful restart helper withdraws stale routes when the restart timer runs out", async () => {
  await using w = new World();
  const s = w.speaker("10.0.0.1", { asn: 65001, routerId: "10.0.0.1", gracefulRestart: { enabled: true } });
  s.addPeer({ address: "10.0.0.9", asn: 65009, passive: true });
  await s.start();
  const raw = await RawPeer.session(w, "10.0.0.9", "10.0.0.1", {
    myAs: 65009,
    routerId: "10.0.0.9",
    capabilities: [{ code: 65, asn: 65009 }, {
      code: 64,
      restarting: false,
      notification: false,
      time: 60,
      families: [{ afi: 1, safi: 1, forwarding: true }],
    }],
  });
  const attrs = peerAttrs(65009, "10.0.0.9");
  await raw.send(announce(attrs, ["10.9.0.0/16"]));
  await w.settle();
  raw.conn.close();
  await w.settle();
  await w.clock.advance(59_000);
  assert.equal(s.routes("ipv4-unicast").length, 1);
  await w.clock.advance(2_000);
  assert.equal(s.routes("ipv4-unicast").length, 0);
});

Deno.test("import policy rejects filtered prefixes and re-evaluates held routes when it changes", async () => {
  await using w = new World();
  const a = w.speaker("10.0.0.1", { asn: 65001, routerId: "10.0.0.1" });
  const b = w.speaker("10.0.0.2", {
    asn: 65002,
    routerId: "10.0.0.2",
    importPolicy: prefixFilter([{ cidr: "0.0.0.0/0", maxLength: 0 }, { cidr: "172.16.0.0/16" }], "reject"),
  });
  a.addPeer({ address: "10.0.0.2", asn: 65002 });
  b.addPeer({ address: "10.0.0.1", asn: 65001, passive: true });
  await b.start();
  await a.start();
  a.set("ipv4-unicast", [{ prefix: "0.0.0.0/0" }, { prefix: "172.16.5.0/24" }, { prefix: "10.1.0.0/24" }]);
  await w.settle();
  assert.deepEqual(b.routes("ipv4-unicast").map((r) => r.prefix), ["10.1.0.0/24"]);
  assert.equal(b.peer("10.0.0.1")?.prefixes["ipv4-unicast"]?.received, 3);
  assert.equal(b.peer("10.0.0.1")?.prefixes["ipv4-unicast"]?.accepted, 1);
  b.setImportPolicy((r) => r.attrs);
  assert.equal(b.routes("ipv4-unicast").length, 3);
});

Deno.test("removing a peer sends Cease and withdraws what it taught us", async () => {
  await using w = new World();
  const a = w.speaker("10.0.0.1", { asn: 65001, routerId: "10.0.0.1" });
  const b = w.speaker("10.0.0.2", { asn: 65002, routerId: "10.0.0.2" });
  a.addPeer({ address: "10.0.0.2", asn: 65002 });
  b.addPeer({ address: "10.0.0.1", asn: 65001, passive: true });
  await b.start();
  await a.start();
  b.set("ipv4-unicast", [{ prefix: "10.2.0.0/24" }]);
  await w.settle();
  assert.equal(a.routes("ipv4-unicast").length, 1);
  b.removePeer("10.0.0.1");
  await w.settle();
  assert.equal(a.routes("ipv4-unicast").length, 0);
  assert.match(a.peer("10.0.0.2")?.lastError ?? "", /cease/);
  assert.equal(b.peers().length, 0);
});

Deno.test("a restarting speaker announces graceful restart with the R and F bits and its restart time", async () => {
  await using w = new World();
  const s = w.speaker("10.0.0.1", {
    asn: 65001,
    routerId: "10.0.0.1",
    gracefulRestart: { enabled: true, restartTime: 120, restarting: true },
  });
  s.addPeer({ address: "10.0.0.9", asn: 65009, passive: true, families: ["ipv4-unicast", "ipv6-unicast"] });
  await s.start();
  const raw = await RawPeer.session(w, "10.0.0.9", "10.0.0.1", { myAs: 65009, routerId: "10.0.0.9" });
  const gr = raw.opens()[0]!.capabilities.find((c) => c.code === 64);
  assert.deepEqual(gr, {
    code: 64,
    restarting: true,
    notification: false,
    time: 120,
    families: [{ afi: 1, safi: 1, forwarding: true }, { afi: 2, safi: 1, forwarding: true }],
  });
  // End-of-RIB for both families follows the (empty) initial table.
  const eors = raw.updates();
  assert.equal(eors.length, 2);
});

Deno.test("set() rejects an invalid prefix or a prefix of the wrong family and changes nothing", () => {
  const w = new World();
  const s = w.speaker("10.0.0.1", { asn: 65001, routerId: "10.0.0.1" });
  s.set("ipv4-unicast", [{ prefix: "10.1.0.0/24" }]);
  assert.throws(
    () => s.set("ipv4-unicast", [{ prefix: "10.2.0.0/24" }, { prefix: "10.3.0.0/33" }]),
    /not a valid/,
  );
  assert.throws(() => s.set("ipv4-unicast", [{ prefix: "2001:db8::/32" }]), /not a valid/);
  assert.throws(() => s.set("ipv6-unicast", [{ prefix: "2001:db8::/32", nextHop: "bogus" }]), /bad next hop/);
  assert.deepEqual(s.routes("ipv4-unicast").map((r) => r.prefix), ["10.1.0.0/24"]);
  // Host bits are cleared: 10.1.0.7/24 is the same route.
  s.set("ipv4-unicast", [{ prefix: "10.1.0.7/24" }]);
  assert.deepEqual(s.routes("ipv4-unicast").map((r) => r.prefix), ["10.1.0.0/24"]);
});

Deno.test("peers can be added, changed and removed at run time with setPeers", async () => {
  await using w = new World();
  const a = w.speaker("10.0.0.1", { asn: 65001, routerId: "10.0.0.1" });
  const b = w.speaker("10.0.0.2", { asn: 65002, routerId: "10.0.0.2" });
  await a.start();
  await b.start();
  b.setPeers([{ address: "10.0.0.1", asn: 65001, passive: true }]);
  a.setPeers([{ address: "10.0.0.2", asn: 65002 }]);
  a.set("ipv4-unicast", [{ prefix: "10.1.0.0/24" }]);
  await w.settle();
  assert.equal(b.routes("ipv4-unicast")[0]?.attrs.asPath[0]?.asns.length, 1);
  // An export-side change (prepend) re-advertises without resetting the session.
  a.setPeers([{ address: "10.0.0.2", asn: 65002, asPathPrepend: { count: 2 } }]);
  await w.settle();
  assert.equal(b.routes("ipv4-unicast")[0]?.attrs.asPath[0]?.asns.length, 3);
  assert.equal(states(a.events, "10.0.0.2").filter((x) => x === "Established").length, 1);
  // A session-level change (hold time) resets it.
  a.setPeers([{ address: "10.0.0.2", asn: 65002, holdTime: 30, asPathPrepend: { count: 2 } }]);
  // The first reconnect may meet the old session still open on the far side; the retry gets through.
  await w.clock.advance(6_000);
  await w.settle();
  assert.equal(a.peer("10.0.0.2")?.state, "Established");
  assert.equal(a.peer("10.0.0.2")?.holdTime, 30);
  a.setPeers([]);
  await w.settle();
  assert.equal(a.peers().length, 0);
  assert.equal(b.routes("ipv4-unicast").length, 0);
});

Deno.test("a connect that never completes times out and is retried instead of blocking the peer", async () => {
  await using w = new World();
  let calls = 0;
  const hanging = {
    name: "hanging",
    supports: { password: false, ttl: false, localAddress: false },
    connect: () => {
      calls++;
      return new Promise<never>(() => {});
    },
    listen: () => {
      throw new Error("not used");
    },
  };
  const s = w.speaker("10.0.0.1", {
    asn: 65001,
    routerId: "10.0.0.1",
    transport: hanging,
    listenAddresses: [],
  });
  s.addPeer({ address: "10.0.0.7", asn: 65007, connectRetry: 1 });
  await s.start();
  await w.settle();
  assert.equal(calls, 1);
  await w.clock.advance(2_100); // timed out after 2 s, retried after 1 s more
  await w.clock.advance(1_100);
  assert.equal(calls, 2);
  assert.match(s.peer("10.0.0.7")?.lastError ?? "", /timed out/);
});

Deno.test("after a restart with deferral, the speaker advertises only once its peers sent End-of-RIB", async () => {
  await using w = new World();
  const s = w.speaker("10.0.0.1", {
    asn: 65001,
    routerId: "10.0.0.1",
    gracefulRestart: { enabled: true, restarting: true, deferralTime: 60 },
  });
  s.addPeer({ address: "10.0.0.9", asn: 65009, passive: true });
  await s.start();
  s.set("ipv4-unicast", [{ prefix: "10.1.0.0/24" }]);
  const raw = await RawPeer.session(w, "10.0.0.9", "10.0.0.1", { myAs: 65009, routerId: "10.0.0.9" });
  assert.equal(s.peer("10.0.0.9")?.state, "Established");
  assert.equal(raw.updates().length, 0, "nothing sent while deferring");
  await raw.send(encodeEndOfRib("ipv4-unicast"));
  await w.settle();
  const ups = raw.updates();
  assert.deepEqual(ups.map((u) => u.nlri), [["10.1.0.0/24"], []], "table, then End-of-RIB");
});

Deno.test("the deferral timer releases advertisements when a peer never sends End-of-RIB", async () => {
  await using w = new World();
  const s = w.speaker("10.0.0.1", {
    asn: 65001,
    routerId: "10.0.0.1",
    gracefulRestart: { enabled: true, restarting: true, deferralTime: 30 },
  });
  s.addPeer({ address: "10.0.0.9", asn: 65009, passive: true });
  await s.start();
  s.set("ipv4-unicast", [{ prefix: "10.1.0.0/24" }]);
  const raw = await RawPeer.session(w, "10.0.0.9", "10.0.0.1", {
    myAs: 65009,
    routerId: "10.0.0.9",
    holdTime: 0,
  });
  await w.clock.advance(29_000);
  assert.equal(raw.updates().length, 0);
  await w.clock.advance(2_000);
  assert.equal(raw.updates().length, 2);
});

Deno.test("eBGP-learned routes go to iBGP peers with their next hop unchanged unless next-hop-self; NO_EXPORT stays inside the AS", async () => {
  await using w = new World();
  // A tags one prefix NO_EXPORT on import (as a `community add` route-map would).
  const a = w.speaker("10.0.0.1", {
    asn: 65001,
    routerId: "10.0.0.1",
    importPolicy: (r) => r.prefix === "10.3.1.0/24" ? { ...r.attrs, communities: [NO_EXPORT] } : r.attrs,
  });
  const b = w.speaker("10.0.0.2", { asn: 65001, routerId: "10.0.0.2" });
  const b2 = w.speaker("10.0.0.4", { asn: 65001, routerId: "10.0.0.4" });
  const c = w.speaker("10.0.0.3", { asn: 65003, routerId: "10.0.0.3" });
  const d = w.speaker("10.0.0.5", { asn: 65005, routerId: "10.0.0.5" });
  a.addPeer({ address: "10.0.0.2", asn: 65001, passive: true });
  a.addPeer({ address: "10.0.0.4", asn: 65001, passive: true, nextHopSelf: true });
  a.addPeer({ address: "10.0.0.3", asn: 65003, passive: true });
  a.addPeer({ address: "10.0.0.5", asn: 65005, passive: true });
  b.addPeer({ address: "10.0.0.1", asn: 65001 });
  b2.addPeer({ address: "10.0.0.1", asn: 65001 });
  c.addPeer({ address: "10.0.0.1", asn: 65001 });
  d.addPeer({ address: "10.0.0.1", asn: 65001 });
  for (const s of [a, b, b2, c, d]) await s.start();
  c.set("ipv4-unicast", [{ prefix: "10.3.0.0/24" }, { prefix: "10.3.1.0/24" }]);
  await w.settle(10);
  const atB = b.routes("ipv4-unicast").find((r) => r.prefix === "10.3.0.0/24");
  assert.equal(atB?.nextHop, "10.0.0.3");
  assert.equal(atB?.attrs.localPref, 100);
  assert.deepEqual(atB?.attrs.asPath, [{ type: AS_SEQUENCE, asns: [65003] }]);
  assert.equal(b2.routes("ipv4-unicast").find((r) => r.prefix === "10.3.0.0/24")?.nextHop, "10.0.0.1");
  // NO_EXPORT: to iBGP yes, to the other AS no.
  assert.ok(b.routes("ipv4-unicast").some((r) => r.prefix === "10.3.1.0/24"));
  assert.deepEqual(d.routes("ipv4-unicast").map((r) => r.prefix), ["10.3.0.0/24"]);
  assert.deepEqual(a.adjRibOut("10.0.0.5", "ipv4-unicast").map((r) => r.prefix), ["10.3.0.0/24"]);
  assert.deepEqual(a.adjRibIn("10.0.0.3", "ipv4-unicast").map((r) => r.prefix).sort(), [
    "10.3.0.0/24",
    "10.3.1.0/24",
  ]);
});

Deno.test("an export policy tags communities per peer and can filter prefixes", async () => {
  await using w = new World();
  const a = w.speaker("10.0.0.1", {
    asn: 65001,
    routerId: "10.0.0.1",
    exportPolicy: chain(
      forPeers((p) => p.ebgp, addCommunities([65001 * 65536 + 42])),
      prefixFilter([{ cidr: "10.9.0.0/16" }], "reject"),
    ),
  });
  const b = w.speaker("10.0.0.2", { asn: 65002, routerId: "10.0.0.2" });
  a.addPeer({ address: "10.0.0.2", asn: 65002 });
  b.addPeer({ address: "10.0.0.1", asn: 65001, passive: true });
  await b.start();
  await a.start();
  a.set("ipv4-unicast", [{ prefix: "10.1.0.0/24", communities: [65001 * 65536 + 1] }, {
    prefix: "10.9.1.0/24",
  }]);
  await w.settle();
  const got = b.routes("ipv4-unicast");
  assert.deepEqual(got.map((r) => r.prefix), ["10.1.0.0/24"]);
  assert.deepEqual(got[0]!.attrs.communities, [65001 * 65536 + 1, 65001 * 65536 + 42]);
  // Replacing the policy re-advertises: the filtered prefix appears.
  a.setExportPolicy((r) => r.attrs);
  await w.settle();
  assert.deepEqual(b.routes("ipv4-unicast").map((r) => r.prefix).sort(), ["10.1.0.0/24", "10.9.1.0/24"]);
  assert.deepEqual(b.routes("ipv4-unicast").find((r) => r.prefix === "10.1.0.0/24")!.attrs.communities, [
    65001 * 65536 + 1,
  ]);
});

Deno.test("NLRI that arrive without any path attribute withdraw the prefix (RFC 7606)", async () => {
  await using w = new World();
  const s = w.speaker("10.0.0.1", { asn: 65001, routerId: "10.0.0.1" });
  s.addPeer({ address: "10.0.0.9", asn: 65009, passive: true });
  await s.start();
  const raw = await RawPeer.session(w, "10.0.0.9", "10.0.0.1", { myAs: 65009, routerId: "10.0.0.9" });
  const attrs = peerAttrs(65009, "10.0.0.9");
  await raw.send(announce(attrs, ["10.9.0.0/16"]));
  await w.settle();
  assert.equal(s.routes("ipv4-unicast").length, 1);
  // UPDATE: no withdrawn routes, no attributes, NLRI 10.9.0.0/16.
  await raw.send(fromHex("ffffffffffffffffffffffffffffffff" + "001a" + "02" + "0000" + "0000" + "100a09"));
  await w.settle();
  assert.equal(s.routes("ipv4-unicast").length, 0);
  assert.equal(s.peer("10.0.0.9")?.state, "Established");
});

Deno.test("with an export policy, prefixes that end up with equal attributes still share UPDATE messages", async () => {
  await using w = new World();
  // A policy that returns a fresh (but equal) object for every prefix.
  const s = w.speaker("10.0.0.1", {
    asn: 65001,
    routerId: "10.0.0.1",
    exportPolicy: (r) => ({ ...r.attrs }),
  });
  s.addPeer({ address: "10.0.0.9", asn: 65009, passive: true });
  await s.start();
  s.set(
    "ipv4-unicast",
    Array.from({ length: 600 }, (_, i) => ({ prefix: `10.${i >> 8}.${i & 255}.0/24` })),
  );
  const raw = await RawPeer.session(w, "10.0.0.9", "10.0.0.1", { myAs: 65009, routerId: "10.0.0.9" });
  const ups = raw.updates();
  assert.equal(ups.reduce((n, u) => n + u.nlri.length, 0), 600);
  assert.ok(ups.length <= 3, `${ups.length} UPDATEs for 600 prefixes`);
});

Deno.test("update() announces and withdraws only the routes it names and leaves the others alone", async () => {
  await using w = new World();
  const a = w.speaker("10.0.0.1", { asn: 65001, routerId: "10.0.0.1" });
  const b = w.speaker("10.0.0.2", { asn: 65002, routerId: "10.0.0.2" });
  a.addPeer({ address: "10.0.0.2", asn: 65002, families: ["ipv4-unicast"] });
  b.addPeer({ address: "10.0.0.1", asn: 65001, passive: true, families: ["ipv4-unicast"] });
  await b.start();
  await a.start();
  a.set("ipv4-unicast", [{ prefix: "10.1.0.0/24" }, { prefix: "10.96.0.10/32" }]);
  await w.settle();
  const got = () => b.routes("ipv4-unicast").map((r) => `${r.prefix} ${r.attrs.med ?? "-"}`).sort();
  assert.deepEqual(got(), ["10.1.0.0/24 -", "10.96.0.10/32 -"]);
  a.update("ipv4-unicast", [{ prefix: "10.96.0.11/32" }, { prefix: "10.96.0.10/32", med: 7 }], [
    "10.1.0.0/24",
  ]);
  await w.settle();
  assert.deepEqual(got(), ["10.96.0.10/32 7", "10.96.0.11/32 -"]);
  a.update("ipv4-unicast", [], ["10.96.0.11/32", "10.9.9.9/32"]); // withdrawing an unknown prefix is a no-op
  await w.settle();
  assert.deepEqual(got(), ["10.96.0.10/32 7"]);
  assert.throws(() => a.update("ipv4-unicast", [{ prefix: "fd00::/64" }]), /not a valid ipv4-unicast prefix/);
  assert.throws(() => a.update("ipv4-unicast", [], ["garbage"]));
  assert.deepEqual(got(), ["10.96.0.10/32 7"], "a rejected update changes nothing");
});

Deno.test("a graceful-restart speaker stopped for a restart drops its sessions without Cease, so its peer keeps its routes as stale", async () => {
  for (const notify of [false, true]) {
    await using w = new World();
    const gr = { enabled: true, restartTime: 120 };
    const a = w.speaker("10.0.0.1", { asn: 65001, routerId: "10.0.0.1", gracefulRestart: gr });
    const b = w.speaker("10.0.0.2", { asn: 65001, routerId: "10.0.0.2", gracefulRestart: gr });
    a.addPeer({ address: "10.0.0.2", asn: 65001 });
    b.addPeer({ address: "10.0.0.1", asn: 65001, passive: true });
    await b.start();
    await a.start();
    b.set("ipv4-unicast", [{ prefix: "10.2.0.0/24" }]);
    await w.settle();
    assert.equal(a.routes("ipv4-unicast").length, 1);
    await b.stop({ notify });
    await w.settle();
    if (notify) {
      // A Cease ends the session for good: the routes go at once.
      assert.equal(a.routes("ipv4-unicast").length, 0);
      assert.match(a.peer("10.0.0.2")?.lastError ?? "", /cease/);
    } else {
      assert.deepEqual(a.routes("ipv4-unicast").map((r) => [r.prefix, r.stale]), [["10.2.0.0/24", true]]);
      assert.ok(!a.events.some((e) => e.type === "withdrawn"));
    }
  }
});
