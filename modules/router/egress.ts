/**
 * Pod egress: traffic from the cluster's pods to anywhere that is neither a pod nor a node leaves with
 * the node's address (kube-router's --enable-pod-egress). Built as nftables JSON commands (libnftables'
 * JSON API) for the router's own table; the whole table is replaced in one atomic transaction.
 *
 * Equivalent to:
 *   table inet kube_router {
 *     set pod_subnets_v4 { type ipv4_addr; flags interval; elements = { 10.1.0.0/16 } }
 *     set node_ips_v4 { type ipv4_addr; elements = { 192.168.1.100, … } }
 *     chain pod_egress { type nat hook postrouting priority srcnat; policy accept;
 *       ip saddr @pod_subnets_v4 ip daddr != @pod_subnets_v4 ip daddr != @node_ips_v4 masquerade fully-random }
 *   }
 */
import { type Family, formatCidr, parseCidr, parseIP } from "../../ffi/mod.ts";

export const ROUTER_TABLE = "kube_router";
type NftCommand = Record<string, unknown>;

export interface EgressState {
  /** Every pod CIDR in the cluster (all nodes'), both families mixed. */
  podCidrs: readonly string[];
  /** Every node's addresses. */
  nodeIps: readonly string[];
  families: readonly Family[];
  /** Masquerade pod egress (--enable-pod-egress); false leaves the sets but no rule. */
  masquerade: boolean;
}

const table = { family: "inet", name: ROUTER_TABLE };

function prefixElem(cidr: string): unknown {
  const c = parseCidr(cidr)!;
  const max = c.family === 4 ? 32 : 128;
  const addr = formatCidr(c).split("/")[0];
  return c.prefix === max ? addr : { prefix: { addr, len: c.prefix } };
}

function setCommand(name: string, family: Family, interval: boolean, elems: unknown[]): NftCommand[] {
  const out: NftCommand[] = [{
    add: {
      set: {
        family: "inet",
        table: ROUTER_TABLE,
        name,
        type: family === 4 ? "ipv4_addr" : "ipv6_addr",
        ...(interval ? { flags: ["interval"] } : {}),
      },
    },
  }];
  if (elems.length) {
    out.push({ add: { element: { family: "inet", table: ROUTER_TABLE, name, elem: elems } } });
  }
  return out;
}

function masqueradeRule(family: Family): NftCommand {
  const proto = family === 4 ? "ip" : "ip6";
  const pods = `@pod_subnets_v${family}`;
  const nodes = `@node_ips_v${family}`;
  const match = (field: "saddr" | "daddr", op: "==" | "!=", right: string) => ({
    match: { op, left: { payload: { protocol: proto, field } }, right },
  });
  return {
    add: {
      rule: {
        family: "inet",
        table: ROUTER_TABLE,
        chain: "pod_egress",
        comment: `kube-router pod egress IPv${family}`,
        expr: [
          match("saddr", "==", pods),
          match("daddr", "!=", pods),
          match("daddr", "!=", nodes),
          { masquerade: { flags: ["fully-random"] } },
        ],
      },
    },
  };
}

/**
 * The transaction that makes the router's table exactly `s`: create-if-missing, delete, recreate.
 * Within one transaction that is atomic: packets see the old table or the new one, never neither.
 */
export function egressTransaction(s: EgressState): NftCommand[] {
  const cmds: NftCommand[] = [
    { add: { table } },
    { delete: { table } },
    { add: { table } },
  ];
  for (const fam of s.families) {
    const pods = s.podCidrs.filter((c) => parseCidr(c)?.family === fam).map(prefixElem);
    const nodes = [...new Set(s.nodeIps.filter((ip) => parseIP(ip)?.family === fam))];
    cmds.push(...setCommand(`pod_subnets_v${fam}`, fam, true, pods));
    cmds.push(...setCommand(`node_ips_v${fam}`, fam, false, nodes));
  }
  cmds.push({
    add: {
      chain: {
        family: "inet",
        table: ROUTER_TABLE,
        name: "pod_egress",
        type: "nat",
        hook: "postrouting",
        prio: 100,
        policy: "accept",
      },
    },
  });
  if (s.masquerade) { for (const fam of s.families) cmds.push(masqueradeRule(fam)); }
  return cmds;
}

/** Removes the router's table if it exists (--cleanup-config). Equivalent to: `nft delete table inet kube_router`. */
export function egressCleanupTransaction(): NftCommand[] {
  return [{ add: { table } }, { delete: { table } }];
}
