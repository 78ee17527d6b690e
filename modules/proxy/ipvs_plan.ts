/**
 * The IPVS backend's planner (pure, no I/O): the Service model to the virtual services and destinations
 * IPVS should hold, as kube-router's IPVS proxy lays them out.
 *
 * Per Service port and family: one virtual service on the cluster IP, one on every external and
 * LoadBalancer IP, one on each of the node's addresses at the NodePort. Destinations are the usable
 * endpoints (kube-router ignores topology hints), all masqueraded (NAT) with weight 1; external traffic
 * (NodePort, external and LoadBalancer IPs) keeps only this node's endpoints under externalTrafficPolicy
 * Local (or the `kube-router.io/service.local` annotation), cluster-IP traffic under
 * internalTrafficPolicy Local. ClientIP affinity is IPVS persistence with the Service's timeout.
 *
 * `kube-router.io/service.scheduler` picks the IPVS scheduler (rr wrr lc wlc dh sh mh; anything else is
 * logged and rr used); `kube-router.io/service.schedflags` (`flag-1,flag-2,flag-3`) sets
 * IP_VS_SVC_F_SCHED1..3, which kube-router applies with the mh scheduler only (mh-fallback, mh-port).
 */
import { type ServiceEndpoint, type ServiceInfo, usableEndpoints } from "../../core/mod.ts";
import {
  type Family,
  type IpvsDestination,
  type IpvsProtocol,
  type IpvsService,
  IpvsServiceFlag,
  serviceKeyString,
} from "../../ffi/mod.ts";
import { ANNOTATIONS, canonicalIp, type ProxyNodeContext, validExternalIps } from "./nft_render.ts";

/** Annotations read by the IPVS backend beyond the ones the nftables backend reads. */
export const IPVS_ANNOTATIONS = {
  scheduler: ANNOTATIONS.scheduler,
  schedFlags: "kube-router.io/service.schedflags",
  hairpin: ANNOTATIONS.hairpin,
  hairpinExternalIps: ANNOTATIONS.hairpinExternalIps,
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
  /** Endpoint addresses that must be masqueraded when they reach themselves through this service. */
  hairpin: boolean;
}

/** One Service's share of the plan. */
export interface ServicePlan {
  key: string;
  services: PlannedService[];
  /** Cluster, external and LoadBalancer IPs: the addresses put on kube-dummy-if. */
  vips: string[];
  /** What was wrong and skipped or replaced (logged once with the Service's name). */
  problems: string[];
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

function truthy(v: string | undefined): boolean {
  return v !== undefined && v.trim().toLowerCase() !== "false";
}

/** Plans one Service. */
export function planService(svc: ServiceInfo, ctx: IpvsPlanContext): ServicePlan {
  const out: ServicePlan = { key: svc.key, services: [], vips: [], problems: [...svc.problems] };
  const sched = schedulerOf(svc);
  out.problems.push(...sched.problems);
  const ext = validExternalIps(svc, ctx);
  out.problems.push(...ext.problems);
  const dsr = svc.annotations[IPVS_ANNOTATIONS.dsr];
  if (dsr !== undefined) {
    // The safe choice the issue asks for: NAT, which works for every pod, and say so.
    out.problems.push(
      `${IPVS_ANNOTATIONS.dsr}="${dsr}" is not supported yet; external IPs are served through NAT`,
    );
  }
  const externalLocal = svc.externalTrafficPolicy === "Local" ||
    svc.annotations[IPVS_ANNOTATIONS.local]?.toLowerCase() === "true";
  const internalLocal = svc.internalTrafficPolicy === "Local";
  const hairpin = ctx.hairpinMode || truthy(svc.annotations[IPVS_ANNOTATIONS.hairpin]);
  const hairpinExternal = hairpin && truthy(svc.annotations[IPVS_ANNOTATIONS.hairpinExternalIps]);
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
    out.vips.push(clusterIp, ...externalIps, ...lbIps);

    for (const p of svc.ports) {
      const protocol = p.protocol.toLowerCase() as IpvsProtocol;
      const all = p.endpoints.filter((e) => e.family === f && canonicalIp(e.ip)?.family === f);
      const opts = { nodeName: ctx.nodeName, topologyAware: false };
      const clusterDests = destinationsOf(usableEndpoints(all, opts));
      const localDests = destinationsOf(usableEndpoints(all, { ...opts, localOnly: true }));
      const internal = internalLocal ? localDests : clusterDests;
      const external = externalLocal ? localDests : clusterDests;
      const make = (
        kind: PlannedService["kind"],
        address: string,
        port: number,
        dests: IpvsDestination[],
        hp: boolean,
      ): PlannedService => ({
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
        hairpin: hp,
      });
      out.services.push(make("cluster", clusterIp, p.port, internal, hairpin));
      for (const ip of externalIps) {
        out.services.push(make("external", ip, p.port, external, hairpinExternal));
      }
      for (const ip of lbIps) out.services.push(make("loadbalancer", ip, p.port, external, hairpinExternal));
      if (p.nodePort !== undefined) {
        for (const ip of nodeIps) out.services.push(make("nodeport", ip, p.nodePort, external, hairpin));
      }
    }
  }
  out.vips = [...new Set(out.vips)];
  return out;
}

/** The whole desired IPVS state: virtual services by key string, and who lost a conflict. */
export interface IpvsPlan {
  services: Map<string, PlannedService>;
  /** VIPs per family. */
  vips: Map<string, Family>;
  /** Problems per Service key, including conflicts with another Service over one virtual service. */
  problems: Map<string, string[]>;
}

/**
 * Merges Service plans in key order: two Services may not own one virtual service (the same external
 * IP and port, say); the first by key keeps it and the other's is dropped and reported.
 */
export function mergePlans(plans: readonly ServicePlan[]): IpvsPlan {
  const out: IpvsPlan = { services: new Map(), vips: new Map(), problems: new Map() };
  for (const plan of [...plans].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0))) {
    const problems = [...plan.problems];
    for (const ps of plan.services) {
      const k = serviceKeyString(ps.service);
      const held = out.services.get(k);
      if (held && held.owner !== plan.key) {
        problems.push(`virtual service ${k} is already used by ${held.owner}; skipped`);
        continue;
      }
      out.services.set(k, ps);
    }
    for (const v of plan.vips) out.vips.set(v, canonicalIp(v)!.family);
    if (problems.length) out.problems.set(plan.key, problems);
  }
  return out;
}
