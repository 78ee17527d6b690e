/**
 * rtnetlink message codecs: ifinfomsg/ifaddrmsg/rtmsg/fib_rule_hdr/ndmsg plus their attributes, for
 * links, addresses, routes, rules and neighbours. Pure; the byte layouts match what iproute2 sends
 * (checked against `strace` captures in tests/unit/ffi).
 */
import { NetlinkDecodeError } from "./errors.ts";
import { cidrParts, type Family, formatIP, ipBytes, parseIPv4Fast } from "./ip.ts";
import { AF_INET, afOf, familyOfAf } from "./libc.ts";
import { attrMap, NLA_TYPE_MASK, type NlMsg, NlWriter, parseAttrs, read } from "./netlink.ts";
import {
  type Address,
  type Link,
  type LinkChange,
  type LinkSpec,
  type Neighbour,
  type NextHop,
  type Route,
  RouteProtocol,
  RouteScope,
  RouteType,
  type Rule,
  RuleAction,
} from "./rtnl_types.ts";

export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTM_NEWADDR = 20;
export const RTM_DELADDR = 21;
export const RTM_GETADDR = 22;
export const RTM_NEWROUTE = 24;
export const RTM_DELROUTE = 25;
export const RTM_GETROUTE = 26;
export const RTM_NEWNEIGH = 28;
export const RTM_DELNEIGH = 29;
export const RTM_GETNEIGH = 30;
export const RTM_NEWRULE = 32;
export const RTM_DELRULE = 33;
export const RTM_GETRULE = 34;

// Multicast groups (enum rtnetlink_groups).
export const RTNLGRP_LINK = 1;
export const RTNLGRP_NEIGH = 3;
export const RTNLGRP_IPV4_IFADDR = 5;
export const RTNLGRP_IPV4_ROUTE = 7;
export const RTNLGRP_IPV4_RULE = 8;
export const RTNLGRP_IPV6_IFADDR = 9;
export const RTNLGRP_IPV6_ROUTE = 11;
export const RTNLGRP_IPV6_RULE = 19;

const IFF_UP = 0x1;
const IFF_LOWER_UP = 0x10000;

const IFLA_ADDRESS = 1;
const IFLA_IFNAME = 3;
const IFLA_MTU = 4;
const IFLA_LINK = 5;
const IFLA_MASTER = 10;
const IFLA_LINKINFO = 18;
const IFLA_LINK_NETNSID = 37;
const IFLA_INFO_KIND = 1;
const IFLA_INFO_DATA = 2;
const VETH_INFO_PEER = 1;
const IFLA_VXLAN_ID = 1;
const IFLA_VXLAN_GROUP = 2;
const IFLA_VXLAN_LINK = 3;
const IFLA_VXLAN_LOCAL = 4;
const IFLA_VXLAN_LEARNING = 7;
const IFLA_VXLAN_PORT = 15;
const IFLA_VXLAN_GROUP6 = 16;
const IFLA_VXLAN_LOCAL6 = 17;
const IFLA_IPTUN_LINK = 1;
const IFLA_IPTUN_LOCAL = 2;
const IFLA_IPTUN_REMOTE = 3;
const IFLA_IPTUN_TTL = 4;
const IFLA_IPTUN_TOS = 5;
const IFLA_IPTUN_ENCAP_LIMIT = 6;
const IFLA_IPTUN_FLOWINFO = 7;
const IFLA_IPTUN_FLAGS = 8;
const IFLA_IPTUN_FWMARK = 20;
const IFLA_IPTUN_ENCAP_FLAGS = 16;
const TUNNEL_ENCAP_FLAG_CSUM6 = 2;
const IFLA_IPTUN_PROTO = 9;
const IFLA_IPTUN_PMTUDISC = 10;
const IFLA_IPTUN_ENCAP_TYPE = 15;
const IFLA_IPTUN_ENCAP_SPORT = 17;
const IFLA_IPTUN_ENCAP_DPORT = 18;
const TUNNEL_ENCAP_FOU = 1;
const TUNNEL_ENCAP_GUE = 2;

const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
const IFA_LABEL = 3;
const IFA_FLAGS = 8;
export const IFA_F_NODAD = 0x02;

