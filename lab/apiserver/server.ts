/**
 * The lab API server's HTTPS front: the Kubernetes REST protocol over `node:https` (not `Deno.serve`,
 * which cannot ask for client certificates) on top of a {@link Store}. It speaks enough of the real
 * protocol for client-node informers and kubectl v1.32: discovery, CRUD, list (with selectors and
 * paging), watch (resourceVersion, 410 Gone in-stream, timeoutSeconds, bookmarks), three patch types,
 * status subresources, bearer-token and client-certificate authentication.
 */
import { createServer, type Server } from "node:https";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { TLSSocket } from "node:tls";
import { join } from "node:path";
import { stringify as yamlStringify } from "yaml";
import type { Logger } from "../../core/mod.ts";
import { ensurePki, type Pki } from "./certs.ts";
import { ApiError, badRequest, gone, invalid } from "./errors.ts";
import { apiGroup, apiGroupList, apiResourceList, apiVersions, versionInfo } from "./_discovery.ts";
import { patchTypeOf } from "./patch.ts";
import {
  checkBody,
  checkPatched,
  type FieldCheck,
  fieldValidationOf,
  openApiV2,
  openApiV3,
  warningHeader,
} from "./field_validation.ts";
import { toTable, wantsTable } from "./_table.ts";
import { decodeProtobufObject, isProtobuf } from "./_protobuf.ts";
import { apiVersionOf, findResource, type ResourceInfo } from "./resources.ts";
import { type RequestInfo, requestInfo, type ResourceRequest } from "./request_info.ts";
import { keyOf, Store, type WatchEvent, type WriteOptions } from "./store.ts";
import { type PodLogFile, servePodLog } from "./pod_logs.ts";
import { ADMIN_USER, authorize, forbidden, serviceAccountUser, type UserInfo } from "./rbac.ts";
import { type BoundObject, TokenIssuer } from "./tokens.ts";
import type { KubeObject } from "./types.ts";

export interface ApiServerOptions {
  /** Address to listen on. Default 127.0.0.1. */
  host?: string;
  /** Port; 0 (default) picks a free one. Restart on the same port by passing the old `port`. */
  port?: number;
  /** Where the PKI, the token and the kubeconfig live; reused on restart. */
  stateDir: string;
  /** Address clients use (kubeconfig `server`, certificate SAN). Default: `host`, or 127.0.0.1 for 0.0.0.0. */
  advertiseAddress?: string;
  /** Extra certificate SANs (IP addresses or DNS names), e.g. the `kubernetes` Service's cluster IP. */
  sans?: readonly string[];
  /**
   * Used when no `store` is given. Default 10.96.0.0/12. Two CIDRs separated by a comma (one per family,
   * primary first) make the cluster dual-stack, as kube-apiserver's `--service-cluster-ip-range`.
   */
  serviceCidr?: string;
  /** Used when no `store` is given. Default [30000, 32767]. */
  nodePortRange?: [number, number];
  /** Used when no `store` is given: how long a deleted namespace stays Terminating. Default 0. */
  namespaceDeletionDelayMs?: number;
  /** Delete pods bound to a node gracefully (see StoreOptions.gracefulPodDeletion); for the lab's kubelet. */
  gracefulPodDeletion?: boolean;
  /** The store to serve; pass the previous server's store to restart with the same history. */
  store?: Store;
  /**
   * Create the `default/kubernetes` Service (first service IP, port 443) and its EndpointSlice pointing
   * at this server's advertise address and port, as kube-apiserver does. Default false.
   */
  kubernetesService?: boolean;
  /** Bearer token accepted; default: read from `stateDir/token`, else generated and saved there. */
  token?: string;
  /** How often a watch with allowWatchBookmarks gets a BOOKMARK. Default 60 s (kube-apiserver: ~1 min). */
  bookmarkIntervalMs?: number;
  /** Bytes a watch may have buffered for a client before it is cut off. Default 64 MiB. */
  maxWatchBufferBytes?: number;
  /** Default watch timeout when the client gives no timeoutSeconds. Default 1800 s. */
  defaultWatchTimeoutSeconds?: number;
  /** Where pods' container logs are, for the pods/log subresource (`kubectl logs`); the lab kubelet's files. */
  podLogFile?: PodLogFile;
  log?: Logger;
}

/** What a TokenRequest's spec may ask for. */
export interface TokenOptions {
  /** Default: the API server's own audience (tokens for other audiences are not accepted by it). */
  audiences?: readonly string[];
  /** Default 3600; at least 600. */
  expirationSeconds?: number;
  /** Bind the token to a pod (or node): it stops working when that object is deleted. */
  boundObjectRef?: { kind: "Pod" | "Node"; name: string; uid?: string };
}

export interface MintedToken {
  token: string;
  /** RFC 3339. */
  expirationTimestamp: string;
  audiences: string[];
  expirationSeconds: number;
}

export interface KubeconfigOptions {
  /** `token` (default) or `cert` (client certificate). */
  auth?: "token" | "cert";
}

