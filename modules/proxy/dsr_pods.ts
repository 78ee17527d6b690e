/**
 * The pod side of direct server return: an IPIP tunnel interface inside each local DSR pod's network
 * namespace holding the Service's VIPs, as kube-router's DSR sets up (`kube-tunnel-if`, or
 * `kube-tunnel-v6` for IPv6 pods), with reverse-path filtering off there, since the client's packets
 * arrive on the tunnel while the route back to the client leaves through the pod's own interface.
 *
 * The pod's namespace is found without a container runtime, from the node's own view of the pod's
 * interface: the route to the endpoint IP leaves through a veth (routed CNIs) or a bridge whose ports are
 * veths (the bridge CNI, kube-router's own); the host end of each veth names the namespace of its peer by
 * id (IFLA_LINK_NETNSID); the namespace with that id is found among /run/netns (where CNI runtimes and
 * `ip netns add` keep them) and the processes' /proc/PID/ns/net, by asking the kernel for each one's id
 * (RTM_GETNSID); the namespace that holds the endpoint IP is the pod's. (kube-router asks docker or the
 * CRI for the pod's process instead; that needs the runtime, this needs only the kernel.)
 *
 * What was put into a pod is remembered (by namespace identity) and taken back when no DSR Service wants
 * it any more; on the first pass the tunnels left by an earlier run are found by a scan of the veth
 * peers and pruned the same way. `cleanupAll` (--cleanup-config) removes every tunnel interface of ours
 * behind this node's veths.
 */
import {
  currentNetnsIdentity,
  type Family,
  type Link,
  listNetnsPaths,
  netnsIdentity,
  NetnsSysctl,
  RouteType,
  Rtnetlink,
  type Rtnl,
  type Sysctl,
} from "../../ffi/mod.ts";
import { canonicalIp } from "./nft_render.ts";

/** The tunnel interfaces DSR puts into pods (kube-router's names). */
export const DSR_TUNNEL_IF = { 4: "kube-tunnel-if", 6: "kube-tunnel-v6" } as const;

/** A pod that cannot be entered or configured, with the reason in words. */
export class DsrPodError extends Error {
  constructor(readonly endpoint: string, reason: string, options?: ErrorOptions) {
    super(`pod ${endpoint}: ${reason}`, options);
    this.name = "DsrPodError";
  }
}

/** What the IPVS backend needs from the pods' side of DSR (a fake in unit tests). */
export interface DsrPods {
  /**
   * Makes the local pod with address `endpoint` hold `vips` (those of its family) on its tunnel interface,
   * creating it if needed. Throws DsrPodError when the pod cannot be found or entered.
   */
  ensure(endpoint: string, vips: readonly string[]): Promise<void>;
  /**
   * Makes every pod this node has configured (or an earlier run left configured) hold exactly the VIPs
   * `want` gives its endpoint IP, removing the tunnel interface from pods left with none. Failures are
   * returned, not thrown: one broken pod must not stop the others.
   */
  prune(want: ReadonlyMap<string, ReadonlySet<string>>): Promise<Error[]>;
  /** Removes the DSR tunnel interfaces from every pod behind this node's veths; returns how many. */
  cleanupAll(): Promise<number>;
}

/** rtnetlink inside one pod's namespace. */
export type PodRtnl =
  & Pick<
    Rtnl,
    "linkGet" | "linkList" | "linkAdd" | "linkDel" | "linkSet" | "addrList" | "addrAdd" | "addrDel"
  >
  & { close(): void };

/** The kernel access the pod finder and configurer need (real by default; tests may pass their own). */
export interface DsrPodsDeps {
  /** rtnetlink of the node's namespace. */
  node: Pick<Rtnl, "routeGet" | "linkList"> & { nsidOf(path: string): Promise<number | undefined> };
  /** rtnetlink inside the namespace at `path`. */
  openPod(path: string): PodRtnl;
  /** sysctls inside the namespace at `path`. */
  podSysctl(path: string): Sysctl;
  /** Every namespace path on the machine, one per namespace (see ffi `listNetnsPaths`). */
  listNetns(): string[];
  /** The namespace's identity ("dev:inode"), undefined when the path leads nowhere. */
  identity(path: string): string | undefined;
}

