import assert from "node:assert/strict";
import fc from "fast-check";
import { BgpError } from "../../../modules/router/bgp/errors.ts";
import {
  AS_TRANS,
  CAP_AS4,
  CAP_GRACEFUL_RESTART,
  CAP_MP,
  CAP_ROUTE_REFRESH,
  decodeHeader,
  decodeNotification,
  decodeOpen,
  decodeRouteRefresh,
  decodeUpdate,
  encodeAnnouncements,
  encodeEndOfRib,
  encodeKeepalive,
  encodeNotification,
  encodeOpen,
  encodeRouteRefresh,
  encodeWithdrawals,
  endOfRibFamily,
  fromHex,
  MSG_KEEPALIVE,
  MSG_NOTIFICATION,
  MSG_OPEN,
  MSG_ROUTE_REFRESH,
  MSG_UPDATE,
  normalizePrefix,
  type OpenMessage,
  peerAsn,
  splitMessages,
  summarizeCapabilities,
  toHex,
  type UpdateMessage,
} from "../../../modules/router/bgp/message.ts";
import { shutdownCommunication } from "../../../modules/router/bgp/session.ts";
import { AS_SEQUENCE, type PathAttributes } from "../../../modules/router/bgp/types.ts";

interface Captured {
  from: "gobgpd" | "bird";
  type: number;
  hex: string;
}
const session: Captured[] = JSON.parse(
  await Deno.readTextFile(new URL("./fixtures/gobgp_bird_session.json", import.meta.url)),
);
const msgs = (from: string, type: number) =>
  session.filter((m) => m.from === from && m.type === type).map((m) => fromHex(m.hex));
/** The captured UPDATE of `from` that `pick` accepts (the order of UPDATEs varies between captures). */
const update = (from: string, what: string, pick: (raw: Uint8Array) => boolean): Uint8Array => {
  const m = msgs(from, MSG_UPDATE).find(pick);
  if (!m) throw new Error(`fixture lacks ${from}'s ${what}`);
  return m;
};
const has = (raw: Uint8Array, f: (u: UpdateMessage) => boolean) => f(decodeUpdate(raw, { as4: true }));
const G = {
  v4: update("gobgpd", "IPv4 UPDATE", (b) => has(b, (u) => u.nlri.includes("10.1.0.0/24"))),
  v6: update("gobgpd", "IPv6 UPDATE", (b) => has(b, (u) => !!u.mpReach?.nlri.includes("2001:db8:1::/48"))),
  w4: update("gobgpd", "IPv4 withdrawal", (b) => has(b, (u) => u.withdrawn.includes("10.1.0.0/24"))),
  w6: update(
    "gobgpd",
    "IPv6 withdrawal",
    (b) => has(b, (u) => !!u.mpUnreach?.withdrawn.includes("2001:db8:1::/48")),
  ),
  // By size alone, so the End-of-RIB test does not select with the function it tests.
  eor4: update("gobgpd", "IPv4 End-of-RIB", (b) => b.length === 23),
  eor6: update("gobgpd", "IPv6 End-of-RIB", (b) => b.length === 29),
};
const B = {
  r1: update("bird", "10.2.0.0/24", (b) => has(b, (u) => u.nlri.includes("10.2.0.0/24"))),
  r2: update("bird", "10.2.1.0/24", (b) => has(b, (u) => u.nlri.includes("10.2.1.0/24"))),
  v6: update("bird", "IPv6 UPDATE", (b) => has(b, (u) => !!u.mpReach?.nlri.includes("2001:db8:2::/48"))),
  eor4: update("bird", "IPv4 End-of-RIB", (b) => b.length === 23),
  eor6: update("bird", "IPv6 End-of-RIB", (b) => b.length === 29),
};

