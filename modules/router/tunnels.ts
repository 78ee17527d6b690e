/**
 * IP-in-IP overlay tunnels, kube-router's default `--overlay-encap=ipip` and its `--overlay-encap=fou`:
 * one tunnel device per remote node that needs the overlay (see `needsTunnel` in overlay.ts, the VXLAN
 * counterpart this class parallels), named after the node's address as kube-router names it, so an
 * agent swap finds its devices:
 *
 * ```
 * ip link add tun-1f0c2a9e6b4 type ipip local 192.168.1.100 remote 192.168.2.100      # ipip
 * ip fou add port 5555 gue                                                             # fou: once
 * ip link add tun-1f0c2a9e6b4 type ipip local 192.168.1.100 remote 192.168.2.100 ttl 225 \
 *   encap gue encap-sport auto encap-dport 5555                                        # fou
 * ip route replace 192.168.2.100 dev tun-1f0c2a9e6b4 table 77 proto 17                 # table 77
 * ip rule add from 10.1.1.0/24 lookup 77                                               # per pod CIDR
 * ip route replace 10.1.2.0/24 dev tun-1f0c2a9e6b4 proto 17                            # by RouteSync
 * ```
 *
 * IPv6 node addresses get `ip6tnl` devices in ip6ip6 mode carrying the IPv6 pod CIDRs. Table 77 holds a
 * route to every tunnelled node through its tunnel, and the rule sends traffic from the local pods through
 * it, so pod traffic to another node's own address (host-network pods) leaves through the tunnel as well
 * and comes back the same way whatever rp_filter says.
 *
 * Stateless between syncs like `Overlay`: each sync reads the devices (`tun-*` of kind ipip/ip6tnl), the
 * table and the rules, and converges them. A device whose parameters differ (local, remote, encap, port)
 * is recreated, as parameters of an IP tunnel cannot all be changed in place.
 */
import { createHash } from "node:crypto";
import { type Family, formatCidr, formatIP, parseCidr, parseIP } from "../../ffi/mod.ts";
import type { Logger } from "../../core/mod.ts";
import {
  type Fou,
  FouNetlink,
  isExists,
  isNotFound,
  type Link,
  type LinkSpec,
  type Rtnl,
} from "../../ffi/mod.ts";
import type { OverlayLocal, OverlayRemote } from "./overlay.ts";
import { OverlayError } from "./overlay.ts";
import type { WantedRoute } from "./route_sync.ts";

/** kube-router's custom routing table for the overlay ("kube-router" in /etc/iproute2/rt_tables). */
export const TUNNEL_TABLE = 77;
/** Protocol of the table-77 routes (zebra, as all the router's routes). */
const TUNNEL_ROUTE_PROTOCOL = 17;
/** TTL kube-router gives FoU tunnels (IPIP ones inherit the inner packet's). */
const FOU_TTL = 225;
const TUNNEL_PREFIX = "tun-";

/** `--overlay-encap` values this class handles (VXLAN is `Overlay`). */
export type TunnelEncap = "ipip" | "fou";

/**
 * Bytes an encapsulation adds to each packet over an underlay family: the outer IP header (20 or 40),
 * for FoU the UDP header (8) and GUE's (4), for VXLAN UDP (8), VXLAN (8) and the inner Ethernet header (14).
 */
export function encapOverhead(encap: TunnelEncap | "vxlan", underlay: Family): number {
  const outer = underlay === 4 ? 20 : 40;
  if (encap === "ipip") return outer;
  if (encap === "fou") return outer + 8 + 4;
  return outer + 8 + 8 + 14;
}

/**
 * The tunnel device name for a node address, as kube-router derives it: "tun-" and the first 11 hex
 * digits of the SHA-256 of the address with its dots and colons removed (interface names stop at 15
 * characters, and IPv6 addresses are long). Throws TypeError for an invalid address.
 */
export function tunnelName(nodeIp: string): string {
  if (!parseIP(nodeIp)) throw new TypeError(`invalid node address ${JSON.stringify(nodeIp)}`);
  const stripped = nodeIp.replaceAll(".", "").replaceAll(":", "");
  return TUNNEL_PREFIX + createHash("sha256").update(stripped).digest("hex").slice(0, 11);
}

