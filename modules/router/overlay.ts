/**
 * Overlay tunnels to nodes the router cannot reach directly (kube-router's `--enable-overlay`): pod
 * traffic for such a node is wrapped in VXLAN and sent to the node's own address, so the routers in
 * between never need to know the pod CIDRs.
 *
 * One VXLAN device per underlay family (`kube-vxlan` for IPv4 node addresses, `kube-vxlan6` for IPv6),
 * flannel-style, rather than one device per peer: Linux refuses two VXLAN devices with the same VNI and
 * UDP port, so per-peer devices would need per-pair VNIs. Each node's VTEP MAC is derived from its node
 * address (`vtepMac`), so every node knows every other node's MAC without asking; per remote node the
 * device gets a permanent neighbour entry (remote node IP -> its MAC) and a permanent FDB entry (its MAC
 * -> its node IP), and the router routes the remote pod CIDRs via the remote node IP on the device (for
 * IPv6, via the link-local address of the remote VTEP instead: see `vtepNextHop`):
 *
 * ```
 * ip link add kube-vxlan address 0a:58:c0:a8:01:64 mtu 1450 type vxlan id 19282 local 192.168.1.100 \
 *   dev eth0 dstport 4789 nolearning && ip link set kube-vxlan up
 * ip neigh replace 192.168.2.100 lladdr 0a:58:c0:a8:02:64 dev kube-vxlan nud permanent
 * bridge fdb replace 0a:58:c0:a8:02:64 dst 192.168.2.100 dev kube-vxlan self permanent
 * ip route replace 10.1.2.0/24 via 192.168.2.100 dev kube-vxlan onlink proto 17   # by RouteSync
 * ```
 *
 * IPv6 (kube-vxlan6, `local` an IPv6 node address):
 *
 * ```
 * ip -6 neigh replace fe80::859:27ff:fe2e:fe7 lladdr 0a:59:27:2e:0f:e7 dev kube-vxlan6 nud permanent
 * bridge fdb replace 0a:59:27:2e:0f:e7 dst fd00:2::100 dev kube-vxlan6 self permanent
 * ip -6 route replace fd01:2::/64 via fe80::859:27ff:fe2e:fe7 dev kube-vxlan6 proto 17
 * ```
 *
 * This is `--overlay-encap=vxlan`. kube-router's default encapsulations, IPIP and FoU, are tunnels.ts
 * (one `tun-…` device per remote node); the router uses one or the other, and clears the one not in use.
 */
import type { Logger } from "../../core/mod.ts";
import {
  type Cidr,
  cidrContains,
  type Family,
  type Fdb,
  type FdbEntry,
  formatCidr,
  formatIP,
  isNotFound,
  type Link,
  type LinkSpec,
  type Neighbour,
  NeighState,
  parseCidr,
  parseIP,
  type Rtnl,
} from "../../ffi/mod.ts";
import type { WantedRoute } from "./route_sync.ts";

/** The IPv4-underlay VXLAN device. */
export const VXLAN_DEVICE = "kube-vxlan";
/** The IPv6-underlay VXLAN device (a VXLAN device carries one underlay family only). */
export const VXLAN6_DEVICE = "kube-vxlan6";
/**
 * VNI of the router's VXLAN network: 0x4b52 ("KR"). Any constant works as long as every node agrees;
 * this one avoids the VNIs other CNIs use by default (flannel 1, Calico 4096, Docker overlay 4096+).
 */
export const OVERLAY_VNI = 0x4b52;
/** IANA's VXLAN port, kube-router's default `--overlay-encap-port` for VXLAN. */
export const VXLAN_PORT = 4789;
/** Bytes VXLAN adds over IPv4: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14. */
export const VXLAN_OVERHEAD_V4 = 50;
/** Bytes VXLAN adds over IPv6: outer IPv6 40 + UDP 8 + VXLAN 8 + inner Ethernet 14. */
export const VXLAN_OVERHEAD_V6 = 70;

const IFF_LOOPBACK = 0x8;

/** `--overlay-type`: `subnet` tunnels only to nodes in other subnets, `full` to every node. */
export type OverlayMode = "subnet" | "full";

/** Overlay setup failed in a way a retry will not fix by itself (e.g. the node address is not local). */
export class OverlayError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "OverlayError";
  }
}

