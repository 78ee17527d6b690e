/**
 * BGP-4 message codecs (RFC 4271) with capabilities (RFC 5492), multiprotocol NLRI (RFC 4760),
 * four-octet AS numbers (RFC 6793), route refresh (RFC 2918), graceful restart (RFC 4724),
 * communities (RFC 1997), route reflection attributes (RFC 4456) and revised error handling (RFC 7606).
 *
 * Pure functions over bytes. Decoders throw only `BgpError` (the NOTIFICATION the session must send);
 * attribute errors that RFC 7606 downgrades come back as `treatAsWithdraw` or `discarded` instead, so one
 * bad route never tears down a session carrying thousands of good ones.
 */
import { formatIP, parseCidr, parseIP } from "../../../ffi/mod.ts";
import {
  BgpError,
  ERR_HEADER,
  ERR_OPEN,
  ERR_ROUTE_REFRESH,
  ERR_UPDATE,
  HDR_BAD_LENGTH,
  HDR_BAD_TYPE,
  HDR_NOT_SYNCHRONIZED,
  OPEN_BAD_BGP_ID,
  OPEN_UNACCEPTABLE_HOLD_TIME,
  OPEN_UNSUPPORTED_OPT_PARAM,
  OPEN_UNSUPPORTED_VERSION,
  UPD_ATTR_FLAGS,
  UPD_ATTR_LENGTH,
  UPD_INVALID_NETWORK,
  UPD_MALFORMED_ATTR_LIST,
  UPD_OPTIONAL_ATTR,
  UPD_UNRECOGNIZED_WELLKNOWN,
} from "./errors.ts";
import {
  AFI_IPV6,
  afiOf,
  AS_CONFED_SET,
  AS_SEQUENCE,
  AS_SET,
  asPathLength,
  type AsPathSegment,
  type Family,
  familyOf,
  type PathAttributes,
  type RawAttribute,
  SAFI_UNICAST,
} from "./types.ts";

export const MSG_OPEN = 1;
export const MSG_UPDATE = 2;
export const MSG_NOTIFICATION = 3;
export const MSG_KEEPALIVE = 4;
export const MSG_ROUTE_REFRESH = 5;

export const HEADER_LEN = 19;
export const MAX_MESSAGE_LEN = 4096;
export const AS_TRANS = 23456;

// Path attribute type codes
export const ATTR_ORIGIN = 1;
export const ATTR_AS_PATH = 2;
export const ATTR_NEXT_HOP = 3;
export const ATTR_MED = 4;
export const ATTR_LOCAL_PREF = 5;
export const ATTR_ATOMIC_AGGREGATE = 6;
export const ATTR_AGGREGATOR = 7;
export const ATTR_COMMUNITIES = 8;
export const ATTR_ORIGINATOR_ID = 9;
export const ATTR_CLUSTER_LIST = 10;
export const ATTR_MP_REACH = 14;
export const ATTR_MP_UNREACH = 15;
export const ATTR_AS4_PATH = 17;
export const ATTR_AS4_AGGREGATOR = 18;

export const FLAG_OPTIONAL = 0x80;
export const FLAG_TRANSITIVE = 0x40;
export const FLAG_PARTIAL = 0x20;
export const FLAG_EXTENDED = 0x10;

// Capability codes
export const CAP_MP = 1;
export const CAP_ROUTE_REFRESH = 2;
export const CAP_GRACEFUL_RESTART = 64;
export const CAP_AS4 = 65;
export const CAP_ENHANCED_ROUTE_REFRESH = 70;

// ---------------------------------------------------------------------------------------------------
// Capabilities

export type Capability =
  | { code: typeof CAP_MP; afi: number; safi: number }
  | { code: typeof CAP_ROUTE_REFRESH }
  | { code: typeof CAP_AS4; asn: number }
  | {
    code: typeof CAP_GRACEFUL_RESTART;
    /** R bit: the sender has restarted and its peers should not wait for its End-of-RIB to route. */
    restarting: boolean;
    /** N bit (RFC 8538): graceful restart also applies to NOTIFICATION-triggered resets. */
    notification: boolean;
    /** Seconds the peer should keep our routes after the session drops (max 4095). */
    time: number;
    families: { afi: number; safi: number; forwarding: boolean }[];
  }
  | { code: number; value: Uint8Array; raw: true };

export interface OpenMessage {
  version: number;
  /** The 2-octet My Autonomous System field (AS_TRANS for large ASNs); see `peerAsn()`. */
  myAs: number;
  holdTime: number;
  routerId: string;
  capabilities: Capability[];
}

/** What a capability list amounts to. */
export interface CapabilitySummary {
  families: Family[];
  routeRefresh: boolean;
  as4: number | undefined;
  gracefulRestart:
    | { restarting: boolean; notification: boolean; time: number; families: Map<Family, boolean> }
    | undefined;
}

export function summarizeCapabilities(caps: Capability[]): CapabilitySummary {
  const families: Family[] = [];
  let routeRefresh = false;
  let as4: number | undefined;
  let gr: CapabilitySummary["gracefulRestart"];
  let sawMp = false;
  for (const c of caps) {
    if ("raw" in c) {
      if (c.code === 128) routeRefresh = true; // pre-standard Cisco route refresh
      continue;
    }
    if (c.code === CAP_MP) {
      sawMp = true;
      const f = familyOf(c.afi, c.safi);
      if (f && !families.includes(f)) families.push(f);
    } else if (c.code === CAP_ROUTE_REFRESH) routeRefresh = true;
    else if (c.code === CAP_AS4) as4 = c.asn;
    else if (c.code === CAP_GRACEFUL_RESTART) {
      const fam = new Map<Family, boolean>();
      for (const f of c.families) {
        const name = familyOf(f.afi, f.safi);
        if (name) fam.set(name, f.forwarding);
      }
      gr = { restarting: c.restarting, notification: c.notification, time: c.time, families: fam };
    }
  }
  // A speaker without the multiprotocol capability speaks IPv4 unicast only (RFC 4760 section 8).
  if (!sawMp) families.push("ipv4-unicast");
  return { families, routeRefresh, as4, gracefulRestart: gr };
}