/** The real deps around the node's Rtnetlink. */
export function kernelDsrPodsDeps(node: Rtnetlink): DsrPodsDeps {
  return {
    node,
    openPod: (path) => new Rtnetlink({ netns: path, rcvbuf: 1 << 20 }),
    podSysctl: (path) => new NetnsSysctl(path),
    listNetns: () => listNetnsPaths(),
    identity: netnsIdentity,
  };
}

interface PodState {
  path: string;
  /** The VIPs on its tunnel interfaces (as this agent last left them). */
  vips: Set<string>;
}

function familyOf(ip: string): Family {
  return ip.includes(":") ? 6 : 4;
}

/** The DSR pod side on the real kernel (see the file comment). */
export class NetnsDsrPods implements DsrPods {
  readonly #d: DsrPodsDeps;
  /** Namespace identity -> what is there. */
  readonly #pods = new Map<string, PodState>();
  /** Endpoint IP -> namespace identity. */
  readonly #where = new Map<string, string>();
  /** Netnsid (as the node sees it) -> namespace path and identity. */
  #ids = new Map<number, { path: string; identity: string }>();
  #scanned = false;

  constructor(deps: DsrPodsDeps) {
    this.#d = deps;
  }

  /** Endpoint IP -> namespace path, for what this instance has found (tests and logs). */
  get located(): Map<string, string> {
    const out = new Map<string, string>();
    for (const [ip, id] of this.#where) {
      const p = this.#pods.get(id);
      if (p) out.set(ip, p.path);
    }
    return out;
  }

  /** Finds the namespace of the local pod holding `ip`. */
  async locate(ip: string): Promise<{ path: string; identity: string }> {
    const cachedId = this.#where.get(ip);
    const cached = cachedId === undefined ? undefined : this.#pods.get(cachedId);
    if (cached && this.#d.identity(cached.path) === cachedId && await this.#holds(cached.path, ip)) {
      return { path: cached.path, identity: cachedId! };
    }
    const route = await this.#d.node.routeGet(ip);
    if (!route || route.dev === undefined) throw new DsrPodError(ip, "the node has no route to it");
    if (route.type === RouteType.local) {
      throw new DsrPodError(
        ip,
        "it is an address of the node itself (a hostNetwork pod has no namespace to enter)",
      );
    }
    const links = await this.#d.node.linkList();
    const via = links.find((l) => l.index === route.dev);
    if (!via) throw new DsrPodError(ip, `the interface of its route (index ${route.dev}) is gone`);
    let candidates: Link[];
    if (via.kind === "veth") candidates = [via];
    else if (via.kind === "bridge") {
      candidates = links.filter((l) => l.master === via.index && l.kind === "veth");
    } else {
      throw new DsrPodError(
        ip,
        `it is reached through ${via.name} (${
          via.kind ?? "a plain device"
        }), neither a veth nor a bridge of veths`,
      );
    }
    for (const c of candidates) {
      if (c.linkNetnsid === undefined) continue;
      const ns = await this.#namespaceOf(c.linkNetnsid);
      if (ns && await this.#holds(ns.path, ip)) return ns;
    }
    throw new DsrPodError(ip, `no network namespace behind ${via.name}'s veths holds it`);
  }

  /**
   * The namespace the node knows by `nsid`; the id table is rebuilt when an id is unknown or stale (unless
   * `rebuild` is false: a caller walking many veths rebuilds once, not once per unknown peer).
   */
  async #namespaceOf(nsid: number, rebuild = true): Promise<{ path: string; identity: string } | undefined> {
    const known = this.#ids.get(nsid);
    if (known && this.#d.identity(known.path) === known.identity) return known;
    if (!rebuild) return undefined;
    const ids = new Map<number, { path: string; identity: string }>();
    for (const path of this.#d.listNetns()) {
      const identity = this.#d.identity(path);
      if (identity === undefined) continue;
      let id: number | undefined;
      try {
        id = await this.#d.node.nsidOf(path);
      } catch {
        continue; // the process ended meanwhile
      }
      if (id !== undefined && !ids.has(id)) ids.set(id, { path, identity });
    }
    this.#ids = ids;
    return ids.get(nsid);
  }

  /** Whether the namespace at `path` has `ip` on one of its interfaces. */
  async #holds(path: string, ip: string): Promise<boolean> {
    let r: PodRtnl | undefined;
    try {
      r = this.#d.openPod(path);
      return (await r.addrList()).some((a) => canonicalIp(a.address)?.ip === ip);
    } catch {
      return false;
    } finally {
      r?.close();
    }
  }

