/**
 * The pure half of the firewall: pods, namespaces and NetworkPolicies (networking.k8s.io/v1), seen
 * from one node, compiled into a firewall model the nftables renderer turns into rules. No I/O.
 *
 * Semantics, as the Kubernetes API documents them:
 * - A policy selects pods in its own namespace (`spec.podSelector`, `{}` = all). A pod selected by at
 *   least one policy of a type (Ingress/Egress) is isolated in that direction and accepts only what
 *   the union of those policies' rules allows; a pod selected by none is open in that direction.
 * - `policyTypes` omitted: Ingress always, Egress when `spec.egress` has at least one rule.
 * - A rule with no `from`/`to` (or an empty list) allows every peer; with no `ports` every port.
 * - A peer is an ipBlock (CIDR minus `except`), or pods: `podSelector` alone = in the policy's
 *   namespace, `namespaceSelector` alone = every pod in the selected namespaces, both = the selected
 *   pods in the selected namespaces.
 * - Ports: protocol TCP by default (TCP, UDP, SCTP); `port` omitted = every port of the protocol;
 *   `endPort` makes a range; a named port is resolved on the pod that receives the traffic: the
 *   policy's target pod for ingress, each destination pod for egress.
 * - Only this node's pods (`spec.nodeName`) get rules; peers are matched cluster-wide; hostNetwork
 *   pods are neither policed nor peers (their address is the node's); finished pods are ignored.
 *
 * Bad input (the API server would have refused it, but a non-validating server or an old object may
 * deliver it) is reported as a problem naming the policy, and never fails open by accident:
 * - the broken part is dropped, the rest of the policy stays: a broken peer is removed from its rule,
 *   a broken port entry from its list; a list that had entries and lost them all matches nothing
 *   (it does NOT become the empty list, which would mean "everything");
 * - a policy whose `podSelector` cannot be parsed isolates every pod of its namespace in its types
 *   and contributes no allow rules, since we cannot tell which pods it meant and granting its rules
 *   to pods it did not select could open them;
 * - an unknown `policyTypes` entry isolates both directions;
 * - a named port no destination pod declares is reported and allows nothing for that pod.
 * The selected pods therefore stay isolated by the policy's valid parts: the choice errs towards
 * blocking traffic the author may have wanted, never towards passing traffic they forbade.
 */
import type {
  V1Namespace,
  V1NetworkPolicy,
  V1NetworkPolicyPeer,
  V1NetworkPolicyPort,
  V1Pod,
} from "@kubernetes/client-node";
import { type Family, parseIP } from "../../ffi/mod.ts";
import { ipBlockRanges } from "./ip_block.ts";
import { type ObjectLabels as Labels, type ParsedSelector, parseSelector } from "../../core/mod.ts";

export type Protocol = "tcp" | "udp" | "sctp";
export type Direction = "ingress" | "egress";

/** A port match: one protocol, and a port or range (`first` absent: every port of the protocol). */
export interface PortMatch {
  protocol: Protocol;
  first?: number;
  last?: number;
}

/** Where a peer is matched: a set of pod IPs (by key into `FirewallModel.podSets`), or address ranges. */
export type PeerMatch =
  | { kind: "pods"; set: string }
  | { kind: "cidr"; family: Family; elements: string[]; key: string };

/** One allow rule of one policy, as it applies to one local pod. */
export interface AllowRule {
  /** `namespace/name` of the policy the rule comes from. */
  policy: string;
  /** "any" = every peer; an empty list = none (all its peers were invalid). */
  peers: PeerMatch[] | "any";
  /** "any" = every port and protocol; an empty list = none. */
  ports: PortMatch[] | "any";
  /**
   * Egress named ports: keys into `FirewallModel.portSets`, each a set of destination
   * `ip . protocol . port` triples (the peer is already folded in). Allowed in addition to
   * `peers` x `ports`.
   */
  namedPortSets: string[];
}

