import assert from "node:assert/strict";
import { Bus } from "../../../core/bus.ts";
import { FakeClock } from "../../../core/clock.ts";
import { getLogger, MemorySink } from "../../../core/log.ts";
import { Metrics } from "../../../core/metrics.ts";
import { KubeConfig } from "@kubernetes/client-node";
import { WatchLayer } from "../../../core/kube/mod.ts";
import { pod, service, startSynced, until, withLab } from "./_support.ts";

const line = (e: { type: string; key: string }) => `${e.type} ${e.key}`;

/** The tests that depend on the transport run once with each. */
const TRANSPORTS = ["fetch", "node"] as const;

const ALL = ["pods", "namespaces", "services", "endpointslices", "nodes", "networkpolicies"] as const;

Deno.test("watch layer publishes the first list as ADDED, then synced, and keeps counting", () =>
  withLab({}, async (lab, watch) => {
    const w = watch(["pods", "services"]);
    lab.server.store.create("pods", pod("default", "a"));
    lab.server.store.create("services", service("default", "s"));
    const synced: string[] = [];
    w.bus.on("synced", ({ resource }) => synced.push(resource));
    await startSynced(w.layer, ["pods", "services"]);
    assert.deepEqual(synced.sort(), ["pods", "services"]);
    assert.ok(w.layer.isSynced("pods"));
    assert.deepEqual(w.events.map(line).sort(), ["ADDED default/a", "ADDED default/s"]);
    assert.equal(w.layer.get("pods", "default/a")?.metadata?.name, "a");
    lab.server.store.create("pods", pod("default", "b"));
    lab.server.store.patch("pods", "default/a", "merge", { metadata: { labels: { x: "1" } } });
    await until(() => w.events.length === 4, "two more events");
    const mod = w.events[3]!;
    assert.equal(line(mod), "MODIFIED default/a");
    assert.equal(mod.previous?.metadata?.labels?.x, undefined);
    assert.equal(mod.current?.metadata?.labels?.x, "1");
    assert.equal(w.layer.list("pods").length, 2);
    const metrics = w.metrics.render();
    assert.match(metrics, /kube_router_informer_events_total\{resource="pods",type="ADDED"\} 2/);
    assert.match(metrics, /kube_router_informer_events_total\{resource="pods",type="MODIFIED"\} 1/);
    assert.match(metrics, /kube_router_informer_objects\{resource="pods"\} 2/);
  }));

Deno.test("watch layer starts informers only for the resources asked for", () =>
  withLab({}, async (_lab, watch) => {
    const w = watch(["namespaces"]);
    await startSynced(w.layer, ["namespaces"]);
    assert.equal(w.layer.stats("pods"), undefined);
    assert.equal(w.layer.isSynced("pods"), false);
    assert.deepEqual(w.layer.list("pods"), []);
  }));

