/**
 * What the proxy's unit tests (both backends) and the nftables conformance of its ruleset build on: one
 * dual-stack node in zone-a and its flags, endpoints, and a Service in the Service model's form.
 */
import type { ServiceEndpoint, ServiceInfo } from "../../../core/mod.ts";
import type { ProxyNodeContext } from "../../../modules/proxy/mod.ts";

/** Node n1 (192.168.1.100, fd00::100) with kube-router's defaults for the proxy's flags. */
export const nodeCtx: ProxyNodeContext = {
  nodeName: "n1",
  zone: "zone-a",
  families: [4, 6],
  podCidrs: ["10.1.1.0/24", "10.1.2.0/24", "fd00:1:1::/64"],
  nodeIps: ["192.168.1.100", "fd00::100"],
  serviceClusterIpRanges: ["172.16.0.0/16", "fd00:172::/112"],
  externalIpRanges: ["203.0.113.0/24"],
  loadBalancerIpRanges: ["198.51.100.0/24"],
  strictExternalIpValidation: true,
  masqueradeAll: false,
  hairpinMode: false,
  nodePortBindOnAllIp: false,
};

/** A ready endpoint on port 8080, on n1 when `local`, else on n2. */
export function ep(ip: string, opts: Partial<ServiceEndpoint> = {}): ServiceEndpoint {
  const local = opts.local ?? false;
  return {
    ip,
    family: ip.includes(":") ? 6 : 4,
    port: 8080,
    ready: true,
    serving: true,
    terminating: false,
    local,
    nodeName: local ? "n1" : "n2",
    ...opts,
  };
}

/** Service default/web, ClusterIP 172.16.0.10, port http 80/TCP with `endpoints`, overridden by `o`. */
export function svc(o: Partial<ServiceInfo> = {}, endpoints: ServiceEndpoint[] = []): ServiceInfo {
  return {
    key: "default/web",
    namespace: "default",
    name: "web",
    type: "ClusterIP",
    clusterIPs: ["172.16.0.10"],
    externalIPs: [],
    loadBalancerIPs: [],
    loadBalancerSourceRanges: [],
    externalTrafficPolicy: "Cluster",
    internalTrafficPolicy: "Cluster",
    annotations: {},
    problems: [],
    ports: [{ name: "http", protocol: "TCP", port: 80, endpoints }],
    ...o,
  };
}
