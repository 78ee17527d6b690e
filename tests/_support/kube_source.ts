/**
 * One in-memory Kubernetes for every module's unit tests: it holds objects, publishes each change on the
 * bus the way the watch layer does (ADDED/MODIFIED/DELETED with previous and current), answers the
 * ResourceStore, and lets the test decide when caches count as synced. Use it behind an Agent (it is a
 * ResourceSource) or drive one module directly through `moduleContext`.
 */
import type { ResourceSource } from "../../core/agent.ts";
import { Bus, objectKey, type ResourceKind, type ResourceTypes } from "../../core/bus.ts";
import { type Clock, systemClock } from "../../core/clock.ts";
import type { Config } from "../../core/config.ts";
import { getLogger, type Logger, MemorySink } from "../../core/log.ts";
import { Metrics } from "../../core/metrics.ts";
import type { ModuleContext } from "../../core/module.ts";
import { SyncRunner } from "../../core/runner.ts";

type Meta = { metadata?: { name?: string; namespace?: string } };

export interface MemorySourceOptions {
  /** Caches count as synced at once (default); false waits for `markSynced()`. */
  synced?: boolean;
}

export class MemorySource implements ResourceSource {
  readonly objects = new Map<ResourceKind, Map<string, unknown>>();
  /** The resources the agent started informers for. */
  started: ResourceKind[] = [];
  stopped = false;
  #resolve: (() => void) | undefined;
  readonly #synced: Promise<void>;

  constructor(readonly bus: Bus, opts: MemorySourceOptions = {}) {
    this.#synced = new Promise<void>((r) => this.#resolve = r);
    if (opts.synced !== false) this.#resolve?.();
  }

  start(resources: readonly ResourceKind[]): void {
    this.started = [...resources];
  }

  /** Delivers the first full list: `synced` on the bus for every started resource, and cachesSynced. */
  markSynced(): void {
    for (const r of this.started) this.bus.publish("synced", { resource: r });
    this.#resolve?.();
  }

  /** Resolves once caches count as synced. */
  whenSynced(): Promise<void> {
    return this.#synced;
  }

  waitForSync(_resources: readonly ResourceKind[], timeoutMs: number): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    return Promise.race([
      this.#synced.then(() => true),
      new Promise<boolean>((r) => timer = setTimeout(() => r(false), timeoutMs)),
    ]).finally(() => clearTimeout(timer));
  }

  stop(): Promise<void> {
    this.stopped = true;
    return Promise.resolve();
  }

  list<K extends ResourceKind>(r: K): ResourceTypes[K][] {
    return [...(this.objects.get(r)?.values() ?? [])] as ResourceTypes[K][];
  }

  get<K extends ResourceKind>(r: K, key: string): ResourceTypes[K] | undefined {
    return this.objects.get(r)?.get(key) as ResourceTypes[K] | undefined;
  }

  /**
   * Adds or replaces an object and publishes ADDED or MODIFIED (with the previous object). A copy is
   * stored and published, as the watch layer hands out its own object: a test may change and put the
   * same object again and still see the old one as previous.
   */
  put<K extends ResourceKind>(r: K, obj: ResourceTypes[K]): void {
    const key = objectKey(obj as Meta);
    let m = this.objects.get(r);
    if (!m) this.objects.set(r, m = new Map());
    const previous = m.get(key) as ResourceTypes[K] | undefined;
    const current = structuredClone(obj);
    m.set(key, current);
    this.bus.publishResource({
      resource: r,
      type: previous ? "MODIFIED" : "ADDED",
      key,
      current,
      ...(previous ? { previous } : {}),
    });
  }

  /** Removes an object and publishes DELETED (with it as previous); false if it was not there. */
  delete<K extends ResourceKind>(r: K, key: string): boolean {
    const m = this.objects.get(r);
    const previous = m?.get(key) as ResourceTypes[K] | undefined;
    if (!m || previous === undefined) return false;
    m.delete(key);
    this.bus.publishResource({ resource: r, type: "DELETED", key, previous });
    return true;
  }

  /** The same as delete (the name some tests use). */
  remove<K extends ResourceKind>(r: K, key: string): boolean {
    return this.delete(r, key);
  }
}

export interface TestContext {
  ctx: ModuleContext;
  source: MemorySource;
  bus: Bus;
  /** Runners the module made, in order. */
  runners: SyncRunner[];
  /** Sync outcomes reported through syncSucceeded/syncFailed. */
  syncs: { ok: number; failed: number; lastError: unknown };
  /** Stops every runner the module made. */
  stop(): Promise<void>;
}

/**
 * A ModuleContext over a MemorySource, as the Agent would build it: runners start once caches are
 * synced, on the given clock (a FakeClock makes syncs happen only when the test advances it).
 */
export function moduleContext(opts: {
  config: Config;
  source?: MemorySource;
  bus?: Bus;
  clock?: Clock;
  log?: Logger;
  periodMs?: number;
}): TestContext {
  const bus = opts.bus ?? opts.source?.bus ?? new Bus();
  const source = opts.source ?? new MemorySource(bus);
  const clock = opts.clock ?? systemClock;
  const log = opts.log ?? getLogger({}, new MemorySink());
  const runners: SyncRunner[] = [];
  const syncs = { ok: 0, failed: 0, lastError: undefined as unknown };
  const cachesSynced = source.whenSynced();
  const ctx: ModuleContext = {
    config: opts.config,
    bus,
    log,
    metrics: new Metrics(),
    clock,
    cachesSynced,
    store: source,
    syncSucceeded: () => void syncs.ok++,
    syncFailed: (err) => {
      syncs.failed++;
      syncs.lastError = err;
    },
    runner: (o) => {
      const runner = new SyncRunner({
        name: "test",
        minIntervalMs: 1000,
        periodMs: opts.periodMs ?? 60_000,
        clock,
        ...o,
        onSuccess: () => void syncs.ok++,
        onFailure: (err) => {
          syncs.failed++;
          syncs.lastError = err;
        },
      });
      runners.push(runner);
      void cachesSynced.then(() => runner.start());
      return runner;
    },
  };
  return {
    ctx,
    source,
    bus,
    runners,
    syncs,
    stop: async () => {
      await Promise.all(runners.map((r) => r.stop()));
    },
  };
}