for (const transport of TRANSPORTS) {
  Deno.test(`watch layer delivers changes made while the API server was down exactly once after it returns (${transport})`, () =>
    withLab({}, async (lab, watch) => {
      const w = watch(["pods"], { transport });
      const s = lab.server.store;
      for (const n of ["keep", "change", "remove"]) s.create("pods", pod("default", n));
      await startSynced(w.layer, ["pods"]);
      s.create("pods", pod("default", "before-stop"));
      await until(() => w.events.length === 4, "event before the stop");
      await lab.restart(async (store) => {
        // Let the layer notice the outage and retry at least once against the closed port.
        await until(() => w.logs.lines.some((l) => l.includes("list/watch failed")), "a failed reconnect");
        store.create("pods", pod("default", "while-down"));
        store.patch("pods", "default/change", "merge", { metadata: { labels: { v: "2" } } });
        store.delete("pods", "default/remove");
        store.create("pods", pod("default", "short-lived"));
        store.delete("pods", "default/short-lived");
      });
      s.create("pods", pod("default", "after-restart"));
      await until(
        () => w.layer.get("pods", "default/after-restart") !== undefined,
        "the pod made after the restart",
      );
      await new Promise((r) => setTimeout(r, 200));
      const after = w.events.slice(4).map(line);
      assert.deepEqual(after, [
        "ADDED default/while-down",
        "MODIFIED default/change",
        "DELETED default/remove",
        "ADDED default/short-lived",
        "DELETED default/short-lived",
        "ADDED default/after-restart",
      ]);
      const keys = w.layer.list("pods").map((p) => `${p.metadata!.namespace}/${p.metadata!.name}`).sort();
      assert.deepEqual(
        keys,
        s.list("pods").items.map((p) => `${p.metadata!.namespace}/${p.metadata!.name}`).sort(),
      );
      assert.equal(
        w.layer.stats("pods")!.relists,
        0,
        "resumed the watch from its resourceVersion, no re-list needed",
      );
    }));

  Deno.test(`watch layer re-lists after 410 Gone and publishes only the difference, once (${transport})`, () =>
    withLab({}, async (lab, watch) => {
      const w = watch(["pods"], { transport });
      const s = lab.server.store;
      for (const n of ["keep", "change", "remove"]) s.create("pods", pod("default", n));
      await startSynced(w.layer, ["pods"]);
      await lab.restart((store) => {
        store.create("pods", pod("default", "while-down"));
        store.patch("pods", "default/change", "merge", { metadata: { labels: { v: "2" } } });
        store.delete("pods", "default/remove");
        store.create("pods", pod("default", "short-lived"));
        store.delete("pods", "default/short-lived");
        // The history the watch would resume from is gone: the server must answer 410.
        store.compact();
      });
      await until(() => w.layer.stats("pods")!.relists >= 1, "a re-list");
      await until(() => w.events.length >= 6, "the differences");
      await new Promise((r) => setTimeout(r, 200));
      assert.deepEqual(w.events.slice(3).map(line).sort(), [
        "ADDED default/while-down",
        "DELETED default/remove",
        "MODIFIED default/change",
      ]);
      assert.equal(w.events.length, 6, "nothing published twice, nothing for the object that came and went");
      assert.ok(w.logs.lines.some((l) => l.includes("resourceVersion too old")));
      s.create("pods", pod("default", "later"));
      await until(() => w.events.length === 7, "the watch after the re-list");
      assert.equal(line(w.events[6]!), "ADDED default/later");
    }));

  Deno.test(`watch layer authenticates with a client certificate (${transport})`, () =>
    withLab({ auth: "cert" }, async (_lab, watch) => {
      const w = watch(["namespaces"], { transport });
      await startSynced(w.layer, ["namespaces"]);
      assert.deepEqual(w.events.map(line).sort(), ["ADDED default", "ADDED kube-system"]);
    }));

  Deno.test(`watch layer with a bad token is refused, never syncs, and says why (${transport})`, () =>
    withLab({}, async (lab, watch) => {
      const bad = (await Deno.readTextFile(lab.kubeconfigPath)).replace(lab.server.token, "not-the-token");
      await Deno.writeTextFile(`${lab.dir}/bad`, bad);
      const w = watch(["pods"], { transport, kubeconfigPath: `${lab.dir}/bad` });
      w.layer.start(["pods"]);
      assert.equal(await w.layer.waitForSync(["pods"], 500), false);
      assert.ok(w.logs.lines.some((l) => l.includes("Unauthorized")), w.logs.lines.join("\n"));
      assert.equal(w.events.length, 0);
    }));

  Deno.test(`watch layer stop ends every loop without logging the stop as a failure (${transport})`, () =>
    withLab({}, async (lab, watch) => {
      const w = watch(ALL, { transport });
      await startSynced(w.layer, ALL);
      await until(() => lab.server.openWatches === 6, "six open watches");
      await w.layer.stop();
      assert.ok(
        !w.logs.lines.some((l) => l.includes("WARN") || l.includes("ERROR")),
        w.logs.lines.join("\n"),
      );
      await until(() => lab.server.openWatches === 0, "the server to see the watches close");
      assert.throws(() => w.layer.start(["pods"]));
    }));
}

