/**
 * Kernel access through Deno FFI: the libc binding, netlink codecs and sockets, rtnetlink (links,
 * addresses, routes, rules, neighbours, events), ctnetlink (conntrack), libnftables (typed transactions in
 * nft's text syntax; JSON listings), sysctl, generic netlink (family lookup) with IPVS and FoU over it,
 * and in-memory fakes of each interface for unit tests. Nothing outside ffi/ calls Deno.dlopen. Also the
 * tree's one IP/CIDR parser (ip.ts), which the codecs need and core/ and the modules import from here.
 *
 * ```ts
 * import { Rtnetlink, Nftables, isExists } from "../ffi/mod.ts";
 * const rtnl = new Rtnetlink();
 * await rtnl.routeReplace({ family: 4, dst: "10.1.2.0/24", gateway: "192.168.1.101", protocol: 17 });
 * ```
 *
 * @module
 */
export * from "./errors.ts";
export * from "./ip.ts";
export * from "./libc.ts";
export * from "./netlink.ts";
export {
  type BatchEncoder,
  type BatchFailure,
  NetlinkSocket,
  type NetlinkSocketOptions,
  NetlinkSubscription,
  type NetlinkTransport,
  type ResyncSignal,
} from "./netlink_socket.ts";
export * from "./rtnl_types.ts";
export {
  decodeAddr,
  decodeLink,
  decodeNeigh,
  decodeRoute,
  decodeRule,
  defaultScope,
  encodeAddr,
  encodeLinkAdd,
  encodeLinkSet,
  encodeNeigh,
  encodeRoute,
  encodeRouteGet,
  encodeRule,
  RTM_DELADDR,
  RTM_DELLINK,
  RTM_DELNEIGH,
  RTM_DELROUTE,
  RTM_DELRULE,
  RTM_GETADDR,
  RTM_GETLINK,
  RTM_GETNEIGH,
  RTM_GETROUTE,
  RTM_GETRULE,
  RTM_NEWADDR,
  RTM_NEWLINK,
  RTM_NEWNEIGH,
  RTM_NEWROUTE,
  RTM_NEWRULE,
} from "./rtnl_codec.ts";
export { decodeEvent, Rtnetlink, watchGroups } from "./rtnetlink.ts";
export {
  currentNetnsIdentity,
  decodeNsid,
  encodeNsidGet,
  inNetns,
  listNetnsPaths,
  NETNS_RUN_DIR,
  netnsIdentity,
  NetnsSysctl,
  RTM_GETNSID,
  RTM_NEWNSID,
} from "./netns.ts";
export { FakeRtnetlink } from "./fake_rtnetlink.ts";
export {
  Conntrack,
  type ConntrackEntry,
  type ConntrackFilter,
  type ConntrackTable,
  type ConntrackTuple,
  decodeEntry as decodeConntrackEntry,
  encodeDelete as encodeConntrackDelete,
  FakeConntrack,
  IpProto,
  matches as conntrackMatches,
} from "./conntrack.ts";
export {
  libnftablesPath,
  listCommand,
  listJson,
  loadLibnftables,
  Nftables,
  nftBinary,
  type NftListOptions,
  type NftListTarget,
  type NftObject,
  NftOutput,
  type NftRuleset,
  type NftRunOptions,
  parseListOutput,
} from "./nftables.ts";
export { FakeNftables } from "./fake_nftables.ts";
export { NFT_SET, type NftSetInfo, type NftTableLayout, NftUndecodable } from "./nft_netlink.ts";
export { NftUnencodable } from "./nft_elements.ts";
export {
  errorLocations,
  type NftChainSpec,
  type NftElementSpec,
  type NftFamily,
  type NftMapSpec,
  type NftObjectSpec,
  type NftOperation,
  type NftRuleSpec,
  type NftSetSpec,
  NftSpecError,
  type NftTableSpec,
  NftTransaction,
  type NftVerb,
} from "./nft_transaction.ts";
export { FakeSysctl, ProcSysctl, type Sysctl, SysctlError, sysctlPath } from "./sysctl.ts";
export { encodeMd5sig, socketTransport, tcpConnect, TcpListener, TcpSocket } from "./tcp.ts";
export * from "./fdb.ts";
export {
  decodeFamily,
  encodeGetFamily,
  GENL_HDRLEN,
  GENL_ID_CTRL,
  type GenlFamily,
  genlHeader,
  genlPayload,
  resolveFamily,
} from "./genetlink.ts";
export * from "./ipvs.ts";
export { FakeIpvs } from "./fake_ipvs.ts";
export {
  decodeFouPort,
  encodeFouAdd,
  encodeFouDel,
  FakeFou,
  type Fou,
  FouNetlink,
  type FouPort,
} from "./fou.ts";
export {
  type ConcatPart,
  decodeConcatKey,
  decodeSetElements,
  decodeSetElementsInto,
  encodeGetSetElements,
  NFT_GETSETELEM,
  NftSetCounters,
  type SetElementCounter,
} from "./nft_set_counters.ts";
