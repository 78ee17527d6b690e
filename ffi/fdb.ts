/**
 * Bridge forwarding database entries (`bridge fdb`) over rtnetlink: RTM_NEWNEIGH/RTM_DELNEIGH/RTM_GETNEIGH
 * with `ndm_family = AF_BRIDGE`. The router uses them to tell its VXLAN device which underlay address
 * (VTEP) owns each remote MAC, so no multicast group or learning is needed.
 *
 * Equivalent to: `bridge fdb replace 0a:58:c0:a8:02:64 dst 192.168.2.100 dev kube-vxlan self permanent`.
 *
 * `NetlinkFdb` talks to the kernel of the current network namespace on its own NETLINK_ROUTE socket;
 * `FakeFdb` keeps entries in memory (optionally checking devices against a `Rtnl`, such as
 * `FakeRtnetlink`, so entries vanish with their device as in the kernel).
 */
import { Errno, ErrnoError, NetlinkDecodeError, NetlinkError } from "./errors.ts";
import { formatIP, ipBytes } from "./ip.ts";
import { AF_BRIDGE } from "./libc.ts";
import {
  attrMap,
  NETLINK_ROUTE,
  NLM_F_APPEND,
  NLM_F_CREATE,
  NLM_F_REPLACE,
  type NlMsg,
  type NlWriter,
  read,
} from "./netlink.ts";
import { NetlinkSocket } from "./netlink_socket.ts";
import { formatMac, macBytes, RTM_DELNEIGH, RTM_GETNEIGH, RTM_NEWNEIGH } from "./rtnl_codec.ts";
import { NeighState, type Rtnl } from "./rtnl_types.ts";

/** ndm_flags: the entry lives in the device's own table (`self`), e.g. a VXLAN device's. */
export const NTF_SELF = 0x02;
/** ndm_flags: the entry lives in the master bridge's table (`master`). */
export const NTF_MASTER = 0x04;

const NDA_DST = 1;
const NDA_LLADDR = 2;
const NDA_PORT = 6;
const NDA_VNI = 7;

/** One forwarding entry (`bridge fdb show`). */
export interface FdbEntry {
  /** Interface index (ndm_ifindex). */
  dev: number;
  /** MAC address "aa:bb:cc:dd:ee:ff" (NDA_LLADDR). */
  mac: string;
  /** Remote VTEP address (NDA_DST), IPv4 or IPv6. */
  dst?: string;
  /** NUD_* state; defaults to NUD_NOARP|NUD_PERMANENT, as `bridge fdb … permanent`. */
  state?: number;
  /** NTF_* flags; defaults to NTF_SELF. */
  flags?: number;
  /** Remote UDP port (NDA_PORT), when it differs from the device's. */
  port?: number;
  /** VNI (NDA_VNI), when it differs from the device's. */
  vni?: number;
}

/** What the router does with the bridge FDB; implemented by `NetlinkFdb` and `FakeFdb`. */
export interface Fdb {
  /** `bridge fdb replace MAC dst DST dev DEV self permanent`: creates or overwrites the entry. */
  fdbReplace(e: FdbEntry): Promise<void>;
  /** `bridge fdb append MAC dst DST dev DEV self permanent`: adds one more destination for MAC. */
  fdbAppend(e: FdbEntry): Promise<void>;
  /** `bridge fdb del MAC [dst DST] dev DEV self`: without `dst`, every destination of MAC goes. */
  fdbDel(e: FdbEntry): Promise<void>;
  /** `bridge fdb show dev DEV`: one entry per (MAC, destination). */
  fdbList(dev: number): Promise<FdbEntry[]>;
  /** Releases the socket. Idempotent. */
  close(): void;
}

/** Default state of an entry we write: NUD_NOARP|NUD_PERMANENT, what iproute2 sends for `permanent`. */
export const FDB_PERMANENT = NeighState.noarp | NeighState.permanent;

/** Lower-case canonical form of a MAC address; throws TypeError when malformed. */
export function normMac(mac: string): string {
  return formatMac(macBytes(mac));
}

/**
 * Body of RTM_NEWNEIGH/RTM_DELNEIGH for an FDB entry: `struct ndmsg` (AF_BRIDGE) then NDA_LLADDR,
 * NDA_DST, NDA_PORT, NDA_VNI, in iproute2's order (bridge/fdb.c).
 */
export function encodeFdb(w: NlWriter, e: FdbEntry): void {
  w.u8(AF_BRIDGE).u8(0).u16(0).i32(e.dev).u16(e.state ?? FDB_PERMANENT).u8(e.flags ?? NTF_SELF).u8(0);
  w.attr(NDA_LLADDR, macBytes(e.mac));
  if (e.dst !== undefined) w.attr(NDA_DST, ipBytes(e.dst));
  if (e.port !== undefined) w.attrBe16(NDA_PORT, e.port);
  if (e.vni !== undefined) w.attrU32(NDA_VNI, e.vni);
}

