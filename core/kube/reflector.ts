/**
 * One resource's list/watch loop and cache (client-go's Reflector + Indexer in one): LIST (paged) to
 * fill the cache and learn a resourceVersion, then WATCH from it; after a dropped connection, WATCH
 * again from the last resourceVersion seen (events, bookmarks), and only on 410 Gone LIST again and
 * diff the new list against the cache. Each change is published once, with `previous` and `current`;
 * the cache holds the only copy of each object. Failures back off exponentially up to a cap; a watch
 * that connects resets the backoff.
 */
import type { Bus, ChangeType, ResourceKind, ResourceTypes } from "../bus.ts";
import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { Counter, Gauge } from "../metrics.ts";
import {
  isAbort,
  isGone,
  isTooLargeResourceVersion,
  KubeApiError,
  type RawWatchEvent,
  type Transport,
} from "./transport.ts";

/** URL path of each resource's collection. */
export const RESOURCE_PATHS: Record<ResourceKind, string> = {
  nodes: "/api/v1/nodes",
  services: "/api/v1/services",
  endpointslices: "/apis/discovery.k8s.io/v1/endpointslices",
  pods: "/api/v1/pods",
  namespaces: "/api/v1/namespaces",
  networkpolicies: "/apis/networking.k8s.io/v1/networkpolicies",
};

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
}

export interface ReflectorOptions<K extends ResourceKind> {
  resource: K;
  transport: Transport;
  bus: Bus;
  log: Logger;
  clock: Clock;
  backoff: BackoffOptions;
  events: Counter;
  objects: Gauge;
  /** LIST page size (client-go: 500). */
  pageSize: number;
  /** Server-side watch timeout; client-go picks 5-10 minutes at random so watches do not all restart together. */
  watchTimeoutSeconds: () => number;
  onSynced: () => void;
}

/** A resource whose LIST/WATCH keeps failing (cleared by the next successful list or watch). */
export interface ReflectorFailure {
  /** HTTP status of the last failure (0: no answer, e.g. connection refused). */
  code: number;
  error: string;
  /** When the failures began (clock ms). */
  since: number;
}

export interface ReflectorStats {
  lists: number;
  watches: number;
  /** LISTs after the first one (after 410 Gone). */
  relists: number;
  /** Where the next watch resumes (the last event's or bookmark's resourceVersion). */
  resourceVersion: string | undefined;
}

type Obj = { metadata?: { name?: string; namespace?: string; resourceVersion?: string; uid?: string } };

function keyOf(o: Obj): string {
  const ns = o.metadata?.namespace;
  const name = o.metadata?.name ?? "";
  return ns ? `${ns}/${name}` : name;
}

export class Reflector<K extends ResourceKind> {
  readonly cache = new Map<string, ResourceTypes[K]>();
  #rv: string | undefined;
  #synced = false;
  #failures = 0;
  #stats = { lists: 0, watches: 0, relists: 0 };
  #failing: ReflectorFailure | undefined;

  constructor(readonly o: ReflectorOptions<K>) {}

  get synced(): boolean {
    return this.#synced;
  }

  /** The resourceVersion the next watch starts from (undefined: the next step is a LIST). */
  get resourceVersion(): string | undefined {
    return this.#rv;
  }

  /** Set while list/watch fails: what the server said, and since when (for /healthz). */
  get failing(): ReflectorFailure | undefined {
    return this.#failing;
  }

