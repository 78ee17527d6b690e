/**
 * Brings the kernel's IPVS to a plan (ipvs_plan.ts) with the fewest changes: it reads what IPVS holds,
 * adds the virtual services and destinations that are missing, edits the ones whose scheduler, flags,
 * persistence or weight differ, and deletes the rest — so a sync that finds everything in place makes no
 * kernel call at all, and connections on untouched services never notice one.
 *
 * Graceful termination (`--ipvs-graceful-termination`), as kube-router does it: a destination that is no
 * longer wanted first gets weight 0 (no new connections, existing ones keep flowing) and is deleted on a
 * later pass once it has no active and no inactive connections left, or once `--ipvs-graceful-period` has
 * passed since it was drained. A virtual service that is no longer wanted goes at once. When a UDP
 * destination is removed or drained, the conntrack entries of the virtual service are deleted so UDP
 * flows (which never "end") pick a live destination on their next packet.
 *
 * IPVS services whose address lies in `--excluded-cidrs` are never touched (someone else's).
 */
import {
  cidrContains,
  type ConntrackTable,
  IpProto,
  type Ipvs,
  type IpvsDestination,
  type IpvsService,
  IpvsServiceFlag,
  type IpvsServiceKey,
  NetlinkError,
  parseCidr,
  parseIP,
  serviceKey,
  serviceKeyString,
} from "../../ffi/mod.ts";
import { destId, type IpvsPlan } from "./ipvs_plan.ts";

export interface ReconcilerOptions {
  graceful: boolean;
  /** --ipvs-graceful-period in ms. */
  gracefulPeriodMs: number;
  /** --excluded-cidrs. */
  excludedCidrs: readonly string[];
  now: () => number;
  /** Deletes UDP conntrack entries of a virtual service (optional: unit tests may leave it out). */
  conntrack?: Pick<ConntrackTable, "deleteMatching">;
  /** Problems per virtual service while applying (a scheduler the kernel lacks, a rejected value). */
  onError?: (owner: string, what: string, err: unknown) => void;
}

/** What one pass changed (kernel calls by kind), for logs, metrics and tests. */
export interface ReconcileResult {
  servicesAdded: number;
  servicesEdited: number;
  servicesDeleted: number;
  destinationsAdded: number;
  destinationsEdited: number;
  destinationsDeleted: number;
  /** Destinations set to weight 0 this pass. */
  destinationsDrained: number;
  /** Destinations waiting to drain after this pass. */
  draining: number;
  failures: number;
}

const ENOENT = 2;

function sameService(a: IpvsService, b: IpvsService): boolean {
  const fa = (a.flags ?? 0) & ~IpvsServiceFlag.hashed;
  const fb = (b.flags ?? 0) & ~IpvsServiceFlag.hashed;
  const persistent = (fa & IpvsServiceFlag.persistent) !== 0;
  return a.scheduler === b.scheduler && fa === fb &&
    (!persistent || ((a.timeout ?? 0) === (b.timeout ?? 0) && (a.netmask ?? 0) === (b.netmask ?? 0)));
}

export class IpvsReconciler {
  readonly #ipvs: Ipvs;
  readonly #opts: ReconcilerOptions;
  /** `${serviceKeyString}|${destId}` -> when it was drained (weight 0). */
  readonly #draining = new Map<string, number>();

  constructor(ipvs: Ipvs, opts: ReconcilerOptions) {
    this.#ipvs = ipvs;
    this.#opts = opts;
  }

  /** Destinations currently draining (for tests and the agent's status). */
  get draining(): ReadonlyMap<string, number> {
    return this.#draining;
  }