  async ensure(endpoint: string, vips: readonly string[]): Promise<void> {
    const ip = canonicalIp(endpoint)?.ip;
    if (ip === undefined) throw new DsrPodError(endpoint, "not an IP address");
    const ns = await this.locate(ip);
    const fam = familyOf(ip);
    const mine = vips.map((v) => canonicalIp(v)).filter((c) => c?.family === fam).map((c) => c!.ip);
    const name = DSR_TUNNEL_IF[fam];
    const kind = fam === 4 ? "ipip" : "ip6tnl";
    let r: PodRtnl | undefined;
    try {
      r = this.#d.openPod(ns.path);
      let link = await r.linkGet(name);
      if (link && (link.kind !== kind || link.tunnel?.local !== ip)) {
        await r.linkDel(name);
        link = undefined;
      }
      if (!link) {
        // Equivalent to: ip link add kube-tunnel-if type ipip local POD_IP; ip link set kube-tunnel-if up
        await r.linkAdd({ kind, name, local: ip, up: true });
        link = await r.linkGet(name);
        if (!link) throw new Error(`${name} was created but cannot be found`);
      } else if (!link.up) await r.linkSet(name, { up: true });
      const have = new Set(
        (await r.addrList({ index: link.index })).map((a) => canonicalIp(a.address)?.ip).filter((x) => !!x),
      );
      for (const vip of mine) {
        if (have.has(vip)) continue;
        await r.addrAdd({
          family: fam,
          index: link.index,
          address: vip,
          prefix: fam === 4 ? 32 : 128,
          ...(fam === 6 ? { nodad: true } : {}),
        });
      }
      if (fam === 4) {
        // The decapsulated packet comes in on the tunnel; the route back to its source does not.
        const sysctl = this.#d.podSysctl(ns.path);
        for (const key of ["net.ipv4.conf.all.rp_filter", `net/ipv4/conf/${name}/rp_filter`]) {
          if ((await sysctl.get(key)) !== "0") await sysctl.set(key, 0);
        }
      }
    } catch (err) {
      throw err instanceof DsrPodError
        ? err
        : new DsrPodError(ip, `cannot set up ${name}: ${err}`, { cause: err });
    } finally {
      r?.close();
    }
    const state = this.#pods.get(ns.identity) ?? { path: ns.path, vips: new Set<string>() };
    state.path = ns.path;
    for (const v of mine) state.vips.add(v);
    this.#pods.set(ns.identity, state);
    this.#where.set(ip, ns.identity);
  }

