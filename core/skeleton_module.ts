/**
 * The common shape of a module before its data plane exists: it subscribes to its resources, records
 * changes in change trackers, and syncs through its runner. `program` is where the module's kernel work
 * goes; until a module's own issue lands it only reports what it would act on.
 */
import type { ResourceKind } from "./bus.ts";
import { ChangeTracker } from "./change_tracker.ts";
import type { ModuleContext, ModuleInstance } from "./module.ts";
import type { SyncReason } from "./runner.ts";

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
