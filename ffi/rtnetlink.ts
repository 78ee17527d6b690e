/**
 * `Rtnetlink`: the `Rtnl` interface over a NETLINK_ROUTE socket in the current network namespace (the
 * agent runs inside a node's namespace, e.g. via `ip netns exec`). Every request is acknowledged and
 * failures are NetlinkError with the kernel's extended-ACK text; route batches go many per sendto.
 */
import { Errno, ErrnoError, NetlinkDecodeError, NetlinkError } from "./errors.ts";
import type { Family } from "./ip.ts";
import { ifNameToIndex } from "./libc.ts";
import {
  NETLINK_ROUTE,
  NLM_F_APPEND,
  NLM_F_CREATE,
  NLM_F_EXCL,
  NLM_F_REPLACE,
  NLM_F_REQUEST,
  type NlMsg,
  NlWriter,
} from "./netlink.ts";
import { NetlinkSocket, NetlinkSubscription } from "./netlink_socket.ts";
import { closeFd, decodeNsid, encodeNsidGet, inNetns, openNetns, RTM_GETNSID, RTM_NEWNSID } from "./netns.ts";
import * as c from "./rtnl_codec.ts";
import type {
  Address,
  AddrOp,
  BatchResult,
  Link,
  LinkChange,
  LinkSpec,
  Neighbour,
  Route,
  RouteFilter,
  RouteOp,
  Rtnl,
  RtnlEvent,
  RtnlWatch,
  Rule,
  WatchKind,
  WatchOptions,
} from "./rtnl_types.ts";

/** Operations per slice of a route batch; the event loop runs between slices. */
const BATCH_SLICE = 16384;

function describeRoute(r: Route): string {
  const parts = [r.dst];
  if (r.gateway) parts.push(`via ${r.gateway}`);
  if (r.dev !== undefined) parts.push(`dev #${r.dev}`);
  if (r.table !== undefined && r.table !== 254) parts.push(`table ${r.table}`);
  return parts.join(" ");
}

function famOk(f: Family | undefined, v: Family): boolean {
  return f === undefined || f === v;
}

/** Decodes an event message into an RtnlEvent, or undefined for messages we do not model. */
export function decodeEvent(m: NlMsg): RtnlEvent | undefined {
  switch (m.type) {
    case c.RTM_NEWLINK:
    case c.RTM_DELLINK:
      return { kind: "link", action: m.type === c.RTM_NEWLINK ? "new" : "del", link: c.decodeLink(m) };
    case c.RTM_NEWADDR:
    case c.RTM_DELADDR: {
      const addr = c.decodeAddr(m);
      return addr && { kind: "addr", action: m.type === c.RTM_NEWADDR ? "new" : "del", addr };
    }
    case c.RTM_NEWROUTE:
    case c.RTM_DELROUTE: {
      const route = c.decodeRoute(m);
      return route && { kind: "route", action: m.type === c.RTM_NEWROUTE ? "new" : "del", route };
    }
    case c.RTM_NEWRULE:
    case c.RTM_DELRULE: {
      const rule = c.decodeRule(m);
      return rule && { kind: "rule", action: m.type === c.RTM_NEWRULE ? "new" : "del", rule };
    }
    case c.RTM_NEWNEIGH:
    case c.RTM_DELNEIGH: {
      const neigh = c.decodeNeigh(m);
      return neigh && { kind: "neigh", action: m.type === c.RTM_NEWNEIGH ? "new" : "del", neigh };
    }
    default:
      return undefined;
  }
}

/** Multicast groups for the requested kinds and families. */
export function watchGroups(kinds: readonly WatchKind[], families: readonly Family[] = [4, 6]): number[] {
  const g = new Set<number>();
  const v4 = families.includes(4);
  const v6 = families.includes(6);
  for (const k of kinds) {
    if (k === "link") g.add(c.RTNLGRP_LINK);
    if (k === "neigh") g.add(c.RTNLGRP_NEIGH);
    if (k === "addr") {
      if (v4) g.add(c.RTNLGRP_IPV4_IFADDR);
      if (v6) g.add(c.RTNLGRP_IPV6_IFADDR);
    }
    if (k === "route") {
      if (v4) g.add(c.RTNLGRP_IPV4_ROUTE);
      if (v6) g.add(c.RTNLGRP_IPV6_ROUTE);
    }
    if (k === "rule") {
      if (v4) g.add(c.RTNLGRP_IPV4_RULE);
      if (v6) g.add(c.RTNLGRP_IPV6_RULE);
    }
  }
  return [...g];
}

