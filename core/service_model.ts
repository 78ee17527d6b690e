/**
 * The one reading of Services and EndpointSlices that every module shares (pure, no I/O): which Services
 * a node agent handles at all, their addresses, ports and policies, their endpoints per port with
 * Kubernetes' defaults for missing conditions, and kube-proxy's choice of the endpoints traffic may go to.
 * The router uses it to decide which VIPs to announce, the proxy to program them; both must agree.
 *
 * Malformed input never throws: what is invalid is dropped and named in `problems`, for one log line by
 * the caller (the API server validates Services, but a hand-made EndpointSlice or a test fixture may not).
 */
import type { V1EndpointSlice, V1Service } from "@kubernetes/client-node";
import { type Family, formatCidr, formatIP, parseCidr, parseIP, parseIPv4Fast } from "../ffi/mod.ts";

/** Labels that decide whether a Service is ours to handle. */
export const SERVICE_LABELS = {
  /** A Service for another proxy implementation (KEP-2447): handled only when it names kube-router. */
  proxyName: "service.kubernetes.io/service-proxy-name",
  /** Set by the endpoints controllers on headless Services. */
  headless: "service.kubernetes.io/headless",
} as const;

/** The label tying an EndpointSlice to its Service (same namespace). */
export const SERVICE_NAME_LABEL = "kubernetes.io/service-name";

/** The node label naming its zone, which topology hints refer to. */
export const ZONE_LABEL = "topology.kubernetes.io/zone";

/** Our value of the service-proxy-name label (kube-router's own). */
export const PROXY_NAME = "kube-router";

/** The API's default ClientIP affinity timeout (3 hours), when a Service leaves it unset. */
export const DEFAULT_AFFINITY_TIMEOUT_SECONDS = 10800;

export type ServiceProtocol = "TCP" | "UDP" | "SCTP";
export type ServiceType = "ClusterIP" | "NodePort" | "LoadBalancer";
export type TrafficPolicy = "Cluster" | "Local";

/** One endpoint as kube-proxy sees it: one address of an EndpointSlice endpoint, for one service port. */
export interface ServiceEndpoint {
  /** The endpoint's first address, normalized (kube-proxy uses only the first; the rest are fungible). */
  ip: string;
  family: Family;
  /** The target port for this service port: the slice's port of the same name and protocol. */
  port: number;
  nodeName?: string;
  zone?: string;
  hostname?: string;
  /** `conditions.ready`; missing means true. */
  ready: boolean;
  /** `conditions.serving`; missing means the value of ready (the API reference: "defer to the ready condition"). */
  serving: boolean;
  /** `conditions.terminating`; missing means false. */
  terminating: boolean;
  /** `hints.forZones`, when given. */
  hintZones?: string[];
  /** `hints.forNodes`, when given. */
  hintNodes?: string[];
  /** Whether the endpoint runs on this node (nodeName equals the agent's node name). */
  local: boolean;
}

export interface ServicePortInfo {
  /** `""` when the port is unnamed. */
  name: string;
  protocol: ServiceProtocol;
  port: number;
  /** Set for NodePort and LoadBalancer Services that have one allocated. */
  nodePort?: number;
  /** Every endpoint for this port from all the Service's slices, one per address and target port. */
  endpoints: ServiceEndpoint[];
}

export interface ServiceInfo {
  /** `namespace/name`. */
  key: string;
  namespace: string;
  name: string;
  type: ServiceType;
  /** Valid cluster IPs only, normalized, primary family first. */
  clusterIPs: string[];
  externalIPs: string[];
  /** Status ingress IPs; those with ipMode Proxy are skipped (the load balancer proxies, it does not route). */
  loadBalancerIPs: string[];
  /** Normalized CIDRs. */
  loadBalancerSourceRanges: string[];
  externalTrafficPolicy: TrafficPolicy;
  internalTrafficPolicy: TrafficPolicy;
  /** Set for LoadBalancer Services with externalTrafficPolicy Local. */
  healthCheckNodePort?: number;
  /** Set iff sessionAffinity is ClientIP; 10800 when the API left it unset. */
  sessionAffinityTimeoutSeconds?: number;
  trafficDistribution?: string;
  annotations: Readonly<Record<string, string>>;
  ports: ServicePortInfo[];
  /** What was invalid and dropped (bad IPs, ports, …), for one log line. */
  problems: string[];
}

