/**
 * The rtnetlink objects (links, addresses, routes, policy rules, neighbours) and the `Rtnl` interface
 * that both the real kernel implementation (`Rtnetlink`) and the in-memory fake (`FakeRtnetlink`)
 * implement. Operations are named after their iproute2 command.
 */
import type { Family } from "./ip.ts";
import type { ResyncSignal } from "./netlink_socket.ts";

/** Route protocol numbers (rtm_protocol), as in /etc/iproute2/rt_protos. */
export const RouteProtocol = {
  unspec: 0,
  redirect: 1,
  kernel: 2,
  boot: 3,
  static: 4,
  zebra: 17,
  bird: 12,
  bgp: 186,
} as const;

/** Route scopes (rtm_scope). */
export const RouteScope = { universe: 0, site: 200, link: 253, host: 254, nowhere: 255 } as const;

/** Route types (rtm_type). */
export const RouteType = {
  unspec: 0,
  unicast: 1,
  local: 2,
  broadcast: 3,
  anycast: 4,
  multicast: 5,
  blackhole: 6,
  unreachable: 7,
  prohibit: 8,
  throw: 9,
} as const;

/** Well-known routing tables. */
export const RouteTable = { unspec: 0, default: 253, main: 254, local: 255 } as const;

/** Policy rule actions (fib_rule_hdr.action). */
export const RuleAction = { toTable: 1, goto: 2, nop: 3, blackhole: 6, unreachable: 7, prohibit: 8 } as const;

/** Neighbour states (ndm_state). */
export const NeighState = {
  incomplete: 0x01,
  reachable: 0x02,
  stale: 0x04,
  delay: 0x08,
  probe: 0x10,
  failed: 0x20,
  noarp: 0x40,
  permanent: 0x80,
} as const;

/** A network interface as the kernel reports it (`ip -d link show`). */
export interface Link {
  index: number;
  name: string;
  /** IFLA_INFO_KIND: "bridge", "veth", "vxlan", … (undefined for plain devices such as lo). */
  kind?: string;
  mtu: number;
  /** Administratively up (IFF_UP). */
  up: boolean;
  /** Carrier present (IFF_LOWER_UP). */
  lowerUp: boolean;
  /** Raw ifi_flags. */
  flags: number;
  /** MAC address "aa:bb:…", when the device has one. */
  mac?: string;
  /** Index of the master (bridge) device. */
  master?: number;
  /** IFLA_LINK: the peer (veth) or lower device index. */
  link?: number;
  /**
   * IFLA_LINK_NETNSID: when the peer (veth) or lower device lives in another network namespace, that
   * namespace's id as this namespace knows it (`ip -d link show` prints `link-netnsid N`).
   */
  linkNetnsid?: number;
  /** VXLAN parameters, for kind "vxlan". */
  vxlan?: { vni: number; port?: number; local?: string; remote?: string; dev?: number; learning?: boolean };
  /** IP-in-IP tunnel parameters, for kinds "ipip" and "ip6tnl". */
  tunnel?: TunnelInfo;
}

/** What an ipip/ip6tnl device carries (`ip -d link show`). */
export interface TunnelInfo {
  local?: string;
  remote?: string;
  /** 0 = inherit. */
  ttl?: number;
  /** IPPROTO carried: 4 (ipip), 41 (ip6ip6), 0 (any). */
  proto?: number;
  /** UDP encapsulation: "fou" (direct) or "gue", with its destination and source ports (0 = auto). */
  encap?: { type: "fou" | "gue"; dport: number; sport: number };
}

interface LinkCommon {
  name: string;
  mtu?: number;
  /** Bring the device up after creating it. */
  up?: boolean;
  /** Name of a bridge to enslave the device to. */
  master?: string;
  mac?: string;
}

