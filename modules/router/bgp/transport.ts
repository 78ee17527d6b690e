/**
 * The byte pipe under a BGP session, as an interface so sessions run over Deno's TCP (`denoTransport`),
 * over FFI sockets when a peer needs TCP MD5, a TTL or a bound source address (`ffi/tcp.ts`), or over
 * in-memory pipes in unit tests (`MemoryNetwork`).
 */
import { TransportError } from "./errors.ts";

export interface BgpConn {
  readonly localAddress: string;
  readonly localPort: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
  /** Reads into `p`; resolves to the byte count or null at end of stream. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes all of `p` (looping over partial writes). */
  writeAll(p: Uint8Array): Promise<void>;
  /** Idempotent. */
  close(): void;
}

export interface ConnectOptions {
  remoteAddress: string;
  remotePort: number;
  localAddress?: string;
  /** IP TTL / IPv6 hop limit for eBGP multihop. */
  ttl?: number;
  /** RFC 2385 TCP MD5 signature key. */
  password?: string;
}

export interface ListenOptions {
  address: string;
  port: number;
}

export interface BgpListener {
  readonly port: number;
  accept(): Promise<BgpConn>;
  /** Installs (or removes with undefined) the MD5 key expected from `peer`; needs an MD5-capable transport. */
  setPassword(peer: string, password: string | undefined): void;
  close(): void;
}

export interface Transport {
  readonly name: string;
  /** Which per-peer options this transport honours. */
  readonly supports: { password: boolean; ttl: boolean; localAddress: boolean };
  connect(opts: ConnectOptions): Promise<BgpConn>;
  listen(opts: ListenOptions): BgpListener;
}

function stripV4Mapped(a: string): string {
  return a.startsWith("::ffff:") && a.includes(".") ? a.slice(7) : a;
}

class DenoConn implements BgpConn {
  #closed = false;
  readonly localAddress: string;
  readonly localPort: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
  constructor(readonly conn: Deno.TcpConn) {
    const l = conn.localAddr as Deno.NetAddr, r = conn.remoteAddr as Deno.NetAddr;
    this.localAddress = stripV4Mapped(l.hostname);
    this.localPort = l.port;
    this.remoteAddress = stripV4Mapped(r.hostname);
    this.remotePort = r.port;
    try {
      conn.setNoDelay(true);
    } catch { /* best effort */ }
  }
  async read(p: Uint8Array): Promise<number | null> {
    try {
      return await this.conn.read(p);
    } catch (e) {
      if (this.#closed) return null;
      throw new TransportError(`read from ${this.remoteAddress}`, { cause: e });
    }
  }
  async writeAll(p: Uint8Array): Promise<void> {
    let off = 0;
    try {
      while (off < p.length) off += await this.conn.write(p.subarray(off));
    } catch (e) {
      throw new TransportError(`write to ${this.remoteAddress}`, { cause: e });
    }
  }
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch { /* already closed */ }
  }
}

/** Deno's own TCP: simple and fast, but no MD5, TTL or source-address binding. */
export const denoTransport: Transport = {
  name: "deno",
  supports: { password: false, ttl: false, localAddress: false },
  async connect(opts) {
    if (opts.password) throw new TransportError("the Deno TCP transport cannot set TCP_MD5SIG");
    try {
      const c = await Deno.connect({ hostname: opts.remoteAddress, port: opts.remotePort, transport: "tcp" });
      return new DenoConn(c);
    } catch (e) {
      throw new TransportError(`connect to ${opts.remoteAddress}:${opts.remotePort}`, { cause: e });
    }
  },
  listen(opts) {
    let l: Deno.TcpListener;
    try {
      l = Deno.listen({ hostname: opts.address, port: opts.port, transport: "tcp" });
    } catch (e) {
      throw new TransportError(`listen on ${opts.address}:${opts.port}`, { cause: e });
    }
    let closed = false;
    return {
      port: (l.addr as Deno.NetAddr).port,
      async accept() {
        try {
          return new DenoConn(await l.accept());
        } catch (e) {
          throw new TransportError(closed ? "listener closed" : "accept failed", { cause: e });
        }
      },
      setPassword(_peer, password) {
        if (password) throw new TransportError("the Deno TCP transport cannot check TCP MD5 signatures");
      },
      close() {
        if (closed) return;
        closed = true;
        try {
          l.close();
        } catch { /* closed */ }
      },
    };
  },
};

