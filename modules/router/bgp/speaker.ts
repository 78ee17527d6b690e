/**
 * The BGP speaker: peers (added, changed and removed at run time), Adj-RIB-In per peer (before import
 * policy, so a policy change needs no route refresh), the Loc-RIB, Adj-RIB-Out per peer, graceful
 * restart (restarting speaker and helper), route reflection, and an event stream for the router module.
 *
 * Local routes follow MetalLB's session.set: the caller hands over the whole desired set per family and
 * the speaker diffs it against what it holds, announcing and withdrawing only the difference.
 */
import {
  type Clock,
  type Counter,
  type Gauge,
  getLogger,
  type Logger,
  type Metrics,
  systemClock,
  type TimerId,
} from "../../../core/mod.ts";
import { BgpConfigError, CEASE_OTHER_CONFIG_CHANGE, CEASE_PEER_DECONFIGURED } from "./errors.ts";
import {
  CAP_GRACEFUL_RESTART,
  type Capability,
  encodeAnnouncements,
  encodeEndOfRib,
  encodeWithdrawals,
  endOfRibFamily,
  normalizePrefix,
  toHex,
  type UpdateMessage,
} from "./message.ts";
import { acceptAll, type Policy, type PolicyPeer } from "./policy.ts";
import { LOCAL_SOURCE, LocRib, type Path, type PathSource } from "./rib.ts";
import { Peer, type PeerConfig, type PeerHost, type PeerState, STATE_NUMBER } from "./session.ts";
import { type BgpListener, denoTransport, type Transport } from "./transport.ts";
import { parseIP, parseIPv4, socketTransport as ffiSocketTransport } from "../../../ffi/mod.ts";
import {
  afiOf,
  AS_SEQUENCE,
  FAMILIES,
  type Family,
  NO_ADVERTISE,
  NO_EXPORT,
  ORIGIN_IGP,
  type PathAttributes,
  SAFI_UNICAST,
} from "./types.ts";

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

type AdjTable = Record<Family, Map<string, PathAttributes>>;
const newAdj = (): AdjTable => ({ "ipv4-unicast": new Map(), "ipv6-unicast": new Map() });

interface PeerRuntime {
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

interface SpeakerMetrics {
  peerInfo: Gauge;
  peerState: Gauge;
  uptime: Gauge;
  sent: Counter;
  received: Counter;
  prefixesReceived: Gauge;
  prefixesAccepted: Gauge;
  prefixesAdvertised: Gauge;
  advSent: Counter;
  advReceived: Counter;
  malformed: Counter;
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
  #listeners: BgpListener[] = [];
  #listenPorts: number[] = [];
  #running = false;
  #subscribers = new Set<(e: BgpEvent) => void>();
  #importPolicy: Policy;
  #exportPolicy: Policy;
  #metrics: SpeakerMetrics | undefined;
  #metricsTimer: TimerId | undefined;
  readonly clusterId: string;
  #warnedTransport = new Set<string>();
  #listenTransportName = "";
  #acceptLoops: Promise<void>[] = [];
  #warnedNextHop = new Set<string>();
  /** Restarting and waiting for peers' End-of-RIB before advertising (RFC 4724 4.1). */
  #deferring = false;
  #deferralTimer: TimerId | undefined;

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
    this.#exportPolicy = opts.exportPolicy ?? acceptAll;
    if (opts.metrics) this.#metrics = makeMetrics(opts.metrics);
    this.#initHost();
  }

  // -------------------------------------------------------------------------------------------------
  // Lifecycle

