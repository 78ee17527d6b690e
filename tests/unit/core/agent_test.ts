import assert from "node:assert/strict";
import { Agent, cleanupAll } from "../../../core/agent.ts";
import { Bus, type ResourceKind } from "../../../core/bus.ts";
import { FakeClock } from "../../../core/clock.ts";
import { loadConfig } from "../../../core/config.ts";
import { getLogger, type Logger, MemorySink } from "../../../core/log.ts";
import type { ModuleDefinition, ModuleName } from "../../../core/module.ts";
import { type TrackedSync, trackingModule } from "../../_support/tracking_module.ts";
import { startHttp } from "../../../core/http.ts";
import { MemorySource } from "../../_support/kube_source.ts";

function fakeModule(
  name: ModuleName,
  resources: ResourceKind[],
  log: TrackedSync[],
  opts: { fail?: () => boolean } = {},
): ModuleDefinition & { cleaned: boolean } {
  const def = {
    name,
    cleaned: false,
    resources: () => resources,
    syncPeriodMs: () => 30_000,
    create(ctx: Parameters<ModuleDefinition["create"]>[0]) {
      return trackingModule(ctx, resources, (s) => {
        log.push(s);
        return opts.fail?.() ? Promise.reject(new Error(`${name} broke`)) : Promise.resolve();
      });
    },
    cleanup() {
      def.cleaned = true;
      return Promise.resolve();
    },
  };
  return def;
}

const quiet = getLogger({}, new MemorySink());

/** An agent over a MemorySource (synced when the test says) with the given flags and modules (logging nowhere unless `log` is given). */
function setup(flags: string[], modules: ModuleDefinition[], opts: { clock?: FakeClock; log?: Logger } = {}) {
  const bus = new Bus();
  const source = new MemorySource(bus, { synced: false });
  const config = loadConfig([...flags, "--hostname-override=n1"]);
  const agent = new Agent({
    config,
    bus,
    source,
    log: opts.log ?? quiet,
    ...(opts.clock ? { clock: opts.clock } : {}),
    modules,
  });
  return { bus, source, agent };
}

Deno.test("agent starts only enabled modules and only the informers they need", async () => {
  const syncs: TrackedSync[] = [];
  const { source, agent } = setup(["--run-firewall=false"], [
    fakeModule("router", ["nodes"], syncs),
    fakeModule("proxy", ["services", "endpointslices", "nodes"], syncs),
    fakeModule("firewall", ["pods", "networkpolicies"], syncs),
  ], { clock: new FakeClock() });
  await agent.start();
  assert.deepEqual(agent.enabled().map((m) => m.name), ["router", "proxy"]);
  assert.deepEqual(source.started.sort(), ["endpointslices", "nodes", "services"]);
  await agent.stop();
  assert.ok(source.stopped);
});

Deno.test("agent holds every module's first sync until its caches are synced", async () => {
  const clock = new FakeClock();
  const syncs: TrackedSync[] = [];
  const { bus, source, agent } = setup(["--run-firewall=false", "--run-router=false"], [
    fakeModule("proxy", ["services"], syncs),
  ], { clock });
  await agent.start();
  bus.publishResource({
    resource: "services",
    type: "ADDED",
    key: "default/a",
    current: { metadata: { name: "a", namespace: "default" } },
  });
  await clock.advance(5000);
  assert.equal(syncs.length, 0, "no sync before the caches are synced");
  source.markSynced();
  await clock.advance(0);
  assert.equal(syncs.length, 1);
  assert.deepEqual(syncs[0]!.changed, { services: 1 });
  bus.publishResource({
    resource: "services",
    type: "DELETED",
    key: "default/a",
    previous: { metadata: { name: "a", namespace: "default" } },
  });
  await clock.advance(1000);
  assert.equal(syncs.length, 2);
  await agent.stop();
});

Deno.test("agent starts modules anyway when --cache-sync-timeout passes, and says so", async () => {
  const sink = new MemorySink();
  const syncs: TrackedSync[] = [];
  const { agent } = setup(
    ["--run-firewall=false", "--run-router=false", "--cache-sync-timeout=50ms"],
    [fakeModule("proxy", ["services"], syncs)],
    { log: getLogger({}, sink) },
  );
  await agent.start();
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(syncs.length, 1);
  assert.ok(
    sink.lines.some((l) => /caches not synced within --cache-sync-timeout.*resources=services/.test(l)),
    sink.lines.join("\n"),
  );
  await agent.stop();
});

Deno.test("/healthz turns 500 naming the module that stopped syncing, and /metrics counts its errors", async () => {
  const clock = new FakeClock(Date.now());
  let failing = false;
  const { source, agent } = setup(["--run-router=false", "--run-service-proxy=false"], [
    fakeModule("firewall", ["pods"], [], { fail: () => failing }),
  ], { clock });
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const http = startHttp({
    health: agent.health,
    metrics: agent.metrics,
    log: quiet,
    healthAddr: "127.0.0.1",
    healthPort: port,
    metricsAddr: "127.0.0.1",
    metricsPort: port,
    metricsPath: "/metrics",
  });
  try {
    await agent.start();
    source.markSynced();
    await clock.advance(0);
    let res = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(res.status, 200);
    assert.equal((await res.json()).modules.firewall.healthy, true);
    failing = true;
    await clock.advance(30_000 + 5_000 + 1);
    res = await fetch(`http://127.0.0.1:${port}/healthz`);
    assert.equal(res.status, 500);
    const body = await res.json();
    assert.equal(body.modules.firewall.healthy, false);
    assert.match(body.modules.firewall.reason, /last successful sync 35s ago/);
    assert.match(body.modules.firewall.lastError, /firewall broke/);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    assert.match(metrics, /kube_router_sync_errors_total\{module="firewall"\} [1-9]/);
    assert.match(metrics, /kube_router_sync_duration_seconds_count\{module="firewall"\} [2-9]/);
    assert.match(metrics, /kube_router_build_info\{.*version="0.1.0".*\} 1/);
    failing = false;
    await clock.advance(60_000);
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200, "recovers after a good sync");
    assert.equal((await fetch(`http://127.0.0.1:${port}/nope`)).status, 404);
  } finally {
    await agent.stop();
    await http.shutdown();
  }
});

Deno.test("cleanup runs every module's cleanup, enabled or not, and reports failure", async () => {
  const mods = [fakeModule("router", [], []), fakeModule("proxy", [], [])];
  const config = loadConfig(["--run-router=false", "--hostname-override=n1"]);
  assert.equal(await cleanupAll(config, mods, quiet), true);
  assert.ok(mods.every((m) => m.cleaned));
  const broken = { ...fakeModule("firewall", [], []), cleanup: () => Promise.reject(new Error("x")) };
  assert.equal(await cleanupAll(config, [broken], quiet), false);
});
