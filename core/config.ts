/**
 * The command line: kube-router's flag names and defaults (pflag syntax: `--flag=value`, `--flag value`,
 * `--bool`, `--bool=false`), environment variables, and validation. A bad value stops startup with exit
 * code 2 and a message naming the flag (see `ConfigError`). The table below is the single source of
 * truth: `Config`'s type, the defaults and `--help` are all derived from it.
 */
import { type Cidr, parseCidr, parseIP, parseIPv4 } from "../ffi/mod.ts";

export const VERSION = "0.1.0";

type Kind = "bool" | "string" | "int" | "duration" | "strings" | "ints" | "cidrs" | "ips" | "portrange";
interface KindTypes {
  bool: boolean;
  string: string;
  int: number;
  /** milliseconds */
  duration: number;
  strings: string[];
  ints: number[];
  cidrs: string[];
  ips: string[];
  portrange: [number, number];
}
interface FlagSpec<K extends Kind = Kind> {
  kind: K;
  def: KindTypes[K];
  help: string;
  group: "general" | "router" | "proxy" | "firewall" | "lballoc";
  short?: string;
  /** Allowed values for a string flag. */
  oneOf?: readonly string[];
  /** Inclusive bounds for int flags (and for each element of ints). */
  min?: number;
  max?: number;
}

const b = (def: boolean, group: FlagSpec["group"], help: string): FlagSpec<"bool"> => ({
  kind: "bool",
  def,
  group,
  help,
});
const s = (
  def: string,
  group: FlagSpec["group"],
  help: string,
  oneOf?: readonly string[],
): FlagSpec<"string"> =>
  oneOf ? { kind: "string", def, group, help, oneOf } : { kind: "string", def, group, help };
const i = (
  def: number,
  group: FlagSpec["group"],
  help: string,
  min: number,
  max: number,
): FlagSpec<"int"> => ({
  kind: "int",
  def,
  group,
  help,
  min,
  max,
});
const d = (def: string, group: FlagSpec["group"], help: string): FlagSpec<"duration"> => ({
  kind: "duration",
  def: mustDuration(def),
  group,
  help,
});
const list = <K extends "strings" | "cidrs" | "ips">(
  kind: K,
  group: FlagSpec["group"],
  help: string,
  def: string[] = [],
) => ({ kind, def, group, help }) as FlagSpec<K>;

const MAX_U32 = 4294967295;

