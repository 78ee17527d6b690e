/**
 * TCP over libc sockets, for what Deno's own TCP cannot do: RFC 2385 TCP MD5 signatures
 * (`TCP_MD5SIG`, as `neighbor x password y` on a router), a TTL / hop limit for eBGP multihop
 * (`IP_TTL`, `IPV6_UNICAST_HOPS`) and binding a chosen source address before connecting.
 *
 * Sockets are `O_NONBLOCK`; reads and writes are tried synchronously and, when they would block, wait in
 * one shared `poll` that runs on a worker thread (a nonblocking FFI call), so Deno's event loop never
 * blocks. An `eventfd` in the poll set wakes it whenever the set of waiting sockets changes; with nothing
 * to wait for the poll loop stops, so an idle process can exit.
 *
 * `socketTransport` has the shape of the BGP speaker's `Transport` interface.
 */
import { Errno, ErrnoError } from "./errors.ts";
import { parseIPv4 } from "./ip.ts";
import {
  AF_INET,
  AF_INET6,
  check,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  errnoRef,
  IP_TTL,
  IPPROTO_IP,
  IPPROTO_IPV6,
  IPPROTO_TCP,
  IPV6_UNICAST_HOPS,
  IPV6_V6ONLY,
  libc,
  MSG_NOSIGNAL,
  parseSockaddr,
  POLLERR,
  pollFds,
  POLLHUP,
  POLLIN,
  POLLNVAL,
  POLLOUT,
  pollRevents,
  setsockoptInt,
  SO_ERROR,
  SO_REUSEADDR,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  sockaddr,
  SOL_SOCKET,
  strerror,
  TCP_MD5SIG,
  TCP_NODELAY,
} from "./libc.ts";

/** TCP_MD5SIG_MAXKEYLEN */
export const MD5_MAX_KEY = 80;

// ---------------------------------------------------------------------------------------------------
// Addresses

/**
 * Encodes `struct tcp_md5sig` (linux/tcp.h): the peer address in a 128-byte sockaddr_storage, flags,
 * prefix length, key length, ifindex, then the key (up to 80 bytes). An empty key deletes it.
 */
export function encodeMd5sig(peer: string, key: string): Uint8Array<ArrayBuffer> {
  const k = new TextEncoder().encode(key);
  if (k.length > MD5_MAX_KEY) throw new RangeError(`TCP MD5 key longer than ${MD5_MAX_KEY} bytes`);
  const b = new Uint8Array(128 + 4 + 4 + MD5_MAX_KEY);
  b.set(sockaddr(peer, 0), 0);
  const dv = new DataView(b.buffer);
  b[128] = 0; // tcpm_flags
  b[129] = 0; // tcpm_prefixlen
  dv.setUint16(130, k.length, true);
  dv.setUint32(132, 0, true); // tcpm_ifindex
  b.set(k, 136);
  return b;
}

// ---------------------------------------------------------------------------------------------------
// The poll loop

interface Waiter {
  fd: number;
  events: number;
  resolve: (revents: number) => void;
}

class Reactor {
  #efd = -1;
  #waiters: Waiter[] = [];
  #running = false;
  #pendingClose: number[] = [];

  #ensureEventfd(): number {
    if (this.#efd < 0) this.#efd = check(libc().eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), "eventfd");
    return this.#efd;
  }

