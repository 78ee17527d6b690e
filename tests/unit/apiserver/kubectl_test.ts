import assert from "node:assert/strict";
import { needs } from "../../_support/netns.ts";
import { withKubectl } from "./_kubectl.ts";

const MANIFEST = `
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  labels: {app: web}
spec:
  nodeName: kube-node1
  containers:
  - name: nginx
    image: nginx:1.25
    ports: [{containerPort: 80, name: http}]
---
apiVersion: v1
kind: Pod
metadata:
  name: db-1
  namespace: shop
  labels: {app: db}
spec:
  nodeName: kube-node2
  containers:
  - name: pg
    image: postgres:16
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  type: NodePort
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: db-from-web
  namespace: shop
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 5432}]
`;

for (const auth of ["token", "cert"] as const) {
  Deno.test({
    ...needs(
      `kubectl applies, reads, labels, annotates, patches and deletes objects on the lab API server (${auth} auth)`,
      { tools: ["kubectl"] },
    ),
    fn: () =>
      // Namespaces terminate a moment after deletion, as in Kubernetes, so `kubectl delete -f` of a file
      // that starts with its Namespace still finds the objects after it.
      withKubectl(
        { serviceCidr: "172.16.0.0/16", namespaceDeletionDelayMs: 300 },
        auth,
        async ({ server, dir, k }) => {
          await Deno.writeTextFile(`${dir}/m.yaml`, MANIFEST);
          const applied = await k("apply", "--validate=false", "-f", `${dir}/m.yaml`);
          for (
            const what of [
              "namespace/shop created",
              "pod/web-1 created",
              "pod/db-1 created",
              "service/web created",
              "networkpolicy.networking.k8s.io/db-from-web created",
            ]
          ) {
            assert.match(applied, new RegExp(what.replace(/[./]/g, "\\$&")));
          }
          assert.match(await k("apply", "--validate=false", "-f", `${dir}/m.yaml`), /service\/web unchanged/);

          const svc = JSON.parse(await k("get", "service", "web", "-n", "shop", "-o", "json"));
          assert.match(svc.spec.clusterIP, /^172\.16\./);
          assert.ok(svc.spec.ports[0].nodePort >= 30000);
          assert.ok(
            svc.metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"],
            "last-applied annotation stored",
          );

          await k("label", "pod", "web-1", "-n", "shop", "tier=frontend");
          await k("annotate", "service", "web", "-n", "shop", "owner=team-a");
          await k("patch", "pod", "db-1", "-n", "shop", "-p", '{"metadata":{"labels":{"backup":"nightly"}}}');
          await k(
            "patch",
            "service",
            "web",
            "-n",
            "shop",
            "--type",
            "json",
            "-p",
            '[{"op":"add","path":"/spec/ports/-","value":{"name":"https","port":443,"targetPort":443}}]',
          );

          // `kubectl create namespace` sends protobuf, not JSON.
          assert.match(await k("create", "namespace", "extra"), /namespace\/extra created/);
          assert.equal(server.store.get("namespaces", "extra").status.phase, "Active");

          // Server-side printing: the wide columns come from the server's Table.
          const wide = await k("get", "pods", "-n", "shop", "-o", "wide");
          assert.match(wide.split("\n")[0]!, /^NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\s+IP\s+NODE/);
          assert.match(wide, /web-1\s+0\/1\s+Pending\s+0\s+\S+\s+<none>\s+kube-node1/);
          assert.match(
            await k("get", "svc", "-n", "shop"),
            /web\s+NodePort\s+172\.16\.\d+\.\d+\s+<none>\s+80:3\d{4}\/TCP/,
          );

          const pods = JSON.parse(await k("get", "pods", "-n", "shop", "-l", "tier=frontend", "-o", "json"));
          assert.deepEqual(pods.items.map((p: { metadata: { name: string } }) => p.metadata.name), ["web-1"]);
          const onNode2 = JSON.parse(
            await k("get", "pods", "-A", "--field-selector", "spec.nodeName=kube-node2", "-o", "json"),
          );
          assert.deepEqual(
            onNode2.items.map((p: { metadata: { labels: Record<string, string> } }) =>
              p.metadata.labels.backup
            ),
            ["nightly"],
          );
          const svc2 = JSON.parse(await k("get", "svc", "web", "-n", "shop", "-o", "json"));
          assert.equal(svc2.metadata.annotations.owner, "team-a");
          assert.equal(svc2.spec.ports.length, 2);
          assert.equal(svc2.spec.clusterIP, svc.spec.clusterIP, "patches keep the allocated clusterIP");
          assert.notEqual(svc2.spec.ports[1].nodePort, svc2.spec.ports[0].nodePort);

          // Re-applying after the label/annotate keeps what they added (three-way merge against last-applied).
          await k("apply", "--validate=false", "-f", `${dir}/m.yaml`);
          assert.equal(server.store.get("pods", "shop/web-1").metadata!.labels!.tier, "frontend");

          // Delete the whole file (Namespace first), then apply it again and delete piecewise.
          const deleted = await k("delete", "-f", `${dir}/m.yaml`);
          assert.match(deleted, /namespace "shop" deleted/);
          assert.match(deleted, /service "web" deleted/);
          assert.equal(
            server.store.tryGet("namespaces", "shop"),
            undefined,
            "kubectl waited for the namespace to go",
          );
          await k("apply", "--validate=false", "-f", `${dir}/m.yaml`);
          await k("delete", "pod", "db-1", "-n", "shop");
          assert.equal(server.store.tryGet("pods", "shop/db-1"), undefined);
          await k("delete", "networkpolicy", "db-from-web", "-n", "shop");
          await k("delete", "namespace", "shop");
          assert.equal(server.store.list("pods").items.length, 0);
          assert.equal(server.store.list("services").items.length, 0);
        },
      ),
  });
}

