/**
 * One BGP neighbour: the RFC 4271 finite state machine (Idle, Connect, Active, OpenSent, OpenConfirm,
 * Established), its hold, keepalive and connect-retry timers on an injected clock, capability
 * negotiation, and connection collision resolution (section 6.8). A peer may hold two connections at
 * once (one it opened, one it accepted) until the OPEN exchange decides which survives.
 *
 * What the session learns goes to its `PeerHost` (the speaker); the session never touches a RIB.
 */
import type { Clock, Logger, TimerId } from "../../../core/mod.ts";
import { parseIPv4Fast } from "../../../ffi/mod.ts";
import {
  BgpError,
  CEASE_ADMIN_SHUTDOWN,
  CEASE_COLLISION,
  CEASE_CONNECTION_REJECTED,
  ERR_CEASE,
  ERR_FSM,
  ERR_HOLD_TIMER,
  ERR_OPEN,
  isBgpError,
  notificationName,
  OPEN_BAD_BGP_ID,
  OPEN_BAD_PEER_AS,
} from "./errors.ts";
import {
  AS_TRANS,
  CAP_AS4,
  CAP_MP,
  CAP_ROUTE_REFRESH,
  type Capability,
  type CapabilitySummary,
  concat,
  decodeNotification,
  decodeOpen,
  decodeRouteRefresh,
  decodeUpdate,
  encodeKeepalive,
  encodeNotification,
  encodeOpen,
  encodeRouteRefresh,
  MSG_KEEPALIVE,
  MSG_NOTIFICATION,
  MSG_OPEN,
  MSG_ROUTE_REFRESH,
  MSG_UPDATE,
  type OpenMessage,
  peerAsn,
  splitMessages,
  summarizeCapabilities,
  toHex,
  type UpdateMessage,
} from "./message.ts";
import type { BgpConn, Transport } from "./transport.ts";
import { afiOf, type Family, familyOf, SAFI_UNICAST } from "./types.ts";

export type PeerState = "Idle" | "Connect" | "Active" | "OpenSent" | "OpenConfirm" | "Established";

/** Numeric form of the state as GoBGP and kube-router's peer metric use it. */
export const STATE_NUMBER: Record<PeerState, number> = {
  Idle: 1,
  Connect: 2,
  Active: 3,
  OpenSent: 4,
  OpenConfirm: 5,
  Established: 6,
};

/** A neighbour as the router module describes it. Times are in seconds, as in BGP itself. */
export interface PeerConfig {
  address: string;
  asn: number;
  /** Remote port (default: the speaker's port, 179). */
  port?: number;
  /** Source address for the TCP session (and the next hop we advertise, for next-hop-self). */
  localAddress?: string;
  /** Wait for the peer to connect; never connect out. */
  passive?: boolean;
  /** TCP MD5 signature key (RFC 2385). */
  password?: string;
  /** eBGP multihop TTL (> 1 for peers more than one hop away). */
  multihopTtl?: number;
  /** Proposed hold time (default 90; 0 disables keepalives, else at least 3). */
  holdTime?: number;
  /** Keepalive interval (default hold time / 3). */
  keepaliveInterval?: number;
  /** Base connect-retry interval (default 5); doubles per failure up to 120. */
  connectRetry?: number;
  /** Families to negotiate (default: IPv4 unicast only). */
  families?: Family[];
  /** Set the next hop to our own address on routes sent to this (iBGP) peer. */
  nextHopSelf?: boolean;
  /** This iBGP peer is a route reflector client of ours (RFC 4456). */
  routeReflectorClient?: boolean;
  /** Prepend our AS this many extra times (or `asn` instead of ours) on routes sent to this eBGP peer. */
  asPathPrepend?: { count: number; asn?: number };
  /** IPv6 next hop to advertise when the session itself runs over IPv4. */
  ipv6NextHop?: string;
  /** IPv4 next hop to advertise when the session itself runs over IPv6. */
  ipv4NextHop?: string;
  /** Offer graceful restart to this peer (default: the speaker's setting). */
  gracefulRestart?: boolean;
  description?: string;
}

