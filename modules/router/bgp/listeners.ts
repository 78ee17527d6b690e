/**
 * The speaker's listening sockets: one per listen address, an accept loop each handing connections to
 * the speaker, TCP MD5 keys installed per peer, and a reopen when the transport they need changes (the
 * kernel drops MD5-signed SYNs at a listener without the peer's key, and only the libc socket transport
 * can hold keys).
 */
import type { Clock, Logger } from "../../../core/mod.ts";
import { BgpConfigError } from "./errors.ts";
import type { PeerConfig } from "./session.ts";
import type { BgpConn, BgpListener, Transport } from "./transport.ts";

export interface ListenerHost {
  readonly port: number;
  /** undefined: "::" then "0.0.0.0", quietly skipping the one that fails. */
  readonly listenAddresses: string[] | undefined;
  readonly clock: Clock;
  readonly log: Logger;
  /** Whether the speaker runs (accept loops end when it stops). */
  running(): boolean;
  /** The transport the listeners need now. */
  transport(): Transport;
  /** Configs of the peers whose MD5 keys the listeners must hold. */
  peerConfigs(): Iterable<PeerConfig>;
  /** A connection arrived. */
  accepted(conn: BgpConn): void;
}

export class Listeners {
  #host: ListenerHost;
  #listeners: BgpListener[] = [];
  #ports: number[] = [];
  #transportName = "";
  #acceptLoops: Promise<void>[] = [];

  constructor(host: ListenerHost) {
    this.#host = host;
  }

  /** The first port listened on (after a close it still names the last one). */
  get port(): number | undefined {
    return this.#ports[0];
  }

  /** Opens the listeners; returns the error when no address could be bound. */
  open(): unknown {
    const h = this.#host;
    // "::" first: with Deno's TCP it is dual-stack and 0.0.0.0 then fails with EADDRINUSE, which is
    // fine; with the socket transport (IPV6_V6ONLY) both bind. Only when no address works is it an error.
    const explicit = h.listenAddresses !== undefined;
    const addrs = h.listenAddresses ?? ["::", "0.0.0.0"];
    const t = h.transport();
    let firstError: unknown;
    for (const address of addrs) {
      try {
        const l = t.listen({ address, port: h.port });
        this.#listeners.push(l);
        this.#ports.push(l.port);
        this.#acceptLoops.push(this.#acceptLoop(l));
      } catch (e) {
        firstError ??= e;
        if (explicit) h.log.warn("bgp cannot listen", { address, port: h.port, err: e });
        else h.log.debug("bgp listen skipped", { address, err: e });
      }
    }
    this.#transportName = t.name;
    if (addrs.length && !this.#listeners.length) return firstError ?? new BgpConfigError("no listen address");
    for (const cfg of h.peerConfigs()) {
      if (cfg.password) this.setPassword(cfg);
    }
    return undefined;
  }

  /**
   * Reopens the listeners when the transport they need changed (the first MD5 peer was added). Deno
   * releases a listening socket only once its pending accept has ended, so wait for the accept loops,
   * and retry a few times while the port is still held.
   */
  reopenIfNeeded(): void {
    const h = this.#host;
    if (!h.running() || h.transport().name === this.#transportName) return;
    h.log.info("bgp reopening listeners with the socket transport for TCP MD5");
    const old = this.#listeners;
    const loops = this.#acceptLoops;
    this.#listeners = [];
    this.#ports = [];
    this.#acceptLoops = [];
    this.#transportName = h.transport().name;
    for (const l of old) l.close();
    const attempt = async (left: number): Promise<void> => {
      await Promise.all(loops);
      if (!h.running() || this.#listeners.length) return;
      const err = this.open();
      if (err === undefined) return;
      if (left > 0) {
        h.clock.setTimeout(() => void attempt(left - 1), 100);
      } else h.log.error("bgp cannot reopen listeners", { err });
    };
    void attempt(20);
  }

  close(): void {
    for (const l of this.#listeners) l.close();
    this.#listeners = [];
  }

  /** Installs (or with an empty password removes) the peer's MD5 key on every listener. */
  setPassword(cfg: PeerConfig): void {
    for (const l of this.#listeners) {
      try {
        l.setPassword(cfg.address, cfg.password || undefined);
      } catch (e) {
        this.#host.log.error("bgp cannot install MD5 key on listener", { peer: cfg.address, err: e });
      }
    }
  }

  async #acceptLoop(l: BgpListener): Promise<void> {
    const h = this.#host;
    while (h.running()) {
      let conn;
      try {
        conn = await l.accept();
      } catch (e) {
        if (h.running() && this.#listeners.includes(l)) h.log.warn("bgp accept failed", { err: e });
        return;
      }
      h.accepted(conn);
    }
  }
}
