/**
 * Pod egress: traffic from the cluster's pods to anywhere that is neither a pod nor a node leaves with
 * the node's address (kube-router's --enable-pod-egress). The router's own table, `inet
 * kube_router_router` (core's NFT_TABLES.router), built as one typed nftables transaction.
 *
 * The table is updated in place, never deleted and recreated: each transaction (re)declares the sets and
 * the chain (a no-op when present), flushes them and adds the wanted elements and rules. Within one
 * transaction that is atomic: packets see the old contents or the new, never an empty set.
 *
 * Equivalent to:
 *   table inet kube_router_router {
 *     set pod_subnets_v4 { type ipv4_addr; flags interval; elements = { 10.1.0.0/16 } }
 *     set node_ips_v4 { type ipv4_addr; elements = { 192.168.1.100, … } }
 *     chain pod_egress { type nat hook postrouting priority srcnat; policy accept;
 *       ip saddr @pod_subnets_v4 ip daddr != @pod_subnets_v4 ip daddr != @node_ips_v4 masquerade fully-random }
 *   }
 */
import { NFT_FAMILY, NFT_PRIORITY, NFT_TABLES } from "../../core/mod.ts";
import {
  type Family,
  formatCidr,
  type NftSetSpec,
  NftTransaction,
  parseCidr,
  parseIP,
} from "../../ffi/mod.ts";

export const ROUTER_TABLE = NFT_TABLES.router;

export interface EgressState {
  /** Every pod CIDR in the cluster (all nodes'), both families mixed. */
  podCidrs: readonly string[];
  /** Every node's addresses. */
  nodeIps: readonly string[];
  families: readonly Family[];
  /** Masquerade pod egress (--enable-pod-egress); false leaves the sets but no rule. */
  masquerade: boolean;
}

const CHAIN = {
  name: "pod_egress",
  type: "nat",
  hook: "postrouting",
  priority: NFT_PRIORITY.srcnat,
  policy: "accept",
} as const;

function podSet(family: Family): NftSetSpec {
  return {
    name: `pod_subnets_v${family}`,
    type: family === 4 ? "ipv4_addr" : "ipv6_addr",
    flags: ["interval"],
  };
}

function nodeSet(family: Family): NftSetSpec {
  return { name: `node_ips_v${family}`, type: family === 4 ? "ipv4_addr" : "ipv6_addr" };
}

/** A CIDR as an interval-set element: the bare address for a host prefix, as nft prints it. */
function prefixElem(cidr: string): string {
  const c = parseCidr(cidr)!;
  const max = c.family === 4 ? 32 : 128;
  const text = formatCidr(c);
  return c.prefix === max ? text.split("/")[0]! : text;
}

function masqueradeRule(family: Family): string {
  const proto = family === 4 ? "ip" : "ip6";
  const pods = `@pod_subnets_v${family}`;
  return `${proto} saddr ${pods} ${proto} daddr != ${pods} ${proto} daddr != @node_ips_v${family} masquerade fully-random`;
}

/**
 * The transaction that makes the router's table exactly `s`, in place: sets and chain declared (no-op
 * when present), emptied and refilled; the sets of a family no longer served are removed.
 */
export function egressTransaction(s: EgressState): NftTransaction {
  const tx = new NftTransaction(NFT_FAMILY, ROUTER_TABLE);
  tx.add({ table: { comment: "kube-router router: pod egress" } });
  tx.add({ chain: CHAIN });
  // First the rules go (they name the sets), then the sets are refilled, then the rules come back.
  tx.flush({ chain: CHAIN });
  for (const fam of [4, 6] as const) {
    if (s.families.includes(fam)) continue;
    tx.destroy({ set: podSet(fam) });
    tx.destroy({ set: nodeSet(fam) });
  }
  for (const fam of s.families) {
    const pods = [...new Set(s.podCidrs.filter((c) => parseCidr(c)?.family === fam).map(prefixElem))];
    const nodes = [...new Set(s.nodeIps.filter((ip) => parseIP(ip)?.family === fam))];
    tx.add({ set: podSet(fam) }).flush({ set: podSet(fam) });
    tx.add({ set: nodeSet(fam) }).flush({ set: nodeSet(fam) });
    for (const p of pods) tx.add({ element: { set: podSet(fam).name, key: [p] } });
    for (const ip of nodes) tx.add({ element: { set: nodeSet(fam).name, key: [ip] } });
  }
  if (s.masquerade) {
    for (const fam of s.families) {
      tx.add({
        rule: { chain: CHAIN.name, rule: masqueradeRule(fam), comment: `kube-router pod egress IPv${fam}` },
      });
    }
  }
  return tx;
}

/**
 * Removes the table the router used before each module had its own (`inet kube_router`), if present. The
 * router runs it on start, after its own table is in place, and --cleanup-config runs it too.
 */
export function legacyTableCleanupTransaction(): NftTransaction {
  return new NftTransaction(NFT_FAMILY, NFT_TABLES.legacyRouter).destroy({ table: {} });
}

/**
 * Removes every table the router made (--cleanup-config): its own and the one under the old name, each if
 * present. Equivalent to: `nft delete table inet kube_router_router; nft delete table inet kube_router`.
 */
export function egressCleanupTransactions(): NftTransaction[] {
  return [
    new NftTransaction(NFT_FAMILY, ROUTER_TABLE).destroy({ table: {} }),
    legacyTableCleanupTransaction(),
  ];
}