/** Every flag the agent accepts. Keys are the flag names without dashes. */
export const FLAGS = {
  // general
  "kubeconfig": s("", "general", "Path to a kubeconfig file with authorization and API server location."),
  "master": s("", "general", "The address of the Kubernetes API server (overrides any value in kubeconfig)."),
  "hostname-override": s("", "general", "Overrides the node name; else $NODE_NAME, else the hostname."),
  "cleanup-config": b(false, "general", "Remove every kernel object the agent made, then exit."),
  "cache-sync-timeout": d(
    "1m",
    "general",
    "Longest wait for the Kubernetes caches to sync before modules start anyway.",
  ),
  "enable-ipv4": b(true, "general", "Enables IPv4 support."),
  "enable-ipv6": b(false, "general", "Enables IPv6 support (dual-stack together with --enable-ipv4)."),
  "enable-pprof": b(false, "general", "Accepted for compatibility with kube-router; has no effect."),
  "health-addr": s("", "general", "Address for the health server (empty: all addresses)."),
  "health-port": i(20244, "general", "Port for /healthz (0 disables).", 0, 65535),
  "metrics-addr": s("", "general", "Address for the metrics server (empty: all addresses)."),
  "metrics-port": i(0, "general", "Prometheus metrics port (0 disables).", 0, 65535),
  "metrics-path": s("/metrics", "general", "Prometheus metrics path."),
  "log-format": s("text", "general", "Log line format.", ["text", "json"]),
  "v": { ...i(0, "general", "Log level for V logs (0: info, 1 and above: debug).", 0, 10), short: "v" },
  "version": { ...b(false, "general", "Print version information."), short: "V" },
  "help": { ...b(false, "general", "Print usage information."), short: "h" },

  // router
  "run-router": b(true, "router", "Enables pod networking: BGP route exchange and routes between nodes."),
  "advertise-cluster-ip": b(
    false,
    "router",
    "Add the service's cluster IP to the RIB so it is advertised to BGP peers.",
  ),
  "advertise-external-ip": b(
    false,
    "router",
    "Add the service's external IPs to the RIB so they are advertised to BGP peers.",
  ),
  "advertise-loadbalancer-ip": b(
    false,
    "router",
    "Add the service's load balancer IPs to the RIB so they are advertised to BGP peers.",
  ),
  "advertise-pod-cidr": b(
    true,
    "router",
    "Add the node's pod CIDR to the RIB so it is advertised to BGP peers.",
  ),
  "auto-mtu": b(true, "router", "Auto-detect and set the largest possible MTU for pod interfaces."),
  "bgp-graceful-restart": b(false, "router", "Enables BGP graceful restart capability."),
  "bgp-graceful-restart-deferral-time": d("6m", "router", "BGP graceful restart deferral time."),
  "bgp-graceful-restart-time": d(
    "90s",
    "router",
    "BGP graceful restart time according to RFC 4724 3, maximum 4095s.",
  ),
  "bgp-holdtime": d("90s", "router", "Hold time for BGP sessions (0, or between 3s and 18h12m15s)."),
  "bgp-port": i(
    179,
    "router",
    "The port to open for incoming BGP connections and to use for connecting with other peers.",
    1,
    65535,
  ),
  "bgp-admin-port": i(50051, "router", "Port of the BGP admin endpoint on localhost (0 disables).", 0, 65535),
  "cluster-asn": i(0, "router", "ASN number under which the cluster nodes run iBGP (0: 64512).", 0, MAX_U32),
  "enable-cni": b(
    true,
    "router",
    "Enable CNI plugin configuration. Disable if you want to use another CNI plugin.",
  ),
  "enable-ibgp": b(
    true,
    "router",
    "Enables peering with nodes with the same ASN; if disabled, only external peers.",
  ),
  "enable-overlay": b(true, "router", "Tunnel pod traffic to nodes in other subnets (see --overlay-type)."),
  "overlay-type": s(
    "subnet",
    "router",
    "Topology of overlay network: subnet (tunnel only across subnets) or full.",
    ["subnet", "full"],
  ),
  "overlay-encap": s("ipip", "router", "Overlay encapsulation: ipip, fou or vxlan.", [
    "ipip",
    "fou",
    "vxlan",
  ]),
  "overlay-encap-port": i(5555, "router", "UDP port for fou/vxlan encapsulation.", 1024, 65535),
  "enable-pod-egress": b(true, "router", "SNAT traffic from pods to destinations outside the cluster."),
  "injected-routes-sync-period": d("60s", "router", "The delay between route table synchronizations."),
  "nodes-full-mesh": b(
    true,
    "router",
    "Each node in the cluster will set up BGP peering with the rest of the nodes.",
  ),
  "override-nexthop": b(
    false,
    "router",
    "Override the next-hop in BGP routes sent to peers with the local IP.",
  ),
  "peer-router-ips": list(
    "ips",
    "router",
    "The IP addresses of the external routers to which all nodes will peer.",
  ),
  "peer-router-asns": list(
    "strings",
    "router",
    "ASNs of the BGP peers to which the cluster nodes will advertise (one per --peer-router-ips).",
  ),
  "peer-router-multihop-ttl": i(
    0,
    "router",
    "Enable eBGP multihop; set to TTL > 1 for peers more than one hop away.",
    0,
    255,
  ),
  "peer-router-passwords": list(
    "strings",
    "router",
    "Base64-encoded BGP MD5 passwords, one per --peer-router-ips.",
  ),
  "peer-router-passwords-file": s(
    "",
    "router",
    "Path to a file with base64-encoded BGP passwords, comma-separated, one per peer.",
  ),
  "peer-router-ports": list("strings", "router", "The remote ports of the external BGP peers (default 179)."),
  "router-id": s(
    "",
    "router",
    "BGP router-id: an IPv4 address, or 'generate' (derived from the node IP or a hash).",
  ),
  "routes-sync-period": d("5m", "router", "The delay between route updates and advertisements."),
  "disable-source-dest-check": b(
    true,
    "router",
    "Accepted for compatibility with kube-router (AWS only); has no effect.",
  ),

  // proxy
  "run-service-proxy": b(true, "proxy", "Enables the service proxy (load balancing for Services)."),
  "service-proxy-backend": s("nftables", "proxy", "Service proxy data plane.", ["nftables", "ipvs"]),
  "excluded-cidrs": list("cidrs", "proxy", "Excluded CIDRs are used to exclude IPVS rules from deletion."),
  "hairpin-mode": b(false, "proxy", "Add hairpin rules for every service endpoint."),
  "ipvs-graceful-termination": b(false, "proxy", "Enables graceful termination of endpoints."),
  "ipvs-graceful-period": d("30s", "proxy", "The graceful period before removing destinations."),
  "ipvs-permit-all": b(true, "proxy", "Permits all traffic to service VIPs (not only to service ports)."),
  "ipvs-sync-period": d("5m", "proxy", "The delay between full service proxy syncs (both backends)."),
  "masquerade-all": b(false, "proxy", "SNAT all traffic to cluster IP/node port."),
  "nodeport-bindon-all-ip": b(false, "proxy", "For service of NodePort type, serve on all node IPs."),
  "runtime-endpoint": s(
    "",
    "proxy",
    "Path to the CRI endpoint (kube-router needs it for DSR; accepted, not needed: pods are found by their veths).",
  ),
  "service-cluster-ip-range": list(
    "cidrs",
    "proxy",
    "CIDR values from which service cluster IPs are assigned (at most one per family).",
    ["10.96.0.0/12"],
  ),
  "service-external-ip-range": list("cidrs", "proxy", "Allowed ranges for external and load balancer IPs."),
  "service-node-port-range": {
    kind: "portrange",
    def: [30000, 32767],
    group: "proxy",
    help: "NodePort range (e.g. 30000-32767).",
  } as FlagSpec<"portrange">,
  "service-tcp-timeout": d("0s", "proxy", "TCP idle timeout for service connections (0: kernel default)."),
  "service-tcpfin-timeout": d("0s", "proxy", "TCP FIN timeout for service connections (0: kernel default)."),
  "service-udp-timeout": d("0s", "proxy", "UDP timeout for service connections (0: kernel default)."),
  "strict-external-ip-validation": b(
    true,
    "proxy",
    "Only serve external/LB IPs inside --service-external-ip-range or LB ranges.",
  ),

  // firewall
  "run-firewall": b(true, "firewall", "Enables the network policy firewall."),
  "iptables-sync-period": d("5m", "firewall", "The delay between full network policy syncs."),
  "netpol-default-deny": b(
    false,
    "firewall",
    "Deny traffic to and from this node's pod addresses the firewall has no rules for yet (a pod it has " +
      "not seen), instead of letting it through until the sync that knows the pod.",
  ),

  // load balancer allocator
  "run-loadbalancer": b(false, "lballoc", "Enable the load balancer address allocator."),
  "loadbalancer-ip-range": list(
    "cidrs",
    "lballoc",
    "CIDR values from which loadbalancer services addresses are assigned.",
  ),
  "loadbalancer-default-class": b(true, "lballoc", "Handle load balancer services without a class."),
  "loadbalancer-sync-period": d("1m", "lballoc", "The delay between checking for missed services."),
} as const satisfies Record<string, FlagSpec>;

