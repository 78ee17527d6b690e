/**
 * The two HTTP calls a reflector makes, LIST (paged) and WATCH (a stream of JSON lines), over
 * `node:http(s)` with the TLS material and credentials client-node's `KubeConfig` resolves (CA, client
 * certificate, bearer token or token file, exec plugins, insecure-skip-tls-verify). Equivalent to
 * `kubectl get --raw '/api/v1/pods?limit=500'` and `... '?watch=1&resourceVersion=N&allowWatchBookmarks=true'`.
 */
import type { KubeConfig } from "@kubernetes/client-node";
import * as http from "node:http";
import * as https from "node:https";

/** The API server answered with an error `Status` (or the connection failed: `code` 0). */
export class KubeApiError extends Error {
  override readonly name = "KubeApiError";
  constructor(readonly code: number, readonly reason: string, message: string, options?: ErrorOptions) {
    super(message, options);
  }
}

/** The requested resourceVersion is older than the server's history: list again. */
export const isGone = (err: unknown): boolean =>
  err instanceof KubeApiError && (err.code === 410 || err.reason === "Expired" || err.reason === "Gone");

/**
 * The server never reached our resourceVersion (its storage was replaced, e.g. a restored etcd): the
 * cache may hold objects the server no longer knows, so list again and diff, as for {@link isGone}.
 */
export const isTooLargeResourceVersion = (err: unknown): boolean =>
  err instanceof KubeApiError && err.code === 504 && /too large resource version/i.test(err.message);

/** A deliberate stop (our AbortSignal), as opposed to a failure. */
export const isAbort = (err: unknown): boolean => err instanceof Error && err.name === "AbortError";

export interface ListPage {
  items: unknown[];
  resourceVersion: string;
  continue?: string;
}

export interface RawWatchEvent {
  type: string;
  // deno-lint-ignore no-explicit-any
  object: any;
}

/** What a reflector needs from the API; the real one is {@link HttpTransport}. */
export interface Transport {
  /** One page of a LIST. */
  list(path: string, query: Record<string, string>, signal: AbortSignal): Promise<ListPage>;
  /**
   * A WATCH: calls `onConnected` once the server accepted it, then `onEvent` per line; resolves when the
   * server ends the stream (timeoutSeconds), rejects on any failure or on abort (AbortError).
   */
  watch(
    path: string,
    query: Record<string, string>,
    signal: AbortSignal,
    onConnected: () => void,
    onEvent: (e: RawWatchEvent) => void,
  ): Promise<void>;
  /** Releases pooled connections once nothing uses the transport any more. */
  close?(): void;
}

function abortError(): Error {
  return new DOMException("the watch layer was stopped", "AbortError");
}

function statusError(code: number, body: string): KubeApiError {
  try {
    const s = JSON.parse(body);
    if (s && s.kind === "Status") return new KubeApiError(s.code ?? code, s.reason ?? "", s.message ?? body);
  } catch { /* not a Status */ }
  return new KubeApiError(code, "", `HTTP ${code}: ${body.slice(0, 200)}`);
}

/**
 * `idleTimeoutMs`: a watch that receives nothing for this long is presumed dead (0: never).
 * `responseTimeoutMs`: longest wait for response headers (default 60 s), so a request sent into a
 * half-open connection fails instead of hanging.
 */
export interface TransportOptions {
  idleTimeoutMs?: number;
  responseTimeoutMs?: number;
}

const DEFAULT_RESPONSE_TIMEOUT_MS = 60_000;

/**
 * The URL of `path?query` on the kubeconfig's current cluster, and the request options client-node
 * derives from the kubeconfig (headers with credentials, TLS material, a proxy agent).
 */
async function prepare(kubeConfig: KubeConfig, path: string, query: Record<string, string>) {
  const cluster = kubeConfig.getCurrentCluster();
  if (!cluster) throw new KubeApiError(0, "", "the kubeconfig has no current cluster");
  const url = new URL(cluster.server.replace(/\/+$/, "") + path);
  for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v);
  // deno-lint-ignore no-explicit-any
  const o: any = { headers: { Accept: "application/json" } };
  await kubeConfig.applyToHTTPSOptions(o);
  return { cluster, url, o };
}