Deno.test("gobgpd's OPEN decodes to AS 65001 with MP, route refresh, graceful restart and AS4", () => {
  const raw = msgs("gobgpd", MSG_OPEN)[0]!;
  const open = decodeOpen(raw);
  assert.equal(open.version, 4);
  assert.equal(open.myAs, 65001);
  assert.equal(open.holdTime, 90);
  assert.equal(open.routerId, "10.0.0.1");
  assert.equal(peerAsn(open), 65001);
  const caps = summarizeCapabilities(open.capabilities);
  assert.deepEqual(caps.families, ["ipv4-unicast", "ipv6-unicast"]);
  assert.equal(caps.routeRefresh, true);
  assert.equal(caps.as4, 65001);
  assert.equal(caps.gracefulRestart?.time, 120);
  assert.deepEqual([...caps.gracefulRestart!.families.keys()], ["ipv4-unicast", "ipv6-unicast"]);
  // gobgpd packs every capability in one optional parameter, as our encoder does: exact round trip.
  assert.equal(toHex(encodeOpen(open)), toHex(raw));
});

Deno.test("BIRD's OPEN with a four-octet AS carries AS_TRANS in the two-octet field", () => {
  const open = decodeOpen(msgs("bird", MSG_OPEN)[0]!);
  assert.equal(open.myAs, AS_TRANS);
  assert.equal(peerAsn(open), 4200000002);
  assert.equal(open.routerId, "10.0.0.2");
  const caps = summarizeCapabilities(open.capabilities);
  assert.deepEqual(caps.families.sort(), ["ipv4-unicast", "ipv6-unicast"]);
  assert.equal(caps.routeRefresh, true);
  assert.equal(toHex(encodeOpen(open)), toHex(msgs("bird", MSG_OPEN)[0]!));
});

Deno.test("KEEPALIVE from both implementations equals ours byte for byte", () => {
  for (const from of ["gobgpd", "bird"]) {
    assert.equal(toHex(msgs(from, MSG_KEEPALIVE)[0]!), toHex(encodeKeepalive()));
  }
});

Deno.test("gobgpd's IPv4 UPDATE carries MED, communities and next hop; our encoding is identical", () => {
  const raw = G.v4;
  const u = decodeUpdate(raw, { as4: true });
  assert.deepEqual(u.nlri, ["10.1.0.0/24"]);
  assert.equal(u.treatAsWithdraw, undefined);
  const a = u.attrs!;
  assert.equal(a.origin, 2);
  assert.deepEqual(a.asPath, [{ type: AS_SEQUENCE, asns: [65001] }]);
  assert.equal(a.nextHop, "10.0.0.1");
  assert.equal(a.med, 10);
  assert.deepEqual(a.communities, [65001 * 65536 + 100]);
  const again = encodeAnnouncements("ipv4-unicast", a, u.nlri, { as4: true });
  assert.equal(again.length, 1);
  assert.equal(toHex(again[0]!), toHex(raw));
});

Deno.test("gobgpd's IPv6 UPDATE puts the route and next hop in MP_REACH_NLRI", () => {
  const raw = G.v6;
  const u = decodeUpdate(raw, { as4: true });
  assert.deepEqual(u.mpReach?.nlri, ["2001:db8:1::/48"]);
  assert.equal(u.mpReach?.nextHop, "fd00::1");
  assert.equal(u.attrs?.nextHop, "fd00::1");
  assert.equal(u.mpReach?.family, "ipv6-unicast");
  const again = encodeAnnouncements("ipv6-unicast", u.attrs!, u.mpReach!.nlri, { as4: true });
  assert.deepEqual(decodeUpdate(again[0]!, { as4: true }), u);
});

