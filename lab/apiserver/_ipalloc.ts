/**
 * Allocators for Service cluster IPs (from the service CIDR, `--service-cluster-ip-range`) and node
 * ports (`--service-node-port-range`), as the real API server's registries: no address or port is ever
 * handed out twice while it is in use.
 */

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
  #used = new Map<number, T>();
  #next: number;
  /** `skipFirst`: never hand out `first` dynamically (it may still be reserved explicitly). */
  constructor(readonly first: number, readonly last: number, readonly skipFirst = false) {
    this.#next = skipFirst && last > first ? first + 1 : first;
  }
  inRange(n: number): boolean {
    return n >= this.first && n <= this.last;
  }
  owner(n: number): T | undefined {
    return this.#used.get(n);
  }
  reserve(n: number, owner: T): void {
    this.#used.set(n, owner);
  }
  release(n: number): void {
    this.#used.delete(n);
  }
  /** The next free value after the last one handed out (wrapping), or undefined when full. */
  allocate(owner: T): number | undefined {
    const size = this.last - this.first + 1;
    for (let i = 0; i < size; i++) {
      const n = this.first + ((this.#next - this.first + i) % size);
      if (this.skipFirst && n === this.first) continue;
      if (!this.#used.has(n)) {
        this.#used.set(n, owner);
        this.#next = n + 1 > this.last ? this.first : n + 1;
        return n;
      }
    }
    return undefined;
  }
}

/**
 * Cluster IPs of one IPv4 service CIDR; the network and broadcast addresses are never handed out, and
 * the first address only on request: kube-apiserver keeps it for the `kubernetes` Service.
 */
export class ClusterIpAllocator {
  readonly cidr: string;
  #range: RangeAllocator<string>;
  constructor(cidr: string) {
    const [addr, lenText] = cidr.split("/");
    const base = parseIpv4(addr ?? "");
    const len = Number(lenText);
    if (base === undefined || !Number.isInteger(len) || len < 8 || len > 30) {
      throw new RangeError(`service CIDR must be an IPv4 prefix between /8 and /30, got "${cidr}"`);
    }
    const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
    const network = (base & mask) >>> 0;
    this.cidr = `${formatIpv4(network)}/${len}`;
    this.#range = new RangeAllocator(network + 1, ((network | (~mask >>> 0)) >>> 0) - 1, true);
  }
  /** Why `ip` cannot be given to `owner`, or undefined if it can. */
  check(ip: string, owner: string): string | undefined {
    const n = parseIpv4(ip);
    if (n === undefined) return `must be a valid IP address`;
    if (!this.#range.inRange(n)) {
      return `provided IP is not in the valid range. The range of valid IPs is ${this.cidr}`;
    }
    const o = this.#range.owner(n);
    if (o !== undefined && o !== owner) return `provided IP is already allocated`;
    return undefined;
  }
  reserve(ip: string, owner: string): void {
    const n = parseIpv4(ip);
    if (n !== undefined) this.#range.reserve(n, owner);
  }
  release(ip: string): void {
    const n = parseIpv4(ip);
    if (n !== undefined) this.#range.release(n);
  }
  /** The address kept for the `kubernetes` Service (the first of the range). */
  get first(): string {
    return formatIpv4(this.#range.first);
  }
  allocate(owner: string): string | undefined {
    const n = this.#range.allocate(owner);
    return n === undefined ? undefined : formatIpv4(n);
  }
}

/** Node ports from a range such as 30000-32767. */
export class NodePortAllocator {
  #range: RangeAllocator<string>;
  constructor(readonly range: readonly [number, number]) {
    if (!(range[0] >= 1 && range[1] <= 65535 && range[0] <= range[1])) {
      throw new RangeError(`bad node port range ${range.join("-")}`);
    }
    this.#range = new RangeAllocator(range[0], range[1]);
  }
  check(port: number, owner: string): string | undefined {
    if (!this.#range.inRange(port)) {
      return `provided port is not in the valid range. The range of valid ports is ${this.range.join("-")}`;
    }
    const o = this.#range.owner(port);
    if (o !== undefined && o !== owner) return `provided port is already allocated`;
    return undefined;
  }
  reserve(port: number, owner: string): void {
    this.#range.reserve(port, owner);
  }
  release(port: number): void {
    this.#range.release(port);
  }
  allocate(owner: string): number | undefined {
    return this.#range.allocate(owner);
  }
}
