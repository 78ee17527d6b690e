/**
 * Direct server return (`kube-router.io/service.dsr=tunnel`) of the IPVS backend with real traffic, in the
 * VM tier's guest (listed in tests/vm/vm_test.ts): the guest's root namespace is the node and IPVS
 * director, running IpvsProxy on the real IPVS, nftables, rtnetlink and the pod side (dsr_pods.ts), which
 * finds each pod's namespace from the node's bridge ports. A router namespace joins the client, the node
 * and the pods' second legs, so a pod's answer can reach the client without passing the node at all:
 *
 *   client 192.168.70.2 ── router ── 192.168.71.1 node (director; 203.0.113.0/24 routed to it)
 *                            │  │
 *            10.5.1.0/24 ────┘  └──── 10.5.2.0/24   (pods' eth1; their default route)
 *   pod1 10.2.1.11, pod2 10.2.1.12 ── veth ── bridge dsrbr0 10.2.1.1/24 on the node (their eth0)
 *   pod3 10.2.3.13: behind the router only (no veth on the node), yet said to run on this node
 *   pod4 10.2.1.14: a client pod on dsrbr0 whose gateway is the node
 *
 * Pods serve HTTP on port 80 (busybox httpd answering their name): IPVS tunnelling keeps the port.
 */
import assert from "node:assert/strict";
import type { V1EndpointSlice, V1Node, V1Service } from "@kubernetes/client-node";
import { Bus, getLogger, loadConfig } from "../../../core/mod.ts";
import { MemorySink } from "../../../core/log.ts";
import { Conntrack, IpvsNetlink, Nftables, ProcSysctl, Rtnetlink } from "../../../ffi/mod.ts";
import {
  DSR_TABLE,
  DSR_TUNNEL_IF,
  DUMMY_IF,
  IpvsProxy,
  kernelDsrPodsDeps,
  NetnsDsrPods,
  proxyModule,
} from "../../../modules/proxy/mod.ts";
import { MemorySource, moduleContext } from "../../_support/kube_source.ts";
import { linkVeth, NetNs, run } from "../../_support/netns.ts";

if (Deno.env.get("KRT_IN_VM") !== "1") {
  throw new Error("tests/vm/proxy/dsr_guest.ts reconfigures the node's network: it runs only in the VM tier");
}

const NODE_IP = "192.168.71.1";
const ROUTER_IP = "192.168.71.2";
const CLIENT_IP = "192.168.70.2";
const VIP = "203.0.113.7";
const FALLBACK_VIP = "203.0.113.8";
const PODS = [
  { name: "pod1", ip: "10.2.1.11", ip6: "fd00:21::11", leg: 1 },
  { name: "pod2", ip: "10.2.1.12", ip6: "fd00:21::12", leg: 2 },
];
const LONE = { name: "pod3", ip: "10.2.3.13" };
/** A client pod on the node's bridge, the node its gateway (as pods on a kube-router node are). */
const LOCAL_CLIENT = { name: "pod4", ip: "10.2.1.14" };
/** The TCP MSS that fits IPVS's ipip tunnel on the node's 1500-byte links: 1500 - 20 - 20 - 20. */
const DSR_MSS = 1440;
const DIR = "/tmp/dsr-vm";
const VIP6 = "2001:db8:7::7";
const FLAGS = [
  "--hostname-override=guest",
  "--enable-ipv6",
  "--service-cluster-ip-range=172.16.0.0/16,fd00:172::/112",
  "--service-external-ip-range=203.0.113.0/24,2001:db8:7::/64",
  "--service-proxy-backend=ipvs",
];

const node: V1Node = {
  metadata: { name: "guest" },
  spec: { podCIDR: "10.2.1.0/24", podCIDRs: ["10.2.1.0/24", "fd00:21::/64"] },
  status: {
    addresses: [{ type: "InternalIP", address: NODE_IP }, { type: "InternalIP", address: "fd00:71::1" }],
  },
};