/** The peer's real ASN: the AS4 capability if present, else the 2-octet field. */
export function peerAsn(open: OpenMessage): number {
  for (const c of open.capabilities) if (c.code === CAP_AS4 && !("raw" in c)) return c.asn;
  return open.myAs;
}

function encodeCapability(c: Capability): Uint8Array {
  if ("raw" in c) return concat([Uint8Array.of(c.code, c.value.length), c.value]);
  switch (c.code) {
    case CAP_MP:
      return Uint8Array.of(CAP_MP, 4, c.afi >> 8, c.afi & 0xff, 0, c.safi);
    case CAP_ROUTE_REFRESH:
      return Uint8Array.of(CAP_ROUTE_REFRESH, 0);
    case CAP_AS4: {
      const b = new Uint8Array(6);
      b[0] = CAP_AS4;
      b[1] = 4;
      new DataView(b.buffer).setUint32(2, c.asn >>> 0);
      return b;
    }
    case CAP_GRACEFUL_RESTART: {
      const b = new Uint8Array(4 + 4 * c.families.length);
      b[0] = CAP_GRACEFUL_RESTART;
      b[1] = 2 + 4 * c.families.length;
      const word = (c.restarting ? 0x8000 : 0) | (c.notification ? 0x4000 : 0) | (c.time & 0x0fff);
      b[2] = word >> 8;
      b[3] = word & 0xff;
      c.families.forEach((f, k) => {
        const o = 4 + 4 * k;
        b[o] = f.afi >> 8;
        b[o + 1] = f.afi & 0xff;
        b[o + 2] = f.safi;
        b[o + 3] = f.forwarding ? 0x80 : 0;
      });
      return b;
    }
  }
  throw new Error("unreachable capability");
}

function decodeCapability(code: number, v: Uint8Array): Capability {
  const dv = view(v);
  if (code === CAP_MP && v.length === 4) return { code, afi: dv.getUint16(0), safi: v[3]! };
  if (code === CAP_ROUTE_REFRESH && v.length === 0) return { code };
  if (code === CAP_AS4 && v.length === 4) return { code, asn: dv.getUint32(0) };
  if (code === CAP_GRACEFUL_RESTART && v.length >= 2 && (v.length - 2) % 4 === 0) {
    const word = dv.getUint16(0);
    const families = [];
    for (let o = 2; o < v.length; o += 4) {
      families.push({ afi: dv.getUint16(o), safi: v[o + 2]!, forwarding: (v[o + 3]! & 0x80) !== 0 });
    }
    return {
      code,
      restarting: (word & 0x8000) !== 0,
      notification: (word & 0x4000) !== 0,
      time: word & 0x0fff,
      families,
    };
  }
  return { code, value: v.slice(), raw: true };
}

// ---------------------------------------------------------------------------------------------------
// Framing

/** Header of one message; throws the Message Header Error the session must report. */
export function decodeHeader(buf: Uint8Array, off = 0): { length: number; type: number } {
  for (let i = 0; i < 16; i++) {
    if (buf[off + i] !== 0xff) throw new BgpError(ERR_HEADER, HDR_NOT_SYNCHRONIZED, "marker is not all ones");
  }
  const length = (buf[off + 16]! << 8) | buf[off + 17]!;
  const type = buf[off + 18]!;
  const lenBytes = Uint8Array.of(buf[off + 16]!, buf[off + 17]!);
  if (length < HEADER_LEN || length > MAX_MESSAGE_LEN) {
    throw new BgpError(ERR_HEADER, HDR_BAD_LENGTH, `bad message length ${length}`, lenBytes);
  }
  const min: Record<number, number> = { 1: 29, 2: 23, 3: 21, 4: 19, 5: 23 };
  const need = min[type];
  if (need === undefined) {
    throw new BgpError(ERR_HEADER, HDR_BAD_TYPE, `bad message type ${type}`, Uint8Array.of(type));
  }
  if (length < need || (type === MSG_KEEPALIVE && length !== 19)) {
    throw new BgpError(ERR_HEADER, HDR_BAD_LENGTH, `bad length ${length} for message type ${type}`, lenBytes);
  }
  return { length, type };
}

function frame(type: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_LEN + body.length);
  out.fill(0xff, 0, 16);
  out[16] = out.length >> 8;
  out[17] = out.length & 0xff;
  out[18] = type;
  out.set(body, HEADER_LEN);
  return out;
}

/**
 * Splits a byte stream into whole messages. Returns the messages and how many bytes were used; an
 * incomplete tail stays for the next read. Throws `BgpError` on a bad header.
 */
export function splitMessages(
  buf: Uint8Array,
): { messages: { type: number; bytes: Uint8Array }[]; used: number } {
  const messages: { type: number; bytes: Uint8Array }[] = [];
  let off = 0;
  while (buf.length - off >= HEADER_LEN) {
    const { length, type } = decodeHeader(buf, off);
    if (buf.length - off < length) break;
    messages.push({ type, bytes: buf.subarray(off, off + length) });
    off += length;
  }
  return { messages, used: off };
}

// ---------------------------------------------------------------------------------------------------
// OPEN

export function encodeOpen(m: OpenMessage): Uint8Array {
  // All capabilities in one Capabilities optional parameter, as gobgpd and BIRD send them.
  const caps = concat(m.capabilities.map(encodeCapability));
  const opt = caps.length ? concat([Uint8Array.of(2, caps.length), caps]) : caps;
  if (opt.length > 255) throw new RangeError("OPEN optional parameters exceed 255 bytes");
  const body = new Uint8Array(10 + opt.length);
  const dv = view(body);
  body[0] = m.version;
  dv.setUint16(1, m.myAs);
  dv.setUint16(3, m.holdTime);
  body.set(ipv4Bytes(m.routerId), 5);
  body[9] = opt.length;
  body.set(opt, 10);
  return frame(MSG_OPEN, body);
}

