/**
 * Keeps the kernel's routes to other nodes' pod CIDRs equal to what BGP says, touching only routes that
 * carry the router's own protocol number (kube-router's 17), so nothing another daemon or a person
 * installed is ever changed. A route deleted behind our back (an interface bounce, a stray `ip route del`)
 * is noticed on the rtnetlink route group and put back by the next sync.
 *
 * Equivalent to: `ip route replace 10.1.2.0/24 via 192.168.1.101 proto 17` per learned route, and
 * `ip route del … proto 17` for each route no longer learned.
 */
import type { Logger } from "../../core/mod.ts";
import { formatCidr, parseCidr, parseIP, type Route, type Rtnl, type RtnlWatch } from "../../ffi/mod.ts";

/** kube-router's route protocol number (0x11); `ip route show proto 17` lists the router's routes. */
export const ROUTER_ROUTE_PROTOCOL = 17;
export const MAIN_TABLE = 254;

/** A route the router wants: a pod CIDR via a gateway (same subnet) or through a device (tunnel). */
export interface WantedRoute {
  dst: string;
  gateway?: string;
  dev?: number;
  onlink?: boolean;
}

export interface RouteSyncResult {
  added: number;
  replaced: number;
  removed: number;
  failed: number;
}

function key(dst: string): string {
  const c = parseCidr(dst);
  return c ? formatCidr(c) : dst;
}

function sameRoute(kernel: Route, want: WantedRoute): boolean {
  const norm = (ip: string | undefined) => ip === undefined ? undefined : parseIP(ip)?.addr.join(".");
  return norm(kernel.gateway) === norm(want.gateway) && (want.dev === undefined || kernel.dev === want.dev);
}

export class RouteSync {
  readonly #rtnl: Rtnl;
  readonly #log: Logger;
  readonly #table: number;
  #watch: RtnlWatch | undefined;
  #wanted = new Map<string, WantedRoute>();

  constructor(rtnl: Rtnl, log: Logger, opts: { table?: number } = {}) {
    this.#rtnl = rtnl;
    this.#log = log;
    this.#table = opts.table ?? MAIN_TABLE;
  }

  #toKernel(w: WantedRoute): Route {
    const c = parseCidr(w.dst)!;
    const r: Route = {
      family: c.family,
      dst: formatCidr(c),
      table: this.#table,
      protocol: ROUTER_ROUTE_PROTOCOL,
    };
    if (w.gateway) r.gateway = w.gateway;
    if (w.dev !== undefined) r.dev = w.dev;
    if (w.onlink) r.onlink = true;
    return r;
  }

  /** Makes the kernel hold exactly `wanted` among the router's routes (one table, both families). */
  async sync(wanted: readonly WantedRoute[]): Promise<RouteSyncResult> {
    this.#wanted = new Map(wanted.map((w) => [key(w.dst), w]));
    const kernel = await this.#rtnl.routeList({ table: this.#table, protocol: ROUTER_ROUTE_PROTOCOL });
    const present = new Map<string, Route>();
    for (const r of kernel) present.set(key(r.dst), r);
    const result: RouteSyncResult = { added: 0, replaced: 0, removed: 0, failed: 0 };
    const ops: { op: "replace" | "del"; route: Route; kind: keyof RouteSyncResult }[] = [];
    for (const [k, w] of this.#wanted) {
      const have = present.get(k);
      if (!have) ops.push({ op: "replace", route: this.#toKernel(w), kind: "added" });
      else if (!sameRoute(have, w)) ops.push({ op: "replace", route: this.#toKernel(w), kind: "replaced" });
    }
    for (const [k, r] of present) {
      if (!this.#wanted.has(k)) ops.push({ op: "del", route: r, kind: "removed" });
    }
    if (ops.length === 0) return result;
    const batch = await this.#rtnl.routeBatch(ops.map(({ op, route }) => ({ op, route })));
    const failedAt = new Set(batch.failures.map((f) => f.index));
    ops.forEach((o, i) => {
      if (failedAt.has(i)) result.failed++;
      else result[o.kind]++;
    });
    for (const f of batch.failures) {
      const o = ops[f.index]!;
      this.#log.warn("route change failed", {
        op: o.op,
        dst: o.route.dst,
        gateway: o.route.gateway,
        err: f.error,
      });
    }
    if (result.failed > 0) throw new Error(`${result.failed} of ${ops.length} route changes failed`);
    return result;
  }

  /**
   * Watches the kernel's route group; calls `onDrift` when one of our wanted routes is deleted or the
   * kernel dropped events (then we cannot know). The callback must only ask for a sync.
   */
  watch(onDrift: (why: string) => void): void {
    if (this.#watch) return;
    const w = this.#rtnl.watch(["route"]);
    this.#watch = w;
    (async () => {
      try {
        for await (const ev of w) {
          if (ev.kind === "resync") onDrift("route events were dropped");
          else if (
            ev.kind === "route" && ev.action === "del" && this.#wanted.has(key(ev.route.dst)) &&
            (ev.route.table ?? MAIN_TABLE) === this.#table
          ) {
            onDrift(`route ${ev.route.dst} was deleted`);
          }
        }
      } catch (err) {
        this.#log.error("route watch ended", { err });
        onDrift("route watch failed");
      }
    })();
  }

  stopWatching(): void {
    this.#watch?.close();
    this.#watch = undefined;
  }

  /** The router's routes the kernel holds now, in the form `sync` takes (e.g. left by a previous run). */
  async installed(): Promise<WantedRoute[]> {
    const ours = await this.#rtnl.routeList({ table: this.#table, protocol: ROUTER_ROUTE_PROTOCOL });
    return ours.map((r) => {
      const w: WantedRoute = { dst: r.dst };
      if (r.gateway) w.gateway = r.gateway;
      if (r.dev !== undefined) w.dev = r.dev;
      if (r.onlink) w.onlink = true;
      return w;
    });
  }

  /** Deletes every route carrying the router's protocol (--cleanup-config). */
  async removeAll(): Promise<number> {
    const ours = await this.#rtnl.routeList({ table: this.#table, protocol: ROUTER_ROUTE_PROTOCOL });
    if (ours.length === 0) return 0;
    const res = await this.#rtnl.routeBatch(ours.map((route) => ({ op: "del" as const, route })));
    return ours.length - res.failures.length;
  }
}
