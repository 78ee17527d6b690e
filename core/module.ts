/**
 * The plugin contract. A module (router, proxy, firewall) declares which Kubernetes resources it needs
 * and how often it must sync; the agent starts only enabled modules and only the informers they need.
 * Modules never import each other: they talk over the bus.
 */
import type { Bus, ResourceKind, ResourceTypes } from "./bus.ts";
import type { Clock } from "./clock.ts";
import type { Config } from "./config.ts";
import type { Logger } from "./log.ts";
import type { Metrics } from "./metrics.ts";
import type { SyncRunner, SyncRunnerOptions } from "./runner.ts";

export type ModuleName = "router" | "proxy" | "firewall";

/** What a running module tells /healthz. */
export interface ModuleHealth {
  /** Epoch ms of the last successful sync, or undefined before the first. */
  lastSync: number | undefined;
  /** The last sync error since the last success, if any. */
  lastError: string | undefined;
}

/** Everything a module gets from the runtime; the only way it reaches the outside world. */
export interface ModuleContext {
  config: Config;
  bus: Bus;
  log: Logger;
  metrics: Metrics;
  clock: Clock;
  /** Resolves once every resource this module declared has delivered its first list (or the
   * --cache-sync-timeout passed, which is logged). Modules must not sync before it resolves. */
  cachesSynced: Promise<void>;
  /** Read access to the watch layer's cache (one copy of every object, shared by all modules). */
  store: ResourceStore;
  /**
   * The module's sync runner, wired to /healthz, the sync-duration histogram, the error counter and the
   * module's period (its periodic full resync). The runner starts once caches are synced.
   */
  runner(
    opts:
      & Pick<SyncRunnerOptions, "sync">
      & Partial<Pick<SyncRunnerOptions, "minIntervalMs" | "retryMs" | "maxRetryMs">>,
  ): SyncRunner;
  /** Records a successful sync (a heartbeat for /healthz) and its duration in the histogram. */
  syncSucceeded(durationSeconds: number): void;
  /** Records a failed sync; /healthz stays 200 until the module is late. */
  syncFailed(err: unknown, durationSeconds: number): void;
}

/** Read-only view of the informer caches. */
export interface ResourceStore {
  list<K extends ResourceKind>(resource: K): ResourceTypes[K][];
  get<K extends ResourceKind>(resource: K, key: string): ResourceTypes[K] | undefined;
}

export interface ModuleInstance {
  /** Begins work; returns once the module is running (its first sync may still be pending). */
  start(): Promise<void>;
  /** Stops timers and sockets; leaves kernel state in place so traffic flows across a restart. */
  stop(): Promise<void>;
}

export interface ModuleDefinition {
  name: ModuleName;
  /** Resources whose informers must run while this module is enabled. */
  resources(config: Config): readonly ResourceKind[];
  /** Longest time between two successful syncs before /healthz reports this module late. */
  syncPeriodMs(config: Config): number;
  create(ctx: ModuleContext): ModuleInstance;
  /**
   * Checks before anything starts (informers, HTTP, other modules) that this node can run the module as
   * configured, e.g. that the kernel has what a flag asks for. Returns the problem in words naming the flag;
   * main.ts then stops with exit code 2, as for a bad flag, instead of failing later inside create().
   */
  preflight?(config: Config): string | undefined;
  /** Removes every kernel object this module ever creates (--cleanup-config). Must be idempotent. */
  cleanup(config: Config, log: Logger): Promise<void>;
}