Deno.test({
  ...needs(
    "kubectl apply of a changed manifest merges by key (a removed port, a changed image) and other pod changes are refused",
    { tools: ["kubectl"] },
  ),
  fn: () =>
    withKubectl({}, "token", async ({ server, dir, k, kubectl }) => {
      const manifest = (image: string, ports: number[], env: string[]) => `
apiVersion: v1
kind: Service
metadata: {name: api}
spec:
  selector: {app: api}
  ports:
${ports.map((p) => `  - {name: p${p}, port: ${p}, targetPort: ${p}}`).join("\n")}
---
apiVersion: v1
kind: Pod
metadata: {name: api, labels: {app: api}}
spec:
  containers:
  - name: main
    image: ${image}
    env:
${env.map((e) => `    - {name: ${e}, value: "1"}`).join("\n")}
  - name: sidecar
    image: envoy:1
`;
      await Deno.writeTextFile(`${dir}/m.yaml`, manifest("api:1", [80, 443], ["A", "B"]));
      await k("apply", "--validate=false", "-f", `${dir}/m.yaml`);
      const ip = server.store.get("services", "default/api").spec.clusterIP;
      await Deno.writeTextFile(`${dir}/m.yaml`, manifest("api:2", [80], ["A", "B"]));
      assert.match(await k("apply", "--validate=false", "-f", `${dir}/m.yaml`), /service\/api configured/);
      const svc = server.store.get("services", "default/api");
      assert.deepEqual(svc.spec.ports.map((p: { port: number }) => p.port), [80]);
      assert.equal(svc.spec.clusterIP, ip);
      const pod = server.store.get("pods", "default/api");
      assert.deepEqual(
        pod.spec.containers.map((c: { name: string; image: string }) => `${c.name}=${c.image}`),
        ["main=api:2", "sidecar=envoy:1"],
      );
      assert.deepEqual(pod.spec.containers[0].env.map((e: { name: string }) => e.name), ["A", "B"]);
      // Anything else in a pod's spec is immutable, and kubectl reports the server's reason.
      await Deno.writeTextFile(`${dir}/m.yaml`, manifest("api:2", [80], ["B", "C"]));
      const refused = await kubectl("apply", "--validate=false", "-f", `${dir}/m.yaml`);
      assert.notEqual(refused.code, 0);
      assert.match(refused.stderr, /pod updates may not change fields/);
    }),
});
