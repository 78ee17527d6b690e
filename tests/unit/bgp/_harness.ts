/** Helpers for speaker tests on the in-memory network and a fake clock. */
import { FakeClock } from "../../../core/clock.ts";
import { getLogger, MemorySink } from "../../../core/log.ts";
import { Metrics } from "../../../core/metrics.ts";
import {
  decodeNotification,
  decodeOpen,
  decodeUpdate,
  encodeAnnouncements,
  encodeKeepalive,
  encodeOpen,
  MSG_NOTIFICATION,
  MSG_OPEN,
  MSG_UPDATE,
  type OpenMessage,
  splitMessages,
  type UpdateMessage,
} from "../../../modules/router/bgp/message.ts";
import { type BgpEvent, BgpSpeaker, type SpeakerOptions } from "../../../modules/router/bgp/speaker.ts";
import { type BgpConn, MemoryNetwork } from "../../../modules/router/bgp/transport.ts";
import { AS_SEQUENCE, type PathAttributes } from "../../../modules/router/bgp/types.ts";

/** The attributes an eBGP peer `asn` announces with: ORIGIN IGP, AS_PATH [asn], NEXT_HOP `nextHop`. */
export function peerAttrs(asn: number, nextHop: string): PathAttributes {
  return { origin: 0, asPath: [{ type: AS_SEQUENCE, asns: [asn] }], nextHop };
}

/** One four-octet-AS IPv4 UPDATE announcing `prefixes` with `attrs`. */
export function announce(attrs: PathAttributes, prefixes: string[]): Uint8Array {
  return encodeAnnouncements("ipv4-unicast", attrs, prefixes, { as4: true })[0]!;
}

/**
 * Speakers on an in-memory network with a fake clock. `await using w = new World()` stops every speaker
 * at the end of the test, even when it fails.
 */
export class World {
  readonly clock = new FakeClock();
  readonly net = new MemoryNetwork();
  readonly sink = new MemorySink();
  readonly speakers: BgpSpeaker[] = [];

  speaker(address: string, opts: Partial<SpeakerOptions> & { asn: number; routerId: string }): BgpSpeaker & {
    events: BgpEvent[];
    metrics: Metrics;
  } {
    const metrics = new Metrics();
    const s = new BgpSpeaker({
      port: 179,
      listenAddresses: [address],
      clock: this.clock,
      log: getLogger({ speaker: address }, this.sink),
      transport: this.net.transportFor(address),
      metrics,
      ...opts,
    });
    const events: BgpEvent[] = [];
    s.subscribe((e) => events.push(e));
    this.speakers.push(s);
    return Object.assign(s, { events, metrics });
  }

  /** Lets timers due now and pending I/O run. */
  async settle(rounds = 6): Promise<void> {
    for (let i = 0; i < rounds; i++) await this.clock.advance(0);
  }

  async stopAll(): Promise<void> {
    for (const s of this.speakers) await s.stop();
    await this.settle();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stopAll();
  }
}

/** A hand-driven BGP peer on the memory network: writes raw bytes, records what it receives. */
export class RawPeer {
  received: { type: number; bytes: Uint8Array }[] = [];
  closed = false;
  #buf = new Uint8Array(0);
  private constructor(readonly conn: BgpConn) {}

  static async connect(world: World, from: string, to: string, port = 179): Promise<RawPeer> {
    const conn = await world.net.transportFor(from).connect({ remoteAddress: to, remotePort: port });
    const p = new RawPeer(conn);
    void p.#loop();
    return p;
  }

  /** Connects from `from` to the speaker at `to`, sends OPEN and KEEPALIVE and lets the session come up. */
  static async session(
    world: World,
    from: string,
    to: string,
    open: Partial<OpenMessage> & { myAs: number; routerId: string },
  ): Promise<RawPeer> {
    const p = await RawPeer.connect(world, from, to);
    await p.handshake(open);
    await world.settle();
    return p;
  }

  async #loop(): Promise<void> {
    const chunk = new Uint8Array(65536);
    for (;;) {
      const n = await this.conn.read(chunk);
      if (n === null) {
        this.closed = true;
        return;
      }
      const all = new Uint8Array(this.#buf.length + n);
      all.set(this.#buf);
      all.set(chunk.subarray(0, n), this.#buf.length);
      const { messages, used } = splitMessages(all);
      for (const m of messages) this.received.push({ type: m.type, bytes: m.bytes.slice() });
      this.#buf = all.slice(used);
    }
  }

  send(b: Uint8Array): Promise<void> {
    return this.conn.writeAll(b);
  }

  /** Sends OPEN and KEEPALIVE so the speaker reaches Established (once it has sent its own). */
  async handshake(open: Partial<OpenMessage> & { myAs: number; routerId: string }): Promise<void> {
    await this.send(encodeOpen({
      version: 4,
      holdTime: 90,
      capabilities: [
        { code: 1, afi: 1, safi: 1 },
        { code: 1, afi: 2, safi: 1 },
        { code: 2 },
        { code: 65, asn: open.myAs },
      ],
      ...open,
    }));
    await this.send(encodeKeepalive());
  }

  /** The UPDATEs received so far, decoded as on a four-octet-AS session. */
  updates(): UpdateMessage[] {
    return this.received.filter((m) => m.type === MSG_UPDATE).map((m) =>
      decodeUpdate(m.bytes, { as4: true })
    );
  }

  opens(): OpenMessage[] {
    return this.received.filter((m) => m.type === MSG_OPEN).map((m) => decodeOpen(m.bytes));
  }

  notifications(): { code: number; subcode: number }[] {
    return this.received.filter((m) => m.type === MSG_NOTIFICATION).map((m) => {
      const n = decodeNotification(m.bytes);
      return { code: n.code, subcode: n.subcode };
    });
  }
}
