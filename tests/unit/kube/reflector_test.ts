import assert from "node:assert/strict";
import { Bus, type ResourceEvent } from "../../../core/bus.ts";
import { FakeClock, flushMicrotasks } from "../../../core/clock.ts";
import { getLogger, MemorySink } from "../../../core/log.ts";
import { Metrics } from "../../../core/metrics.ts";
import {
  KubeApiError,
  type ListPage,
  type RawWatchEvent,
  type Transport,
  WatchLayer,
} from "../../../core/kube/mod.ts";
import { KubeConfig } from "@kubernetes/client-node";

/** A scripted API: each LIST/WATCH call takes the next step the test queued. */
class FakeTransport implements Transport {
  calls: string[] = [];
  lists: (() => ListPage)[] = [];
  watches:
    ((emit: (e: RawWatchEvent) => void, connected: () => void, signal: AbortSignal) => Promise<void>)[] = [];

  list(_path: string, query: Record<string, string>): Promise<ListPage> {
    this.calls.push(`list${query.continue ? " continue" : ""}`);
    const step = this.lists.shift();
    if (!step) return Promise.reject(new KubeApiError(0, "", "connection refused"));
    try {
      return Promise.resolve(step());
    } catch (err) {
      return Promise.reject(err);
    }
  }

  watch(
    _p: string,
    query: Record<string, string>,
    signal: AbortSignal,
    connected: () => void,
    emit: (e: RawWatchEvent) => void,
  ): Promise<void> {
    this.calls.push(`watch ${query.resourceVersion}`);
    const step = this.watches.shift();
    if (!step) {
      // Nothing scripted: hang like an idle watch until stopped.
      return new Promise((_, reject) =>
        signal.addEventListener("abort", () => reject(new DOMException("stop", "AbortError")))
      );
    }
    return step(emit, connected, signal);
  }
}

/** A FakeClock that remembers every delay asked for. */
class RecordingClock extends FakeClock {
  delays: number[] = [];
  override setTimeout(fn: () => void, ms: number): number {
    this.delays.push(ms);
    return super.setTimeout(fn, ms);
  }
}

const svc = (name: string, rv: string, uid = `uid-${name}`) => ({
  metadata: { name, namespace: "default", resourceVersion: rv, uid },
});

function layerWith(t: FakeTransport, clock = new FakeClock()) {
  const bus = new Bus();
  const events: ResourceEvent[] = [];
  bus.onResource("services", (e) => events.push(e as ResourceEvent));
  const logs = new MemorySink();
  const layer = new WatchLayer({
    kubeConfig: new KubeConfig(),
    bus,
    log: getLogger({}, logs),
    metrics: new Metrics(),
    clock,
    transport: t,
    backoff: { initialMs: 100, maxMs: 400 },
  });
  return { layer, events, logs, clock };
}

const line = (e: ResourceEvent) => `${e.type} ${e.key}`;

Deno.test("reflector retries a failing list with exponential backoff capped at maxMs", async () => {
  const t = new FakeTransport();
  const clock = new RecordingClock();
  const { layer } = layerWith(t, clock);
  try {
    layer.start(["services"]);
    await flushMicrotasks();
    for (let i = 0; i < 5; i++) await clock.advance(400);
    assert.ok(t.calls.length >= 5, `retried: ${t.calls.length}`);
    // Base delays 100, 200, 400, then capped at 400, each with up to 20 % jitter below the base.
    const bases = [100, 200, 400, 400, 400];
    clock.delays.slice(0, 5).forEach((d, i) => {
      assert.ok(d >= bases[i]! * 0.8 && d <= bases[i]!, `delay ${i} = ${d}, base ${bases[i]}`);
    });
    assert.equal(layer.isSynced("services"), false);
  } finally {
    await layer.stop();
  }
});

Deno.test("reflector follows continue tokens and publishes the whole first list before synced", async () => {
  const t = new FakeTransport();
  t.lists.push(() => ({
    items: [{
      ...svc("a", "5"),
      metadata: { ...svc("a", "5").metadata, managedFields: [{ manager: "kubectl" }] },
    }],
    resourceVersion: "10",
    continue: "next",
  }));
  t.lists.push(() => ({ items: [svc("b", "7")], resourceVersion: "11" }));
  const { layer, events } = layerWith(t);
  try {
    layer.start(["services"]);
    assert.equal(await layer.waitForSync(["services"], 1000), true);
    await flushMicrotasks();
    assert.deepEqual(
      t.calls.slice(0, 3),
      ["list", "list continue", "watch 10"],
      "the watch starts from the first page's version",
    );
    assert.deepEqual(events.map(line), ["ADDED default/a", "ADDED default/b"]);
    assert.equal(
      layer.get("services", "default/a")?.metadata?.managedFields,
      undefined,
      "managedFields are not cached",
    );
  } finally {
    await layer.stop();
  }
});