/** Decodes a whole OPEN message (header included). */
export function decodeOpen(msg: Uint8Array): OpenMessage {
  const b = msg.subarray(HEADER_LEN);
  if (b.length < 10) throw new BgpError(ERR_HEADER, HDR_BAD_LENGTH, "OPEN too short");
  const dv = view(b);
  const version = b[0]!;
  if (version !== 4) {
    throw new BgpError(
      ERR_OPEN,
      OPEN_UNSUPPORTED_VERSION,
      `unsupported version ${version}`,
      Uint8Array.of(0, 4),
    );
  }
  const myAs = dv.getUint16(1);
  const holdTime = dv.getUint16(3);
  if (holdTime === 1 || holdTime === 2) {
    throw new BgpError(ERR_OPEN, OPEN_UNACCEPTABLE_HOLD_TIME, `unacceptable hold time ${holdTime}`);
  }
  const routerId = formatIP(b.subarray(5, 9));
  if (dv.getUint32(5) === 0) throw new BgpError(ERR_OPEN, OPEN_BAD_BGP_ID, "BGP identifier 0.0.0.0");
  let optLen = b[9]!;
  let off = 10;
  let extended = false;
  // RFC 9072 extended optional parameters length.
  if (optLen === 255 && b[10] === 255) {
    if (b.length < 13) throw new BgpError(ERR_OPEN, 0, "truncated extended optional parameters");
    optLen = dv.getUint16(11);
    off = 13;
    extended = true;
  }
  if (off + optLen !== b.length) throw new BgpError(ERR_OPEN, 0, "optional parameters length mismatch");
  const capabilities: Capability[] = [];
  const end = off + optLen;
  while (off < end) {
    const hdr = extended ? 3 : 2;
    if (off + hdr > end) throw new BgpError(ERR_OPEN, 0, "truncated optional parameter");
    const type = b[off]!;
    const len = extended ? dv.getUint16(off + 1) : b[off + 1]!;
    off += hdr;
    if (off + len > end) throw new BgpError(ERR_OPEN, 0, "optional parameter overruns OPEN");
    if (type !== 2) {
      throw new BgpError(ERR_OPEN, OPEN_UNSUPPORTED_OPT_PARAM, `unsupported optional parameter ${type}`);
    }
    let p = off;
    while (p < off + len) {
      if (p + 2 > off + len) throw new BgpError(ERR_OPEN, 0, "truncated capability");
      const code = b[p]!;
      const clen = b[p + 1]!;
      if (p + 2 + clen > off + len) throw new BgpError(ERR_OPEN, 0, "capability overruns parameter");
      capabilities.push(decodeCapability(code, b.subarray(p + 2, p + 2 + clen)));
      p += 2 + clen;
    }
    off += len;
  }
  return { version, myAs, holdTime, routerId, capabilities };
}

// ---------------------------------------------------------------------------------------------------
// KEEPALIVE, NOTIFICATION, ROUTE-REFRESH

export function encodeKeepalive(): Uint8Array {
  return frame(MSG_KEEPALIVE, new Uint8Array(0));
}

export interface NotificationMessage {
  code: number;
  subcode: number;
  data: Uint8Array;
}

export function encodeNotification(n: NotificationMessage): Uint8Array {
  return frame(MSG_NOTIFICATION, concat([Uint8Array.of(n.code, n.subcode), n.data]));
}

export function decodeNotification(msg: Uint8Array): NotificationMessage {
  const b = msg.subarray(HEADER_LEN);
  if (b.length < 2) throw new BgpError(ERR_HEADER, HDR_BAD_LENGTH, "NOTIFICATION too short");
  return { code: b[0]!, subcode: b[1]!, data: b.slice(2) };
}

export interface RouteRefreshMessage {
  afi: number;
  safi: number;
  /** RFC 7313 subtype: 0 normal request, 1 BoRR, 2 EoRR. */
  subtype: number;
}

export function encodeRouteRefresh(r: RouteRefreshMessage): Uint8Array {
  return frame(MSG_ROUTE_REFRESH, Uint8Array.of(r.afi >> 8, r.afi & 0xff, r.subtype, r.safi));
}

export function decodeRouteRefresh(msg: Uint8Array): RouteRefreshMessage {
  const b = msg.subarray(HEADER_LEN);
  if (b.length !== 4) {
    throw new BgpError(ERR_ROUTE_REFRESH, 1, "ROUTE-REFRESH with invalid length", msg.slice());
  }
  return { afi: (b[0]! << 8) | b[1]!, subtype: b[2]!, safi: b[3]! };
}

// ---------------------------------------------------------------------------------------------------
// Prefixes

/** Parses `addr/len` into NLRI parts; undefined if malformed. */
export function parsePrefix(s: string): { family: Family; addr: Uint8Array; len: number } | undefined {
  const c = parseCidr(s);
  return c && { family: c.family === 4 ? "ipv4-unicast" : "ipv6-unicast", addr: c.addr, len: c.prefix };
}

/** Canonical `addr/len` text of a prefix (host bits cleared), or undefined if malformed. */
export function normalizePrefix(s: string): string | undefined {
  const p = parsePrefix(s);
  return p ? `${formatIP(p.addr)}/${p.len}` : undefined;
}

function encodePrefixes(prefixes: string[]): Uint8Array {
  const parts: number[] = [];
  for (const s of prefixes) {
    const p = parsePrefix(s);
    if (!p) throw new RangeError(`bad prefix ${s}`);
    parts.push(p.len);
    const n = (p.len + 7) >> 3;
    for (let i = 0; i < n; i++) parts.push(p.addr[i]!);
  }
  return Uint8Array.from(parts);
}

/** Bytes one prefix takes in NLRI encoding. */
export function prefixWireSize(s: string): number {
  const slash = s.lastIndexOf("/");
  return 1 + ((Number(s.slice(slash + 1)) + 7) >> 3);
}

