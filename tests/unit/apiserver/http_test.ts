// deno-lint-ignore-file no-explicit-any
import assert from "node:assert/strict";
import { type ApiServer, startApiServer } from "../../../lab/apiserver/mod.ts";

interface Ctx {
  server: ApiServer;
  client: Deno.HttpClient;
  /** A request with the bearer token; returns status and parsed JSON body. */
  api(path: string, init?: RequestInit & { token?: string | null }): Promise<{ status: number; body: any }>;
  /** Opens a watch and collects `n` events (or until the server ends the stream). */
  watch(path: string, n: number): Promise<{ type: string; object: any }[]>;
}

async function withServer(
  fn: (c: Ctx) => void | Promise<void>,
  opts: { bookmarkIntervalMs?: number; kubernetesService?: boolean } = {},
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "apiserver-test-" });
  const server = await startApiServer({ stateDir: dir, serviceCidr: "172.16.0.0/16", ...opts });
  const client = Deno.createHttpClient({ caCerts: [server.caCertPem] });
  const api: Ctx["api"] = async (path, init = {}) => {
    const headers = new Headers(init.headers);
    if (init.token !== null) headers.set("Authorization", `Bearer ${init.token ?? server.token}`);
    if (init.body && !headers.has("content-type")) headers.set("content-type", "application/json");
    const res = await fetch(server.url + path, { ...init, headers, client });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };
  const watch: Ctx["watch"] = async (path, n) => {
    const res = await fetch(server.url + path, {
      headers: { Authorization: `Bearer ${server.token}` },
      client,
    });
    assert.equal(res.status, 200);
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    const out: { type: string; object: any }[] = [];
    let buf = "";
    while (out.length < n) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n")) >= 0 && out.length < n) {
        out.push(JSON.parse(buf.slice(0, i)));
        buf = buf.slice(i + 1);
      }
    }
    await reader.cancel();
    return out;
  };
  try {
    await fn({ server, client, api, watch });
  } finally {
    client.close();
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
}

const podBody = (name: string, labels: Record<string, string> = {}) =>
  JSON.stringify({
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, labels },
    spec: { containers: [{ name: "c", image: "busybox:1.36" }] },
  });

Deno.test("api server answers discovery as kubectl expects", () =>
  withServer(async ({ api }) => {
    assert.equal((await api("/version")).body.major, "1");
    assert.deepEqual((await api("/api")).body.versions, ["v1"]);
    const groups = (await api("/apis")).body.groups.map((g: { name: string }) => g.name).sort();
    assert.deepEqual(groups, [
      "apps",
      "authorization.k8s.io",
      "discovery.k8s.io",
      "networking.k8s.io",
      "rbac.authorization.k8s.io",
    ]);
    const core = (await api("/api/v1")).body.resources.map((r: { name: string }) => r.name);
    for (
      const r of ["pods", "pods/status", "services", "services/status", "nodes", "nodes/status", "namespaces"]
    ) assert.ok(core.includes(r), r);
    const disc = (await api("/apis/discovery.k8s.io/v1")).body;
    assert.equal(disc.groupVersion, "discovery.k8s.io/v1");
    assert.equal(disc.resources[0].kind, "EndpointSlice");
    // An empty Swagger 2.0 document: kubectl leaves kinds it finds no schema for to the server's validation.
    const v2 = await api("/openapi/v2");
    assert.equal(v2.status, 200);
    assert.deepEqual([v2.body.swagger, v2.body.paths], ["2.0", {}]);
    const apps = (await api("/apis/apps/v1")).body.resources;
    const scale = apps.find((r: { name: string }) => r.name === "deployments/scale");
    assert.deepEqual([scale.group, scale.version, scale.kind], ["autoscaling", "v1", "Scale"]);
    const token = (await api("/api/v1")).body.resources.find((r: { name: string }) =>
      r.name === "serviceaccounts/token"
    );
    assert.deepEqual([token.group, token.kind, token.verbs], ["authentication.k8s.io", "TokenRequest", [
      "create",
    ]]);
    assert.equal((await api("/apis/batch/v1")).status, 404);
  }));

Deno.test("api server refuses a request without credentials or with a bad token with 401 Status", () =>
  withServer(async ({ api }) => {
    const none = await api("/api/v1/pods", { token: null });
    assert.equal(none.status, 401);
    assert.equal(none.body.kind, "Status");
    assert.equal(none.body.reason, "Unauthorized");
    assert.equal((await api("/api/v1/pods", { token: "wrong" })).status, 401);
    assert.equal((await api("/api/v1/pods")).status, 200);
  }));

