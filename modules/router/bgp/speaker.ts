/**
 * The BGP speaker: peers (added, changed and removed at run time), Adj-RIB-In per peer (before import
 * policy, so a policy change needs no route refresh), the Loc-RIB, Adj-RIB-Out per peer, graceful
 * restart (restarting speaker and helper), route reflection, and an event stream for the router module.
 *
 * Local routes follow MetalLB's session.set: the caller hands over the whole desired set per family and
 * the speaker diffs it against what it holds, announcing and withdrawing only the difference.
 *
 * This file holds the speaker's surface and its wiring; the parts live beside it: listeners.ts (listening
 * sockets and MD5 keys), peer_handling.ts (per-peer state, UPDATEs received, graceful restart helper),
 * export.ts (best paths to UPDATEs per peer) and speaker_metrics.ts.
 */
import {
  type Clock,
  getLogger,
  type Logger,
  type Metrics,
  systemClock,
  type TimerId,
} from "../../../core/mod.ts";
import { parseIP, parseIPv4, socketTransport as ffiSocketTransport } from "../../../ffi/mod.ts";
import { BgpConfigError, CEASE_OTHER_CONFIG_CHANGE, CEASE_PEER_DECONFIGURED } from "./errors.ts";
import { ExportPipeline } from "./export.ts";
import { Listeners } from "./listeners.ts";
import { CAP_GRACEFUL_RESTART, type Capability, normalizePrefix, type UpdateMessage } from "./message.ts";
import {
  canonicalAddress,
  dropPeerRoutes,
  handleUpdate,
  importOne,
  newPeerRuntime,
  peerDown,
  peerEstablished,
  type PeerHandlingHost,
  type PeerRuntime,
  peerStatus,
  sourceFor,
  validatePeer,
} from "./peer_handling.ts";
import { acceptAll, type Policy } from "./policy.ts";
import { LOCAL_SOURCE, LocRib, type Path, type RibChange } from "./rib.ts";
import { Peer, type PeerConfig, type PeerHost, type PeerState } from "./session.ts";
import {
  makeMetrics,
  refreshPeerMetrics,
  removePeerGauges,
  type SpeakerMetrics,
  updatePeerGauges,
} from "./speaker_metrics.ts";
import { denoTransport, type Transport } from "./transport.ts";
import { afiOf, FAMILIES, type Family, ORIGIN_IGP, type PathAttributes, SAFI_UNICAST } from "./types.ts";

export { canonicalAddress } from "./peer_handling.ts";

export interface GracefulRestartOptions {
  enabled: boolean;
  /** Seconds our peers should keep our routes while we restart (max 4095; default 90). */
  restartTime?: number;
  /** We are coming back from a restart with forwarding state kept: set the R and F bits. */
  restarting?: boolean;
  /**
   * RFC 4724 4.1 selection deferral, in seconds: after a restart, hold our advertisements until every
   * established peer has sent End-of-RIB (or this long), so peers never see a half-built table
   * (kube-router's --bgp-graceful-restart-deferral-time). 0 or unset: no deferral.
   */
  deferralTime?: number;
}

export interface SpeakerOptions {
  asn: number;
  routerId: string;
  /** Port to listen on and default remote port (default 179). */
  port?: number;
  /** Addresses to listen on (default 0.0.0.0 and ::); an empty list makes the speaker active-only. */
  listenAddresses?: string[];
  clock?: Clock;
  log?: Logger;
  metrics?: Metrics;
  /** Transport for peers without MD5/TTL/source address (default: Deno's TCP). */
  transport?: Transport;
  /**
   * Transport for peers that need TCP MD5, a TTL or a bound source address. Default: ffi/tcp.ts's
   * libc sockets when `transport` is not given (the listeners switch to it once a peer has a password).
   */
  socketTransport?: Transport;
  gracefulRestart?: GracefulRestartOptions;
  /** Route reflector cluster id (default: the router id). */
  clusterId?: string;
  importPolicy?: Policy;
  exportPolicy?: Policy;
}

