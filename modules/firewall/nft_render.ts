/**
 * The firewall model rendered as nftables objects in `inet kube_router_firewall`, and the transactions
 * that move the kernel from one rendering to the next.
 *
 * Layout (one table, both families):
 *
 * ```
 * chain forward  (filter hook forward, priority filter = 0: after the proxy's DNAT at -100, so egress
 *                 to a Service is judged against the endpoint the proxy chose)
 *   ct state established,related accept       replies and allowed connections' later packets
 *   jump egress                                the sender's egress policy, if it is a local pod
 *   jump ingress                               the receiver's ingress policy, if it is a local pod
 * chain egress
 *   ip saddr vmap @egress-v4                   isolated local pod -> goto its chain (eg-<hash>)
 *   ip6 saddr vmap @egress-v6
 *   ip saddr @local-cidrs-v4 ip saddr != @local-pods-v4 goto unknown-egress
 *   (same for v6)
 * chain ingress   (the same with daddr, in-<hash>, unknown-ingress)
 * chain eg-<hash> / in-<hash>                  one per distinct rule list and direction, named by a hash of
 *                                              its rules: pods with the same rules (replicas) share it
 *   <allowed peer and port> return             one rule per allowed combination, commented with its policy;
 *                                              an ipBlock is one rule per address range (never an
 *                                              anonymous set: see peerExprs)
 *   update @policy-drops { <policy key> }      one per isolating policy: counts the drop for that policy
 *   limit rate 10/minute burst 10 packets log group 100 prefix "..."   NFLOG, as kube-router
 *   reject with icmpx admin-prohibited
 * set policy-drops                             one element per isolating policy (64 bits of hash of its
 *                                              name, as `mark . mark`) with a counter: the drop count
 *                                              survives pod chain rewrites and costs no chain per policy
 * chain unknown-ingress / unknown-egress       empty (open) or the log + reject pair (deny)
 * sets pods-<hash>-v4/-v6                      pod IPs of one peer selector, cluster-wide
 * sets np-<hash>-v4/-v6                        egress named ports: ip . proto . port of destination pods
 * sets local-pods-v4/-v6, local-cidrs-v4/-v6   every known local pod IP; this node's pod CIDRs
 * ```
 *
 * Traffic from the node itself to its pods (kubelet probes) is never policed: it leaves through the
 * output hook, and this table has no output chain. Traffic from a pod to its own node reaches the
 * input hook and is not policed either (Kubernetes allows traffic between a pod and its node).
 *
 * The no-open-window argument: a local pod's isolation (its vmap element, its chain) and its
 * membership of `local-pods-*` are added in the same atomic transaction, and an address in the node's
 * pod CIDRs that is not in `local-pods-*` goes to `unknown-*`, which denies whenever a local pod that
 * has no IP yet is already selected by a policy (or always, with --netpol-default-deny). So between
 * the pod's IP appearing and the agent learning it, its packets meet `unknown-*`, never an open path.
 */
import type {
  NftChainSpec,
  NftElementSpec,
  NftMapSpec,
  NftObjectSpec,
  NftSetSpec,
  NftTransaction,
} from "../../ffi/mod.ts";
import type {
  AllowRule,
  Direction,
  FirewallModel,
  PeerMatch,
  PodPolicy,
  PortMatch,
} from "./policy_compiler.ts";

export const FIREWALL_FAMILY = "inet";
/** Kubernetes' filter priority; after the proxy's DNAT (-100). */
export const FILTER_PRIORITY = 0;
/** NFLOG group of dropped packets, as kube-router. */
export const NFLOG_GROUP = 100;

/** One chain as the firewall wants it. */
export interface DesiredChain {
  spec: NftChainSpec;
  rules: { rule: string; comment?: string }[];
}

/**
 * One set or map as the firewall wants it: elements as key text (`10.1.2.3`, `10.1.2.3 . tcp . 80`) to
 * value text (`goto in-abc` for maps, "" for sets). Plain strings, not element objects: the big peer
 * sets are rebuilt on every sync and diffed, and strings keep that cheap.
 */
export interface DesiredSet {
  kind: "set" | "map";
  spec: NftSetSpec | NftMapSpec;
  elements: Map<string, string>;
}

/** Everything in the firewall's table. */
export interface DesiredTable {
  chains: Map<string, DesiredChain>;
  sets: Map<string, DesiredSet>;
}

export interface RenderOptions {
  /** This node's pod CIDRs (Node spec.podCIDRs); unknown local addresses are recognised inside them. */
  podCidrs: readonly string[];
}