class RtnlSubscription implements RtnlWatch {
  #sub: NetlinkSubscription;
  #onDecodeError: ((err: Error) => void) | undefined;
  constructor(groups: number[], rcvbuf?: number, onDecodeError?: (err: Error) => void) {
    this.#sub = new NetlinkSubscription(NETLINK_ROUTE, groups, rcvbuf !== undefined ? { rcvbuf } : {});
    this.#onDecodeError = onDecodeError;
  }
  close(): void {
    this.#sub.close();
  }
  async *[Symbol.asyncIterator](): AsyncIterator<RtnlEvent> {
    for await (const batch of this.#sub) {
      if (!Array.isArray(batch)) {
        yield batch;
        continue;
      }
      for (const m of batch) {
        let ev: RtnlEvent | undefined;
        try {
          ev = decodeEvent(m);
        } catch (e) {
          // One undecodable message must not end the stream; the caller hears of it and can resync.
          if (!(e instanceof NetlinkDecodeError)) throw e;
          this.#onDecodeError?.(e);
          continue;
        }
        if (ev) yield ev;
      }
    }
  }
}

/** The kernel's rtnetlink in the current network namespace. */
export class Rtnetlink implements Rtnl {
  #sock: NetlinkSocket | undefined;
  readonly #netns: string | undefined;

  /**
   * `netns`: a namespace path (/run/netns/NAME, /proc/PID/ns/net) whose rtnetlink this instance speaks to
   * instead of the current one's, as `ip -n NAME` does (the socket is opened inside it). Interface names
   * given to methods are then looked up there too.
   */
  constructor(opts: { rcvbuf?: number; netns?: string } = {}) {
    const open = () =>
      NetlinkSocket.open(NETLINK_ROUTE, {
        strictDump: true,
        ...(opts.rcvbuf !== undefined ? { rcvbuf: opts.rcvbuf } : {}),
      });
    this.#netns = opts.netns;
    this.#sock = opts.netns === undefined ? open() : inNetns(opts.netns, open);
  }

  /** The namespace path given to the constructor, if any. */
  get netns(): string | undefined {
    return this.#netns;
  }

  get #s(): NetlinkSocket {
    if (!this.#sock) throw new ErrnoError(9, "Rtnetlink is closed");
    return this.#sock;
  }

