/**
 * Reading nftables objects straight from the kernel over netlink (NETLINK_NETFILTER, subsystem
 * NFNL_SUBSYS_NFTABLES), without libnftables: a table's chain and set names, and one set's or map's
 * elements decoded as they arrive, in nft's own text form ("10.96.0.1 . tcp . 80", "goto pick_v4_tcp_rr_2",
 * "10.1.2.5 . 8080").
 *
 * Why not `nft list`: libnftables (in process or in a child) caches every element of the table and builds
 * its expression tree before it prints one; at 100,000 map elements that is two seconds of CPU and about
 * 240 MiB, and its JSON output another tree in the reader. The kernel's dump is the same data in a few
 * MiB of binary attributes, read one datagram at a time.
 *
 * Decoding needs each field's datatype: the set's NFTA_SET_KEY_TYPE / NFTA_SET_DATA_TYPE hold nft's
 * datatype ids (6 bits per field of a concatenation, the first field highest). Types this file cannot print
 * exactly as nft does (anything but addresses, protocols, ports, plain integers and verdicts) make
 * `elements` throw NftUndecodable, so the caller can list that set through nft instead.
 */
import { Errno, NetlinkDecodeError, NetlinkError, NftError } from "./errors.ts";
import { formatIP } from "./ip.ts";
import { NETLINK_NETFILTER, type NlMsg, type NlWriter } from "./netlink.ts";
import { NetlinkSocket } from "./netlink_socket.ts";

export const NFNL_SUBSYS_NFTABLES = 10;
const msg = (t: number) => (NFNL_SUBSYS_NFTABLES << 8) | t;
export const NFT_MSG_GETTABLE = msg(1);
export const NFT_MSG_GETCHAIN = msg(4);
export const NFT_MSG_GETSET = msg(10);
export const NFT_MSG_GETSETELEM = msg(13);
/** The set element dump's answers (their type's low byte). */
export const NFT_MSG_NEWSETELEM = 12;

/** NFPROTO_* by nft family name. */
export const NFPROTO: Readonly<Record<string, number>> = {
  inet: 1,
  ip: 2,
  arp: 3,
  netdev: 5,
  bridge: 7,
  ip6: 10,
};

// Attribute numbers (linux/netfilter/nf_tables.h).
const NFTA_TABLE_NAME = 1;
const NFTA_CHAIN_TABLE = 1;
const NFTA_CHAIN_NAME = 3;
const NFTA_SET_TABLE = 1;
const NFTA_SET_NAME = 2;
const NFTA_SET_FLAGS = 3;
const NFTA_SET_KEY_TYPE = 4;
const NFTA_SET_KEY_LEN = 5;
const NFTA_SET_DATA_TYPE = 6;
const NFTA_SET_DATA_LEN = 7;
export const NFTA_SET_ELEM_LIST_TABLE = 1;
export const NFTA_SET_ELEM_LIST_SET = 2;
export const NFTA_SET_ELEM_LIST_ELEMENTS = 3;
export const NFTA_LIST_ELEM = 1;
export const NFTA_SET_ELEM_KEY = 1;
export const NFTA_SET_ELEM_DATA = 2;
const NFTA_SET_ELEM_FLAGS = 3;
const NFTA_SET_ELEM_EXPR = 7;
const NFTA_SET_ELEM_EXPRESSIONS = 10;
const NFTA_EXPR_NAME = 1;
const NFTA_EXPR_DATA = 2;
const NFTA_COUNTER_BYTES = 1;
const NFTA_COUNTER_PACKETS = 2;
export const NFTA_DATA_VALUE = 1;
export const NFTA_DATA_VERDICT = 2;
export const NFTA_VERDICT_CODE = 1;
export const NFTA_VERDICT_CHAIN = 2;

/** NFT_SET_* flags. */
export const NFT_SET = {
  anonymous: 1,
  constant: 2,
  interval: 4,
  map: 8,
  timeout: 0x10,
  object: 0x40,
} as const;
/** NFTA_SET_DATA_TYPE of a verdict map (NFT_DATA_VERDICT). */
export const NFT_DATA_VERDICT = 0xffffff00;
const NFT_SET_ELEM_INTERVAL_END = 1;

/** nft's datatype ids (nftables' include/datatype.h) of the types this file prints. */
export const NftType = {
  integer: 4,
  ipv4Addr: 7,
  ipv6Addr: 8,
  inetProto: 12,
  inetService: 13,
} as const;

