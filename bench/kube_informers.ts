/**
 * Watch layer start-up, memory and event rate with a large cluster: 5,000 Services, 5,000
 * EndpointSlices of 10 endpoints (50,000 endpoints) and 10,000 Pods in the lab API server. The watch
 * layer runs in its own process, as the agent does. References measured in the same run: a bare
 * client (one plain GET per resource, items kept, watch lines parsed and counted) and
 * `kubectl get services,endpointslices,pods -A -o json`.
 *
 *   deno run -A bench/kube_informers.ts [--services N] [--slices N] [--pods N] [--events N]
 */
import { parseArgs } from "node:util";
import { startApiServer, type Store } from "../lab/apiserver/mod.ts";

const { values } = parseArgs({
  options: {
    services: { type: "string", default: "5000" },
    slices: { type: "string", default: "5000" },
    pods: { type: "string", default: "10000" },
    events: { type: "string", default: "10000" },
  },
});
const N_SVC = Number(values.services),
  N_SLICE = Number(values.slices),
  N_POD = Number(values.pods),
  N_EVENTS = Number(values.events);
const here = new URL(".", import.meta.url).pathname;
const NAMESPACES = 50;

function load(store: Store): void {
  for (let n = 0; n < NAMESPACES; n++) store.create("namespaces", { metadata: { name: `ns-${n}` } });
  for (let i = 0; i < N_SVC; i++) {
    const ns = `ns-${i % NAMESPACES}`;
    store.create("services", {
      metadata: { name: `svc-${i}`, namespace: ns, labels: { app: `app-${i}` } },
      spec: {
        selector: { app: `app-${i}` },
        ports: [{ name: "http", port: 80, targetPort: 8080 }, { name: "https", port: 443, targetPort: 8443 }],
      },
    });
  }
  for (let i = 0; i < N_SLICE; i++) {
    const ns = `ns-${i % NAMESPACES}`;
    store.create("endpointslices", {
      metadata: {
        name: `svc-${i}-abcde`,
        namespace: ns,
        labels: {
          "kubernetes.io/service-name": `svc-${i}`,
          "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
        },
      },
      addressType: "IPv4",
      ports: [{ name: "http", port: 8080, protocol: "TCP" }, { name: "https", port: 8443, protocol: "TCP" }],
      endpoints: Array.from({ length: 10 }, (_, j) => ({
        addresses: [
          `10.${1 + ((i * 10 + j) >> 16) % 200}.${((i * 10 + j) >> 8) & 255}.${(i * 10 + j) & 255}`,
        ],
        conditions: { ready: true, serving: true, terminating: false },
        nodeName: `node-${j % 3}`,
        targetRef: { kind: "Pod", namespace: ns, name: `pod-${i}-${j}`, uid: crypto.randomUUID() },
      })),
    });
  }
  for (let i = 0; i < N_POD; i++) {
    const ns = `ns-${i % NAMESPACES}`;
    store.create("pods", {
      metadata: {
        name: `pod-${i}`,
        namespace: ns,
        labels: { app: `app-${i % N_SVC}`, "pod-template-hash": "5d8f9c7b6d" },
        ownerReferences: [{
          apiVersion: "apps/v1",
          kind: "ReplicaSet",
          name: `rs-${i % N_SVC}`,
          uid: crypto.randomUUID(),
          controller: true,
        }],
      },
      spec: {
        nodeName: `node-${i % 3}`,
        containers: [{
          name: "app",
          image: "registry.example/app:1.2.3",
          ports: [{ containerPort: 8080, name: "http" }, { containerPort: 8443, name: "https" }],
          env: [{ name: "MODE", value: "prod" }, { name: "LOG_LEVEL", value: "info" }],
          resources: { requests: { cpu: "100m", memory: "128Mi" }, limits: { memory: "256Mi" } },
        }],
      },
      status: {
        phase: "Running",
        podIP: `10.${1 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`,
        hostIP: `192.168.1.${100 + i % 3}`,
      },
    });
  }
}

interface ChildResult {
  synced?: {
    ok: boolean;
    syncMs: number;
    sinceProcessStartMs: number;
    objects: number;
    rss: number;
    hwm: number;
  };
  events?: { events: number; ms: number };
  wallToSyncMs: number;
}

async function runChild(args: string[], produce: () => void, v8Flags: string[] = []): Promise<ChildResult> {
  const t0 = performance.now();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      ...(v8Flags.length ? [`--v8-flags=${v8Flags.join(",")}`] : []),
      `${here}_kube_informers_agent.ts`,
      ...args,
    ],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const result: ChildResult = { wallToSyncMs: 0 };
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const msg = JSON.parse(buf.slice(0, i));
      buf = buf.slice(i + 1);
      if (msg.phase === "synced") {
        result.wallToSyncMs = performance.now() - t0;
        result.synced = msg;
        // Give the watches a moment to be established before the burst.
        await new Promise((r) => setTimeout(r, 300));
        produce();
      } else if (msg.phase === "events") result.events = msg;
    }
  }
  await child.status;
  return result;
}

async function timeKubectl(kubeconfig: string): Promise<{ ms: number; maxRssKb: number } | undefined> {
  try {
    const t0 = performance.now();
    const out = await new Deno.Command("/usr/bin/time", {
      args: [
        "-f",
        "%M",
        "kubectl",
        "--kubeconfig",
        kubeconfig,
        "get",
        "services,endpointslices,pods",
        "-A",
        "-o",
        "json",
      ],
      stdout: "null",
      stderr: "piped",
    }).output();
    const ms = performance.now() - t0;
    const lines = new TextDecoder().decode(out.stderr).trim().split("\n");
    return out.success ? { ms, maxRssKb: Number(lines[lines.length - 1]) } : undefined;
  } catch {
    return undefined;
  }
}

