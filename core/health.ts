/**
 * Per-module heartbeats behind /healthz. A module is healthy while its last successful sync is no
 * older than its sync period plus a grace (kube-router: period + 5 s). Before its first sync, a module
 * gets the same allowance counted from when it was registered, plus the cache-sync timeout: startup is
 * not a failure, a module that never syncs is.
 */
import { type Clock, systemClock } from "./clock.ts";

export const HEALTH_GRACE_MS = 5_000;

interface Entry {
  periodMs: number;
  registeredAt: number;
  startupAllowanceMs: number;
  lastSync: number | undefined;
  lastError: string | undefined;
  failuresSinceSuccess: number;
}

export interface ModuleReport {
  healthy: boolean;
  lastSync: string | null;
  lastError: string | null;
  consecutiveFailures: number;
  /** Why the module is unhealthy, in words. */
  reason?: string;
}

export interface HealthReport {
  healthy: boolean;
  modules: Record<string, ModuleReport>;
}

export class Health {
  #entries = new Map<string, Entry>();
  #checks = new Map<string, () => string | undefined>();
  constructor(private readonly clock: Clock = systemClock) {}

  register(name: string, periodMs: number, startupAllowanceMs = 0): void {
    this.#entries.set(name, {
      periodMs,
      registeredAt: this.clock.now(),
      startupAllowanceMs,
      lastSync: undefined,
      lastError: undefined,
      failuresSinceSuccess: 0,
    });
  }

  unregister(name: string): void {
    this.#entries.delete(name);
    this.#checks.delete(name);
  }

  /**
   * A condition outside the modules' syncs (e.g. the API server refusing the agent's watches): `fn` returns
   * why the agent is unhealthy, or undefined. Reported under `name` only while it fails.
   */
  check(name: string, fn: () => string | undefined): void {
    this.#checks.set(name, fn);
  }

  heartbeat(name: string): void {
    const e = this.#entries.get(name);
    if (!e) return;
    e.lastSync = this.clock.now();
    e.lastError = undefined;
    e.failuresSinceSuccess = 0;
  }

  failure(name: string, err: unknown): void {
    const e = this.#entries.get(name);
    if (!e) return;
    e.lastError = err instanceof Error ? err.message : String(err);
    e.failuresSinceSuccess++;
  }

  lastSync(name: string): number | undefined {
    return this.#entries.get(name)?.lastSync;
  }

  report(): HealthReport {
    const now = this.clock.now();
    const modules: Record<string, ModuleReport> = {};
    let healthy = true;
    for (const [name, e] of this.#entries) {
      const deadline = e.lastSync !== undefined
        ? e.lastSync + e.periodMs + HEALTH_GRACE_MS
        : e.registeredAt + e.startupAllowanceMs + e.periodMs + HEALTH_GRACE_MS;
      const ok = now <= deadline;
      const r: ModuleReport = {
        healthy: ok,
        lastSync: e.lastSync !== undefined ? new Date(e.lastSync).toISOString() : null,
        lastError: e.lastError ?? null,
        consecutiveFailures: e.failuresSinceSuccess,
      };
      if (!ok) {
        const late = Math.round((now - deadline) / 1000);
        r.reason = e.lastSync === undefined
          ? `no successful sync since start (${late}s past the allowed ${
            Math.round((e.startupAllowanceMs + e.periodMs + HEALTH_GRACE_MS) / 1000)
          }s)`
          : `last successful sync ${Math.round((now - e.lastSync) / 1000)}s ago, period is ${
            Math.round(e.periodMs / 1000)
          }s + ${HEALTH_GRACE_MS / 1000}s grace`;
        if (e.lastError) r.reason += `; last error: ${e.lastError}`;
        healthy = false;
      }
      modules[name] = r;
    }
    for (const [name, fn] of this.#checks) {
      const reason = fn();
      if (reason === undefined) continue;
      healthy = false;
      modules[name] = { healthy: false, lastSync: null, lastError: reason, consecutiveFailures: 0, reason };
    }
    return { healthy, modules };
  }
}
