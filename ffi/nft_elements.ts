/**
 * Writing set and map elements straight to the kernel: one nfnetlink batch (NFNL_MSG_BATCH_BEGIN, then
 * NFT_MSG_NEWSETELEM / NFT_MSG_DELSETELEM messages, then NFNL_MSG_BATCH_END), which the kernel commits
 * or aborts as a whole, like one `nft -f` file of `add element` and `delete element` commands.
 *
 * Why: at 100,000 elements, nft spends about two thirds of a load in user space (parsing, evaluating,
 * building netlink messages); the kernel's part is the rest. The agent already holds each element in
 * nft's text form, and the set's datatypes (read over netlink, nft_netlink.ts) say how each part is laid
 * out, so the bytes nft would send are written here directly: the inverse of nft_netlink.ts's printing.
 *
 * Only what nft_netlink.ts can read back is written: addresses, protocols, ports, plain integers and
 * verdicts, in sets that are not intervals. `encodeElements` refuses anything else before a byte is
 * sent (NftUnencodable), so the caller can give those operations to nft instead.
 */
import { Errno, NetlinkError, NftError } from "./errors.ts";
import { parseIPv4Fast, parseIPv6 } from "./ip.ts";
import { strerror } from "./libc.ts";
import {
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_REQUEST,
  NLMSG_ERROR,
  NlWriter,
  parseError,
  parseMessages,
} from "./netlink.ts";
import type { NetlinkSocket } from "./netlink_socket.ts";
import type { NftElementText } from "./nft_transaction.ts";
import {
  type Field,
  fieldsOf,
  NFNL_SUBSYS_NFTABLES,
  NFPROTO,
  NFT_DATA_VERDICT,
  NFT_SET,
  NFTA_DATA_VALUE,
  NFTA_DATA_VERDICT,
  NFTA_LIST_ELEM,
  NFTA_SET_ELEM_DATA,
  NFTA_SET_ELEM_KEY,
  NFTA_SET_ELEM_LIST_ELEMENTS,
  NFTA_SET_ELEM_LIST_SET,
  NFTA_SET_ELEM_LIST_TABLE,
  NFTA_VERDICT_CHAIN,
  NFTA_VERDICT_CODE,
  type NftSetInfo,
  NftType,
} from "./nft_netlink.ts";

const NFNL_MSG_BATCH_BEGIN = 16;
const NFNL_MSG_BATCH_END = 17;
const NFT_MSG_NEWSETELEM = (NFNL_SUBSYS_NFTABLES << 8) | 12;
const NFT_MSG_DELSETELEM = (NFNL_SUBSYS_NFTABLES << 8) | 14;

/**
 * Bytes of elements per message: the elements are one nested attribute, whose length is 16 bits, so a
 * set's elements are cut into messages of at most this much (nft does the same).
 */
const MAX_ELEMENTS_BYTES = 60_000;

/** An element this file cannot write as nft would: give the operations to nft. */
export class NftUnencodable extends NftError {
  /** Index (in the operations given) of the element that could not be written. */
  readonly index: number;
  constructor(index: number, what: string) {
    super(-1, `cannot write element ${index} over netlink: ${what}`);
    this.name = "NftUnencodable";
    this.index = index;
  }
}

const PROTO_NUMBERS: Readonly<Record<string, number>> = {
  icmp: 1,
  tcp: 6,
  udp: 17,
  "ipv6-icmp": 58,
  sctp: 132,
};

/** The protocol s[from, to) names (nft's name or a number), or -1; tcp and udp without a new string. */
function protoNumber(s: string, from: number, to: number): number {
  if (to - from === 3 && s.startsWith("tcp", from)) return 6;
  if (to - from === 3 && s.startsWith("udp", from)) return 17;
  return PROTO_NUMBERS[s.slice(from, to)] ?? decimal(s, from, to);
}

const VERDICT_CODES: Readonly<Record<string, number>> = {
  drop: 0,
  accept: 1,
  continue: -1,
  return: -5,
};

