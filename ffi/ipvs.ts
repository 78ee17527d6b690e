/**
 * IPVS (the kernel's L4 load balancer) over generic netlink, family "IPVS": virtual services (TCP, UDP or
 * SCTP by address and port, or by firewall mark), their destinations (real servers), schedulers and
 * flags, the connection timeouts, and the per-service and per-destination counters. What `ipvsadm` does
 * through libnl, without the tool: kube-router's `--service-proxy-backend=ipvs` reprograms thousands of
 * services and a fork per change would dominate the sync.
 *
 * The message layout follows the kernel's uapi `linux/ip_vs.h`; requests are written exactly as
 * ipvsadm 1.31 writes them (full service attribute set, addresses padded to 16 bytes), which the golden
 * tests check byte for byte against captures of ipvsadm (tests/unit/ffi/golden/ipvsadm.json). Requests
 * flag their nests NLA_F_NESTED (as libnl does); the kernel's replies do not, so nests are decoded by
 * attribute type, not by flag.
 *
 * Errors are the kernel's: EEXIST (service or destination already there), ESRCH (no such service),
 * ENOENT (no such destination, or a scheduler module that does not exist), EINVAL (bad values).
 *
 * ```sh
 * ipvsadm -A -t 10.96.0.10:80 -s rr                      # addService({family: 4, protocol: "tcp", …})
 * ipvsadm -a -t 10.96.0.10:80 -r 10.1.1.5:8080 -m -w 3   # addDestination(key, {address, port, weight: 3})
 * ipvsadm --set 900 120 300                              # setTimeouts({tcp: 900, tcpFin: 120, udp: 300})
 * ```
 */
import { NetlinkDecodeError, NetlinkError } from "./errors.ts";
import { genlHeader, genlPayload, resolveFamily } from "./genetlink.ts";
import { type Family, formatIP, ipBytes } from "./ip.ts";
import { AF_INET, AF_INET6 } from "./libc.ts";
import { NETLINK_GENERIC, NLM_F_REQUEST, type NlMsg, type NlWriter, parseAttrs, read } from "./netlink.ts";
import { NetlinkSocket } from "./netlink_socket.ts";

/** IPVS_GENL_VERSION. */
export const IPVS_GENL_VERSION = 1;

/** IPVS_CMD_* (uapi ip_vs.h). */
export const IpvsCmd = {
  newService: 1,
  setService: 2,
  delService: 3,
  getService: 4,
  newDest: 5,
  setDest: 6,
  delDest: 7,
  getDest: 8,
  setConfig: 12,
  getConfig: 13,
  setInfo: 14,
  getInfo: 15,
  zero: 16,
  flush: 17,
} as const;

const CMD_ATTR_SERVICE = 1;
const CMD_ATTR_DEST = 2;
const CMD_ATTR_TIMEOUT_TCP = 4;
const CMD_ATTR_TIMEOUT_TCP_FIN = 5;
const CMD_ATTR_TIMEOUT_UDP = 6;

const SVC_ATTR_AF = 1;
const SVC_ATTR_PROTOCOL = 2;
const SVC_ATTR_ADDR = 3;
const SVC_ATTR_PORT = 4;
const SVC_ATTR_FWMARK = 5;
const SVC_ATTR_SCHED_NAME = 6;
const SVC_ATTR_FLAGS = 7;
const SVC_ATTR_TIMEOUT = 8;
const SVC_ATTR_NETMASK = 9;
const SVC_ATTR_STATS = 10;
const SVC_ATTR_PE_NAME = 11;
const SVC_ATTR_STATS64 = 12;

const DEST_ATTR_ADDR = 1;
const DEST_ATTR_PORT = 2;
const DEST_ATTR_FWD_METHOD = 3;
const DEST_ATTR_WEIGHT = 4;
const DEST_ATTR_U_THRESH = 5;
const DEST_ATTR_L_THRESH = 6;
const DEST_ATTR_ACTIVE_CONNS = 7;
const DEST_ATTR_INACT_CONNS = 8;
const DEST_ATTR_PERSIST_CONNS = 9;
const DEST_ATTR_STATS = 10;
const DEST_ATTR_ADDR_FAMILY = 11;
const DEST_ATTR_STATS64 = 12;
const DEST_ATTR_TUN_TYPE = 13;
const DEST_ATTR_TUN_PORT = 14;
const DEST_ATTR_TUN_FLAGS = 15;

