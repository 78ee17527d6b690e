/**
 * The router module end to end on small clusters of "nodes" (network namespaces on one underlay bridge),
 * each running the real agent against a lab API server; pods are wired by the real CNI bridge plugin with
 * the conf the router wrote (see _cluster.ts).
 */
import assert from "node:assert/strict";
import { needs, withNetns } from "../../_support/netns.ts";
import { clusterNeeds, TestCluster } from "./_cluster.ts";

Deno.test({
  ...needs(
    "two nodes exchange pod CIDRs over BGP, route pod traffic, repair a deleted route and shrug off a bad annotation",
    clusterNeeds,
  ),
  async fn() {
    await withNetns(["ul", "n1", "n2", "p1", "p2"], async (ul, n1, n2, p1, p2) => {
      const c = await TestCluster.start(await Deno.makeTempDir({ prefix: "krt-2n-" }), ul, [n1, n2]);
      try {
        c.startAgent(0, ["--metrics-port=20245"]);
        c.startAgent(1);
        await c.waitConverged();
        // Once converged, an idle router does not keep syncing (no event feedback loop).
        const syncs = async () => {
          const m = (await n1.exec(["curl", "-s", "http://127.0.0.1:20245/metrics"])).stdout;
          return Number(
            /kube_router_syncs_total\{module="router",result="success"\} (\d+)/.exec(m)?.[1] ?? NaN,
          );
        };
        await new Promise((r) => setTimeout(r, 1000));
        const before = await syncs();
        await new Promise((r) => setTimeout(r, 3000));
        const idleSyncs = (await syncs()) - before;
        assert.ok(idleSyncs <= 1, `${idleSyncs} router syncs in 3 idle seconds`);
        const metrics = (await n1.exec(["curl", "-s", "http://127.0.0.1:20245/metrics"])).stdout;
        assert.match(metrics, /kube_router_bgp_peer_info\{[^}]*peer="192\.168\.77\.2"[^}]*\} 1/);
        assert.match(metrics, /kube_router_routes_installed 1\n/);
        assert.match(metrics, /kube_router_route_changes_total\{op="added"\} 1\n/);
        const ip1 = await c.addPod(0, p1);
        const ip2 = await c.addPod(1, p2);
        assert.match(ip1, /^10\.1\.1\./);
        assert.match(ip2, /^10\.1\.2\./);
        const ping = await p1.exec(["busybox", "ping", "-c", "2", "-W", "2", ip2], { check: false });
        assert.equal(ping.code, 0, `pod on n1 cannot reach pod on n2: ${ping.stdout}${ping.stderr}`);

        // A route deleted behind the agent's back is put back.
        await n1.exec(["ip", "route", "del", "10.1.2.0/24"]);
        const repairMs = await c.waitFor(
          async () => (await c.routes(0)).includes("10.1.2.0/24 via 192.168.77.2"),
          "route repaired",
          5000,
        );
        assert.ok(repairMs < 1000, `route came back after ${repairMs} ms, more than a second`);

        // A malformed peers annotation is reported and ignored; the mesh and the routes stay.
        await c.kubectl([
          "annotate",
          "node",
          "n1",
          "kube-router.io/peers=- remoteip: not-an-ip\n  remoteasn: 65000\n",
        ]);
        const n1log = () => c.agents.get("n1")!.log;
        await c.waitFor(
          () => Promise.resolve(n1log().includes("ignoring bad BGP configuration")),
          "the bad annotation logged",
        );
        assert.match(n1log(), /kube-router.io\/peers\[0\]: remoteip \\?"not-an-ip\\?"/);
        const ping2 = await p1.exec(["busybox", "ping", "-c", "1", "-W", "2", ip2], { check: false });
        assert.equal(ping2.code, 0, "traffic still flows after the bad annotation");
        assert.match(await c.bgpNeighbors(0), /192\.168\.77\.2\s+64512\s+.*Establ/);
      } finally {
        await c.close();
      }
    });
  },
});

