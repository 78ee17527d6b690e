import assert from "node:assert/strict";
import {
  claimOf,
  diffService,
  elementId,
  PROXY_TABLE,
  type ProxyNodeContext,
  renderBase,
  type RenderedService,
  renderService,
  SharedObjects,
} from "../../../modules/proxy/nft_render.ts";
import type { ServiceInfo } from "../../../core/mod.ts";
import { ep, nodeCtx, svc } from "./_fixtures.ts";
import { FakeNftables, NftTransaction } from "../../../ffi/mod.ts";

const ctx = nodeCtx;

const three = [ep("10.1.1.5", { local: true }), ep("10.1.2.5"), ep("10.1.3.5")];
const el = (m: string, ...k: string[]) => elementId(m, k);

/** The endpoint slots of one map for one key prefix, in slot order. */
function slots(r: RenderedService, map: string, ...prefix: string[]): string[] {
  const out: string[] = [];
  for (let i = 0;; i++) {
    const v = r.elements.get(el(map, ...prefix, String(i)));
    if (v === undefined) return out;
    out.push(v);
  }
}

Deno.test("a cluster IP maps to a shared pick chain and its endpoints to slots of the endpoint map", () => {
  const r = renderService(svc({}, three), ctx);
  assert.equal(r.elements.get(el("service_ips_v4", "172.16.0.10", "tcp", "80")), "goto pick_v4_tcp_rr_3");
  assert.ok(r.elements.has(el("cluster_ips_v4", "172.16.0.10")));
  assert.deepEqual(r.shared.get("pick_v4_tcp_rr_3"), [
    "dnat ip to ip daddr . tcp dport . numgen random mod 3 map @service_endpoints_v4_tcp",
  ]);
  assert.deepEqual(slots(r, "service_endpoints_v4_tcp", "172.16.0.10", "80"), [
    "10.1.1.5 . 8080",
    "10.1.2.5 . 8080",
    "10.1.3.5 . 8080",
  ]);
  // Nothing of its own: no chain, no set.
  assert.equal(r.chains.size, 0);
  assert.equal(r.sets.size, 0);
  assert.equal(r.endpoints, 3);
  assert.deepEqual(r.warnings, []);
  // Nothing for a family the Service has no cluster IP in.
  assert.ok(![...r.elements.keys()].some((k) => k.includes("_v6")));
});

Deno.test("endpoints take slots in address order whatever the slice's order, each once", () => {
  const a = renderService(svc({}, three), ctx);
  const b = renderService(svc({}, [three[2]!, three[0]!, three[1]!, three[0]!]), ctx);
  assert.deepEqual(b.elements, a.elements);
  assert.deepEqual(b.shared, a.shared);
});

Deno.test("a Service without endpoints is rejected, not blackholed, and uses no chain", () => {
  const r = renderService(
    svc({
      type: "NodePort",
      ports: [{ name: "", protocol: "UDP", port: 53, nodePort: 30053, endpoints: [] }],
    }),
    ctx,
  );
  assert.equal(
    r.elements.get(el("no_endpoint_services_v4", "172.16.0.10", "udp", "53")),
    "goto reject_chain",
  );
  assert.equal(r.elements.get(el("no_endpoint_nodeports_v4", "udp", "30053")), "goto reject_chain");
  assert.ok(!r.elements.has(el("service_ips_v4", "172.16.0.10", "udp", "53")));
  assert.equal(r.chains.size + r.shared.size + r.sharedElements.size, 0);
});

Deno.test("not-ready endpoints are skipped and serving terminating ones are used only when none is ready", () => {
  const eps = [
    ep("10.1.1.5", { ready: false, serving: true, terminating: true }),
    ep("10.1.2.5", { ready: false, serving: false }),
  ];
  let r = renderService(svc({}, eps), ctx);
  assert.deepEqual(slots(r, "service_endpoints_v4_tcp", "172.16.0.10", "80"), ["10.1.1.5 . 8080"]);
  r = renderService(svc({}, [...eps, ep("10.1.3.5")]), ctx);
  assert.deepEqual(slots(r, "service_endpoints_v4_tcp", "172.16.0.10", "80"), ["10.1.3.5 . 8080"]);
  assert.equal(r.elements.get(el("service_ips_v4", "172.16.0.10", "tcp", "80")), "goto pick_v4_tcp_rr_1");
});