type FlagName = keyof typeof FLAGS;
type Camel<S extends string> = S extends `${infer H}-${infer T}` ? `${H}${Capitalize<Camel<T>>}` : S;
type FlagValues = { -readonly [K in FlagName as Camel<K>]: KindTypes[(typeof FLAGS)[K]["kind"]] };

/** A BGP peer given on the command line (--peer-router-*). */
export interface ExternalPeer {
  ip: string;
  asn: number;
  port: number;
  /** Decoded MD5 password, if any. */
  password?: string;
}

/** The validated configuration every module receives. */
export interface Config extends FlagValues {
  /** The node this agent runs on: --hostname-override, else $NODE_NAME, else the hostname. */
  nodeName: string;
  /** --cluster-asn, or 64512 when unset (kube-router's effective default). */
  effectiveClusterAsn: number;
  /** --peer-router-* zipped together. */
  externalPeers: ExternalPeer[];
  serviceClusterIpCidrs: Cidr[];
  serviceExternalIpCidrs: Cidr[];
  /** $KUBE_ROUTER_CNI_CONF_FILE, default /etc/cni/net.d/10-kuberouter.conflist. */
  cniConfFile: string;
  /** Positional arguments (subcommands such as `bgp neighbors`). */
  args: string[];
}

/** A flag or environment value is invalid. `main.ts` prints the message and exits with code 2. */
export class ConfigError extends Error {
  constructor(readonly flag: string, message: string) {
    super(`invalid --${flag}: ${message}`);
    this.name = "ConfigError";
  }
}

