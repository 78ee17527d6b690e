/**
 * The ReplicaSet, Deployment and DaemonSet controllers against the lab API server on loopback, with a
 * stand-in kubelet (tests/unit/lab/_control_plane.ts): no root, no namespaces.
 */
import assert from "node:assert/strict";
import { type KubeObject, labelSelectorMatches } from "../../../lab/apiserver/mod.ts";
import {
  CONTROLLER_REVISION_HASH,
  daemonPodMisfit,
  deletionOrder,
  type KObject,
  POD_TEMPLATE_HASH,
  REVISION_ANNOTATION,
  rollingLimits,
  SERVICE_NAME_LABEL,
  templateHash,
} from "../../../lab/mod.ts";
import { eventually, withControlPlane } from "./_control_plane.ts";

const APPS = "/apis/apps/v1/namespaces/default";

const deployment = (name: string, replicas: number, image: string, strategy?: unknown): KObject => ({
  apiVersion: "apps/v1",
  kind: "Deployment",
  metadata: { name, namespace: "default" },
  spec: {
    replicas,
    selector: { matchLabels: { app: name } },
    ...(strategy ? { strategy } : {}),
    template: {
      metadata: { labels: { app: name } },
      spec: { containers: [{ name: "c", image, ports: [{ containerPort: 8080 }] }] },
    },
  },
});

Deno.test("rolling limits resolve percentages as kube does: surge rounds up, unavailable down, never both zero", () => {
  assert.deepEqual(rollingLimits(undefined, 10), { maxSurge: 3, maxUnavailable: 2 });
  assert.deepEqual(rollingLimits({ maxSurge: "25%", maxUnavailable: "25%" }, 1), {
    maxSurge: 1,
    maxUnavailable: 0,
  });
  assert.deepEqual(rollingLimits({ maxSurge: 0, maxUnavailable: 0 }, 4), { maxSurge: 0, maxUnavailable: 1 });
  assert.deepEqual(rollingLimits({ maxSurge: 2, maxUnavailable: "50%" }, 5), {
    maxSurge: 2,
    maxUnavailable: 2,
  });
});

Deno.test("the pod template hash is stable, changes with the template, and uses kube's safe alphabet", () => {
  const t = { metadata: { labels: { app: "web" } }, spec: { containers: [{ name: "c", image: "a" }] } };
  assert.equal(templateHash(t), templateHash(structuredClone(t)));
  assert.notEqual(templateHash(t), templateHash({ ...t, spec: { containers: [{ name: "c", image: "b" }] } }));
  assert.notEqual(templateHash(t), templateHash(t, 1), "a collision count changes the hash");
  assert.match(templateHash(t), /^[bcdfghjklmnpqrstvwxz2456789]{6,10}$/);
});

Deno.test("a ReplicaSet removes unscheduled, then not-ready, then the newest pods first", () => {
  const p = (name: string, node: string | undefined, ready: boolean, created: string): KObject => ({
    metadata: { name, creationTimestamp: created },
    spec: node ? { nodeName: node } : {},
    status: {
      phase: node ? "Running" : "Pending",
      conditions: [{ type: "Ready", status: ready ? "True" : "False" }],
    },
  });
  const pods = [
    p("old-ready", "n1", true, "2026-01-01T00:00:00Z"),
    p("new-ready", "n1", true, "2026-01-02T00:00:00Z"),
    p("not-ready", "n1", false, "2026-01-01T00:00:00Z"),
    p("pending", undefined, false, "2026-01-01T00:00:00Z"),
  ];
  assert.deepEqual(pods.sort(deletionOrder).map((x) => x.metadata.name), [
    "pending",
    "not-ready",
    "new-ready",
    "old-ready",
  ]);
});