export interface PeerStats {
  messagesSent: Record<string, number>;
  messagesReceived: Record<string, number>;
  updatesReceived: number;
  updatesSent: number;
  establishedTransitions: number;
  /** Epoch ms of the last change into or out of Established. */
  lastChange: number;
  lastError: string | undefined;
}

/** What the session tells the speaker. */
export interface PeerHost {
  readonly localAsn: number;
  readonly routerId: string;
  readonly clock: Clock;
  readonly log: Logger;
  /** Capabilities we add beyond MP/route refresh/AS4 (graceful restart). */
  extraCapabilities(peer: Peer): Capability[];
  transportFor(peer: Peer): Transport;
  onStateChange(peer: Peer, previous: PeerState, next: PeerState): void;
  onEstablished(peer: Peer): void;
  onUpdate(peer: Peer, update: UpdateMessage, raw: Uint8Array): void;
  onRouteRefresh(peer: Peer, family: Family): void;
  /** The established session ended; `gracefulRestartEligible` when it ended without a NOTIFICATION. */
  onDown(peer: Peer, info: { reason: string; gracefulRestartEligible: boolean }): void;
}

const MSG_NAMES: Record<number, string> = {
  1: "open",
  2: "update",
  3: "notification",
  4: "keepalive",
  5: "refresh",
};
const OPEN_HOLD_MS = 240_000;
const MAX_BACKOFF_S = 120;

class Attempt {
  state: "OpenSent" | "OpenConfirm" | "Established" = "OpenSent";
  open: OpenMessage | undefined;
  caps: CapabilitySummary | undefined;
  holdMs = OPEN_HOLD_MS;
  keepaliveMs = 0;
  holdTimer: TimerId | undefined;
  kaTimer: TimerId | undefined;
  closed = false;
  writes: Promise<void> = Promise.resolve();
  constructor(readonly conn: BgpConn, readonly outgoing: boolean) {}
}

/** How long the losing side of a collision both sides lost waits before it connects again (ms). */
const COLLISION_RETRY_MS = 1000;

export class Peer {
  #state: PeerState = "Idle";
  #attempts: Attempt[] = [];
  #established: Attempt | undefined;
  #lastEstablished: Attempt | undefined;
  #running = false;
  #retryTimer: TimerId | undefined;
  #failures = 0;
  /**
   * Set when the peer closed our last connection with Cease/Connection Collision Resolution: the next
   * attempt's delay (see #scheduleRetry), used once.
   */
  #afterCollisionMs: number | undefined;
  #connecting = false;
  #log: Logger;
  readonly stats: PeerStats;
  /** Epoch ms when the session became Established (undefined when it is not). */
  upSince: number | undefined;

  constructor(public config: PeerConfig, readonly host: PeerHost, readonly defaultPort: number) {
    this.#log = host.log.with({ peer: config.address });
    this.stats = {
      messagesSent: {},
      messagesReceived: {},
      updatesReceived: 0,
      updatesSent: 0,
      establishedTransitions: 0,
      lastChange: host.clock.now(),
      lastError: undefined,
    };
  }

