/**
 * The firewall's rendered table kept up to date object by object, so that one pod, namespace or policy
 * event costs work in proportion to what it changes rather than to the cluster.
 *
 * `compileFirewall` + `renderFirewall` compute the same table from scratch (they stay the reference:
 * a property test drives this class through random changes and compares it with them at every step).
 * Here every input change is applied where it matters:
 * - a pod (any node) changes the pod and named-port sets whose peer selects it, and, when it is one of
 *   this node's, its own chains, its verdict-map entries and `local-pods-*`;
 * - a namespace relabel adds or removes that namespace's pods in the sets whose namespaceSelector
 *   changes its mind about it;
 * - a policy recomputes the chains of this node's pods in its namespace (the only pods it can select).
 * Sets and policy-drops elements exist while some pod chain refers to them (reference counts); a set is
 * filled by one scan when it first appears and element by element afterwards.
 *
 * `table()` hands out a snapshot: objects that did not change since the previous snapshot are the
 * same objects, so the incremental diff (nft_render.ts `incrementalOps`) skips them by identity, and
 * a changed set is a copy, never the object the previous snapshot holds.
 */
import type { V1Namespace, V1NetworkPolicy, V1Pod } from "@kubernetes/client-node";
import type { ObjectLabels as Labels } from "../../core/mod.ts";
import {
  compileRule,
  type Direction,
  inPeer,
  namedPortDescription,
  namedPortEntries,
  namedPortKey,
  namespaceLabels,
  type ParsedPeer,
  type ParsedPolicy,
  parsedPolicyOf,
  type PodInfo,
  podInfoOf,
  type PodPolicy,
  type PodsPeer,
  policeable,
  type Problem,
  type Protocol,
} from "./policy_compiler.ts";
import {
  baseChains,
  cidrsOf,
  type DesiredChain,
  type DesiredSet,
  type DesiredTable,
  DIRECTIONS,
  DROPS_SET,
  dropsSpec,
  FAMILIES,
  localCidrsSpec,
  localPodsSpec,
  podChain,
  podSetName,
  podSetSpec,
  policyDropKey,
  portSetName,
  portSetSpec,
  sameRules,
  unknownChain,
  vmapName,
  vmapSpec,
} from "./nft_render.ts";

interface PodRecord {
  info: PodInfo;
  local: boolean;
  hasIp: boolean;
}

/** A pods peer whose sets some pod chain uses. */
interface PeerEntry {
  peer: PodsPeer;
  /** Its set's name per family (4, 6). */
  names: [string, string];
  refs: number;
  members: Set<PodInfo>;
}

/** An egress named-port set some pod chain uses. */
interface PortEntry {
  key: string;
  names: [string, string];
  peer: ParsedPeer;
  protocol: Protocol;
  name: string;
  refs: number;
  entries: Map<PodInfo, { v4: string[]; v6: string[] }>;
}

/** One local pod's chain in one direction, with what it refers to. */
interface LocalChain {
  chain: DesiredChain;
  ips: { v4: string[]; v6: string[] };
  policies: string[];
  podSets: Map<string, PodsPeer>;
  portSets: Map<string, { peer: ParsedPeer; protocol: Protocol; name: string }>;
  problems: Problem[];
}

export interface FirewallStateOptions {
  nodeName: string;
  /** --netpol-default-deny. */
  defaultDeny?: boolean;
}

export class FirewallState {
  readonly #nodeName: string;
  readonly #defaultDeny: boolean;

  // Inputs, indexed.
  readonly #pods = new Map<string, PodRecord>();
  /** Policeable pods with an address, cluster-wide, by namespace. */
  readonly #byNs = new Map<string, Set<PodInfo>>();
  /** This node's policeable pods with an address, by namespace. */
  readonly #localByNs = new Map<string, Set<PodInfo>>();
  /** This node's policeable pods without an address yet. */
  readonly #pending = new Map<string, PodInfo>();
  readonly #nsLabels = new Map<string, Labels>();
  readonly #nsLabelKeys = new Map<string, string>();
  readonly #policies = new Map<string, ParsedPolicy>();
  readonly #policiesByNs = new Map<string, Map<string, ParsedPolicy>>();
  readonly #sortedByNs = new Map<string, ParsedPolicy[]>();

