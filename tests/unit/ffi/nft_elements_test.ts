import assert from "node:assert/strict";
import { NftTransaction, parseMessages } from "../../../ffi/mod.ts";
import type { NftElementText } from "../../../ffi/nft_transaction.ts";
import { encodeElements, NftUnencodable } from "../../../ffi/nft_elements.ts";
import { eachSetElement, fieldsOf, NFT_SET, type NftSetInfo, printField } from "../../../ffi/nft_netlink.ts";

/** nft's datatype id of a concatenation (6 bits a field, the first highest). */
const type = (...ids: number[]) => ids.reduce((t, id) => t * 64 + id, 0);
const map = (
  name: string,
  keyType: number,
  keyLen: number,
  dataType: number,
  dataLen: number,
): NftSetInfo => ({
  name,
  flags: NFT_SET.map,
  map: true,
  interval: false,
  keyType,
  keyLen,
  dataType,
  dataLen,
});
const SETS = new Map<string, NftSetInfo>([
  ["vips6", map("vips6", type(8, 12, 13), 24, 0xffffff00, 16)],
  ["vips4", map("vips4", type(7), 4, 0xffffff00, 16)],
  ["eps", map("eps", type(7, 13, 4), 12, type(7, 13), 8)],
  ["pairs", { name: "pairs", flags: 0, map: false, interval: false, keyType: type(7, 7), keyLen: 8 }],
  ["ports", { name: "ports", flags: 0, map: false, interval: false, keyType: type(13), keyLen: 2 }],
  ["cidrs", { name: "cidrs", flags: NFT_SET.interval, map: false, interval: true, keyType: 7, keyLen: 4 }],
]);

const NEWSETELEM = (10 << 8) | 12, DELSETELEM = (10 << 8) | 14;

type Segment = ReturnType<NftTransaction["segments"]>[number];
/** A segment's element run (the test fails if it is the other kind). */
function elementsOf(seg: Segment | undefined): readonly NftElementText[] {
  assert.ok(seg && "elements" in seg, "a run of elements");
  return seg.elements;
}
/** A segment's transaction of other operations. */
function txOf(seg: Segment | undefined): NftTransaction {
  assert.ok(seg && "tx" in seg, "a run of other operations");
  return seg.tx;
}

/** The batch's element messages read back with nft_netlink.ts's decoder: [type, set, key, value] each. */
function readBack(bytes: Uint8Array): { types: number[]; elements: [string, string, string, string][] } {
  const msgs = parseMessages(bytes);
  const types = msgs.map((m) => m.type);
  const elements: [string, string, string, string][] = [];
  for (const m of msgs.slice(1, -1)) {
    const setName = new TextDecoder().decode(m.payload).match(/(vips6|vips4|eps|pairs|ports)\0/)![1]!;
    const info = SETS.get(setName)!;
    const keyFields = fieldsOf(info.keyType, info.keyLen)!;
    const dataFields = info.map && info.dataType !== 0xffffff00
      ? fieldsOf(info.dataType!, info.dataLen!)!
      : undefined;
    eachSetElement(m.payload, (e) => {
      const print = (fields: typeof keyFields, from: number) => {
        let off = from;
        return fields.map((f) => {
          const s = printField(f, e.buf, e.dv, off);
          off += f.size;
          return s;
        }).join(" . ");
      };
      let value = "";
      if (dataFields && e.dataFrom >= 0) value = print(dataFields, e.dataFrom);
      else if (e.verdictFrom >= 0) {
        const v = new TextDecoder().decode(e.buf.subarray(e.verdictFrom, e.verdictTo));
        const code = e.dv.getInt32(e.verdictFrom + 4, false);
        value = code === -4 ? `goto ${v.match(/([a-z_0-9]+)\0/)![1]}` : code === 1 ? "accept" : String(code);
      }
      elements.push([m.type === DELSETELEM ? "delete" : "add", setName, print(keyFields, e.keyFrom), value]);
    });
  }
  return { types, elements };
}