const noResponseError = (url: URL, path: string, ms: number) =>
  new KubeApiError(0, "", `GET ${url.origin}${path}: no response within ${ms} ms`);

const silentError = (path: string, ms: number) =>
  new KubeApiError(0, "", `watch ${path} silent for ${ms} ms`);

/** A LIST response body as one page. */
function parseListPage(path: string, body: string): ListPage {
  let parsed;
  try {
    parsed = JSON.parse(body);
  } catch (err) {
    throw new KubeApiError(0, "", `invalid JSON in the list of ${path}`, { cause: err });
  }
  const page: ListPage = {
    items: parsed.items ?? [],
    resourceVersion: String(parsed.metadata?.resourceVersion ?? ""),
  };
  if (parsed.metadata?.continue) page.continue = parsed.metadata.continue;
  return page;
}

/** A WATCH body cut into its events, one JSON object a line, as the chunks arrive. */
class WatchLines {
  #buf = "";
  constructor(readonly path: string) {}

  push(chunk: string): void {
    this.#buf += chunk;
  }

  /**
   * The next complete event (undefined until more arrives). Throws on a line that is not JSON and on
   * an ERROR event, whose object is the server's `Status`.
   */
  next(): RawWatchEvent | undefined {
    let nl;
    while ((nl = this.#buf.indexOf("\n")) >= 0) {
      const line = this.#buf.slice(0, nl).trim();
      this.#buf = this.#buf.slice(nl + 1);
      if (!line) continue;
      let e: RawWatchEvent;
      try {
        e = JSON.parse(line);
      } catch (err) {
        throw new KubeApiError(0, "", `invalid JSON in the watch of ${this.path}`, { cause: err });
      }
      if (e.type === "ERROR") {
        const st = e.object ?? {};
        throw new KubeApiError(st.code ?? 0, st.reason ?? "", st.message ?? "watch error");
      }
      return e;
    }
    return undefined;
  }
}

/** Calls `onIdle` once `ms` pass without a call to `arm` (`ms` 0: never). */
class IdleTimer {
  #id: ReturnType<typeof setTimeout> | undefined;
  constructor(readonly ms: number, readonly onIdle: () => void) {}

