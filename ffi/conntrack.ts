/**
 * Connection tracking over ctnetlink (NETLINK_NETFILTER, subsystem CTNETLINK): list entries and delete
 * those matching a protocol and original destination address/port — what kube-router does with
 * `conntrack -D -p udp --orig-dst IP --orig-port-dst PORT` when a UDP endpoint goes away, so clients stop
 * being sent to a dead backend. Codecs are pure and exported for tests.
 */
import { NetlinkDecodeError, NetlinkError } from "./errors.ts";
import { type Family, formatIP, ipBytes } from "./ip.ts";
import { afOf, familyOfAf, IPPROTO_TCP, IPPROTO_UDP } from "./libc.ts";
import { attrMap, NETLINK_NETFILTER, NLM_F_REQUEST, type NlMsg, type NlWriter, read } from "./netlink.ts";
import { NetlinkSocket } from "./netlink_socket.ts";

const NFNL_SUBSYS_CTNETLINK = 1;
const IPCTNL_MSG_CT_NEW = 0;
const IPCTNL_MSG_CT_GET = 1;
const IPCTNL_MSG_CT_DELETE = 2;
export const CT_MSG_NEW = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;
export const CT_MSG_GET = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
export const CT_MSG_DELETE = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;

const CTA_TUPLE_ORIG = 1;
const CTA_TUPLE_REPLY = 2;
const CTA_STATUS = 3;
const CTA_TIMEOUT = 7;
const CTA_MARK = 8;
const CTA_ID = 12;
const CTA_ZONE = 18;
const CTA_TUPLE_IP = 1;
const CTA_TUPLE_PROTO = 2;
const CTA_IP_V4_SRC = 1;
const CTA_IP_V4_DST = 2;
const CTA_IP_V6_SRC = 3;
const CTA_IP_V6_DST = 4;
const CTA_PROTO_NUM = 1;
const CTA_PROTO_SRC_PORT = 2;
const CTA_PROTO_DST_PORT = 3;

/** IP protocol numbers commonly matched. */
export const IpProto = { tcp: IPPROTO_TCP, udp: IPPROTO_UDP, sctp: 132, icmp: 1, icmpv6: 58 } as const;

/** One direction of a connection. */
export interface ConntrackTuple {
  src: string;
  dst: string;
  protocol: number;
  sport?: number;
  dport?: number;
}

/** A conntrack entry (`conntrack -L`). */
export interface ConntrackEntry {
  family: Family;
  orig: ConntrackTuple;
  reply?: ConntrackTuple;
  id?: number;
  mark?: number;
  /** Seconds left. */
  timeout?: number;
  status?: number;
  zone?: number;
}

/** Selects entries by their original direction. */
export interface ConntrackFilter {
  family?: Family;
  protocol?: number;
  /** Original destination address (`--orig-dst`). */
  dst?: string;
  /** Original destination port (`--orig-port-dst`). */
  dport?: number;
  src?: string;
}

function nfgenmsg(w: NlWriter, family: number): void {
  w.u8(family).u8(0).be16(0);
}

function encodeTuple(w: NlWriter, type: number, family: Family, t: ConntrackTuple): void {
  const n = w.beginNest(type);
  const ip = w.beginNest(CTA_TUPLE_IP);
  w.attr(family === 4 ? CTA_IP_V4_SRC : CTA_IP_V6_SRC, ipBytes(t.src, family));
  w.attr(family === 4 ? CTA_IP_V4_DST : CTA_IP_V6_DST, ipBytes(t.dst, family));
  w.endNest(ip);
  const p = w.beginNest(CTA_TUPLE_PROTO);
  w.attrU8(CTA_PROTO_NUM, t.protocol);
  if (t.sport !== undefined) w.attrBe16(CTA_PROTO_SRC_PORT, t.sport);
  if (t.dport !== undefined) w.attrBe16(CTA_PROTO_DST_PORT, t.dport);
  w.endNest(p);
  w.endNest(n);
}

