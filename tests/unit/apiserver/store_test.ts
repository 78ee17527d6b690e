import assert from "node:assert/strict";
import {
  isAlreadyExists,
  isConflict,
  isGone,
  isInvalid,
  isNotFound,
  Store,
  strategicMergePatch,
  type WatchEvent,
} from "../../../lab/apiserver/mod.ts";

const pod = (ns: string, name: string, labels: Record<string, string> = {}, nodeName?: string) => ({
  metadata: { name, namespace: ns, labels },
  spec: {
    ...(nodeName ? { nodeName } : {}),
    containers: [{ name: "c", image: "busybox:1.36", ports: [{ containerPort: 80 }] }],
  },
});

const svc = (name: string, spec: Record<string, unknown> = {}) => ({
  metadata: { name, namespace: "default" },
  spec: { ports: [{ port: 80 }], ...spec },
});

Deno.test("store fills in uid, creationTimestamp, resourceVersion, generation and kind on create", () => {
  const s = new Store();
  const before = s.revision;
  const p = s.create("pods", pod("default", "a"));
  assert.equal(p.kind, "Pod");
  assert.equal(p.apiVersion, "v1");
  assert.match(p.metadata!.uid!, /^[0-9a-f-]{36}$/);
  assert.match(p.metadata!.creationTimestamp!, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  assert.equal(p.metadata!.resourceVersion, String(before + 1));
  assert.equal(p.metadata!.generation, 1);
  assert.equal(p.status.phase, "Pending");
  assert.equal(p.spec.containers[0].ports[0].protocol, "TCP");
  assert.ok(
    Object.isFrozen(p) && Object.isFrozen(p.spec.containers[0]),
    "stored objects are shared and frozen",
  );
});

Deno.test("store starts with the default and kube-system namespaces, labelled with their names", () => {
  const s = new Store();
  const names = s.list("namespaces").items.map((n) => n.metadata!.name);
  assert.deepEqual(names, ["default", "kube-system"]);
  assert.equal(s.get("namespaces", "default").metadata!.labels!["kubernetes.io/metadata.name"], "default");
});

Deno.test("store refuses objects in a namespace that does not exist", () => {
  const s = new Store();
  assert.throws(() => s.create("pods", pod("nope", "a")), isNotFound);
  s.create("namespaces", { metadata: { name: "nope" } });
  s.create("pods", pod("nope", "a"));
});

Deno.test("store refuses a duplicate name with AlreadyExists and a stale resourceVersion with Conflict", () => {
  const s = new Store();
  const p = s.create("pods", pod("default", "a"));
  assert.throws(() => s.create("pods", pod("default", "a")), isAlreadyExists);
  const changed = structuredClone(p);
  changed.metadata!.labels = { x: "1" };
  const p2 = s.update("pods", changed);
  assert.notEqual(p2.metadata!.resourceVersion, p.metadata!.resourceVersion);
  assert.throws(() => s.update("pods", changed), isConflict, "the old resourceVersion is stale now");
  assert.equal(p2.metadata!.uid, p.metadata!.uid);
  assert.equal(p2.metadata!.creationTimestamp, p.metadata!.creationTimestamp);
});

Deno.test("store refuses invalid objects with 422 Invalid and names the field", () => {
  const s = new Store();
  assert.throws(
    () =>
      s.create("pods", { metadata: { name: "Bad_Name" }, spec: { containers: [{ name: "c", image: "x" }] } }),
    (e: unknown) => {
      assert.ok(isInvalid(e));
      assert.match((e as Error).message, /metadata\.name/);
      return true;
    },
  );
  assert.throws(() => s.create("pods", { metadata: { name: "p" }, spec: { containers: [] } }), isInvalid);
  assert.throws(() => s.create("services", svc("s", { ports: [{ port: 70000 }] })), isInvalid);
  assert.throws(() => s.create("networkpolicies", { metadata: { name: "n" }, spec: {} }), isInvalid);
  assert.throws(
    () => s.create("endpointslices", { metadata: { name: "e" }, addressType: "IPX", endpoints: [] }),
    isInvalid,
  );
  assert.throws(
    () => s.create("pods", { ...pod("default", "l"), metadata: { name: "l", labels: { "bad key!": "v" } } }),
    isInvalid,
  );
});

Deno.test("store allocates distinct cluster IPs from the service CIDR and refuses a taken or foreign one", () => {
  const s = new Store({ serviceCidr: "172.16.0.0/16" });
  const ips = new Set<string>();
  for (let i = 0; i < 50; i++) {
    const o = s.create("services", svc(`s${i}`));
    assert.match(o.spec.clusterIP, /^172\.16\./);
    assert.deepEqual(o.spec.clusterIPs, [o.spec.clusterIP]);
    ips.add(o.spec.clusterIP);
  }
  assert.equal(ips.size, 50);
  const taken = s.get("services", "default/s7").spec.clusterIP;
  assert.throws(
    () => s.create("services", svc("dup", { clusterIP: taken })),
    (e: unknown) => isInvalid(e) && /already allocated/.test(String(e)),
  );
  assert.throws(
    () => s.create("services", svc("out", { clusterIP: "10.0.0.1" })),
    (e: unknown) => isInvalid(e) && /valid range/.test(String(e)),
  );
  // Deleting a service gives its address back.
  s.delete("services", "default/s7");
  assert.equal(s.create("services", svc("reuse", { clusterIP: taken })).spec.clusterIP, taken);
  assert.equal(s.create("services", svc("headless", { clusterIP: "None" })).spec.clusterIP, "None");
});

Deno.test("store allocates node ports for NodePort services, keeps them across updates and releases them on delete", () => {
  const s = new Store({ nodePortRange: [30000, 30002] });
  const a = s.create("services", svc("a", { type: "NodePort" }));
  const b = s.create(
    "services",
    svc("b", { type: "LoadBalancer", ports: [{ name: "x", port: 80 }, { name: "y", port: 81 }] }),
  );
  const ports = [a.spec.ports[0].nodePort, ...b.spec.ports.map((p: { nodePort: number }) => p.nodePort)];
  assert.deepEqual([...ports].sort(), [30000, 30001, 30002]);
  assert.throws(() => s.create("services", svc("c", { type: "NodePort" })), /range is full/);
  // kubectl apply sends the service without nodePort: the allocated one stays.
  const upd = s.update("services", {
    metadata: { name: "a", namespace: "default" },
    spec: { type: "NodePort", ports: [{ port: 80 }] },
  });
  assert.equal(upd.spec.ports[0].nodePort, a.spec.ports[0].nodePort);
  assert.equal(upd.spec.clusterIP, a.spec.clusterIP, "clusterIP carried over");
  s.delete("services", "default/a");
  assert.equal(
    s.create("services", svc("c", { type: "NodePort" })).spec.ports[0].nodePort,
    a.spec.ports[0].nodePort,
  );
  assert.throws(
    () => s.create("services", svc("d", { ports: [{ port: 80, nodePort: 30001 }] })),
    isInvalid,
    "ClusterIP services take no nodePort",
  );
});

Deno.test("store refuses to change a service's clusterIP", () => {
  const s = new Store({ serviceCidr: "172.16.0.0/16" });
  const a = s.create("services", svc("a"));
  const changed = structuredClone(a);
  changed.spec.clusterIP = "172.16.9.9";
  changed.spec.clusterIPs = ["172.16.9.9"];
  assert.throws(() => s.update("services", changed), isInvalid);
});

Deno.test("store writes to the main resource never change status, and the status subresource changes only status", () => {
  const s = new Store();
  const p = s.create("pods", pod("default", "a"));
  const withStatus = structuredClone(p);
  withStatus.status = { phase: "Running", podIP: "10.1.1.5" };
  withStatus.metadata!.labels = { changed: "yes" };
  const viaMain = s.update("pods", withStatus);
  assert.equal(viaMain.status.phase, "Pending");
  assert.equal(viaMain.metadata!.labels!.changed, "yes");
  const viaStatus = s.patch("pods", "default/a", "merge", {
    status: { phase: "Running", podIP: "10.1.1.5" },
    metadata: { labels: { other: "x" } },
  }, { subresource: "status" });
  assert.equal(viaStatus.status.phase, "Running");
  assert.equal(viaStatus.status.podIP, "10.1.1.5");
  assert.equal(viaStatus.metadata!.labels!.other, undefined);
});

Deno.test("store bumps generation only when the spec changes and keeps the resourceVersion of a no-op write", () => {
  const s = new Store();
  const p = s.create("pods", pod("default", "a"));
  const same = s.update("pods", structuredClone(p));
  assert.equal(same.metadata!.resourceVersion, p.metadata!.resourceVersion);
  const labelled = s.patch("pods", "default/a", "merge", { metadata: { labels: { a: "b" } } });
  assert.equal(labelled.metadata!.generation, 1);
  const respec = s.patch("pods", "default/a", "merge", { spec: { activeDeadlineSeconds: 30 } });
  assert.equal(respec.metadata!.generation, 2);
});

Deno.test("store deletes a namespace's objects with the namespace", () => {
  const s = new Store();
  s.create("namespaces", { metadata: { name: "team" } });
  s.create("pods", pod("team", "a"));
  s.create("services", svc("keep"));
  s.create("services", { ...svc("x"), metadata: { name: "x", namespace: "team" } });
  s.delete("namespaces", "team");
  assert.equal(s.list("pods", { namespace: "team" }).items.length, 0);
  assert.equal(s.list("services").items.length, 1);
  assert.throws(() => s.get("namespaces", "team"), isNotFound);
});

Deno.test("store watch replays history after a revision, then delivers live changes in order", () => {
  const s = new Store();
  const a = s.create("pods", pod("default", "a"));
  const from = Number(a.metadata!.resourceVersion);
  s.create("pods", pod("default", "b"));
  s.patch("pods", "default/a", "merge", { metadata: { labels: { x: "1" } } });
  const seen: string[] = [];
  const stop = s.watch(
    "pods",
    from,
    (e) => seen.push(`${e.type} ${e.object.metadata!.name} ${e.object.metadata!.resourceVersion}`),
  );
  const del = s.delete("pods", "default/b");
  stop();
  s.create("pods", pod("default", "c"));
  assert.deepEqual(seen.map((l) => l.split(" ").slice(0, 2).join(" ")), [
    "ADDED b",
    "MODIFIED a",
    "DELETED b",
  ]);
  assert.equal(
    seen[2]!.split(" ")[2],
    del.metadata!.resourceVersion,
    "a DELETED event carries the deletion's revision",
  );
  const revs = seen.map((l) => Number(l.split(" ")[2]));
  assert.deepEqual(revs, [...revs].sort((x, y) => x - y));
});

Deno.test("store watch from a compacted revision throws 410 Gone", () => {
  const s = new Store();
  const a = s.create("pods", pod("default", "a"));
  s.create("pods", pod("default", "b"));
  s.compact();
  assert.throws(() => s.watch("pods", Number(a.metadata!.resourceVersion) - 1, () => {}), isGone);
  const stop = s.watch("pods", s.revision, () => {});
  stop();
});

Deno.test("store compacts the oldest half of its history automatically past the limit", () => {
  const s = new Store({ historyLimit: 10 });
  for (let i = 0; i < 12; i++) s.create("pods", pod("default", `p${i}`));
  assert.ok(s.historySize <= 10);
  assert.ok(s.compactedRevision > 0);
});

Deno.test("store watch with a label selector turns objects entering and leaving the selection into ADDED and DELETED", () => {
  const s = new Store();
  const seen: WatchEvent[] = [];
  s.watch("pods", s.revision, (e) => seen.push(e), { labelSelector: "app=web" });
  s.create("pods", pod("default", "a", { app: "db" }));
  s.patch("pods", "default/a", "merge", { metadata: { labels: { app: "web" } } });
  s.patch("pods", "default/a", "merge", { metadata: { labels: { tier: "x" } } });
  s.patch("pods", "default/a", "merge", { metadata: { labels: { app: "db" } } });
  assert.deepEqual(seen.map((e) => e.type), ["ADDED", "MODIFIED", "DELETED"]);
});

Deno.test("store lists by namespace, label selector and field selector, sorted and paged", () => {
  const s = new Store();
  s.create("namespaces", { metadata: { name: "x" } });
  s.create("pods", pod("default", "b", { app: "web", tier: "fe" }, "n1"));
  s.create("pods", pod("default", "a", { app: "web" }, "n2"));
  s.create("pods", pod("x", "c", { app: "db" }, "n1"));
  const names = (o: { items: { metadata?: { name?: string } }[] }) => o.items.map((i) => i.metadata!.name);
  assert.deepEqual(names(s.list("pods")), ["a", "b", "c"]);
  assert.deepEqual(names(s.list("pods", { namespace: "x" })), ["c"]);
  assert.deepEqual(names(s.list("pods", { labelSelector: "app=web,tier" })), ["b"]);
  assert.deepEqual(names(s.list("pods", { labelSelector: "app in (db, cache)" })), ["c"]);
  assert.deepEqual(names(s.list("pods", { labelSelector: "app notin (db),!tier" })), ["a"]);
  assert.deepEqual(names(s.list("pods", { labelSelector: "app!=web" })), ["c"]);
  assert.deepEqual(names(s.list("pods", { fieldSelector: "spec.nodeName=n1" })), ["b", "c"]);
  assert.deepEqual(names(s.list("pods", { fieldSelector: "metadata.namespace!=default" })), ["c"]);
  assert.deepEqual(names(s.list("pods", { fieldSelector: "metadata.name==a" })), ["a"]);
  const p1 = s.list("pods", { limit: 2 });
  assert.deepEqual(names(p1), ["a", "b"]);
  assert.ok(p1.continue);
  const p2 = s.list("pods", { limit: 2, continue: p1.continue! });
  assert.deepEqual(names(p2), ["c"]);
  assert.equal(p2.continue, undefined);
  assert.equal(p2.resourceVersion, p1.resourceVersion, "pages report the revision of the first page");
});

Deno.test("strategic merge patch merges containers by name and replaces other lists", () => {
  const pod0 = {
    metadata: { name: "p", namespace: "default", finalizers: ["a"] },
    spec: {
      containers: [{ name: "a", image: "x:1", ports: [{ containerPort: 80 }] }, { name: "b", image: "y:1" }],
      tolerations: [{ key: "k1" }],
    },
  };
  const out = strategicMergePatch(pod0, {
    metadata: { finalizers: ["b"] },
    spec: {
      containers: [{ name: "b", image: "y:2" }, { name: "a", ports: [{ containerPort: 443 }] }],
      tolerations: [{ key: "k2" }],
    },
  });
  assert.deepEqual(out.spec.containers.map((c: { name: string; image: string }) => `${c.name}=${c.image}`), [
    "a=x:1",
    "b=y:2",
  ]);
  assert.deepEqual(out.spec.containers[0].ports.map((p: { containerPort: number }) => p.containerPort), [
    80,
    443,
  ]);
  assert.deepEqual(out.spec.tolerations, [{ key: "k2" }]);
  assert.deepEqual(out.metadata.finalizers, ["a", "b"]);
  const removed = strategicMergePatch(out, { spec: { containers: [{ name: "b", $patch: "delete" }] } });
  assert.deepEqual(removed.spec.containers.map((c: { name: string }) => c.name), ["a"]);
  const ordered = strategicMergePatch(out, {
    spec: { "$setElementOrder/containers": [{ name: "b" }, { name: "a" }] },
  });
  assert.deepEqual(ordered.spec.containers.map((c: { name: string }) => c.name), ["b", "a"]);
  const svc0 = { spec: { ports: [{ port: 80, name: "http" }, { port: 443, name: "https" }] } };
  const svc1 = strategicMergePatch(svc0, {
    spec: { ports: [{ port: 443, $patch: "delete" }, { port: 8080, name: "alt" }] },
  });
  assert.deepEqual(
    svc1.spec.ports.map((p: { port: number }) => p.port),
    [80, 8080],
    "Service ports merge on port",
  );
});

Deno.test("store refuses pod spec changes other than images, as Kubernetes does, and allows image changes", () => {
  const s = new Store();
  s.create("pods", pod("default", "p"));
  assert.throws(
    () =>
      s.patch("pods", "default/p", "strategic", {
        spec: { containers: [{ name: "side", image: "envoy:1" }] },
      }),
    isInvalid,
  );
  assert.throws(
    () => s.patch("pods", "default/p", "merge", { spec: { nodeName: "n1" } }),
    isInvalid,
    "the node is set through binding",
  );
  const img = s.patch("pods", "default/p", "json", [{
    op: "replace",
    path: "/spec/containers/0/image",
    value: "busybox:1.37",
  }]);
  assert.equal(img.spec.containers[0].image, "busybox:1.37");
  assert.equal(s.bind("default/p", "n1").spec.nodeName, "n1");
});

Deno.test("store keeps the first service IP for the kubernetes Service unless asked for it", () => {
  const s = new Store({ serviceCidr: "172.16.0.0/16" });
  assert.equal(s.create("services", svc("a")).spec.clusterIP, "172.16.0.2");
  assert.equal(
    s.create("services", svc("kubernetes", { clusterIP: "172.16.0.1" })).spec.clusterIP,
    "172.16.0.1",
  );
});

Deno.test("store keeps a deleted namespace Terminating for a while, refuses new objects in it, then removes everything", async () => {
  const s = new Store({ namespaceDeletionDelayMs: 30 });
  try {
    s.create("namespaces", { metadata: { name: "team" } });
    s.create("pods", pod("team", "a"));
    const seen: string[] = [];
    s.watch("namespaces", s.revision, (e) => seen.push(`${e.type} ${e.object.status?.phase}`));
    const terminating = s.delete("namespaces", "team");
    assert.equal(terminating.status.phase, "Terminating");
    assert.ok(terminating.metadata!.deletionTimestamp);
    assert.ok(s.tryGet("pods", "team/a"), "objects stay until the namespace is finalized");
    assert.throws(
      () => s.create("pods", pod("team", "b")),
      (e: unknown) => e instanceof Error && /being terminated/.test(e.message),
    );
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(s.tryGet("pods", "team/a"), undefined);
    assert.equal(s.tryGet("namespaces", "team"), undefined);
    assert.deepEqual(seen, ["MODIFIED Terminating", "DELETED Terminating"]);
  } finally {
    s.close();
  }
});