export interface ApiServer {
  /** `https://<address>:<port>` */
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly caCertPath: string;
  readonly caCertPem: string;
  readonly token: string;
  readonly clientCertPath: string;
  readonly clientKeyPath: string;
  readonly store: Store;
  /** A kubeconfig (YAML text) with the CA and the credentials embedded. */
  kubeconfig(opts?: KubeconfigOptions): string;
  /** Writes `kubeconfig()` to a file (mode 0600); default `stateDir/kubeconfig`. Returns the path. */
  writeKubeconfig(path?: string, opts?: KubeconfigOptions): Promise<string>;
  /**
   * A token for ServiceAccount `namespace/name`, as `POST …/serviceaccounts/<name>/token` issues it (and
   * the kubelet asks for a pod's projected token): accepted by this server as that account until it
   * expires, or until the account (or the pod it is bound to) is deleted.
   */
  mintServiceAccountToken(namespace: string, name: string, opts?: TokenOptions): Promise<MintedToken>;
  /** Number of watch streams open now. */
  readonly openWatches: number;
  /** Closes the listener and every connection (watch streams end abruptly, as when a server dies). */
  stop(): Promise<void>;
}

/** Starts the lab API server. */
export async function startApiServer(opts: ApiServerOptions): Promise<ApiServer> {
  const host = opts.host ?? "127.0.0.1";
  const advertise = opts.advertiseAddress ?? (host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host);
  await Deno.mkdir(opts.stateDir, { recursive: true });
  const pki = await ensurePki(opts.stateDir, [advertise, ...(opts.sans ?? [])]);
  const token = opts.token ?? await loadOrMakeToken(join(opts.stateDir, "token"));
  const store = opts.store ?? new Store({
    ...(opts.serviceCidr ? { serviceCidrs: opts.serviceCidr.split(",").map((c) => c.trim()) } : {}),
    ...(opts.nodePortRange ? { nodePortRange: opts.nodePortRange } : {}),
    ...(opts.namespaceDeletionDelayMs ? { namespaceDeletionDelayMs: opts.namespaceDeletionDelayMs } : {}),
    ...(opts.gracefulPodDeletion ? { gracefulPodDeletion: true } : {}),
  });
  const caCertPem = await Deno.readTextFile(pki.caCertPath);
  const issuer = await TokenIssuer.load(opts.stateDir);
  const handler = new Handler(store, token, issuer, opts);
  const server = createServer({
    key: await Deno.readTextFile(pki.serverKeyPath),
    cert: await Deno.readTextFile(pki.serverCertPath),
    ca: caCertPem,
    requestCert: true,
    rejectUnauthorized: false,
  }, (req, res) => handler.handle(req, res));
  const sockets = new Set<Socket>();
  const track = (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  };
  server.on("connection", track);
  server.on("secureConnection", track);
  server.on("tlsClientError", () => {});
  const port = await listen(server, opts.port ?? 0, host);
  if (opts.kubernetesService) ensureKubernetesService(store, advertise, port);
  const urlHost = advertise.includes(":") ? `[${advertise}]` : advertise;
  const url = `https://${urlHost}:${port}`;
  let stopped: Promise<void> | undefined;

  const kubeconfig = (k: KubeconfigOptions = {}): string => {
    const user: Record<string, string> = k.auth === "cert"
      ? {
        "client-certificate-data": b64(Deno.readTextFileSync(pki.clientCertPath)),
        "client-key-data": b64(Deno.readTextFileSync(pki.clientKeyPath)),
      }
      : { token };
    return yamlStringify({
      apiVersion: "v1",
      kind: "Config",
      clusters: [{ name: "lab", cluster: { server: url, "certificate-authority-data": b64(caCertPem) } }],
      users: [{ name: "admin", user }],
      contexts: [{ name: "lab", context: { cluster: "lab", user: "admin" } }],
      "current-context": "lab",
      preferences: {},
    });
  };
  return {
    url,
    host,
    port,
    caCertPath: pki.caCertPath,
    caCertPem,
    token,
    clientCertPath: pki.clientCertPath,
    clientKeyPath: pki.clientKeyPath,
    store,
    kubeconfig,
    async writeKubeconfig(path = join(opts.stateDir, "kubeconfig"), k: KubeconfigOptions = {}) {
      // Written aside and renamed: whoever waits for the file to appear (the lab) never reads half of it.
      const tmp = `${path}.${crypto.randomUUID()}.tmp`;
      await Deno.writeTextFile(tmp, kubeconfig(k), { mode: 0o600 });
      await Deno.rename(tmp, path);
      return path;
    },
    mintServiceAccountToken: (namespace, name, o) => handler.mintToken(namespace, name, o),
    get openWatches() {
      return handler.openWatches;
    },
    stop() {
      stopped ??= new Promise<void>((resolve) => {
        handler.closeAll();
        server.close(() => resolve());
        for (const s of sockets) s.destroy();
      });
      return stopped;
    },
  };
}

export type { Pki };

/** The `kubernetes` Service and EndpointSlice in `default`, created or brought up to date. */
export function ensureKubernetesService(store: Store, address: string, port: number): void {
  if (!store.tryGet("services", "default/kubernetes")) {
    store.create("services", {
      metadata: {
        name: "kubernetes",
        namespace: "default",
        labels: { component: "apiserver", provider: "kubernetes" },
      },
      spec: {
        clusterIP: store.services.firstIp,
        ports: [{ name: "https", port: 443, protocol: "TCP", targetPort: port }],
      },
    });
  }
  const slice = {
    metadata: {
      name: "kubernetes",
      namespace: "default",
      labels: { "kubernetes.io/service-name": "kubernetes" },
    },
    addressType: address.includes(":") ? "IPv6" : "IPv4",
    endpoints: [{ addresses: [address], conditions: { ready: true, serving: true, terminating: false } }],
    ports: [{ name: "https", port, protocol: "TCP" }],
  };
  if (store.tryGet("endpointslices", "default/kubernetes")) store.update("endpointslices", slice);
  else store.create("endpointslices", slice);
}

