/**
 * The lab controllers (node CIDR allocation, scheduler, EndpointSlices) against the lab API server on
 * loopback, through the lab's own REST client and informers: no root, no namespaces.
 */
import assert from "node:assert/strict";
import { startApiServer } from "../../../lab/apiserver/mod.ts";
import {
  EndpointSliceController,
  Informer,
  type KObject,
  KubeClient,
  NodeIpamController,
  Scheduler,
  SERVICE_NAME_LABEL,
} from "../../../lab/mod.ts";
import { getLogger, MemorySink } from "../../../core/mod.ts";

async function eventually<T>(what: string, fn: () => Promise<T | undefined | false>, ms = 5000): Promise<T> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const v = await fn().catch(() => undefined);
    if (v !== undefined && v !== false) return v;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`not within ${ms} ms: ${what}`);
}

async function withControlPlane(
  fn: (c: KubeClient) => Promise<void>,
  gracefulPodDeletion = false,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "krl-ctl-" });
  const api = await startApiServer({
    stateDir: dir,
    serviceCidr: "172.16.0.0/16",
    gracefulPodDeletion,
    log: getLogger({}, new MemorySink()),
  });
  const client = new KubeClient({ server: api.url, caCert: api.caCertPem, token: api.token });
  const log = getLogger({}, new MemorySink());
  const nodes = new Informer<KObject>(client, "/api/v1/nodes");
  const pods = new Informer<KObject>(client, "/api/v1/pods");
  const services = new Informer<KObject>(client, "/api/v1/services");
  const slices = new Informer<KObject>(client, "/apis/discovery.k8s.io/v1/endpointslices");
  const ctls = [
    new NodeIpamController(client, nodes, log),
    new Scheduler(client, pods, nodes, log),
    new EndpointSliceController(client, services, pods, slices, log),
  ];
  try {
    await Promise.all([nodes, pods, services, slices].map((i) => i.start()));
    await client.create("/api/v1/namespaces", {
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: "shop" },
    });
    await fn(client);
  } finally {
    for (const c of ctls) c.stop();
    for (const i of [nodes, pods, services, slices]) i.stop();
    await new Promise((r) => setTimeout(r, 50));
    client.close();
    await api.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

const readyNode = (name: string): KObject => ({
  apiVersion: "v1",
  kind: "Node",
  metadata: { name },
  status: {
    conditions: [{ type: "Ready", status: "True" }],
    addresses: [{ type: "InternalIP", address: "192.168.1.100" }],
  },
});

async function addReadyNode(c: KubeClient, name: string): Promise<void> {
  await c.create("/api/v1/nodes", readyNode(name));
  await c.mergePatch(`/api/v1/nodes/${name}/status`, { status: readyNode(name).status });
}

const pod = (name: string, extra: Record<string, unknown> = {}): KObject => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: { name, namespace: "shop", labels: { app: "web" } },
  spec: {
    containers: [{ name: "c", image: "agnhost", ports: [{ name: "http", containerPort: 8080 }] }],
    ...extra,
  },
});

async function setPodStatus(c: KubeClient, name: string, ip: string, ready: boolean): Promise<void> {
  await c.mergePatch(`/api/v1/namespaces/shop/pods/${name}/status`, {
    status: {
      phase: "Running",
      podIP: ip,
      conditions: [{ type: "Ready", status: ready ? "True" : "False" }],
    },
  });
}

async function endpoints(c: KubeClient): Promise<string> {
  const l = await c.list(
    `/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices?labelSelector=${SERVICE_NAME_LABEL}%3Dweb`,
  );
  return l.items.flatMap((
    s,
  ) => ((s.endpoints ?? []) as Array<{ addresses: string[]; conditions: { ready: boolean } }>))
    .map((e) => `${e.addresses[0]}=${e.conditions.ready}`).sort().join(" ");
}

Deno.test({
  name: "nodes get pod CIDRs 10.1.N.0/24 as kube-controller-manager --allocate-node-cidrs would",
  async fn() {
    await withControlPlane(async (c) => {
      for (const n of ["kube-node2", "kube-node1", "worker"]) await addReadyNode(c, n);
      const cidrs = await eventually("every node has a pod CIDR", async () => {
        const l = await c.list("/api/v1/nodes");
        const m = Object.fromEntries(l.items.map((n) => [n.metadata.name, n.spec?.podCIDR]));
        return Object.values(m).every(Boolean) && m;
      });
      assert.deepEqual(cidrs, {
        "kube-node1": "10.1.1.0/24",
        "kube-node2": "10.1.2.0/24",
        "worker": "10.1.3.0/24",
      });
      const n1 = await c.get("/api/v1/nodes/kube-node1");
      assert.deepEqual(n1.spec.podCIDRs, ["10.1.1.0/24"]);
    });
  },
});

