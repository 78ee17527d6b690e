/**
 * Netlink wire codecs: `struct nlmsghdr`, attributes (`struct nlattr`), nesting and 4-byte alignment.
 * Pure functions over bytes, no I/O, so they are tested without root. All netlink integers are in host
 * byte order (little-endian on the machines we run on) unless an attribute says otherwise.
 * Decoders throw only NetlinkDecodeError, never a RangeError from deep inside.
 */
import { NetlinkDecodeError } from "./errors.ts";

export const NLMSG_HDRLEN = 16;
export const NLA_HDRLEN = 4;

// nlmsg_type control values.
export const NLMSG_NOOP = 1;
export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;
export const NLMSG_OVERRUN = 4;

// nlmsg_flags.
export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_ECHO = 0x8;
export const NLM_F_DUMP_INTR = 0x10;
export const NLM_F_DUMP_FILTERED = 0x20;
export const NLM_F_ROOT = 0x100;
export const NLM_F_MATCH = 0x200;
export const NLM_F_DUMP = 0x300;
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
export const NLM_F_APPEND = 0x800;
/** On NLMSG_ERROR: the echoed request was cut to its header (NETLINK_CAP_ACK). */
export const NLM_F_CAPPED = 0x100;
/** On NLMSG_ERROR/DONE: extended-ACK TLVs follow. */
export const NLM_F_ACK_TLVS = 0x200;

export const NLA_F_NESTED = 0x8000;
export const NLA_F_NET_BYTEORDER = 0x4000;
export const NLA_TYPE_MASK = 0x3fff;

// Extended ACK attributes (enum nlmsgerr_attrs).
export const NLMSGERR_ATTR_MSG = 1;
export const NLMSGERR_ATTR_OFFS = 2;

// Socket options at SOL_NETLINK.
export const SOL_NETLINK = 270;
export const NETLINK_ADD_MEMBERSHIP = 1;
export const NETLINK_DROP_MEMBERSHIP = 2;
export const NETLINK_NO_ENOBUFS = 5;
export const NETLINK_CAP_ACK = 10;
export const NETLINK_EXT_ACK = 11;
export const NETLINK_GET_STRICT_CHK = 12;

// Netlink protocols.
export const NETLINK_ROUTE = 0;
export const NETLINK_NETFILTER = 12;
export const NETLINK_GENERIC = 16;

/** Rounds up to netlink's 4-byte alignment (NLMSG_ALIGN / NLA_ALIGN). */
export function align4(n: number): number {
  return (n + 3) & ~3;
}

/** One decoded netlink message; `payload` is a view into the received buffer (no copy). */
export interface NlMsg {
  type: number;
  flags: number;
  seq: number;
  pid: number;
  payload: Uint8Array;
}

/** One attribute; `type` has the NESTED/NET_BYTEORDER bits masked off. */
export interface NlAttr {
  type: number;
  nested: boolean;
  value: Uint8Array;
}

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

/** Splits a buffer received from a netlink socket into messages. */
export function parseMessages(buf: Uint8Array): NlMsg[] {
  const out: NlMsg[] = [];
  const dv = view(buf);
  let off = 0;
  while (off + NLMSG_HDRLEN <= buf.length) {
    const len = dv.getUint32(off, true);
    if (len < NLMSG_HDRLEN) {
      throw new NetlinkDecodeError(`nlmsg at ${off}: length ${len} is shorter than a header`);
    }
    if (off + len > buf.length) {
      throw new NetlinkDecodeError(
        `nlmsg at ${off}: length ${len} runs past the buffer (${buf.length - off} left)`,
      );
    }
    out.push({
      type: dv.getUint16(off + 4, true),
      flags: dv.getUint16(off + 6, true),
      seq: dv.getUint32(off + 8, true),
      pid: dv.getUint32(off + 12, true),
      payload: buf.subarray(off + NLMSG_HDRLEN, off + len),
    });
    off += align4(len);
  }
  if (off < buf.length) {
    throw new NetlinkDecodeError(`trailing ${buf.length - off} bytes are shorter than a netlink header`);
  }
  return out;
}