/** FNV-1a in two 32-bit lanes, as 8-digit hex strings. */
function hashLanes(s: string): [string, string] {
  let a = 0x811c9dc5, b = 0x01000193 ^ 0x5bd1e995;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193) >>> 0;
    b = Math.imul(b ^ c, 0x01000193 + 2) >>> 0;
  }
  return [a.toString(16).padStart(8, "0"), b.toString(16).padStart(8, "0")];
}

/** Short stable hash (48 bits of hashLanes), for object names derived from Kubernetes names. */
export function shortHash(s: string): string {
  const [a, b] = hashLanes(s);
  return a + b.slice(0, 4);
}

/**
 * The set counting refused packets per policy. A chain per policy holding one counter (the first
 * design) cost nothing per packet but made the table hundreds of chains, and libnftables reads every
 * chain of the ruleset back before each transaction: each pod event paid for them. One dynamic set
 * with a counter per element counts the same thing; elements are never fetched into that cache.
 */
export const DROPS_SET = "policy-drops";

export function dropsSpec(): NftSetSpec {
  return {
    name: DROPS_SET,
    type: "mark . mark",
    flags: ["dynamic"],
    counter: true,
    comment: "refused packets per policy",
  };
}

/** A policy's element in policy-drops: 64 bits of hash of its `namespace/name`, as two marks. */
export function policyDropKey(policy: string): string {
  const [a, b] = hashLanes(policy);
  return `0x${a} . 0x${b}`;
}