Deno.test("api server accepts a client certificate signed by its CA instead of a token", () =>
  withServer(async ({ server }) => {
    const client = Deno.createHttpClient({
      caCerts: [server.caCertPem],
      cert: await Deno.readTextFile(server.clientCertPath),
      key: await Deno.readTextFile(server.clientKeyPath),
    });
    try {
      const res = await fetch(server.url + "/api/v1/namespaces", { client });
      assert.equal(res.status, 200);
      assert.equal((await res.json()).items.length, 2);
    } finally {
      client.close();
    }
  }));

Deno.test("api server creates, gets, replaces and deletes with the real Status errors", () =>
  withServer(async ({ api }) => {
    const created = await api("/api/v1/namespaces/default/pods", { method: "POST", body: podBody("a") });
    assert.equal(created.status, 201);
    assert.equal(created.body.metadata.namespace, "default");
    const dup = await api("/api/v1/namespaces/default/pods", { method: "POST", body: podBody("a") });
    assert.equal(dup.status, 409);
    assert.equal(dup.body.reason, "AlreadyExists");
    const stale = { ...created.body, metadata: { ...created.body.metadata, resourceVersion: "1" } };
    const conflict = await api("/api/v1/namespaces/default/pods/a", {
      method: "PUT",
      body: JSON.stringify(stale),
    });
    assert.equal(conflict.status, 409);
    assert.equal(conflict.body.reason, "Conflict");
    const invalid = await api("/api/v1/namespaces/default/pods", {
      method: "POST",
      body: JSON.stringify({ metadata: { name: "x" }, spec: {} }),
    });
    assert.equal(invalid.status, 422);
    assert.equal(invalid.body.reason, "Invalid");
    const noNs = await api("/api/v1/namespaces/ghost/pods", { method: "POST", body: podBody("a") });
    assert.equal(noNs.status, 404);
    const del = await api("/api/v1/namespaces/default/pods/a", { method: "DELETE" });
    assert.equal(del.status, 200);
    const gone = await api("/api/v1/namespaces/default/pods/a");
    assert.equal(gone.status, 404);
    assert.equal(gone.body.reason, "NotFound");
    assert.equal(gone.body.message, 'pods "a" not found');
  }));

Deno.test("api server patches with merge, strategic merge and JSON patch, and patches status through the subresource", () =>
  withServer(async ({ api }) => {
    await api("/api/v1/namespaces/default/pods", { method: "POST", body: podBody("a", { app: "web" }) });
    const merge = await api("/api/v1/namespaces/default/pods/a", {
      method: "PATCH",
      headers: { "content-type": "application/merge-patch+json" },
      body: JSON.stringify({ metadata: { labels: { tier: "fe", app: null } } }),
    });
    assert.deepEqual(merge.body.metadata.labels, { tier: "fe" });
    const smp = await api("/api/v1/namespaces/default/pods/a", {
      method: "PATCH",
      headers: { "content-type": "application/strategic-merge-patch+json" },
      body: JSON.stringify({ spec: { containers: [{ name: "c", image: "busybox:1.37" }] } }),
    });
    assert.deepEqual(
      smp.body.spec.containers.map((c: { name: string; image: string }) => `${c.name}=${c.image}`),
      ["c=busybox:1.37"],
    );
    // A pod's spec is immutable but for images (and a few fields): adding a container is refused.
    const added = await api("/api/v1/namespaces/default/pods/a", {
      method: "PATCH",
      headers: { "content-type": "application/strategic-merge-patch+json" },
      body: JSON.stringify({ spec: { containers: [{ name: "side", image: "envoy:1" }] } }),
    });
    assert.equal(added.status, 422);
    assert.match(added.body.message, /pod updates may not change fields/);
    const jp = await api("/api/v1/namespaces/default/pods/a", {
      method: "PATCH",
      headers: { "content-type": "application/json-patch+json" },
      body: JSON.stringify([{ op: "replace", path: "/spec/containers/0/image", value: "busybox:1.38" }]),
    });
    assert.equal(jp.body.spec.containers[0].image, "busybox:1.38");
    const status = await api("/api/v1/namespaces/default/pods/a/status", {
      method: "PATCH",
      headers: { "content-type": "application/merge-patch+json" },
      body: JSON.stringify({ status: { phase: "Running", podIP: "10.1.1.2" } }),
    });
    assert.equal(status.body.status.podIP, "10.1.1.2");
    const unsupported = await api("/api/v1/namespaces/default/pods/a", {
      method: "PATCH",
      headers: { "content-type": "application/apply-patch+yaml" },
      body: "{}",
    });
    assert.equal(unsupported.status, 415);
  }));

