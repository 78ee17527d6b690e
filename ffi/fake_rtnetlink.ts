/**
 * `FakeRtnetlink`: an in-memory `Rtnl` for module unit tests. It keeps links, addresses, routes, rules and
 * neighbours with the kernel's identity rules and error codes (EEXIST, ESRCH, ENODEV, ENETUNREACH…), and
 * emits the same events as `ip monitor`. The shared conformance suite (tests/unit/ffi/_conformance.ts)
 * runs against this fake and the real kernel so the two cannot drift apart.
 *
 * Known simplifications (not covered by the suite): no IPv6 link-local addresses or IPv6 kernel routes,
 * no local-table routes, no bridge MTU following its ports, every link kind accepted unless listed in
 * `unsupportedKinds`, multipath routes losing one of several next hops are kept whole.
 */
import { Errno, NetlinkError } from "./errors.ts";
import { cidrContains, cidrParts, type Family, formatIP, ipBytes, parseCidr } from "./ip.ts";
import { defaultScope } from "./rtnl_codec.ts";
import {
  type Address,
  type AddrOp,
  type BatchResult,
  type Link,
  type LinkChange,
  type LinkSpec,
  type Neighbour,
  type Route,
  type RouteFilter,
  type RouteOp,
  RouteProtocol,
  RouteType,
  type Rtnl,
  type RtnlEvent,
  type RtnlWatch,
  type Rule,
  RuleAction,
  type WatchKind,
  type WatchOptions,
} from "./rtnl_types.ts";

const IFF_UP = 1;

function fail(errno: number, op: string, text?: string): NetlinkError {
  return new NetlinkError(errno, op, 0, text);
}

function normIp(s: string, family?: Family): string {
  return formatIP(ipBytes(s, family));
}

function normCidr(s: string, family: Family): string {
  const p = cidrParts(s, family);
  const c = parseCidr(`${formatIP(p.addr)}/${p.prefix}`)!;
  return `${formatIP(c.addr)}/${c.prefix}`;
}

function clone<T>(v: T): T {
  return structuredClone(v);
}

class EventQueue implements RtnlWatch {
  #items: RtnlEvent[] = [];
  #wake: (() => void) | undefined;
  #closed = false;
  constructor(
    readonly kinds: ReadonlySet<WatchKind>,
    readonly families: ReadonlySet<Family>,
    private onClose: () => void,
  ) {}
  push(ev: RtnlEvent): void {
    if (this.#closed) return;
    this.#items.push(ev);
    this.#wake?.();
  }
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.onClose();
    this.#wake?.();
  }
  async *[Symbol.asyncIterator](): AsyncIterator<RtnlEvent> {
    while (true) {
      const ev = this.#items.shift();
      if (ev) {
        yield ev;
        continue;
      }
      if (this.#closed) return;
      await new Promise<void>((r) => (this.#wake = r));
      this.#wake = undefined;
    }
  }
}

/** In-memory rtnetlink with kernel semantics, for unit tests. */
export class FakeRtnetlink implements Rtnl {
  #links = new Map<number, Link>();
  #nextIndex = 2;
  #addrs: Address[] = [];
  #routes: Route[] = [];
  #rules: Rule[] = [];
  #neighs: Neighbour[] = [];
  #watchers = new Set<EventQueue>();
  /** Link kinds this fake refuses with EOPNOTSUPP, to mirror a kernel without them. */
  readonly unsupportedKinds: Set<string>;

  constructor(opts: { unsupportedKinds?: readonly string[] } = {}) {
    this.unsupportedKinds = new Set(opts.unsupportedKinds ?? []);
    this.#links.set(1, {
      index: 1,
      name: "lo",
      mtu: 65536,
      up: true,
      lowerUp: true,
      flags: 0x10049,
      mac: "00:00:00:00:00:00",
    });
    this.#rules = [
      { family: 4, priority: 0, table: 255, action: RuleAction.toTable },
      { family: 4, priority: 32766, table: 254, action: RuleAction.toTable },
      { family: 4, priority: 32767, table: 253, action: RuleAction.toTable },
      { family: 6, priority: 0, table: 255, action: RuleAction.toTable },
      { family: 6, priority: 32766, table: 254, action: RuleAction.toTable },
    ];
  }