  arm(): void {
    if (!this.ms) return;
    clearTimeout(this.#id);
    this.#id = setTimeout(this.onIdle, this.ms);
  }

  clear(): void {
    clearTimeout(this.#id);
  }
}

/**
 * One GET response as the shared LIST/WATCH logic reads it. Each transport maps its own failures to
 * `KubeApiError` (and an abort to an AbortError) inside these.
 */
interface GetResponse {
  status: number;
  /** The whole body. */
  text(): Promise<string>;
  /** The next chunk of the body as it arrives; undefined at its end or once cancelled. */
  read(): Promise<string | undefined>;
  /** Stops reading and releases the connection; a pending `read` ends with undefined. */
  cancel(): Promise<void>;
}

/**
 * LIST and WATCH over a transport's GET: status check, page parsing, and the watch stream (events cut
 * from the chunks, the idle timer, stopping on abort even from inside an event handler). The two HTTP
 * stacks below differ only in how they make the request and read its body.
 */
abstract class GetTransport implements Transport {
  constructor(readonly kubeConfig: KubeConfig, readonly opts: TransportOptions = {}) {}

  /** Sends `GET path?query`; resolves once the response headers are in. */
  protected abstract get(
    path: string,
    query: Record<string, string>,
    signal: AbortSignal,
  ): Promise<GetResponse>;

  abstract close(): void;

  async list(path: string, query: Record<string, string>, signal: AbortSignal): Promise<ListPage> {
    const res = await this.get(path, query, signal);
    const body = await res.text();
    if (res.status !== 200) throw statusError(res.status, body);
    return parseListPage(path, body);
  }

  async watch(
    path: string,
    query: Record<string, string>,
    signal: AbortSignal,
    onConnected: () => void,
    onEvent: (e: RawWatchEvent) => void,
  ): Promise<void> {
    const res = await this.get(path, { ...query, watch: "true" }, signal);
    if (res.status !== 200) {
      const body = await res.text().catch(() => "");
      if (signal.aborted) throw abortError();
      throw statusError(res.status, body);
    }
    onConnected();
    const idleMs = this.opts.idleTimeoutMs ?? 0;
    let idleFired = false;
    const idle = new IdleTimer(idleMs, () => {
      idleFired = true;
      void res.cancel();
    });
    const onAbort = () => void res.cancel();
    signal.addEventListener("abort", onAbort, { once: true });
    const lines = new WatchLines(path);
    try {
      idle.arm();
      for (;;) {
        let chunk: string | undefined;
        try {
          chunk = await res.read();
        } catch (err) {
          if (signal.aborted) throw abortError();
          throw err;
        }
        if (signal.aborted) throw abortError();
        if (idleFired) throw silentError(path, idleMs);
        if (chunk === undefined) return;
        idle.arm();
        lines.push(chunk);
        // A handler may abort: no event is delivered after that.
        for (let e; !signal.aborted && (e = lines.next());) onEvent(e);
        if (signal.aborted) throw abortError();
      }
    } finally {
      idle.clear();
      signal.removeEventListener("abort", onAbort);
      await res.cancel().catch(() => {});
    }
  }
}

/**
 * The transport over `node:https`: used where Deno's fetch cannot go (insecure-skip-tls-verify, an
 * HTTP proxy from the kubeconfig's proxy-url), since it takes client-node's agents as they are.
 */
export class NodeHttpTransport extends GetTransport {
  #agent: { key: string; agent: http.Agent } | undefined;

  /** See {@link TransportOptions}. */
  constructor(kubeConfig: KubeConfig, opts: TransportOptions = {}) {
    super(kubeConfig, opts);
  }

  /**
   * client-node builds a fresh agent on every call, which would cost a TLS handshake per LIST page;
   * keep one keep-alive agent for as long as the TLS material stays the same (credentials in headers,
   * such as a rotated token, are still applied per request).
   */
  // deno-lint-ignore no-explicit-any
  #agentFor(url: URL, o: any): http.Agent {
    const key = JSON.stringify([
      url.protocol,
      url.host,
      o.ca,
      o.cert,
      o.key,
      o.pfx,
      o.passphrase,
      o.rejectUnauthorized,
      o.servername,
    ]);
    if (this.#agent?.key !== key) {
      this.#agent?.agent.destroy();
      const base = { keepAlive: true, maxSockets: 16 };
      const agent = url.protocol === "http:" ? new http.Agent(base) : new https.Agent({
        ...base,
        ...(o.ca ? { ca: o.ca } : {}),
        ...(o.cert ? { cert: o.cert } : {}),
        ...(o.key ? { key: o.key } : {}),
        ...(o.pfx ? { pfx: o.pfx } : {}),
        ...(o.passphrase ? { passphrase: o.passphrase } : {}),
        ...(o.servername ? { servername: o.servername } : {}),
        rejectUnauthorized: o.rejectUnauthorized !== false,
      });
      this.#agent = { key, agent };
    }
    return this.#agent.agent;
  }

  /** Closes idle keep-alive connections. */
  close(): void {
    this.#agent?.agent.destroy();
    this.#agent = undefined;
  }

  protected async get(
    path: string,
    query: Record<string, string>,
    signal: AbortSignal,
  ): Promise<GetResponse> {
    const res = await this.#request(path, query, signal);
    return {
      status: res.statusCode ?? 0,
      text: () => readAll(res, signal),
      ...nodeBodyReader(res, path),
    };
  }

  async #request(
    path: string,
    query: Record<string, string>,
    signal: AbortSignal,
  ): Promise<http.IncomingMessage> {
    const { cluster, url, o } = await prepare(this.kubeConfig, path, query);
    if (cluster.skipTLSVerify) o.rejectUnauthorized = false;
    if (signal.aborted) throw abortError();
    const mod = url.protocol === "http:" ? http : https;
    return await new Promise((resolve, reject) => {
      let settled = false;
      // deno-lint-ignore prefer-const -- assigned after settle() is defined, which reads it
      let timer: ReturnType<typeof setTimeout> | undefined;
      const settle = (err: Error | undefined, res?: http.IncomingMessage) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        if (err) reject(err);
        else resolve(res!);
      };
      const req = mod.request(url, {
        method: "GET",
        headers: o.headers,
        agent: cluster.proxyUrl ? o.agent : this.#agentFor(url, o),
        ...(o.auth ? { auth: o.auth } : {}),
      }, (res) => settle(undefined, res));
      // Settle here rather than wait for the request's "error" event, which not every runtime emits
      // for a request destroyed before its response arrived.
      const onAbort = () => {
        settle(abortError());
        req.destroy();
      };
      signal.addEventListener("abort", onAbort, { once: true });
      const timeoutMs = this.opts.responseTimeoutMs ?? DEFAULT_RESPONSE_TIMEOUT_MS;
      timer = setTimeout(() => {
        this.close();
        settle(noResponseError(url, path, timeoutMs));
        req.destroy();
      }, timeoutMs);
      req.on("error", (err) => {
        // Start over with a fresh agent: one that saw a connection die may hold on to broken state.
        this.close();
        settle(
          isAbort(err) || signal.aborted
            ? abortError()
            : new KubeApiError(0, "", `GET ${url.origin}${path} failed`, { cause: err }),
        );
      });
      req.end();
    });
  }
}

