/**
 * Per-peer handling: the state the speaker keeps for each neighbour (its Adj-RIB-In and Adj-RIB-Out,
 * pending output, graceful restart helper state), what an UPDATE from it does (RFC 7606 error handling,
 * loop detection, import policy into the Loc-RIB), and what its session going up or down does to its
 * routes (RFC 4724 helper: stale paths kept, then swept on End-of-RIB or a timer).
 *
 * The speaker owns the peers and the Loc-RIB; these functions reach it through `PeerHandlingHost`.
 */
import type { Clock, Logger, TimerId } from "../../../core/mod.ts";
import { parseIP } from "../../../ffi/mod.ts";
import { BgpConfigError } from "./errors.ts";
import { endOfRibFamily, normalizePrefix, toHex, type UpdateMessage } from "./message.ts";
import type { Policy, PolicyPeer } from "./policy.ts";
import type { LocRib, Path, PathSource, RibChange } from "./rib.ts";
import type { Peer, PeerConfig } from "./session.ts";
import type { SpeakerMetrics } from "./speaker_metrics.ts";
import type { BgpEvent, GracefulRestartOptions, PeerStatus } from "./speaker.ts";
import { AS_SEQUENCE, FAMILIES, type Family, type PathAttributes } from "./types.ts";

type AdjTable = Record<Family, Map<string, PathAttributes>>;
const newAdj = (): AdjTable => ({ "ipv4-unicast": new Map(), "ipv6-unicast": new Map() });

export interface PeerRuntime {
  peer: Peer;
  adjIn: AdjTable;
  adjOut: AdjTable;
  pending: Record<Family, Map<string, PathAttributes | null>>;
  flushScheduled: boolean;
  /** Per source-attrs cache of the exported attributes, so prefixes sharing attributes share UPDATEs. */
  exportCache: Record<Family, WeakMap<PathAttributes, PathAttributes | null>>;
  /** Policy results by content, so equal attributes are one object (one UPDATE group). */
  interned: Map<string, PathAttributes>;
  staleTimer: TimerId | undefined;
  /** Families whose stale paths await the peer's End-of-RIB. */
  staleFamilies: Set<Family>;
  /** Families whose End-of-RIB the peer sent on the current session. */
  eorReceived: Set<Family>;
  source: PathSource;
}

/** What the per-peer handling needs of the speaker. */
export interface PeerHandlingHost {
  readonly asn: number;
  readonly routerId: string;
  readonly clusterId: string;
  readonly rib: LocRib;
  readonly clock: Clock;
  readonly log: Logger;
  /** The import policy now (it can be replaced at run time). */
  importPolicy(): Policy;
  readonly metrics: SpeakerMetrics | undefined;
  running(): boolean;
  readonly gracefulRestart: GracefulRestartOptions | undefined;
  /** Emits events for a best path change and queues it to the peers. */
  applyChange(family: Family, prefix: string, change: RibChange): void;
  emit(e: BgpEvent): void;
  /** Ends a restart's selection deferral if every peer has sent End-of-RIB. */
  checkDeferral(): void;
}

export function newPeerRuntime(peer: Peer, source: PathSource): PeerRuntime {
  return {
    peer,
    adjIn: newAdj(),
    adjOut: newAdj(),
    pending: { "ipv4-unicast": new Map(), "ipv6-unicast": new Map() },
    flushScheduled: false,
    exportCache: { "ipv4-unicast": new WeakMap(), "ipv6-unicast": new WeakMap() },
    interned: new Map(),
    staleTimer: undefined,
    staleFamilies: new Set(),
    eorReceived: new Set(),
    source,
  };
}

/** Checks a peer config; returns it with its address in canonical form. */
export function validatePeer(config: PeerConfig): PeerConfig {
  const ip = parseIP(config.address);
  if (!ip) throw new BgpConfigError(`peer address ${config.address} is not an IP address`);
  if (!Number.isInteger(config.asn) || config.asn < 1 || config.asn > 0xffffffff) {
    throw new BgpConfigError(`peer ${config.address}: bad AS number ${config.asn}`);
  }
  const hold = config.holdTime ?? 90;
  if (hold !== 0 && (hold < 3 || hold > 65535)) {
    throw new BgpConfigError(`peer ${config.address}: hold time ${hold}`);
  }
  for (const f of config.families ?? []) {
    if (!FAMILIES.includes(f)) throw new BgpConfigError(`peer ${config.address}: unknown family ${f}`);
  }
  return { ...config, address: canonicalAddress(config.address) };
}