Deno.test("elements are written as the bytes nft_netlink.ts reads back as the same text, one message per run of a set and verb", () => {
  const tx = new NftTransaction("inet", "krt")
    .addElement("vips6", "fd00:172::10 . tcp . 80", "goto pick_v6_tcp_rr_2")
    .addElement("vips6", "::1 . sctp . 3868", "accept")
    .addElement("vips4", "10.96.0.1", "goto a")
    .addElement("eps", "10.96.0.1 . 80 . 65535", "10.1.2.5 . 8080")
    .addElement("eps", "10.96.0.1 . 80 . 0", "10.1.2.6 . 8080")
    .addElement("pairs", "10.1.1.5 . 10.1.1.5")
    .addElement("ports", "443")
    .deleteElement("eps", "10.96.0.1 . 80 . 3");
  const seg = tx.segments();
  assert.equal(seg.length, 1);
  const batch = encodeElements("inet", "krt", SETS, elementsOf(seg[0]), 100);
  const { types, elements } = readBack(batch.bytes);
  // BATCH_BEGIN, six element messages, BATCH_END.
  assert.deepEqual(types, [16, NEWSETELEM, NEWSETELEM, NEWSETELEM, NEWSETELEM, NEWSETELEM, DELSETELEM, 17]);
  assert.deepEqual(elements, [
    ["add", "vips6", "fd00:172::10 . tcp . 80", "goto pick_v6_tcp_rr_2"],
    ["add", "vips6", "::1 . sctp . 3868", "accept"],
    ["add", "vips4", "10.96.0.1", "goto a"],
    ["add", "eps", "10.96.0.1 . 80 . 65535", "10.1.2.5 . 8080"],
    ["add", "eps", "10.96.0.1 . 80 . 0", "10.1.2.6 . 8080"],
    ["add", "pairs", "10.1.1.5 . 10.1.1.5", ""],
    ["add", "ports", "443", ""],
    ["delete", "eps", "10.96.0.1 . 80 . 3", ""],
  ]);
  // Sequence numbers follow the first one given; each message says where its elements start.
  assert.deepEqual(parseMessages(batch.bytes).map((m) => m.seq), [100, 101, 102, 103, 104, 105, 106, 107]);
  assert.deepEqual(batch.messages.map((m) => [m.from, m.to]), [[0, 2], [2, 3], [3, 5], [5, 6], [6, 7], [
    7,
    8,
  ]]);
  // Each element's offset in its message is where its NFTA_LIST_ELEM begins (the kernel's extended ACK
  // points there): after the message's header (16), nfgenmsg (4), table and set names and the list's own.
  for (const [i, m] of batch.messages.entries()) {
    const bytes = batch.bytes.subarray(m.at);
    for (let op = m.from; op < m.to; op++) {
      const off = batch.offsets[op]!;
      assert.equal(
        new DataView(bytes.buffer, bytes.byteOffset).getUint16(off + 2, true) & 0x3fff,
        1,
        `message ${i} op ${op}`,
      );
    }
  }
});

Deno.test("a set's elements are cut into messages whose element attribute fits its 16-bit length", () => {
  const tx = new NftTransaction("inet", "krt");
  for (let i = 0; i < 5000; i++) {
    tx.addElement("eps", `10.96.${i >> 8}.${i & 255} . 80 . 0`, "10.1.2.5 . 8080");
  }
  const batch = encodeElements("inet", "krt", SETS, elementsOf(tx.segments()[0]), 1);
  const msgs = parseMessages(batch.bytes).slice(1, -1);
  assert.ok(msgs.length >= 3, `${msgs.length} messages`);
  for (const m of msgs) assert.ok(m.payload.length < 65_536);
  assert.equal(readBack(batch.bytes).elements.length, 5000);
});

Deno.test("what netlink cannot write as nft would is refused before anything is sent, naming the element", () => {
  const refuse = (set: string, key: string, value?: string) => {
    const tx = new NftTransaction("inet", "krt").addElement("ports", "80").addElement(set, key, value);
    try {
      encodeElements("inet", "krt", SETS, elementsOf(tx.segments()[0]), 1);
    } catch (e) {
      assert.ok(e instanceof NftUnencodable, String(e));
      assert.equal(e.index, 1);
      return e.message;
    }
    assert.fail(`${set} ${key} was encoded`);
  };
  assert.match(refuse("cidrs", "10.0.0.0/8"), /interval/);
  assert.match(refuse("nosuch", "1"), /no set nosuch/);
  assert.match(refuse("ports", "http"), /does not parse/);
  assert.match(refuse("ports", "65536"), /does not parse/);
  assert.match(refuse("pairs", "10.1.1.5"), /does not parse/);
  assert.match(refuse("pairs", "10.1.1.5 . 10.1.1.256"), /does not parse/);
  assert.match(refuse("eps", "10.96.0.1 . 80 . 0", "10.1.2.5"), /does not parse/);
  assert.match(refuse("eps", "10.96.0.1 . 80 . 0"), /without a value/);
  assert.match(refuse("vips4", "10.96.0.1", "goto"), /verdict/);
});

Deno.test("a transaction is cut into runs of text elements and the operations between them, in order", () => {
  const tx = new NftTransaction("inet", "krt")
    .add({ chain: { name: "a" } })
    .addElement("ports", "80")
    .addElement("ports", "81")
    .add({ element: { set: "ports", key: ["82"] } })
    .add({ chain: { name: "b" } })
    .deleteElement("ports", "80");
  const seg = tx.segments();
  assert.deepEqual(seg.map((s) => s.from), [0, 1, 3, 5]);
  assert.equal(txOf(seg[0]).render(), "add chain inet krt a\n");
  assert.deepEqual(
    elementsOf(seg[1]).map((e) => `${e.verb} ${e.key}`),
    ["add 80", "add 81"],
  );
  // A typed element operation stays with nft.
  assert.equal(
    txOf(seg[2]).render(),
    "add element inet krt ports { 82 }\nadd chain inet krt b\n",
  );
  assert.deepEqual(elementsOf(seg[3]).map((e) => e.verb), ["delete"]);
});