  /** Opens the listeners and starts every peer. */
  start(): Promise<void> {
    if (this.#running) return Promise.resolve();
    this.#running = true;
    const err = this.#openListeners();
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
      port: this.#listenPorts[0] ?? this.port,
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

  /** Opens the listeners; returns the error when no address could be bound. */
  #openListeners(): unknown {
    // "::" first: with Deno's TCP it is dual-stack and 0.0.0.0 then fails with EADDRINUSE, which is
    // fine; with the socket transport (IPV6_V6ONLY) both bind. Only when no address works is it an error.
    const explicit = this.#opts.listenAddresses !== undefined;
    const addrs = this.#opts.listenAddresses ?? ["::", "0.0.0.0"];
    const t = this.#listenTransport();
    let firstError: unknown;
    for (const address of addrs) {
      try {
        const l = t.listen({ address, port: this.port });
        this.#listeners.push(l);
        this.#listenPorts.push(l.port);
        this.#acceptLoops.push(this.#acceptLoop(l));
      } catch (e) {
        firstError ??= e;
        if (explicit) this.log.warn("bgp cannot listen", { address, port: this.port, err: e });
        else this.log.debug("bgp listen skipped", { address, err: e });
      }
    }
    this.#listenTransportName = t.name;
    if (addrs.length && !this.#listeners.length) return firstError ?? new BgpConfigError("no listen address");
    for (const r of this.#peers.values()) {
      if (r.peer.config.password) this.#setListenerPassword(r.peer.config);
    }
    return undefined;
  }

  /**
   * Reopens the listeners when the transport they need changed (the first MD5 peer was added). Deno
   * releases a listening socket only once its pending accept has ended, so wait for the accept loops,
   * and retry a few times while the port is still held.
   */
  #relistenIfNeeded(): void {
    if (!this.#running || this.#listenTransport().name === this.#listenTransportName) return;
    this.log.info("bgp reopening listeners with the socket transport for TCP MD5");
    const old = this.#listeners;
    const loops = this.#acceptLoops;
    this.#listeners = [];
    this.#listenPorts = [];
    this.#acceptLoops = [];
    this.#listenTransportName = this.#listenTransport().name;
    for (const l of old) l.close();
    const attempt = async (left: number): Promise<void> => {
      await Promise.all(loops);
      if (!this.#running || this.#listeners.length) return;
      const err = this.#openListeners();
      if (err === undefined) return;
      if (left > 0) {
        this.clock.setTimeout(() => void attempt(left - 1), 100);
      } else this.log.error("bgp cannot reopen listeners", { err });
    };
    void attempt(20);
  }

  /** The port actually listened on (useful with port 0 in tests). */
  get listenPort(): number | undefined {
    return this.#listenPorts[0];
  }

  /** Sends Cease to every peer and closes the listeners. Routes stay in the RIB (for inspection). */
  async stop(): Promise<void> {
    if (!this.#running) return;
    this.#running = false;
    for (const l of this.#listeners) l.close();
    this.#listeners = [];
    for (const r of this.#peers.values()) {
      r.peer.stop();
      if (r.staleTimer !== undefined) this.clock.clearTimeout(r.staleTimer);
    }
    if (this.#metricsTimer !== undefined) this.clock.clearTimeout(this.#metricsTimer);
    this.#metricsTimer = undefined;
    if (this.#deferralTimer !== undefined) this.clock.clearTimeout(this.#deferralTimer);
    this.#deferralTimer = undefined;
    await Promise.all([...this.#peers.values()].map((r) => r.peer.flushed().catch(() => {})));
  }

  async #acceptLoop(l: BgpListener): Promise<void> {
    while (this.#running) {
      let conn;
      try {
        conn = await l.accept();
      } catch (e) {
        if (this.#running && this.#listeners.includes(l)) this.log.warn("bgp accept failed", { err: e });
        return;
      }
      const r = this.#peers.get(canonicalAddress(conn.remoteAddress));
      if (!r) {
        this.log.info("bgp connection from unknown peer refused", { remote: conn.remoteAddress });
        conn.close();
        continue;
      }
      r.peer.accept(conn);
    }
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
    const cfg = this.#validatePeer(config);
    if (this.#peers.has(cfg.address)) throw new BgpConfigError(`peer ${cfg.address} already exists`);
    const peer = new Peer(cfg, this.#host, this.port);
    const rt: PeerRuntime = {
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
      source: this.#sourceFor(cfg),
    };
    this.#peers.set(cfg.address, rt);
    if (cfg.password) {
      this.#relistenIfNeeded();
      this.#setListenerPassword(cfg);
    }
    this.#updatePeerGauges(rt);
    if (this.#running) peer.start();
  }

  /** Stops the session with Cease "peer de-configured" and forgets the peer and its routes. */
  removePeer(address: string): void {
    const key = canonicalAddress(address);
    const r = this.#peers.get(key);
    if (!r) return;
    r.peer.stop(CEASE_PEER_DECONFIGURED);
    // A stop always withdraws: graceful restart does not apply to a de-configured peer.
    this.#dropPeerRoutes(r, FAMILIES);
    if (r.staleTimer !== undefined) this.clock.clearTimeout(r.staleTimer);
    this.#peers.delete(key);
    if (r.peer.config.password) this.#setListenerPassword({ ...r.peer.config, password: "" });
    const m = this.#metrics;
    if (m) {
      for (const g of [m.peerState, m.uptime]) g.remove({ peer: key });
      m.peerInfo.remove(this.#infoLabels(r));
    }
  }

  /**
   * Applies a changed peer config. Changes to how the session is made (port, password, families, ASN,
   * timers) reset it; changes to what we send (next-hop-self, prepend, RR client) re-run the export.
   */
  updatePeer(config: PeerConfig): void {
    const cfg = this.#validatePeer(config);
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
    r.source = this.#sourceFor(cfg);
    this.#resetExportCache(r);
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

  #validatePeer(config: PeerConfig): PeerConfig {
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

  #sourceFor(cfg: PeerConfig): PathSource {
    return {
      id: cfg.address,
      ebgp: cfg.asn !== this.asn,
      routerId: "0.0.0.0",
      address: cfg.address,
      rrClient: !!cfg.routeReflectorClient,
    };
  }

  #setListenerPassword(cfg: PeerConfig): void {
    for (const l of this.#listeners) {
      try {
        l.setPassword(cfg.address, cfg.password || undefined);
      } catch (e) {
        this.log.error("bgp cannot install MD5 key on listener", { peer: cfg.address, err: e });
      }
    }
  }

  // -------------------------------------------------------------------------------------------------
  // Local routes

  /**
   * Makes the routes this speaker originates for `family` exactly `routes`; announces what is new or
   * changed and withdraws what is gone. Invalid prefixes throw `BgpConfigError` before anything changes.
   */
  set(family: Family, routes: LocalRoute[]): void {
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
    const have = this.#local[family];
    for (const [prefix] of have) {
      if (!want.has(prefix)) {
        have.delete(prefix);
        this.#applyChange(family, prefix, this.rib.remove(family, prefix, LOCAL_SOURCE.id));
      }
    }
    for (const [prefix, route] of want) {
      const cur = have.get(prefix);
      if (cur && sameLocal(cur.route, route)) continue;
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
  }

  /** Replaces the import policy and re-evaluates every received route (soft reconfiguration inbound). */
  setImportPolicy(policy: Policy): void {
    this.#importPolicy = policy;
    for (const r of this.#peers.values()) {
      for (const family of FAMILIES) {
        for (const [prefix, attrs] of r.adjIn[family]) this.#importOne(r, family, prefix, attrs);
      }
    }
  }

  /** Replaces the export policy and re-advertises to every peer. */
  setExportPolicy(policy: Policy): void {
    this.#exportPolicy = policy;
    for (const r of this.#peers.values()) {
      this.#resetExportCache(r);
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
    const p = r.peer;
    const now = this.clock.now();
    const prefixes: PeerStatus["prefixes"] = {};
    for (const f of p.localFamilies()) {
      let accepted = 0;
      for (const prefix of r.adjIn[f].keys()) if (this.rib.get(f, prefix, p.address)) accepted++;
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
    if (r) this.#updatePeerGauges(r, previous);
    this.#emit({ type: "peer", peer: peer.address, asn: peer.config.asn, previous, state });
  }

  #onEstablished(peer: Peer): void {
    const r = this.#peers.get(peer.address);
    if (!r) return;
    r.source = { ...this.#sourceFor(peer.config), routerId: peer.remoteRouterId ?? "0.0.0.0" };
    // Paths kept from before a graceful restart stay stale until re-announced or swept.
    const grCaps = peer.remoteCapabilities?.gracefulRestart;
    if (r.staleTimer !== undefined) {
      this.clock.clearTimeout(r.staleTimer);
      r.staleTimer = undefined;
      for (const f of [...r.staleFamilies]) {
        // RFC 4724 4.2: no GR capability now, or forwarding state not preserved: drop the stale paths.
        if (!grCaps || !grCaps.families.get(f) || !peer.families.includes(f)) {
          this.#sweepStale(r, f);
          r.staleFamilies.delete(f);
        }
      }
      if (r.staleFamilies.size) {
        // Wait for End-of-RIB, but not forever.
        r.staleTimer = this.clock.setTimeout(() => {
          r.staleTimer = undefined;
          for (const f of r.staleFamilies) this.#sweepStale(r, f);
          r.staleFamilies.clear();
        }, Math.max(grCaps?.time ?? 90, 30) * 1000);
      }
    }
    r.eorReceived.clear();
    if (this.#deferring) return; // the table goes out when the deferral ends
    this.#sendInitialTable(r);
  }

  #sendInitialTable(r: PeerRuntime): void {
    const peer = r.peer;
    this.#resetExportCache(r);
    for (const f of FAMILIES) {
      r.adjOut[f].clear();
      r.pending[f].clear();
    }
    this.#exportAll(r);
    this.#flush(r);
    for (const f of peer.families) peer.sendUpdates([encodeEndOfRib(f)]);
  }

  #endDeferral(): void {
    if (!this.#deferring) return;
    this.#deferring = false;
    if (this.#deferralTimer !== undefined) this.clock.clearTimeout(this.#deferralTimer);
    this.#deferralTimer = undefined;
    for (const r of this.#peers.values()) if (r.peer.state === "Established") this.#sendInitialTable(r);
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
    if (!r) return;
    for (const f of FAMILIES) {
      r.adjOut[f].clear();
      r.pending[f].clear();
    }
    const grCaps = peer.lastCapabilities?.gracefulRestart;
    const weOffer = !!this.#opts.gracefulRestart?.enabled && peer.config.gracefulRestart !== false;
    const keep = new Set<Family>();
    if (info.gracefulRestartEligible && grCaps && weOffer && this.#running) {
      for (const [f] of grCaps.families) if (peer.lastFamilies.includes(f)) keep.add(f);
    }
    const drop = FAMILIES.filter((f) => !keep.has(f));
    this.#dropPeerRoutes(r, drop);
    this.#checkDeferral();
    if (keep.size) {
      this.log.info("bgp graceful restart helper: keeping routes of restarting peer", {
        peer: peer.address,
        restartTime: grCaps!.time,
        families: [...keep].join(","),
      });
      for (const f of keep) {
        r.staleFamilies.add(f);
        for (const prefix of r.adjIn[f].keys()) {
          const p = this.rib.get(f, prefix, peer.address);
          if (p) p.stale = true;
        }
      }
      if (r.staleTimer !== undefined) this.clock.clearTimeout(r.staleTimer);
      r.staleTimer = this.clock.setTimeout(() => {
        r.staleTimer = undefined;
        this.log.info("bgp graceful restart timer expired; withdrawing stale routes", { peer: peer.address });
        for (const f of r.staleFamilies) this.#sweepStale(r, f);
        r.staleFamilies.clear();
      }, grCaps!.time * 1000);
    }
  }

  /** Removes the paths of `r` in `families` that are still stale. */
  #sweepStale(r: PeerRuntime, family: Family): void {
    const id = r.peer.address;
    let n = 0;
    for (const [prefix] of r.adjIn[family]) {
      const p = this.rib.get(family, prefix, id);
      if (p && !p.stale) continue;
      r.adjIn[family].delete(prefix);
      if (p) {
        n++;
        this.#applyChange(family, prefix, this.rib.remove(family, prefix, id));
      }
    }
    if (n) this.log.info("bgp removed stale routes", { peer: id, family, count: n });
  }

  #dropPeerRoutes(r: PeerRuntime, families: readonly Family[]): void {
    const id = r.peer.address;
    for (const f of families) {
      for (const prefix of r.adjIn[f].keys()) this.#applyChange(f, prefix, this.rib.remove(f, prefix, id));
      r.adjIn[f].clear();
      r.staleFamilies.delete(f);
    }
  }

  #onRouteRefresh(peer: Peer, family: Family): void {
    const r = this.#peers.get(peer.address);
    if (!r) return;
    this.log.debug("bgp route refresh requested", { peer: peer.address, family });
    // Resend the whole Adj-RIB-Out of the family.
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
    this.#metrics?.advSent.inc({ peer: peer.address }, out.size);
  }

  #onUpdate(peer: Peer, u: UpdateMessage, raw: Uint8Array): void {
    const r = this.#peers.get(peer.address);
    if (!r) return;
    const m = this.#metrics;
    const eor = endOfRibFamily(u);
    if (eor) {
      this.#emit({ type: "endOfRib", family: eor, peer: peer.address });
      r.eorReceived.add(eor);
      this.#checkDeferral();
      if (r.staleFamilies.has(eor)) {
        this.#sweepStale(r, eor);
        r.staleFamilies.delete(eor);
        if (r.staleFamilies.size === 0 && r.staleTimer !== undefined) {
          this.clock.clearTimeout(r.staleTimer);
          r.staleTimer = undefined;
        }
      }
      return;
    }
    if (u.discarded) {
      this.log.warn("bgp discarded malformed attributes", {
        peer: peer.address,
        why: u.discarded.join("; "),
        bytes: hexOf(raw),
      });
    }
    const families = peer.families;
    // Withdrawals
    if (u.withdrawn.length) this.#withdrawMany(r, "ipv4-unicast", u.withdrawn);
    if (u.mpUnreach && families.includes(u.mpUnreach.family)) {
      this.#withdrawMany(r, u.mpUnreach.family, u.mpUnreach.withdrawn);
    }
    if (!u.attrs) {
      // NLRI without any path attribute (RFC 7606 treat-as-withdraw).
      if (u.nlri.length && families.includes("ipv4-unicast")) {
        m?.malformed.inc({ peer: peer.address });
        this.log.warn("bgp treat-as-withdraw (RFC 7606)", {
          peer: peer.address,
          why: u.treatAsWithdraw,
          bytes: hexOf(raw),
        });
        this.#withdrawMany(r, "ipv4-unicast", u.nlri);
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
      this.log.warn("bgp treat-as-withdraw (RFC 7606)", {
        peer: peer.address,
        why: reason,
        bytes: hexOf(raw),
      });
      for (const [f, prefixes] of announced) if (families.includes(f)) this.#withdrawMany(r, f, prefixes);
      return;
    }
    // Loop detection: our AS in the path (eBGP), our router id or cluster id (route reflection).
    const loop = attrs.asPath.some((s) => s.asns.includes(this.asn)) ||
      attrs.originatorId === this.routerId || (attrs.clusterList?.includes(this.clusterId) ?? false);
    for (const [f, prefixes, a] of announced) {
      if (!families.includes(f)) {
        this.log.debug("bgp ignoring routes of a family not negotiated", { peer: peer.address, family: f });
        continue;
      }
      m?.advReceived.inc({ peer: peer.address }, prefixes.length);
      if (loop) {
        this.#withdrawMany(r, f, prefixes);
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
        this.#importOne(r, f, prefix, inAttrs);
      }
    }
  }

  #withdrawMany(r: PeerRuntime, family: Family, prefixes: string[]): void {
    const id = r.peer.address;
    for (const prefix of prefixes) {
      if (!r.adjIn[family].delete(prefix)) continue;
      this.#applyChange(family, prefix, this.rib.remove(family, prefix, id));
    }
  }

  #importOne(r: PeerRuntime, family: Family, prefix: string, attrs: PathAttributes): void {
    const id = r.peer.address;
    const pp: PolicyPeer = { address: id, asn: r.peer.config.asn, ebgp: r.peer.isEbgp };
    let accepted: PathAttributes | undefined;
    try {
      accepted = this.#importPolicy({ family, prefix, attrs }, pp);
    } catch (e) {
      this.log.error("bgp import policy failed; rejecting route", { peer: id, prefix, err: e });
    }
    if (!accepted) {
      this.#applyChange(family, prefix, this.rib.remove(family, prefix, id));
      return;
    }
    const path: Path = { source: r.source, attrs: accepted, stale: false, since: this.clock.now() };
    this.#applyChange(family, prefix, this.rib.set(family, prefix, path));
  }

  // -------------------------------------------------------------------------------------------------
  // Best path changes and export

  #applyChange(
    family: Family,
    prefix: string,
    change: { before: Path | undefined; after: Path | undefined } | undefined,
  ): void {
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
    for (const r of this.#peers.values()) {
      if (r.peer.state !== "Established" || !r.peer.families.includes(family)) continue;
      this.#queue(r, family, prefix, after ? this.#exportAttrs(r, family, prefix, after) : null);
    }
  }

  #exportAll(r: PeerRuntime): void {
    if (r.peer.state !== "Established" || this.#deferring) return;
    for (const f of r.peer.families) {
      const seen = new Set<string>();
      for (const [prefix, best] of this.rib.entries(f)) {
        seen.add(prefix);
        this.#queue(r, f, prefix, this.#exportAttrs(r, f, prefix, best));
      }
      for (const prefix of r.adjOut[f].keys()) if (!seen.has(prefix)) this.#queue(r, f, prefix, null);
    }
  }

  #resetExportCache(r: PeerRuntime): void {
    r.exportCache = { "ipv4-unicast": new WeakMap(), "ipv6-unicast": new WeakMap() };
    r.interned.clear();
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
    if (cached !== undefined && !this.#exportPolicyIsPrefixDependent) return cached;
    // Without a policy the transform depends only on the source attributes: cache it per object.
    let out = cached !== undefined ? cached : this.#transformForPeer(r, family, best);
    if (cached === undefined) cache.set(best.attrs, out);
    if (out && this.#exportPolicy !== acceptAll) {
      try {
        out = this.#exportPolicy({ family, prefix, attrs: out }, {
          address: peer.address,
          asn: peer.config.asn,
          ebgp: peer.isEbgp,
        }) ?? null;
      } catch (e) {
        this.log.error("bgp export policy failed; not advertising", { peer: peer.address, prefix, err: e });
        out = null;
      }
    }
    // A policy may look at the prefix, so its result is not cached; equal results are interned so that
    // prefixes sharing attributes still share UPDATE messages.
    return out && this.#exportPolicy !== acceptAll ? this.#intern(r, out) : out;
  }

  #intern(r: PeerRuntime, attrs: PathAttributes): PathAttributes {
    const key = JSON.stringify(attrs, jsonBytes);
    const have = r.interned.get(key);
    if (have) return have;
    if (r.interned.size > 10_000) r.interned.clear(); // only packing suffers; bound the memory
    r.interned.set(key, attrs);
    return attrs;
  }

  get #exportPolicyIsPrefixDependent(): boolean {
    return this.#exportPolicy !== acceptAll;
  }

  #transformForPeer(r: PeerRuntime, family: Family, best: Path): PathAttributes | null {
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
      if (prepend) { for (let i = 0; i < prepend.count; i++) extra.push(prepend.asn ?? this.asn); }
      const first = a.asPath[0];
      out.asPath = first && first.type === AS_SEQUENCE && first.asns.length + extra.length + 1 <= 255
        ? [{ type: AS_SEQUENCE, asns: [this.asn, ...extra, ...first.asns] }, ...a.asPath.slice(1)]
        : [{ type: AS_SEQUENCE, asns: [this.asn, ...extra] }, ...a.asPath];
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
        out.clusterList = [this.clusterId, ...(a.clusterList ?? [])];
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
      this.log.warn("bgp no next hop of this family toward peer; its routes are not advertised", {
        peer: peer.address,
        family,
        hint: v6 ? "set ipv6NextHop" : "set ipv4NextHop",
      });
    }
    return configured;
  }

  #queue(r: PeerRuntime, family: Family, prefix: string, attrs: PathAttributes | null): void {
    const cur = r.adjOut[family].get(prefix);
    const pend = r.pending[family];
    if (attrs === null) {
      if (cur === undefined && !pend.has(prefix)) return;
    } else if (cur !== undefined && sameAttrs(cur, attrs) && !pend.has(prefix)) return;
    pend.set(prefix, attrs);
    if (!r.flushScheduled) {
      r.flushScheduled = true;
      this.clock.setTimeout(() => this.#flush(r), 0);
    }
  }

  #flush(r: PeerRuntime): void {
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
          this.log.error("bgp cannot encode routes", {
            peer: peer.address,
            family: f,
            count: prefixes.length,
            err: e,
          });
          for (const p of prefixes) r.adjOut[f].delete(p);
        }
      }
    }
    if (advertised) this.#metrics?.advSent.inc({ peer: peer.address }, advertised);
    peer.sendUpdates(msgs);
  }

  // -------------------------------------------------------------------------------------------------
  // Metrics

  #infoLabels(r: PeerRuntime, state: PeerState = r.peer.state): Record<string, string> {
    return { peer: r.peer.address, asn: String(r.peer.config.asn), state };
  }

