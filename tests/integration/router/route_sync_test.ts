/** RouteSync against the real kernel in a throwaway namespace. */
import assert from "node:assert/strict";
import { needs, withNetns } from "../../_support/netns.ts";
import { Driver } from "../../_support/driver.ts";

const driverScript = new URL("./_route_sync_driver.ts", import.meta.url);

Deno.test({
  ...needs(
    "route sync programs the kernel with proto 17 routes, sees deletions and leaves other routes alone",
  ),
  async fn() {
    await withNetns(["rsync"], async (ns) => {
      await ns.exec(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]);
      await ns.exec(["ip", "link", "set", "eth0", "up"]);
      await ns.exec(["ip", "link", "set", "eth0p", "up"]);
      await ns.exec(["ip", "addr", "add", "192.168.1.100/24", "dev", "eth0"]);
      await ns.exec(["ip", "-6", "addr", "add", "fd00:100::100/64", "dev", "eth0", "nodad"]);
      await ns.exec(["ip", "route", "add", "10.9.0.0/16", "via", "192.168.1.1", "proto", "static"]);
      const d = await Driver.start(ns, driverScript);
      try {
        const res = await d.call("sync", [
          { dst: "10.1.2.0/24", gateway: "192.168.1.101" },
          { dst: "10.1.3.0/24", gateway: "192.168.1.102" },
          { dst: "fd00:2::/64", gateway: "fd00:100::101" },
        ]);
        assert.deepEqual(res, { added: 3, replaced: 0, removed: 0, failed: 0 });
        const v4 = (await ns.exec(["ip", "route", "show", "proto", "17"])).stdout;
        assert.match(v4, /10\.1\.2\.0\/24 via 192\.168\.1\.101 dev eth0/);
        assert.match(v4, /10\.1\.3\.0\/24 via 192\.168\.1\.102 dev eth0/);
        assert.match(
          (await ns.exec(["ip", "-6", "route", "show", "proto", "17"])).stdout,
          /fd00:2::\/64 via fd00:100::101/,
        );

        await d.call("watch");
        await ns.exec(["ip", "route", "del", "10.1.2.0/24"]);
        assert.equal(await d.nextEvent("drift", 5000), "route 10.1.2.0/24 was deleted");
        const again = await d.call("sync", [
          { dst: "10.1.2.0/24", gateway: "192.168.1.101" },
          { dst: "fd00:2::/64", gateway: "fd00:100::101" },
        ]);
        assert.deepEqual(again, { added: 1, replaced: 0, removed: 1, failed: 0 });
        assert.equal(await d.call("removeAll"), 2);
        assert.equal((await ns.exec(["ip", "route", "show", "proto", "17"])).stdout.trim(), "");
        assert.match((await ns.exec(["ip", "route", "show", "proto", "static"])).stdout, /10\.9\.0\.0\/16/);
      } finally {
        await d.close();
      }
    });
  },
});