Deno.test("a NodePort goes through the shared external chain, which masquerades, to the NodePort's slots", () => {
  const r = renderService(
    svc({
      type: "NodePort",
      ports: [{ name: "http", protocol: "TCP", port: 80, nodePort: 30080, endpoints: three }],
    }),
    ctx,
  );
  assert.equal(r.elements.get(el("service_nodeports_v4", "tcp", "30080")), "goto ext_np_v4_tcp_rr_3");
  assert.deepEqual(r.shared.get("ext_np_v4_tcp_rr_3"), [
    "jump mark_for_masquerade",
    "goto pick_np_v4_tcp_rr_3",
  ]);
  assert.deepEqual(r.shared.get("pick_np_v4_tcp_rr_3"), [
    "dnat ip to tcp dport . numgen random mod 3 map @nodeport_endpoints_v4_tcp",
  ]);
  assert.deepEqual(slots(r, "nodeport_endpoints_v4_tcp", "30080"), [
    "10.1.1.5 . 8080",
    "10.1.2.5 . 8080",
    "10.1.3.5 . 8080",
  ]);
});

Deno.test("externalTrafficPolicy Local keeps the source and sends outside traffic to local endpoints only", () => {
  const s = svc({
    type: "NodePort",
    externalTrafficPolicy: "Local",
    ports: [{ name: "http", protocol: "TCP", port: 80, nodePort: 30080, endpoints: three }],
  });
  const r = renderService(s, ctx);
  assert.equal(r.elements.get(el("service_nodeports_v4", "tcp", "30080")), "goto ext_np_local_v4_tcp_rr_3_1");
  assert.deepEqual(r.shared.get("ext_np_local_v4_tcp_rr_3_1"), [
    "ip saddr @pod_cidrs_v4 goto pick_np_v4_tcp_rr_3",
    "fib saddr type local jump mark_for_masquerade",
    "fib saddr type local goto pick_np_v4_tcp_rr_3",
    "goto pick_np_local_v4_tcp_rr_1",
  ]);
  assert.deepEqual(r.shared.get("pick_np_local_v4_tcp_rr_1"), [
    "dnat ip to tcp dport . numgen random mod 1 map @nodeport_local_endpoints_v4_tcp",
  ]);
  assert.deepEqual(slots(r, "nodeport_local_endpoints_v4_tcp", "30080"), ["10.1.1.5 . 8080"]);
  assert.equal(slots(r, "nodeport_endpoints_v4_tcp", "30080").length, 3);
  // Without a local endpoint: outside traffic is dropped (pods and the node still reach the Service).
  const none = renderService({ ...s, ports: [{ ...s.ports[0]!, endpoints: three.slice(1) }] }, ctx);
  assert.equal(none.elements.get(el("no_endpoint_nodeports_v4", "tcp", "30080")), "drop");
  assert.deepEqual(none.shared.get("ext_np_local_v4_tcp_rr_2_0"), [
    "ip saddr @pod_cidrs_v4 goto pick_np_v4_tcp_rr_2",
    "fib saddr type local jump mark_for_masquerade",
    "fib saddr type local goto pick_np_v4_tcp_rr_2",
  ]);
  assert.deepEqual(slots(none, "nodeport_local_endpoints_v4_tcp", "30080"), []);
});

Deno.test("the kube-router.io/service.local annotation means externalTrafficPolicy Local", () => {
  const r = renderService(
    svc({
      type: "NodePort",
      annotations: { "kube-router.io/service.local": "true" },
      ports: [{ name: "http", protocol: "TCP", port: 80, nodePort: 30080, endpoints: three }],
    }),
    ctx,
  );
  assert.ok(r.shared.has("pick_np_local_v4_tcp_rr_1"));
});

