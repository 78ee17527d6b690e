/**
 * The IPVS backend's planner (pure, no I/O): the Service model to the virtual services and destinations
 * IPVS should hold, as kube-router's IPVS proxy lays them out.
 *
 * Per Service port and family: one virtual service on the cluster IP, one on every external and
 * LoadBalancer IP, one on each of the node's addresses at the NodePort. Destinations are the usable
 * endpoints (kube-router ignores topology hints), all masqueraded (NAT) with weight 1; external traffic
 * (NodePort, external and LoadBalancer IPs) keeps only this node's endpoints under externalTrafficPolicy
 * Local (or the `kube-router.io/service.local` annotation), cluster-IP traffic under
 * internalTrafficPolicy Local. ClientIP affinity is IPVS persistence with the Service's timeout. What the
 * nftables table must add per virtual service is planned here too: whether outside traffic is masqueraded
 * (not external traffic under externalTrafficPolicy Local: its pods see the client), the source ranges of a
 * LoadBalancer IP, and the local destinations that need hairpin masquerading (always, as the nftables
 * backend; kube-router does it only with `kube-router.io/service.hairpin` or `--hairpin-mode`).
 *
 * `kube-router.io/service.scheduler` picks the IPVS scheduler (rr wrr lc wlc dh sh mh; anything else is
 * logged and rr used); `kube-router.io/service.schedflags` (`flag-1,flag-2,flag-3`) sets
 * IP_VS_SVC_F_SCHED1..3, which kube-router applies with the mh scheduler only (mh-fallback, mh-port).
 *
 * `kube-router.io/service.dsr=tunnel` (direct server return, as kube-router): each external and
 * LoadBalancer IP and port of the Service becomes an IPVS firewall-mark service whose destinations are
 * reached by IPIP tunnelling; the pod holds the VIP on its own tunnel interface and answers the client
 * directly. Such a VIP is not put on kube-dummy-if (the node must not own an address its pods answer
 * from); the caller lists the local pods to enter (`ServicePlan.dsr`) and re-plans the Service with a
 * `dsrFallback` reason when one cannot be entered, which serves it through NAT instead. Marks are
 * assigned by `mergePlans` (`assignFwmarks`): stable while a VIP:port exists and never shared.
 */
import { NFT_MARK, type ServiceEndpoint, type ServiceInfo, usableEndpoints } from "../../core/mod.ts";
import {
  type Family,
  type IpvsDestination,
  type IpvsProtocol,
  type IpvsService,
  IpvsServiceFlag,
  serviceKeyString,
} from "../../ffi/mod.ts";
import { ANNOTATIONS, canonicalIp, type ProxyNodeContext, validExternalIps } from "./nft_render.ts";
import { disjointCidrs } from "./ipvs_nft.ts";

/** Annotations read by the IPVS backend beyond the ones the nftables backend reads. */
export const IPVS_ANNOTATIONS = {
  scheduler: ANNOTATIONS.scheduler,
  schedFlags: "kube-router.io/service.schedflags",
  local: ANNOTATIONS.local,
  dsr: "kube-router.io/service.dsr",
} as const;

/** Schedulers the annotation may name (kube-router's list: ipvs.RoundRobin … and "mh"). */
export const IPVS_SCHEDULERS = ["rr", "wrr", "lc", "wlc", "dh", "sh", "mh"] as const;

const SCHED_FLAGS: Record<string, number> = {
  "flag-1": IpvsServiceFlag.sched1,
  "flag-2": IpvsServiceFlag.sched2,
  "flag-3": IpvsServiceFlag.sched3,
};

/** The weight every destination gets (kube-router programs all endpoints with weight 1). */
export const DEST_WEIGHT = 1;