Deno.test("watch layer resumes a watch the server ended (timeoutSeconds) without re-listing or duplicates", () =>
  withLab({}, async (lab, watch) => {
    // The layer's own default backoff, not the fast one of the other tests.
    const w = watch(["pods"], {
      layer: { watchTimeoutSeconds: 1, backoff: { initialMs: 500, maxMs: 30_000 } },
    });
    await startSynced(w.layer, ["pods"]);
    lab.server.store.create("pods", pod("default", "a"));
    await until(() => w.layer.stats("pods")!.watches >= 3, "two watch restarts", 15_000);
    lab.server.store.create("pods", pod("default", "b"));
    await until(() => w.events.length === 2, "both pods");
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(w.events.map(line), ["ADDED default/a", "ADDED default/b"]);
    assert.equal(w.layer.stats("pods")!.lists, 1);
    assert.ok(!w.logs.lines.some((l) => l.includes("WARN")), "a server-side timeout is not a failure");
  }));

Deno.test("waitForSync gives up with false when the timeout passes on an unreachable API server", async () => {
  const clock = new FakeClock();
  const kc = new KubeConfig();
  // Port 1 on loopback: nothing listens, every connect is refused.
  kc.loadFromClusterAndUser({ name: "c", server: "https://127.0.0.1:1", skipTLSVerify: true }, { name: "u" });
  const logs = new MemorySink();
  const layer = new WatchLayer({
    kubeConfig: kc,
    bus: new Bus(),
    log: getLogger({}, logs),
    metrics: new Metrics(),
    clock,
    backoff: { initialMs: 100, maxMs: 1000 },
  });
  try {
    layer.start(["services", "endpointslices"]);
    let result: boolean | undefined;
    void layer.waitForSync(["services", "endpointslices"], 60_000).then((ok) => result = ok);
    await until(
      () => logs.lines.filter((l) => l.includes("list/watch failed")).length >= 2,
      "connection failures",
    );
    await clock.advance(59_000);
    assert.equal(result, undefined, "still waiting before the timeout");
    await clock.advance(1_000);
    assert.equal(result, false);
  } finally {
    await layer.stop();
  }
});

Deno.test("watch layer follows bookmarks, so its watch resumes after a compaction without re-listing", () =>
  withLab({ bookmarkIntervalMs: 50 }, async (lab, watch) => {
    const w = watch(["pods"]);
    const s = lab.server.store;
    await startSynced(w.layer, ["pods"]);
    // Only other resources change: the pod watch sees no event, just bookmarks moving its resourceVersion.
    for (let i = 0; i < 5; i++) s.create("services", service("default", `s${i}`));
    const target = String(s.revision);
    await until(
      () => w.layer.stats("pods")!.resourceVersion === target,
      "a bookmark at the current revision",
    );
    await lab.restart((store) => {
      store.compact();
      store.create("pods", pod("default", "after-compaction"));
    });
    await until(() => w.layer.get("pods", "default/after-compaction") !== undefined, "the new pod");
    assert.equal(w.layer.stats("pods")!.relists, 0);
    assert.deepEqual(w.events.map(line), ["ADDED default/after-compaction"]);
  }));

Deno.test("watch layer lists again when the API server returns with other storage, and publishes the difference", () =>
  withLab({}, async (lab, watch) => {
    const w = watch(["pods"]);
    const s = lab.server.store;
    for (const n of ["a", "b", "c", "d", "e", "f"]) s.create("pods", pod("default", n));
    await startSynced(w.layer, ["pods"]);
    // A fresh store (think: etcd restored from an old backup) whose revision is behind the layer's.
    const fresh = new (s.constructor as typeof import("../../../lab/apiserver/mod.ts").Store)();
    fresh.create("pods", pod("default", "a"));
    fresh.create("pods", pod("default", "z"));
    assert.ok(fresh.revision < Number(w.layer.stats("pods")!.resourceVersion));
    await lab.restart(undefined, fresh);
    await until(
      () => w.layer.get("pods", "default/z") !== undefined && w.layer.list("pods").length === 2,
      "the fresh store pods",
    );
    assert.ok(w.layer.stats("pods")!.relists >= 1);
    assert.deepEqual(w.events.slice(6).map(line).sort(), [
      "ADDED default/z",
      "DELETED default/b",
      "DELETED default/c",
      "DELETED default/d",
      "DELETED default/e",
      "DELETED default/f",
      "MODIFIED default/a",
    ]);
  }));

