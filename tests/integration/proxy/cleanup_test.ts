/**
 * --cleanup-config on the nftables backend with the real kernel: the proxy's table goes, every other table
 * (someone else's, in the same and in other families) stays, and the Service stops answering.
 */
import assert from "node:assert/strict";
import { needs } from "../../_support/netns.ts";
import { ProxyEnv, service, slices } from "./_env.ts";

Deno.test({
  ...needs("--cleanup-config removes the nftables proxy's table and nothing else", {
    tools: ["nft", "curl"],
  }),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const env = await ProxyEnv.create();
    try {
      const theirs = ["inet other", "ip nat", "ip6 filter"];
      for (const t of theirs) {
        await env.node.exec(["nft", `add table ${t}`]);
        await env.node.exec(["nft", `add chain ${t} c { type filter hook forward priority 0; }`]);
      }
      await env.startProxy([], [
        service("web", { clusterIP: "172.16.0.70", clusterIPs: ["172.16.0.70"] }),
        ...slices("web", [0]),
      ]);
      assert.equal((await env.get("client", "http://172.16.0.70/hostname")).body, "pod-a");
      await env.cleanup();
      const tables = (await env.node.exec(["nft", "list", "tables"])).stdout;
      assert.doesNotMatch(tables, /kube_router_proxy/);
      for (const t of theirs) assert.match(tables, new RegExp(`table ${t}\\n`), t);
      for (const t of theirs) {
        assert.match((await env.node.exec(["nft", `list chain ${t} c`])).stdout, /hook forward/, t);
      }
      assert.equal((await env.get("client", "http://172.16.0.70/hostname", 2)).ok, false, "no longer served");
    } finally {
      await env.close();
    }
  },
});
