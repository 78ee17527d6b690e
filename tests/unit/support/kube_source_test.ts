import assert from "node:assert/strict";
import type { V1Service } from "@kubernetes/client-node";
import { Bus, type ResourceEvent } from "../../../core/bus.ts";
import { FakeClock } from "../../../core/clock.ts";
import { loadConfig } from "../../../core/config.ts";
import { MemorySource, moduleContext } from "../../_support/kube_source.ts";

const svc = (ip: string): V1Service => ({
  metadata: { namespace: "default", name: "web" },
  spec: { clusterIP: ip },
});

Deno.test("the memory source publishes ADDED, MODIFIED and DELETED with previous and current", () => {
  const t = moduleContext({ config: loadConfig(["--hostname-override=n1"]) });
  const seen: ResourceEvent<"services">[] = [];
  t.bus.onResource("services", (e) => seen.push(e));
  const a = svc("10.96.0.1"), b = svc("10.96.0.2");
  t.source.put("services", a);
  t.source.put("services", b);
  assert.deepEqual(t.ctx.store.get("services", "default/web"), b);
  b.spec!.clusterIP = "10.96.0.3"; // the store holds its own copy
  assert.equal(t.ctx.store.get("services", "default/web")!.spec!.clusterIP, "10.96.0.2");
  assert.equal(t.source.delete("services", "default/web"), true);
  assert.equal(t.source.delete("services", "default/web"), false);
  assert.deepEqual(
    seen.map((e) => [e.type, e.key, e.previous?.spec?.clusterIP, e.current?.spec?.clusterIP]),
    [
      ["ADDED", "default/web", undefined, "10.96.0.1"],
      ["MODIFIED", "default/web", "10.96.0.1", "10.96.0.2"],
      ["DELETED", "default/web", "10.96.0.2", undefined],
    ],
  );
  assert.equal(seen[1]!.previous, seen[0]!.current, "previous is the object published before");
  assert.deepEqual(t.ctx.store.list("services"), []);
});

Deno.test("a module's runner first syncs once the test marks caches synced, on the given clock", async () => {
  const clock = new FakeClock();
  const source = new MemorySource(new Bus(), { synced: false });
  const t = moduleContext({ config: loadConfig(["--hostname-override=n1"]), source, clock });
  let runs = 0;
  t.ctx.runner({
    sync: () => {
      runs++;
      return Promise.resolve();
    },
  });
  await clock.advance(5000);
  assert.equal(runs, 0, "no sync before caches are synced");
  source.markSynced();
  await t.ctx.cachesSynced;
  await clock.advance(0);
  assert.equal(runs, 1);
  assert.equal(t.syncs.ok, 1);
  await t.stop();
});
