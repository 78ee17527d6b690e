/**
 * A minimal module for the agent's own tests: it subscribes to its resources, records changes in change
 * trackers and syncs through its runner, calling `program` with what changed. (It was the proxy's and
 * firewall's placeholder before they had data planes.)
 */
import {
  ChangeTracker,
  type ModuleContext,
  type ModuleInstance,
  type ResourceKind,
  type SyncReason,
} from "../../core/mod.ts";

export interface TrackedSync {
  reason: SyncReason;
  /** Number of changed objects per resource since the last sync. */
  changed: Partial<Record<ResourceKind, number>>;
}

export function trackingModule(
  ctx: ModuleContext,
  resources: readonly ResourceKind[],
  program: (sync: TrackedSync) => Promise<void>,
): ModuleInstance {
  const trackers = new Map(resources.map((r) => [r, new ChangeTracker()] as const));
  const unsubscribe: (() => void)[] = [];
  const runner = ctx.runner({
    sync: async (reason) => {
      const changed: TrackedSync["changed"] = {};
      for (const [r, t] of trackers) {
        const n = t.drain().size;
        if (n) changed[r] = n;
      }
      await program({ reason, changed });
    },
  });
  return {
    start() {
      for (const r of resources) {
        unsubscribe.push(ctx.bus.onResource(r, (ev) => {
          if (trackers.get(r)!.record(ev)) runner.run();
        }));
      }
      return Promise.resolve();
    },
    async stop() {
      for (const u of unsubscribe.splice(0)) u();
      await runner.stop();
    },
  };
}
