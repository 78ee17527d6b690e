/**
 * Direct server return in the IPVS backend without a kernel: the plan (firewall-mark services with
 * tunnel destinations, marks stable and never shared), the nftables marks, the node's policy routing, and
 * the fallback to NAT of a Service whose pod cannot be entered (with a fake pod side).
 */
import assert from "node:assert/strict";
import type { V1EndpointSlice, V1Service } from "@kubernetes/client-node";
import { NFT_MARK } from "../../../core/mod.ts";
import { RouteType } from "../../../ffi/mod.ts";
import {
  assignFwmarks,
  DSR_INDEX_MASK,
  DSR_TABLE,
  DsrPodError,
  type DsrPods,
  mergePlans,
  planService,
} from "../../../modules/proxy/mod.ts";
import type { IpvsPlanContext } from "../../../modules/proxy/ipvs_plan.ts";
import { renderIpvsTable } from "../../../modules/proxy/ipvs_nft.ts";
import { ipvsSetup } from "./_ipvs_setup.ts";
import { ep, nodeCtx, svc } from "./_fixtures.ts";

const { zone: _zone, ...n1 } = nodeCtx;
const ctx: IpvsPlanContext = { ...n1, podCidrs: ["10.1.1.0/24"], nodePortIps: ["192.168.1.100"] };
const DSR = { "kube-router.io/service.dsr": "tunnel" };
/** Endpoints listening on the Service port (DSR cannot translate ports): one local, one remote. */
const eps = [ep("10.1.1.5", { local: true, port: 80 }), ep("10.1.2.5", { port: 80 })];