function decodePrefixes(b: Uint8Array, family: Family, what: string): string[] {
  const out: string[] = [];
  const max = family === "ipv4-unicast" ? 32 : 128;
  let off = 0;
  while (off < b.length) {
    const len = b[off]!;
    if (len > max) throw new BgpError(ERR_UPDATE, UPD_INVALID_NETWORK, `${what}: prefix length ${len}`);
    const n = (len + 7) >> 3;
    if (off + 1 + n > b.length) {
      throw new BgpError(ERR_UPDATE, UPD_INVALID_NETWORK, `${what}: truncated prefix`);
    }
    if (family === "ipv4-unicast") {
      const a = [0, 0, 0, 0];
      for (let i = 0; i < n; i++) a[i] = b[off + 1 + i]!;
      // Clear host bits: a peer sending them set means the same network.
      if (len < 32) {
        const full = len >> 3, rem = len & 7;
        if (full < 4) {
          a[full] = a[full]! & (0xff << (8 - rem)) & 0xff;
          for (let i = full + 1; i < 4; i++) a[i] = 0;
        }
      }
      out.push(`${a[0]}.${a[1]}.${a[2]}.${a[3]}/${len}`);
    } else {
      const a = new Uint8Array(16);
      a.set(b.subarray(off + 1, off + 1 + n));
      for (let bit = len; bit < 128; bit++) a[bit >> 3]! &= ~(0x80 >> (bit & 7));
      out.push(`${formatIP(a)}/${len}`);
    }
    off += 1 + n;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// UPDATE

export interface MpReach {
  family: Family;
  nextHop: string;
  linkLocalNextHop?: string;
  nlri: string[];
}

export interface MpUnreach {
  family: Family;
  withdrawn: string[];
}

export interface UpdateMessage {
  /** IPv4 prefixes withdrawn in the classic field. */
  withdrawn: string[];
  /** Path attributes, undefined when the message carries none (withdraw-only or IPv4 End-of-RIB). */
  attrs: PathAttributes | undefined;
  /** IPv4 prefixes announced in the classic field. */
  nlri: string[];
  mpReach?: MpReach;
  mpUnreach?: MpUnreach;
  /** RFC 7606: the attributes were malformed; every announced prefix must be handled as withdrawn. */
  treatAsWithdraw?: string;
  /** RFC 7606 attribute-discard: attributes dropped with the reason, the rest of the route is used. */
  discarded?: string[];
  /** MP attributes for families we do not carry (ignored). */
  unsupportedFamilies?: string[];
}

/** What decoding and encoding need to know about the session. */
export interface CodecContext {
  /** Both sides announced the four-octet AS capability: AS_PATH carries 4-byte ASNs. */
  as4: boolean;
}

function decodeAsPath(v: Uint8Array, asSize: 2 | 4): AsPathSegment[] | undefined {
  const segs: AsPathSegment[] = [];
  const dv = view(v);
  let off = 0;
  while (off < v.length) {
    if (off + 2 > v.length) return undefined;
    const type = v[off]!;
    const count = v[off + 1]!;
    if (type < AS_SET || type > AS_CONFED_SET || count === 0) return undefined;
    off += 2;
    if (off + count * asSize > v.length) return undefined;
    const asns = new Array<number>(count);
    for (let i = 0; i < count; i++) {
      asns[i] = asSize === 4 ? dv.getUint32(off + 4 * i) : dv.getUint16(off + 2 * i);
    }
    off += count * asSize;
    segs.push({ type, asns });
  }
  return segs;
}

function encodeAsPath(segs: AsPathSegment[], asSize: 2 | 4): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const s of segs) {
    // A segment holds at most 255 ASNs; longer sequences are split.
    for (let i = 0; i < s.asns.length || (i === 0 && s.asns.length === 0); i += 255) {
      const chunk = s.asns.slice(i, i + 255);
      if (chunk.length === 0) break;
      const b = new Uint8Array(2 + chunk.length * asSize);
      const dv = view(b);
      b[0] = s.type;
      b[1] = chunk.length;
      chunk.forEach((a, k) => {
        if (asSize === 4) dv.setUint32(2 + 4 * k, a >>> 0);
        else dv.setUint16(2 + 2 * k, a > 0xffff ? AS_TRANS : a);
      });
      parts.push(b);
    }
  }
  return concat(parts);
}

/** RFC 6793 4.2.3: rebuilds the real path from AS_PATH (2-byte, with AS_TRANS) and AS4_PATH. */
function mergeAs4Path(asPath: AsPathSegment[], as4Path: AsPathSegment[]): AsPathSegment[] {
  const n2 = asPathLength(asPath), n4 = asPathLength(as4Path);
  if (n2 < n4) return asPath;
  let keep = n2 - n4;
  const out: AsPathSegment[] = [];
  for (const s of asPath) {
    if (keep <= 0) break;
    if (s.type === AS_SEQUENCE) {
      const take = s.asns.slice(0, keep);
      out.push({ type: s.type, asns: take });
      keep -= take.length;
    } else if (s.type === AS_SET) {
      out.push(s);
      keep -= 1;
    } else out.push(s);
  }
  for (const s of as4Path) {
    const last = out[out.length - 1];
    if (last && last.type === AS_SEQUENCE && s.type === AS_SEQUENCE) last.asns = [...last.asns, ...s.asns];
    else out.push({ type: s.type, asns: [...s.asns] });
  }
  return out;
}

function ipv4Bytes(s: string): Uint8Array {
  const p = parseIP(s);
  if (!p || p.family !== 4) throw new RangeError(`not an IPv4 address: ${s}`);
  return p.addr;
}

function ipBytes(s: string): Uint8Array {
  const p = parseIP(s);
  if (!p) throw new RangeError(`not an IP address: ${s}`);
  return p.addr;
}

/** What the attribute decoders fill in while one UPDATE's attribute list is read. */
interface AttrState {
  out: UpdateMessage;
  attrs: PathAttributes;
  /** Four-octet AS numbers in AS_PATH and AGGREGATOR (both sides announced the capability). */
  as4: boolean;
  as4Path: AsPathSegment[] | undefined;
  as4Aggregator: { asn: number; address: string } | undefined;
  sawAsPath: boolean;
  sawNextHop: boolean;
}

/**
 * Decodes one attribute's value into the state; returns what was malformed (RFC 7606: the UPDATE is
 * then treated as a withdrawal, or for the attributes marked `discard` in KNOWN only the attribute is
 * dropped), or throws `BgpError` where the session must be reset. `flagsOk`: the optional and transitive
 * bits are the attribute's; `lenOk`: its fixed length, if it has one, is right; `whole`: the attribute
 * with its header, for a NOTIFICATION's data. Positional, not an object: this runs per attribute of
 * every UPDATE.
 */
