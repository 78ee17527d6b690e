/**
 * Where NodePorts answer, with real traffic: on the node's own addresses (its Node object's InternalIPs) by
 * default, on every local address with --nodeport-bindon-all-ip, and never on loopback (kube-proxy's
 * nftables mode does not serve localhost NodePorts either: it would need route_localnet).
 */
import assert from "node:assert/strict";
import { needs } from "../../_support/netns.ts";
import { NODE_IP, NODE_IP6, ProxyEnv, service, slices } from "./_env.ts";

const objects = [
  service("np", {
    type: "NodePort",
    clusterIP: "172.16.0.60",
    clusterIPs: ["172.16.0.60", "fd00:172::60"],
    ipFamilies: ["IPv4", "IPv6"],
    ports: [{ name: "http", port: 80, protocol: "TCP", nodePort: 30200 }],
  }),
  ...slices("np", [0, 1], { v6: true }),
];
/** The pods' gateway: an address of the node that is not in its Node object. */
const OTHER_LOCAL = "10.1.1.1";

for (const allIps of [false, true]) {
  Deno.test({
    ...needs(
      allIps
        ? "with --nodeport-bindon-all-ip a NodePort answers on every local address but loopback"
        : "a NodePort answers on the node's addresses only, not on its other local addresses nor loopback",
      { tools: ["nft", "curl"] },
    ),
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const env = await ProxyEnv.create();
      try {
        await env.startProxy(allIps ? ["--nodeport-bindon-all-ip"] : [], objects);
        const code = async (from: "client" | "node" | number, host: string) =>
          (await env.get(from, `http://${host}:30200/hostname`, 2)).code;
        assert.equal(await code("client", NODE_IP), 0);
        assert.equal(await code("client", `[${NODE_IP6}]`), 0);
        assert.equal(await code("node", NODE_IP), 0);
        // Nothing listens on 30200 itself, so an address the NodePort does not cover refuses (7).
        assert.equal(await code(0, OTHER_LOCAL), allIps ? 0 : 7, `${OTHER_LOCAL} from a pod`);
        assert.equal(await code("node", "127.0.0.1"), 7, "127.0.0.1");
        assert.equal(await code("node", "[::1]"), 7, "::1");
      } finally {
        await env.close();
      }
    },
  });
}
