/**
 * Who this node peers with, computed from the flags and every Node's annotations (pure). kube-router's
 * rules: an iBGP full mesh among nodes of the cluster ASN (--enable-ibgp, --nodes-full-mesh); without
 * full mesh, each node's ASN comes from kube-router.io/node.asn and only equal ASNs mesh; route
 * reflector clients peer only with servers of their cluster id; external peers from --peer-router-* go on
 * every node, those from a node's annotations on that node only.
 */
import type { Config } from "../../core/mod.ts";
import type { NodeInfo } from "./node_info.ts";

export interface PeerSpec {
  address: string;
  asn: number;
  port: number;
  /** "node": another node of the cluster; "external": a router outside it. */
  kind: "node" | "external";
  /** The peer node's name, for kind "node". */
  node?: string;
  password?: string;
  localAddress?: string;
  /** eBGP multihop TTL (--peer-router-multihop-ttl), external peers only. */
  multihopTtl?: number;
  /** We are a route reflector and this peer is one of our clients. */
  routeReflectorClient?: boolean;
}

export interface PeerPlan {
  /** This node's ASN; undefined if it cannot run BGP (reason in problems). */
  localAsn: number | undefined;
  routerId: string | undefined;
  /** The route reflector cluster id this node serves, if any. */
  clusterId: string | undefined;
  peers: PeerSpec[];
  problems: string[];
}

/** The key a peer is known by: a change of anything else is a change of that peer, not a new one. */
export function peerKey(p: Pick<PeerSpec, "address" | "port">): string {
  return `${p.address}|${p.port}`;
}

/**
 * The ASN a node runs: the cluster ASN in full mesh mode (kube-router ignores node.asn there), else its
 * kube-router.io/node.asn annotation.
 */
export function nodeAsn(config: Config, n: NodeInfo): number | undefined {
  return config.nodesFullMesh ? config.effectiveClusterAsn : n.asn;
}

/** The address used to reach a node: IPv4 when enabled, else IPv6 (one session carries both families). */
export function nodePeerAddress(config: Config, n: NodeInfo): string | undefined {
  return (config.enableIpv4 ? n.ipv4 : undefined) ?? (config.enableIpv6 ? n.ipv6 : undefined);
}

/** A stable IPv4-shaped router id derived from a string (for IPv6-only nodes with --router-id=generate). */
export function generatedRouterId(seed: string): string {
  let h = 0x811c9dc5;
  for (const ch of new TextEncoder().encode(seed)) {
    h ^= ch;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  if (h === 0) h = 1;
  return [h >>> 24, (h >>> 16) & 255, (h >>> 8) & 255, h & 255].join(".");
}

function routerIdFor(config: Config, self: NodeInfo, problems: string[]): string | undefined {
  if (config.routerId !== "" && config.routerId !== "generate") return config.routerId;
  if (self.ipv4) return self.ipv4;
  if (config.routerId === "generate") return generatedRouterId(self.ipv6 ?? self.name);
  problems.push(
    "node has no IPv4 address for a BGP router id; set --router-id=<ipv4> or --router-id=generate",
  );
  return undefined;
}

/** Whether two nodes of the same ASN should peer, given route reflector roles (symmetric). */
function rrAllows(a: NodeInfo, b: NodeInfo): boolean {
  if (a.rrClient !== undefined && b.rrServer !== a.rrClient) return false;
  if (b.rrClient !== undefined && a.rrServer !== b.rrClient) return false;
  return true;
}

export function planPeers(config: Config, self: NodeInfo, nodes: readonly NodeInfo[]): PeerPlan {
  const problems = [...self.problems.map((p) => `node ${self.name}: ${p}`)];
  const localAsn = nodeAsn(config, self);
  const routerId = routerIdFor(config, self, problems);
  const plan: PeerPlan = { localAsn, routerId, clusterId: self.rrServer, peers: [], problems };
  if (localAsn === undefined) {
    problems.push(
      `--nodes-full-mesh=false needs the kube-router.io/node.asn annotation on node ${self.name}`,
    );
    return plan;
  }
  const seen = new Set<string>();
  const add = (p: PeerSpec) => {
    const key = peerKey(p);
    if (seen.has(key)) {
      problems.push(`peer ${p.address} port ${p.port} is configured twice; keeping the first`);
      return;
    }
    seen.add(key);
    plan.peers.push(p);
  };

  if (config.enableIbgp) {
    for (const n of nodes) {
      if (n.name === self.name) continue;
      const address = nodePeerAddress(config, n);
      if (!address) continue;
      if (nodeAsn(config, n) !== localAsn) continue;
      if (!rrAllows(self, n)) continue;
      const p: PeerSpec = { address, asn: localAsn, port: config.bgpPort, kind: "node", node: n.name };
      if (self.rrServer !== undefined && n.rrClient === self.rrServer) p.routeReflectorClient = true;
      add(p);
    }
  }

  const ttl = config.peerRouterMultihopTtl > 1 ? config.peerRouterMultihopTtl : undefined;
  for (const ext of config.externalPeers) {
    const p: PeerSpec = { address: ext.ip, asn: ext.asn, port: ext.port, kind: "external" };
    if (ext.password) p.password = ext.password;
    if (ttl) p.multihopTtl = ttl;
    add(p);
  }
  for (const ann of self.peers) {
    const p: PeerSpec = { address: ann.ip, asn: ann.asn, port: ann.port, kind: "external" };
    if (ann.password) p.password = ann.password;
    if (ann.localIp) p.localAddress = ann.localIp;
    if (ttl) p.multihopTtl = ttl;
    add(p);
  }
  return plan;
}