Deno.test("api server lists with label and field selectors and pages with limit/continue", () =>
  withServer(async ({ api, server }) => {
    server.store.create("namespaces", { metadata: { name: "x" } });
    for (let i = 0; i < 5; i++) {
      server.store.create("pods", {
        metadata: { name: `p${i}`, namespace: i % 2 ? "x" : "default", labels: { n: String(i % 2) } },
        spec: { nodeName: `node${i % 3}`, containers: [{ name: "c", image: "i:1" }] },
      });
    }
    const names = (b: any) => b.items.map((p: any) => p.metadata.name);
    assert.deepEqual(names((await api("/api/v1/pods?labelSelector=n%3D1")).body), ["p1", "p3"]);
    assert.deepEqual(names((await api("/api/v1/namespaces/x/pods")).body), ["p1", "p3"]);
    assert.deepEqual(names((await api("/api/v1/pods?fieldSelector=spec.nodeName%3Dnode0")).body), [
      "p0",
      "p3",
    ]);
    assert.deepEqual(names((await api("/api/v1/pods?fieldSelector=metadata.name%3Dp4")).body), ["p4"]);
    const page1 = (await api("/api/v1/pods?limit=3")).body;
    assert.equal(page1.kind, "PodList");
    assert.deepEqual(names(page1), ["p0", "p2", "p4"]);
    const page2 =
      (await api(`/api/v1/pods?limit=3&continue=${encodeURIComponent(page1.metadata.continue)}`)).body;
    assert.deepEqual(names(page2), ["p1", "p3"]);
    assert.equal(page2.metadata.continue, undefined);
  }));

Deno.test("api server watch replays changes after the given resourceVersion and streams new ones", () =>
  withServer(async ({ api, watch, server }) => {
    const list = (await api("/api/v1/namespaces/default/pods")).body;
    server.store.create("pods", JSON.parse(podBody("a")));
    server.store.create("pods", JSON.parse(podBody("b")));
    const pending = watch(
      `/api/v1/namespaces/default/pods?watch=true&resourceVersion=${list.metadata.resourceVersion}`,
      3,
    );
    await new Promise((r) => setTimeout(r, 100));
    server.store.delete("pods", "default/a");
    const events = await pending;
    assert.deepEqual(events.map((e) => `${e.type} ${e.object.metadata.name}`), [
      "ADDED a",
      "ADDED b",
      "DELETED a",
    ]);
  }));

Deno.test("api server watch without resourceVersion starts with the current objects as ADDED", () =>
  withServer(async ({ watch, server }) => {
    server.store.create("pods", JSON.parse(podBody("a")));
    const events = await watch("/api/v1/pods?watch=1", 1);
    assert.equal(events[0]!.type, "ADDED");
    assert.equal(events[0]!.object.metadata.name, "a");
  }));

Deno.test("api server watch from a compacted resourceVersion answers an ERROR event with 410 Expired", () =>
  withServer(async ({ watch, server }) => {
    const a = server.store.create("pods", JSON.parse(podBody("a")));
    server.store.create("pods", JSON.parse(podBody("b")));
    server.store.compact();
    const events = await watch(
      `/api/v1/pods?watch=true&resourceVersion=${Number(a.metadata!.resourceVersion) - 1}`,
      1,
    );
    assert.equal(events[0]!.type, "ERROR");
    assert.equal(events[0]!.object.code, 410);
    assert.equal(events[0]!.object.reason, "Expired");
  }));

Deno.test("api server watch sends bookmarks carrying the current revision when asked for them", () =>
  withServer(async ({ watch, server }) => {
    const rv = server.store.revision;
    // A change to another resource moves the revision: the bookmark lets a pod watcher skip past it.
    server.store.create("services", {
      metadata: { name: "s", namespace: "default" },
      spec: { ports: [{ port: 80 }] },
    });
    const events = await watch(`/api/v1/pods?watch=true&allowWatchBookmarks=true&resourceVersion=${rv}`, 1);
    assert.equal(events[0]!.type, "BOOKMARK");
    assert.equal(events[0]!.object.kind, "Pod");
    assert.equal(events[0]!.object.metadata.resourceVersion, String(server.store.revision));
  }, { bookmarkIntervalMs: 50 }));