  #updatePeerGauges(r: PeerRuntime, previous?: PeerState): void {
    const m = this.#metrics;
    if (!m) return;
    if (previous) m.peerInfo.remove(this.#infoLabels(r, previous));
    m.peerInfo.set(this.#infoLabels(r), 1);
    m.peerState.set({ peer: r.peer.address }, STATE_NUMBER[r.peer.state]);
  }

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
    for (const r of this.#peers.values()) {
      const s = this.#status(r);
      const peer = r.peer.address;
      m.uptime.set({ peer }, s.state === "Established" ? s.uptime : 0);
      m.peerState.set({ peer }, STATE_NUMBER[s.state]);
      for (const [family, c] of Object.entries(s.prefixes)) {
        m.prefixesReceived.set({ peer, family }, c.received);
        m.prefixesAccepted.set({ peer, family }, c.accepted);
        m.prefixesAdvertised.set({ peer, family }, c.advertised);
      }
      for (const [type, n] of Object.entries(s.messagesSent)) {
        const cur = m.sent.value({ peer, type });
        if (n > cur) m.sent.inc({ peer, type }, n - cur);
      }
      for (const [type, n] of Object.entries(s.messagesReceived)) {
        const cur = m.received.value({ peer, type });
        if (n > cur) m.received.inc({ peer, type }, n - cur);
      }
    }
  }
}

