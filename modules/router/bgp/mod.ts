/**
 * The BGP speaker the router module embeds instead of GoBGP: RFC 4271 sessions and FSM, capabilities
 * (multiprotocol IPv4+IPv6, four-octet AS, route refresh, graceful restart), communities, route
 * reflection, RFC 7606 error handling, and TCP MD5 / TTL / source address through `ffi/tcp.ts`.
 *
 * ```ts
 * import { BgpSpeaker } from "./bgp/mod.ts";
 * // MD5/TTL/source-address peers use ffi/tcp.ts by default; everything else Deno's own TCP.
 * const speaker = new BgpSpeaker({ asn: 64512, routerId: "192.168.1.100", metrics });
 * speaker.subscribe((e) => { if (e.type === "learned") installRoute(e.prefix, e.nextHop); });
 * await speaker.start();
 * speaker.setPeers([{ address: "192.168.1.101", asn: 64512 }]);
 * speaker.set("ipv4-unicast", [{ prefix: "10.1.1.0/24" }]); // the whole desired set, diffed
 * ```
 *
 * @module
 */
// What the router uses (and the types its calls take and return). Tests and benchmarks reach the codecs,
// the RIB and the session machine through their own files.
export { type AdminServer, bgpCli, serveAdmin } from "./admin.ts";
export type { PeerConfig } from "./session.ts";
export type { Policy, PolicyPeer } from "./policy.ts";
export {
  type BgpEvent,
  BgpSpeaker,
  type LearnedRoute,
  type LocalRoute,
  type PeerStatus,
  type SpeakerOptions,
} from "./speaker.ts";
export type { Transport } from "./transport.ts";
export { type Family, parseCommunity } from "./types.ts";