/** One virtual service as planned, with the Service that owns it. */
export interface PlannedService {
  /** "namespace/name" of the Service. */
  owner: string;
  /** Which address of the Service this is: cluster, external, loadbalancer or nodeport. */
  kind: "cluster" | "external" | "loadbalancer" | "nodeport";
  service: IpvsService;
  destinations: IpvsDestination[];
  /**
   * Destination addresses on this node: a pod there may reach itself through this service, and that
   * traffic must be masqueraded, or the pod would get its own reply from the wrong address. Always, for
   * every Service, as the nftables backend (kube-router asks for it with `kube-router.io/service.hairpin`
   * or `--hairpin-mode`; a pod failing to reach itself without them helps no one). Only this node's
   * endpoints can hairpin here, which keeps the set small.
   */
  hairpin: string[];
  /**
   * Whether traffic from outside the pod CIDRs is masqueraded. Not for external traffic of a Service with
   * externalTrafficPolicy Local: its endpoints are on this node, so the reply comes back through IPVS
   * without it, and the pod sees the client's own address (what the policy is for).
   */
  masquerade: boolean;
  /**
   * loadBalancerSourceRanges of a LoadBalancer IP (canonical, disjoint CIDRs of the service's family):
   * sources outside them are dropped. Absent when the Service gives none (everyone may connect).
   */
  sourceRanges?: string[];
  /**
   * Direct server return: the address, protocol and port the firewall mark stands for, and the local
   * pods (endpoint IPs on this node) that must hold the VIP. `service.fwmark` is 0 until `mergePlans`.
   */
  dsr?: DsrTarget;
}

/** What one DSR firewall-mark service serves. */
export interface DsrTarget {
  family: Family;
  vip: string;
  protocol: IpvsProtocol;
  port: number;
  /** Endpoint IPs on this node whose pods hold `vip` on their tunnel interface. */
  localEndpoints: string[];
}

/** One Service's share of the plan. */
export interface ServicePlan {
  key: string;
  services: PlannedService[];
  /** Cluster, external and LoadBalancer IPs: the addresses put on kube-dummy-if. */
  vips: string[];
  /** What was wrong and skipped or replaced (logged once with the Service's name). */
  problems: string[];
  /** Set when the Service is served with direct server return: its local pods, which must be entered. */
  dsr?: { localEndpoints: string[]; vips: string[] };
}

/** The node-wide inputs of the plan. */
export interface IpvsPlanContext extends ProxyNodeContext {
  /** Where NodePorts answer: the node's addresses (all local addresses with --nodeport-bindon-all-ip). */
  nodePortIps: readonly string[];
}

/** The scheduler and flags a Service asks for, and what was wrong with the asking. */
export function schedulerOf(svc: ServiceInfo): { scheduler: string; flags: number; problems: string[] } {
  const problems: string[] = [];
  let scheduler = "rr";
  const asked = svc.annotations[IPVS_ANNOTATIONS.scheduler]?.trim();
  if (asked !== undefined && asked !== "") {
    if ((IPVS_SCHEDULERS as readonly string[]).includes(asked)) scheduler = asked;
    else {
      problems.push(
        `${IPVS_ANNOTATIONS.scheduler} "${asked}" is not one of ${IPVS_SCHEDULERS.join(" ")}; using rr`,
      );
    }
  }
  let flags = 0;
  const flagText = svc.annotations[IPVS_ANNOTATIONS.schedFlags];
  if (flagText !== undefined && flagText.trim() !== "") {
    if (scheduler !== "mh") {
      problems.push(
        `${IPVS_ANNOTATIONS.schedFlags} applies to the mh scheduler only; ignored with ${scheduler}`,
      );
    } else {
      for (const part of flagText.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
        const bit = SCHED_FLAGS[part];
        if (bit === undefined) {
          problems.push(`${IPVS_ANNOTATIONS.schedFlags} "${part}" is not flag-1, flag-2 or flag-3; ignored`);
        } else flags |= bit;
      }
    }
  }
  return { scheduler, flags, problems };
}

function destinationsOf(eps: readonly ServiceEndpoint[]): IpvsDestination[] {
  const seen = new Map<string, IpvsDestination>();
  for (const e of eps) {
    const ip = canonicalIp(e.ip)?.ip;
    if (ip === undefined) continue;
    seen.set(`${ip}/${e.port}`, { address: ip, port: e.port, forward: "masq", weight: DEST_WEIGHT });
  }
  return [...seen.values()].sort((a, b) => destId(a).localeCompare(destId(b)));
}