/**
 * Body of an RTM_GETNEIGH dump of one device's FDB, as `bridge fdb show dev DEV` sends it: with
 * NETLINK_GET_STRICT_CHK the kernel then returns only that device's entries.
 */
export function encodeFdbDump(w: NlWriter, dev = 0): void {
  w.u8(AF_BRIDGE).u8(0).u16(0).i32(dev).u16(0).u8(0).u8(0);
}

/** Decodes an RTM_NEWNEIGH/RTM_DELNEIGH FDB message; undefined for other families (ARP/NDP entries). */
export function decodeFdb(m: NlMsg): FdbEntry | undefined {
  try {
    const p = m.payload;
    if (p.length < 12) throw new NetlinkDecodeError(`ndmsg header is ${p.length} bytes, need 12`);
    const dv = new DataView(p.buffer, p.byteOffset, p.byteLength);
    if (dv.getUint8(0) !== AF_BRIDGE) return undefined;
    const a = attrMap(p.subarray(12));
    const ll = a.get(NDA_LLADDR);
    if (!ll || ll.length !== 6) throw new NetlinkDecodeError("missing or malformed NDA_LLADDR");
    const e: FdbEntry = {
      dev: dv.getInt32(4, true),
      mac: formatMac(ll),
      state: dv.getUint16(8, true),
      flags: dv.getUint8(10),
    };
    const dst = a.get(NDA_DST);
    if (dst) {
      if (dst.length !== 4 && dst.length !== 16) {
        throw new NetlinkDecodeError(`NDA_DST is ${dst.length} bytes`);
      }
      e.dst = formatIP(dst);
    }
    const port = a.get(NDA_PORT);
    if (port) e.port = read.be16(port, "NDA_PORT");
    const vni = a.get(NDA_VNI);
    if (vni) e.vni = read.u32(vni, "NDA_VNI");
    return e;
  } catch (err) {
    if (err instanceof NetlinkDecodeError) {
      throw new NetlinkDecodeError(`fdb: ${err.message}`, { cause: err });
    }
    throw new NetlinkDecodeError(`fdb: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
}

function describe(e: FdbEntry): string {
  return `${e.mac}${e.dst !== undefined ? ` dst ${e.dst}` : ""} dev #${e.dev}`;
}

/** The kernel's bridge FDB in the current network namespace, over its own NETLINK_ROUTE socket. */
export class NetlinkFdb implements Fdb {
  #sock: NetlinkSocket | undefined;

  /** Opens a socket, or uses `sock` (a scripted transport in unit tests). */
  constructor(sock?: NetlinkSocket) {
    this.#sock = sock ?? NetlinkSocket.open(NETLINK_ROUTE, { strictDump: true, rcvbuf: 1 << 20 });
  }

  get #s(): NetlinkSocket {
    if (!this.#sock) throw new ErrnoError(9, "NetlinkFdb is closed");
    return this.#sock;
  }

  #run(f: () => void): Promise<void> {
    try {
      f();
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Equivalent to: `bridge fdb replace MAC dst DST dev DEV self permanent` */
  fdbReplace(e: FdbEntry): Promise<void> {
    return this.#run(() => {
      this.#s.request(
        RTM_NEWNEIGH,
        NLM_F_CREATE | NLM_F_REPLACE,
        (w) => encodeFdb(w, e),
        `bridge fdb replace ${describe(e)}`,
      );
    });
  }

  /** Equivalent to: `bridge fdb append MAC dst DST dev DEV self permanent` */
  fdbAppend(e: FdbEntry): Promise<void> {
    return this.#run(() => {
      this.#s.request(
        RTM_NEWNEIGH,
        NLM_F_CREATE | NLM_F_APPEND,
        (w) => encodeFdb(w, e),
        `bridge fdb append ${describe(e)}`,
      );
    });
  }

  /** Equivalent to: `bridge fdb del MAC [dst DST] dev DEV self` */
  fdbDel(e: FdbEntry): Promise<void> {
    return this.#run(() => {
      this.#s.request(RTM_DELNEIGH, 0, (w) => encodeFdb(w, e), `bridge fdb del ${describe(e)}`);
    });
  }

  /** Equivalent to: `bridge fdb show dev DEV` */
  fdbList(dev: number): Promise<FdbEntry[]> {
    try {
      const out: FdbEntry[] = [];
      for (
        const m of this.#s.dump(RTM_GETNEIGH, (w) => encodeFdbDump(w, dev), `bridge fdb show dev #${dev}`)
      ) {
        if (m.type !== RTM_NEWNEIGH) continue;
        const e = decodeFdb(m);
        // The kernel filters by device under strict checking; filter again for older kernels.
        if (e && e.dev === dev) out.push(e);
      }
      return Promise.resolve(out);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  close(): void {
    this.#sock?.close();
    this.#sock = undefined;
  }
}

function fail(errno: number, op: string, text?: string): NetlinkError {
  return new NetlinkError(errno, op, 0, text);
}

/** Multicast or all-zeros MACs are the only ones a VXLAN device keeps several destinations for. */
function multiDestination(mac: string): boolean {
  const b = macBytes(mac);
  return (b[0]! & 1) === 1 || b.every((x) => x === 0);
}

/**
 * In-memory FDB with the kernel's rules for a VXLAN device's own table (checked by the shared conformance
 * cases): `replace` overwrites the destination of a MAC; `append` creates an entry, adds one more
 * destination only for a multicast or the all-zeros MAC (the default destinations) and otherwise
 * changes nothing; `del` without `dst` drops the MAC, with `dst` that destination; a missing MAC is ENOENT
 * (a missing destination of a present MAC is silently ignored). Given a `Rtnl`, it refuses unknown devices (ENODEV), refuses a destination
 * whose family differs from a VXLAN device's local address (EAFNOSUPPORT), and forgets entries of devices
 * that have been deleted.
 */
export class FakeFdb implements Fdb {
  #entries: (FdbEntry & { state: number; flags: number })[] = [];
  readonly #rtnl: Rtnl | undefined;
  /** Every mutating call, in order, for tests that check what was (not) done. */
  readonly calls: { op: "replace" | "append" | "del"; entry: FdbEntry }[] = [];

  constructor(rtnl?: Rtnl) {
    this.#rtnl = rtnl;
  }

  async #check(e: FdbEntry, op: string): Promise<void> {
    macBytes(e.mac);
    if (e.dst !== undefined) ipBytes(e.dst);
    await this.#prune();
    if (!this.#rtnl) return;
    const link = (await this.#rtnl.linkList()).find((l) => l.index === e.dev);
    if (!link) throw fail(Errno.ENODEV, op, "no such device");
    const local = link.vxlan?.local;
    if (e.dst !== undefined && local !== undefined && local.includes(":") !== e.dst.includes(":")) {
      throw fail(Errno.EAFNOSUPPORT, op);
    }
  }

  /** Drops entries whose device no longer exists (the kernel flushes them with the device). */
  async #prune(): Promise<void> {
    if (!this.#rtnl) return;
    const alive = new Set((await this.#rtnl.linkList()).map((l) => l.index));
    this.#entries = this.#entries.filter((x) => alive.has(x.dev));
  }

  #norm(e: FdbEntry): FdbEntry & { state: number; flags: number } {
    const n: FdbEntry & { state: number; flags: number } = {
      dev: e.dev,
      mac: normMac(e.mac),
      state: e.state ?? FDB_PERMANENT,
      flags: e.flags ?? NTF_SELF,
    };
    if (e.dst !== undefined) n.dst = formatIP(ipBytes(e.dst));
    if (e.port !== undefined) n.port = e.port;
    if (e.vni !== undefined) n.vni = e.vni;
    return n;
  }

  async fdbReplace(e: FdbEntry): Promise<void> {
    await this.#check(e, `bridge fdb replace ${describe(e)}`);
    this.calls.push({ op: "replace", entry: { ...e } });
    const n = this.#norm(e);
    const i = this.#entries.findIndex((x) => x.dev === n.dev && x.mac === n.mac);
    if (i >= 0) this.#entries[i] = n;
    else this.#entries.push(n);
  }

  async fdbAppend(e: FdbEntry): Promise<void> {
    await this.#check(e, `bridge fdb append ${describe(e)}`);
    this.calls.push({ op: "append", entry: { ...e } });
    const n = this.#norm(e);
    const same = this.#entries.filter((x) => x.dev === n.dev && x.mac === n.mac);
    if (same.length > 0 && (!multiDestination(n.mac) || same.some((x) => x.dst === n.dst))) return;
    this.#entries.push(n);
  }

  async fdbDel(e: FdbEntry): Promise<void> {
    const op = `bridge fdb del ${describe(e)}`;
    await this.#prune();
    this.calls.push({ op: "del", entry: { ...e } });
    const n = this.#norm(e);
    const match = (x: FdbEntry) =>
      x.dev === n.dev && x.mac === n.mac && (n.dst === undefined || x.dst === n.dst);
    // Like the kernel: a missing MAC is ENOENT, a missing destination of a present MAC is no error.
    if (!this.#entries.some((x) => x.dev === n.dev && x.mac === n.mac)) throw fail(Errno.ENOENT, op);
    this.#entries = this.#entries.filter((x) => !match(x));
  }

  async fdbList(dev: number): Promise<FdbEntry[]> {
    await this.#prune();
    return this.#entries.filter((x) => x.dev === dev).map((x) => ({ ...x }));
  }

  close(): void {}
}
