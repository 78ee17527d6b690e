/**
 * The process side of bench/kube_informers.ts: runs the watch layer as the agent would (its own
 * process, the informers the proxy needs), or, with `--mode raw`, the reference (plain fetch of the
 * lists and a bare watch that only counts lines). Prints one JSON line per phase on stdout.
 */
import { parseArgs } from "node:util";
import { Bus, type ResourceKind } from "../core/bus.ts";
import { getLogger, MemorySink } from "../core/log.ts";
import { Metrics } from "../core/metrics.ts";
import { loadKubeConfig, RESOURCE_PATHS, WatchLayer } from "../core/kube/mod.ts";

const { values } = parseArgs({
  options: {
    kubeconfig: { type: "string" },
    mode: { type: "string", default: "layer" },
    resources: { type: "string", default: "services,endpointslices,pods" },
    "expect-events": { type: "string", default: "0" },
    url: { type: "string" },
    token: { type: "string" },
    ca: { type: "string" },
  },
});
const resources = values.resources.split(",") as ResourceKind[];
const expect = Number(values["expect-events"]);

function hwmBytes(): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
  return m ? Number(m[1]) * 1024 : 0;
}
function out(o: Record<string, unknown>): void {
  console.log(JSON.stringify(o));
}
/** The "synced" line, the same for the layer and the reference; memory read at this moment. */
function outSynced(ok: boolean, syncMs: number, objects: number): void {
  out({
    phase: "synced",
    ok,
    syncMs,
    sinceProcessStartMs: performance.now(),
    objects,
    rss: Deno.memoryUsage().rss,
    hwm: hwmBytes(),
  });
}

if (values.mode === "layer") {
  const bus = new Bus();
  let events = 0;
  let first = 0;
  let done = false;
  let synced = false;
  for (const r of resources) {
    bus.onResource(r, () => {
      if (!synced || done) return;
      if (events++ === 0) first = performance.now();
      if (events === expect) {
        done = true;
        out({ phase: "events", events, ms: performance.now() - first });
        void layer.stop().then(() => Deno.exit(0));
      }
    });
  }
  const layer: WatchLayer = new WatchLayer({
    kubeConfig: loadKubeConfig({ kubeconfig: values.kubeconfig!, master: "" }),
    bus,
    log: getLogger({}, new MemorySink()),
    metrics: new Metrics(),
  });
  const t0 = performance.now();
  layer.start(resources);
  const ok = await layer.waitForSync(resources, 120_000);
  const syncMs = performance.now() - t0;
  synced = true;
  outSynced(ok, syncMs, resources.reduce((n, r) => n + layer.list(r).length, 0));
  if (expect === 0) {
    await layer.stop();
    Deno.exit(0);
  }
} else {
  // Reference: what a minimal client costs: one GET per resource, JSON.parse, keep the items; then a
  // watch stream whose lines are parsed and counted, nothing else.
  const client = Deno.createHttpClient({ caCerts: [Deno.readTextFileSync(values.ca!)] });
  const headers = { Authorization: `Bearer ${values.token}` };
  const t0 = performance.now();
  const kept: unknown[][] = [];
  let rv = "";
  for (const r of resources) {
    const res = await fetch(values.url + RESOURCE_PATHS[r], { headers, client });
    const list = await res.json();
    kept.push(list.items);
    rv = list.metadata.resourceVersion;
  }
  outSynced(true, performance.now() - t0, kept.reduce((n, l) => n + l.length, 0));
  if (expect > 0) {
    const res = await fetch(`${values.url}/api/v1/pods?watch=true&resourceVersion=${rv}`, {
      headers,
      client,
    });
    const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    let events = 0;
    let first = 0;
    while (events < expect) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        JSON.parse(buf.slice(0, i));
        buf = buf.slice(i + 1);
        if (events++ === 0) first = performance.now();
      }
    }
    out({ phase: "events", events, ms: performance.now() - first });
  }
  Deno.exit(0);
}