Deno.test("End-of-RIB markers from gobgpd and BIRD are recognised and match ours", () => {
  assert.equal(endOfRibFamily(decodeUpdate(G.eor4, { as4: true })), "ipv4-unicast");
  assert.equal(endOfRibFamily(decodeUpdate(G.eor6, { as4: true })), "ipv6-unicast");
  assert.equal(toHex(G.eor4), toHex(encodeEndOfRib("ipv4-unicast")));
  assert.equal(toHex(G.eor6), toHex(encodeEndOfRib("ipv6-unicast")));
  assert.equal(endOfRibFamily(decodeUpdate(B.eor4, { as4: true })), "ipv4-unicast");
  assert.equal(endOfRibFamily(decodeUpdate(B.eor6, { as4: true })), "ipv6-unicast");
  // Real announcements and withdrawals are not End-of-RIB markers.
  for (const m of [B.r1, B.v6, G.w4, G.w6]) {
    assert.equal(endOfRibFamily(decodeUpdate(m, { as4: true })), undefined);
  }
});

Deno.test("gobgpd's withdrawals decode and re-encode identically", () => {
  const w4 = decodeUpdate(G.w4, { as4: true });
  assert.deepEqual(w4.withdrawn, ["10.1.0.0/24"]);
  assert.equal(toHex(encodeWithdrawals("ipv4-unicast", w4.withdrawn)[0]!), toHex(G.w4));
  const w6 = decodeUpdate(G.w6, { as4: true });
  assert.deepEqual(w6.mpUnreach, { family: "ipv6-unicast", withdrawn: ["2001:db8:1::/48"] });
  assert.equal(toHex(encodeWithdrawals("ipv6-unicast", ["2001:db8:1::/48"])[0]!), toHex(G.w6));
});

Deno.test("BIRD's UPDATEs carry a four-octet AS path, communities and a link-local IPv6 next hop", () => {
  const u1 = decodeUpdate(B.r1, { as4: true });
  assert.deepEqual(u1.nlri, ["10.2.0.0/24"]);
  assert.deepEqual(u1.attrs?.asPath, [{ type: AS_SEQUENCE, asns: [4200000002] }]);
  assert.equal(u1.attrs?.origin, 0);
  assert.equal(u1.attrs?.nextHop, "10.0.0.2");
  const u2 = decodeUpdate(B.r2, { as4: true });
  assert.deepEqual(u2.attrs?.communities, [65002 * 65536 + 7]);
  const u6 = decodeUpdate(B.v6, { as4: true });
  assert.deepEqual(u6.mpReach?.nlri, ["2001:db8:2::/48"]);
  assert.equal(u6.mpReach?.nextHop, "fd00::2");
  assert.match(u6.mpReach?.linkLocalNextHop ?? "", /^fe80::/);
  const again = encodeAnnouncements("ipv6-unicast", u6.attrs!, u6.mpReach!.nlri, { as4: true });
  assert.deepEqual(decodeUpdate(again[0]!, { as4: true }), u6);
});

Deno.test("BIRD's ROUTE-REFRESH and Cease NOTIFICATION decode and match our encoding", () => {
  const rr = msgs("bird", MSG_ROUTE_REFRESH);
  const decoded = rr.map(decodeRouteRefresh).sort((a, b) => a.afi - b.afi);
  assert.deepEqual(decoded, [{ afi: 1, safi: 1, subtype: 0 }, { afi: 2, safi: 1, subtype: 0 }]);
  for (const raw of rr) assert.equal(toHex(encodeRouteRefresh(decodeRouteRefresh(raw))), toHex(raw));
  const n = decodeNotification(msgs("bird", MSG_NOTIFICATION)[0]!);
  assert.deepEqual({ code: n.code, subcode: n.subcode }, { code: 6, subcode: 2 });
  assert.equal(toHex(encodeNotification(n)), toHex(msgs("bird", MSG_NOTIFICATION)[0]!));
});

Deno.test("gobgpd's shutdown NOTIFICATION carries the RFC 8203 shutdown communication", () => {
  const raw = msgs("gobgpd", MSG_NOTIFICATION)[0]!;
  const n = decodeNotification(raw);
  assert.deepEqual({ code: n.code, subcode: n.subcode }, { code: 6, subcode: 2 });
  // One length octet, then UTF-8 text.
  assert.equal(n.data[0], n.data.length - 1);
  assert.equal(new TextDecoder().decode(n.data.subarray(1)), "maintenance window");
  assert.equal(toHex(encodeNotification(n)), toHex(raw));
});

