import { ipInCidr, topology } from "../topology.ts";
import { DEMO_NS, expectNetexecReach, podsAsJson, podYaml } from "./_helpers.ts";
import type { Act } from "./types.ts";

/** Act 3: the router at work: BGP-learned routes carry pod traffic between nodes, unNATed. */
export const crossNodeAct: Act = {
  name: "pods on different nodes (router)",
  story:
    "Each agent announces its node's pod CIDR over iBGP; web-1 on kube-node1 reaches web-3 on kube-node2.",
  needsAgents: true,
  minNodes: 2,
  steps: [{
    name: "every node routes the other nodes' pod CIDRs via their underlay addresses",
    async run(ctx) {
      const topo = topology(ctx.state.nodes, ctx.state.prefix);
      for (const [i, h] of topo.nodes.entries()) {
        const want = topo.nodes.filter((o) => o !== h).map((o) =>
          `${podCidrOf(topo.nodes.indexOf(o))} via ${o.ip}`
        );
        let have: string[] = [];
        await ctx.eventually(`${h.name} has routes to ${want.length} other pod CIDR(s)`, async () => {
          const r = await ctx.exec(h.name, ["ip", "-j", "route", "show", "proto", "17"], {
            quiet: true,
            check: false,
          });
          have = (JSON.parse(r.stdout || "[]") as Array<{ dst: string; gateway?: string }>).map((x) =>
            `${x.dst} via ${x.gateway}`
          );
          return want.every((w) => have.includes(w));
        });
        if (i === 0) await ctx.exec(h.name, ["ip", "route", "show"]);
      }
    },
  }, {
    name: "web-1 on kube-node1 reaches web-3 on kube-node2, which sees web-1's own IP",
    async run(ctx) {
      await ctx.kubectl(["apply", "-f", "-"], { stdin: podYaml("web-3", "kube-node2") });
      await ctx.kubectl(["wait", "-n", DEMO_NS, "--for=condition=Ready", "pod/web-3", "--timeout=90s"]);
      await ctx.kubectl(["get", "pods", "-n", DEMO_NS, "-o", "wide"]);
      const pods = await podsAsJson(ctx, DEMO_NS, "app=web");
      const ip = (n: string) => pods.find((p) => p.metadata.name === n)?.status?.podIP as string;
      ctx.expect(
        ipInCidr(ip("web-3") ?? "0.0.0.0", "10.1.2.0/24"),
        `web-3 has IP ${ip("web-3")} from kube-node2's 10.1.2.0/24`,
      );
      await expectNetexecReach(ctx, ip, "web-1", "web-3", "routed, not NATed", false);
    },
  }],
};

function podCidrOf(index: number): string {
  return `10.1.${index + 1}.0/24`;
}
