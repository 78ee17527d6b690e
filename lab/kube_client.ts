/**
 * A small Kubernetes REST client for the lab's own controllers and kubelet: JSON over `fetch`, a CA
 * pinned with `Deno.createHttpClient`, list+watch informers. The lab does not use
 * `@kubernetes/client-node` here because it costs ~85 MB of RSS per process and the lab needs only a
 * handful of calls; the agent under test does use it, so both clients meet the same API server.
 */

/** The minimum of an object's metadata the lab reads. */
export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generateName?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  deletionTimestamp?: string;
  creationTimestamp?: string;
  ownerReferences?: Array<Record<string, unknown>>;
  [k: string]: unknown;
}

export interface KObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
  // deno-lint-ignore no-explicit-any
  spec?: any;
  // deno-lint-ignore no-explicit-any
  status?: any;
  [k: string]: unknown;
}

export interface KList<T extends KObject = KObject> {
  metadata: { resourceVersion?: string };
  items: T[];
}

export type WatchType = "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
export interface WatchEvent<T extends KObject = KObject> {
  type: WatchType;
  object: T;
}

/** The API server answered with an error status. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly method: string,
    readonly path: string,
    readonly body: string,
  ) {
    super(`${method} ${path}: HTTP ${status}: ${body.slice(0, 300)}`);
    this.name = "ApiError";
  }
}

export function isNotFound(e: unknown): boolean {
  return e instanceof ApiError && e.status === 404;
}
export function isConflict(e: unknown): boolean {
  return e instanceof ApiError && e.status === 409;
}
export function isGone(e: unknown): boolean {
  return e instanceof ApiError && e.status === 410;
}

export interface KubeClientOptions {
  /** e.g. https://192.168.1.99:6443 */
  server: string;
  /** PEM of the CA that signed the server certificate. */
  caCert?: string;
  token?: string;
}

/** `namespace/name`, or `name` for cluster-scoped objects. */
export function keyOf(o: { metadata: { name: string; namespace?: string } }): string {
  return o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name;
}

export class KubeClient {
  readonly #server: string;
  readonly #client: Deno.HttpClient | undefined;
  readonly #headers: Record<string, string>;

  constructor(opts: KubeClientOptions) {
    this.#server = opts.server.replace(/\/$/, "");
    this.#client = opts.caCert ? Deno.createHttpClient({ caCerts: [opts.caCert] }) : undefined;
    this.#headers = opts.token ? { authorization: `Bearer ${opts.token}` } : {};
  }

  close(): void {
    this.#client?.close();
  }

  async #fetch(
    method: string,
    path: string,
    body?: unknown,
    contentType = "application/json",
    signal?: AbortSignal,
  ) {
    const init: RequestInit & { client?: Deno.HttpClient } = {
      method,
      headers: {
        ...this.#headers,
        accept: "application/json",
        ...(body !== undefined ? { "content-type": contentType } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      ...(signal ? { signal } : {}),
    };
    if (this.#client) init.client = this.#client;
    return await fetch(this.#server + path, init);
  }

  /** One request; returns the decoded JSON body, throws ApiError on a non-2xx status. */
  async request<T = unknown>(method: string, path: string, body?: unknown, contentType?: string): Promise<T> {
    let res: Response;
    try {
      res = await this.#fetch(method, path, body, contentType);
    } catch (e) {
      // A pooled connection the server closed (it restarted) fails before any answer: try once more on a
      // fresh one. Anything else (refused, timeout) surfaces.
      if (!(e instanceof TypeError)) throw e;
      res = await this.#fetch(method, path, body, contentType);
    }
    const text = await res.text();
    if (!res.ok) throw new ApiError(res.status, method, path, text);
    return (text ? JSON.parse(text) : undefined) as T;
  }

  get<T extends KObject>(path: string): Promise<T> {
    return this.request<T>("GET", path);
  }
  list<T extends KObject>(path: string): Promise<KList<T>> {
    return this.request<KList<T>>("GET", path);
  }
  create<T extends KObject>(path: string, obj: T): Promise<T> {
    return this.request<T>("POST", path, obj);
  }
  replace<T extends KObject>(path: string, obj: T): Promise<T> {
    return this.request<T>("PUT", path, obj);
  }
  /** JSON merge patch (RFC 7386). */
  mergePatch<T extends KObject>(path: string, patch: unknown): Promise<T> {
    return this.request<T>("PATCH", path, patch, "application/merge-patch+json");
  }
  delete(path: string, body?: unknown): Promise<unknown> {
    return this.request("DELETE", path, body);
  }

  /**
   * Streams watch events of `path` from `resourceVersion` until the server ends the stream or `signal`
   * aborts. Resolves normally when the stream ends; throws ApiError (e.g. 410 Gone) on a bad status.
   */
  async watch<T extends KObject>(
    path: string,
    resourceVersion: string | undefined,
    onEvent: (e: WatchEvent<T>) => void,
    signal: AbortSignal,
  ): Promise<void> {
    const sep = path.includes("?") ? "&" : "?";
    const rv = resourceVersion ? `&resourceVersion=${encodeURIComponent(resourceVersion)}` : "";
    const full = `${path}${sep}watch=true&allowWatchBookmarks=true${rv}`;
    const res = await this.#fetch("GET", full, undefined, undefined, signal);
    if (!res.ok || !res.body) throw new ApiError(res.status, "WATCH", path, await res.text());
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          const ev = JSON.parse(line) as WatchEvent<T>;
          if (ev.type === "ERROR") {
            // deno-lint-ignore no-explicit-any
            const st = ev.object as any;
            throw new ApiError(Number(st?.code ?? 500), "WATCH", path, JSON.stringify(st));
          }
          onEvent(ev);
        }
      }
    } finally {
      reader.releaseLock();
      await res.body.cancel().catch(() => {});
    }
  }
}