/** Splits an attribute area into attributes. */
export function parseAttrs(buf: Uint8Array): NlAttr[] {
  const out: NlAttr[] = [];
  const dv = view(buf);
  let off = 0;
  while (off + NLA_HDRLEN <= buf.length) {
    const len = dv.getUint16(off, true);
    const rawType = dv.getUint16(off + 2, true);
    if (len < NLA_HDRLEN) {
      throw new NetlinkDecodeError(`attribute at ${off}: length ${len} is shorter than its header`);
    }
    if (off + len > buf.length) {
      throw new NetlinkDecodeError(
        `attribute type ${rawType & NLA_TYPE_MASK} at ${off}: length ${len} runs past its area (${
          buf.length - off
        } left)`,
      );
    }
    out.push({
      type: rawType & NLA_TYPE_MASK,
      nested: (rawType & NLA_F_NESTED) !== 0,
      value: buf.subarray(off + NLA_HDRLEN, off + len),
    });
    off += align4(len);
  }
  if (off < buf.length) throw new NetlinkDecodeError(`trailing ${buf.length - off} bytes in attribute area`);
  return out;
}

/** Attributes by type (the last one wins, as in the kernel's nla_parse). */
export function attrMap(buf: Uint8Array): Map<number, Uint8Array> {
  const m = new Map<number, Uint8Array>();
  for (const a of parseAttrs(buf)) m.set(a.type, a.value);
  return m;
}

function need(v: Uint8Array, n: number, what: string): DataView {
  if (v.length < n) throw new NetlinkDecodeError(`${what}: ${v.length} bytes, need ${n}`);
  return view(v);
}

/** Attribute value readers; each checks the length. */
export const read = {
  u8(v: Uint8Array, what = "u8"): number {
    return need(v, 1, what).getUint8(0);
  },
  u16(v: Uint8Array, what = "u16"): number {
    return need(v, 2, what).getUint16(0, true);
  },
  be16(v: Uint8Array, what = "be16"): number {
    return need(v, 2, what).getUint16(0, false);
  },
  u32(v: Uint8Array, what = "u32"): number {
    return need(v, 4, what).getUint32(0, true);
  },
  i32(v: Uint8Array, what = "i32"): number {
    return need(v, 4, what).getInt32(0, true);
  },
  be32(v: Uint8Array, what = "be32"): number {
    return need(v, 4, what).getUint32(0, false);
  },
  u64(v: Uint8Array, what = "u64"): bigint {
    return need(v, 8, what).getBigUint64(0, true);
  },
  /** A NUL-terminated (or not) string. */
  str(v: Uint8Array): string {
    const z = v.indexOf(0);
    return new TextDecoder().decode(z >= 0 ? v.subarray(0, z) : v);
  },
};

/** An error/ACK message decoded: errno 0 is a success ACK. */
export interface NlErrorInfo {
  /** Positive errno, or 0 for an ACK. */
  errno: number;
  /** Header of the request this answers. */
  reqType: number;
  reqSeq: number;
  /** NLMSGERR_ATTR_MSG text. */
  extAck?: string;
  /** NLMSGERR_ATTR_OFFS: byte offset of the offending attribute in the request. */
  extAckOffset?: number;
}

/** Decodes an NLMSG_ERROR payload (`struct nlmsgerr` plus optional extended-ACK TLVs). */
export function parseError(msg: NlMsg): NlErrorInfo {
  const p = msg.payload;
  if (p.length < 4 + NLMSG_HDRLEN) {
    throw new NetlinkDecodeError(`NLMSG_ERROR payload is ${p.length} bytes, need 20`);
  }
  const dv = view(p);
  const err = dv.getInt32(0, true);
  const reqLen = dv.getUint32(4, true);
  const info: NlErrorInfo = {
    errno: err === 0 ? 0 : -err,
    reqType: dv.getUint16(8, true),
    reqSeq: dv.getUint32(12, true),
  };
  if (msg.flags & NLM_F_ACK_TLVS) {
    // The echoed request is the header only when capped (or on success), else the whole request.
    const echoed = (msg.flags & NLM_F_CAPPED) || err === 0 ? NLMSG_HDRLEN : align4(reqLen);
    const tlvStart = 4 + echoed;
    if (tlvStart <= p.length) {
      for (const a of parseAttrs(p.subarray(tlvStart))) {
        if (a.type === NLMSGERR_ATTR_MSG) info.extAck = read.str(a.value);
        else if (a.type === NLMSGERR_ATTR_OFFS && a.value.length >= 4) info.extAckOffset = read.u32(a.value);
      }
    }
  }
  return info;
}

