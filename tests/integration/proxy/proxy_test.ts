import assert from "node:assert/strict";
import { needs } from "../../_support/netns.ts";
import { CASES } from "./_cases.ts";
import { NODE_IP, ProxyEnv, service, slices } from "./_env.ts";

const opts = { tools: ["nft", "curl"] };

Deno.test({
  ...needs("the nftables service proxy gives Kubernetes Service semantics to real traffic", opts),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const env = await ProxyEnv.create();
    try {
      await env.startProxy(["--ipvs-sync-period=3s"], []);
      for (const c of CASES) {
        const ok = await t.step(c.name, () => c.run(env));
        if (!ok) console.error(await env.dump(), env.driver.stderr);
      }
    } finally {
      await env.close();
    }
  },
});

Deno.test({
  ...needs("an agent restart under traffic loses no established connection and no new one", opts),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const env = await ProxyEnv.create();
    try {
      const objects = [
        service("web", {
          type: "NodePort",
          clusterIP: "172.16.0.30",
          clusterIPs: ["172.16.0.30"],
          ports: [{ name: "http", port: 80, protocol: "TCP", nodePort: 30090 }],
        }),
        ...slices("web", [0, 1, 2]),
      ];
      await env.startProxy([], objects);
      const held = env.client.spawn([
        Deno.execPath(),
        "run",
        "--allow-net",
        new URL("./_keepalive_client.ts", import.meta.url).pathname,
        "172.16.0.30",
        "80",
        "6",
      ], { stdout: "piped" });
      const fresh: { ok: boolean }[] = [];
      let stop = false;
      const loop = (async () => {
        while (!stop) {
          fresh.push(await env.get("client", `http://${NODE_IP}:30090/hostname`, 2));
          await new Promise((r) => setTimeout(r, 50));
        }
      })();
      await new Promise((r) => setTimeout(r, 1000));
      await env.driver.kill();
      await env.startProxy([], objects);
      await new Promise((r) => setTimeout(r, 1500));
      stop = true;
      await loop;
      const out = JSON.parse(new TextDecoder().decode((await held.output()).stdout));
      assert.equal(out.failed, 0, out.error);
      assert.ok(out.ok > 20, `${out.ok} requests on the held connection`);
      assert.ok(fresh.length >= 3, `${fresh.length} new connections during the restart`);
      assert.deepEqual(fresh.filter((a) => !a.ok), [], "every new connection during the restart worked");
    } finally {
      await env.close();
    }
  },
});
