/**
 * Bridge FDB codec and fake. Golden bytes were captured from iproute2's `bridge` 6.1 in a namespace with
 * kube-vxlan as ifindex 4: `strace -xx -e trace=sendmsg -e write=3 bridge fdb …` for requests and
 * `-e trace=sendto,recvmsg -e read=3 bridge fdb show dev kube-vxlan` for the dump and its reply. The
 * sequence number is the only field that differs between runs; the tests use the captured one.
 */
import assert from "node:assert/strict";
import {
  decodeFdb,
  encodeFdb,
  encodeFdbDump,
  FakeFdb,
  FakeRtnetlink,
  isNotFound,
  isNotSupported,
  NetlinkDecodeError,
  NetlinkFdb,
  NetlinkSocket,
  type NetlinkTransport,
  NLM_F_ACK,
  NLM_F_APPEND,
  NLM_F_CREATE,
  NLM_F_DUMP,
  NLM_F_REPLACE,
  NLM_F_REQUEST,
  NlWriter,
  parseMessages,
  RTM_DELNEIGH,
  RTM_GETNEIGH,
  RTM_NEWNEIGH,
} from "../../../ffi/mod.ts";
import { fdbCases } from "./_fdb_conformance.ts";

function hex(s: string): Uint8Array {
  const clean = s.replace(/\s+/g, "");
  return new Uint8Array(clean.match(/../g)!.map((b) => parseInt(b, 16)));
}

function toHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");
}

const GOLDEN = {
  // bridge fdb append 0a:58:c0:a8:02:64 dst 192.168.2.100 dev kube-vxlan self permanent
  append4: `30 00 00 00 1c 00 05 0c 7b 46 0a 6b 00 00 00 00
            07 00 00 00 04 00 00 00 c0 00 02 00 0a 00 02 00
            0a 58 c0 a8 02 64 00 00 08 00 01 00 c0 a8 02 64`,
  // bridge fdb replace 0a:59:00:00:01:00 dst fd00:2::100 dev kube-vxlan6 self permanent
  replace6: `3c 00 00 00 1c 00 05 05 e2 46 0a 6b 00 00 00 00
             07 00 00 00 04 00 00 00 c0 00 02 00 0a 00 02 00
             0a 59 00 00 01 00 00 00 14 00 01 00 fd 00 00 02
             00 00 00 00 00 00 00 00 00 00 01 00`,
  // bridge fdb del 0a:59:00:00:01:00 dev kube-vxlan6 self
  del: `28 00 00 00 1d 00 05 00 e2 46 0a 6b 00 00 00 00
        07 00 00 00 04 00 00 00 c0 00 02 00 0a 00 02 00
        0a 59 00 00 01 00 00 00`,
  // bridge fdb show dev kube-vxlan (the RTM_GETNEIGH dump request)
  dump: `1c 00 00 00 1e 00 01 03 84 46 0a 6b 00 00 00 00
         07 00 00 00 04 00 00 00 00 00 00 00`,
  // The kernel's answer to that dump: one entry, with NDA_CACHEINFO.
  reply: `44 00 00 00 1c 00 02 00 7b 46 0a 6b 09 69 00 00
          07 00 00 00 04 00 00 00 c0 00 02 01 0a 00 02 00
          0a 58 c0 a8 02 64 00 00 08 00 01 00 c0 a8 02 64
          14 00 03 00 00 00 00 00 01 00 00 00 01 00 00 00
          00 00 00 00`,
};

function encode(type: number, flags: number, seq: number, body: (w: NlWriter) => void): Uint8Array {
  const w = new NlWriter();
  const off = w.beginMsg(type, flags, seq);
  body(w);
  w.endMsg(off);
  return w.toBytes();
}

Deno.test("an fdb append encodes byte for byte as iproute2's bridge", () => {
  const got = encode(
    RTM_NEWNEIGH,
    NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND,
    0x6b0a467b,
    (w) => encodeFdb(w, { dev: 4, mac: "0a:58:c0:a8:02:64", dst: "192.168.2.100" }),
  );
  assert.equal(toHex(got), toHex(hex(GOLDEN.append4)));
});

Deno.test("an IPv6 fdb replace encodes byte for byte as iproute2's bridge", () => {
  const got = encode(
    RTM_NEWNEIGH,
    NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    0x6b0a46e2,
    (w) => encodeFdb(w, { dev: 4, mac: "0A:59:00:00:01:00", dst: "fd00:2::100" }),
  );
  assert.equal(toHex(got), toHex(hex(GOLDEN.replace6)));
});

