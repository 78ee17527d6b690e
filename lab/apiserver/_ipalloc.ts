/**
 * Allocators for Service cluster IPs (one per service CIDR, IPv4 or IPv6, `--service-cluster-ip-range`)
 * and node ports (`--service-node-port-range`), as the real API server's registries: no address or port
 * is ever handed out twice while it is in use.
 */

export type IpFamily = "IPv4" | "IPv6";

/** An IPv4 or IPv6 address as a number (bigint), with its family; undefined if `s` is not one. */
export function parseIp(s: string): { family: IpFamily; n: bigint } | undefined {
  const v4 = parseIpv4(s);
  if (v4 !== undefined) return { family: "IPv4", n: BigInt(v4) };
  if (!s.includes(":") || s.includes("%")) return undefined;
  let text = s;
  // A trailing dotted quad (::ffff:1.2.3.4) is two groups.
  const dot = /:(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (dot) {
    const n = parseIpv4(dot[1]!);
    if (n === undefined) return undefined;
    text = `${text.slice(0, dot.index)}:${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const halves = text.split("::");
  if (halves.length > 2) return undefined;
  const groups = (h: string) => (h === "" ? [] : h.split(":"));
  const head = groups(halves[0]!), tail = halves.length === 2 ? groups(halves[1]!) : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return undefined;
  const all = [...head, ...Array(halves.length === 2 ? missing : 0).fill("0"), ...tail];
  let n = 0n;
  for (const g of all) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return undefined;
    n = (n << 16n) | BigInt(parseInt(g, 16));
  }
  return { family: "IPv6", n };
}

/** The canonical text of an address (RFC 5952 for IPv6: lower case, longest zero run as `::`). */
export function formatIp(family: IpFamily, n: bigint): string {
  if (family === "IPv4") return formatIpv4(Number(n));
  const g = Array.from({ length: 8 }, (_, i) => Number((n >> BigInt(112 - 16 * i)) & 0xffffn));
  let best = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(":");
  return `${hex.slice(0, best).join(":")}::${hex.slice(best + bestLen).join(":")}`;
}

export function parseIpv4(s: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

export function formatIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

/** Sequential first-free allocation over a range of integers, with explicit reservations. */
class RangeAllocator<T> {
  #used = new Map<bigint, T>();
  #next: bigint;
  /** `skipFirst`: never hand out `first` dynamically (it may still be reserved explicitly). */
  constructor(readonly first: bigint, readonly last: bigint, readonly skipFirst = false) {
    this.#next = skipFirst && last > first ? first + 1n : first;
  }
  inRange(n: bigint): boolean {
    return n >= this.first && n <= this.last;
  }
  owner(n: bigint): T | undefined {
    return this.#used.get(n);
  }
  reserve(n: bigint, owner: T): void {
    this.#used.set(n, owner);
  }
  release(n: bigint): void {
    this.#used.delete(n);
  }
  get used(): number {
    return this.#used.size;
  }
  /** The next free value after the last one handed out (wrapping), or undefined when full. */
  allocate(owner: T): bigint | undefined {
    const size = this.last - this.first + 1n;
    // Nothing free: stop before walking a huge (IPv6) range value by value.
    if (BigInt(this.#used.size) >= size - (this.skipFirst ? 1n : 0n)) return undefined;
    for (let i = 0n; i < size; i++) {
      const n = this.first + ((this.#next - this.first + i) % size);
      if (this.skipFirst && n === this.first) continue;
      if (!this.#used.has(n)) {
        this.#used.set(n, owner);
        this.#next = n + 1n > this.last ? this.first : n + 1n;
        return n;
      }
    }
    return undefined;
  }
}

/**
 * Cluster IPs of one service CIDR (IPv4 from /8 to /30, IPv6 from /64 to /126); the network address
 * (and for IPv4 the broadcast address) is never handed out, and the first address only on request:
 * kube-apiserver keeps it for the `kubernetes` Service.
 */
export class ClusterIpAllocator {
  readonly cidr: string;
  readonly family: IpFamily;
  #range: RangeAllocator<string>;
  constructor(cidr: string) {
    const [addr, lenText] = cidr.split("/");
    const base = parseIp(addr ?? "");
    const len = Number(lenText);
    const bits = base?.family === "IPv6" ? 128 : 32;
    const ok = base && Number.isInteger(len) &&
      (base.family === "IPv4" ? len >= 8 && len <= 30 : len >= 64 && len <= 126);
    if (!base || !ok) {
      throw new RangeError(
        `service CIDR must be an IPv4 prefix between /8 and /30 or an IPv6 prefix between /64 and /126, got "${cidr}"`,
      );
    }
    this.family = base.family;
    const host = (1n << BigInt(bits - len)) - 1n;
    const network = base.n & ~host & ((1n << BigInt(bits)) - 1n);
    this.cidr = `${formatIp(this.family, network)}/${len}`;
    const last = this.family === "IPv4" ? network + host - 1n : network + host;
    this.#range = new RangeAllocator(network + 1n, last, true);
  }
  /** Why `ip` cannot be given to `owner`, or undefined if it can. */
  check(ip: string, owner: string): string | undefined {
    const p = parseIp(ip);
    if (!p) return `must be a valid IP address`;
    if (p.family !== this.family || !this.#range.inRange(p.n)) {
      return `provided IP is not in the valid range. The range of valid IPs is ${this.cidr}`;
    }
    const o = this.#range.owner(p.n);
    if (o !== undefined && o !== owner) return `provided IP is already allocated`;
    return undefined;
  }
  reserve(ip: string, owner: string): void {
    const p = parseIp(ip);
    if (p?.family === this.family) this.#range.reserve(p.n, owner);
  }
  release(ip: string): void {
    const p = parseIp(ip);
    if (p?.family === this.family) this.#range.release(p.n);
  }
  /** The address kept for the `kubernetes` Service (the first of the range). */
  get first(): string {
    return formatIp(this.family, this.#range.first);
  }
  /** Addresses in use. */
  get used(): number {
    return this.#range.used;
  }
  allocate(owner: string): string | undefined {
    const n = this.#range.allocate(owner);
    return n === undefined ? undefined : formatIp(this.family, n);
  }
}

/** Node ports from a range such as 30000-32767. */
export class NodePortAllocator {
  #range: RangeAllocator<string>;
  constructor(readonly range: readonly [number, number]) {
    if (!(range[0] >= 1 && range[1] <= 65535 && range[0] <= range[1])) {
      throw new RangeError(`bad node port range ${range.join("-")}`);
    }
    this.#range = new RangeAllocator(BigInt(range[0]), BigInt(range[1]));
  }
  check(port: number, owner: string): string | undefined {
    if (!Number.isInteger(port) || !this.#range.inRange(BigInt(port))) {
      return `provided port is not in the valid range. The range of valid ports is ${this.range.join("-")}`;
    }
    const o = this.#range.owner(BigInt(port));
    if (o !== undefined && o !== owner) return `provided port is already allocated`;
    return undefined;
  }
  reserve(port: number, owner: string): void {
    this.#range.reserve(BigInt(port), owner);
  }
  release(port: number): void {
    this.#range.release(BigInt(port));
  }
  get used(): number {
    return this.#range.used;
  }
  allocate(owner: string): number | undefined {
    const n = this.#range.allocate(owner);
    return n === undefined ? undefined : Number(n);
  }
}