/** Parses a Go-style duration ("90s", "1m30s", "300ms", "0") into milliseconds. */
export function parseDuration(text: string): number | undefined {
  if (text === "0") return 0;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/gy;
  const unit: Record<string, number> = {
    ns: 1e-6,
    us: 1e-3,
    "µs": 1e-3,
    ms: 1,
    s: 1000,
    m: 60_000,
    h: 3_600_000,
  };
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    total += Number(m[1]) * unit[m[2]!]!;
    pos = re.lastIndex;
  }
  if (pos !== text.length || text.length === 0) return undefined;
  return total;
}

function mustDuration(text: string): number {
  const v = parseDuration(text);
  if (v === undefined) throw new Error(`bad built-in duration ${text}`);
  return v;
}

/** Formats milliseconds as a Go-style duration for --help. */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0s";
  const h = Math.floor(ms / 3_600_000), m = Math.floor((ms % 3_600_000) / 60_000);
  const sec = (ms % 60_000) / 1000;
  return `${h ? h + "h" : ""}${m ? m + "m" : ""}${sec ? sec + "s" : ""}`;
}

function parseBool(flag: string, text: string): boolean {
  const t = text.toLowerCase();
  if (["1", "t", "true"].includes(t)) return true;
  if (["0", "f", "false"].includes(t)) return false;
  throw new ConfigError(flag, `"${text}" is not a boolean (use true or false)`);
}

function parseValue(name: string, spec: FlagSpec, text: string): unknown {
  switch (spec.kind) {
    case "bool":
      return parseBool(name, text);
    case "string":
      if (spec.oneOf && !spec.oneOf.includes(text)) {
        throw new ConfigError(name, `"${text}" is not one of ${spec.oneOf.join(", ")}`);
      }
      return text;
    case "int": {
      if (!/^\d+$/.test(text)) throw new ConfigError(name, `"${text}" is not a non-negative integer`);
      const n = Number(text);
      if (n < (spec.min ?? 0) || n > (spec.max ?? Number.MAX_SAFE_INTEGER)) {
        throw new ConfigError(name, `${n} is out of range ${spec.min}-${spec.max}`);
      }
      return n;
    }
    case "duration": {
      const ms = parseDuration(text);
      if (ms === undefined) throw new ConfigError(name, `"${text}" is not a duration (e.g. 90s, 5m, 1h30m)`);
      return ms;
    }
    case "strings":
    case "ints":
      // Positions matter (one entry per peer): "pw1,,pw3" leaves the second peer without a password.
      return text.trim() === "" ? [] : text.split(",").map((x) => x.trim());
    case "cidrs": {
      const items = splitList(text);
      for (const it of items) if (!parseCidr(it)) throw new ConfigError(name, `"${it}" is not a CIDR`);
      return items;
    }
    case "ips": {
      const items = splitList(text);
      for (const it of items) if (!parseIP(it)) throw new ConfigError(name, `"${it}" is not an IP address`);
      return items;
    }
    case "portrange": {
      const m = /^(\d{1,5})\s*[-:]\s*(\d{1,5})$/.exec(text.trim());
      if (!m) throw new ConfigError(name, `"${text}" is not a port range (e.g. 30000-32767)`);
      const lo = Number(m[1]), hi = Number(m[2]);
      if (lo < 1 || hi > 65535) throw new ConfigError(name, `ports must lie within 1-65535, got ${text}`);
      if (lo > hi) throw new ConfigError(name, `range ${text} is backwards (first port above last)`);
      return [lo, hi];
    }
  }
}