/** A set or map as the kernel describes it (no elements). */
export interface NftSetInfo {
  name: string;
  /** NFT_SET_* flags. */
  flags: number;
  map: boolean;
  interval: boolean;
  keyType: number;
  keyLen: number;
  /** For maps: the value's datatype (NFT_DATA_VERDICT for verdict maps) and length. */
  dataType?: number;
  dataLen?: number;
}

/** A table's chain and set names, as the kernel holds them. */
export interface NftTableLayout {
  chains: string[];
  sets: NftSetInfo[];
}

/** A set whose key or value datatypes this reader cannot print as nft does: list it through nft. */
export class NftUndecodable extends NftError {
  constructor(set: string, what: string) {
    super(-1, `cannot decode the elements of ${set}: ${what}`);
    this.name = "NftUndecodable";
  }
}

/** How to print one field of a key or value. */
export interface Field {
  type: number;
  /** Bytes the field occupies (padded to 4 inside a concatenation). */
  size: number;
  /** Bytes of the value itself. */
  len: number;
}

const FIXED_LEN: Readonly<Record<number, number>> = {
  [NftType.ipv4Addr]: 4,
  [NftType.ipv6Addr]: 16,
  [NftType.inetProto]: 1,
  [NftType.inetService]: 2,
};

/**
 * The fields of a key or value of datatype `type` and `total` bytes. A concatenation's datatype id is its
 * fields' ids, 6 bits each, the first field highest; each field is padded to 4 bytes. One plain integer
 * field (a numgen or typeof integer, whose width only the set knows) takes what the others leave.
 */
export function fieldsOf(type: number, total: number): Field[] | undefined {
  const types: number[] = [];
  for (let t = type; t > 0; t = Math.floor(t / 64)) types.unshift(t % 64);
  if (types.length === 0) return undefined;
  const concat = types.length > 1;
  const pad = (n: number) => concat ? (n + 3) & ~3 : n;
  let known = 0, unknown = -1;
  const fields: Field[] = [];
  for (const [i, t] of types.entries()) {
    const len = FIXED_LEN[t];
    if (len === undefined) {
      if (t !== NftType.integer || unknown >= 0) return undefined;
      unknown = i;
      fields.push({ type: t, size: 0, len: 0 });
    } else {
      known += pad(len);
      fields.push({ type: t, size: pad(len), len });
    }
  }
  if (unknown >= 0) {
    const rest = total - known;
    // Inside a concatenation an integer is one 4-byte register (numgen, meta); alone, 1, 2, 4 or 8 bytes.
    if (concat ? rest !== 4 : ![1, 2, 4, 8].includes(rest)) return undefined;
    fields[unknown] = { type: NftType.integer, size: rest, len: rest };
  } else if (known !== total) return undefined;
  return fields;
}

const PROTO_NAMES: Readonly<Record<number, string>> = {
  1: "icmp",
  6: "tcp",
  17: "udp",
  58: "ipv6-icmp",
  132: "sctp",
};

/** One field's bytes (at `off` of `b`, viewed by `dv`) as nft prints them. */
export function printField(f: Field, b: Uint8Array, dv: DataView, off: number): string {
  switch (f.type) {
    case NftType.ipv4Addr:
      return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
    case NftType.ipv6Addr:
      return formatIP(b.subarray(off, off + 16));
    case NftType.inetProto: {
      const p = b[off]!;
      return PROTO_NAMES[p] ?? String(p);
    }
    case NftType.inetService:
      return String(dv.getUint16(off, false));
    default:
      // A plain integer (numgen's slot): host byte order, in decimal.
      if (f.len === 1) return String(dv.getUint8(off));
      if (f.len === 2) return String(dv.getUint16(off, true));
      if (f.len === 4) return String(dv.getUint32(off, true));
      return String(dv.getBigUint64(off, true));
  }
}

function printFields(fields: readonly Field[], b: Uint8Array, dv: DataView, off: number): string {
  let out = "";
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i]!;
    if (i) out += " . ";
    out += printField(f, b, dv, off);
    off += f.size;
  }
  return out;
}

const VERDICTS: Readonly<Record<number, string>> = {
  0: "drop",
  1: "accept",
  [-1]: "continue",
  [-2]: "break",
  [-5]: "return",
};