/** A route the node originates (pod CIDR, service VIP). */
export interface LocalRoute {
  prefix: string;
  /** Next hop to advertise; default: our session address toward each peer. */
  nextHop?: string;
  communities?: number[];
  med?: number;
  localPref?: number;
  origin?: number;
}

export interface LearnedRoute {
  family: Family;
  prefix: string;
  nextHop: string;
  attrs: PathAttributes;
  /** Peer address, or "local". */
  source: string;
  best: boolean;
  stale: boolean;
  /** Epoch ms. */
  since: number;
}

export type BgpEvent =
  | { type: "peer"; peer: string; asn: number; previous: PeerState; state: PeerState }
  /** The best path to `prefix` is now (or changed to) one learned from `peer`. */
  | { type: "learned"; family: Family; prefix: string; nextHop: string; attrs: PathAttributes; peer: string }
  /** No path learned from a peer is best for `prefix` any more (gone, or our own route won). */
  | { type: "withdrawn"; family: Family; prefix: string; peer: string }
  /**
   * The peer finished sending its initial table of `family` (RFC 4724 End-of-RIB). After a restart
   * the router module may sweep kernel routes it kept once every peer has sent this.
   */
  | { type: "endOfRib"; family: Family; peer: string };

export interface PeerStatus {
  address: string;
  asn: number;
  state: PeerState;
  description: string | undefined;
  routerId: string | undefined;
  localAddress: string | undefined;
  /** Seconds since established, or since the last change when not established. */
  uptime: number;
  upSince: number | undefined;
  holdTime: number;
  keepalive: number;
  families: Family[];
  capabilities: string[];
  messagesSent: Record<string, number>;
  messagesReceived: Record<string, number>;
  /** Per family: prefixes received (pre-policy), accepted (post-policy), advertised. */
  prefixes: Record<string, { received: number; accepted: number; advertised: number }>;
  lastError: string | undefined;
  gracefulRestart: { helperActive: boolean; remoteRestartTime: number | undefined };
}