function splitList(text: string): string[] {
  return text.split(",").map((x) => x.trim()).filter((x) => x.length > 0);
}

function camel(name: string): string {
  return name.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

const shortToName = new Map<string, FlagName>(
  Object.entries(FLAGS).flatMap(([n, spec]) => ("short" in spec ? [[spec.short, n as FlagName]] : [])),
);

export interface Environment {
  get(name: string): string | undefined;
  hostname(): string;
  readTextFile(path: string): string;
}

export const processEnvironment: Environment = {
  get: (n) => Deno.env.get(n),
  hostname: () => Deno.hostname(),
  readTextFile: (p) => Deno.readTextFileSync(p),
};

/** Parses argv into flag values only (no cross-flag validation); throws ConfigError. */
export function parseFlags(
  argv: readonly string[],
): { values: FlagValues; args: string[]; given: Set<string> } {
  const values: Record<string, unknown> = {};
  for (const [n, spec] of Object.entries(FLAGS)) {
    values[camel(n)] = Array.isArray(spec.def) ? [...spec.def] : spec.def;
  }
  const given = new Set<string>();
  const args: string[] = [];
  for (let k = 0; k < argv.length; k++) {
    const arg = argv[k]!;
    if (arg === "--") {
      args.push(...argv.slice(k + 1));
      break;
    }
    let name: string;
    let inline: string | undefined;
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      name = eq < 0 ? arg.slice(2) : arg.slice(2, eq);
      inline = eq < 0 ? undefined : arg.slice(eq + 1);
    } else if (arg.startsWith("-") && arg.length > 1) {
      const eq = arg.indexOf("=");
      const short = eq < 0 ? arg.slice(1) : arg.slice(1, eq);
      inline = eq < 0 ? undefined : arg.slice(eq + 1);
      // pflag also allows "-v3" for a shorthand with an attached value.
      const mapped = shortToName.get(short) ?? shortToName.get(short[0] ?? "");
      if (!mapped) throw new ConfigError(short, "unknown shorthand flag");
      if (!shortToName.get(short) && short.length > 1) inline = short.slice(1);
      name = mapped;
    } else {
      args.push(arg);
      continue;
    }
    const spec = (FLAGS as Record<string, FlagSpec>)[name];
    if (!spec) throw new ConfigError(name, "unknown flag (see --help)");
    let text = inline;
    if (text === undefined) {
      if (spec.kind === "bool") text = "true";
      else {
        const next = argv[k + 1];
        if (next === undefined) throw new ConfigError(name, "flag needs an argument");
        text = next;
        k++;
      }
    }
    const value = parseValue(name, spec, text);
    const prev = values[camel(name)];
    // A list flag given again adds to what it gave before (pflag's slices: "--x=a --x=b" is "a,b"); the
    // first time it replaces the default.
    values[camel(name)] = given.has(name) && Array.isArray(prev) && Array.isArray(value)
      ? [...prev, ...value]
      : value;
    given.add(name);
  }
  return { values: values as FlagValues, args, given };
}

/** kube-router accepts private ASNs for the cluster (RFC 6996). */
function isPrivateAsn(asn: number): boolean {
  return (asn >= 64512 && asn <= 65534) || (asn >= 4200000000 && asn <= 4294967294);
}

function parseAsn(flag: string, text: string): number {
  if (!/^\d+$/.test(text)) throw new ConfigError(flag, `"${text}" is not an ASN`);
  const n = Number(text);
  if (n < 1 || n > MAX_U32) throw new ConfigError(flag, `ASN ${text} is out of range 1-4294967295`);
  return n;
}

function decodeBase64(flag: string, text: string): string {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(
      Uint8Array.from(atob(text), (c) => c.charCodeAt(0)),
    );
  } catch {
    throw new ConfigError(flag, `password "${text}" is not valid base64`);
  }
}