type AttrDecoder = (
  v: Uint8Array,
  dv: DataView,
  flagsOk: boolean,
  lenOk: boolean,
  whole: Uint8Array,
  st: AttrState,
) => string | undefined;

const decodeOrigin: AttrDecoder = (v, _dv, flagsOk, lenOk, _whole, st) => {
  if (!flagsOk || !lenOk || v[0]! > 2) return "malformed ORIGIN";
  st.attrs.origin = v[0]!;
};

const decodeAsPathAttr: AttrDecoder = (v, _dv, flagsOk, _lenOk, _whole, st) => {
  st.sawAsPath = true;
  const p = flagsOk ? decodeAsPath(v, st.as4 ? 4 : 2) : undefined;
  if (!p) return "malformed AS_PATH";
  st.attrs.asPath = p;
};

const decodeNextHop: AttrDecoder = (v, _dv, flagsOk, lenOk, _whole, st) => {
  st.sawNextHop = true;
  if (!flagsOk || !lenOk) return "malformed NEXT_HOP";
  st.attrs.nextHop = formatIP(v);
};

const decodeMed: AttrDecoder = (_v, dv, flagsOk, lenOk, _whole, st) => {
  if (!flagsOk || !lenOk) return "malformed MULTI_EXIT_DISC";
  st.attrs.med = dv.getUint32(0);
};

const decodeLocalPref: AttrDecoder = (_v, dv, flagsOk, lenOk, _whole, st) => {
  if (!flagsOk || !lenOk) return "malformed LOCAL_PREF";
  st.attrs.localPref = dv.getUint32(0);
};

const decodeAtomicAggregate: AttrDecoder = (_v, _dv, flagsOk, lenOk, _whole, st) => {
  if (!flagsOk || !lenOk) return "malformed ATOMIC_AGGREGATE";
  st.attrs.atomicAggregate = true;
};

const decodeAggregator: AttrDecoder = (v, dv, flagsOk, _lenOk, _whole, st) => {
  if (!flagsOk || v.length !== (st.as4 ? 8 : 6)) return "malformed AGGREGATOR";
  st.attrs.aggregator = st.as4
    ? { asn: dv.getUint32(0), address: formatIP(v.subarray(4, 8)) }
    : { asn: dv.getUint16(0), address: formatIP(v.subarray(2, 6)) };
};

const decodeCommunities: AttrDecoder = (v, dv, flagsOk, _lenOk, _whole, st) => {
  if (!flagsOk || v.length % 4 !== 0 || v.length === 0) return "malformed COMMUNITIES";
  const cs: number[] = [];
  for (let i = 0; i < v.length; i += 4) cs.push(dv.getUint32(i));
  st.attrs.communities = cs;
};

const decodeOriginatorId: AttrDecoder = (v, _dv, flagsOk, lenOk, _whole, st) => {
  if (!flagsOk || !lenOk) return "malformed ORIGINATOR_ID";
  st.attrs.originatorId = formatIP(v);
};

const decodeClusterList: AttrDecoder = (v, _dv, flagsOk, _lenOk, _whole, st) => {
  if (!flagsOk || v.length % 4 !== 0 || v.length === 0) return "malformed CLUSTER_LIST";
  const cl: string[] = [];
  for (let i = 0; i < v.length; i += 4) cl.push(formatIP(v.subarray(i, i + 4)));
  st.attrs.clusterList = cl;
};

const decodeAs4Path: AttrDecoder = (v, _dv, flagsOk, _lenOk, _whole, st) => {
  // Between two AS4 speakers AS4_PATH must not appear; RFC 6793 says to discard it.
  const p = flagsOk ? decodeAsPath(v, 4) : undefined;
  if (!p || p.some((s) => s.type === AS_CONFED_SET || s.type === 3)) return "malformed AS4_PATH";
  if (!st.as4) st.as4Path = p;
};

const decodeAs4Aggregator: AttrDecoder = (v, dv, flagsOk, lenOk, _whole, st) => {
  if (!flagsOk || !lenOk) return "malformed AS4_AGGREGATOR";
  if (!st.as4) st.as4Aggregator = { asn: dv.getUint32(0), address: formatIP(v.subarray(4, 8)) };
};

/** MP_REACH_NLRI (RFC 4760): errors in it reset the session (its NLRI cannot be trusted to withdraw). */
const decodeMpReach: AttrDecoder = (v, dv, flagsOk, _lenOk, whole, st) => {
  if (!flagsOk) {
    throw new BgpError(ERR_UPDATE, UPD_ATTR_FLAGS, `attribute ${ATTR_MP_REACH} flags`, whole.slice());
  }
  if (v.length < 5) {
    throw new BgpError(ERR_UPDATE, UPD_OPTIONAL_ATTR, "MP_REACH_NLRI too short", whole.slice());
  }
  const afi = dv.getUint16(0), safi = v[2]!, nhLen = v[3]!;
  if (5 + nhLen > v.length) {
    throw new BgpError(ERR_UPDATE, UPD_OPTIONAL_ATTR, "MP_REACH_NLRI next hop overruns", whole.slice());
  }
  const fam = familyOf(afi, safi);
  if (!fam) {
    (st.out.unsupportedFamilies ??= []).push(`${afi}/${safi}`);
    return;
  }
  const nh = v.subarray(4, 4 + nhLen);
  let nextHop: string, ll: string | undefined;
  if (nhLen === 4) nextHop = formatIP(nh);
  else if (nhLen === 16) nextHop = formatIP(nh);
  else if (nhLen === 32) {
    nextHop = formatIP(nh.subarray(0, 16));
    ll = formatIP(nh.subarray(16, 32));
  } else {
    throw new BgpError(
      ERR_UPDATE,
      UPD_OPTIONAL_ATTR,
      `MP_REACH_NLRI next hop length ${nhLen}`,
      whole.slice(),
    );
  }
  // One reserved octet, then NLRI.
  const prefixes = decodePrefixes(v.subarray(5 + nhLen), fam, "MP_REACH_NLRI");
  st.out.mpReach = ll
    ? { family: fam, nextHop, linkLocalNextHop: ll, nlri: prefixes }
    : { family: fam, nextHop, nlri: prefixes };
};