function service(name: string, clusterIp: string, externalIp: string, annotations = {}): V1Service {
  return {
    metadata: { namespace: "default", name, annotations },
    spec: {
      type: "ClusterIP",
      clusterIP: clusterIp,
      clusterIPs: [clusterIp],
      externalIPs: [externalIp],
      ports: [{ name: "http", port: 80, protocol: "TCP", targetPort: 80 }],
    },
  };
}

function slice(svc: string, ips: readonly string[], family: 4 | 6 = 4): V1EndpointSlice {
  return {
    metadata: {
      namespace: "default",
      name: `${svc}-${family === 4 ? 1 : 2}`,
      labels: { "kubernetes.io/service-name": svc },
    },
    addressType: family === 4 ? "IPv4" : "IPv6",
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName: "guest" })),
    ports: [{ name: "http", port: 80, protocol: "TCP" }],
  };
}

const DSR = { "kube-router.io/service.dsr": "tunnel" };

interface Lab {
  client: NetNs;
  router: NetNs;
  pods: NetNs[];
  lone: NetNs;
  localClient: NetNs;
  source: MemorySource;
  sink: MemorySink;
  proxy: IpvsProxy;
  stopContext: () => Promise<void>;
  deps: { ipvs: IpvsNetlink; nft: Nftables; rtnl: Rtnetlink; conntrack: Conntrack };
}

let lab: Lab | undefined;

async function serve(ns: NetNs, name: string): Promise<void> {
  await Deno.mkdir(`${DIR}/${name}`, { recursive: true });
  await Deno.writeTextFile(`${DIR}/${name}/index.html`, `${name}\n`);
  ns.spawn(["busybox", "httpd", "-f", "-p", "80", "-h", `${DIR}/${name}`]);
}

