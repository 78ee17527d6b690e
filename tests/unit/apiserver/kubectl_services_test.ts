/**
 * What a user types on day one, run with the real kubectl v1.32 against the lab API server: `kubectl
 * create service …` (a protobuf body), `kubectl expose`, `kubectl apply` of a ServiceAccount and of a
 * NetworkPolicy using SCTP and endPort, and `kubectl delete namespace` running to completion.
 */
import assert from "node:assert/strict";
import { needs } from "../../_support/netns.ts";
import { withKubectl } from "./_kubectl.ts";

const KUBECTL = { tools: ["kubectl"] };

Deno.test({
  ...needs("kubectl create service clusterip, nodeport, loadbalancer and externalname are served", KUBECTL),
  fn: () =>
    withKubectl({ serviceCidr: "172.16.0.0/16" }, "token", async ({ k, server }) => {
      assert.match(await k("create", "service", "clusterip", "web", "--tcp=80:8080"), /service\/web created/);
      assert.match(await k("create", "service", "nodeport", "np", "--tcp=80:8080"), /service\/np created/);
      assert.match(
        await k("create", "service", "loadbalancer", "lb", "--tcp=443:8443", "--tcp=80:8080"),
        /service\/lb created/,
      );
      await k("create", "service", "externalname", "ext", "--external-name=example.com");
      await k("create", "service", "clusterip", "headless", "--clusterip=None");
      const get = async (name: string) => JSON.parse(await k("get", "service", name, "-o", "json")).spec;
      const web = await get("web");
      assert.equal(web.type, "ClusterIP");
      assert.match(web.clusterIP, /^172\.16\.\d+\.\d+$/);
      assert.deepEqual(web.clusterIPs, [web.clusterIP]);
      assert.deepEqual([web.ipFamilies, web.ipFamilyPolicy], [["IPv4"], "SingleStack"]);
      assert.deepEqual(web.ports, [{ name: "80-8080", port: 80, protocol: "TCP", targetPort: 8080 }]);
      assert.deepEqual(web.selector, { app: "web" });
      const np = await get("np");
      assert.ok(np.ports[0].nodePort >= 30000 && np.ports[0].nodePort <= 32767, "a node port is allocated");
      const lb = await get("lb");
      assert.equal(lb.ports.length, 2);
      assert.notEqual(lb.ports[0].nodePort, lb.ports[1].nodePort, "each port gets its own node port");
      assert.equal(lb.allocateLoadBalancerNodePorts, true);
      assert.equal(lb.externalTrafficPolicy, "Cluster");
      const ext = await get("ext");
      assert.deepEqual([ext.type, ext.externalName, ext.clusterIP], [
        "ExternalName",
        "example.com",
        undefined,
      ]);
      assert.deepEqual((await get("headless")).clusterIPs, ["None"]);
      assert.equal(server.store.services.nodePorts.used, 3);
    }),
});

Deno.test({
  ...needs("kubectl expose makes a Service for a pod and for an existing Service", KUBECTL),
  fn: () =>
    withKubectl({ serviceCidr: "172.16.0.0/16" }, "token", async ({ k }) => {
      await k("run", "web-1", "--image=nginx:1.25", "--labels=app=web", "--port=80");
      assert.match(
        await k("expose", "pod", "web-1", "--port=80", "--type=NodePort"),
        /service\/web-1 exposed/,
      );
      const svc = JSON.parse(await k("get", "service", "web-1", "-o", "json")).spec;
      assert.deepEqual(svc.selector, { app: "web" });
      assert.equal(svc.type, "NodePort");
      assert.ok(svc.ports[0].nodePort >= 30000);
      assert.match(
        await k("expose", "service", "web-1", "--name=web-internal", "--port=8080", "--target-port=80"),
        /service\/web-internal exposed/,
      );
      const internal = JSON.parse(await k("get", "service", "web-internal", "-o", "json")).spec;
      assert.deepEqual([internal.type, internal.ports[0].port, internal.ports[0].targetPort], [
        "ClusterIP",
        8080,
        80,
      ]);
    }),
});

