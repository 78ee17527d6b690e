/**
 * The node-wide inputs of the proxy's ruleset (pure): the flags, this node's addresses and zone, and every
 * node's pod CIDRs (traffic from outside them to a cluster IP is masqueraded, as kube-proxy's
 * cluster-CIDR local detector does).
 */
import type { V1Node } from "@kubernetes/client-node";
import type { Config } from "../../core/mod.ts";
import { type Family, parseCidr, parseIP } from "../../ffi/mod.ts";
import type { ProxyNodeContext } from "./nft_render.ts";

const ZONE_LABEL = "topology.kubernetes.io/zone";

/** InternalIP addresses of a node (else ExternalIP), at most one per family: where NodePorts answer. */
export function nodeAddresses(node: V1Node | undefined): string[] {
  const out: string[] = [];
  for (const family of [4, 6] as Family[]) {
    let found: string | undefined;
    for (const type of ["InternalIP", "ExternalIP"]) {
      for (const a of node?.status?.addresses ?? []) {
        if (!found && a.type === type && parseIP(a.address)?.family === family) found = a.address;
      }
    }
    if (found) out.push(found);
  }
  return out;
}

/** spec.podCIDRs (else spec.podCIDR) of one node, valid ones only. */
export function podCidrsOf(node: V1Node): string[] {
  const list = node.spec?.podCIDRs?.length
    ? node.spec.podCIDRs
    : node.spec?.podCIDR
    ? [node.spec.podCIDR]
    : [];
  return list.filter((c) => parseCidr(c) !== undefined);
}

export function nodeContext(config: Config, nodes: readonly V1Node[]): ProxyNodeContext {
  const self = nodes.find((n) => n.metadata?.name === config.nodeName);
  const families: Family[] = [];
  if (config.enableIpv4) families.push(4);
  if (config.enableIpv6) families.push(6);
  const zone = self?.metadata?.labels?.[ZONE_LABEL];
  return {
    nodeName: config.nodeName,
    ...(zone ? { zone } : {}),
    families,
    podCidrs: [...new Set(nodes.flatMap(podCidrsOf))].sort(),
    nodeIps: nodeAddresses(self),
    serviceClusterIpRanges: config.serviceClusterIpRange,
    externalIpRanges: config.serviceExternalIpRange,
    loadBalancerIpRanges: config.loadbalancerIpRange,
    strictExternalIpValidation: config.strictExternalIpValidation,
    masqueradeAll: config.masqueradeAll,
    hairpinMode: config.hairpinMode,
    nodePortBindOnAllIp: config.nodeportBindonAllIp,
    // As kube-router: the per-Service counters only when metrics are served.
    serviceCounters: config.metricsPort !== 0,
  };
}