export class BgpSpeaker {
  readonly asn: number;
  readonly routerId: string;
  readonly port: number;
  readonly clock: Clock;
  readonly log: Logger;
  readonly rib = new LocRib();
  #opts: SpeakerOptions;
  #peers = new Map<string, PeerRuntime>();
  #local: Record<Family, Map<string, { route: LocalRoute; attrs: PathAttributes }>> = {
    "ipv4-unicast": new Map(),
    "ipv6-unicast": new Map(),
  };
  #running = false;
  #subscribers = new Set<(e: BgpEvent) => void>();
  #importPolicy: Policy;
  #metrics: SpeakerMetrics | undefined;
  #metricsTimer: TimerId | undefined;
  readonly clusterId: string;
  #warnedTransport = new Set<string>();
  /** Restarting and waiting for peers' End-of-RIB before advertising (RFC 4724 4.1). */
  #deferring = false;
  #deferralTimer: TimerId | undefined;
  #listeners: Listeners;
  #export: ExportPipeline;
  #handling: PeerHandlingHost;

  constructor(opts: SpeakerOptions) {
    if (!parseIPv4(opts.routerId)) {
      throw new BgpConfigError(`router id ${opts.routerId} is not an IPv4 address`);
    }
    if (!Number.isInteger(opts.asn) || opts.asn < 1 || opts.asn > 0xffffffff) {
      throw new BgpConfigError(`bad AS number ${opts.asn}`);
    }
    this.#opts = opts;
    this.asn = opts.asn;
    this.routerId = opts.routerId;
    this.port = opts.port ?? 179;
    this.clock = opts.clock ?? systemClock;
    this.log = opts.log ?? getLogger({ module: "bgp" });
    this.clusterId = opts.clusterId ?? opts.routerId;
    this.#importPolicy = opts.importPolicy ?? acceptAll;
    if (opts.metrics) this.#metrics = makeMetrics(opts.metrics);
    this.#initHost();
    // The parts see the speaker through these views (functions where they must read its current state).
    this.#listeners = new Listeners({
      port: this.port,
      listenAddresses: opts.listenAddresses,
      clock: this.clock,
      log: this.log,
      running: () => this.#running,
      transport: () => this.#listenTransport(),
      peerConfigs: () => [...this.#peers.values()].map((r) => r.peer.config),
      accepted: (conn) => {
        const r = this.#peers.get(canonicalAddress(conn.remoteAddress));
        if (!r) {
          this.log.info("bgp connection from unknown peer refused", { remote: conn.remoteAddress });
          conn.close();
          return;
        }
        r.peer.accept(conn);
      },
    });
    this.#export = new ExportPipeline({
      asn: this.asn,
      clusterId: this.clusterId,
      rib: this.rib,
      clock: this.clock,
      log: this.log,
      metrics: this.#metrics,
    }, opts.exportPolicy ?? acceptAll);
    this.#handling = {
      asn: this.asn,
      routerId: this.routerId,
      clusterId: this.clusterId,
      rib: this.rib,
      clock: this.clock,
      log: this.log,
      importPolicy: () => this.#importPolicy,
      metrics: this.#metrics,
      running: () => this.#running,
      gracefulRestart: opts.gracefulRestart,
      applyChange: (family, prefix, change) => this.#applyChange(family, prefix, change),
      emit: (e) => this.#emit(e),
      checkDeferral: () => this.#checkDeferral(),
    };
  }

  // -------------------------------------------------------------------------------------------------
  // Lifecycle

  /** Opens the listeners and starts every peer. */
  start(): Promise<void> {
    if (this.#running) return Promise.resolve();
    this.#running = true;
    const err = this.#listeners.open();
    if (err !== undefined) {
      this.#running = false;
      return Promise.reject(err);
    }
    const gr = this.#opts.gracefulRestart;
    if (gr?.enabled && gr.restarting && (gr.deferralTime ?? 0) > 0) {
      this.#deferring = true;
      this.#deferralTimer = this.clock.setTimeout(() => {
        this.#deferralTimer = undefined;
        this.log.info("bgp graceful restart deferral timer expired; advertising");
        this.#endDeferral();
      }, gr.deferralTime! * 1000);
    }
    for (const r of this.#peers.values()) r.peer.start();
    if (this.#metrics) this.#scheduleMetrics();
    this.log.info("bgp speaker started", {
      asn: this.asn,
      routerId: this.routerId,
      port: this.#listeners.port ?? this.port,
    });
    return Promise.resolve();
  }

  /**
   * Which transport listens: the one given, else Deno's TCP, or the libc socket transport once a peer
   * has a password (the kernel drops MD5-signed SYNs at a listener without the peer's key).
   */
  #listenTransport(): Transport {
    if (this.#opts.socketTransport) return this.#opts.socketTransport;
    if (this.#opts.transport) return this.#opts.transport;
    return [...this.#peers.values()].some((r) => r.peer.config.password) ? ffiSocketTransport : denoTransport;
  }

  /** The port actually listened on (useful with port 0 in tests). */
  get listenPort(): number | undefined {
    return this.#listeners.port;
  }

  /**
   * Sends Cease to every peer and closes the listeners. Routes stay in the RIB (for inspection).
   * `notify: false` (a restart with graceful restart) drops the sessions without the Cease, so peers keep
   * our routes as stale until we are back (RFC 4724 helper mode, which a Cease would end; kube-router gets
   * the same from GoBGP with RFC 8538 notifications).
   */
  async stop(opts: { notify?: boolean } = {}): Promise<void> {
    if (!this.#running) return;
    this.#running = false;
    this.#listeners.close();
    for (const r of this.#peers.values()) {
      r.peer.stop(undefined, opts);
      if (r.staleTimer !== undefined) this.clock.clearTimeout(r.staleTimer);
    }
    if (this.#metricsTimer !== undefined) this.clock.clearTimeout(this.#metricsTimer);
    this.#metricsTimer = undefined;
    if (this.#deferralTimer !== undefined) this.clock.clearTimeout(this.#deferralTimer);
    this.#deferralTimer = undefined;
    await Promise.all([...this.#peers.values()].map((r) => r.peer.flushed().catch(() => {})));
  }

  // -------------------------------------------------------------------------------------------------
  // Events

  /** Calls `fn` for every peer state change and every change of a learned best path. */
  subscribe(fn: (e: BgpEvent) => void): () => void {
    this.#subscribers.add(fn);
    return () => this.#subscribers.delete(fn);
  }

  #emit(e: BgpEvent): void {
    for (const fn of this.#subscribers) {
      try {
        fn(e);
      } catch (err) {
        this.log.error("bgp event subscriber failed", { err });
      }
    }
  }

  // -------------------------------------------------------------------------------------------------
  // Peers

  addPeer(config: PeerConfig): void {
    const cfg = validatePeer(config);
    if (this.#peers.has(cfg.address)) throw new BgpConfigError(`peer ${cfg.address} already exists`);
    const peer = new Peer(cfg, this.#host, this.port);
    const rt = newPeerRuntime(peer, sourceFor(this.asn, cfg));
    this.#peers.set(cfg.address, rt);
    if (cfg.password) {
      this.#listeners.reopenIfNeeded();
      this.#listeners.setPassword(cfg);
    }
    updatePeerGauges(this.#metrics, rt);
    if (this.#running) peer.start();
  }

  /** Stops the session with Cease "peer de-configured" and forgets the peer and its routes. */
  removePeer(address: string): void {
    const key = canonicalAddress(address);
    const r = this.#peers.get(key);
    if (!r) return;
    r.peer.stop(CEASE_PEER_DECONFIGURED);
    // A stop always withdraws: graceful restart does not apply to a de-configured peer.
    dropPeerRoutes(this.#handling, r, FAMILIES);
    if (r.staleTimer !== undefined) this.clock.clearTimeout(r.staleTimer);
    this.#peers.delete(key);
    if (r.peer.config.password) this.#listeners.setPassword({ ...r.peer.config, password: "" });
    removePeerGauges(this.#metrics, key, r);
  }

  /**
   * Applies a changed peer config. Changes to how the session is made (port, password, families, ASN,
   * timers) reset it; changes to what we send (next-hop-self, prepend, RR client) re-run the export.
   */
  updatePeer(config: PeerConfig): void {
    const cfg = validatePeer(config);
    const r = this.#peers.get(cfg.address);
    if (!r) return this.addPeer(cfg);
    const old = r.peer.config;
    const sessionKeys: (keyof PeerConfig)[] = [
      "asn",
      "port",
      "localAddress",
      "passive",
      "password",
      "multihopTtl",
      "holdTime",
      "keepaliveInterval",
      "families",
      "gracefulRestart",
    ];
    const changed = sessionKeys.some((k) => JSON.stringify(old[k]) !== JSON.stringify(cfg[k]));
    if (changed) {
      this.removePeer(cfg.address);
      this.addPeer(cfg);
      return;
    }
    r.peer.config = cfg;
    r.source = sourceFor(this.asn, cfg);
    this.#export.resetCache(r);
    this.#exportAll(r);
  }

  /** Makes the peer set exactly `configs`: adds, updates and removes as needed. */
  setPeers(configs: PeerConfig[]): void {
    const want = new Map(configs.map((c) => [canonicalAddress(c.address), c]));
    for (const addr of [...this.#peers.keys()]) if (!want.has(addr)) this.removePeer(addr);
    for (const c of want.values()) this.updatePeer(c);
  }

  /** Resets one session (Cease "other configuration change"); the FSM reconnects. */
  resetPeer(address: string): void {
    this.#peers.get(canonicalAddress(address))?.peer.reset(CEASE_OTHER_CONFIG_CHANGE, "reset requested");
  }

  /** Asks a peer to resend its routes (RFC 2918 ROUTE-REFRESH); false if it cannot. */
  refresh(address: string, family: Family): boolean {
    return this.#peers.get(canonicalAddress(address))?.peer.requestRefresh(family) ?? false;
  }

  // -------------------------------------------------------------------------------------------------
  // Local routes

  /**
   * Makes the routes this speaker originates for `family` exactly `routes`; announces what is new or
   * changed and withdraws what is gone. Invalid prefixes throw `BgpConfigError` before anything changes.
   */
  set(family: Family, routes: LocalRoute[]): void {
    const want = this.#checkLocal(family, routes);
    const have = this.#local[family];
    for (const [prefix] of have) if (!want.has(prefix)) this.#unoriginate(family, prefix);
    for (const [prefix, route] of want) this.#originate(family, prefix, route);
  }

  /**
   * Changes only some of the routes this speaker originates for `family`: `routes` are added or
   * replaced, the `withdraw` prefixes removed, the rest kept. `set` for a few routes out of many (a
   * Service's VIPs), without revisiting the others. Invalid prefixes throw before anything changes.
   */
  update(family: Family, routes: LocalRoute[], withdraw: readonly string[] = []): void {
    const want = this.#checkLocal(family, routes);
    const gone = this.#checkLocal(family, withdraw.map((prefix) => ({ prefix })));
    for (const [prefix] of gone) if (!want.has(prefix)) this.#unoriginate(family, prefix);
    for (const [prefix, route] of want) this.#originate(family, prefix, route);
  }

  #checkLocal(family: Family, routes: LocalRoute[]): Map<string, LocalRoute> {
    const want = new Map<string, LocalRoute>();
    for (const r of routes) {
      const p = normalizePrefix(r.prefix);
      const isV6 = p?.includes(":");
      if (!p || (family === "ipv6-unicast") !== !!isV6) {
        throw new BgpConfigError(`route ${r.prefix} is not a valid ${family} prefix`);
      }
      if (r.nextHop !== undefined && !parseIP(r.nextHop)) {
        throw new BgpConfigError(`route ${r.prefix}: bad next hop ${r.nextHop}`);
      }
      want.set(p, r);
    }
    return want;
  }

  #unoriginate(family: Family, prefix: string): void {
    const have = this.#local[family];
    if (!have.delete(prefix)) return;
    this.#applyChange(family, prefix, this.rib.remove(family, prefix, LOCAL_SOURCE.id));
  }

  #originate(family: Family, prefix: string, route: LocalRoute): void {
    const have = this.#local[family];
    const cur = have.get(prefix);
    if (cur && sameLocal(cur.route, route)) return;
    const attrs: PathAttributes = {
      origin: route.origin ?? ORIGIN_IGP,
      asPath: [],
      nextHop: route.nextHop ?? "",
      ...(route.med !== undefined ? { med: route.med } : {}),
      ...(route.localPref !== undefined ? { localPref: route.localPref } : {}),
      ...(route.communities && route.communities.length ? { communities: [...route.communities] } : {}),
    };
    have.set(prefix, { route, attrs });
    const path: Path = { source: LOCAL_SOURCE, attrs, stale: false, since: this.clock.now() };
    this.#applyChange(family, prefix, this.rib.set(family, prefix, path));
  }

  /** Replaces the import policy and re-evaluates every received route (soft reconfiguration inbound). */
  setImportPolicy(policy: Policy): void {
    this.#importPolicy = policy;
    for (const r of this.#peers.values()) {
      for (const family of FAMILIES) {
        for (const [prefix, attrs] of r.adjIn[family]) importOne(this.#handling, r, family, prefix, attrs);
      }
    }
  }

  /** Replaces the export policy and re-advertises to every peer. */
  setExportPolicy(policy: Policy): void {
    this.#export.policy = policy;
    for (const r of this.#peers.values()) {
      this.#export.resetCache(r);
      this.#exportAll(r);
    }
  }

  // -------------------------------------------------------------------------------------------------
  // Queries

  /** The Loc-RIB of `family`: every path, best first per prefix. */
  routes(family: Family): LearnedRoute[] {
    const out: LearnedRoute[] = [];
    for (const [prefix, best, paths] of this.rib.entries(family)) {
      paths.sort((a, b) => (a === best ? -1 : b === best ? 1 : 0));
      for (const p of paths) out.push(this.#learned(family, prefix, p, p === best));
    }
    return out;
  }

  /** Routes received from one peer before import policy (its Adj-RIB-In). */
  adjRibIn(address: string, family: Family): { prefix: string; attrs: PathAttributes }[] {
    const r = this.#peers.get(canonicalAddress(address));
    return r ? [...r.adjIn[family]].map(([prefix, attrs]) => ({ prefix, attrs })) : [];
  }

  /** Routes last sent to one peer (its Adj-RIB-Out). */
  adjRibOut(address: string, family: Family): { prefix: string; attrs: PathAttributes }[] {
    const r = this.#peers.get(canonicalAddress(address));
    return r ? [...r.adjOut[family]].map(([prefix, attrs]) => ({ prefix, attrs })) : [];
  }

  peers(): PeerStatus[] {
    return [...this.#peers.values()].map((r) => this.#status(r));
  }

  peer(address: string): PeerStatus | undefined {
    const r = this.#peers.get(canonicalAddress(address));
    return r ? this.#status(r) : undefined;
  }

  #learned(family: Family, prefix: string, p: Path, best: boolean): LearnedRoute {
    return {
      family,
      prefix,
      nextHop: p.attrs.nextHop,
      attrs: p.attrs,
      source: p.source.id,
      best,
      stale: p.stale,
      since: p.since,
    };
  }

  #status(r: PeerRuntime): PeerStatus {
    return peerStatus(r, this.rib, this.clock.now());
  }

  // -------------------------------------------------------------------------------------------------
  // Session callbacks

  #host: PeerHost = {
    localAsn: 0,
    routerId: "",
    clock: systemClock,
    log: getLogger(),
    extraCapabilities: (peer) => this.#extraCaps(peer),
    transportFor: (peer) => this.#transportFor(peer),
    onStateChange: (peer, previous, state) => this.#onStateChange(peer, previous, state),
    onEstablished: (peer) => this.#onEstablished(peer),
    onUpdate: (peer, u, raw) => this.#onUpdate(peer, u, raw),
    onRouteRefresh: (peer, family) => this.#onRouteRefresh(peer, family),
    onDown: (peer, info) => this.#onDown(peer, info),
  };

  #initHost(): void {
    Object.assign(this.#host, {
      localAsn: this.asn,
      routerId: this.routerId,
      clock: this.clock,
      log: this.log,
    });
  }

  #extraCaps(peer: Peer): Capability[] {
    const gr = this.#opts.gracefulRestart;
    if (!gr?.enabled || peer.config.gracefulRestart === false) return [];
    return [{
      code: CAP_GRACEFUL_RESTART,
      restarting: !!gr.restarting,
      notification: false,
      time: Math.min(gr.restartTime ?? 90, 4095),
      families: peer.localFamilies().map((f) => ({
        afi: afiOf(f),
        safi: SAFI_UNICAST,
        forwarding: !!gr.restarting,
      })),
    }];
  }

  #transportFor(peer: Peer): Transport {
    const c = peer.config;
    const base = this.#opts.transport ?? denoTransport;
    if (!(c.password || c.multihopTtl || c.localAddress)) return base;
    if (this.#opts.socketTransport) return this.#opts.socketTransport;
    // Real networking (no test transport given): the libc sockets of ffi/ do MD5, TTL, source address.
    if (!this.#opts.transport) return ffiSocketTransport;
    if (!this.#warnedTransport.has(c.address) && !c.password) {
      // A password cannot be ignored (the connect fails and says why); TTL and source address can.
      this.#warnedTransport.add(c.address);
      this.log.warn("bgp transport cannot set TTL or source address; using defaults", {
        peer: c.address,
        transport: base.name,
      });
    }
    return base;
  }

  #onStateChange(peer: Peer, previous: PeerState, state: PeerState): void {
    const r = this.#peers.get(peer.address);
    if (r) updatePeerGauges(this.#metrics, r, previous);
    this.#emit({ type: "peer", peer: peer.address, asn: peer.config.asn, previous, state });
  }

  #onEstablished(peer: Peer): void {
    const r = this.#peers.get(peer.address);
    if (!r) return;
    peerEstablished(this.#handling, r);
    if (this.#deferring) return; // the table goes out when the deferral ends
    this.#export.sendInitialTable(r);
  }

  #endDeferral(): void {
    if (!this.#deferring) return;
    this.#deferring = false;
    if (this.#deferralTimer !== undefined) this.clock.clearTimeout(this.#deferralTimer);
    this.#deferralTimer = undefined;
    for (const r of this.#peers.values()) {
      if (r.peer.state === "Established") this.#export.sendInitialTable(r);
    }
  }

  /** Ends the deferral once every established peer has sent End-of-RIB for all its families. */
  #checkDeferral(): void {
    if (!this.#deferring) return;
    const up = [...this.#peers.values()].filter((r) => r.peer.state === "Established");
    if (up.length && up.every((r) => r.peer.families.every((f) => r.eorReceived.has(f)))) {
      this.log.info("bgp End-of-RIB from every peer; ending graceful restart deferral");
      this.#endDeferral();
    }
  }

  #onDown(peer: Peer, info: { reason: string; gracefulRestartEligible: boolean }): void {
    const r = this.#peers.get(peer.address);
    if (r) peerDown(this.#handling, r, info);
  }

  #onRouteRefresh(peer: Peer, family: Family): void {
    const r = this.#peers.get(peer.address);
    if (!r) return;
    this.log.debug("bgp route refresh requested", { peer: peer.address, family });
    this.#export.resend(r, family);
  }

  #onUpdate(peer: Peer, u: UpdateMessage, raw: Uint8Array): void {
    const r = this.#peers.get(peer.address);
    if (r) handleUpdate(this.#handling, r, u, raw);
  }

  // -------------------------------------------------------------------------------------------------
  // Best path changes and export

  #applyChange(family: Family, prefix: string, change: RibChange): void {
    if (!change) return;
    const { before, after } = change;
    if (this.#subscribers.size) {
      if (after && after.source.id !== "local") {
        this.#emit({
          type: "learned",
          family,
          prefix,
          nextHop: after.attrs.nextHop,
          attrs: after.attrs,
          peer: after.source.id,
        });
      } else if (before && before.source.id !== "local") {
        this.#emit({ type: "withdrawn", family, prefix, peer: before.source.id });
      }
    }
    if (this.#deferring) return;
    this.#export.bestChanged(this.#peers.values(), family, prefix, after);
  }

  #exportAll(r: PeerRuntime): void {
    if (this.#deferring) return;
    this.#export.exportAll(r);
  }

  // -------------------------------------------------------------------------------------------------
  // Metrics

  #scheduleMetrics(): void {
    this.#metricsTimer = this.clock.setTimeout(() => {
      this.refreshMetrics();
      if (this.#running) this.#scheduleMetrics();
    }, 5000);
  }

  /** Brings the gauges (uptime, prefix counts) and message counters up to date. */
  refreshMetrics(): void {
    const m = this.#metrics;
    if (!m) return;
    for (const r of this.#peers.values()) refreshPeerMetrics(m, r.peer.address, this.#status(r));
  }
}

function sameLocal(a: LocalRoute, b: LocalRoute): boolean {
  return a.nextHop === b.nextHop && a.med === b.med && a.localPref === b.localPref && a.origin === b.origin &&
    JSON.stringify(a.communities ?? []) === JSON.stringify(b.communities ?? []);
}