/**
 * Whether traffic to the node at `remoteIp` must be tunnelled: always in `full` mode; in `subnet` mode
 * when the address lies in none of our connected subnets (`localCidrs`) of its family. An unparsable
 * address needs no tunnel (there is nothing to tunnel to).
 */
export function needsTunnel(mode: OverlayMode, localCidrs: readonly Cidr[], remoteIp: string): boolean {
  const ip = parseIP(remoteIp);
  if (!ip) return false;
  if (mode === "full") return true;
  return !localCidrs.some((c) => c.family === ip.family && cidrContains(c, ip.addr));
}

function hex2(b: number): string {
  return b.toString(16).padStart(2, "0");
}

/** FNV-1a, 32 bits: a stable, well-spread hash every node computes the same way. */
function fnv1a32(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (const b of bytes) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h >>> 0;
}

/**
 * The VTEP MAC of the node whose underlay address is `ip`: locally administered unicast, `0a:58:` plus
 * the four IPv4 bytes, or `0a:59:` plus a 32-bit FNV-1a hash of the IPv6 address (IPv6 nodes in different
 * subnets often share their low bits, e.g. `fd00:1::100` and `fd00:2::100`, so no fixed slice of the
 * address will do; `Overlay.sync` detects the rare hash collision). Throws TypeError for an invalid address.
 */
export function vtepMac(ip: string): string {
  const p = parseIP(ip);
  if (!p) throw new TypeError(`invalid node address ${JSON.stringify(ip)}`);
  const h = fnv1a32(p.addr);
  const tail = p.family === 4 ? [...p.addr] : [h >>> 24, (h >>> 16) & 0xff, (h >>> 8) & 0xff, h & 0xff];
  return [0x0a, p.family === 4 ? 0x58 : 0x59, ...tail].map(hex2).join(":");
}

/**
 * The next hop through which routes reach the node at `ip` on the VXLAN device: the node address itself
 * for IPv4 (with `onlink`), or for IPv6 the EUI-64 link-local address of the node's VTEP MAC (what its
 * kube-vxlan6 configures for itself). IPv6 needs that because the kernel refuses an `onlink` gateway that
 * another, non-default route already reaches through another device ("Nexthop has invalid gateway or
 * device mismatch"), and the node's own underlay route to the remote subnet is exactly such a route.
 */
export function vtepNextHop(ip: string): string {
  const p = parseIP(ip);
  if (!p) throw new TypeError(`invalid node address ${JSON.stringify(ip)}`);
  if (p.family === 4) return formatIP(p.addr);
  const m = vtepMac(ip).split(":").map((x) => parseInt(x, 16));
  const ll = new Uint8Array(16);
  ll.set([0xfe, 0x80]);
  ll.set([m[0]! ^ 0x02, m[1]!, m[2]!, 0xff, 0xfe, m[3]!, m[4]!, m[5]!], 8);
  return formatIP(ll);
}

/** Name of the VXLAN device for an underlay family. */
export function vxlanDevice(family: Family): string {
  return family === 4 ? VXLAN_DEVICE : VXLAN6_DEVICE;
}

/** A node reached through the tunnel: its node (underlay) address and its pod CIDRs. */
export interface OverlayRemote {
  nodeIp: string;
  podCidrs: string[];
}

/** A best route learned over BGP: a pod CIDR and the node address it was announced with. */
export interface LearnedRoute {
  prefix: string;
  nextHop: string;
}

/** What `planTunnels` decides: routes to install via their next hop, and nodes to reach by tunnel. */
export interface TunnelPlan {
  /** Routes whose next hop is reached directly (same subnet in `subnet` mode, or not a node). */
  direct: LearnedRoute[];
  /** Nodes that need the tunnel, with the prefixes learned from each; pass to `Overlay.sync`. */
  remotes: OverlayRemote[];
}

/**
 * Splits learned routes between direct routes and tunnels, as kube-router does with `--enable-overlay`:
 * a route goes through the tunnel when `needsTunnel(mode, localCidrs, nextHop)` and, given `nodeIps`,
 * its next hop is a cluster node (only nodes run the other end of the tunnel; an external BGP peer's
 * routes never are). Routes to one next hop are grouped into one remote, in first-seen order.
 */