Deno.test("a DaemonSet pod fits a node by nodeSelector, required affinity and tolerated taints", () => {
  const node = (labels: Record<string, string>, taints: unknown[] = []): KObject => ({
    metadata: { name: "n1", labels },
    spec: { taints },
  });
  const tmpl = (spec: Record<string, unknown>): KObject => ({
    metadata: { name: "" },
    spec: { containers: [], ...spec },
  });
  assert.equal(daemonPodMisfit(tmpl({}), node({})), undefined);
  assert.match(daemonPodMisfit(tmpl({ nodeSelector: { disk: "ssd" } }), node({}))!, /node selector disk=ssd/);
  const master = node({}, [{ key: "node-role.kubernetes.io/control-plane", effect: "NoSchedule" }]);
  assert.match(
    daemonPodMisfit(tmpl({}), master)!,
    /untolerated taint node-role.kubernetes.io\/control-plane/,
  );
  assert.equal(daemonPodMisfit(tmpl({ tolerations: [{ operator: "Exists" }] }), master), undefined);
  assert.equal(
    daemonPodMisfit(tmpl({}), node({}, [{ key: "x", effect: "PreferNoSchedule" }])),
    undefined,
    "PreferNoSchedule does not keep a daemon pod away",
  );
  const notReady = node({}, [{ key: "node.kubernetes.io/not-ready", effect: "NoExecute" }]);
  assert.equal(daemonPodMisfit(tmpl({}), notReady), undefined, "DaemonSet pods tolerate not-ready nodes");
  const netDown = node({}, [{ key: "node.kubernetes.io/network-unavailable", effect: "NoSchedule" }]);
  assert.ok(daemonPodMisfit(tmpl({}), netDown), "only hostNetwork daemons start before the network");
  assert.equal(daemonPodMisfit(tmpl({ hostNetwork: true }), netDown), undefined);
  const affinity = {
    nodeAffinity: {
      requiredDuringSchedulingIgnoredDuringExecution: {
        nodeSelectorTerms: [{ matchExpressions: [{ key: "zone", operator: "In", values: ["a", "b"] }] }],
      },
    },
  };
  assert.equal(daemonPodMisfit(tmpl({ affinity }), node({ zone: "b" })), undefined);
  assert.match(daemonPodMisfit(tmpl({ affinity }), node({ zone: "c" }))!, /node affinity/);
});

Deno.test("a ReplicaSet keeps its replicas: owned pods created, a deleted one replaced, extras removed on scale down", () =>
  withControlPlane(async ({ client, api, addNode }) => {
    await addNode("n1");
    await addNode("n2");
    const rs = await client.create<KObject>(`${APPS}/replicasets`, {
      apiVersion: "apps/v1",
      kind: "ReplicaSet",
      metadata: { name: "web", namespace: "default" },
      spec: {
        replicas: 3,
        selector: { matchLabels: { app: "web" } },
        template: {
          metadata: { labels: { app: "web" } },
          spec: { containers: [{ name: "c", image: "nginx" }] },
        },
      },
    });
    const active = () =>
      api.store.list("pods", { namespace: "default", labelSelector: "app=web" }).items.filter((p) =>
        !p.metadata?.deletionTimestamp
      );
    await eventually("3 ready replicas", async () => {
      const r = await client.get(`${APPS}/replicasets/web`);
      return r.status?.readyReplicas === 3 && r.status?.observedGeneration === 1;
    });
    const pods = active();
    assert.equal(pods.length, 3);
    for (const p of pods) {
      assert.deepEqual(p.metadata!.ownerReferences, [{
        apiVersion: "apps/v1",
        kind: "ReplicaSet",
        name: "web",
        uid: rs.metadata.uid,
        controller: true,
        blockOwnerDeletion: true,
      }]);
      assert.match(p.metadata!.name!, /^web-[a-z0-9]{5}$/);
    }
    await client.delete(`/api/v1/namespaces/default/pods/${pods[0]!.metadata!.name}`);
    await eventually(
      "the deleted pod is replaced",
      () => active().length === 3 && !active().some((p) => p.metadata!.name === pods[0]!.metadata!.name),
    );
    await client.mergePatch(`${APPS}/replicasets/web/scale`, { spec: { replicas: 1 } });
    await eventually("scaled down to 1", () => active().length === 1);
    await eventually(
      "status follows",
      async () => (await client.get(`${APPS}/replicasets/web`)).status?.replicas === 1,
    );
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(active().length, 1, "no pod is created back");
  }));

