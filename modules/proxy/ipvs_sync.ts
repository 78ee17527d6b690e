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
  type IpvsOp,
  type IpvsService,
  IpvsServiceFlag,
  type IpvsServiceKey,
  NetlinkError,
  parseCidr,
  parseIP,
  serviceKey,
  serviceKeyString,
} from "../../ffi/mod.ts";
import { destId, type IpvsPlan, type PlannedService } from "./ipvs_plan.ts";

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

/** Changes applied together in a batch that succeed or fail as one (a service with its destinations). */
interface Group {
  owner: string;
  what: string;
  ops: IpvsOp[];
  /** Counts the group's changes once all succeeded. */
  done: () => void;
  /** For a new service: what to add again with rr if its scheduler is missing. */
  service?: IpvsService;
  destinations?: readonly IpvsDestination[];
}

function emptyResult(): ReconcileResult {
  return {
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
}

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
    const r = emptyResult();
    const kernel = new Map<string, IpvsService>();
    for (const s of await this.#ipvs.services()) kernel.set(serviceKeyString(s), s);

    // Deletions and whole new services go to the kernel in one batch (many messages per system call):
    // services no longer wanted first (their VIPs may be re-used by a new one), then the new ones.
    const batch: Group[] = [];
    const deletedUdp: IpvsService[] = [];
    for (const [k, s] of kernel) {
      if (plan.services.has(k) || this.#excluded(s)) continue;
      batch.push({
        owner: "",
        what: `delete ${k}`,
        ops: [{ op: "delService", service: serviceKey(s) }],
        done: () => {
          r.servicesDeleted++;
          if (s.protocol === "udp") deletedUdp.push(s);
        },
      });
      for (const d of [...this.#draining.keys()]) if (d.startsWith(`${k}|`)) this.#draining.delete(d);
    }
    for (const [k, want] of plan.services) {
      if (kernel.has(k)) continue;
      batch.push(this.#addGroup(k, want.owner, want.service, want.destinations, r));
    }
    await this.#applyGroups(batch, r);
    for (const s of deletedUdp) await this.#flushUdp(s);

    for (const [k, want] of plan.services) {
      const have = kernel.get(k);
      if (!have) continue;
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

  /**
   * A pass over only the given virtual services, each known to be in IPVS as `before` (what the last pass
   * applied), without listing every service: an endpoint change of one Service among thousands. Without
   * graceful termination the destinations that differ between `before` and `after` are changed in one batch
   * without reading the kernel (a change the kernel refuses, e.g. a destination removed by hand, fails the
   * pass and the caller's full pass repairs it); with it, or while one of them drains, the service's
   * destinations are listed so connection counts decide the drain, as in `apply`.
   */
  async applyChanged(
    changes: readonly { key: string; before: PlannedService; after: PlannedService }[],
  ): Promise<ReconcileResult> {
    const r = emptyResult();
    const batch: Group[] = [];
    const udp: IpvsServiceKey[] = [];
    for (const { key: k, before, after } of changes) {
      if (!sameService(before.service, after.service)) {
        await this.#try(after.owner, `edit ${k}`, r, async () => {
          await this.#editService(after.owner, after.service, before.service);
          r.servicesEdited++;
        });
      }
      const draining = [...this.#draining.keys()].some((d) => d.startsWith(`${k}|`));
      if (this.#opts.graceful || draining) {
        await this.#try(
          after.owner,
          `destinations of ${k}`,
          r,
          () => this.#syncDests(k, after.service, after.destinations, r),
        );
        continue;
      }
      const had = new Map(before.destinations.map((d) => [destId(d), d]));
      const ops: IpvsOp[] = [];
      let added = 0, edited = 0, deleted = 0;
      for (const d of after.destinations) {
        const h = had.get(destId(d));
        had.delete(destId(d));
        if (!h) {
          ops.push({ op: "addDestination", service: after.service, destination: d });
          added++;
        } else if ((h.weight ?? 1) !== (d.weight ?? 1) || (h.forward ?? "masq") !== (d.forward ?? "masq")) {
          ops.push({ op: "editDestination", service: after.service, destination: d });
          edited++;
        }
      }
      for (const h of had.values()) {
        ops.push({ op: "delDestination", service: after.service, destination: h });
        deleted++;
      }
      if (ops.length === 0) continue;
      batch.push({
        owner: after.owner,
        what: `destinations of ${k}`,
        ops,
        done: () => {
          r.destinationsAdded += added;
          r.destinationsEdited += edited;
          r.destinationsDeleted += deleted;
          if (deleted && after.service.protocol === "udp") udp.push(after.service);
        },
      });
    }
    await this.#applyGroups(batch, r, false);
    for (const s of udp) await this.#flushUdp(s);
    r.draining = this.#draining.size;
    return r;
  }

  /** The batch entries that add one whole virtual service with its destinations. */
  #addGroup(
    k: string,
    owner: string,
    service: IpvsService,
    destinations: readonly IpvsDestination[],
    r: ReconcileResult,
  ): Group {
    return {
      owner,
      what: `add ${k}`,
      service,
      destinations,
      ops: [
        { op: "addService", service },
        ...destinations.map((d): IpvsOp => ({ op: "addDestination", service, destination: d })),
      ],
      done: () => {
        r.servicesAdded++;
        r.destinationsAdded += destinations.length;
      },
    };
  }

  /**
   * Applies groups of changes as one batch. A group counts once: done when all its changes succeeded, else
   * one failure reported with its first error. A new service whose scheduler module the kernel lacks
   * (ENOENT) is reported and added again with rr, in a second batch.
   */
  async #applyGroups(groups: readonly Group[], r: ReconcileResult, fallback = true): Promise<void> {
    if (groups.length === 0) return;
    const ops: IpvsOp[] = [];
    const groupOf: number[] = [];
    const start: number[] = [];
    for (const [g, group] of groups.entries()) {
      start.push(ops.length);
      for (const o of group.ops) {
        ops.push(o);
        groupOf.push(g);
      }
    }
    /** Per failed group: its first error, and whether that was the group's first change (the service). */
    const firstError = new Map<number, { err: unknown; first: boolean }>();
    for (const f of await this.#ipvs.apply(ops)) {
      const g = groupOf[f.index]!;
      if (!firstError.has(g)) firstError.set(g, { err: f.error, first: f.index === start[g] });
    }
    const retry: Group[] = [];
    for (const [g, group] of groups.entries()) {
      const failed = firstError.get(g);
      if (failed === undefined) {
        group.done();
        continue;
      }
      const { err } = failed;
      const s = group.service;
      const schedulerMissing = failed.first && err instanceof NetlinkError && err.errno === ENOENT;
      if (fallback && s && schedulerMissing && s.scheduler !== "rr") {
        this.#opts.onError?.(
          group.owner,
          `scheduler ${s.scheduler} is not available in this kernel; using rr`,
          err,
        );
        retry.push(
          this.#addGroup(
            serviceKeyString(s),
            group.owner,
            { ...s, scheduler: "rr", flags: (s.flags ?? 0) & IpvsServiceFlag.persistent },
            group.destinations ?? [],
            r,
          ),
        );
        continue;
      }
      r.failures++;
      this.#opts.onError?.(group.owner, group.what, err);
    }
    await this.#applyGroups(retry, r, false);
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