Deno.test("watch layer talks to a server whose certificate it cannot verify when the kubeconfig says insecure-skip-tls-verify", () =>
  withLab({}, async (lab, watch) => {
    const text = (await Deno.readTextFile(lab.kubeconfigPath)).replace(
      /certificate-authority-data: \S+/,
      "insecure-skip-tls-verify: true",
    );
    await Deno.writeTextFile(`${lab.dir}/insecure`, text);
    await Deno.writeTextFile(
      `${lab.dir}/unverified`,
      text.replace("insecure-skip-tls-verify: true", "server-name-ignored: x"),
    );
    const w = watch(["namespaces"], { kubeconfigPath: `${lab.dir}/insecure` });
    const refused = watch(["namespaces"], { kubeconfigPath: `${lab.dir}/unverified` });
    await startSynced(w.layer, ["namespaces"]);
    // Without the CA and without the insecure flag, the self-signed chain is refused.
    refused.layer.start(["namespaces"]);
    assert.equal(await refused.layer.waitForSync(["namespaces"], 500), false);
    assert.ok(refused.logs.lines.some((l) => l.includes("list/watch failed")));
  }));

Deno.test("watch layer cut off by the server during a burst resumes and delivers every change exactly once", () =>
  withLab({ maxWatchBufferBytes: 64 * 1024 }, async (lab, watch) => {
    const w = watch(["pods"]);
    await startSynced(w.layer, ["pods"]);
    await until(() => lab.server.openWatches === 1, "the watch to be open");
    // 2,000 writes in one synchronous burst: far more than 64 KiB reaches the watch before it can read.
    for (let i = 0; i < 1000; i++) lab.server.store.create("pods", pod("default", `p${i}`));
    for (let i = 0; i < 1000; i += 2) lab.server.store.delete("pods", `default/p${i}`);
    for (let i = 1; i < 1000; i += 2) {
      lab.server.store.patch("pods", `default/p${i}`, "merge", { metadata: { labels: { v: "2" } } });
    }
    await until(() => w.events.length === 2000, "2,000 events", 20_000);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(w.events.length, 2000, "no duplicates");
    assert.ok(w.layer.stats("pods")!.watches >= 2, "the watch was cut off and resumed");
    assert.equal(w.layer.stats("pods")!.relists, 0);
    const counts = { ADDED: 0, MODIFIED: 0, DELETED: 0 };
    for (const e of w.events) counts[e.type]++;
    assert.deepEqual(counts, { ADDED: 1000, MODIFIED: 500, DELETED: 500 });
    assert.equal(w.layer.list("pods").length, 500);
  }));

Deno.test("watch layer replaces a watch that stays silent past idleTimeoutMs and loses nothing", () =>
  withLab({}, async (lab, watch) => {
    const w = watch(["pods"], { layer: { idleTimeoutMs: 300, backoff: { initialMs: 20, maxMs: 50 } } });
    await startSynced(w.layer, ["pods"]);
    await until(() => w.layer.stats("pods")!.watches >= 3, "two silent watches replaced");
    assert.ok(w.logs.lines.some((l) => l.includes("silent for 300 ms")));
    lab.server.store.create("pods", pod("default", "late"));
    await until(() => w.events.length === 1, "the pod");
    await new Promise((r) => setTimeout(r, 400));
    assert.deepEqual(w.events.map(line), ["ADDED default/late"]);
    assert.equal(w.layer.stats("pods")!.lists, 1);
  }));
