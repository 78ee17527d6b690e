import assert from "node:assert/strict";
import {
  Errno,
  ErrnoError,
  isExists,
  NetlinkError,
  NetlinkSocket,
  NLM_F_ACK,
  NLM_F_DUMP,
  NLM_F_DUMP_INTR,
  NLM_F_MULTI,
  type NlMsg,
  NLMSG_DONE,
  NLMSG_NOOP,
  NlWriter,
} from "../../../ffi/mod.ts";
import { ack, concat, ScriptedKernel } from "./_scripted_kernel.ts";

function obj(seq: number, n: number, flags = NLM_F_MULTI): Uint8Array {
  const w = new NlWriter();
  const off = w.beginMsg(24, flags, seq, 1);
  w.u32(n);
  w.endMsg(off);
  return w.toBytes();
}

function done(seq: number, flags = NLM_F_MULTI): Uint8Array {
  const w = new NlWriter();
  const off = w.beginMsg(NLMSG_DONE, flags, seq, 1);
  w.i32(0);
  w.endMsg(off);
  return w.toBytes();
}

const value = (m: NlMsg) => new DataView(m.payload.buffer, m.payload.byteOffset).getUint32(0, true);

Deno.test("a request is sent with NLM_F_ACK and returns once the kernel acknowledges it", () => {
  const k = new ScriptedKernel((msgs) => msgs.map((m) => ack(m)));
  const s = NetlinkSocket.fromTransport(k);
  assert.deepEqual(s.request(24, 0x400, (w) => w.u32(7), "op"), []);
  assert.equal(k.sent[0]![0]!.flags & NLM_F_ACK, NLM_F_ACK);
});

Deno.test("a refused request throws NetlinkError with errno, its name and the extended-ACK text", () => {
  const k = new ScriptedKernel((msgs) => [ack(msgs[0]!, Errno.EEXIST, "Route exists")]);
  const s = NetlinkSocket.fromTransport(k);
  assert.throws(() => s.request(24, 0, () => {}, "ip route add 10.0.0.0/8"), (e) => {
    assert.ok(e instanceof NetlinkError);
    assert.equal(e.code, "EEXIST");
    assert.equal(e.extAck, "Route exists");
    assert.ok(isExists(e));
    return true;
  });
});

Deno.test("replies and ACKs for other sequence numbers are ignored while waiting", () => {
  const k = new ScriptedKernel((msgs) => {
    const m = msgs[0]!;
    return [ack({ ...m, seq: m.seq - 1 }, Errno.EINVAL), concat(obj(m.seq, 5, 0), ack(m))];
  });
  const s = NetlinkSocket.fromTransport(k);
  const replies = s.request(18, 0, () => {}, "get");
  assert.deepEqual(replies.map(value), [5]);
});

Deno.test("a dump collects every multipart message across datagrams until NLMSG_DONE", () => {
  const k = new ScriptedKernel((msgs) => {
    const seq = msgs[0]!.seq;
    assert.equal(msgs[0]!.flags & NLM_F_DUMP, NLM_F_DUMP);
    return [concat(obj(seq, 1), obj(seq, 2)), concat(obj(seq, 3), done(seq))];
  });
  const s = NetlinkSocket.fromTransport(k);
  assert.deepEqual(s.dump(26, () => {}, "dump").map(value), [1, 2, 3]);
});

Deno.test("a dump the kernel marks interrupted is run again and only the clean result is returned", () => {
  const k = new ScriptedKernel((msgs, call) => {
    const seq = msgs[0]!.seq;
    if (call === 0) return [concat(obj(seq, 1), obj(seq, 2, NLM_F_MULTI | NLM_F_DUMP_INTR), done(seq))];
    return [concat(obj(seq, 10), obj(seq, 20), done(seq))];
  });
  const s = NetlinkSocket.fromTransport(k);
  assert.deepEqual(s.dump(26, () => {}, "dump").map(value), [10, 20]);
  assert.equal(k.sent.length, 2);
  assert.equal(s.dumpRetries, 1);
});