Deno.test("internalTrafficPolicy Local sends the cluster IP to local endpoints, and drops when there are none", () => {
  const r = renderService(svc({ internalTrafficPolicy: "Local" }, three), ctx);
  assert.equal(
    r.elements.get(el("service_ips_v4", "172.16.0.10", "tcp", "80")),
    "goto pick_local_v4_tcp_rr_1",
  );
  assert.deepEqual(slots(r, "service_local_endpoints_v4_tcp", "172.16.0.10", "80"), ["10.1.1.5 . 8080"]);
  assert.deepEqual(slots(r, "service_endpoints_v4_tcp", "172.16.0.10", "80"), []);
  assert.deepEqual([...r.shared.keys()], ["pick_local_v4_tcp_rr_1"]);
  const none = renderService(svc({ internalTrafficPolicy: "Local" }, three.slice(1)), ctx);
  assert.equal(none.elements.get(el("no_endpoint_services_v4", "172.16.0.10", "tcp", "80")), "drop");
  assert.equal(none.shared.size + none.chains.size, 0);
});

Deno.test("external IPs are validated against the ranges and never taken from the cluster IP range", () => {
  const s = svc({ externalIPs: ["203.0.113.5", "192.0.2.9", "172.16.0.99", "garbage"] }, three);
  const r = renderService(s, ctx);
  assert.equal(r.elements.get(el("service_ips_v4", "203.0.113.5", "tcp", "80")), "goto ext_v4_tcp_rr_3");
  assert.equal(slots(r, "service_endpoints_v4_tcp", "203.0.113.5", "80").length, 3);
  assert.ok(!r.elements.has(el("service_ips_v4", "192.0.2.9", "tcp", "80")));
  assert.ok(!r.elements.has(el("service_ips_v4", "172.16.0.99", "tcp", "80")));
  assert.equal(r.warnings.length, 3);
  assert.match(r.warnings.join("\n"), /192\.0\.2\.9 is outside/);
  assert.match(r.warnings.join("\n"), /172\.16\.0\.99 lies inside the service cluster IP range/);
  const lax = renderService(s, { ...ctx, strictExternalIpValidation: false });
  assert.ok(lax.elements.has(el("service_ips_v4", "192.0.2.9", "tcp", "80")));
  assert.ok(!lax.elements.has(el("service_ips_v4", "172.16.0.99", "tcp", "80")));
});

Deno.test("LoadBalancer source ranges filter the load balancer IP, not the node port", () => {
  const r = renderService(
    svc({
      type: "LoadBalancer",
      loadBalancerIPs: ["198.51.100.7"],
      loadBalancerSourceRanges: ["203.0.113.0/25", "fd00:9::/64"],
      ports: [{ name: "http", protocol: "TCP", port: 80, nodePort: 30080, endpoints: three }],
    }),
    ctx,
  );
  assert.equal(
    r.elements.get(el("firewall_ips_v4", "198.51.100.7", "tcp", "80")),
    "goto fw4-default/web/tcp/http",
  );
  assert.deepEqual(r.chains.get("fw4-default/web/tcp/http"), ["ip saddr != 203.0.113.0/25 drop"]);
  assert.equal(r.elements.get(el("service_ips_v4", "198.51.100.7", "tcp", "80")), "goto ext_v4_tcp_rr_3");
  assert.ok(![...r.elements.keys()].some((k) => k.startsWith("firewall_ips") && k.includes("30080")));
  // A range holding the node lets the node reach its own LB IP (which it sources from the VIP).
  const withNode = renderService(
    svc({ loadBalancerIPs: ["198.51.100.7"], loadBalancerSourceRanges: ["192.168.1.0/24"] }, three),
    ctx,
  );
  assert.deepEqual(withNode.chains.get("fw4-default/web/tcp/http"), [
    "ip saddr != { 192.168.1.0/24, 198.51.100.7 } drop",
  ]);
});