/** What one isolated local pod may do in one direction. */
export interface PodPolicy {
  pod: string;
  ips: PodIps;
  /** `namespace/name` of every policy isolating the pod in this direction, sorted. */
  policies: string[];
  rules: AllowRule[];
}

export interface PodIps {
  v4: string[];
  v6: string[];
}

/** Pod IPs of the pods a peer selects, cluster-wide. */
export interface PodSet {
  key: string;
  /** Human-readable: `ns=web pods=app In web`. */
  description: string;
  v4: string[];
  v6: string[];
}

/** Destination `ip . proto . port` triples for an egress named port. */
export interface PortSet {
  key: string;
  description: string;
  /** Elements as nft keys: `10.1.2.3 . tcp . 8080`. */
  v4: string[];
  v6: string[];
}

export interface Problem {
  policy: string;
  message: string;
}

export interface FirewallModel {
  /** Every policeable pod of this node with its IPs (isolated or not), by `namespace/name`. */
  localPods: Map<string, PodIps>;
  ingress: Map<string, PodPolicy>;
  egress: Map<string, PodPolicy>;
  podSets: Map<string, PodSet>;
  portSets: Map<string, PortSet>;
  /**
   * What happens to an address in this node's pod CIDRs that belongs to no known pod (a pod whose IP
   * the agent has not seen yet). "deny" when --netpol-default-deny is set, or when a local pod that
   * has no IP yet is already selected by a policy of that direction: the unknown address may be
   * that pod, and it must not pass what its policy forbids before its rules are in place.
   */
  unknownLocal: Record<Direction, "accept" | "deny">;
  /** Every policy with the directions it isolates (for per-policy counters), by `namespace/name`. */
  policies: Map<string, Record<Direction, boolean>>;
  problems: Problem[];
}

export interface CompileInput {
  nodeName: string;
  pods: readonly V1Pod[];
  namespaces: readonly V1Namespace[];
  policies: readonly V1NetworkPolicy[];
  /** --netpol-default-deny. */
  defaultDeny?: boolean;
}

const PROTOCOLS: Record<string, Protocol> = { TCP: "tcp", UDP: "udp", SCTP: "sctp" };

/** What the compiler needs of one pod; one per pod object (see podInfoOf). */
export interface PodInfo {
  key: string;
  namespace: string;
  labels: Labels;
  ips: PodIps;
  pod: V1Pod;
}

/** The pod's IPs by family (status.podIPs, else status.podIP), valid ones only. */
export function podIps(pod: V1Pod): PodIps {
  const out: PodIps = { v4: [], v6: [] };
  const list = pod.status?.podIPs?.map((p) => p.ip) ?? (pod.status?.podIP ? [pod.status.podIP] : []);
  for (const ip of list) {
    const p = typeof ip === "string" ? parseIP(ip) : undefined;
    if (!p) continue;
    const arr = p.family === 4 ? out.v4 : out.v6;
    if (!arr.includes(ip)) arr.push(ip);
  }
  return out;
}

/** Whether the pod takes part in policy at all: not hostNetwork, not finished. */
export function policeable(pod: V1Pod): boolean {
  if (pod.spec?.hostNetwork) return false;
  const phase = pod.status?.phase;
  return phase !== "Succeeded" && phase !== "Failed";
}

function keyOf(o: { metadata?: { namespace?: string; name?: string } }): string {
  return `${o.metadata?.namespace ?? ""}/${o.metadata?.name ?? ""}`;
}

/** The pod's facts, made once per pod object (the watch caches hand a new object for every change). */
export function podInfoOf(pod: V1Pod): PodInfo {
  let info = podInfoCache.get(pod);
  if (!info) {
    info = {
      key: keyOf(pod),
      namespace: pod.metadata?.namespace ?? "",
      labels: pod.metadata?.labels ?? {},
      ips: podIps(pod),
      pod,
    };
    podInfoCache.set(pod, info);
  }
  return info;
}

/** The policy parsed and validated, once per policy object. */
export function parsedPolicyOf(pol: V1NetworkPolicy): ParsedPolicy {
  let parsed = policyCache.get(pol);
  if (!parsed) policyCache.set(pol, parsed = parsePolicy(pol));
  return parsed;
}