Deno.test("an fdb delete without a destination encodes as iproute2's bridge", () => {
  const got = encode(
    RTM_DELNEIGH,
    NLM_F_REQUEST | NLM_F_ACK,
    0x6b0a46e2,
    (w) => encodeFdb(w, { dev: 4, mac: "0a:59:00:00:01:00" }),
  );
  assert.equal(toHex(got), toHex(hex(GOLDEN.del)));
});

Deno.test("an fdb dump of one device encodes as bridge fdb show dev", () => {
  const got = encode(RTM_GETNEIGH, NLM_F_REQUEST | NLM_F_DUMP, 0x6b0a4684, (w) => encodeFdbDump(w, 4));
  assert.equal(toHex(got), toHex(hex(GOLDEN.dump)));
});

Deno.test("the kernel's fdb dump reply decodes to the entry bridge prints", () => {
  const [m] = parseMessages(hex(GOLDEN.reply));
  assert.deepEqual(decodeFdb(m!), {
    dev: 4,
    mac: "0a:58:c0:a8:02:64",
    dst: "192.168.2.100",
    state: 0xc0,
    flags: 0x02,
  });
});

Deno.test("fdb entries round-trip through encode and decode, port and vni included", () => {
  for (
    const e of [
      { dev: 7, mac: "02:00:00:00:00:01", dst: "10.0.0.1", state: 0x80, flags: 0x02, port: 4789, vni: 42 },
      { dev: 9, mac: "0a:59:00:00:01:00", dst: "fd00:2::100", state: 0xc0, flags: 0x02 },
      { dev: 3, mac: "00:00:00:00:00:00", state: 0xc0, flags: 0x02 },
    ]
  ) {
    const [m] = parseMessages(encode(RTM_NEWNEIGH, 0, 1, (w) => encodeFdb(w, e)));
    assert.deepEqual(decodeFdb(m!), e);
  }
});

Deno.test("decoding skips ARP entries and rejects a truncated or MAC-less fdb message", () => {
  const arp = parseMessages(encode(RTM_NEWNEIGH, 0, 1, (w) => {
    w.u8(2).u8(0).u16(0).i32(1).u16(0x80).u8(0).u8(0);
  }))[0]!;
  assert.equal(decodeFdb(arp), undefined);
  const short = { type: RTM_NEWNEIGH, flags: 0, seq: 1, pid: 0, payload: new Uint8Array([7, 0, 0]) };
  assert.throws(() => decodeFdb(short), NetlinkDecodeError);
  const noMac = parseMessages(encode(RTM_NEWNEIGH, 0, 1, (w) => {
    w.u8(7).u8(0).u16(0).i32(1).u16(0x80).u8(2).u8(0);
  }))[0]!;
  assert.throws(() => decodeFdb(noMac), NetlinkDecodeError);
});

Deno.test("encoding refuses a malformed MAC or destination", () => {
  assert.throws(() => encodeFdb(new NlWriter(), { dev: 1, mac: "0a:58:c0:a8:02" }), TypeError);
  assert.throws(
    () => encodeFdb(new NlWriter(), { dev: 1, mac: "0a:58:c0:a8:02:64", dst: "300.1.1.1" }),
    TypeError,
  );
});

/** A scripted kernel: answers each request with an ACK, and a dump with the captured reply. */
class ScriptedKernel implements NetlinkTransport {
  readonly fd = -1;
  sent: Uint8Array[] = [];
  #queue: Uint8Array[] = [];
  send(bytes: Uint8Array<ArrayBuffer>): void {
    this.sent.push(bytes.slice());
    const [req] = parseMessages(bytes);
    if (!req) return;
    if (req.type === RTM_GETNEIGH) {
      const reply = hex(GOLDEN.reply).slice();
      new DataView(reply.buffer).setUint32(8, req.seq, true);
      const done = new Uint8Array(20);
      const dv = new DataView(done.buffer);
      dv.setUint32(0, 20, true);
      dv.setUint16(4, 3, true); // NLMSG_DONE
      dv.setUint16(6, 2, true);
      dv.setUint32(8, req.seq, true);
      this.#queue.push(reply, done);
      return;
    }
    const ack = new Uint8Array(36);
    const dv = new DataView(ack.buffer);
    dv.setUint32(0, 36, true);
    dv.setUint16(4, 2, true); // NLMSG_ERROR with error 0
    dv.setUint32(8, req.seq, true);
    ack.set(bytes.subarray(0, 16), 20);
    this.#queue.push(ack);
  }
  recv(): Uint8Array | undefined {
    return this.#queue.shift();
  }
  close(): void {}
}