Deno.test({
  name: "the scheduler spreads unbound pods across Ready nodes and leaves bound ones alone",
  async fn() {
    await withControlPlane(async (c) => {
      await addReadyNode(c, "kube-node1");
      await addReadyNode(c, "kube-node2");
      await c.create("/api/v1/namespaces/shop/pods", pod("pinned", { nodeName: "kube-node2" }));
      for (const n of ["a", "b", "c"]) await c.create("/api/v1/namespaces/shop/pods", pod(n));
      const placed = await eventually("every pod is bound", async () => {
        const l = await c.list("/api/v1/namespaces/shop/pods");
        return l.items.every((p) => p.spec?.nodeName) && l.items.map((p) => p.spec.nodeName as string);
      });
      const count = (n: string) => placed.filter((x) => x === n).length;
      assert.equal(count("kube-node1") + count("kube-node2"), 4);
      assert.equal(count("kube-node1"), 2);
      assert.equal((await c.get("/api/v1/namespaces/shop/pods/pinned")).spec.nodeName, "kube-node2");
    });
  },
});

Deno.test({
  name: "EndpointSlices follow pod readiness, deletion and service deletion",
  async fn() {
    await withControlPlane(async (c) => {
      await c.create("/api/v1/namespaces/shop/services", {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name: "web", namespace: "shop" },
        spec: { selector: { app: "web" }, ports: [{ name: "http", port: 80, targetPort: "http" }] },
      });
      await eventually(
        "an empty slice exists",
        async () =>
          (await endpoints(c)) === "" &&
          (await c.list("/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices")).items.length === 1,
      );
      for (const n of ["a", "b"]) {
        await c.create("/api/v1/namespaces/shop/pods", pod(n, { nodeName: "kube-node1" }));
      }
      await setPodStatus(c, "a", "10.1.1.2", true);
      await setPodStatus(c, "b", "10.1.1.3", false);
      await eventually("a ready, b not", async () => (await endpoints(c)) === "10.1.1.2=true 10.1.1.3=false");
      await setPodStatus(c, "b", "10.1.1.3", true);
      await eventually("both ready", async () => (await endpoints(c)) === "10.1.1.2=true 10.1.1.3=true");
      const slice = (await c.list("/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices")).items[0]!;
      assert.deepEqual(slice.ports, [{ name: "http", port: 8080, protocol: "TCP" }]);
      await c.delete("/api/v1/namespaces/shop/pods/a");
      await eventually("a is gone", async () => (await endpoints(c)) === "10.1.1.3=true");
      await c.mergePatch("/api/v1/namespaces/shop/pods/b", { metadata: { labels: { app: "other" } } });
      await eventually("b no longer matches", async () => (await endpoints(c)) === "");
      await c.delete("/api/v1/namespaces/shop/services/web");
      await eventually(
        "the slices of a deleted service are removed",
        async () =>
          (await c.list("/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices")).items.length === 0,
      );
    });
  },
});

Deno.test("a deleted pod on a node is a terminating, serving endpoint until it is deleted with grace 0", async () => {
  await withControlPlane(async (c) => {
    await c.create("/api/v1/namespaces/shop/services", {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "web", namespace: "shop" },
      spec: { selector: { app: "web" }, ports: [{ name: "http", port: 80, targetPort: 8080 }] },
    });
    await c.create("/api/v1/namespaces/shop/pods", pod("a", { nodeName: "kube-node1" }));
    await setPodStatus(c, "a", "10.1.1.2", true);
    await eventually("a is ready", async () => (await endpoints(c)) === "10.1.1.2=true");
    await c.delete("/api/v1/namespaces/shop/pods/a");
    const terminating = await c.get("/api/v1/namespaces/shop/pods/a");
    assert.ok(terminating.metadata.deletionTimestamp, "the pod stays, marked for deletion");
    assert.equal(terminating.metadata.deletionGracePeriodSeconds, 30);
    const conds = async () => {
      const l = await c.list("/apis/discovery.k8s.io/v1/namespaces/shop/endpointslices");
      return JSON.stringify(
        l.items.flatMap((s) => (s.endpoints ?? []) as Array<{ conditions: unknown }>).map((e) =>
          e.conditions
        ),
      );
    };
    await eventually(
      "terminating endpoint",
      async () => (await conds()) === JSON.stringify([{ ready: false, serving: true, terminating: true }]),
    );
    await c.delete("/api/v1/namespaces/shop/pods/a", {
      apiVersion: "v1",
      kind: "DeleteOptions",
      gracePeriodSeconds: 0,
    });
    await eventually("the endpoint is gone with the pod", async () => (await endpoints(c)) === "");
  }, true);
});