/** The path source of routes learned from a peer of this config (router id filled in when it is up). */
export function sourceFor(localAsn: number, cfg: PeerConfig): PathSource {
  return {
    id: cfg.address,
    ebgp: cfg.asn !== localAsn,
    routerId: "0.0.0.0",
    address: cfg.address,
    rrClient: !!cfg.routeReflectorClient,
  };
}

/** The peer's status as `bgp neighbors` shows it. */
export function peerStatus(r: PeerRuntime, rib: LocRib, now: number): PeerStatus {
  const p = r.peer;
  const prefixes: PeerStatus["prefixes"] = {};
  for (const f of p.localFamilies()) {
    let accepted = 0;
    for (const prefix of r.adjIn[f].keys()) if (rib.get(f, prefix, p.address)) accepted++;
    prefixes[f] = { received: r.adjIn[f].size, accepted, advertised: r.adjOut[f].size };
  }
  const caps = p.remoteCapabilities;
  const capNames: string[] = [];
  if (caps) {
    for (const f of caps.families) capNames.push(`mp:${f}`);
    if (caps.routeRefresh) capNames.push("route-refresh");
    if (caps.as4 !== undefined) capNames.push("4-octet-as");
    if (caps.gracefulRestart) capNames.push("graceful-restart");
  }
  return {
    address: p.address,
    asn: p.config.asn,
    state: p.state,
    description: p.config.description,
    routerId: p.remoteRouterId,
    localAddress: p.localAddress,
    uptime: Math.max(0, Math.round((now - (p.upSince ?? p.stats.lastChange)) / 1000)),
    upSince: p.upSince,
    holdTime: p.negotiatedHoldTime,
    keepalive: p.negotiatedKeepalive,
    families: p.families,
    capabilities: capNames,
    messagesSent: { ...p.stats.messagesSent },
    messagesReceived: { ...p.stats.messagesReceived },
    prefixes,
    lastError: p.stats.lastError,
    gracefulRestart: {
      helperActive: r.staleTimer !== undefined,
      remoteRestartTime: caps?.gracefulRestart?.time,
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// Session up and down

/**
 * The session came up: the source gets the peer's router id, and stale paths kept from before a
 * graceful restart stay until re-announced or swept (at once for families the peer no longer preserves).
 * The caller then sends the initial table, unless a restart's deferral holds it.
 */
export function peerEstablished(h: PeerHandlingHost, r: PeerRuntime): void {
  const peer = r.peer;
  r.source = { ...sourceFor(h.asn, peer.config), routerId: peer.remoteRouterId ?? "0.0.0.0" };
  const grCaps = peer.remoteCapabilities?.gracefulRestart;
  if (r.staleTimer !== undefined) {
    h.clock.clearTimeout(r.staleTimer);
    r.staleTimer = undefined;
    for (const f of [...r.staleFamilies]) {
      // RFC 4724 4.2: no GR capability now, or forwarding state not preserved: drop the stale paths.
      if (!grCaps || !grCaps.families.get(f) || !peer.families.includes(f)) {
        sweepStale(h, r, f);
        r.staleFamilies.delete(f);
      }
    }
    if (r.staleFamilies.size) {
      // Wait for End-of-RIB, but not forever.
      r.staleTimer = h.clock.setTimeout(() => {
        r.staleTimer = undefined;
        for (const f of r.staleFamilies) sweepStale(h, r, f);
        r.staleFamilies.clear();
      }, Math.max(grCaps?.time ?? 90, 30) * 1000);
    }
  }
  r.eorReceived.clear();
}

/**
 * The session went down: its Adj-RIB-Out is forgotten, its routes withdrawn, except in the families a
 * restarting peer asked us to keep (RFC 4724 helper), which stay as stale paths until its restart
 * time runs out.
 */
export function peerDown(
  h: PeerHandlingHost,
  r: PeerRuntime,
  info: { reason: string; gracefulRestartEligible: boolean },
): void {
  const peer = r.peer;
  for (const f of FAMILIES) {
    r.adjOut[f].clear();
    r.pending[f].clear();
  }
  const grCaps = peer.lastCapabilities?.gracefulRestart;
  const weOffer = !!h.gracefulRestart?.enabled && peer.config.gracefulRestart !== false;
  const keep = new Set<Family>();
  if (info.gracefulRestartEligible && grCaps && weOffer && h.running()) {
    for (const [f] of grCaps.families) if (peer.lastFamilies.includes(f)) keep.add(f);
  }
  const drop = FAMILIES.filter((f) => !keep.has(f));
  dropPeerRoutes(h, r, drop);
  h.checkDeferral();
  if (keep.size) {
    h.log.info("bgp graceful restart helper: keeping routes of restarting peer", {
      peer: peer.address,
      restartTime: grCaps!.time,
      families: [...keep].join(","),
    });
    for (const f of keep) {
      r.staleFamilies.add(f);
      for (const prefix of r.adjIn[f].keys()) {
        const p = h.rib.get(f, prefix, peer.address);
        if (p) p.stale = true;
      }
    }
    if (r.staleTimer !== undefined) h.clock.clearTimeout(r.staleTimer);
    r.staleTimer = h.clock.setTimeout(() => {
      r.staleTimer = undefined;
      h.log.info("bgp graceful restart timer expired; withdrawing stale routes", { peer: peer.address });
      for (const f of r.staleFamilies) sweepStale(h, r, f);
      r.staleFamilies.clear();
    }, grCaps!.time * 1000);
  }
}

/** Removes the paths of `r` in `family` that are still stale. */
export function sweepStale(h: PeerHandlingHost, r: PeerRuntime, family: Family): void {
  const id = r.peer.address;
  let n = 0;
  for (const [prefix] of r.adjIn[family]) {
    const p = h.rib.get(family, prefix, id);
    if (p && !p.stale) continue;
    r.adjIn[family].delete(prefix);
    if (p) {
      n++;
      h.applyChange(family, prefix, h.rib.remove(family, prefix, id));
    }
  }
  if (n) h.log.info("bgp removed stale routes", { peer: id, family, count: n });
}

/** Withdraws everything learned from `r` in `families`. */
export function dropPeerRoutes(h: PeerHandlingHost, r: PeerRuntime, families: readonly Family[]): void {
  const id = r.peer.address;
  for (const f of families) {
    for (const prefix of r.adjIn[f].keys()) h.applyChange(f, prefix, h.rib.remove(f, prefix, id));
    r.adjIn[f].clear();
    r.staleFamilies.delete(f);
  }
}

// ---------------------------------------------------------------------------------------------------
// UPDATEs received

/** Applies one UPDATE from the peer of `r` (`raw` is logged when something in it is malformed). */
export function handleUpdate(h: PeerHandlingHost, r: PeerRuntime, u: UpdateMessage, raw: Uint8Array): void {
  const peer = r.peer;
  const m = h.metrics;
  const eor = endOfRibFamily(u);
  if (eor) {
    h.emit({ type: "endOfRib", family: eor, peer: peer.address });
    r.eorReceived.add(eor);
    h.checkDeferral();
    if (r.staleFamilies.has(eor)) {
      sweepStale(h, r, eor);
      r.staleFamilies.delete(eor);
      if (r.staleFamilies.size === 0 && r.staleTimer !== undefined) {
        h.clock.clearTimeout(r.staleTimer);
        r.staleTimer = undefined;
      }
    }
    return;
  }
  if (u.discarded) {
    h.log.warn("bgp discarded malformed attributes", {
      peer: peer.address,
      why: u.discarded.join("; "),
      bytes: hexOf(raw),
    });
  }
  const families = peer.families;
  // Withdrawals
  if (u.withdrawn.length) withdrawMany(h, r, "ipv4-unicast", u.withdrawn);
  if (u.mpUnreach && families.includes(u.mpUnreach.family)) {
    withdrawMany(h, r, u.mpUnreach.family, u.mpUnreach.withdrawn);
  }
  if (!u.attrs) {
    // NLRI without any path attribute (RFC 7606 treat-as-withdraw).
    if (u.nlri.length && families.includes("ipv4-unicast")) {
      m?.malformed.inc({ peer: peer.address });
      h.log.warn("bgp treat-as-withdraw (RFC 7606)", {
        peer: peer.address,
        why: u.treatAsWithdraw,
        bytes: hexOf(raw),
      });
      withdrawMany(h, r, "ipv4-unicast", u.nlri);
    }
    return;
  }
  const attrs = u.attrs;
  const announced: [Family, string[], PathAttributes][] = [];
  if (u.nlri.length) announced.push(["ipv4-unicast", u.nlri, attrs]);
  if (u.mpReach && u.mpReach.nlri.length) {
    const mp = u.mpReach;
    const a = attrs.nextHop === mp.nextHop ? attrs : {
      ...attrs,
      nextHop: mp.nextHop,
      ...(mp.linkLocalNextHop ? { linkLocalNextHop: mp.linkLocalNextHop } : {}),
    };
    announced.push([mp.family, mp.nlri, a]);
  }
  let reason = u.treatAsWithdraw;
  if (reason === undefined && peer.isEbgp) {
    const first = attrs.asPath[0];
    if (first && first.type === AS_SEQUENCE && first.asns[0] !== peer.config.asn) {
      reason = `AS_PATH does not start with the peer AS ${peer.config.asn}`;
    }
  }
  if (reason !== undefined) {
    m?.malformed.inc({ peer: peer.address });
    h.log.warn("bgp treat-as-withdraw (RFC 7606)", {
      peer: peer.address,
      why: reason,
      bytes: hexOf(raw),
    });
    for (const [f, prefixes] of announced) if (families.includes(f)) withdrawMany(h, r, f, prefixes);
    return;
  }
  // Loop detection: our AS in the path (eBGP), our router id or cluster id (route reflection).
  const loop = attrs.asPath.some((s) => s.asns.includes(h.asn)) ||
    attrs.originatorId === h.routerId || (attrs.clusterList?.includes(h.clusterId) ?? false);
  for (const [f, prefixes, a] of announced) {
    if (!families.includes(f)) {
      h.log.debug("bgp ignoring routes of a family not negotiated", { peer: peer.address, family: f });
      continue;
    }
    m?.advReceived.inc({ peer: peer.address }, prefixes.length);
    if (loop) {
      withdrawMany(h, r, f, prefixes);
      continue;
    }
    // eBGP: LOCAL_PREF is ours to set, not the neighbour's (RFC 4271 5.1.5).
    let inAttrs = a;
    if (peer.isEbgp && a.localPref !== undefined) {
      inAttrs = { ...a };
      delete inAttrs.localPref;
    }
    for (const prefix of prefixes) {
      r.adjIn[f].set(prefix, inAttrs);
      importOne(h, r, f, prefix, inAttrs);
    }
  }
}

function withdrawMany(h: PeerHandlingHost, r: PeerRuntime, family: Family, prefixes: string[]): void {
  const id = r.peer.address;
  for (const prefix of prefixes) {
    if (!r.adjIn[family].delete(prefix)) continue;
    h.applyChange(family, prefix, h.rib.remove(family, prefix, id));
  }
}

/** Runs one received route through the import policy into the Loc-RIB (or out of it). */
export function importOne(
  h: PeerHandlingHost,
  r: PeerRuntime,
  family: Family,
  prefix: string,
  attrs: PathAttributes,
): void {
  const id = r.peer.address;
  const pp: PolicyPeer = { address: id, asn: r.peer.config.asn, ebgp: r.peer.isEbgp };
  let accepted: PathAttributes | undefined;
  try {
    accepted = h.importPolicy()({ family, prefix, attrs }, pp);
  } catch (e) {
    h.log.error("bgp import policy failed; rejecting route", { peer: id, prefix, err: e });
  }
  if (!accepted) {
    h.applyChange(family, prefix, h.rib.remove(family, prefix, id));
    return;
  }
  const path: Path = { source: r.source, attrs: accepted, stale: false, since: h.clock.now() };
  h.applyChange(family, prefix, h.rib.set(family, prefix, path));
}

function hexOf(raw: Uint8Array): string {
  return toHex(raw.subarray(0, 512)) + (raw.length > 512 ? "..." : "");
}

/** Canonical text of a peer address (so `fd00::0001` and `fd00::1` are one peer). */
export function canonicalAddress(a: string): string {
  const s = a.startsWith("::ffff:") && a.includes(".") ? a.slice(7) : a;
  const ip = parseIP(s);
  if (!ip) return s;
  return ip.family === 4 ? ip.addr.join(".") : normalizePrefix(`${s}/128`)!.slice(0, -4);
}