async function setupLab(): Promise<Lab> {
  await run(["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
  // The guest's root namespace is shared by the tier's files: its own names and subnets, nothing left over.
  await run(["ip", "link", "del", "dsrbr0"], { check: false });
  await run(["ip", "link", "del", "vrouter"], { check: false });
  const router = await NetNs.create("router");
  // The router sees pods answer from the VIP, which it routes to the node: no reverse-path filter there.
  for (const k of ["all", "default"]) await router.exec(["sysctl", "-qw", `net.ipv4.conf.${k}.rp_filter=0`]);
  await router.exec(["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
  // node <-> router
  await run(["ip", "link", "add", "vrouter", "type", "veth", "peer", "name", "tonode", "netns", router.name]);
  await run(["ip", "addr", "add", `${NODE_IP}/24`, "dev", "vrouter"]);
  await run(["ip", "link", "set", "vrouter", "up"]);
  await router.exec(["ip", "addr", "add", `${ROUTER_IP}/24`, "dev", "tonode"]);
  await router.exec(["ip", "link", "set", "tonode", "up"]);
  await router.exec(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
  await run(["ip", "addr", "add", "fd00:71::1/64", "dev", "vrouter", "nodad"]);
  await router.exec(["ip", "addr", "add", "fd00:71::2/64", "dev", "tonode", "nodad"]);
  await router.exec(["ip", "route", "add", "2001:db8:7::/64", "via", "fd00:71::1"]);
  await run(["ip", "route", "add", "fd00:70::/64", "via", "fd00:71::2"]);
  await router.exec(["ip", "route", "add", "203.0.113.0/24", "via", NODE_IP]);
  await run(["ip", "route", "add", "192.168.70.0/24", "via", ROUTER_IP]);
  await run(["ip", "route", "add", "10.2.3.0/24", "via", ROUTER_IP]);
  // client <-> router
  const client = await NetNs.create("client");
  await linkVeth(router, "toclient", "192.168.70.1/24", client, "eth0", `${CLIENT_IP}/24`);
  await client.exec(["ip", "route", "add", "default", "via", "192.168.70.1"]);
  await router.exec(["ip", "addr", "add", "fd00:70::1/64", "dev", "toclient", "nodad"]);
  await client.exec(["ip", "addr", "add", "fd00:70::2/64", "dev", "eth0", "nodad"]);
  await client.exec(["ip", "-6", "route", "add", "default", "via", "fd00:70::1"]);
  // pods: eth0 on the node's bridge, eth1 to the router (their default route)
  await run(["ip", "link", "add", "dsrbr0", "type", "bridge"]);
  await run(["ip", "addr", "add", "10.2.1.1/24", "dev", "dsrbr0"]);
  await run(["ip", "addr", "add", "fd00:21::1/64", "dev", "dsrbr0", "nodad"]);
  await run(["ip", "link", "set", "dsrbr0", "up"]);
  const pods: NetNs[] = [];
  for (const [i, p] of PODS.entries()) {
    const ns = await NetNs.create(p.name);
    pods.push(ns);
    await run(["ip", "link", "add", `vpod${i}`, "type", "veth", "peer", "name", "eth0", "netns", ns.name]);
    await run(["ip", "link", "set", `vpod${i}`, "master", "dsrbr0", "up"]);
    await ns.exec(["ip", "addr", "add", `${p.ip}/24`, "dev", "eth0"]);
    await ns.exec(["ip", "link", "set", "eth0", "up"]);
    await linkVeth(router, `topod${p.leg}`, `10.5.${p.leg}.1/24`, ns, "eth1", `10.5.${p.leg}.2/24`);
    await ns.exec(["ip", "route", "add", "default", "via", `10.5.${p.leg}.1`]);
    await ns.exec(["ip", "addr", "add", `${p.ip6}/64`, "dev", "eth0", "nodad"]);
    await router.exec(["ip", "addr", "add", `fd00:5:${p.leg}::1/64`, "dev", `topod${p.leg}`, "nodad"]);
    await ns.exec(["ip", "addr", "add", `fd00:5:${p.leg}::2/64`, "dev", "eth1", "nodad"]);
    await ns.exec(["ip", "-6", "route", "add", "default", "via", `fd00:5:${p.leg}::1`]);
    await serve(ns, p.name);
  }
  const lone = await NetNs.create(LONE.name);
  await linkVeth(router, "tolone", "10.2.3.1/24", lone, "eth0", `${LONE.ip}/24`);
  await lone.exec(["ip", "route", "add", "default", "via", "10.2.3.1"]);
  await serve(lone, LONE.name);
  const localClient = await NetNs.create(LOCAL_CLIENT.name);
  await run([
    "ip",
    "link",
    "add",
    "vpodc",
    "type",
    "veth",
    "peer",
    "name",
    "eth0",
    "netns",
    localClient.name,
  ]);
  await run(["ip", "link", "set", "vpodc", "master", "dsrbr0", "up"]);
  await localClient.exec(["ip", "addr", "add", `${LOCAL_CLIENT.ip}/24`, "dev", "eth0"]);
  await localClient.exec(["ip", "link", "set", "eth0", "up"]);
  await localClient.exec(["ip", "route", "add", "default", "via", "10.2.1.1"]);
  // The node's own way to the VIP without DSR (its default route, standing in): out to the router, which
  // would send it back. The output mark must deliver it to IPVS before it ever leaves.
  await run(["ip", "route", "add", `${VIP}/32`, "via", ROUTER_IP]);
  // Counters: anything from a VIP reaching the node, and pods' answers passing the router.
  await Deno.writeTextFile(
    `${DIR}/count.nft`,
    `table inet dsrtest {\n  chain pre { type filter hook prerouting priority -300; policy accept;\n` +
      `    ip saddr ${VIP} counter\n    ip6 saddr ${VIP6} counter\n` +
      `    ip saddr ${NODE_IP} ip daddr ${VIP} counter\n  }\n}\n`,
  );
  await run(["nft", "-f", `${DIR}/count.nft`]);
  await router.exec(["nft", "-f", `${DIR}/count.nft`]);
  // In the pods, after the tunnel is unwrapped: SYNs to the VIP with the clamped MSS, and with any other.
  await Deno.writeTextFile(
    `${DIR}/mss.nft`,
    `table inet dsrtest {\n  chain pre { type filter hook prerouting priority 0; policy accept;\n` +
      `    ip daddr ${VIP} tcp flags & (syn | ack) == syn tcp option maxseg size ${DSR_MSS} counter\n` +
      `    ip daddr ${VIP} tcp flags & (syn | ack) == syn tcp option maxseg size != ${DSR_MSS} counter\n` +
      `  }\n}\n`,
  );
  for (const p of pods) await p.exec(["nft", "-f", `${DIR}/mss.nft`]);

  const sink = new MemorySink();
  const source = new MemorySource(new Bus(), { synced: false });
  const t = moduleContext({
    config: loadConfig(FLAGS),
    source,
    log: getLogger({}, sink),
    periodMs: 300_000,
  });
  const deps = {
    ipvs: new IpvsNetlink(),
    nft: new Nftables(),
    rtnl: new Rtnetlink(),
    conntrack: new Conntrack(),
  };
  await deps.ipvs.flush();
  const proxy = new IpvsProxy(t.ctx, {
    ...deps,
    sysctl: new ProcSysctl(),
    serveHealthChecks: false,
    dsrPods: new NetnsDsrPods(kernelDsrPodsDeps(deps.rtnl)),
  });
  source.start(["services", "endpointslices", "nodes"]);
  await proxy.start();
  source.put("nodes", node);
  source.markSynced();
  return { client, router, pods, lone, localClient, source, sink, proxy, stopContext: t.stop, deps };
}

async function getLab(): Promise<Lab> {
  await Deno.mkdir(DIR, { recursive: true });
  lab ??= await setupLab();
  return lab;
}

async function ipvsadm(...args: string[]): Promise<string> {
  return (await run(["ipvsadm", "-Ln", ...args])).stdout;
}

async function until(what: string, f: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await f()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}\n${await ipvsadm()}\n${lab?.sink.lines.join("\n") ?? ""}`);
}

async function get(url: string): Promise<string> {
  const r = await lab!.client.exec(["curl", "-gsS", "--max-time", "5", url], { check: false });
  if (r.code !== 0) {
    throw new Error(`curl ${url} from the client failed (${r.code}): ${r.stderr}\n${await diagnostics()}`);
  }
  return r.stdout.trim();
}

/** What the node holds for DSR, for a failure's message. */
async function diagnostics(): Promise<string> {
  const out: string[] = [];
  for (
    const cmd of [
      ["ip", "rule"],
      ["ip", "route", "show", "table", "78"],
      ["ip", "route"],
      ["ipvsadm", "-Ln", "--stats"],
      ["ipvsadm", "-Lnc"],
      ["nft", "list", "ruleset"],
      ["conntrack", "-L"],
      [
        "nstat",
        "-az",
        "TcpExtListenDrops",
        "TcpOutRsts",
        "IpInNoRoutes",
        "IpInAddrErrors",
        "IpExtInNoRoutes",
      ],
    ]
  ) {
    const r = await run(cmd, { check: false });
    out.push(`$ ${cmd.join(" ")}\n${r.stdout}${r.stderr}`);
  }
  for (const p of lab?.pods ?? []) {
    const r = await p.exec(["ip", "-s", "-d", "link"], { check: false });
    out.push(`$ (${p.name}) ip -s -d link\n${r.stdout}`);
  }
  return out.join("\n");
}

/**
 * The packets a `counter` rule in table inet dsrtest has counted (in `ns`, or the node): from the VIP (4),
 * from the IPv6 VIP (6), or from the node to the VIP ("node"); in the pods' table 0 and 1 are the rules.
 */
async function counted(ns?: NetNs, which: 4 | 6 | "node" | 0 | 1 = 4): Promise<number> {
  const cmd = ["nft", "list", "table", "inet", "dsrtest"];
  const out = ns ? (await ns.exec(cmd)).stdout : (await run(cmd)).stdout;
  const index = { 4: 0, 6: 1, node: 2, 0: 0, 1: 1 }[which];
  const m = [...out.matchAll(/counter packets (\d+)/g)][index];
  assert.ok(m, out);
  return Number(m[1]);
}

/** What the tunnel interface in a pod holds ("" when there is none). */
async function tunnel(ns: NetNs): Promise<string> {
  const r = await ns.exec(["ip", "-o", "-4", "addr", "show", "dev", DSR_TUNNEL_IF[4]], { check: false });
  return r.code === 0 ? r.stdout : "";
}

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  ...opts,
  name:
    "DSR: a client reaches the external IP, IPVS tunnels to the pods and they answer it directly, never through the node",
  fn: async () => {
    const l = await getLab();
    l.source.put("services", service("web", "172.16.0.10", VIP, DSR));
    l.source.put("endpointslices", slice("web", PODS.map((p) => p.ip)));
    await until("the firewall-mark service with two tunnel destinations and both pods' tunnels", async () => {
      const t = await ipvsadm();
      // The policy rule comes last in a sync: wait for it too.
      return /FWM {2}\d+ rr/.test(t) && t.split("Tunnel").length === 3 &&
        /lookup 78/.test((await run(["ip", "rule"])).stdout) &&
        (await tunnel(l.pods[0]!)).includes(`${VIP}/32`) && (await tunnel(l.pods[1]!)).includes(`${VIP}/32`);
    });
    // The pods' side, as kube-router leaves it: an ipip device with the pod's address as local, rp_filter 0.
    const link = (await l.pods[0]!.exec(["ip", "-d", "link", "show", DSR_TUNNEL_IF[4]])).stdout;
    assert.match(link, /ipip (ipip|any) remote any local 10\.2\.1\.11/);
    assert.equal(
      (await l.pods[0]!.exec(["sysctl", "-n", `net.ipv4.conf.${DSR_TUNNEL_IF[4]}.rp_filter`])).stdout.trim(),
      "0",
    );
    // The node's side: no VIP on any interface of its, the policy rule and the local route of table 78.
    assert.doesNotMatch((await run(["ip", "-o", "addr"])).stdout, /203\.0\.113\.7/);
    assert.match((await run(["ip", "rule"])).stdout, /fwmark 0x8000\/0x8000 lookup 78/);
    assert.match(
      (await run(["ip", "route", "show", "table", String(DSR_TABLE)])).stdout,
      /local default dev lo/,
    );

    const nodeBefore = await counted();
    const routerBefore = await counted(l.router);
    const who = new Map<string, number>();
    for (let i = 0; i < 4; i++) {
      const w = await get(`http://${VIP}/`);
      who.set(w, (who.get(w) ?? 0) + 1);
    }
    assert.deepEqual([...who.entries()].sort(), [["pod1", 2], ["pod2", 2]], "rr over both pods");
    assert.equal(await counted() - nodeBefore, 0, "no packet from the VIP ever reached the node");
    assert.ok(
      await counted(l.router) - routerBefore >= 8,
      "the pods' answers (from the VIP) went through the router straight to the client",
    );
    // IPVS saw the requests and never a reply: in tunnel mode the answers bypass the director. (IPVS folds
    // its per-CPU counters into these totals every 2 s, hence the wait.)
    let stats = "";
    await until("IPVS's counters of the firewall-mark service", async () => {
      stats = (await ipvsadm("--stats")).split("\n").find((x) => x.startsWith("FWM")) ?? "";
      const [, , conns, inPkts] = stats.trim().split(/\s+/).map(Number);
      return conns! >= 4 && inPkts! >= 8;
    });
    assert.equal(Number(stats.trim().split(/\s+/)[4]), 0, `no packet out through IPVS: ${stats}`);
  },
});

Deno.test({
  ...opts,
  name:
    "DSR from this node: the node itself and a pod on it reach the external IP through IPVS's tunnel, and SYNs reach the pods with the MSS clamped for the tunnel",
  fn: async () => {
    const l = await getLab();
    const out = (await run(["nft", "list", "chain", "inet", "kube_router_proxy", "mangle_output"])).stdout;
    assert.match(out, /type route hook output priority mangle/);
    const routerBefore = await counted(l.router, "node");
    const who = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const r = await run(["curl", "-sS", "--max-time", "5", `http://${VIP}/`], { check: false });
      if (r.code !== 0) {
        throw new Error(`curl from the node failed (${r.code}): ${r.stderr}\n${await diagnostics()}`);
      }
      who.add(r.stdout.trim());
    }
    assert.deepEqual([...who].sort(), ["pod1", "pod2"], "the node's requests are balanced over both pods");
    assert.equal(
      await counted(l.router, "node") - routerBefore,
      0,
      "the node's requests never left it (marked in output, handed to IPVS locally)",
    );
    const fromPod = new Set<string>();
    for (let i = 0; i < 4; i++) {
      const r = await l.localClient.exec(["curl", "-sS", "--max-time", "5", `http://${VIP}/`], {
        check: false,
      });
      if (r.code !== 0) {
        throw new Error(`curl from pod4 failed (${r.code}): ${r.stderr}\n${await diagnostics()}`);
      }
      fromPod.add(r.stdout.trim());
    }
    assert.deepEqual([...fromPod].sort(), ["pod1", "pod2"], "a pod on the node reaches both pods too");
    // Every SYN that reached a pod through the tunnel (the client's, the node's, pod4's) had its MSS
    // lowered from 1460 to what fits the tunnel.
    let clamped = 0;
    for (const p of l.pods) {
      clamped += await counted(p, 0);
      assert.equal(await counted(p, 1), 0, `${p.name} saw a SYN to the VIP whose MSS was not ${DSR_MSS}`);
    }
    assert.ok(clamped >= 12, `SYNs with MSS ${DSR_MSS} in the pods: ${clamped}`);
  },
});