Deno.test("ClientIP affinity keeps chains of its own: a timeout set per endpoint, checked before the pick", () => {
  const r = renderService(svc({ sessionAffinityTimeoutSeconds: 10800 }, three.slice(0, 2)), ctx);
  const set = "aff-default/web/tcp/http__10.1.1.5/8080";
  assert.deepEqual(r.sets.get(set), {
    name: set,
    type: "ipv4_addr",
    flags: ["dynamic", "timeout"],
    timeout: "10800s",
  });
  assert.equal(
    r.elements.get(el("service_ips_v4", "172.16.0.10", "tcp", "80")),
    "goto svc4-default/web/tcp/http",
  );
  assert.deepEqual(r.chains.get("svc4-default/web/tcp/http"), [
    `ip saddr @${set} goto ep-default/web/tcp/http__10.1.1.5/8080`,
    "ip saddr @aff-default/web/tcp/http__10.1.2.5/8080 goto ep-default/web/tcp/http__10.1.2.5/8080",
    "numgen random mod 2 0 goto ep-default/web/tcp/http__10.1.1.5/8080",
    "goto ep-default/web/tcp/http__10.1.2.5/8080",
  ]);
  assert.deepEqual(r.chains.get("ep-default/web/tcp/http__10.1.1.5/8080"), [
    `update @${set} { ip saddr }`,
    "meta l4proto tcp dnat ip to 10.1.1.5:8080",
  ]);
  assert.equal(r.shared.size, 0);
  // Hairpin is the shared set's business for these Services too.
  assert.deepEqual([...r.sharedElements], [el("hairpin_v4", "10.1.1.5", "10.1.1.5")]);
});

Deno.test("the sh scheduler hashes the source; IPVS-only schedulers fall back to rr and are reported", () => {
  const sh = renderService(svc({ annotations: { "kube-router.io/service.scheduler": "sh" } }, three), ctx);
  assert.equal(sh.elements.get(el("service_ips_v4", "172.16.0.10", "tcp", "80")), "goto pick_v4_tcp_sh_3");
  assert.deepEqual(sh.shared.get("pick_v4_tcp_sh_3"), [
    "dnat ip to ip daddr . tcp dport . jhash ip saddr mod 3 seed 0x0 map @service_endpoints_v4_tcp",
  ]);
  assert.equal(sh.unsupportedScheduler, undefined);
  const lc = renderService(svc({ annotations: { "kube-router.io/service.scheduler": "lc" } }, three), ctx);
  assert.ok(lc.shared.has("pick_v4_tcp_rr_3"));
  assert.equal(lc.unsupportedScheduler, "lc");
});

Deno.test("a pod reaching itself through its Service is always masqueraded (hairpin), as kube-proxy does", () => {
  // Pairs for this node's endpoints only: a pod on another node is DNATed there, never here.
  for (const c of [ctx, { ...ctx, hairpinMode: true }]) {
    const r = renderService(svc({}, [...three, ep("10.1.1.6", { local: true })]), c);
    assert.deepEqual([...r.sharedElements].sort(), [
      el("hairpin_v4", "10.1.1.5", "10.1.1.5"),
      el("hairpin_v4", "10.1.1.6", "10.1.1.6"),
    ]);
  }
});

Deno.test("a dual-stack Service is served in both families with each family's endpoints", () => {
  const r = renderService(
    svc({ clusterIPs: ["172.16.0.10", "fd00:172::10"] }, [...three, ep("fd00:1:1::5", { local: true })]),
    ctx,
  );
  assert.equal(r.elements.get(el("service_ips_v6", "fd00:172::10", "tcp", "80")), "goto pick_v6_tcp_rr_1");
  assert.deepEqual(r.shared.get("pick_v6_tcp_rr_1"), [
    "dnat ip6 to ip6 daddr . tcp dport . numgen random mod 1 map @service_endpoints_v6_tcp",
  ]);
  assert.deepEqual(slots(r, "service_endpoints_v6_tcp", "fd00:172::10", "80"), ["fd00:1:1::5 . 8080"]);
  assert.ok(r.sharedElements.has(el("hairpin_v6", "fd00:1:1::5", "fd00:1:1::5")));
  assert.equal(slots(r, "service_endpoints_v4_tcp", "172.16.0.10", "80").length, 3);
});

