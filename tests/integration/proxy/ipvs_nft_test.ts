/**
 * The IPVS backend's nftables table applied by the real nft 1.0.6 in a throwaway namespace (IPVS itself is
 * tested in the VM tier; the table needs only nftables, which this kernel has).
 */
import assert from "node:assert/strict";
import { NftTransaction } from "../../../ffi/mod.ts";
import type { ServiceEndpoint, ServiceInfo } from "../../../core/mod.ts";
import { type IpvsPlanContext, mergePlans, planService } from "../../../modules/proxy/ipvs_plan.ts";
import { renderIpvsTable } from "../../../modules/proxy/ipvs_nft.ts";
import { renderBase } from "../../../modules/proxy/nft_render.ts";
import { needs, withNetns } from "../../_support/netns.ts";

const ctx: IpvsPlanContext = {
  nodeName: "n1",
  families: [4, 6],
  podCidrs: ["10.1.1.0/24", "10.1.0.0/16", "fd00:1::/64"],
  nodeIps: ["192.168.1.100"],
  nodePortIps: ["192.168.1.100"],
  serviceClusterIpRanges: ["172.16.0.0/16", "fd00:172::/112"],
  externalIpRanges: [],
  loadBalancerIpRanges: [],
  strictExternalIpValidation: false,
  masqueradeAll: false,
  hairpinMode: true,
  nodePortBindOnAllIp: false,
};

const ep = (ip: string): ServiceEndpoint => ({
  ip,
  family: ip.includes(":") ? 6 : 4,
  port: 8080,
  ready: true,
  serving: true,
  terminating: false,
  local: false,
  nodeName: "n2",
});

const web: ServiceInfo = {
  key: "default/web",
  namespace: "default",
  name: "web",
  type: "NodePort",
  clusterIPs: ["172.16.0.10", "fd00:172::10"],
  externalIPs: ["203.0.113.5"],
  loadBalancerIPs: [],
  loadBalancerSourceRanges: [],
  externalTrafficPolicy: "Cluster",
  internalTrafficPolicy: "Cluster",
  annotations: {},
  problems: [],
  ports: [
    {
      name: "http",
      protocol: "TCP",
      port: 80,
      nodePort: 30080,
      endpoints: [ep("10.1.2.5"), ep("fd00:1::5")],
    },
    { name: "s", protocol: "SCTP", port: 9, endpoints: [ep("10.1.2.5")] },
  ],
};

/** A LoadBalancer with source ranges (one inside the other: merged) and externalTrafficPolicy Local. */
const lb: ServiceInfo = {
  ...web,
  key: "default/lb",
  name: "lb",
  type: "LoadBalancer",
  clusterIPs: ["172.16.0.11"],
  externalIPs: [],
  loadBalancerIPs: ["198.51.100.7"],
  loadBalancerSourceRanges: ["192.0.2.0/24", "192.0.2.128/25", "10.99.0.0/16"],
  externalTrafficPolicy: "Local",
  ports: [{ name: "http", protocol: "TCP", port: 80, nodePort: 30081, endpoints: [ep("10.1.2.6")] }],
};

Deno.test({
  ...needs(
    "the IPVS-mode table applies in nft 1.0.6 and replaces a previous one, or the nftables backend's",
    {
      root: true,
      tools: ["nft", "ip"],
    },
  ),
  fn: () =>
    withNetns(["ipvsnft"], async (ns) => {
      const plan = mergePlans([planService(web, ctx), planService(lb, ctx)]);
      const opts = { families: [4, 6] as const, podCidrs: ctx.podCidrs, masqueradeAll: false };
      // The nftables backend's table first: switching backends replaces it whole.
      const base = new NftTransaction("inet", "kube_router_proxy");
      renderBase(base, ctx);
      await ns.exec(["nft", "-f", "-"], { stdin: base.render() });
      await ns.exec(["nft", "-f", "-"], {
        stdin: renderIpvsTable(plan, { ...opts, permitAll: false }).render(),
      });
      let listed = (await ns.exec(["nft", "list", "table", "inet", "kube_router_proxy"])).stdout;
      assert.doesNotMatch(listed, /service_ips_v4/, "nothing of the nftables backend's table is left");
      assert.match(listed, /192\.168\.1\.100 \. tcp \. 30080/);
      assert.match(
        listed,
        /elements = \{ 10\.1\.0\.0\/16 \}/,
        "pod CIDRs merged: the /24 lies inside the /16",
      );
      assert.match(listed, /ip saddr \. ip daddr @hairpin_v4 masquerade fully-random/);
      assert.match(listed, /ip6 daddr \. meta l4proto \. th dport @vip_ports_v6 accept/);
      assert.match(listed, /meta l4proto tcp reject with tcp reset/);
      // Source ranges: the LoadBalancer IP's port, and its allowed sources merged (the /25 is inside the /24).
      assert.match(listed, /set lb_ranged_v4 \{[^}]*elements = \{ 198\.51\.100\.7 \. tcp \. 80 \}/);
      const allowed = /set lb_allowed_v4 \{[^}]*elements = \{([^}]*)\}/.exec(listed)?.[1] ?? "";
      assert.deepEqual(
        allowed.split(",").map((e) => e.trim()).sort(),
        ["198.51.100.7 . tcp . 80 . 10.99.0.0/16", "198.51.100.7 . tcp . 80 . 192.0.2.0/24"],
      );
      assert.match(
        listed,
        /@lb_ranged_v4 ip daddr \. meta l4proto \. th dport \. ip saddr != @lb_allowed_v4 drop/,
      );
      // externalTrafficPolicy Local: the LB IP and the NodePort keep the client's address; the cluster IP not.
      const masq = /set masq_ports_v4 \{[^}]*elements = \{([^}]*)\}/.exec(listed)?.[1] ?? "";
      assert.match(masq, /172\.16\.0\.11 \. tcp \. 80/);
      assert.doesNotMatch(masq, /198\.51\.100\.7|30081/);
      assert.match(masq, /203\.0\.113\.5 \. tcp \. 80/, "a Cluster-policy external IP is masqueraded");
      await ns.exec(["nft", "-f", "-"], {
        stdin: renderIpvsTable(plan, { ...opts, permitAll: true }).render(),
      });
      listed = (await ns.exec(["nft", "list", "table", "inet", "kube_router_proxy"])).stdout;
      assert.doesNotMatch(listed, /reject/, "--ipvs-permit-all: nothing to a VIP is rejected");
      assert.match(listed, /chain vip_check \{\n\t\taccept\n\t\}/);
    }),
});
