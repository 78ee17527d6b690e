/**
 * What this node announces, and what it accepts, over BGP (pure). kube-router's fixed policies:
 * - export: the pod CIDR(s) to iBGP peers; to external peers the pod CIDR (with --advertise-pod-cidr)
 *   and service VIPs (--advertise-cluster-ip/-external-ip/-loadbalancer-ip, overridable per service by
 *   kube-router.io/service.advertise.* annotations); a VIP of a service with a Local traffic policy only
 *   from nodes that have a ready local endpoint;
 * - import: never a service VIP, a default route, or a prefix in kube-router.io/node.bgp.customimportreject.
 */
import type { V1EndpointSlice, V1Service } from "@kubernetes/client-node";
import type { Config } from "../../core/config.ts";
import { cidrContains, type Family, formatIP, parseCidr, parseIP } from "../../ffi/mod.ts";

export const SERVICE_ANNOTATIONS = {
  advertiseClusterIp: "kube-router.io/service.advertise.clusterip",
  advertiseExternalIp: "kube-router.io/service.advertise.externalip",
  advertiseLoadBalancerIp: "kube-router.io/service.advertise.loadbalancerip",
  skipLbIps: "kube-router.io/service.skiplbips",
  local: "kube-router.io/service.local",
  proxyName: "service.kubernetes.io/service-proxy-name",
  headless: "service.kubernetes.io/headless",
} as const;

function annotationBool(svc: V1Service, key: string): boolean | undefined {
  const v = svc.metadata?.annotations?.[key];
  if (v === undefined) return undefined;
  if (v.toLowerCase() === "true") return true;
  if (v.toLowerCase() === "false") return false;
  return undefined;
}

function hostPrefix(ip: string): string | undefined {
  const p = parseIP(ip);
  return p ? `${formatIP(p.addr)}/${p.family === 4 ? 32 : 128}` : undefined;
}

function enabledFamily(config: Config, f: Family): boolean {
  return f === 4 ? config.enableIpv4 : config.enableIpv6;
}

/** Service keys (`namespace/name`) that have a ready or serving endpoint on `nodeName`. */
export function servicesWithLocalEndpoints(
  slices: readonly V1EndpointSlice[],
  nodeName: string,
): Set<string> {
  const out = new Set<string>();
  for (const s of slices) {
    const svc = s.metadata?.labels?.["kubernetes.io/service-name"];
    const ns = s.metadata?.namespace;
    if (!svc || !ns) continue;
    for (const ep of s.endpoints ?? []) {
      const c = ep.conditions ?? {};
      const usable = c.ready !== false || c.serving === true;
      if (ep.nodeName === nodeName && usable && c.terminating !== true) {
        out.add(`${ns}/${svc}`);
        break;
      }
    }
  }
  return out;
}

/**
 * The service VIPs (host prefixes) this node should announce to external peers.
 * `local` holds the services with an endpoint on this node (see servicesWithLocalEndpoints).
 */
export function serviceVips(
  config: Config,
  services: readonly V1Service[],
  local: ReadonlySet<string>,
): string[] {
  const out = new Set<string>();
  for (const svc of services) {
    const spec = svc.spec;
    if (!spec) continue;
    const proxyName = svc.metadata?.labels?.[SERVICE_ANNOTATIONS.proxyName];
    if (proxyName !== undefined && proxyName !== "kube-router") continue;
    if (svc.metadata?.labels?.[SERVICE_ANNOTATIONS.headless] !== undefined) continue;
    if (spec.type === "ExternalName") continue;
    const key = `${svc.metadata?.namespace}/${svc.metadata?.name}`;
    const forcedLocal = annotationBool(svc, SERVICE_ANNOTATIONS.local) === true;
    const hasLocal = local.has(key);
    const clusterOk = !(spec.internalTrafficPolicy === "Local" || forcedLocal) || hasLocal;
    const externalOk = !(spec.externalTrafficPolicy === "Local" || forcedLocal) || hasLocal;

    const want = (flag: boolean, annotation: string) => annotationBool(svc, annotation) ?? flag;
    const ips: string[] = [];
    if (want(config.advertiseClusterIp, SERVICE_ANNOTATIONS.advertiseClusterIp) && clusterOk) {
      const cips = spec.clusterIPs?.length ? spec.clusterIPs : spec.clusterIP ? [spec.clusterIP] : [];
      ips.push(...cips.filter((ip) => ip !== "None" && ip !== ""));
    }
    if (want(config.advertiseExternalIp, SERVICE_ANNOTATIONS.advertiseExternalIp) && externalOk) {
      ips.push(...(spec.externalIPs ?? []));
    }
    if (
      want(config.advertiseLoadbalancerIp, SERVICE_ANNOTATIONS.advertiseLoadBalancerIp) && externalOk &&
      annotationBool(svc, SERVICE_ANNOTATIONS.skipLbIps) !== true
    ) {
      for (const ing of svc.status?.loadBalancer?.ingress ?? []) {
        // ipMode Proxy means a cloud load balancer delivers the traffic; nothing for us to announce.
        if (ing.ip && (ing as { ipMode?: string }).ipMode !== "Proxy") ips.push(ing.ip);
      }
    }
    for (const ip of ips) {
      const p = parseIP(ip);
      const prefix = hostPrefix(ip);
      if (p && prefix && enabledFamily(config, p.family)) out.add(prefix);
    }
  }
  return [...out].sort();
}

export interface ImportPolicy {
  /** Service VIP ranges: --service-cluster-ip-range, --service-external-ip-range, --loadbalancer-ip-range. */
  vipRanges: string[];
  /** kube-router.io/node.bgp.customimportreject of this node. */
  customReject: string[];
}

export function importPolicy(config: Config, customReject: readonly string[]): ImportPolicy {
  return {
    vipRanges: [
      ...config.serviceClusterIpRange,
      ...config.serviceExternalIpRange,
      ...config.loadbalancerIpRange,
    ],
    customReject: [...customReject],
  };
}

/** Whether a learned prefix may be installed: a route that overlaps a VIP range or a reject is refused. */
export function importAllowed(policy: ImportPolicy, prefix: string): boolean {
  const p = parseCidr(prefix);
  if (!p) return false;
  if (p.prefix === 0) return false; // default route
  for (const r of [...policy.vipRanges, ...policy.customReject]) {
    const c = parseCidr(r);
    if (!c || c.family !== p.family) continue;
    // Reject a prefix inside the range, and a covering prefix that would swallow the range.
    if (p.prefix >= c.prefix ? cidrContains(c, p.addr) : cidrContains(p, c.addr)) return false;
  }
  return true;
}