const SA_AND_POLICY = `
apiVersion: v1
kind: Namespace
metadata: {name: netpol-x}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: prober, namespace: netpol-x, labels: {team: net}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: sctp-range, namespace: netpol-x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - ports:
    - {protocol: SCTP, port: 80}
    - {protocol: TCP, port: 8000, endPort: 8010}
---
apiVersion: v1
kind: Service
metadata: {name: sticky, namespace: netpol-x}
spec:
  sessionAffinity: ClientIP
  ports: [{port: 80}]
`;

Deno.test({
  ...needs(
    "kubectl applies a ServiceAccount, a NetworkPolicy with SCTP and endPort, and a ClientIP Service with its default timeout",
    KUBECTL,
  ),
  fn: () =>
    withKubectl({ serviceCidr: "172.16.0.0/16" }, "token", async ({ k, dir }) => {
      await Deno.writeTextFile(`${dir}/m.yaml`, SA_AND_POLICY);
      const out = await k("apply", "--validate=false", "-f", `${dir}/m.yaml`);
      assert.match(out, /serviceaccount\/prober created/);
      assert.match(out, /networkpolicy.networking.k8s.io\/sctp-range created/);
      const sas = await k("get", "serviceaccounts", "-n", "netpol-x", "-o", "name");
      assert.deepEqual(sas.trim().split("\n").sort(), ["serviceaccount/default", "serviceaccount/prober"]);
      assert.match(await k("get", "sa", "-A", "-o", "name"), /serviceaccount\/default/);
      const np = JSON.parse(await k("get", "netpol", "sctp-range", "-n", "netpol-x", "-o", "json"));
      assert.deepEqual(np.spec.ingress[0].ports, [
        { protocol: "SCTP", port: 80 },
        { protocol: "TCP", port: 8000, endPort: 8010 },
      ]);
      const sticky = JSON.parse(await k("get", "svc", "sticky", "-n", "netpol-x", "-o", "json")).spec;
      assert.deepEqual(sticky.sessionAffinityConfig, { clientIP: { timeoutSeconds: 10800 } });
      // A second apply of the same file changes nothing (the allocations are carried over).
      assert.match(await k("apply", "--validate=false", "-f", `${dir}/m.yaml`), /service\/sticky unchanged/);
    }),
});

Deno.test({
  ...needs(
    "kubectl delete namespace completes: its pods, Services and accounts go, then the namespace",
    KUBECTL,
  ),
  fn: () =>
    withKubectl(
      { serviceCidr: "172.16.0.0/16", gracefulPodDeletion: true, namespaceDeletionDelayMs: 100 },
      "token",
      async ({ k, server }) => {
        await k("create", "namespace", "doomed");
        await k(
          "-n",
          "doomed",
          "run",
          "p",
          "--image=nginx:1.25",
          "--overrides",
          '{"spec":{"nodeName":"n1"}}',
        );
        await k("-n", "doomed", "create", "service", "clusterip", "s", "--tcp=80");
        const deleting = k("delete", "namespace", "doomed", "--timeout=20s");
        // The pod is on a node: it terminates gracefully, and the namespace waits for its kubelet.
        const store = server.store;
        for (let i = 0; i < 100 && !store.tryGet("pods", "doomed/p")?.metadata?.deletionTimestamp; i++) {
          await new Promise((r) => setTimeout(r, 50));
        }
        assert.ok(store.tryGet("pods", "doomed/p")?.metadata?.deletionTimestamp, "the pod is terminating");
        assert.equal(store.get("namespaces", "doomed").status?.phase, "Terminating");
        assert.equal(store.tryGet("services", "doomed/s"), undefined, "the Service is gone at once");
        store.delete("pods", "doomed/p", { gracePeriodSeconds: 0 }); // what the kubelet does
        assert.match(await deleting, /namespace "doomed" deleted/);
        assert.equal(store.tryGet("namespaces", "doomed"), undefined);
        assert.equal(store.list("serviceaccounts", { namespace: "doomed" }).items.length, 0);
        assert.doesNotMatch(await k("get", "ns", "-o", "name"), /doomed/);
      },
    ),
});