  #excluded(s: IpvsServiceKey): boolean {
    if (s.fwmark !== undefined) return false;
    const ip = parseIP(s.address);
    if (!ip) return false;
    return this.#opts.excludedCidrs.some((c) => {
      const p = parseCidr(c);
      return p !== undefined && p.family === ip.family && cidrContains(p, ip.addr);
    });
  }

  /** One pass: the kernel's IPVS made equal to `plan` (graceful removals advanced by one step). */
  async apply(plan: IpvsPlan): Promise<ReconcileResult> {
    const r: ReconcileResult = {
      servicesAdded: 0,
      servicesEdited: 0,
      servicesDeleted: 0,
      destinationsAdded: 0,
      destinationsEdited: 0,
      destinationsDeleted: 0,
      destinationsDrained: 0,
      draining: 0,
      failures: 0,
    };
    const kernel = new Map<string, IpvsService>();
    for (const s of await this.#ipvs.services()) kernel.set(serviceKeyString(s), s);

    // Services no longer wanted go first (their VIPs may be re-used by a new one below).
    for (const [k, s] of kernel) {
      if (plan.services.has(k) || this.#excluded(s)) continue;
      await this.#try("", `delete ${k}`, r, async () => {
        await this.#ipvs.delService(serviceKey(s));
        r.servicesDeleted++;
        if (s.protocol === "udp") await this.#flushUdp(s);
      });
      for (const d of [...this.#draining.keys()]) if (d.startsWith(`${k}|`)) this.#draining.delete(d);
    }

    for (const [k, want] of plan.services) {
      const have = kernel.get(k);
      if (!have) {
        await this.#try(want.owner, `add ${k}`, r, async () => {
          await this.#addService(want.owner, want.service);
          r.servicesAdded++;
          for (const d of want.destinations) {
            await this.#ipvs.addDestination(want.service, d);
            r.destinationsAdded++;
          }
        });
        continue;
      }
      if (!sameService(have, want.service)) {
        await this.#try(want.owner, `edit ${k}`, r, async () => {
          await this.#editService(want.owner, want.service, have);
          r.servicesEdited++;
        });
      }
      await this.#try(
        want.owner,
        `destinations of ${k}`,
        r,
        () => this.#syncDests(k, want.service, want.destinations, r),
      );
    }
    for (const d of [...this.#draining.keys()]) {
      if (!plan.services.has(d.slice(0, d.indexOf("|")))) this.#draining.delete(d);
    }
    r.draining = this.#draining.size;
    return r;
  }

  async #syncDests(
    k: string,
    svc: IpvsService,
    want: readonly IpvsDestination[],
    r: ReconcileResult,
  ): Promise<void> {
    const have = new Map((await this.#ipvs.destinations(svc)).map((d) => [destId(d), d]));
    const wanted = new Map(want.map((d) => [destId(d), d]));
    for (const [id, d] of wanted) {
      const h = have.get(id);
      this.#draining.delete(`${k}|${id}`);
      if (!h) {
        await this.#ipvs.addDestination(svc, d);
        r.destinationsAdded++;
      } else if ((h.weight ?? 1) !== (d.weight ?? 1) || (h.forward ?? "masq") !== (d.forward ?? "masq")) {
        await this.#ipvs.editDestination(svc, d);
        r.destinationsEdited++;
      }
    }
    let udpChanged = false;
    for (const [id, h] of have) {
      if (wanted.has(id)) continue;
      const dk = `${k}|${id}`;
      if (!this.#opts.graceful) {
        await this.#ipvs.delDestination(svc, h);
        r.destinationsDeleted++;
        udpChanged = true;
        continue;
      }
      const since = this.#draining.get(dk);
      if (since === undefined || (h.weight ?? 0) !== 0) {
        // First seen unwanted (or someone raised its weight again): drain it.
        if ((h.weight ?? 0) !== 0) {
          await this.#ipvs.editDestination(svc, { ...stripCounters(h), weight: 0 });
          r.destinationsDrained++;
          udpChanged = true;
        }
        this.#draining.set(dk, since ?? this.#opts.now());
        if ((h.weight ?? 0) !== 0) continue;
      }
      const started = this.#draining.get(dk)!;
      const idle = (h.activeConns ?? 0) === 0 && (h.inactiveConns ?? 0) === 0;
      if (idle || this.#opts.now() - started >= this.#opts.gracefulPeriodMs) {
        await this.#ipvs.delDestination(svc, h);
        this.#draining.delete(dk);
        r.destinationsDeleted++;
      }
    }
    if (udpChanged && svc.protocol === "udp") await this.#flushUdp(svc);
  }

  /** Adds a service; a scheduler module the kernel lacks (ENOENT) is reported and rr used instead. */
  async #addService(owner: string, s: IpvsService): Promise<void> {
    try {
      await this.#ipvs.addService(s);
    } catch (err) {
      if (!(err instanceof NetlinkError) || err.errno !== ENOENT || s.scheduler === "rr") throw err;
      this.#opts.onError?.(owner, `scheduler ${s.scheduler} is not available in this kernel; using rr`, err);
      await this.#ipvs.addService({
        ...s,
        scheduler: "rr",
        flags: (s.flags ?? 0) & IpvsServiceFlag.persistent,
      });
    }
  }

  async #editService(owner: string, s: IpvsService, have: IpvsService): Promise<void> {
    try {
      await this.#ipvs.editService(s);
    } catch (err) {
      if (!(err instanceof NetlinkError) || err.errno !== ENOENT || s.scheduler === "rr") throw err;
      const fallback = { ...s, scheduler: "rr", flags: (s.flags ?? 0) & IpvsServiceFlag.persistent };
      this.#opts.onError?.(owner, `scheduler ${s.scheduler} is not available in this kernel; using rr`, err);
      if (!sameService(have, fallback)) await this.#ipvs.editService(fallback);
    }
  }

  async #flushUdp(s: IpvsServiceKey): Promise<void> {
    if (!this.#opts.conntrack || s.fwmark !== undefined) return;
    try {
      await this.#opts.conntrack.deleteMatching({
        family: s.family,
        protocol: IpProto.udp,
        dst: s.address,
        dport: s.port,
      });
    } catch (err) {
      this.#opts.onError?.("", `cannot clear UDP conntrack entries of ${serviceKeyString(s)}`, err);
    }
  }

  async #try(owner: string, what: string, r: ReconcileResult, f: () => Promise<void>): Promise<void> {
    try {
      await f();
    } catch (err) {
      r.failures++;
      this.#opts.onError?.(owner, what, err);
    }
  }

  /** Deletes every IPVS service outside --excluded-cidrs (--cleanup-config); returns how many. */
  async deleteAll(): Promise<number> {
    let n = 0;
    for (const s of await this.#ipvs.services()) {
      if (this.#excluded(s)) continue;
      await this.#ipvs.delService(serviceKey(s));
      n++;
    }
    this.#draining.clear();
    return n;
  }
}

function stripCounters(d: IpvsDestination): IpvsDestination {
  const { activeConns: _a, inactiveConns: _i, persistConns: _p, stats: _s, ...rest } = d;
  return rest;
}