Deno.test({
  ...needs(
    "a node deleted from the API loses its routes on the others; a node joins, changes its address, and other sessions stay up",
    clusterNeeds,
  ),
  async fn() {
    await withNetns(["ul", "n1", "n2", "n3"], async (ul, n1, n2, n3) => {
      const c = await TestCluster.start(await Deno.makeTempDir({ prefix: "krt-3n-" }), ul, [n1, n2, n3]);
      try {
        for (let i = 0; i < 3; i++) c.startAgent(i);
        await c.waitConverged();
        await c.kubectl(["delete", "node", "n3"]);
        await c.waitFor(
          async () =>
            !(await c.routes(0)).includes("10.1.3.0/24") && !(await c.routes(1)).includes("10.1.3.0/24"),
          "n3's routes removed",
          20_000,
        );
        assert.match(await c.routes(0), /10\.1\.2\.0\/24 via 192\.168\.77\.2/, "the other routes stay");
        await c.kubectl(["apply", "--validate=false", "-f", "-"], JSON.stringify(c.nodeObject(2)));
        await c.waitConverged();
        // n3 changes its address: the others re-peer with the new one; the n1-n2 session is untouched.
        const upSince = async () =>
          JSON.parse((await n1.exec(["curl", "-s", "http://127.0.0.1:50051/neighbors/192.168.77.2"])).stdout)
            .upSince;
        const before = await upSince();
        assert.equal(typeof before, "number", "the admin endpoint reports when the session came up");
        await n3.exec(["ip", "addr", "add", "192.168.77.33/24", "dev", "eth0"]);
        await c.kubectl([
          "patch",
          "node",
          "n3",
          "--subresource=status",
          "--type=merge",
          "-p",
          JSON.stringify({ status: { addresses: [{ type: "InternalIP", address: "192.168.77.33" }] } }),
        ]);
        await c.waitFor(
          async () => (await c.routes(0)).includes("10.1.3.0/24 via 192.168.77.33 "),
          "n1 routes n3's pod CIDR via its new address",
        );
        await c.waitFor(async () => (await c.routes(1)).includes("10.1.3.0/24 via 192.168.77.33 "), "n2 too");
        assert.doesNotMatch(
          await c.bgpNeighbors(0),
          /192\.168\.77\.3\s/,
          "the old address is no longer a peer",
        );
        assert.equal(await upSince(), before, "the n1-n2 session was not restarted");
      } finally {
        await c.close();
      }
    });
  },
});

Deno.test({
  ...needs("with graceful restart, SIGKILL and restart of an agent loses no pod traffic", clusterNeeds),
  async fn() {
    await withNetns(["ul", "n1", "n2", "p1", "p2"], async (ul, n1, n2, p1, p2) => {
      const c = await TestCluster.start(await Deno.makeTempDir({ prefix: "krt-gr-" }), ul, [n1, n2]);
      try {
        const flags = ["--bgp-graceful-restart", "--bgp-graceful-restart-time=30s"];
        c.startAgent(0, flags);
        const victim = c.startAgent(1, flags);
        await c.waitConverged();
        await c.addPod(0, p1);
        const ip2 = await c.addPod(1, p2);
        // A continuous probe: 40 pings, 100 ms apart, across the kill and the restart.
        const probe = p1.exec(["busybox", "ping", "-c", "40", "-i", "0.1", "-W", "1", ip2], { check: false });
        await new Promise((r) => setTimeout(r, 500));
        victim.child.kill("SIGKILL");
        await victim.child.status;
        await new Promise((r) => setTimeout(r, 1000));
        assert.match(
          await c.routes(0),
          /10\.1\.2\.0\/24 via 192\.168\.77\.2/,
          "n1 keeps n2's route while n2 restarts",
        );
        c.startAgent(1, flags);
        const out = await probe;
        assert.match(out.stdout, /40 packets transmitted, 40 packets received, 0% packet loss/, out.stdout);
        await c.waitFor(
          async () => {
            return /192\.168\.77\.2\s+64512\s+.*Establ/.test(await c.bgpNeighbors(0));
          },
          "the session is back",
          30_000,
        );
        await c.waitConverged();
      } finally {
        await c.close();
      }
    });
  },
});