Deno.test("a Deployment rolls out through a hashed ReplicaSet, scales, and deletes its ReplicaSets and pods with it", () =>
  withControlPlane(async ({ client, api, addNode }) => {
    await addNode("n1");
    await client.create(`${APPS}/deployments`, deployment("web", 2, "nginx:1"));
    const d = await eventually("available", async () => {
      const d = await client.get(`${APPS}/deployments/web`);
      return d.status?.availableReplicas === 2 && d.status?.updatedReplicas === 2 && d;
    });
    const rss = (await client.list(`${APPS}/replicasets`)).items;
    assert.equal(rss.length, 1);
    const rs = rss[0]!;
    const hash = rs.metadata.labels?.[POD_TEMPLATE_HASH];
    assert.ok(hash && rs.metadata.name === `web-${hash}`, "named and labelled by the pod template hash");
    assert.deepEqual(rs.spec.selector.matchLabels, { app: "web", [POD_TEMPLATE_HASH]: hash });
    assert.equal(rs.metadata.annotations?.[REVISION_ANNOTATION], "1");
    assert.equal(d.metadata.annotations?.[REVISION_ANNOTATION], "1");
    const progressing = d.status.conditions.find((c: { type: string }) => c.type === "Progressing");
    assert.equal(progressing.reason, "NewReplicaSetAvailable");
    for (const p of api.store.list("pods", { labelSelector: "app=web" }).items) {
      assert.equal(p.metadata!.labels![POD_TEMPLATE_HASH], hash);
    }
    const scale = await client.get(`${APPS}/deployments/web/scale`);
    assert.deepEqual([scale.kind, scale.spec.replicas, scale.status.selector], ["Scale", 2, "app=web"]);
    await client.request("PUT", `${APPS}/deployments/web/scale`, { ...scale, spec: { replicas: 4 } });
    await eventually(
      "scaled to 4",
      async () => (await client.get(`${APPS}/deployments/web`)).status?.availableReplicas === 4,
    );
    await client.delete(`${APPS}/deployments/web`);
    await eventually(
      "ReplicaSets and pods go with it",
      () =>
        api.store.list("replicasets").items.length === 0 &&
        api.store.list("pods", { labelSelector: "app=web" }).items.length === 0,
    );
  }));

Deno.test("a rolling update stays within maxSurge and maxUnavailable while old pods terminate and slices show them terminating", () =>
  withControlPlane(async ({ client, api, addNode }) => {
    await addNode("n1");
    await addNode("n2");
    const replicas = 4;
    const strategy = { type: "RollingUpdate", rollingUpdate: { maxSurge: 1, maxUnavailable: 1 } };
    await client.create(`${APPS}/deployments`, deployment("web", replicas, "nginx:1", strategy));
    await client.create("/api/v1/namespaces/default/services", {
      apiVersion: "v1",
      kind: "Service",
      metadata: { name: "web", namespace: "default" },
      spec: { selector: { app: "web" }, ports: [{ port: 80, targetPort: 8080 }] },
    });
    await eventually(
      "first rollout done",
      async () => (await client.get(`${APPS}/deployments/web`)).status?.availableReplicas === replicas,
    );
    const violations: string[] = [];
    let sawTerminatingEndpoint = false;
    let maxActive = 0, minReady = Infinity;
    const check = () => {
      const pods = api.store.list("pods", { labelSelector: "app=web" }).items;
      const active = pods.filter((p) => !p.metadata?.deletionTimestamp);
      const ready = active.filter((p) =>
        (p.status?.conditions ?? []).some((c: KubeObject) => c.type === "Ready" && c.status === "True")
      );
      maxActive = Math.max(maxActive, active.length);
      minReady = Math.min(minReady, ready.length);
      if (active.length > replicas + 1) {
        violations.push(`${active.length} pods > replicas + maxSurge`);
      }
      if (ready.length < replicas - 1) violations.push(`${ready.length} ready < replicas - maxUnavailable`);
    };
    const stopPods = api.store.watch("pods", api.store.revision, check);
    const stopSlices = api.store.watch("endpointslices", api.store.revision, (e) => {
      if (e.object.metadata?.labels?.[SERVICE_NAME_LABEL] !== "web") return;
      for (const ep of e.object.endpoints ?? []) {
        if (ep.conditions?.terminating && ep.conditions?.serving && !ep.conditions?.ready) {
          sawTerminatingEndpoint = true;
        }
      }
    });
    try {
      await client.request("PATCH", `${APPS}/deployments/web`, {
        spec: { template: { spec: { containers: [{ name: "c", image: "nginx:2" }] } } },
      }, "application/strategic-merge-patch+json");
      await eventually("rolled out", async () => {
        const d = await client.get(`${APPS}/deployments/web`);
        return d.status?.observedGeneration === 2 && d.status?.updatedReplicas === replicas &&
          d.status?.availableReplicas === replicas && d.status?.replicas === replicas;
      }, 20_000);
      await eventually(
        "old pods gone",
        () =>
          api.store.list("pods", { labelSelector: "app=web" }).items.every((p) =>
            p.spec.containers[0].image === "nginx:2"
          ) &&
          api.store.list("pods", { labelSelector: "app=web" }).items.length === replicas,
      );
    } finally {
      stopPods();
      stopSlices();
    }
    assert.deepEqual(violations, []);
    assert.equal(maxActive, replicas + 1, "the surge was used");
    assert.ok(minReady >= replicas - 1, "never more than maxUnavailable pods unavailable");
    assert.ok(sawTerminatingEndpoint, "an old pod showed as serving and terminating in the EndpointSlice");
    const rss = api.store.list("replicasets").items;
    assert.equal(rss.length, 2, "the old ReplicaSet is kept for rollback, scaled to 0");
    const old = rss.find((rs) => rs.metadata!.annotations![REVISION_ANNOTATION] === "1")!;
    assert.equal(old.spec.replicas, 0);
    assert.ok(labelSelectorMatches(old.spec.selector, old.spec.template.metadata.labels));
  }));