  #emit(ev: RtnlEvent): void {
    for (const w of this.#watchers) {
      if (ev.kind === "resync") {
        w.push(ev);
        continue;
      }
      if (!w.kinds.has(ev.kind)) continue;
      const fam = ev.kind === "addr"
        ? ev.addr.family
        : ev.kind === "route"
        ? ev.route.family
        : ev.kind === "rule"
        ? ev.rule.family
        : undefined;
      if (fam !== undefined && !w.families.has(fam)) continue;
      w.push(clone(ev));
    }
  }

  /** Makes every watcher see a "resync" signal, as when the kernel's queue overflows. */
  injectOverflow(): void {
    this.#emit({ kind: "resync" });
  }

  #byName(name: string): Link | undefined {
    for (const l of this.#links.values()) if (l.name === name) return l;
    return undefined;
  }

  #need(name: string, op: string): Link {
    const l = this.#byName(name);
    if (!l) throw fail(Errno.ENODEV, op, `no such device ${name}`);
    return l;
  }

  #run<T>(f: () => T): Promise<T> {
    try {
      return Promise.resolve(f());
    } catch (e) {
      return Promise.reject(e);
    }
  }

  // ------------------------------------------------------------ links

  linkList(): Promise<Link[]> {
    return Promise.resolve([...this.#links.values()].map(clone));
  }

  linkGet(name: string): Promise<Link | undefined> {
    const l = this.#byName(name);
    return Promise.resolve(l && clone(l));
  }

  linkAdd(spec: LinkSpec): Promise<void> {
    return this.#run(() => {
      const op = `ip link add ${spec.name} type ${spec.kind}`;
      if (this.unsupportedKinds.has(spec.kind)) throw fail(Errno.EOPNOTSUPP, op, "Unknown device type");
      if (this.#byName(spec.name) || (spec.kind === "veth" && this.#byName(spec.peer))) {
        throw fail(Errno.EEXIST, op);
      }
      const master = spec.master !== undefined ? this.#need(spec.master, op).index : undefined;
      const mac = () =>
        "02:" +
        Array.from(crypto.getRandomValues(new Uint8Array(5)), (b) => b.toString(16).padStart(2, "0")).join(
          ":",
        );
      const mk = (name: string): Link => {
        const l: Link = {
          index: this.#nextIndex++,
          name,
          kind: spec.kind,
          mtu: spec.mtu ?? 1500,
          up: false,
          lowerUp: false,
          flags: 0x1002,
          mac: spec.mac ?? mac(),
        };
        return l;
      };
      const link = mk(spec.name);
      if (spec.up) {
        link.up = true;
        link.flags |= IFF_UP;
      }
      if (master !== undefined) link.master = master;
      if (spec.kind === "vxlan") {
        const vx: NonNullable<Link["vxlan"]> = { vni: spec.vni, port: spec.port ?? 8472 };
        if (spec.local !== undefined) vx.local = normIp(spec.local);
        if (spec.remote !== undefined) vx.remote = normIp(spec.remote);
        if (spec.dev !== undefined) vx.dev = spec.dev;
        vx.learning = spec.learning ?? true;
        link.vxlan = vx;
      }
      if (spec.kind === "ipip" || spec.kind === "ip6tnl") {
        const t: NonNullable<Link["tunnel"]> = {
          ttl: spec.ttl ?? (spec.kind === "ipip" ? 0 : 64),
        };
        if (spec.local !== undefined) t.local = normIp(spec.local);
        if (spec.remote !== undefined) t.remote = normIp(spec.remote);
        if (spec.fou) {
          t.encap = { type: spec.fou.gue ? "gue" : "fou", dport: spec.fou.dport, sport: spec.fou.sport ?? 0 };
        }
        link.tunnel = t;
      }
      this.#links.set(link.index, link);
      if (spec.kind === "veth") {
        const peer = mk(spec.peer);
        peer.link = link.index;
        link.link = peer.index;
        this.#links.set(peer.index, peer);
        this.#emit({ kind: "link", action: "new", link: peer });
      }
      this.#emit({ kind: "link", action: "new", link });
    });
  }

  linkDel(name: string): Promise<void> {
    return this.#run(() => {
      const l = this.#need(name, `ip link del ${name}`);
      const gone = [l];
      if (l.kind === "veth" && l.link !== undefined) {
        const p = this.#links.get(l.link);
        if (p) gone.push(p);
      }
      for (const g of gone) {
        this.#links.delete(g.index);
        for (const o of this.#links.values()) if (o.master === g.index) delete o.master;
        // Like the kernel, say what went with the link.
        const routeGone = (r: Route) => r.dev === g.index || !!r.nexthops?.some((n) => n.dev === g.index);
        for (const r of this.#routes.filter(routeGone)) {
          this.#emit({ kind: "route", action: "del", route: r });
        }
        for (const a of this.#addrs.filter((a) => a.index === g.index)) {
          this.#emit({ kind: "addr", action: "del", addr: a });
        }
        this.#addrs = this.#addrs.filter((a) => a.index !== g.index);
        this.#routes = this.#routes.filter((r) => !routeGone(r));
        this.#neighs = this.#neighs.filter((n) => n.dev !== g.index);
        this.#emit({ kind: "link", action: "del", link: g });
      }
    });
  }

  linkSet(name: string, change: LinkChange): Promise<void> {
    return this.#run(() => {
      const op = `ip link set ${name}`;
      const l = this.#need(name, op);
      if (change.name !== undefined && change.name !== name && this.#byName(change.name)) {
        throw fail(Errno.EEXIST, op);
      }
      const master = change.master === undefined
        ? undefined
        : change.master === null
        ? 0
        : this.#need(change.master, op).index;
      if (change.up !== undefined) {
        const wentDown = l.up && !change.up;
        const cameUp = !l.up && change.up;
        l.up = change.up;
        l.flags = change.up ? l.flags | IFF_UP : l.flags & ~IFF_UP;
        if (cameUp) { for (const a of this.#addrs.filter((x) => x.index === l.index)) this.#addConnected(a); }
        if (wentDown) {
          // The kernel flushes IPv4 routes whose every next hop used the link (they do not come back on up).
          const dead = (r: Route) =>
            r.family === 4 &&
            (r.nexthops?.length ? r.nexthops.every((n) => n.dev === l.index) : r.dev === l.index);
          for (const r of this.#routes.filter(dead)) this.#emit({ kind: "route", action: "del", route: r });
          this.#routes = this.#routes.filter((r) => !dead(r));
        }
      }
      if (change.mtu !== undefined) l.mtu = change.mtu;
      if (change.name !== undefined) l.name = change.name;
      if (change.mac !== undefined) l.mac = change.mac;
      if (master === 0) delete l.master;
      else if (master !== undefined) l.master = master;
      this.#emit({ kind: "link", action: "new", link: l });
    });
  }

  // ------------------------------------------------------------ addresses

  addrList(filter: { family?: Family; index?: number } = {}): Promise<Address[]> {
    return Promise.resolve(
      this.#addrs.filter((a) =>
        (filter.family === undefined || a.family === filter.family) &&
        (filter.index === undefined || a.index === filter.index)
      ).map(clone),
    );
  }

  #sameAddr(a: Address, b: Address): boolean {
    return a.family === b.family && a.index === b.index && a.address === b.address &&
      (a.family === 6 || a.prefix === b.prefix);
  }

  addrAdd(addr: Address): Promise<void> {
    return this.#run(() => {
      const op = `ip addr add ${addr.address}/${addr.prefix}`;
      if (!this.#links.has(addr.index)) throw fail(Errno.ENODEV, op);
      const a: Address = {
        family: addr.family,
        index: addr.index,
        address: normIp(addr.address, addr.family),
        prefix: addr.prefix,
        scope: addr.scope ?? 0,
      };
      if (this.#addrs.some((x) => this.#sameAddr(x, a))) throw fail(Errno.EEXIST, op);
      this.#addrs.push(a);
      if (this.#links.get(a.index)?.up) this.#addConnected(a);
      this.#emit({ kind: "addr", action: "new", addr: a });
    });
  }

  addrDel(addr: Address): Promise<void> {
    return this.#run(() => {
      const a = { ...addr, address: normIp(addr.address, addr.family) };
      const i = this.#addrs.findIndex((x) => this.#sameAddr(x, a));
      if (i < 0) throw fail(Errno.EADDRNOTAVAIL, `ip addr del ${addr.address}/${addr.prefix}`);
      const [gone] = this.#addrs.splice(i, 1);
      this.#emit({ kind: "addr", action: "del", addr: gone! });
      const c = this.#connected(gone!);
      const ci = c
        ? this.#routes.findIndex((r) => this.#sameKey(r, c) && r.dev === c.dev && r.protocol === 2)
        : -1;
      if (ci >= 0) this.#emit({ kind: "route", action: "del", route: this.#routes.splice(ci, 1)[0]! });
    });
  }

  /** The IPv4 connected route the kernel puts in main for an address (none for /32). */
  #connected(a: Address): Route | undefined {
    if (a.family !== 4 || a.prefix >= 32) return undefined;
    return {
      family: 4,
      dst: normCidr(`${a.address}/${a.prefix}`, 4),
      table: 254,
      protocol: RouteProtocol.kernel,
      scope: 253,
      type: RouteType.unicast,
      dev: a.index,
      src: a.address,
    };
  }

  #addConnected(a: Address): void {
    const c = this.#connected(a);
    if (!c || this.#routes.some((r) => this.#sameKey(r, c) && r.dev === c.dev)) return;
    this.#routes.push(c);
    this.#emit({ kind: "route", action: "new", route: c });
  }

  // ------------------------------------------------------------ routes

  routeList(filter: RouteFilter = {}): Promise<Route[]> {
    return Promise.resolve(
      this.#routes.filter((r) =>
        (filter.family === undefined || r.family === filter.family) &&
        (filter.table === undefined || r.table === filter.table) &&
        (filter.protocol === undefined || r.protocol === filter.protocol) &&
        (filter.dev === undefined || r.dev === filter.dev || !!r.nexthops?.some((n) => n.dev === filter.dev))
      ).map(clone),
    );
  }

  /**
   * Longest-prefix match over the local and main tables (the default policy rules), like `ip route get`.
   * Local addresses resolve to their own interface; only unicast routes count.
   */
  routeGet(addr: string): Promise<Route | undefined> {
    try {
      const bytes = ipBytes(addr);
      const family: Family = bytes.length === 4 ? 4 : 6;
      const ip = formatIP(bytes);
      const own = this.#addrs.find((a) => a.family === family && a.address === ip);
      const host = `${ip}/${family === 4 ? 32 : 128}`;
      if (own) {
        return Promise.resolve({
          family,
          dst: host,
          table: 255,
          protocol: 0,
          scope: 0,
          type: RouteType.local,
          dev: 1,
          src: ip,
        });
      }
      // Connected subnets behave as link-scope routes in main.
      const candidates: Route[] = [...this.#routes.filter((r) => r.family === family && r.table === 254)];
      for (const a of this.#addrs) {
        if (a.family === family && this.#links.get(a.index)?.up) {
          candidates.push({
            family,
            dst: normCidr(`${a.address}/${a.prefix}`, family),
            table: 254,
            dev: a.index,
            scope: 253,
          });
        }
      }
      let best: Route | undefined;
      for (const r of candidates) {
        const c = parseCidr(r.dst)!;
        if (!cidrContains(c, bytes)) continue;
        if (r.type !== undefined && r.type !== RouteType.unicast) continue;
        if (!best || c.prefix > parseCidr(best.dst)!.prefix) best = r;
      }
      if (!best) return Promise.resolve(undefined);
      const out: Route = { family, dst: host, table: 254, protocol: 0, scope: 0, type: RouteType.unicast };
      const nh = best.nexthops?.[0];
      const gateway = best.gateway ?? nh?.gateway;
      const dev = best.dev ?? nh?.dev;
      if (gateway !== undefined) out.gateway = gateway;
      if (dev !== undefined) {
        out.dev = dev;
        const src = this.#addrs.find((a) => a.index === dev && a.family === family);
        if (src) out.src = src.address;
      }
      return Promise.resolve(out);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** Resolves and validates a route as the kernel would, returning the stored form. */
  #normalize(route: Route, op: string): Route {
    const r: Route = {
      family: route.family,
      dst: normCidr(route.dst, route.family),
      table: route.table ?? 254,
      protocol: route.protocol ?? RouteProtocol.boot,
      scope: route.scope ?? defaultScope(route, false),
      type: route.type ?? RouteType.unicast,
    };
    if (route.tos) r.tos = route.tos;
    if (route.onlink) r.onlink = true;
    if (route.src !== undefined) r.src = normIp(route.src, route.family);
    // The kernel reports RTA_PRIORITY for IPv4 only when non-zero, and defaults IPv6 to 1024.
    const metric = route.metric ?? (route.family === 6 ? 1024 : 0);
    if (metric || route.family === 6) r.metric = metric;
    const resolve = (
      gw: string | undefined,
      dev: number | undefined,
      onlink: boolean,
    ): { gateway?: string; dev?: number } => {
      if (dev !== undefined) {
        const l = this.#links.get(dev);
        if (!l) throw fail(Errno.ENODEV, op);
        if (!l.up) throw fail(Errno.ENETDOWN, op, "Nexthop device is not up");
      }
      if (gw === undefined) return dev !== undefined ? { dev } : {};
      const g = ipBytes(gw, route.family);
      const gateway = formatIP(g);
      if (onlink && dev !== undefined) return { gateway, dev };
      const via = this.#addrs.find((a) =>
        a.family === route.family && (dev === undefined || a.index === dev) && this.#links.get(a.index)?.up &&
        cidrContains(parseCidr(`${a.address}/${a.prefix}`)!, g)
      );
      if (!via) throw fail(Errno.ENETUNREACH, op, "Nexthop has invalid gateway");
      return { gateway, dev: via.index };
    };
    const needsNh = r.type === RouteType.unicast || r.type === RouteType.local;
    if (route.nexthops?.length) {
      r.nexthops = route.nexthops.map((nh) => {
        const res = resolve(nh.gateway, nh.dev, !!nh.onlink);
        return { ...res, weight: nh.weight ?? 1, ...(nh.onlink ? { onlink: true } : {}) };
      });
    } else {
      const res = resolve(route.gateway, route.dev, !!route.onlink);
      if (needsNh && res.dev === undefined) throw fail(Errno.ENODEV, op, "Device for nexthop is not up");
      if (res.gateway !== undefined) r.gateway = res.gateway;
      if (res.dev !== undefined) r.dev = res.dev;
    }
    return r;
  }

  #sameKey(a: Route, b: Route): boolean {
    return a.family === b.family && a.table === b.table && a.dst === b.dst && (a.tos ?? 0) === (b.tos ?? 0) &&
      (a.metric ?? 0) === (b.metric ?? 0);
  }

  #add(route: Route, mode: "add" | "replace"): void {
    const op = `ip route ${mode} ${route.dst}`;
    const r = this.#normalize(route, op);
    const i = this.#routes.findIndex((x) => this.#sameKey(x, r));
    if (i >= 0 && mode === "add") throw fail(Errno.EEXIST, op);
    if (i >= 0) this.#routes[i] = r;
    else this.#routes.push(r);
    this.#emit({ kind: "route", action: "new", route: r });
  }

  #del(route: Route): void {
    const op = `ip route del ${route.dst}`;
    const dst = normCidr(route.dst, route.family);
    const table = route.table ?? 254;
    const gw = route.gateway !== undefined ? normIp(route.gateway, route.family) : undefined;
    const i = this.#routes.findIndex((x) =>
      x.family === route.family && x.table === table && x.dst === dst &&
      (route.tos === undefined || (x.tos ?? 0) === route.tos) &&
      (route.metric === undefined || (x.metric ?? 0) === route.metric) &&
      (route.protocol === undefined || route.protocol === 0 || x.protocol === route.protocol) &&
      (route.type === undefined || route.type === 0 || x.type === route.type) &&
      (gw === undefined || x.gateway === gw) && (route.dev === undefined || x.dev === route.dev)
    );
    if (i < 0) throw fail(Errno.ESRCH, op);
    const [gone] = this.#routes.splice(i, 1);
    this.#emit({ kind: "route", action: "del", route: gone! });
  }

  routeAdd(route: Route): Promise<void> {
    return this.#run(() => this.#add(route, "add"));
  }

  routeReplace(route: Route): Promise<void> {
    return this.#run(() => this.#add(route, "replace"));
  }

  routeDel(route: Route): Promise<void> {
    return this.#run(() => this.#del(route));
  }

  async addrBatch(ops: readonly AddrOp[]): Promise<BatchResult> {
    const failures: BatchResult["failures"] = [];
    for (const [index, o] of ops.entries()) {
      try {
        await (o.op === "add" ? this.addrAdd(o.addr) : this.addrDel(o.addr));
      } catch (error) {
        failures.push({ index, error: error as Error });
      }
    }
    return { ok: ops.length - failures.length, failures };
  }

  routeBatch(ops: readonly RouteOp[]): Promise<BatchResult> {
    const failures: BatchResult["failures"] = [];
    ops.forEach((o, index) => {
      try {
        if (o.op === "del") this.#del(o.route);
        else this.#add(o.route, o.op);
      } catch (error) {
        failures.push({ index, error: error as Error });
      }
    });
    return Promise.resolve({ ok: ops.length - failures.length, failures });
  }

  // ------------------------------------------------------------ rules

  ruleList(family?: Family): Promise<Rule[]> {
    const rules = this.#rules.filter((r) => family === undefined || r.family === family).map(clone);
    rules.sort((a, b) => (a.priority ?? 0) - (b.priority ?? 0));
    return Promise.resolve(rules);
  }

  #normRule(rule: Rule): Rule {
    const r: Rule = {
      family: rule.family,
      table: rule.table ?? 254,
      action: rule.action ?? RuleAction.toTable,
    };
    r.priority = rule.priority ?? this.#defaultPref(rule.family);
    if (rule.src !== undefined) r.src = normCidr(rule.src, rule.family);
    if (rule.dst !== undefined) r.dst = normCidr(rule.dst, rule.family);
    if (rule.fwmark !== undefined) r.fwmark = rule.fwmark;
    if (rule.fwmask !== undefined) r.fwmask = rule.fwmask;
    else if (rule.fwmark !== undefined) r.fwmask = 0xffffffff;
    if (rule.iif !== undefined) r.iif = rule.iif;
    if (rule.oif !== undefined) r.oif = rule.oif;
    if (rule.invert) r.invert = true;
    r.protocol = rule.protocol ?? 0;
    return r;
  }

  #defaultPref(family: Family): number {
    const prefs = this.#rules.filter((r) => r.family === family && (r.priority ?? 0) > 0).map((r) =>
      r.priority ?? 0
    );
    return prefs.length ? Math.min(...prefs) - 1 : 0;
  }

  #ruleMatches(sel: Rule, r: Rule): boolean {
    return sel.family === r.family && (sel.priority === undefined || sel.priority === r.priority) &&
      (sel.table === undefined || sel.table === r.table) &&
      (sel.src === undefined || normCidr(sel.src, sel.family) === r.src) &&
      (sel.dst === undefined || normCidr(sel.dst, sel.family) === r.dst) &&
      (sel.fwmark === undefined || sel.fwmark === r.fwmark) &&
      (sel.iif === undefined || sel.iif === r.iif) && (sel.oif === undefined || sel.oif === r.oif) &&
      (sel.action === undefined || sel.action === r.action) && (!sel.invert || !!r.invert);
  }

  ruleAdd(rule: Rule): Promise<void> {
    return this.#run(() => {
      const r = this.#normRule(rule);
      const same = (x: Rule) =>
        JSON.stringify({ ...x, protocol: 0 }) === JSON.stringify({ ...r, protocol: 0 });
      if (this.#rules.some(same)) throw fail(Errno.EEXIST, "ip rule add");
      this.#rules.push(r);
      this.#emit({ kind: "rule", action: "new", rule: r });
    });
  }

  ruleDel(rule: Rule): Promise<void> {
    return this.#run(() => {
      const sorted = [...this.#rules].sort((a, b) => (a.priority ?? 0) - (b.priority ?? 0));
      const hit = sorted.find((r) => this.#ruleMatches(rule, r));
      if (!hit) throw fail(Errno.ENOENT, "ip rule del");
      this.#rules.splice(this.#rules.indexOf(hit), 1);
      this.#emit({ kind: "rule", action: "del", rule: hit });
    });
  }

  // ------------------------------------------------------------ neighbours

  neighList(filter: { family?: Family; dev?: number } = {}): Promise<Neighbour[]> {
    return Promise.resolve(
      this.#neighs.filter((n) =>
        (filter.family === undefined || n.family === filter.family) &&
        (filter.dev === undefined || n.dev === filter.dev)
      ).map(clone),
    );
  }

  #neighPut(n: Neighbour, replace: boolean): void {
    const op = `ip neigh ${replace ? "replace" : "add"} ${n.dst}`;
    if (!this.#links.has(n.dev)) throw fail(Errno.ENODEV, op);
    const e: Neighbour = {
      family: n.family,
      dev: n.dev,
      dst: normIp(n.dst, n.family),
      state: n.state ?? 0x80,
      flags: n.flags ?? 0,
    };
    if (n.lladdr !== undefined) e.lladdr = n.lladdr.toLowerCase();
    const i = this.#neighs.findIndex((x) => x.dev === e.dev && x.dst === e.dst);
    if (i >= 0 && !replace) throw fail(Errno.EEXIST, op);
    if (i >= 0) this.#neighs[i] = e;
    else this.#neighs.push(e);
    this.#emit({ kind: "neigh", action: "new", neigh: e });
  }

  neighAdd(n: Neighbour): Promise<void> {
    return this.#run(() => this.#neighPut(n, false));
  }

  neighReplace(n: Neighbour): Promise<void> {
    return this.#run(() => this.#neighPut(n, true));
  }

  neighDel(n: Neighbour): Promise<void> {
    return this.#run(() => {
      const dst = normIp(n.dst, n.family);
      const i = this.#neighs.findIndex((x) => x.dev === n.dev && x.dst === dst);
      if (i < 0) throw fail(Errno.ENOENT, `ip neigh del ${n.dst}`);
      const [gone] = this.#neighs.splice(i, 1);
      this.#emit({ kind: "neigh", action: "del", neigh: gone! });
    });
  }

  // ------------------------------------------------------------ events

  watch(kinds: readonly WatchKind[], opts: WatchOptions = {}): RtnlWatch {
    const q: EventQueue = new EventQueue(
      new Set(kinds),
      new Set(opts.families ?? [4, 6]),
      () => this.#watchers.delete(q),
    );
    this.#watchers.add(q);
    return q;
  }

  close(): void {
    for (const w of [...this.#watchers]) w.close();
  }
}
