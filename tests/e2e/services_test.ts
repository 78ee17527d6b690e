/**
 * End to end: Services reached from outside the cluster through the agents' service proxy. The Services
 * act of the demo (lab/acts/service_proxy.ts: every pod and node, spread, source IP kept, NodePort from a
 * machine outside the cluster) runs in tests/e2e/demo_test.ts; this file adds what the demo does not:
 * a host behind `lab up --external-router gobgp` reaching a Service's cluster IP, which the agents
 * announce with `--advertise-cluster-ip`, through each node in turn and through all of them as ECMP.
 *
 * gobgpd keeps what it learns in its RIB only (it installs kernel routes through zebra, which the lab does
 * not run), so the test copies the router's learned routes for the cluster IP into the router
 * namespace's kernel, as a router's FIB would hold them. The nodes' default route points at kube-master,
 * so they get a route to the host's subnet via the router, as the network of a real cluster provides.
 * Needs root, kubectl, curl, nsenter, gobgpd/gobgp and the Debian CNI plugins.
 */
import assert from "node:assert/strict";
import { needs, run } from "../_support/netns.ts";
import { eventually, k, netnsLeft, nodeMeshEstablished, showLogTails } from "./_lab.ts";
import {
  CLUSTER_ASN,
  execCommand,
  EXTERNAL_ROUTER_IP,
  externalRouterRoutes,
  labDown,
  type LabState,
  labUp,
  nodeDir,
  topology,
} from "../../lab/mod.ts";

const REQ = {
  tools: ["ip", "kubectl", "curl", "nsenter", "gobgpd", "gobgp"],
  files: ["/usr/lib/cni/bridge", "/usr/lib/cni/host-local"],
};
const BEHIND_NET = "10.99.0.0/24";
const BEHIND_IP = "10.99.0.2";
const ROUTER_INNER_IP = "10.99.0.1";

const pod = (name: string, node: string) =>
  `---
apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: default, labels: {app: web}}
spec:
  nodeName: ${node}
  containers:
  - name: netexec
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: ["netexec", "--http-port=8080"]
    ports: [{name: http, containerPort: 8080, protocol: TCP}]
`;
const SERVICE = `---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http, protocol: TCP}]
`;