/**
 * A namespace's labels as selectors see them. The API server always sets kubernetes.io/metadata.name;
 * it is added here if a simpler server did not.
 */
export function namespaceLabels(ns: V1Namespace): Labels | undefined {
  const name = ns.metadata?.name;
  if (!name) return undefined;
  return { "kubernetes.io/metadata.name": name, ...(ns.metadata?.labels ?? {}) };
}

/** Whether a pods peer selects the pod, given every namespace's labels. */
export function inPeer(peer: PodsPeer, p: PodInfo, nsLabels: ReadonlyMap<string, Labels>): boolean {
  if (peer.namespace !== undefined) {
    return p.namespace === peer.namespace && peer.podSelector.matches(p.labels);
  }
  const labels = nsLabels.get(p.namespace);
  return labels !== undefined && peer.nsSelector!.matches(labels) && peer.podSelector.matches(p.labels);
}

/** The key of an egress named-port set: the port (protocol and name) towards one peer. */
export function namedPortKey(peer: ParsedPeer, protocol: Protocol, name: string): string {
  return `named ${protocol}/${name} to ${peerKeyOf(peer)}`;
}

export function namedPortDescription(peer: ParsedPeer, protocol: Protocol, name: string): string {
  return `${protocol}/${name} on ${peerKeyOf(peer)}`;
}

function peerKeyOf(peer: ParsedPeer): string {
  return peer.kind === "any" ? "any" : peer.kind === "cidr" ? `cidr ${peer.match.key}` : peer.key;
}

/**
 * The `ip . proto . port` elements one destination pod adds to a named-port set, or undefined if it
 * adds none (it declares no such port, or none of its addresses is inside an ipBlock peer). Membership
 * of a pods peer is the caller's to check.
 */
export function namedPortEntries(
  peer: ParsedPeer,
  protocol: Protocol,
  name: string,
  p: PodInfo,
): { v4: string[]; v6: string[] } | undefined {
  if (peer.kind === "cidr" && !inCidrPeer(peer.match, p.ips)) return undefined;
  const port = resolveNamedPort(p.pod, name, protocol);
  if (port === undefined) return undefined;
  const keep = (ip: string, f: 4 | 6) =>
    peer.kind !== "cidr" || inCidrPeer(peer.match, f === 4 ? { v4: [ip], v6: [] } : { v4: [], v6: [ip] });
  return {
    v4: p.ips.v4.filter((ip) => keep(ip, 4)).map((ip) => `${ip} . ${protocol} . ${port}`),
    v6: p.ips.v6.filter((ip) => keep(ip, 6)).map((ip) => `${ip} . ${protocol} . ${port}`),
  };
}

/**
 * The container port a named port resolves to on a pod, for one protocol; undefined if the pod
 * declares no such port. Init containers count (restartable sidecars declare ports too).
 */
export function resolveNamedPort(pod: V1Pod, name: string, protocol: Protocol): number | undefined {
  for (const c of [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? [])]) {
    for (const p of c.ports ?? []) {
      if (p.name === name && (PROTOCOLS[p.protocol ?? "TCP"] ?? undefined) === protocol) {
        return p.containerPort;
      }
    }
  }
  return undefined;
}

type ParsedPort =
  | { kind: "number"; match: PortMatch }
  | { kind: "named"; protocol: Protocol; name: string };