const INFO_ATTR_VERSION = 1;
const INFO_ATTR_CONN_TAB_SIZE = 2;

/** IP_VS_SVC_F_* service flags. */
export const IpvsServiceFlag = {
  persistent: 0x1,
  hashed: 0x2,
  onePacket: 0x4,
  sched1: 0x8,
  sched2: 0x10,
  sched3: 0x20,
} as const;

/** Forwarding methods (IP_VS_CONN_F_FWD_MASK values). */
export type IpvsForward = "masq" | "local" | "tunnel" | "route" | "bypass";
const FORWARD: IpvsForward[] = ["masq", "local", "tunnel", "route", "bypass"];

export type IpvsProtocol = "tcp" | "udp" | "sctp";
const PROTO: Record<IpvsProtocol, number> = { tcp: 6, udp: 17, sctp: 132 };

/** Identifies a virtual service: protocol + address + port, or a firewall mark. */
export type IpvsServiceKey =
  | { family: Family; protocol: IpvsProtocol; address: string; port: number; fwmark?: undefined }
  | { family: Family; fwmark: number; protocol?: undefined; address?: undefined; port?: undefined };

/** Counters (IPVS_STATS_ATTR_*): totals since creation and the current rates the kernel estimates. */
export interface IpvsStats {
  conns: number;
  inPkts: number;
  outPkts: number;
  inBytes: number;
  outBytes: number;
  cps: number;
  inPps: number;
  outPps: number;
  inBps: number;
  outBps: number;
}

/** A virtual service (`ipvsadm -A`). */
export type IpvsService = IpvsServiceKey & {
  /** Scheduler module name without `ip_vs_`: rr, wrr, lc, wlc, sh, dh, mh, … */
  scheduler: string;
  /** IP_VS_SVC_F_* bits (`IpvsServiceFlag`); `hashed` is the kernel's own and ignored on input. */
  flags?: number;
  /** Persistence timeout in seconds (`-p`); only meaningful with the persistent flag. */
  timeout?: number;
  /** Persistence granularity as a prefix length (`-M`): default 32 for IPv4, 128 for IPv6. */
  netmask?: number;
  /** Persistence engine (`--pe sip`). */
  pe?: string;
  /** Filled in by listings. */
  stats?: IpvsStats;
};

/** A destination (real server) of a service (`ipvsadm -a`). */
export interface IpvsDestination {
  address: string;
  /** Port; 0 for fwmark services (the original port is kept). */
  port: number;
  /** Family of the address when it differs from the service's (tunnel forwarding). */
  family?: Family;
  forward?: IpvsForward;
  /** 0 stops new connections (graceful drain); up to 65535. Default 1. */
  weight?: number;
  /** Connection thresholds (`-x`, `-y`); 0 = none. */
  upperThreshold?: number;
  lowerThreshold?: number;
  /** Filled in by listings. */
  activeConns?: number;
  inactiveConns?: number;
  persistConns?: number;
  stats?: IpvsStats;
}

/** Connection timeouts in seconds (`ipvsadm --set tcp tcpfin udp`); 0 on input leaves one unchanged. */
export interface IpvsTimeouts {
  tcp: number;
  tcpFin: number;
  udp: number;
}

/**
 * One change of a batch (`Ipvs.apply`): the same changes as the single-call methods, named after them.
 */
export type IpvsOp =
  | { op: "addService" | "editService"; service: IpvsService }
  | { op: "delService"; service: IpvsServiceKey }
  | { op: "addDestination" | "editDestination"; service: IpvsServiceKey; destination: IpvsDestination }
  | {
    op: "delDestination";
    service: IpvsServiceKey;
    destination: { address: string; port: number; family?: Family };
  };

/** A change of a batch the kernel (or the encoder) refused; the others still happened. */
export interface IpvsOpFailure {
  /** Index of the change in the batch. */
  index: number;
  error: Error;
}