// ---------------------------------------------------------------------------------------------------
// Small readers that tolerate anything JSON can hold.

function arr<T>(v: T[] | undefined | null): T[] {
  return Array.isArray(v) ? v : [];
}

function str(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

function validPort(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v >= 1 && v <= 65535;
}

function normalIP(s: unknown): { ip: string; family: Family } | undefined {
  if (typeof s !== "string") return undefined;
  // A canonical dotted quad (every one parseIPv4Fast accepts) is its own normal form: no bytes, no format.
  if (parseIPv4Fast(s) >= 0) return { ip: s, family: 4 };
  const p = parseIP(s.trim());
  return p ? { ip: formatIP(p.addr), family: p.family } : undefined;
}

function protocolOf(v: unknown): ServiceProtocol | undefined {
  if (v === undefined || v === null) return "TCP"; // the API's default
  return v === "TCP" || v === "UDP" || v === "SCTP" ? v : undefined;
}

/** `namespace/name` of a Service. */
export function serviceKey(svc: V1Service): string {
  return `${svc.metadata?.namespace ?? ""}/${svc.metadata?.name ?? ""}`;
}

/** The key of the Service an EndpointSlice belongs to; undefined without the label or a namespace. */
export function sliceServiceKey(slice: V1EndpointSlice): string | undefined {
  const name = str(slice.metadata?.labels?.[SERVICE_NAME_LABEL]);
  const ns = str(slice.metadata?.namespace);
  return name && ns ? `${ns}/${name}` : undefined;
}

/** The zone of a node from its labels; undefined when unlabelled. */
export function nodeZone(
  node: { metadata?: { labels?: Record<string, string> } } | undefined,
): string | undefined {
  const z = node?.metadata?.labels?.[ZONE_LABEL];
  return typeof z === "string" && z !== "" ? z : undefined;
}

/**
 * Why a node agent leaves this Service alone, or undefined when it handles it: another proxy's
 * service-proxy-name label, a headless Service (label or cluster IP None), no cluster IP at all, or
 * type ExternalName (DNS only). kube-proxy skips the same, except that it skips any proxy-name label.
 */
export function serviceSkipReason(svc: V1Service): string | undefined {
  const labels = svc.metadata?.labels ?? {};
  const proxyName = labels[SERVICE_LABELS.proxyName];
  if (proxyName !== undefined && proxyName !== PROXY_NAME) return `handled by service proxy "${proxyName}"`;
  if (labels[SERVICE_LABELS.headless] !== undefined) return "headless";
  const spec = svc.spec;
  if (!spec) return "no spec";
  if (spec.type === "ExternalName") return "type ExternalName";
  const primary = spec.clusterIP ?? arr(spec.clusterIPs)[0];
  if (primary === "None") return "headless";
  if (primary === undefined || primary === "") return "no cluster IP";
  return undefined;
}

// ---------------------------------------------------------------------------------------------------
// Endpoints

/** One endpoint of a slice with its conditions defaulted, before ports are applied. */
export interface SliceEndpoint {
  ip: string;
  family: Family;
  nodeName?: string;
  zone?: string;
  hostname?: string;
  ready: boolean;
  serving: boolean;
  terminating: boolean;
  hintZones?: string[];
  hintNodes?: string[];
  local: boolean;
}

/**
 * The endpoints of one slice, whatever its ports: the first address of each (as kube-proxy), conditions
 * with their defaults. FQDN slices hold no IPs and give none; an address of the wrong family is a problem.
 */
export function sliceEndpoints(
  slice: V1EndpointSlice,
  nodeName: string,
  problems: string[] = [],
): SliceEndpoint[] {
  const type = slice.addressType;
  if (type === "FQDN") return [];
  const want: Family | undefined = type === "IPv4" ? 4 : type === "IPv6" ? 6 : undefined;
  const sliceName = slice.metadata?.name ?? "?";
  const out: SliceEndpoint[] = [];
  for (const ep of arr(slice.endpoints)) {
    if (!ep || typeof ep !== "object") continue;
    const first = arr(ep.addresses)[0];
    const addr = normalIP(first);
    if (!addr) {
      problems.push(`slice ${sliceName}: endpoint address ${JSON.stringify(first ?? null)} is not an IP`);
      continue;
    }
    if (want !== undefined && addr.family !== want) {
      problems.push(`slice ${sliceName}: address ${addr.ip} is not ${type}`);
      continue;
    }
    const c = ep.conditions ?? {};
    const ready = c.ready !== false;
    const e: SliceEndpoint = {
      ip: addr.ip,
      family: addr.family,
      ready,
      serving: typeof c.serving === "boolean" ? c.serving : ready,
      terminating: c.terminating === true,
      local: nodeName !== "" && ep.nodeName === nodeName,
    };
    if (typeof ep.nodeName === "string") e.nodeName = ep.nodeName;
    if (typeof ep.zone === "string") e.zone = ep.zone;
    if (typeof ep.hostname === "string") e.hostname = ep.hostname;
    if (ep.hints) {
      const zones = arr(ep.hints.forZones).map((z) => z?.name).filter((z): z is string =>
        typeof z === "string"
      );
      if (zones.length) e.hintZones = zones;
      const nodes = arr((ep.hints as { forNodes?: { name?: string }[] }).forNodes)
        .map((n) => n?.name).filter((n): n is string => typeof n === "string");
      if (nodes.length) e.hintNodes = nodes;
    }
    out.push(e);
  }
  return out;
}

/**
 * Whether a Service has an endpoint on `nodeName` that may take new traffic for kube-router's Local
 * policies: ready or serving, and not terminating. (kube-router announces a Local VIP only from such
 * nodes; the slices' ports do not matter here.)
 */
export function hasLocalEndpoint(slices: readonly V1EndpointSlice[], nodeName: string): boolean {
  for (const s of slices) {
    for (const e of sliceEndpoints(s, nodeName)) {
      if (e.local && (e.ready || e.serving) && !e.terminating) return true;
    }
  }
  return false;
}

/** Service keys (`namespace/name`) that have a ready or serving, not terminating endpoint on `nodeName`. */
export function servicesWithLocalEndpoints(
  slices: readonly V1EndpointSlice[],
  nodeName: string,
): Set<string> {
  const out = new Set<string>();
  for (const s of slices) {
    const key = sliceServiceKey(s);
    if (key && !out.has(key) && hasLocalEndpoint([s], nodeName)) out.add(key);
  }
  return out;
}

/**
 * The endpoints of one service port from all its slices: a slice contributes when it has a port of the
 * same name and protocol, whose number is the target port (a named targetPort resolved for the pods in
 * that slice). One endpoint per address and target port; when two slices name the same one (a pod
 * moving between slices, or an IP reused by a new pod before the old one is gone) a non-terminating one
 * wins, as in kube-proxy. Sorted by address for stable output.
 */
function portEndpoints(
  name: string,
  protocol: ServiceProtocol,
  slices: readonly V1EndpointSlice[],
  parsed: Map<V1EndpointSlice, SliceEndpoint[]>,
): ServiceEndpoint[] {
  const all: ServiceEndpoint[] = [];
  for (const s of slices) {
    for (const sp of arr(s.ports)) {
      if (!sp || typeof sp !== "object" || typeof sp.name !== "string") continue;
      if (sp.name !== name || protocolOf(sp.protocol) !== protocol || !validPort(sp.port)) continue;
      for (const e of parsed.get(s) ?? []) all.push({ ...e, port: sp.port });
    }
  }
  // Sorted (stably: slice order kept among equals), then one per address and port: in slice order, a
  // later one replaces the one before unless it is terminating.
  all.sort((a, b) => a.family - b.family || (a.ip < b.ip ? -1 : a.ip > b.ip ? 1 : a.port - b.port));
  const out: ServiceEndpoint[] = [];
  for (const e of all) {
    const last = out[out.length - 1];
    if (last && last.ip === e.ip && last.port === e.port) {
      if (!e.terminating) out[out.length - 1] = e;
    } else out.push(e);
  }
  return out;
}

/** Slice-level problems that make a port unusable, named once per slice. */
function slicePortProblems(slice: V1EndpointSlice, problems: string[]): void {
  const sliceName = slice.metadata?.name ?? "?";
  for (const sp of arr(slice.ports)) {
    if (!sp || typeof sp !== "object") continue;
    if (typeof sp.name !== "string") {
      problems.push(`slice ${sliceName}: port without a name (unnamed ports must have name "")`);
    } else if (!validPort(sp.port)) {
      problems.push(`slice ${sliceName}: port ${JSON.stringify(sp.name)} has no valid number`);
    } else if (!protocolOf(sp.protocol)) {
      problems.push(
        `slice ${sliceName}: port ${JSON.stringify(sp.name)} has protocol ${String(sp.protocol)}`,
      );
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Services

function policy(v: unknown, field: string, problems: string[]): TrafficPolicy {
  if (v === undefined || v === null || v === "Cluster") return "Cluster";
  if (v === "Local") return "Local";
  problems.push(`${field} ${String(v)} is not Cluster or Local; using Cluster`);
  return "Cluster";
}

function ipList(values: unknown[], what: string, problems: string[]): string[] {
  const out: string[] = [];
  for (const v of values) {
    const p = normalIP(v);
    if (!p) problems.push(`${what} ${JSON.stringify(v)} is not an IP`);
    else if (!out.includes(p.ip)) out.push(p.ip);
  }
  return out;
}

/**
 * Reads one Service and its EndpointSlices (those whose kubernetes.io/service-name label names it; see
 * EndpointSliceIndex) as seen from `nodeName`. Call serviceSkipReason first: a skipped Service still
 * reads, but nobody should program it.
 */
export function buildServiceInfo(
  svc: V1Service,
  slices: readonly V1EndpointSlice[],
  nodeName: string,
): ServiceInfo {
  const problems: string[] = [];
  const namespace = svc.metadata?.namespace ?? "";
  const name = svc.metadata?.name ?? "";
  const spec = svc.spec ?? {};

  let type: ServiceType = "ClusterIP";
  if (spec.type === "NodePort" || spec.type === "LoadBalancer") type = spec.type;
  else if (spec.type !== undefined && spec.type !== "ClusterIP") {
    problems.push(`type ${String(spec.type)} is not ClusterIP, NodePort or LoadBalancer; read as ClusterIP`);
  }

  const rawClusterIPs: unknown[] = arr(spec.clusterIPs).length
    ? arr(spec.clusterIPs)
    : spec.clusterIP !== undefined
    ? [spec.clusterIP]
    : [];
  const clusterIPs = ipList(rawClusterIPs.filter((ip) => ip !== "None" && ip !== ""), "cluster IP", problems);
  const externalIPs = ipList(arr(spec.externalIPs), "external IP", problems);
  const ingress = arr(svc.status?.loadBalancer?.ingress).filter((i) =>
    i && typeof i === "object" && i.ip !== undefined && i.ip !== "" &&
    (i as { ipMode?: string }).ipMode !== "Proxy"
  );
  const loadBalancerIPs = ipList(ingress.map((i) => i.ip), "load balancer ingress IP", problems);

  const loadBalancerSourceRanges: string[] = [];
  for (const r of arr(spec.loadBalancerSourceRanges)) {
    const c = typeof r === "string" ? parseCidr(r.trim()) : undefined;
    if (!c) problems.push(`load balancer source range ${JSON.stringify(r)} is not a CIDR`);
    else if (!loadBalancerSourceRanges.includes(formatCidr(c))) loadBalancerSourceRanges.push(formatCidr(c));
  }

  const info: ServiceInfo = {
    key: `${namespace}/${name}`,
    namespace,
    name,
    type,
    clusterIPs,
    externalIPs,
    loadBalancerIPs,
    loadBalancerSourceRanges,
    externalTrafficPolicy: policy(spec.externalTrafficPolicy, "externalTrafficPolicy", problems),
    internalTrafficPolicy: policy(spec.internalTrafficPolicy, "internalTrafficPolicy", problems),
    annotations: { ...(svc.metadata?.annotations ?? {}) },
    ports: [],
    problems,
  };

  if (type === "LoadBalancer" && info.externalTrafficPolicy === "Local" && spec.healthCheckNodePort != null) {
    if (validPort(spec.healthCheckNodePort)) info.healthCheckNodePort = spec.healthCheckNodePort;
    else problems.push(`healthCheckNodePort ${String(spec.healthCheckNodePort)} is not a port`);
  }

  if (spec.sessionAffinity === "ClientIP") {
    const t = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds;
    if (t === undefined || t === null) info.sessionAffinityTimeoutSeconds = DEFAULT_AFFINITY_TIMEOUT_SECONDS;
    else if (typeof t === "number" && Number.isInteger(t) && t >= 1 && t <= 86400) {
      info.sessionAffinityTimeoutSeconds = t;
    } else {
      problems.push(`session affinity timeout ${String(t)} is not 1..86400; using 10800`);
      info.sessionAffinityTimeoutSeconds = DEFAULT_AFFINITY_TIMEOUT_SECONDS;
    }
  } else if (
    spec.sessionAffinity !== undefined && spec.sessionAffinity !== null && spec.sessionAffinity !== "None"
  ) {
    problems.push(`sessionAffinity ${String(spec.sessionAffinity)} is not None or ClientIP; ignored`);
  }
  const td = str((spec as { trafficDistribution?: unknown }).trafficDistribution);
  if (td) info.trafficDistribution = td;

  const parsed = new Map<V1EndpointSlice, SliceEndpoint[]>();
  for (const s of slices) {
    parsed.set(s, sliceEndpoints(s, nodeName, problems));
    slicePortProblems(s, problems);
  }
  const seen = new Set<string>();
  for (const p of arr(spec.ports)) {
    if (!p || typeof p !== "object") continue;
    const pname = typeof p.name === "string" ? p.name : "";
    const protocol = protocolOf(p.protocol);
    if (!protocol) {
      problems.push(`port ${JSON.stringify(pname)}: protocol ${String(p.protocol)} is not TCP, UDP or SCTP`);
      continue;
    }
    if (!validPort(p.port)) {
      problems.push(`port ${JSON.stringify(pname)}: ${String(p.port)} is not a port number`);
      continue;
    }
    const id = `${pname}|${protocol}`;
    if (seen.has(id)) {
      problems.push(`port ${JSON.stringify(pname)}/${protocol} appears twice; the first is used`);
      continue;
    }
    seen.add(id);
    const port: ServicePortInfo = {
      name: pname,
      protocol,
      port: p.port,
      endpoints: portEndpoints(pname, protocol, slices, parsed),
    };
    if (type !== "ClusterIP" && p.nodePort != null && p.nodePort !== 0) {
      if (validPort(p.nodePort)) port.nodePort = p.nodePort;
      else problems.push(`port ${JSON.stringify(pname)}: nodePort ${String(p.nodePort)} is not a port`);
    }
    info.ports.push(port);
  }
  return info;
}

// ---------------------------------------------------------------------------------------------------
// Endpoint choice

export interface UsableOptions {
  /** A Local traffic policy applies: only endpoints on this node. */
  localOnly?: boolean;
  /** This node's zone (topology.kubernetes.io/zone), for zone hints. */
  zone?: string;
  /** This node's name, for node hints. */
  nodeName?: string;
  /** Honour topology hints (on unless the caller turns it off). */
  topologyAware?: boolean;
}

/** The hint that narrows the choice, if any: same node, then same zone, as kube-proxy's topology.go. */
function topologyMode(
  endpoints: readonly ServiceEndpoint[],
  zone: string | undefined,
  nodeName: string | undefined,
): "node" | "zone" | undefined {
  let allNodeHints = true, forNode = false, allZoneHints = true, forZone = false;
  let any = false;
  for (const e of endpoints) {
    // Hints are judged on ready endpoints only: the controller gives hints to those.
    if (!e.ready) continue;
    any = true;
    if (!e.hintNodes?.length) allNodeHints = false;
    else if (nodeName !== undefined && e.hintNodes.includes(nodeName)) forNode = true;
    if (!e.hintZones?.length) allZoneHints = false;
    else if (zone !== undefined && e.hintZones.includes(zone)) forZone = true;
  }
  if (!any) return undefined;
  if (allNodeHints && forNode) return "node";
  if (allZoneHints && forZone) return "zone";
  return undefined;
}

/**
 * kube-proxy's choice of endpoints for new connections. Cluster policy: the ready endpoints, narrowed to
 * those hinted for this node or else this zone when every ready endpoint carries such hints and one names
 * us (hints come from trafficDistribution PreferClose/PreferSameNode or topology-mode Auto); if none is
 * ready, the serving-and-terminating ones (no topology, a last effort not to drop connections). Local
 * policy: the local ready endpoints, or else the local serving-and-terminating ones; hints do not apply.
 */
export function usableEndpoints(
  endpoints: readonly ServiceEndpoint[],
  opts: UsableOptions = {},
): ServiceEndpoint[] {
  if (opts.localOnly) {
    const local = endpoints.filter((e) => e.local);
    const ready = local.filter((e) => e.ready);
    return ready.length ? ready : local.filter((e) => e.serving && e.terminating);
  }
  const mode = opts.topologyAware === false ? undefined : topologyMode(endpoints, opts.zone, opts.nodeName);
  const ready = endpoints.filter((e) =>
    e.ready &&
    (mode === undefined ||
      (mode === "node" ? e.hintNodes!.includes(opts.nodeName!) : e.hintZones!.includes(opts.zone!)))
  );
  return ready.length ? ready : endpoints.filter((e) => e.serving && e.terminating);
}

// ---------------------------------------------------------------------------------------------------
// Index

/**
 * EndpointSlices grouped by the Service they belong to (kubernetes.io/service-name label), kept current
 * from the bus's previous/current pairs so a Service's slices are found without scanning every slice.
 */
export class EndpointSliceIndex {
  readonly #byService = new Map<string, Map<string, V1EndpointSlice>>();
  readonly #serviceOfSlice = new Map<string, string>();

  /**
   * Records one change; returns the key of the Service it touched (the current one's, or the previous
   * one's for a deletion), undefined for a slice of no Service. A slice whose label moved to another
   * Service touches both: `touched` lists them.
   */
  update(previous: V1EndpointSlice | undefined, current: V1EndpointSlice | undefined): string | undefined {
    const t = this.touched(previous, current);
    return t[t.length - 1];
  }

  /** As update, returning every Service key the change touched (0, 1 or 2). */
  touched(previous: V1EndpointSlice | undefined, current: V1EndpointSlice | undefined): string[] {
    const obj = current ?? previous;
    if (!obj) return [];
    const sliceKey = `${obj.metadata?.namespace ?? ""}/${obj.metadata?.name ?? ""}`;
    const out: string[] = [];
    const before = this.#serviceOfSlice.get(sliceKey);
    const after = current ? sliceServiceKey(current) : undefined;
    if (before !== undefined && before !== after) {
      const m = this.#byService.get(before);
      m?.delete(sliceKey);
      if (m?.size === 0) this.#byService.delete(before);
      this.#serviceOfSlice.delete(sliceKey);
      out.push(before);
    }
    if (after !== undefined && current) {
      let m = this.#byService.get(after);
      if (!m) this.#byService.set(after, m = new Map());
      m.set(sliceKey, current);
      this.#serviceOfSlice.set(sliceKey, after);
      out.push(after);
    }
    return out;
  }

  /** Rebuilds from a full list (a resync). */
  reset(slices: readonly V1EndpointSlice[]): void {
    this.#byService.clear();
    this.#serviceOfSlice.clear();
    for (const s of slices) this.touched(undefined, s);
  }

  /** The slices of one Service, by slice name. */
  slicesFor(serviceKey: string): V1EndpointSlice[] {
    const m = this.#byService.get(serviceKey);
    if (!m) return [];
    return [...m.entries()].sort((a, b) => a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0).map((e) => e[1]);
  }

  /** Keys of every Service with at least one slice. */
  services(): string[] {
    return [...this.#byService.keys()];
  }
}