Deno.test("a DSR Service's external and LoadBalancer IPs become firewall-mark services tunnelling to every endpoint", () => {
  const p = planService(
    svc({
      type: "LoadBalancer",
      externalIPs: ["203.0.113.7"],
      loadBalancerIPs: ["198.51.100.9"],
      annotations: DSR,
    }, eps),
    ctx,
  );
  assert.deepEqual(p.problems, []);
  assert.deepEqual(p.vips, ["172.16.0.10"], "DSR VIPs are not put on kube-dummy-if");
  assert.deepEqual(p.dsr, { localEndpoints: ["10.1.1.5"], vips: ["203.0.113.7", "198.51.100.9"] });
  const cluster = p.services.find((s) => s.kind === "cluster")!;
  assert.equal(cluster.service.address, "172.16.0.10", "the cluster IP stays a NAT service");
  assert.ok(cluster.destinations.every((d) => d.forward === "masq"));
  const dsr = p.services.filter((s) => s.dsr);
  assert.deepEqual(dsr.map((s) => `${s.kind} ${s.dsr!.vip} ${s.dsr!.protocol} ${s.dsr!.port}`), [
    "external 203.0.113.7 tcp 80",
    "loadbalancer 198.51.100.9 tcp 80",
  ]);
  for (const s of dsr) {
    assert.deepEqual(
      s.destinations.map((d) => `${d.address}:${d.port} ${d.forward} ${d.weight}`),
      ["10.1.1.5:0 tunnel 1", "10.1.2.5:0 tunnel 1"],
    );
    assert.deepEqual(s.dsr!.localEndpoints, ["10.1.1.5"]);
  }

  const plan = mergePlans([p]);
  const marks = [...plan.services.values()].filter((s) => s.dsr).map((s) => s.service.fwmark!);
  assert.equal(marks.length, 2);
  assert.notEqual(marks[0], marks[1]);
  for (const m of marks) {
    assert.equal(m & NFT_MARK.dsr, NFT_MARK.dsr);
    assert.equal(m & ~(NFT_MARK.dsr | DSR_INDEX_MASK), 0, "no bit of another owner's mark");
    assert.ok((m & DSR_INDEX_MASK) > 0);
    assert.ok(plan.services.has(`fwmark/4/${m}`));
  }
  assert.deepEqual([...plan.dsrPods.entries()].map(([k, v]) => [k, [...v].sort()]), [
    ["10.1.1.5", ["198.51.100.9", "203.0.113.7"]],
  ]);
  assert.deepEqual([...plan.vips.keys()], ["172.16.0.10"]);
  const dump = renderIpvsTable(plan, {
    families: [4],
    podCidrs: ["10.1.1.0/24"],
    masqueradeAll: false,
    permitAll: true,
  }).render();
  assert.match(
    dump,
    /add map inet kube_router_proxy dsr_marks_v4 \{ type ipv4_addr \. inet_proto \. inet_service : mark; \}/,
  );
  assert.match(
    dump,
    new RegExp(`203\\.0\\.113\\.7 \\. tcp \\. 80 : 0x${marks[0]!.toString(16).padStart(8, "0")}`),
  );
  assert.match(dump, /type filter hook prerouting priority -150/);
  assert.match(dump, /meta mark set ip daddr \. meta l4proto \. th dport map @dsr_marks_v4/);
  assert.doesNotMatch(dump, /vip_ports_v4 \{ 203\.0\.113\.7/, "DSR VIPs are not masqueraded");
});

Deno.test("a DSR Service whose pod cannot be entered falls back to NAT with the reason among its problems", () => {
  const p = planService(
    svc({ externalIPs: ["203.0.113.7"], annotations: DSR }, eps),
    ctx,
    "pod 10.1.1.5: no network namespace behind kube-bridge's veths holds it",
  );
  assert.match(
    p.problems.join("\n"),
    /direct server return not possible: pod 10\.1\.1\.5: .*served through NAT/,
  );
  assert.equal(p.dsr, undefined);
  const ext = p.services.find((s) => s.kind === "external")!;
  assert.equal(ext.service.address, "203.0.113.7");
  assert.ok(ext.destinations.every((d) => d.forward === "masq"));
  assert.deepEqual(p.vips, ["172.16.0.10", "203.0.113.7"]);
});

Deno.test("DSR with a target port unlike the Service port is planned and reported (IPVS tunnelling keeps the port)", () => {
  const p = planService(svc({ externalIPs: ["203.0.113.7"], annotations: DSR }, [ep("10.1.2.5")]), ctx);
  assert.equal(p.problems.length, 1);
  assert.match(p.problems[0]!, /delivers port 80 unchanged/);
  assert.ok(p.services.some((s) => s.dsr));
  assert.deepEqual(p.dsr, { localEndpoints: [], vips: ["203.0.113.7"] });
});

Deno.test("a DSR Service and a NAT Service on one external IP and port: the first by name keeps it", () => {
  const a = planService(
    svc({ key: "default/a", name: "a", externalIPs: ["203.0.113.7"], annotations: DSR }, eps),
    ctx,
  );
  const b = planService(
    svc({ key: "default/b", name: "b", clusterIPs: ["172.16.0.11"], externalIPs: ["203.0.113.7"] }, eps),
    ctx,
  );
  const plan = mergePlans([b, a]);
  assert.match(
    plan.problems.get("default/b")?.join("\n") ?? "",
    /tcp\/203\.0\.113\.7:80 is already used by default\/a/,
  );
  assert.ok(!plan.services.has("tcp/203.0.113.7:80"));
  assert.equal([...plan.services.values()].filter((s) => s.dsr).length, 1);
});

Deno.test("firewall marks are never shared, keep their value while their VIP:port lives, and repeat after a restart", () => {
  const keys = Array.from({ length: 5000 }, (_, i) => `tcp/203.0.${i >> 8}.${i & 255}:80`);
  const first = assignFwmarks(keys);
  assert.equal(first.size, 5000);
  assert.equal(new Set(first.values()).size, 5000, "no two keys share a mark");
  for (const m of first.values()) {
    assert.equal(m & ~(NFT_MARK.dsr | DSR_INDEX_MASK), 0);
    assert.ok((m & DSR_INDEX_MASK) >= 1);
  }
  assert.deepEqual(
    assignFwmarks([...keys].reverse()),
    first,
    "the same set gets the same marks in any order",
  );
  // A key that sorts first and would take someone's mark does not move the others.
  const grown = assignFwmarks(["tcp/1.1.1.1:1", ...keys.slice(100)], first);
  for (const k of keys.slice(100)) assert.equal(grown.get(k), first.get(k), k);
  assert.ok(![...keys.slice(100)].some((k) => first.get(k) === grown.get("tcp/1.1.1.1:1")));
  // A previous mark two keys claim (e.g. state from two runs) goes to the first; the other gets a new one.
  const clash = assignFwmarks(["tcp/a:1", "tcp/b:1"], new Map([["tcp/a:1", 0x8005], ["tcp/b:1", 0x8005]]));
  assert.equal(clash.get("tcp/a:1"), 0x8005);
  assert.notEqual(clash.get("tcp/b:1"), 0x8005);
  // Beyond the 16,383 marks there are, keys get none (and mergePlans reports them).
  const all = Array.from({ length: DSR_INDEX_MASK + 2 }, (_, i) => `tcp/k${i}:1`);
  assert.equal(assignFwmarks(all).size, DSR_INDEX_MASK);
});

// ------------------------------------------------------------------ the backend with a fake pod side

function service(name: string, ip: string, externalIP: string, annotations = {}): V1Service {
  return {
    metadata: { namespace: "default", name, annotations },
    spec: {
      type: "ClusterIP",
      clusterIP: ip,
      clusterIPs: [ip],
      externalIPs: [externalIP],
      ports: [{ name: "http", port: 80, protocol: "TCP", targetPort: 80 }],
    },
  };
}

function slice(svc: string, eps: { ip: string; node: string }[]): V1EndpointSlice {
  return {
    metadata: { namespace: "default", name: `${svc}-abc`, labels: { "kubernetes.io/service-name": svc } },
    addressType: "IPv4",
    endpoints: eps.map((e) => ({ addresses: [e.ip], conditions: { ready: true }, nodeName: e.node })),
    ports: [{ name: "http", port: 80, protocol: "TCP" }],
  };
}

/** Pods 10.1.1.x that can be entered, except those in `broken`; records what each holds. */
class FakeDsrPods implements DsrPods {
  readonly held = new Map<string, Set<string>>();
  readonly broken = new Set<string>();
  ensure(endpoint: string, vips: readonly string[]): Promise<void> {
    if (this.broken.has(endpoint)) {
      return Promise.reject(
        new DsrPodError(endpoint, "no network namespace behind kube-bridge's veths holds it"),
      );
    }
    const set = this.held.get(endpoint) ?? new Set();
    for (const v of vips) set.add(v);
    this.held.set(endpoint, set);
    return Promise.resolve();
  }
  prune(want: ReadonlyMap<string, ReadonlySet<string>>): Promise<Error[]> {
    for (const [ip, set] of [...this.held]) {
      const keep = want.get(ip);
      if (!keep) this.held.delete(ip);
      else for (const v of [...set]) if (!keep.has(v)) set.delete(v);
    }
    return Promise.resolve([]);
  }
  cleanupAll(): Promise<number> {
    const n = this.held.size;
    this.held.clear();
    return Promise.resolve(n);
  }
}

async function setup() {
  const pods = new FakeDsrPods();
  const s = await ipvsSetup({ flags: ["--service-external-ip-range=203.0.113.0/24"], dsrPods: pods });
  s.source.markSynced();
  /** The addresses on kube-dummy-if, sorted. */
  const dummyVips = async () => (await s.vips()).map((v) => v.split("/")[0]!);
  return { ...s, pods, dummyVips };
}

Deno.test("the IPVS backend serves a DSR Service through a firewall-mark service, policy routing and the local pod's tunnel", async () => {
  const s = await setup();
  s.source.put("services", service("web", "172.16.0.10", "203.0.113.7", DSR));
  s.source.put(
    "endpointslices",
    slice("web", [{ ip: "10.1.1.5", node: "n1" }, { ip: "10.1.2.5", node: "n2" }]),
  );
  await s.sync();
  const fw = (await s.ipvs.services()).filter((x) => x.fwmark !== undefined);
  assert.equal(fw.length, 1);
  const mark = fw[0]!.fwmark!;
  assert.deepEqual(
    (await s.ipvs.destinations({ family: 4, fwmark: mark })).map((d) => `${d.address} ${d.forward}`).sort(),
    ["10.1.1.5 tunnel", "10.1.2.5 tunnel"],
  );
  assert.ok(!(await s.ipvs.services()).some((x) => x.address === "203.0.113.7"));
  assert.deepEqual(await s.dummyVips(), ["172.16.0.10"], "the DSR VIP is on no interface of the node");
  assert.deepEqual([...s.pods.held.entries()].map(([k, v]) => [k, [...v]]), [["10.1.1.5", ["203.0.113.7"]]]);
  const rules = (await s.rtnl.ruleList(4)).filter((r) => r.table === DSR_TABLE);
  assert.equal(rules.length, 1);
  assert.equal(rules[0]!.fwmark, NFT_MARK.dsr);
  assert.equal(rules[0]!.fwmask, NFT_MARK.dsr);
  const routes = await s.rtnl.routeList({ family: 4, table: DSR_TABLE });
  assert.deepEqual(routes.map((r) => `${r.dst} ${r.type}`), [`0.0.0.0/0 ${RouteType.local}`]);
  assert.match(
    s.nft.dump(),
    new RegExp(`203\\.0\\.113\\.7 \\. tcp \\. 80 : 0x${mark.toString(16).padStart(8, "0")}`),
  );

  // The Service goes: the mark service, the rule, the route and the pod's VIP go with it.
  s.source.delete("services", "default/web");
  await s.sync();
  assert.deepEqual(await s.ipvs.services(), []);
  assert.deepEqual((await s.rtnl.ruleList(4)).filter((r) => r.table === DSR_TABLE), []);
  assert.deepEqual(await s.rtnl.routeList({ family: 4, table: DSR_TABLE }), []);
  assert.deepEqual(s.pods.held.size, 0);
  await s.stop();
});

Deno.test("a DSR Service whose local pod cannot be entered is logged by name and served through NAT; another DSR Service keeps DSR", async () => {
  const s = await setup();
  s.pods.broken.add("10.1.1.6");
  s.source.put("services", service("bad", "172.16.0.11", "203.0.113.8", DSR));
  s.source.put("endpointslices", slice("bad", [{ ip: "10.1.1.6", node: "n1" }]));
  s.source.put("services", service("good", "172.16.0.12", "203.0.113.9", DSR));
  s.source.put("endpointslices", slice("good", [{ ip: "10.1.1.5", node: "n1" }]));
  await s.sync();
  const nat = await s.ipvs.getService({ family: 4, protocol: "tcp", address: "203.0.113.8", port: 80 });
  assert.ok(nat, "the fallen-back Service's external IP is an ordinary NAT service");
  assert.deepEqual(
    (await s.ipvs.destinations({ family: 4, protocol: "tcp", address: "203.0.113.8", port: 80 })).map((d) =>
      `${d.address}:${d.port} ${d.forward}`
    ),
    ["10.1.1.6:80 masq"],
  );
  assert.deepEqual(await s.dummyVips(), ["172.16.0.11", "172.16.0.12", "203.0.113.8"]);
  const fw = (await s.ipvs.services()).filter((x) => x.fwmark !== undefined);
  assert.equal(fw.length, 1, "the other DSR Service keeps its firewall-mark service");
  assert.deepEqual([...s.pods.held.keys()], ["10.1.1.5"]);
  const warned = s.sink.lines.filter((l) => l.includes("default/bad"));
  assert.equal(warned.length, 1, warned.join("\n"));
  assert.match(warned[0]!, /direct server return not possible: pod 10\.1\.1\.6: no network namespace/);
  assert.ok(!s.sink.lines.some((l) => l.includes("default/good")), s.sink.lines.join("\n"));

  // The pod becomes reachable: the next sync serves the Service with DSR.
  s.pods.broken.clear();
  s.source.put("services", service("bad", "172.16.0.11", "203.0.113.8", { ...DSR, touched: "1" }));
  await s.sync();
  assert.equal((await s.ipvs.services()).filter((x) => x.fwmark !== undefined).length, 2);
  assert.equal(
    await s.ipvs.getService({ family: 4, protocol: "tcp", address: "203.0.113.8", port: 80 }),
    undefined,
  );
  assert.deepEqual(await s.dummyVips(), ["172.16.0.11", "172.16.0.12"]);
  await s.stop();
});

Deno.test("DSR marks are set in output too (a route chain), and SYNs to and from DSR VIPs are clamped to the tunnel's MSS", () => {
  const v4 = planService(svc({ externalIPs: ["203.0.113.7"], annotations: DSR }, eps), ctx);
  const v6 = planService(
    svc({
      key: "default/web6",
      name: "web6",
      clusterIPs: ["fd00:172::10"],
      externalIPs: ["2001:db8::7"],
      annotations: DSR,
    }, [
      ep("fd00:1::5", { local: true, port: 80 }),
    ]),
    {
      ...ctx,
      families: [4, 6],
      serviceClusterIpRanges: ["172.16.0.0/16", "fd00:172::/112"],
      externalIpRanges: ["203.0.113.0/24", "2001:db8::/64"],
    },
  );
  assert.deepEqual(v6.problems, []);
  const plan = mergePlans([v4, v6]);
  const render = (dsrMtu?: number) =>
    renderIpvsTable(plan, {
      families: [4, 6],
      podCidrs: ["10.1.1.0/24"],
      masqueradeAll: false,
      permitAll: true,
      ...(dsrMtu !== undefined ? { dsrMtu } : {}),
    }).render();
  const lines = (dump: string, chain: string) =>
    dump.split("\n").filter((l) => l.startsWith(`add rule inet kube_router_proxy ${chain} `)).map((l) =>
      l.slice(`add rule inet kube_router_proxy ${chain} `.length)
    );
  const dump = render(1500);
  assert.match(
    dump,
    /add chain inet kube_router_proxy mangle_output \{ type route hook output priority -150; policy accept; \}/,
  );
  assert.match(
    dump,
    /add set inet kube_router_proxy dsr_ports_v4 .*\n(.*\n)*.*dsr_ports_v4 \{ 203\.0\.113\.7 \. tcp \. 80 \}/,
  );
  const clamp = (n: number) =>
    `tcp flags & (syn | rst) == syn tcp option maxseg size > ${n} tcp option maxseg size set ${n}`;
  assert.deepEqual(lines(dump, "mangle_output"), [
    "meta mark set ip daddr . meta l4proto . th dport map @dsr_marks_v4",
    `ip daddr . meta l4proto . th dport @dsr_ports_v4 ${clamp(1440)}`,
    "meta mark set ip6 daddr . meta l4proto . th dport map @dsr_marks_v6",
    `ip6 daddr . meta l4proto . th dport @dsr_ports_v6 ${clamp(1400)}`,
  ]);
  assert.deepEqual(lines(dump, "mangle_prerouting"), [
    "meta mark set ip daddr . meta l4proto . th dport map @dsr_marks_v4",
    `ip daddr . meta l4proto . th dport @dsr_ports_v4 ${clamp(1440)}`,
    `ip saddr . meta l4proto . th sport @dsr_ports_v4 ${clamp(1440)}`,
    "meta mark set ip6 daddr . meta l4proto . th dport map @dsr_marks_v6",
    `ip6 daddr . meta l4proto . th dport @dsr_ports_v6 ${clamp(1400)}`,
    `ip6 saddr . meta l4proto . th sport @dsr_ports_v6 ${clamp(1400)}`,
  ]);
  assert.match(render(9000), /maxseg size set 8940/);
  const unclamped = render();
  assert.doesNotMatch(unclamped, /maxseg/, "no MTU known: no clamp");
  assert.equal(lines(unclamped, "mangle_output").length, 2, "the marks are still set");
  assert.doesNotMatch(render(580), /maxseg/, "no clamp below TCP's default MSS");
});

Deno.test("the IPVS backend clamps DSR's MSS to the MTU of the interface holding the node address, and says once when it has none", async () => {
  const s = await setup();
  s.source.put("services", service("web", "172.16.0.10", "203.0.113.7", DSR));
  s.source.put("endpointslices", slice("web", [{ ip: "10.1.1.5", node: "n1" }]));
  await s.sync();
  assert.doesNotMatch(s.nft.dump(), /maxseg/);
  const warned = () => s.sink.lines.filter((l) => l.includes("DSR TCP MSS not clamped"));
  assert.equal(warned().length, 1, s.sink.lines.join("\n"));
  assert.match(warned()[0]!, /192\.168\.1\.100/);
  s.source.put("services", service("web", "172.16.0.10", "203.0.113.7", { ...DSR, touched: "1" }));
  await s.sync();
  assert.equal(warned().length, 1, "said once");

  await s.rtnl.linkAdd({ kind: "dummy", name: "eth0", mtu: 9000, up: true });
  const eth0 = (await s.rtnl.linkGet("eth0"))!;
  await s.rtnl.addrAdd({ family: 4, index: eth0.index, address: "192.168.1.100", prefix: 24 });
  s.source.put("services", service("web", "172.16.0.10", "203.0.113.7", { ...DSR, touched: "2" }));
  await s.sync();
  assert.match(s.nft.dump(), /tcp option maxseg size set 8940/);
  await s.stop();
});

Deno.test("kube_router_service_* gauges cover a DSR firewall-mark service, labelled with its Service and the VIP:port the mark stands for", async () => {
  const s = await setup();
  const real = s.ipvs.services.bind(s.ipvs);
  s.ipvs.services = async () =>
    (await real()).map((x) => ({
      ...x,
      stats: x.fwmark !== undefined
        ? { ...x.stats!, conns: 5, inPkts: 50, outPkts: 0, inBytes: 5000, outBytes: 0, cps: 1 }
        : x.stats!,
    }));
  s.source.put("services", service("web", "172.16.0.10", "203.0.113.7", DSR));
  s.source.put("endpointslices", slice("web", [{ ip: "10.1.1.5", node: "n1" }]));
  await s.sync();
  const labels =
    'port="80",protocol="tcp",service_name="web",service_vip="203.0.113.7",svc_namespace="default"';
  const text = s.metrics.render();
  assert.match(text, new RegExp(`kube_router_service_total_connections\\{${labels}\\} 5\\n`), text);
  assert.match(text, new RegExp(`kube_router_service_packets_in\\{${labels}\\} 50\\n`));
  assert.match(text, new RegExp(`kube_router_service_packets_out\\{${labels}\\} 0\\n`));
  assert.match(text, /service_vip="172\.16\.0\.10"/, "the cluster IP's NAT service keeps its own series");
  s.source.delete("services", "default/web");
  await s.sync();
  assert.doesNotMatch(s.metrics.render(), /service_vip="203\.0\.113\.7"/, "the series goes with the Service");
  await s.stop();
});