/** Body of IPCTNL_MSG_CT_DELETE for one entry (`conntrack -D` of that exact tuple). */
export function encodeDelete(w: NlWriter, e: ConntrackEntry): void {
  nfgenmsg(w, afOf(e.family));
  encodeTuple(w, CTA_TUPLE_ORIG, e.family, e.orig);
  if (e.zone !== undefined) w.attrBe16(CTA_ZONE, e.zone);
  if (e.id !== undefined) w.attrBe32(CTA_ID, e.id);
}

/** Body of IPCTNL_MSG_CT_NEW creating an entry (used by tests, like `conntrack -I`). */
export function encodeCreate(
  w: NlWriter,
  e: ConntrackEntry & { reply: ConntrackTuple; timeout: number },
): void {
  nfgenmsg(w, afOf(e.family));
  encodeTuple(w, CTA_TUPLE_ORIG, e.family, e.orig);
  encodeTuple(w, CTA_TUPLE_REPLY, e.family, e.reply);
  w.attrBe32(CTA_TIMEOUT, e.timeout);
  if (e.mark !== undefined) w.attrBe32(CTA_MARK, e.mark);
}

function decodeTuple(v: Uint8Array, family: Family): ConntrackTuple {
  const a = attrMap(v);
  const ipA = a.get(CTA_TUPLE_IP);
  const pA = a.get(CTA_TUPLE_PROTO);
  if (!ipA || !pA) throw new NetlinkDecodeError("tuple without CTA_TUPLE_IP or CTA_TUPLE_PROTO");
  const ip = attrMap(ipA);
  const src = ip.get(family === 4 ? CTA_IP_V4_SRC : CTA_IP_V6_SRC);
  const dst = ip.get(family === 4 ? CTA_IP_V4_DST : CTA_IP_V6_DST);
  const len = family === 4 ? 4 : 16;
  if (!src || !dst || src.length !== len || dst.length !== len) {
    throw new NetlinkDecodeError("tuple address missing or wrong size");
  }
  const p = attrMap(pA);
  const num = p.get(CTA_PROTO_NUM);
  if (!num) throw new NetlinkDecodeError("tuple without CTA_PROTO_NUM");
  const t: ConntrackTuple = { src: formatIP(src), dst: formatIP(dst), protocol: read.u8(num) };
  const sp = p.get(CTA_PROTO_SRC_PORT);
  if (sp) t.sport = read.be16(sp);
  const dp = p.get(CTA_PROTO_DST_PORT);
  if (dp) t.dport = read.be16(dp);
  return t;
}

/** Decodes an IPCTNL_MSG_CT_NEW message from a dump or an event. */
export function decodeEntry(m: NlMsg): ConntrackEntry | undefined {
  try {
    if (m.payload.length < 4) throw new NetlinkDecodeError(`nfgenmsg is ${m.payload.length} bytes, need 4`);
    const afv = m.payload[0]!;
    const family = familyOfAf(afv);
    if (!family) return undefined;
    const a = attrMap(m.payload.subarray(4));
    const orig = a.get(CTA_TUPLE_ORIG);
    if (!orig) throw new NetlinkDecodeError("entry without CTA_TUPLE_ORIG");
    const e: ConntrackEntry = { family, orig: decodeTuple(orig, family) };
    const reply = a.get(CTA_TUPLE_REPLY);
    if (reply) e.reply = decodeTuple(reply, family);
    const id = a.get(CTA_ID);
    if (id) e.id = read.be32(id);
    const mark = a.get(CTA_MARK);
    if (mark) e.mark = read.be32(mark);
    const timeout = a.get(CTA_TIMEOUT);
    if (timeout) e.timeout = read.be32(timeout);
    const status = a.get(CTA_STATUS);
    if (status) e.status = read.be32(status);
    const zone = a.get(CTA_ZONE);
    if (zone) e.zone = read.be16(zone);
    return e;
  } catch (e) {
    if (e instanceof NetlinkDecodeError) {
      throw new NetlinkDecodeError(`conntrack entry: ${e.message}`, { cause: e });
    }
    throw new NetlinkDecodeError(`conntrack entry: ${String(e)}`, { cause: e });
  }
}

