/**
 * Typed errors for everything in ffi/, and the one place where callers ask what an error means
 * (`isNotFound(err)`, `isExists(err)`…) instead of matching message strings.
 */

/** errno numbers (Linux, x86_64 and generic) to their symbolic names. */
export const ERRNO_NAMES: Readonly<Record<number, string>> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  6: "ENXIO",
  7: "E2BIG",
  9: "EBADF",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  19: "ENODEV",
  22: "EINVAL",
  23: "ENFILE",
  24: "EMFILE",
  28: "ENOSPC",
  32: "EPIPE",
  34: "ERANGE",
  61: "ENODATA",
  62: "ETIME",
  71: "EPROTO",
  74: "EBADMSG",
  75: "EOVERFLOW",
  84: "EILSEQ",
  90: "EMSGSIZE",
  92: "ENOPROTOOPT",
  93: "EPROTONOSUPPORT",
  94: "ESOCKTNOSUPPORT",
  95: "EOPNOTSUPP",
  97: "EAFNOSUPPORT",
  98: "EADDRINUSE",
  99: "EADDRNOTAVAIL",
  100: "ENETDOWN",
  101: "ENETUNREACH",
  103: "ECONNABORTED",
  104: "ECONNRESET",
  105: "ENOBUFS",
  106: "EISCONN",
  107: "ENOTCONN",
  110: "ETIMEDOUT",
  111: "ECONNREFUSED",
  113: "EHOSTUNREACH",
  114: "EALREADY",
  115: "EINPROGRESS",
};

/** Symbolic name of an errno value, e.g. 17 -> "EEXIST"; unknown values become "E<n>". */
export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `E${errno}`;
}

/** Well-known errno values used by the predicates below and by ffi/ itself. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EAGAIN: 11,
  ENOMEM: 12,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  EMSGSIZE: 90,
  EOPNOTSUPP: 95,
  EAFNOSUPPORT: 97,
  EADDRNOTAVAIL: 99,
  ENETDOWN: 100,
  ENETUNREACH: 101,
  ENOBUFS: 105,
  EINPROGRESS: 115,
} as const;

/** A system call or a netlink request failed with an errno. */
export class ErrnoError extends Error {
  /** Positive errno value. */
  readonly errno: number;
  /** Symbolic name such as "EEXIST". */
  readonly code: string;
  /** What was being done, e.g. "sendto" or "RTM_NEWROUTE 10.1.2.0/24". */
  readonly op: string;
  constructor(errno: number, op: string, detail?: string, options?: ErrorOptions) {
    const name = errnoName(errno);
    super(`${op}: ${name}${detail ? ` (${detail})` : ""}`, options);
    this.name = "ErrnoError";
    this.errno = errno;
    this.code = name;
    this.op = op;
  }
}

/**
 * The kernel refused a netlink request. Carries the errno plus the extended-ACK text the kernel gave
 * (NETLINK_EXT_ACK), e.g. "Nexthop device is not up".
 */
export class NetlinkError extends ErrnoError {
  /** The kernel's extended-ACK message, if it sent one. */
  readonly extAck: string | undefined;
  /** Sequence number of the request that failed. */
  readonly seq: number;
  constructor(errno: number, op: string, seq: number, extAck?: string, options?: ErrorOptions) {
    super(errno, op, extAck, options);
    this.name = "NetlinkError";
    this.extAck = extAck;
    this.seq = seq;
  }
}

/** A netlink message could not be decoded (truncated, bad length, wrong type). */
export class NetlinkDecodeError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "NetlinkDecodeError";
  }
}

/** A shared library could not be loaded; the message names the Debian package that provides it. */
export class LibraryLoadError extends Error {
  readonly path: string;
  constructor(message: string, path: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "LibraryLoadError";
    this.path = path;
  }
}

/** libnftables rejected a command or a transaction; `message` is nft's own error text. */
export class NftError extends Error {
  /** Return code of nft_run_cmd_from_buffer. */
  readonly rc: number;
  /** nft's error buffer, verbatim. */
  readonly nftMessage: string;
  /**
   * Indexes of the transaction operations nft's error locations name (NftTransaction.operationsAt), so a
   * caller can drop the objects that caused the failure and retry the rest; empty when nft named none.
   */
  readonly operations: readonly number[];
  constructor(rc: number, nftMessage: string, options?: ErrorOptions & { operations?: readonly number[] }) {
    super(`nft: ${nftMessage.trim() || `failed with rc ${rc}`}`, options);
    this.name = "NftError";
    this.rc = rc;
    this.nftMessage = nftMessage;
    this.operations = options?.operations ?? [];
  }
}

function errnoOf(err: unknown): number | undefined {
  if (err instanceof ErrnoError) return err.errno;
  if (err instanceof Error && err.cause !== undefined && err.cause !== err) return errnoOf(err.cause);
  return undefined;
}

/**
 * True when the object does not exist: ENOENT, ESRCH (routes), ENODEV (links), EADDRNOTAVAIL (addresses),
 * nft "No such file or directory".
 */
export function isNotFound(err: unknown): boolean {
  const e = errnoOf(err);
  if (e !== undefined) {
    return e === Errno.ENOENT || e === Errno.ESRCH || e === Errno.ENODEV || e === Errno.EADDRNOTAVAIL;
  }
  return err instanceof NftError && /No such file or directory|does not exist/i.test(err.nftMessage);
}

/** True when the object already exists (EEXIST, nft "File exists"). */
export function isExists(err: unknown): boolean {
  const e = errnoOf(err);
  if (e !== undefined) return e === Errno.EEXIST;
  return err instanceof NftError && /File exists/i.test(err.nftMessage);
}

/** True when the object is still in use (EBUSY, nft "Device or resource busy"), e.g. a chain jumped to. */
export function isBusy(err: unknown): boolean {
  const e = errnoOf(err);
  if (e !== undefined) return e === Errno.EBUSY;
  return err instanceof NftError && /Device or resource busy/i.test(err.nftMessage);
}

/** True when the caller lacks privilege (EPERM/EACCES, nft "Operation not permitted"). */
export function isPermission(err: unknown): boolean {
  const e = errnoOf(err);
  if (e !== undefined) return e === Errno.EPERM || e === 13;
  return err instanceof NftError && /Operation not permitted/i.test(err.nftMessage);
}

/** True when the kernel lacks the feature (EOPNOTSUPP, EAFNOSUPPORT, "Unknown device type"). */
export function isNotSupported(err: unknown): boolean {
  const e = errnoOf(err);
  if (e === Errno.EOPNOTSUPP || e === Errno.EAFNOSUPPORT || e === 93) return true;
  return err instanceof NetlinkError && /Unknown device type/i.test(err.extAck ?? "");
}

/** True when a socket's receive queue overflowed and events were lost: the caller must resync. */
export function isNoBufs(err: unknown): boolean {
  return errnoOf(err) === Errno.ENOBUFS;
}

/** True when the operation would block (EAGAIN). */
export function isWouldBlock(err: unknown): boolean {
  return errnoOf(err) === Errno.EAGAIN;
}
