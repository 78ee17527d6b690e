import assert from "node:assert/strict";
import { Metrics } from "../../../core/metrics.ts";

Deno.test("metrics render in Prometheus text format with escaped labels", () => {
  const m = new Metrics();
  m.counter("kube_router_x_total", "Things.").inc({ kind: 'a"b\\c' }, 2);
  m.gauge("kube_router_g", "A gauge.").set({}, 1.5);
  const h = m.histogram("kube_router_d_seconds", "Durations.", [0.1, 1]);
  h.observe({ module: "proxy" }, 0.05);
  h.observe({ module: "proxy" }, 0.5);
  h.observe({ module: "proxy" }, 5);
  const text = m.render();
  assert.match(text, /# HELP kube_router_x_total Things\.\n# TYPE kube_router_x_total counter\n/);
  assert.match(text, /kube_router_x_total\{kind="a\\"b\\\\c"\} 2\n/);
  assert.match(text, /kube_router_g 1.5\n/);
  assert.match(text, /kube_router_d_seconds_bucket\{module="proxy",le="0.1"\} 1\n/);
  assert.match(text, /kube_router_d_seconds_bucket\{module="proxy",le="1"\} 2\n/);
  assert.match(text, /kube_router_d_seconds_bucket\{module="proxy",le="\+Inf"\} 3\n/);
  assert.match(text, /kube_router_d_seconds_sum\{module="proxy"\} 5.55\n/);
  assert.match(text, /kube_router_d_seconds_count\{module="proxy"\} 3\n/);
});

Deno.test("metrics return the same metric for the same name and refuse a type clash", () => {
  const m = new Metrics();
  assert.equal(m.counter("a_total", "x"), m.counter("a_total", "x"));
  assert.throws(() => m.gauge("a_total", "x"), /another type/);
  assert.throws(() => m.counter("bad-name", "x"), /invalid metric name/);
  assert.throws(() => m.counter("c_total", "x").inc({}, -1), /cannot decrease/);
});

Deno.test("a scrape of /metrics waits for the collectors, and a failing collector spoils nothing else", async () => {
  const { startHttp } = await import("../../../core/http.ts");
  const { Health } = await import("../../../core/health.ts");
  const { getLogger, MemorySink } = await import("../../../core/log.ts");
  const m = new Metrics();
  const g = m.gauge("kube_router_test_reading", "A value read on a scrape.");
  let reads = 0;
  const off = m.onCollect(async () => {
    await new Promise((r) => setTimeout(r, 20));
    g.set({}, ++reads);
  });
  m.onCollect(() => Promise.reject(new Error("kernel unreachable")));
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const http = startHttp({
    health: new Health(),
    metrics: m,
    log: getLogger({}, new MemorySink()),
    healthAddr: "127.0.0.1",
    healthPort: 0,
    metricsAddr: "127.0.0.1",
    metricsPort: port,
    metricsPath: "/metrics",
  });
  try {
    const url = `http://127.0.0.1:${http.metricsPort}/metrics`;
    let res = await fetch(url);
    assert.equal(res.status, 200);
    assert.match(await res.text(), /^kube_router_test_reading 1$/m);
    assert.match(await (await fetch(url)).text(), /^kube_router_test_reading 2$/m);
    off();
    res = await fetch(url);
    assert.match(await res.text(), /^kube_router_test_reading 2$/m, "a removed collector no longer runs");
  } finally {
    await http.shutdown();
  }
});

Deno.test("a frozen label object is shared by the metrics given it; a plain one is copied, so changing it later harms nothing", () => {
  const m = new Metrics();
  const a = m.gauge("kube_router_test_a", "A.");
  const b = m.gauge("kube_router_test_b", "B.");
  const frozen = Object.freeze({ service_name: "web", port: "80" });
  a.set(frozen, 1);
  b.set(frozen, 2);
  a.set(frozen, 3);
  const plain: Record<string, string> = { service_name: "db" };
  a.set(plain, 5);
  plain.service_name = "other"; // a caller reusing its object
  a.set(plain, 6);
  const text = m.render();
  assert.match(text, /^kube_router_test_a\{port="80",service_name="web"\} 3$/m);
  assert.match(text, /^kube_router_test_b\{port="80",service_name="web"\} 2$/m);
  assert.match(text, /^kube_router_test_a\{service_name="db"\} 5$/m);
  assert.match(text, /^kube_router_test_a\{service_name="other"\} 6$/m);
  a.remove(frozen);
  assert.doesNotMatch(m.render(), /kube_router_test_a\{port="80"/);
  assert.match(m.render(), /kube_router_test_b\{port="80",service_name="web"\} 2/);
});

Deno.test("the registry streamed for a scrape is byte for byte its rendered text, however many series", async () => {
  const m = new Metrics();
  const g = m.gauge("kube_router_service_packets_in", "Total incoming packets of the service.");
  for (let i = 0; i < 2500; i++) g.set({ service_name: `svc-${i}`, port: "80" }, i);
  m.counter("kube_router_empty_total", "Nothing yet.");
  m.histogram("kube_router_sync_seconds", "Sync time.", [0.1, 1]).observe({ kind: "full" }, 0.5);
  const text = m.render();
  assert.equal(await new Response(m.stream()).text(), text);
  const lines = text.split("\n");
  assert.equal(lines.at(-1), "", "the text ends with a newline");
  assert.equal(lines.filter((l) => l.startsWith("kube_router_service_packets_in{")).length, 2500);
  assert.ok(lines.includes("# TYPE kube_router_empty_total counter"));
  assert.ok(lines.includes('kube_router_sync_seconds_bucket{kind="full",le="1"} 1'));
});
