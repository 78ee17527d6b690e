/**
 * A netlink socket over libc: request/ACK with extended-ACK text, dumps (retried when the kernel marks
 * them NLM_F_DUMP_INTR), batches of many messages per sendto with errors mapped back by sequence number,
 * and multicast subscriptions that wait in a nonblocking poll (with an eventfd to cancel) so the event
 * loop never blocks, reporting ENOBUFS as an explicit "resync needed" signal.
 */
import {
  AF_NETLINK,
  check,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  errnoRef,
  libc,
  MSG_DONTWAIT,
  MSG_TRUNC,
  pollFds,
  POLLIN,
  pollRevents,
  setNonBlocking,
  setsockoptInt,
  SO_RCVBUF,
  SO_RCVBUFFORCE,
  SO_RCVTIMEO,
  SO_SNDBUF,
  SO_SNDBUFFORCE,
  SOCK_CLOEXEC,
  SOCK_RAW,
  SOL_SOCKET,
  strerror,
} from "./libc.ts";
import { Errno, ErrnoError, NetlinkError } from "./errors.ts";
import {
  NETLINK_ADD_MEMBERSHIP,
  NETLINK_CAP_ACK,
  NETLINK_EXT_ACK,
  NETLINK_GET_STRICT_CHK,
  NLM_F_ACK,
  NLM_F_DUMP,
  NLM_F_DUMP_INTR,
  NLM_F_REQUEST,
  type NlMsg,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_NOOP,
  NLMSG_OVERRUN,
  NlWriter,
  parseDone,
  parseError,
  parseMessages,
  SOL_NETLINK,
} from "./netlink.ts";

/** Options for opening a netlink socket. */
export interface NetlinkSocketOptions {
  /** Receive buffer in bytes (SO_RCVBUFFORCE when root, else SO_RCVBUF). Default 8 MiB. */
  rcvbuf?: number;
  /** Send buffer in bytes; bounds the size of one batch sendto. Default 4 MiB. */
  sndbuf?: number;
  /** Multicast groups (RTNLGRP_* numbers) to join. */
  groups?: readonly number[];
  /** Seconds a blocking receive waits before failing with EAGAIN. Default 10. */
  recvTimeoutSec?: number;
  /**
   * NETLINK_GET_STRICT_CHK: the kernel validates dump requests strictly and honours their filters
   * (e.g. RTA_TABLE on a route dump), so listing one table does not send every route.
   */
  strictDump?: boolean;
}

/** One failed message of a batch. */
export interface BatchFailure {
  /** Index of the message in the batch. */
  index: number;
  /** NetlinkError from the kernel, or the encoder's error (e.g. TypeError for an invalid address). */
  error: Error;
}

/** Writes message `index` of a batch with sequence number `seq` into `w` (beginMsg..endMsg). */
export type BatchEncoder = (w: NlWriter, index: number, seq: number) => void;

/** "Events were lost: list everything again." Sent when the socket overflowed (ENOBUFS). */
export interface ResyncSignal {
  kind: "resync";
}

const RECV_SIZE = 1 << 20;
const DEFAULT_SNDBUF = 4 << 20;
const MAX_DUMP_RETRIES = 8;

function sockaddrNl(pid = 0, groups = 0): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(12);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, AF_NETLINK, true);
  dv.setUint32(4, pid, true);
  dv.setUint32(8, groups, true);
  return b;
}

function setBuf(fd: number, force: number, plain: number, size: number): void {
  try {
    setsockoptInt(fd, SOL_SOCKET, force, size);
  } catch {
    setsockoptInt(fd, SOL_SOCKET, plain, size);
  }
}

/**
 * How a NetlinkSocket moves datagrams. The real one is a libc socket; unit tests script a kernel with
 * their own transport (`NetlinkSocket.fromTransport`) to exercise ACKs, dumps and batches without root.
 */
export interface NetlinkTransport {
  /** File descriptor for poll, or -1. */
  readonly fd: number;
  /** Sends one datagram (one or more messages). */
  send(bytes: Uint8Array<ArrayBuffer>): void;
  /**
   * `send` on another thread, for a datagram the kernel takes long to process (a large nftables batch is
   * committed inside the send): the event loop keeps running. `bytes` must not change until it resolves.
   */
  sendAsync?(bytes: Uint8Array<ArrayBuffer>): Promise<void>;
  /** Receives one datagram; undefined when `dontWait` and nothing is queued. */
  recv(dontWait: boolean): Uint8Array | undefined;
  close(): void;
}

