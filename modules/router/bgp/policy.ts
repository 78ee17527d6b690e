/**
 * Import and export policy hooks. A policy sees one route and the peer it comes from (import) or goes
 * to (export) and returns the attributes to use, or `undefined` to reject. kube-router's fixed
 * policies (accept pod CIDRs, reject service VIPs and the default route, tag communities) are built
 * from `prefixFilter` and `addCommunities`, combined with `chain`.
 */
import { cidrContains, parseCidr } from "../../../ffi/mod.ts";
import { parsePrefix } from "./message.ts";
import type { Family, PathAttributes } from "./types.ts";

export interface PolicyPeer {
  address: string;
  asn: number;
  ebgp: boolean;
}

export interface PolicyRoute {
  family: Family;
  prefix: string;
  attrs: PathAttributes;
}

/**
 * Returns the attributes to use (the same object when unchanged, a new one when changed) or undefined
 * to reject. It must not mutate `route.attrs`: the speaker shares those objects between prefixes.
 */
export type Policy = (route: PolicyRoute, peer: PolicyPeer) => PathAttributes | undefined;

export const acceptAll: Policy = (r) => r.attrs;

/** Runs policies in order; the first rejection wins, each sees the previous one's attributes. */
export function chain(...policies: Policy[]): Policy {
  return (route, peer) => {
    let attrs: PathAttributes | undefined = route.attrs;
    for (const p of policies) {
      attrs = p({ ...route, attrs }, peer);
      if (!attrs) return undefined;
    }
    return attrs;
  };
}

export interface PrefixRule {
  /** CIDR the route must fall inside. */
  cidr: string;
  /** Route prefix length bounds (inclusive); by default exactly or longer than the CIDR's own. */
  minLength?: number;
  maxLength?: number;
}

/**
 * Accepts or rejects routes whose prefix matches a rule (like a GoBGP prefix-set with a
 * masklength-range). `action: "reject"` drops matches and passes the rest; `"accept"` passes only
 * matches.
 */
export function prefixFilter(rules: PrefixRule[], action: "accept" | "reject"): Policy {
  const compiled = rules.map((r) => {
    const c = parseCidr(r.cidr);
    if (!c) throw new RangeError(`bad CIDR in prefix filter: ${r.cidr}`);
    return { c, min: r.minLength ?? c.prefix, max: r.maxLength ?? (c.family === 4 ? 32 : 128) };
  });
  return (route) => {
    const p = parsePrefix(route.prefix);
    const hit = p !== undefined &&
      compiled.some(({ c, min, max }) =>
        c.addr.length === p.addr.length && p.len >= min && p.len <= max && cidrContains(c, p.addr)
      );
    return (hit === (action === "accept")) ? route.attrs : undefined;
  };
}

/** Adds communities (kube-router's `kube-router.io/node.bgp.communities`) to every route. */
export function addCommunities(communities: number[]): Policy {
  return (route) => {
    const have = route.attrs.communities ?? [];
    const merged = [...have];
    for (const c of communities) if (!merged.includes(c)) merged.push(c);
    return merged.length === have.length ? route.attrs : { ...route.attrs, communities: merged };
  };
}

/** Applies `policy` only to peers matching `when`; others pass unchanged. */
export function forPeers(when: (peer: PolicyPeer) => boolean, policy: Policy): Policy {
  return (route, peer) => when(peer) ? policy(route, peer) : route.attrs;
}
