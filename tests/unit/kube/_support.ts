/** Shared helpers of the watch-layer tests: a lab API server on loopback in a temp dir, and waiting. */
import assert from "node:assert/strict";
import { type ApiServer, startApiServer, type Store } from "../../../lab/apiserver/mod.ts";
import { Bus, type ResourceEvent, type ResourceKind } from "../../../core/bus.ts";
import { getLogger, MemorySink } from "../../../core/log.ts";
import { Metrics } from "../../../core/metrics.ts";
import {
  FetchTransport,
  loadKubeConfig,
  NodeHttpTransport,
  WatchLayer,
  type WatchLayerOptions,
} from "../../../core/kube/mod.ts";

export interface Lab {
  server: ApiServer;
  dir: string;
  kubeconfigPath: string;
  /** Stops the server and starts it again on the same port with the same store. */
  restart(between?: (store: Store) => void | Promise<void>, replacement?: Store): Promise<void>;
  close(): Promise<void>;
}

export interface LabOptions {
  bookmarkIntervalMs?: number;
  auth?: "token" | "cert";
  maxWatchBufferBytes?: number;
}

export async function startLab(opts: LabOptions = {}): Promise<Lab> {
  const dir = await Deno.makeTempDir({ prefix: "kube-test-" });
  let server = await startApiServer({
    stateDir: dir,
    ...(opts.bookmarkIntervalMs ? { bookmarkIntervalMs: opts.bookmarkIntervalMs } : {}),
    ...(opts.maxWatchBufferBytes ? { maxWatchBufferBytes: opts.maxWatchBufferBytes } : {}),
  });
  const kubeconfigPath = await server.writeKubeconfig(`${dir}/kubeconfig`, { auth: opts.auth ?? "token" });
  const lab: Lab = {
    get server() {
      return server;
    },
    dir,
    kubeconfigPath,
    async restart(between, replacement) {
      const { port } = server;
      const store = replacement ?? server.store;
      await server.stop();
      await between?.(store);
      server = await startApiServer({
        stateDir: dir,
        port,
        store,
        ...(opts.bookmarkIntervalMs ? { bookmarkIntervalMs: opts.bookmarkIntervalMs } : {}),
        ...(opts.maxWatchBufferBytes ? { maxWatchBufferBytes: opts.maxWatchBufferBytes } : {}),
      });
    },
    async close() {
      await server.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
  return lab;
}

export interface Watched {
  layer: WatchLayer;
  bus: Bus;
  metrics: Metrics;
  events: ResourceEvent[];
  logs: MemorySink;
}

export interface WatchOptions {
  backoffMs?: number;
  transport?: "fetch" | "node";
  /** Set last, over the defaults above. */
  layer?: Partial<WatchLayerOptions>;
}

export function watchLayerFor(
  kubeconfigPath: string,
  resources: readonly ResourceKind[],
  opts: WatchOptions = {},
): Watched {
  const bus = new Bus();
  const metrics = new Metrics();
  const logs = new MemorySink();
  const events: ResourceEvent[] = [];
  for (const r of resources) bus.onResource(r, (e) => events.push(e as ResourceEvent));
  const kubeConfig = loadKubeConfig({ kubeconfig: kubeconfigPath, master: "" });
  const transport = opts.transport === "node"
    ? new NodeHttpTransport(kubeConfig)
    : opts.transport === "fetch"
    ? new FetchTransport(kubeConfig)
    : undefined;
  const layer = new WatchLayer({
    kubeConfig,
    ...(transport ? { transport } : {}),
    bus,
    log: getLogger({}, logs),
    metrics,
    backoff: { initialMs: opts.backoffMs ?? 50, maxMs: 200 },
    ...opts.layer,
  });
  return { layer, bus, metrics, events, logs };
}

/** Starts watch layers for {@link withLab}: on the lab's kubeconfig unless another is given. */
export type WatchOn = (
  resources: readonly ResourceKind[],
  opts?: WatchOptions & { kubeconfigPath?: string },
) => Watched;

/**
 * Runs `fn` with a lab API server and `watch` to start watch layers on it; stops every such layer,
 * then the server, and removes the temp dir, even when `fn` fails.
 */
export async function withLab(
  opts: LabOptions,
  fn: (lab: Lab, watch: WatchOn) => Promise<void>,
): Promise<void> {
  const lab = await startLab(opts);
  const layers: WatchLayer[] = [];
  try {
    await fn(lab, (resources, o = {}) => {
      const w = watchLayerFor(o.kubeconfigPath ?? lab.kubeconfigPath, resources, o);
      layers.push(w.layer);
      return w;
    });
  } finally {
    for (const layer of layers) await layer.stop();
    await lab.close();
  }
}

/** Starts `layer`'s informers for `resources` and asserts they sync within 10 s. */
export async function startSynced(layer: WatchLayer, resources: readonly ResourceKind[]): Promise<void> {
  layer.start(resources);
  assert.equal(await layer.waitForSync(resources, 10_000), true);
}

/** Polls `cond` every 10 ms until it holds; throws after `ms` with `what` in the message. */
export async function until(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export const pod = (ns: string, name: string, labels: Record<string, string> = {}) => ({
  metadata: { name, namespace: ns, labels },
  spec: { containers: [{ name: "c", image: "busybox:1.36" }] },
});

export const service = (ns: string, name: string, port = 80) => ({
  metadata: { name, namespace: ns },
  spec: { selector: { app: name }, ports: [{ port }] },
});
