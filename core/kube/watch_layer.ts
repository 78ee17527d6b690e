/**
 * The agent's view of Kubernetes: one {@link Reflector} per resource the enabled modules need, all
 * publishing on the bus, with sync gating (`waitForSync`) and read access to the caches.
 *
 * Built on client-node's `KubeConfig` for configuration and credentials, with its own list/watch loop
 * rather than client-node's informers: those do not restart after a dropped connection, report a
 * deliberate stop as an error, do not diff a re-list against the cache, and deserialize every object
 * into model classes (more memory per object). Objects here are the API's JSON as received (dates
 * stay ISO strings although the client-node types say `Date`), one copy each.
 */
import { type Bus, RESOURCE_KINDS, type ResourceKind, type ResourceTypes } from "../bus.ts";
import { type Clock, systemClock } from "../clock.ts";
import type { KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import { type BackoffOptions, Reflector, type ReflectorFailure, type ReflectorStats } from "./reflector.ts";
import { HttpTransport, type Transport } from "./transport.ts";

export interface WatchLayerOptions {
  kubeConfig: KubeConfig;
  bus: Bus;
  log: Logger;
  metrics: Metrics;
  clock?: Clock;
  /** Reconnect backoff; default 500 ms doubling up to 30 s. */
  backoff?: BackoffOptions;
  /** LIST page size; default 500 (client-go's). */
  pageSize?: number;
  /** Server-side watch timeout in seconds, or a function picking one; default 300-600 at random. */
  watchTimeoutSeconds?: number | (() => number);
  /**
   * A watch that receives nothing (no event, no bookmark) for this long is presumed dead and replaced.
   * Default 15 minutes: longer than any server-side watch timeout the layer asks for (at most 10).
   */
  idleTimeoutMs?: number;
  /** Replaces the HTTP transport (tests of the loop logic without a server). */
  transport?: Transport;
}

export class WatchLayer {
  #o: WatchLayerOptions;
  #clock: Clock;
  #transport: Transport;
  #reflectors = new Map<ResourceKind, Reflector<ResourceKind>>();
  #runs: Promise<void>[] = [];
  #abort = new AbortController();
  #syncWaiters = new Set<() => void>();
  #stopped = false;

  constructor(opts: WatchLayerOptions) {
    this.#o = opts;
    this.#clock = opts.clock ?? systemClock;
    this.#transport = opts.transport ??
      new HttpTransport(opts.kubeConfig, { idleTimeoutMs: opts.idleTimeoutMs ?? 15 * 60_000 });
  }

  /** Starts informers for these resources (those already running are left alone). */
  start(resources: readonly ResourceKind[]): void {
    if (this.#stopped) throw new Error("the watch layer was stopped");
    const events = this.#o.metrics.counter(
      "kube_router_informer_events_total",
      "Kubernetes object changes delivered to the modules, by resource and type.",
    );
    const objects = this.#o.metrics.gauge(
      "kube_router_informer_objects",
      "Objects in the informer cache, by resource.",
    );
    const synced = this.#o.metrics.gauge(
      "kube_router_informer_synced",
      "1 once the resource's informer delivered its first list.",
    );
    const timeout = this.#o.watchTimeoutSeconds;
    const watchTimeoutSeconds = typeof timeout === "function"
      ? timeout
      : typeof timeout === "number"
      ? () => timeout
      : () => 300 + Math.floor(Math.random() * 300);
    for (const resource of resources) {
      if (!RESOURCE_KINDS.includes(resource)) throw new RangeError(`unknown resource ${resource}`);
      if (this.#reflectors.has(resource)) continue;
      synced.set({ resource }, 0);
      objects.set({ resource }, 0);
      const r: Reflector<ResourceKind> = new Reflector({
        resource,
        transport: this.#transport,
        bus: this.#o.bus,
        log: this.#o.log,
        clock: this.#clock,
        backoff: this.#o.backoff ?? { initialMs: 500, maxMs: 30_000 },
        events,
        objects,
        pageSize: this.#o.pageSize ?? 500,
        watchTimeoutSeconds,
        onSynced: () => {
          synced.set({ resource }, 1);
          this.#o.bus.publish("synced", { resource });
          for (const w of [...this.#syncWaiters]) w();
        },
      });
      this.#reflectors.set(resource, r);
      this.#runs.push(r.run(this.#abort.signal));
    }
  }

  /** Whether the resource's informer delivered its first full list. */
  isSynced(resource: ResourceKind): boolean {
    return this.#reflectors.get(resource)?.synced ?? false;
  }

  /** Resolves true once every listed resource is synced, false if `timeoutMs` passes first (or on stop). */
  waitForSync(resources: readonly ResourceKind[], timeoutMs: number): Promise<boolean> {
    const all = () => resources.every((r) => this.isSynced(r));
    if (all()) return Promise.resolve(true);
    if (this.#stopped) return Promise.resolve(false);
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        this.#syncWaiters.delete(check);
        this.#clock.clearTimeout(timer);
        resolve(ok);
      };
      const check = () => {
        if (all()) done(true);
        else if (this.#stopped) done(false);
      };
      const timer = this.#clock.setTimeout(() => done(false), timeoutMs);
      this.#syncWaiters.add(check);
    });
  }

  /** A snapshot of the cache: the objects as last seen (shared, do not modify). */
  list<K extends ResourceKind>(resource: K): ResourceTypes[K][] {
    const r = this.#reflectors.get(resource) as Reflector<K> | undefined;
    return r ? [...r.cache.values()] : [];
  }

  /** One cached object by `namespace/name` (or `name`). */
  get<K extends ResourceKind>(resource: K, key: string): ResourceTypes[K] | undefined {
    return (this.#reflectors.get(resource) as Reflector<K> | undefined)?.cache.get(key);
  }

  /** Resources whose list/watch is failing now, with the server's answer (for /healthz). */
  failing(): Array<{ resource: ResourceKind } & ReflectorFailure> {
    return [...this.#reflectors].flatMap(([resource, r]) => r.failing ? [{ resource, ...r.failing }] : []);
  }

  /** Counters of LISTs, re-LISTs and WATCHes per resource (for tests and debugging). */
  stats(resource: ResourceKind): ReflectorStats | undefined {
    return this.#reflectors.get(resource)?.stats;
  }

  /** Stops every informer and waits for their loops to end; a stop is never logged as a failure. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#abort.abort();
    for (const w of [...this.#syncWaiters]) w();
    await Promise.all(this.#runs);
    this.#transport.close?.();
  }
}
