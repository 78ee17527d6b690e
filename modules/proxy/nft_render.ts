/**
 * The service proxy's nftables ruleset, rendered from the Service model (pure, no I/O). The shape follows
 * kube-proxy's nftables mode: whatever the number of Services, a packet costs one verdict-map lookup
 * (`daddr . l4proto . dport` in `service_ips_v4`), then a per-service-port chain that picks an endpoint with
 * a short cascade of `numgen inc mod k 0 goto …` rules (see pickRules), then an endpoint chain that DNATs.
 *
 * Everything lives in one `inet kube_router_proxy` table, both families side by side (maps and chains
 * carry the family in their names, `_v4`/`_v6`, `svc4-`/`svc6-`):
 *
 *   nat_prerouting / nat_output (dstnat)  -> services: vmap @service_ips_vF, NodePorts vmap @service_nodeports_vF
 *   nat_postrouting (srcnat)              -> masquerading: packets marked 0x4000 are masqueraded
 *   filter_prerouting/_output (dstnat-10) -> firewall_check: LoadBalancer source ranges (vmap @firewall_ips_vF)
 *   filter_input/_forward/_output         -> service_endpoints_check / nodeport_endpoints_check:
 *                                            Services without endpoints are rejected, never blackholed
 *   filter_forward, filter_output_post_dnat (dstnat+10) -> cluster_ips_check: a cluster IP that is still
 *                                            the destination after DNAT was asked on a port it does not
 *                                            expose: rejected; an unallocated one in the range: dropped
 *
 * Per service port and family: `svcF-<ns>/<name>/<proto>/<port>` (Cluster policy endpoints),
 * `localF-…` (this node's endpoints), `extF-…` (external traffic: NodePort, external and LB IPs; masquerade
 * or eTP Local short-circuits), `fwF-…` (source ranges); per endpoint `ep-…__<ip>/<port>` (hairpin mark,
 * affinity update, DNAT) and, with ClientIP affinity, a dynamic timeout set `aff-…__<ip>/<port>`.
 * Service chain names always contain "/", which no fixed chain name does: that is how stale ones are found.
 */
import {
  type ServiceEndpoint,
  type ServiceInfo,
  type ServicePortInfo,
  usableEndpoints,
} from "../../core/mod.ts";
import { cidrContains, type Family, formatIP, parseCidr, parseIP } from "../../ffi/mod.ts";
import { type NftChainSpec, type NftSetSpec, NftTransaction } from "../../ffi/mod.ts";

export const PROXY_TABLE = "kube_router_proxy";
/** The "masquerade this" bit (kube-proxy's 0x4000), honoured only in this table's postrouting chain. */
export const MASQUERADE_MARK = 0x4000;
/** Hook priorities: DNAT at dstnat (-100), source ranges and no-endpoint rejects just before it. */
export const PRIORITY = { dstnat: -100, filterEarly: -110, filterPostDnat: -90, srcnat: 100 } as const;

export const ANNOTATIONS = {
  scheduler: "kube-router.io/service.scheduler",
  hairpin: "kube-router.io/service.hairpin",
  hairpinExternalIps: "kube-router.io/service.hairpin.externalips",
  local: "kube-router.io/service.local",
} as const;

/** What the ruleset needs to know about this node and the agent's flags. */
export interface ProxyNodeContext {
  nodeName: string;
  /** The node's topology.kubernetes.io/zone label, for hints and PreferClose. */
  zone?: string;
  families: readonly Family[];
  /** Every node's pod CIDRs: traffic from outside them to a cluster IP is masqueraded. */
  podCidrs: readonly string[];
  /** The node's addresses NodePorts answer on (unless nodePortBindOnAllIp). */
  nodeIps: readonly string[];
  serviceClusterIpRanges: readonly string[];
  /** --service-external-ip-range. */
  externalIpRanges: readonly string[];
  /** --loadbalancer-ip-range: LoadBalancer ingress IPs inside it are valid too. */
  loadBalancerIpRanges: readonly string[];
  strictExternalIpValidation: boolean;
  masqueradeAll: boolean;
  /** --hairpin-mode: accepted; hairpin traffic is always masqueraded (kube-proxy's behaviour). */
  hairpinMode: boolean;
  nodePortBindOnAllIp: boolean;
}

