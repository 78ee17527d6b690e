/**
 * The agent: starts the enabled modules and only the informers they need, gates each module's first
 * sync on its caches, wires health and metrics, and stops cleanly. It knows modules only through
 * `ModuleDefinition`; the Kubernetes side only through `ResourceSource`, so both can be faked in tests.
 */
import { Bus, type ResourceKind, type ResourceTypes } from "./bus.ts";
import { type Clock, systemClock } from "./clock.ts";
import { type Config, VERSION } from "./config.ts";
import { Health } from "./health.ts";
import type { Logger } from "./log.ts";
import { Metrics } from "./metrics.ts";
import type { ModuleContext, ModuleDefinition, ModuleInstance, ModuleName, ResourceStore } from "./module.ts";
import { SyncRunner } from "./runner.ts";

/** Where Kubernetes objects come from: the watch layer in production, a fake in unit tests. */
export interface ResourceSource extends ResourceStore {
  start(resources: readonly ResourceKind[]): void;
  /** Resources whose list/watch fails now (HTTP status, message, since when); for /healthz. */
  failing?(): Array<{ resource: ResourceKind; code: number; error: string; since: number }>;
  /** Resolves true once all listed resources delivered their first list, false on timeout. */
  waitForSync(resources: readonly ResourceKind[], timeoutMs: number): Promise<boolean>;
  stop(): Promise<void>;
}

/** How long list/watch may fail (other than 401/403) before /healthz reports it. */
export const WATCH_FAILURE_GRACE_MS = 60_000;

/** Whether the command line enables a module (--run-router, --run-service-proxy, --run-firewall). */
export function isEnabled(name: ModuleName, config: Config): boolean {
  switch (name) {
    case "router":
      return config.runRouter;
    case "proxy":
      return config.runServiceProxy;
    case "firewall":
      return config.runFirewall;
  }
}

export function enabledModules(config: Config, modules: readonly ModuleDefinition[]): ModuleDefinition[] {
  return modules.filter((m) => isEnabled(m.name, config));
}

/** The union of resources the enabled modules need; the watch layer starts informers for these only. */
export function neededResources(config: Config, modules: readonly ModuleDefinition[]): ResourceKind[] {
  const set = new Set<ResourceKind>();
  for (const m of enabledModules(config, modules)) for (const r of m.resources(config)) set.add(r);
  return [...set];
}

export interface AgentOptions {
  config: Config;
  modules: readonly ModuleDefinition[];
  source: ResourceSource;
  log: Logger;
  bus?: Bus;
  metrics?: Metrics;
  health?: Health;
  clock?: Clock;
}

interface Running {
  def: ModuleDefinition;
  instance: ModuleInstance;
  runners: SyncRunner[];
}

export class Agent {
  readonly bus: Bus;
  readonly metrics: Metrics;
  readonly health: Health;
  readonly #o: AgentOptions;
  readonly #clock: Clock;
  #running: Running[] = [];
  #synced = new Set<ResourceKind>();
  #stopping: Promise<void> | undefined;

