/**
 * The export pipeline: from a best path in the Loc-RIB to UPDATEs on the wire for each established peer.
 * Per peer: who may receive a path (iBGP only through route reflection, NO_ADVERTISE/NO_EXPORT), the
 * attributes it is sent with (AS_PATH prepend, next-hop-self, LOCAL_PREF/MED rules, originator and
 * cluster list when reflecting), the export policy, then a per-peer queue that batches every change of
 * one event-loop turn into UPDATEs grouped by shared attributes, and the Adj-RIB-Out that remembers what
 * was sent (so an unchanged path is never resent, and a route refresh resends exactly it).
 */
import type { Clock, Logger } from "../../../core/mod.ts";
import { encodeAnnouncements, encodeEndOfRib, encodeWithdrawals, toHex } from "./message.ts";
import { acceptAll, type Policy } from "./policy.ts";
import type { LocRib, Path } from "./rib.ts";
import type { Peer } from "./session.ts";
import type { PeerRuntime } from "./peer_handling.ts";
import type { SpeakerMetrics } from "./speaker_metrics.ts";
import { AS_SEQUENCE, FAMILIES, type Family, NO_ADVERTISE, NO_EXPORT, type PathAttributes } from "./types.ts";

/** What the pipeline needs of the speaker. */
export interface ExportHost {
  readonly asn: number;
  readonly clusterId: string;
  readonly rib: LocRib;
  readonly clock: Clock;
  readonly log: Logger;
  readonly metrics: SpeakerMetrics | undefined;
}

export class ExportPipeline {
  /** The export policy (`acceptAll` when none: then results are cached per source attributes). */
  policy: Policy;
  #h: ExportHost;
  #warnedNextHop = new Set<string>();

  constructor(host: ExportHost, policy: Policy) {
    this.#h = host;
    this.policy = policy;
  }

  /** The best path of `prefix` changed to `after` (undefined: no path left): queue it to every peer up. */
  bestChanged(peers: Iterable<PeerRuntime>, family: Family, prefix: string, after: Path | undefined): void {
    for (const r of peers) {
      if (r.peer.state !== "Established" || !r.peer.families.includes(family)) continue;
      this.queue(r, family, prefix, after ? this.#exportAttrs(r, family, prefix, after) : null);
    }
  }

  /** Queues the whole Loc-RIB to `r`, and withdrawals of whatever it was sent that is gone. */
  exportAll(r: PeerRuntime): void {
    if (r.peer.state !== "Established") return;
    for (const f of r.peer.families) {
      const seen = new Set<string>();
      for (const [prefix, best] of this.#h.rib.entries(f)) {
        seen.add(prefix);
        this.queue(r, f, prefix, this.#exportAttrs(r, f, prefix, best));
      }
      for (const prefix of r.adjOut[f].keys()) if (!seen.has(prefix)) this.queue(r, f, prefix, null);
    }
  }

  /** Forgets the cached per-peer attributes (after the peer's config or the policy changed). */
  resetCache(r: PeerRuntime): void {
    r.exportCache = { "ipv4-unicast": new WeakMap(), "ipv6-unicast": new WeakMap() };
    r.interned.clear();
  }

  /** Sends the initial table on a new session: everything, then End-of-RIB per family. */
  sendInitialTable(r: PeerRuntime): void {
    const peer = r.peer;
    this.resetCache(r);
    for (const f of FAMILIES) {
      r.adjOut[f].clear();
      r.pending[f].clear();
    }
    this.exportAll(r);
    this.flush(r);
    for (const f of peer.families) peer.sendUpdates([encodeEndOfRib(f)]);
  }

  /** Answers a ROUTE-REFRESH: resends the family's whole Adj-RIB-Out, then End-of-RIB. */
  resend(r: PeerRuntime, family: Family): void {
    const peer = r.peer;
    const out = r.adjOut[family];
    const groups = new Map<PathAttributes, string[]>();
    for (const [prefix, attrs] of out) {
      let g = groups.get(attrs);
      if (!g) groups.set(attrs, g = []);
      g.push(prefix);
    }
    const msgs: Uint8Array[] = [];
    for (const [attrs, prefixes] of groups) {
      msgs.push(...encodeAnnouncements(family, attrs, prefixes, { as4: peer.as4 }));
    }
    msgs.push(encodeEndOfRib(family));
    peer.sendUpdates(msgs);
    this.#h.metrics?.advSent.inc({ peer: peer.address }, out.size);
  }

  /** The attributes `best` is sent to peer `r` with, or null when it must not be sent. */
  #exportAttrs(r: PeerRuntime, family: Family, prefix: string, best: Path): PathAttributes | null {
    const peer = r.peer;
    if (best.source.id === peer.address) return null;
    const src = best.source;
    const local = src.id === "local";
    if (!local && !src.ebgp && !peer.isEbgp) {
      // iBGP to iBGP only through route reflection (RFC 4456 6): client routes go to all, others to clients.
      if (!src.rrClient && !peer.config.routeReflectorClient) return null;
    }
    const comms = best.attrs.communities;
    if (comms && (comms.includes(NO_ADVERTISE) || (peer.isEbgp && comms.includes(NO_EXPORT)))) return null;
    const cache = r.exportCache[family];
    const cached = cache.get(best.attrs);
    if (cached !== undefined && !this.#policyIsPrefixDependent) return cached;
    // Without a policy the transform depends only on the source attributes: cache it per object.
    let out = cached !== undefined ? cached : this.#transformForPeer(r, family, best);
    if (cached === undefined) cache.set(best.attrs, out);
    if (out && this.policy !== acceptAll) {
      try {
        out = this.policy({ family, prefix, attrs: out }, {
          address: peer.address,
          asn: peer.config.asn,
          ebgp: peer.isEbgp,
        }) ?? null;
      } catch (e) {
        this.#h.log.error("bgp export policy failed; not advertising", {
          peer: peer.address,
          prefix,
          err: e,
        });
        out = null;
      }
    }
    // A policy may look at the prefix, so its result is not cached; equal results are interned so that
    // prefixes sharing attributes still share UPDATE messages.
    return out && this.policy !== acceptAll ? this.#intern(r, out) : out;
  }