/** Validates one `ports` entry; an error string names what is wrong. */
function parsePort(p: V1NetworkPolicyPort): ParsedPort | string {
  const protoText = p.protocol ?? "TCP";
  const protocol = PROTOCOLS[protoText as string];
  if (!protocol) return `unknown protocol ${JSON.stringify(protoText)}`;
  const port = p.port as unknown;
  const endPort = p.endPort as unknown;
  if (port === undefined || port === null) {
    if (endPort !== undefined && endPort !== null) return "endPort without port";
    return { kind: "number", match: { protocol } };
  }
  if (typeof port === "string") {
    // A port name is an IANA service name: lowercase letters, digits and '-', at least one letter.
    if (!/^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/.test(port) || !/[a-z]/.test(port)) {
      return `port ${JSON.stringify(port)} is neither a number nor a valid port name`;
    }
    if (endPort !== undefined && endPort !== null) return `endPort with named port ${port}`;
    return { kind: "named", protocol, name: port };
  }
  if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
    return `port ${JSON.stringify(port)} is out of range`;
  }
  if (endPort === undefined || endPort === null) return { kind: "number", match: { protocol, first: port } };
  if (typeof endPort !== "number" || !Number.isInteger(endPort) || endPort < port || endPort > 65535) {
    return `endPort ${JSON.stringify(endPort)} is not a port at or above ${port}`;
  }
  return { kind: "number", match: { protocol, first: port, last: endPort } };
}

/** A parsed peer, before it is matched against pods. */
export type ParsedPeer =
  | { kind: "any" }
  | { kind: "cidr"; match: Extract<PeerMatch, { kind: "cidr" }> }
  | {
    kind: "pods";
    key: string;
    description: string;
    /** The policy's namespace when the peer has no namespaceSelector. */
    namespace?: string;
    nsSelector?: ParsedSelector;
    podSelector: ParsedSelector;
  };

/** A peer that selects pods. */
export type PodsPeer = Extract<ParsedPeer, { kind: "pods" }>;

export interface ParsedRule {
  peers: ParsedPeer[] | "any";
  ports: ParsedPort[] | "any";
}

export interface ParsedPolicy {
  key: string;
  /** What was wrong with it (reported on every compile while the policy stays as it is). */
  problems: Problem[];
  namespace: string;
  /** undefined: the podSelector was unparsable; the policy isolates its whole namespace, allowing nothing. */
  podSelector: ParsedSelector | undefined;
  types: Record<Direction, boolean>;
  rules: Record<Direction, ParsedRule[]>;
}

/**
 * What one compile leaves for the next: the pods it saw, the namespace labels, and the pod sets of every
 * peer and named port it evaluated. The module keeps one across syncs, so a pod event costs work in
 * proportion to what it changes; without one (`compileFirewall(input)`) a compile starts from nothing.
 * Only pure functions are memoised: the model is the same either way.
 */
export class CompilerState {
  pods = new Set<PodInfo>();
  nsKeys = new Map<string, string>();
  peers = new Map<string, { members: Set<PodInfo>; set: PodSet }>();
  ports = new Map<string, { entries: Map<PodInfo, { v4: string[]; v6: string[] }>; set: PortSet }>();
}

