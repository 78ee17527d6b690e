/**
 * The router module with every boundary faked: an in-memory API view per node (tests/_support/
 * kube_source.ts), FakeRtnetlink, FakeNftables, FakeSysctl, FakeFdb, and BGP over the in-memory
 * MemoryNetwork. What the real-kernel tests (tests/integration/router/) cannot see cheaply is checked
 * here: what is announced to whom.
 */
import assert from "node:assert/strict";
import type { V1Node, V1Service } from "@kubernetes/client-node";
import { Agent } from "../../../core/agent.ts";
import { Bus } from "../../../core/bus.ts";
import { loadConfig } from "../../../core/config.ts";
import { getLogger, MemorySink } from "../../../core/log.ts";
import type { ModuleDefinition } from "../../../core/module.ts";
import { FakeFdb, FakeNftables, FakeRtnetlink, FakeSysctl, NftTransaction } from "../../../ffi/mod.ts";
import { BgpSpeaker } from "../../../modules/router/bgp/speaker.ts";
import { MemoryNetwork } from "../../../modules/router/bgp/transport.ts";
import { Router, routerModule } from "../../../modules/router/mod.ts";
import { MemorySource } from "../../_support/kube_source.ts";

const nodeObj = (i: number, annotations: Record<string, string> = {}): V1Node => ({
  metadata: { name: `n${i}`, annotations },
  spec: { podCIDR: `10.1.${i}.0/24`, podCIDRs: [`10.1.${i}.0/24`] },
  status: { addresses: [{ type: "InternalIP", address: `192.168.77.${i}` }] },
});

const service: V1Service = {
  metadata: { name: "web", namespace: "default" },
  spec: { clusterIP: "10.96.0.10", clusterIPs: ["10.96.0.10"], ports: [{ port: 80 }] },
};

interface TestNode {
  agent: Agent;
  source: MemorySource;
  rtnl: FakeRtnetlink;
  nft: FakeNftables;
  router: () => Router;
}

async function startNode(
  net: MemoryNetwork,
  i: number,
  count: number,
  flags: string[] = [],
  asns: Record<number, string> = {},
  nft = new FakeNftables(),
): Promise<TestNode> {
  const rtnl = new FakeRtnetlink();
  await rtnl.linkAdd({ kind: "veth", name: "eth0", peer: "eth0p" });
  await rtnl.linkSet("eth0", { up: true });
  const eth0 = (await rtnl.linkGet("eth0"))!;
  await rtnl.addrAdd({ family: 4, index: eth0.index, address: `192.168.77.${i}`, prefix: 24 });
  let router: Router | undefined;
  const def: ModuleDefinition = {
    ...routerModule,
    create: (ctx) =>
      router = new Router(ctx, {
        rtnl,
        nft,
        sysctl: new FakeSysctl({ "net.ipv4.ip_forward": 0 }),
        fdb: new FakeFdb(rtnl),
        bgpTransport: net.transportFor(`192.168.77.${i}`),
      }),
  };
  const bus = new Bus();
  const source = new MemorySource(bus);
  for (let j = 1; j <= count; j++) {
    const asn = asns[j];
    source.put("nodes", nodeObj(j, asn ? { "kube-router.io/node.asn": asn } : {}));
  }
  const config = loadConfig([
    `--hostname-override=n${i}`,
    "--run-service-proxy=false",
    "--run-firewall=false",
    "--enable-cni=false",
    "--bgp-admin-port=0",
    "--peer-router-ips=192.168.77.254",
    "--peer-router-asns=65000",
    ...flags,
  ]);
  const agent = new Agent({ config, bus, source, log: getLogger({}, new MemorySink()), modules: [def] });
  await agent.start();
  return { agent, source, rtnl, nft, router: () => router! };
}

/** The data centre's router: a plain speaker on the same in-memory network. */
async function externalRouter(net: MemoryNetwork, nodes: number): Promise<BgpSpeaker> {
  const s = new BgpSpeaker({
    asn: 65000,
    routerId: "192.168.77.254",
    transport: net.transportFor("192.168.77.254"),
  });
  for (let i = 1; i <= nodes; i++) {
    s.addPeer({ address: `192.168.77.${i}`, asn: 64512, families: ["ipv4-unicast"] });
  }
  await s.start();
  return s;
}