/** One service's share of the ruleset: its chains, map/set elements and affinity sets. */
export interface RenderedService {
  key: string;
  /** chain name -> rule bodies in order */
  chains: Map<string, string[]>;
  /** `${map}|${key parts joined " . "}` -> verdict (or "" for a plain set element) */
  elements: Map<string, string>;
  /** affinity sets by name */
  sets: Map<string, NftSetSpec>;
  /** Endpoint chains programmed (for metrics). */
  endpoints: number;
  /** What was wrong with the input and skipped; logged once by the caller. */
  warnings: string[];
  /** Schedulers asked for that nftables cannot express (logged once, rr used instead). */
  unsupportedScheduler?: string;
  /** UDP service ports: where stale conntrack entries must be cleared when endpoints go or first come. */
  udpPorts: UdpPort[];
  /** The healthCheckNodePort to serve (LoadBalancer, externalTrafficPolicy Local). */
  healthCheck?: { port: number; namespace: string; name: string; localEndpoints: number };
}

/** One UDP service port in one family. */
export interface UdpPort {
  family: Family;
  /** Cluster, external and LoadBalancer IPs. */
  vips: string[];
  port: number;
  nodePort?: number;
  /** `ip:port` of every endpoint traffic may go to. */
  endpoints: string[];
}

const IP = { 4: "ip", 6: "ip6" } as const;
const ADDR = { 4: "ipv4_addr", 6: "ipv6_addr" } as const;

/** Separator between element map name and key in RenderedService.elements. */
export function elementId(map: string, key: readonly string[]): string {
  return `${map}|${key.join(" . ")}`;
}
export function splitElementId(id: string): { map: string; key: string[] } {
  const bar = id.indexOf("|");
  return { map: id.slice(0, bar), key: id.slice(bar + 1).split(" . ") };
}

/** The canonical text of an address (what nft prints back), or undefined if it is not one. */
export function canonicalIp(ip: string): { ip: string; family: Family } | undefined {
  const p = parseIP(ip);
  return p ? { ip: formatIP(p.addr), family: p.family } : undefined;
}

function portBase(svc: ServiceInfo, p: ServicePortInfo): string {
  return `${svc.namespace}/${svc.name}/${p.protocol.toLowerCase()}/${p.name}`;
}

function endpointBase(base: string, ep: ServiceEndpoint): string {
  // ":" may not appear in an nftables name; "." may.
  return `${base}__${canonicalIp(ep.ip)!.ip.replaceAll(":", ".")}/${ep.port}`;
}

/** Whether a name is one of the per-service chains or sets (all contain "/"). */
export function isServiceObjectName(name: string): boolean {
  return name.includes("/");
}

function inRanges(ip: string, ranges: readonly string[]): boolean {
  const p = parseIP(ip);
  if (!p) return false;
  return ranges.some((r) => {
    const c = parseCidr(r);
    return c !== undefined && c.family === p.family && cidrContains(c, p.addr);
  });
}

function hostPort(ip: string, family: Family, port: number): string {
  return family === 4 ? `${ip}:${port}` : `[${ip}]:${port}`;
}

/** The scheduler the annotation asks for, as nftables can express it. */
function scheduler(svc: ServiceInfo): { kind: "rr" | "sh"; unsupported?: string } {
  const s = svc.annotations[ANNOTATIONS.scheduler]?.trim().toLowerCase();
  if (s === undefined || s === "" || s === "rr") return { kind: "rr" };
  if (s === "sh") return { kind: "sh" };
  return { kind: "rr", unsupported: s };
}

