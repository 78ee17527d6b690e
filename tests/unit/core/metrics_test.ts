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
