/**
 * The service proxy's running instance. Event handlers only record changes (Services, EndpointSlices,
 * Nodes) and ask the runner for a sync; a sync renders only the Services that changed and applies the
 * difference from what it last programmed. A full sync (the first one, the periodic one, after a failure,
 * when the node's addresses or pod CIDRs change, or as soon as the table is found gone) reads back what the
 * kernel really holds and rewrites every chain, so hand edits are repaired and leftovers removed.
 *
 * Every change is cut into transactions of at most `chunkOps` operations, each holding whole Services,
 * so no single transaction holds the nftables lock long and no packet ever sees half a Service. A
 * transaction the kernel rejects is narrowed down (by the operation nft's error names, else by halving) to
 * the Service that caused it; that Service is logged once and skipped, the rest applied.
 */
import type { V1EndpointSlice, V1Service } from "@kubernetes/client-node";
import {
  buildServiceInfo,
  ChangeTracker,
  EndpointSliceIndex,
  type ModuleContext,
  type ModuleInstance,
  releaseMemory,
  serviceSkipReason,
  type SyncReason,
  type SyncRunner,
  type TimerId,
} from "../../core/mod.ts";
import {
  type ConntrackTable,
  IpProto,
  isNotFound,
  NftError,
  type NftListOptions,
  type NftListTarget,
  type NftObject,
  type NftRunOptions,
} from "../../ffi/mod.ts";
import { NftTransaction } from "../../ffi/mod.ts";
import {
  type HealthCheckOptions,
  type HealthCheckServers,
  healthCheckServers,
  type HealthCheckTarget,
} from "./health_server.ts";
import {
  type Belief,
  compareKernelState,
  type KernelDiff,
  type KernelReader,
  type KernelState,
  listKernelState,
} from "./kernel_state.ts";
import {
  addDeferred,
  claimOf,
  diffService,
  type ElementLookup,
  forgetWritten,
  isServiceObjectName,
  isSharedChainName,
  PROXY_TABLE,
  type ProxyNodeContext,
  renderBase,
  type RenderedService,
  renderService,
  SharedObjects,
  splitElementId,
} from "./nft_render.ts";
import { nodeContext } from "./node_context.ts";
import { ServiceCounters, type SetCounterSource } from "./service_counters.ts";

/** The nftables operations the proxy needs (Nftables and FakeNftables both provide them). */
export interface ProxyNft extends KernelReader {
  run(tx: NftTransaction, opts?: NftRunOptions): Promise<void>;
  list(target: NftListTarget, opts?: NftListOptions): Promise<NftObject[]>;
}

export interface ProxyDeps extends HealthCheckOptions {
  nft: ProxyNft;
  conntrack: ConntrackTable;
  /** How often to check that the table still exists (ms; default 2000). */
  probeMs?: number;
  /** Largest transaction, in operations (default 20000). */
  chunkOps?: number;
  /**
   * Reads the per-Service counters from the kernel (NftSetCounters); without it they are read through
   * `nft.list` (the fake in unit tests).
   */
  setCounters?: SetCounterSource;
}

const TABLE = { family: "inet", name: PROXY_TABLE } as const;
/** A chain that lost its last map element is deleted this long after (kernels before 6.2 need it). */
const STALE_CHAIN_DELAY_MS = 1000;

/**
 * Adds one Service's operations to a transaction, its element additions to `adds` (added after every
 * Service of the transaction, grouped by map: nft parses one long command per map much faster than
 * thousands of short ones); returns the chains it made stale. `retry`: the item's chunk failed and is
 * built again (see #applyChunk).
 */
type Build = (tx: NftTransaction, it: Item, adds: string[], retry: boolean) => string[];

/** A transaction being filled with whole Services. */
interface Chunk {
  tx: NftTransaction;
  items: Item[];
  /** Per item, its operations in `tx` [from, to) and its deferred additions, pairs of `adds` [from, to). */
  spans: { it: Item; from: number; to: number; addFrom: number; addTo: number }[];
  /** Deferred element additions: flat pairs (element id, value), see DiffOptions.deferAdds. */
  adds: string[];
  /** Once prepared (#prepareChunk): the additions are in `tx`, each at this operation's index. */
  opOfAdd?: number[];
  stale: string[];
  /**
   * #writtenGen when it was built: if a transaction failed since, a shared chain this chunk counted on
   * (DiffOptions.writtenInSync) may never have been written.
   */
  gen: number;
}

interface Item {
  key: string;
  prev: RenderedService | undefined;
  next: RenderedService | undefined;
  /** The cycle of claim moves (claimOrder) it is part of: never split between transactions. */
  cycle?: number;
}

