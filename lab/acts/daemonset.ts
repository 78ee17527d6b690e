import { AGENT_HEALTH_PORT } from "../lab.ts";
import { topology } from "../topology.ts";
import type { Act } from "./types.ts";

/**
 * The act `deno task demo --daemonset` adds after the cluster act: the seed's "as a daemonset — the
 * quickest way" path, the agent on every node as a pod of the DaemonSet, configured in-cluster.
 */
export const daemonSetAct: Act = {
  name: "kube-router as a DaemonSet",
  story: "kubectl apply -f dist/kube-router-daemonset.yaml put one agent pod on every node (hostNetwork, " +
    "in-cluster config from its service-account token).",
  needsAgents: true,
  steps: [{
    name: "one Running, Ready kube-router pod on every node",
    async run(ctx) {
      await ctx.kubectl(["get", "daemonset", "-n", "kube-system", "kube-router"]);
      await ctx.kubectl(["get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-router", "-o", "wide"]);
      const pods = JSON.parse(
        await ctx.kubectl(["get", "pods", "-n", "kube-system", "-l", "k8s-app=kube-router", "-o", "json"], {
          quiet: true,
        }),
      ).items as Array<
        // deno-lint-ignore no-explicit-any
        { metadata: { name: string }; spec: { nodeName?: string }; status: any }
      >;
      for (const h of topology(ctx.state.nodes, ctx.state.prefix).nodes) {
        const p = pods.find((x) => x.spec.nodeName === h.name);
        const ready = p?.status?.conditions?.some((c: { type: string; status: string }) =>
          c.type === "Ready" && c.status === "True"
        );
        ctx.expect(
          !!p && p.status.phase === "Running" && !!ready && p.status.podIP === h.ip,
          `${h.name} runs ${p?.metadata.name ?? "a kube-router pod"} (Running, Ready, host network ${h.ip})`,
          p ? `phase ${p.status.phase}, ready ${ready}, IP ${p.status.podIP}` : "no pod",
        );
      }
    },
  }, {
    name: "the agent found the API server in-cluster and is healthy",
    async run(ctx) {
      const pod = JSON.parse(
        await ctx.kubectl([
          "get",
          "pods",
          "-n",
          "kube-system",
          "-l",
          "k8s-app=kube-router",
          "--field-selector",
          "spec.nodeName=kube-node1",
          "-o",
          "json",
        ], { quiet: true }),
      ).items[0]?.metadata?.name as string | undefined;
      ctx.expect(!!pod, "kube-node1 has a kube-router pod");
      if (!pod) return;
      const logs = await ctx.kubectl(["logs", "-n", "kube-system", pod, "--tail=4"]);
      ctx.expect(logs.trim().length > 0, `kubectl logs ${pod} shows the agent's log`);
      const r = await ctx.exec("kube-node1", [
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-m",
        "3",
        `http://127.0.0.1:${AGENT_HEALTH_PORT}/healthz`,
      ]);
      ctx.expect(r.stdout.trim() === "200", `its /healthz on kube-node1 answers 200`, `got ${r.stdout}`);
    },
  }],
};