/**
 * Visits the attributes of an attribute area in order without allocating a list (the element dump of a
 * 100,000-element map has 100,000 of them).
 */
function eachAttr(b: Uint8Array, fn: (type: number, from: number, to: number) => void): void {
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let off = 0;
  while (off + 4 <= b.length) {
    const len = dv.getUint16(off, true);
    const type = dv.getUint16(off + 2, true) & 0x3fff;
    if (len < 4 || off + len > b.length) {
      throw new NetlinkDecodeError(`nftables attribute at ${off}: bad length ${len}`);
    }
    fn(type, off + 4, off + len);
    off += (len + 3) & ~3;
  }
}

const decoder = new TextDecoder();
function str(b: Uint8Array): string {
  const z = b.indexOf(0);
  return decoder.decode(z >= 0 ? b.subarray(0, z) : b);
}

function be32(b: Uint8Array): number {
  return new DataView(b.buffer, b.byteOffset, 4).getUint32(0, false);
}

/** The attributes of a message after its nfgenmsg header, by type. */
function attrs(payload: Uint8Array): Map<number, Uint8Array> {
  const m = new Map<number, Uint8Array>();
  const body = payload.subarray(4);
  eachAttr(body, (t, from, to) => m.set(t, body.subarray(from, to)));
  return m;
}

function nfgen(w: NlWriter, family: number): void {
  w.u8(family).u8(0).be16(0);
}

/** Datagrams (about 32 KiB each) read and decoded before the event loop gets a turn. */
const YIELD_EVERY_DATAGRAMS = 16;

/** nftables objects read over netlink, in the current network namespace. */
export class NftNetlinkReader {
  #sock: NetlinkSocket | undefined;

  constructor(sock?: NetlinkSocket) {
    this.#sock = sock;
  }

