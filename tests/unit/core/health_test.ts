import assert from "node:assert/strict";
import { FakeClock } from "../../../core/clock.ts";
import { Health, HEALTH_GRACE_MS } from "../../../core/health.ts";

Deno.test("health is 200-worthy while a module syncs within its period plus grace, and names the late one", async () => {
  const clock = new FakeClock();
  const h = new Health(clock);
  h.register("proxy", 10_000);
  h.register("router", 60_000);
  h.heartbeat("proxy");
  h.heartbeat("router");
  assert.equal(h.report().healthy, true);
  await clock.advance(10_000 + HEALTH_GRACE_MS);
  assert.equal(h.report().healthy, true);
  h.failure("proxy", new Error("nft: table busy"));
  await clock.advance(1);
  const r = h.report();
  assert.equal(r.healthy, false);
  assert.equal(r.modules.proxy?.healthy, false);
  assert.equal(r.modules.router?.healthy, true);
  assert.match(r.modules.proxy?.reason ?? "", /last successful sync 15s ago/);
  assert.match(r.modules.proxy?.reason ?? "", /nft: table busy/);
  h.heartbeat("proxy");
  assert.equal(h.report().healthy, true);
});

Deno.test("health gives a module that has not synced yet its startup allowance", async () => {
  const clock = new FakeClock();
  const h = new Health(clock);
  h.register("firewall", 1000, 60_000);
  await clock.advance(60_000 + 1000 + HEALTH_GRACE_MS);
  assert.equal(h.report().healthy, true);
  await clock.advance(1);
  const r = h.report();
  assert.equal(r.healthy, false);
  assert.match(r.modules.firewall?.reason ?? "", /no successful sync since start/);
});

Deno.test("a failing check makes the report unhealthy under its own name, and only while it fails", () => {
  const h = new Health(new FakeClock());
  let reason: string | undefined = "list/watch pods failing for 3s: HTTP 403: forbidden";
  h.check("kube-api", () => reason);
  const bad = h.report();
  assert.equal(bad.healthy, false);
  assert.equal(bad.modules["kube-api"]?.reason, reason);
  reason = undefined;
  const good = h.report();
  assert.equal(good.healthy, true);
  assert.equal(good.modules["kube-api"], undefined);
});