const RTA_DST = 1;
const RTA_OIF = 4;
const RTA_GATEWAY = 5;
const RTA_PRIORITY = 6;
const RTA_PREFSRC = 7;
const RTA_MULTIPATH = 9;
const RTA_TABLE = 15;
const RTNH_F_ONLINK = 4;

const FRA_DST = 1;
const FRA_SRC = 2;
const FRA_IIFNAME = 3;
const FRA_PRIORITY = 6;
const FRA_FWMARK = 10;
const FRA_TABLE = 15;
const FRA_FWMASK = 16;
const FRA_OIFNAME = 17;
const FRA_PROTOCOL = 21;
const FIB_RULE_INVERT = 0x2;

const NDA_DST = 1;
const NDA_LLADDR = 2;

/** `aa:bb:cc:dd:ee:ff` to its 6 bytes; throws TypeError when malformed. */
export function macBytes(mac: string): Uint8Array {
  const parts = mac.split(":");
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) {
    throw new TypeError(`invalid MAC address ${JSON.stringify(mac)}`);
  }
  return new Uint8Array(parts.map((p) => parseInt(p, 16)));
}

/** 6 bytes to lower-case `aa:bb:cc:dd:ee:ff`. */
export function formatMac(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(":");
}

/** Wraps a decoder so only NetlinkDecodeError escapes. */
function decoding<T>(what: string, f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof NetlinkDecodeError) throw new NetlinkDecodeError(`${what}: ${e.message}`, { cause: e });
    throw new NetlinkDecodeError(`${what}: ${e instanceof Error ? e.message : String(e)}`, { cause: e });
  }
}

function fixed(p: Uint8Array, n: number, what: string): DataView {
  if (p.length < n) throw new NetlinkDecodeError(`${what} header is ${p.length} bytes, need ${n}`);
  return new DataView(p.buffer, p.byteOffset, p.byteLength);
}

// ---------------------------------------------------------------- links

/** struct ifinfomsg */
function ifinfomsg(w: NlWriter, index: number, flags: number, change: number, family = 0): void {
  w.u8(family).u8(0).u16(0).i32(index).u32(flags).u32(change);
}