/** The fixed part of the table: hooks, dispatch chains, maps and node-wide sets. */
export function renderBase(tx: NftTransaction, ctx: ProxyNodeContext): void {
  tx.add({ table: { comment: "kube-router service proxy" } });
  const base: (NftChainSpec & { rules: string[] })[] = [
    {
      name: "filter_prerouting",
      type: "filter",
      hook: "prerouting",
      priority: PRIORITY.filterEarly,
      rules: ["ct state new jump firewall_check"],
    },
    {
      name: "filter_input",
      type: "filter",
      hook: "input",
      priority: PRIORITY.filterEarly,
      rules: ["ct state new jump nodeport_endpoints_check", "ct state new jump service_endpoints_check"],
    },
    {
      name: "filter_forward",
      type: "filter",
      hook: "forward",
      priority: PRIORITY.filterEarly,
      rules: ["ct state new jump service_endpoints_check", "ct state new jump cluster_ips_check"],
    },
    {
      name: "filter_output",
      type: "filter",
      hook: "output",
      priority: PRIORITY.filterEarly,
      rules: ["ct state new jump service_endpoints_check", "ct state new jump firewall_check"],
    },
    {
      name: "filter_output_post_dnat",
      type: "filter",
      hook: "output",
      priority: PRIORITY.filterPostDnat,
      rules: ["ct state new jump cluster_ips_check"],
    },
    {
      name: "nat_prerouting",
      type: "nat",
      hook: "prerouting",
      priority: PRIORITY.dstnat,
      rules: ["jump services"],
    },
    { name: "nat_output", type: "nat", hook: "output", priority: PRIORITY.dstnat, rules: ["jump services"] },
    {
      name: "nat_postrouting",
      type: "nat",
      hook: "postrouting",
      priority: PRIORITY.srcnat,
      rules: ["jump masquerading"],
    },
  ];
  const regular: Record<string, string[]> = {
    services: [],
    service_endpoints_check: [],
    nodeport_endpoints_check: [],
    firewall_check: [],
    cluster_ips_check: [],
    // TCP gets a reset (an ICMP error for a forwarded SYN was not reliably turned into ECONNREFUSED).
    reject_chain: ["meta l4proto tcp reject with tcp reset", "reject"],
    mark_for_masquerade: [`meta mark set meta mark | ${hex(MASQUERADE_MARK)}`],
    masquerading: [
      `meta mark & ${hex(MASQUERADE_MARK)} == ${hex(0)} return`,
      `meta mark set meta mark ^ ${hex(MASQUERADE_MARK)}`,
      "masquerade fully-random",
    ],
  };
  for (const f of ctx.families) {
    const ip = IP[f];
    const addr = ADDR[f];
    const noLocalhost = f === 4 ? "ip daddr != 127.0.0.0/8" : "ip6 daddr != ::1";
    for (const m of ["service_ips", "no_endpoint_services", "firewall_ips"]) {
      tx.add({ map: { name: `${m}_v${f}`, type: `${addr} . inet_proto . inet_service`, map: "verdict" } });
    }
    for (const m of ["service_nodeports", "no_endpoint_nodeports"]) {
      tx.add({ map: { name: `${m}_v${f}`, type: "inet_proto . inet_service", map: "verdict" } });
    }
    for (const s of [`cluster_ips_v${f}`, `nodeport_ips_v${f}`]) tx.add({ set: { name: s, type: addr } });
    tx.add({ set: { name: `pod_cidrs_v${f}`, type: addr, flags: ["interval"] } });
    for (const s of [`nodeport_ips_v${f}`, `pod_cidrs_v${f}`]) tx.flush({ set: { name: s, type: addr } });
    for (const c of mergeCidrs(ctx.podCidrs, f)) tx.add({ element: { set: `pod_cidrs_v${f}`, key: [c] } });
    const nodeIps = [
      ...new Set(ctx.nodeIps.map(canonicalIp).filter((p) => p?.family === f).map((p) => p!.ip)),
    ];
    for (const n of nodeIps) tx.add({ element: { set: `nodeport_ips_v${f}`, key: [n] } });

    const dispatch = `${ip} daddr . meta l4proto . th dport`;
    regular.services!.push(`${dispatch} vmap @service_ips_v${f}`);
    regular.services!.push(
      ctx.nodePortBindOnAllIp
        ? `fib daddr type local ${noLocalhost} meta l4proto . th dport vmap @service_nodeports_v${f}`
        : `${ip} daddr @nodeport_ips_v${f} meta l4proto . th dport vmap @service_nodeports_v${f}`,
    );
    regular.service_endpoints_check!.push(`${dispatch} vmap @no_endpoint_services_v${f}`);
    regular.nodeport_endpoints_check!.push(
      ctx.nodePortBindOnAllIp
        ? `${noLocalhost} meta l4proto . th dport vmap @no_endpoint_nodeports_v${f}`
        : `${ip} daddr @nodeport_ips_v${f} meta l4proto . th dport vmap @no_endpoint_nodeports_v${f}`,
    );
    regular.firewall_check!.push(`${dispatch} vmap @firewall_ips_v${f}`);
    regular.cluster_ips_check!.push(`${ip} daddr @cluster_ips_v${f} goto reject_chain`);
    const ranges = mergeCidrs(ctx.serviceClusterIpRanges, f);
    if (ranges.length) regular.cluster_ips_check!.push(`${ip} daddr ${setLiteral(ranges)} drop`);
  }
  // Regular chains first: base chains jump to them.
  for (const name of Object.keys(regular)) tx.add({ chain: { name } });
  for (const [name, rules] of Object.entries(regular)) {
    tx.flush({ chain: { name } });
    for (const rule of rules) tx.add({ rule: { chain: name, rule } });
  }
  for (const { rules, ...chain } of base) {
    tx.add({ chain: { ...chain, policy: "accept" } });
    tx.flush({ chain: { name: chain.name } });
    for (const rule of rules) tx.add({ rule: { chain: chain.name, rule } });
  }
}

