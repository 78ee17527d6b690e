/**
 * End to end: the seed's DaemonSet path. Each manifest of dist/ is applied in a fresh lab without agent
 * processes (`lab up --daemonset --manifest FILE`): the lab kubelet runs each node's kube-router pod as the
 * agent from this checkout, configured in-cluster. Needs root, kubectl, curl, nsenter, bash and the Debian
 * CNI plugins (and gobgpd for the --advertise-* manifest).
 */
import assert from "node:assert/strict";
import { needs, run } from "../_support/netns.ts";
import { eventually, k, showLogTails } from "./_lab.ts";
import {
  agentHealthy,
  daemonSetAgentPid,
  execCommand,
  externalRouterRoutes,
  type KObject,
  labDown,
  type LabState,
  labUp,
  nodeDir,
  podCidrForIndex,
  REPO_ROOT,
  topology,
  type UpOptions,
} from "../../lab/mod.ts";

const REQ = {
  tools: ["ip", "kubectl", "curl", "nsenter", "bash"],
  files: ["/usr/lib/cni/bridge", "/usr/lib/cni/host-local"],
};

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
    args: ["netexec", "--http-port=8080", "--udp-port=8081"]
    ports: [{name: http, containerPort: 8080}]
`;

async function withDaemonSetLab(
  manifest: string,
  opts: Partial<UpOptions>,
  fn: (state: LabState) => Promise<void>,
): Promise<void> {
  const id = crypto.randomUUID().slice(0, 6);
  const where = { stateDir: Deno.makeTempDirSync({ prefix: "krl-e2e-ds-" }), prefix: `krld${id}-` };
  try {
    const state = await labUp({ ...where, nodes: 2, daemonset: `${REPO_ROOT}/dist/${manifest}`, ...opts });
    await fn(state);
  } catch (e) {
    const files = [`${where.stateDir}/master.log`];
    for (const n of ["kube-node1", "kube-node2"]) {
      files.push(`${nodeDir(where.stateDir, n)}/kubelet.log`);
      try {
        for (const d of Deno.readDirSync(`${nodeDir(where.stateDir, n)}/pods`)) {
          if (d.isDirectory) files.push(`${nodeDir(where.stateDir, n)}/pods/${d.name}/kube-router.log`);
        }
      } catch { /* none */ }
    }
    showLogTails(files, 25);
    throw e;
  } finally {
    await labDown(where);
  }
}

/** Every node runs exactly one Ready kube-router pod with no restarts, and its agent answers /healthz. */
async function expectAgentPods(state: LabState): Promise<Array<{ name: string; node: string }>> {
  const pods = JSON.parse(
    await k(state, ["get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-router", "-o", "json"]),
  )
    .items as Array<
      {
        metadata: { name: string };
        spec: { nodeName: string; serviceAccountName?: string };
        status: KObject["status"];
      }
    >;
  const nodes = topology(state.nodes, state.prefix).nodes;
  assert.deepEqual(pods.map((p) => p.spec.nodeName).sort(), nodes.map((h) => h.name));
  for (const p of pods) {
    const h = nodes.find((x) => x.name === p.spec.nodeName)!;
    assert.equal(p.status.podIP, h.ip, "hostNetwork: the pod's IP is its node's");
    assert.equal(p.spec.serviceAccountName, "kube-router");
    assert.equal(p.status.containerStatuses[0].restartCount, 0, `${p.metadata.name} restarted`);
    assert.ok(await agentHealthy(h), `${h.name}'s agent answers /healthz 200`);
  }
  return pods.map((p) => ({ name: p.metadata.name, node: p.spec.nodeName }));
}

/** The pod's agent log shows it read the API server in-cluster (no kubeconfig flag on its command line). */
async function expectInCluster(state: LabState, podName: string): Promise<string> {
  const logs = await k(state, ["logs", "-n", "kube-system", podName]);
  assert.ok(logs.trim().length > 0, "kubectl logs shows the agent's log");
  assert.doesNotMatch(logs, /ERROR|Unauthorized|Forbidden/);
  return logs;
}

/** web-1 on kube-node1 and web-2 on kube-node2; returns their IPs. */
async function twoPods(state: LabState): Promise<Record<string, string>> {
  await k(state, ["apply", "-f", "-"], pod("web-1", "kube-node1") + pod("web-2", "kube-node2"));
  await k(state, ["wait", "--for=condition=Ready", "pod", "-l", "app=web", "--timeout=90s"]);
  const items = JSON.parse(await k(state, ["get", "pods", "-l", "app=web", "-o", "json"])).items;
  return Object.fromEntries(items.map((p: KObject) => [p.metadata.name, p.status.podIP]));
}