function familyCidrs(flag: string, items: string[], maxPerFamily: number | undefined): Cidr[] {
  const cidrs = items.map((t) => parseCidr(t)!);
  if (maxPerFamily !== undefined) {
    for (const fam of [4, 6] as const) {
      if (cidrs.filter((c) => c.family === fam).length > maxPerFamily) {
        throw new ConfigError(
          flag,
          `at most ${maxPerFamily} IPv${fam} range(s) allowed, got ${items.join(",")}`,
        );
      }
    }
  }
  return cidrs;
}

/** Parses and validates argv plus environment into a Config. Throws ConfigError on bad input. */
export function loadConfig(argv: readonly string[], env: Environment = processEnvironment): Config {
  const { values: v, args } = parseFlags(argv);

  if (!v.enableIpv4 && !v.enableIpv6) {
    throw new ConfigError("enable-ipv4", "at least one of --enable-ipv4 and --enable-ipv6 must be true");
  }
  if (v.clusterAsn !== 0 && !isPrivateAsn(v.clusterAsn)) {
    throw new ConfigError(
      "cluster-asn",
      `${v.clusterAsn} is not a private ASN (64512-65534 or 4200000000-4294967294)`,
    );
  }
  if (v.bgpHoldtime !== 0 && (v.bgpHoldtime < 3000 || v.bgpHoldtime > 65535_000)) {
    throw new ConfigError(
      "bgp-holdtime",
      `${formatDuration(v.bgpHoldtime)} must be 0 or between 3s and 18h12m15s`,
    );
  }
  if (v.bgpGracefulRestartTime > 4095_000) {
    throw new ConfigError("bgp-graceful-restart-time", "must be at most 4095s (RFC 4724 has 12 bits for it)");
  }
  if (v.routerId !== "" && v.routerId !== "generate" && !parseIPv4(v.routerId)) {
    throw new ConfigError("router-id", `"${v.routerId}" is neither an IPv4 address nor "generate"`);
  }
  if (!v.metricsPath.startsWith("/")) {
    throw new ConfigError("metrics-path", `"${v.metricsPath}" must start with /`);
  }
  for (const [flag, addr] of [["health-addr", v.healthAddr], ["metrics-addr", v.metricsAddr]] as const) {
    if (addr !== "" && !parseIP(addr)) throw new ConfigError(flag, `"${addr}" is not an IP address`);
  }
  for (
    const [flag, d] of [
      ["cache-sync-timeout", v.cacheSyncTimeout],
      ["routes-sync-period", v.routesSyncPeriod],
      ["ipvs-sync-period", v.ipvsSyncPeriod],
      ["iptables-sync-period", v.iptablesSyncPeriod],
      ["injected-routes-sync-period", v.injectedRoutesSyncPeriod],
      ["loadbalancer-sync-period", v.loadbalancerSyncPeriod],
    ] as const
  ) {
    if (d <= 0) throw new ConfigError(flag, "must be greater than zero");
  }

  // External peers: every list must match --peer-router-ips one for one.
  const ips = v.peerRouterIps;
  const asns = v.peerRouterAsns.map((a) => parseAsn("peer-router-asns", a));
  if (ips.length !== asns.length) {
    throw new ConfigError(
      "peer-router-asns",
      `${asns.length} ASN(s) given for ${ips.length} --peer-router-ips; they must match one for one`,
    );
  }
  let passwordTexts = v.peerRouterPasswords;
  if (v.peerRouterPasswordsFile !== "") {
    if (passwordTexts.length > 0) {
      throw new ConfigError(
        "peer-router-passwords-file",
        "cannot be used together with --peer-router-passwords",
      );
    }
    let text: string;
    try {
      text = env.readTextFile(v.peerRouterPasswordsFile);
    } catch (err) {
      throw new ConfigError("peer-router-passwords-file", `cannot read ${v.peerRouterPasswordsFile}: ${err}`);
    }
    passwordTexts = text.trim() === "" ? [] : text.trim().split(",").map((x) => x.trim());
  }
  const pwFlag = v.peerRouterPasswordsFile !== "" ? "peer-router-passwords-file" : "peer-router-passwords";
  if (passwordTexts.length > 0 && passwordTexts.length !== ips.length) {
    throw new ConfigError(pwFlag, `${passwordTexts.length} password(s) given for ${ips.length} peer(s)`);
  }
  const passwords = passwordTexts.map((p) => (p === "" ? "" : decodeBase64(pwFlag, p)));
  const ports = v.peerRouterPorts.map((p) => {
    if (!/^\d+$/.test(p) || Number(p) < 1 || Number(p) > 65535) {
      throw new ConfigError("peer-router-ports", `"${p}" is not a port (1-65535)`);
    }
    return Number(p);
  });
  if (ports.length > 0 && ports.length !== ips.length) {
    throw new ConfigError("peer-router-ports", `${ports.length} port(s) given for ${ips.length} peer(s)`);
  }
  const externalPeers: ExternalPeer[] = ips.map((ip, k) => {
    const peer: ExternalPeer = { ip, asn: asns[k]!, port: ports[k] ?? 179 };
    const pw = passwords[k];
    if (pw) peer.password = pw;
    return peer;
  });

  const serviceClusterIpCidrs = familyCidrs("service-cluster-ip-range", v.serviceClusterIpRange, 1);
  if (serviceClusterIpCidrs.length === 0) {
    throw new ConfigError("service-cluster-ip-range", "at least one range is required");
  }
  const serviceExternalIpCidrs = familyCidrs(
    "service-external-ip-range",
    v.serviceExternalIpRange,
    undefined,
  );
  familyCidrs("loadbalancer-ip-range", v.loadbalancerIpRange, undefined);

  const nodeName = v.hostnameOverride || env.get("NODE_NAME") || env.hostname();
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(nodeName)) {
    throw new ConfigError("hostname-override", `node name "${nodeName}" is not a valid Kubernetes node name`);
  }

  return {
    ...v,
    nodeName,
    effectiveClusterAsn: v.clusterAsn || 64512,
    externalPeers,
    serviceClusterIpCidrs,
    serviceExternalIpCidrs,
    cniConfFile: env.get("KUBE_ROUTER_CNI_CONF_FILE") || "/etc/cni/net.d/10-kuberouter.conflist",
    args,
  };
}