/** Body of RTM_NEWLINK for `ip link add`. */
export function encodeLinkAdd(w: NlWriter, spec: LinkSpec, masterIndex?: number): void {
  // Attribute order and encodings as iproute2 emits `ip link add NAME mtu N address MAC master BR type KIND`.
  ifinfomsg(w, 0, spec.up ? IFF_UP : 0, spec.up ? IFF_UP : 0);
  if (spec.mtu !== undefined) w.attrU32(IFLA_MTU, spec.mtu);
  if (spec.mac !== undefined) w.attr(IFLA_ADDRESS, macBytes(spec.mac));
  if (masterIndex !== undefined) w.attrU32(IFLA_MASTER, masterIndex);
  w.attrString(IFLA_IFNAME, spec.name);
  const li = w.beginNest(IFLA_LINKINFO, false);
  w.attr(IFLA_INFO_KIND, new TextEncoder().encode(spec.kind));
  switch (spec.kind) {
    case "veth": {
      const d = w.beginNest(IFLA_INFO_DATA, false);
      const p = w.beginNest(VETH_INFO_PEER, false);
      ifinfomsg(w, 0, 0, 0);
      w.attrString(IFLA_IFNAME, spec.peer);
      w.endNest(p);
      w.endNest(d);
      break;
    }
    case "vxlan": {
      const d = w.beginNest(IFLA_INFO_DATA, false);
      w.attrU32(IFLA_VXLAN_ID, spec.vni);
      if (spec.remote !== undefined) {
        const r = ipBytes(spec.remote);
        w.attr(r.length === 4 ? IFLA_VXLAN_GROUP : IFLA_VXLAN_GROUP6, r);
      }
      if (spec.local !== undefined) {
        const l = ipBytes(spec.local);
        w.attr(l.length === 4 ? IFLA_VXLAN_LOCAL : IFLA_VXLAN_LOCAL6, l);
      }
      if (spec.dev !== undefined) w.attrU32(IFLA_VXLAN_LINK, spec.dev);
      if (spec.learning !== undefined) w.attrU8(IFLA_VXLAN_LEARNING, spec.learning ? 1 : 0);
      if (spec.port !== undefined) w.attrBe16(IFLA_VXLAN_PORT, spec.port);
      w.endNest(d);
      break;
    }
    case "ipip":
    case "ip6tnl": {
      // The full attribute set, in iproute2's order (ip/link_iptnl.c, ip/link_ip6tnl.c): the kernel keeps
      // its own defaults for anything absent, iproute2 spells every field out.
      const fam: Family = spec.kind === "ipip" ? 4 : 6;
      const d = w.beginNest(IFLA_INFO_DATA, false);
      w.attrU8(IFLA_IPTUN_PROTO, fam === 4 ? 0 : 41);
      w.attr(
        IFLA_IPTUN_LOCAL,
        spec.local !== undefined ? ipBytes(spec.local, fam) : new Uint8Array(fam === 4 ? 4 : 16),
      );
      w.attr(
        IFLA_IPTUN_REMOTE,
        spec.remote !== undefined ? ipBytes(spec.remote, fam) : new Uint8Array(fam === 4 ? 4 : 16),
      );
      if (fam === 4) {
        w.attrU8(IFLA_IPTUN_PMTUDISC, 1);
        w.attrU8(IFLA_IPTUN_TOS, 0);
        w.attrU8(IFLA_IPTUN_TTL, spec.ttl ?? 0);
      } else {
        w.attrU8(IFLA_IPTUN_TTL, spec.ttl ?? 64);
        w.attrU8(IFLA_IPTUN_ENCAP_LIMIT, 4);
        w.attrU32(IFLA_IPTUN_FLOWINFO, 0);
        w.attrU32(IFLA_IPTUN_FLAGS, 0);
      }
      w.attrU32(IFLA_IPTUN_LINK, spec.dev ?? 0);
      w.attrU32(IFLA_IPTUN_FWMARK, 0);
      w.attrU16(IFLA_IPTUN_ENCAP_TYPE, spec.fou ? (spec.fou.gue ? TUNNEL_ENCAP_GUE : TUNNEL_ENCAP_FOU) : 0);
      w.attrU16(IFLA_IPTUN_ENCAP_FLAGS, fam === 4 ? 0 : TUNNEL_ENCAP_FLAG_CSUM6);
      w.attrBe16(IFLA_IPTUN_ENCAP_SPORT, spec.fou?.sport ?? 0);
      w.attrBe16(IFLA_IPTUN_ENCAP_DPORT, spec.fou?.dport ?? 0);
      w.endNest(d);
      break;
    }
    default:
      break;
  }
  w.endNest(li);
}

/** Body of RTM_NEWLINK for `ip link set`. `masterIndex` 0 means nomaster. */
export function encodeLinkSet(w: NlWriter, index: number, change: LinkChange, masterIndex?: number): void {
  const upFlag = change.up === undefined ? 0 : IFF_UP;
  ifinfomsg(w, index, change.up ? IFF_UP : 0, upFlag);
  if (change.mtu !== undefined) w.attrU32(IFLA_MTU, change.mtu);
  if (change.name !== undefined) w.attrString(IFLA_IFNAME, change.name);
  if (change.mac !== undefined) w.attr(IFLA_ADDRESS, macBytes(change.mac));
  if (masterIndex !== undefined) w.attrU32(IFLA_MASTER, masterIndex);
}

/** Body of RTM_DELLINK / RTM_GETLINK by index. */
export function encodeLinkIndex(w: NlWriter, index: number): void {
  ifinfomsg(w, index, 0, 0);
}