  #intern(r: PeerRuntime, attrs: PathAttributes): PathAttributes {
    const key = JSON.stringify(attrs, jsonBytes);
    const have = r.interned.get(key);
    if (have) return have;
    if (r.interned.size > 10_000) r.interned.clear(); // only packing suffers; bound the memory
    r.interned.set(key, attrs);
    return attrs;
  }

  get #policyIsPrefixDependent(): boolean {
    return this.policy !== acceptAll;
  }

  #transformForPeer(r: PeerRuntime, family: Family, best: Path): PathAttributes | null {
    const asn = this.#h.asn;
    const peer = r.peer;
    const src = best.source;
    const a = best.attrs;
    const self = this.#selfNextHop(peer, family);
    const out: PathAttributes = { origin: a.origin, asPath: a.asPath, nextHop: a.nextHop };
    if (a.atomicAggregate) out.atomicAggregate = true;
    if (a.aggregator) out.aggregator = a.aggregator;
    if (a.communities) out.communities = a.communities;
    if (a.unknown) out.unknown = a.unknown;
    if (peer.isEbgp) {
      const prepend = peer.config.asPathPrepend;
      const extra: number[] = [];
      if (prepend) { for (let i = 0; i < prepend.count; i++) extra.push(prepend.asn ?? asn); }
      const first = a.asPath[0];
      out.asPath = first && first.type === AS_SEQUENCE && first.asns.length + extra.length + 1 <= 255
        ? [{ type: AS_SEQUENCE, asns: [asn, ...extra, ...first.asns] }, ...a.asPath.slice(1)]
        : [{ type: AS_SEQUENCE, asns: [asn, ...extra] }, ...a.asPath];
      // MED is not passed between ASes, except our own (RFC 4271 5.1.4).
      if (src.id === "local" && a.med !== undefined) out.med = a.med;
      if (!self) return null;
      out.nextHop = self;
    } else {
      out.localPref = a.localPref ?? 100;
      if (a.med !== undefined) out.med = a.med;
      const reflected = src.id !== "local" && !src.ebgp;
      if (reflected) {
        out.originatorId = a.originatorId ?? src.routerId;
        out.clusterList = [this.#h.clusterId, ...(a.clusterList ?? [])];
      }
      const sameFamily = (nh: string) => (family === "ipv6-unicast") === nh.includes(":");
      if (peer.config.nextHopSelf && !reflected || !a.nextHop || !sameFamily(a.nextHop)) {
        if (!self) return null;
        out.nextHop = self;
      }
    }
    if (family === "ipv6-unicast" && a.linkLocalNextHop && out.nextHop === a.nextHop && !peer.isEbgp) {
      out.linkLocalNextHop = a.linkLocalNextHop;
    }
    return out;
  }

  #selfNextHop(peer: Peer, family: Family): string | undefined {
    const local = peer.localAddress;
    const v6 = family === "ipv6-unicast";
    if (local && local.includes(":") === v6 && !local.startsWith("fe80")) return local;
    const configured = v6 ? peer.config.ipv6NextHop : peer.config.ipv4NextHop;
    if (!configured && !this.#warnedNextHop.has(`${peer.address} ${family}`)) {
      this.#warnedNextHop.add(`${peer.address} ${family}`);
      this.#h.log.warn("bgp no next hop of this family toward peer; its routes are not advertised", {
        peer: peer.address,
        family,
        hint: v6 ? "set ipv6NextHop" : "set ipv4NextHop",
      });
    }
    return configured;
  }

  /** Queues one prefix's new attributes (null: withdraw) to `r`; flushed at the end of this turn. */
  queue(r: PeerRuntime, family: Family, prefix: string, attrs: PathAttributes | null): void {
    const cur = r.adjOut[family].get(prefix);
    const pend = r.pending[family];
    if (attrs === null) {
      if (cur === undefined && !pend.has(prefix)) return;
    } else if (cur !== undefined && sameAttrs(cur, attrs) && !pend.has(prefix)) return;
    pend.set(prefix, attrs);
    if (!r.flushScheduled) {
      r.flushScheduled = true;
      this.#h.clock.setTimeout(() => this.flush(r), 0);
    }
  }

  /** Sends what is queued for `r`: withdrawals, then announcements grouped by shared attributes. */
  flush(r: PeerRuntime): void {
    r.flushScheduled = false;
    const peer = r.peer;
    if (peer.state !== "Established") {
      for (const f of FAMILIES) r.pending[f].clear();
      return;
    }
    const ctx = { as4: peer.as4 };
    const msgs: Uint8Array[] = [];
    let advertised = 0;
    for (const f of FAMILIES) {
      const pend = r.pending[f];
      if (!pend.size) continue;
      const withdraw: string[] = [];
      const groups = new Map<PathAttributes, string[]>();
      for (const [prefix, attrs] of pend) {
        if (attrs === null) {
          if (r.adjOut[f].delete(prefix)) withdraw.push(prefix);
        } else {
          r.adjOut[f].set(prefix, attrs);
          let g = groups.get(attrs);
          if (!g) groups.set(attrs, g = []);
          g.push(prefix);
        }
      }
      pend.clear();
      if (withdraw.length) msgs.push(...encodeWithdrawals(f, withdraw));
      for (const [attrs, prefixes] of groups) {
        try {
          msgs.push(...encodeAnnouncements(f, attrs, prefixes, ctx));
          advertised += prefixes.length;
        } catch (e) {
          // A next hop of the wrong family or similar: skip these routes, keep the session.
          this.#h.log.error("bgp cannot encode routes", {
            peer: peer.address,
            family: f,
            count: prefixes.length,
            err: e,
          });
          for (const p of prefixes) r.adjOut[f].delete(p);
        }
      }
    }
    if (advertised) this.#h.metrics?.advSent.inc({ peer: peer.address }, advertised);
    peer.sendUpdates(msgs);
  }
}

function sameAttrs(a: PathAttributes, b: PathAttributes): boolean {
  if (a === b) return true;
  return JSON.stringify(a, jsonBytes) === JSON.stringify(b, jsonBytes);
}

function jsonBytes(_k: string, v: unknown): unknown {
  return v instanceof Uint8Array ? toHex(v) : v;
}