Deno.test({
  ...opts,
  name:
    "DSR fallback: a Service whose local pod cannot be entered is logged by name and served through NAT, the DSR Service keeps DSR",
  fn: async () => {
    const l = await getLab();
    l.source.put("services", service("lone", "172.16.0.11", FALLBACK_VIP, DSR));
    l.source.put("endpointslices", slice("lone", [LONE.ip]));
    await until(
      "the NAT service of the fallen-back Service",
      async () => new RegExp(`TCP {2}${FALLBACK_VIP.replaceAll(".", "\\.")}:80 rr`).test(await ipvsadm()),
    );
    assert.match(await ipvsadm(), /-> 10\.2\.3\.13:80 +Masq/);
    const warned = l.sink.lines.filter((x) => x.includes("default/lone"));
    assert.equal(warned.length, 1, warned.join("\n"));
    assert.match(
      warned[0]!,
      /direct server return not possible: pod 10\.2\.3\.13: no network namespace behind vrouter/,
    );
    assert.equal(await get(`http://${FALLBACK_VIP}/`), LONE.name, "NAT answers for the fallen-back Service");
    assert.match((await run(["ip", "-o", "addr", "show", "dev", DUMMY_IF])).stdout, /203\.0\.113\.8\/32/);
    const before = await counted();
    assert.ok(["pod1", "pod2"].includes(await get(`http://${VIP}/`)), "the DSR Service still answers");
    assert.equal(await counted() - before, 0, "and still directly");
    assert.ok(!l.sink.lines.some((x) => x.includes("default/web")), "nothing is reported about the other");
  },
});