/** Decodes RTM_NEWLINK/RTM_DELLINK. */
export function decodeLink(m: NlMsg): Link {
  return decoding("link", () => {
    const dv = fixed(m.payload, 16, "ifinfomsg");
    const flags = dv.getUint32(8, true);
    const a = attrMap(m.payload.subarray(16));
    const link: Link = {
      index: dv.getInt32(4, true),
      name: read.str(a.get(IFLA_IFNAME) ?? new Uint8Array()),
      mtu: a.has(IFLA_MTU) ? read.u32(a.get(IFLA_MTU)!, "IFLA_MTU") : 0,
      up: (flags & IFF_UP) !== 0,
      lowerUp: (flags & IFF_LOWER_UP) !== 0,
      flags,
    };
    const mac = a.get(IFLA_ADDRESS);
    if (mac && mac.length === 6) link.mac = formatMac(mac);
    const master = a.get(IFLA_MASTER);
    if (master) link.master = read.u32(master, "IFLA_MASTER");
    const lnk = a.get(IFLA_LINK);
    if (lnk) link.link = read.u32(lnk, "IFLA_LINK");
    const nsid = a.get(IFLA_LINK_NETNSID);
    if (nsid) link.linkNetnsid = read.i32(nsid, "IFLA_LINK_NETNSID");
    const info = a.get(IFLA_LINKINFO);
    if (info) {
      const ia = attrMap(info);
      const kind = ia.get(IFLA_INFO_KIND);
      if (kind) link.kind = read.str(kind);
      const data = ia.get(IFLA_INFO_DATA);
      if (link.kind === "vxlan" && data) {
        const va = attrMap(data);
        const vx: NonNullable<Link["vxlan"]> = {
          vni: read.u32(va.get(IFLA_VXLAN_ID) ?? new Uint8Array(4), "vni"),
        };
        const port = va.get(IFLA_VXLAN_PORT);
        if (port) vx.port = read.be16(port);
        const local = va.get(IFLA_VXLAN_LOCAL) ?? va.get(IFLA_VXLAN_LOCAL6);
        if (local) vx.local = formatIP(local);
        const group = va.get(IFLA_VXLAN_GROUP) ?? va.get(IFLA_VXLAN_GROUP6);
        if (group) vx.remote = formatIP(group);
        const dev = va.get(IFLA_VXLAN_LINK);
        if (dev) vx.dev = read.u32(dev);
        const learning = va.get(IFLA_VXLAN_LEARNING);
        if (learning) vx.learning = read.u8(learning) !== 0;
        link.vxlan = vx;
      }
      if ((link.kind === "ipip" || link.kind === "ip6tnl") && data) {
        const ta = attrMap(data);
        const t: NonNullable<Link["tunnel"]> = {};
        const local = ta.get(IFLA_IPTUN_LOCAL);
        if (local && local.some((b) => b !== 0)) t.local = formatIP(local);
        const remote = ta.get(IFLA_IPTUN_REMOTE);
        if (remote && remote.some((b) => b !== 0)) t.remote = formatIP(remote);
        const ttl = ta.get(IFLA_IPTUN_TTL);
        if (ttl) t.ttl = read.u8(ttl);
        const proto = ta.get(IFLA_IPTUN_PROTO);
        if (proto) t.proto = read.u8(proto);
        const et = ta.get(IFLA_IPTUN_ENCAP_TYPE);
        const type = et ? read.u16(et) : 0;
        if (type === TUNNEL_ENCAP_FOU || type === TUNNEL_ENCAP_GUE) {
          const dport = ta.get(IFLA_IPTUN_ENCAP_DPORT);
          const sport = ta.get(IFLA_IPTUN_ENCAP_SPORT);
          t.encap = {
            type: type === TUNNEL_ENCAP_GUE ? "gue" : "fou",
            dport: dport ? read.be16(dport) : 0,
            sport: sport ? read.be16(sport) : 0,
          };
        }
        link.tunnel = t;
      }
    }
    return link;
  });
}

// ---------------------------------------------------------------- addresses

/** Body of RTM_NEWADDR / RTM_DELADDR. */
export function encodeAddr(w: NlWriter, a: Address): void {
  const ip = ipBytes(a.address, a.family);
  w.u8(afOf(a.family)).u8(a.prefix).u8(0).u8(a.scope ?? 0).u32(a.index);
  w.attr(IFA_LOCAL, ip);
  w.attr(IFA_ADDRESS, ip);
  if (a.label !== undefined) w.attrString(IFA_LABEL, a.label);
  const flags = (a.flags ?? 0) | (a.nodad ? IFA_F_NODAD : 0);
  if (flags) w.attrU32(IFA_FLAGS, flags);
}

/** Body of RTM_GETADDR dump. */
export function encodeAddrDump(w: NlWriter, family?: Family): void {
  w.u8(family ? afOf(family) : 0).u8(0).u8(0).u8(0).u32(0);
}