Deno.test("NetlinkFdb sends iproute2's requests and lists the device's entries", async () => {
  const k = new ScriptedKernel();
  const fdb = new NetlinkFdb(NetlinkSocket.fromTransport(k));
  await fdb.fdbAppend({ dev: 4, mac: "0a:58:c0:a8:02:64", dst: "192.168.2.100" });
  await fdb.fdbReplace({ dev: 4, mac: "0a:58:c0:a8:02:64", dst: "192.168.2.100" });
  await fdb.fdbDel({ dev: 4, mac: "0a:58:c0:a8:02:64" });
  assert.deepEqual(await fdb.fdbList(4), [
    { dev: 4, mac: "0a:58:c0:a8:02:64", dst: "192.168.2.100", state: 0xc0, flags: 0x02 },
  ]);
  assert.deepEqual(await fdb.fdbList(5), [], "entries of other devices are filtered out");
  const flagsOf = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset).getUint16(6, true);
  const typeOf = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset).getUint16(4, true);
  assert.deepEqual(k.sent.slice(0, 3).map((b) => [typeOf(b), flagsOf(b)]), [
    [RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND],
    [RTM_NEWNEIGH, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE],
    [RTM_DELNEIGH, NLM_F_REQUEST | NLM_F_ACK],
  ]);
  assert.equal(toHex(k.sent[0]!.subarray(16)), toHex(hex(GOLDEN.append4).subarray(16)));
  fdb.close();
  fdb.close();
  await assert.rejects(fdb.fdbList(4), /closed/);
});

Deno.test("FakeFdb replaces, appends and deletes with the kernel's rules", async () => {
  const fdb = new FakeFdb();
  const mac = "0A:58:C0:A8:02:64";
  await fdb.fdbReplace({ dev: 4, mac, dst: "192.168.2.100" });
  await fdb.fdbReplace({ dev: 4, mac, dst: "192.168.2.101" });
  assert.deepEqual(await fdb.fdbList(4), [
    { dev: 4, mac: "0a:58:c0:a8:02:64", dst: "192.168.2.101", state: 0xc0, flags: 0x02 },
  ]);
  await fdb.fdbAppend({ dev: 4, mac, dst: "192.168.2.102" });
  assert.deepEqual(
    (await fdb.fdbList(4)).map((e) => e.dst),
    ["192.168.2.101"],
    "append keeps a unicast MAC's",
  );
  await fdb.fdbDel({ dev: 4, mac, dst: "192.168.2.101" });
  assert.deepEqual(await fdb.fdbList(4), []);
  await assert.rejects(fdb.fdbDel({ dev: 4, mac }), (e) => isNotFound(e));
  await fdb.fdbAppend({ dev: 4, mac, dst: "192.168.2.102" });
  await fdb.fdbDel({ dev: 4, mac });
  assert.deepEqual(fdb.calls.map((c) => c.op), [
    "replace",
    "replace",
    "append",
    "del",
    "del",
    "append",
    "del",
  ]);
});

Deno.test("FakeFdb over a FakeRtnetlink refuses unknown devices and wrong families, and forgets deleted devices", async () => {
  const rtnl = new FakeRtnetlink();
  const fdb = new FakeFdb(rtnl);
  await assert.rejects(
    fdb.fdbReplace({ dev: 42, mac: "02:00:00:00:00:01", dst: "10.0.0.1" }),
    (e) => isNotFound(e),
  );
  await rtnl.linkAdd({ kind: "vxlan", name: "vx0", vni: 1, local: "10.0.0.2" });
  const vx = (await rtnl.linkGet("vx0"))!;
  await assert.rejects(
    fdb.fdbReplace({ dev: vx.index, mac: "02:00:00:00:00:01", dst: "fd00::1" }),
    (e) => isNotSupported(e),
  );
  await fdb.fdbReplace({ dev: vx.index, mac: "02:00:00:00:00:01", dst: "10.0.0.1" });
  assert.equal((await fdb.fdbList(vx.index)).length, 1);
  await rtnl.linkDel("vx0");
  assert.deepEqual(await fdb.fdbList(vx.index), []);
});

// The shared FDB conformance cases, against the fakes (tests/integration/ffi runs them on the kernel).
for (const c of fdbCases) {
  Deno.test(`the fake conforms (fdb): ${c.name}`, async () => {
    const rtnl = new FakeRtnetlink();
    await c.fn({ rtnl, fdb: new FakeFdb(rtnl) });
  });
}