  #index(name: string): number {
    const i = this.#ifIndex(name);
    if (i === undefined) throw new ErrnoError(Errno.ENODEV, `no such device ${JSON.stringify(name)}`);
    return i;
  }

  /** if_nametoindex in this instance's namespace. */
  #ifIndex(name: string): number | undefined {
    return this.#netns === undefined ? ifNameToIndex(name) : inNetns(this.#netns, () => ifNameToIndex(name));
  }

  // ------------------------------------------------------------ namespaces

  /**
   * The id this namespace gives the namespace at `path` (what `link-netnsid` of a veth whose peer lives
   * there refers to); undefined when none is assigned. Equivalent to: `ip netns list-id` for one.
   */
  nsidOf(path: string): Promise<number | undefined> {
    return this.#run(() => {
      const fd = openNetns(path);
      try {
        const msgs = this.#s.request(RTM_GETNSID, 0, (w) => encodeNsidGet(w, fd), `ip netns id ${path}`);
        const m = msgs.find((x) => x.type === RTM_NEWNSID);
        return m ? decodeNsid(m) : undefined;
      } finally {
        closeFd(fd);
      }
    });
  }

  // ------------------------------------------------------------ links

  /** Equivalent to: `ip -d link show` */
  linkList(): Promise<Link[]> {
    return Promise.resolve(
      this.#s.dump(c.RTM_GETLINK, (w) => c.encodeLinkIndex(w, 0), "ip link show").map(c.decodeLink),
    );
  }

  /** Equivalent to: `ip -d link show NAME`; undefined when it does not exist. */
  linkGet(name: string): Promise<Link | undefined> {
    const i = this.#ifIndex(name);
    if (i === undefined) return Promise.resolve(undefined);
    try {
      const msgs = this.#s.request(c.RTM_GETLINK, 0, (w) => c.encodeLinkIndex(w, i), `ip link show ${name}`);
      const m = msgs.find((x) => x.type === c.RTM_NEWLINK);
      return Promise.resolve(m ? c.decodeLink(m) : undefined);
    } catch (e) {
      if (e instanceof ErrnoError && e.errno === Errno.ENODEV) return Promise.resolve(undefined);
      return Promise.reject(e);
    }
  }

  /** Equivalent to: `ip link add NAME [mtu N] [master BR] type bridge|veth peer name P|vxlan id N …` (then `up`). */
  linkAdd(spec: LinkSpec): Promise<void> {
    return this.#run(() => {
      const master = spec.master !== undefined ? this.#index(spec.master) : undefined;
      this.#s.request(
        c.RTM_NEWLINK,
        NLM_F_CREATE | NLM_F_EXCL,
        (w) => c.encodeLinkAdd(w, spec, master),
        `ip link add ${spec.name} type ${spec.kind}`,
      );
    });
  }

  /** Equivalent to: `ip link del NAME` */
  linkDel(name: string): Promise<void> {
    return this.#run(() => {
      const i = this.#index(name);
      this.#s.request(c.RTM_DELLINK, 0, (w) => c.encodeLinkIndex(w, i), `ip link del ${name}`);
    });
  }

  /** Equivalent to: `ip link set NAME [up|down] [mtu N] [master BR|nomaster] [name NEW] [address MAC]` */
  linkSet(name: string, change: LinkChange): Promise<void> {
    return this.#run(() => {
      const i = this.#index(name);
      const master = change.master === undefined
        ? undefined
        : change.master === null
        ? 0
        : this.#index(change.master);
      this.#s.request(c.RTM_NEWLINK, 0, (w) => c.encodeLinkSet(w, i, change, master), `ip link set ${name}`);
    });
  }

  // ------------------------------------------------------------ addresses

  /** Equivalent to: `ip addr show [dev DEV]` */
  addrList(filter: { family?: Family; index?: number } = {}): Promise<Address[]> {
    return this.#run(() => {
      const out: Address[] = [];
      for (
        const m of this.#s.dump(c.RTM_GETADDR, (w) => c.encodeAddrDump(w, filter.family), "ip addr show")
      ) {
        const a = c.decodeAddr(m);
        if (
          a && famOk(filter.family, a.family) && (filter.index === undefined || a.index === filter.index)
        ) out.push(a);
      }
      return out;
    });
  }

  /** Equivalent to: `ip addr add ADDR/PREFIX dev DEV` */
  addrAdd(addr: Address): Promise<void> {
    return this.#run(() => {
      this.#s.request(
        c.RTM_NEWADDR,
        NLM_F_CREATE | NLM_F_EXCL,
        (w) => c.encodeAddr(w, addr),
        `ip addr add ${addr.address}/${addr.prefix}`,
      );
    });
  }

  /**
   * Equivalent to: `ip -batch` of `addr add|del` lines, many messages per sendto and one ACK fence per chunk
   * (thousands of service VIPs on one dummy interface). Failures are reported per operation index.
   */
  addrBatch(ops: readonly AddrOp[]): Promise<BatchResult> {
    return this.#batch(ops, "address batch", (w, op, seq) => {
      const add = op.op === "add";
      const off = w.beginMsg(
        add ? c.RTM_NEWADDR : c.RTM_DELADDR,
        NLM_F_REQUEST | (add ? NLM_F_CREATE | NLM_F_EXCL : 0),
        seq,
      );
      c.encodeAddr(w, op.addr);
      w.endMsg(off);
    }, (op) => `ip addr ${op.op} ${op.addr.address}/${op.addr.prefix}`);
  }

  /** Equivalent to: `ip addr del ADDR/PREFIX dev DEV` */
  addrDel(addr: Address): Promise<void> {
    return this.#run(() => {
      this.#s.request(
        c.RTM_DELADDR,
        0,
        (w) => c.encodeAddr(w, addr),
        `ip addr del ${addr.address}/${addr.prefix}`,
      );
    });
  }

  // ------------------------------------------------------------ routes

  /** Equivalent to: `ip [-4|-6] route show table all [proto P] [dev DEV]` (filtered here). */
  routeList(filter: RouteFilter = {}): Promise<Route[]> {
    return this.#run(() => {
      const out: Route[] = [];
      for (
        const m of this.#s.dump(
          c.RTM_GETROUTE,
          (w) => c.encodeRouteDump(w, filter.family, filter),
          "ip route show",
        )
      ) {
        const r = c.decodeRoute(m);
        if (!r || !famOk(filter.family, r.family)) continue;
        if (filter.table !== undefined && r.table !== filter.table) continue;
        if (filter.protocol !== undefined && r.protocol !== filter.protocol) continue;
        if (
          filter.dev !== undefined && r.dev !== filter.dev && !r.nexthops?.some((n) => n.dev === filter.dev)
        ) continue;
        out.push(r);
      }
      return out;
    });
  }

  /** Equivalent to: `ip route get ADDR`; undefined when the kernel has no route to it. */
  routeGet(addr: string): Promise<Route | undefined> {
    try {
      const msgs = this.#s.request(
        c.RTM_GETROUTE,
        0,
        (w) => c.encodeRouteGet(w, addr),
        `ip route get ${addr}`,
      );
      const m = msgs.find((x) => x.type === c.RTM_NEWROUTE);
      return Promise.resolve(m ? c.decodeRoute(m) : undefined);
    } catch (e) {
      if (e instanceof ErrnoError && (e.errno === Errno.ENETUNREACH || e.errno === 113)) {
        return Promise.resolve(undefined);
      }
      return Promise.reject(e);
    }
  }

  /** Equivalent to: `ip route add DST [via GW] [dev DEV] [table T] [proto P] [scope S] [src A] [metric M]` */
  routeAdd(route: Route): Promise<void> {
    return this.#run(() => {
      this.#s.request(
        c.RTM_NEWROUTE,
        NLM_F_CREATE | NLM_F_EXCL,
        (w) => c.encodeRoute(w, route),
        `ip route add ${describeRoute(route)}`,
      );
    });
  }

  /** Equivalent to: `ip route replace …` (creates or overwrites). */
  routeReplace(route: Route): Promise<void> {
    return this.#run(() => {
      this.#s.request(
        c.RTM_NEWROUTE,
        NLM_F_CREATE | NLM_F_REPLACE,
        (w) => c.encodeRoute(w, route),
        `ip route replace ${describeRoute(route)}`,
      );
    });
  }

  /** Equivalent to: `ip route append …` (adds another route with the same key, IPv6 ECMP style). */
  routeAppend(route: Route): Promise<void> {
    return this.#run(() => {
      this.#s.request(
        c.RTM_NEWROUTE,
        NLM_F_CREATE | NLM_F_APPEND,
        (w) => c.encodeRoute(w, route),
        `ip route append ${describeRoute(route)}`,
      );
    });
  }

  /** Equivalent to: `ip route del DST [via GW] [dev DEV] [table T] …` */
  routeDel(route: Route): Promise<void> {
    return this.#run(() => {
      this.#s.request(
        c.RTM_DELROUTE,
        0,
        (w) => c.encodeRoute(w, route, true),
        `ip route del ${describeRoute(route)}`,
      );
    });
  }

  /**
   * Equivalent to: `ip -batch` of `route add|replace|del` lines, but many messages per sendto and one ACK
   * fence per chunk. Failures are reported per operation index; the others are applied.
   */
  routeBatch(ops: readonly RouteOp[]): Promise<BatchResult> {
    return this.#batch(ops, "route batch", (w, op, seq) => {
      const del = op.op === "del";
      const flags = NLM_F_REQUEST |
        (op.op === "add"
          ? NLM_F_CREATE | NLM_F_EXCL
          : op.op === "replace"
          ? NLM_F_CREATE | NLM_F_REPLACE
          : 0);
      const off = w.beginMsg(del ? c.RTM_DELROUTE : c.RTM_NEWROUTE, flags, seq);
      c.encodeRoute(w, op.route, del);
      w.endMsg(off);
    });
  }

  /**
   * Sends `ops` in slices of BATCH_SLICE (the event loop runs between slices: health checks and events
   * stay responsive during a 100k-route sync), many messages per sendto and one ACK fence per chunk.
   * Failures carry the operation's index in `ops`; `describe` renames a NetlinkError after its operation.
   */
  async #batch<T>(
    ops: readonly T[],
    what: string,
    encode: (w: NlWriter, op: T, seq: number) => void,
    describe?: (op: T) => string,
  ): Promise<BatchResult> {
    const failures: BatchResult["failures"] = [];
    for (let start = 0; start < ops.length; start += BATCH_SLICE) {
      if (start > 0) await new Promise((r) => setTimeout(r, 0));
      const slice = ops.slice(start, start + BATCH_SLICE);
      const failed = this.#s.batch(slice.length, (w: NlWriter, i: number, seq: number) => {
        encode(w, slice[i]!, seq);
      }, { op: what });
      for (const f of failed) {
        const e = f.error;
        const error = describe && e instanceof NetlinkError
          ? new NetlinkError(e.errno, describe(slice[f.index]!), e.seq, e.extAck)
          : e;
        failures.push({ index: start + f.index, error });
      }
    }
    return { ok: ops.length - failures.length, failures };
  }

  // ------------------------------------------------------------ rules

  /** Equivalent to: `ip [-4|-6] rule show` */
  ruleList(family?: Family): Promise<Rule[]> {
    return this.#run(() => {
      const out: Rule[] = [];
      for (const m of this.#s.dump(c.RTM_GETRULE, (w) => c.encodeRuleDump(w, family), "ip rule show")) {
        const r = c.decodeRule(m);
        if (r && famOk(family, r.family)) out.push(r);
      }
      return out;
    });
  }

  /** Equivalent to: `ip rule add [not] [from SRC] [to DST] [fwmark M/MASK] [iif I] [oif O] [pref N] lookup T` */
  ruleAdd(rule: Rule): Promise<void> {
    return this.#run(() => {
      this.#s.request(c.RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, (w) => c.encodeRule(w, rule), "ip rule add");
    });
  }

  /** Equivalent to: `ip rule del …` (the given selectors must match). */
  ruleDel(rule: Rule): Promise<void> {
    return this.#run(() => {
      this.#s.request(c.RTM_DELRULE, 0, (w) => c.encodeRule(w, rule, true), "ip rule del");
    });
  }

  // ------------------------------------------------------------ neighbours

  /** Equivalent to: `ip neigh show [dev DEV]` */
  neighList(filter: { family?: Family; dev?: number } = {}): Promise<Neighbour[]> {
    return this.#run(() => {
      const out: Neighbour[] = [];
      for (
        const m of this.#s.dump(c.RTM_GETNEIGH, (w) => c.encodeNeighDump(w, filter.family), "ip neigh show")
      ) {
        const n = c.decodeNeigh(m);
        if (n && famOk(filter.family, n.family) && (filter.dev === undefined || n.dev === filter.dev)) {
          out.push(n);
        }
      }
      return out;
    });
  }

  /** Equivalent to: `ip neigh add DST lladdr MAC dev DEV nud permanent` */
  neighAdd(n: Neighbour): Promise<void> {
    return this.#run(() => {
      this.#s.request(
        c.RTM_NEWNEIGH,
        NLM_F_CREATE | NLM_F_EXCL,
        (w) => c.encodeNeigh(w, n),
        `ip neigh add ${n.dst}`,
      );
    });
  }

  /** Equivalent to: `ip neigh replace DST lladdr MAC dev DEV` */
  neighReplace(n: Neighbour): Promise<void> {
    return this.#run(() => {
      this.#s.request(
        c.RTM_NEWNEIGH,
        NLM_F_CREATE | NLM_F_REPLACE,
        (w) => c.encodeNeigh(w, n),
        `ip neigh replace ${n.dst}`,
      );
    });
  }

  /** Equivalent to: `ip neigh del DST dev DEV` */
  neighDel(n: Neighbour): Promise<void> {
    return this.#run(() => {
      this.#s.request(c.RTM_DELNEIGH, 0, (w) => c.encodeNeigh(w, n), `ip neigh del ${n.dst}`);
    });
  }

  // ------------------------------------------------------------ events

  /**
   * Equivalent to: `ip monitor link address route rule neigh`. Iterate the result; a `{kind: "resync"}`
   * event means the kernel dropped events (ENOBUFS) and the caller must list again.
   */
  watch(kinds: readonly WatchKind[], opts: WatchOptions = {}): RtnlWatch {
    return new RtnlSubscription(watchGroups(kinds, opts.families), opts.rcvbuf, opts.onDecodeError);
  }

  /** Closes the request socket. Idempotent. */
  close(): void {
    this.#sock?.close();
    this.#sock = undefined;
  }

  #run<T>(f: () => T): Promise<T> {
    try {
      return Promise.resolve(f());
    } catch (e) {
      return Promise.reject(e);
    }
  }
}