/** Decodes RTM_NEWADDR/RTM_DELADDR; undefined for families other than IPv4/IPv6. */
export function decodeAddr(m: NlMsg): Address | undefined {
  return decoding("address", () => {
    const dv = fixed(m.payload, 8, "ifaddrmsg");
    const family = familyOfAf(dv.getUint8(0));
    if (!family) return undefined;
    const a = attrMap(m.payload.subarray(8));
    const bytes = a.get(IFA_LOCAL) ?? a.get(IFA_ADDRESS);
    if (!bytes || bytes.length !== (family === 4 ? 4 : 16)) {
      throw new NetlinkDecodeError("missing or bad IFA_ADDRESS");
    }
    const out: Address = {
      family,
      index: dv.getUint32(4, true),
      address: formatIP(bytes),
      prefix: dv.getUint8(1),
      scope: dv.getUint8(3),
      flags: a.has(IFA_FLAGS) ? read.u32(a.get(IFA_FLAGS)!) : dv.getUint8(2),
    };
    const label = a.get(IFA_LABEL);
    if (label) out.label = read.str(label);
    return out;
  });
}

// ---------------------------------------------------------------- routes

/** iproute2's default scope for a route (ip/iproute.c). */
export function defaultScope(r: Route, forDelete: boolean): number {
  const type = r.type ?? (forDelete ? RouteType.unspec : RouteType.unicast);
  if (type === RouteType.local) return RouteScope.host;
  if (type === RouteType.broadcast || type === RouteType.multicast || type === RouteType.anycast) {
    return RouteScope.link;
  }
  if (type === RouteType.unicast || type === RouteType.unspec) {
    if (forDelete) return RouteScope.nowhere;
    if (r.gateway === undefined && !(r.nexthops?.length)) return RouteScope.link;
  }
  return RouteScope.universe;
}

/**
 * Body of RTM_NEWROUTE/RTM_DELROUTE. Equivalent to what `ip route add|replace|del` sends: rtm_table holds
 * the table when it fits in 8 bits, RTA_TABLE always carries it.
 */
export function encodeRoute(w: NlWriter, r: Route, forDelete = false): void {
  if (r.family === 4 && !r.nexthops && r.src === undefined && encodeRoute4(w, r, forDelete)) return;
  const dst = cidrParts(r.dst, r.family);
  const table = r.table ?? 254;
  w.u8(afOf(r.family)).u8(dst.prefix).u8(0).u8(r.tos ?? 0)
    .u8(table < 256 ? table : 0)
    .u8(r.protocol ?? (forDelete ? RouteProtocol.unspec : RouteProtocol.boot))
    .u8(r.scope ?? defaultScope(r, forDelete))
    .u8(r.type ?? (forDelete ? RouteType.unspec : RouteType.unicast))
    .u32(r.onlink ? RTNH_F_ONLINK : 0);
  // Attribute order as iproute2 emits `ip route add DST via GW src S metric M table T … dev D`.
  if (dst.prefix > 0) w.attr(RTA_DST, dst.addr);
  if (r.gateway !== undefined) w.attr(RTA_GATEWAY, ipBytes(r.gateway, r.family));
  if (r.src !== undefined) w.attr(RTA_PREFSRC, ipBytes(r.src, r.family));
  if (r.metric !== undefined) w.attrU32(RTA_PRIORITY, r.metric);
  if (table >= 256) w.attrU32(RTA_TABLE, table);
  if (r.nexthops?.length) {
    const mp = w.beginNest(RTA_MULTIPATH, false);
    for (const nh of r.nexthops) {
      const start = w.offset;
      w.u16(0).u8(nh.onlink ? RTNH_F_ONLINK : 0).u8((nh.weight ?? 1) - 1).i32(nh.dev ?? 0);
      if (nh.gateway !== undefined) w.attr(RTA_GATEWAY, ipBytes(nh.gateway, r.family));
      w.patchLen16(start);
    }
    w.endNest(mp);
  }
  if (r.dev !== undefined) w.attrU32(RTA_OIF, r.dev);
}

/**
 * The common IPv4 case (dst, gateway, dev, metric) without allocations: route batches of 100k entries
 * spend most of their time here. Returns false (writing nothing) when the input needs the general path.
 */