function readAll(res: http.IncomingMessage, signal: AbortSignal): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: string[] = [];
    res.setEncoding("utf8");
    const onAbort = () => {
      res.destroy();
      reject(abortError());
    };
    signal.addEventListener("abort", onAbort, { once: true });
    res.on("data", (c: string) => chunks.push(c));
    res.on("end", () => {
      signal.removeEventListener("abort", onAbort);
      resolve(chunks.join(""));
    });
    res.on("error", (err) => {
      signal.removeEventListener("abort", onAbort);
      reject(signal.aborted ? abortError() : new KubeApiError(0, "", err.message, { cause: err }));
    });
  });
}

/** A node response body as chunks on demand (listeners attach on the first read, so `text()` still can). */
function nodeBodyReader(res: http.IncomingMessage, path: string): Pick<GetResponse, "read" | "cancel"> {
  const queue: string[] = [];
  let ended = false;
  let cancelled = false;
  let failure: unknown;
  let wake: (() => void) | undefined;
  let attached = false;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const attach = () => {
    attached = true;
    res.setEncoding("utf8");
    res.on("data", (chunk: string) => {
      queue.push(chunk);
      notify();
    });
    res.on("end", () => {
      ended = true;
      notify();
    });
    res.on("error", (err) => {
      if (!cancelled) failure ??= new KubeApiError(0, "", `watch ${path}: ${err.message}`, { cause: err });
      notify();
    });
    res.on("close", () => {
      if (!res.complete && !cancelled) {
        failure ??= new KubeApiError(0, "", `watch ${path}: connection closed`);
      }
      ended = true;
      notify();
    });
  };
  return {
    async read() {
      if (!attached) attach();
      for (;;) {
        if (queue.length) return queue.splice(0).join("");
        if (ended && failure === undefined) return undefined;
        if (failure !== undefined) throw failure;
        await new Promise<void>((r) => wake = r);
      }
    },
    cancel() {
      cancelled = ended = true;
      queue.length = 0;
      failure = undefined;
      notify();
      res.destroy();
      return Promise.resolve();
    },
  };
}

/**
 * The transport over Deno's `fetch` with a `Deno.createHttpClient` holding the CA and client
 * certificate: about twice as fast as `node:https` for LIST pages, and a native streaming body for
 * watches. Credentials in headers (tokens, exec plugins) still come from client-node per request.
 */
export class FetchTransport extends GetTransport {
  #client: { key: string; client: Deno.HttpClient } | undefined;

  constructor(kubeConfig: KubeConfig, opts: TransportOptions = {}) {
    super(kubeConfig, opts);
  }

  close(): void {
    this.#client?.client.close();
    this.#client = undefined;
  }

