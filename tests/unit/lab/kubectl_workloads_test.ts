/**
 * What a user does with workloads, service accounts and RBAC, typed with the real kubectl v1.32 against
 * the lab API server and its controllers (stand-in kubelet: tests/unit/lab/_control_plane.ts).
 */
import assert from "node:assert/strict";
import { needs, run } from "../../_support/netns.ts";
import { type ControlPlane, eventually, withControlPlane } from "./_control_plane.ts";

const KUBECTL = { tools: ["kubectl"] };

async function kubectlFor(cp: ControlPlane) {
  const kubeconfig = await cp.api.writeKubeconfig(`${cp.dir}/kubeconfig`);
  const kubectl = (...args: string[]) =>
    run(["kubectl", "--kubeconfig", kubeconfig, "--cache-dir", `${cp.dir}/cache`, ...args], { check: false });
  const k = async (...args: string[]) => {
    const r = await kubectl(...args);
    assert.equal(r.code, 0, `kubectl ${args.join(" ")} failed: ${r.stderr}`);
    return r.stdout;
  };
  return { kubectl, k };
}

const images = (cp: ControlPlane, app: string) =>
  cp.api.store.list("pods", { labelSelector: `app=${app}` }).items.filter((p) =>
    !p.metadata?.deletionTimestamp
  )
    .map((p) => p.spec.containers[0].image).sort().join(" ");

Deno.test({
  ...needs(
    "kubectl creates, scales, updates, restarts and undoes a Deployment, with rollout status waiting",
    KUBECTL,
  ),
  fn: () =>
    withControlPlane(async (cp) => {
      const { k } = await kubectlFor(cp);
      await cp.addNode("kube-node1");
      await cp.addNode("kube-node2");
      assert.match(
        await k("create", "deployment", "web", "--image=nginx:1", "--replicas=3", "--port=80"),
        /deployment.apps\/web created/,
      );
      assert.match(
        await k("rollout", "status", "deployment/web", "--timeout=30s"),
        /successfully rolled out/,
      );
      assert.equal(images(cp, "web"), "nginx:1 nginx:1 nginx:1");
      const table = await k("get", "deployment", "web");
      assert.match(table, /NAME\s+READY\s+UP-TO-DATE\s+AVAILABLE\s+AGE\nweb\s+3\/3\s+3\s+3\s+/);
      assert.match(await k("get", "rs"), /web-[a-z0-9]+\s+3\s+3\s+3\s+/);

      assert.match(await k("scale", "deployment", "web", "--replicas=5"), /deployment.apps\/web scaled/);
      await k("rollout", "status", "deployment/web", "--timeout=30s");
      await eventually("5 pods", () => images(cp, "web").split(" ").length === 5);
      await k("scale", "deployment/web", "--replicas=2");
      await eventually("2 pods", () => images(cp, "web") === "nginx:1 nginx:1");

      await k("set", "image", "deployment/web", "nginx=nginx:2");
      assert.match(
        await k("rollout", "status", "deployment/web", "--timeout=30s"),
        /successfully rolled out/,
      );
      await eventually("new image everywhere", () => images(cp, "web") === "nginx:2 nginx:2");
      const history = await k("rollout", "history", "deployment/web");
      assert.match(history, /REVISION\s+CHANGE-CAUSE\n1\s+<none>\n2\s+<none>/);

      assert.match(await k("rollout", "undo", "deployment/web"), /deployment.apps\/web rolled back/);
      await k("rollout", "status", "deployment/web", "--timeout=30s");
      await eventually("back to the first image", () => images(cp, "web") === "nginx:1 nginx:1");
      assert.equal(
        JSON.parse(await k("get", "rs", "-o", "json")).items.length,
        2,
        "the undo reused the first ReplicaSet",
      );

      const before = cp.api.store.list("pods", { labelSelector: "app=web" }).items.map((p) =>
        p.metadata!.name
      );
      assert.match(await k("rollout", "restart", "deployment/web"), /deployment.apps\/web restarted/);
      await k("rollout", "status", "deployment/web", "--timeout=30s");
      await eventually(
        "every pod replaced",
        () => {
          const now = cp.api.store.list("pods", { labelSelector: "app=web" }).items;
          return now.length === 2 && now.every((p) => !before.includes(p.metadata!.name!));
        },
      );
      await k("delete", "deployment", "web");
      await eventually("its pods go", () => images(cp, "web") === "");
    }),
});

const DAEMONSET = `
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: kube-system}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      hostNetwork: true
      tolerations: [{operator: Exists}]
      containers: [{name: agent, image: "agent:1"}]
`;