/** MP_UNREACH_NLRI (RFC 4760): as MP_REACH_NLRI, errors reset the session. */
const decodeMpUnreach: AttrDecoder = (v, dv, flagsOk, _lenOk, whole, st) => {
  if (!flagsOk) {
    throw new BgpError(ERR_UPDATE, UPD_ATTR_FLAGS, `attribute ${ATTR_MP_UNREACH} flags`, whole.slice());
  }
  if (v.length < 3) {
    throw new BgpError(ERR_UPDATE, UPD_OPTIONAL_ATTR, "MP_UNREACH_NLRI too short", whole.slice());
  }
  const fam = familyOf(dv.getUint16(0), v[2]!);
  if (!fam) {
    (st.out.unsupportedFamilies ??= []).push(`${dv.getUint16(0)}/${v[2]}`);
    return;
  }
  st.out.mpUnreach = { family: fam, withdrawn: decodePrefixes(v.subarray(3), fam, "MP_UNREACH_NLRI") };
};

interface AttrSpec {
  /** The optional and transitive bits the attribute must carry. */
  flags: number;
  /** Fixed value length, if any. */
  len?: number;
  decode: AttrDecoder;
  /** A malformed value drops only the attribute (RFC 7606 attribute-discard), not the routes. */
  discard?: boolean;
}

/** The attributes this speaker understands; any other is kept (optional transitive) or refused. */
const KNOWN: Record<number, AttrSpec> = {
  [ATTR_ORIGIN]: { flags: FLAG_TRANSITIVE, len: 1, decode: decodeOrigin },
  [ATTR_AS_PATH]: { flags: FLAG_TRANSITIVE, decode: decodeAsPathAttr },
  [ATTR_NEXT_HOP]: { flags: FLAG_TRANSITIVE, len: 4, decode: decodeNextHop },
  [ATTR_MED]: { flags: FLAG_OPTIONAL, len: 4, decode: decodeMed },
  [ATTR_LOCAL_PREF]: { flags: FLAG_TRANSITIVE, len: 4, decode: decodeLocalPref },
  [ATTR_ATOMIC_AGGREGATE]: { flags: FLAG_TRANSITIVE, len: 0, decode: decodeAtomicAggregate, discard: true },
  [ATTR_AGGREGATOR]: { flags: FLAG_OPTIONAL | FLAG_TRANSITIVE, decode: decodeAggregator, discard: true },
  [ATTR_COMMUNITIES]: { flags: FLAG_OPTIONAL | FLAG_TRANSITIVE, decode: decodeCommunities },
  [ATTR_ORIGINATOR_ID]: { flags: FLAG_OPTIONAL, len: 4, decode: decodeOriginatorId },
  [ATTR_CLUSTER_LIST]: { flags: FLAG_OPTIONAL, decode: decodeClusterList },
  [ATTR_MP_REACH]: { flags: FLAG_OPTIONAL, decode: decodeMpReach },
  [ATTR_MP_UNREACH]: { flags: FLAG_OPTIONAL, decode: decodeMpUnreach },
  [ATTR_AS4_PATH]: { flags: FLAG_OPTIONAL | FLAG_TRANSITIVE, decode: decodeAs4Path, discard: true },
  [ATTR_AS4_AGGREGATOR]: {
    flags: FLAG_OPTIONAL | FLAG_TRANSITIVE,
    len: 8,
    decode: decodeAs4Aggregator,
    discard: true,
  },
};

/**
 * Decodes a whole UPDATE message (header included). Throws `BgpError` for errors RFC 7606 still
 * answers with a session reset (framing, NLRI, MP_REACH/MP_UNREACH, unrecognised well-known).
 */