Deno.test({
  ...needs(
    "a host behind the external router reaches a Service's cluster IP through every node, answered by pods on every node",
    REQ,
  ),
  async fn() {
    const id = crypto.randomUUID().slice(0, 6);
    const where = { stateDir: Deno.makeTempDirSync({ prefix: "krl-e2e-svc-" }), prefix: `krlv${id}-` };
    let ok = false;
    let state: LabState | undefined;
    try {
      state = await labUp({
        ...where,
        nodes: 3,
        externalRouter: "gobgp",
        agentFlags: ["--advertise-cluster-ip"],
      });
      const st = state;
      const nodes = topology(st.nodes, st.prefix).nodes;
      await k(st, ["apply", "-f", "-"], nodes.map((n, i) => pod(`web-${i + 1}`, n.name)).join("") + SERVICE);
      await k(st, ["wait", "--for=condition=Ready", "pod", "-l", "app=web", "--timeout=120s"]);
      const vip = (await k(st, ["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"])).trim();
      assert.match(vip, /^172\.16\.\d+\.\d+$/);

      // The router learns the cluster IP from every node.
      const r = st.externalRouter!;
      let hops: string[] = [];
      await eventually(`gobgpd learns ${vip}/32 from every node`, async () => {
        hops = (await externalRouterRoutes(r)).filter((x) => x.prefix === `${vip}/32`).map((x) => x.nexthop)
          .sort();
        return JSON.stringify(hops) === JSON.stringify(nodes.map((n) => n.ip).sort());
      }, 90_000);

      // The pod network converged: every node holds a session with every other (a proxy on one node sends
      // to pods on the others).
      await nodeMeshEstablished(st, CLUSTER_ASN);

      // A host behind the router: its own subnet, default route via the router.
      const behind = `${st.prefix}behind`;
      await run(["ip", "netns", "add", behind]);
      const inRouter = (cmd: string[]) => run(["ip", "netns", "exec", r.netns, ...cmd]);
      const inBehind = (cmd: string[], check = true) =>
        run(["ip", "netns", "exec", behind, ...cmd], { check });
      await inRouter(["ip", "link", "add", "inner", "type", "veth", "peer", "name", "krlvbh"]);
      await inRouter(["ip", "link", "set", "krlvbh", "netns", behind]);
      await inRouter(["ip", "addr", "add", `${ROUTER_INNER_IP}/24`, "dev", "inner"]);
      await inRouter(["ip", "link", "set", "inner", "up"]);
      await inRouter(["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
      await inBehind(["ip", "link", "set", "lo", "up"]);
      await inBehind(["ip", "link", "set", "krlvbh", "name", "eth0"]);
      await inBehind(["ip", "addr", "add", `${BEHIND_IP}/24`, "dev", "eth0"]);
      await inBehind(["ip", "link", "set", "eth0", "up"]);
      await inBehind(["ip", "route", "add", "default", "via", ROUTER_INNER_IP]);
      for (const n of nodes) {
        await run(execCommand(st, n.name, ["ip", "route", "replace", BEHIND_NET, "via", EXTERNAL_ROUTER_IP]));
      }

      const curl = async (path: string) =>
        (await inBehind(["curl", "-s", "-m", "3", `http://${vip}/${path}`], false)).stdout.trim();
      const names = nodes.map((_, i) => `web-${i + 1}`);
      // Through each node alone: its proxy takes traffic from outside for the cluster IP.
      for (const n of nodes) {
        await inRouter(["ip", "route", "replace", `${vip}/32`, "via", n.ip]);
        const seen = new Map<string, number>();
        await eventually(`${BEHIND_IP} reaches ${vip} through ${n.name}`, async () => {
          return names.includes(await curl("hostname"));
        }, 30_000);
        for (let i = 0; i < 12; i++) {
          const a = (await curl("hostname")) || "(no answer)";
          seen.set(a, (seen.get(a) ?? 0) + 1);
        }
        console.log(`through ${n.name}: ${[...seen].map(([a, c]) => `${a}×${c}`).join(" ")}`);
        assert.ok(!seen.has("(no answer)"), `every call through ${n.name} was answered: ${[...seen]}`);
        assert.ok([...seen.keys()].every((a) => names.includes(a)), `only web pods answer: ${[...seen]}`);
        assert.ok(seen.size >= 2, `calls through ${n.name} spread over the pods: ${[...seen]}`);
      }
      // Through the router's ECMP route over every node the router learned, as its FIB would hold it.
      await inRouter([
        "ip",
        "route",
        "replace",
        `${vip}/32`,
        ...hops.flatMap((h) => ["nexthop", "via", h]),
      ]);
      const all = new Map<string, number>();
      for (let i = 0; i < 24; i++) {
        const a = (await curl("hostname")) || "(no answer)";
        all.set(a, (all.get(a) ?? 0) + 1);
      }
      console.log(`through the ECMP route: ${[...all].map(([a, c]) => `${a}×${c}`).join(" ")}`);
      assert.ok(!all.has("(no answer)"), `every call through the ECMP route was answered: ${[...all]}`);
      assert.deepEqual([...all.keys()].sort(), names, "every pod answered");
      // From outside the pod CIDRs the source is masqueraded to the node, so the pod can answer it.
      const client = await curl("clientip");
      assert.notEqual(client.split(":")[0], BEHIND_IP, "the host's address is masqueraded by the node");
      assert.ok(client !== "", "clientip answered");
      ok = true;
    } finally {
      if (!ok && state) {
        showLogTails(
          [
            `${where.stateDir}/master.log`,
            ...[1, 2, 3].map((i) => `${nodeDir(where.stateDir, `kube-node${i}`)}/agent.log`),
          ],
          40,
        );
      }
      await labDown(where);
      await Deno.remove(where.stateDir, { recursive: true }).catch(() => {});
    }
    assert.deepEqual(await netnsLeft(where.prefix), [], "lab down removed every namespace, the host's too");
  },
});