Deno.test({
  ...opts,
  name: "DSR over IPv6: ip6tnl kube-tunnel-v6 in the pods, and they answer the client directly",
  fn: async () => {
    const l = await getLab();
    const svc = service("web6", "fd00:172::20", VIP6, DSR);
    svc.spec!.ipFamilies = ["IPv6"];
    l.source.put("services", svc);
    l.source.put("endpointslices", slice("web6", PODS.map((p) => p.ip6), 6));
    await until("the IPv6 firewall-mark service and both pods' IPv6 tunnels", async () => {
      const t = await ipvsadm();
      const tun = async (ns: NetNs) =>
        (await ns.exec(["ip", "-o", "-6", "addr", "show", "dev", DSR_TUNNEL_IF[6]], { check: false })).stdout;
      return /-> \[fd00:21::11\]:0 +Tunnel/.test(t) && /-> \[fd00:21::12\]:0 +Tunnel/.test(t) &&
        /lookup 78/.test((await run(["ip", "-6", "rule"])).stdout) &&
        (await tun(l.pods[0]!)).includes(`${VIP6}/128`) && (await tun(l.pods[1]!)).includes(`${VIP6}/128`);
    });
    const link = (await l.pods[0]!.exec(["ip", "-d", "link", "show", DSR_TUNNEL_IF[6]])).stdout;
    assert.match(link, /ip6tnl ip6ip6 remote any local fd00:21::11/);
    assert.match((await run(["ip", "-6", "rule"])).stdout, /fwmark 0x8000\/0x8000 lookup 78/);
    assert.match((await run(["ip", "-6", "route", "show", "table", "78"])).stdout, /local default dev lo/);
    const nodeBefore = await counted(undefined, 6);
    const routerBefore = await counted(l.router, 6);
    const who = new Set<string>();
    for (let i = 0; i < 4; i++) who.add(await get(`http://[${VIP6}]/`));
    assert.deepEqual([...who].sort(), ["pod1", "pod2"]);
    assert.equal(await counted(undefined, 6) - nodeBefore, 0, "no packet from the IPv6 VIP reached the node");
    assert.ok(await counted(l.router, 6) - routerBefore >= 8, "the answers went through the router");
    l.source.delete("services", "default/web6");
    await until(
      "the IPv6 tunnels gone with the Service",
      async () =>
        !(await l.pods[0]!.exec(["ip", "-o", "link", "show"])).stdout.includes(DSR_TUNNEL_IF[6]) &&
        !/lookup 78/.test((await run(["ip", "-6", "rule"])).stdout),
    );
  },
});