  get #s(): NetlinkSocket {
    return this.#sock ??= NetlinkSocket.open(NETLINK_NETFILTER, { rcvbuf: 4 << 20 });
  }

  #family(family: string): number {
    const f = NFPROTO[family];
    if (f === undefined) throw new TypeError(`unknown nftables family ${family}`);
    return f;
  }

  /**
   * The table's chains and sets (names, flags, types), or undefined if the table does not exist.
   * Equivalent to: `nft -t list table FAMILY NAME` without the rules and elements.
   */
  layout(family: string, table: string): NftTableLayout | undefined {
    const f = this.#family(family);
    try {
      this.#s.request(NFT_MSG_GETTABLE, 0, (w) => {
        nfgen(w, f);
        w.attrString(NFTA_TABLE_NAME, table);
      }, "nft get table");
    } catch (e) {
      if (e instanceof NetlinkError && e.errno === Errno.ENOENT) return undefined;
      throw e;
    }
    const chains: string[] = [];
    // The chain dump is not filtered by table in the kernel: every chain of the family comes.
    for (const m of this.#s.dump(NFT_MSG_GETCHAIN, (w) => nfgen(w, f), "nft list chains")) {
      const a = attrs(m.payload);
      const t = a.get(NFTA_CHAIN_TABLE), n = a.get(NFTA_CHAIN_NAME);
      if (t && n && str(t) === table) chains.push(str(n));
    }
    return { chains, sets: this.#sets(f, table) };
  }

  /**
   * The table's named sets and maps (flags, types), without chains or elements; an empty list if the table
   * does not exist. Equivalent to: `nft -t list sets` of that table.
   */
  sets(family: string, table: string): NftSetInfo[] {
    try {
      return this.#sets(this.#family(family), table);
    } catch (e) {
      if (e instanceof NetlinkError && e.errno === Errno.ENOENT) return [];
      throw e;
    }
  }

  #sets(f: number, table: string): NftSetInfo[] {
    const sets: NftSetInfo[] = [];
    for (
      const m of this.#s.dump(NFT_MSG_GETSET, (w) => {
        nfgen(w, f);
        w.attrString(NFTA_SET_TABLE, table);
      }, "nft list sets")
    ) {
      const a = attrs(m.payload);
      const t = a.get(NFTA_SET_TABLE), n = a.get(NFTA_SET_NAME);
      if (!t || !n || str(t) !== table) continue;
      const flags = a.has(NFTA_SET_FLAGS) ? be32(a.get(NFTA_SET_FLAGS)!) : 0;
      if (flags & NFT_SET.anonymous) continue;
      const info: NftSetInfo = {
        name: str(n),
        flags,
        map: (flags & NFT_SET.map) !== 0,
        interval: (flags & NFT_SET.interval) !== 0,
        keyType: a.has(NFTA_SET_KEY_TYPE) ? be32(a.get(NFTA_SET_KEY_TYPE)!) : 0,
        keyLen: a.has(NFTA_SET_KEY_LEN) ? be32(a.get(NFTA_SET_KEY_LEN)!) : 0,
      };
      if (a.has(NFTA_SET_DATA_TYPE)) info.dataType = be32(a.get(NFTA_SET_DATA_TYPE)!);
      if (a.has(NFTA_SET_DATA_LEN)) info.dataLen = be32(a.get(NFTA_SET_DATA_LEN)!);
      sets.push(info);
    }
    return sets;
  }

  /**
   * Streams the elements of one set or map: `each(key, value)` per element, in nft's text form (value ""
   * for a set's elements), as the kernel's dump arrives, so no listing of the whole set is ever held.
   * `restart()` is called (before the elements again) if the set changed during the dump and it was
   * read anew. A missing table or set lists nothing. Throws NftUndecodable, before any element, for an
   * interval set or types this reader does not print.
   */
  async elements(
    family: string,
    table: string,
    set: NftSetInfo,
    each: (key: string, value: string) => void,
    restart: () => void = () => {},
  ): Promise<void> {
    if (set.interval) throw new NftUndecodable(set.name, "interval set (ranges, not elements)");
    const keyFields = fieldsOf(set.keyType, set.keyLen);
    if (!keyFields) throw new NftUndecodable(set.name, `key type ${set.keyType} of ${set.keyLen} bytes`);
    let dataFields: Field[] | undefined;
    const verdictMap = set.map && set.dataType === NFT_DATA_VERDICT;
    if (set.map && !verdictMap) {
      dataFields = fieldsOf(set.dataType ?? 0, set.dataLen ?? 0);
      if (!dataFields) {
        throw new NftUndecodable(set.name, `value type ${set.dataType} of ${set.dataLen} bytes`);
      }
    }
    if (!set.map && set.flags & NFT_SET.object) throw new NftUndecodable(set.name, "object map");
    try {
      await this.#dumpElements(family, table, set.name, (p) =>
        eachSetElement(p, (e) => {
          if (e.keyFrom < 0 || e.flags & NFT_SET_ELEM_INTERVAL_END) return;
          const key = printFields(keyFields, e.buf, e.dv, e.keyFrom);
          let value = "";
          if (dataFields && e.dataFrom >= 0) value = printFields(dataFields, e.buf, e.dv, e.dataFrom);
          else if (verdictMap && e.verdictFrom >= 0) {
            value = verdict(e.buf.subarray(e.verdictFrom, e.verdictTo));
          }
          each(key, value);
        }), restart);
    } catch (err) {
      // A missing table or set lists nothing.
      if (err instanceof NetlinkError && err.errno === Errno.ENOENT) return;
      throw err;
    }
  }

  /**
   * The counters of a set's elements: `each(key, packets, bytes)` per element that has a counter, `key`
   * the kernel's bytes (each part of a concatenation in 4-byte registers; decodeConcatKey prints it),
   * valid during the call only. Elements without a counter are left out. Equivalent to:
   * `nft -j list set FAMILY TABLE SET`, the elements' `counter` packets and bytes. `restart()` as in
   * `elements`. Throws NetlinkError ENOENT (isNotFound) if the table or set is absent.
   */
  async counters(
    family: string,
    table: string,
    set: string,
    each: (key: Uint8Array, packets: number, bytes: number) => void,
    restart: () => void = () => {},
  ): Promise<void> {
    await this.#dumpElements(family, table, set, (p) => decodeSetElementCounters(p, each), restart);
  }

  /** One GETSETELEM dump, each answer's payload to `each` as its datagram arrives. */
  #dumpElements(
    family: string,
    table: string,
    set: string,
    each: (payload: Uint8Array) => void,
    restart: () => void,
  ): Promise<void> {
    const f = this.#family(family);
    return this.#s.dumpStream(
      NFT_MSG_GETSETELEM,
      (w) => encodeGetSetElements(w, family, table, set, f),
      `nft list set ${family} ${table} ${set}`,
      // (Every object message of this dump is a NEWSETELEM.)
      (m: NlMsg) => {
        if (m.payload.length >= 4) each(m.payload);
      },
      { restart, yieldEvery: YIELD_EVERY_DATAGRAMS },
    );
  }

  /** Closes the socket. Idempotent. */
  close(): void {
    this.#sock?.close();
    this.#sock = undefined;
  }
}