function b64(s: string): string {
  return btoa(s);
}

async function loadOrMakeToken(path: string): Promise<string> {
  try {
    const t = (await Deno.readTextFile(path)).trim();
    if (t) return t;
  } catch { /* made below */ }
  const bytes = crypto.getRandomValues(new Uint8Array(24));
  const t = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  await Deno.writeTextFile(path, t + "\n", { mode: 0o600 });
  return t;
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(new Error(`cannot listen on ${host}:${port}`, { cause: err }));
    server.once("error", onError);
    server.listen(port, host, () => {
      server.off("error", onError);
      const a = server.address();
      resolve(typeof a === "object" && a ? a.port : port);
    });
  });
}

const MAX_BODY = 16 * 1024 * 1024;

class Handler {
  #watches = new Set<() => void>();
  constructor(
    readonly store: Store,
    readonly token: string,
    readonly issuer: TokenIssuer,
    readonly opts: ApiServerOptions,
  ) {}

  get openWatches(): number {
    return this.#watches.size;
  }

  closeAll(): void {
    for (const close of [...this.#watches]) close();
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const authenticated = await this.#authenticate(req);
      if (!authenticated) throw new ApiError(401, "Unauthorized", "Unauthorized");
      const user = this.#impersonate(req, authenticated);
      await this.#route(req, res, user);
    } catch (err) {
      const e = err instanceof ApiError
        ? err
        : new ApiError(500, "InternalError", `Internal error occurred: ${String(err)}`, undefined, {
          cause: err,
        });
      if (e.code >= 500) this.opts.log?.error("request failed", { method: req.method, url: req.url, err });
      if (!res.headersSent) send(res, e.code, e.toStatus());
      else res.end();
    }
  }

  /**
   * The user behind a request: the admin token or a client certificate signed by the lab CA (the
   * lab's admin, in system:masters), or a service-account token whose account (and bound pod) still
   * exists with the uid it was issued for, as kube-apiserver checks them.
   */
  async #authenticate(req: IncomingMessage): Promise<UserInfo | undefined> {
    const auth = req.headers.authorization;
    if (auth === undefined) return (req.socket as TLSSocket).authorized === true ? ADMIN_USER : undefined;
    if (!auth.startsWith("Bearer ")) return undefined;
    const token = auth.slice(7).trim();
    if (token === this.token) return ADMIN_USER;
    const claims = await this.issuer.verify(token);
    if (!claims) return undefined;
    const k = claims["kubernetes.io"];
    const sa = this.store.tryGet("serviceaccounts", `${k.namespace}/${k.serviceaccount.name}`);
    if (!sa || sa.metadata?.uid !== k.serviceaccount.uid) return undefined;
    if (k.pod) {
      const pod = this.store.tryGet("pods", `${k.namespace}/${k.pod.name}`);
      if (!pod || pod.metadata?.uid !== k.pod.uid) return undefined;
    }
    return serviceAccountUser(k.namespace, k.serviceaccount.name, k.serviceaccount.uid);
  }