/** A decimal number in s[from, to), or -1. */
function decimal(s: string, from: number, to: number): number {
  if (to <= from || to - from > 15) return -1;
  let n = 0;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return -1;
    n = n * 10 + c;
  }
  return n;
}

/**
 * Writes one field, the text s[from, to), as `f` lays it out (`f.size` bytes, zero padded) at `off` of
 * `b`. Returns false if the text is not a value of the field's type.
 */
function writeField(
  f: Field,
  s: string,
  from: number,
  to: number,
  b: Uint8Array,
  dv: DataView,
  off: number,
): boolean {
  b.fill(0, off, off + f.size);
  switch (f.type) {
    case NftType.ipv4Addr: {
      const n = parseIPv4Fast(s, from, to);
      if (n < 0) return false;
      dv.setUint32(off, n, false);
      return true;
    }
    case NftType.ipv6Addr: {
      const a = parseIPv6(s.slice(from, to));
      if (!a) return false;
      b.set(a, off);
      return true;
    }
    case NftType.inetProto: {
      const p = protoNumber(s, from, to);
      if (p < 0 || p > 255) return false;
      b[off] = p;
      return true;
    }
    case NftType.inetService: {
      const p = decimal(s, from, to);
      if (p < 0 || p > 65535) return false;
      dv.setUint16(off, p, false);
      return true;
    }
    default: {
      // A plain integer (numgen's slot): host byte order, as nft_netlink.ts prints it.
      const n = decimal(s, from, to);
      if (n < 0 || (f.len < 8 && n >= 2 ** (8 * f.len))) return false;
      if (f.len === 1) dv.setUint8(off, n);
      else if (f.len === 2) dv.setUint16(off, n, true);
      else if (f.len === 4) dv.setUint32(off, n, true);
      else dv.setBigUint64(off, BigInt(n), true);
      return true;
    }
  }
}

/**
 * Writes `text` ("a . b . c") as the fields' bytes into `scratch`; returns the byte count, or -1 if the
 * text does not fit the fields.
 */
function writeFields(fields: readonly Field[], text: string, scratch: Uint8Array, dv: DataView): number {
  let off = 0, from = 0;
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i]!;
    const last = i === fields.length - 1;
    const to = last ? text.length : text.indexOf(" . ", from);
    if (to < 0) return -1;
    if (!writeField(f, text, from, to, scratch, dv, off)) return -1;
    off += f.size;
    from = to + 3;
  }
  return off;
}

/** Writes a verdict ("goto x", "jump x", "accept", …) as NFTA_DATA_VERDICT; false if it does not parse. */
function writeVerdict(w: NlWriter, text: string): boolean {
  const sp = text.indexOf(" ");
  const word = sp < 0 ? text : text.slice(0, sp);
  const chained = (word === "goto" || word === "jump") && sp > 0;
  const code = chained ? (word === "goto" ? -4 : -3) : sp < 0 ? VERDICT_CODES[word] : undefined;
  if (code === undefined) return false;
  const v = w.beginNest(NFTA_DATA_VERDICT);
  w.attrBe32(NFTA_VERDICT_CODE, code);
  if (chained) w.attrString(NFTA_VERDICT_CHAIN, text.slice(sp + 1));
  w.endNest(v);
  return true;
}

/** How one set's elements are written: its key's and value's fields. */
interface SetCodec {
  key: Field[];
  /** The value's fields (a data map), "verdict", or undefined (a set). */
  value: Field[] | "verdict" | undefined;
}

function codecOf(set: NftSetInfo): SetCodec | string {
  if (set.interval) return "an interval set";
  if (!set.map && set.flags & NFT_SET.object) return "an object map";
  const key = fieldsOf(set.keyType, set.keyLen);
  if (!key) return `key type ${set.keyType} of ${set.keyLen} bytes`;
  if (!set.map) return { key, value: undefined };
  if (set.dataType === NFT_DATA_VERDICT) return { key, value: "verdict" };
  const value = fieldsOf(set.dataType ?? 0, set.dataLen ?? 0);
  if (!value) return `value type ${set.dataType} of ${set.dataLen} bytes`;
  return { key, value };
}

