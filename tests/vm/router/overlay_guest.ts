/**
 * IPIP and FoU overlay tunnels end to end, run by the VM tier inside its guest (this machine's kernel has
 * neither module): two nodes in different subnets (192.168.77.0/24 and 192.168.78.0/24, routed by the
 * underlay namespace, which knows no pod CIDR) run the real agent against a lab API server; a pod behind
 * each pings the other through the tunnels. The agents first use ipip, then are restarted with fou (the
 * tunnels are recreated with GUE encapsulation), and `--cleanup-config` then leaves no tunnel, table-77
 * route, rule or FoU port behind.
 */
import assert from "node:assert/strict";
import { needs, type NetNs, withNetns } from "../../_support/netns.ts";
import { clusterNeeds, TestCluster } from "../../integration/router/_cluster.ts";
import { tunnelName } from "../../../modules/router/tunnels.ts";

if (Deno.env.get("KRT_IN_VM") !== "1") {
  throw new Error(
    "tests/vm/router/overlay_guest.ts needs the ipip and fou modules: it runs only in the VM tier",
  );
}

const root = new URL("../../../", import.meta.url).pathname;

async function restartAgents(c: TestCluster, flags: string[]): Promise<void> {
  for (const a of c.agents.values()) {
    a.child.kill("SIGTERM");
    await a.child.status;
  }
  c.agents.clear();
  c.startAgent(0, flags);
  c.startAgent(1, flags);
}

/** Waits until node i routes the other node's pod CIDR through its tunnel; returns the tunnel's name. */
async function waitTunnelRoute(c: TestCluster, i: number): Promise<string> {
  const other = 1 - i;
  const tun = tunnelName(c.nodeIp(other));
  await c.waitFor(
    async () => new RegExp(`10\\.1\\.${other + 1}\\.0/24 dev ${tun} `).test(await c.routes(i)),
    `n${i + 1} routes 10.1.${other + 1}.0/24 through ${tun}`,
    60_000,
  );
  return tun;
}

async function ping(from: NetNs, to: string): Promise<void> {
  const r = await from.exec(["busybox", "ping", "-c", "2", "-W", "3", to], { check: false });
  assert.equal(r.code, 0, `ping ${to} failed: ${r.stdout}${r.stderr}`);
}

Deno.test({
  ...needs(
    "nodes in different subnets carry pod traffic through IPIP, then FoU tunnels, and --cleanup-config removes them",
    clusterNeeds,
  ),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await withNetns(["ul", "n1", "n2", "p1", "p2"], async (ul, n1, n2, p1, p2) => {
      const c = await TestCluster.start(await Deno.makeTempDir({ prefix: "krt-tun-" }), ul, [n1, n2], {
        twoSubnets: true,
      });
      try {
        c.startAgent(0, ["--overlay-encap=ipip"]);
        c.startAgent(1, ["--overlay-encap=ipip"]);
        const tun = await waitTunnelRoute(c, 0);
        await waitTunnelRoute(c, 1);
        const link = (await n1.exec(["ip", "-d", "link", "show", tun])).stdout;
        assert.match(link, /ipip (any|ipip) remote 192\.168\.78\.2 local 192\.168\.77\.1/);
        assert.doesNotMatch(link, /encap gue/);
        assert.match(
          (await n1.exec(["ip", "route", "show", "table", "77"])).stdout,
          new RegExp(`192\\.168\\.78\\.2 dev ${tun}`),
        );
        assert.match((await n1.exec(["ip", "rule", "show"])).stdout, /from 10\.1\.1\.0\/24 lookup 77/);
        const ip1 = await c.addPod(0, p1);
        const ip2 = await c.addPod(1, p2);
        await ping(p1, ip2);
        await ping(p2, ip1);
        // The CNI MTU leaves room for the outer IPv4 header only.
        assert.equal(JSON.parse(await Deno.readTextFile(c.confPath(0))).plugins[0].mtu, 1480);

        // The same nodes switched to FoU: the tunnels come back with GUE to port 5555.
        await restartAgents(c, ["--overlay-encap=fou"]);
        await c.waitFor(
          async () =>
            /encap gue/.test((await n1.exec(["ip", "-d", "link", "show", tun], { check: false })).stdout),
          "n1's tunnel recreated with GUE",
          60_000,
        );
        await c.waitFor(
          async () =>
            /encap gue/.test(
              (await n2.exec(["ip", "-d", "link", "show", tunnelName(c.nodeIp(0))], { check: false })).stdout,
            ),
          "n2's tunnel recreated with GUE",
          60_000,
        );
        assert.match((await n1.exec(["ip", "-d", "link", "show", tun])).stdout, /encap-dport 5555/);
        assert.match((await n1.exec(["ip", "fou", "show"])).stdout, /port 5555 gue/);
        await waitTunnelRoute(c, 0);
        await ping(p1, ip2);
        await c.waitFor(
          async () => JSON.parse(await Deno.readTextFile(c.confPath(0))).plugins[0].mtu === 1468,
          "the CNI MTU leaves room for IPv4, UDP and GUE",
        );

        // --cleanup-config (after the agent stops) leaves no tunnel, table-77 route, rule or FoU port.
        const a1 = c.agents.get("n1")!;
        a1.child.kill("SIGTERM");
        await a1.child.status;
        const out = await n1.exec(
          [
            Deno.execPath(),
            "run",
            "--allow-all",
            `${root}main.ts`,
            "--cleanup-config",
            "--overlay-encap=fou",
          ],
          { check: false },
        );
        assert.equal(out.code, 0, out.stderr);
        assert.doesNotMatch((await n1.exec(["ip", "link", "show"])).stdout, /tun-/);
        assert.equal((await n1.exec(["ip", "route", "show", "table", "77"])).stdout.trim(), "");
        assert.doesNotMatch((await n1.exec(["ip", "rule", "show"])).stdout, /lookup 77/);
        assert.equal((await n1.exec(["ip", "fou", "show"], { check: false })).stdout.trim(), "");
        assert.equal((await c.routes(0)).trim(), "");
      } finally {
        await c.close();
      }
    });
  },
});