export function decodeUpdate(msg: Uint8Array, ctx: CodecContext): UpdateMessage {
  const b = msg.subarray(HEADER_LEN);
  const dv = view(b);
  if (b.length < 4) throw new BgpError(ERR_UPDATE, UPD_MALFORMED_ATTR_LIST, "UPDATE too short");
  const wLen = dv.getUint16(0);
  if (2 + wLen + 2 > b.length) {
    throw new BgpError(ERR_UPDATE, UPD_MALFORMED_ATTR_LIST, "withdrawn length overruns");
  }
  const aLen = dv.getUint16(2 + wLen);
  const aStart = 4 + wLen;
  if (aStart + aLen > b.length) {
    throw new BgpError(ERR_UPDATE, UPD_MALFORMED_ATTR_LIST, "attribute length overruns");
  }
  const withdrawn = decodePrefixes(b.subarray(2, 2 + wLen), "ipv4-unicast", "withdrawn routes");
  const nlri = decodePrefixes(b.subarray(aStart + aLen), "ipv4-unicast", "NLRI");
  const out: UpdateMessage = { withdrawn, attrs: undefined, nlri };
  if (aLen === 0) {
    if (nlri.length > 0) out.treatAsWithdraw = "NLRI without path attributes";
    return out;
  }

  const st: AttrState = {
    out,
    attrs: { origin: -1, asPath: [], nextHop: "" },
    as4: ctx.as4,
    as4Path: undefined,
    as4Aggregator: undefined,
    sawAsPath: false,
    sawNextHop: false,
  };
  const seen = new Set<number>();
  const discarded: string[] = [];
  let withdrawReason: string | undefined;

  let off = aStart;
  const end = aStart + aLen;
  while (off < end) {
    if (off + 3 > end) throw new BgpError(ERR_UPDATE, UPD_MALFORMED_ATTR_LIST, "truncated attribute header");
    const flags = b[off]!;
    const type = b[off + 1]!;
    const ext = (flags & FLAG_EXTENDED) !== 0;
    if (ext && off + 4 > end) {
      throw new BgpError(ERR_UPDATE, UPD_MALFORMED_ATTR_LIST, "truncated attribute header");
    }
    const len = ext ? dv.getUint16(off + 2) : b[off + 2]!;
    const vStart = off + (ext ? 4 : 3);
    if (vStart + len > end) {
      throw new BgpError(ERR_UPDATE, UPD_ATTR_LENGTH, `attribute ${type} overruns the attribute list`);
    }
    const v = b.subarray(vStart, vStart + len);
    off = vStart + len;
    const whole = b.subarray(vStart - (ext ? 4 : 3), off);

    if (seen.has(type)) {
      if (type === ATTR_MP_REACH || type === ATTR_MP_UNREACH) {
        throw new BgpError(ERR_UPDATE, UPD_MALFORMED_ATTR_LIST, `attribute ${type} repeated`);
      }
      discarded.push(`duplicate attribute ${type}`);
      continue;
    }
    seen.add(type);
    const spec = KNOWN[type];
    if (!spec) {
      if ((flags & FLAG_OPTIONAL) === 0) {
        throw new BgpError(
          ERR_UPDATE,
          UPD_UNRECOGNIZED_WELLKNOWN,
          `unrecognized well-known attribute ${type}`,
          whole.slice(),
        );
      }
      if (flags & FLAG_TRANSITIVE) {
        (st.attrs.unknown ??= []).push({ flags: flags | FLAG_PARTIAL, type, value: v.slice() });
      }
      continue;
    }
    const problem = spec.decode(
      v,
      view(v),
      (flags & (FLAG_OPTIONAL | FLAG_TRANSITIVE)) === spec.flags,
      spec.len === undefined || spec.len === len,
      whole,
      st,
    );
    if (problem === undefined) continue;
    if (spec.discard) discarded.push(`${problem} (attribute ${type})`);
    else withdrawReason ??= `${problem} (attribute ${type})`;
  }

  const attrs = st.attrs;
  if (st.as4Path) {
    // RFC 6793 4.2.3: AS4_PATH is used only when the AGGREGATOR (if any) says AS_TRANS.
    if (!attrs.aggregator || attrs.aggregator.asn === AS_TRANS) {
      attrs.asPath = mergeAs4Path(attrs.asPath, st.as4Path);
    }
  }
  if (st.as4Aggregator && attrs.aggregator?.asn === AS_TRANS) attrs.aggregator = st.as4Aggregator;
  // The classic NEXT_HOP belongs to IPv4 NLRI; an MP-only UPDATE takes its next hop from MP_REACH_NLRI.
  if (out.mpReach && !st.sawNextHop) {
    attrs.nextHop = out.mpReach.nextHop;
    if (out.mpReach.linkLocalNextHop) attrs.linkLocalNextHop = out.mpReach.linkLocalNextHop;
  }

  const announces = nlri.length > 0 || (out.mpReach?.nlri.length ?? 0) > 0;
  if (announces) {
    if (attrs.origin < 0 && withdrawReason === undefined) withdrawReason = "missing ORIGIN";
    if (!st.sawAsPath && withdrawReason === undefined) withdrawReason = "missing AS_PATH";
    if (nlri.length > 0 && !st.sawNextHop && withdrawReason === undefined) {
      withdrawReason = "missing NEXT_HOP";
    }
  }
  if (attrs.origin < 0) attrs.origin = 2;
  out.attrs = attrs;
  if (withdrawReason !== undefined) out.treatAsWithdraw = withdrawReason;
  if (discarded.length) out.discarded = discarded;
  return out;
}

function attr(flags: number, type: number, value: Uint8Array): Uint8Array {
  if (value.length > 255) {
    const b = new Uint8Array(4 + value.length);
    b[0] = flags | FLAG_EXTENDED;
    b[1] = type;
    b[2] = value.length >> 8;
    b[3] = value.length & 0xff;
    b.set(value, 4);
    return b;
  }
  const b = new Uint8Array(3 + value.length);
  b[0] = flags & ~FLAG_EXTENDED;
  b[1] = type;
  b[2] = value.length;
  b.set(value, 3);
  return b;
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  view(b).setUint32(0, n >>> 0);
  return b;
}

/**
 * Encodes the path attributes (without MP_REACH/MP_UNREACH) for a session. With a 2-octet peer, large
 * ASNs become AS_TRANS in AS_PATH and the real path goes in AS4_PATH (RFC 6793 4.2.2).
 */
export function encodeAttributes(a: PathAttributes, ctx: CodecContext, withNextHop: boolean): Uint8Array {
  const parts: Uint8Array[] = [];
  parts.push(attr(FLAG_TRANSITIVE, ATTR_ORIGIN, Uint8Array.of(a.origin)));
  parts.push(attr(FLAG_TRANSITIVE, ATTR_AS_PATH, encodeAsPath(a.asPath, ctx.as4 ? 4 : 2)));
  if (withNextHop) parts.push(attr(FLAG_TRANSITIVE, ATTR_NEXT_HOP, ipv4Bytes(a.nextHop)));
  if (a.med !== undefined) parts.push(attr(FLAG_OPTIONAL, ATTR_MED, u32(a.med)));
  if (a.localPref !== undefined) parts.push(attr(FLAG_TRANSITIVE, ATTR_LOCAL_PREF, u32(a.localPref)));
  if (a.atomicAggregate) parts.push(attr(FLAG_TRANSITIVE, ATTR_ATOMIC_AGGREGATE, new Uint8Array(0)));
  if (a.aggregator) {
    const big = a.aggregator.asn > 0xffff;
    const v = ctx.as4 ? concat([u32(a.aggregator.asn), ipv4Bytes(a.aggregator.address)]) : concat([
      Uint8Array.of((big ? AS_TRANS : a.aggregator.asn) >> 8, (big ? AS_TRANS : a.aggregator.asn) & 0xff),
      ipv4Bytes(a.aggregator.address),
    ]);
    parts.push(attr(FLAG_OPTIONAL | FLAG_TRANSITIVE, ATTR_AGGREGATOR, v));
  }
  if (a.communities && a.communities.length) {
    parts.push(attr(FLAG_OPTIONAL | FLAG_TRANSITIVE, ATTR_COMMUNITIES, concat(a.communities.map(u32))));
  }
  if (a.originatorId) parts.push(attr(FLAG_OPTIONAL, ATTR_ORIGINATOR_ID, ipv4Bytes(a.originatorId)));
  if (a.clusterList && a.clusterList.length) {
    parts.push(attr(FLAG_OPTIONAL, ATTR_CLUSTER_LIST, concat(a.clusterList.map(ipv4Bytes))));
  }
  if (!ctx.as4) {
    const needs = a.asPath.some((s) => s.asns.some((n) => n > 0xffff));
    if (needs) parts.push(attr(FLAG_OPTIONAL | FLAG_TRANSITIVE, ATTR_AS4_PATH, encodeAsPath(a.asPath, 4)));
    if (a.aggregator && a.aggregator.asn > 0xffff) {
      parts.push(
        attr(
          FLAG_OPTIONAL | FLAG_TRANSITIVE,
          ATTR_AS4_AGGREGATOR,
          concat([u32(a.aggregator.asn), ipv4Bytes(a.aggregator.address)]),
        ),
      );
    }
  }
  for (const u of a.unknown ?? []) parts.push(attr(u.flags, u.type, u.value));
  return concat(parts);
}