/** An encoded batch: its bytes, and per message its sequence number and where each element starts. */
export interface ElementBatch {
  bytes: Uint8Array<ArrayBuffer>;
  /** Sequence number of the batch's first message (BATCH_BEGIN); message i has seq + 1 + i. */
  seq: number;
  /** Per message: its offset in `bytes`, and the operations [from, to) whose elements it holds. */
  messages: { at: number; from: number; to: number }[];
  /** Per operation: where its element starts in its message. */
  offsets: number[];
}

/**
 * Encodes `ops` (in order) as one nfnetlink batch for table `family table`, consecutive operations of the
 * same verb and set sharing a message. `sets` describes the table's sets (NftNetlinkReader.sets).
 * Throws NftUnencodable, before anything is sent, for an element of a set that is unknown, an interval
 * set, of a type this file does not write, or whose text does not parse.
 */
export function encodeElements(
  family: string,
  table: string,
  sets: ReadonlyMap<string, NftSetInfo>,
  ops: readonly NftElementText[],
  seq: number,
  w = new NlWriter(64 * 1024),
): ElementBatch {
  const af = NFPROTO[family];
  if (af === undefined) throw new TypeError(`unknown nftables family ${family}`);
  const scratch = new Uint8Array(64);
  const sdv = new DataView(scratch.buffer);
  const codecs = new Map<string, SetCodec>();
  const messages: ElementBatch["messages"] = [];
  const offsets: number[] = [];
  w.reset();
  let s = seq;
  const begin = w.beginMsg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, s++);
  w.u8(0).u8(0).be16(NFNL_SUBSYS_NFTABLES);
  w.endMsg(begin);

  let msgOff = -1, nest = -1, current = "", currentVerb = "";
  const close = () => {
    if (msgOff < 0) return;
    w.endNest(nest);
    w.endMsg(msgOff);
    msgOff = -1;
  };
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    let codec = codecs.get(op.set);
    if (!codec) {
      const info = sets.get(op.set);
      if (!info) throw new NftUnencodable(i, `no set ${op.set} in table ${family} ${table}`);
      const c = codecOf(info);
      if (typeof c === "string") throw new NftUnencodable(i, `${op.set} is ${c}`);
      codecs.set(op.set, codec = c);
    }
    if (msgOff < 0 || op.set !== current || op.verb !== currentVerb || w.length - nest > MAX_ELEMENTS_BYTES) {
      close();
      const type = op.verb === "delete" ? NFT_MSG_DELSETELEM : NFT_MSG_NEWSETELEM;
      // `add element`: an identical element already present is fine, one with another value is refused
      // (the kernel's rule for NLM_F_CREATE without NLM_F_EXCL, as for nft's add).
      const flags = NLM_F_REQUEST | NLM_F_ACK | (op.verb === "delete" ? 0 : NLM_F_CREATE);
      msgOff = w.beginMsg(type, flags, s++);
      w.u8(af).u8(0).be16(0);
      w.attrString(NFTA_SET_ELEM_LIST_TABLE, table);
      w.attrString(NFTA_SET_ELEM_LIST_SET, op.set);
      nest = w.beginNest(NFTA_SET_ELEM_LIST_ELEMENTS);
      messages.push({ at: msgOff, from: i, to: i });
      current = op.set;
      currentVerb = op.verb;
    }
    const el = w.beginNest(NFTA_LIST_ELEM);
    offsets.push(el - msgOff);
    messages[messages.length - 1]!.to = i + 1;
    const kn = writeFields(codec.key, op.key, scratch, sdv);
    if (kn < 0) throw new NftUnencodable(i, `${op.set}: key ${JSON.stringify(op.key)} does not parse`);
    const k = w.beginNest(NFTA_SET_ELEM_KEY);
    w.attrPrefix(NFTA_DATA_VALUE, scratch, kn);
    w.endNest(k);
    if (op.verb !== "delete" && codec.value !== undefined) {
      if (op.value === undefined) throw new NftUnencodable(i, `${op.set}: a map element without a value`);
      const d = w.beginNest(NFTA_SET_ELEM_DATA);
      if (codec.value === "verdict") {
        if (!writeVerdict(w, op.value)) {
          throw new NftUnencodable(i, `${op.set}: verdict ${JSON.stringify(op.value)} does not parse`);
        }
      } else {
        const vn = writeFields(codec.value, op.value, scratch, sdv);
        if (vn < 0) {
          throw new NftUnencodable(i, `${op.set}: value ${JSON.stringify(op.value)} does not parse`);
        }
        w.attrPrefix(NFTA_DATA_VALUE, scratch, vn);
      }
      w.endNest(d);
    }
    w.endNest(el);
  }
  close();
  const end = w.beginMsg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, s++);
  w.u8(0).u8(0).be16(NFNL_SUBSYS_NFTABLES);
  w.endMsg(end);
  return { bytes: w.view(), seq, messages, offsets };
}