async function curlFrom(state: LabState, target: string, url: string, timeout = "2"): Promise<string> {
  return (await run(execCommand(state, target, ["curl", "-s", "-m", timeout, url]), { check: false })).stdout;
}

Deno.test({
  ...needs(
    "the all-features DaemonSet brings up an in-cluster agent on every node, routes pods across nodes, shows in kubectl logs ds/kube-router, and a rollout restart replaces every agent without losing a probe",
    REQ,
  ),
  async fn(t) {
    await withDaemonSetLab("kube-router-daemonset.yaml", {}, async (state) => {
      const agents = await expectAgentPods(state);
      await t.step(
        "in-cluster config: the agent reads the API through its service-account token",
        async () => {
          await expectInCluster(state, agents[0]!.name);
          const ds = await k(state, ["logs", "-n", "kube-system", "ds/kube-router", "--tail=50"]);
          assert.ok(ds.trim().length > 0, "kubectl logs ds/kube-router answers");
        },
      );
      const ip = await twoPods(state);
      await t.step("web-1 on kube-node1 reaches web-2 on kube-node2 over the agents' routes", async () => {
        await eventually(
          "web-1 reaches web-2",
          async () =>
            (await curlFrom(state, "default/web-1", `http://${ip["web-2"]}:8080/hostname`)) === "web-2",
        );
      });
      await t.step(
        "kubectl rollout restart ds/kube-router replaces every agent while pod traffic flows",
        async () => {
          const before = new Set(agents.map((a) => a.name));
          let stop = false;
          let sent = 0;
          const lost: string[] = [];
          const prober = (async () => {
            while (!stop) {
              const t0 = Date.now();
              const got = await curlFrom(state, "default/web-1", `http://${ip["web-2"]}:8080/hostname`, "1");
              sent++;
              if (got !== "web-2") lost.push(new Date(t0).toISOString());
              await new Promise((r) => setTimeout(r, Math.max(0, 100 - (Date.now() - t0))));
            }
          })();
          await k(state, ["rollout", "restart", "-n", "kube-system", "ds/kube-router"]);
          await k(state, ["rollout", "status", "-n", "kube-system", "ds/kube-router", "--timeout=120s"]);
          await eventually("every node's new agent answers /healthz", async () => {
            for (const h of topology(state.nodes, state.prefix).nodes) {
              if (!await agentHealthy(h)) return false;
            }
            return true;
          }, 60_000);
          await new Promise((r) => setTimeout(r, 3000));
          stop = true;
          await prober;
          const after = await expectAgentPods(state);
          assert.ok(after.every((a) => !before.has(a.name)), "every kube-router pod was replaced");
          console.log(
            `rollout restart: ${lost.length} of ${sent} probes lost (web-1 → web-2 across nodes, every 100 ms)`,
          );
          assert.deepEqual(lost, [], `${lost.length} of ${sent} probes lost`);
        },
      );
    });
  },
});

Deno.test({
  ...needs(
    "the router+firewall DaemonSet (alongside kube-proxy) routes pods across nodes and runs no service proxy",
    REQ,
  ),
  async fn() {
    await withDaemonSetLab("kube-router-router-firewall-daemonset.yaml", {}, async (state) => {
      const agents = await expectAgentPods(state);
      const logs = await expectInCluster(state, agents[0]!.name);
      const ip = await twoPods(state);
      await eventually(
        "web-1 reaches web-2 across nodes",
        async () =>
          (await curlFrom(state, "default/web-1", `http://${ip["web-2"]}:8080/hostname`)) === "web-2",
      );
      const nft =
        (await run(execCommand(state, "kube-node1", ["nft", "list", "tables"]), { check: false })).stdout;
      assert.doesNotMatch(nft, /kube_router_proxy/, "no service proxy table");
      assert.doesNotMatch(logs, /module=proxy/);
      // `lab logs <node>` shows the agent container's log; `lab status` says the agents are a DaemonSet.
      const cli = (args: string[]) =>
        run([
          Deno.execPath(),
          "run",
          "-A",
          `${REPO_ROOT}/lab/cli.ts`,
          ...args,
          `--state-dir=${state.stateDir}`,
          `--prefix=${state.prefix}`,
        ]);
      assert.match((await cli(["logs", "kube-node1"])).stdout, /module started module=router/);
      assert.match(
        (await cli(["status"])).stdout,
        /agents: the DaemonSet of .*kube-router-router-firewall-daemonset\.yaml/,
      );
    });
  },
});