/** Body of a GETSETELEM dump request: nfgenmsg (family, version 0, res_id 0), the table and set names. */
export function encodeGetSetElements(
  w: NlWriter,
  family: string,
  table: string,
  set: string,
  af = NFPROTO[family],
): void {
  if (af === undefined) throw new TypeError(`unknown nftables family ${family}`);
  nfgen(w, af);
  w.attrString(NFTA_SET_ELEM_LIST_TABLE, table);
  w.attrString(NFTA_SET_ELEM_LIST_SET, set);
}

/**
 * One element of a set element dump, as offsets into its message's payload: one object reused for every
 * element (a 100,000-element map is 100,000 of them), valid during the visit only.
 */
export interface RawSetElement {
  buf: Uint8Array;
  dv: DataView;
  /** The key's bytes [keyFrom, keyTo) (NFTA_SET_ELEM_KEY's NFTA_DATA_VALUE); -1 if it has none. */
  keyFrom: number;
  keyTo: number;
  /** A map element's value bytes (NFTA_SET_ELEM_DATA's NFTA_DATA_VALUE); -1 if none. */
  dataFrom: number;
  dataTo: number;
  /** A verdict map element's verdict nest (NFTA_SET_ELEM_DATA's NFTA_DATA_VERDICT); -1 if none. */
  verdictFrom: number;
  verdictTo: number;
  /** NFTA_SET_ELEM_FLAGS (NFT_SET_ELEM_INTERVAL_END…). */
  flags: number;
  /** Its counter (NFTA_SET_ELEM_EXPR, or a counter among NFTA_SET_ELEM_EXPRESSIONS), if it has one. */
  counted: boolean;
  packets: number;
  bytes: number;
}

/**
 * Visits every element of one NFT_MSG_NEWSETELEM payload (nfgenmsg, then NFTA_SET_ELEM_LIST_*): the one
 * decoder of set element dumps, for both the listing of elements and their counters. Plain offset
 * arithmetic over one DataView, no closure, view or object per element.
 */
export function eachSetElement(payload: Uint8Array, visit: (e: RawSetElement) => void): void {
  const dv = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const end = payload.length;
  const e: RawSetElement = {
    buf: payload,
    dv,
    keyFrom: -1,
    keyTo: -1,
    dataFrom: -1,
    dataTo: -1,
    verdictFrom: -1,
    verdictTo: -1,
    flags: 0,
    counted: false,
    packets: 0,
    bytes: 0,
  };
  for (let off = 4; off + 4 <= end;) {
    const lEnd = attrEnd(dv, off, end);
    if (attrType(dv, off) !== NFTA_SET_ELEM_LIST_ELEMENTS) {
      off = (lEnd + 3) & ~3;
      continue;
    }
    for (let el = off + 4; el + 4 <= lEnd;) {
      const eEnd = attrEnd(dv, el, lEnd);
      if (attrType(dv, el) === NFTA_LIST_ELEM) {
        e.keyFrom =
          e.keyTo =
          e.dataFrom =
          e.dataTo =
          e.verdictFrom =
          e.verdictTo =
            -1;
        e.flags = 0;
        e.counted = false;
        for (let a = el + 4; a + 4 <= eEnd;) {
          const aEnd = attrEnd(dv, a, eEnd);
          const t = attrType(dv, a);
          if (t === NFTA_SET_ELEM_KEY || t === NFTA_SET_ELEM_DATA) {
            for (let d = a + 4; d + 4 <= aEnd;) {
              const dEnd = attrEnd(dv, d, aEnd);
              const dt = attrType(dv, d);
              if (dt === NFTA_DATA_VALUE) {
                if (t === NFTA_SET_ELEM_KEY) [e.keyFrom, e.keyTo] = [d + 4, dEnd];
                else [e.dataFrom, e.dataTo] = [d + 4, dEnd];
              } else if (dt === NFTA_DATA_VERDICT && t === NFTA_SET_ELEM_DATA) {
                [e.verdictFrom, e.verdictTo] = [d + 4, dEnd];
              }
              d = (dEnd + 3) & ~3;
            }
          } else if (t === NFTA_SET_ELEM_FLAGS && aEnd - a >= 8) e.flags = dv.getUint32(a + 4, false);
          else if (t === NFTA_SET_ELEM_EXPR) e.counted ||= counterExpr(payload, dv, a + 4, aEnd, e);
          else if (t === NFTA_SET_ELEM_EXPRESSIONS) {
            for (let x = a + 4; x + 4 <= aEnd;) {
              const xEnd = attrEnd(dv, x, aEnd);
              if (attrType(dv, x) === NFTA_LIST_ELEM) e.counted ||= counterExpr(payload, dv, x + 4, xEnd, e);
              x = (xEnd + 3) & ~3;
            }
          }
          a = (aEnd + 3) & ~3;
        }
        visit(e);
      }
      el = (eEnd + 3) & ~3;
    }
    off = (lEnd + 3) & ~3;
  }
}