export type InformerHandler<T extends KObject> = (
  type: "ADDED" | "MODIFIED" | "DELETED",
  obj: T,
  old: T | undefined,
) => void;

/**
 * List+watch of one collection with a local cache, re-listing after 410 Gone and reconnecting with
 * backoff after any other failure. The handler is called for every change after the initial list too
 * (the initial list is delivered as ADDED).
 */
export class Informer<T extends KObject> {
  readonly #cache = new Map<string, T>();
  readonly #handlers: InformerHandler<T>[] = [];
  readonly #ctl = new AbortController();
  #synced = false;
  #rv: string | undefined;

  constructor(
    private readonly client: KubeClient,
    private readonly path: string,
    private readonly onError: (e: unknown) => void = () => {},
  ) {}

  /** Adds a handler; register before start() to see the initial list. */
  on(h: InformerHandler<T>): this {
    this.#handlers.push(h);
    return this;
  }

  private handler(type: "ADDED" | "MODIFIED" | "DELETED", obj: T, old: T | undefined): void {
    for (const h of this.#handlers) h(type, obj, old);
  }

  get synced(): boolean {
    return this.#synced;
  }

  list(): T[] {
    return [...this.#cache.values()];
  }

  get(key: string): T | undefined {
    return this.#cache.get(key);
  }

  /** Resolves after the first list has been delivered; keeps watching in the background. */
  async start(): Promise<void> {
    await this.#relist();
    this.#synced = true;
    this.#loop();
  }

  stop(): void {
    this.#ctl.abort();
  }

  async #relist(): Promise<void> {
    const l = await this.client.list<T>(this.path);
    const seen = new Set<string>();
    for (const o of l.items) {
      const k = keyOf(o);
      seen.add(k);
      const old = this.#cache.get(k);
      this.#cache.set(k, o);
      if (!old) this.handler("ADDED", o, undefined);
      else if (old.metadata.resourceVersion !== o.metadata.resourceVersion) this.handler("MODIFIED", o, old);
    }
    for (const [k, o] of [...this.#cache]) {
      if (!seen.has(k)) {
        this.#cache.delete(k);
        this.handler("DELETED", o, o);
      }
    }
    this.#rv = l.metadata.resourceVersion;
  }

  async #loop(): Promise<void> {
    let backoff = 100;
    while (!this.#ctl.signal.aborted) {
      try {
        await this.client.watch<T>(this.path, this.#rv, (ev) => this.#apply(ev), this.#ctl.signal);
        backoff = 100;
      } catch (e) {
        if (this.#ctl.signal.aborted) return;
        this.onError(e);
        await new Promise((r) => setTimeout(r, backoff));
        backoff = Math.min(backoff * 2, 5000);
        try {
          await this.#relist();
        } catch (e2) {
          this.onError(e2);
        }
        continue;
      }
    }
  }

  #apply(ev: WatchEvent<T>): void {
    if (ev.object?.metadata?.resourceVersion) this.#rv = ev.object.metadata.resourceVersion;
    if (ev.type === "BOOKMARK") return;
    const k = keyOf(ev.object);
    const old = this.#cache.get(k);
    if (ev.type === "DELETED") {
      this.#cache.delete(k);
      this.handler("DELETED", ev.object, old);
      return;
    }
    this.#cache.set(k, ev.object);
    this.handler(old ? "MODIFIED" : "ADDED", ev.object, old);
  }
}
