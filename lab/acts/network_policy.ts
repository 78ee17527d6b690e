import { AGENT_HEALTH_PORT } from "../lab.ts";
import { DEMO_NS, podsAsJson } from "./_helpers.ts";
import type { Act, DemoContext } from "./types.ts";

/** `from` fetches `to`'s /hostname (a 2 s timeout): true when `to` answered with its name. */
async function reaches(
  ctx: DemoContext,
  ip: (pod: string) => string,
  from: string,
  to: string,
): Promise<boolean> {
  const r = await ctx.exec(
    `${DEMO_NS}/${from}`,
    ["curl", "-s", "-m", "2", `http://${ip(to)}:8080/hostname`],
    {
      check: false,
    },
  );
  return r.stdout.trim() === to;
}

async function podIp(ctx: DemoContext): Promise<(pod: string) => string> {
  const pods = await podsAsJson(ctx, DEMO_NS, "app=web");
  return (n: string) => pods.find((p) => p.metadata.name === n)?.status?.podIP as string;
}

/**
 * The drops kube-node1's agent has counted for a policy: from its /metrics, or, when the agent serves no
 * /metrics (the DaemonSet's default --metrics-port=0), from the same counter in its nftables table.
 */
async function dropsCounted(ctx: DemoContext, policy: string): Promise<{ packets: number; from: string }> {
  const r = await ctx.exec("kube-node1", [
    "curl",
    "-s",
    "-m",
    "2",
    `http://127.0.0.1:${AGENT_HEALTH_PORT}/metrics`,
  ], {
    quiet: true,
    check: false,
  });
  if (r.stdout.includes("# HELP")) {
    const line = r.stdout.split("\n").find((l) =>
      l.startsWith(`kube_router_netpol_dropped_packets_total{policy="${policy}"}`)
    );
    return { packets: line ? Number(line.split(" ").pop()) : 0, from: line ?? "/metrics" };
  }
  const t = await ctx.exec("kube-node1", ["nft", "list", "table", "inet", "kube_router_firewall"], {
    quiet: true,
    check: false,
  });
  const line = t.stdout.split("\n").find((l) =>
    l.includes(`comment "${policy}"`) && l.includes("counter packets")
  );
  const m = line?.match(/counter packets (\d+)/);
  return { packets: m ? Number(m[1]) : 0, from: line?.trim() ?? "nft list table inet kube_router_firewall" };
}

/**
 * The seed's third act: network policies. A deny-all ingress policy cuts web-2 off, an allow rule for
 * pods labelled role=client lets only the labelled web-3 back in, and kube-node1's agent counts the
 * refused packets under the policy in /metrics. Builds on the earlier acts' pods web-1, web-2
 * (kube-node1) and web-3 (kube-node2).
 */
export const networkPolicyAct: Act = {
  name: "network policies",
  story:
    "A deny-all ingress policy blocks every client; an allow rule for labelled clients lets only them in.",
  needsAgents: true,
  minNodes: 2,
  steps: [{
    name: "a deny-all ingress policy blocks web-1 from web-2",
    async run(ctx) {
      const ip = await podIp(ctx);
      ctx.expect(await reaches(ctx, ip, "web-1", "web-2"), "before any policy web-1 reaches web-2");
      await ctx.kubectl(["apply", "-f", "-"], {
        stdin: `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: ${DEMO_NS}}
spec:
  podSelector: {}
  policyTypes: [Ingress]
`,
      });
      await ctx.eventually(
        "web-1 no longer reaches web-2",
        async () => !(await reaches(ctx, ip, "web-1", "web-2")),
      );
      ctx.expect(!(await reaches(ctx, ip, "web-3", "web-2")), "web-3 on kube-node2 is blocked too");
    },
  }, {
    name: "an allow rule for pods labelled role=client lets the labelled web-3 in, web-1 stays blocked",
    async run(ctx) {
      const ip = await podIp(ctx);
      await ctx.kubectl(["apply", "-f", "-"], {
        stdin: `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-clients, namespace: ${DEMO_NS}}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - podSelector: {matchLabels: {role: client}}
    ports:
    - {port: http}
`,
      });
      await ctx.kubectl(["label", "pod", "-n", DEMO_NS, "web-3", "role=client"]);
      await ctx.eventually("web-3 (role=client) reaches web-2", () => reaches(ctx, ip, "web-3", "web-2"));
      ctx.expect(!(await reaches(ctx, ip, "web-1", "web-2")), "web-1 (no label) is still blocked");
    },
  }, {
    name: "kube-node1's agent counts the refused packets under the policy in /metrics",
    async run(ctx) {
      let seen = { packets: 0, from: "" };
      await ctx.eventually(
        `kube_router_netpol_dropped_packets_total{policy="${DEMO_NS}/deny-all"} is above 0 on kube-node1`,
        async () => (seen = await dropsCounted(ctx, `${DEMO_NS}/deny-all`)).packets > 0,
      );
      ctx.say(seen.from);
      await ctx.kubectl(["delete", "networkpolicy", "-n", DEMO_NS, "deny-all", "allow-clients"]);
      await ctx.kubectl(["label", "pod", "-n", DEMO_NS, "web-3", "role-"]);
    },
  }],
};