/**
 * Calls `each(key, packets, bytes)` for every element with a counter in one NFT_MSG_NEWSETELEM payload;
 * `key` is a view into `payload`, valid during the call only (copy it to keep it).
 */
export function decodeSetElementCounters(
  payload: Uint8Array,
  each: (key: Uint8Array, packets: number, bytes: number) => void,
): void {
  eachSetElement(payload, (e) => {
    if (e.keyFrom < 0) throw new NetlinkDecodeError("set element without a key");
    if (e.counted) each(payload.subarray(e.keyFrom, e.keyTo), e.packets, e.bytes);
  });
}

/** The end of the attribute at `off` (checked against `limit`). */
function attrEnd(dv: DataView, off: number, limit: number): number {
  const len = dv.getUint16(off, true);
  if (len < 4 || off + len > limit) {
    throw new NetlinkDecodeError(`nftables attribute at ${off}: bad length ${len}`);
  }
  return off + len;
}

function attrType(dv: DataView, off: number): number {
  return dv.getUint16(off + 2, true) & 0x3fff;
}

const COUNTER = new TextEncoder().encode("counter");

/** If the expression in buf[s, e) is a counter, sets out.packets/out.bytes and returns true. */
function counterExpr(
  buf: Uint8Array,
  dv: DataView,
  s: number,
  e: number,
  out: { packets: number; bytes: number },
): boolean {
  let isCounter = false, ds = 0, de = 0;
  for (let a = s; a + 4 <= e;) {
    const aEnd = attrEnd(dv, a, e);
    const t = attrType(dv, a);
    if (t === NFTA_EXPR_NAME) {
      const n = aEnd - a - 4;
      isCounter = n >= COUNTER.length && (n === COUNTER.length || buf[a + 4 + COUNTER.length] === 0) &&
        COUNTER.every((c, i) => buf[a + 4 + i] === c);
    } else if (t === NFTA_EXPR_DATA) [ds, de] = [a + 4, aEnd];
    a = (aEnd + 3) & ~3;
  }
  if (!isCounter || ds === de) return false;
  let packets: number | undefined, bytes: number | undefined;
  for (let a = ds; a + 4 <= de;) {
    const aEnd = attrEnd(dv, a, de);
    const t = attrType(dv, a);
    if (aEnd - a >= 12) {
      if (t === NFTA_COUNTER_PACKETS) packets = Number(dv.getBigUint64(a + 4, false));
      else if (t === NFTA_COUNTER_BYTES) bytes = Number(dv.getBigUint64(a + 4, false));
    }
    a = (aEnd + 3) & ~3;
  }
  if (packets === undefined || bytes === undefined) {
    throw new NetlinkDecodeError("counter without bytes or packets");
  }
  out.packets = packets;
  out.bytes = bytes;
  return true;
}

function verdict(b: Uint8Array): string {
  let code = 0, chain = "";
  eachAttr(b, (t, x, y) => {
    if (t === NFTA_VERDICT_CODE) code = new DataView(b.buffer, b.byteOffset + x, 4).getInt32(0, false);
    else if (t === NFTA_VERDICT_CHAIN) chain = str(b.subarray(x, y));
  });
  if (code === -3) return `jump ${chain}`;
  if (code === -4) return `goto ${chain}`;
  return VERDICTS[code] ?? String(code);
}