Deno.test("a two-octet session gets AS_TRANS in AS_PATH and the real path in AS4_PATH, and merges back", () => {
  const attrs: PathAttributes = {
    origin: 0,
    asPath: [{ type: AS_SEQUENCE, asns: [65001, 4200000001, 64512] }],
    nextHop: "192.0.2.1",
  };
  const [raw] = encodeAnnouncements("ipv4-unicast", attrs, ["10.9.0.0/16"], { as4: false });
  const hex = toHex(raw!);
  assert.ok(hex.includes("c0110e"), "AS4_PATH attribute present"); // flags 0xc0, type 17, length 14
  const u = decodeUpdate(raw!, { as4: false });
  assert.deepEqual(u.attrs?.asPath, attrs.asPath);
  // Without merging, the two-octet path shows AS_TRANS.
  const u4 = decodeUpdate(raw!, { as4: true });
  assert.equal(u4.treatAsWithdraw !== undefined || u4.attrs?.asPath[0]?.asns.length !== 3, true);
});

Deno.test("many prefixes split into UPDATEs no larger than 4096 bytes", () => {
  const prefixes = Array.from({ length: 3000 }, (_, i) => `10.${i >> 8}.${i & 255}.0/24`);
  const attrs: PathAttributes = { origin: 0, asPath: [], nextHop: "10.0.0.1" };
  const out = encodeAnnouncements("ipv4-unicast", attrs, prefixes, { as4: true });
  assert.ok(out.length > 1);
  const back: string[] = [];
  for (const m of out) {
    assert.ok(m.length <= 4096);
    back.push(...decodeUpdate(m, { as4: true }).nlri);
  }
  assert.deepEqual(back, prefixes);
  const six = Array.from({ length: 800 }, (_, i) => normalizePrefix(`2001:db8:${i.toString(16)}::/48`)!);
  const out6 = encodeAnnouncements("ipv6-unicast", { ...attrs, nextHop: "fd00::1" }, six, { as4: true });
  assert.deepEqual(out6.flatMap((m) => decodeUpdate(m, { as4: true }).mpReach!.nlri), six);
  const w = encodeWithdrawals("ipv4-unicast", prefixes);
  assert.deepEqual(w.flatMap((m) => decodeUpdate(m, { as4: true }).withdrawn), prefixes);
});

Deno.test("OPEN capabilities round-trip, including graceful restart flags", () => {
  const open: OpenMessage = {
    version: 4,
    myAs: 64512,
    holdTime: 9,
    routerId: "192.0.2.1",
    capabilities: [
      { code: CAP_MP, afi: 2, safi: 1 },
      { code: CAP_ROUTE_REFRESH },
      {
        code: CAP_GRACEFUL_RESTART,
        restarting: true,
        notification: false,
        time: 300,
        families: [{ afi: 1, safi: 1, forwarding: true }],
      },
      { code: CAP_AS4, asn: 64512 },
    ],
  };
  assert.deepEqual(decodeOpen(encodeOpen(open)), open);
});

// --- malformed input: the right NOTIFICATION, or treat-as-withdraw --------------------------------

function expectBgpError(fn: () => unknown, code: number, subcode: number): void {
  assert.throws(fn, (e: unknown) => e instanceof BgpError && e.code === code && e.subcode === subcode);
}

Deno.test("a header with a broken marker is Connection Not Synchronized", () => {
  const k = encodeKeepalive();
  k[3] = 0;
  expectBgpError(() => decodeHeader(k), 1, 1);
});