/** The text a change is named by in errors, as the single-call methods name it. */
export function ipvsOpName(o: IpvsOp): string {
  const k = serviceKeyString(o.service);
  switch (o.op) {
    case "addService":
      return `IPVS add service ${k}`;
    case "editService":
      return `IPVS edit service ${k}`;
    case "delService":
      return `IPVS delete service ${k}`;
    case "addDestination":
      return `IPVS add destination ${o.destination.address}:${o.destination.port} to ${k}`;
    case "editDestination":
      return `IPVS edit destination ${o.destination.address}:${o.destination.port} of ${k}`;
    case "delDestination":
      return `IPVS delete destination ${o.destination.address}:${o.destination.port} of ${k}`;
  }
}

/** Body (generic header + attributes) of one change of a batch. */
export function encodeIpvsOp(w: NlWriter, o: IpvsOp): void {
  switch (o.op) {
    case "addService":
      return encodeServiceCmd(w, IpvsCmd.newService, o.service);
    case "editService":
      return encodeServiceCmd(w, IpvsCmd.setService, o.service);
    case "delService":
      return encodeServiceCmd(w, IpvsCmd.delService, serviceKey(o.service));
    case "addDestination":
      return encodeDestCmd(w, IpvsCmd.newDest, o.service, o.destination);
    case "editDestination":
      return encodeDestCmd(w, IpvsCmd.setDest, o.service, o.destination);
    case "delDestination":
      return encodeDestCmd(w, IpvsCmd.delDest, o.service, o.destination);
  }
}

/** What a real or fake IPVS offers; one conformance suite runs against both. */
export interface Ipvs {
  /** IPVS version ("1.2.1") and connection hash table size. */
  info(): Promise<{ version: string; connTableSize: number }>;
  services(): Promise<IpvsService[]>;
  /** One service, or undefined. */
  getService(key: IpvsServiceKey): Promise<IpvsService | undefined>;
  addService(s: IpvsService): Promise<void>;
  /** Changes scheduler, flags, timeout or netmask (`ipvsadm -E`). */
  editService(s: IpvsService): Promise<void>;
  delService(key: IpvsServiceKey): Promise<void>;
  destinations(key: IpvsServiceKey): Promise<IpvsDestination[]>;
  addDestination(key: IpvsServiceKey, d: IpvsDestination): Promise<void>;
  editDestination(key: IpvsServiceKey, d: IpvsDestination): Promise<void>;
  delDestination(key: IpvsServiceKey, d: { address: string; port: number; family?: Family }): Promise<void>;
  /** Removes every service (`ipvsadm -C`). */
  flush(): Promise<void>;
  /** Zeroes the counters of every service (`ipvsadm -Z`). */
  zero(): Promise<void>;
  timeouts(): Promise<IpvsTimeouts>;
  setTimeouts(t: Partial<IpvsTimeouts>): Promise<void>;
  /**
   * Makes many changes in order, as if each single-call method were called in turn, and returns the ones
   * that failed (a failed change does not stop the ones after it; a destination of a service that failed
   * to be added fails with ESRCH). The real one sends many messages per system call and asks no ACK for
   * each: a full sync of thousands of services is a few hundred system calls, not one round trip each.
   */
  apply(ops: readonly IpvsOp[]): Promise<IpvsOpFailure[]>;
  close(): void;
}

function af(f: Family): number {
  return f === 4 ? AF_INET : AF_INET6;
}

function addr16(address: string, family: Family): Uint8Array {
  const out = new Uint8Array(16);
  out.set(ipBytes(address, family));
  return out;
}

/** The persistence netmask attribute: an IPv4 mask in network byte order, or an IPv6 prefix length. */
function netmaskValue(family: Family, prefix: number | undefined): Uint8Array {
  const b = new Uint8Array(4);
  const dv = new DataView(b.buffer);
  if (family === 6) dv.setUint32(0, prefix ?? 128, true);
  else {
    const p = prefix ?? 32;
    if (p < 0 || p > 32) throw new RangeError(`IPv4 persistence netmask /${p} is out of range`);
    dv.setUint32(0, p === 0 ? 0 : (0xffffffff << (32 - p)) >>> 0, false);
  }
  return b;
}