Deno.test("api server ends a watch after timeoutSeconds", () =>
  withServer(async ({ watch, server }) => {
    const events = await watch(
      `/api/v1/pods?watch=true&timeoutSeconds=1&resourceVersion=${server.store.revision}`,
      1,
    );
    assert.deepEqual(events, []);
    assert.equal(server.openWatches, 0);
  }));

Deno.test("api server allocates service cluster IPs from its service CIDR over HTTP", () =>
  withServer(async ({ api }) => {
    const body = (name: string) =>
      JSON.stringify({ metadata: { name }, spec: { type: "NodePort", ports: [{ port: 80 }] } });
    const a = (await api("/api/v1/namespaces/default/services", { method: "POST", body: body("a") })).body;
    const b = (await api("/api/v1/namespaces/default/services", { method: "POST", body: body("b") })).body;
    assert.match(a.spec.clusterIP, /^172\.16\./);
    assert.notEqual(a.spec.clusterIP, b.spec.clusterIP);
    assert.ok(a.spec.ports[0].nodePort >= 30000 && a.spec.ports[0].nodePort <= 32767);
    assert.notEqual(a.spec.ports[0].nodePort, b.spec.ports[0].nodePort);
  }));

Deno.test("api server restarts on the same port with the same store and credentials", async () => {
  const dir = await Deno.makeTempDir({ prefix: "apiserver-test-" });
  let server = await startApiServer({ stateDir: dir });
  const client = Deno.createHttpClient({ caCerts: [server.caCertPem] });
  try {
    const { port, store, token } = server;
    await server.stop();
    store.create("pods", JSON.parse(podBody("while-down")));
    server = await startApiServer({ stateDir: dir, port, store });
    assert.equal(server.token, token);
    const res = await fetch(`${server.url}/api/v1/namespaces/default/pods/while-down`, {
      headers: { Authorization: `Bearer ${token}` },
      client,
    });
    assert.equal(res.status, 200);
    await res.body?.cancel();
  } finally {
    client.close();
    await server.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("api server answers kubectl's Table requests with the columns kubectl prints", () =>
  withServer(async ({ api, server }) => {
    server.store.create("pods", {
      metadata: { name: "web", namespace: "default" },
      spec: { nodeName: "node1", containers: [{ name: "c", image: "i:1" }] },
      status: { podIP: "10.1.1.2" },
    });
    const accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json";
    const t = (await api("/api/v1/namespaces/default/pods", { headers: { accept } })).body;
    assert.equal(t.kind, "Table");
    const cols = t.columnDefinitions.map((c: { name: string }) => c.name);
    assert.deepEqual(cols.slice(0, 5), ["Name", "Ready", "Status", "Restarts", "Age"]);
    const row = t.rows[0];
    assert.equal(row.cells[cols.indexOf("IP")], "10.1.1.2");
    assert.equal(row.cells[cols.indexOf("Node")], "node1");
    assert.equal(row.object.kind, "PartialObjectMetadata");
    assert.equal(row.object.metadata.name, "web");
    const one = (await api("/api/v1/namespaces/default/pods/web", { headers: { accept } })).body;
    assert.equal(one.rows.length, 1);
  }));

Deno.test("api server can publish the kubernetes Service and its EndpointSlice at its own address", () =>
  withServer(({ server }) => {
    const svc = server.store.get("services", "default/kubernetes");
    assert.equal(svc.spec.clusterIP, "172.16.0.1");
    assert.equal(svc.spec.ports[0].port, 443);
    const slice = server.store.get("endpointslices", "default/kubernetes");
    assert.deepEqual(slice.endpoints[0].addresses, ["127.0.0.1"]);
    assert.equal(slice.ports[0].port, server.port);
  }, { kubernetesService: true }));

Deno.test("api server binds a pod to a node through pods/binding once, and refuses a second binding", () =>
  withServer(async ({ api, server }) => {
    server.store.create("pods", JSON.parse(podBody("a")));
    const bind = (node: string) =>
      api("/api/v1/namespaces/default/pods/a/binding", {
        method: "POST",
        body: JSON.stringify({
          apiVersion: "v1",
          kind: "Binding",
          metadata: { name: "a" },
          target: { kind: "Node", name: node },
        }),
      });
    const ok = await bind("node1");
    assert.equal(ok.status, 201);
    assert.equal(server.store.get("pods", "default/a").spec.nodeName, "node1");
    const again = await bind("node2");
    assert.equal(again.status, 409);
    assert.equal(again.body.reason, "Conflict");
    assert.equal(
      (await api("/api/v1/namespaces/default/pods/ghost/binding", {
        method: "POST",
        body: '{"target":{"name":"n"}}',
      })).status,
      404,
    );
  }));