/** The operation of message `msg` an extended ACK's offset (from the message's start) points into, if any. */
function operationAt(batch: ElementBatch, msg: ElementBatch["messages"][number], offset: number | undefined) {
  if (offset === undefined) return undefined;
  let found: number | undefined;
  for (let op = msg.from; op < msg.to && batch.offsets[op]! <= offset; op++) found = op;
  return found;
}

/**
 * Sends an encoded batch and waits for the kernel's answer to each of its messages (each asks an ACK).
 * Throws NftError naming the operations the kernel refused (`operations`: the element its extended ACK
 * points at, else every element of the refused message), with the kernel's errors as text.
 */
export async function sendElements(
  sock: NetlinkSocket,
  batch: ElementBatch,
  describe: (op: number) => string,
): Promise<void> {
  // The kernel checks and commits the whole batch inside the send: off the event loop's thread.
  await sock.sendAsync(batch.bytes);
  const first = batch.seq, count = batch.messages.length;
  let answered = 0;
  const refused: number[] = [];
  const texts: string[] = [];
  let batchError: NetlinkError | undefined;
  let firstError: NetlinkError | undefined;
  while (answered < count && !batchError) {
    const data = sock.recv();
    if (!data) continue;
    for (const m of parseMessages(data)) {
      if (m.type !== NLMSG_ERROR) continue;
      const info = parseError(m);
      const i = (m.seq - first - 1) >>> 0;
      if (i >= count) {
        // Not one of the element messages: the batch itself failed (its commit, or BATCH_BEGIN).
        if (m.seq === first || m.seq === first + count + 1) {
          batchError = new NetlinkError(info.errno || Errno.EINVAL, "nft element batch", m.seq, info.extAck);
        }
        continue;
      }
      answered++;
      if (info.errno === 0) continue;
      const msg = batch.messages[i]!;
      const op = operationAt(batch, msg, info.extAckOffset);
      const ops = op !== undefined ? [op] : Array.from({ length: msg.to - msg.from }, (_, k) => msg.from + k);
      refused.push(...ops);
      const err = new NetlinkError(info.errno, "nft element batch", m.seq, info.extAck);
      firstError ??= err;
      // As nft words a refused command: the reason, then the command.
      texts.push(
        `Error: Could not process rule: ${strerror(info.errno)}${info.extAck ? ` (${info.extAck})` : ""}\n` +
          `${describe(ops[0]!)}${
            ops.length > 1 ? ` (and ${ops.length - 1} more elements of that message)` : ""
          }`,
      );
    }
  }
  if (batchError) {
    throw new NftError(-1, `Error: Could not process rule: ${strerror(batchError.errno)}`, {
      cause: batchError,
    });
  }
  if (refused.length) {
    throw new NftError(-1, texts.join("\n"), {
      operations: [...new Set(refused)].sort((a, b) => a - b),
      cause: firstError,
    });
  }
}