  /**
   * `kubectl --as=USER [--as-group=G]...`: the request acts as another user (Impersonate-User,
   * Impersonate-Group, Impersonate-Uid headers) if the caller may `impersonate` them, as kube-apiserver
   * checks it (users, groups, or a service account in its namespace); the lab's admin may.
   */
  #impersonate(req: IncomingMessage, user: UserInfo): UserInfo {
    const headers = (name: string): string[] => {
      const out: string[] = [];
      for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
        if (req.rawHeaders[i]!.toLowerCase() === name) out.push(req.rawHeaders[i + 1]!);
      }
      return out;
    };
    const name = headers("impersonate-user")[0];
    const groups = headers("impersonate-group");
    const uid = headers("impersonate-uid")[0];
    if (name === undefined) {
      if (groups.length || uid) throw badRequest("requested impersonation without a user (Impersonate-User)");
      return user;
    }
    const sa = /^system:serviceaccount:([^:]+):([^:]+)$/.exec(name);
    const checks: ResourceRequest[] = [
      sa ? impersonation("serviceaccounts", sa[2]!, sa[1]!) : impersonation("users", name, undefined),
      ...groups.map((g) => impersonation("groups", g, undefined)),
    ];
    for (const info of checks) {
      const d = authorize(this.store, user, info);
      if (!d.allowed) throw forbidden(user, info, d.reason);
    }
    if (sa && groups.length === 0) {
      const base = serviceAccountUser(sa[1]!, sa[2]!, uid ?? "");
      return uid ? base : { name: base.name, groups: base.groups };
    }
    return {
      name,
      ...(uid ? { uid } : {}),
      groups: [...new Set([...groups, "system:authenticated"])],
    };
  }

  /** A token for a ServiceAccount, as the TokenRequest API issues it. */
  async mintToken(namespace: string, name: string, opts: TokenOptions = {}): Promise<MintedToken> {
    const sa = this.store.get("serviceaccounts", keyOf(namespace, name));
    const expirationSeconds = opts.expirationSeconds ?? 3600;
    if (!Number.isInteger(expirationSeconds) || expirationSeconds < 600) {
      throw invalid("TokenRequest", "authentication.k8s.io", name, [{
        field: "spec.expirationSeconds",
        message: `Invalid value: ${expirationSeconds}: may not specify a duration less than 10 minutes`,
      }]);
    }
    let bound: BoundObject | undefined;
    let node: { name: string; uid: string } | undefined;
    if (opts.boundObjectRef) {
      const ref = opts.boundObjectRef;
      const resource = ref.kind === "Pod" ? "pods" : ref.kind === "Node" ? "nodes" : undefined;
      if (!resource) {
        throw badRequest(`cannot bind token to object of type ${ref.kind} (supported: Pod, Node)`);
      }
      const o = this.store.get(resource, resource === "pods" ? keyOf(namespace, ref.name) : ref.name);
      if (ref.uid && ref.uid !== o.metadata?.uid) {
        throw new ApiError(
          409,
          "Conflict",
          `the UID in the bound object reference (${ref.uid}) does not match the UID in record. The object might have been deleted and then recreated`,
        );
      }
      bound = { kind: ref.kind, name: ref.name, uid: o.metadata!.uid! };
      const nodeName = resource === "pods" ? o.spec?.nodeName : undefined;
      const nodeObj = nodeName ? this.store.tryGet("nodes", nodeName) : undefined;
      if (nodeObj) node = { name: nodeName, uid: nodeObj.metadata!.uid! };
    }
    const { token, claims } = await this.issuer.mint({
      namespace,
      name,
      uid: sa.metadata!.uid!,
      expirationSeconds,
      ...(opts.audiences?.length ? { audiences: opts.audiences } : {}),
      ...(bound ? { boundObject: bound } : {}),
      ...(node ? { node } : {}),
    });
    return {
      token,
      expirationTimestamp: new Date(claims.exp * 1000).toISOString().replace(/\.\d+Z$/, "Z"),
      audiences: claims.aud,
      expirationSeconds,
    };
  }

  async #route(req: IncomingMessage, res: ServerResponse, user: UserInfo): Promise<void> {
    const u = new URL(req.url ?? "/", "https://x");
    const info = requestInfo(req.method ?? "GET", u.pathname, u.searchParams);
    const decision = authorize(this.store, user, info);
    if (!decision.allowed) throw forbidden(user, info, decision.reason);
    if (!info.resourceRequest) {
      const route = NON_RESOURCE_ROUTES[`${info.verb} ${info.path}`] ?? nonResourceFallback(info);
      if (!route) throw notServed();
      return await route(this, { req, res, info, q: u.searchParams });
    }
    const r = findResource(info.apiGroup, info.apiVersion, info.resource);
    if (!r || (info.namespace !== undefined && !r.namespaced)) throw notServed();
    if (r.namespaced && info.name !== undefined && info.namespace === undefined) throw notServed();
    const sub = info.subresource;
    if (r.verbs && !r.verbs.includes(info.verb)) throw methodNotAllowed();
    const route = sub === undefined
      ? RESOURCE_ROUTES[`${info.verb} ${r.plural}`] ?? RESOURCE_ROUTES[info.verb]
      : r.subresources.includes(sub) || ((sub === "binding" || sub === "log") && r.plural === "pods")
      ? RESOURCE_ROUTES[`${info.verb} ${r.plural}/${sub}`] ?? RESOURCE_ROUTES[`${info.verb} */${sub}`]
      : undefined;
    if (!route) throw sub === undefined ? methodNotAllowed() : notServed();
    if (u.searchParams.has("dryRun")) throw badRequest("dryRun is not supported by the lab API server");
    const key = info.name !== undefined
      ? keyOf(r.namespaced ? info.namespace : undefined, info.name)
      : undefined;
    await route(this, {
      req,
      res,
      info,
      q: u.searchParams,
      r,
      key,
      table: wantsTable(req.headers.accept),
      user,
    });
  }

  list(
    res: ServerResponse,
    r: ResourceInfo,
    namespace: string | undefined,
    q: URLSearchParams,
    table: boolean,
  ): void {
    const limit = Number(q.get("limit") ?? 0);
    const result = this.store.list(r.plural, {
      ...listOptions(namespace, q),
      ...(limit > 0 ? { limit } : {}),
      ...(q.get("continue") ? { continue: q.get("continue")! } : {}),
    });
    if (table) {
      const t = toTable(
        r,
        result.items,
        result.resourceVersion,
        q.get("includeObject"),
        result.continue ? { continue: result.continue } : {},
      );
      return send(res, 200, t);
    }
    const metadata: Record<string, unknown> = { resourceVersion: result.resourceVersion };
    if (result.continue) metadata.continue = result.continue;
    if (result.remainingItemCount !== undefined) metadata.remainingItemCount = result.remainingItemCount;
    // Streamed item by item: one JSON.stringify of a 10,000-pod list would hold it all twice.
    res.writeHead(200, { "content-type": "application/json" });
    res.write(
      `{"kind":${JSON.stringify(r.listKind)},"apiVersion":${JSON.stringify(apiVersionOf(r))},"metadata":${
        JSON.stringify(metadata)
      },"items":[`,
    );
    let chunk = "";
    result.items.forEach((o, i) => {
      chunk += (i ? "," : "") + JSON.stringify(o);
      if (chunk.length > 65536) {
        res.write(chunk);
        chunk = "";
      }
    });
    res.end(chunk + "]}");
  }

  watch(
    req: IncomingMessage,
    res: ServerResponse,
    r: ResourceInfo,
    namespace: string | undefined,
    q: URLSearchParams,
    table: boolean,
  ): void {
    const rvText = q.get("resourceVersion") ?? "";
    const timeoutSeconds = Number(q.get("timeoutSeconds") ?? this.opts.defaultWatchTimeoutSeconds ?? 1800);
    const bookmarks = q.get("allowWatchBookmarks") === "true";
    const wopts = listOptions(namespace, q);
    res.writeHead(200, {
      "content-type": "application/json",
      "transfer-encoding": "chunked",
      "cache-control": "no-cache",
    });
    // Send the headers now: client-go (kubectl wait) blocks until a watch response starts, and with no
    // event to write node:http would hold them until the first bookmark.
    res.flushHeaders();
    const includeObject = q.get("includeObject");
    let replaying = false;
    // deno-lint-ignore prefer-const -- set once the watch is registered, read by write() before that
    let closeOnDeadSocket: (() => void) | undefined;
    const write = (type: string, object: unknown) => {
      if (res.writableEnded) return;
      // A client that went away is noticed here at the latest: stop its watch instead of buffering for it.
      if (req.socket.destroyed || !req.socket.writable) {
        closeOnDeadSocket?.();
        return;
      }
      // `kubectl get -w` watches in Table form too: each event carries a one-row Table.
      const o = table && (type === "ADDED" || type === "MODIFIED" || type === "DELETED")
        ? toTable(
          r,
          [object as KubeObject],
          (object as KubeObject).metadata?.resourceVersion ?? "",
          includeObject,
        )
        : object;
      res.write(JSON.stringify({ type, object: o }) + "\n");
      // A watcher that does not read (or is gone without the socket noticing) is cut off, as
      // kube-apiserver does when a watcher's buffer is full; it comes back with a new watch.
      if (!replaying && res.writableLength > (this.opts.maxWatchBufferBytes ?? 64 * 1024 * 1024)) {
        this.opts.log?.warn("closing a watch whose client does not keep up", {
          resource: r.plural,
          buffered: res.writableLength,
        });
        closeOnDeadSocket?.();
        req.socket.destroy();
      }
    };
    let from: number;
    if (rvText === "" || rvText === "0") {
      // "Any version": the current state as ADDED events, then changes from now on.
      const snapshot = this.store.list(r.plural, wopts);
      for (const o of snapshot.items) write("ADDED", o);
      from = Number(snapshot.resourceVersion);
    } else {
      from = Number(rvText);
      if (!Number.isInteger(from) || from < 0) {
        write("ERROR", badRequest(`invalid resource version "${rvText}"`).toStatus());
        res.end();
        return;
      }
      if (from > this.store.revision) {
        // A version this store never reached (the client saw another, wiped store): kube-apiserver answers
        // "Too large resource version" (504, cause ResourceVersionTooLarge) and the client lists again.
        const err = new ApiError(
          504,
          "Timeout",
          `Too large resource version: ${from}, current: ${this.store.revision}`,
          {
            causes: [{ reason: "ResourceVersionTooLarge", message: "Too large resource version" }],
          },
        );
        write("ERROR", err.toStatus());
        res.end();
        return;
      }
    }
    let stop: (() => void) | undefined;
    try {
      // The replay of retained history is written in one go (a reconnecting client asked for exactly
      // that); only live events count against the buffer limit, or a long replay could never finish.
      replaying = true;
      stop = this.store.watch(r.plural, from, (e: WatchEvent) => write(e.type, e.object), wopts);
      replaying = false;
    } catch (err) {
      const status = err instanceof ApiError ? err : gone(String(err));
      write("ERROR", status.toStatus());
      res.end();
      return;
    }
    const bookmark = () =>
      write("BOOKMARK", {
        kind: r.kind,
        apiVersion: apiVersionOf(r),
        metadata: { resourceVersion: String(this.store.revision) },
      });
    const ticker = bookmarks ? setInterval(bookmark, this.opts.bookmarkIntervalMs ?? 60_000) : undefined;
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      stop?.();
      clearInterval(ticker);
      clearTimeout(timer);
      this.#watches.delete(close);
      if (!res.writableEnded) res.end();
    };
    const timer = setTimeout(() => {
      if (bookmarks) bookmark();
      close();
    }, Math.max(0, timeoutSeconds) * 1000);
    this.#watches.add(close);
    req.on("close", close);
    res.on("close", close);
    res.on("error", close);
    req.socket.on("close", close);
    req.socket.on("error", close);
    closeOnDeadSocket = close;
  }
}

