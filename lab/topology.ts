/**
 * The lab's addressing plan, as pure functions: which namespace, address and pod CIDR each member of the
 * cluster gets. It follows the seed: kube-master 192.168.1.99, kube-node1..3 at 192.168.1.100-102 in
 * 192.168.1.0/24, pod CIDRs 10.1.N.0/24 out of 10.1.0.0/16, service cluster IPs from 172.16.0.0/16.
 *
 * Limits: pod CIDRs are /24s of 10.1.0.0/16 starting at 10.1.1.0, so at most 255 nodes. Up to 155 nodes
 * fit the seed's 192.168.1.0/24 (.100-.254); with more, the underlay widens to 192.168.0.0/16 and the
 * addresses simply continue (kube-node156 = 192.168.1.255, kube-node157 = 192.168.2.0, both valid host
 * addresses in a /16).
 */
import { cidrContains, parseCidr, parseIP } from "../ffi/mod.ts";

/** Largest `--nodes` the addressing supports (pod CIDRs 10.1.1.0/24 … 10.1.255.0/24). */
export const MAX_NODES = 255;
/** Largest `--nodes` that keeps the seed's 192.168.1.0/24 underlay. */
export const MAX_NODES_IN_SLASH24 = 155;

export const CLUSTER_CIDR = "10.1.0.0/16";
export const SERVICE_CIDR = "172.16.0.0/16";
export const NODE_PORT_RANGE: readonly [number, number] = [30000, 32767];
export const MASTER_IP = "192.168.1.99";
export const API_PORT = 6443;
export const DEFAULT_PREFIX = "krl-";

/** One machine of the lab cluster: the master or a node. */
export interface LabHost {
  /** Kubernetes name (kube-master, kube-node1 …). */
  name: string;
  /** Network namespace that plays the machine. */
  netns: string;
  /** Underlay address without prefix length. */
  ip: string;
  /** Underlay prefix length (24 or 16). */
  prefixLen: number;
  /** Interface name inside `netns` facing the underlay bridge. */
  ifname: string;
  /** Interface name of the other end, inside the underlay namespace. */
  peerIfname: string;
}

export interface Topology {
  prefix: string;
  /** Namespace holding the underlay bridge `br0`. */
  underlayNetns: string;
  master: LabHost;
  nodes: LabHost[];
}

function ipFromInt(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

const BASE = (192 << 24 >>> 0) + (168 << 16) + (1 << 8) + 99; // 192.168.1.99

/** The lab cluster for `nodes` nodes with namespace names starting with `prefix`. */
export function topology(nodes: number, prefix = DEFAULT_PREFIX): Topology {
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > MAX_NODES) {
    throw new RangeError(`--nodes must be between 1 and ${MAX_NODES}, got ${nodes}`);
  }
  if (!/^[a-z0-9-]{1,20}$/.test(prefix)) {
    throw new RangeError(`namespace prefix must be 1-20 of [a-z0-9-], got ${JSON.stringify(prefix)}`);
  }
  const prefixLen = nodes <= MAX_NODES_IN_SLASH24 ? 24 : 16;
  const master: LabHost = {
    name: "kube-master",
    netns: `${prefix}master`,
    ip: MASTER_IP,
    prefixLen,
    ifname: "eth0",
    peerIfname: "m0",
  };
  const list: LabHost[] = [];
  for (let i = 1; i <= nodes; i++) {
    list.push({
      name: `kube-node${i}`,
      netns: `${prefix}node${i}`,
      ip: ipFromInt(BASE + i),
      prefixLen,
      ifname: "eth0",
      peerIfname: `n${i}`,
    });
  }
  return { prefix, underlayNetns: `${prefix}underlay`, master, nodes: list };
}

/** The pod CIDR of the node with index `i` (1-based): 10.1.i.0/24. */
export function podCidrForIndex(i: number): string {
  if (!Number.isInteger(i) || i < 1 || i > 255) throw new RangeError(`pod CIDR index out of range: ${i}`);
  return `10.1.${i}.0/24`;
}

/**
 * Picks the pod CIDR for a node, as kube-controller-manager --allocate-node-cidrs would, but keeping the
 * seed's numbering: kube-nodeN gets 10.1.N.0/24 when free, otherwise the lowest free /24 from 10.1.1.0.
 * Returns undefined when the cluster CIDR is exhausted.
 */
export function allocatePodCidr(nodeName: string, taken: Iterable<string>): string | undefined {
  const used = new Set<number>();
  for (const c of taken) {
    const m = /^10\.1\.(\d{1,3})\.0\/24$/.exec(c);
    if (m) used.add(Number(m[1]));
  }
  const wanted = /(\d+)$/.exec(nodeName);
  if (wanted) {
    const n = Number(wanted[1]);
    if (n >= 1 && n <= 255 && !used.has(n)) return podCidrForIndex(n);
  }
  for (let i = 1; i <= 255; i++) if (!used.has(i)) return podCidrForIndex(i);
  return undefined;
}

/** Does `ip` (dotted quad) fall inside `cidr` (a.b.c.d/len)? */
export function ipInCidr(ip: string, cidr: string): boolean {
  const c = parseCidr(cidr), a = parseIP(ip);
  return c !== undefined && a !== undefined && c.family === 4 && cidrContains(c, a.addr);
}

/** The name of the network namespace that plays a pod: `<prefix>pod-<first 12 hex of uid>`. */
export function podNetnsName(prefix: string, uid: string): string {
  return `${prefix}pod-${uid.replace(/-/g, "").slice(0, 12)}`;
}
