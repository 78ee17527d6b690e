import assert from "node:assert/strict";
import fc from "fast-check";
import {
  attrMap,
  NetlinkDecodeError,
  NLA_F_NESTED,
  NLM_F_ACK,
  NLM_F_REQUEST,
  NLMSG_ERROR,
  NlWriter,
  parseAttrs,
  parseError,
  parseMessages,
  read,
} from "../../../ffi/mod.ts";

function hex(s: string): Uint8Array {
  return new Uint8Array(s.match(/../g)!.map((b) => parseInt(b, 16)));
}

const golden = JSON.parse(await Deno.readTextFile(new URL("./golden/iproute2.json", import.meta.url))) as {
  replies: Record<string, string>;
};

Deno.test("a message with attributes and a nested attribute round-trips through the writer and parser", () => {
  const w = new NlWriter(16);
  const off = w.beginMsg(0x18, NLM_F_REQUEST | NLM_F_ACK, 42, 7);
  w.u8(2).u8(24).u16(0).u32(0);
  w.attrString(3, "br0");
  w.attrU32(4, 1400);
  const n = w.beginNest(18);
  w.attrString(1, "veth");
  w.attrBe16(2, 4789);
  w.endNest(n);
  w.attrU8(9, 1);
  w.endMsg(off);
  const bytes = w.toBytes();
  assert.equal(bytes.length % 4, 0);
  const msgs = parseMessages(bytes);
  assert.equal(msgs.length, 1);
  const m = msgs[0]!;
  assert.deepEqual([m.type, m.flags, m.seq, m.pid], [0x18, 5, 42, 7]);
  const attrs = parseAttrs(m.payload.subarray(8));
  assert.deepEqual(attrs.map((a) => [a.type, a.nested]), [[3, false], [4, false], [18, true], [9, false]]);
  assert.equal(read.str(attrs[0]!.value), "br0");
  assert.equal(read.u32(attrs[1]!.value), 1400);
  const inner = attrMap(attrs[2]!.value);
  assert.equal(read.str(inner.get(1)!), "veth");
  assert.equal(read.be16(inner.get(2)!), 4789);
  assert.equal(read.u8(attrs[3]!.value), 1);
});

Deno.test("attributes are padded to four bytes and nested lengths include the padding of their children", () => {
  const w = new NlWriter();
  const n = w.beginNest(1, false);
  w.attrString(2, "ab"); // 4 + 3 = 7 -> padded to 8
  w.endNest(n);
  const b = w.toBytes();
  assert.deepEqual([...b], [12, 0, 1, 0, 7, 0, 2, 0, 0x61, 0x62, 0, 0]);
  assert.equal(new DataView(b.buffer).getUint16(2, true) & NLA_F_NESTED, 0);
});

Deno.test("several messages in one buffer are split at their aligned lengths", () => {
  const w = new NlWriter();
  for (let i = 0; i < 3; i++) {
    const off = w.beginMsg(16 + i, 1, i);
    w.attrString(3, "x".repeat(i + 1));
    w.endMsg(off);
  }
  assert.deepEqual(parseMessages(w.toBytes()).map((m) => [m.type, m.seq]), [[16, 0], [17, 1], [18, 2]]);
});

Deno.test("a message whose length runs past the buffer is a NetlinkDecodeError", () => {
  const w = new NlWriter();
  const off = w.beginMsg(16, 1, 1);
  w.attrU32(4, 1);
  w.endMsg(off);
  const b = w.toBytes();
  assert.throws(() => parseMessages(b.subarray(0, b.length - 2)), NetlinkDecodeError);
});

Deno.test("a message length shorter than the header is a NetlinkDecodeError", () => {
  const b = new Uint8Array(16);
  new DataView(b.buffer).setUint32(0, 8, true);
  assert.throws(() => parseMessages(b), NetlinkDecodeError);
});

Deno.test("trailing bytes shorter than a header are a NetlinkDecodeError", () => {
  assert.throws(() => parseMessages(new Uint8Array(7)), NetlinkDecodeError);
  assert.deepEqual(parseMessages(new Uint8Array(0)), []);
});

Deno.test("an attribute running past its area or shorter than its header is a NetlinkDecodeError", () => {
  assert.throws(() => parseAttrs(new Uint8Array([12, 0, 1, 0, 0, 0, 0, 0])), NetlinkDecodeError);
  assert.throws(() => parseAttrs(new Uint8Array([2, 0, 1, 0])), NetlinkDecodeError);
  assert.throws(() => parseAttrs(new Uint8Array([8, 0, 1, 0, 0, 0, 0, 0, 1, 2])), NetlinkDecodeError);
});

Deno.test("value readers reject short attribute values with a NetlinkDecodeError", () => {
  assert.throws(() => read.u32(new Uint8Array(3)), NetlinkDecodeError);
  assert.throws(() => read.be16(new Uint8Array(1)), NetlinkDecodeError);
});

Deno.test("an error reply captured from the kernel decodes to its errno and extended-ACK text", () => {
  const msgs = parseMessages(hex(golden.replies["ip route del 10.1.2.0/24 table 100"]!));
  assert.equal(msgs[0]!.type, NLMSG_ERROR);
  const info = parseError(msgs[0]!);
  assert.equal(info.errno, 3); // ESRCH
  assert.equal(info.reqType, 25); // RTM_DELROUTE
  assert.equal(info.extAck, "FIB table does not exist");
});

Deno.test("a success ACK captured from the kernel decodes to errno 0", () => {
  const msgs = parseMessages(
    hex(golden.replies["ip route add 10.1.2.0/24 via 10.9.0.2 table 100 proto 17"]!),
  );
  const info = parseError(msgs[0]!);
  assert.equal(info.errno, 0);
  assert.equal(info.reqType, 24);
});

Deno.test("a truncated error reply is a NetlinkDecodeError, not a RangeError", () => {
  const full = hex(golden.replies["ip route del 10.1.2.0/24 table 100"]!);
  const m = { ...parseMessages(full)[0]!, payload: full.subarray(16, 24) };
  assert.throws(() => parseError(m), NetlinkDecodeError);
});

Deno.test("any list of attributes round-trips (property)", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.record({ type: fc.integer({ min: 1, max: 0x3fff }), value: fc.uint8Array({ maxLength: 40 }) }),
        {
          maxLength: 20,
        },
      ),
      (attrs) => {
        const w = new NlWriter(8);
        for (const a of attrs) w.attr(a.type, a.value);
        const back = parseAttrs(w.toBytes());
        assert.deepEqual(
          back.map((a) => ({ type: a.type, value: [...a.value] })),
          attrs.map((a) => ({ type: a.type, value: [...a.value] })),
        );
      },
    ),
  );
});

Deno.test("random bytes never make the parsers throw anything but NetlinkDecodeError (property)", () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 200 }), (bytes) => {
      for (const f of [parseMessages, parseAttrs]) {
        try {
          f(bytes);
        } catch (e) {
          assert.ok(e instanceof NetlinkDecodeError, String(e));
        }
      }
    }),
  );
});