interface Call {
  req: IncomingMessage;
  res: ServerResponse;
  q: URLSearchParams;
}
interface NonResourceCall extends Call {
  info: RequestInfo;
}
interface ResourceCall extends Call {
  info: ResourceRequest;
  r: ResourceInfo;
  /** `namespace/name` (or `name`) when the request names an object. */
  key: string | undefined;
  /** The client asked for `meta.k8s.io/v1` Table output (`kubectl get`). */
  table: boolean;
  /** Who is asking (after impersonation). */
  user: UserInfo;
}
type NonResourceRoute = (h: Handler, c: NonResourceCall) => void | Promise<void>;
type ResourceRoute = (h: Handler, c: ResourceCall) => void | Promise<void>;

const ok: NonResourceRoute = (_h, { res }) =>
  void res.writeHead(200, { "content-type": "text/plain" }).end("ok");

/** Paths outside any resource, by `verb path`. */
const NON_RESOURCE_ROUTES: Record<string, NonResourceRoute> = {
  "get /healthz": ok,
  "get /livez": ok,
  "get /readyz": ok,
  "get /version": (_h, { res }) => send(res, 200, versionInfo()),
  "get /api": (_h, { req, res }) =>
    send(res, 200, apiVersions(`${req.socket.localAddress}:${req.socket.localPort}`)),
  "get /apis": (_h, { res }) => send(res, 200, apiGroupList()),
  "get /openapi/v3": (_h, { res }) => send(res, 200, openApiV3("/openapi/v3")),
  "get /openapi/v2": (_h, { req, res }) => {
    const doc = openApiV2(req.headers.accept);
    res.writeHead(200, { "content-type": doc.contentType, "content-length": String(doc.body.length) }).end(
      doc.body,
    );
  },
};