export class ServiceProxy implements ModuleInstance {
  readonly #ctx: ModuleContext;
  readonly #deps: ProxyDeps;
  readonly #runner: SyncRunner;
  readonly #services = new ChangeTracker<"services">();
  readonly #slices = new ChangeTracker<"endpointslices">();
  readonly #nodes = new ChangeTracker<"nodes">();
  readonly #index = new EndpointSliceIndex();
  readonly #health: HealthCheckServers | undefined;
  #indexed = false;
  /** What the kernel holds for each Service, as far as this agent knows. */
  #programmed = new Map<string, RenderedService>();
  /** claim (claimOf) -> the Service that owns it (two Services may not share a NodePort or an external IP:port). */
  #claims = new Map<string, string>();
  /** Programmed Services with a healthCheckNodePort to serve (few), so a sync does not walk them all. */
  #withHealthCheck = new Set<string>();
  /** During a full sync: the shared chains it has written (DiffOptions.writtenInSync). */
  #writtenInSync: Set<string> | undefined;
  /** Counts the failed transactions whose shared chains had to be forgotten (Chunk.gen). */
  #writtenGen = 0;
  /** True while a full sync runs (its transactions go to a child nft). */
  #inFull = false;
  /**
   * While a full resync compares against the belief (#applyFullInner): elements the kernel still holds
   * that a committed Service dropped (id -> value), and shared elements a committed Service dropped.
   */
  #handedOff: { elements: Map<string, string>; shared: Set<string> } | undefined;
  /** Sum of the programmed Services' endpoints (the endpoints gauge), kept as they are committed. */
  #endpointCount = 0;
  /** The shared chains and elements and how many Services use each. */
  readonly #shared = new SharedObjects();
  /**
   * What each render was made from (#render): the Service and slice objects (the informers replace an
   * object on every change, never edit one) and the node context (#baseKey's form), so the full resync
   * can keep a programmed render whose inputs are all the same (#renderOrReuse).
   */
  readonly #renderedFrom = new WeakMap<
    RenderedService,
    { svc: V1Service; slices: readonly V1EndpointSlice[]; baseKey: string }
  >();
  /** Services that lost a conflict: re-rendered every sync until they get what they asked for. */
  #blocked = new Set<string>();
  #baseKey: string | undefined;
  #needFull = true;
  /** Stale chains (flushed) -> when; deleted by a later sync. */
  #stale = new Map<string, number>();
  /** Last problems logged per Service, so each is logged once. */
  #logged = new Map<string, string>();
  /**
   * Services whose last attempt the kernel rejected: logged when they first fail, not again at every
   * resync while they keep failing; forgotten once one of theirs is applied (a later failure is news).
   */
  #kernelRejected = new Set<string>();
  #unsubscribe: (() => void)[] = [];
  #probeTimer: TimerId | undefined;
  #staleTimer: TimerId | undefined;
  /** The collection a full sync asked for, not yet run (cleared on stop). */
  #gcTimers = new Set<TimerId>();
  #stopped = false;
  /** True until the first sync succeeds: what the kernel held before this run is not known per Service. */
  #initial = true;
  #udpPending: (Item & { initial: boolean })[] = [];
  /** kube_router_service_*, read from the counted sets on a scrape (only with --metrics-port). */
  readonly #counters: ServiceCounters | undefined;
  #m;

