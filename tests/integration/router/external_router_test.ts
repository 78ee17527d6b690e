/**
 * An external router on the underlay (real gobgpd, then real BIRD 2) peers with every node through
 * --peer-router-ips/-asns and learns each node's pod CIDR and, with --advertise-cluster-ip, the cluster IP
 * of a Service; it never learns one node's pod CIDR from another node.
 */
import assert from "node:assert/strict";
import { needs, withNetns } from "../../_support/netns.ts";
import { Bird, Gobgp, gobgpConfig } from "../bgp/_interop.ts";
import { clusterNeeds, TestCluster } from "./_cluster.ts";

const svc = {
  apiVersion: "v1",
  kind: "Service",
  metadata: { name: "web", namespace: "default" },
  spec: { selector: { app: "web" }, ports: [{ port: 80, protocol: "TCP" }] },
};

async function clusterIp(c: TestCluster): Promise<string> {
  await c.kubectl(["apply", "--validate=false", "-f", "-"], JSON.stringify(svc));
  const out = await c.kubectl(["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
  assert.match(out.stdout, /^\d+\.\d+\.\d+\.\d+$/);
  return out.stdout;
}

const agentFlags = ["--peer-router-ips=192.168.77.254", "--peer-router-asns=65000", "--advertise-cluster-ip"];

Deno.test({
  ...needs("an external gobgpd learns every node's pod CIDR and the service cluster IP", {
    ...clusterNeeds,
    tools: [...clusterNeeds.tools, "gobgpd", "gobgp"],
  }),
  async fn() {
    await withNetns(["ul", "n1", "n2"], async (ul, n1, n2) => {
      const dir = await Deno.makeTempDir({ prefix: "krt-ext-" });
      const c = await TestCluster.start(dir, ul, [n1, n2]);
      const gobgp = new Gobgp(ul, dir);
      try {
        await ul.exec(["ip", "addr", "add", "192.168.77.254/24", "dev", "br0"]);
        // Node 1 tags its routes and makes its path longer to external peers, per its annotations.
        await c.kubectl([
          "annotate",
          "node",
          "n1",
          "kube-router.io/node.bgp.communities=65000:100,65000:200",
        ]);
        await c.kubectl([
          "annotate",
          "node",
          "n1",
          "kube-router.io/path-prepend.as=64512",
          "kube-router.io/path-prepend.repeat-n=2",
        ]);
        await gobgp.start(gobgpConfig({
          asn: 65000,
          routerId: "192.168.77.254",
          neighbors: [1, 2].map((i) => ({
            address: `192.168.77.${i}`,
            asn: 64512,
            families: ["ipv4-unicast"],
          })),
        }));
        c.startAgent(0, agentFlags);
        c.startAgent(1, agentFlags);
        await c.waitConverged();
        const vip = await clusterIp(c);
        let rib: Awaited<ReturnType<Gobgp["ribPrefixes"]>> = {};
        await c.waitFor(async () => {
          rib = await gobgp.ribPrefixes("ipv4");
          // Both nodes announce the cluster IP; wait for both paths, not just the first to arrive.
          return ["10.1.1.0/24", "10.1.2.0/24"].every((p) => rib[p]) && (rib[`${vip}/32`]?.length ?? 0) >= 2;
        }, "gobgpd learns pod CIDRs and the cluster IP from both nodes");
        assert.deepEqual(rib["10.1.1.0/24"]!.map((p) => p.nexthop), ["192.168.77.1"]);
        assert.deepEqual(rib["10.1.2.0/24"]!.map((p) => p.nexthop), ["192.168.77.2"]);
        const attrs = (p: string) => JSON.stringify(rib[p]![0]!.attrs);
        assert.match(attrs("10.1.1.0/24"), /"communities":\[4259840100,4259840200\]/);
        assert.match(attrs("10.1.1.0/24"), /"asns":\[64512,64512,64512\]/);
        assert.doesNotMatch(attrs("10.1.2.0/24"), /communities/);
        assert.match(attrs("10.1.2.0/24"), /"asns":\[64512\]/);
        assert.deepEqual(rib[`${vip}/32`]!.map((p) => p.nexthop).sort(), ["192.168.77.1", "192.168.77.2"]);
        // What the external router announces is installed, except a default route, service VIPs and the
        // node's custom import rejects.
        await c.kubectl([
          "annotate",
          "node",
          "n1",
          "kube-router.io/node.bgp.customimportreject=10.150.0.0/16",
        ]);
        for (const p of ["0.0.0.0/0", "10.96.5.5/32", "10.150.1.0/24", "10.50.0.0/16"]) {
          const r = await gobgp.cli("global", "rib", "add", p, "-a", "ipv4");
          assert.equal(r.code, 0, r.stderr);
        }
        await c.waitFor(
          async () => (await c.routes(0)).includes("10.50.0.0/16 via 192.168.77.254"),
          "external route installed",
        );
        await c.waitFor(
          async () => (await c.routes(1)).includes("10.150.1.0/24 via 192.168.77.254"),
          "n2 (no reject) installs 10.150.1.0/24",
        );
        const r1 = await c.routes(0);
        assert.doesNotMatch(r1, /default|10\.96\.5\.5|10\.150\.1\.0/, r1);
        // The cluster IP is withdrawn when the Service goes.
        await c.kubectl(["delete", "service", "web"]);
        await c.waitFor(async () => !(await gobgp.ribPrefixes("ipv4"))[`${vip}/32`], "cluster IP withdrawn");
      } finally {
        await gobgp.stop();
        await c.close();
      }
    });
  },
});

Deno.test({
  ...needs("an external BIRD learns every node's pod CIDR and the service cluster IP", {
    ...clusterNeeds,
    tools: [...clusterNeeds.tools, "bird", "birdc"],
  }),
  async fn() {
    await withNetns(["ul", "n1", "n2"], async (ul, n1, n2) => {
      const dir = await Deno.makeTempDir({ prefix: "krt-extb-" });
      const c = await TestCluster.start(dir, ul, [n1, n2]);
      const bird = new Bird(ul, dir);
      try {
        await ul.exec(["ip", "addr", "add", "192.168.77.254/24", "dev", "br0"]);
        const peers = [1, 2].map((i) =>
          `protocol bgp node${i} { local 192.168.77.254 as 65000; neighbor 192.168.77.${i} as 64512; ` +
          `ipv4 { import all; export none; }; }`
        ).join("\n");
        await bird.start(`router id 192.168.77.254;\nprotocol device {}\n${peers}\n`);
        c.startAgent(0, agentFlags);
        c.startAgent(1, agentFlags);
        await c.waitConverged();
        const vip = await clusterIp(c);
        await c.waitFor(async () => {
          const out = (await bird.cli("show", "route")).stdout;
          return ["10.1.1.0/24", "10.1.2.0/24", `${vip}/32`].every((p) => out.includes(p));
        }, "BIRD learns pod CIDRs and the cluster IP");
        const pod1 = (await bird.cli("show", "route", "for", "10.1.1.0/24", "all")).stdout;
        assert.match(pod1, /BGP\.next_hop: 192\.168\.77\.1/);
        assert.match(pod1, /BGP\.as_path: 64512/);
      } finally {
        await bird.stop();
        await c.close();
      }
    });
  },
});