/** The identity of a destination within its service: "10.1.1.5/8080". */
export function destId(d: { address: string; port: number }): string {
  return `${d.address}/${d.port}`;
}

/** The DSR mode kube-router knows (its only one). */
export const DSR_TUNNEL = "tunnel";

/**
 * Plans one Service. `dsrFallback` says why its DSR cannot be used this time (a local pod that cannot be
 * entered): the Service is then served through NAT, the safe choice, and the reason is one of its problems.
 */
export function planService(svc: ServiceInfo, ctx: IpvsPlanContext, dsrFallback?: string): ServicePlan {
  const out: ServicePlan = { key: svc.key, services: [], vips: [], problems: [...svc.problems] };
  const sched = schedulerOf(svc);
  out.problems.push(...sched.problems);
  const ext = validExternalIps(svc, ctx);
  out.problems.push(...ext.problems);
  const dsrAsked = svc.annotations[IPVS_ANNOTATIONS.dsr];
  let dsr = false;
  if (dsrAsked !== undefined) {
    if (dsrAsked.trim().toLowerCase() !== DSR_TUNNEL) {
      out.problems.push(
        `${IPVS_ANNOTATIONS.dsr}="${dsrAsked}" is not "${DSR_TUNNEL}"; external IPs are served through NAT`,
      );
    } else if (dsrFallback !== undefined) {
      out.problems.push(
        `direct server return not possible: ${dsrFallback}; external IPs are served through NAT`,
      );
    } else dsr = true;
  }
  const dsrVips: string[] = [];
  const dsrLocal = new Set<string>();
  let dsrPortWarned = false;
  const externalLocal = svc.externalTrafficPolicy === "Local" ||
    svc.annotations[IPVS_ANNOTATIONS.local]?.toLowerCase() === "true";
  const internalLocal = svc.internalTrafficPolicy === "Local";
  let flags = sched.flags;
  let timeout = 0;
  if (svc.sessionAffinityTimeoutSeconds !== undefined) {
    flags |= IpvsServiceFlag.persistent;
    timeout = Math.max(1, Math.floor(svc.sessionAffinityTimeoutSeconds));
  }

  for (const f of ctx.families) {
    const clusterIp = svc.clusterIPs.map(canonicalIp).find((c) => c?.family === f)?.ip;
    // A family the Service has no cluster IP in is not served in it (single-stack), as the nft backend.
    if (!clusterIp) continue;
    const externalIps = ext.externalIPs.filter((ip) => canonicalIp(ip)!.family === f);
    const lbIps = ext.loadBalancerIPs.filter((ip) => canonicalIp(ip)!.family === f);
    const nodeIps = [
      ...new Set(ctx.nodePortIps.map(canonicalIp).filter((c) => c?.family === f).map((c) => c!.ip)),
    ];
    out.vips.push(clusterIp);
    if (dsr) dsrVips.push(...externalIps, ...lbIps);
    else out.vips.push(...externalIps, ...lbIps);
    // As kube-proxy and the nftables backend: LoadBalancer IPs only (NodePorts are not subject to them).
    const sourceRanges = disjointCidrs(svc.loadBalancerSourceRanges, f);

    for (const p of svc.ports) {
      const protocol = p.protocol.toLowerCase() as IpvsProtocol;
      const all = p.endpoints.filter((e) => e.family === f && canonicalIp(e.ip)?.family === f);
      const opts = { nodeName: ctx.nodeName, topologyAware: false };
      const local = new Set(all.filter((e) => e.local).map((e) => canonicalIp(e.ip)!.ip));
      const clusterDests = destinationsOf(usableEndpoints(all, opts));
      const localDests = destinationsOf(usableEndpoints(all, { ...opts, localOnly: true }));
      const internal = internalLocal ? localDests : clusterDests;
      const external = externalLocal ? localDests : clusterDests;
      const make = (
        kind: PlannedService["kind"],
        address: string,
        port: number,
        dests: IpvsDestination[],
      ): PlannedService => ({
        ...(kind === "loadbalancer" && sourceRanges.length ? { sourceRanges } : {}),
        masquerade: kind === "cluster" || !externalLocal,
        owner: svc.key,
        kind,
        service: {
          family: f as Family,
          protocol,
          address,
          port,
          scheduler: sched.scheduler,
          flags,
          timeout,
          netmask: f === 4 ? 32 : 128,
        },
        destinations: dests.map((d) => ({ ...d })),
        hairpin: [...new Set(dests.map((d) => d.address).filter((a) => local.has(a)))],
      });
      out.services.push(make("cluster", clusterIp, p.port, internal));
      if (dsr) {
        const localIps = new Set(
          usableEndpoints(all, { ...opts, localOnly: true }).map((e) => canonicalIp(e.ip)!.ip),
        );
        // IPVS tunnelling passes the packet on unchanged: the pod sees the Service port, not targetPort.
        const tunnelled = [...new Map(external.map((d) => [d.address, d])).values()];
        if (
          !dsrPortWarned && tunnelled.some((d) => d.port !== p.port) && (externalIps.length || lbIps.length)
        ) {
          dsrPortWarned = true;
          out.problems.push(
            `direct server return delivers port ${p.port} unchanged (IPVS tunnelling cannot translate ` +
              `ports); endpoints listening only on their target port will not answer it`,
          );
        }
        const locals = tunnelled.map((d) => d.address).filter((ip) => localIps.has(ip));
        for (const [kind, ips] of [["external", externalIps], ["loadbalancer", lbIps]] as const) {
          for (const ip of ips) {
            for (const l of locals) dsrLocal.add(l);
            out.services.push({
              owner: svc.key,
              kind,
              service: {
                family: f as Family,
                fwmark: 0,
                scheduler: sched.scheduler,
                flags,
                timeout,
                netmask: f === 4 ? 32 : 128,
              },
              destinations: tunnelled.map((d) => ({
                address: d.address,
                port: 0,
                forward: "tunnel" as const,
                weight: DEST_WEIGHT,
              })),
              hairpin: [],
              masquerade: false,
              dsr: { family: f as Family, vip: ip, protocol, port: p.port, localEndpoints: locals },
            });
          }
        }
      } else {
        for (const ip of externalIps) out.services.push(make("external", ip, p.port, external));
        for (const ip of lbIps) out.services.push(make("loadbalancer", ip, p.port, external));
      }
      if (p.nodePort !== undefined) {
        for (const ip of nodeIps) out.services.push(make("nodeport", ip, p.nodePort, external));
      }
    }
  }
  out.vips = [...new Set(out.vips)];
  if (dsr && dsrVips.length) {
    out.dsr = { localEndpoints: [...dsrLocal].sort(), vips: [...new Set(dsrVips)] };
  }
  return out;
}