  constructor(ctx: ModuleContext, deps: ProxyDeps) {
    this.#ctx = ctx;
    this.#deps = deps;
    this.#runner = ctx.runner({ sync: (reason) => this.#sync(reason), minIntervalMs: 100 });
    this.#health = healthCheckServers(ctx.log, deps, () => this.#runner.failures === 0);
    const m = ctx.metrics;
    this.#m = {
      services: m.gauge("kube_router_proxy_services", "Services programmed by the service proxy."),
      endpoints: m.gauge("kube_router_proxy_endpoints", "Endpoints programmed by the service proxy."),
      duration: m.histogram(
        "kube_router_proxy_sync_duration_seconds",
        "Time a service proxy sync took, by kind (full or partial).",
      ),
      errors: m.counter("kube_router_proxy_sync_errors_total", "Service proxy syncs that failed."),
      rejected: m.counter(
        "kube_router_proxy_rejected_services_total",
        "Services the kernel rejected and the proxy skipped.",
      ),
      transactions: m.counter("kube_router_proxy_transactions_total", "nftables transactions applied."),
    };
    if (ctx.config.metricsPort !== 0) {
      const counters = new ServiceCounters({
        source: deps.setCounters ? { kernel: deps.setCounters } : { nft: deps.nft },
        metrics: m,
        log: ctx.log,
        now: () => ctx.clock.now(),
        families: () => [
          ...(ctx.config.enableIpv4 ? [4 as const] : []),
          ...(ctx.config.enableIpv6 ? [6 as const] : []),
        ],
        programmed: () => this.#programmed,
      });
      this.#counters = counters;
      this.#unsubscribe.push(m.onCollect(() => counters.collect()));
    }
  }

  /** Services programmed now (for tests and the agent's status). */
  get programmed(): ReadonlyMap<string, RenderedService> {
    return this.#programmed;
  }

  start(): Promise<void> {
    const bus = this.#ctx.bus;
    this.#unsubscribe.push(
      bus.onResource("services", (ev) => {
        if (this.#services.record(ev)) this.#runner.run();
      }),
      bus.onResource("endpointslices", (ev) => {
        if (this.#slices.record(ev)) this.#runner.run();
      }),
      bus.onResource("nodes", (ev) => {
        if (this.#nodes.record(ev)) this.#runner.run();
      }),
    );
    void this.#ctx.cachesSynced.then(() => this.#armProbe());
    return Promise.resolve();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const u of this.#unsubscribe.splice(0)) u();
    this.#counters?.clear();
    if (this.#probeTimer !== undefined) this.#ctx.clock.clearTimeout(this.#probeTimer);
    if (this.#staleTimer !== undefined) this.#ctx.clock.clearTimeout(this.#staleTimer);
    for (const t of this.#gcTimers) this.#ctx.clock.clearTimeout(t);
    this.#gcTimers.clear();
    await this.#runner.stop();
    await this.#health?.close();
  }

  /** Checks every probeMs that the table is still there; if someone deleted it, resyncs at once. */
  #armProbe(): void {
    if (this.#stopped) return;
    this.#probeTimer = this.#ctx.clock.setTimeout(async () => {
      try {
        if (!this.#needFull && this.#baseKey !== undefined && !(await this.#tableExists())) {
          this.#ctx.log.warn("the proxy's nftables table is gone; rewriting it");
          this.#needFull = true;
          this.#runner.run();
        }
      } catch (err) {
        this.#ctx.log.debug("table probe failed", { err });
      }
      this.#armProbe();
    }, this.#deps.probeMs ?? 2000);
  }

  /**
   * Lists one small fixed set of the base ruleset: libnftables fetches only that set for it, where
   * listing a chain fetches every chain and set of the table first (over a second of CPU at 10,000
   * Services, every probe).
   */
  async #tableExists(): Promise<boolean> {
    const set = this.#ctx.config.enableIpv4 ? "nodeport_ips_v4" : "nodeport_ips_v6";
    try {
      await this.#deps.nft.list({ set: { family: "inet", table: PROXY_TABLE, name: set } });
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  async #sync(reason: SyncReason): Promise<void> {
    const t0 = performance.now();
    const full = this.#needFull || reason !== "requested";
    // A full sync builds its chunks on top of what is live: the garbage of the partial syncs and scrapes
    // since the last collection goes first (at 10,000 Services it raised a periodic resync's peak RSS by
    // about 20 MiB, to within a few MiB of 250).
    if (full && !this.#initial) releaseMemory(8 * 2 ** 20);
    try {
      await this.#syncInner(full);
      this.#needFull = false;
      this.#initial = false;
      this.#m.duration.observe({ kind: full ? "full" : "partial" }, (performance.now() - t0) / 1000);
      // A full sync's rendering leaves tens of MiB of garbage at 10,000 Services: collected right after
      // the sync is done (a timer: the sync is reported first).
      if (full) {
        const t = this.#ctx.clock.setTimeout(() => {
          this.#gcTimers.delete(t);
          releaseMemory();
        }, 0);
        this.#gcTimers.add(t);
      }
    } catch (err) {
      // What was drained is lost with the failure; a full sync re-reads everything.
      this.#needFull = true;
      this.#m.errors.inc();
      throw err;
    }
  }

  async #syncInner(forceFull: boolean): Promise<void> {
    const { config, store } = this.#ctx;
    const svcChanges = this.#services.drain();
    const sliceChanges = this.#slices.drain();
    this.#nodes.drain();
    const dirty = new Set<string>(svcChanges.keys());
    if (!this.#indexed) {
      this.#index.reset(store.list("endpointslices"));
      this.#indexed = true;
    } else {
      for (const c of sliceChanges.values()) {
        for (const k of this.#index.touched(c.previous, c.current)) dirty.add(k);
      }
    }
    const nctx = nodeContext(config, store.list("nodes"));
    const baseKey = JSON.stringify(nctx);
    const full = forceFull || baseKey !== this.#baseKey;
    const keys = full
      ? new Set([...store.list("services").map(keyOf), ...this.#programmed.keys()])
      : new Set([...dirty, ...this.#blocked]);

    if (full) await this.#applyFull(nctx, baseKey, [...keys].sort());
    else {
      const next = new Map<string, RenderedService | undefined>();
      for (const key of [...keys].sort()) next.set(key, this.#render(key, nctx, baseKey));
      const round = new Map<string, string>();
      for (const [key, r] of next) {
        this.#resolve(key, r, round, (k) => next.has(k) ? { of: next.get(k) } : undefined);
      }
      await this.#applyPartial(next);
    }
    this.#baseKey = baseKey;

    await this.#deleteStaleChains();
    const udp = this.#udpPending.splice(0);
    for (const it of udp) await this.#clearStaleUdp(it.prev, it.next, it.initial);
    this.#m.services.set({}, this.#programmed.size);
    this.#m.endpoints.set({}, this.#endpointCount);
    await this.#syncHealthChecks();
  }

  #render(key: string, nctx: ProxyNodeContext, baseKey: string): RenderedService | undefined {
    const svc = this.#ctx.store.get("services", key);
    if (!svc) {
      this.#logged.delete(key);
      this.#kernelRejected.delete(key);
      return undefined;
    }
    const skip = serviceSkipReason(svc);
    if (skip) {
      this.#logOnce(
        key,
        `skip:${skip}`,
        () => this.#ctx.log.debug("service skipped", { service: key, reason: skip }),
      );
      return undefined;
    }
    const slices = this.#index.slicesFor(key);
    const info = buildServiceInfo(svc, slices, this.#ctx.config.nodeName);
    const r = renderService(info, nctx);
    this.#renderedFrom.set(r, { svc, slices, baseKey });
    const problems = [...r.warnings];
    if (r.unsupportedScheduler) {
      problems.push(
        `scheduler ${r.unsupportedScheduler} needs --service-proxy-backend=ipvs; using rr`,
      );
    }
    this.#logOnce(key, problems.join("\n"), () => {
      if (problems.length) {
        this.#ctx.log.warn("service has invalid parts, skipped", { service: key, problems });
      }
    });
    return r;
  }

  /**
   * For the full resync (about 0.2 ms of CPU per Service to render anew): the Service's programmed render
   * itself when nothing it was rendered from has changed (the same Service object, the same slice objects in
   * the same order, the same node context) and it lost nothing to a conflict (#resolve cuts a losing
   * render and forgets what it was made from: a blocked Service is rendered anew until it gets what it
   * asked for; every claim of a reused render is this Service's, so it cannot lose one in this sync and
   * #resolve leaves it as it is). A
   * render the kernel rejected is not programmed: the programmed one was made from older objects and
   * fails the check. Else a new render.
   */
  #renderOrReuse(key: string, nctx: ProxyNodeContext, baseKey: string): RenderedService | undefined {
    const prev = this.#programmed.get(key);
    const from = prev && this.#renderedFrom.get(prev);
    if (
      from && from.baseKey === baseKey && !this.#blocked.has(key) &&
      from.svc === this.#ctx.store.get("services", key)
    ) {
      const slices = this.#index.slicesFor(key);
      let same = slices.length === from.slices.length && slices.every((sl, i) => sl === from.slices[i]);
      for (const c of prev.claims.keys()) if (same && this.#claims.get(c) !== key) same = false;
      if (same) return prev;
    }
    return this.#render(key, nctx, baseKey);
  }

  #logOnce(key: string, what: string, log: () => void): void {
    if (this.#logged.get(key) === what) return;
    this.#logged.set(key, what);
    log();
  }

  /**
   * Two Services may not claim the same VIP and port or the same NodePort (claimOf: the dispatch entry with
   * its endpoint slots): the one that holds it keeps it, the newcomer loses all of it (logged) and is
   * retried every sync. Services are resolved in key order; `round` holds the claims of those resolved
   * before in this sync; `renderedNow(k)` gives Service k's render in this sync if it is part of it.
   */
  #resolve(
    key: string,
    r: RenderedService | undefined,
    round: Map<string, string>,
    renderedNow: (key: string) => { of: RenderedService | undefined } | undefined,
  ): void {
    this.#blocked.delete(key);
    if (!r) return;
    for (const [claim, ids] of r.claims) {
      let owner = round.get(claim);
      if (owner === undefined) {
        const held = this.#claims.get(claim);
        if (held !== undefined && held !== key) {
          // The holder keeps it unless it is re-rendered now without it.
          const now = renderedNow(held);
          if (!now || now.of?.claims.has(claim)) owner = held;
        }
      }
      if (owner !== undefined && owner !== key) {
        for (const id of ids) r.elements.delete(id);
        r.claims.delete(claim);
        // No longer what its objects render to: never reused (#renderOrReuse), even if this sync fails
        // and the Service is no longer in #blocked.
        this.#renderedFrom.delete(r);
        this.#blocked.add(key);
        const what = `${claim} is already used by ${owner}`;
        r.warnings.push(what);
        this.#logOnce(
          `${key}|conflict|${claim}`,
          owner,
          () =>
            this.#ctx.log.warn("service conflicts with another, entry skipped", {
              service: key,
              conflict: what,
            }),
        );
      } else round.set(claim, key);
    }
  }

  #commit(item: Item): void {
    this.#kernelRejected.delete(item.key);
    if (item.prev?.udpPorts.length || item.next?.udpPorts.length) {
      this.#udpPending.push({ ...item, initial: this.#initial });
    }
    for (const c of item.prev?.claims.keys() ?? []) {
      if (this.#claims.get(c) === item.key) this.#claims.delete(c);
    }
    for (const c of item.next?.claims.keys() ?? []) this.#claims.set(c, item.key);
    const h = this.#handedOff;
    if (h && item.prev) {
      // A full resync's diff leaves what a Service drops in the kernel (removed at its end): say so to
      // the lookups of the Services after it.
      for (const [id, v] of item.prev.elements) if (!item.next?.elements.has(id)) h.elements.set(id, v);
      for (const id of item.prev.sharedElements) if (!item.next?.sharedElements.has(id)) h.shared.add(id);
    }
    const now = this.#ctx.clock.now();
    for (const c of this.#shared.commit(item.prev, item.next)) this.#stale.set(c, now);
    this.#endpointCount += (item.next?.endpoints ?? 0) - (this.#programmed.get(item.key)?.endpoints ?? 0);
    if (item.next?.healthCheck) this.#withHealthCheck.add(item.key);
    else this.#withHealthCheck.delete(item.key);
    if (item.next) this.#programmed.set(item.key, item.next);
    else this.#programmed.delete(item.key);
  }

  async #applyPartial(next: Map<string, RenderedService | undefined>): Promise<void> {
    const items: Item[] = [];
    for (const [key, r] of next) {
      const prev = this.#programmed.get(key);
      if (!prev && !r) continue;
      items.push({ key, prev, next: r });
    }
    await this.#applyItems(
      claimOrder(items),
      (tx, it, adds) => diffService(tx, it.prev, it.next, { shared: this.#shared, deferAdds: adds }),
    );
  }

  /**
   * The full sync, streamed: Services are rendered, resolved and added to a transaction in key order, and
   * while the kernel applies one chunk (a child `nft -f`, see PROXY_NFT_OPTIONS) the next is built, so
   * the agent's work and nft's overlap. Chunks do not depend on each other here: elements are compared with
   * what the kernel held before the sync, every shared chain is written in every chunk that uses it.
   */
  async #applyFull(nctx: ProxyNodeContext, baseKey: string, keys: readonly string[]): Promise<void> {
    this.#inFull = true;
    try {
      await this.#applyFullInner(nctx, baseKey, keys);
    } finally {
      this.#inFull = false;
    }
  }

  async #applyFullInner(nctx: ProxyNodeContext, baseKey: string, keys: readonly string[]): Promise<void> {
    // Against what this agent believes it programmed, the kernel's elements streamed by and only the
    // differences kept; the first sync of a run (nothing believed yet) lists them all instead.
    const diff = this.#initial || this.#programmed.size === 0
      ? undefined
      : await compareKernelState(this.#deps.nft, TABLE, (set) => FIXED_SETS.has(set), this.#belief());
    const kernel = diff ? undefined : await this.#listKernel();
    const base = new NftTransaction("inet", PROXY_TABLE);
    renderBase(base, nctx);
    // Applied while the first chunk is built (it goes to the kernel before that chunk; a failure fails
    // the sync there).
    const based = this.#run(base);
    based.catch(() => {});

    const rendered = new Map<string, RenderedService | undefined>();
    const renderOf = (k: string) => {
      if (!rendered.has(k)) rendered.set(k, this.#renderOrReuse(k, nctx, baseKey));
      return rendered.get(k);
    };
    const all = new Set(keys);
    const round = new Map<string, string>();
    // Every chain rewritten; elements against what the kernel really holds (its listing, or the belief
    // corrected by the kernel's differences: #kernelView). Chains and sets a Service no longer has are found
    // below from the kernel's names, not from what we believed.
    const writtenInSync = new Set<string>();
    const build: Build = (tx, it, adds, retry) =>
      diffService(tx, undefined, it.next, {
        rewrite: true,
        kernelElements: kernel ? kernel.elements : this.#kernelView(it, diff!),
        shared: this.#shared,
        deferAdds: adds,
        // A chunk built again after a failure writes its shared chains itself: a later chunk, already
        // built, may have counted them as written, but it is applied after this one.
        writtenInSync: retry ? undefined : writtenInSync,
      });
    const handedOff = diff ? { elements: new Map<string, string>(), shared: new Set<string>() } : undefined;
    this.#handedOff = handedOff;
    this.#writtenInSync = writtenInSync;
    try {
      await this.#fullChunks(based, keys, renderOf, all, round, build);
    } finally {
      this.#handedOff = undefined;
      this.#writtenInSync = undefined;
    }
    rendered.clear();
    await this.#removeUnwanted(kernel ?? diff!, kernel ? undefined : { diff: diff!, handedOff: handedOff! });
  }

  /** The full sync's chunk loop: each chunk built while the previous one (first: `before`) is applied. */
  async #fullChunks(
    before: Promise<void>,
    keys: readonly string[],
    renderOf: (k: string) => RenderedService | undefined,
    all: ReadonlySet<string>,
    round: Map<string, string>,
    build: Build,
  ): Promise<void> {
    const limit = this.#deps.chunkOps ?? 20000;
    let chunk = newChunk(this.#writtenGen);
    let inflight: Promise<void> = before;
    for (const key of keys) {
      const r = renderOf(key);
      this.#resolve(key, r, round, (k) => all.has(k) ? { of: renderOf(k) } : undefined);
      addToChunk(chunk, { key, prev: this.#programmed.get(key), next: r }, build);
      if (chunk.tx.size + chunk.adds.length / 2 >= limit) {
        this.#prepareChunk(chunk);
        await inflight;
        inflight = this.#runChunk(chunk, build);
        chunk = newChunk(this.#writtenGen);
      }
    }
    if (chunk.items.length) this.#prepareChunk(chunk);
    await inflight;
    if (chunk.items.length) await this.#runChunk(chunk, build);
  }

  /**
   * Whatever the kernel holds that no Service wants: elements deleted, chains flushed (deleted later),
   * affinity sets deleted once the chains using them are flushed. Elements: with `compared`, only the
   * kernel's differences from the belief and what Services dropped during the sync are candidates (the
   * rest the kernel holds as believed, and the sync's diffs dealt with); else the whole listing.
   */
  async #removeUnwanted(
    kernel: {
      chains: ReadonlySet<string>;
      serviceSets: ReadonlySet<string>;
      elements?: ReadonlyMap<string, string>;
    },
    compared:
      | { diff: KernelDiff; handedOff: { elements: Map<string, string>; shared: Set<string> } }
      | undefined,
  ): Promise<void> {
    const limit = this.#deps.chunkOps ?? 20000;
    const wantChains = new Set<string>();
    const wantSets = new Set<string>();
    for (const r of this.#programmed.values()) {
      for (const c of r.chains.keys()) wantChains.add(c);
      for (const s of r.sets.keys()) wantSets.add(s);
    }
    for (const c of this.#shared.chains) wantChains.add(c);
    const fixed = FIXED_SETS;
    const ops: ((tx: NftTransaction) => void)[] = [];
    const drop = (id: string) => {
      const { map, key } = splitElementId(id);
      ops.push((tx) => tx.delete({ element: { set: map, key } }));
    };
    if (compared) {
      const { diff, handedOff } = compared;
      const held = new Set<string>(diff.odd.keys());
      for (const id of handedOff.elements.keys()) if (!diff.missing.has(id)) held.add(id);
      for (const id of handedOff.shared) if (!diff.missing.has(id)) held.add(id);
      for (const id of held) if (this.#wanted(id) === undefined) drop(id);
    } else if (kernel.elements?.size) {
      // (A cold start's kernel holds none: no set of every wanted element built for nothing.)
      const wantElements = new Set<string>();
      for (const r of this.#programmed.values()) for (const e of r.elements.keys()) wantElements.add(e);
      for (const e of this.#shared.elementIds()) wantElements.add(e);
      for (const id of kernel.elements?.keys() ?? []) {
        if (!wantElements.has(id) && !fixed.has(splitElementId(id).map)) drop(id);
      }
    }
    for (const c of kernel.chains) {
      if (!(isServiceObjectName(c) || isSharedChainName(c)) || wantChains.has(c)) continue;
      ops.push((tx) => tx.flush({ chain: { name: c } }));
      if (!this.#stale.has(c)) this.#stale.set(c, this.#ctx.clock.now());
    }
    for (const s of kernel.serviceSets) {
      if (!wantSets.has(s)) ops.push((tx) => tx.delete({ set: { name: s, type: "ipv4_addr" } }));
    }
    // Leftover chains first flushed (in order above), so the sets they used can go in the same transaction.
    for (let i = 0; i < ops.length; i += limit) {
      const tx = new NftTransaction("inet", PROXY_TABLE);
      for (const op of ops.slice(i, i + limit)) op(tx);
      await this.#run(tx);
    }
    for (const c of this.#stale.keys()) if (wantChains.has(c)) this.#stale.delete(c);
  }

  /** The value the programmed Services want for an element id ("" for a shared one), or undefined. */
  #wanted(id: string): string | undefined {
    const owner = this.#claims.get(claimOf(id));
    const v = owner === undefined ? undefined : this.#programmed.get(owner)?.elements.get(id);
    if (v !== undefined) return v;
    return this.#shared.hasElement(id) ? "" : undefined;
  }

  /** What the programmed Services say the kernel holds, for compareKernelState (before a sync changes it). */
  #belief(): Belief {
    const programmed = this.#programmed, shared = this.#shared;
    const mapOf = (id: string) => id.slice(0, id.indexOf("|"));
    return {
      valueOf: (id) => this.#wanted(id),
      counts: () => {
        const n = new Map<string, number>();
        const count = (id: string) => {
          const m = mapOf(id);
          n.set(m, (n.get(m) ?? 0) + 1);
        };
        for (const r of programmed.values()) for (const id of r.elements.keys()) count(id);
        for (const id of shared.elementIds()) count(id);
        return n;
      },
      *idsOf(set) {
        const prefix = `${set}|`;
        for (const r of programmed.values()) {
          for (const id of r.elements.keys()) if (id.startsWith(prefix)) yield id;
        }
        for (const id of shared.elementIds()) if (id.startsWith(prefix)) yield id;
      },
    };
  }

  /**
   * What the kernel holds, as diffService asks it while a compared full resync builds Service `it`: the
   * kernel's own value where it differs from the belief, nothing where a believed element is missing,
   * else the belief as it was before the sync: the Service's own previous render, what a Service
   * committed earlier in this sync dropped (still in the kernel), or the render of the Service that held
   * the element (not yet committed: claims move only to a Service whose holder drops them in this sync).
   * Shared elements: believed (counted now: one added by an earlier chunk is in the kernel, committed
   * after its transaction), or dropped earlier in this sync.
   */
  #kernelView(it: Item, diff: KernelDiff): ElementLookup {
    const get = (id: string): string | undefined => {
      const odd = diff.odd.get(id);
      if (odd !== undefined) return odd;
      if (diff.missing.has(id)) return undefined;
      const own = it.prev?.elements.get(id);
      if (own !== undefined) return own;
      const dropped = this.#handedOff?.elements.get(id);
      if (dropped !== undefined) return dropped;
      const owner = this.#claims.get(claimOf(id));
      return owner === undefined || owner === it.key
        ? undefined
        : this.#programmed.get(owner)?.elements.get(id);
    };
    return {
      get,
      has: (id) =>
        diff.odd.has(id) ||
        (!diff.missing.has(id) &&
          (this.#shared.hasElement(id) || (this.#handedOff?.shared.has(id) ?? false) ||
            get(id) !== undefined)),
    };
  }

  /**
   * What the kernel holds (kernel_state.ts): chain and set names, then each map and set holding Services'
   * elements streamed from the kernel on its own, never a listing of the whole table. Nothing if the table
   * is gone.
   */
  #listKernel(): Promise<KernelState> {
    return listKernelState(this.#deps.nft, TABLE, (set) => FIXED_SETS.has(set));
  }

  async #run(tx: NftTransaction): Promise<void> {
    if (tx.size === 0) return;
    // A full sync's transactions (the base re-declaring every set, chains rewritten) make libnftables
    // cache the whole table with its elements: in the agent that left its RSS at 420 MiB after one
    // periodic resync at 10,000 Services, so they run in a child nft; partial syncs stay in process.
    // A full sync's elements, almost all of its operations, are written over netlink: nft spent two
    // thirds of a cold sync parsing them. Its chunks are not one transaction anyway; each chunk's own
    // elements still are (nft_elements.ts), after the chains they jump to.
    await this.#deps.nft.run(tx, this.#inFull ? { outOfProcess: true, elementsOverNetlink: true } : {});
    this.#m.transactions.inc();
  }

  /**
   * Applies groups of items (claimOrder) in chunks of whole groups of whole Services, each built once. A chunk the kernel rejects is narrowed
   * down to the Service that caused it (the operation nft names, else halving); that Service keeps its old
   * kernel state, is logged and skipped; the others are applied.
   */
  async #applyItems(groups: Item[][], build: Build): Promise<void> {
    const limit = this.#deps.chunkOps ?? 20000;
    let chunk = newChunk(this.#writtenGen);
    for (const group of groups) {
      for (const it of group) addToChunk(chunk, it, build);
      if (chunk.tx.size + chunk.adds.length / 2 >= limit) {
        await this.#runChunk(chunk, build);
        chunk = newChunk(this.#writtenGen);
      }
    }
    if (chunk.items.length) await this.#runChunk(chunk, build);
  }

  /**
   * Builds and applies the items of a failed chunk again. They write their shared chains themselves: a
   * later chunk, already built, may count them as written, but it is applied after this one.
   */
  async #applyChunk(items: Item[], build: Build): Promise<void> {
    const chunk = newChunk(this.#writtenGen);
    for (const it of items) addToChunk(chunk, it, build, true);
    await this.#runChunk(chunk, build);
  }

  /**
   * Puts a chunk's deferred additions into its transaction, so the full sync can do it while the kernel
   * still applies the previous chunk; returns, per addition, its operation's index. (No text is rendered
   * ahead: a full sync's elements go over netlink, and the rest is rendered when it is applied.)
   */
  #prepareChunk(chunk: Chunk): number[] {
    const opOfAdd = addDeferred(chunk.tx, chunk.adds);
    chunk.adds = [];
    return chunk.opOfAdd = opOfAdd;
  }

  async #runChunk(chunk: Chunk, build: Build): Promise<void> {
    const { tx, items, spans } = chunk;
    const opOfAdd = chunk.opOfAdd ?? this.#prepareChunk(chunk);
    try {
      await this.#run(tx);
      for (const it of items) this.#commit(it);
      for (const c of chunk.stale) this.#stale.set(c, this.#ctx.clock.now());
      this.#scheduleStaleDeletion();
      return;
    } catch (err) {
      // Built before an earlier transaction of this sync failed: it may lack a shared chain that one was to
      // write. Built again (the chain written this time) before anything is blamed on its Services.
      const outdated = chunk.gen !== this.#writtenGen;
      // What it wrote once for the whole sync must be written again by the chunks that follow.
      if (this.#writtenInSync && forgetWritten(tx, this.#writtenInSync)) this.#writtenGen++;
      if (!(err instanceof NftError)) throw err;
      if (outdated) return await this.#applyChunk(items, build);
      // A missing table or map is not one Service's fault: fail the sync (the retry is a full sync).
      if (!(await this.#tableExists())) throw err;
      const ops = (err as { operations?: readonly number[] }).operations ?? [];
      const owns = (s: Chunk["spans"][number], o: number) => {
        if (o >= s.from && o < s.to) return true;
        for (let i = s.addFrom; i < s.addTo; i++) if (opOfAdd[i] === o) return true;
        return false;
      };
      const named = spans.filter((s) => ops.some((o) => owns(s, o))).map((s) => s.it);
      if (named.length && named.length < items.length) {
        for (const it of named) this.#reject(it, err);
        const rest = items.filter((it) => !named.includes(it));
        if (rest.length) await this.#applyChunk(rest, build);
        return;
      }
      if (items.length === 1) {
        this.#reject(items[0]!, err);
        return;
      }
      const half = splitPoint(items);
      await this.#applyChunk(items.slice(0, half), build);
      await this.#applyChunk(items.slice(half), build);
    }
  }

  #reject(it: Item, err: NftError): void {
    this.#m.rejected.inc();
    if (this.#kernelRejected.has(it.key)) return;
    this.#kernelRejected.add(it.key);
    this.#ctx.log.error("the kernel rejected a service's rules; skipped, others applied", {
      service: it.key,
      err: err.nftMessage.trim().split("\n")[0] ?? String(err),
    });
  }

  #scheduleStaleDeletion(): void {
    if (this.#stale.size === 0 || this.#staleTimer !== undefined || this.#stopped) return;
    this.#staleTimer = this.#ctx.clock.setTimeout(() => {
      this.#staleTimer = undefined;
      this.#runner.run();
    }, STALE_CHAIN_DELAY_MS + 100);
  }

  /** Deletes chains flushed more than a second ago that nothing wants again. */
  async #deleteStaleChains(): Promise<void> {
    // Nothing pending (the common case): no walk over every Service.
    if (this.#stale.size === 0) return;
    const now = this.#ctx.clock.now();
    const wanted = new Set<string>(this.#shared.chains);
    for (const r of this.#programmed.values()) for (const c of r.chains.keys()) wanted.add(c);
    const due = [...this.#stale].filter(([c, t]) => now - t >= STALE_CHAIN_DELAY_MS && !wanted.has(c));
    for (const [c] of this.#stale) if (wanted.has(c)) this.#stale.delete(c);
    if (!due.length) {
      this.#scheduleStaleDeletion();
      return;
    }
    const tx = new NftTransaction("inet", PROXY_TABLE);
    // All flushed first: one may still go to another (a shared external chain to its pick chain).
    for (const [c] of due) tx.add({ chain: { name: c } }).flush({ chain: { name: c } });
    for (const [c] of due) tx.delete({ chain: { name: c } });
    try {
      await this.#run(tx);
      for (const [c] of due) this.#stale.delete(c);
    } catch (err) {
      // Still referenced for a moment (old kernels): try again later.
      this.#ctx.log.debug("stale chains not deleted yet", { count: due.length, err });
      for (const [c] of due) this.#stale.set(c, now);
    }
    this.#scheduleStaleDeletion();
  }

  async #syncHealthChecks(): Promise<void> {
    if (!this.#health) return;
    const wanted = new Map<number, HealthCheckTarget & { key: string }>();
    for (const key of this.#withHealthCheck) {
      const r = this.#programmed.get(key);
      if (r?.healthCheck) wanted.set(r.healthCheck.port, { ...r.healthCheck, key: r.key });
    }
    await this.#health.sync(wanted);
  }

  /**
   * UDP has no connection to end: a flow keeps its conntrack entry (and so its old DNAT) while packets
   * keep coming. When an endpoint goes away its flows are deleted so the next packet picks a live one;
   * when a Service gains its first endpoint, entries left by the rejects before are deleted too.
   */
  async #clearStaleUdp(
    prev: RenderedService | undefined,
    next: RenderedService | undefined,
    initial: boolean,
  ): Promise<void> {
    const targets: { family: 4 | 6; dst?: string; dport: number }[] = [];
    for (const p of prev?.udpPorts ?? []) {
      const n = next?.udpPorts.find((q) => q.family === p.family && q.port === p.port);
      const gone = p.endpoints.some((e) => !n?.endpoints.includes(e));
      if (!gone) continue;
      for (const vip of p.vips) targets.push({ family: p.family, dst: vip, dport: p.port });
      if (p.nodePort !== undefined) targets.push({ family: p.family, dport: p.nodePort });
    }
    for (const n of next?.udpPorts ?? []) {
      const p = prev?.udpPorts.find((q) => q.family === n.family && q.port === n.port);
      // Not on the first sync after a start: the flows then in the kernel are live ones being kept.
      if (initial || n.endpoints.length === 0 || (p && p.endpoints.length > 0)) continue;
      for (const vip of n.vips) targets.push({ family: n.family, dst: vip, dport: n.port });
      if (n.nodePort !== undefined) targets.push({ family: n.family, dport: n.nodePort });
    }
    for (const t of targets) {
      try {
        await this.#deps.conntrack.deleteMatching({ ...t, protocol: IpProto.udp });
      } catch (err) {
        this.#ctx.log.warn("cannot clear UDP conntrack entries", { ...t, err });
      }
    }
  }
}

function newChunk(gen = 0): Chunk {
  return { tx: new NftTransaction("inet", PROXY_TABLE), items: [], spans: [], adds: [], stale: [], gen };
}

function addToChunk(chunk: Chunk, it: Item, build: Build, retry = false): void {
  const from = chunk.tx.size, addFrom = chunk.adds.length / 2;
  chunk.stale.push(...build(chunk.tx, it, chunk.adds, retry));
  chunk.items.push(it);
  chunk.spans.push({ it, from, to: chunk.tx.size, addFrom, addTo: chunk.adds.length / 2 });
}

/**
 * A partial sync's items in groups, in the order to apply them, so that the outcome never depends on
 * where the chunk boundaries fall. A claim (claimOf: a VIP and port or a NodePort with its elements) that
 * moves from Service B to Service A must leave the kernel before it is added again: B's chunk deletes it
 * (inline) and A's adds it (at its chunk's end), so B comes first whatever the keys' order, or an add of
 * an element B still holds with another value fails ("File exists") and A is rejected. Services that take
 * each other's claims (a cycle: a swap) form one group, applied in one chunk (its deletes before its
 * additions). Everything else stays in key order, one Service a group.
 */
function claimOrder(items: readonly Item[]): Item[][] {
  /** claim -> the item giving it up (held before, not now). */
  const giver = new Map<string, number>();
  items.forEach((it, i) => {
    for (const c of it.prev?.claims.keys() ?? []) if (!it.next?.claims.has(c)) giver.set(c, i);
  });
  if (giver.size === 0) return items.map((it) => [it]);
  /** item -> the items that must come before it (those giving up a claim it takes). */
  const before = new Map<number, number[]>();
  items.forEach((it, i) => {
    for (const c of it.next?.claims.keys() ?? []) {
      const g = giver.get(c);
      if (g === undefined || g === i || it.prev?.claims.has(c)) continue;
      const b = before.get(i);
      if (b) b.push(g);
      else before.set(i, [g]);
    }
  });
  if (before.size === 0) return items.map((it) => [it]);
  // Tarjan's strongly connected components over "must come after" edges, roots in key order: a component
  // is complete (and emitted) only after every component it depends on, so givers come first.
  const groups: Item[][] = [];
  const index = new Map<number, number>();
  const low = new Map<number, number>();
  const stack: number[] = [];
  const onStack = new Set<number>();
  let next = 0;
  const visit = (v: number) => {
    index.set(v, next);
    low.set(v, next);
    next++;
    stack.push(v);
    onStack.add(v);
    for (const w of before.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const group: number[] = [];
    for (;;) {
      const w = stack.pop()!;
      onStack.delete(w);
      group.push(w);
      if (w === v) break;
    }
    if (group.length > 1) { for (const i of group) items[i]!.cycle = groups.length; }
    groups.push(group.sort((a, b) => a - b).map((i) => items[i]!));
  };
  // (Recursion depth is the length of a chain of moves within one sync: short.)
  for (let i = 0; i < items.length; i++) if (!index.has(i)) visit(i);
  return groups;
}

/**
 * Where to halve a rejected chunk's items: the middle, or the nearest place that does not cut a cycle of
 * claim moves in two (its members apart, each would fail on the claim the other still holds).
 */
function splitPoint(items: readonly Item[]): number {
  const mid = Math.ceil(items.length / 2);
  const ok = (i: number) =>
    i > 0 && i < items.length && (items[i]!.cycle === undefined || items[i]!.cycle !== items[i - 1]!.cycle);
  for (let d = 0; d < items.length; d++) {
    if (ok(mid - d)) return mid - d;
    if (ok(mid + d)) return mid + d;
  }
  return mid;
}

function keyOf(svc: V1Service): string {
  return `${svc.metadata?.namespace ?? ""}/${svc.metadata?.name ?? ""}`;
}

/** Sets the base ruleset fills itself (not per-service elements). */
const FIXED_SETS = new Set(["nodeport_ips_v4", "nodeport_ips_v6", "pod_cidrs_v4", "pod_cidrs_v6"]);