Deno.test("topology hints keep endpoints in this node's zone when every endpoint has hints", () => {
  const eps = [
    ep("10.1.1.5", { hintZones: ["zone-a"] }),
    ep("10.1.2.5", { hintZones: ["zone-b"] }),
    ep("10.1.3.5", { hintZones: ["zone-a"] }),
  ];
  const r = renderService(svc({ trafficDistribution: "PreferClose" }, eps), ctx);
  assert.deepEqual(slots(r, "service_endpoints_v4_tcp", "172.16.0.10", "80"), [
    "10.1.1.5 . 8080",
    "10.1.3.5 . 8080",
  ]);
  // One endpoint without hints: hints are ignored.
  const partial = renderService(svc({}, [...eps, ep("10.1.4.5")]), ctx);
  assert.equal(slots(partial, "service_endpoints_v4_tcp", "172.16.0.10", "80").length, 4);
});

Deno.test("UDP and SCTP ports key the dispatch maps by their protocol and have endpoint maps of their own", () => {
  const r = renderService(
    svc({
      ports: [
        { name: "dns", protocol: "UDP", port: 53, endpoints: three },
        { name: "sig", protocol: "SCTP", port: 3868, endpoints: three },
      ],
    }),
    ctx,
  );
  assert.equal(r.elements.get(el("service_ips_v4", "172.16.0.10", "udp", "53")), "goto pick_v4_udp_rr_3");
  assert.equal(r.elements.get(el("service_ips_v4", "172.16.0.10", "sctp", "3868")), "goto pick_v4_sctp_rr_3");
  assert.equal(slots(r, "service_endpoints_v4_udp", "172.16.0.10", "53").length, 3);
  assert.deepEqual(r.shared.get("pick_v4_sctp_rr_3"), [
    "dnat ip to ip daddr . sctp dport . numgen random mod 3 map @service_endpoints_v4_sctp",
  ]);
});

/** A dump's objects in a fixed order (the fake lists them in creation order, which a diff changes). */
function blocks(dump: string): string {
  const groups: string[][] = [];
  for (const line of dump.split("\n")) {
    if (/^\t\S/.test(line)) groups.push([line]);
    else if (line.startsWith("\t\t")) groups.at(-1)!.push(line);
  }
  return groups.map((g) => g.join("\n")).sort().join("\n");
}

async function fakeWith(...build: ((tx: NftTransaction) => void)[]): Promise<FakeNftables> {
  const fake = new FakeNftables();
  for (const b of build) {
    const tx = new NftTransaction("inet", PROXY_TABLE);
    b(tx);
    await fake.run(tx);
  }
  return fake;
}