/** Whether an entry's original direction matches a filter. */
export function matches(e: ConntrackEntry, f: ConntrackFilter): boolean {
  if (f.family !== undefined && e.family !== f.family) return false;
  if (f.protocol !== undefined && e.orig.protocol !== f.protocol) return false;
  if (f.dport !== undefined && e.orig.dport !== f.dport) return false;
  if (f.dst !== undefined && e.orig.dst !== formatIP(ipBytes(f.dst))) return false;
  if (f.src !== undefined && e.orig.src !== formatIP(ipBytes(f.src))) return false;
  return true;
}

/** What the agent does with conntrack; `Conntrack` is the kernel's, `FakeConntrack` an in-memory one. */
export interface ConntrackTable {
  /** Equivalent to: `conntrack -L …` */
  list(filter?: ConntrackFilter): Promise<ConntrackEntry[]>;
  /** Equivalent to: `conntrack -D …`; returns how many entries went. */
  deleteMatching(filter: ConntrackFilter): Promise<number>;
  close(): void;
}

/** In-memory conntrack for unit tests: seed it with entries, then check what a module deleted. */
export class FakeConntrack implements ConntrackTable {
  entries: ConntrackEntry[];
  constructor(entries: ConntrackEntry[] = []) {
    this.entries = entries.map((e) => structuredClone(e));
  }
  list(filter: ConntrackFilter = {}): Promise<ConntrackEntry[]> {
    return Promise.resolve(this.entries.filter((e) => matches(e, filter)).map((e) => structuredClone(e)));
  }
  deleteMatching(filter: ConntrackFilter): Promise<number> {
    const before = this.entries.length;
    this.entries = this.entries.filter((e) => !matches(e, filter));
    return Promise.resolve(before - this.entries.length);
  }
  close(): void {}
}

/** Conntrack table of the current network namespace. */
export class Conntrack implements ConntrackTable {
  #sock: NetlinkSocket | undefined;

  constructor() {
    this.#sock = NetlinkSocket.open(NETLINK_NETFILTER);
  }

  get #s(): NetlinkSocket {
    if (!this.#sock) throw new Error("Conntrack is closed");
    return this.#sock;
  }

  /** Equivalent to: `conntrack -L [-f ipv6] [-p udp] [--orig-dst IP] [--orig-port-dst PORT]` */
  list(filter: ConntrackFilter = {}): Promise<ConntrackEntry[]> {
    try {
      const family = filter.family ? afOf(filter.family) : 0;
      const out: ConntrackEntry[] = [];
      for (const m of this.#s.dump(CT_MSG_GET, (w) => nfgenmsg(w, family), "conntrack -L")) {
        const e = decodeEntry(m);
        if (e && matches(e, filter)) out.push(e);
      }
      return Promise.resolve(out);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /**
   * Equivalent to: `conntrack -D -p PROTO --orig-dst IP --orig-port-dst PORT`. Returns how many entries
   * were deleted; entries that vanished meanwhile are not errors.
   */
  async deleteMatching(filter: ConntrackFilter): Promise<number> {
    const entries = await this.list(filter);
    if (entries.length === 0) return 0;
    const failures = this.#s.batch(entries.length, (w, i, seq) => {
      const off = w.beginMsg(CT_MSG_DELETE, NLM_F_REQUEST, seq);
      encodeDelete(w, entries[i]!);
      w.endMsg(off);
    }, { op: "conntrack -D" });
    const real = failures.filter((f) => !(f.error instanceof NetlinkError && f.error.errno === 2));
    if (real.length) throw real[0]!.error;
    return entries.length - failures.length;
  }

  /** Inserts an entry. Equivalent to: `conntrack -I …` (used by tests). */
  create(e: ConntrackEntry & { reply: ConntrackTuple; timeout: number }): Promise<void> {
    try {
      this.#s.request(CT_MSG_NEW, 0x400 | 0x200, (w) => encodeCreate(w, e), "conntrack -I");
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Closes the socket. Idempotent. */
  close(): void {
    this.#sock?.close();
    this.#sock = undefined;
  }
}