/** Decodes the optional error in an NLMSG_DONE payload (a dump that failed part-way). */
export function parseDone(msg: NlMsg): NlErrorInfo {
  const p = msg.payload;
  const errno = p.length >= 4 ? Math.abs(view(p).getInt32(0, true)) : 0;
  const info: NlErrorInfo = { errno, reqType: 0, reqSeq: msg.seq };
  if (msg.flags & NLM_F_ACK_TLVS && p.length > 4) {
    for (const a of parseAttrs(p.subarray(4))) {
      if (a.type === NLMSGERR_ATTR_MSG) info.extAck = read.str(a.value);
    }
  }
  return info;
}

const te = new TextEncoder();

/**
 * Appends netlink messages into one growing buffer, so a batch of thousands of messages is built without
 * per-message allocations and sent with one sendto.
 */
export class NlWriter {
  #buf: Uint8Array<ArrayBuffer>;
  #dv: DataView;
  #len = 0;
  constructor(initial = 4096) {
    this.#buf = new Uint8Array(initial);
    this.#dv = new DataView(this.#buf.buffer);
  }
  /** Bytes written so far. */
  get length(): number {
    return this.#len;
  }
  #grow(n: number): void {
    if (this.#len + n > this.#buf.length) this.#realloc(n);
  }
  #realloc(n: number): void {
    let size = this.#buf.length * 2;
    while (size < this.#len + n) size *= 2;
    const nb = new Uint8Array(size);
    nb.set(this.#buf.subarray(0, this.#len));
    this.#buf = nb;
    this.#dv = new DataView(nb.buffer);
  }
  #pad(): void {
    if ((this.#len & 3) === 0) return;
    this.#grow(3);
    const b = this.#buf;
    while (this.#len & 3) b[this.#len++] = 0;
  }
  /** Starts a message; returns its offset for endMsg. */
  beginMsg(type: number, flags: number, seq: number, pid = 0): number {
    this.#pad();
    const off = this.#len;
    this.#grow(NLMSG_HDRLEN);
    this.#dv.setUint32(off, 0, true);
    this.#dv.setUint16(off + 4, type, true);
    this.#dv.setUint16(off + 6, flags, true);
    this.#dv.setUint32(off + 8, seq, true);
    this.#dv.setUint32(off + 12, pid, true);
    this.#len += NLMSG_HDRLEN;
    return off;
  }
  /** Closes a message: fixes nlmsg_len and pads to alignment. */
  endMsg(off: number): void {
    this.#dv.setUint32(off, this.#len - off, true);
    this.#pad();
  }
  /** Raw bytes (a fixed header such as struct rtmsg). */
  bytes(data: Uint8Array): this {
    this.#grow(data.length);
    this.#buf.set(data, this.#len);
    this.#len += data.length;
    return this;
  }
  u8(v: number): this {
    this.#grow(1);
    this.#buf[this.#len++] = v;
    return this;
  }
  u16(v: number): this {
    this.#grow(2);
    this.#dv.setUint16(this.#len, v, true);
    this.#len += 2;
    return this;
  }
  be16(v: number): this {
    this.#grow(2);
    this.#dv.setUint16(this.#len, v, false);
    this.#len += 2;
    return this;
  }
  u32(v: number): this {
    this.#grow(4);
    this.#dv.setUint32(this.#len, v >>> 0, true);
    this.#len += 4;
    return this;
  }
  i32(v: number): this {
    this.#grow(4);
    this.#dv.setInt32(this.#len, v, true);
    this.#len += 4;
    return this;
  }
  #attrHeader(type: number, payloadLen: number): void {
    this.#pad();
    this.#grow(NLA_HDRLEN + payloadLen + 3);
    this.#dv.setUint16(this.#len, NLA_HDRLEN + payloadLen, true);
    this.#dv.setUint16(this.#len + 2, type, true);
    this.#len += NLA_HDRLEN;
  }
  /** An attribute with raw bytes. */
  attr(type: number, data: Uint8Array): this {
    return this.attrPrefix(type, data, data.length);
  }
  /** An attribute whose payload is the first `n` bytes of `data` (no view of them made: for hot loops). */
  attrPrefix(type: number, data: Uint8Array, n: number): this {
    this.#attrHeader(type, n);
    if (n <= 16) {
      const b = this.#buf;
      for (let i = 0; i < n; i++) b[this.#len + i] = data[i]!;
    } else {
      this.#buf.set(n === data.length ? data : data.subarray(0, n), this.#len);
    }
    this.#len += n;
    this.#pad();
    return this;
  }
  attrFlag(type: number): this {
    this.#attrHeader(type, 0);
    return this;
  }
  attrU8(type: number, v: number): this {
    this.#attrHeader(type, 1);
    this.u8(v);
    this.#pad();
    return this;
  }
  attrU16(type: number, v: number): this {
    this.#attrHeader(type, 2);
    this.u16(v);
    this.#pad();
    return this;
  }
  attrBe16(type: number, v: number): this {
    this.#attrHeader(type, 2);
    this.be16(v);
    this.#pad();
    return this;
  }
  attrU32(type: number, v: number): this {
    this.#attrHeader(type, 4);
    this.u32(v);
    return this;
  }
  attrBe32(type: number, v: number): this {
    this.#attrHeader(type, 4);
    this.#dv.setUint32(this.#len, v >>> 0, false);
    this.#len += 4;
    return this;
  }
  /** A NUL-terminated string attribute (NLA_NUL_STRING / IFNAMSIZ names). */
  attrString(type: number, s: string): this {
    const b = te.encode(s);
    this.#attrHeader(type, b.length + 1);
    this.#buf.set(b, this.#len);
    this.#buf[this.#len + b.length] = 0;
    this.#len += b.length + 1;
    this.#pad();
    return this;
  }
  /** Starts a nested attribute; returns its offset for endNest. */
  beginNest(type: number, flagNested = true): number {
    this.#attrHeader(type | (flagNested ? NLA_F_NESTED : 0), 0);
    return this.#len - NLA_HDRLEN;
  }
  endNest(off: number): void {
    this.#pad();
    this.#dv.setUint16(off, this.#len - off, true);
  }
  /** Fixes a 16-bit length field at `off` to span up to the current end (rtnexthop.rtnh_len). */
  patchLen16(off: number): void {
    this.#dv.setUint16(off, this.#len - off, true);
  }
  /** Current write offset. */
  get offset(): number {
    return this.#len;
  }
  /** A copy of the bytes written. */
  toBytes(): Uint8Array<ArrayBuffer> {
    return this.#buf.slice(0, this.#len);
  }
  /** A view of the bytes written (valid until the next write). */
  view(): Uint8Array<ArrayBuffer> {
    return this.#buf.subarray(0, this.#len);
  }
  reset(): void {
    this.#len = 0;
  }
  /** Drops everything written after `length` (undoes a message whose encoding failed half-way). */
  truncate(length: number): void {
    if (length < this.#len) this.#len = length;
  }
}

/** Encodes one complete message from a fixed header and a writer callback for attributes. */
export function encodeMessage(
  type: number,
  flags: number,
  seq: number,
  body: (w: NlWriter) => void,
): Uint8Array<ArrayBuffer> {
  const w = new NlWriter(256);
  const off = w.beginMsg(type, flags, seq);
  body(w);
  w.endMsg(off);
  return w.toBytes();
}
