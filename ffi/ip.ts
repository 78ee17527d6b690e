/**
 * IP addresses and CIDRs as text and bytes: parsing, RFC 5952 formatting, containment. Pure, no I/O.
 *
 * It lives in ffi/, the ground floor, because the kernel codecs (rtnetlink, conntrack, sockaddr) need it
 * and ffi/ imports nothing from above; core/ (flag validation) and the modules import it from
 * ffi/mod.ts like any other ffi export, so there is one parser for the whole tree.
 */

/** An IP family, as the kernel codecs and the agent's config count it (AF_INET is 4, AF_INET6 is 6). */
export type Family = 4 | 6;

export interface Cidr {
  family: Family;
  /** Network address bytes (4 or 16), host bits cleared. */
  addr: Uint8Array;
  prefix: number;
}

/**
 * Parses dotted-quad IPv4 in `s[start, end)` without allocating; returns the address as an unsigned
 * 32-bit number, or -1 when malformed (leading zeros, octets over 255, wrong number of parts). The route
 * encoder calls it per route, so it allocates nothing; `parseIPv4` is this plus the bytes.
 */
export function parseIPv4Fast(s: string, start = 0, end = s.length): number {
  let acc = 0, part = 0, digits = 0, dots = 0;
  for (let i = start; i < end; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || part > 255 || dots === 3) return -1;
      acc = acc * 256 + part;
      part = 0;
      digits = 0;
      dots++;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && part === 0) return -1;
      part = part * 10 + (c - 48);
      if (++digits > 3) return -1;
    } else {
      return -1;
    }
  }
  if (dots !== 3 || digits === 0 || part > 255) return -1;
  return acc * 256 + part;
}

/** Parses dotted-quad IPv4 into its 4 bytes; undefined if malformed. */
export function parseIPv4(s: string): Uint8Array | undefined {
  const n = parseIPv4Fast(s);
  if (n < 0) return undefined;
  return new Uint8Array([n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff]);
}

/** Parses IPv6 (with `::` compression and an optional embedded IPv4 tail); undefined if malformed. */
export function parseIPv6(s: string): Uint8Array | undefined {
  if (s.length < 2 || s.length > 45 || !/^[0-9a-fA-F:.]+$/.test(s)) return undefined;
  let tail: Uint8Array | undefined;
  let text = s;
  const lastColon = s.lastIndexOf(":");
  if (s.indexOf(".", lastColon) > 0) {
    tail = parseIPv4(s.slice(lastColon + 1));
    if (!tail) return undefined;
    text = s.slice(0, lastColon + 1) + "0:0";
  }
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const head = halves[0] ? halves[0].split(":") : [];
  const rest = halves.length === 2 ? (halves[1] ? halves[1].split(":") : []) : undefined;
  const groups = rest === undefined ? head : head;
  if (rest === undefined && groups.length !== 8) return undefined;
  if (rest !== undefined && head.length + rest.length > 7) return undefined;
  const words: number[] = [];
  const push = (g: string) => {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return false;
    words.push(parseInt(g, 16));
    return true;
  };
  for (const g of head) if (!push(g)) return undefined;
  if (rest !== undefined) {
    const fill = 8 - head.length - rest.length;
    for (let i = 0; i < fill; i++) words.push(0);
    for (const g of rest) if (!push(g)) return undefined;
  }
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[i * 2] = words[i]! >> 8;
    out[i * 2 + 1] = words[i]! & 0xff;
  }
  if (tail) out.set(tail, 12);
  return out;
}

/** Parses an IPv4 or IPv6 address. */
export function parseIP(s: string): { family: Family; addr: Uint8Array } | undefined {
  const v4 = parseIPv4(s);
  if (v4) return { family: 4, addr: v4 };
  const v6 = parseIPv6(s);
  if (v6) return { family: 6, addr: v6 };
  return undefined;
}

/** Parses `addr/prefix`; host bits are cleared (as Go's net.ParseCIDR returns the network). */
export function parseCidr(s: string): Cidr | undefined {
  const slash = s.indexOf("/");
  if (slash < 0) return undefined;
  const ip = parseIP(s.slice(0, slash));
  const ptext = s.slice(slash + 1);
  if (!ip || !/^\d{1,3}$/.test(ptext)) return undefined;
  const prefix = Number(ptext);
  if (prefix > ip.addr.length * 8) return undefined;
  const addr = ip.addr.slice();
  for (let bit = prefix; bit < addr.length * 8; bit++) addr[bit >> 3]! &= ~(0x80 >> (bit & 7));
  return { family: ip.family, addr, prefix };
}

export function formatIP(addr: Uint8Array): string {
  if (addr.length === 4) return addr.join(".");
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push((addr[i]! << 8) | addr[i + 1]!);
  // Longest run of zero words (length >= 2) becomes "::" (RFC 5952).
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) [bestStart, bestLen] = [i, j - i];
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestStart < 0) return hex.join(":");
  const left = hex.slice(0, bestStart).join(":");
  const right = hex.slice(bestStart + bestLen).join(":");
  return `${left}::${right}`;
}

export function formatCidr(c: Cidr): string {
  return `${formatIP(c.addr)}/${c.prefix}`;
}

/** Whether `addr` (same family) lies inside `c`. */
export function cidrContains(c: Cidr, addr: Uint8Array): boolean {
  if (addr.length !== c.addr.length) return false;
  for (let bit = 0; bit < c.prefix; bit++) {
    const mask = 0x80 >> (bit & 7);
    if ((addr[bit >> 3]! & mask) !== (c.addr[bit >> 3]! & mask)) return false;
  }
  return true;
}

/** Parses an address (of `family` when given) into its bytes; throws TypeError when malformed. */
export function ipBytes(s: string, family?: Family): Uint8Array {
  const ip = parseIP(s);
  if (!ip || (family !== undefined && ip.family !== family)) {
    throw new TypeError(`invalid IPv${family ?? "4/6"} address: ${JSON.stringify(s)}`);
  }
  return ip.addr;
}

/** Splits "a.b.c.d/len" (host bits kept) into bytes and prefix length. */
export function cidrParts(s: string, family?: Family): { family: Family; addr: Uint8Array; prefix: number } {
  const slash = s.indexOf("/");
  const ip = parseIP(slash < 0 ? s : s.slice(0, slash));
  if (!ip || (family !== undefined && ip.family !== family)) {
    throw new TypeError(`invalid CIDR: ${JSON.stringify(s)}`);
  }
  const max = ip.family === 4 ? 32 : 128;
  const prefix = slash < 0 ? max : Number(s.slice(slash + 1));
  if (
    !Number.isInteger(prefix) || prefix < 0 || prefix > max ||
    (slash >= 0 && !/^\d+$/.test(s.slice(slash + 1)))
  ) {
    throw new TypeError(`invalid prefix length in ${JSON.stringify(s)}`);
  }
  return { family: ip.family, addr: ip.addr, prefix };
}