function encodeRoute4(w: NlWriter, r: Route, forDelete: boolean): boolean {
  const s = r.dst;
  const slash = s.indexOf("/");
  const dst = parseIPv4Fast(s, 0, slash < 0 ? s.length : slash);
  let prefix = 32;
  if (slash >= 0) {
    prefix = 0;
    if (slash + 1 >= s.length || s.length - slash > 3) return false;
    for (let i = slash + 1; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c < 48 || c > 57) return false;
      prefix = prefix * 10 + c - 48;
    }
    if (prefix > 32) return false;
  }
  const gw = r.gateway === undefined ? -2 : parseIPv4Fast(r.gateway);
  if (dst < 0 || gw === -1) return false;
  const table = r.table ?? 254;
  w.u8(AF_INET).u8(prefix).u8(0).u8(r.tos ?? 0)
    .u8(table < 256 ? table : 0)
    .u8(r.protocol ?? (forDelete ? RouteProtocol.unspec : RouteProtocol.boot))
    .u8(r.scope ?? defaultScope(r, forDelete))
    .u8(r.type ?? (forDelete ? RouteType.unspec : RouteType.unicast))
    .u32(r.onlink ? RTNH_F_ONLINK : 0);
  if (prefix > 0) w.attrBe32(RTA_DST, dst);
  if (gw >= 0) w.attrBe32(RTA_GATEWAY, gw);
  if (r.metric !== undefined) w.attrU32(RTA_PRIORITY, r.metric);
  if (table >= 256) w.attrU32(RTA_TABLE, table);
  if (r.dev !== undefined) w.attrU32(RTA_OIF, r.dev);
  return true;
}

/** Body of RTM_GETROUTE for one address, as `ip route get ADDR` sends it. */
export function encodeRouteGet(w: NlWriter, addr: string): void {
  const a = ipBytes(addr);
  const family: Family = a.length === 4 ? 4 : 6;
  w.u8(afOf(family)).u8(a.length * 8).u8(0).u8(0).u8(0).u8(0).u8(0).u8(0).u32(0);
  w.attr(RTA_DST, a);
}

/** Body of an RTM_GETROUTE dump. */
export function encodeRouteDump(
  w: NlWriter,
  family?: Family,
  filter: { table?: number; protocol?: number; dev?: number } = {},
): void {
  // With NETLINK_GET_STRICT_CHK the kernel filters on rtm_protocol, RTA_TABLE and RTA_OIF.
  w.u8(family ? afOf(family) : 0).u8(0).u8(0).u8(0).u8(0).u8(filter.protocol ?? 0).u8(0).u8(0).u32(0);
  if (filter.table !== undefined) w.attrU32(RTA_TABLE, filter.table);
  if (filter.dev !== undefined) w.attrU32(RTA_OIF, filter.dev);
}

function decodeNexthops(v: Uint8Array, len: number): NextHop[] {
  const out: NextHop[] = [];
  const dv = new DataView(v.buffer, v.byteOffset, v.byteLength);
  let off = 0;
  while (off + 8 <= v.length) {
    const l = dv.getUint16(off, true);
    if (l < 8 || off + l > v.length) throw new NetlinkDecodeError(`rtnexthop at ${off}: bad length ${l}`);
    const nh: NextHop = { weight: dv.getUint8(off + 3) + 1 };
    const dev = dv.getInt32(off + 4, true);
    if (dev) nh.dev = dev;
    if (dv.getUint8(off + 2) & RTNH_F_ONLINK) nh.onlink = true;
    const a = attrMap(v.subarray(off + 8, off + l));
    const gw = a.get(RTA_GATEWAY);
    if (gw && gw.length === len) nh.gateway = formatIP(gw);
    out.push(nh);
    off += (l + 3) & ~3;
  }
  return out;
}

