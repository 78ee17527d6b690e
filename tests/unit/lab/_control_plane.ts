/**
 * A lab control plane on loopback for the workload tests: the lab API server, every lab controller
 * (scheduler, EndpointSlices, ReplicaSets, Deployments, DaemonSets) and a stand-in kubelet that does what
 * the lab kubelet does to the API objects (pods on a node turn Running and Ready with an IP; a deleted
 * pod stays Terminating, still serving, for `terminationMs`, then is removed with grace 0), without
 * starting any process.
 */
import { type ApiServer, startApiServer } from "../../../lab/apiserver/mod.ts";
import {
  DaemonSetController,
  DeploymentController,
  EndpointSliceController,
  Informer,
  type KObject,
  KubeClient,
  ReplicaSetController,
  Scheduler,
} from "../../../lab/mod.ts";
import { getLogger, MemorySink } from "../../../core/mod.ts";

export interface ControlPlane {
  api: ApiServer;
  client: KubeClient;
  dir: string;
  /** Images whose pods never become Ready (a broken rollout). */
  brokenImages: Set<string>;
  addNode(name: string, opts?: { labels?: Record<string, string>; taints?: unknown[] }): Promise<void>;
}

export async function eventually<T>(
  what: string,
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  ms = 10_000,
): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`not within ${ms} ms: ${what}${last ? ` (last error: ${last})` : ""}`);
}

/** The stand-in kubelet: every pod bound to a node is started (Ready) unless its image is broken. */
class FakeKubelet {
  #ip = 2;
  #timers = new Set<ReturnType<typeof setTimeout>>();
  readonly #pods: Informer<KObject>;
  constructor(client: KubeClient, brokenImages: Set<string>, terminationMs: number) {
    this.#pods = new Informer<KObject>(client, "/api/v1/pods");
    const handled = new Set<string>();
    this.#pods.on((type, p) => {
      if (type === "DELETED" || !p.spec?.nodeName) return;
      const path = `/api/v1/namespaces/${p.metadata.namespace}/pods/${p.metadata.name}`;
      if (p.metadata.deletionTimestamp) {
        const id = `${p.metadata.uid}/deleting`;
        if (handled.has(id)) return;
        handled.add(id);
        const t = setTimeout(() => {
          this.#timers.delete(t);
          client.delete(path, { gracePeriodSeconds: 0 }).catch(() => {});
        }, terminationMs);
        this.#timers.add(t);
        return;
      }
      if (p.status?.phase === "Running" || handled.has(`${p.metadata.uid}/started`)) return;
      handled.add(`${p.metadata.uid}/started`);
      const ready = !(p.spec.containers ?? []).some((c: { image: string }) => brokenImages.has(c.image));
      const ip = `10.1.${Math.floor(this.#ip / 250)}.${(this.#ip++ % 250) + 2}`;
      const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
      client.mergePatch(`${path}/status`, {
        status: {
          phase: "Running",
          podIP: ip,
          podIPs: [{ ip }],
          conditions: [{ type: "Ready", status: ready ? "True" : "False", lastTransitionTime: now }],
          containerStatuses: (p.spec.containers ?? []).map((c: { name: string; image: string }) => ({
            name: c.name,
            image: c.image,
            ready,
            restartCount: 0,
            state: { running: { startedAt: now } },
          })),
        },
      }).catch(() => {});
    });
  }
  start(): Promise<void> {
    return this.#pods.start();
  }
  stop(): void {
    this.#pods.stop();
    for (const t of this.#timers) clearTimeout(t);
  }
}

export async function withControlPlane(
  fn: (cp: ControlPlane) => Promise<void>,
  opts: { terminationMs?: number } = {},
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "krl-workloads-" });
  const api = await startApiServer({
    stateDir: dir,
    serviceCidr: "172.16.0.0/16",
    gracefulPodDeletion: true,
    log: getLogger({}, new MemorySink()),
  });
  const client = new KubeClient({ server: api.url, caCert: api.caCertPem, token: api.token });
  const log = getLogger({}, new MemorySink());
  const inf = (path: string) => new Informer<KObject>(client, path);
  const nodes = inf("/api/v1/nodes"), pods = inf("/api/v1/pods"), services = inf("/api/v1/services");
  const slices = inf("/apis/discovery.k8s.io/v1/endpointslices");
  const deployments = inf("/apis/apps/v1/deployments"), replicasets = inf("/apis/apps/v1/replicasets");
  const daemonsets = inf("/apis/apps/v1/daemonsets");
  const informers = [nodes, pods, services, slices, deployments, replicasets, daemonsets];
  const ctls = [
    new Scheduler(client, pods, nodes, log),
    new EndpointSliceController(client, services, pods, slices, log),
    new ReplicaSetController(client, replicasets, pods, log),
    new DeploymentController(client, deployments, replicasets, pods, log),
    new DaemonSetController(client, daemonsets, pods, nodes, log),
  ];
  const brokenImages = new Set<string>();
  const kubelet = new FakeKubelet(client, brokenImages, opts.terminationMs ?? 300);
  const addNode: ControlPlane["addNode"] = async (name, o = {}) => {
    await client.create("/api/v1/nodes", {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name, labels: { "kubernetes.io/hostname": name, ...(o.labels ?? {}) } },
      spec: { ...(o.taints ? { taints: o.taints } : {}) },
    });
    await client.mergePatch(`/api/v1/nodes/${name}/status`, {
      status: { conditions: [{ type: "Ready", status: "True" }] },
    });
  };
  try {
    await Promise.all([...informers.map((i) => i.start()), kubelet.start()]);
    await fn({ api, client, dir, brokenImages, addNode });
  } finally {
    kubelet.stop();
    for (const c of ctls) c.stop();
    for (const i of informers) i.stop();
    await new Promise((r) => setTimeout(r, 50));
    client.close();
    await api.stop();
    await Deno.remove(dir, { recursive: true });
  }
}
