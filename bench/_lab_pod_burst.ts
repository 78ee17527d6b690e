/**
 * Helper of bench/lab_up.ts, run inside the lab master's namespace (`ip netns exec <prefix>master deno
 * run -A bench/_lab_pod_burst.ts <stateDir> <namespace> <count>`): creates `count` unpinned pods at once
 * through the API (no kubectl client-side throttling) and prints the seconds until every one is Ready.
 */
import { type KObject, KubeClient } from "../lab/mod.ts";

const [stateDir, ns, countText] = Deno.args;
const count = Number(countText);
const client = new KubeClient({
  server: "https://127.0.0.1:6443",
  caCert: Deno.readTextFileSync(`${stateDir}/apiserver/pki/ca.crt`),
  token: Deno.readTextFileSync(`${stateDir}/apiserver/token`).trim(),
});
await client.create("/api/v1/namespaces", { apiVersion: "v1", kind: "Namespace", metadata: { name: ns! } });
const t0 = performance.now();
await Promise.all(Array.from({ length: count }, (_, i) =>
  client.create(`/api/v1/namespaces/${ns}/pods`, {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name: `p${i}`, namespace: ns! },
    spec: { containers: [{ name: "c", image: "agnhost", ports: [{ containerPort: 8080 }] }] },
  } as KObject)));
while (true) {
  const l = await client.list(`/api/v1/namespaces/${ns}/pods`);
  const ready = l.items.filter((p) =>
    ((p.status?.conditions ?? []) as Array<{ type: string; status: string }>).some((c) =>
      c.type === "Ready" && c.status === "True"
    )
  ).length;
  if (ready === count) {
    break;
  }
  await new Promise((r) =>
    setTimeout(r, 50)
  );
}
console.log(((performance.now() - t0) / 1000).toFixed(3));
client.close();