function serviceNest(w: NlWriter, s: IpvsServiceKey & Partial<IpvsService>): void {
  const n = w.beginNest(CMD_ATTR_SERVICE);
  w.attrU16(SVC_ATTR_AF, af(s.family));
  if (s.fwmark !== undefined) {
    w.attrU32(SVC_ATTR_FWMARK, s.fwmark);
  } else {
    if (!(s.protocol in PROTO)) {
      throw new TypeError(`IPVS protocol ${String(s.protocol)} is not tcp, udp or sctp`);
    }
    if (!Number.isInteger(s.port) || s.port < 0 || s.port > 65535) {
      throw new RangeError(`IPVS service port ${s.port} is out of range`);
    }
    w.attrU16(SVC_ATTR_PROTOCOL, PROTO[s.protocol]);
    w.attr(SVC_ATTR_ADDR, addr16(s.address, s.family));
    w.attrBe16(SVC_ATTR_PORT, s.port);
  }
  w.attrString(SVC_ATTR_SCHED_NAME, s.scheduler ?? "");
  if (s.pe) w.attrString(SVC_ATTR_PE_NAME, s.pe);
  const flags = new Uint8Array(8);
  const fv = new DataView(flags.buffer);
  fv.setUint32(0, (s.flags ?? 0) & ~IpvsServiceFlag.hashed, true);
  fv.setUint32(4, 0xffffffff, true);
  w.attr(SVC_ATTR_FLAGS, flags);
  w.attrU32(SVC_ATTR_TIMEOUT, s.timeout ?? 0);
  w.attr(SVC_ATTR_NETMASK, netmaskValue(s.family, s.netmask));
  w.endNest(n);
}

function u32Range(v: number | undefined, what: string, max = 0xffffffff, dflt = 0): number {
  const x = v ?? dflt;
  if (!Number.isInteger(x) || x < 0 || x > max) throw new RangeError(`IPVS ${what} ${x} is out of range`);
  return x;
}

function destNest(w: NlWriter, svcFamily: Family, d: IpvsDestination): void {
  const family = d.family ?? svcFamily;
  const n = w.beginNest(CMD_ATTR_DEST);
  w.attrU16(DEST_ATTR_ADDR_FAMILY, af(family));
  w.attr(DEST_ATTR_ADDR, addr16(d.address, family));
  w.attrBe16(DEST_ATTR_PORT, u32Range(d.port, "destination port", 65535));
  const fwd = FORWARD.indexOf(d.forward ?? "masq");
  if (fwd < 0) throw new TypeError(`IPVS forwarding method ${String(d.forward)} is unknown`);
  w.attrU32(DEST_ATTR_FWD_METHOD, fwd);
  w.attrU32(DEST_ATTR_WEIGHT, u32Range(d.weight, "weight", 65535, 1));
  w.attrU8(DEST_ATTR_TUN_TYPE, 0);
  w.attrBe16(DEST_ATTR_TUN_PORT, 0);
  w.attrU16(DEST_ATTR_TUN_FLAGS, 0);
  w.attrU32(DEST_ATTR_U_THRESH, u32Range(d.upperThreshold, "upper threshold"));
  w.attrU32(DEST_ATTR_L_THRESH, u32Range(d.lowerThreshold, "lower threshold"));
  w.endNest(n);
}

/** Body (generic header + attributes) of a service command: new, set or delete. */
export function encodeServiceCmd(
  w: NlWriter,
  cmd:
    | typeof IpvsCmd.newService
    | typeof IpvsCmd.setService
    | typeof IpvsCmd.delService
    | typeof IpvsCmd.getService,
  s: IpvsServiceKey & Partial<IpvsService>,
): void {
  genlHeader(w, cmd, IPVS_GENL_VERSION);
  serviceNest(w, s);
}

/**
 * Body of a destination command. The service is identified by its key (the other service attributes go
 * out empty, as ipvsadm sends them); a delete needs only address and port, the rest is filled with
 * ipvsadm's defaults (route, weight 1), which the kernel ignores.
 */
export function encodeDestCmd(
  w: NlWriter,
  cmd: typeof IpvsCmd.newDest | typeof IpvsCmd.setDest | typeof IpvsCmd.delDest,
  key: IpvsServiceKey,
  d: IpvsDestination,
): void {
  genlHeader(w, cmd, IPVS_GENL_VERSION);
  serviceNest(w, serviceKey(key));
  destNest(w, key.family, cmd === IpvsCmd.delDest ? { forward: "route", weight: 1, ...d } : d);
}