/**
 * Opens FoU, loading the kernel's fou modules first when the family is missing: Debian's fou.ko declares no
 * generic netlink alias, so the kernel cannot load it on demand (`ip fou add` fails the same way until
 * `modprobe fou`). `load` runs `modprobe fou fou6` (fou6 carries GUE over IPv6 underlays).
 */
export function openFou(
  open: () => Fou = () => new FouNetlink(),
  load: () => void = () => {
    try {
      new Deno.Command("modprobe", { args: ["-a", "fou", "fou6"], stdout: "null", stderr: "null" })
        .outputSync();
    } catch { /* no modprobe: the second open reports the missing family */ }
  },
): Fou {
  try {
    return open();
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  load();
  return open();
}

export interface TunnelOptions {
  encap: TunnelEncap;
  /** UDP port of FoU/GUE (`--overlay-encap-port`). */
  port: number;
}

function isOurs(l: Link, family?: Family): boolean {
  if (!l.name.startsWith(TUNNEL_PREFIX)) return false;
  if (family === 4) return l.kind === "ipip";
  if (family === 6) return l.kind === "ip6tnl";
  return l.kind === "ipip" || l.kind === "ip6tnl";
}

function norm(ip: string): string {
  return formatIP(parseIP(ip)!.addr);
}

/**
 * Keeps one IP tunnel per remote node, the table-77 routes and rules, and the FoU port equal to what the
 * remotes need, and says which pod-CIDR routes the router must install through them.
 */
export class IpTunnels {
  readonly #rtnl: Rtnl;
  readonly #openFou: () => Fou;
  #fouImpl: Fou | undefined;
  /** Whether a FoU port left by an earlier `--overlay-encap=fou` run was looked for (once per family). */
  #fouSwept = new Set<Family>();
  /**
   * Families this agent has cleared completely and made nothing in since: clearing them again would list
   * links, table 77 and rules on every whole sync (each BGP event's) to find nothing. Only this agent makes
   * these objects, so nothing can reappear behind its back; a restart starts with none known clean.
   */
  #clean = new Set<Family>();
  /** The same for `cleanup` (both families, and FoU ports whatever the encapsulation). */
  #cleanedUp = false;
  readonly #log: Logger;
  readonly #opts: TunnelOptions;

  /**
   * `openFou` is called on first use only: with `--overlay-encap=ipip` the fou module is not needed (it is
   * looked at once, to close a port an earlier fou run left).
   */
  constructor(rtnl: Rtnl, openFou: () => Fou, log: Logger, opts: TunnelOptions) {
    this.#rtnl = rtnl;
    this.#openFou = openFou;
    this.#log = log;
    this.#opts = opts;
  }

  #fou(): Fou {
    this.#fouImpl ??= this.#openFou();
    return this.#fouImpl;
  }

  /** Closes the FoU socket if one was opened. */
  close(): void {
    this.#fouImpl?.close();
    this.#fouImpl = undefined;
  }

  /**
   * Makes the tunnels of `local.family` reach exactly `remotes` (other families, our own address and
   * invalid entries skipped), points table 77 and the rules for `podCidrs` (this node's, of that family) at
   * them, and returns the routes to the remotes' pod CIDRs through their tunnels, for RouteSync. With no
   * remote left everything of that family is removed. Throws OverlayError when the kernel lacks the module.
   */
  async sync(local: OverlayLocal, remotes: readonly OverlayRemote[], podCidrs: readonly string[]): Promise<
    WantedRoute[]
  > {
    const family = local.family;
    const self = parseIP(local.ip);
    if (self?.family !== family) {
      throw new OverlayError(`node address ${JSON.stringify(local.ip)} is not a valid IPv${family} address`);
    }
    const wanted = new Map<string, { ip: string; cidrs: string[] }>();
    for (const r of remotes) {
      const ip = parseIP(r.nodeIp);
      if (!ip) {
        this.#log.warn("overlay: skipping a node with an invalid address", { node_ip: r.nodeIp });
        continue;
      }
      const canon = formatIP(ip.addr);
      if (ip.family !== family || canon === formatIP(self.addr)) continue;
      const name = tunnelName(canon);
      const cidrs = wanted.get(name)?.cidrs ?? [];
      for (const c of r.podCidrs) {
        const p = parseCidr(c);
        if (!p) {
          this.#log.warn("overlay: skipping an invalid pod CIDR", { node_ip: r.nodeIp, pod_cidr: c });
          continue;
        }
        if (p.family === family && !cidrs.includes(formatCidr(p))) cidrs.push(formatCidr(p));
      }
      wanted.set(name, { ip: canon, cidrs });
    }
    if (wanted.size === 0) {
      await this.clear(family);
      return [];
    }
    this.#clean.delete(family);
    this.#cleanedUp = false;
    await this.#syncFouPort(family);
    const links = new Map<string, Link>();
    for (const l of await this.#rtnl.linkList()) if (isOurs(l, family)) links.set(l.name, l);
    const out: WantedRoute[] = [];
    const table: { dst: string; dev: number }[] = [];
    for (const [name, w] of wanted) {
      const link = await this.#ensureTunnel(name, norm(local.ip), w.ip, family, links.get(name));
      table.push({ dst: `${w.ip}/${family === 4 ? 32 : 128}`, dev: link.index });
      for (const dst of w.cidrs) out.push({ dst, dev: link.index });
    }
    for (const [name] of links) if (!wanted.has(name)) await this.#deleteLink(name);
    await this.#syncTable(family, table);
    await this.#syncRules(family, podCidrs);
    return out;
  }

  /** Removes the tunnels, table-77 routes, rules and FoU port of one family. */
  async clear(family: Family): Promise<void> {
    if (this.#clean.has(family)) return;
    for (const l of await this.#rtnl.linkList()) if (isOurs(l, family)) await this.#deleteLink(l.name);
    await this.#syncTable(family, []);
    await this.#syncRules(family, []);
    if (this.#opts.encap === "fou") await this.#delFouPort(family);
    this.#clean.add(family);
  }

  /** Everything of both families, whatever the encapsulation (--cleanup-config, --enable-overlay=false). */
  async cleanup(): Promise<void> {
    if (this.#cleanedUp) return;
    for (const l of await this.#rtnl.linkList()) if (isOurs(l)) await this.#deleteLink(l.name);
    for (const family of [4, 6] as const) {
      await this.#syncTable(family, []);
      await this.#syncRules(family, []);
      await this.#delFouPort(family);
    }
    this.#clean = new Set([4, 6]);
    this.#cleanedUp = true;
  }

  #spec(name: string, local: string, remote: string, family: Family): LinkSpec & { kind: "ipip" | "ip6tnl" } {
    const fou = this.#opts.encap === "fou";
    return {
      kind: family === 4 ? "ipip" : "ip6tnl",
      name,
      local,
      remote,
      up: true,
      ...(fou ? { ttl: FOU_TTL, fou: { dport: this.#opts.port, gue: true } } : {}),
    };
  }

  #matches(link: Link, spec: LinkSpec & { kind: "ipip" | "ip6tnl" }): boolean {
    const t = link.tunnel;
    if (link.kind !== spec.kind || !t || t.local !== spec.local || t.remote !== spec.remote) return false;
    if (!spec.fou) return t.encap === undefined;
    return t.encap?.type === "gue" && t.encap.dport === spec.fou.dport;
  }

  async #ensureTunnel(
    name: string,
    local: string,
    remote: string,
    family: Family,
    link?: Link,
  ): Promise<Link> {
    const spec = this.#spec(name, local, remote, family);
    if (link && !this.#matches(link, spec)) {
      this.#log.info("overlay tunnel has other parameters; recreating it", {
        device: name,
        have: link.tunnel,
        want: { local, remote, encap: this.#opts.encap },
      });
      await this.#deleteLink(name);
      link = undefined;
    }
    if (!link) {
      try {
        await this.#rtnl.linkAdd(spec);
      } catch (err) {
        if (isExists(err)) {
          // Another device holds these endpoints (e.g. one named by hand): say which, and skip.
          throw new OverlayError(`cannot create ${name}: a tunnel ${local} -> ${remote} already exists`, {
            cause: err,
          });
        }
        throw new OverlayError(
          `cannot create ${spec.kind} tunnel ${name} (--overlay-encap=${this.#opts.encap}): does the kernel ` +
            `have the ${spec.kind === "ipip" ? "ipip" : "ip6_tunnel"}${
              this.#opts.encap === "fou" ? " and fou" : ""
            } module?`,
          { cause: err },
        );
      }
      this.#log.info("overlay tunnel created", { device: name, local, remote, encap: this.#opts.encap });
    } else if (!link.up) {
      await this.#rtnl.linkSet(name, { up: true });
    }
    const now = await this.#rtnl.linkGet(name);
    if (!now) throw new OverlayError(`${name} vanished right after it was set up`);
    return now;
  }

  async #deleteLink(name: string): Promise<void> {
    try {
      await this.#rtnl.linkDel(name);
      this.#log.info("overlay tunnel removed", { device: name });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  /** Table 77 holds exactly `want` for this family. */
  async #syncTable(family: Family, want: { dst: string; dev: number }[]): Promise<void> {
    const have = await this.#tableRoutes(family);
    const key = (dst: string, dev: number | undefined) => `${formatCidr(parseCidr(dst)!)} ${dev}`;
    const haveKeys = new Set(have.map((r) => key(r.dst, r.dev)));
    for (const w of want) {
      if (haveKeys.has(key(w.dst, w.dev))) continue;
      await this.#rtnl.routeReplace({
        family,
        dst: w.dst,
        dev: w.dev,
        table: TUNNEL_TABLE,
        protocol: TUNNEL_ROUTE_PROTOCOL,
      });
    }
    const wantKeys = new Set(want.map((w) => key(w.dst, w.dev)));
    for (const r of have) {
      if (wantKeys.has(key(r.dst, r.dev))) continue;
      try {
        await this.#rtnl.routeDel(r);
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
  }

  /** Routes of table 77; a table that was never made is empty (the kernel answers ENOENT to its dump). */
  async #tableRoutes(family: Family) {
    try {
      return await this.#rtnl.routeList({ family, table: TUNNEL_TABLE });
    } catch (err) {
      if (isNotFound(err)) return [];
      throw err;
    }
  }

  /** Exactly one `from <pod CIDR> lookup 77` rule per pod CIDR of this family. */
  async #syncRules(family: Family, podCidrs: readonly string[]): Promise<void> {
    const want = new Set(
      podCidrs.flatMap((c) => {
        const p = parseCidr(c);
        return p && p.family === family ? [formatCidr(p)] : [];
      }),
    );
    const seen = new Set<string>();
    for (const r of await this.#rtnl.ruleList(family)) {
      if (r.table !== TUNNEL_TABLE) continue;
      const src = r.src && parseCidr(r.src);
      const k = src ? formatCidr(src) : "";
      if (want.has(k) && !seen.has(k)) {
        seen.add(k);
        continue;
      }
      try {
        await this.#rtnl.ruleDel(r);
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    for (const src of want) {
      if (!seen.has(src)) await this.#rtnl.ruleAdd({ family, src, table: TUNNEL_TABLE });
    }
  }

  async #syncFouPort(family: Family): Promise<void> {
    if (this.#opts.encap !== "fou") {
      // Switched from fou to ipip: the old port goes, as kube-router does.
      if (!this.#fouSwept.has(family)) await this.#delFouPort(family);
      this.#fouSwept.add(family);
      return;
    }
    let fou: Fou;
    try {
      fou = this.#fou();
    } catch (err) {
      throw new OverlayError("--overlay-encap=fou needs the kernel's fou module, which is missing", {
        cause: err,
      });
    }
    const port = this.#opts.port;
    const have = (await fou.ports()).filter((p) => p.family === family);
    if (have.some((p) => p.port === port && p.type === "gue")) return;
    for (const p of have.filter((p) => p.port === port)) await fou.delPort(p);
    await fou.addPort({ port, family, type: "gue" });
    this.#log.info("fou port opened", { port, family });
  }

  async #delFouPort(family: Family): Promise<void> {
    let fou: Fou;
    try {
      fou = this.#fou();
    } catch {
      return; // No fou module: no port to remove.
    }
    const port = this.#opts.port;
    for (const p of await fou.ports()) {
      if (p.family !== family || p.port !== port) continue;
      try {
        await fou.delPort(p);
        this.#log.info("fou port closed", { port, family });
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
  }
}