/** What to create with `linkAdd`. */
export type LinkSpec =
  | LinkCommon & { kind: "bridge" }
  | LinkCommon & { kind: "dummy" }
  | LinkCommon & { kind: "veth"; peer: string }
  | LinkCommon & {
    kind: "vxlan";
    vni: number;
    /** UDP destination port; the kernel default is 8472 (Linux), IANA is 4789. */
    port?: number;
    local?: string;
    /** Remote unicast VTEP or multicast group. */
    remote?: string;
    /** Lower device index. */
    dev?: number;
    learning?: boolean;
  }
  | LinkCommon & {
    kind: "ipip" | "ip6tnl";
    local?: string;
    remote?: string;
    dev?: number;
    ttl?: number;
    /**
     * UDP encapsulation (`encap fou|gue encap-dport P encap-sport auto`); `gue` selects Generic UDP
     * Encapsulation, which kube-router's `--overlay-encap=fou` uses, instead of direct FoU.
     */
    fou?: { dport: number; sport?: number; gue?: boolean };
  };

/** Changes for `linkSet`; absent fields are left alone. */
export interface LinkChange {
  up?: boolean;
  mtu?: number;
  /** Bridge name to enslave to, or null for `nomaster`. */
  master?: string | null;
  /** New name. */
  name?: string;
  mac?: string;
}

/** An interface address (`ip addr`). */
export interface Address {
  family: Family;
  /** Interface index. */
  index: number;
  address: string;
  prefix: number;
  scope?: number;
  label?: string;
  /** IFA_F_* flags. */
  flags?: number;
  /** IPv6: skip duplicate address detection (IFA_F_NODAD). */
  nodad?: boolean;
}

/** One ECMP path of a multipath route. */
export interface NextHop {
  gateway?: string;
  /** Interface index. */
  dev?: number;
  /** 1..256 (rtnh_hops + 1). */
  weight?: number;
  onlink?: boolean;
}

/** A route (`ip route`). `dst` is a CIDR, "0.0.0.0/0" or "::/0" for the default route. */
export interface Route {
  family: Family;
  dst: string;
  /** Table id; defaults to main (254). */
  table?: number;
  /** rtm_protocol; defaults to boot (3), as iproute2. */
  protocol?: number;
  /** rtm_scope; defaults as iproute2 (link without a gateway, universe with one). */
  scope?: number;
  /** rtm_type; defaults to unicast. */
  type?: number;
  gateway?: string;
  /** Output interface index. */
  dev?: number;
  /** Preferred source address (RTA_PREFSRC, `src`). */
  src?: string;
  /** RTA_PRIORITY, `metric`. */
  metric?: number;
  tos?: number;
  onlink?: boolean;
  /** ECMP paths (RTA_MULTIPATH), instead of gateway/dev. */
  nexthops?: NextHop[];
}

/** A route batch operation. */
export interface RouteOp {
  op: "add" | "replace" | "del";
  route: Route;
}

/** One operation of an address batch (`Rtnl.addrBatch`). */
export interface AddrOp {
  op: "add" | "del";
  addr: Address;
}

/** Result of a batch: indexes of failed operations with their errors. */
export interface BatchResult {
  ok: number;
  failures: { index: number; error: Error }[];
}

/** A policy routing rule (`ip rule`). */
export interface Rule {
  family: Family;
  priority?: number;
  table?: number;
  /** Source CIDR (`from`). */
  src?: string;
  /** Destination CIDR (`to`). */
  dst?: string;
  fwmark?: number;
  fwmask?: number;
  /** Input interface name (`iif`). */
  iif?: string;
  /** Output interface name (`oif`). */
  oif?: string;
  /** fib_rule_hdr.action; defaults to "lookup table". */
  action?: number;
  /** `not`. */
  invert?: boolean;
  /** FRA_PROTOCOL. */
  protocol?: number;
}

/** A neighbour entry (`ip neigh`). */
export interface Neighbour {
  family: Family;
  /** Interface index. */
  dev: number;
  dst: string;
  lladdr?: string;
  /** NUD_* state; defaults to permanent. */
  state?: number;
  /** NTF_* flags. */
  flags?: number;
}