/** The index bits of a DSR firewall mark (1..0x3fff; the mark is NFT_MARK.dsr | index). */
export const DSR_INDEX_MASK = 0x3fff;

/** FNV-1a (32 bit) of a string's UTF-8 bytes: a cheap, well-spread, stable hash. */
function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(text)) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** The identity of a DSR target: "tcp/203.0.113.5:80" (the form of an address service's key). */
export function dsrKey(t: { family: Family; vip: string; protocol: IpvsProtocol; port: number }): string {
  return serviceKeyString({ family: t.family, protocol: t.protocol, address: t.vip, port: t.port });
}

/**
 * Firewall marks for DSR targets, one each and never shared. A key keeps the mark it had in `previous`
 * (as long as no other key kept it first), so marks are stable while their VIP:port lives; new keys start
 * at the hash of the key and take the next free index. Without `previous` (a restart) the same set of
 * keys gets the same marks, since keys are handled in sorted order. Keys beyond the 16,383 marks there
 * are get none (left out of the result).
 */
export function assignFwmarks(
  keys: Iterable<string>,
  previous: ReadonlyMap<string, number> = new Map(),
): Map<string, number> {
  const sorted = [...new Set(keys)].sort();
  const out = new Map<string, number>();
  const used = new Set<number>();
  for (const k of sorted) {
    const p = previous.get(k);
    if (
      p === undefined || used.has(p) || (p & ~DSR_INDEX_MASK) !== NFT_MARK.dsr || (p & DSR_INDEX_MASK) === 0
    ) {
      continue;
    }
    out.set(k, p);
    used.add(p);
  }
  for (const k of sorted) {
    if (out.has(k)) continue;
    const start = fnv1a(k) % DSR_INDEX_MASK;
    for (let i = 0; i < DSR_INDEX_MASK; i++) {
      const mark = NFT_MARK.dsr | (((start + i) % DSR_INDEX_MASK) + 1);
      if (used.has(mark)) continue;
      out.set(k, mark);
      used.add(mark);
      break;
    }
  }
  return out;
}

/** The whole desired IPVS state: virtual services by key string, and who lost a conflict. */
export interface IpvsPlan {
  services: Map<string, PlannedService>;
  /** VIPs per family (the addresses for kube-dummy-if; DSR VIPs are not among them). */
  vips: Map<string, Family>;
  /** Problems per Service key, including conflicts with another Service over one virtual service. */
  problems: Map<string, string[]>;
  /** DSR firewall marks by `dsrKey` (pass back to the next `mergePlans` to keep them stable). */
  fwmarks: Map<string, number>;
  /** DSR VIPs each local pod (by endpoint IP) must hold on its tunnel interface. */
  dsrPods: Map<string, Set<string>>;
}

/**
 * Merges Service plans in key order: two Services may not own one virtual service (the same external
 * IP and port, say, whether through NAT or DSR); the first by key keeps it and the other's is dropped and
 * reported. DSR services get their firewall marks here (`previousMarks`: the last plan's `fwmarks`).
 */
export function mergePlans(
  plans: readonly ServicePlan[],
  previousMarks: ReadonlyMap<string, number> = new Map(),
): IpvsPlan {
  const out: IpvsPlan = {
    services: new Map(),
    vips: new Map(),
    problems: new Map(),
    fwmarks: new Map(),
    dsrPods: new Map(),
  };
  const claimed = new Map<string, string>();
  const dsr: PlannedService[] = [];
  for (const plan of [...plans].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))) {
    const problems = [...plan.problems];
    for (const ps of plan.services) {
      const k = ps.dsr ? dsrKey(ps.dsr) : serviceKeyString(ps.service);
      const held = claimed.get(k);
      if (held !== undefined && held !== plan.key) {
        problems.push(`virtual service ${k} is already used by ${held}; skipped`);
        continue;
      }
      claimed.set(k, plan.key);
      if (ps.dsr) dsr.push(ps);
      else out.services.set(k, ps);
    }
    for (const v of plan.vips) out.vips.set(v, canonicalIp(v)!.family);
    if (problems.length) out.problems.set(plan.key, problems);
  }
  const marks = assignFwmarks(dsr.map((ps) => dsrKey(ps.dsr!)), previousMarks);
  for (const ps of dsr) {
    const k = dsrKey(ps.dsr!);
    const mark = marks.get(k);
    if (mark === undefined) {
      const list = out.problems.get(ps.owner) ?? [];
      list.push(`no firewall mark is left for ${k} (all 16383 in use); skipped`);
      out.problems.set(ps.owner, list);
      continue;
    }
    out.fwmarks.set(k, mark);
    const service = { ...ps.service, fwmark: mark } as IpvsService;
    out.services.set(serviceKeyString(service), { ...ps, service });
    for (const ep of ps.dsr!.localEndpoints) {
      const set = out.dsrPods.get(ep) ?? new Set<string>();
      set.add(ps.dsr!.vip);
      out.dsrPods.set(ep, set);
    }
  }
  return out;
}