Deno.test("a header with a bad length or type gets Bad Message Length / Type", () => {
  const k = encodeKeepalive();
  k[17] = 20; // KEEPALIVE must be 19
  expectBgpError(() => decodeHeader(k), 1, 2);
  const t = encodeKeepalive();
  t[18] = 9;
  expectBgpError(() => decodeHeader(t), 1, 3);
  const big = encodeKeepalive();
  big[16] = 0x20; // 8192 > 4096
  expectBgpError(() => decodeHeader(big), 1, 2);
});

Deno.test("an OPEN with version 3 is Unsupported Version Number naming version 4", () => {
  const raw = msgs("gobgpd", MSG_OPEN)[0]!.slice();
  raw[19] = 3;
  assert.throws(
    () => decodeOpen(raw),
    (e: unknown) => e instanceof BgpError && e.code === 2 && e.subcode === 1 && toHex(e.data) === "0004",
  );
});

Deno.test("an OPEN with hold time 1 is Unacceptable Hold Time, router id 0 is Bad BGP Identifier", () => {
  const raw = msgs("gobgpd", MSG_OPEN)[0]!.slice();
  raw[22] = 0;
  raw[23] = 1;
  expectBgpError(() => decodeOpen(raw), 2, 6);
  const zero = msgs("gobgpd", MSG_OPEN)[0]!.slice();
  zero.fill(0, 24, 28);
  expectBgpError(() => decodeOpen(zero), 2, 3);
});

Deno.test("an UPDATE with an invalid ORIGIN value is treated as withdraw, not a session reset", () => {
  const raw = G.v4.slice();
  // ORIGIN attribute value sits right after the 4-byte lengths + 3-byte attribute header.
  assert.equal(raw[19 + 4 + 1], 1); // type ORIGIN
  raw[19 + 4 + 3] = 7;
  const u = decodeUpdate(raw, { as4: true });
  assert.match(u.treatAsWithdraw ?? "", /ORIGIN/);
  assert.deepEqual(u.nlri, ["10.1.0.0/24"]);
});

Deno.test("an UPDATE without AS_PATH or NEXT_HOP is treated as withdraw", () => {
  const u = decodeUpdate(fromHex("ffffffffffffffffffffffffffffffff001f0200000004400101000a0a0a" + "00"), {
    as4: true,
  });
  assert.ok(u.treatAsWithdraw);
});

Deno.test("a prefix length over 32 is Invalid Network Field", () => {
  const raw = G.w4.slice(); // withdrawal of 10.1.0.0/24
  raw[19 + 2] = 33;
  expectBgpError(() => decodeUpdate(raw, { as4: true }), 3, 10);
});

Deno.test("an attribute overrunning the list is Attribute Length Error; a repeated MP_REACH is Malformed Attribute List", () => {
  const raw = G.v4.slice();
  raw[19 + 4 + 2] = 200; // ORIGIN length 200
  expectBgpError(() => decodeUpdate(raw, { as4: true }), 3, 5);
  const mp = "800e0700020110" + "00".repeat(0);
  void mp;
  const v6 = G.v6;
  const body = v6.subarray(19);
  const attrLen = (body[2]! << 8) | body[3]!;
  const attrs = body.subarray(4, 4 + attrLen);
  // Build an UPDATE whose attribute list holds MP_UNREACH twice.
  const un = fromHex("800f03000201");
  const list = new Uint8Array([...attrs, ...un, ...un]);
  const msg = new Uint8Array([
    ...new Uint8Array(16).fill(0xff),
    0,
    19 + 4 + list.length,
    2,
    0,
    0,
    list.length >> 8,
    list.length & 255,
    ...list,
  ]);
  expectBgpError(() => decodeUpdate(msg, { as4: true }), 3, 1);
});

