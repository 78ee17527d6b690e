/**
 * What this node announces, and what it accepts, over BGP (pure). kube-router's fixed policies:
 * - export: the pod CIDR(s) to iBGP peers; to external peers the pod CIDR (with --advertise-pod-cidr)
 *   and service VIPs (--advertise-cluster-ip/-external-ip/-loadbalancer-ip, overridable per service by
 *   kube-router.io/service.advertise.* annotations); a VIP of a service with a Local traffic policy only
 *   from nodes that have a ready local endpoint;
 * - import: never a service VIP, a default route, or a prefix in kube-router.io/node.bgp.customimportreject.
 */
import type { V1Service } from "@kubernetes/client-node";
import { cidrContains, type Family, parseCidr, parseIP } from "../../ffi/mod.ts";
import {
  buildServiceInfo,
  type Config,
  SERVICE_LABELS,
  type ServiceInfo,
  serviceKey,
  serviceSkipReason,
} from "../../core/mod.ts";

/** kube-router's per-Service annotations for BGP (the Service-reading labels live in core). */
export const SERVICE_ANNOTATIONS = {
  advertiseClusterIp: "kube-router.io/service.advertise.clusterip",
  advertiseExternalIp: "kube-router.io/service.advertise.externalip",
  advertiseLoadBalancerIp: "kube-router.io/service.advertise.loadbalancerip",
  skipLbIps: "kube-router.io/service.skiplbips",
  local: "kube-router.io/service.local",
  proxyName: SERVICE_LABELS.proxyName,
  headless: SERVICE_LABELS.headless,
} as const;

function annotationBool(info: ServiceInfo, key: string): boolean | undefined {
  const v = info.annotations[key];
  if (v === undefined) return undefined;
  if (v.toLowerCase() === "true") return true;
  if (v.toLowerCase() === "false") return false;
  return undefined;
}

function enabledFamily(config: Config, f: Family): boolean {
  return f === 4 ? config.enableIpv4 : config.enableIpv6;
}

/**
 * The host prefixes one Service's VIPs give, per the --advertise-* flags and the Service's annotations.
 * A VIP under a Local traffic policy (or kube-router.io/service.local) only when `hasLocal`: this node
 * has a ready or serving endpoint of the Service (core's hasLocalEndpoint). `info` is core's reading
 * of a Service that serviceSkipReason does not skip.
 */
export function vipsOfService(config: Config, info: ServiceInfo, hasLocal: boolean): string[] {
  const forcedLocal = annotationBool(info, SERVICE_ANNOTATIONS.local) === true;
  const clusterOk = !(info.internalTrafficPolicy === "Local" || forcedLocal) || hasLocal;
  const externalOk = !(info.externalTrafficPolicy === "Local" || forcedLocal) || hasLocal;
  const want = (flag: boolean, annotation: string) => annotationBool(info, annotation) ?? flag;
  const ips: string[] = [];
  if (want(config.advertiseClusterIp, SERVICE_ANNOTATIONS.advertiseClusterIp) && clusterOk) {
    ips.push(...info.clusterIPs);
  }
  if (want(config.advertiseExternalIp, SERVICE_ANNOTATIONS.advertiseExternalIp) && externalOk) {
    ips.push(...info.externalIPs);
  }
  if (
    want(config.advertiseLoadbalancerIp, SERVICE_ANNOTATIONS.advertiseLoadBalancerIp) && externalOk &&
    annotationBool(info, SERVICE_ANNOTATIONS.skipLbIps) !== true
  ) {
    ips.push(...info.loadBalancerIPs);
  }
  const out = new Set<string>();
  for (const ip of ips) {
    const f = parseIP(ip)?.family;
    if (f && enabledFamily(config, f)) out.add(`${ip}/${f === 4 ? 32 : 128}`);
  }
  return [...out];
}

/**
 * The service VIPs (host prefixes) this node should announce to external peers.
 * `local` holds the services with an endpoint on this node (core's servicesWithLocalEndpoints).
 */
export function serviceVips(
  config: Config,
  services: readonly V1Service[],
  local: ReadonlySet<string>,
): string[] {
  const out = new Set<string>();
  for (const svc of services) {
    if (serviceSkipReason(svc) !== undefined) continue;
    const info = buildServiceInfo(svc, [], "");
    for (const v of vipsOfService(config, info, local.has(serviceKey(svc)))) out.add(v);
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
