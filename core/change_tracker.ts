/**
 * Records what changed since the last sync, per object key, as a {previous, current} pair (kube-proxy's
 * change trackers). A later event for the same key keeps the first `previous` and the newest `current`;
 * when they end up equal (added then deleted, or changed back), the entry is dropped. Handlers call
 * `record()` only; the module's sync calls `drain()`.
 */
import type { ResourceEvent, ResourceKind, ResourceTypes } from "./bus.ts";

export interface Change<T> {
  previous: T | undefined;
  current: T | undefined;
}

export class ChangeTracker<K extends ResourceKind> {
  #changes = new Map<string, Change<ResourceTypes[K]>>();

  /** Returns true if the tracker now holds a pending change (the caller should ask for a sync). */
  record(ev: ResourceEvent<K>): boolean {
    const existing = this.#changes.get(ev.key);
    const previous = existing ? existing.previous : ev.previous;
    const current = ev.type === "DELETED" ? undefined : ev.current;
    if (sameObject(previous, current)) {
      this.#changes.delete(ev.key);
      return existing !== undefined;
    }
    this.#changes.set(ev.key, { previous, current });
    return true;
  }

  get size(): number {
    return this.#changes.size;
  }

  /** Hands over the pending changes and starts afresh. */
  drain(): Map<string, Change<ResourceTypes[K]>> {
    const out = this.#changes;
    this.#changes = new Map();
    return out;
  }
}

/** Equality that ignores bookkeeping (resourceVersion, managedFields) so no-op updates cost no sync. */
function sameObject(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a === undefined || b === undefined) return false;
  return stableJson(a) === stableJson(b);
}

const IGNORED = new Set(["resourceVersion", "managedFields", "generation"]);

function stableJson(v: unknown): string {
  return JSON.stringify(v, function (key, value) {
    if (IGNORED.has(key) && this && typeof this === "object" && "name" in this) return undefined;
    return value;
  });
}
