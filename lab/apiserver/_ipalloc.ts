/**
 * Allocators for Service cluster IPs (one per service CIDR, IPv4 or IPv6, `--service-cluster-ip-range`)
 * and node ports (`--service-node-port-range`), as the real API server's registries: no address or port
 * is ever handed out twice while it is in use.
 */
import { formatIP, parseIP } from "../../ffi/mod.ts";

export type IpFamily = "IPv4" | "IPv6";

/**
 * An IPv4 or IPv6 address as a number (bigint), with its family; undefined if `s` is not one. The text
 * is read by the tree's one IP parser (ffi/ip.ts) after dropping leading zeros of decimal octets, since
 * kube-apiserver reads IPs with k8s.io/utils' ParseIPSloppy, which keeps Go's pre-1.17 acceptance of
 * `010.0.0.1` as 10.0.0.1 for stored objects.
 */
export function parseIp(s: string): { family: IpFamily; n: bigint } | undefined {
  const ip = parseIP(s.replace(/(^|[.:])0+(?=\d)/g, "$1"));
  if (!ip) return undefined;
  let n = 0n;
  for (const byte of ip.addr) n = (n << 8n) | BigInt(byte);
  return { family: ip.family === 4 ? "IPv4" : "IPv6", n };
}

/** The canonical text of an address (RFC 5952 for IPv6: lower case, longest zero run as `::`). */
export function formatIp(family: IpFamily, n: bigint): string {
  const bytes = new Uint8Array(family === "IPv4" ? 4 : 16);
  for (let i = bytes.length - 1; i >= 0; i--, n >>= 8n) bytes[i] = Number(n & 0xffn);
  return formatIP(bytes);
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