export function planTunnels(
  mode: OverlayMode,
  localCidrs: readonly Cidr[],
  learned: readonly LearnedRoute[],
  nodeIps?: Iterable<string>,
): TunnelPlan {
  const nodes = nodeIps === undefined ? undefined : new Set([...nodeIps].flatMap((ip) => {
    const p = parseIP(ip);
    return p ? [formatIP(p.addr)] : [];
  }));
  const direct: LearnedRoute[] = [];
  const byHop = new Map<string, string[]>();
  for (const r of learned) {
    const hop = parseIP(r.nextHop);
    const key = hop && formatIP(hop.addr);
    if (!key || !needsTunnel(mode, localCidrs, key) || (nodes && !nodes.has(key))) {
      direct.push(r);
      continue;
    }
    const list = byHop.get(key) ?? [];
    if (!list.includes(r.prefix)) list.push(r.prefix);
    byHop.set(key, list);
  }
  return { direct, remotes: [...byHop].map(([nodeIp, podCidrs]) => ({ nodeIp, podCidrs })) };
}

/** This node's underlay address. */
export interface OverlayLocal {
  ip: string;
  family: Family;
}

export interface OverlayOptions {
  /** UDP destination port (`--overlay-encap-port` with `--overlay-encap=vxlan`, else 4789). */
  port: number;
  /** VNI; defaults to OVERLAY_VNI. Must be the same on every node. */
  vni?: number;
}

function sameIp(a: string | undefined, b: string): boolean {
  if (a === undefined) return false;
  const x = parseIP(a), y = parseIP(b);
  return !!x && !!y && x.family === y.family && x.addr.every((v, i) => v === y.addr[i]);
}

function normIp(s: string): string {
  return formatIP(parseIP(s)!.addr);
}

/** What a node address means for the tunnel; computed once per address. */
interface Vtep {
  /** Canonical address. */
  ip: string;
  family: Family;
  mac: string;
  hop: string;
}

/** A remote to reach, with its pod CIDRs of the underlay family. */
interface Wanted extends Vtep {
  cidrs: string[];
}

const VTEP_CACHE_MAX = 65536;

/**
 * Keeps the VXLAN devices, their neighbour and FDB entries equal to the set of remote nodes that need
 * the tunnel, and says which routes the router must install for them. Stateless between syncs: each sync
 * reads what the kernel holds, so entries removed behind our back come back on the next sync.
 */
export class Overlay {
  readonly #rtnl: Rtnl;
  readonly #fdb: Fdb;
  readonly #log: Logger;
  readonly #port: number;
  readonly #vni: number;
  readonly #vteps = new Map<string, Vtep>();

  constructor(rtnl: Rtnl, fdb: Fdb, log: Logger, opts: OverlayOptions) {
    this.#rtnl = rtnl;
    this.#fdb = fdb;
    this.#log = log;
    this.#port = opts.port;
    this.#vni = opts.vni ?? OVERLAY_VNI;
  }

  /**
   * Makes the device of `local.family` reach exactly `remotes` (the nodes that need the tunnel, see
   * `needsTunnel`; remotes of the other family, our own address and invalid entries are skipped) and
   * returns the routes to their pod CIDRs of that family, via `vtepNextHop(remote)` on the device, for
   * RouteSync. With no remote left the device is deleted and no route is returned. Call it once per
   * underlay family in use. Throws OverlayError when `local.ip` is on no interface.
   */
  async sync(local: OverlayLocal, remotes: readonly OverlayRemote[]): Promise<WantedRoute[]> {
    const family = local.family;
    if (parseIP(local.ip)?.family !== family) {
      throw new OverlayError(`node address ${JSON.stringify(local.ip)} is not a valid IPv${family} address`);
    }
    const name = vxlanDevice(family);
    const wanted = this.#wantedRemotes(local, remotes);
    if (wanted.size === 0) {
      await this.#deleteDevice(name);
      return [];
    }
    const dev = await this.#ensureDevice(name, local);
    await this.#syncNeighbours(family, dev, wanted);
    await this.#syncFdb(dev, wanted);
    const routes: WantedRoute[] = [];
    for (const { hop: gateway, cidrs } of wanted.values()) {
      for (const dst of cidrs) {
        routes.push(
          family === 4 ? { dst, gateway, dev: dev.index, onlink: true } : { dst, gateway, dev: dev.index },
        );
      }
    }
    return routes;
  }

  /**
   * Deletes the device of one underlay family (e.g. when the node has no address of that family or the
   * family is disabled); the kernel drops its neighbour, FDB entries and routes with it.
   */
  async clear(family: Family): Promise<void> {
    await this.#deleteDevice(vxlanDevice(family));
  }