Deno.test("the base ruleset: NodePorts on the node's IPs (or every local address), masquerading, hairpin, endpoint maps", async () => {
  const dump = (await fakeWith((tx) => renderBase(tx, ctx))).dump();
  assert.match(dump, /ip daddr @nodeport_ips_v4 meta l4proto \. th dport vmap @service_nodeports_v4/);
  assert.match(dump, /set nodeport_ips_v4 \{\n\t\ttype ipv4_addr\n\t\telements = \{ 192\.168\.1\.100 \}/);
  assert.match(dump, /elements = \{ 10\.1\.1\.0\/24,\s+10\.1\.2\.0\/24 \}/);
  assert.match(
    dump,
    /chain nat_prerouting \{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tjump services/,
  );
  assert.match(
    dump,
    /chain services \{\n\t\tip daddr @cluster_ips_v4 ip saddr != @pod_cidrs_v4 jump mark_for_masquerade\n\t\tip daddr \. meta l4proto \. th dport vmap @service_ips_v4/,
  );
  assert.match(
    dump,
    /chain masquerading \{\n\t\tct status dnat ip saddr \. ip daddr @hairpin_v4 jump mark_for_masquerade\n\t\tct status dnat ip6 saddr \. ip6 daddr @hairpin_v6 jump mark_for_masquerade\n\t\tmeta mark & 0x00004000 == 0x00000000 return/,
  );
  assert.match(
    dump,
    /map service_endpoints_v4_tcp \{\n\t\ttypeof ip daddr \. th dport \. numgen random mod 65536 : ip daddr \. tcp dport\n/,
  );
  assert.match(
    dump,
    /map nodeport_local_endpoints_v6_sctp \{\n\t\ttypeof th dport \. numgen random mod 65536 : ip6 daddr \. sctp dport\n/,
  );
  const all = (await fakeWith((tx) => renderBase(tx, { ...ctx, nodePortBindOnAllIp: true }))).dump();
  assert.match(
    all,
    /fib daddr type local ip daddr != 127\.0\.0\.0\/8 meta l4proto \. th dport vmap @service_nodeports_v4/,
  );
  const masqAll = (await fakeWith((tx) => renderBase(tx, { ...ctx, masqueradeAll: true }))).dump();
  assert.match(masqAll, /chain services \{\n\t\tip daddr @cluster_ips_v4 jump mark_for_masquerade\n/);
  // The base ruleset can be applied again over itself (every sync does).
  await fakeWith((tx) => renderBase(tx, ctx), (tx) => renderBase(tx, ctx));
});

Deno.test("an endpoint change is element changes only: its slots, and the dispatch verdict when the count changes", () => {
  const before = renderService(svc({}, three), ctx);
  const after = renderService(svc({}, three.slice(0, 2)), ctx);
  const shared = new SharedObjects();
  shared.commit(undefined, before);
  // Another Service already uses the 2-endpoint pick chain: nothing to create.
  const other = renderService(
    svc({ key: "default/other", name: "other", clusterIPs: ["172.16.0.11"] }, three.slice(0, 2)),
    ctx,
  );
  shared.commit(undefined, other);
  const tx = new NftTransaction("inet", PROXY_TABLE);
  assert.deepEqual(diffService(tx, before, after, { shared }), []);
  const lines = tx.render().trim().split("\n");
  assert.ok(lines.every((l) => /^(add|delete) element /.test(l)), lines.join("\n"));
  assert.ok(lines.some((l) => l.includes("service_ips_v4") && l.includes("goto pick_v4_tcp_rr_2")));
  // Replacing one endpoint (on another node) by another: its slot, nothing else.
  const swapped = renderService(svc({}, [three[0]!, three[1]!, ep("10.1.3.6")]), ctx);
  const tx2 = new NftTransaction("inet", PROXY_TABLE);
  diffService(tx2, before, swapped, { shared });
  assert.deepEqual(tx2.render().trim().split("\n").sort(), [
    "add element inet kube_router_proxy service_endpoints_v4_tcp { 172.16.0.10 . 80 . 2 : 10.1.3.6 . 8080 }",
    "delete element inet kube_router_proxy service_endpoints_v4_tcp { 172.16.0.10 . 80 . 2 }",
  ]);
  // This node's endpoint replaced: the new one's hairpin pair added; 10.1.1.5's stays, "other" has it too.
  const local = renderService(svc({}, [ep("10.1.1.4", { local: true }), three[1]!, three[2]!]), ctx);
  const tx3 = new NftTransaction("inet", PROXY_TABLE);
  diffService(tx3, before, local, { shared });
  assert.match(
    tx3.render(),
    /add element inet kube_router_proxy hairpin_v4 \{ 10\.1\.1\.4 \. 10\.1\.1\.4 \}/,
  );
  assert.doesNotMatch(tx3.render(), /delete element inet kube_router_proxy hairpin_v4/);
  const same = new NftTransaction("inet", PROXY_TABLE);
  assert.deepEqual(diffService(same, after, after, { shared }), []);
  assert.equal(same.size, 0);
});

Deno.test("shared chains and elements are created with their first user and go with their last", () => {
  const shared = new SharedObjects();
  const a = renderService(svc({}, three), ctx);
  const b = renderService(svc({ key: "default/b", name: "b", clusterIPs: ["172.16.0.11"] }, three), ctx);
  // Both new in one transaction: the chain and each hairpin pair written once.
  const tx = new NftTransaction("inet", PROXY_TABLE);
  diffService(tx, undefined, a, { shared });
  diffService(tx, undefined, b, { shared });
  const text = tx.render();
  assert.equal(text.match(/add chain inet kube_router_proxy pick_v4_tcp_rr_3\n/g)?.length, 1);
  assert.equal(text.match(/10\.1\.1\.5 \. 10\.1\.1\.5/g)?.length, 1);
  assert.deepEqual(shared.commit(undefined, a), []);
  assert.deepEqual(shared.commit(undefined, b), []);
  // a goes: b still uses everything.
  const tx2 = new NftTransaction("inet", PROXY_TABLE);
  diffService(tx2, a, undefined, { shared });
  assert.ok(!tx2.render().includes("hairpin"));
  assert.deepEqual(shared.commit(a, undefined), []);
  // b goes: the chain is unused (the caller deletes it later), the hairpin pair is deleted at once.
  const tx3 = new NftTransaction("inet", PROXY_TABLE);
  diffService(tx3, b, undefined, { shared });
  assert.match(
    tx3.render(),
    /delete element inet kube_router_proxy hairpin_v4 \{ 10\.1\.1\.5 \. 10\.1\.1\.5 \}/,
  );
  assert.deepEqual(shared.commit(b, undefined), ["pick_v4_tcp_rr_3"]);
  assert.equal(shared.chains.size + shared.elements.size, 0);
});

/** A tiny deterministic random generator (the checks below must fail the same way every run). */
function rng(seed: number): () => number {
  let x = seed >>> 0;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

const states: ServiceInfo[] = [
  svc({}, three),
  svc({}, three.slice(1)),
  svc({ sessionAffinityTimeoutSeconds: 60 }, three.slice(1)),
  svc({
    type: "NodePort",
    ports: [{ name: "http", protocol: "TCP", port: 80, nodePort: 30080, endpoints: three }],
  }),
  svc({
    type: "LoadBalancer",
    externalTrafficPolicy: "Local",
    loadBalancerIPs: ["198.51.100.7"],
    loadBalancerSourceRanges: ["203.0.113.0/24"],
    ports: [{ name: "http", protocol: "TCP", port: 80, nodePort: 30081, endpoints: three.slice(0, 1) }],
  }),
  svc({ internalTrafficPolicy: "Local", annotations: { "kube-router.io/service.scheduler": "sh" } }, three),
  svc({ clusterIPs: ["172.16.0.10", "fd00:172::10"] }, [...three, ep("fd00:1:1::5", { local: true })]),
  svc({ ports: [{ name: "dns", protocol: "UDP", port: 53, endpoints: three.slice(0, 2) }] }, []),
  svc({}, []),
];

Deno.test("a rendered Service files every element it owns under the claim claimOf names, and nothing else", () => {
  for (const [i, st] of [...states, nth(3, states[4]!)].entries()) {
    for (const counters of [false, true]) {
      const r = renderService(st, { ...ctx, serviceCounters: counters });
      const byClaim = new Map<string, string[]>();
      for (const id of r.elements.keys()) byClaim.set(claimOf(id), [...byClaim.get(claimOf(id)) ?? [], id]);
      const sorted = (m: Map<string, string[]>) => [...m].map(([c, ids]) => [c, [...ids].sort()]).sort();
      assert.deepEqual(sorted(r.claims), sorted(byClaim), `state ${i}, counters ${counters}`);
      if (counters && st.ports.length) {
        assert.ok([...r.elements.keys()].some((id) => id.startsWith("service_stats_in")));
      }
    }
  }
});

/** Service `i` of a world: state `s` under its own name and cluster IP (the states' endpoints are shared). */
function nth(i: number, s: ServiceInfo): ServiceInfo {
  const cips = s.clusterIPs.map((ip) => ip.replace(/10$/, String(10 + i)));
  const ports = s.ports.map((p) => (p.nodePort ? { ...p, nodePort: p.nodePort + 100 * i } : p));
  const lbs = s.loadBalancerIPs.map((ip) => ip.replace(/7$/, String(7 + i)));
  return { ...s, key: `default/s${i}`, name: `s${i}`, clusterIPs: cips, loadBalancerIPs: lbs, ports };
}

/** The caller's deletion of unused chains: all flushed first, as one may go to another. */
function deletion(chains: readonly string[]): NftTransaction {
  const tx = new NftTransaction("inet", PROXY_TABLE);
  for (const name of chains) tx.add({ chain: { name } }).flush({ chain: { name } });
  for (const name of chains) tx.delete({ chain: { name } });
  return tx;
}

async function freshOf(
  world: (RenderedService | undefined)[],
  c: ProxyNodeContext = ctx,
): Promise<FakeNftables> {
  const shared = new SharedObjects();
  return await fakeWith((tx) => renderBase(tx, c), (tx) => {
    for (const r of world) {
      if (!r) continue;
      diffService(tx, undefined, r, { shared });
      shared.commit(undefined, r);
    }
  });
}

/** The node as the tests above have it, and with the per-Service counters on (their elements diffed too). */
const contexts: ProxyNodeContext[] = [ctx, { ...ctx, serviceCounters: true }];

Deno.test("applying diffs leaves the same ruleset as rendering the new state from scratch, state to state", async () => {
  for (const c of contexts) {
    for (const [i, a] of states.entries()) {
      for (const [j, b] of states.entries()) {
        if (i === j) continue;
        const ra = renderService(a, c), rb = renderService(b, c);
        const shared = new SharedObjects();
        let stale: string[] = [];
        const fake = await fakeWith(
          (tx) => renderBase(tx, c),
          (tx) => diffService(tx, undefined, ra, { shared }),
          (tx) => {
            shared.commit(undefined, ra);
            stale = diffService(tx, ra, rb, { shared });
          },
        );
        stale.push(...shared.commit(ra, rb));
        await fake.run(deletion(stale));
        assert.equal(blocks(fake.dump()), blocks((await freshOf([rb], c)).dump()), `state ${i} -> ${j}`);
      }
    }
  }
});

Deno.test("random changes to several Services in shared transactions end as a fresh render of the end state", async () => {
  const next = rng(20261207);
  for (let round = 0; round < 12; round++) {
    // Every other round with the per-Service counters on.
    const c = contexts[round % 2]!;
    const n = 4;
    const world: (RenderedService | undefined)[] = Array.from({ length: n }, () => undefined);
    const shared = new SharedObjects();
    const fake = await fakeWith((tx) => renderBase(tx, c));
    for (let step = 0; step < 8; step++) {
      // One transaction changes a random subset of the Services (some deleted, some re-rendered).
      const tx = new NftTransaction("inet", PROXY_TABLE);
      const changes: [number, RenderedService | undefined][] = [];
      for (let i = 0; i < n; i++) {
        if (next() < 0.5) continue;
        const pick = Math.floor(next() * (states.length + 1));
        const r = pick === states.length ? undefined : renderService(nth(i, states[pick]!), c);
        changes.push([i, r]);
      }
      const stale: string[] = [];
      for (const [i, r] of changes) stale.push(...diffService(tx, world[i], r, { shared }));
      await fake.run(tx);
      for (const [i, r] of changes) {
        stale.push(...shared.commit(world[i], r));
        world[i] = r;
      }
      // The caller's later deletion of what no Service uses any more.
      const still = new Set([...shared.chains, ...world.flatMap((r) => [...r?.chains.keys() ?? []])]);
      await fake.run(deletion([...new Set(stale)].filter((c) => !still.has(c))));
      assert.equal(
        blocks(fake.dump()),
        blocks((await freshOf(world, c)).dump()),
        `round ${round} step ${step}`,
      );
    }
  }
});
