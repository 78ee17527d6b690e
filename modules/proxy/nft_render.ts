/**
 * The service proxy's nftables ruleset, rendered from the Service model (pure, no I/O). Whatever the number
 * of Services, a packet costs one verdict-map lookup (`daddr . l4proto . dport` in `service_ips_v4`) that
 * sends it to a SHARED chain named by its parameters, which picks an endpoint with one more map lookup:
 *
 *   pick_v4_tcp_rr_10:  dnat ip to ip daddr . tcp dport . numgen random mod 10 map @service_endpoints_v4_tcp
 *
 * `service_endpoints_vF_P` holds `vip . port . slot : endpoint . port` for every Service (cluster, external
 * and LoadBalancer IPs), `nodeport_endpoints_vF_P` `nodePort . slot : endpoint . port`; their `_local_`
 * twins hold this node's endpoints (externalTrafficPolicy and internalTrafficPolicy Local). An endpoint
 * change is therefore only element changes (its slots, and the dispatch verdict when the count changes);
 * a chain is added only when a never-used combination of family, protocol, scheduler and count appears.
 * Measured with nft 1.0.6 (bench/proxy_scale.ts): chains per Service or endpoint made libnftables list
 * 110,000 chains for every transaction at 10,000 Services, and sets per Service are a linear list in the
 * kernel; neither scales, so there are none but for the rare Services that need them (ClientIP affinity,
 * LoadBalancer source ranges).
 *
 * The endpoint maps are per protocol because of libnftables 1.0.6: a typeof map read back from the kernel
 * whose value says `th dport` cannot be named by a new rule ("conflicting protocols specified: tcp vs.
 * th"); `tcp dport` in a map that only TCP rules use is accepted. The slot is `numgen random mod N` (rr,
 * random as kube-proxy's) or `jhash ip saddr mod N` (sh): typeof is the only way to key by those numbers.
 *
 * Everything lives in one `inet kube_router_proxy` table, both families side by side:
 *
 *   nat_prerouting / nat_output (dstnat)  -> services: sources outside the pod CIDRs (every source with
 *                                            --masquerade-all) to a cluster IP are marked for masquerade,
 *                                            then vmap @service_ips_vF and NodePorts vmap @service_nodeports_vF
 *   nat_postrouting (srcnat)              -> masquerading: hairpin (`ct status dnat` with saddr . daddr in
 *                                            @hairpin_vF, a pod reaching itself) is marked too; packets
 *                                            marked 0x4000 are masqueraded
 *   filter_prerouting/_output (dstnat-10) -> firewall_check: LoadBalancer source ranges (vmap @firewall_ips_vF)
 *   filter_input/_forward/_output         -> service_endpoints_check / nodeport_endpoints_check:
 *                                            Services without endpoints are rejected, never blackholed
 *   filter_forward, filter_output_post_dnat (dstnat+10) -> cluster_ips_check: a cluster IP that is still
 *                                            the destination after DNAT was asked on a port it does not
 *                                            expose: rejected; an unallocated one in the range: dropped
 *   with serviceCounters (--metrics-port), per-Service counters in counted sets keyed by VIP . proto . port:
 *   filter_prerouting/_output (first rules)  -> `daddr . l4proto . dport` in @service_stats_in_vF, and with
 *                                            `ct state new` in @service_stats_conns_vF (before DNAT)
 *   stats_postrouting / stats_input (srcnat+10) -> `saddr . l4proto . sport` in @service_stats_out_vF
 *                                            (replies, once their reverse NAT restored the VIP)
 *
 * Shared chains: `pick[_np][_local]_vF_P_S_N` (the pick among N endpoints with scheduler S), `ext[_np]_vF_P_S_N`
 * (external traffic: masquerade, then the pick), `ext[_np]_local_vF_P_S_C_L` (externalTrafficPolicy Local:
 * pods and the node go to the C cluster endpoints, the rest to the L local ones). Their names never contain
 * "/". Per-Service chains (all contain "/", which is how stale ones are found): `fwF-<ns>/<name>/<proto>/<port>`
 * (source ranges) and, for ClientIP affinity only, `svcF-`, `localF-`, `extF-`, per endpoint `ep-…__<ip>/<port>`
 * with a dynamic timeout set `aff-…__<ip>/<port>`.
 */
import {
  type ServiceEndpoint,
  type ServiceInfo,
  type ServicePortInfo,
  usableEndpoints,
} from "../../core/mod.ts";
import { cidrContains, type Family, formatIP, parseCidr, parseIP, parseIPv4Fast } from "../../ffi/mod.ts";
import { type NftChainSpec, type NftSetSpec, NftTransaction } from "../../ffi/mod.ts";

export const PROXY_TABLE = "kube_router_proxy";
/** The "masquerade this" bit (kube-proxy's 0x4000), honoured only in this table's postrouting chain. */
export const MASQUERADE_MARK = 0x4000;
/**
 * Hook priorities: DNAT at dstnat (-100), source ranges, no-endpoint rejects and the incoming per-Service
 * counters just before it; the outgoing counters after srcnat (110), once a reply carries the VIP again.
 */
export const PRIORITY = {
  dstnat: -100,
  filterEarly: -110,
  filterPostDnat: -90,
  srcnat: 100,
  afterSrcnat: 110,
} as const;

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
  /**
   * Per-Service packet, byte and connection counters (the `service_stats_*` sets; kube_router_service_*).
   * On when the agent serves metrics (--metrics-port), as kube-router collects them only then: they cost a
   * hash lookup per packet at prerouting/output and one at postrouting/input, and three elements per VIP
   * and port.
   */
  serviceCounters?: boolean;
}

