import assert from "node:assert/strict";
import {
  decodeConcatKey,
  decodeSetElements,
  encodeGetSetElements,
  NFT_GETSETELEM,
  NlWriter,
  parseMessages,
} from "../../../ffi/mod.ts";

/** An element nest: key, then the counter as one expression (NFTA_SET_ELEM_EXPR) or in a list (EXPRESSIONS). */
function element(w: NlWriter, key: number[], counter?: { packets: bigint; bytes: bigint; listed?: boolean }) {
  const e = w.beginNest(1); // NFTA_LIST_ELEM
  const k = w.beginNest(1); // NFTA_SET_ELEM_KEY
  w.attr(1, new Uint8Array(key)); // NFTA_DATA_VALUE
  w.endNest(k);
  w.attrBe32(3, 0); // NFTA_SET_ELEM_FLAGS
  if (counter) {
    const list = counter.listed ? w.beginNest(10) : undefined; // NFTA_SET_ELEM_EXPRESSIONS
    const x = w.beginNest(counter.listed ? 1 : 7); // NFTA_LIST_ELEM / NFTA_SET_ELEM_EXPR
    w.attrString(1, "counter"); // NFTA_EXPR_NAME
    const d = w.beginNest(2); // NFTA_EXPR_DATA
    const be64 = (v: bigint) => {
      const b = new Uint8Array(8);
      new DataView(b.buffer).setBigUint64(0, v, false);
      return b;
    };
    w.attr(1, be64(counter.bytes)); // NFTA_COUNTER_BYTES
    w.attr(2, be64(counter.packets)); // NFTA_COUNTER_PACKETS
    w.endNest(d);
    w.endNest(x);
    if (list !== undefined) w.endNest(list);
  }
  w.endNest(e);
}

Deno.test("a GETSETELEM dump decodes to each counted element's key and counter, in either expression form", () => {
  const w = new NlWriter();
  const off = w.beginMsg((10 << 8) | 12, 2, 7); // NFT_MSG_NEWSETELEM, NLM_F_MULTI
  w.u8(1).u8(0).be16(0);
  w.attrString(1, "kube_router_proxy");
  w.attrString(2, "service_stats_in_v4");
  const list = w.beginNest(3); // NFTA_SET_ELEM_LIST_ELEMENTS
  element(w, [172, 16, 0, 10, 6, 0, 0, 0, 0, 80, 0, 0], { packets: 31n, bytes: 2062n });
  element(w, [172, 16, 0, 10, 17, 0, 0, 0, 0, 53, 0, 0], { packets: 2n ** 40n, bytes: 9n, listed: true });
  element(w, [172, 16, 0, 11, 6, 0, 0, 0, 0, 80, 0, 0]); // no counter: left out
  w.endNest(list);
  w.endMsg(off);
  const got = decodeSetElements(parseMessages(w.toBytes()));
  const types = ["ipv4_addr", "inet_proto", "inet_service"] as const;
  assert.deepEqual(
    got.map((e) => [decodeConcatKey(e.key, types)?.join(" . "), e.packets, e.bytes]),
    [["172.16.0.10 . tcp . 80", 31, 2062], ["172.16.0.10 . udp . 53", 2 ** 40, 9]],
  );
});

Deno.test("concatenated keys decode part by part on 4-byte registers, and a key of the wrong size is refused", () => {
  const v6 = new Uint8Array(24);
  v6.set([0xfd, 0, 0, 0x72], 0);
  v6[15] = 0x10;
  v6[16] = 132;
  v6.set([0x75, 0x30], 20);
  assert.deepEqual(decodeConcatKey(v6, ["ipv6_addr", "inet_proto", "inet_service"]), [
    "fd00:72::10",
    "sctp",
    "30000",
  ]);
  assert.equal(decodeConcatKey(v6, ["ipv4_addr", "inet_proto", "inet_service"]), undefined);
  assert.deepEqual(decodeConcatKey(new Uint8Array([10, 0, 0, 1, 99, 0, 0, 0]), ["ipv4_addr", "inet_proto"]), [
    "10.0.0.1",
    "99",
  ]);
});

Deno.test("the dump request names the family, table and set", () => {
  const w = new NlWriter();
  const off = w.beginMsg(NFT_GETSETELEM, 0x301, 1);
  encodeGetSetElements(w, "inet", "kube_router_proxy", "service_stats_in_v6");
  w.endMsg(off);
  const [m] = parseMessages(w.toBytes());
  assert.equal(m!.type, (10 << 8) | 13);
  assert.deepEqual([...m!.payload.subarray(0, 4)], [1, 0, 0, 0]);
  const text = new TextDecoder().decode(m!.payload);
  assert.match(text, /kube_router_proxy\0/);
  assert.match(text, /service_stats_in_v6\0/);
  assert.throws(() => encodeGetSetElements(new NlWriter(), "nosuch", "t", "s"), TypeError);
});
