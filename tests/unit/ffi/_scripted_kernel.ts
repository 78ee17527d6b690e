/** A netlink peer scripted by a test, for the netlink socket and the readers built on it. */
import {
  Errno,
  ErrnoError,
  type NetlinkTransport,
  NLM_F_ACK_TLVS,
  NLM_F_CAPPED,
  type NlMsg,
  NLMSG_ERROR,
  NlWriter,
  parseMessages,
} from "../../../ffi/mod.ts";

/** A kernel scripted by the test: every sent datagram (its messages) is answered by `handle`. */
export class ScriptedKernel implements NetlinkTransport {
  readonly fd = -1;
  /** The messages of each datagram sent. */
  sent: NlMsg[][] = [];
  #queue: Uint8Array[] = [];
  constructor(private handle: (msgs: NlMsg[], call: number) => Uint8Array[]) {}
  send(bytes: Uint8Array<ArrayBuffer>): void {
    const msgs = parseMessages(bytes.slice());
    this.sent.push(msgs);
    this.#queue.push(...this.handle(msgs, this.sent.length - 1));
  }
  recv(): Uint8Array | undefined {
    const d = this.#queue.shift();
    if (!d) throw new ErrnoError(Errno.EAGAIN, "recv", "the scripted kernel has nothing more to say");
    return d;
  }
  close(): void {}
}

/** The kernel's answer to `req`: an ACK, or an error with `errno` (and extended-ACK `text`). */
export function ack(req: NlMsg, errno = 0, text?: string): Uint8Array {
  const w = new NlWriter();
  const off = w.beginMsg(NLMSG_ERROR, NLM_F_CAPPED | (text ? NLM_F_ACK_TLVS : 0), req.seq, 1);
  w.i32(-errno);
  w.u32(16).u16(req.type).u16(req.flags).u32(req.seq).u32(0);
  if (text) w.attrString(1, text);
  w.endMsg(off);
  return w.toBytes();
}

/** Messages (or any byte strings) one after the other, as one datagram. */
export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
