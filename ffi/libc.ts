/**
 * The libc binding: the one symbol table through which ffi/ (and later ffi/tcp.ts) makes system calls.
 * Every entry carries its C prototype as a comment. The library path can be overridden with
 * KUBE_ROUTER_LIBC. errno is read through `__errno_location` and is only meaningful right after a
 * synchronous call: `check()` reads it for error messages; code that acts on an errno reads it inline
 * through `errnoRef()` (the runtime can overwrite it between a call's return and any later function call).
 */
import { type Family, formatIP, parseIP } from "./ip.ts";
import { ErrnoError, LibraryLoadError } from "./errors.ts";

/** libc symbols; `*_nb` entries are the same function run on a worker thread (nonblocking: true). */
export const LIBC_SYMBOLS = {
  /** int socket(int domain, int type, int protocol); */
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  /** int bind(int fd, const struct sockaddr *addr, socklen_t len); */
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** int connect(int fd, const struct sockaddr *addr, socklen_t len); */
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  /** int listen(int fd, int backlog); */
  listen: { parameters: ["i32", "i32"], result: "i32" },
  /** int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags); */
  accept4: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  /** ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to, socklen_t tolen); */
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  sendto_nb: {
    name: "sendto",
    parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"],
    result: "isize",
    nonblocking: true,
  },
  /** ssize_t sendmsg(int fd, const struct msghdr *msg, int flags); */
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  /** ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from, socklen_t *fromlen); */
  recvfrom: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "buffer"], result: "isize" },
  /** ssize_t recvmsg(int fd, struct msghdr *msg, int flags); */
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  /** int setsockopt(int fd, int level, int name, const void *val, socklen_t len); */
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  /** int getsockopt(int fd, int level, int name, void *val, socklen_t *len); */
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  /** int getsockname(int fd, struct sockaddr *addr, socklen_t *len); */
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  /** int getpeername(int fd, struct sockaddr *addr, socklen_t *len); */
  getpeername: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  /** int fcntl(int fd, int cmd, int arg);  (variadic in C; the int form is ABI-compatible on Linux) */
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  /** ssize_t read(int fd, void *buf, size_t count); */
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** ssize_t read(int fd, void *buf, size_t count);  on a worker thread */
  read_nb: { name: "read", parameters: ["i32", "buffer", "usize"], result: "isize", nonblocking: true },
  /** ssize_t write(int fd, const void *buf, size_t count); */
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  /** int close(int fd); */
  close: { parameters: ["i32"], result: "i32" },
  /** int poll(struct pollfd *fds, nfds_t nfds, int timeout_ms); */
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  /** int poll(struct pollfd *fds, nfds_t nfds, int timeout_ms);  on a worker thread, for waiting on events */
  poll_nb: { name: "poll", parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  /** int eventfd(unsigned int initval, int flags); */
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  /** unsigned int if_nametoindex(const char *ifname); */
  if_nametoindex: { parameters: ["buffer"], result: "u32" },
  /** int malloc_trim(size_t pad); */
  malloc_trim: { parameters: ["usize"], result: "i32" },
  /** int malloc_trim(size_t pad);  on a worker thread (trimming a large heap takes tens of ms) */
  malloc_trim_nb: { name: "malloc_trim", parameters: ["usize"], result: "i32", nonblocking: true },
  /** int *__errno_location(void); */
  __errno_location: { parameters: [], result: "pointer" },
  /** char *strerror(int errnum); */
  strerror: { parameters: ["i32"], result: "pointer" },
  /** pid_t getpid(void); */
  getpid: { parameters: [], result: "i32" },
  /** int open(const char *path, int flags);  (variadic in C; without O_CREAT the mode is not read) */
  open: { parameters: ["buffer", "i32"], result: "i32" },
  /** int setns(int fd, int nstype);  moves the calling thread only */
  setns: { parameters: ["i32", "i32"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

export type LibcSymbols = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>["symbols"];

// Constants (Linux x86_64/aarch64 values).
export const AF_UNSPEC = 0;
export const AF_UNIX = 1;
export const AF_INET = 2;
export const AF_BRIDGE = 7;
export const AF_INET6 = 10;
export const AF_NETLINK = 16;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const SOCK_RAW = 3;
export const SOCK_NONBLOCK = 0o4000;
export const SOCK_CLOEXEC = 0o2000000;
export const SOL_SOCKET = 1;
export const SO_REUSEADDR = 2;
export const SO_ERROR = 4;
export const SO_SNDBUF = 7;
export const SO_RCVBUF = 8;
export const SO_RCVTIMEO = 20;
export const SO_SNDBUFFORCE = 32;
export const SO_RCVBUFFORCE = 33;
export const IPPROTO_IP = 0;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_IPV6 = 41;
export const F_GETFL = 3;
export const F_SETFL = 4;
export const O_NONBLOCK = 0o4000;
export const MSG_PEEK = 2;
export const MSG_TRUNC = 0x20;
export const MSG_DONTWAIT = 0x40;
export const MSG_NOSIGNAL = 0x4000;
export const POLLIN = 1;
export const POLLOUT = 4;
export const POLLERR = 8;
export const POLLHUP = 16;
export const POLLNVAL = 32;
export const TCP_NODELAY = 1;
export const TCP_MD5SIG = 14;
export const IP_TTL = 2;
export const IPV6_UNICAST_HOPS = 16;
export const IPV6_V6ONLY = 26;
export const SO_KEEPALIVE = 9;
export const SO_BINDTODEVICE = 25;
export const EFD_CLOEXEC = 0o2000000;
export const O_RDONLY = 0;
export const O_CLOEXEC = 0o2000000;
export const CLONE_NEWNET = 0x40000000;
export const EFD_NONBLOCK = 0o4000;

let lib: Deno.DynamicLibrary<typeof LIBC_SYMBOLS> | undefined;
/** This thread's errno, as memory (each worker loads its own copy of this module, on its own thread). */
let errnoCell: Int32Array | undefined;

/** Path of libc: KUBE_ROUTER_LIBC, else the glibc soname. */
export function libcPath(): string {
  return Deno.env.get("KUBE_ROUTER_LIBC") || "libc.so.6";
}

/** The libc symbols, opened on first use. Throws LibraryLoadError (with `cause`) when libc cannot be opened. */
export function libc(): LibcSymbols {
  if (lib) return lib.symbols;
  const path = libcPath();
  try {
    lib = Deno.dlopen(path, LIBC_SYMBOLS);
  } catch (cause) {
    throw new LibraryLoadError(
      `cannot load libc from ${path} (set KUBE_ROUTER_LIBC; needs --allow-ffi; Debian package libc6)`,
      path,
      { cause },
    );
  }
  return lib.symbols;
}

/**
 * This thread's errno as memory: read `cell[0]` in the same function, right after the call, with no call
 * in between. A function call in between (even `errno()`) may run the runtime's own pending work on this
 * thread first (compiling, installing code), which can leave an errno of its own. Measured on Deno 2.9,
 * reading an expected EAGAIN in each of the first 50 failed recvfrom calls of a fresh process: through a
 * function, 5 of 100 processes read ENOENT at least once; inline, 0 of 200. Loops that act on an expected
 * errno (EAGAIN, EINTR, EINPROGRESS) therefore read it this way.
 */
export function errnoRef(): Int32Array {
  if (!errnoCell) {
    const p = libc().__errno_location();
    if (p === null) throw new Error("__errno_location returned NULL");
    errnoCell = new Int32Array(Deno.UnsafePointerView.getArrayBuffer(p, 4));
  }
  return errnoCell;
}

/**
 * The calling thread's errno, as of this call: good enough for an error message (`check`), not for
 * deciding what to do next (see `errnoRef`).
 */
export function errno(): number {
  return errnoRef()[0]!;
}

/** Human text for an errno, from libc. */
export function strerror(n: number): string {
  const p = libc().strerror(n);
  return p === null ? `errno ${n}` : Deno.UnsafePointerView.getCString(p);
}

/**
 * Turns a libc return code into a number, throwing ErrnoError when it is negative. Call it directly on
 * the result of the call, before any other libc call, so errno is still the call's own (almost always:
 * see `errnoRef`; only the error's message depends on it).
 */
export function check(rc: number | bigint, op: string): number {
  const n = typeof rc === "bigint" ? Number(rc) : rc;
  if (n < 0) {
    const e = errno();
    throw new ErrnoError(e, op, strerror(e));
  }
  return n;
}

/** A NUL-terminated copy of a string for `const char *` parameters. */
export function cstring(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/** setsockopt with an int value. */
export function setsockoptInt(
  fd: number,
  level: number,
  name: number,
  value: number,
  op = "setsockopt",
): void {
  const v = new Int32Array([value]);
  check(libc().setsockopt(fd, level, name, new Uint8Array(v.buffer), 4), `${op}(${level},${name})`);
}

/** getsockopt for an int value. */
export function getsockoptInt(fd: number, level: number, name: number): number {
  const v = new Int32Array(1);
  const len = new Uint32Array([4]);
  check(
    libc().getsockopt(fd, level, name, new Uint8Array(v.buffer), new Uint8Array(len.buffer)),
    `getsockopt(${level},${name})`,
  );
  return v[0]!;
}

/** Sets or clears O_NONBLOCK on a file descriptor. */
export function setNonBlocking(fd: number, on = true): void {
  const flags = check(libc().fcntl(fd, F_GETFL, 0), "fcntl(F_GETFL)");
  check(libc().fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK), "fcntl(F_SETFL)");
}

/** Interface index of a name in the current network namespace, or undefined. Equivalent to `ip link show NAME`. */
export function ifNameToIndex(name: string): number | undefined {
  const i = libc().if_nametoindex(cstring(name));
  return i === 0 ? undefined : i;
}

/** Gives freed heap memory back to the OS. Use after a large transient load (e.g. a 100k-element nft map). */
export function mallocTrim(): void {
  libc().malloc_trim(0n);
}

/** Like `mallocTrim`, on a worker thread, so the event loop is not held while a large heap is trimmed. */
export async function mallocTrimAsync(): Promise<void> {
  await libc().malloc_trim_nb(0n);
}

/** Encodes `struct pollfd[]` for poll(2). */
export function pollFds(fds: readonly { fd: number; events: number }[]): Uint8Array<ArrayBuffer> {
  const buf = new Uint8Array(fds.length * 8);
  const dv = new DataView(buf.buffer);
  fds.forEach((f, i) => {
    dv.setInt32(i * 8, f.fd, true);
    dv.setInt16(i * 8 + 4, f.events, true);
  });
  return buf;
}

/** Reads `revents` of entry `i` after poll(2). */
export function pollRevents(buf: Uint8Array, i: number): number {
  return new DataView(buf.buffer, buf.byteOffset).getInt16(i * 8 + 6, true);
}

/** The AF_* value of an IP family, for the family byte of the netlink codecs and sockaddrs. */
export function afOf(family: Family): number {
  return family === 4 ? AF_INET : AF_INET6;
}

/** The IP family of an AF_* value; undefined for any other (AF_UNSPEC, AF_BRIDGE…). */
export function familyOfAf(af: number): Family | undefined {
  return af === AF_INET ? 4 : af === AF_INET6 ? 6 : undefined;
}

/**
 * `struct sockaddr_in` (16 bytes) or `struct sockaddr_in6` (28 bytes) for an address and port, for
 * bind/connect/sendto and inside `struct tcp_md5sig`. Throws TypeError for an invalid address.
 */
export function sockaddr(ip: string, port: number, scopeId = 0): Uint8Array<ArrayBuffer> {
  const a = parseIP(ip);
  if (!a) throw new TypeError(`invalid IP address ${JSON.stringify(ip)}`);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new TypeError(`invalid port ${port}`);
  const b = new Uint8Array(a.family === 4 ? 16 : 28);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, afOf(a.family), true);
  dv.setUint16(2, port, false);
  if (a.family === 4) {
    b.set(a.addr, 4);
  } else {
    b.set(a.addr, 8);
    dv.setUint32(24, scopeId, true);
  }
  return b;
}

/**
 * Decodes a `struct sockaddr_in`/`sockaddr_in6` (as filled by accept4/getsockname/getpeername). An
 * IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a dual-stack socket reports for an IPv4 peer) comes
 * back as IPv4, so a peer is named the same whichever socket it reached.
 */
export function parseSockaddr(b: Uint8Array): { family: 4 | 6; ip: string; port: number } | undefined {
  if (b.length < 2) return undefined;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const fam = dv.getUint16(0, true);
  if (fam === AF_INET && b.length >= 8) {
    return { family: 4, ip: formatIP(b.subarray(4, 8)), port: dv.getUint16(2, false) };
  }
  if (fam === AF_INET6 && b.length >= 24) {
    const a = b.subarray(8, 24);
    const mapped = a.subarray(0, 10).every((x) => x === 0) && a[10] === 0xff && a[11] === 0xff;
    if (mapped) return { family: 4, ip: formatIP(a.subarray(12, 16)), port: dv.getUint16(2, false) };
    return { family: 6, ip: formatIP(a), port: dv.getUint16(2, false) };
  }
  return undefined;
}