  // deno-lint-ignore no-explicit-any
  #clientFor(o: any): Deno.HttpClient {
    const pem = (v: unknown): string | undefined =>
      v === undefined || v === null
        ? undefined
        : typeof v === "string"
        ? v
        : new TextDecoder().decode(v as Uint8Array);
    const ca = pem(o.ca), cert = pem(o.cert), key = pem(o.key);
    const id = JSON.stringify([ca, cert, key]);
    if (this.#client?.key !== id) {
      this.#client?.client.close();
      const client = Deno.createHttpClient({
        ...(ca ? { caCerts: [ca] } : {}),
        ...(cert && key ? { cert, key } : {}),
      });
      this.#client = { key: id, client };
    }
    return this.#client.client;
  }

  protected async get(
    path: string,
    query: Record<string, string>,
    signal: AbortSignal,
  ): Promise<GetResponse> {
    const res = await this.#fetch(path, query, signal);
    let reader: ReadableStreamDefaultReader<string> | undefined;
    const body = () => reader ??= res.body!.pipeThrough(new TextDecoderStream()).getReader();
    return {
      status: res.status,
      text: async () => {
        try {
          return await res.text();
        } catch (err) {
          throw signal.aborted
            ? abortError()
            : new KubeApiError(0, "", `reading the list of ${path} failed`, { cause: err });
        }
      },
      read: async () => {
        let chunk: ReadableStreamReadResult<string>;
        try {
          chunk = await body().read();
        } catch (err) {
          throw new KubeApiError(0, "", `watch ${path}: connection lost`, { cause: err });
        }
        return chunk.done ? undefined : chunk.value;
      },
      cancel: () => reader ? reader.cancel() : res.body?.cancel() ?? Promise.resolve(),
    };
  }

  async #fetch(path: string, query: Record<string, string>, signal: AbortSignal): Promise<Response> {
    const { url, o } = await prepare(this.kubeConfig, path, query);
    if (signal.aborted) throw abortError();
    const headers = new Headers();
    for (const [k, v] of Object.entries(o.headers ?? {})) if (typeof v === "string") headers.set(k, v);
    if (o.auth) headers.set("Authorization", "Basic " + btoa(o.auth));
    const timeoutMs = this.opts.responseTimeoutMs ?? DEFAULT_RESPONSE_TIMEOUT_MS;
    const ctl = new AbortController();
    const onAbort = () => ctl.abort();
    signal.addEventListener("abort", onAbort, { once: true });
    const timer = setTimeout(() => ctl.abort(noResponseError(url, path, timeoutMs)), timeoutMs);
    try {
      return await fetch(url, { headers, client: this.#clientFor(o), signal: ctl.signal });
    } catch (err) {
      if (signal.aborted) throw abortError();
      if (err instanceof KubeApiError) throw err;
      this.close();
      throw new KubeApiError(0, "", `GET ${url.origin}${path} failed`, { cause: err });
    } finally {
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
    }
  }
}

/**
 * The transport the watch layer uses by default: {@link FetchTransport}, or {@link NodeHttpTransport}
 * when the kubeconfig asks for what fetch cannot do (insecure-skip-tls-verify, a proxy-url).
 */
export class HttpTransport implements Transport {
  #fetch: FetchTransport;
  #node: NodeHttpTransport;

  constructor(readonly kubeConfig: KubeConfig, opts: TransportOptions = {}) {
    this.#fetch = new FetchTransport(kubeConfig, opts);
    this.#node = new NodeHttpTransport(kubeConfig, opts);
  }

  /** Which transport the current cluster needs. */
  get kind(): "fetch" | "node" {
    const c = this.kubeConfig.getCurrentCluster();
    return c && (c.skipTLSVerify || c.proxyUrl) ? "node" : "fetch";
  }

  get #current(): Transport {
    return this.kind === "fetch" ? this.#fetch : this.#node;
  }

  list(path: string, query: Record<string, string>, signal: AbortSignal): Promise<ListPage> {
    return this.#current.list(path, query, signal);
  }

  watch(
    path: string,
    query: Record<string, string>,
    signal: AbortSignal,
    onConnected: () => void,
    onEvent: (e: RawWatchEvent) => void,
  ): Promise<void> {
    return this.#current.watch(path, query, signal, onConnected, onEvent);
  }

  close(): void {
    this.#fetch.close();
    this.#node.close();
  }
}