function renderDefault(spec: FlagSpec): string {
  switch (spec.kind) {
    case "duration":
      return formatDuration(spec.def as number);
    case "portrange": {
      const [lo, hi] = spec.def as [number, number];
      return `${lo}-${hi}`;
    }
    case "strings":
    case "ints":
    case "cidrs":
    case "ips":
      return (spec.def as string[]).length ? `[${(spec.def as string[]).join(",")}]` : "";
    default:
      return String(spec.def);
  }
}

/** The --help text, grouped by module. */
export function usage(): string {
  const titles: Record<FlagSpec["group"], string> = {
    general: "General",
    router: "Router (--run-router)",
    proxy: "Service proxy (--run-service-proxy)",
    firewall: "Firewall (--run-firewall)",
    lballoc: "Load balancer allocator (--run-loadbalancer)",
  };
  const lines = [
    `kube-router ${VERSION}: a Kubernetes node networking agent (router, service proxy, firewall).`,
    "",
    "Usage: kube-router [flags]",
    "       kube-router bgp neighbors|routes [--bgp-admin-port N]",
    "",
  ];
  for (const group of Object.keys(titles) as FlagSpec["group"][]) {
    lines.push(`${titles[group]}:`);
    for (const [name, spec] of Object.entries(FLAGS) as [string, FlagSpec][]) {
      if (spec.group !== group) continue;
      const flag = ("short" in spec && spec.short ? `-${spec.short}, ` : "    ") + `--${name}`;
      const type = spec.kind === "bool" ? "" : ` ${spec.kind === "portrange" ? "range" : spec.kind}`;
      const def = renderDefault(spec);
      const extra = "oneOf" in spec && spec.oneOf ? ` (${spec.oneOf.join("|")})` : "";
      const defText = def !== "" && def !== "false" ? ` (default ${def})` : "";
      lines.push(`  ${(flag + type).padEnd(46)} ${spec.help}${extra}${defText}`);
    }
    lines.push("");
  }
  lines.push(
    "Environment:",
    "  NODE_NAME                    node name when --hostname-override is not given",
    "  KUBE_ROUTER_CNI_CONF_FILE    CNI conf file the router writes (default /etc/cni/net.d/10-kuberouter.conflist)",
  );
  return lines.join("\n");
}