  constructor(o: AgentOptions) {
    this.#o = o;
    this.bus = o.bus ?? new Bus(o.log.with({ component: "bus" }));
    this.metrics = o.metrics ?? new Metrics();
    this.#clock = o.clock ?? systemClock;
    this.health = o.health ?? new Health(this.#clock);
    this.bus.on("synced", ({ resource }) => this.#synced.add(resource));
    this.metrics.gauge("kube_router_build_info", "Build information of the running agent.")
      .set({
        version: VERSION,
        deno_version: Deno.version.deno,
        goversion: "",
        module_set: this.enabled().map((m) => m.name).join(","),
      }, 1);
  }

  /** The modules the command line enables, in definition order. */
  enabled(): ModuleDefinition[] {
    return enabledModules(this.#o.config, this.#o.modules);
  }

  /** The union of resources the enabled modules need. */
  resources(): ResourceKind[] {
    return neededResources(this.#o.config, this.#o.modules);
  }

  async start(): Promise<void> {
    const { config, source, log } = this.#o;
    const syncDuration = this.metrics.histogram(
      "kube_router_sync_duration_seconds",
      "Time a module's sync took, by module.",
    );
    const syncErrors = this.metrics.counter("kube_router_sync_errors_total", "Failed syncs, by module.");
    const syncs = this.metrics.counter("kube_router_syncs_total", "Completed syncs, by module and result.");

    for (const def of this.enabled()) {
      const resources = def.resources(config);
      const periodMs = def.syncPeriodMs(config);
      const mlog = log.with({ module: def.name });
      this.health.register(def.name, periodMs, config.cacheSyncTimeout);
      const cachesSynced = resources.length === 0
        ? Promise.resolve()
        : source.waitForSync(resources, config.cacheSyncTimeout).then((ok) => {
          if (!ok) {
            mlog.warn("caches not synced within --cache-sync-timeout; starting anyway", {
              resources: resources.filter((r) => !this.#isSynced(r)).join(","),
              timeout_ms: config.cacheSyncTimeout,
            });
          }
        });
      const running: Running = { def, instance: undefined as unknown as ModuleInstance, runners: [] };
      const syncSucceeded = (seconds: number) => {
        this.health.heartbeat(def.name);
        syncDuration.observe({ module: def.name }, seconds);
        syncs.inc({ module: def.name, result: "success" });
      };
      const syncFailed = (err: unknown, seconds: number) => {
        this.health.failure(def.name, err);
        syncDuration.observe({ module: def.name }, seconds);
        syncErrors.inc({ module: def.name });
        syncs.inc({ module: def.name, result: "error" });
      };
      const ctx: ModuleContext = {
        config,
        bus: this.bus,
        log: mlog,
        metrics: this.metrics,
        clock: this.#clock,
        cachesSynced,
        store: source,
        syncSucceeded,
        syncFailed,
        runner: (opts) => {
          const runner = new SyncRunner({
            name: def.name,
            minIntervalMs: 1000,
            periodMs,
            clock: this.#clock,
            ...opts,
            onSuccess: (ms, reason) => {
              syncSucceeded(ms / 1000);
              mlog.debug("sync done", { reason, duration_ms: Math.round(ms) });
            },
            onFailure: (err, ms, reason, retry) => {
              syncFailed(err, ms / 1000);
              mlog.error("sync failed; keeping last good state", { reason, err, retry_in_ms: retry });
            },
          });
          running.runners.push(runner);
          void cachesSynced.then(() => runner.start());
          return runner;
        },
      };
      running.instance = def.create(ctx);
      this.#running.push(running);
    }
    // The API server refusing the agent (401/403: RBAC, a revoked token) will not heal by retrying: report
    // it at once; other list/watch failures once they outlast AUTH_GRACE (an API server restart is normal).
    this.health.check("kube-api", () => {
      const failing = source.failing?.() ?? [];
      const now = this.#clock.now();
      const bad = failing.filter((f) =>
        f.code === 401 || f.code === 403 || now - f.since > WATCH_FAILURE_GRACE_MS
      );
      if (bad.length === 0) return undefined;
      return bad.map((f) =>
        `list/watch ${f.resource} failing for ${Math.round((now - f.since) / 1000)}s: ${
          f.code ? `HTTP ${f.code}: ` : ""
        }${f.error.slice(0, 200)}`
      ).join("; ");
    });
    // Subscriptions are in place before the first event can arrive.
    source.start(this.resources());
    for (const r of this.#running) {
      await r.instance.start();
      log.info("module started", { module: r.def.name });
    }
  }

  #isSynced(r: ResourceKind): boolean {
    return this.#synced.has(r);
  }

  /**
   * Stops modules (in reverse order) and informers. Kernel state is left in place so traffic keeps
   * flowing while the agent restarts. Idempotent.
   */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      for (const r of [...this.#running].reverse()) {
        try {
          await Promise.all(r.runners.map((x) => x.stop()));
          await r.instance.stop();
        } catch (err) {
          this.#o.log.error("module stop failed", { module: r.def.name, err });
        }
      }
      await this.#o.source.stop();
    })();
    return this.#stopping;
  }
}

/** --cleanup-config: every module's cleanup, enabled or not (a user may have turned one off since). */
export async function cleanupAll(
  config: Config,
  modules: readonly ModuleDefinition[],
  log: Logger,
): Promise<boolean> {
  let ok = true;
  for (const m of modules) {
    try {
      await m.cleanup(config, log.with({ module: m.name }));
      log.info("cleanup done", { module: m.name });
    } catch (err) {
      ok = false;
      log.error("cleanup failed", { module: m.name, err });
    }
  }
  return ok;
}

/** A ResourceSource with nothing in it, for modes that need no API server. */
export class EmptySource implements ResourceSource {
  start(): void {}
  waitForSync(): Promise<boolean> {
    return Promise.resolve(true);
  }
  stop(): Promise<void> {
    return Promise.resolve();
  }
  list<K extends ResourceKind>(_r: K): ResourceTypes[K][] {
    return [];
  }
  get<K extends ResourceKind>(_r: K, _key: string): ResourceTypes[K] | undefined {
    return undefined;
  }
}