/** Decodes RTM_NEWROUTE/RTM_DELROUTE; undefined for families other than IPv4/IPv6. */
export function decodeRoute(m: NlMsg): Route | undefined {
  return decoding("route", () => {
    const p = m.payload;
    const dv = fixed(p, 12, "rtmsg");
    const family = familyOfAf(dv.getUint8(0));
    if (!family) return undefined;
    const len = family === 4 ? 4 : 16;
    // Walk the attributes in place (no Map, no per-attribute objects): dumps of 100k routes decode here.
    let dst: string | undefined, gateway: string | undefined, src: string | undefined;
    let table = dv.getUint8(4), dev: number | undefined, metric: number | undefined;
    let nexthops: NextHop[] | undefined;
    let off = 12;
    while (off + 4 <= p.length) {
      const alen = dv.getUint16(off, true);
      const type = dv.getUint16(off + 2, true) & NLA_TYPE_MASK;
      if (alen < 4 || off + alen > p.length) {
        throw new NetlinkDecodeError(`route attribute at ${off}: bad length ${alen}`);
      }
      const vlen = alen - 4, v = off + 4;
      switch (type) {
        case RTA_DST:
          if (vlen !== len) throw new NetlinkDecodeError(`RTA_DST is ${vlen} bytes`);
          dst = ipAt(p, v, len);
          break;
        case RTA_GATEWAY:
          if (vlen !== len) throw new NetlinkDecodeError(`RTA_GATEWAY is ${vlen} bytes`);
          gateway = ipAt(p, v, len);
          break;
        case RTA_PREFSRC:
          if (vlen === len) src = ipAt(p, v, len);
          break;
        case RTA_TABLE:
          if (vlen < 4) throw new NetlinkDecodeError("RTA_TABLE too short");
          table = dv.getUint32(v, true);
          break;
        case RTA_OIF:
          if (vlen < 4) throw new NetlinkDecodeError("RTA_OIF too short");
          dev = dv.getUint32(v, true);
          break;
        case RTA_PRIORITY:
          if (vlen < 4) throw new NetlinkDecodeError("RTA_PRIORITY too short");
          metric = dv.getUint32(v, true);
          break;
        case RTA_MULTIPATH:
          nexthops = decodeNexthops(p.subarray(v, v + vlen), len);
          break;
      }
      off += (alen + 3) & ~3;
    }
    const r: Route = {
      family,
      dst: `${dst ?? (family === 4 ? "0.0.0.0" : "::")}/${dv.getUint8(1)}`,
      table,
      protocol: dv.getUint8(5),
      scope: dv.getUint8(6),
      type: dv.getUint8(7),
    };
    const tos = dv.getUint8(3);
    if (tos) r.tos = tos;
    if (dv.getUint32(8, true) & RTNH_F_ONLINK) r.onlink = true;
    if (gateway !== undefined) r.gateway = gateway;
    if (dev !== undefined) r.dev = dev;
    if (metric !== undefined) r.metric = metric;
    if (src !== undefined) r.src = src;
    if (nexthops) r.nexthops = nexthops;
    return r;
  });
}

/** Formats the address of `len` bytes at `off` (IPv4 without allocating a subarray). */
function ipAt(p: Uint8Array, off: number, len: number): string {
  if (len === 4) return `${p[off]}.${p[off + 1]}.${p[off + 2]}.${p[off + 3]}`;
  return formatIP(p.subarray(off, off + len));
}

// ---------------------------------------------------------------- rules

/** Body of RTM_NEWRULE/RTM_DELRULE, as `ip rule add|del` sends it. */
export function encodeRule(w: NlWriter, r: Rule, forDelete = false): void {
  const dst = r.dst !== undefined ? cidrParts(r.dst, r.family) : undefined;
  const src = r.src !== undefined ? cidrParts(r.src, r.family) : undefined;
  const table = r.table ?? (forDelete ? 0 : 254);
  const action = r.action ?? (forDelete && r.table === undefined ? 0 : RuleAction.toTable);
  w.u8(afOf(r.family)).u8(dst?.prefix ?? 0).u8(src?.prefix ?? 0).u8(0)
    .u8(table < 256 ? table : 0).u8(0).u8(0).u8(action).u32(r.invert ? FIB_RULE_INVERT : 0);
  // Attribute order as iproute2 emits `ip rule add from S to D fwmark M/K iif I oif O pref N table T`.
  if (src) w.attr(FRA_SRC, src.addr);
  if (dst) w.attr(FRA_DST, dst.addr);
  if (r.fwmark !== undefined) w.attrU32(FRA_FWMARK, r.fwmark);
  if (r.fwmask !== undefined) w.attrU32(FRA_FWMASK, r.fwmask);
  if (r.iif !== undefined) w.attrString(FRA_IIFNAME, r.iif);
  if (r.oif !== undefined) w.attrString(FRA_OIFNAME, r.oif);
  if (r.priority !== undefined) w.attrU32(FRA_PRIORITY, r.priority);
  if (table >= 256) w.attrU32(FRA_TABLE, table);
  if (r.protocol !== undefined) w.attrU8(FRA_PROTOCOL, r.protocol);
}

