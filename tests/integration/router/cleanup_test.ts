/** --cleanup-config removes exactly what the router made: its proto-17 routes and its nft table. */
import assert from "node:assert/strict";
import { needs, withNetns } from "../../_support/netns.ts";
import { clusterNeeds, TestCluster } from "./_cluster.ts";

const root = new URL("../../../", import.meta.url).pathname;

Deno.test({
  ...needs("--cleanup-config removes the router's routes and nft table and nothing else", clusterNeeds),
  async fn() {
    await withNetns(["ul", "n1", "n2"], async (ul, n1, n2) => {
      const c = await TestCluster.start(await Deno.makeTempDir({ prefix: "krt-clean-" }), ul, [n1, n2]);
      try {
        await n1.exec(["ip", "route", "add", "10.200.0.0/16", "via", "192.168.77.2", "proto", "static"]);
        await n1.exec(["nft", "add", "table", "inet", "someone_else"]);
        const a1 = c.startAgent(0);
        c.startAgent(1);
        await c.waitConverged();
        assert.match((await n1.exec(["nft", "list", "tables"])).stdout, /inet kube_router/);
        a1.child.kill("SIGTERM");
        assert.equal((await a1.child.status).code, 0);
        assert.match(await c.routes(0), /10\.1\.2\.0\/24/, "SIGTERM leaves the routes in place");
        const out = await n1.exec([
          Deno.execPath(),
          "run",
          "--allow-all",
          `${root}main.ts`,
          "--cleanup-config",
        ], { check: false });
        assert.equal(out.code, 0, out.stderr);
        assert.equal((await c.routes(0)).trim(), "");
        const tables = (await n1.exec(["nft", "list", "tables"])).stdout;
        assert.doesNotMatch(tables, /kube_router/);
        assert.match(tables, /inet someone_else/);
        assert.match((await n1.exec(["ip", "route", "show", "proto", "static"])).stdout, /10\.200\.0\.0\/16/);
        // Running it again finds nothing to do and still succeeds.
        assert.equal(
          (await n1.exec([Deno.execPath(), "run", "--allow-all", `${root}main.ts`, "--cleanup-config"], {
            check: false,
          })).code,
          0,
        );
      } finally {
        await c.close();
      }
    });
  },
});