/** Body of a destination dump for one service (`ipvsadm -L` asks per service). */
export function encodeGetDests(w: NlWriter, key: IpvsServiceKey): void {
  genlHeader(w, IpvsCmd.getDest, IPVS_GENL_VERSION);
  const n = w.beginNest(CMD_ATTR_SERVICE);
  w.attrU16(SVC_ATTR_AF, af(key.family));
  if (key.fwmark !== undefined) w.attrU32(SVC_ATTR_FWMARK, key.fwmark);
  else {
    w.attrU16(SVC_ATTR_PROTOCOL, PROTO[key.protocol]);
    w.attr(SVC_ATTR_ADDR, addr16(key.address, key.family));
    w.attrBe16(SVC_ATTR_PORT, key.port);
  }
  w.endNest(n);
}

/** Body of the timeouts command (`ipvsadm --set`). */
export function encodeSetTimeouts(w: NlWriter, t: Partial<IpvsTimeouts>): void {
  genlHeader(w, IpvsCmd.setConfig, IPVS_GENL_VERSION);
  w.attrU32(CMD_ATTR_TIMEOUT_TCP, u32Range(t.tcp, "tcp timeout"));
  w.attrU32(CMD_ATTR_TIMEOUT_TCP_FIN, u32Range(t.tcpFin, "tcpfin timeout"));
  w.attrU32(CMD_ATTR_TIMEOUT_UDP, u32Range(t.udp, "udp timeout"));
}

/** Body of an attribute-less command: flush, zero, get info, get config, get services (dump). */
export function encodeBare(w: NlWriter, cmd: number): void {
  genlHeader(w, cmd, IPVS_GENL_VERSION);
}

/** Only the identifying fields of a service. */
export function serviceKey(s: IpvsServiceKey): IpvsServiceKey {
  return s.fwmark !== undefined
    ? { family: s.family, fwmark: s.fwmark }
    : { family: s.family, protocol: s.protocol, address: s.address, port: s.port };
}

/** A stable text form of a key: "tcp/10.96.0.10:80", "tcp/[fd00::10]:443", "fwmark/4/7". */
export function serviceKeyString(k: IpvsServiceKey): string {
  if (k.fwmark !== undefined) return `fwmark/${k.family}/${k.fwmark}`;
  const host = k.family === 6 ? `[${formatIP(ipBytes(k.address, 6))}]` : formatIP(ipBytes(k.address, 4));
  return `${k.protocol}/${host}:${k.port}`;
}

function familyOf(v: number, what: string): Family {
  if (v === AF_INET) return 4;
  if (v === AF_INET6) return 6;
  throw new NetlinkDecodeError(`${what}: address family ${v} is neither AF_INET nor AF_INET6`);
}

function decodeAddr(v: Uint8Array, family: Family): string {
  const n = family === 4 ? 4 : 16;
  if (v.length < n) throw new NetlinkDecodeError(`IPVS address: ${v.length} bytes, need ${n}`);
  return formatIP(v.subarray(0, n));
}

/** Statistics of a service or destination that has seen no traffic. */
export function zeroIpvsStats(): IpvsStats {
  return {
    conns: 0,
    inPkts: 0,
    outPkts: 0,
    inBytes: 0,
    outBytes: 0,
    cps: 0,
    inPps: 0,
    outPps: 0,
    inBps: 0,
    outBps: 0,
  };
}

function decodeStats(v: Uint8Array, wide: boolean): IpvsStats {
  const s = zeroIpvsStats();
  const order: (keyof IpvsStats)[] = [
    "conns",
    "inPkts",
    "outPkts",
    "inBytes",
    "outBytes",
    "cps",
    "inPps",
    "outPps",
    "inBps",
    "outBps",
  ];
  for (const a of parseAttrs(v)) {
    const k = order[a.type - 1];
    if (!k) continue;
    // STATS carries u32 values except the byte counters; STATS64 is u64 throughout.
    s[k] = wide || a.value.length === 8 ? Number(read.u64(a.value, k)) : read.u32(a.value, k);
  }
  return s;
}

function prefixOfMask(mask: number): number {
  let p = 0;
  while (p < 32 && (mask & (0x80000000 >>> p)) !== 0) p++;
  return p;
}