function mpReachValue(family: Family, a: PathAttributes, nlri: Uint8Array): Uint8Array {
  const nh = ipBytes(a.nextHop);
  const ll = a.linkLocalNextHop ? ipBytes(a.linkLocalNextHop) : undefined;
  const nhAll = ll && nh.length === 16 ? concat([nh, ll]) : nh;
  const afi = afiOf(family);
  return concat([
    Uint8Array.of(afi >> 8, afi & 0xff, SAFI_UNICAST, nhAll.length),
    nhAll,
    Uint8Array.of(0),
    nlri,
  ]);
}

function updateBody(withdrawn: Uint8Array, attrs: Uint8Array, nlri: Uint8Array): Uint8Array {
  const body = new Uint8Array(4 + withdrawn.length + attrs.length + nlri.length);
  const dv = view(body);
  dv.setUint16(0, withdrawn.length);
  body.set(withdrawn, 2);
  dv.setUint16(2 + withdrawn.length, attrs.length);
  body.set(attrs, 4 + withdrawn.length);
  body.set(nlri, 4 + withdrawn.length + attrs.length);
  return frame(MSG_UPDATE, body);
}

/**
 * Encodes announcements of `prefixes` (one family, shared attributes) as as few UPDATE messages as fit
 * in 4096 bytes each. IPv4 goes in the classic NLRI field, IPv6 in MP_REACH_NLRI.
 */
export function encodeAnnouncements(
  family: Family,
  attrs: PathAttributes,
  prefixes: string[],
  ctx: CodecContext,
): Uint8Array[] {
  const out: Uint8Array[] = [];
  if (family === "ipv4-unicast") {
    const a = encodeAttributes(attrs, ctx, true);
    const room = MAX_MESSAGE_LEN - HEADER_LEN - 4 - a.length;
    for (const chunk of chunkPrefixes(prefixes, room)) {
      out.push(updateBody(new Uint8Array(0), a, encodePrefixes(chunk)));
    }
  } else {
    const a = encodeAttributes(attrs, ctx, false);
    const nhLen = attrs.linkLocalNextHop ? 32 : 16;
    const room = MAX_MESSAGE_LEN - HEADER_LEN - 4 - a.length - 4 - (5 + nhLen);
    for (const chunk of chunkPrefixes(prefixes, room)) {
      const mp = attr(FLAG_OPTIONAL, ATTR_MP_REACH, mpReachValue(family, attrs, encodePrefixes(chunk)));
      out.push(updateBody(new Uint8Array(0), concat([mp, a]), new Uint8Array(0)));
    }
  }
  return out;
}

/** Encodes withdrawals of `prefixes` (one family) as as few UPDATE messages as fit. */
export function encodeWithdrawals(family: Family, prefixes: string[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  if (family === "ipv4-unicast") {
    for (const chunk of chunkPrefixes(prefixes, MAX_MESSAGE_LEN - HEADER_LEN - 4)) {
      out.push(updateBody(encodePrefixes(chunk), new Uint8Array(0), new Uint8Array(0)));
    }
  } else {
    for (const chunk of chunkPrefixes(prefixes, MAX_MESSAGE_LEN - HEADER_LEN - 4 - 4 - 3)) {
      const v = concat([Uint8Array.of(0, AFI_IPV6, SAFI_UNICAST), encodePrefixes(chunk)]);
      out.push(updateBody(new Uint8Array(0), attr(FLAG_OPTIONAL, ATTR_MP_UNREACH, v), new Uint8Array(0)));
    }
  }
  return out;
}

/** End-of-RIB marker (RFC 4724 section 2): an empty UPDATE for IPv4, an empty MP_UNREACH otherwise. */
export function encodeEndOfRib(family: Family): Uint8Array {
  if (family === "ipv4-unicast") return updateBody(new Uint8Array(0), new Uint8Array(0), new Uint8Array(0));
  const afi = afiOf(family);
  return updateBody(
    new Uint8Array(0),
    attr(FLAG_OPTIONAL, ATTR_MP_UNREACH, Uint8Array.of(afi >> 8, afi & 0xff, SAFI_UNICAST)),
    new Uint8Array(0),
  );
}

/** The family an UPDATE is the End-of-RIB marker of, if it is one. */
export function endOfRibFamily(u: UpdateMessage): Family | undefined {
  if (u.withdrawn.length === 0 && u.nlri.length === 0 && !u.attrs) return "ipv4-unicast";
  if (
    u.mpUnreach && u.mpUnreach.withdrawn.length === 0 && !u.mpReach && u.withdrawn.length === 0 &&
    u.nlri.length === 0 &&
    u.attrs && u.attrs.asPath.length === 0 && u.attrs.origin === 2 && !u.attrs.communities
  ) return u.mpUnreach.family;
  return undefined;
}

function chunkPrefixes(prefixes: string[], room: number): string[][] {
  const out: string[][] = [];
  let cur: string[] = [];
  let used = 0;
  for (const p of prefixes) {
    const n = prefixWireSize(p);
    if (used + n > room && cur.length) {
      out.push(cur);
      cur = [];
      used = 0;
    }
    cur.push(p);
    used += n;
  }
  if (cur.length) out.push(cur);
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Helpers

function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

export function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

export function toHex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

export function fromHex(s: string): Uint8Array {
  const clean = s.replace(/[^0-9a-fA-F]/g, "");
  const out = new Uint8Array(clean.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

export type { RawAttribute };