async function eventually(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const prefixes = (s: BgpSpeaker | undefined) =>
  new Set((s?.routes("ipv4-unicast") ?? []).map((r) => r.prefix));

Deno.test({
  name: "router announces pod CIDRs to nodes, VIPs only to external peers, and installs learned routes",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const net = new MemoryNetwork();
    const ext = await externalRouter(net, 2);
    const n1 = await startNode(net, 1, 2, ["--advertise-cluster-ip"]);
    const n2 = await startNode(net, 2, 2, ["--advertise-cluster-ip"]);
    try {
      n1.source.put("services", service);
      n2.source.put("services", service);
      await eventually("the external router learns both pod CIDRs and the VIP", () => {
        const p = prefixes(ext);
        return p.has("10.1.1.0/24") && p.has("10.1.2.0/24") && p.has("10.96.0.10/32");
      });
      await eventually("n2 learns n1's pod CIDR", () => prefixes(n2.router().speaker).has("10.1.1.0/24"));
      // The VIP goes to external peers only: n2 never receives it from n1.
      const adjIn = n2.router().speaker!.adjRibIn("192.168.77.1", "ipv4-unicast").map((r) => r.prefix);
      assert.deepEqual(adjIn, ["10.1.1.0/24"]);
      await eventually(
        "n2's kernel routes n1's pod CIDR",
        async () =>
          (await n2.rtnl.routeList({ protocol: 17 })).some((r) =>
            r.dst === "10.1.1.0/24" && r.gateway === "192.168.77.1"
          ),
      );
      // Pod egress and forwarding were set up through the fakes.
      assert.ok(n1.nft.transactions >= 1);
      // The Service goes away: its VIP is withdrawn from the external router.
      n1.source.delete("services", "default/web");
      await eventually(
        "n1's VIP path withdrawn",
        () =>
          !ext.routes("ipv4-unicast").some((r) =>
            r.prefix === "10.96.0.10/32" && r.nextHop === "192.168.77.1"
          ),
      );
    } finally {
      await n1.agent.stop();
      await n2.agent.stop();
      await ext.stop();
    }
  },
});

Deno.test({
  name: "--advertise-pod-cidr=false keeps the pod CIDR from external peers but not from other nodes",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const net = new MemoryNetwork();
    const ext = await externalRouter(net, 2);
    const n1 = await startNode(net, 1, 2, ["--advertise-pod-cidr=false"]);
    const n2 = await startNode(net, 2, 2, ["--advertise-pod-cidr=false"]);
    try {
      await eventually(
        "nodes learn each other's pod CIDRs",
        () =>
          prefixes(n1.router().speaker).has("10.1.2.0/24") &&
          prefixes(n2.router().speaker).has("10.1.1.0/24"),
      );
      await eventually(
        "the external session is up",
        () => ext.peers().every((p) => p.state === "Established"),
      );
      await new Promise((r) => setTimeout(r, 300));
      assert.deepEqual([...prefixes(ext)], [], "the external router learned a pod CIDR");
    } finally {
      await n1.agent.stop();
      await n2.agent.stop();
      await ext.stop();
    }
  },
});

Deno.test({
  name: "without full mesh, nodes peer only with nodes of their own kube-router.io/node.asn",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const net = new MemoryNetwork();
    const asns = { 1: "65001", 2: "65001", 3: "65002" };
    const nodes = [];
    for (let i = 1; i <= 3; i++) nodes.push(await startNode(net, i, 3, ["--nodes-full-mesh=false"], asns));
    try {
      const [n1, n2, n3] = nodes as [TestNode, TestNode, TestNode];
      await eventually(
        "n1 and n2 learn each other's pod CIDRs",
        () =>
          prefixes(n1.router().speaker).has("10.1.2.0/24") &&
          prefixes(n2.router().speaker).has("10.1.1.0/24"),
      );
      assert.equal(n1.router().speaker!.asn, 65001);
      assert.equal(n3.router().speaker!.asn, 65002);
      const peersOf = (n: TestNode) => n.router().speaker!.peers().map((p) => p.address).sort();
      assert.deepEqual(peersOf(n1), ["192.168.77.2", "192.168.77.254"]);
      assert.deepEqual(peersOf(n3), ["192.168.77.254"]);
      assert.ok(!prefixes(n1.router().speaker).has("10.1.3.0/24"));
    } finally {
      for (const n of nodes) await n.agent.stop();
    }
  },
});

Deno.test({
  name:
    "on start the router puts its table in place, removes the old-name table and leaves other tables alone",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const nft = new FakeNftables();
    await nft.run(
      new NftTransaction("inet", "kube_router").add({ table: {} }).add({ chain: { name: "pod_egress" } }),
    );
    await nft.run(
      new NftTransaction("inet", "someone_else").add({ table: {} }).add({ chain: { name: "mine" } }),
    );
    const net = new MemoryNetwork();
    const n1 = await startNode(net, 1, 1, [], {}, nft);
    try {
      await eventually(
        "the router's table holds the node's pod CIDR",
        () => /10\.1\.1\.0\/24/.test(nft.dump()),
      );
      const tables = nft.dump().split("\n").filter((l) => l.startsWith("table "));
      assert.deepEqual(tables, ["table inet someone_else {", "table inet kube_router_router {"]);
      assert.match(nft.dump(), /table inet someone_else \{\n\tchain mine \{\n\t\}\n\}/);
    } finally {
      await n1.agent.stop();
    }
  },
});