Deno.test({
  ...opts,
  name:
    "DSR cleanup: an endpoint removed loses its tunnel, the Service removed takes the rule, and --cleanup-config leaves nothing",
  fn: async () => {
    const l = await getLab();
    l.source.put("endpointslices", slice("web", [PODS[0]!.ip]));
    await until("pod2's tunnel removed with its endpoint", async () => (await tunnel(l.pods[1]!)) === "");
    assert.match(await tunnel(l.pods[0]!), /203\.0\.113\.7\/32/);
    assert.equal((await ipvsadm()).split("Tunnel").length, 2);
    assert.equal(await get(`http://${VIP}/`), "pod1");

    l.source.delete("services", "default/web");
    await until(
      "pod1's tunnel, the firewall-mark service and the rule gone with the Service",
      async () =>
        (await tunnel(l.pods[0]!)) === "" && !/FWM/.test(await ipvsadm()) &&
        !/lookup 78/.test((await run(["ip", "rule"])).stdout),
    );
    assert.doesNotMatch(
      (await run(["ip", "route", "show", "table", "78"], { check: false })).stdout,
      /local/,
    );

    // Put it back, then --cleanup-config with the agent stopped.
    l.source.put("services", service("web", "172.16.0.10", VIP, DSR));
    l.source.put("endpointslices", slice("web", PODS.map((p) => p.ip)));
    await until(
      "both tunnels back",
      async () => (await tunnel(l.pods[1]!)) !== "" && (await tunnel(l.pods[0]!)) !== "",
    );
    await l.proxy.stop();
    await l.stopContext();
    await proxyModule.cleanup(loadConfig(FLAGS), getLogger({}, new MemorySink()));
    for (const p of l.pods) {
      const links = (await p.exec(["ip", "-o", "link", "show"])).stdout;
      assert.doesNotMatch(links, /kube-tunnel/, "no tunnel interface is left in the pods");
    }
    assert.doesNotMatch(await ipvsadm(), /FWM|TCP/);
    assert.doesNotMatch((await run(["ip", "rule"])).stdout, /lookup 78/);
    assert.doesNotMatch(
      (await run(["ip", "route", "show", "table", "78"], { check: false })).stdout,
      /local/,
    );
    assert.doesNotMatch((await run(["nft", "list", "tables"])).stdout, /kube_router_proxy/);
    await run(["nft", "delete", "table", "inet", "dsrtest"]);
    await run(["ip", "route", "del", `${VIP}/32`]);
    await run(["ip", "link", "del", "dsrbr0"]);
    for (const ns of [l.client, l.router, l.lone, l.localClient, ...l.pods]) await ns.remove();
    for (const d of Object.values(l.deps)) d.close();
  },
});