Deno.test("reflector does not publish a replayed event twice and resumes from the last version seen", async () => {
  const t = new FakeTransport();
  t.lists.push(() => ({ items: [svc("a", "5")], resourceVersion: "5" }));
  t.watches.push(async (emit, connected) => {
    connected();
    emit({ type: "ADDED", object: svc("b", "6") });
    emit({ type: "MODIFIED", object: svc("a", "7") });
    await Promise.resolve();
    throw new KubeApiError(0, "", "connection reset");
  });
  t.watches.push(async (emit, connected) => {
    connected();
    // A server may replay what was already delivered: none of it is new.
    emit({ type: "ADDED", object: svc("b", "6") });
    emit({ type: "MODIFIED", object: svc("a", "7") });
    emit({ type: "DELETED", object: svc("gone", "8") });
    emit({ type: "BOOKMARK", object: { metadata: { resourceVersion: "12" } } });
    await Promise.resolve();
    // The server ended the watch (timeoutSeconds).
  });
  const { layer, events, clock } = layerWith(t);
  try {
    layer.start(["services"]);
    assert.equal(await layer.waitForSync(["services"], 1000), true);
    await flushMicrotasks();
    await clock.advance(200);
    await flushMicrotasks();
    assert.deepEqual(events.map(line), ["ADDED default/a", "ADDED default/b", "MODIFIED default/a"]);
    assert.deepEqual(t.calls, ["list", "watch 5", "watch 7", "watch 12"]);
    assert.equal(layer.stats("services")!.lists, 1);
  } finally {
    await layer.stop();
  }
});

Deno.test("reflector turns a 410 Gone into one re-list whose diff is published once", async () => {
  const t = new FakeTransport();
  t.lists.push(() => ({ items: [svc("a", "5"), svc("b", "6"), svc("c", "7")], resourceVersion: "7" }));
  t.watches.push(() => Promise.reject(new KubeApiError(410, "Expired", "too old resource version: 7 (20)")));
  t.lists.push(() => ({ items: [svc("a", "5"), svc("b", "15"), svc("d", "18")], resourceVersion: "20" }));
  const { layer, events, logs } = layerWith(t);
  try {
    layer.start(["services"]);
    assert.equal(await layer.waitForSync(["services"], 1000), true);
    await flushMicrotasks();
    await flushMicrotasks();
    assert.deepEqual(t.calls, ["list", "watch 7", "list", "watch 20"]);
    assert.deepEqual(events.slice(3).map(line), [
      "MODIFIED default/b",
      "ADDED default/d",
      "DELETED default/c",
    ]);
    assert.equal(events[3]!.previous?.metadata?.resourceVersion, "6");
    assert.deepEqual(layer.list("services").map((s) => s.metadata!.name).sort(), ["a", "b", "d"]);
    assert.ok(!logs.lines.some((l) => l.includes("WARN")), "a 410 is routine, not a failure");
  } finally {
    await layer.stop();
  }
});

Deno.test("reflector resets its backoff once a watch connects again", async () => {
  const t = new FakeTransport();
  t.lists.push(() => ({ items: [], resourceVersion: "1" }));
  const refused = () => Promise.reject(new KubeApiError(0, "", "connection refused"));
  t.watches.push(refused, refused, refused);
  t.watches.push(async (_emit, connected) => {
    connected();
    await Promise.resolve();
    throw new KubeApiError(0, "", "connection reset");
  });
  t.watches.push(refused);
  const clock = new RecordingClock();
  const { layer } = layerWith(t, clock);
  try {
    layer.start(["services"]);
    assert.equal(await layer.waitForSync(["services"], 1000), true);
    const synced = clock.delays.length; // the waitForSync timer
    for (let i = 0; i < 6; i++) await clock.advance(400);
    assert.ok(t.calls.filter((c) => c.startsWith("watch")).length >= 5);
    // Three refusals back off 100, 200, 400; the watch that connected resets it: 100 again.
    const bases = [100, 200, 400, 100];
    const delays = clock.delays.slice(synced, synced + 4);
    delays.forEach((d, i) =>
      assert.ok(d >= bases[i]! * 0.8 && d <= bases[i]!, `delay ${i} = ${d}, base ${bases[i]}`)
    );
  } finally {
    await layer.stop();
  }
});

Deno.test("a list refused with 403 is reported by failing() with its status until a list succeeds", async () => {
  const t = new FakeTransport();
  const forbidden = () => {
    throw new KubeApiError(
      403,
      "Forbidden",
      'services is forbidden: User "system:serviceaccount:kube-system:kube-router" cannot list resource "services"',
    );
  };
  t.lists.push(forbidden, forbidden, () => ({ items: [svc("a", "5")], resourceVersion: "5" }));
  const { layer, clock } = layerWith(t);
  try {
    layer.start(["services"]);
    await flushMicrotasks();
    const f = layer.failing();
    assert.equal(f.length, 1);
    assert.equal(f[0]!.resource, "services");
    assert.equal(f[0]!.code, 403);
    assert.match(f[0]!.error, /cannot list resource "services"/);
    const since = f[0]!.since;
    await clock.advance(100);
    assert.equal(layer.failing()[0]?.since, since, "the first failure's time is kept");
    await clock.advance(400);
    await flushMicrotasks();
    assert.equal(layer.isSynced("services"), true);
    assert.deepEqual(layer.failing(), []);
  } finally {
    await layer.stop();
  }
});