const dir = await Deno.makeTempDir({ prefix: "bench-kube-" });
const server = await startApiServer({ stateDir: dir, serviceCidr: "172.16.0.0/16" });
try {
  const tLoad = performance.now();
  load(server.store);
  console.error(
    `loaded ${N_SVC} services, ${N_SLICE} slices, ${N_POD} pods in ${
      Math.round(performance.now() - tLoad)
    } ms`,
  );
  const kubeconfig = await server.writeKubeconfig(`${dir}/kubeconfig`);
  let round = 0;
  const producer = () => {
    round++;
    for (let i = 0; i < N_EVENTS; i++) {
      server.store.patch("pods", `ns-${i % NAMESPACES}/pod-${i % N_POD}`, "merge", {
        metadata: { labels: { round: String(round) } },
      });
    }
  };
  const ours = await runChild(["--kubeconfig", kubeconfig, "--expect-events", String(N_EVENTS)], producer);
  console.error("watch layer:", JSON.stringify(ours));
  // The same, with V8 told to favour memory over speed (what `deno run --v8-flags=--optimize-for-size` gives the agent).
  const small = await runChild(["--kubeconfig", kubeconfig, "--expect-events", String(N_EVENTS)], producer, [
    "--optimize-for-size",
  ]);
  console.error("watch layer, --optimize-for-size:", JSON.stringify(small));
  const ref = await runChild([
    "--mode",
    "raw",
    "--url",
    server.url,
    "--token",
    server.token,
    "--ca",
    server.caCertPath,
    "--expect-events",
    String(N_EVENTS),
  ], producer);
  console.error("bare client:", JSON.stringify(ref));
  const kubectl = await timeKubectl(kubeconfig);
  console.error("kubectl:", JSON.stringify(kubectl));

  const MiB = 1024 * 1024;
  const f = (n: number | undefined, d = 0) => (n === undefined || Number.isNaN(n) ? "n/a" : n.toFixed(d));
  const ratio = (a: number | undefined, b: number | undefined) => (a && b ? (a / b).toFixed(2) : "n/a");
  const oursRate = ours.events ? ours.events.events / (ours.events.ms / 1000) : undefined;
  const refRate = ref.events ? ref.events.events / (ref.events.ms / 1000) : undefined;
  const rows = [
    [
      "time to all synced, from layer start (ms)",
      f(ours.synced?.syncMs),
      `${f(ref.synced?.syncMs)} (bare GETs)`,
      ratio(ours.synced?.syncMs, ref.synced?.syncMs),
      "< 5000",
    ],
    [
      "time to all synced, from process spawn (ms)",
      f(ours.wallToSyncMs),
      `${f(ref.wallToSyncMs)} (bare client)`,
      ratio(ours.wallToSyncMs, ref.wallToSyncMs),
      "< 5000",
    ],
    [
      "same lists with `kubectl get -o json` (ms)",
      f(ours.wallToSyncMs),
      f(kubectl?.ms),
      ratio(ours.wallToSyncMs, kubectl?.ms),
      "",
    ],
    [
      "RSS after sync (MiB)",
      f((ours.synced?.rss ?? NaN) / MiB),
      `${f((ref.synced?.rss ?? NaN) / MiB)} (bare client)`,
      ratio(ours.synced?.rss, ref.synced?.rss),
      "< 200",
    ],
    [
      "RSS after sync with `--v8-flags=--optimize-for-size` (MiB)",
      f((small.synced?.rss ?? NaN) / MiB),
      `${f((ref.synced?.rss ?? NaN) / MiB)} (bare client)`,
      ratio(small.synced?.rss, ref.synced?.rss),
      "< 200",
    ],
    [
      "time to all synced with `--optimize-for-size`, from layer start (ms)",
      f(small.synced?.syncMs),
      `${f(ref.synced?.syncMs)} (bare GETs)`,
      ratio(small.synced?.syncMs, ref.synced?.syncMs),
      "< 5000",
    ],
    [
      "peak RSS (MiB)",
      f((ours.synced?.hwm ?? NaN) / MiB),
      `${f((kubectl?.maxRssKb ?? NaN) / 1024)} (kubectl)`,
      ratio(ours.synced?.hwm, kubectl ? kubectl.maxRssKb * 1024 : undefined),
      "",
    ],
    [
      `watch events delivered to the bus (events/s, ${N_EVENTS} pod updates; higher is better)`,
      f(oursRate),
      `${f(refRate)} (bare watch, parse only)`,
      ratio(oursRate, refRate),
      "",
    ],
  ];
  const md = [
    "## Kubernetes watch layer: start-up, memory and event rate",
    "",
    "| measure | ours | reference | ratio | target |",
    "| --- | --- | --- | --- | --- |",
    ...rows.map((r) => `| ${r.join(" | ")} |`),
    "",
    `Measured by bench/kube_informers.ts: lab API server (in the bench process, HTTPS, token auth) holding ${N_SVC} Services, ${N_SLICE} EndpointSlices x 10 endpoints and ${N_POD} Pods; ` +
    `the watch layer (services, endpointslices, pods informers, 500-item pages) runs in its own Deno process as the agent would; ratio = ours / reference; ` +
    `${
      ours.synced?.objects ?? "?"
    } objects cached; event rate is bounded by the API server producing the updates in the same run for both.`,
    "",
  ].join("\n");
  await Deno.mkdir(`${here}results`, { recursive: true });
  await Deno.writeTextFile(`${here}results/kube_informers.md`, md);
  console.log(md);
} finally {
  await server.stop();
  await Deno.remove(dir, { recursive: true });
}
