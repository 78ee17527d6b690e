/**
 * @module
 * The BGP speaker: wire codecs, sessions, RIBs and the speaker API the router module drives.
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