  // The rendering.
  readonly #chains = new Map<string, DesiredChain>();
  readonly #sets = new Map<string, DesiredSet>();
  /** Sets created or copied since the last snapshot: only these may be changed in place. */
  readonly #owned = new Set<string>();
  /**
   * How many times each element of a plain set is wanted (an address can belong to two pods for a
   * moment), and who wants each verdict-map entry with which verdict.
   */
  readonly #counts = new Map<string, Map<string, number>>();
  readonly #claims = new Map<string, Map<string, Map<string, string>>>();
  readonly #peers = new Map<string, PeerEntry>();
  readonly #ports = new Map<string, PortEntry>();
  readonly #drops = new Map<string, number>();
  /** Pod chains by name, with the number of (pod, direction) pairs using each. */
  readonly #podChains = new Map<string, { chain: DesiredChain; refs: number }>();
  readonly #local: Record<Direction, Map<string, LocalChain>> = { ingress: new Map(), egress: new Map() };
  #unknown: Record<Direction, "accept" | "deny"> = { ingress: "accept", egress: "accept" };

  // What the next snapshot must recompute.
  readonly #dirtyLocal = new Set<string>();
  #dirtyUnknown = true;

  constructor(opts: FirewallStateOptions) {
    this.#nodeName = opts.nodeName;
    this.#defaultDeny = opts.defaultDeny ?? false;
    for (const c of baseChains()) this.#chains.set(c.spec.name, c);
    for (const dir of DIRECTIONS) {
      this.#chains.set(`unknown-${dir}`, unknownChain(dir, "accept"));
      for (const f of FAMILIES) this.#newSet("map", vmapSpec(dir, f));
    }
    for (const f of FAMILIES) {
      this.#newSet("set", localPodsSpec(f));
      this.#newSet("set", localCidrsSpec(f));
    }
    this.#newSet("set", dropsSpec());
  }

  /** Every policy known (drop counters are read back by policy). */
  policyKeys(): IterableIterator<string> {
    return this.#policies.keys();
  }

  /** Policies known, and local pods isolated per direction (metrics). */
  get counts(): { policies: number; ingress: number; egress: number } {
    return {
      policies: this.#policies.size,
      ingress: this.#local.ingress.size,
      egress: this.#local.egress.size,
    };
  }

  /** A pod added, changed (a new object) or deleted (undefined). */
  setPod(key: string, pod: V1Pod | undefined): void {
    const prev = this.#pods.get(key);
    const info = pod && policeable(pod) ? podInfoOf(pod) : undefined;
    const local = pod?.spec?.nodeName === this.#nodeName;
    if (prev?.info === info && (prev === undefined || prev.local === local)) return;
    const next = info ? { info, local, hasIp: info.ips.v4.length + info.ips.v6.length > 0 } : undefined;
    if (prev) this.#unindexPod(prev);
    if (next) {
      this.#pods.set(key, next);
      this.#indexPod(next);
    } else this.#pods.delete(key);
    if (prev?.local || next?.local) {
      this.#dirtyLocal.add(key);
      if ((prev?.local && !prev.hasIp) || (next?.local && !next.hasIp)) this.#dirtyUnknown = true;
    }
  }