/** Discovery of one group (`/apis/apps`) or one group version (`/api/v1`, `/apis/apps/v1`). */
function nonResourceFallback(info: RequestInfo): NonResourceRoute | undefined {
  if (info.verb !== "get") return undefined;
  if (info.path.startsWith("/openapi/v3/")) {
    const spec = openApiV3(info.path);
    return spec ? (_h, { res }) => send(res, 200, spec) : undefined;
  }
  const parts = info.path.split("/").filter(Boolean);
  let doc: Record<string, unknown> | undefined;
  if (parts[0] === "apis" && parts.length === 2) doc = apiGroup(parts[1]!);
  else if (parts[0] === "api" && parts.length === 2) doc = apiResourceList("", parts[1]!);
  else if (parts[0] === "apis" && parts.length === 3) doc = apiResourceList(parts[1]!, parts[2]!);
  return doc ? (_h, { res }) => send(res, 200, doc) : undefined;
}

function named(c: ResourceCall): string {
  if (c.key === undefined) throw methodNotAllowed();
  return c.key;
}

const getObject: ResourceRoute = (h, c) => {
  const o = h.store.get(c.r.plural, named(c));
  if (c.table) {
    return send(c.res, 200, toTable(c.r, [o], o.metadata?.resourceVersion ?? "", c.q.get("includeObject")));
  }
  send(c.res, 200, o);
};

const updateObject = (writeOpts: WriteOptions): ResourceRoute => async (h, c) => {
  named(c);
  const { name, namespace } = c.info;
  const body = await readJson(c.req);
  checkKind(c.r, body);
  body.metadata ??= {};
  if (body.metadata.name && body.metadata.name !== name) {
    throw badRequest(
      `the name of the object (${body.metadata.name}) does not match the name on the URL (${name})`,
    );
  }
  if (c.r.namespaced && body.metadata.namespace && body.metadata.namespace !== namespace) {
    throw badRequest("the namespace of the provided object does not match the namespace sent on the request");
  }
  body.metadata.name = name;
  if (c.r.namespaced) body.metadata.namespace = namespace;
  const check = fieldCheck(h, c, "UpdateOptions");
  if (!isProtobufBody(c.req)) checkBody(c.r, body, check);
  send(c.res, 200, h.store.update(c.r.plural, body, writeOpts));
};

const patchObject = (writeOpts: WriteOptions): ResourceRoute => async (h, c) => {
  const key = named(c);
  const type = patchTypeOf(c.req.headers["content-type"]);
  if (!type) throw unsupportedPatch(c.req);
  const check = fieldCheck(h, c, "PatchOptions");
  const body = await readJson(c.req, true);
  send(
    c.res,
    200,
    h.store.patch(c.r.plural, key, type, body, {
      ...writeOpts,
      checkPatched: (patched) => checkPatched(c.r, patched, check, body, type === "strategic"),
    }),
  );
};

/**
 * The request's fieldValidation directive; Warn-mode messages become `Warning` headers of the response
 * (kubectl prints them as `Warning: unknown field "spec.foo"`).
 */
function fieldCheck(
  h: Handler,
  c: ResourceCall,
  options: "CreateOptions" | "UpdateOptions" | "PatchOptions",
): FieldCheck {
  const mode = fieldValidationOf(c.q, options);
  const warnings: string[] = [];
  return {
    mode,
    warn: (message) => {
      warnings.push(warningHeader(message));
      c.res.setHeader("Warning", warnings);
      h.opts.log?.warn("unknown field dropped", {
        resource: c.r.plural,
        namespace: c.info.namespace,
        name: c.info.name,
        field: message,
        userAgent: c.req.headers["user-agent"],
      });
    },
  };
}

function isProtobufBody(req: IncomingMessage): boolean {
  return (req.headers["content-type"] ?? "").split(";")[0]!.trim() === "application/vnd.kubernetes.protobuf";
}

