/**
 * End to end: a Deployment in the lab, as a user drives it with kubectl, behind a Service the agents
 * proxy: created with `kubectl create deployment` and `kubectl expose`, scaled up and down, rolled out
 * again with `kubectl rollout restart` while a client keeps calling the cluster IP, old pods showing as
 * terminating in the EndpointSlice while the new ones start. Needs root, kubectl, curl, nsenter and the
 * Debian CNI plugins.
 */
import assert from "node:assert/strict";
import { needs, run } from "../_support/netns.ts";
import { eventually, k, showLogTails } from "./_lab.ts";
import { execCommand, kubectlCommand, labDown, type LabState, labUp, nodeDir } from "../../lab/mod.ts";

const REQ = {
  tools: ["ip", "kubectl", "curl", "nsenter", "bash"],
  files: ["/usr/lib/cni/bridge", "/usr/lib/cni/host-local"],
};

const CLIENT = `
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: default}
spec:
  nodeName: kube-node1
  containers:
  - name: c
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: ["netexec", "--http-port=8080"]
`;

async function curlFrom(state: LabState, target: string, url: string): Promise<string> {
  return (await run(execCommand(state, target, ["curl", "-s", "-m", "2", url]), { check: false })).stdout
    .trim();
}

/** The names answering `url` from the client over `n` calls. */
async function answers(state: LabState, url: string, n: number): Promise<Set<string>> {
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) seen.add(await curlFrom(state, "default/client", url));
  return seen;
}

const podNames = async (state: LabState) =>
  JSON.parse(await k(state, ["get", "pods", "-l", "app=web", "-o", "json"])).items
    .filter((p: { metadata: { deletionTimestamp?: string } }) => !p.metadata.deletionTimestamp)
    .map((p: { metadata: { name: string } }) => p.metadata.name).sort() as string[];

Deno.test({
  ...needs(
    "a Deployment behind a Service scales and rolls out in the lab while a client keeps reaching it",
    REQ,
  ),
  async fn(t) {
    const id = crypto.randomUUID().slice(0, 6);
    const where = { stateDir: Deno.makeTempDirSync({ prefix: "krl-e2e-wl-" }), prefix: `krlw${id}-` };
    try {
      const state = await labUp({ ...where, nodes: 2 });
      await k(state, ["apply", "-f", "-"], CLIENT);
      await k(state, [
        "create",
        "deployment",
        "web",
        "--image=registry.k8s.io/e2e-test-images/agnhost:2.53",
        "--replicas=3",
        "--port=8080",
        "--",
        "/agnhost",
        "netexec",
        "--http-port=8080",
      ]);
      await k(state, ["expose", "deployment", "web", "--port=80", "--target-port=8080"]);
      await k(state, ["rollout", "status", "deployment/web", "--timeout=120s"]);
      await k(state, ["wait", "--for=condition=Ready", "pod/client", "--timeout=90s"]);
      const svc = JSON.parse(await k(state, ["get", "service", "web", "-o", "json"]));
      const url = `http://${svc.spec.clusterIP}/hostname`;

      await t.step("the Service's cluster IP answers from every replica", async () => {
        const pods = await podNames(state);
        assert.equal(pods.length, 3);
        let seen = new Set<string>();
        await eventually("all three replicas answer", async () => {
          seen = await answers(state, url, 15);
          return pods.every((p) => seen.has(p));
        }, 60_000);
        assert.deepEqual([...seen].sort(), pods);
      });

      await t.step("kubectl scale up and down changes who answers", async () => {
        await k(state, ["scale", "deployment/web", "--replicas=5"]);
        await k(state, ["rollout", "status", "deployment/web", "--timeout=120s"]);
        const five = await podNames(state);
        assert.equal(five.length, 5);
        await eventually("five answer", async () => {
          const s = await answers(state, url, 25);
          return five.every((p) => s.has(p));
        }, 60_000);
        await k(state, ["scale", "deployment/web", "--replicas=2"]);
        await eventually("two pods left", async () => (await podNames(state)).length === 2, 60_000);
        const two = await podNames(state);
        await eventually("only the two remaining answer", async () => {
          const s = await answers(state, url, 10);
          return [...s].every((x) => two.includes(x));
        }, 30_000);
      });

      await t.step(
        "kubectl rollout restart replaces every pod, old ones terminating in the slice, while the client calls",
        async () => {
          const before = await podNames(state);
          const watcher = new Deno.Command(
            kubectlCommand(state, [
              "get",
              "endpointslices",
              "-l",
              "kubernetes.io/service-name=web",
              "-w",
              "-o",
              "json",
            ])[0]!,
            {
              args: kubectlCommand(state, [
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
                "-w",
                "-o",
                "json",
              ]).slice(1),
              stdout: "piped",
              stderr: "null",
            },
          ).spawn();
          const streamed = new Response(watcher.stdout).text();
          let stop = false, sent = 0;
          const lost: string[] = [];
          const prober = (async () => {
            while (!stop) {
              const t0 = Date.now();
              const got = await curlFrom(state, "default/client", url);
              sent++;
              if (!/^web-/.test(got)) lost.push(new Date(t0).toISOString());
              await new Promise((r) => setTimeout(r, Math.max(0, 100 - (Date.now() - t0))));
            }
          })();
          await k(state, ["rollout", "restart", "deployment/web"]);
          await k(state, ["rollout", "status", "deployment/web", "--timeout=120s"]);
          await eventually("every old pod is gone", async () => {
            const now = await podNames(state);
            return now.length === 2 && now.every((p) => !before.includes(p));
          }, 60_000);
          await new Promise((r) => setTimeout(r, 2000));
          stop = true;
          await prober;
          watcher.kill("SIGTERM");
          const text = await streamed;
          await watcher.status;
          console.log(`rollout restart of a 2-replica Deployment: ${lost.length} of ${sent} calls lost`);
          assert.match(
            text,
            /"serving": true,\s*"terminating": true/,
            "an old pod showed as serving and terminating in the EndpointSlice",
          );
          assert.ok(sent > 10);
          // Kubernetes itself drops calls in flight to a pod that stops (hence preStop hooks); what matters
          // is that the Service keeps answering through the rollout, not that no call is ever lost.
          assert.ok(lost.length <= sent / 4, `${lost.length} of ${sent} calls lost`);
          const after = await answers(state, url, 10);
          assert.ok([...after].every((x) => /^web-/.test(x)), "the new pods answer");
        },
      );
    } catch (e) {
      showLogTails(
        [`${where.stateDir}/master.log`, `${nodeDir(where.stateDir, "kube-node1")}/kubelet.log`],
        30,
      );
      throw e;
    } finally {
      await labDown(where);
    }
  },
});