  /** A namespace added, relabelled or deleted (undefined). */
  setNamespace(name: string, ns: V1Namespace | undefined): void {
    const labels = ns ? namespaceLabels(ns) : undefined;
    const old = this.#nsLabels.get(name);
    const key = labels ? labelsKey(labels) : undefined;
    if (key === this.#nsLabelKeys.get(name)) return;
    if (labels) {
      this.#nsLabels.set(name, labels);
      this.#nsLabelKeys.set(name, key!);
    } else {
      this.#nsLabels.delete(name);
      this.#nsLabelKeys.delete(name);
    }
    const pods = this.#byNs.get(name);
    if (!pods?.size) return;
    const changed = (peer: ParsedPeer): boolean => {
      if (peer.kind !== "pods" || peer.namespace !== undefined) return false;
      const before = old !== undefined && peer.nsSelector!.matches(old);
      const after = labels !== undefined && peer.nsSelector!.matches(labels);
      return before !== after;
    };
    for (const e of this.#peers.values()) {
      if (!changed(e.peer)) continue;
      for (const p of pods) {
        this.#leavePeer(e, p);
        this.#joinPeer(e, p);
      }
    }
    for (const e of this.#ports.values()) {
      if (!changed(e.peer)) continue;
      for (const p of pods) {
        this.#leavePort(e, p);
        this.#joinPort(e, p);
      }
    }
  }

  /** A policy added, changed (a new object) or deleted (undefined). */
  setPolicy(key: string, pol: V1NetworkPolicy | undefined): void {
    const parsed = pol ? parsedPolicyOf(pol) : undefined;
    const prev = this.#policies.get(key);
    if (prev === parsed) return;
    for (const p of [prev, parsed]) {
      if (!p) continue;
      this.#sortedByNs.delete(p.namespace);
      for (const info of this.#localByNs.get(p.namespace) ?? []) this.#dirtyLocal.add(info.key);
    }
    if (prev) this.#policiesByNs.get(prev.namespace)?.delete(key);
    if (parsed) {
      this.#policies.set(key, parsed);
      let m = this.#policiesByNs.get(parsed.namespace);
      if (!m) this.#policiesByNs.set(parsed.namespace, m = new Map());
      m.set(key, parsed);
    } else this.#policies.delete(key);
    this.#dirtyUnknown = true;
  }

  /** This node's pod CIDRs (unknown local addresses are recognised inside them). */
  setPodCidrs(cidrs: readonly string[]): void {
    for (const f of FAMILIES) {
      const name = localCidrsSpec(f).name;
      const want = cidrsOf(cidrs, f);
      const have = this.#sets.get(name)!.elements;
      if (want.length === have.size && want.every((c) => have.has(c))) continue;
      const s = this.#writable(name);
      s.elements = new Map(want.map((c) => [c, ""]));
    }
  }

  /** Every policy problem as of now: parse problems, and named ports a target pod does not declare. */
  problems(): Problem[] {
    const out: Problem[] = [];
    for (const p of this.#policies.values()) out.push(...p.problems);
    const seen = new Set<string>();
    for (const dir of DIRECTIONS) {
      for (const c of this.#local[dir].values()) {
        for (const p of c.problems) {
          const k = `${p.policy}\0${p.message}`;
          if (!seen.has(k)) out.push(p);
          seen.add(k);
        }
      }
    }
    return out;
  }

  /**
   * Brings the chains of changed local pods up to date and hands out the table. Unchanged objects are
   * the previous snapshot's; nothing the previous snapshot holds is changed afterwards.
   */
  table(): DesiredTable {
    for (const key of this.#dirtyLocal) this.#renderLocal(key);
    this.#dirtyLocal.clear();
    if (this.#dirtyUnknown) this.#renderUnknown();
    this.#dirtyUnknown = false;
    this.#owned.clear();
    return { chains: new Map(this.#chains), sets: new Map(this.#sets) };
  }

  // --- pods in the indexes and in the sets ---

  #indexPod(r: PodRecord): void {
    const p = r.info;
    if (!r.hasIp) {
      if (r.local) this.#pending.set(p.key, p);
      return;
    }
    addTo(this.#byNs, p.namespace, p);
    if (r.local) {
      addTo(this.#localByNs, p.namespace, p);
      for (const f of FAMILIES) {
        for (const ip of f === 4 ? p.ips.v4 : p.ips.v6) this.#count(LOCAL_PODS[f], ip);
      }
    }
    for (const e of this.#peers.values()) this.#joinPeer(e, p);
    for (const e of this.#ports.values()) this.#joinPort(e, p);
  }

  #unindexPod(r: PodRecord): void {
    const p = r.info;
    if (!r.hasIp) {
      if (r.local) this.#pending.delete(p.key);
      return;
    }
    this.#byNs.get(p.namespace)?.delete(p);
    if (r.local) {
      this.#localByNs.get(p.namespace)?.delete(p);
      for (const f of FAMILIES) {
        for (const ip of f === 4 ? p.ips.v4 : p.ips.v6) this.#uncount(LOCAL_PODS[f], ip);
      }
    }
    for (const e of this.#peers.values()) this.#leavePeer(e, p);
    for (const e of this.#ports.values()) this.#leavePort(e, p);
  }

  #joinPeer(e: PeerEntry, p: PodInfo): void {
    if (e.members.has(p) || !inPeer(e.peer, p, this.#nsLabels)) return;
    e.members.add(p);
    for (const ip of p.ips.v4) this.#count(e.names[0], ip);
    for (const ip of p.ips.v6) this.#count(e.names[1], ip);
  }

  #leavePeer(e: PeerEntry, p: PodInfo): void {
    if (!e.members.delete(p)) return;
    for (const ip of p.ips.v4) this.#uncount(e.names[0], ip);
    for (const ip of p.ips.v6) this.#uncount(e.names[1], ip);
  }

  #joinPort(e: PortEntry, p: PodInfo): void {
    if (e.entries.has(p)) return;
    if (e.peer.kind === "pods" && !inPeer(e.peer, p, this.#nsLabels)) return;
    const entry = namedPortEntries(e.peer, e.protocol, e.name, p);
    if (!entry) return;
    e.entries.set(p, entry);
    for (const x of entry.v4) this.#count(e.names[0], x);
    for (const x of entry.v6) this.#count(e.names[1], x);
  }

  #leavePort(e: PortEntry, p: PodInfo): void {
    const entry = e.entries.get(p);
    if (!entry) return;
    e.entries.delete(p);
    for (const x of entry.v4) this.#uncount(e.names[0], x);
    for (const x of entry.v6) this.#uncount(e.names[1], x);
  }

  // --- local pod chains ---

  #sortedPolicies(ns: string): ParsedPolicy[] {
    let list = this.#sortedByNs.get(ns);
    if (!list) {
      list = [...(this.#policiesByNs.get(ns)?.values() ?? [])].sort((a, b) =>
        a.key < b.key ? -1 : a.key > b.key ? 1 : 0
      );
      this.#sortedByNs.set(ns, list);
    }
    return list;
  }

  #renderLocal(key: string): void {
    const r = this.#pods.get(key);
    const target = r?.local && r.hasIp ? r.info : undefined;
    for (const dir of DIRECTIONS) {
      const prev = this.#local[dir].get(key);
      const next = target ? this.#compileLocal(target, dir) : undefined;
      if (next) {
        for (const [k, peer] of next.podSets) this.#acquirePeer(k, peer);
        for (const [k, d] of next.portSets) this.#acquirePort(k, d.peer, d.protocol, d.name);
        for (const pol of next.policies) this.#acquireDrop(pol);
        next.chain = this.#acquireChain(next.chain);
        this.#local[dir].set(key, next);
      } else if (prev) this.#local[dir].delete(key);
      // Verdict-map entries: the new addresses first, then the ones the pod no longer has.
      for (const f of FAMILIES) {
        const map = vmapName(dir, f);
        const want = next ? (f === 4 ? next.ips.v4 : next.ips.v6) : [];
        for (const ip of want) this.#claim(map, ip, key, `goto ${next!.chain.spec.name}`);
        for (const ip of prev ? (f === 4 ? prev.ips.v4 : prev.ips.v6) : []) {
          if (!want.includes(ip)) this.#unclaim(map, ip, key);
        }
      }
      if (prev) {
        this.#releaseChain(prev.chain.spec.name);
        for (const k of prev.podSets.keys()) this.#releasePeer(k);
        for (const k of prev.portSets.keys()) this.#releasePort(k);
        for (const pol of prev.policies) this.#releaseDrop(pol);
      }
    }
  }

  /** The pod's chain in one direction, or undefined when no policy isolates it there. */
  #compileLocal(target: PodInfo, dir: Direction): LocalChain | undefined {
    const pols = this.#sortedPolicies(target.namespace).filter((pol) =>
      pol.types[dir] && (pol.podSelector?.matches(target.labels) ?? true)
    );
    if (pols.length === 0) return undefined;
    const pp: PodPolicy = { pod: target.key, ips: target.ips, policies: [], rules: [] };
    const podSets = new Map<string, PodsPeer>();
    const portSets = new Map<string, { peer: ParsedPeer; protocol: Protocol; name: string }>();
    const problems: Problem[] = [];
    const reported = new Set<string>();
    const report = (policy: string, message: string) => {
      const k = `${policy}\0${message}`;
      if (!reported.has(k)) problems.push({ policy, message });
      reported.add(k);
    };
    const usePeer = (peer: PodsPeer) => podSets.set(peer.key, peer);
    const namedPortSet = (peer: ParsedPeer, protocol: Protocol, name: string) => {
      const key = namedPortKey(peer, protocol, name);
      portSets.set(key, { peer, protocol, name });
      return key;
    };
    for (const pol of pols) {
      pp.policies.push(pol.key);
      if (!pol.podSelector) continue; // unparsable podSelector: isolate, allow nothing
      for (const rule of pol.rules[dir]) {
        pp.rules.push(compileRule(pol.key, dir, rule, target, usePeer, namedPortSet, report));
      }
    }
    const usedPodSets = new Set<string>();
    const usedPortSets = new Set<string>();
    const chain = podChain(dir, pp, usedPodSets, usedPortSets);
    // Only the sets the rules refer to are rendered (as renderFirewall does).
    for (const k of podSets.keys()) if (!usedPodSets.has(k)) podSets.delete(k);
    for (const k of portSets.keys()) if (!usedPortSets.has(k)) portSets.delete(k);
    return { chain, ips: target.ips, policies: pp.policies, podSets, portSets, problems };
  }

  #renderUnknown(): void {
    for (const dir of DIRECTIONS) {
      let deny = this.#defaultDeny;
      for (const p of this.#pending.values()) {
        if (deny) break;
        deny = this.#sortedPolicies(p.namespace).some((pol) =>
          pol.types[dir] && (pol.podSelector?.matches(p.labels) ?? true)
        );
      }
      const verdict = deny ? "deny" : "accept";
      if (verdict === this.#unknown[dir]) continue;
      this.#unknown[dir] = verdict;
      this.#chains.set(`unknown-${dir}`, unknownChain(dir, verdict));
    }
  }

  // --- reference-counted sets and drop chains ---

  #acquirePeer(key: string, peer: PodsPeer): void {
    const e = this.#peers.get(key);
    if (e) {
      e.refs++;
      return;
    }
    const entry: PeerEntry = {
      peer,
      names: [podSetName(key, 4), podSetName(key, 6)],
      refs: 1,
      members: new Set(),
    };
    this.#peers.set(key, entry);
    for (const f of FAMILIES) this.#newSet("set", podSetSpec(key, peer.description, f));
    const scan = (pods: Iterable<PodInfo>) => {
      for (const p of pods) this.#joinPeer(entry, p);
    };
    if (peer.namespace !== undefined) scan(this.#byNs.get(peer.namespace) ?? []);
    else {
      for (const [ns, labels] of this.#nsLabels) {
        if (peer.nsSelector!.matches(labels)) scan(this.#byNs.get(ns) ?? []);
      }
    }
  }

  #releasePeer(key: string): void {
    const e = this.#peers.get(key)!;
    if (--e.refs > 0) return;
    this.#peers.delete(key);
    for (const f of FAMILIES) this.#dropSet(podSetName(key, f));
  }

  #acquirePort(key: string, peer: ParsedPeer, protocol: Protocol, name: string): void {
    const e = this.#ports.get(key);
    if (e) {
      e.refs++;
      return;
    }
    const entry: PortEntry = {
      key,
      names: [portSetName(key, 4), portSetName(key, 6)],
      peer,
      protocol,
      name,
      refs: 1,
      entries: new Map(),
    };
    this.#ports.set(key, entry);
    const description = namedPortDescription(peer, protocol, name);
    for (const f of FAMILIES) this.#newSet("set", portSetSpec(key, description, f));
    if (peer.kind === "pods" && peer.namespace !== undefined) {
      for (const p of this.#byNs.get(peer.namespace) ?? []) this.#joinPort(entry, p);
    } else {
      for (const pods of this.#byNs.values()) for (const p of pods) this.#joinPort(entry, p);
    }
  }

  #releasePort(key: string): void {
    const e = this.#ports.get(key)!;
    if (--e.refs > 0) return;
    this.#ports.delete(key);
    for (const f of FAMILIES) this.#dropSet(portSetName(key, f));
  }

  /** The shared chain with these rules (the one in the table if another pod uses it already). */
  #acquireChain(chain: DesiredChain): DesiredChain {
    const name = chain.spec.name;
    const have = this.#podChains.get(name);
    if (have) {
      // 64 bits of hash name the rules; should two rule lists ever share a name, fail rather than
      // give one pod another's rules (the sync fails, the rules in the kernel stay).
      if (!sameRules(have.chain, chain)) throw new Error(`pod chain name collision: ${name}`);
      have.refs++;
      return have.chain;
    }
    this.#podChains.set(name, { chain, refs: 1 });
    this.#chains.set(name, chain);
    return chain;
  }

  #releaseChain(name: string): void {
    const have = this.#podChains.get(name)!;
    if (--have.refs > 0) return;
    this.#podChains.delete(name);
    this.#chains.delete(name);
  }

  #acquireDrop(policy: string): void {
    const n = this.#drops.get(policy) ?? 0;
    this.#drops.set(policy, n + 1);
    if (n === 0) this.#count(DROPS_SET, policyDropKey(policy));
  }

  #releaseDrop(policy: string): void {
    const n = this.#drops.get(policy)! - 1;
    if (n > 0) {
      this.#drops.set(policy, n);
      return;
    }
    this.#drops.delete(policy);
    this.#uncount(DROPS_SET, policyDropKey(policy));
  }

  // --- set elements ---

  #newSet(kind: "set" | "map", spec: DesiredSet["spec"]): void {
    this.#sets.set(spec.name, { kind, spec, elements: new Map() });
    this.#owned.add(spec.name);
    this.#counts.delete(spec.name);
    this.#claims.delete(spec.name);
  }

  #dropSet(name: string): void {
    this.#sets.delete(name);
    this.#owned.delete(name);
    this.#counts.delete(name);
    this.#claims.delete(name);
  }

  /** The set, copied first if the last snapshot holds it. */
  #writable(name: string): DesiredSet {
    const s = this.#sets.get(name)!;
    if (this.#owned.has(name)) return s;
    const copy = { ...s, elements: new Map(s.elements) };
    this.#sets.set(name, copy);
    this.#owned.add(name);
    return copy;
  }

  #count(set: string, element: string): void {
    let counts = this.#counts.get(set);
    if (!counts) this.#counts.set(set, counts = new Map());
    const n = counts.get(element) ?? 0;
    counts.set(element, n + 1);
    if (n === 0) this.#writable(set).elements.set(element, "");
  }