Deno.test("a paused Deployment starts no new revision until resumed, but still scales", () =>
  withControlPlane(async ({ client, api, addNode }) => {
    await addNode("n1");
    await client.create(`${APPS}/deployments`, deployment("web", 2, "nginx:1"));
    await eventually(
      "available",
      async () => (await client.get(`${APPS}/deployments/web`)).status?.availableReplicas === 2,
    );
    await client.mergePatch(`${APPS}/deployments/web`, { spec: { paused: true } });
    await client.request("PATCH", `${APPS}/deployments/web`, {
      spec: { replicas: 3, template: { spec: { containers: [{ name: "c", image: "nginx:2" }] } } },
    }, "application/strategic-merge-patch+json");
    const images = () =>
      api.store.list("pods", { labelSelector: "app=web" }).items.filter((p) => !p.metadata?.deletionTimestamp)
        .map((p) => p.spec.containers[0].image).sort().join(" ");
    await eventually("scaled to 3 on the old template", () => images() === "nginx:1 nginx:1 nginx:1");
    assert.equal(api.store.list("replicasets").items.length, 1, "no new ReplicaSet while paused");
    await client.mergePatch(`${APPS}/deployments/web`, { spec: { paused: false } });
    await eventually("rolled out after resume", () => images() === "nginx:2 nginx:2 nginx:2", 20_000);
  }));

Deno.test("a rollout whose new pods never become ready stops within maxUnavailable and keeps the old pods serving", () =>
  withControlPlane(async ({ client, api, addNode, brokenImages }) => {
    await addNode("n1");
    brokenImages.add("broken:1");
    await client.create(`${APPS}/deployments`, deployment("web", 4, "nginx:1"));
    await eventually(
      "first rollout done",
      async () => (await client.get(`${APPS}/deployments/web`)).status?.availableReplicas === 4,
    );
    await client.request("PATCH", `${APPS}/deployments/web`, {
      spec: { template: { spec: { containers: [{ name: "c", image: "broken:1" }] } } },
    }, "application/strategic-merge-patch+json");
    // 25%/25% of 4: one surge, one unavailable: at most 2 new pods, at least 3 old ones ready.
    await new Promise((r) => setTimeout(r, 1500));
    const pods = api.store.list("pods", { labelSelector: "app=web" }).items.filter((p) =>
      !p.metadata?.deletionTimestamp
    );
    const images = pods.map((p) => p.spec.containers[0].image).sort();
    assert.deepEqual(images, ["broken:1", "broken:1", "nginx:1", "nginx:1", "nginx:1"]);
    const d = await client.get(`${APPS}/deployments/web`);
    assert.deepEqual([d.status.updatedReplicas, d.status.availableReplicas], [2, 3]);
    // No progress for progressDeadlineSeconds: the rollout is reported as timed out (kubectl rollout
    // status then fails instead of waiting).
    await client.mergePatch(`${APPS}/deployments/web`, { spec: { progressDeadlineSeconds: 2 } });
    const cond = await eventually("deadline exceeded", async () => {
      const d = await client.get(`${APPS}/deployments/web`);
      const c = d.status?.conditions?.find((x: { type: string }) => x.type === "Progressing");
      return c?.reason === "ProgressDeadlineExceeded" && c;
    }, 40_000);
    assert.equal(cond.status, "False");
    assert.match(cond.message, /has timed out progressing/);
  }));