/** One VIP (cluster, external, LoadBalancer or node IP for a NodePort), protocol and port a Service is counted on. */
export interface CounterKey {
  family: Family;
  vip: string;
  protocol: string;
  port: number;
}

/**
 * The counted sets: packets and bytes towards the Service (before DNAT, keyed by the destination), back
 * from it (after the reply's reverse NAT, keyed by the source) and new connections.
 */
export const COUNTER_SETS = {
  in: "service_stats_in",
  out: "service_stats_out",
  conns: "service_stats_conns",
} as const;

/** The counted set of one direction and family, e.g. `service_stats_in_v4`. */
export function counterSet(kind: keyof typeof COUNTER_SETS, f: Family): string {
  return `${COUNTER_SETS[kind]}_v${f}`;
}

/** One service's share of the ruleset: its chains, map/set elements and affinity sets. */
export interface RenderedService {
  key: string;
  /** Chains of this Service alone (affinity, source ranges): chain name -> rule bodies in order. */
  chains: Map<string, string[]>;
  /**
   * Elements this Service owns: `${map}|${key parts joined " . "}` -> verdict ("goto x", "drop"), an
   * endpoint ("10.1.2.5 . 8080", parts joined " . "), or "" for a plain set element.
   */
  elements: Map<string, string>;
  /**
   * The same elements grouped by claim (claimOf: one VIP and port, or one NodePort): claim -> element ids.
   * Written as the elements are, so conflicts are resolved and recorded without re-reading every id.
   */
  claims: Map<string, string[]>;
  /** Shared chains this Service uses (several Services use the same): name -> rule bodies. */
  shared: Map<string, string[]>;
  /** Shared set elements this Service needs (hairpin pairs), by element id. */
  sharedElements: Set<string>;
  /** affinity sets by name */
  sets: Map<string, NftSetSpec>;
  /** Endpoints this node may send the Service's traffic to (for metrics). */
  endpoints: number;
  /** Where the Service is counted (its elements in the `service_stats_*` sets), for the metrics' labels. */
  counters: CounterKey[];
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
const PROTOCOLS = ["tcp", "udp", "sctp"] as const;
type Proto = typeof PROTOCOLS[number];

/** The map of endpoints a pick chain looks up. */
export function endpointMap(f: Family, proto: string, o: { np: boolean; local: boolean }): string {
  return `${o.np ? "nodeport" : "service"}${o.local ? "_local" : ""}_endpoints_v${f}_${proto}`;
}

/**
 * Which Service an element belongs to for conflicts: every element about one VIP and port (the dispatch
 * verdict, the no-endpoint verdict, source ranges, endpoint slots) or one NodePort is one claim, so a
 * Service that loses a conflict loses all of it and never a few slots of it.
 */
export function claimOf(id: string): string {
  // Called for every element of every Service on each full sync: plain string work, no regular expressions.
  const bar = id.indexOf("|");
  const map = id.slice(0, bar);
  const key = id.slice(bar + 1);
  const v = map.indexOf("_v");
  const family = map.slice(v + 1, v + 3);
  switch (map.slice(0, v)) {
    case "service_ips":
    case "no_endpoint_services":
    case "firewall_ips":
    // A counter element goes with the VIP and port it counts (a NodePort's are keyed by node IP).
    case "service_stats_in":
    case "service_stats_out":
    case "service_stats_conns":
      return `${family} ${key}`;
    case "service_nodeports":
    case "no_endpoint_nodeports":
      return `${family} nodePort ${key}`;
    case "service_endpoints":
    case "service_local_endpoints": {
      const [vip, port] = key.split(" . ");
      return `${family} ${vip} . ${map.slice(v + 4)} . ${port}`;
    }
    case "nodeport_endpoints":
    case "nodeport_local_endpoints":
      return `${family} nodePort ${map.slice(v + 4)} . ${key.slice(0, key.indexOf(" . "))}`;
  }
  return id;
}

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
  // Dotted quads without leading zeros (all parseIPv4Fast accepts) are already canonical: no allocation.
  if (parseIPv4Fast(ip) >= 0) return { ip, family: 4 };
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

/** Whether a chain name is one of the shared pick and external chains. */
export function isSharedChainName(name: string): boolean {
  return /^(pick|ext)_/.test(name);
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
    // Replies counted once their reverse NAT gave them the VIP back as source (empty without counters).
    {
      name: "stats_postrouting",
      type: "filter",
      hook: "postrouting",
      priority: PRIORITY.afterSrcnat,
      rules: [],
    },
    { name: "stats_input", type: "filter", hook: "input", priority: PRIORITY.afterSrcnat, rules: [] },
  ];
  /** Counting rules, per base chain, put before its own rules. */
  const counting = new Map<string, string[]>();
  const count = (name: string, ...rules: string[]) =>
    counting.set(name, [...counting.get(name) ?? [], ...rules]);
  const regular: Record<string, string[]> = {
    services: [],
    service_endpoints_check: [],
    nodeport_endpoints_check: [],
    firewall_check: [],
    cluster_ips_check: [],
    // TCP gets a reset (an ICMP error for a forwarded SYN was not reliably turned into ECONNREFUSED).
    reject_chain: ["meta l4proto tcp reject with tcp reset", "reject"],
    mark_for_masquerade: [`meta mark set meta mark | ${hex(MASQUERADE_MARK)}`],
    masquerading: [],
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
    tx.add({ set: { name: `hairpin_v${f}`, type: `${addr} . ${addr}` } });
    for (const proto of PROTOCOLS) {
      for (const np of [false, true]) {
        const key = `${np ? "" : `${ip} daddr . `}th dport . numgen random mod 65536`;
        for (const local of [false, true]) {
          tx.add({
            map: {
              name: endpointMap(f, proto, { np, local }),
              type: `typeof ${key}`,
              map: `${ip} daddr . ${proto} dport`,
            },
          });
        }
      }
    }
    // Counted sets: declared whether or not counters are on (a set declared again with other flags is
    // refused), filled by the Services only when they are.
    for (const kind of ["in", "out", "conns"] as const) {
      tx.add({
        set: { name: counterSet(kind, f), type: `${addr} . inet_proto . inet_service`, counter: true },
      });
    }
    if (ctx.serviceCounters) {
      // Before DNAT, where the packet still carries the VIP and port; filter chains see every packet of a
      // flow (nat chains only the first). A lookup in a set with `counter` counts the element it finds.
      const toVip = `${ip} daddr . meta l4proto . th dport`;
      for (const c of ["filter_prerouting", "filter_output"]) {
        count(c, `${toVip} @${counterSet("in", f)}`, `ct state new ${toVip} @${counterSet("conns", f)}`);
      }
      for (const c of ["stats_postrouting", "stats_input"]) {
        count(c, `${ip} saddr . meta l4proto . th sport @${counterSet("out", f)}`);
      }
    }
    for (const s of [`nodeport_ips_v${f}`, `pod_cidrs_v${f}`]) tx.flush({ set: { name: s, type: addr } });
    for (const c of mergeCidrs(ctx.podCidrs, f)) tx.add({ element: { set: `pod_cidrs_v${f}`, key: [c] } });
    for (const n of familyIps(ctx.nodeIps, f)) tx.add({ element: { set: `nodeport_ips_v${f}`, key: [n] } });

    const dispatch = `${ip} daddr . meta l4proto . th dport`;
    // Sources outside the pod CIDRs (every source with --masquerade-all) reaching a cluster IP: the reply
    // must come back through this node. (A port the Service does not expose is rejected before NAT.)
    regular.services!.push(
      ctx.masqueradeAll
        ? `${ip} daddr @cluster_ips_v${f} jump mark_for_masquerade`
        : `${ip} daddr @cluster_ips_v${f} ${ip} saddr != @pod_cidrs_v${f} jump mark_for_masquerade`,
    );
    regular.services!.push(`${dispatch} vmap @service_ips_v${f}`);
    // Hairpin: a pod that reached itself through a Service must be masqueraded, or its reply would go
    // straight back to itself from the wrong address. Always on, as in kube-proxy (kube-router's
    // --hairpin-mode and service.hairpin annotations ask for what is therefore already done).
    regular.masquerading!.push(
      `ct status dnat ${ip} saddr . ${ip} daddr @hairpin_v${f} jump mark_for_masquerade`,
    );
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
  regular.masquerading!.push(
    `meta mark & ${hex(MASQUERADE_MARK)} == ${hex(0)} return`,
    `meta mark set meta mark ^ ${hex(MASQUERADE_MARK)}`,
    "masquerade fully-random",
  );
  // Regular chains first: base chains jump to them.
  for (const name of Object.keys(regular)) tx.add({ chain: { name } });
  for (const [name, rules] of Object.entries(regular)) {
    tx.flush({ chain: { name } });
    for (const rule of rules) tx.add({ rule: { chain: name, rule } });
  }
  for (const { rules, ...chain } of base) {
    tx.add({ chain: { ...chain, policy: "accept" } });
    tx.flush({ chain: { name: chain.name } });
    for (const rule of [...counting.get(chain.name) ?? [], ...rules]) {
      tx.add({ rule: { chain: chain.name, rule } });
    }
  }
}

/** The canonical addresses of one family among `ips`, without duplicates. */
function familyIps(ips: readonly string[], f: Family): string[] {
  return [...new Set(ips.map(canonicalIp).filter((p) => p?.family === f).map((p) => p!.ip))];
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

/** The generated slot number of a pick: random (rr) or a hash of the source (sh, sticky per client). */
function slotExpr(kind: "rr" | "sh", ipx: "ip" | "ip6", n: number): string {
  return kind === "sh" ? `jhash ${ipx} saddr mod ${n} seed 0x0` : `numgen random mod ${n}`;
}

/** Adds a shared pick chain to `out` and returns its name. */
function pickChain(
  out: RenderedService,
  f: Family,
  proto: Proto,
  kind: "rr" | "sh",
  n: number,
  o: { np: boolean; local: boolean },
): string {
  const ipx = IP[f];
  const name = `pick${o.np ? "_np" : ""}${o.local ? "_local" : ""}_v${f}_${proto}_${kind}_${n}`;
  out.shared.set(
    name,
    sharedRules(name, () => {
      const key = `${o.np ? "" : `${ipx} daddr . `}${proto} dport . ${slotExpr(kind, ipx, n)}`;
      return [`dnat ${ipx} to ${key} map @${endpointMap(f, proto, o)}`];
    }),
  );
  return name;
}

/**
 * The rules of shared chain `name`, made once: a shared chain's rules follow from its name, and thousands
 * of Services hold the same array instead of a copy each. Never mutated.
 */
const rulesOfShared = new Map<string, readonly string[]>();
function sharedRules(name: string, make: () => string[]): string[] {
  let rules = rulesOfShared.get(name);
  if (!rules) rulesOfShared.set(name, rules = Object.freeze(make()));
  return rules as string[];
}

/**
 * Adds the shared chain external traffic (NodePort, external and LoadBalancer IPs) goes to and returns its
 * name: Cluster policy masquerades (the endpoint may be on another node, the reply must come back through
 * this one) then picks among the cluster endpoints; Local policy keeps the client's address and picks
 * among the `local` local endpoints (none: the packet goes on unchanged and the no-endpoint check drops
 * it), but pods and the node itself behave as if they went out to a load balancer and came back: the
 * cluster endpoints, the node masqueraded (its source is the VIP's node).
 */
function extChain(
  out: RenderedService,
  f: Family,
  proto: Proto,
  kind: "rr" | "sh",
  np: boolean,
  cluster: number,
  local: number | undefined,
): string {
  const ipx = IP[f];
  const pick = pickChain(out, f, proto, kind, cluster, { np, local: false });
  if (local === undefined) {
    const name = `ext${np ? "_np" : ""}_v${f}_${proto}_${kind}_${cluster}`;
    out.shared.set(name, sharedRules(name, () => ["jump mark_for_masquerade", `goto ${pick}`]));
    return name;
  }
  const name = `ext${np ? "_np" : ""}_local_v${f}_${proto}_${kind}_${cluster}_${local}`;
  const localPick = local > 0 ? pickChain(out, f, proto, kind, local, { np, local: true }) : undefined;
  out.shared.set(
    name,
    sharedRules(name, () => [
      `${ipx} saddr @pod_cidrs_v${f} goto ${pick}`,
      "fib saddr type local jump mark_for_masquerade",
      `fib saddr type local goto ${pick}`,
      ...(localPick ? [`goto ${localPick}`] : []),
    ]),
  );
  return name;
}

/**
 * Endpoints without duplicates, in the order of their canonical address text and port (slots stay put
 * when a slice is reordered). `canon` holds each endpoint's canonical address.
 */
function distinct(
  eps: readonly ServiceEndpoint[],
  canon: ReadonlyMap<ServiceEndpoint, string>,
): ServiceEndpoint[] {
  // Usually already so (the Service model sorts endpoints by address and port, one each): kept as given.
  let sorted = true;
  for (let i = 1; i < eps.length && sorted; i++) {
    const x = canon.get(eps[i - 1]!)!, y = canon.get(eps[i]!)!;
    sorted = x < y || (x === y && eps[i - 1]!.port < eps[i]!.port);
  }
  if (sorted) return eps as ServiceEndpoint[];
  const seen = new Map<string, ServiceEndpoint>();
  for (const e of eps) {
    const k = `${canon.get(e)!}|${e.port}`;
    if (!seen.has(k)) seen.set(k, e);
  }
  return [...seen.values()].sort((a, b) => {
    const x = canon.get(a)!, y = canon.get(b)!;
    return x < y ? -1 : x > y ? 1 : a.port - b.port;
  });
}

/** Renders one Service into its elements, the shared chains and elements it uses, and its own chains. */
export function renderService(svc: ServiceInfo, ctx: ProxyNodeContext): RenderedService {
  const out: RenderedService = {
    key: svc.key,
    chains: new Map(),
    elements: new Map(),
    claims: new Map(),
    shared: new Map(),
    sharedElements: new Set(),
    sets: new Map(),
    endpoints: 0,
    counters: [],
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
  /** Sets an element the Service owns, filed under its claim (what claimOf(id) says). */
  const own = (claim: string, id: string, value: string) => {
    out.elements.set(id, value);
    const ids = out.claims.get(claim);
    if (ids) ids.push(id);
    else out.claims.set(claim, [id]);
  };

  for (const f of ctx.families) {
    const ipx = IP[f];
    const clusterIp = svc.clusterIPs.map(canonicalIp).find((c) => c?.family === f)?.ip;
    const externalIps = ext.externalIPs.filter((ip) => canonicalIp(ip)!.family === f);
    const lbIps = ext.loadBalancerIPs.filter((ip) => canonicalIp(ip)!.family === f);
    const sourceRanges = svc.loadBalancerSourceRanges.filter((r) => parseCidr(r.trim())?.family === f);
    // A family the Service has no cluster IP in is not served in that family at all (single-stack).
    if (!clusterIp) continue;
    const clusterIpId = `cluster_ips_v${f}|${clusterIp}`;
    own(clusterIpId, clusterIpId, "");

    for (const p of svc.ports) {
      const proto = p.protocol.toLowerCase() as Proto;
      // Each endpoint's address made canonical once (what nft prints back, and the slots' order).
      const canon = new Map<ServiceEndpoint, string>();
      const all: ServiceEndpoint[] = [];
      for (const e of p.endpoints) {
        if (e.family !== f) continue;
        // A dotted quad parseIPv4Fast accepts is canonical as it is: no object per endpoint.
        const c = f === 4 && parseIPv4Fast(e.ip) >= 0 ? e.ip : canonicalIp(e.ip);
        if (c === undefined || (typeof c !== "string" && c.family !== f)) continue;
        canon.set(e, typeof c === "string" ? c : c.ip);
        all.push(e);
      }
      // Topology applies whenever every endpoint carries hints (the controller sets them for PreferClose).
      const opts = { nodeName: ctx.nodeName, topologyAware: true, ...(ctx.zone ? { zone: ctx.zone } : {}) };
      const clusterEps = distinct(usableEndpoints(all, opts), canon);
      const localEps = distinct(
        usableEndpoints(all, { ...opts, localOnly: true, topologyAware: false }),
        canon,
      );
      const hasAny = clusterEps.length > 0;
      const externallyAccessible = externalIps.length > 0 || lbIps.length > 0 || p.nodePort !== undefined;
      const usesCluster = hasAny && (!internalLocal || externallyAccessible);
      const usesLocal = localEps.length > 0 && (internalLocal || (externalLocal && externallyAccessible));
      const hasInternal = internalLocal ? localEps.length > 0 : hasAny;
      const hasExternal = externalLocal ? localEps.length > 0 : hasAny;
      const missVerdict = hasAny ? "drop" : "goto reject_chain";
      const key = (ip: string, port: number) => [ip, proto, String(port)];
      const vips = [...externalIps, ...lbIps];
      /** The claim of a VIP and this port, and of this port's NodePort (claimOf's spelling). */
      const vipClaim = (ip: string) => `v${f} ${ip} . ${proto} . ${p.port}`;
      const npClaim = `v${f} nodePort ${proto} . ${p.nodePort}`;

      // Where each kind of traffic goes (a verdict), set below by one of the two layouts.
      let internalTarget: string | undefined;
      let externalTarget: string | undefined;
      let nodePortTarget: string | undefined;
      if (affinity === undefined) {
        // Element ids written out (elementId's spelling): this runs for every endpoint of every Service.
        const slots = (claim: string, prefix: string, eps: readonly ServiceEndpoint[]) => {
          for (let i = 0; i < eps.length; i++) {
            const e = eps[i]!;
            own(claim, prefix + i, `${canon.get(e)!} . ${e.port}`);
          }
        };
        const ipSlots = (vip: string, local: boolean) =>
          slots(
            vipClaim(vip),
            `${endpointMap(f, proto, { np: false, local })}|${vip} . ${p.port} . `,
            local ? localEps : clusterEps,
          );
        const npSlots = (local: boolean) =>
          slots(
            npClaim,
            `${endpointMap(f, proto, { np: true, local })}|${p.nodePort} . `,
            local ? localEps : clusterEps,
          );
        if (hasInternal) {
          internalTarget = pickChain(
            out,
            f,
            proto,
            sched.kind,
            internalLocal ? localEps.length : clusterEps.length,
            {
              np: false,
              local: internalLocal,
            },
          );
          ipSlots(clusterIp, internalLocal);
        }
        if (hasAny && externallyAccessible) {
          const local = externalLocal ? localEps.length : undefined;
          if (vips.length) {
            externalTarget = extChain(out, f, proto, sched.kind, false, clusterEps.length, local);
            for (const vip of vips) {
              ipSlots(vip, false);
              if (local) ipSlots(vip, true);
            }
          }
          if (p.nodePort !== undefined) {
            nodePortTarget = extChain(out, f, proto, sched.kind, true, clusterEps.length, local);
            npSlots(false);
            if (local) npSlots(true);
          }
        }
      } else {
        const t = affinityChains(out, svc, p, f, clusterIp, {
          clusterEps,
          localEps,
          usesCluster,
          usesLocal,
          internalLocal,
          externalLocal,
          kind: sched.kind,
          affinity,
          externallyAccessible,
          hasExternal,
        });
        if (hasInternal) internalTarget = t.internal;
        if (hasAny && externallyAccessible) externalTarget = nodePortTarget = t.external;
      }

      if (ctx.serviceCounters) {
        const counted = (vip: string, port: number) => {
          if (out.elements.has(elementId(counterSet("in", f), key(vip, port)))) return;
          // claimOf's claim of a counter element: the VIP (or node address) and port it counts.
          const claim = `v${f} ${vip} . ${proto} . ${port}`;
          for (const kind of ["in", "out", "conns"] as const) {
            own(claim, elementId(counterSet(kind, f), key(vip, port)), "");
          }
          out.counters.push({ family: f, vip, protocol: proto, port });
        };
        counted(clusterIp, p.port);
        for (const ip of vips) counted(ip, p.port);
        // A NodePort per node address, as IPVS has one virtual service per node IP and NodePort.
        if (p.nodePort !== undefined) { for (const n of familyIps(ctx.nodeIps, f)) counted(n, p.nodePort); }
      }
      // Cluster IP.
      if (internalTarget) {
        own(
          vipClaim(clusterIp),
          elementId(`service_ips_v${f}`, key(clusterIp, p.port)),
          `goto ${internalTarget}`,
        );
      } else {
        own(
          vipClaim(clusterIp),
          elementId(`no_endpoint_services_v${f}`, key(clusterIp, p.port)),
          missVerdict,
        );
      }
      // External and LoadBalancer IPs.
      for (const ip of vips) {
        if (externalTarget) {
          own(vipClaim(ip), elementId(`service_ips_v${f}`, key(ip, p.port)), `goto ${externalTarget}`);
        }
        if (!hasExternal) {
          own(vipClaim(ip), elementId(`no_endpoint_services_v${f}`, key(ip, p.port)), missVerdict);
        }
      }
      // Source ranges (LoadBalancer IPs only, as kube-proxy: NodePorts are not subject to them).
      if (lbIps.length && sourceRanges.length) {
        const fwChain = `fw${f}-${portBase(svc, p)}`;
        const allowed = mergeCidrs(sourceRanges, f);
        if (ctx.nodeIps.some((n) => inRanges(n, allowed))) allowed.push(...lbIps);
        out.chains.set(fwChain, [`${ipx} saddr != ${setLiteral(allowed)} drop`]);
        for (const ip of lbIps) {
          own(vipClaim(ip), elementId(`firewall_ips_v${f}`, key(ip, p.port)), `goto ${fwChain}`);
        }
      }
      // NodePort.
      if (p.nodePort !== undefined) {
        const npKey = [proto, String(p.nodePort)];
        if (nodePortTarget) {
          own(npClaim, elementId(`service_nodeports_v${f}`, npKey), `goto ${nodePortTarget}`);
        }
        if (!hasExternal) own(npClaim, elementId(`no_endpoint_nodeports_v${f}`, npKey), missVerdict);
      }

      // Every endpoint this node may send to: hairpin pairs, metrics, UDP conntrack clean-up.
      // (Each list is one per address and port already; only both together need the union.)
      let reachable: readonly ServiceEndpoint[] = usesCluster ? clusterEps : usesLocal ? localEps : [];
      if (usesCluster && usesLocal) {
        const union = new Map<string, ServiceEndpoint>();
        for (const e of [...clusterEps, ...localEps]) union.set(hostPort(canon.get(e)!, f, e.port), e);
        reachable = [...union.values()];
      }
      // Hairpin pairs for this node's endpoints only: a pod is DNATed on its own node, so only a local pod
      // can reach itself through this node's rules.
      for (const e of reachable) {
        if (!e.local) continue;
        const ip = canon.get(e)!;
        out.sharedElements.add(`hairpin_v${f}|${ip} . ${ip}`);
      }
      out.endpoints += reachable.length;
      if (p.protocol === "UDP") {
        out.udpPorts.push({
          family: f,
          vips: [clusterIp, ...vips],
          port: p.port,
          ...(p.nodePort !== undefined ? { nodePort: p.nodePort } : {}),
          endpoints: reachable.map((e) => hostPort(canon.get(e)!, f, e.port)).sort(),
        });
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
 * ClientIP affinity needs to remember, per endpoint, which clients it served (a dynamic timeout set updated
 * by a rule on the way to that endpoint), so these rare Services keep chains of their own: a policy chain
 * that sends a remembered client back to its endpoint and otherwise picks one (pickRules), and per endpoint
 * a chain that records the client and DNATs. Returns the chains the cluster IP and external traffic go to.
 */
function affinityChains(
  out: RenderedService,
  svc: ServiceInfo,
  p: ServicePortInfo,
  f: Family,
  clusterIp: string,
  o: {
    clusterEps: ServiceEndpoint[];
    localEps: ServiceEndpoint[];
    usesCluster: boolean;
    usesLocal: boolean;
    internalLocal: boolean;
    externalLocal: boolean;
    kind: "rr" | "sh";
    affinity: number;
    externallyAccessible: boolean;
    hasExternal: boolean;
  },
): { internal: string; external: string } {
  void clusterIp;
  const ipx = IP[f];
  const proto = p.protocol.toLowerCase();
  const base = portBase(svc, p);
  const svcChain = `svc${f}-${base}`;
  const localChain = `local${f}-${base}`;
  const extChainName = `ext${f}-${base}`;
  const epChain = (e: ServiceEndpoint) => {
    const epBase = endpointBase(base, e);
    const name = `ep-${epBase}`;
    if (!out.chains.has(name)) {
      const ip = canonicalIp(e.ip)!.ip;
      const set = `aff-${epBase}`;
      out.sets.set(set, {
        name: set,
        type: ADDR[f],
        flags: ["dynamic", "timeout"],
        timeout: `${Math.max(1, Math.floor(o.affinity))}s`,
      });
      out.chains.set(name, [
        `update @${set} { ${ipx} saddr }`,
        `meta l4proto ${proto} dnat ${ipx} to ${hostPort(ip, f, e.port)}`,
      ]);
    }
    return name;
  };
  const policyChain = (eps: ServiceEndpoint[]): string[] => {
    const chains = eps.map(epChain);
    return [
      ...eps.map((e, i) => `${ipx} saddr @aff-${endpointBase(base, e)} goto ${chains[i]}`),
      ...pickRules(chains, o.kind, ipx),
    ];
  };
  if (o.usesCluster) out.chains.set(svcChain, policyChain(o.clusterEps));
  if (o.usesLocal) out.chains.set(localChain, policyChain(o.localEps));
  if (o.usesCluster && o.externallyAccessible) {
    const rules: string[] = [];
    if (!o.externalLocal) rules.push("jump mark_for_masquerade", `goto ${svcChain}`);
    else {
      rules.push(`${ipx} saddr @pod_cidrs_v${f} goto ${svcChain}`);
      rules.push("fib saddr type local jump mark_for_masquerade");
      rules.push(`fib saddr type local goto ${svcChain}`);
      if (o.hasExternal) rules.push(`goto ${localChain}`);
    }
    out.chains.set(extChainName, rules);
  }
  return { internal: o.internalLocal ? localChain : svcChain, external: extChainName };
}

/**
 * The endpoint pick of an affinity Service's own chain, as a cascade (nft builds a kernel set for every
 * anonymous `vmap { … }`, which made loading thousands of such rules five times slower, nft 1.0.6). rr:
 * rule i fires with probability 1/(endpoints left) (`numgen random mod k 0`, nft's spelling of `== 0`),
 * which is uniform over the endpoints, as the shared pick chains are. sh: the source hash modulo N picks
 * the rule (one client sticks to one endpoint while the endpoints do not change).
 */
export function pickRules(chains: readonly string[], kind: "rr" | "sh", ipx: "ip" | "ip6"): string[] {
  const n = chains.length;
  if (n === 1) return [`goto ${chains[0]}`];
  if (kind === "sh") {
    return chains.map((c, i) =>
      i === n - 1 ? `goto ${c}` : `jhash ${ipx} saddr mod ${n} seed 0x0 ${i} goto ${c}`
    );
  }
  return chains.map((c, i) => (i === n - 1 ? `goto ${c}` : `numgen random mod ${n - i} 0 goto ${c}`));
}

/** Adds element `id` (`map|key`, see elementId) with its value ("" for a set element) to `tx`. */
function addElement(tx: NftTransaction, id: string, value: string): void {
  const bar = id.indexOf("|");
  tx.addElement(id.slice(0, bar), id.slice(bar + 1), value === "" ? undefined : value);
}

/**
 * Adds deferred element additions (DiffOptions.deferAdds: flat pairs of element id and value) to `tx`,
 * grouped by map, a Service's order within a map kept; returns, per pair, its operation's index in `tx`.
 */
export function addDeferred(tx: NftTransaction, adds: readonly string[]): number[] {
  const byMap = new Map<string, number[]>();
  for (let i = 0; i < adds.length / 2; i++) {
    const id = adds[2 * i]!;
    const set = id.slice(0, id.indexOf("|"));
    const g = byMap.get(set);
    if (g) g.push(i);
    else byMap.set(set, [i]);
  }
  const opOfAdd = new Array<number>(adds.length / 2);
  for (const g of byMap.values()) {
    for (const i of g) {
      opOfAdd[i] = tx.size;
      addElement(tx, adds[2 * i]!, adds[2 * i + 1]!);
    }
  }
  return opOfAdd;
}

/** Deletes element `id` in `tx`. */
function deleteElement(tx: NftTransaction, id: string): void {
  const bar = id.indexOf("|");
  tx.deleteElement(id.slice(0, bar), id.slice(bar + 1));
}

/**
 * The shared chains and elements, counted by the Services using them as the kernel holds them (updated
 * by `commit` once a transaction is applied). A shared chain is written when its first user comes and
 * deleted (by the caller, a little later) when its last goes; a shared element is added with its first
 * user and deleted with its last. Within one transaction, what earlier Services of it did is counted too.
 */
export class SharedObjects {
  readonly #chains = new Map<string, number>();
  readonly #elements = new Map<string, number>();
  readonly #pending = new WeakMap<
    NftTransaction,
    { chains: Map<string, number>; elements: Map<string, number> }
  >();

  /** Shared chains at least one Service uses now. */
  get chains(): ReadonlySet<string> {
    return new Set(this.#chains.keys());
  }
  /** Shared elements at least one Service uses now. */
  get elements(): ReadonlySet<string> {
    return new Set(this.#elements.keys());
  }
  hasChain(name: string): boolean {
    return this.#chains.has(name);
  }
  hasElement(id: string): boolean {
    return this.#elements.has(id);
  }
  /** The shared elements' ids, without a copy (not to be held across a commit). */
  elementIds(): IterableIterator<string> {
    return this.#elements.keys();
  }

  #txState(tx: NftTransaction) {
    let s = this.#pending.get(tx);
    if (!s) this.#pending.set(tx, s = { chains: new Map(), elements: new Map() });
    return s;
  }

  /** Records a change of users of a shared object within `tx`. */
  #bump(tx: NftTransaction, kind: "chains" | "elements", name: string, delta: number): void {
    const s = this.#txState(tx)[kind];
    s.set(name, (s.get(name) ?? 0) + delta);
  }

  /** Chains to create (0 -> 1 users) for prev -> next, in dependency order (pick chains first). */
  creations(
    tx: NftTransaction,
    prev: RenderedService | undefined,
    next: RenderedService | undefined,
  ): string[] {
    const out: string[] = [];
    for (const name of next?.shared.keys() ?? []) {
      if (prev?.shared.has(name)) continue;
      const before = (this.#chains.get(name) ?? 0) + (this.#txState(tx).chains.get(name) ?? 0);
      this.#bump(tx, "chains", name, 1);
      if (before === 0) out.push(name);
    }
    for (const name of prev?.shared.keys() ?? []) {
      if (!next?.shared.has(name)) this.#bump(tx, "chains", name, -1);
    }
    return out.sort((a, b) => sharedOrder(a) - sharedOrder(b));
  }

  /** Shared elements to add (0 -> 1 users) and to delete (1 -> 0) for prev -> next. */
  elementChanges(
    tx: NftTransaction,
    prev: RenderedService | undefined,
    next: RenderedService | undefined,
  ): { add: string[]; remove: string[] } {
    const add: string[] = [], remove: string[] = [];
    const count = (id: string) => (this.#elements.get(id) ?? 0) + (this.#txState(tx).elements.get(id) ?? 0);
    for (const id of prev?.sharedElements ?? []) {
      if (next?.sharedElements.has(id)) continue;
      this.#bump(tx, "elements", id, -1);
      if (count(id) === 0) remove.push(id);
    }
    for (const id of next?.sharedElements ?? []) {
      if (prev?.sharedElements.has(id)) continue;
      if (count(id) === 0) add.push(id);
      this.#bump(tx, "elements", id, 1);
    }
    return { add, remove };
  }

  /** Records prev -> next as applied; returns the shared chains no Service uses any more. */
  commit(prev: RenderedService | undefined, next: RenderedService | undefined): string[] {
    const unused: string[] = [];
    const step = (m: Map<string, number>, name: string, d: number) => {
      const n = (m.get(name) ?? 0) + d;
      if (n <= 0) m.delete(name);
      else m.set(name, n);
      return n;
    };
    for (const name of next?.shared.keys() ?? []) if (!prev?.shared.has(name)) step(this.#chains, name, 1);
    for (const name of prev?.shared.keys() ?? []) {
      if (!next?.shared.has(name) && step(this.#chains, name, -1) <= 0) unused.push(name);
    }
    for (const id of next?.sharedElements ?? []) {
      if (!prev?.sharedElements.has(id)) step(this.#elements, id, 1);
    }
    for (const id of prev?.sharedElements ?? []) {
      if (!next?.sharedElements.has(id)) step(this.#elements, id, -1);
    }
    return unused;
  }
}

function sharedOrder(name: string): number {
  return name.startsWith("pick_") ? 0 : 1;
}

/** Element id -> value lookups (a ReadonlyMap is one): what a full resync knows the kernel holds. */
export interface ElementLookup {
  get(id: string): string | undefined;
  has(id: string): boolean;
}

/** How diffService treats what is already there. */
export interface DiffOptions {
  /** Rewrite every chain of `next` even if unchanged: the periodic repair of hand edits. */
  rewrite?: boolean;
  /**
   * The elements the kernel really holds (a full resync lists them). When given, element decisions are
   * made against it instead of `prev`, shared chains are all written and shared elements added when the
   * kernel lacks them, and removing elements nobody wants is left to the caller.
   */
  kernelElements?: ElementLookup;
  /**
   * The shared objects' users across every Service (the proxy's). Without it, `prev` is taken to be the
   * only Service: its shared objects exist, and go with it.
   */
  shared?: SharedObjects;
  /**
   * Where element additions go instead of `tx`, as flat pairs (element id, value; see
   * RenderedService.elements), for the caller to add after everything else of the transaction, grouped by
   * map (they come last in a Service's operations anyway, and nft applies one long `add element` command
   * per map faster than one per Service and map).
   */
  deferAdds?: string[];
  /**
   * With `kernelElements`: the shared chains a full sync has already written in earlier transactions, so
   * each is written once per sync rather than once per chunk (the chunks are applied in order, each
   * chunk's chains before its elements). A transaction that fails must be taken back out with
   * `forgetWritten`. Shared elements (a few hairpin pairs) are still added by every chunk that needs them:
   * the next chunk is built before the previous one is known to have taken effect.
   */
  writtenInSync?: Set<string> | undefined;
}

/** Shared chains and elements already written to a transaction by a full resync. */
const writtenInTx = new WeakMap<NftTransaction, Set<string>>();

/**
 * Takes the shared chains `tx` wrote (DiffOptions.writtenInSync) out of `inSync`: `tx` did not take
 * effect, so the transactions that follow must write them again. True if there were any.
 */
export function forgetWritten(tx: NftTransaction, inSync: Set<string>): boolean {
  let any = false;
  for (const name of writtenInTx.get(tx) ?? []) any = inSync.delete(name) || any;
  return any;
}

/**
 * Adds to `tx` what turns `prev` (what the kernel holds for this Service, as far as we know) into `next`,
 * and returns the chains of its own that are now unused: they are flushed here and must be deleted by a
 * later transaction (kube-proxy's lesson: before Linux 6.2 a chain a just-deleted map element pointed to
 * stays busy for a moment). Shared chains that lose their last user are reported by SharedObjects.commit
 * instead. An element whose value changes is deleted and added again: nft refuses to `add` an existing
 * key with another value.
 */
export function diffService(
  tx: NftTransaction,
  prev: RenderedService | undefined,
  next: RenderedService | undefined,
  opts: DiffOptions = {},
): string[] {
  const rewrite = opts.rewrite ?? false;
  const full = opts.kernelElements !== undefined;
  let shared = opts.shared;
  if (!shared) {
    shared = new SharedObjects();
    shared.commit(undefined, prev);
  }
  const prevElements = prev?.elements ?? new Map<string, string>();
  const have: ElementLookup = opts.kernelElements ?? prevElements;
  const deferred = opts.deferAdds;
  const add = deferred
    ? (id: string, v: string) => void deferred.push(id, v)
    : (id: string, v: string) => addElement(tx, id, v);
  const want = next?.elements ?? new Map<string, string>();
  // 1. elements that go away or change value (before the chains they point to change)
  if (!full) {
    prevElements.forEach((v, id) => {
      if (want.get(id) !== v) deleteElement(tx, id);
    });
  } else {
    want.forEach((v, id) => {
      const k = have.get(id);
      if (k !== undefined && k !== v) deleteElement(tx, id);
    });
  }
  const sharedElements = shared.elementChanges(tx, prev, next);
  if (!full) { for (const id of sharedElements.remove) deleteElement(tx, id); }
  // 2. shared chains (new ones; every one on a full resync), affinity sets (endpoint chains use them),
  //    then the Service's own chains: endpoint chains, then the chains that go to them
  const created = shared.creations(tx, prev, next);
  let written = writtenInTx.get(tx);
  if (!written) writtenInTx.set(tx, written = new Set());
  const sharedToWrite = full
    ? [...(next?.shared.keys() ?? [])].sort((a, b) => sharedOrder(a) - sharedOrder(b))
    : created;
  const inSync = opts.writtenInSync;
  for (const name of sharedToWrite) {
    if (written.has(name) || inSync?.has(name)) continue;
    written.add(name);
    inSync?.add(name);
    // It may still exist from before (its deletion pending, or a previous run): written whole.
    tx.add({ chain: { name } });
    tx.flush({ chain: { name } });
    for (const rule of next!.shared.get(name)!) tx.add({ rule: { chain: name, rule } });
  }
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
  // forEach, not for-of: no [id, value] array per element of every Service.
  want.forEach((v, id) => {
    if (have.get(id) !== v) add(id, v);
  });
  if (!full) { for (const id of sharedElements.add) add(id, ""); }
  else {
    for (const id of next?.sharedElements ?? []) {
      if (opts.kernelElements!.has(id) || written.has(`element ${id}`)) continue;
      written.add(`element ${id}`);
      add(id, "");
    }
  }
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