Deno.test("a dump that is interrupted every time gives up with EINTR instead of looping forever", () => {
  const k = new ScriptedKernel((msgs) => [done(msgs[0]!.seq, NLM_F_MULTI | NLM_F_DUMP_INTR)]);
  const s = NetlinkSocket.fromTransport(k);
  assert.throws(() => s.dump(26, () => {}, "dump"), (e) => e instanceof ErrnoError && e.code === "EINTR");
  assert.ok(k.sent.length > 1 && k.sent.length < 20);
});

Deno.test("a dump that fails part-way reports the errno carried by NLMSG_DONE", () => {
  const k = new ScriptedKernel((msgs) => {
    const w = new NlWriter();
    const off = w.beginMsg(NLMSG_DONE, NLM_F_MULTI, msgs[0]!.seq, 1);
    w.i32(-Errno.ENOBUFS);
    w.endMsg(off);
    return [w.toBytes()];
  });
  const s = NetlinkSocket.fromTransport(k);
  assert.throws(() => s.dump(26, () => {}, "dump"), (e) => e instanceof NetlinkError && e.code === "ENOBUFS");
});

Deno.test("a batch sends many messages per datagram, fences each chunk, and maps failures back by sequence", () => {
  const fail = new Set([3, 7, 40]);
  let base = -1;
  const k = new ScriptedKernel((msgs) => {
    const out: Uint8Array[] = [];
    for (const m of msgs) {
      if (m.type === NLMSG_NOOP) {
        assert.equal(m.flags & NLM_F_ACK, NLM_F_ACK, "the fence asks for an ACK");
        out.push(ack(m));
        continue;
      }
      assert.equal(m.flags & NLM_F_ACK, 0, "batched messages do not ask for an ACK");
      if (base < 0) base = m.seq;
      if (fail.has(value(m))) out.push(ack(m, Errno.EEXIST));
    }
    return [concat(...out)];
  });
  const s = NetlinkSocket.fromTransport(k);
  const failures = s.batch(50, (w, i, seq) => {
    const off = w.beginMsg(24, 1, seq);
    w.u32(i);
    w.endMsg(off);
  }, { chunkBytes: 200 });
  assert.deepEqual(failures.map((f) => [f.index, (f.error as NetlinkError).code]), [[3, "EEXIST"], [
    7,
    "EEXIST",
  ], [
    40,
    "EEXIST",
  ]]);
  assert.ok(k.sent.length > 1, "the batch was split into several datagrams");
  assert.equal(k.sent.flat().filter((m) => m.type !== NLMSG_NOOP).length, 50);
  assert.ok(k.sent.every((d) => d[d.length - 1]!.type === NLMSG_NOOP), "every datagram ends with a fence");
});

Deno.test("a batch message whose encoding throws fails alone and the rest are still sent", () => {
  const k = new ScriptedKernel((
    msgs,
  ) => [concat(...msgs.filter((m) => m.type === NLMSG_NOOP).map((m) => ack(m)))]);
  const s = NetlinkSocket.fromTransport(k);
  const failures = s.batch(5, (w, i, seq) => {
    const off = w.beginMsg(24, 1, seq);
    w.u32(i);
    if (i === 2) throw new TypeError("invalid CIDR");
    w.endMsg(off);
  });
  assert.deepEqual(failures.map((f) => [f.index, f.error instanceof TypeError]), [[2, true]]);
  assert.deepEqual(k.sent[0]!.filter((m) => m.type === 24).map(value), [0, 1, 3, 4]);
});

Deno.test("a closed socket refuses to send and close is idempotent", () => {
  const s = NetlinkSocket.fromTransport(new ScriptedKernel(() => []));
  s.close();
  s.close();
  assert.throws(() => s.request(24, 0, () => {}, "op"), ErrnoError);
  assert.equal(s.fd, -1);
});