function makeMetrics(m: Metrics): SpeakerMetrics {
  return {
    peerInfo: m.gauge(
      "kube_router_bgp_peer_info",
      "BGP peers, labelled with their AS and FSM state (value 1).",
    ),
    peerState: m.gauge("kube_router_bgp_peer_state", "BGP FSM state per peer (1 Idle ... 6 Established)."),
    uptime: m.gauge("kube_router_bgp_peer_uptime_seconds", "Seconds the BGP session has been established."),
    sent: m.counter("kube_router_bgp_messages_sent_total", "BGP messages sent per peer and type."),
    received: m.counter(
      "kube_router_bgp_messages_received_total",
      "BGP messages received per peer and type.",
    ),
    prefixesReceived: m.gauge(
      "kube_router_bgp_prefixes_received",
      "Prefixes received from a peer (before import policy).",
    ),
    prefixesAccepted: m.gauge(
      "kube_router_bgp_prefixes_accepted",
      "Prefixes from a peer accepted by import policy.",
    ),
    prefixesAdvertised: m.gauge("kube_router_bgp_prefixes_advertised", "Prefixes advertised to a peer."),
    advSent: m.counter("kube_router_bgp_advertisements_sent", "Route advertisements sent to peers."),
    advReceived: m.counter(
      "kube_router_bgp_advertisements_received",
      "Route advertisements received from peers.",
    ),
    malformed: m.counter(
      "kube_router_bgp_malformed_updates_total",
      "UPDATEs handled as withdraw because of malformed attributes (RFC 7606).",
    ),
  };
}

function sameLocal(a: LocalRoute, b: LocalRoute): boolean {
  return a.nextHop === b.nextHop && a.med === b.med && a.localPref === b.localPref && a.origin === b.origin &&
    JSON.stringify(a.communities ?? []) === JSON.stringify(b.communities ?? []);
}

function sameAttrs(a: PathAttributes, b: PathAttributes): boolean {
  if (a === b) return true;
  return JSON.stringify(a, jsonBytes) === JSON.stringify(b, jsonBytes);
}

function jsonBytes(_k: string, v: unknown): unknown {
  return v instanceof Uint8Array ? toHex(v) : v;
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