/** Decodes the IPVS_CMD_ATTR_SERVICE nest of a service reply. */
export function decodeService(attrs: Uint8Array): IpvsService {
  const a = new Map(parseAttrs(attrs).map((x) => [x.type, x.value]));
  const afv = a.get(SVC_ATTR_AF);
  if (!afv) throw new NetlinkDecodeError("IPVS service without an address family");
  const family = familyOf(read.u16(afv), "IPVS service");
  const fw = a.get(SVC_ATTR_FWMARK);
  const fwmark = fw ? read.u32(fw, "fwmark") : 0;
  let key: IpvsServiceKey;
  if (fwmark !== 0) key = { family, fwmark };
  else {
    const p = read.u16(a.get(SVC_ATTR_PROTOCOL) ?? new Uint8Array(), "protocol");
    const protocol = (Object.keys(PROTO) as IpvsProtocol[]).find((k) => PROTO[k] === p);
    if (!protocol) throw new NetlinkDecodeError(`IPVS service protocol ${p} is not tcp, udp or sctp`);
    key = {
      family,
      protocol,
      address: decodeAddr(a.get(SVC_ATTR_ADDR) ?? new Uint8Array(), family),
      port: read.be16(a.get(SVC_ATTR_PORT) ?? new Uint8Array(), "port"),
    };
  }
  const flagsV = a.get(SVC_ATTR_FLAGS);
  const maskV = a.get(SVC_ATTR_NETMASK);
  const stats64 = a.get(SVC_ATTR_STATS64);
  const stats = a.get(SVC_ATTR_STATS);
  const pe = a.get(SVC_ATTR_PE_NAME);
  return {
    ...key,
    scheduler: read.str(a.get(SVC_ATTR_SCHED_NAME) ?? new Uint8Array()),
    flags: flagsV ? read.u32(flagsV, "flags") & ~IpvsServiceFlag.hashed : 0,
    timeout: a.has(SVC_ATTR_TIMEOUT) ? read.u32(a.get(SVC_ATTR_TIMEOUT)!, "timeout") : 0,
    netmask: maskV
      ? (family === 6 ? read.u32(maskV, "netmask") : prefixOfMask(read.be32(maskV, "netmask")))
      : (
        family === 6 ? 128 : 32
      ),
    ...(pe ? { pe: read.str(pe) } : {}),
    ...(stats64 ? { stats: decodeStats(stats64, true) } : stats ? { stats: decodeStats(stats, false) } : {}),
  } as IpvsService;
}

/** Decodes the IPVS_CMD_ATTR_DEST nest of a destination reply. */
export function decodeDestination(attrs: Uint8Array, svcFamily: Family): IpvsDestination {
  const a = new Map(parseAttrs(attrs).map((x) => [x.type, x.value]));
  const fam = a.get(DEST_ATTR_ADDR_FAMILY);
  const family = fam ? familyOf(read.u16(fam), "IPVS destination") : svcFamily;
  const u32 = (t: number, what: string) => (a.has(t) ? read.u32(a.get(t)!, what) : 0);
  const stats64 = a.get(DEST_ATTR_STATS64);
  const stats = a.get(DEST_ATTR_STATS);
  return {
    address: decodeAddr(a.get(DEST_ATTR_ADDR) ?? new Uint8Array(), family),
    port: read.be16(a.get(DEST_ATTR_PORT) ?? new Uint8Array(), "port"),
    ...(family !== svcFamily ? { family } : {}),
    forward: FORWARD[u32(DEST_ATTR_FWD_METHOD, "forwarding method") & 7] ?? "masq",
    weight: u32(DEST_ATTR_WEIGHT, "weight"),
    upperThreshold: u32(DEST_ATTR_U_THRESH, "upper threshold"),
    lowerThreshold: u32(DEST_ATTR_L_THRESH, "lower threshold"),
    activeConns: u32(DEST_ATTR_ACTIVE_CONNS, "active connections"),
    inactiveConns: u32(DEST_ATTR_INACT_CONNS, "inactive connections"),
    persistConns: u32(DEST_ATTR_PERSIST_CONNS, "persistent connections"),
    ...(stats64 ? { stats: decodeStats(stats64, true) } : stats ? { stats: decodeStats(stats, false) } : {}),
  };
}