  /** The namespaces behind this node's veths (their peers'), found by netnsid. */
  async #vethPeers(): Promise<{ path: string; identity: string }[]> {
    const out = new Map<string, { path: string; identity: string }>();
    const own = currentNetnsIdentity();
    let rebuilt = false;
    for (const l of await this.#d.node.linkList()) {
      if (l.kind !== "veth" || l.linkNetnsid === undefined) continue;
      let ns = await this.#namespaceOf(l.linkNetnsid, false);
      if (!ns && !rebuilt) {
        rebuilt = true;
        ns = await this.#namespaceOf(l.linkNetnsid);
      }
      if (ns && ns.identity !== own) out.set(ns.identity, ns);
    }
    return [...out.values()];
  }

  /** The VIPs on our tunnel interfaces in one namespace (undefined when it has none). */
  async #tunnelVips(r: PodRtnl): Promise<Set<string> | undefined> {
    let found = false;
    const vips = new Set<string>();
    for (const fam of [4, 6] as const) {
      const link = await r.linkGet(DSR_TUNNEL_IF[fam]);
      if (!link) continue;
      found = true;
      for (const a of await r.addrList({ index: link.index })) {
        const ip = canonicalIp(a.address)?.ip;
        if (ip && !(fam === 6 && ip.startsWith("fe80:"))) vips.add(ip);
      }
    }
    return found ? vips : undefined;
  }

  async prune(want: ReadonlyMap<string, ReadonlySet<string>>): Promise<Error[]> {
    const errors: Error[] = [];
    if (!this.#scanned) {
      this.#scanned = true;
      try {
        for (const ns of await this.#vethPeers()) {
          if (this.#pods.has(ns.identity)) continue;
          const r = this.#d.openPod(ns.path);
          try {
            const vips = await this.#tunnelVips(r);
            if (vips) this.#pods.set(ns.identity, { path: ns.path, vips });
          } finally {
            r.close();
          }
        }
      } catch (err) {
        errors.push(new Error(`cannot look for DSR tunnels left in pods: ${err}`, { cause: err }));
      }
    }
    const desired = new Map<string, Set<string>>();
    for (const [ip, id] of [...this.#where]) {
      const vips = want.get(ip);
      if (!vips) {
        this.#where.delete(ip);
        continue;
      }
      const set = desired.get(id) ?? new Set<string>();
      for (const v of vips) set.add(canonicalIp(v)?.ip ?? v);
      desired.set(id, set);
    }
    for (const [id, pod] of [...this.#pods]) {
      const keep = desired.get(id) ?? new Set<string>();
      if ([...pod.vips].every((v) => keep.has(v)) && keep.size > 0) continue;
      if (this.#d.identity(pod.path) !== id) {
        this.#pods.delete(id); // the pod is gone, and its interfaces with it
        continue;
      }
      let r: PodRtnl | undefined;
      try {
        r = this.#d.openPod(pod.path);
        for (const fam of [4, 6] as const) {
          const name = DSR_TUNNEL_IF[fam];
          const link = await r.linkGet(name);
          if (!link) continue;
          const left = (await r.addrList({ index: link.index })).filter((a) => {
            const ip = canonicalIp(a.address)?.ip;
            return ip !== undefined && !(fam === 6 && ip.startsWith("fe80:")) && keep.has(ip);
          });
          if (left.length === 0) {
            await r.linkDel(name); // Equivalent to: ip link del kube-tunnel-if (its addresses go with it)
            continue;
          }
          for (const a of await r.addrList({ index: link.index })) {
            const ip = canonicalIp(a.address)?.ip;
            if (ip === undefined || keep.has(ip) || (fam === 6 && ip.startsWith("fe80:"))) continue;
            await r.addrDel(a);
          }
        }
        if (keep.size === 0) this.#pods.delete(id);
        else pod.vips = new Set(keep);
      } catch (err) {
        errors.push(
          new Error(`cannot take DSR VIPs back from the pod namespace ${pod.path}: ${err}`, { cause: err }),
        );
      } finally {
        r?.close();
      }
    }
    return errors;
  }

  async cleanupAll(): Promise<number> {
    let n = 0;
    for (const ns of await this.#vethPeers()) {
      const r = this.#d.openPod(ns.path);
      try {
        for (const fam of [4, 6] as const) {
          if (await r.linkGet(DSR_TUNNEL_IF[fam])) {
            await r.linkDel(DSR_TUNNEL_IF[fam]);
            n++;
          }
        }
      } finally {
        r.close();
      }
    }
    this.#pods.clear();
    this.#where.clear();
    return n;
  }
}
