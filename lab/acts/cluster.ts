import { NODE_COLUMNS } from "../lab.ts";
import { ipInCidr, MASTER_IP, SERVICE_CIDR, topology } from "../topology.ts";
import { nodesAsJson } from "./_helpers.ts";
import type { Act } from "./types.ts";

/** Act 1: the cluster of the seed, up and answering kubectl. */
export const clusterAct: Act = {
  name: "the cluster",
  story:
    "kube-master 192.168.1.99 and the nodes at 192.168.1.100+ register; each node gets a /24 of 10.1.0.0/16.",
  steps: [{
    name: "kubectl get nodes shows every node Ready with its pod CIDR",
    async run(ctx) {
      await ctx.kubectl(["get", "nodes", "-o", "wide"]);
      await ctx.kubectl(["get", "nodes", "-o", NODE_COLUMNS]);
      const items = await nodesAsJson(ctx);
      const topo = topology(ctx.state.nodes, ctx.state.prefix);
      ctx.expect(
        items.length === topo.nodes.length,
        `${topo.nodes.length} nodes registered`,
        `got ${items.length}`,
      );
      for (const [i, h] of topo.nodes.entries()) {
        const n = items.find((x) => x.metadata.name === h.name);
        const ready = n?.status?.conditions?.some((c: { type: string; status: string }) =>
          c.type === "Ready" && c.status === "True"
        );
        const ip = n?.status?.addresses?.find((a: { type: string }) => a.type === "InternalIP")?.address;
        ctx.expect(
          !!ready && ip === h.ip && n?.spec?.podCIDR === `10.1.${i + 1}.0/24`,
          `${h.name} Ready at ${h.ip} with pod CIDR 10.1.${i + 1}.0/24`,
          `ready=${ready} ip=${ip} podCIDR=${n?.spec?.podCIDR}`,
        );
      }
    },
  }, {
    name: "the kubernetes Service has the first cluster IP of 172.16.0.0/16",
    async run(ctx) {
      const out = await ctx.kubectl(["get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"], {
        quiet: true,
      });
      ctx.say(`kubernetes Service cluster IP: ${out}`);
      ctx.expect(ipInCidr(out.trim(), SERVICE_CIDR), `cluster IP ${out.trim()} is inside ${SERVICE_CIDR}`);
      const master = await ctx.exec("kube-node1", [
        "curl",
        "-sk",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        `https://${MASTER_IP}:6443/version`,
      ], {
        check: false,
      });
      ctx.expect(
        /^[1-5]\d\d$/.test(master.stdout.trim()),
        `kube-node1 reaches the API server at https://${MASTER_IP}:6443 over the underlay (HTTP ${master.stdout.trim()})`,
        "no HTTP answer",
      );
    },
  }],
};