Deno.test({
  ...needs(
    "dual-stack: one BGP session carries both families and pods reach each other over IPv4 and IPv6",
    clusterNeeds,
  ),
  async fn() {
    await withNetns(["ul", "n1", "n2", "p1", "p2"], async (ul, n1, n2, p1, p2) => {
      const c = await TestCluster.start(await Deno.makeTempDir({ prefix: "krt-ds-" }), ul, [n1, n2], {
        dualStack: true,
      });
      try {
        c.startAgent(0, ["--enable-ipv6"]);
        c.startAgent(1, ["--enable-ipv6"]);
        await c.waitConverged();
        await c.waitFor(async () => {
          const r = (await n1.exec(["ip", "-6", "route", "show", "proto", "17"])).stdout;
          return r.includes("fd00:1:2::/64 via fd00:77::2 dev eth0");
        }, "n1 learns n2's IPv6 pod CIDR");
        const conf = JSON.parse(await Deno.readTextFile(c.confPath(0)));
        assert.deepEqual(conf.plugins[0].ipam.ranges, [[{ subnet: "10.1.1.0/24" }], [{
          subnet: "fd00:1:1::/64",
        }]]);
        await c.addPodAll(0, p1);
        const ips2 = await c.addPodAll(1, p2);
        const v4 = ips2.find((a) => !a.includes(":"))!;
        const v6 = ips2.find((a) => a.includes(":"))!;
        assert.match(v6, /^fd00:1:2::/);
        const ping4 = await p1.exec(["busybox", "ping", "-c", "1", "-W", "2", v4], { check: false });
        assert.equal(ping4.code, 0, ping4.stdout);
        // IPv6 neighbour discovery and DAD take a moment on fresh interfaces.
        await c.waitFor(
          async () =>
            (await p1.exec(["busybox", "ping6", "-c", "1", "-W", "1", v6], { check: false })).code === 0,
          "IPv6 pod-to-pod ping",
          15_000,
        );
        assert.match(await c.bgpNeighbors(0), /192\.168\.77\.2\s+64512\s+.*Establ/);
      } finally {
        await c.close();
      }
    });
  },
});

Deno.test({
  ...needs(
    "route reflection: clients peer only with the reflector and still learn each other's pod CIDRs",
    clusterNeeds,
  ),
  async fn() {
    await withNetns(["ul", "n1", "n2", "n3"], async (ul, n1, n2, n3) => {
      const c = await TestCluster.start(await Deno.makeTempDir({ prefix: "krt-rr-" }), ul, [n1, n2, n3]);
      try {
        await c.kubectl(["annotate", "node", "n1", "kube-router.io/rr.server=42"]);
        await c.kubectl(["annotate", "node", "n2", "kube-router.io/rr.client=42"]);
        await c.kubectl(["annotate", "node", "n3", "kube-router.io/rr.client=42"]);
        for (let i = 0; i < 3; i++) c.startAgent(i);
        // n2 learns n3's pod CIDR through the reflector, with n3 as the next hop.
        await c.waitConverged();
        const neighbors = await c.bgpNeighbors(1);
        assert.match(neighbors, /192\.168\.77\.1\s+64512/);
        assert.doesNotMatch(neighbors, /192\.168\.77\.3\s/, "clients do not peer with each other");
      } finally {
        await c.close();
      }
    });
  },
});

Deno.test({
  ...needs("nodes in different subnets reach each other's pods through the VXLAN overlay", clusterNeeds),
  async fn() {
    await withNetns(["ul", "n1", "n2", "n3", "p1", "p2"], async (ul, n1, n2, n3, p1, p2) => {
      const c = await TestCluster.start(await Deno.makeTempDir({ prefix: "krt-ovl-" }), ul, [n1, n2, n3], {
        twoSubnets: true,
      });
      try {
        // VXLAN explicitly: the default (ipip, kube-router's) needs a module this machine's kernel lacks; the
        // IPIP and FoU tunnels are tested in the VM tier (tests/vm/router/overlay_guest.ts).
        for (let i = 0; i < 3; i++) c.startAgent(i, ["--overlay-encap=vxlan"]);
        await c.waitConverged();
        // n1 and n3 share a subnet: a plain route. n2 sits in the other: through kube-vxlan.
        const r1 = await c.routes(0);
        assert.match(r1, /10\.1\.3\.0\/24 via 192\.168\.77\.3 dev eth0/);
        assert.match(r1, /10\.1\.2\.0\/24 via 192\.168\.78\.2 dev kube-vxlan onlink/);
        await c.addPod(0, p1);
        const ip2 = await c.addPod(1, p2);
        const ping = await p1.exec(["busybox", "ping", "-c", "2", "-W", "2", ip2], { check: false });
        assert.equal(ping.code, 0, `pod on n1 cannot reach pod on n2 across subnets: ${ping.stdout}`);
        // The CNI MTU leaves room for the VXLAN headers.
        const conf = JSON.parse(await Deno.readTextFile(c.confPath(0)));
        assert.equal(conf.plugins[0].mtu, 1450);
        // Restarted with --enable-overlay=false, the agent takes the tunnel away.
        c.agents.get("n1")!.child.kill("SIGTERM");
        await c.agents.get("n1")!.child.status;
        c.startAgent(0, ["--enable-overlay=false", "--overlay-encap=vxlan"]);
        await c.waitFor(
          async () => (await n1.exec(["ip", "link", "show", "kube-vxlan"], { check: false })).code !== 0,
          "kube-vxlan removed",
        );
        assert.doesNotMatch(await c.routes(0), /kube-vxlan/);
      } finally {
        await c.close();
      }
    });
  },
});