/** Verbs on a resource (`get`) and on a subresource (`get pods/status`; "get *\/status" for any). */
const RESOURCE_ROUTES: Record<string, ResourceRoute> = {
  "get": getObject,
  "list": (h, c) => h.list(c.res, c.r, c.info.namespace, c.q, c.table),
  "watch": (h, c) => {
    // A watch of one object is a watch of the collection narrowed to its name.
    const q = new URLSearchParams(c.q);
    if (c.info.name !== undefined) {
      q.set(
        "fieldSelector",
        [q.get("fieldSelector"), `metadata.name=${c.info.name}`].filter(Boolean).join(","),
      );
    }
    h.watch(c.req, c.res, c.r, c.info.namespace, q, c.table);
  },
  "create": async (h, c) => {
    if (c.key !== undefined) throw methodNotAllowed();
    const body = await readJson(c.req);
    checkKind(c.r, body);
    const namespace = c.info.namespace;
    if (c.r.namespaced) {
      body.metadata ??= {};
      if (body.metadata.namespace && namespace && body.metadata.namespace !== namespace) {
        throw badRequest(
          "the namespace of the provided object does not match the namespace sent on the request",
        );
      }
      body.metadata.namespace = namespace ?? body.metadata.namespace;
      if (!body.metadata.namespace) throw notServed();
    }
    const check = fieldCheck(h, c, "CreateOptions");
    if (!isProtobufBody(c.req)) checkBody(c.r, body, check);
    send(c.res, 201, h.store.create(c.r.plural, body));
  },
  "update": updateObject({}),
  "patch": patchObject({}),
  "delete": async (h, c) => {
    const body = await readJson(c.req, true, true);
    const pre = body?.preconditions ?? {};
    const grace = graceOf(body, c.q);
    send(
      c.res,
      200,
      h.store.delete(c.r.plural, named(c), {
        ...(pre.resourceVersion ? { resourceVersion: pre.resourceVersion } : {}),
        ...(pre.uid ? { uid: pre.uid } : {}),
        ...(grace !== undefined ? { gracePeriodSeconds: grace } : {}),
        ...propagationOf(body, c.q),
      }),
    );
  },
  "deletecollection": async (h, c) => {
    await readJson(c.req, true, true);
    if (c.r.plural === "namespaces") throw methodNotAllowed();
    const listed = h.store.list(c.r.plural, listOptions(c.info.namespace, c.q));
    const items = listed.items.map((o) =>
      h.store.delete(c.r.plural, keyOf(o.metadata?.namespace, o.metadata!.name!))
    );
    send(c.res, 200, {
      kind: c.r.listKind,
      apiVersion: apiVersionOf(c.r),
      metadata: { resourceVersion: String(h.store.revision) },
      items,
    });
  },
  /** `kubectl auth can-i`: the RBAC decision for the caller, on a resource or a path. */
  "create selfsubjectaccessreviews": async (h, c) => {
    const body = await readJson(c.req);
    checkKind(c.r, body);
    const ra = body.spec?.resourceAttributes;
    const nra = body.spec?.nonResourceAttributes;
    if (!ra === !nra) {
      throw invalid("SelfSubjectAccessReview", "authorization.k8s.io", "", [{
        field: "spec.resourceAttributes",
        message:
          "Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
      }]);
    }
    const question: RequestInfo = ra
      ? {
        resourceRequest: true,
        verb: String(ra.verb ?? ""),
        apiGroup: String(ra.group ?? ""),
        apiVersion: String(ra.version ?? ""),
        resource: String(ra.resource ?? ""),
        subresource: ra.subresource || undefined,
        namespace: ra.namespace || undefined,
        name: ra.name || undefined,
        path: "",
      }
      : { resourceRequest: false, verb: String(nra.verb ?? ""), path: String(nra.path ?? "") };
    const d = authorize(h.store, c.user, question);
    send(c.res, 201, {
      kind: "SelfSubjectAccessReview",
      apiVersion: "authorization.k8s.io/v1",
      metadata: { creationTimestamp: null },
      spec: body.spec,
      status: { allowed: d.allowed, ...(d.reason ? { reason: d.reason } : {}) },
    });
  },
  "create serviceaccounts/token": async (h, c) => {
    const body = await readJson(c.req);
    if (body.kind !== undefined && body.kind !== "TokenRequest") {
      throw badRequest(`expected a TokenRequest, got ${String(body.kind)}`);
    }
    const spec = body.spec ?? {};
    const ref = spec.boundObjectRef;
    const minted = await h.mintToken(c.info.namespace!, c.info.name!, {
      ...(Array.isArray(spec.audiences) ? { audiences: spec.audiences } : {}),
      ...(spec.expirationSeconds !== undefined ? { expirationSeconds: spec.expirationSeconds } : {}),
      ...(ref?.name
        ? { boundObjectRef: { kind: ref.kind, name: ref.name, ...(ref.uid ? { uid: ref.uid } : {}) } }
        : {}),
    });
    send(c.res, 201, {
      kind: "TokenRequest",
      apiVersion: "authentication.k8s.io/v1",
      metadata: {
        name: c.info.name,
        namespace: c.info.namespace,
        creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
      },
      spec: {
        audiences: minted.audiences,
        expirationSeconds: minted.expirationSeconds,
        boundObjectRef: ref ?? null,
      },
      status: { token: minted.token, expirationTimestamp: minted.expirationTimestamp },
    });
  },
  "get */scale": (h, c) => send(c.res, 200, h.store.getScale(c.r.plural, named(c))),
  "update */scale": async (h, c) => {
    const key = named(c);
    const body = await readJson(c.req);
    send(c.res, 200, h.store.updateScale(c.r.plural, key, body));
  },
  "patch */scale": async (h, c) => {
    const key = named(c);
    const type = patchTypeOf(c.req.headers["content-type"]);
    if (!type) throw unsupportedPatch(c.req);
    send(c.res, 200, h.store.patchScale(c.r.plural, key, type, await readJson(c.req, true)));
  },
  "get */status": getObject,
  "update */status": updateObject({ subresource: "status" }),
  "patch */status": patchObject({ subresource: "status" }),
  "get pods/log": (h, c) => servePodLog(c.req, c.res, h.store.get("pods", named(c)), c.q, h.opts.podLogFile),
  "create pods/binding": async (h, c) => {
    const body = await readJson(c.req);
    if (body.kind !== undefined && body.kind !== "Binding") {
      throw badRequest(`expected a Binding, got ${String(body.kind)}`);
    }
    const node = body.target?.name;
    if (typeof node !== "string" || !node) {
      throw invalid("Binding", "", c.info.name ?? "", [{
        field: "target.name",
        reason: "FieldValueRequired",
        message: "Required value",
      }]);
    }
    h.store.bind(named(c), node);
    send(c.res, 201, { kind: "Status", apiVersion: "v1", metadata: {}, status: "Success", code: 201 });
  },
};

