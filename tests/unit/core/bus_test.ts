import assert from "node:assert/strict";
import type { V1Service } from "@kubernetes/client-node";
import { Bus, objectKey } from "../../../core/bus.ts";
import { ChangeTracker } from "../../../core/change_tracker.ts";
import { getLogger, MemorySink } from "../../../core/log.ts";

const svc = (name: string, port: number, rv = "1"): V1Service => ({
  metadata: { namespace: "default", name, resourceVersion: rv },
  spec: { ports: [{ port }] },
});

Deno.test("bus delivers resource events to subscribers of that resource only, in order", () => {
  const bus = new Bus();
  const seen: string[] = [];
  const off = bus.onResource("services", (ev) => seen.push(`${ev.type} ${ev.key}`));
  bus.onResource("pods", () => seen.push("pod!"));
  bus.publishResource({ resource: "services", type: "ADDED", key: "default/a", current: svc("a", 80) });
  bus.publishResource({ resource: "services", type: "DELETED", key: "default/a", previous: svc("a", 80) });
  off();
  bus.publishResource({ resource: "services", type: "ADDED", key: "default/b", current: svc("b", 80) });
  assert.deepEqual(seen, ["ADDED default/a", "DELETED default/a"]);
  assert.equal(bus.hasResourceSubscribers("services"), false);
  assert.equal(bus.hasResourceSubscribers("pods"), true);
});

Deno.test("bus logs a throwing handler and still delivers to the others", () => {
  const sink = new MemorySink();
  const bus = new Bus(getLogger({ component: "bus" }, sink));
  let delivered = false;
  bus.on("synced", () => {
    throw new Error("handler bug");
  });
  bus.on("synced", () => delivered = true);
  bus.publish("synced", { resource: "nodes" });
  assert.ok(delivered);
  assert.equal(sink.lines.length, 1);
  assert.match(sink.lines[0]!, /event handler failed.*handler bug/);
});

Deno.test("change tracker keeps the first previous and the last current, and drops no-op pairs", () => {
  const t = new ChangeTracker<"services">();
  const a1 = svc("a", 80), a2 = svc("a", 81, "2"), a3 = svc("a", 80, "3");
  assert.equal(t.record({ resource: "services", type: "ADDED", key: "default/a", current: a1 }), true);
  t.drain();
  t.record({ resource: "services", type: "MODIFIED", key: "default/a", previous: a1, current: a2 });
  assert.equal(t.size, 1);
  // Changed back to what was programmed (only the resourceVersion differs): nothing to do.
  t.record({ resource: "services", type: "MODIFIED", key: "default/a", previous: a2, current: a3 });
  assert.equal(t.size, 0);
  // Added then deleted before a sync: nothing to do either.
  t.record({ resource: "services", type: "ADDED", key: "default/b", current: svc("b", 1) });
  t.record({ resource: "services", type: "DELETED", key: "default/b", previous: svc("b", 1) });
  assert.equal(t.size, 0);
  t.record({ resource: "services", type: "DELETED", key: "default/a", previous: a3 });
  const changes = t.drain();
  assert.deepEqual([...changes.keys()], ["default/a"]);
  assert.equal(changes.get("default/a")?.current, undefined);
  assert.equal(objectKey(a1), "default/a");
  assert.equal(objectKey({ metadata: { name: "node1" } }), "node1");
});