// ---------------------------------------------------------------------------------------------------
// In-memory transport for unit tests

class Pipe {
  #chunks: Uint8Array[] = [];
  #waiter: (() => void) | undefined;
  closed = false;
  push(b: Uint8Array): void {
    if (this.closed) return;
    this.#chunks.push(b.slice());
    this.#wake();
  }
  end(): void {
    this.closed = true;
    this.#wake();
  }
  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }
  async read(p: Uint8Array): Promise<number | null> {
    while (this.#chunks.length === 0) {
      if (this.closed) return null;
      await new Promise<void>((r) => this.#waiter = r);
    }
    const c = this.#chunks[0]!;
    const n = Math.min(c.length, p.length);
    p.set(c.subarray(0, n));
    if (n === c.length) this.#chunks.shift();
    else this.#chunks[0] = c.subarray(n);
    return n;
  }
}

class MemoryConn implements BgpConn {
  constructor(
    readonly localAddress: string,
    readonly localPort: number,
    readonly remoteAddress: string,
    readonly remotePort: number,
    readonly inbound: Pipe,
    readonly outbound: Pipe,
  ) {}
  /** Bytes written by this side, for tests that inspect the wire. */
  readonly written: Uint8Array[] = [];
  read(p: Uint8Array): Promise<number | null> {
    return this.inbound.read(p);
  }
  writeAll(p: Uint8Array): Promise<void> {
    if (this.outbound.closed) return Promise.reject(new TransportError("connection closed"));
    this.written.push(p.slice());
    this.outbound.push(p);
    return Promise.resolve();
  }
  close(): void {
    this.outbound.end();
    this.inbound.end();
  }
}

/** A fake network of in-memory listeners; `connect` from address A reaches a listener on address B. */
export class MemoryNetwork {
  #listeners = new Map<string, { queue: MemoryConn[]; waiter: (() => void) | undefined; closed: boolean }>();
  #nextPort = 40000;
  /** Every connection made, for inspection. */
  readonly conns: MemoryConn[] = [];

  /** The transport as seen from a host with address `self`. */
  transportFor(self: string): Transport {
    return {
      name: "memory",
      supports: { password: true, ttl: true, localAddress: true },
      connect: (opts) => {
        const l = this.#listeners.get(`${opts.remoteAddress}:${opts.remotePort}`);
        if (!l || l.closed) {
          return Promise.reject(new TransportError(`connection refused by ${opts.remoteAddress}`));
        }
        const a = new Pipe(), b = new Pipe();
        const port = this.#nextPort++;
        const mine = new MemoryConn(self, port, opts.remoteAddress, opts.remotePort, a, b);
        const theirs = new MemoryConn(opts.remoteAddress, opts.remotePort, self, port, b, a);
        this.conns.push(mine, theirs);
        l.queue.push(theirs);
        const w = l.waiter;
        l.waiter = undefined;
        w?.();
        return Promise.resolve(mine);
      },
      listen: (opts) => {
        const key = `${self}:${opts.port}`;
        const l: { queue: MemoryConn[]; waiter: (() => void) | undefined; closed: boolean } = {
          queue: [],
          waiter: undefined,
          closed: false,
        };
        this.#listeners.set(key, l);
        return {
          port: opts.port,
          accept: async () => {
            while (l.queue.length === 0) {
              if (l.closed) throw new TransportError("listener closed");
              await new Promise<void>((r) => l.waiter = r);
            }
            return l.queue.shift()!;
          },
          setPassword() {},
          close: () => {
            l.closed = true;
            this.#listeners.delete(key);
            const w = l.waiter;
            l.waiter = undefined;
            w?.();
          },
        };
      },
    };
  }
}