/** The nest of one type in a reply's attributes (IPVS replies nest without NLA_F_NESTED). */
export function replyNest(msg: NlMsg, type: number): Uint8Array | undefined {
  return parseAttrs(genlPayload(msg).attrs).find((x) => x.type === type)?.value;
}

/** Decodes a GET_CONFIG reply. */
export function decodeTimeouts(msg: NlMsg): IpvsTimeouts {
  const a = new Map(parseAttrs(genlPayload(msg).attrs).map((x) => [x.type, x.value]));
  const g = (t: number) => (a.has(t) ? read.u32(a.get(t)!, "timeout") : 0);
  return { tcp: g(CMD_ATTR_TIMEOUT_TCP), tcpFin: g(CMD_ATTR_TIMEOUT_TCP_FIN), udp: g(CMD_ATTR_TIMEOUT_UDP) };
}

/** Decodes a GET_INFO reply. */
export function decodeInfo(msg: NlMsg): { version: string; connTableSize: number } {
  const a = new Map(parseAttrs(genlPayload(msg).attrs).map((x) => [x.type, x.value]));
  const v = read.u32(a.get(INFO_ATTR_VERSION) ?? new Uint8Array(), "version");
  return {
    version: `${(v >> 16) & 0xff}.${(v >> 8) & 0xff}.${v & 0xff}`,
    connTableSize: read.u32(a.get(INFO_ATTR_CONN_TAB_SIZE) ?? new Uint8Array(), "conn table size"),
  };
}

/** Runs `f` and turns a synchronous throw into a rejection, so every method fails the same way. */
export function settle<T>(f: () => T): Promise<T> {
  try {
    return Promise.resolve(f());
  } catch (e) {
    return Promise.reject(e);
  }
}

const ESRCH = 3;

/** Changes per event-loop turn in `IpvsNetlink.apply` (each slice is still many messages per sendto). */
const APPLY_SLICE = 8192;

/**
 * IPVS through a NETLINK_GENERIC socket. Opening resolves the family; a kernel without IPVS (module absent
 * and not loadable) fails there with NetlinkError ENOENT.
 */
export class IpvsNetlink implements Ipvs {
  #sock: NetlinkSocket | undefined;
  readonly familyId: number;

  constructor() {
    const sock = NetlinkSocket.open(NETLINK_GENERIC, { rcvbuf: 32 << 20 });
    try {
      this.familyId = resolveFamily(sock, "IPVS").id;
    } catch (e) {
      sock.close();
      throw e;
    }
    this.#sock = sock;
  }

  get #s(): NetlinkSocket {
    if (!this.#sock) throw new NetlinkError(9, /* EBADF */ "IPVS socket is closed", 0);
    return this.#sock;
  }