class LibcTransport implements NetlinkTransport {
  #fd: number;
  #rbuf = new Uint8Array(RECV_SIZE);
  constructor(fd: number) {
    this.#fd = fd;
  }
  get fd(): number {
    return this.#fd;
  }
  send(bytes: Uint8Array<ArrayBuffer>): void {
    const sa = sockaddrNl();
    const errCell = errnoRef();
    for (;;) {
      const rc = libc().sendto(this.#fd, bytes, BigInt(bytes.length), 0, sa, sa.length);
      const e = errCell[0]!; // before any call: see errnoRef
      if (rc >= 0n) return;
      if (e === Errno.EINTR) continue;
      throw new ErrnoError(e, "sendto(netlink)", strerror(e));
    }
  }
  async sendAsync(bytes: Uint8Array<ArrayBuffer>): Promise<void> {
    const sa = sockaddrNl();
    const rc = await libc().sendto_nb(this.#fd, bytes, BigInt(bytes.length), 0, sa, sa.length);
    // errno belongs to the thread that made the call: a failed send (refused before the kernel took the
    // datagram: its size, memory) is made again here, where errno can be read.
    if (rc < 0n) this.send(bytes);
  }
  recv(dontWait: boolean): Uint8Array | undefined {
    const errCell = errnoRef();
    for (;;) {
      const rc = libc().recvfrom(
        this.#fd,
        this.#rbuf,
        BigInt(this.#rbuf.length),
        (dontWait ? MSG_DONTWAIT : 0) | MSG_TRUNC,
        null,
        null,
      );
      const e = errCell[0]!; // before any call: see errnoRef
      if (rc >= 0n) {
        const n = Number(rc);
        if (n > this.#rbuf.length) {
          throw new ErrnoError(Errno.EMSGSIZE, "recvfrom(netlink)", `${n} byte datagram truncated`);
        }
        return this.#rbuf.subarray(0, n);
      }
      if (e === Errno.EINTR) continue;
      if (e === Errno.EAGAIN && dontWait) return undefined;
      throw new ErrnoError(e, "recvfrom(netlink)", strerror(e));
    }
  }
  close(): void {
    if (this.#fd < 0) return;
    libc().close(this.#fd);
    this.#fd = -1;
  }
}

/** A bound netlink socket of one protocol (NETLINK_ROUTE, NETLINK_NETFILTER, …). */
export class NetlinkSocket {
  #io: NetlinkTransport | undefined;
  #seq: number;
  #writer = new NlWriter(1 << 16);
  /** The send buffer size asked for (reserveSendBuffer). */
  #sndbuf: number;
  readonly protocol: number;
  /** Netlink port id the kernel assigned to this socket. */
  readonly portId: number;
  /** How many dumps had to be restarted because the kernel flagged them NLM_F_DUMP_INTR. */
  dumpRetries = 0;

  private constructor(io: NetlinkTransport, protocol: number, portId: number, sndbuf = DEFAULT_SNDBUF) {
    this.#io = io;
    this.#sndbuf = sndbuf;
    this.protocol = protocol;
    this.portId = portId;
    this.#seq = (Date.now() & 0x7fffffff) >>> 0;
  }

  /** A socket over another transport (a scripted kernel in unit tests). */
  static fromTransport(io: NetlinkTransport, protocol = 0, portId = 1): NetlinkSocket {
    return new NetlinkSocket(io, protocol, portId);
  }

  /** Opens and binds a netlink socket. Equivalent to what `ip` does at start-up (`rtnl_open`). */
  static open(protocol: number, opts: NetlinkSocketOptions = {}): NetlinkSocket {
    const c = libc();
    const fd = check(
      c.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol),
      `socket(AF_NETLINK, ${protocol})`,
    );
    try {
      setBuf(fd, SO_RCVBUFFORCE, SO_RCVBUF, opts.rcvbuf ?? 8 << 20);
      setBuf(fd, SO_SNDBUFFORCE, SO_SNDBUF, opts.sndbuf ?? DEFAULT_SNDBUF);
      // Errors echo only the header of the failed request, and carry the kernel's message text.
      setsockoptInt(fd, SOL_NETLINK, NETLINK_CAP_ACK, 1);
      try {
        setsockoptInt(fd, SOL_NETLINK, NETLINK_EXT_ACK, 1);
      } catch { /* kernels before 4.12: no extended ACK text */ }
      if (opts.strictDump) {
        try {
          setsockoptInt(fd, SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1);
        } catch { /* kernels before 4.20: dumps are filtered by the caller only */ }
      }
      const tv = new BigInt64Array([BigInt(opts.recvTimeoutSec ?? 10), 0n]);
      check(
        c.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, new Uint8Array(tv.buffer), 16),
        "setsockopt(SO_RCVTIMEO)",
      );
      const sa = sockaddrNl();
      check(c.bind(fd, sa, sa.length), "bind(AF_NETLINK)");
      const len = new Uint32Array([12]);
      check(c.getsockname(fd, sa, new Uint8Array(len.buffer)), "getsockname");
      const portId = new DataView(sa.buffer).getUint32(4, true);
      for (const g of opts.groups ?? []) {
        setsockoptInt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, g, "join group");
      }
      return new NetlinkSocket(new LibcTransport(fd), protocol, portId, opts.sndbuf);
    } catch (e) {
      c.close(fd);
      throw e;
    }
  }

  /** File descriptor (for poll). -1 once closed. */
  get fd(): number {
    return this.#io?.fd ?? -1;
  }

  /** Next request sequence number. */
  nextSeq(): number {
    this.#seq = (this.#seq + 1) >>> 0;
    if (this.#seq === 0) this.#seq = 1;
    return this.#seq;
  }

  /** Reserves `n` consecutive sequence numbers and returns the first. */
  reserveSeq(n: number): number {
    const first = this.nextSeq();
    this.#seq = (first + n) >>> 0;
    return first;
  }

  #open(): NetlinkTransport {
    if (!this.#io) throw new ErrnoError(9, "netlink socket is closed");
    return this.#io;
  }

  /** Sends raw bytes (one or more messages) to the kernel in one sendto. */
  send(bytes: Uint8Array<ArrayBuffer>): void {
    this.#open().send(bytes);
  }

  /**
   * Makes sure one sendto of `bytes` fits the send buffer (a netlink batch must go in one datagram),
   * growing it to twice that when it would not. Equivalent to what nft does before a large batch.
   */
  reserveSendBuffer(bytes: number): void {
    if (bytes + 4096 <= this.#sndbuf) return;
    this.#sndbuf = bytes * 2;
    if (this.fd >= 0) setBuf(this.fd, SO_SNDBUFFORCE, SO_SNDBUF, this.#sndbuf);
  }

  /** `send` off the event loop's thread where the transport can (the libc one), else `send`. */
  async sendAsync(bytes: Uint8Array<ArrayBuffer>): Promise<void> {
    const io = this.#open();
    if (io.sendAsync) await io.sendAsync(bytes);
    else io.send(bytes);
  }

  /**
   * Receives one datagram. Returns a view into an internal buffer (valid until the next receive), or
   * undefined when `dontWait` and nothing is queued. Throws ErrnoError (ENOBUFS when events were lost).
   */
  recv(dontWait = false): Uint8Array | undefined {
    return this.#open().recv(dontWait);
  }

  /**
   * Sends one request with NLM_F_ACK and waits for its answer. Returns the reply messages that came before
   * the ACK (e.g. the object for a non-dump GET). Throws NetlinkError with the kernel's text on failure.
   */
  request(type: number, flags: number, body: (w: NlWriter) => void, op: string): NlMsg[] {
    const seq = this.nextSeq();
    const w = this.#writer;
    w.reset();
    const off = w.beginMsg(type, flags | NLM_F_REQUEST | NLM_F_ACK, seq);
    body(w);
    w.endMsg(off);
    this.send(w.view());
    const replies: NlMsg[] = [];
    for (;;) {
      const data = this.recv();
      if (!data) continue;
      for (const m of parseMessages(data.slice())) {
        if (m.seq !== seq) continue;
        if (m.type === NLMSG_ERROR) {
          const info = parseError(m);
          if (info.errno === 0) return replies;
          throw new NetlinkError(info.errno, op, seq, info.extAck);
        }
        if (m.type === NLMSG_DONE) return replies;
        replies.push(m);
      }
    }
  }

  /**
   * Runs a dump (NLM_F_DUMP) and returns every object message. When the kernel flags the dump as
   * interrupted (NLM_F_DUMP_INTR: the table changed under it) the whole dump is retried.
   */
  dump(type: number, body: (w: NlWriter) => void, op: string): NlMsg[] {
    const out: NlMsg[] = [];
    const run = this.#dumping(type, body, op, (m) => out.push(m), () => out.length = 0, true);
    while (!run.next().done) { /* one datagram read */ }
    return out;
  }

  /**
   * Runs a dump and hands each object message to `each` as its datagram arrives (`m.payload` is a view
   * valid during the call only), so no listing of the whole dump is held. Timers and I/O get a turn every
   * `yieldEvery` datagrams. If the dump was interrupted (NLM_F_DUMP_INTR), `restart()` is called and it
   * runs again from the start. Throws NetlinkError (e.g. ENOENT for an absent object).
   */
  async dumpStream(
    type: number,
    body: (w: NlWriter) => void,
    op: string,
    each: (m: NlMsg) => void,
    opts: { restart?: () => void; yieldEvery?: number } = {},
  ): Promise<void> {
    const every = opts.yieldEvery ?? 16;
    const run = this.#dumping(type, body, op, each, opts.restart ?? (() => {}), false);
    for (let n = 1; !run.next().done; n++) {
      // The kernel fills the next datagram once this one is read: let timers and I/O run meanwhile.
      if (n % every === 0) await new Promise((r) => setTimeout(r, 0));
    }
  }

  /**
   * The dump protocol of `dump` and `dumpStream`: pauses after each datagram read (the generator yields),
   * so the caller decides when the event loop runs. Messages of an interrupted attempt are not handed on;
   * the attempt is repeated (after `restart()`) at most MAX_DUMP_RETRIES times.
   */
  *#dumping(
    type: number,
    body: (w: NlWriter) => void,
    op: string,
    each: (m: NlMsg) => void,
    restart: () => void,
    copy: boolean,
  ): Generator<void, void, void> {
    for (let attempt = 0;; attempt++) {
      const seq = this.nextSeq();
      const w = this.#writer;
      w.reset();
      const off = w.beginMsg(type, NLM_F_REQUEST | NLM_F_DUMP, seq);
      body(w);
      w.endMsg(off);
      this.send(w.view());
      let interrupted = false;
      let done = false;
      while (!done) {
        const data = this.recv();
        if (!data) continue;
        for (const m of parseMessages(copy ? data.slice() : data)) {
          if (m.seq !== seq) continue;
          if (m.flags & NLM_F_DUMP_INTR) interrupted = true;
          if (m.type === NLMSG_DONE) {
            const info = parseDone(m);
            if (info.errno !== 0) throw new NetlinkError(info.errno, op, seq, info.extAck);
            done = true;
            break;
          }
          if (m.type === NLMSG_ERROR) {
            const info = parseError(m);
            if (info.errno !== 0) throw new NetlinkError(info.errno, op, seq, info.extAck);
            done = true;
            break;
          }
          if (m.type === NLMSG_NOOP || m.type === NLMSG_OVERRUN || interrupted) continue;
          each(m);
        }
        if (!done) yield;
      }
      if (!interrupted) return;
      this.dumpRetries++;
      if (attempt >= MAX_DUMP_RETRIES) {
        throw new ErrnoError(Errno.EINTR, op, `dump interrupted ${attempt + 1} times in a row`);
      }
      restart();
    }
  }

  /**
   * Sends `count` messages, many per sendto (up to `chunkBytes`), without asking an ACK for each: the
   * kernel still answers every failure, and a NLMSG_NOOP with NLM_F_ACK after each chunk is the fence
   * that says the chunk is done. Failures are mapped back to message indexes by sequence number.
   */
  batch(
    count: number,
    encode: BatchEncoder,
    opts: { chunkBytes?: number; op?: string } = {},
  ): BatchFailure[] {
    const chunkBytes = opts.chunkBytes ?? 256 * 1024;
    const op = opts.op ?? "netlink batch";
    const failures: BatchFailure[] = [];
    const base = this.reserveSeq(count + 1);
    const w = new NlWriter(chunkBytes + 4096);
    let i = 0;
    while (i < count) {
      w.reset();
      const first = i;
      while (i < count && w.length < chunkBytes) {
        const mark = w.length;
        try {
          encode(w, i, (base + i) >>> 0);
        } catch (e) {
          // Bad input (an invalid address) fails that one message, not the batch.
          w.truncate(mark);
          failures.push({ index: i, error: e instanceof Error ? e : new Error(String(e)) });
        }
        i++;
      }
      const fence = this.nextSeq();
      const off = w.beginMsg(NLMSG_NOOP, NLM_F_REQUEST | NLM_F_ACK, fence);
      w.endMsg(off);
      this.send(w.view());
      let fenced = false;
      while (!fenced) {
        const data = this.recv();
        if (!data) continue;
        for (const m of parseMessages(data)) {
          if (m.type !== NLMSG_ERROR) continue;
          if (m.seq === fence) {
            fenced = true;
            continue;
          }
          const idx = (m.seq - base) >>> 0;
          if (idx < first || idx >= i) continue;
          const info = parseError(m);
          if (info.errno !== 0) {
            failures.push({ index: idx, error: new NetlinkError(info.errno, op, m.seq, info.extAck) });
          }
        }
      }
    }
    return failures.sort((a, b) => a.index - b.index);
  }

  /** Closes the socket. Idempotent. */
  close(): void {
    this.#io?.close();
    this.#io = undefined;
  }
}

/**
 * A multicast subscription. Iterate it to receive batches of event messages, or a ResyncSignal when the
 * kernel dropped events (ENOBUFS): the consumer must then list the objects again. `close()` wakes the
 * waiting poll through an eventfd and ends the iteration; it is idempotent.
 */
export class NetlinkSubscription implements AsyncIterable<NlMsg[] | ResyncSignal> {
  #sock: NetlinkSocket;
  #efd: number;
  #closed = false;
  #iterating = false;
  #polling = false;
  #finished = false;

  constructor(protocol: number, groups: readonly number[], opts: { rcvbuf?: number } = {}) {
    this.#sock = NetlinkSocket.open(protocol, { groups, rcvbuf: opts.rcvbuf ?? 4 << 20 });
    setNonBlocking(this.#sock.fd);
    try {
      this.#efd = check(libc().eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK), "eventfd");
    } catch (e) {
      this.#sock.close();
      throw e;
    }
  }

  /** Stops the subscription. Safe to call from anywhere, any number of times. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#polling) {
      // A worker thread is blocked in poll(): wake it; the iterator releases the fds when it returns.
      const one = new BigUint64Array([1n]);
      libc().write(this.#efd, new Uint8Array(one.buffer), 8n);
    } else {
      // Not iterated yet, or suspended at a yield: nothing uses the fds right now.
      this.#release();
    }
  }

  #discardQueued(): void {
    for (let i = 0; i < 1_000_000; i++) {
      try {
        if (!this.#sock.recv(true)) return;
      } catch (e) {
        if (!(e instanceof ErrnoError && e.errno === Errno.ENOBUFS)) throw e;
      }
    }
  }

  #release(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#sock.close();
    libc().close(this.#efd);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<NlMsg[] | ResyncSignal> {
    if (this.#iterating) throw new Error("a NetlinkSubscription can be iterated once");
    this.#iterating = true;
    const pfd = pollFds([{ fd: this.#sock.fd, events: POLLIN }, { fd: this.#efd, events: POLLIN }]);
    try {
      while (!this.#closed) {
        // Drain everything queued, synchronously, without blocking.
        for (;;) {
          if (this.#closed) return;
          let data: Uint8Array | undefined;
          try {
            data = this.#sock.recv(true);
          } catch (e) {
            if (e instanceof ErrnoError && e.errno === Errno.ENOBUFS) {
              // The kernel drops every event for this socket until its queue is empty again, so empty it
              // now (what is queued is older than the listing the consumer is about to do), then ask for
              // that listing. Events after this point are delivered.
              this.#discardQueued();
              yield { kind: "resync" };
              continue;
            }
            throw e;
          }
          if (!data) break;
          const msgs = parseMessages(data.slice());
          if (msgs.length) yield msgs;
        }
        if (this.#closed) return;
        this.#polling = true;
        try {
          await libc().poll_nb(pfd, 2n, -1);
        } finally {
          this.#polling = false;
        }
        if (pollRevents(pfd, 1) & POLLIN) return;
      }
    } finally {
      this.#closed = true;
      this.#release();
    }
  }
}