  get address(): string {
    return this.config.address;
  }
  get state(): PeerState {
    return this.#state;
  }
  get isEbgp(): boolean {
    return this.config.asn !== this.host.localAsn;
  }
  /** The peer's OPEN once established. */
  get remoteOpen(): OpenMessage | undefined {
    return this.#established?.open;
  }
  get remoteCapabilities(): CapabilitySummary | undefined {
    return this.#established?.caps;
  }
  /** Capabilities of the last established session (still known after it went down). */
  get lastCapabilities(): CapabilitySummary | undefined {
    return (this.#established ?? this.#lastEstablished)?.caps;
  }
  /** Families negotiated on the last established session. */
  get lastFamilies(): Family[] {
    const caps = this.lastCapabilities;
    return caps ? this.localFamilies().filter((f) => caps.families.includes(f)) : [];
  }
  get remoteRouterId(): string | undefined {
    return this.#established?.open?.routerId;
  }
  /** Families both sides announced. */
  get families(): Family[] {
    const caps = this.#established?.caps;
    if (!caps) return [];
    return this.localFamilies().filter((f) => caps.families.includes(f));
  }
  get as4(): boolean {
    return this.#established?.caps?.as4 !== undefined;
  }
  get negotiatedHoldTime(): number {
    return Math.round((this.#established?.holdMs ?? 0) / 1000);
  }
  get negotiatedKeepalive(): number {
    return Math.round((this.#established?.keepaliveMs ?? 0) / 1000);
  }
  /** Local end of the established connection. */
  get localAddress(): string | undefined {
    return this.#established?.conn.localAddress ?? this.config.localAddress;
  }
  get connection(): BgpConn | undefined {
    return this.#established?.conn;
  }

  localFamilies(): Family[] {
    return this.config.families && this.config.families.length ? this.config.families : ["ipv4-unicast"];
  }

  #setState(next: PeerState): void {
    const prev = this.#state;
    if (prev === next) return;
    this.#state = next;
    this.#log.debug("bgp peer state", { from: prev, to: next });
    this.host.onStateChange(this, prev, next);
  }

  /** Derives the peer state from the furthest-along connection. */
  #refreshState(): void {
    if (this.#established) return this.#setState("Established");
    if (this.#attempts.some((a) => a.state === "OpenConfirm")) return this.#setState("OpenConfirm");
    if (this.#attempts.length) return this.#setState("OpenSent");
    if (!this.#running) return this.#setState("Idle");
    this.#setState(this.#connecting ? "Connect" : "Active");
  }

  start(): void {
    if (this.#running) return;
    this.#running = true;
    if (this.config.passive) this.#refreshState();
    else void this.#connect();
  }

  /**
   * Ends every connection with a Cease NOTIFICATION and stays Idle. `notify: false` closes the connections
   * without one: to the peer this is a restart (RFC 4724), so as a graceful-restart helper it keeps our routes.
   */
  stop(subcode = CEASE_ADMIN_SHUTDOWN, opts: { notify?: boolean } = {}): void {
    this.#running = false;
    if (this.#retryTimer !== undefined) this.host.clock.clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    for (const a of [...this.#attempts]) {
      if (opts.notify ?? true) {
        this.#sendNotification(a, new BgpError(ERR_CEASE, subcode, "administratively stopped"));
      }
      this.#close(a, "administratively stopped", false);
    }
    this.#refreshState();
  }

  /** Drops the session (with a Cease) and lets the FSM reconnect, e.g. after a config change. */
  reset(subcode: number, why: string): void {
    for (const a of [...this.#attempts]) {
      this.#sendNotification(a, new BgpError(ERR_CEASE, subcode, why));
      this.#close(a, why, false);
    }
  }

  #retryDelayMs(): number {
    const base = this.config.connectRetry ?? 5;
    const s = Math.min(base * 2 ** Math.max(0, this.#failures - 1), Math.max(base, MAX_BACKOFF_S));
    return s * 1000;
  }

  #scheduleRetry(): void {
    if (!this.#running || this.#retryTimer !== undefined) return;
    const collision = this.#afterCollisionMs;
    this.#afterCollisionMs = undefined;
    const ms = collision ?? (this.#failures === 0 ? 0 : this.#retryDelayMs());
    this.#retryTimer = this.host.clock.setTimeout(() => {
      this.#retryTimer = undefined;
      if (!this.#running || this.#attempts.length) return;
      if (this.config.passive) this.#refreshState();
      else void this.#connect();
    }, ms);
  }

  async #connect(): Promise<void> {
    if (!this.#running || this.#connecting || this.#attempts.some((a) => a.outgoing) || this.#established) {
      return;
    }
    this.#connecting = true;
    this.#refreshState();
    const cfg = this.config;
    let conn: BgpConn | undefined;
    // A SYN nobody answers can hang for minutes in the kernel: give up after twice the retry
    // interval and close the connection should it still complete later.
    const timeoutMs = (cfg.connectRetry ?? 5) * 1000 * 2;
    let timer: TimerId | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = this.host.clock.setTimeout(() => resolve("timeout"), timeoutMs);
    });
    const opts = {
      remoteAddress: cfg.address,
      remotePort: cfg.port ?? this.defaultPort,
      ...(cfg.localAddress ? { localAddress: cfg.localAddress } : {}),
      ...(cfg.multihopTtl ? { ttl: cfg.multihopTtl } : {}),
      ...(cfg.password ? { password: cfg.password } : {}),
    };
    let pending: Promise<BgpConn> | undefined;
    try {
      pending = this.host.transportFor(this).connect(opts);
      const r = await Promise.race([pending, timedOut]);
      if (r === "timeout") {
        this.stats.lastError = `connect to ${cfg.address} timed out after ${timeoutMs / 1000} s`;
        pending.then((c) => c.close(), () => {});
      } else conn = r;
    } catch (e) {
      this.stats.lastError = e instanceof Error
        ? (e.cause ? `${e.message}: ${e.cause}` : e.message)
        : String(e);
      this.#log.debug("bgp connect failed", { err: e });
    } finally {
      if (timer !== undefined) this.host.clock.clearTimeout(timer);
      this.#connecting = false;
    }
    if (conn && (!this.#running || this.#established)) {
      conn.close();
      conn = undefined;
    }
    if (!conn) {
      this.#failures++;
      this.#refreshState();
      if (!this.#attempts.length) this.#scheduleRetry();
      else if (this.#running) {
        this.#retryTimer ??= this.host.clock.setTimeout(() => {
          this.#retryTimer = undefined;
          void this.#connect();
        }, this.#retryDelayMs());
      }
      return;
    }
    this.#attach(conn, true);
  }

  /** A connection the listener accepted from this peer's address. */
  accept(conn: BgpConn): void {
    if (!this.#running || this.#established || this.#attempts.some((a) => !a.outgoing)) {
      // RFC 4271 6.8: an Established session wins over a new connection; a stopped peer rejects it.
      const a = new Attempt(conn, false);
      this.#sendNotification(
        a,
        this.#running
          ? new BgpError(ERR_CEASE, CEASE_COLLISION, "connection collision")
          : new BgpError(ERR_CEASE, CEASE_CONNECTION_REJECTED, "peer administratively down"),
      );
      void a.writes.finally(() => conn.close());
      return;
    }
    this.#attach(conn, false);
  }

  #attach(conn: BgpConn, outgoing: boolean): void {
    const a = new Attempt(conn, outgoing);
    this.#attempts.push(a);
    const caps: Capability[] = [];
    for (const f of this.localFamilies()) caps.push({ code: CAP_MP, afi: afiOf(f), safi: SAFI_UNICAST });
    caps.push({ code: CAP_ROUTE_REFRESH });
    caps.push(...this.host.extraCapabilities(this));
    caps.push({ code: CAP_AS4, asn: this.host.localAsn });
    const open: OpenMessage = {
      version: 4,
      myAs: this.host.localAsn > 0xffff ? AS_TRANS : this.host.localAsn,
      holdTime: this.config.holdTime ?? 90,
      routerId: this.host.routerId,
      capabilities: caps,
    };
    this.#write(a, encodeOpen(open), MSG_OPEN);
    this.#armHold(a);
    this.#refreshState();
    void this.#readLoop(a);
  }

  #armHold(a: Attempt): void {
    if (a.holdTimer !== undefined) this.host.clock.clearTimeout(a.holdTimer);
    a.holdTimer = undefined;
    if (a.holdMs === 0 || a.closed) return;
    a.holdTimer = this.host.clock.setTimeout(() => {
      a.holdTimer = undefined;
      if (a.closed) return;
      this.#log.warn("bgp hold timer expired", { hold: a.holdMs / 1000 });
      this.#fail(a, new BgpError(ERR_HOLD_TIMER, 0, "hold timer expired"));
    }, a.holdMs);
  }

  #armKeepalive(a: Attempt): void {
    if (a.kaTimer !== undefined) this.host.clock.clearTimeout(a.kaTimer);
    a.kaTimer = undefined;
    if (a.keepaliveMs === 0 || a.closed) return;
    a.kaTimer = this.host.clock.setTimeout(() => {
      a.kaTimer = undefined;
      if (a.closed) return;
      this.#write(a, encodeKeepalive(), MSG_KEEPALIVE);
      this.#armKeepalive(a);
    }, a.keepaliveMs);
  }

  #write(a: Attempt, bytes: Uint8Array, type: number, count = 1): void {
    if (a.closed) return;
    const name = MSG_NAMES[type] ?? String(type);
    this.stats.messagesSent[name] = (this.stats.messagesSent[name] ?? 0) + count;
    // Queued before close (a NOTIFICATION) still goes out: the close waits for this chain.
    a.writes = a.writes.then(() => a.conn.writeAll(bytes)).catch((e) => {
      if (!a.closed) this.#close(a, `write failed: ${e instanceof Error ? e.message : e}`, true);
    });
  }

  /** Queues already-encoded UPDATE messages on the established session (several per write). */
  sendUpdates(msgs: Uint8Array[]): void {
    const a = this.#established;
    if (!a || msgs.length === 0) return;
    this.stats.updatesSent += msgs.length;
    let batch: Uint8Array[] = [];
    let size = 0;
    const flush = () => {
      if (!batch.length) return;
      this.#write(a, concat(batch), MSG_UPDATE, batch.length);
      batch = [];
      size = 0;
    };
    for (const m of msgs) {
      batch.push(m);
      size += m.length;
      if (size >= 64 * 1024) flush();
    }
    flush();
    // Sending an UPDATE restarts the keepalive interval (RFC 4271 4.4).
    this.#armKeepalive(a);
  }

  /** Asks the peer to resend its routes of `family` (RFC 2918); false if it did not offer route refresh. */
  requestRefresh(family: Family): boolean {
    const a = this.#established;
    if (!a || !a.caps?.routeRefresh || !this.families.includes(family)) return false;
    this.#write(
      a,
      encodeRouteRefresh({ afi: afiOf(family), safi: SAFI_UNICAST, subtype: 0 }),
      MSG_ROUTE_REFRESH,
    );
    return true;
  }

  /** Resolves once everything queued so far has been handed to the transport. */
  flushed(): Promise<void> {
    return this.#established?.writes ?? Promise.resolve();
  }

  async #readLoop(a: Attempt): Promise<void> {
    let buf = new Uint8Array(64 * 1024);
    let len = 0;
    for (;;) {
      if (a.closed) return;
      if (len === buf.length) {
        const bigger = new Uint8Array(buf.length * 2);
        bigger.set(buf);
        buf = bigger;
      }
      let n: number | null;
      try {
        n = await a.conn.read(buf.subarray(len));
      } catch (e) {
        this.#close(a, `read failed: ${e instanceof Error ? e.message : e}`, true);
        return;
      }
      if (a.closed) return;
      if (n === null) {
        this.#close(a, "connection closed by peer", true);
        return;
      }
      len += n;
      let used = 0;
      try {
        const split = splitMessages(buf.subarray(0, len));
        used = split.used;
        for (const m of split.messages) {
          if (a.closed) return;
          this.#handle(a, m.type, m.bytes);
        }
      } catch (e) {
        if (isBgpError(e)) {
          this.#log.warn("bgp malformed message header", {
            err: e,
            bytes: toHex(buf.subarray(0, Math.min(len, 64))),
          });
          this.#fail(a, e);
        } else {
          this.#log.error("bgp internal error handling message", { err: e });
          this.#fail(a, new BgpError(ERR_CEASE, 0, "internal error", undefined, { cause: e }));
        }
        return;
      }
      if (used > 0) {
        buf.copyWithin(0, used, len);
        len -= used;
      }
    }
  }

  #handle(a: Attempt, type: number, msg: Uint8Array): void {
    const name = MSG_NAMES[type] ?? String(type);
    this.stats.messagesReceived[name] = (this.stats.messagesReceived[name] ?? 0) + 1;
    try {
      if (type === MSG_NOTIFICATION) {
        const n = decodeNotification(msg);
        const text = shutdownCommunication(n.code, n.subcode, n.data);
        const reason = `received NOTIFICATION ${notificationName(n.code, n.subcode)}${
          text ? `: ${text}` : ""
        }`;
        this.#log.warn("bgp peer sent notification", {
          code: n.code,
          subcode: n.subcode,
          data: toHex(n.data),
          ...(text ? { message: text } : {}),
        });
        this.stats.lastError = reason;
        if (n.code === ERR_CEASE && n.subcode === CEASE_COLLISION && this.#attempts.length === 1) {
          // Both sides can resolve one collision differently: one had gone Established on a connection
          // (and closed the other) before the OPEN that made the peer close that very connection arrived.
          // Then both connections are gone, and neither side failed: reconnect at once instead of after
          // ConnectRetry (5 s without routes between two nodes). The side whose connection wins collisions
          // (the higher BGP identifier) goes first; the other waits a second, for that connection.
          const theirs = a.open?.routerId ?? this.#established?.open?.routerId;
          const wins = theirs !== undefined && parseIPv4Fast(this.host.routerId) > parseIPv4Fast(theirs);
          this.#afterCollisionMs = wins ? 0 : COLLISION_RETRY_MS;
        }
        this.#close(a, reason, false);
        return;
      }
      switch (a.state) {
        case "OpenSent":
          if (type !== MSG_OPEN) throw new BgpError(ERR_FSM, 1, `unexpected ${name} in OpenSent`);
          this.#onOpen(a, decodeOpen(msg));
          return;
        case "OpenConfirm":
          if (type === MSG_KEEPALIVE) {
            this.#armHold(a);
            this.#onEstablished(a);
            return;
          }
          throw new BgpError(ERR_FSM, 2, `unexpected ${name} in OpenConfirm`);
        case "Established":
          this.#armHold(a);
          if (type === MSG_KEEPALIVE) return;
          if (type === MSG_UPDATE) {
            this.stats.updatesReceived++;
            const u = decodeUpdate(msg, { as4: this.as4 });
            this.host.onUpdate(this, u, msg);
            return;
          }
          if (type === MSG_ROUTE_REFRESH) {
            const r = decodeRouteRefresh(msg);
            const fam = familyOf(r.afi, r.safi);
            if (fam && this.families.includes(fam) && r.subtype === 0) this.host.onRouteRefresh(this, fam);
            else {this.#log.debug("bgp ignoring route refresh", {
                afi: r.afi,
                safi: r.safi,
                subtype: r.subtype,
              });}
            return;
          }
          throw new BgpError(ERR_FSM, 3, `unexpected ${name} in Established`);
      }
    } catch (e) {
      if (!isBgpError(e)) throw e;
      this.#log.warn("bgp malformed message from peer", {
        err: e,
        type: name,
        bytes: toHex(msg.subarray(0, 512)) + (msg.length > 512 ? "..." : ""),
      });
      this.#fail(a, e);
    }
  }

  #onOpen(a: Attempt, open: OpenMessage): void {
    const asn = peerAsn(open);
    if (asn !== this.config.asn) {
      throw new BgpError(
        ERR_OPEN,
        OPEN_BAD_PEER_AS,
        `peer AS ${asn}, expected ${this.config.asn}`,
        Uint8Array.of(open.myAs >> 8, open.myAs & 0xff),
      );
    }
    if (!this.isEbgp && open.routerId === this.host.routerId) {
      throw new BgpError(ERR_OPEN, OPEN_BAD_BGP_ID, `peer uses our router id ${open.routerId}`);
    }
    a.open = open;
    a.caps = summarizeCapabilities(open.capabilities);
    if (!a.caps.as4 && open.myAs === AS_TRANS) {
      throw new BgpError(ERR_OPEN, OPEN_BAD_PEER_AS, "AS_TRANS without the four-octet AS capability");
    }
    // Collision resolution (RFC 4271 6.8): the connection opened by the higher BGP identifier survives.
    const other = this.#attempts.find((o) =>
      o !== a && !o.closed && (o.state === "OpenConfirm" || o.state === "Established")
    );
    if (other) {
      const localWins = parseIPv4Fast(this.host.routerId) > parseIPv4Fast(open.routerId);
      const loser = other.state === "Established" ? a : (localWins === a.outgoing ? other : a);
      this.#log.info("bgp connection collision", { keep: loser === a ? "existing" : "new", localWins });
      this.#sendNotification(
        loser,
        new BgpError(ERR_CEASE, CEASE_COLLISION, "connection collision resolution"),
      );
      this.#close(loser, "connection collision resolution", false);
      if (loser === a) return;
    }
    const mine = this.config.holdTime ?? 90;
    const hold = Math.min(mine, open.holdTime);
    a.holdMs = hold * 1000;
    const ka = this.config.keepaliveInterval ?? Math.floor(hold / 3);
    a.keepaliveMs = hold === 0 ? 0 : Math.max(1, Math.min(ka, Math.floor(hold / 3))) * 1000;
    a.state = "OpenConfirm";
    this.#write(a, encodeKeepalive(), MSG_KEEPALIVE);
    this.#armHold(a);
    this.#armKeepalive(a);
    this.#refreshState();
  }

  #onEstablished(a: Attempt): void {
    a.state = "Established";
    // Any other half-open connection loses to the established one.
    for (const o of [...this.#attempts]) {
      if (o !== a) {
        this.#sendNotification(
          o,
          new BgpError(ERR_CEASE, CEASE_COLLISION, "connection collision resolution"),
        );
        this.#close(o, "connection collision resolution", false);
      }
    }
    this.#established = a;
    this.#failures = 0;
    this.#afterCollisionMs = undefined;
    this.upSince = this.host.clock.now();
    this.stats.lastChange = this.upSince;
    this.stats.establishedTransitions++;
    if (this.#retryTimer !== undefined) this.host.clock.clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    this.#log.info("bgp session established", {
      remoteAs: this.config.asn,
      routerId: a.open?.routerId,
      hold: a.holdMs / 1000,
      families: this.families.join(","),
    });
    this.#refreshState();
    this.host.onEstablished(this);
  }

  #sendNotification(a: Attempt, e: BgpError): void {
    this.#write(a, encodeNotification({ code: e.code, subcode: e.subcode, data: e.data }), MSG_NOTIFICATION);
  }

  /** Protocol error on a connection: NOTIFICATION, then close. */
  #fail(a: Attempt, e: BgpError): void {
    this.stats.lastError = e.message;
    this.#sendNotification(a, e);
    this.#close(a, e.message, false);
  }

  #close(a: Attempt, reason: string, grEligible: boolean): void {
    if (a.closed) return;
    a.closed = true;
    if (a.holdTimer !== undefined) this.host.clock.clearTimeout(a.holdTimer);
    if (a.kaTimer !== undefined) this.host.clock.clearTimeout(a.kaTimer);
    a.holdTimer = a.kaTimer = undefined;
    // Let queued writes (a NOTIFICATION) reach the wire before closing.
    const conn = a.conn;
    void a.writes.finally(() => conn.close());
    this.#attempts = this.#attempts.filter((x) => x !== a);
    if (this.#established === a) {
      this.#lastEstablished = a;
      this.#established = undefined;
      this.upSince = undefined;
      this.stats.lastChange = this.host.clock.now();
      this.#failures = 1;
      this.#log.info("bgp session down", { reason });
      this.#refreshState();
      this.host.onDown(this, { reason, gracefulRestartEligible: grEligible });
    } else if (a.state !== "OpenSent" || !a.outgoing) {
      this.#failures++;
    } else this.#failures++;
    this.#refreshState();
    if (this.#running && this.#attempts.length === 0) this.#scheduleRetry();
  }
}

/**
 * The operator's message in a Cease/Administrative Shutdown or Reset (RFC 8203): one length octet,
 * then UTF-8. Undefined when absent or malformed.
 */
export function shutdownCommunication(code: number, subcode: number, data: Uint8Array): string | undefined {
  if (code !== ERR_CEASE || (subcode !== 2 && subcode !== 4) || data.length < 1) return undefined;
  const len = data[0]!;
  if (len === 0 || len + 1 > data.length) return undefined;
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(data.subarray(1, 1 + len));
  } catch {
    return undefined;
  }
}