Deno.test({
  ...needs("the service-proxy-only DaemonSet runs the proxy alone: no routes from the router", REQ),
  async fn() {
    await withDaemonSetLab("kube-router-service-proxy-daemonset.yaml", {}, async (state) => {
      const agents = await expectAgentPods(state);
      const logs = await expectInCluster(state, agents[0]!.name);
      assert.doesNotMatch(logs, /module=router/);
      assert.doesNotMatch(logs, /module=firewall/);
      // No router: no BGP routes to the other node's pod CIDR.
      const routes =
        (await run(execCommand(state, "kube-node1", ["ip", "route", "show", "proto", "17"]))).stdout;
      assert.equal(routes.trim(), "");
    });
  },
});

Deno.test({
  ...needs(
    "the --advertise-* DaemonSet peers every node with the external router, which learns each pod CIDR and a Service's cluster IP",
    {
      ...REQ,
      tools: [...REQ.tools, "gobgpd", "gobgp"],
    },
  ),
  async fn() {
    await withDaemonSetLab(
      "kube-router-advertise-daemonset.yaml",
      { externalRouter: "gobgp" },
      async (state) => {
        const agents = await expectAgentPods(state);
        await expectInCluster(state, agents[0]!.name);
        const nodes = topology(state.nodes, state.prefix).nodes;
        const r = state.externalRouter!;
        const want = nodes.map((h, i) => `${podCidrForIndex(i + 1)} via ${h.ip}`);
        await eventually("gobgpd learns every node's pod CIDR", async () => {
          const learned = (await externalRouterRoutes(r)).map((x) => `${x.prefix} via ${x.nexthop}`);
          return want.every((w) => learned.includes(w));
        }, 60_000);
        await twoPods(state);
        await k(
          state,
          ["apply", "-f", "-"],
          `apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
`,
        );
        const vip = (await k(state, ["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"])).trim();
        await eventually(`gobgpd learns ${vip}/32 from every node`, async () => {
          const hops = (await externalRouterRoutes(r)).filter((x) => x.prefix === `${vip}/32`).map((x) =>
            x.nexthop
          );
          return nodes.every((h) => hops.includes(h.ip));
        }, 60_000);
      },
    );
  },
});

Deno.test({
  ...needs(
    "without its ClusterRoleBinding a restarted agent is refused with 403, says so in its log and /healthz, and recovers when the binding is back",
    REQ,
  ),
  async fn() {
    await withDaemonSetLab("kube-router-daemonset.yaml", {}, async (state) => {
      await expectAgentPods(state);
      const h = topology(state.nodes, state.prefix).nodes[0]!;
      const got = JSON.parse(await k(state, ["get", "clusterrolebinding", "kube-router", "-o", "json"]));
      const binding = JSON.stringify({
        apiVersion: got.apiVersion,
        kind: got.kind,
        metadata: { name: got.metadata.name },
        roleRef: got.roleRef,
        subjects: got.subjects,
      });
      await k(state, ["delete", "clusterrolebinding", "kube-router"]);
      // Open watches were authorized when they began (as with kube-apiserver): restart the agent container so
      // it lists again with its service-account token.
      const pid = daemonSetAgentPid(state, h.name)!;
      Deno.kill(pid, "SIGTERM");
      const healthz = async () =>
        (await run(
          execCommand(state, h.name, [
            "curl",
            "-s",
            "-w",
            " %{http_code}",
            "-m",
            "2",
            "http://127.0.0.1:20244/healthz",
          ]),
          { check: false },
        )).stdout;
      let body = "";
      await eventually("the restarted agent's /healthz answers 500 naming the 403", async () => {
        body = await healthz();
        return daemonSetAgentPid(state, h.name) !== pid && body.endsWith(" 500") && /kube-api/.test(body) &&
          /403/.test(body);
      }, 60_000);
      const podName = JSON.parse(
        await k(state, [
          "get",
          "pods",
          "-n",
          "kube-system",
          "-l",
          "k8s-app=kube-router",
          "--field-selector",
          `spec.nodeName=${h.name}`,
          "-o",
          "json",
        ]),
      ).items[0].metadata.name;
      const logs = await k(state, ["logs", "-n", "kube-system", podName]);
      assert.match(logs, /list\/watch failed, retrying .*status=403 .*forbidden/, logs.slice(-2000));
      assert.match(logs, /system:serviceaccount:kube-system:kube-router/);
      // The binding back: the agent's retries succeed and it is healthy again (or restarted healthy).
      await k(state, ["apply", "-f", "-"], binding);
      await eventually(
        "the agent is healthy again with its binding back",
        async () => (await healthz()).endsWith(" 200"),
        90_000,
      );
    });
  },
});