/** One value bare, several in braces: how nft prints them back. */
function setLiteral(values: readonly string[]): string {
  return values.length === 1 ? values[0]! : `{ ${values.join(", ")} }`;
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, "0")}`;
}

/** The valid CIDRs of one family, canonical and without ones covered by another (interval sets refuse overlaps). */
function mergeCidrs(cidrs: readonly string[], f: Family): string[] {
  const parsed = cidrs.map(parseCidr).filter((c) => c?.family === f).map((c) => c!);
  parsed.sort((a, b) => a.prefix - b.prefix);
  const kept: typeof parsed = [];
  for (const c of parsed) if (!kept.some((k) => cidrContains(k, c.addr))) kept.push(c);
  return kept.map((c) => `${formatIP(c.addr)}/${c.prefix}`).sort();
}

/** Which external and LoadBalancer IPs of a Service may be served, and why the others may not. */
export function validExternalIps(
  svc: ServiceInfo,
  ctx: ProxyNodeContext,
): { externalIPs: string[]; loadBalancerIPs: string[]; problems: string[] } {
  const problems: string[] = [];
  const check = (ip: string, what: string, extraRanges: readonly string[]): string | undefined => {
    const c = canonicalIp(ip);
    if (!c) {
      problems.push(`${what} ${ip} is not an IP address`);
      return undefined;
    }
    if (inRanges(c.ip, ctx.serviceClusterIpRanges)) {
      problems.push(`${what} ${ip} lies inside the service cluster IP range`);
      return undefined;
    }
    if (ctx.strictExternalIpValidation && !inRanges(c.ip, [...ctx.externalIpRanges, ...extraRanges])) {
      problems.push(`${what} ${ip} is outside --service-external-ip-range (strict validation)`);
      return undefined;
    }
    return c.ip;
  };
  const externalIPs = svc.externalIPs.map((ip) => check(ip, "external IP", [])).filter((x) =>
    x !== undefined
  );
  const loadBalancerIPs = svc.loadBalancerIPs
    .map((ip) => check(ip, "load balancer IP", ctx.loadBalancerIpRanges))
    .filter((x) => x !== undefined);
  return { externalIPs: [...new Set(externalIPs)], loadBalancerIPs: [...new Set(loadBalancerIPs)], problems };
}

/** Renders one Service into its chains, elements and sets. */
export function renderService(svc: ServiceInfo, ctx: ProxyNodeContext): RenderedService {
  const out: RenderedService = {
    key: svc.key,
    chains: new Map(),
    elements: new Map(),
    sets: new Map(),
    endpoints: 0,
    warnings: [...svc.problems],
    udpPorts: [],
  };
  const sched = scheduler(svc);
  if (sched.unsupported) out.unsupportedScheduler = sched.unsupported;
  const externalLocal = svc.externalTrafficPolicy === "Local" ||
    svc.annotations[ANNOTATIONS.local]?.toLowerCase() === "true";
  const internalLocal = svc.internalTrafficPolicy === "Local";
  const ext = validExternalIps(svc, ctx);
  out.warnings.push(...ext.problems);
  const affinity = svc.sessionAffinityTimeoutSeconds;

  for (const f of ctx.families) {
    const ipx = IP[f];
    const clusterIp = svc.clusterIPs.map(canonicalIp).find((c) => c?.family === f)?.ip;
    const externalIps = ext.externalIPs.filter((ip) => canonicalIp(ip)!.family === f);
    const lbIps = ext.loadBalancerIPs.filter((ip) => canonicalIp(ip)!.family === f);
    const sourceRanges = svc.loadBalancerSourceRanges.filter((r) => parseCidr(r.trim())?.family === f);
    // A family the Service has no cluster IP in is not served in that family at all (single-stack).
    if (!clusterIp) continue;
    out.elements.set(elementId(`cluster_ips_v${f}`, [clusterIp]), "");

    for (const p of svc.ports) {
      const proto = p.protocol.toLowerCase();
      const base = portBase(svc, p);
      const svcChain = `svc${f}-${base}`;
      const localChain = `local${f}-${base}`;
      const extChain = `ext${f}-${base}`;
      const fwChain = `fw${f}-${base}`;
      const all = p.endpoints.filter((e) => e.family === f && canonicalIp(e.ip)?.family === f);
      // Topology applies whenever every endpoint carries hints (the controller sets them for PreferClose).
      const opts = { nodeName: ctx.nodeName, topologyAware: true, ...(ctx.zone ? { zone: ctx.zone } : {}) };
      const clusterEps = usableEndpoints(all, opts);
      const localEps = usableEndpoints(all, { ...opts, localOnly: true, topologyAware: false });
      const hasAny = clusterEps.length > 0;
      const externallyAccessible = externalIps.length > 0 || lbIps.length > 0 || p.nodePort !== undefined;
      const usesCluster = hasAny && (!internalLocal || externallyAccessible);
      const usesLocal = localEps.length > 0 && (internalLocal || (externalLocal && externallyAccessible));
      const internalChain = internalLocal ? localChain : svcChain;
      const hasInternal = internalLocal ? localEps.length > 0 : hasAny;
      const hasExternal = externalLocal ? localEps.length > 0 : hasAny;
      const missVerdict = hasAny ? "drop" : "goto reject_chain";
      const key = (ip: string, port: number) => [ip, proto, String(port)];

      // Cluster IP.
      if (hasInternal) {
        out.elements.set(elementId(`service_ips_v${f}`, key(clusterIp, p.port)), `goto ${internalChain}`);
      } else {
        out.elements.set(elementId(`no_endpoint_services_v${f}`, key(clusterIp, p.port)), missVerdict);
      }
      // External and LoadBalancer IPs.
      for (const ip of [...externalIps, ...lbIps]) {
        if (hasAny) out.elements.set(elementId(`service_ips_v${f}`, key(ip, p.port)), `goto ${extChain}`);
        if (!hasExternal) {
          out.elements.set(elementId(`no_endpoint_services_v${f}`, key(ip, p.port)), missVerdict);
        }
      }
      // Source ranges (LoadBalancer IPs only, as kube-proxy: NodePorts are not subject to them).
      if (lbIps.length && sourceRanges.length) {
        const allowed = mergeCidrs(sourceRanges, f);
        if (ctx.nodeIps.some((n) => inRanges(n, allowed))) allowed.push(...lbIps);
        out.chains.set(fwChain, [`${ipx} saddr != ${setLiteral(allowed)} drop`]);
        for (const ip of lbIps) {
          out.elements.set(elementId(`firewall_ips_v${f}`, key(ip, p.port)), `goto ${fwChain}`);
        }
      }
      // NodePort.
      if (p.nodePort !== undefined) {
        const npKey = [proto, String(p.nodePort)];
        if (hasAny) out.elements.set(elementId(`service_nodeports_v${f}`, npKey), `goto ${extChain}`);
        if (!hasExternal) out.elements.set(elementId(`no_endpoint_nodeports_v${f}`, npKey), missVerdict);
      }

      // Endpoint chains for every endpoint this node may send to.
      const reachable = new Map<string, ServiceEndpoint>();
      if (usesCluster) { for (const e of clusterEps) reachable.set(endpointBase(base, e), e); }
      if (usesLocal) { for (const e of localEps) reachable.set(endpointBase(base, e), e); }
      for (const [epBase, e] of reachable) {
        const ip = canonicalIp(e.ip)!.ip;
        const rules: string[] = [];
        // Hairpin: a pod reaching itself through the Service must be masqueraded, or its reply would go
        // straight back to itself from the wrong address. Always on, as in kube-proxy (kube-router's
        // --hairpin-mode and service.hairpin annotations ask for what is therefore already done).
        rules.push(`${ipx} saddr ${ip} jump mark_for_masquerade`);
        if (affinity !== undefined) {
          const set = `aff-${epBase}`;
          out.sets.set(set, {
            name: set,
            type: ADDR[f],
            flags: ["dynamic", "timeout"],
            timeout: `${Math.max(1, Math.floor(affinity))}s`,
          });
          rules.push(`update @${set} { ${ipx} saddr }`);
        }
        rules.push(`meta l4proto ${proto} dnat ${ipx} to ${hostPort(ip, f, e.port)}`);
        out.chains.set(`ep-${epBase}`, rules);
      }
      out.endpoints += reachable.size;
      if (p.protocol === "UDP") {
        out.udpPorts.push({
          family: f,
          vips: [clusterIp, ...externalIps, ...lbIps],
          port: p.port,
          ...(p.nodePort !== undefined ? { nodePort: p.nodePort } : {}),
          endpoints: [...reachable.values()].map((e) => hostPort(canonicalIp(e.ip)!.ip, f, e.port)).sort(),
        });
      }

      const policyChain = (eps: ServiceEndpoint[], withMasq: boolean): string[] => {
        const rules: string[] = [];
        if (withMasq) {
          rules.push(
            ctx.masqueradeAll
              ? `${ipx} daddr ${clusterIp} th dport ${p.port} jump mark_for_masquerade`
              : `${ipx} daddr ${clusterIp} th dport ${p.port} ${ipx} saddr != @pod_cidrs_v${f} jump mark_for_masquerade`,
          );
        }
        if (affinity !== undefined) {
          for (const e of eps) {
            const b = endpointBase(base, e);
            rules.push(`${ipx} saddr @aff-${b} goto ep-${b}`);
          }
        }
        rules.push(...pickRules(eps.map((e) => `ep-${endpointBase(base, e)}`), sched.kind, ipx));
        return rules;
      };
      if (usesCluster) out.chains.set(svcChain, policyChain(clusterEps, internalChain === svcChain));
      if (usesLocal) out.chains.set(localChain, policyChain(localEps, internalChain === localChain));

      if (hasAny && externallyAccessible) {
        const rules: string[] = [];
        if (!externalLocal) {
          // Endpoints may be on another node: the reply must come back through this one.
          rules.push("jump mark_for_masquerade", `goto ${svcChain}`);
        } else {
          // Pods reaching an external IP behave as if they went out to a load balancer and came back:
          // neither policy applies. The node itself must be masqueraded (its source is the VIP's node).
          rules.push(`${ipx} saddr @pod_cidrs_v${f} goto ${svcChain}`);
          rules.push("fib saddr type local jump mark_for_masquerade");
          rules.push(`fib saddr type local goto ${svcChain}`);
          if (hasExternal) rules.push(`goto ${localChain}`);
        }
        out.chains.set(extChain, rules);
      }
    }
  }
  if (svc.healthCheckNodePort !== undefined && externalLocal) {
    const local = new Set<string>();
    for (const p of svc.ports) {
      for (const e of p.endpoints) if (e.local && e.ready) local.add(e.ip);
    }
    out.healthCheck = {
      port: svc.healthCheckNodePort,
      namespace: svc.namespace,
      name: svc.name,
      localEndpoints: local.size,
    };
  }
  return out;
}

/**
 * The endpoint pick, as a cascade instead of one anonymous verdict map per Service: nft builds a kernel set
 * for every `vmap { … }` literal, which made loading 5,000 such rules five times slower than 5,000 plain
 * ones (measured with nft 1.0.6). rr: rule i fires when its own counter modulo the endpoints left is 0 (`numgen inc mod k 0`, nft's
 * own spelling of `== 0`), which
 * cycles through the endpoints in order exactly (each rule's counter only moves when the rules before it
 * did not fire). sh: the source hash modulo N picks the rule (deterministic, so one client sticks to one
 * endpoint while the set of endpoints does not change).
 */
export function pickRules(chains: readonly string[], kind: "rr" | "sh", ipx: "ip" | "ip6"): string[] {
  const n = chains.length;
  if (n === 1) return [`goto ${chains[0]}`];
  if (kind === "sh") {
    return chains.map((c, i) =>
      i === n - 1 ? `goto ${c}` : `jhash ${ipx} saddr mod ${n} seed 0x0 ${i} goto ${c}`
    );
  }
  return chains.map((c, i) => (i === n - 1 ? `goto ${c}` : `numgen inc mod ${n - i} 0 goto ${c}`));
}

function elementSpec(id: string, value: string) {
  const { map, key } = splitElementId(id);
  return value === "" ? { set: map, key } : { set: map, key, value: [value] };
}

/** How diffService treats what is already there. */
export interface DiffOptions {
  /** Rewrite every chain of `next` even if unchanged: the periodic repair of hand edits. */
  rewrite?: boolean;
  /**
   * The elements the kernel really holds (a full resync lists them). When given, element decisions are
   * made against it instead of `prev`, and removing elements nobody wants is left to the caller.
   */
  kernelElements?: ReadonlyMap<string, string>;
}

/**
 * Adds to `tx` what turns `prev` (what the kernel holds for this Service, as far as we know) into `next`,
 * and returns the chains that are now unused: they are flushed here and must be deleted by a later
 * transaction (kube-proxy's lesson: before Linux 6.2 a chain a just-deleted map element pointed to stays
 * busy for a moment). An element whose value changes is deleted and added again: nft refuses to `add` an
 * existing key with another value.
 */
export function diffService(
  tx: NftTransaction,
  prev: RenderedService | undefined,
  next: RenderedService | undefined,
  opts: DiffOptions = {},
): string[] {
  const rewrite = opts.rewrite ?? false;
  const have = opts.kernelElements ?? prev?.elements ?? new Map<string, string>();
  const want = next?.elements ?? new Map<string, string>();
  // 1. elements that go away or change value (before the chains they point to change)
  if (!opts.kernelElements) {
    for (const [id, v] of have) if (want.get(id) !== v) tx.delete({ element: elementSpec(id, "") });
  } else {
    for (const [id, v] of want) {
      const k = have.get(id);
      if (k !== undefined && k !== v) tx.delete({ element: elementSpec(id, "") });
    }
  }
  // 2. affinity sets (endpoint chains use them), then endpoint chains, then the chains that jump to them
  for (const [name, spec] of next?.sets ?? []) if (rewrite || !prev?.sets.has(name)) tx.add({ set: spec });
  const order = (name: string) => (name.startsWith("ep-") ? 0 : name.startsWith("ext") ? 2 : 1);
  const names = [...(next?.chains.keys() ?? [])].sort((a, b) => order(a) - order(b));
  for (const name of names) {
    const rules = next!.chains.get(name)!;
    const old = prev?.chains.get(name);
    if (!rewrite && old && sameRules(old, rules)) continue;
    tx.add({ chain: { name } });
    if (old || rewrite) tx.flush({ chain: { name } });
    for (const rule of rules) tx.add({ rule: { chain: name, rule } });
  }
  // 3. new or changed elements
  for (const [id, v] of want) if (have.get(id) !== v) tx.add({ element: elementSpec(id, v) });
  // 4. chains and sets no longer needed
  const stale: string[] = [];
  for (const name of prev?.chains.keys() ?? []) {
    if (!next?.chains.has(name)) {
      tx.flush({ chain: { name } });
      stale.push(name);
    }
  }
  for (const [name, spec] of prev?.sets ?? []) if (!next?.sets.has(name)) tx.delete({ set: spec });
  return stale;
}

function sameRules(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((r, i) => r === b[i]);
}
