/** Shared BGP value types: address families, prefixes, path attributes and routes. Pure data, no I/O. */

/** The two address families the speaker carries; both may share one session (RFC 4760). */
export type Family = "ipv4-unicast" | "ipv6-unicast";
export const FAMILIES: readonly Family[] = ["ipv4-unicast", "ipv6-unicast"];

export const AFI_IPV4 = 1;
export const AFI_IPV6 = 2;
export const SAFI_UNICAST = 1;

export function familyOf(afi: number, safi: number): Family | undefined {
  if (safi !== SAFI_UNICAST) return undefined;
  if (afi === AFI_IPV4) return "ipv4-unicast";
  if (afi === AFI_IPV6) return "ipv6-unicast";
  return undefined;
}

export function afiOf(f: Family): number {
  return f === "ipv4-unicast" ? AFI_IPV4 : AFI_IPV6;
}

export const ORIGIN_IGP = 0;
export const ORIGIN_EGP = 1;
export const ORIGIN_INCOMPLETE = 2;

/** AS_PATH segment types (RFC 4271 4.3). */
export const AS_SET = 1;
export const AS_SEQUENCE = 2;
export const AS_CONFED_SEQUENCE = 3;
export const AS_CONFED_SET = 4;

export interface AsPathSegment {
  type: number;
  asns: number[];
}

/** An attribute the speaker does not interpret, kept to pass it on when it is optional transitive. */
export interface RawAttribute {
  flags: number;
  type: number;
  value: Uint8Array;
}

/** The path attributes of one route; next hop lives here too (from NEXT_HOP or MP_REACH_NLRI). */
export interface PathAttributes {
  origin: number;
  asPath: AsPathSegment[];
  /** IPv4 or IPv6 text; for IPv6 the global address (a link-local second next hop is kept apart). */
  nextHop: string;
  linkLocalNextHop?: string;
  med?: number;
  localPref?: number;
  atomicAggregate?: boolean;
  aggregator?: { asn: number; address: string };
  /** RFC 1997 communities as 32-bit numbers (high 16 bits ASN, low 16 bits value). */
  communities?: number[];
  /** RFC 4456 route reflection attributes. */
  originatorId?: string;
  clusterList?: string[];
  /** Optional transitive attributes we carry without understanding them. */
  unknown?: RawAttribute[];
}

/** One path to a prefix as held in a RIB. */
export interface Route {
  family: Family;
  /** `addr/len` text, host bits cleared. */
  prefix: string;
  attrs: PathAttributes;
}

/** Well-known communities (RFC 1997). */
export const NO_EXPORT = 0xffffff01;
export const NO_ADVERTISE = 0xffffff02;
export const NO_EXPORT_SUBCONFED = 0xffffff03;

/** Parses `65000:100`, a plain 32-bit number, or a well-known name. */
export function parseCommunity(s: string): number | undefined {
  const named: Record<string, number> = {
    "no-export": NO_EXPORT,
    "no-advertise": NO_ADVERTISE,
    "no-export-subconfed": NO_EXPORT_SUBCONFED,
  };
  const n = named[s.toLowerCase()];
  if (n !== undefined) return n;
  const m = /^(\d{1,5}):(\d{1,5})$/.exec(s);
  if (m) {
    const hi = Number(m[1]), lo = Number(m[2]);
    if (hi > 0xffff || lo > 0xffff) return undefined;
    return hi * 65536 + lo;
  }
  if (/^\d{1,10}$/.test(s)) {
    const v = Number(s);
    return v <= 0xffffffff ? v : undefined;
  }
  return undefined;
}

export function formatCommunity(c: number): string {
  return `${Math.floor(c / 65536)}:${c & 0xffff}`;
}

/** The AS_PATH as GoBGP prints it: `65001 65002 {65003,65004}`. */
export function formatAsPath(path: AsPathSegment[]): string {
  return path.map((s) =>
    s.type === AS_SET || s.type === AS_CONFED_SET ? `{${s.asns.join(",")}}` : s.asns.join(" ")
  ).filter((s) => s !== "").join(" ");
}

/** AS_PATH length for the decision process: a set counts as one, confederation segments as zero. */
export function asPathLength(path: AsPathSegment[]): number {
  let n = 0;
  for (const s of path) {
    if (s.type === AS_SEQUENCE) n += s.asns.length;
    else if (s.type === AS_SET) n += 1;
  }
  return n;
}

/** The first AS of the path (the neighbour AS for eBGP), or undefined for an empty path. */
export function firstAs(path: AsPathSegment[]): number | undefined {
  for (const s of path) {
    if (s.type === AS_SEQUENCE && s.asns.length > 0) return s.asns[0];
    if (s.type === AS_SET) return undefined;
  }
  return undefined;
}

export function originName(o: number): string {
  return o === ORIGIN_IGP ? "i" : o === ORIGIN_EGP ? "e" : "?";
}