Deno.test({
  ...needs("kubectl applies a DaemonSet, waits for its rollout on every node and restarts it", KUBECTL),
  fn: () =>
    withControlPlane(async (cp) => {
      const { k } = await kubectlFor(cp);
      await cp.addNode("kube-node1");
      await cp.addNode("kube-node2", {
        taints: [{ key: "node-role.kubernetes.io/control-plane", effect: "NoSchedule" }],
      });
      await Deno.writeTextFile(`${cp.dir}/ds.yaml`, DAEMONSET);
      assert.match(
        await k("apply", "--validate=false", "-f", `${cp.dir}/ds.yaml`),
        /daemonset.apps\/agent created/,
      );
      assert.match(
        await k("-n", "kube-system", "rollout", "status", "ds/agent", "--timeout=30s"),
        /daemon set "agent" successfully rolled out/,
      );
      const wide = await k("-n", "kube-system", "get", "pods", "-o", "wide");
      assert.match(wide, /kube-node1/);
      assert.match(wide, /kube-node2/);
      assert.match(await k("-n", "kube-system", "get", "ds"), /agent\s+2\s+2\s+2\s+2\s+2\s+<none>/);
      const before = cp.api.store.list("pods", { namespace: "kube-system" }).items.map((p) =>
        p.metadata!.name
      );
      assert.match(
        await k("-n", "kube-system", "rollout", "restart", "ds/agent"),
        /daemonset.apps\/agent restarted/,
      );
      await k("-n", "kube-system", "rollout", "status", "ds/agent", "--timeout=30s");
      await eventually("both agents replaced", () => {
        const now = cp.api.store.list("pods", { namespace: "kube-system" }).items;
        return now.length === 2 && now.every((p) => !before.includes(p.metadata!.name!));
      });
    }),
});

Deno.test({
  ...needs(
    "kubectl creates a ServiceAccount, a token for it, and the RBAC that lets it in; refusals read as kube-apiserver's",
    KUBECTL,
  ),
  fn: () =>
    withControlPlane(async (cp) => {
      const { k, kubectl } = await kubectlFor(cp);
      await k("create", "serviceaccount", "bot");
      const token = (await k("create", "token", "bot", "--duration=1h")).trim();
      assert.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/);
      const asBot = (...args: string[]) => kubectl("--token", token, ...args);
      const refused = await asBot("get", "pods");
      assert.notEqual(refused.code, 0);
      assert.match(
        refused.stderr,
        /Error from server \(Forbidden\): pods is forbidden: User "system:serviceaccount:default:bot" cannot list resource "pods" in API group "" in the namespace "default"/,
      );
      assert.match(
        await k("create", "role", "pod-reader", "--verb=get,list,watch", "--resource=pods"),
        /role.rbac.authorization.k8s.io\/pod-reader created/,
      );
      assert.match(
        await k(
          "create",
          "rolebinding",
          "bot-reads-pods",
          "--role=pod-reader",
          "--serviceaccount=default:bot",
        ),
        /rolebinding.rbac.authorization.k8s.io\/bot-reads-pods created/,
      );
      const allowed = await asBot("get", "pods");
      assert.equal(allowed.code, 0, allowed.stderr);
      assert.match(allowed.stderr + allowed.stdout, /No resources found in default namespace/);
      const elsewhere = await asBot("get", "pods", "-n", "kube-system");
      assert.match(
        elsewhere.stderr,
        /cannot list resource "pods" in API group "" in the namespace "kube-system"/,
      );
      const nodes = await asBot("get", "nodes");
      assert.match(
        nodes.stderr,
        /nodes is forbidden: .* cannot list resource "nodes" in API group "" at the cluster scope/,
      );
      await k("create", "clusterrole", "node-reader", "--verb=get,list", "--resource=nodes");
      await k(
        "create",
        "clusterrolebinding",
        "bot-reads-nodes",
        "--clusterrole=node-reader",
        "--serviceaccount=default:bot",
      );
      assert.equal((await asBot("get", "nodes")).code, 0);
      assert.match(
        await k("get", "clusterrolebinding", "bot-reads-nodes", "-o", "wide"),
        /ClusterRole\/node-reader.*default\/bot/,
      );
      await k("delete", "clusterrolebinding", "bot-reads-nodes");
      assert.notEqual(
        (await asBot("get", "nodes")).code,
        0,
        "removing the binding takes the right away at once",
      );
      // The admin may act as the account (kubectl --as), and is then judged as it.
      const asSa = await kubectl(
        "--as=system:serviceaccount:default:bot",
        "get",
        "pods",
        "-n",
        "kube-system",
      );
      assert.match(
        asSa.stderr,
        /User "system:serviceaccount:default:bot" cannot list resource "pods" in API group "" in the namespace "kube-system"/,
      );
      assert.equal((await kubectl("--as=system:serviceaccount:default:bot", "get", "pods")).code, 0);
      const asAlice = await kubectl("--as=alice", "--as-group=devs", "get", "svc");
      assert.match(asAlice.stderr, /User "alice" cannot list resource "services"/);
      // kubectl auth can-i asks the server (SelfSubjectAccessReview) for the caller, or whom it acts as.
      const can = async (...args: string[]) => (await kubectl("auth", "can-i", ...args)).stdout.trim();
      assert.equal(await can("list", "pods", "--as=system:serviceaccount:default:bot"), "yes");
      assert.equal(await can("delete", "pods", "--as=system:serviceaccount:default:bot"), "no");
      assert.equal(await can("list", "nodes", "--token", token), "no");
      assert.equal(await can("get", "pods", "-n", "default", "--token", token), "yes");
      assert.equal(await can("create", "deployments.apps"), "yes", "the admin can do anything");
      // The account itself may not impersonate anyone.
      const escalate = await asBot("--as=admin", "get", "pods");
      assert.match(
        escalate.stderr,
        /users "admin" is forbidden: User "system:serviceaccount:default:bot" cannot impersonate resource "users" in API group "" at the cluster scope/,
      );
    }),
});
