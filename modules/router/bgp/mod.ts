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
export * from "./types.ts";
export * from "./errors.ts";
export * from "./message.ts";
export * from "./transport.ts";
export * from "./session.ts";
export * from "./rib.ts";
export * from "./policy.ts";
export * from "./speaker.ts";
export * from "./admin.ts";