/** Comments are at most 128 bytes and cannot hold `"`. */
export function comment(s: string): string {
  const clean = s.replace(/["\n\r\\]/g, "'");
  // At most 3 bytes per UTF-16 unit: short strings need no encoding to be measured.
  if (clean.length * 3 <= 128 || new TextEncoder().encode(clean).length <= 128) return clean;
  let out = clean;
  while (new TextEncoder().encode(out).length > 125) out = out.slice(0, -1);
  return out + "...";
}

/**
 * A pod chain's name: 64 bits of hash of its rules. Pods whose rules are the same (the replicas of one
 * workload on this node, as a rule) share one chain, so a new replica costs map and set elements only.
 */
export function podChainName(dir: Direction, rules: DesiredChain["rules"]): string {
  const text = rules.map((r) => `${r.rule}\0${r.comment ?? ""}`).join("\n");
  const [a, b] = hashLanes(`${dir}\n${text}`);
  return `${dir === "ingress" ? "in" : "eg"}-${a}${b}`;
}
export function podSetName(key: string, family: 4 | 6): string {
  return `pods-${shortHash(key)}-v${family}`;
}
export function portSetName(key: string, family: 4 | 6): string {
  return `np-${shortHash(key)}-v${family}`;
}

export const FAMILIES = [4, 6] as const;
const ipKw = (f: 4 | 6) => (f === 4 ? "ip" : "ip6");
const addrType = (f: 4 | 6) => (f === 4 ? "ipv4_addr" : "ipv6_addr");

/** The chains every rendering has: the forward base chain and the two dispatch chains. */
export function baseChains(): DesiredChain[] {
  const out: DesiredChain[] = [{
    spec: { name: "forward", type: "filter", hook: "forward", priority: FILTER_PRIORITY, policy: "accept" },
    rules: [
      { rule: "ct state established,related accept" },
      { rule: "jump egress" },
      { rule: "jump ingress" },
    ],
  }];
  for (const dir of DIRECTIONS) {
    const addr = dir === "ingress" ? "daddr" : "saddr";
    const dispatch: DesiredChain["rules"] = [];
    for (const f of FAMILIES) {
      dispatch.push({ rule: `${ipKw(f)} ${addr} vmap @${vmapName(dir, f)}` });
      dispatch.push({
        rule: `${ipKw(f)} ${addr} @local-cidrs-v${f} ${
          ipKw(f)
        } ${addr} != @local-pods-v${f} goto unknown-${dir}`,
      });
    }
    out.push({ spec: { name: dir }, rules: dispatch });
  }
  return out;
}

/** The chain for addresses of local pods the agent does not know yet. */
export function unknownChain(dir: Direction, verdict: "accept" | "deny"): DesiredChain {
  return {
    spec: { name: `unknown-${dir}`, comment: `local addresses of pods the agent does not know yet, ${dir}` },
    rules: verdict === "deny" ? denyRules(`unknown ${dir}`) : [],
  };
}

export const DIRECTIONS = ["ingress", "egress"] as const;

export function vmapName(dir: Direction, f: 4 | 6): string {
  return `${dir}-v${f}`;
}
export function vmapSpec(dir: Direction, f: 4 | 6): NftMapSpec {
  return {
    name: vmapName(dir, f),
    type: addrType(f),
    map: "verdict",
    comment: `isolated local pods, ${dir}`,
  };
}
export function localPodsSpec(f: 4 | 6): NftSetSpec {
  return { name: `local-pods-v${f}`, type: addrType(f), comment: "every known pod of this node" };
}
export function localCidrsSpec(f: 4 | 6): NftSetSpec {
  return {
    name: `local-cidrs-v${f}`,
    type: addrType(f),
    flags: ["interval"],
    comment: "this node's pod CIDRs",
  };
}
export function podSetSpec(key: string, description: string, f: 4 | 6): NftSetSpec {
  return { name: podSetName(key, f), type: addrType(f), comment: comment(description) };
}
export function portSetSpec(key: string, description: string, f: 4 | 6): NftSetSpec {
  return {
    name: portSetName(key, f),
    type: `${addrType(f)} . inet_proto . inet_service`,
    comment: comment(description),
  };
}

/** This node's pod CIDRs of one family, as local-cidrs elements. */
export function cidrsOf(podCidrs: readonly string[], f: 4 | 6): string[] {
  return podCidrs.filter((c) => (f === 4) === !c.includes(":"));
}

/**
 * The chain of an isolated local pod in one direction: its allow rules, a count in policy-drops for
 * every policy isolating it, then log and reject. Nothing in it names the pod (see podChainName). The pod and port sets its rules use are added to
 * `usedPodSets` and `usedPortSets` (by key).
 */
export function podChain(
  dir: Direction,
  pp: PodPolicy,
  usedPodSets: Set<string>,
  usedPortSets: Set<string>,
): DesiredChain {
  const rules: DesiredChain["rules"] = [];
  // Only the families the pod has an address in: the chain is entered through the verdict-map entries of
  // its own addresses, so rules of another family could never match (and would cost a rule each).
  const families = FAMILIES.filter((f) => (f === 4 ? pp.ips.v4 : pp.ips.v6).length > 0);
  for (const r of pp.rules) {
    for (const f of families) rules.push(...allowRules(r, dir, f, usedPodSets, usedPortSets));
  }
  for (const pol of pp.policies) {
    rules.push({ rule: `update @${DROPS_SET} { ${policyDropKey(pol)} }`, comment: comment(pol) });
  }
  rules.push(...denyRules(`${dir} ${pp.policies.join(",")}`));
  const name = podChainName(dir, rules);
  return { spec: { name, comment: comment(`${dir} of pods isolated by ${pp.policies.join(", ")}`) }, rules };
}

/** The whole table for one model. Pure. */
export function renderFirewall(model: FirewallModel, opts: RenderOptions): DesiredTable {
  const chains = new Map<string, DesiredChain>();
  const sets = new Map<string, DesiredSet>();
  const addSet = (kind: "set" | "map", spec: NftSetSpec | NftMapSpec, elements: Map<string, string>) => {
    sets.set(spec.name, { kind, spec, elements });
  };
  const addChain = (c: DesiredChain) => chains.set(c.spec.name, c);

  const usedPodSets = new Set<string>();
  const usedPortSets = new Set<string>();
  const usedPolicies = new Set<string>();
  const podChains: Record<Direction, DesiredChain[]> = { ingress: [], egress: [] };
  for (const c of baseChains()) addChain(c);
  for (const dir of DIRECTIONS) {
    const verdicts = new Map<string, string>();
    for (const [podKey, pp] of model[dir]) {
      for (const pol of pp.policies) usedPolicies.add(pol);
      const c = podChain(dir, pp, usedPodSets, usedPortSets);
      podChains[dir].push(c);
      verdicts.set(podKey, `goto ${c.spec.name}`);
    }
    for (const f of FAMILIES) {
      const elements = new Map<string, string>();
      for (const [podKey, pp] of model[dir]) {
        for (const ip of f === 4 ? pp.ips.v4 : pp.ips.v6) elements.set(ip, verdicts.get(podKey)!);
      }
      addSet("map", vmapSpec(dir, f), elements);
    }
    addChain(unknownChain(dir, model.unknownLocal[dir]));
  }

  for (const f of FAMILIES) {
    const ips = [...model.localPods.values()].flatMap((p) => (f === 4 ? p.v4 : p.v6));
    addSet("set", localPodsSpec(f), new Map(ips.map((ip) => [ip, ""])));
    addSet("set", localCidrsSpec(f), new Map(cidrsOf(opts.podCidrs, f).map((c) => [c, ""])));
  }

  for (const dir of DIRECTIONS) for (const c of podChains[dir]) addChain(c);
  addSet("set", dropsSpec(), new Map([...usedPolicies].sort().map((p) => [policyDropKey(p), ""])));
  for (const key of [...usedPodSets].sort()) {
    const s = model.podSets.get(key)!;
    for (const f of FAMILIES) addSet("set", podSetSpec(key, s.description, f), elementsOf(s, f));
  }
  for (const key of [...usedPortSets].sort()) {
    const s = model.portSets.get(key)!;
    for (const f of FAMILIES) addSet("set", portSetSpec(key, s.description, f), elementsOf(s, f));
  }
  return { chains, sets };
}

/**
 * The element map of a compiled pod or port set, per family, made once per set object: the compiler
 * hands the same object while the set is unchanged, so unchanged sets cost nothing to render and the
 * diff skips them by identity.
 */
const elementCache = new WeakMap<object, Partial<Record<4 | 6, Map<string, string>>>>();
function elementsOf(s: { v4: string[]; v6: string[] }, f: 4 | 6): Map<string, string> {
  let c = elementCache.get(s);
  if (!c) elementCache.set(s, c = {});
  return c[f] ??= new Map((f === 4 ? s.v4 : s.v6).map((e) => [e, ""]));
}

/** Log (rate-limited NFLOG, as kube-router) and reject. Reject rather than drop, as kube-router: the
 * sender learns at once instead of retrying into silence. */
export function denyRules(what: string): DesiredChain["rules"] {
  const prefix = comment(`DROP ${what}`).slice(0, 60);
  return [
    { rule: `limit rate 10/minute burst 10 packets log group ${NFLOG_GROUP} prefix "${prefix}"` },
    { rule: "reject with icmpx admin-prohibited" },
  ];
}

/**
 * The match for one peer in one family, as alternatives (one rule each); none when the peer has no
 * address in that family. An ipBlock becomes one rule per range rather than an anonymous set: every
 * interval set of the table, anonymous ones included, has its elements read back by libnftables
 * before each transaction that adds or deletes elements, so anonymous sets in pod chains would make
 * every pod event pay for all of them.
 */
function peerExprs(p: PeerMatch, dir: Direction, f: 4 | 6, used: Set<string>): string[] {
  const addr = dir === "ingress" ? "saddr" : "daddr";
  if (p.kind === "pods") {
    used.add(p.set);
    return [`${ipKw(f)} ${addr} @${podSetName(p.set, f)}`];
  }
  if (p.family !== f) return [];
  return p.elements.map((e) => `${ipKw(f)} ${addr} ${e}`);
}

function portExpr(p: PortMatch): string {
  if (p.first === undefined) return `meta l4proto ${p.protocol}`;
  const port = p.last !== undefined && p.last !== p.first ? `${p.first}-${p.last}` : `${p.first}`;
  return `meta l4proto ${p.protocol} th dport ${port}`;
}

/** The rules (ending in `return`) that allow one AllowRule's traffic in one family. */
function allowRules(
  r: AllowRule,
  dir: Direction,
  f: 4 | 6,
  usedPodSets: Set<string>,
  usedPortSets: Set<string>,
): DesiredChain["rules"] {
  const c = comment(r.policy);
  const out: DesiredChain["rules"] = [];
  const peers: string[] = r.peers === "any"
    ? [""]
    : r.peers.flatMap((p) => peerExprs(p, dir, f, usedPodSets));
  const ports = r.ports === "any" ? [""] : r.ports.map(portExpr);
  for (const peer of peers) {
    for (const port of ports) {
      out.push({ rule: [peer, port, "return"].filter((x) => x).join(" "), comment: c });
    }
  }
  for (const key of r.namedPortSets) {
    usedPortSets.add(key);
    out.push({
      rule: `${ipKw(f)} daddr . meta l4proto . th dport @${portSetName(key, f)} return`,
      comment: c,
    });
  }
  return out;
}

/** The parts of the table the kernel listing showed (names only, plus the rules of drop chains). */
export interface ExistingTable {
  chains: Set<string>;
  sets: Map<string, { kind: "set" | "map"; spec: NftSetSpec | NftMapSpec }>;
  /** The elements of policy-drops (key text), when the set exists. */
  dropKeys?: Set<string>;
}

/**
 * A full sync: the whole table rewritten in one transaction, whatever the kernel held (a restart, a
 * hand edit, a failed incremental sync). Chains and sets are flushed and refilled, objects the model
 * no longer has are deleted last. Until the transaction commits the old rules keep enforcing; it
 * commits whole or not at all, so no packet ever meets a half-written table. policy-drops is not
 * flushed, so per-policy counts survive: its missing elements are added and stale ones deleted.
 */
export function fullSyncOps(
  tx: NftTransaction,
  desired: DesiredTable,
  existing: ExistingTable | undefined,
): NftTransaction {
  tx.add({ table: { comment: "kube-router NetworkPolicy firewall" } });
  for (const s of desired.sets.values()) tx.add(setObject(s.kind, s.spec));
  for (const c of desired.chains.values()) tx.add({ chain: c.spec });
  for (const c of desired.chains.values()) tx.flush({ chain: { name: c.spec.name } });
  // Stale chains are flushed before maps are refilled and before anything is deleted.
  const staleChains = [...(existing?.chains ?? [])].filter((n) => !desired.chains.has(n));
  for (const n of staleChains) tx.flush({ chain: { name: n } });
  const dropKeys = existing?.sets.has(DROPS_SET) ? existing.dropKeys : undefined;
  for (const s of desired.sets.values()) {
    if (s.spec.name === DROPS_SET && dropKeys) continue;
    tx.flush(s.kind === "map" ? { map: s.spec as NftMapSpec } : { set: s.spec });
  }
  for (const c of desired.chains.values()) {
    for (const r of c.rules) tx.add({ rule: { chain: c.spec.name, ...r } });
  }
  for (const [name, s] of desired.sets) {
    for (const [k, v] of s.elements) {
      // Adding an element policy-drops already holds keeps its counter.
      tx.add({ element: element(name, k, v) });
    }
  }
  const wantDrops = desired.sets.get(DROPS_SET)?.elements;
  for (const k of dropKeys ?? []) {
    if (wantDrops && !wantDrops.has(k)) tx.delete({ element: element(DROPS_SET, k, "") });
  }
  for (const [name, s] of existing?.sets ?? []) {
    if (!desired.sets.has(name)) tx.delete(setObject(s.kind, s.spec));
  }
  for (const n of staleChains) tx.delete({ chain: { name: n } });
  return tx;
}

/**
 * An incremental sync from what was last programmed to what is wanted: new sets and chains first,
 * then element changes, then rewritten chains (flush + refill), then the removal of what is gone
 * (map elements before the chains they point to, chains before the sets their rules use).
 * Returns the number of operations added.
 */
export function incrementalOps(tx: NftTransaction, prev: DesiredTable, next: DesiredTable): number {
  const before = tx.size;
  for (const [name, s] of next.sets) if (!prev.sets.has(name)) tx.add(setObject(s.kind, s.spec));
  for (const [name, c] of next.chains) if (!prev.chains.has(name)) tx.add({ chain: c.spec });
  // Element additions first (targets exist), deletions of elements whose target is going.
  for (const [name, s] of next.sets) {
    const old = prev.sets.get(name);
    if (old?.elements === s.elements) continue;
    for (const [k, v] of s.elements) {
      const o = old?.elements.get(k);
      if (o === v) continue;
      if (o !== undefined) tx.delete({ element: element(name, k, "") });
      tx.add({ element: element(name, k, v) });
    }
    if (!old) continue;
    for (const k of old.elements.keys()) {
      if (!s.elements.has(k)) tx.delete({ element: element(name, k, "") });
    }
  }
  for (const [name, c] of next.chains) {
    const old = prev.chains.get(name);
    if (old === c || (old && sameRules(old, c))) continue;
    if (old) tx.flush({ chain: { name } });
    for (const r of c.rules) tx.add({ rule: { chain: name, ...r } });
  }
  const goneChains = [...prev.chains.keys()].filter((n) => !next.chains.has(n));
  for (const n of goneChains) tx.flush({ chain: { name: n } });
  for (const n of goneChains) tx.delete({ chain: { name: n } });
  for (const [name, s] of prev.sets) if (!next.sets.has(name)) tx.delete(setObject(s.kind, s.spec));
  return tx.size - before;
}

function setObject(kind: "set" | "map", spec: NftSetSpec | NftMapSpec): NftObjectSpec {
  return kind === "map" ? { map: spec as NftMapSpec } : { set: spec };
}

/** An element spec from its key text and value text ("" for none). */
function element(set: string, key: string, value: string): NftElementSpec {
  return value ? { set, key: key.split(" . "), value: [value] } : { set, key: key.split(" . ") };
}

export function sameRules(a: DesiredChain, b: DesiredChain): boolean {
  if (a.rules.length !== b.rules.length) return false;
  return a.rules.every((r, i) => r.rule === b.rules[i]!.rule && r.comment === b.rules[i]!.comment);
}