function listOptions(namespace: string | undefined, q: URLSearchParams) {
  return {
    ...(namespace ? { namespace } : {}),
    ...(q.get("labelSelector") ? { labelSelector: q.get("labelSelector")! } : {}),
    ...(q.get("fieldSelector") ? { fieldSelector: q.get("fieldSelector")! } : {}),
  };
}

function notServed(): ApiError {
  return new ApiError(404, "NotFound", "the server could not find the requested resource");
}

function methodNotAllowed(): ApiError {
  return new ApiError(
    405,
    "MethodNotAllowed",
    "the server does not allow this method on the requested resource",
  );
}

function checkKind(r: ResourceInfo, body: KubeObject): void {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw badRequest("the body of the request must be an object");
  }
  if (body.kind !== undefined && body.kind !== r.kind) {
    throw badRequest(
      `the kind of the provided object (${String(body.kind)}) does not match the resource (${r.kind})`,
    );
  }
  if (body.apiVersion !== undefined && body.apiVersion !== apiVersionOf(r)) {
    throw badRequest(
      `the API version in the data (${String(body.apiVersion)}) does not match the expected API version (${
        apiVersionOf(r)
      })`,
    );
  }
}

// deno-lint-ignore no-explicit-any
function readJson(req: IncomingMessage, anyJson = false, optional = false): Promise<any> {
  const ct = (req.headers["content-type"] ?? "").split(";")[0]!.trim();
  const protobuf = ct === "application/vnd.kubernetes.protobuf";
  if (ct && !ct.includes("json") && !protobuf) {
    req.resume();
    return Promise.reject(unsupportedMedia());
  }
  return new Promise((resolve, reject) => {
    const chunks: Uint8Array[] = [];
    let size = 0;
    req.on("data", (c: Uint8Array) => {
      size += c.length;
      if (size > MAX_BODY) reject(new ApiError(413, "BadRequest", "request entity too large"));
      else chunks.push(c);
    });
    req.on("error", reject);
    req.on("end", () => {
      const bytes = concat(chunks);
      if (protobuf) {
        // kubectl's typed clients (kubectl create namespace) send protobuf and do not fall back to JSON.
        let obj;
        try {
          obj = isProtobuf(bytes) ? decodeProtobufObject(bytes) : undefined;
        } catch (err) {
          return reject(
            new ApiError(400, "BadRequest", `invalid protobuf body: ${String(err)}`, undefined, {
              cause: err,
            }),
          );
        }
        return obj ? resolve(obj) : reject(unsupportedMedia());
      }
      const text = new TextDecoder().decode(bytes);
      if (text.trim() === "") {
        if (optional) return resolve(undefined);
        return reject(badRequest("the request body is empty"));
      }
      try {
        const v = JSON.parse(text);
        if (!anyJson && (typeof v !== "object" || v === null || Array.isArray(v))) {
          throw new Error("not an object");
        }
        resolve(v);
      } catch (err) {
        reject(
          new ApiError(400, "BadRequest", `the request body is not valid JSON: ${String(err)}`, undefined, {
            cause: err,
          }),
        );
      }
    });
  });
}

function unsupportedPatch(req: IncomingMessage): ApiError {
  req.resume();
  return new ApiError(
    415,
    "UnsupportedMediaType",
    `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json`,
  );
}

function unsupportedMedia(): ApiError {
  return new ApiError(
    415,
    "UnsupportedMediaType",
    "the body of the request was in an unknown format - accepted media types include: application/json",
  );
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  return out;
}

function send(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, {
    "content-type": "application/json",
    "content-length": String(new TextEncoder().encode(text).length),
  });
  res.end(text);
}

/** The authorization question of one impersonation: may the caller `impersonate` this user/group/account? */
function impersonation(resource: string, name: string, namespace: string | undefined): ResourceRequest {
  return {
    resourceRequest: true,
    verb: "impersonate",
    apiGroup: "",
    apiVersion: "v1",
    resource,
    subresource: undefined,
    namespace,
    name,
    path: "",
  };
}

/** DeleteOptions.propagationPolicy from the body or the query (`kubectl delete --cascade=orphan`). */
function propagationOf(
  body: { propagationPolicy?: unknown; orphanDependents?: unknown } | undefined,
  q: URLSearchParams,
): { propagationPolicy?: "Orphan" | "Background" | "Foreground" } {
  const v = body?.propagationPolicy ?? q.get("propagationPolicy") ??
    (body?.orphanDependents === true || q.get("orphanDependents") === "true" ? "Orphan" : undefined);
  return v === "Orphan" || v === "Background" || v === "Foreground" ? { propagationPolicy: v } : {};
}

/** DeleteOptions.gracePeriodSeconds from the body or the query (`kubectl delete --grace-period`). */
function graceOf(body: { gracePeriodSeconds?: unknown } | undefined, q: URLSearchParams): number | undefined {
  const v = body?.gracePeriodSeconds ?? q.get("gracePeriodSeconds") ?? undefined;
  const n = Number(v);
  return v === undefined || v === null || !Number.isFinite(n) || n < 0 ? undefined : n;
}