  #wake(): void {
    if (!this.#running) return;
    const one = new BigUint64Array([1n]);
    libc().write(this.#efd, new Uint8Array(one.buffer), 8n);
  }

  /** Resolves with `revents` once `fd` is ready for `events` (or has an error/hangup). */
  wait(fd: number, events: number): Promise<number> {
    this.#ensureEventfd();
    return new Promise((resolve) => {
      this.#waiters.push({ fd, events, resolve });
      if (this.#running) this.#wake();
      else void this.#loop();
    });
  }

  /** Closes `fd` once no poll is using it, waking its waiters with POLLNVAL. */
  close(fd: number): void {
    const mine = this.#waiters.filter((w) => w.fd === fd);
    this.#waiters = this.#waiters.filter((w) => w.fd !== fd);
    for (const w of mine) w.resolve(POLLNVAL);
    if (this.#running) {
      this.#pendingClose.push(fd);
      this.#wake();
    } else libc().close(fd);
  }

  async #loop(): Promise<void> {
    this.#running = true;
    try {
      while (this.#waiters.length) {
        const set = [
          { fd: this.#efd, events: POLLIN },
          ...this.#waiters.map((w) => ({ fd: w.fd, events: w.events })),
        ];
        const buf = pollFds(set);
        const waiting = [...this.#waiters];
        const n = await libc().poll_nb(buf, BigInt(set.length), -1);
        for (const fd of this.#pendingClose.splice(0)) libc().close(fd);
        if (n < 0) continue; // EINTR
        if (pollRevents(buf, 0)) {
          const drain = new Uint8Array(8);
          libc().read(this.#efd, drain, 8n);
        }
        waiting.forEach((w, i) => {
          const rev = pollRevents(buf, i + 1);
          if (!rev) return;
          const idx = this.#waiters.indexOf(w);
          if (idx < 0) return;
          this.#waiters.splice(idx, 1);
          w.resolve(rev);
        });
      }
    } finally {
      this.#running = false;
      for (const fd of this.#pendingClose.splice(0)) libc().close(fd);
    }
  }
}

const reactor = new Reactor();

// ---------------------------------------------------------------------------------------------------
// Sockets

export interface TcpConnectOptions {
  remoteAddress: string;
  remotePort: number;
  localAddress?: string;
  localPort?: number;
  ttl?: number;
  password?: string;
  /** Milliseconds before giving up on the handshake (default 30 s). */
  timeoutMs?: number;
}

function newSocket(address: string): { fd: number; v6: boolean } {
  const v6 = !parseIPv4(address);
  const fd = check(
    libc().socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0),
    "socket",
  );
  return { fd, v6 };
}

/** Installs (non-empty key) or removes (empty key) the MD5 key for `peer` on `fd`. */
export function setMd5(fd: number, peer: string, key: string): void {
  const sig = encodeMd5sig(peer, key);
  check(libc().setsockopt(fd, IPPROTO_TCP, TCP_MD5SIG, sig, sig.length), `setsockopt(TCP_MD5SIG ${peer})`);
}

/** Sets the unicast TTL (IPv4) or hop limit (IPv6) of outgoing segments. */
export function setTtl(fd: number, v6: boolean, ttl: number): void {
  if (v6) setsockoptInt(fd, IPPROTO_IPV6, IPV6_UNICAST_HOPS, ttl, "setsockopt(IPV6_UNICAST_HOPS)");
  else setsockoptInt(fd, IPPROTO_IP, IP_TTL, ttl, "setsockopt(IP_TTL)");
}

function sockname(fd: number, peer: boolean): { address: string; port: number } {
  const b = new Uint8Array(128);
  const len = new Uint32Array([128]);
  const fn = peer ? libc().getpeername : libc().getsockname;
  check(fn(fd, b, new Uint8Array(len.buffer)), peer ? "getpeername" : "getsockname");
  const a = parseSockaddr(b);
  return a ? { address: a.ip, port: a.port } : { address: "", port: 0 };
}

/** One connected nonblocking TCP socket. */
export class TcpSocket {
  #fd: number;
  #closed = false;
  readonly localAddress: string;
  readonly localPort: number;
  readonly remoteAddress: string;
  readonly remotePort: number;

  constructor(fd: number) {
    this.#fd = fd;
    const l = sockname(fd, false), r = sockname(fd, true);
    this.localAddress = l.address;
    this.localPort = l.port;
    this.remoteAddress = r.address;
    this.remotePort = r.port;
    try {
      setsockoptInt(fd, IPPROTO_TCP, TCP_NODELAY, 1);
    } catch { /* best effort */ }
  }

  get fd(): number {
    return this.#fd;
  }

  /** Reads up to `p.length` bytes; null at end of stream or after close. */
  async read(p: Uint8Array): Promise<number | null> {
    const errCell = errnoRef();
    for (;;) {
      if (this.#closed) return null;
      const rc = libc().read(this.#fd, p, BigInt(p.length));
      const e = errCell[0]!; // before any call: see errnoRef
      const n = Number(rc);
      if (n > 0) return n;
      if (n === 0) return null;
      if (e !== Errno.EAGAIN && e !== Errno.EINTR) throw new ErrnoError(e, "read", strerror(e));
      await reactor.wait(this.#fd, POLLIN);
    }
  }

  /** Writes all of `p`, waiting for buffer space as needed. */
  async writeAll(p: Uint8Array): Promise<void> {
    const errCell = errnoRef();
    let off = 0;
    while (off < p.length) {
      if (this.#closed) throw new ErrnoError(9, "write", "socket closed");
      const chunk = p.subarray(off);
      const rc = libc().sendto(this.#fd, chunk, BigInt(chunk.length), MSG_NOSIGNAL, null, 0);
      const e = errCell[0]!; // before any call: see errnoRef
      const n = Number(rc);
      if (n >= 0) {
        off += n;
        continue;
      }
      if (e !== Errno.EAGAIN && e !== Errno.EINTR) throw new ErrnoError(e, "send", strerror(e));
      const rev = await reactor.wait(this.#fd, POLLOUT);
      if (rev & POLLNVAL) throw new ErrnoError(9, "send", "socket closed");
    }
  }

  /** Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    reactor.close(this.#fd);
  }
}

/**
 * Opens a TCP connection with optional MD5 key, TTL and source address. Equivalent in intent to a
 * router's `neighbor X password P` / `ebgp-multihop N` / `update-source A`.
 */
export async function tcpConnect(opts: TcpConnectOptions): Promise<TcpSocket> {
  const { fd, v6 } = newSocket(opts.remoteAddress);
  try {
    if (opts.password) setMd5(fd, opts.remoteAddress, opts.password);
    if (opts.ttl) setTtl(fd, v6, opts.ttl);
    if (opts.localAddress || opts.localPort) {
      const la = sockaddr(opts.localAddress ?? (v6 ? "::" : "0.0.0.0"), opts.localPort ?? 0);
      check(libc().bind(fd, la, la.length), `bind ${opts.localAddress}`);
    }
    const ra = sockaddr(opts.remoteAddress, opts.remotePort);
    const errCell = errnoRef();
    const rc = libc().connect(fd, ra, ra.length);
    const e = errCell[0]!; // before any call: see errnoRef
    if (rc < 0) {
      if (e !== Errno.EINPROGRESS) {
        throw new ErrnoError(e, `connect ${opts.remoteAddress}:${opts.remotePort}`, strerror(e));
      }
      const timeout = opts.timeoutMs ?? 30_000;
      let timer: ReturnType<typeof setTimeout> | undefined;
      const rev = await Promise.race([
        reactor.wait(fd, POLLOUT),
        new Promise<number>((r) => timer = setTimeout(() => r(-1), timeout)),
      ]);
      clearTimeout(timer);
      if (rev === -1) {
        throw new ErrnoError(110, `connect ${opts.remoteAddress}:${opts.remotePort}`, "timed out");
      }
      const err = new Int32Array(1);
      const len = new Uint32Array([4]);
      check(
        libc().getsockopt(fd, SOL_SOCKET, SO_ERROR, new Uint8Array(err.buffer), new Uint8Array(len.buffer)),
        "getsockopt(SO_ERROR)",
      );
      if (err[0]) {
        throw new ErrnoError(err[0], `connect ${opts.remoteAddress}:${opts.remotePort}`, strerror(err[0]));
      }
      if (rev & (POLLERR | POLLHUP) && !(rev & POLLOUT)) {
        throw new ErrnoError(111, `connect ${opts.remoteAddress}`, "refused");
      }
    }
    return new TcpSocket(fd);
  } catch (e) {
    reactor.close(fd);
    throw e;
  }
}

/** A listening socket; MD5 keys for expected peers are installed on it and inherited by accepted sockets. */
export class TcpListener {
  #fd: number;
  #closed = false;
  readonly port: number;
  readonly v6: boolean;

  constructor(address: string, port: number, backlog = 128) {
    const { fd, v6 } = newSocket(address);
    this.#fd = fd;
    this.v6 = v6;
    try {
      setsockoptInt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
      if (v6) setsockoptInt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 1);
      const sa = sockaddr(address, port);
      check(libc().bind(fd, sa, sa.length), `bind ${address}:${port}`);
      check(libc().listen(fd, backlog), "listen");
      this.port = sockname(fd, false).port;
    } catch (e) {
      libc().close(fd);
      throw e;
    }
  }

  /** Installs (or with an empty/undefined key removes) the MD5 key for connections from `peer`. */
  setPassword(peer: string, password: string | undefined): void {
    const peerV6 = !parseIPv4(peer);
    if (peerV6 !== this.v6) return; // keys are per address family of the socket
    setMd5(this.#fd, peer, password ?? "");
  }

  async accept(): Promise<TcpSocket> {
    const errCell = errnoRef();
    for (;;) {
      if (this.#closed) throw new ErrnoError(9, "accept", "listener closed");
      const fd = libc().accept4(this.#fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC);
      const e = errCell[0]!; // before any call: see errnoRef
      if (fd >= 0) return new TcpSocket(fd);
      if (e !== Errno.EAGAIN && e !== Errno.EINTR && e !== 103 /* ECONNABORTED */) {
        throw new ErrnoError(e, "accept4", strerror(e));
      }
      await reactor.wait(this.#fd, POLLIN);
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    reactor.close(this.#fd);
  }
}

/** The BGP speaker's `Transport` over these sockets (MD5, TTL, source address supported). */
export const socketTransport = {
  name: "ffi-socket",
  supports: { password: true, ttl: true, localAddress: true },
  connect(opts: TcpConnectOptions): Promise<TcpSocket> {
    return tcpConnect(opts);
  },
  listen(opts: { address: string; port: number }): TcpListener {
    return new TcpListener(opts.address, opts.port);
  },
};