Deno.test("a DaemonSet runs one pod on every node it fits, follows nodes and taints, and replaces pods node by node", () =>
  withControlPlane(async ({ client, api, addNode }) => {
    await addNode("n1");
    await addNode("n2", { taints: [{ key: "dedicated", value: "db", effect: "NoSchedule" }] });
    await addNode("n3", { labels: { role: "edge" } });
    await client.create(`${APPS}/daemonsets`, {
      apiVersion: "apps/v1",
      kind: "DaemonSet",
      metadata: { name: "agent", namespace: "default" },
      spec: {
        selector: { matchLabels: { app: "agent" } },
        template: {
          metadata: { labels: { app: "agent" } },
          spec: { hostNetwork: true, containers: [{ name: "a", image: "agent:1" }] },
        },
      },
    });
    const placement = () =>
      api.store.list("pods", { labelSelector: "app=agent" }).items.filter((p) =>
        !p.metadata?.deletionTimestamp
      )
        .map((p) => `${p.spec.nodeName}:${p.spec.containers[0].image}`).sort().join(" ");
    await eventually(
      "on n1 and n3 (n2's taint is not tolerated)",
      () => placement() === "n1:agent:1 n3:agent:1",
    );
    const ds = await eventually("status", async () => {
      const ds = await client.get(`${APPS}/daemonsets/agent`);
      return ds.status?.numberAvailable === 2 && ds;
    });
    assert.deepEqual(
      [ds.status.desiredNumberScheduled, ds.status.currentNumberScheduled, ds.status.updatedNumberScheduled],
      [2, 2, 2],
    );
    const pod = api.store.list("pods", { labelSelector: "app=agent" }).items[0]!;
    assert.ok(pod.metadata!.labels![CONTROLLER_REVISION_HASH]);
    assert.ok(
      pod.spec.tolerations.some((t: KubeObject) => t.key === "node.kubernetes.io/network-unavailable"),
      "hostNetwork daemon pods tolerate a node without network",
    );
    await client.mergePatch(`${APPS}/daemonsets/agent`, {
      spec: { template: { spec: { tolerations: [{ key: "dedicated", operator: "Exists" }] } } },
    });
    await eventually(
      "n2 gets one too",
      () => placement().split(" ").length === 3 && placement().includes("n2:"),
    );
    await addNode("n4");
    await eventually("a new node gets one", () => placement().includes("n4:agent:1"));
    // A template change (kubectl set image): one node at a time (maxUnavailable 1).
    let downAtOnce = 0;
    const stop = api.store.watch("pods", api.store.revision, () => {
      const pods = api.store.list("pods", { labelSelector: "app=agent" }).items;
      const nodesUp = new Set(
        pods.filter((p) =>
          !p.metadata?.deletionTimestamp &&
          (p.status?.conditions ?? []).some((c: KubeObject) => c.type === "Ready" && c.status === "True")
        ).map((p) => p.spec.nodeName),
      );
      downAtOnce = Math.max(downAtOnce, 4 - nodesUp.size);
    });
    try {
      await client.request("PATCH", `${APPS}/daemonsets/agent`, {
        spec: { template: { spec: { containers: [{ name: "a", image: "agent:2" }] } } },
      }, "application/strategic-merge-patch+json");
      await eventually(
        "all replaced",
        () => placement() === "n1:agent:2 n2:agent:2 n3:agent:2 n4:agent:2",
        20_000,
      );
    } finally {
      stop();
    }
    assert.equal(downAtOnce, 1, "never more than one node without a ready agent");
    await client.mergePatch("/api/v1/nodes/n3", { metadata: { labels: { role: null } } });
    await client.mergePatch(`${APPS}/daemonsets/agent`, {
      spec: { template: { spec: { nodeSelector: { role: "edge" } } } },
    });
    await client.mergePatch("/api/v1/nodes/n1", { metadata: { labels: { role: "edge" } } });
    await eventually("only the edge node keeps one", () => /^n1:agent:2$/.test(placement()), 20_000);
  }));