function stableLabels(l: Labels): string {
  return JSON.stringify(Object.entries(l).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}

function podSetOf(peer: Extract<ParsedPeer, { kind: "pods" }>, members: Set<PodInfo>): PodSet {
  const v4 = new Set<string>(), v6 = new Set<string>();
  for (const p of members) {
    for (const ip of p.ips.v4) v4.add(ip);
    for (const ip of p.ips.v6) v6.add(ip);
  }
  return { key: peer.key, description: peer.description, v4: [...v4].sort(), v6: [...v6].sort() };
}

function portSetOf(
  key: string,
  description: string,
  entries: Map<unknown, { v4: string[]; v6: string[] }>,
): PortSet {
  const v4 = new Set<string>(), v6 = new Set<string>();
  for (const e of entries.values()) {
    for (const x of e.v4) v4.add(x);
    for (const x of e.v6) v6.add(x);
  }
  return { key, description, v4: [...v4].sort(), v6: [...v6].sort() };
}

/** Compiles the cluster's policies into what this node must enforce; `memo` carries caches across calls. */
export function compileFirewall(input: CompileInput, memo?: CompilerState): FirewallModel {
  const problems: Problem[] = [];
  const nsLabels = new Map<string, Labels>();
  for (const ns of input.namespaces) {
    const labels = namespaceLabels(ns);
    if (labels) nsLabels.set(ns.metadata!.name!, labels);
  }

  const all: PodInfo[] = [];
  const byNamespace = new Map<string, PodInfo[]>();
  const local: PodInfo[] = [];
  const localByNamespace = new Map<string, PodInfo[]>();
  const pendingLocal: PodInfo[] = [];
  for (const pod of input.pods) {
    if (!policeable(pod)) continue;
    const info = podInfoOf(pod);
    const isLocal = pod.spec?.nodeName === input.nodeName;
    if (info.ips.v4.length + info.ips.v6.length === 0) {
      if (isLocal) pendingLocal.push(info);
      continue;
    }
    all.push(info);
    let list = byNamespace.get(info.namespace);
    if (!list) byNamespace.set(info.namespace, list = []);
    list.push(info);
    if (isLocal) {
      local.push(info);
      let l = localByNamespace.get(info.namespace);
      if (!l) localByNamespace.set(info.namespace, l = []);
      l.push(info);
    }
  }

  const parsed = [...input.policies]
    .sort((a, b) => (keyOf(a) < keyOf(b) ? -1 : keyOf(a) > keyOf(b) ? 1 : 0))
    .map((p) => {
      const parsed = parsedPolicyOf(p);
      problems.push(...parsed.problems);
      return parsed;
    });

  // What changed since the previous compile of this compiler: pods (a relabelled pod is a new object,
  // so it shows as removed and added) and namespace labels. Cached peer sets are updated with that
  // difference instead of being rebuilt from all pods.
  const state = memo ?? new CompilerState();
  const allSet = new Set(all);
  const added = all.filter((p) => !state.pods.has(p));
  const removed = [...state.pods].filter((p) => !allSet.has(p));
  const nsKeys = new Map([...nsLabels].map(([n, l]) => [n, stableLabels(l)]));
  const nsChanged = nsKeys.size !== state.nsKeys.size ||
    [...nsKeys].some(([n, k]) => state.nsKeys.get(n) !== k);
  const used = new Set<string>();

  const podSets = new Map<string, PodSet>();
  const podsOfPeer = (peer: Extract<ParsedPeer, { kind: "pods" }>): Set<PodInfo> => {
    let c = state.peers.get(peer.key);
    if (!used.has(peer.key)) {
      used.add(peer.key);
      if (c && !(nsChanged && peer.namespace === undefined)) {
        let changed = false;
        for (const p of removed) if (c.members.delete(p)) changed = true;
        for (const p of added) {
          if (inPeer(peer, p, nsLabels)) {
            c.members.add(p);
            changed = true;
          }
        }
        if (changed) c.set = podSetOf(peer, c.members);
      } else {
        const members = new Set<PodInfo>();
        if (peer.namespace !== undefined) {
          for (const p of byNamespace.get(peer.namespace) ?? []) {
            if (peer.podSelector.matches(p.labels)) members.add(p);
          }
        } else {
          for (const [ns, labels] of nsLabels) {
            if (!peer.nsSelector!.matches(labels)) continue;
            for (const p of byNamespace.get(ns) ?? []) if (peer.podSelector.matches(p.labels)) members.add(p);
          }
        }
        c = { members, set: podSetOf(peer, members) };
        state.peers.set(peer.key, c);
      }
      podSets.set(peer.key, c!.set);
    }
    return c!.members;
  };

  const portSets = new Map<string, PortSet>();
  const namedPortSet = (peer: ParsedPeer, protocol: Protocol, name: string): string => {
    const key = namedPortKey(peer, protocol, name);
    if (portSets.has(key)) return key;
    const entriesOf = (p: PodInfo) => namedPortEntries(peer, protocol, name, p);
    const description = namedPortDescription(peer, protocol, name);
    let c = state.ports.get(key);
    used.add(key);
    // A pods peer's membership is its cached peer set (updated above); other peers test each pod.
    const peerMembers = peer.kind === "pods" ? podsOfPeer(peer) : undefined;
    const member = (p: PodInfo) => (peerMembers ? peerMembers.has(p) : true);
    if (c && !(nsChanged && peer.kind === "pods" && peer.namespace === undefined)) {
      let changed = false;
      for (const p of removed) if (c.entries.delete(p)) changed = true;
      for (const p of added) {
        const e = member(p) ? entriesOf(p) : undefined;
        if (e) {
          c.entries.set(p, e);
          changed = true;
        }
      }
      if (changed) c.set = portSetOf(key, description, c.entries);
    } else {
      const entries = new Map<PodInfo, { v4: string[]; v6: string[] }>();
      for (const p of peerMembers ?? all) {
        const e = entriesOf(p);
        if (e) entries.set(p, e);
      }
      c = { entries, set: portSetOf(key, description, entries) };
      state.ports.set(key, c);
    }
    portSets.set(key, c.set);
    return key;
  };

  const policies = new Map<string, Record<Direction, boolean>>();
  const out: Record<Direction, Map<string, PodPolicy>> = { ingress: new Map(), egress: new Map() };
  const reported = new Set<string>();
  const report = (policy: string, message: string) => {
    const k = `${policy}\0${message}`;
    if (reported.has(k)) return;
    reported.add(k);
    problems.push({ policy, message });
  };
  for (const pol of parsed) {
    policies.set(pol.key, { ...pol.types });
    const targets = (localByNamespace.get(pol.namespace) ?? []).filter((p) =>
      pol.podSelector?.matches(p.labels) ?? true
    );
    for (const dir of ["ingress", "egress"] as const) {
      if (!pol.types[dir]) continue;
      for (const target of targets) {
        let pp = out[dir].get(target.key);
        if (!pp) out[dir].set(target.key, pp = { pod: target.key, ips: target.ips, policies: [], rules: [] });
        pp.policies.push(pol.key);
        if (!pol.podSelector) continue; // unparsable podSelector: isolate, allow nothing
        for (const rule of pol.rules[dir]) {
          pp.rules.push(compileRule(pol.key, dir, rule, target, podsOfPeer, namedPortSet, report));
        }
      }
    }
  }

  const pendingSelected = (dir: Direction) =>
    parsed.some((pol) =>
      pol.types[dir] &&
      pendingLocal.some((p) => p.namespace === pol.namespace && (pol.podSelector?.matches(p.labels) ?? true))
    );
  const localPods = new Map<string, PodIps>();
  for (const p of local) localPods.set(p.key, p.ips);
  state.pods = allSet;
  state.nsKeys = nsKeys;
  for (const k of [...state.peers.keys()]) if (!used.has(k)) state.peers.delete(k);
  for (const k of [...state.ports.keys()]) if (!used.has(k)) state.ports.delete(k);
  return {
    localPods,
    ingress: out.ingress,
    egress: out.egress,
    podSets,
    portSets,
    unknownLocal: {
      ingress: input.defaultDeny || pendingSelected("ingress") ? "deny" : "accept",
      egress: input.defaultDeny || pendingSelected("egress") ? "deny" : "accept",
    },
    policies,
    problems,
  };
}

/**
 * One rule of one policy as it applies to one local pod. `usePeer` and `namedPortSet` are told about
 * every pods peer and named-port set the rule refers to (by key).
 */
export function compileRule(
  policy: string,
  dir: Direction,
  rule: ParsedRule,
  target: PodInfo,
  usePeer: (peer: PodsPeer) => unknown,
  namedPortSet: (peer: ParsedPeer, protocol: Protocol, name: string) => string,
  report: (policy: string, message: string) => void,
): AllowRule {
  const peers: PeerMatch[] | "any" = rule.peers === "any" ? "any" : [];
  if (rule.peers !== "any") {
    for (const peer of rule.peers) {
      if (peer.kind === "any") continue;
      if (peer.kind === "cidr") (peers as PeerMatch[]).push(peer.match);
      else {
        usePeer(peer);
        (peers as PeerMatch[]).push({ kind: "pods", set: peer.key });
      }
    }
  }
  if (rule.ports === "any") return { policy, peers, ports: "any", namedPortSets: [] };
  const ports: PortMatch[] = [];
  const namedPortSets: string[] = [];
  for (const p of rule.ports) {
    if (p.kind === "number") {
      ports.push(p.match);
      continue;
    }
    if (dir === "ingress") {
      const n = resolveNamedPort(target.pod, p.name, p.protocol);
      if (n === undefined) {
        report(
          policy,
          `named port ${p.protocol}/${p.name} is not declared by pod ${target.key}; it allows nothing there`,
        );
      } else ports.push({ protocol: p.protocol, first: n });
      continue;
    }
    const peerList: ParsedPeer[] = rule.peers === "any" ? [{ kind: "any" }] : rule.peers;
    for (const peer of peerList) namedPortSets.push(namedPortSet(peer, p.protocol, p.name));
  }
  return { policy, peers, ports: dedupePorts(ports), namedPortSets: [...new Set(namedPortSets)] };
}

function dedupePorts(ports: PortMatch[]): PortMatch[] {
  const seen = new Set<string>();
  return ports.filter((p) => {
    const k = `${p.protocol}/${p.first ?? ""}-${p.last ?? ""}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

export function inCidrPeer(match: Extract<PeerMatch, { kind: "cidr" }>, ips: PodIps): boolean {
  const list = match.family === 4 ? ips.v4 : ips.v6;
  return list.some((ip) => match.elements.some((e) => inRangeText(e, ip)));
}

/** Whether `ip` lies in an element produced by ipBlockRanges (`a/n`, `a-b` or a single address). */
function inRangeText(element: string, ip: string): boolean {
  const v = ipValue(ip);
  if (v === undefined) return false;
  if (element.includes("-")) {
    const [a, b] = element.split("-");
    const lo = ipValue(a!), hi = ipValue(b!);
    return lo !== undefined && hi !== undefined && v >= lo && v <= hi;
  }
  const [addr, len] = element.split("/");
  const base = ipValue(addr!);
  if (base === undefined) return false;
  const bits = addr!.includes(":") ? 128 : 32;
  const size = 1n << BigInt(bits - (len === undefined ? bits : Number(len)));
  return v >= base && v < base + size;
}

function ipValue(ip: string): bigint | undefined {
  const p = parseIP(ip);
  if (!p) return undefined;
  let v = 0n;
  for (const b of p.addr) v = (v << 8n) | BigInt(b);
  return v;
}

/**
 * Parsed policies and pod facts by object: the watch caches hand the same object until it changes, so a
 * sync re-parses only what changed (a compile stays pure: the caches only memoise pure functions).
 */
const policyCache = new WeakMap<V1NetworkPolicy, ParsedPolicy>();
const podInfoCache = new WeakMap<V1Pod, PodInfo>();

function parsePolicy(pol: V1NetworkPolicy): ParsedPolicy {
  const problems: Problem[] = [];
  const key = keyOf(pol);
  const namespace = pol.metadata?.namespace ?? "";
  const spec = pol.spec ?? ({} as NonNullable<V1NetworkPolicy["spec"]>);
  const problem = (message: string) => problems.push({ policy: key, message });

  const sel = parseSelector(spec.podSelector);
  let podSelector: ParsedSelector | undefined;
  if (sel.ok) podSelector = sel.selector;
  else {problem(
      `podSelector: ${sel.error}; the policy isolates every pod of namespace ${namespace} and allows nothing`,
    );}

  const egressRules: RawRule[] = Array.isArray(spec.egress) ? spec.egress : [];
  const ingressRules: RawRule[] = Array.isArray(spec.ingress) ? spec.ingress : [];
  const types: Record<Direction, boolean> = { ingress: false, egress: false };
  if (spec.policyTypes === undefined || spec.policyTypes === null || spec.policyTypes.length === 0) {
    types.ingress = true;
    types.egress = egressRules.length > 0;
  } else {
    for (const t of spec.policyTypes) {
      if (t === "Ingress") types.ingress = true;
      else if (t === "Egress") types.egress = true;
      else {
        problem(`unknown policyType ${JSON.stringify(t)}; isolating both directions`);
        types.ingress = types.egress = true;
      }
    }
  }

  const parseRules = (
    rules: RawRule[],
    dir: Direction,
  ) =>
    rules.map((r, i): ParsedRule => {
      const where = `${dir}[${i}]`;
      const rawPeers = dir === "ingress" ? (r.from ?? r._from) : r.to;
      let peers: ParsedPeer[] | "any" = "any";
      if (Array.isArray(rawPeers) && rawPeers.length > 0) {
        peers = [];
        rawPeers.forEach((peer, j) => {
          const parsed = parsePeer(peer ?? {}, namespace);
          if (typeof parsed === "string") {
            problem(`${where}.${dir === "ingress" ? "from" : "to"}[${j}]: ${parsed}; peer skipped`);
          } else (peers as ParsedPeer[]).push(parsed);
        });
        if (peers.length === 0) problem(`${where}: no valid peer left; the rule allows nothing`);
      }
      let ports: ParsedPort[] | "any" = "any";
      if (Array.isArray(r.ports) && r.ports.length > 0) {
        ports = [];
        r.ports.forEach((port, j) => {
          const parsed = parsePort(port ?? {});
          if (typeof parsed === "string") problem(`${where}.ports[${j}]: ${parsed}; port skipped`);
          else (ports as ParsedPort[]).push(parsed);
        });
        if (ports.length === 0) problem(`${where}: no valid port left; the rule allows nothing`);
      }
      return { peers, ports };
    });

  return {
    key,
    problems,
    namespace,
    podSelector,
    types,
    rules: { ingress: parseRules(ingressRules, "ingress"), egress: parseRules(egressRules, "egress") },
  };
}

/**
 * A rule as the API's JSON has it. The watch layer delivers raw JSON (`from`); client-node's model
 * classes rename the field `_from`; both are read.
 */
interface RawRule {
  from?: V1NetworkPolicyPeer[];
  _from?: V1NetworkPolicyPeer[];
  to?: V1NetworkPolicyPeer[];
  ports?: V1NetworkPolicyPort[];
}

/** Validates one peer: exactly an ipBlock, or a podSelector and/or a namespaceSelector. */
function parsePeer(peer: V1NetworkPolicyPeer, policyNamespace: string): ParsedPeer | string {
  const hasPods = peer.podSelector !== undefined && peer.podSelector !== null;
  const hasNs = peer.namespaceSelector !== undefined && peer.namespaceSelector !== null;
  if (peer.ipBlock !== undefined && peer.ipBlock !== null) {
    if (hasPods || hasNs) return "ipBlock cannot be combined with selectors";
    const r = ipBlockRanges(peer.ipBlock.cidr, peer.ipBlock.except);
    if (!r.ok) return r.error;
    return {
      kind: "cidr",
      match: { kind: "cidr", family: r.ranges.family, elements: r.ranges.elements, key: r.ranges.key },
    };
  }
  if (!hasPods && !hasNs) return "a peer needs an ipBlock, a podSelector or a namespaceSelector";
  const pods = parseSelector(peer.podSelector ?? {});
  if (!pods.ok) return `podSelector: ${pods.error}`;
  const podSel = pods.selector;
  if (!hasNs) {
    return {
      kind: "pods",
      key: `ns=${policyNamespace} pods=${podSel.key}`,
      description: `pods {${podSel.key}} in ${policyNamespace}`,
      namespace: policyNamespace,
      podSelector: podSel,
    };
  }
  const ns = parseSelector(peer.namespaceSelector!);
  if (!ns.ok) return `namespaceSelector: ${ns.error}`;
  const nsSel = ns.selector;
  return {
    kind: "pods",
    key: `nssel=${nsSel.key} pods=${podSel.key}`,
    description: `pods {${podSel.key}} in namespaces {${nsSel.key}}`,
    nsSelector: nsSel,
    podSelector: podSel,
  };
}