  get stats(): ReflectorStats {
    return { ...this.#stats, resourceVersion: this.#rv };
  }

  /** Runs until `signal` aborts; never throws. */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      try {
        if (this.#rv === undefined) await this.#list(signal);
        // Stopped while the list was being processed: do not open a watch nobody will close.
        if (signal.aborted) break;
        await this.#watch(signal);
      } catch (err) {
        if (signal.aborted || isAbort(err)) break;
        if (isGone(err) || isTooLargeResourceVersion(err)) {
          this.o.log.info("resourceVersion too old, listing again", {
            resource: this.o.resource,
            resourceVersion: this.#rv,
            err,
          });
          this.#rv = undefined;
          // A Gone right after a fresh list would loop: back off from the second one on.
          if (this.#failures++ === 0) continue;
        } else {
          this.#failures++;
          this.#failing = {
            code: err instanceof KubeApiError ? err.code : 0,
            error: err instanceof Error ? err.message : String(err),
            since: this.#failing?.since ?? this.o.clock.now(),
          };
          this.o.log.warn("list/watch failed, retrying", {
            resource: this.o.resource,
            attempt: this.#failures,
            ...(this.#failing.code ? { status: this.#failing.code } : {}),
            err,
          });
        }
        await this.#sleep(this.#backoffMs(), signal);
      }
    }
  }

  #backoffMs(): number {
    const { initialMs, maxMs } = this.o.backoff;
    const base = Math.min(maxMs, initialMs * 2 ** Math.min(30, Math.max(0, this.#failures - 1)));
    // Up to 20 % jitter so that agents of a whole cluster do not reconnect in lockstep.
    return Math.round(base * (0.8 + 0.2 * Math.random()));
  }

  #sleep(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const id = this.o.clock.setTimeout(() => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      }, ms);
      const onAbort = () => {
        this.o.clock.clearTimeout(id);
        resolve();
      };
      signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  async #list(signal: AbortSignal): Promise<void> {
    const first = !this.#synced;
    this.#stats.lists++;
    if (!first) this.#stats.relists++;
    const seen = new Set<string>();
    let cont: string | undefined;
    let rv = "";
    do {
      const query: Record<string, string> = { limit: String(this.o.pageSize) };
      if (cont) query.continue = cont;
      const page = await this.o.transport.list(RESOURCE_PATHS[this.o.resource], query, signal);
      if (!cont) rv = page.resourceVersion;
      for (const item of page.items as ResourceTypes[K][]) {
        const key = keyOf(item as Obj);
        seen.add(key);
        this.#apply(undefined, key, item);
      }
      cont = page.continue;
    } while (cont);
    // Whatever the cache holds that the new list lacks was deleted while we were not watching (or,
    // on the first list, during an earlier attempt that failed half-way).
    for (const [key, old] of this.cache) {
      if (!seen.has(key)) this.#apply("DELETED", key, old);
    }
    this.#rv = rv;
    this.#failing = undefined;
    if (first) {
      this.#synced = true;
      this.o.log.info("informer synced", { resource: this.o.resource, objects: this.cache.size });
      this.o.onSynced();
    }
  }

  async #watch(signal: AbortSignal): Promise<void> {
    this.#stats.watches++;
    await this.o.transport.watch(
      RESOURCE_PATHS[this.o.resource],
      {
        resourceVersion: this.#rv ?? "",
        allowWatchBookmarks: "true",
        timeoutSeconds: String(this.o.watchTimeoutSeconds()),
      },
      signal,
      () => {
        this.#failures = 0;
        this.#failing = undefined;
      },
      (e) => this.#onEvent(e),
    );
  }

  #onEvent(e: RawWatchEvent): void {
    const obj = e.object as Obj | undefined;
    const rv = obj?.metadata?.resourceVersion;
    switch (e.type) {
      case "BOOKMARK":
        if (rv) this.#rv = rv;
        return;
      case "ADDED":
      case "MODIFIED":
      case "DELETED":
        if (!obj) return;
        this.#apply(e.type, keyOf(obj), obj as ResourceTypes[K]);
        if (rv) this.#rv = rv;
        return;
      default:
        this.o.log.warn("unknown watch event type", { resource: this.o.resource, type: e.type });
    }
  }

  /**
   * Puts one observed state into the cache and publishes the change it makes. `hint` undefined means
   * "as listed": ADDED if new, MODIFIED if its resourceVersion differs, nothing if the same. The same
   * dedup applies to watch events, so a replay after a reconnect never publishes a change twice.
   */
  #apply(hint: ChangeType | undefined, key: string, obj: ResourceTypes[K]): void {
    const old = this.cache.get(key);
    let type: ChangeType;
    if (hint === "DELETED") {
      if (!old) return;
      this.cache.delete(key);
      type = "DELETED";
    } else {
      // Same object (uid) at the same resourceVersion: already published. The uid matters when the
      // server's storage was replaced and versions repeat.
      const o = (old as Obj | undefined)?.metadata;
      const n = (obj as Obj).metadata;
      if (o && o.resourceVersion === n?.resourceVersion && o.uid === n?.uid) return;
      // managedFields (server-side apply bookkeeping) are often a third of an object and no module
      // reads them: not kept, as client-go users commonly do with an informer transform.
      const meta = (obj as { metadata?: { managedFields?: unknown } }).metadata;
      if (meta && "managedFields" in meta) delete meta.managedFields;
      this.cache.set(key, obj);
      type = old ? "MODIFIED" : "ADDED";
    }
    this.o.events.inc({ resource: this.o.resource, type });
    this.o.objects.set({ resource: this.o.resource }, this.cache.size);
    this.o.bus.publishResource({
      resource: this.o.resource,
      type,
      key,
      ...(old ? { previous: old } : {}),
      ...(type !== "DELETED" ? { current: obj } : {}),
    });
  }
}