Deno.test("an unrecognised well-known attribute is a session error, an unknown optional one is kept", () => {
  const base = fromHex("400101004002004003040a000001");
  const mk = (extra: string) => {
    const list = new Uint8Array([...base, ...fromHex(extra)]);
    return new Uint8Array([
      ...new Uint8Array(16).fill(0xff),
      0,
      19 + 4 + list.length + 4,
      2,
      0,
      0,
      0,
      list.length,
      ...list,
      24,
      10,
      1,
      2,
    ]);
  };
  expectBgpError(() => decodeUpdate(mk("40630100"), { as4: true }), 3, 2);
  const u = decodeUpdate(mk("c0630100"), { as4: true });
  assert.equal(u.treatAsWithdraw, undefined);
  assert.deepEqual(u.attrs?.unknown?.map((a) => a.type), [0x63]);
  // A malformed AGGREGATOR is discarded; the route stays.
  const v = decodeUpdate(mk("c0070100"), { as4: true });
  assert.equal(v.treatAsWithdraw, undefined);
  assert.equal(v.discarded?.length, 1);
});

Deno.test("splitMessages keeps an incomplete tail for the next read", () => {
  const all = new Uint8Array([...encodeKeepalive(), ...encodeKeepalive().subarray(0, 10)]);
  const { messages, used } = splitMessages(all);
  assert.equal(messages.length, 1);
  assert.equal(used, 19);
});

// --- fuzzing: no input may throw anything but BgpError --------------------------------------------

function decodeAny(bytes: Uint8Array): void {
  try {
    const { messages } = splitMessages(bytes);
    for (const m of messages) {
      switch (m.type) {
        case MSG_OPEN:
          decodeOpen(m.bytes);
          break;
        case MSG_UPDATE: {
          const u = decodeUpdate(m.bytes, { as4: true });
          endOfRibFamily(u);
          decodeUpdate(m.bytes, { as4: false });
          break;
        }
        case MSG_NOTIFICATION:
          decodeNotification(m.bytes);
          break;
        case MSG_ROUTE_REFRESH:
          decodeRouteRefresh(m.bytes);
          break;
      }
    }
  } catch (e) {
    if (!(e instanceof BgpError)) throw e;
  }
}

Deno.test("random mutations of captured messages never throw anything but BgpError", () => {
  const corpus = session.map((m) => fromHex(m.hex));
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: corpus.length - 1 }),
      fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
      fc.nat(),
      (pick, edits, cut) => {
        const m = corpus[pick]!.slice();
        for (const [pos, val] of edits) {
          // Keep the marker and header mostly intact so mutations reach the body decoders.
          const at = 16 + (pos % (m.length - 16));
          m[at] = val;
        }
        // Keep the length field consistent half of the time.
        if (cut % 2 === 0) {
          m[16] = m.length >> 8;
          m[17] = m.length & 255;
        }
        decodeAny(m.subarray(0, cut % 3 === 0 ? m.length : Math.max(19, m.length - (cut % 7))));
      },
    ),
    { numRuns: 20000 },
  );
});

Deno.test("arbitrary bytes behind a valid header never throw anything but BgpError", () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 5 }), fc.uint8Array({ maxLength: 300 }), (type, body) => {
      const m = new Uint8Array(19 + body.length);
      m.fill(0xff, 0, 16);
      m[16] = m.length >> 8;
      m[17] = m.length & 255;
      m[18] = type;
      m.set(body, 19);
      decodeAny(m);
    }),
    { numRuns: 20000 },
  );
});

Deno.test("the shutdown communication is read from gobgpd's NOTIFICATION and ignored when malformed", () => {
  const n = decodeNotification(msgs("gobgpd", MSG_NOTIFICATION)[0]!);
  assert.equal(shutdownCommunication(n.code, n.subcode, n.data), "maintenance window");
  assert.equal(shutdownCommunication(6, 2, Uint8Array.of(9, 65)), undefined);
  assert.equal(shutdownCommunication(6, 2, Uint8Array.of(1, 0xff)), undefined);
  assert.equal(shutdownCommunication(4, 0, n.data), undefined);
});