  #uncount(set: string, element: string): void {
    const counts = this.#counts.get(set);
    const n = counts?.get(element);
    if (n === undefined) return;
    if (n > 1) {
      counts!.set(element, n - 1);
      return;
    }
    counts!.delete(element);
    this.#writable(set).elements.delete(element);
  }

  /** A verdict-map entry wanted by `owner` (a pod) with `value`; the most recent claim's value holds. */
  #claim(set: string, element: string, owner: string, value: string): void {
    let claims = this.#claims.get(set);
    if (!claims) this.#claims.set(set, claims = new Map());
    let owners = claims.get(element);
    if (!owners) claims.set(element, owners = new Map());
    owners.delete(owner);
    owners.set(owner, value);
    if (this.#sets.get(set)!.elements.get(element) !== value) {
      this.#writable(set).elements.set(element, value);
    }
  }

  #unclaim(set: string, element: string, owner: string): void {
    const claims = this.#claims.get(set);
    const owners = claims?.get(element);
    if (!owners?.delete(owner)) return;
    if (owners.size === 0) {
      claims!.delete(element);
      this.#writable(set).elements.delete(element);
      return;
    }
    // Another pod still claims the address: the most recent claim's value holds.
    let value = "";
    for (const v of owners.values()) value = v;
    if (this.#sets.get(set)!.elements.get(element) !== value) {
      this.#writable(set).elements.set(element, value);
    }
  }
}

const LOCAL_PODS = { 4: localPodsSpec(4).name, 6: localPodsSpec(6).name } as const;

function addTo<K, V>(m: Map<K, Set<V>>, k: K, v: V): void {
  let s = m.get(k);
  if (!s) m.set(k, s = new Set());
  s.add(v);
}

function labelsKey(l: Labels): string {
  return JSON.stringify(Object.entries(l).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