/** A change the kernel announced on a multicast group. */
export type RtnlEvent =
  | { kind: "link"; action: "new" | "del"; link: Link }
  | { kind: "addr"; action: "new" | "del"; addr: Address }
  | { kind: "route"; action: "new" | "del"; route: Route }
  | { kind: "rule"; action: "new" | "del"; rule: Rule }
  | { kind: "neigh"; action: "new" | "del"; neigh: Neighbour }
  | ResyncSignal;

/** An event stream; iterate it, and `close()` it to stop (idempotent). */
export interface RtnlWatch extends AsyncIterable<RtnlEvent> {
  close(): void;
}

/** What `watch` subscribes to. */
export type WatchKind = "link" | "addr" | "route" | "rule" | "neigh";

/** Options for `watch`. */
export interface WatchOptions {
  /** Families for addr/route/rule events; default both. */
  families?: readonly Family[];
  /** Socket receive buffer (bytes); small values overflow sooner (ENOBUFS -> resync). */
  rcvbuf?: number;
  /** Called for a message that could not be decoded; the stream goes on. */
  onDecodeError?: (err: Error) => void;
}

/** Filters for route listings. */
export interface RouteFilter {
  family?: Family;
  table?: number;
  protocol?: number;
  dev?: number;
}

/**
 * Everything the agent does with rtnetlink. Implemented by `Rtnetlink` (the kernel of the current network
 * namespace) and `FakeRtnetlink` (in memory, for module unit tests).
 */
export interface Rtnl {
  /** `ip link show` */
  linkList(): Promise<Link[]>;
  /** `ip link show NAME`; undefined when absent. */
  linkGet(name: string): Promise<Link | undefined>;
  /** `ip link add NAME type KIND …` */
  linkAdd(spec: LinkSpec): Promise<void>;
  /** `ip link del NAME` */
  linkDel(name: string): Promise<void>;
  /** `ip link set NAME up|down mtu N master BR|nomaster name NEW` */
  linkSet(name: string, change: LinkChange): Promise<void>;
  /** `ip addr show` */
  addrList(filter?: { family?: Family; index?: number }): Promise<Address[]>;
  /** `ip addr add ADDR/PREFIX dev DEV` */
  addrAdd(addr: Address): Promise<void>;
  /** `ip addr del ADDR/PREFIX dev DEV` */
  addrDel(addr: Address): Promise<void>;
  /** `ip -batch` of `addr add|del` lines (as addrAdd/addrDel each); never throws for individual failures. */
  addrBatch(ops: readonly AddrOp[]): Promise<BatchResult>;
  /** `ip route show table all` (filtered) */
  routeList(filter?: RouteFilter): Promise<Route[]>;
  /** `ip route get ADDR`: the route the kernel would use (dst is ADDR/32 or /128); undefined if unreachable. */
  routeGet(addr: string): Promise<Route | undefined>;
  /** `ip route add …` */
  routeAdd(route: Route): Promise<void>;
  /** `ip route replace …` */
  routeReplace(route: Route): Promise<void>;
  /** `ip route del …` */
  routeDel(route: Route): Promise<void>;
  /** `ip -batch` of route commands; never throws for individual failures. */
  routeBatch(ops: readonly RouteOp[]): Promise<BatchResult>;
  /** `ip rule show` */
  ruleList(family?: Family): Promise<Rule[]>;
  /** `ip rule add …` */
  ruleAdd(rule: Rule): Promise<void>;
  /** `ip rule del …` */
  ruleDel(rule: Rule): Promise<void>;
  /** `ip neigh show` */
  neighList(filter?: { family?: Family; dev?: number }): Promise<Neighbour[]>;
  /** `ip neigh add …` */
  neighAdd(n: Neighbour): Promise<void>;
  /** `ip neigh replace …` */
  neighReplace(n: Neighbour): Promise<void>;
  /** `ip neigh del …` */
  neighDel(n: Neighbour): Promise<void>;
  /** `ip monitor link address route rule neigh` */
  watch(kinds: readonly WatchKind[], opts?: WatchOptions): RtnlWatch;
  /** Releases sockets. Idempotent. */
  close(): void;
}