  #do(body: (w: NlWriter) => void, op: string): NlMsg[] {
    return this.#s.request(this.familyId, 0, body, op);
  }

  #dump(body: (w: NlWriter) => void, op: string): NlMsg[] {
    return this.#s.dump(this.familyId, body, op).filter((m) => m.type === this.familyId);
  }

  info(): Promise<{ version: string; connTableSize: number }> {
    return settle(() => decodeInfo(this.#do((w) => encodeBare(w, IpvsCmd.getInfo), "IPVS_CMD_GET_INFO")[0]!));
  }

  services(): Promise<IpvsService[]> {
    return settle(() => {
      const out: IpvsService[] = [];
      for (const m of this.#dump((w) => encodeBare(w, IpvsCmd.getService), "IPVS_CMD_GET_SERVICE")) {
        const n = replyNest(m, CMD_ATTR_SERVICE);
        if (n) out.push(decodeService(n));
      }
      return out;
    });
  }

  /** One request for one service (not a dump of all): a sync that refreshes a few services' stats stays O(1). */
  getService(key: IpvsServiceKey): Promise<IpvsService | undefined> {
    return settle(() => {
      let reply: NlMsg[];
      try {
        reply = this.#do(
          (w) => encodeServiceCmd(w, IpvsCmd.getService, serviceKey(key)),
          `IPVS_CMD_GET_SERVICE ${serviceKeyString(key)}`,
        );
      } catch (e) {
        if (e instanceof NetlinkError && e.errno === ESRCH) return undefined;
        throw e;
      }
      const n = reply[0] ? replyNest(reply[0], CMD_ATTR_SERVICE) : undefined;
      return n ? decodeService(n) : undefined;
    });
  }

  addService(s: IpvsService): Promise<void> {
    return settle(() => {
      this.#do((w) => encodeServiceCmd(w, IpvsCmd.newService, s), `IPVS add service ${serviceKeyString(s)}`);
    });
  }

  editService(s: IpvsService): Promise<void> {
    return settle(() => {
      this.#do((w) => encodeServiceCmd(w, IpvsCmd.setService, s), `IPVS edit service ${serviceKeyString(s)}`);
    });
  }

  delService(key: IpvsServiceKey): Promise<void> {
    return settle(() => {
      this.#do(
        (w) => encodeServiceCmd(w, IpvsCmd.delService, serviceKey(key)),
        `IPVS delete service ${serviceKeyString(key)}`,
      );
    });
  }

  destinations(key: IpvsServiceKey): Promise<IpvsDestination[]> {
    return settle(() => {
      const out: IpvsDestination[] = [];
      for (
        const m of this.#dump((w) => encodeGetDests(w, key), `IPVS_CMD_GET_DEST ${serviceKeyString(key)}`)
      ) {
        const n = replyNest(m, CMD_ATTR_DEST);
        if (n) out.push(decodeDestination(n, key.family));
      }
      return out;
    });
  }

  addDestination(key: IpvsServiceKey, d: IpvsDestination): Promise<void> {
    return settle(() => {
      this.#do(
        (w) => encodeDestCmd(w, IpvsCmd.newDest, key, d),
        `IPVS add destination ${d.address}:${d.port} to ${serviceKeyString(key)}`,
      );
    });
  }

  editDestination(key: IpvsServiceKey, d: IpvsDestination): Promise<void> {
    return settle(() => {
      this.#do(
        (w) => encodeDestCmd(w, IpvsCmd.setDest, key, d),
        `IPVS edit destination ${d.address}:${d.port} of ${serviceKeyString(key)}`,
      );
    });
  }

  delDestination(key: IpvsServiceKey, d: { address: string; port: number; family?: Family }): Promise<void> {
    return settle(() => {
      this.#do(
        (w) => encodeDestCmd(w, IpvsCmd.delDest, key, d),
        `IPVS delete destination ${d.address}:${d.port} of ${serviceKeyString(key)}`,
      );
    });
  }

  flush(): Promise<void> {
    return settle(() => {
      this.#do((w) => encodeBare(w, IpvsCmd.flush), "IPVS_CMD_FLUSH");
    });
  }

  zero(): Promise<void> {
    return settle(() => {
      this.#do((w) => encodeBare(w, IpvsCmd.zero), "IPVS_CMD_ZERO");
    });
  }

  timeouts(): Promise<IpvsTimeouts> {
    return settle(() => {
      const r = this.#do((w) => encodeBare(w, IpvsCmd.getConfig), "IPVS_CMD_GET_CONFIG");
      return decodeTimeouts(r[0]!);
    });
  }

  setTimeouts(t: Partial<IpvsTimeouts>): Promise<void> {
    return settle(() => {
      this.#do((w) => encodeSetTimeouts(w, t), "IPVS_CMD_SET_CONFIG");
    });
  }

  async apply(ops: readonly IpvsOp[]): Promise<IpvsOpFailure[]> {
    const failures: IpvsOpFailure[] = [];
    for (let start = 0; start < ops.length; start += APPLY_SLICE) {
      // Let timers and I/O run between slices of a huge batch (a cold sync of 100,000 changes).
      if (start > 0) await new Promise((r) => setTimeout(r, 0));
      const slice = ops.slice(start, start + APPLY_SLICE);
      const failed = this.#s.batch(slice.length, (w, i, seq) => {
        const off = w.beginMsg(this.familyId, NLM_F_REQUEST, seq);
        encodeIpvsOp(w, slice[i]!);
        w.endMsg(off);
      }, { op: "IPVS batch" });
      for (const f of failed) {
        const o = slice[f.index]!;
        const e = f.error;
        failures.push({
          index: start + f.index,
          error: e instanceof NetlinkError ? new NetlinkError(e.errno, ipvsOpName(o), e.seq, e.extAck) : e,
        });
      }
    }
    return failures;
  }

  close(): void {
    this.#sock?.close();
    this.#sock = undefined;
  }
}