  /** Deletes both VXLAN devices; the kernel drops their neighbour, FDB entries and routes with them. */
  async cleanup(): Promise<void> {
    for (const name of [VXLAN_DEVICE, VXLAN6_DEVICE]) await this.#deleteDevice(name);
  }

  /** Remote node IP (normalised) -> its pod CIDRs of the local family. */
  /** Canonical address, VTEP MAC and next hop of a node address (memoised: thousands per sync). */
  #vtep(nodeIp: string): Vtep | undefined {
    let v = this.#vteps.get(nodeIp);
    if (v) return v;
    const ip = parseIP(nodeIp);
    if (!ip) return undefined;
    v = { ip: formatIP(ip.addr), family: ip.family, mac: vtepMac(nodeIp), hop: vtepNextHop(nodeIp) };
    if (this.#vteps.size >= VTEP_CACHE_MAX) this.#vteps.clear();
    this.#vteps.set(nodeIp, v);
    return v;
  }

  #wantedRemotes(local: OverlayLocal, remotes: readonly OverlayRemote[]): Map<string, Wanted> {
    const out = new Map<string, Wanted>();
    const self = this.#vtep(local.ip)!;
    // Our own MAC is taken too: a remote with it would receive nothing.
    const macs = new Map<string, string>([[self.mac, self.ip]]);
    for (const r of remotes) {
      const v = this.#vtep(r.nodeIp);
      if (!v) {
        this.#log.warn("overlay: skipping a node with an invalid address", { node_ip: r.nodeIp });
        continue;
      }
      if (v.family !== local.family || v.ip === self.ip) continue;
      const key = v.ip;
      const mac = v.mac;
      const owner = macs.get(mac);
      if (owner !== undefined && owner !== key) {
        // Two nodes whose IPv6 addresses hash to one VTEP MAC cannot both be reached; say so, keep one.
        this.#log.error("overlay: two nodes map to the same VTEP MAC; skipping one", {
          mac,
          kept: owner,
          skipped: key,
        });
        continue;
      }
      macs.set(mac, key);
      const cidrs = out.get(key)?.cidrs ?? [];
      for (const c of r.podCidrs) {
        const p = parseCidr(c);
        if (!p) {
          this.#log.warn("overlay: skipping an invalid pod CIDR", { node_ip: r.nodeIp, pod_cidr: c });
          continue;
        }
        const s = formatCidr(p);
        if (p.family === local.family && !cidrs.includes(s)) cidrs.push(s);
      }
      out.set(key, { ...v, cidrs });
    }
    return out;
  }

  async #deleteDevice(name: string): Promise<void> {
    const link = await this.#rtnl.linkGet(name);
    if (!link) return;
    try {
      await this.#rtnl.linkDel(name);
      this.#log.info("overlay device removed", { device: name });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  /** The interface holding the node address, and the VXLAN spec that belongs on it. */
  async #wantedSpec(name: string, local: OverlayLocal): Promise<LinkSpec & { kind: "vxlan" }> {
    const holders = new Set(
      (await this.#rtnl.addrList({ family: local.family })).filter((a) => sameIp(a.address, local.ip)).map((
        a,
      ) => a.index),
    );
    if (holders.size === 0) {
      throw new OverlayError(`node address ${local.ip} is on no interface; cannot create ${name}`);
    }
    // The same address may also sit on lo (a VIP setup); the underlay is the real interface.
    const candidates = (await this.#rtnl.linkList()).filter((l) => holders.has(l.index));
    const under = candidates.find((l) => (l.flags & IFF_LOOPBACK) === 0) ?? candidates[0];
    if (!under) throw new OverlayError(`the interface holding ${local.ip} vanished`);
    const overhead = local.family === 4 ? VXLAN_OVERHEAD_V4 : VXLAN_OVERHEAD_V6;
    return {
      kind: "vxlan",
      name,
      vni: this.#vni,
      port: this.#port,
      local: normIp(local.ip),
      dev: under.index,
      learning: false,
      mtu: under.mtu - overhead,
      mac: vtepMac(local.ip),
      up: true,
    };
  }

  /** Parameters that only a new device can change (the kernel refuses to change them in place). */
  #fixedMatch(link: Link, spec: LinkSpec & { kind: "vxlan" }): boolean {
    const vx = link.vxlan;
    return link.kind === "vxlan" && !!vx && vx.vni === spec.vni && vx.port === spec.port &&
      sameIp(vx.local, spec.local!) && vx.dev === spec.dev && vx.learning === false &&
      vx.remote === undefined;
  }

  async #ensureDevice(name: string, local: OverlayLocal): Promise<Link> {
    const spec = await this.#wantedSpec(name, local);
    let link = await this.#rtnl.linkGet(name);
    if (link && !this.#fixedMatch(link, spec)) {
      this.#log.info("overlay device has other parameters; recreating it", {
        device: name,
        have: link.vxlan,
        want: { vni: spec.vni, port: spec.port, local: spec.local, dev: spec.dev },
      });
      await this.#rtnl.linkDel(name);
      link = undefined;
    }
    if (!link) {
      await this.#rtnl.linkAdd(spec);
      this.#log.info("overlay device created", {
        device: name,
        vni: spec.vni,
        port: spec.port,
        local: spec.local,
        mtu: spec.mtu,
      });
    } else {
      const change: { up?: boolean; mtu?: number; mac?: string } = {};
      if (!link.up) change.up = true;
      if (link.mtu !== spec.mtu) change.mtu = spec.mtu!;
      if (link.mac?.toLowerCase() !== spec.mac) change.mac = spec.mac!;
      if (Object.keys(change).length) {
        await this.#rtnl.linkSet(name, change);
        this.#log.info("overlay device updated", { device: name, ...change });
      }
    }
    const now = await this.#rtnl.linkGet(name);
    if (!now) throw new OverlayError(`${name} vanished right after it was set up`);
    return now;
  }

  async #syncNeighbours(family: Family, dev: Link, wanted: Map<string, Wanted>): Promise<void> {
    // Listed addresses are canonical (formatIP), as are ours: plain string comparison is enough.
    const have = new Map<string, Neighbour>();
    for (const n of await this.#rtnl.neighList({ family, dev: dev.index })) have.set(n.dst, n);
    const hops = new Set<string>();
    for (const { ip, mac, hop } of wanted.values()) {
      hops.add(hop);
      const n = have.get(hop);
      if (n && n.lladdr?.toLowerCase() === mac && ((n.state ?? 0) & NeighState.permanent)) continue;
      await this.#rtnl.neighReplace({
        family,
        dev: dev.index,
        dst: hop,
        lladdr: mac,
        state: NeighState.permanent,
      });
      this.#log.debug("overlay neighbour set", { device: dev.name, node_ip: ip, next_hop: hop, mac });
    }
    for (const [ip, n] of have) {
      // Only permanent entries are ours; the kernel's own (e.g. IPv6 link-local) expire by themselves.
      if (hops.has(ip) || !((n.state ?? 0) & NeighState.permanent)) continue;
      try {
        await this.#rtnl.neighDel(n);
        this.#log.debug("overlay neighbour removed", { device: dev.name, node_ip: ip });
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
  }

  async #syncFdb(dev: Link, wanted: Map<string, Wanted>): Promise<void> {
    const byMac = new Map<string, FdbEntry[]>();
    for (const e of await this.#fdb.fdbList(dev.index)) {
      const list = byMac.get(e.mac) ?? [];
      list.push(e);
      byMac.set(e.mac, list);
    }
    const wantedMacs = new Map<string, string>();
    for (const { ip, mac } of wanted.values()) wantedMacs.set(mac, ip);
    for (const [mac, ip] of wantedMacs) {
      const have = byMac.get(mac) ?? [];
      // A unicast MAC has one destination in a VXLAN FDB; `replace` overwrites a wrong one.
      if (have.length === 1 && have[0]!.dst === ip) continue;
      await this.#fdb.fdbReplace({ dev: dev.index, mac, dst: ip });
      this.#log.info("overlay peer set", { device: dev.name, node_ip: ip, mac });
    }
    for (const mac of byMac.keys()) {
      if (wantedMacs.has(mac)) continue;
      await this.#fdbDel({ dev: dev.index, mac });
      this.#log.info("overlay peer removed", { device: dev.name, mac, node_ip: byMac.get(mac)![0]!.dst });
    }
  }

  async #fdbDel(e: FdbEntry): Promise<void> {
    try {
      await this.#fdb.fdbDel(e);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }
}