/** Body of an RTM_GETRULE dump. */
export function encodeRuleDump(w: NlWriter, family?: Family): void {
  w.u8(family ? afOf(family) : 0).u8(0).u8(0).u8(0).u8(0).u8(0).u8(0).u8(0).u32(0);
}

/** Decodes RTM_NEWRULE/RTM_DELRULE. */
export function decodeRule(m: NlMsg): Rule | undefined {
  return decoding("rule", () => {
    const dv = fixed(m.payload, 12, "fib_rule_hdr");
    const family = familyOfAf(dv.getUint8(0));
    if (!family) return undefined;
    const a = attrMap(m.payload.subarray(12));
    const r: Rule = {
      family,
      table: a.has(FRA_TABLE) ? read.u32(a.get(FRA_TABLE)!) : dv.getUint8(4),
      action: dv.getUint8(7),
      priority: a.has(FRA_PRIORITY) ? read.u32(a.get(FRA_PRIORITY)!) : 0,
    };
    if (dv.getUint32(8, true) & FIB_RULE_INVERT) r.invert = true;
    const dst = a.get(FRA_DST);
    if (dst) r.dst = `${formatIP(dst)}/${dv.getUint8(1)}`;
    const src = a.get(FRA_SRC);
    if (src) r.src = `${formatIP(src)}/${dv.getUint8(2)}`;
    const mark = a.get(FRA_FWMARK);
    if (mark) r.fwmark = read.u32(mark);
    const mask = a.get(FRA_FWMASK);
    if (mask) r.fwmask = read.u32(mask);
    const iif = a.get(FRA_IIFNAME);
    if (iif) r.iif = read.str(iif);
    const oif = a.get(FRA_OIFNAME);
    if (oif) r.oif = read.str(oif);
    const proto = a.get(FRA_PROTOCOL);
    if (proto) r.protocol = read.u8(proto);
    return r;
  });
}

// ---------------------------------------------------------------- neighbours

/** Body of RTM_NEWNEIGH/RTM_DELNEIGH. */
export function encodeNeigh(w: NlWriter, n: Neighbour): void {
  w.u8(afOf(n.family)).u8(0).u16(0).i32(n.dev).u16(n.state ?? 0x80).u8(n.flags ?? 0).u8(0);
  w.attr(NDA_DST, ipBytes(n.dst, n.family));
  if (n.lladdr !== undefined) w.attr(NDA_LLADDR, macBytes(n.lladdr));
}

/** Body of an RTM_GETNEIGH dump. */
export function encodeNeighDump(w: NlWriter, family?: Family): void {
  w.u8(family ? afOf(family) : 0).u8(0).u16(0).i32(0).u16(0).u8(0).u8(0);
}

/** Decodes RTM_NEWNEIGH/RTM_DELNEIGH; undefined for families other than IPv4/IPv6. */
export function decodeNeigh(m: NlMsg): Neighbour | undefined {
  return decoding("neighbour", () => {
    const dv = fixed(m.payload, 12, "ndmsg");
    const family = familyOfAf(dv.getUint8(0));
    if (!family) return undefined;
    const a = attrMap(m.payload.subarray(12));
    const dst = a.get(NDA_DST);
    if (!dst) throw new NetlinkDecodeError("missing NDA_DST");
    const n: Neighbour = {
      family,
      dev: dv.getInt32(4, true),
      dst: formatIP(dst),
      state: dv.getUint16(8, true),
      flags: dv.getUint8(10),
    };
    const ll = a.get(NDA_LLADDR);
    if (ll && ll.length === 6) n.lladdr = formatMac(ll);
    return n;
  });
}

/** Lists the attribute types of a payload after a fixed header (for tests and debugging). */
export function attrTypes(payload: Uint8Array, headerLen: number): number[] {
  return parseAttrs(payload.subarray(headerLen)).map((a) => a.type);
}
