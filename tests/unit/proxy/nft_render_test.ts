import assert from "node:assert/strict";
import {
  diffService,
  elementId,
  PROXY_TABLE,
  renderBase,
  renderService,
} from "../../../modules/proxy/nft_render.ts";
import type { ServiceInfo } from "../../../core/mod.ts";
import { ep, nodeCtx, svc } from "./_fixtures.ts";
import { FakeNftables, NftTransaction } from "../../../ffi/mod.ts";

const ctx = nodeCtx;

/** How many endpoints a policy chain picks among. */
function picks(rules: readonly string[]): number {
  return rules.filter((r) => / goto ep-|^goto ep-/.test(r) && !r.includes("saddr @aff-")).length;
}

const three = [ep("10.1.1.5", { local: true }), ep("10.1.2.5"), ep("10.1.3.5")];
const el = (m: string, ...k: string[]) => elementId(m, k);

Deno.test("a cluster IP maps to one chain that picks among every ready endpoint in turn", () => {
  const r = renderService(svc({}, three), ctx);
  assert.equal(
    r.elements.get(el("service_ips_v4", "172.16.0.10", "tcp", "80")),
    "goto svc4-default/web/tcp/http",
  );
  assert.ok(r.elements.has(el("cluster_ips_v4", "172.16.0.10")));
  assert.deepEqual(r.chains.get("svc4-default/web/tcp/http"), [
    "ip daddr 172.16.0.10 th dport 80 ip saddr != @pod_cidrs_v4 jump mark_for_masquerade",
    "numgen inc mod 3 0 goto ep-default/web/tcp/http__10.1.1.5/8080",
    "numgen inc mod 2 0 goto ep-default/web/tcp/http__10.1.2.5/8080",
    "goto ep-default/web/tcp/http__10.1.3.5/8080",
  ]);
  assert.deepEqual(r.chains.get("ep-default/web/tcp/http__10.1.2.5/8080"), [
    "ip saddr 10.1.2.5 jump mark_for_masquerade",
    "meta l4proto tcp dnat ip to 10.1.2.5:8080",
  ]);
  assert.equal(r.endpoints, 3);
  assert.deepEqual(r.warnings, []);
  // Nothing for a family the Service has no cluster IP in.
  assert.ok(![...r.elements.keys()].some((k) => k.includes("_v6")));
});

Deno.test("a Service without endpoints is rejected, not blackholed, and gets no chains", () => {
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
  assert.equal(r.chains.size, 0);
});

Deno.test("not-ready endpoints are skipped and serving terminating ones are used only when none is ready", () => {
  const eps = [
    ep("10.1.1.5", { ready: false, serving: true, terminating: true }),
    ep("10.1.2.5", { ready: false, serving: false }),
  ];
  let r = renderService(svc({}, eps), ctx);
  assert.deepEqual([...r.chains.keys()].filter((c) => c.startsWith("ep-")), [
    "ep-default/web/tcp/http__10.1.1.5/8080",
  ]);
  r = renderService(svc({}, [...eps, ep("10.1.3.5")]), ctx);
  assert.deepEqual([...r.chains.keys()].filter((c) => c.startsWith("ep-")), [
    "ep-default/web/tcp/http__10.1.3.5/8080",
  ]);
});

Deno.test("a NodePort goes through the external chain, which masquerades", () => {
  const r = renderService(
    svc({
      type: "NodePort",
      ports: [{ name: "http", protocol: "TCP", port: 80, nodePort: 30080, endpoints: three }],
    }),
    ctx,
  );
  assert.equal(r.elements.get(el("service_nodeports_v4", "tcp", "30080")), "goto ext4-default/web/tcp/http");
  assert.deepEqual(r.chains.get("ext4-default/web/tcp/http"), [
    "jump mark_for_masquerade",
    "goto svc4-default/web/tcp/http",
  ]);
});

Deno.test("externalTrafficPolicy Local keeps the source and sends outside traffic to local endpoints only", () => {
  const s = svc({
    type: "NodePort",
    externalTrafficPolicy: "Local",
    ports: [{ name: "http", protocol: "TCP", port: 80, nodePort: 30080, endpoints: three }],
  });
  const r = renderService(s, ctx);
  assert.deepEqual(r.chains.get("ext4-default/web/tcp/http"), [
    "ip saddr @pod_cidrs_v4 goto svc4-default/web/tcp/http",
    "fib saddr type local jump mark_for_masquerade",
    "fib saddr type local goto svc4-default/web/tcp/http",
    "goto local4-default/web/tcp/http",
  ]);
  assert.deepEqual(r.chains.get("local4-default/web/tcp/http"), [
    "goto ep-default/web/tcp/http__10.1.1.5/8080",
  ]);
  // Without a local endpoint: outside traffic is dropped (pods and the node still reach the Service).
  const none = renderService({ ...s, ports: [{ ...s.ports[0]!, endpoints: three.slice(1) }] }, ctx);
  assert.equal(none.elements.get(el("no_endpoint_nodeports_v4", "tcp", "30080")), "drop");
  assert.ok(!none.chains.has("local4-default/web/tcp/http"));
  assert.equal(
    none.chains.get("ext4-default/web/tcp/http")!.at(-1),
    "fib saddr type local goto svc4-default/web/tcp/http",
  );
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
  assert.ok(r.chains.has("local4-default/web/tcp/http"));
});

Deno.test("internalTrafficPolicy Local sends the cluster IP to local endpoints, and drops when there are none", () => {
  const r = renderService(svc({ internalTrafficPolicy: "Local" }, three), ctx);
  assert.equal(
    r.elements.get(el("service_ips_v4", "172.16.0.10", "tcp", "80")),
    "goto local4-default/web/tcp/http",
  );
  assert.ok(!r.chains.has("svc4-default/web/tcp/http"));
  const none = renderService(svc({ internalTrafficPolicy: "Local" }, three.slice(1)), ctx);
  assert.equal(none.elements.get(el("no_endpoint_services_v4", "172.16.0.10", "tcp", "80")), "drop");
  assert.equal(none.chains.size, 0);
});

Deno.test("external IPs are validated against the ranges and never taken from the cluster IP range", () => {
  const s = svc({ externalIPs: ["203.0.113.5", "192.0.2.9", "172.16.0.99", "garbage"] }, three);
  const r = renderService(s, ctx);
  assert.equal(
    r.elements.get(el("service_ips_v4", "203.0.113.5", "tcp", "80")),
    "goto ext4-default/web/tcp/http",
  );
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
  assert.equal(
    r.elements.get(el("service_ips_v4", "198.51.100.7", "tcp", "80")),
    "goto ext4-default/web/tcp/http",
  );
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

Deno.test("ClientIP affinity: a timeout set per endpoint, checked before the pick and updated on the way", () => {
  const r = renderService(svc({ sessionAffinityTimeoutSeconds: 10800 }, three.slice(0, 2)), ctx);
  const set = "aff-default/web/tcp/http__10.1.1.5/8080";
  assert.deepEqual(r.sets.get(set), {
    name: set,
    type: "ipv4_addr",
    flags: ["dynamic", "timeout"],
    timeout: "10800s",
  });
  assert.deepEqual(r.chains.get("svc4-default/web/tcp/http")!.slice(1, 3), [
    `ip saddr @${set} goto ep-default/web/tcp/http__10.1.1.5/8080`,
    "ip saddr @aff-default/web/tcp/http__10.1.2.5/8080 goto ep-default/web/tcp/http__10.1.2.5/8080",
  ]);
  assert.deepEqual(r.chains.get("ep-default/web/tcp/http__10.1.1.5/8080"), [
    "ip saddr 10.1.1.5 jump mark_for_masquerade",
    `update @${set} { ip saddr }`,
    "meta l4proto tcp dnat ip to 10.1.1.5:8080",
  ]);
});

Deno.test("the sh scheduler hashes the source; IPVS-only schedulers fall back to rr and are reported", () => {
  const sh = renderService(svc({ annotations: { "kube-router.io/service.scheduler": "sh" } }, three), ctx);
  assert.deepEqual(sh.chains.get("svc4-default/web/tcp/http")!.slice(1), [
    "jhash ip saddr mod 3 seed 0x0 0 goto ep-default/web/tcp/http__10.1.1.5/8080",
    "jhash ip saddr mod 3 seed 0x0 1 goto ep-default/web/tcp/http__10.1.2.5/8080",
    "goto ep-default/web/tcp/http__10.1.3.5/8080",
  ]);
  assert.equal(sh.unsupportedScheduler, undefined);
  const lc = renderService(svc({ annotations: { "kube-router.io/service.scheduler": "lc" } }, three), ctx);
  assert.match(lc.chains.get("svc4-default/web/tcp/http")![1]!, /^numgen inc mod 3 0 goto/);
  assert.equal(lc.unsupportedScheduler, "lc");
});

Deno.test("a pod reaching itself through its Service is always masqueraded (hairpin), as kube-proxy does", () => {
  const rule = "ip saddr 10.1.2.5 jump mark_for_masquerade";
  for (const c of [ctx, { ...ctx, hairpinMode: true }]) {
    const r = renderService(svc({}, three), c);
    assert.equal(r.chains.get("ep-default/web/tcp/http__10.1.2.5/8080")![0], rule);
  }
});

Deno.test("--masquerade-all masquerades every source to the cluster IP", () => {
  const r = renderService(svc({}, three), { ...ctx, masqueradeAll: true });
  assert.equal(
    r.chains.get("svc4-default/web/tcp/http")![0],
    "ip daddr 172.16.0.10 th dport 80 jump mark_for_masquerade",
  );
});

Deno.test("a dual-stack Service is served in both families with each family's endpoints", () => {
  const r = renderService(
    svc({ clusterIPs: ["172.16.0.10", "fd00:172::10"] }, [...three, ep("fd00:1:1::5", { local: true })]),
    ctx,
  );
  assert.equal(
    r.elements.get(el("service_ips_v6", "fd00:172::10", "tcp", "80")),
    "goto svc6-default/web/tcp/http",
  );
  assert.deepEqual(r.chains.get("ep-default/web/tcp/http__fd00.1.1..5/8080"), [
    "ip6 saddr fd00:1:1::5 jump mark_for_masquerade",
    "meta l4proto tcp dnat ip6 to [fd00:1:1::5]:8080",
  ]);
  assert.equal(picks(r.chains.get("svc6-default/web/tcp/http")!), 1);
  assert.equal(picks(r.chains.get("svc4-default/web/tcp/http")!), 3);
});

Deno.test("topology hints keep endpoints in this node's zone when every endpoint has hints", () => {
  const eps = [
    ep("10.1.1.5", { hintZones: ["zone-a"] }),
    ep("10.1.2.5", { hintZones: ["zone-b"] }),
    ep("10.1.3.5", { hintZones: ["zone-a"] }),
  ];
  const r = renderService(svc({ trafficDistribution: "PreferClose" }, eps), ctx);
  assert.equal(picks(r.chains.get("svc4-default/web/tcp/http")!), 2);
  assert.ok(!r.chains.has("ep-default/web/tcp/http__10.1.2.5/8080"));
  // One endpoint without hints: hints are ignored.
  const partial = renderService(svc({}, [...eps, ep("10.1.4.5")]), ctx);
  assert.equal(picks(partial.chains.get("svc4-default/web/tcp/http")!), 4);
});

Deno.test("UDP and SCTP ports key the maps by their protocol", () => {
  const r = renderService(
    svc({
      ports: [
        { name: "dns", protocol: "UDP", port: 53, endpoints: three },
        { name: "sig", protocol: "SCTP", port: 3868, endpoints: three },
      ],
    }),
    ctx,
  );
  assert.ok(r.elements.has(el("service_ips_v4", "172.16.0.10", "udp", "53")));
  assert.ok(r.elements.has(el("service_ips_v4", "172.16.0.10", "sctp", "3868")));
  assert.deepEqual(
    r.chains.get("ep-default/web/sctp/sig__10.1.1.5/8080")!.at(-1),
    "meta l4proto sctp dnat ip to 10.1.1.5:8080",
  );
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

Deno.test("the base ruleset serves NodePorts on the node's IPs, or on every local address with --nodeport-bindon-all-ip", async () => {
  const dump = (await fakeWith((tx) => renderBase(tx, ctx))).dump();
  assert.match(dump, /ip daddr @nodeport_ips_v4 meta l4proto \. th dport vmap @service_nodeports_v4/);
  assert.match(dump, /set nodeport_ips_v4 \{\n\t\ttype ipv4_addr\n\t\telements = \{ 192\.168\.1\.100 \}/);
  assert.match(dump, /elements = \{ 10\.1\.1\.0\/24,\s+10\.1\.2\.0\/24 \}/);
  assert.match(
    dump,
    /chain nat_prerouting \{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tjump services/,
  );
  assert.match(dump, /chain masquerading \{\n\t\tmeta mark & 0x00004000 == 0x00000000 return/);
  const all = (await fakeWith((tx) => renderBase(tx, { ...ctx, nodePortBindOnAllIp: true }))).dump();
  assert.match(
    all,
    /fib daddr type local ip daddr != 127\.0\.0\.0\/8 meta l4proto \. th dport vmap @service_nodeports_v4/,
  );
  // The base ruleset can be applied again over itself (every sync does).
  await fakeWith((tx) => renderBase(tx, ctx), (tx) => renderBase(tx, ctx));
});

Deno.test("a diff rewrites only what changed and deletes a changed element before adding it back", () => {
  const before = renderService(svc({}, three), ctx);
  const after = renderService(svc({}, three.slice(0, 2)), ctx);
  const tx = new NftTransaction("inet", PROXY_TABLE);
  const stale = diffService(tx, before, after);
  assert.deepEqual(stale, ["ep-default/web/tcp/http__10.1.3.5/8080"]);
  const lines = tx.render().trim().split("\n");
  assert.ok(lines.some((l) => l.startsWith("flush chain") && l.includes("svc4-default/web/tcp/http")));
  assert.ok(!lines.some((l) => l.includes("element")), "the map entry did not change");
  assert.ok(!lines.some((l) => l.includes("ep-default/web/tcp/http__10.1.1.5/8080 ")));

  const none = renderService(svc({}, []), ctx);
  const tx2 = new NftTransaction("inet", PROXY_TABLE);
  diffService(tx2, after, none);
  const ops = tx2.operations.map((o) => `${o.verb} ${"element" in o.object ? o.object.element.set : ""}`);
  const del = ops.indexOf("delete service_ips_v4");
  const add = ops.indexOf("add no_endpoint_services_v4");
  assert.ok(del >= 0 && add > del, ops.join("\n"));
  const same = new NftTransaction("inet", PROXY_TABLE);
  assert.deepEqual(diffService(same, after, after), []);
  assert.equal(same.size, 0);
});

Deno.test("applying a diff leaves the same ruleset as rendering the new state from scratch", async () => {
  const states: ServiceInfo[] = [
    svc({}, three),
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
    svc({ clusterIPs: ["172.16.0.10", "fd00:172::10"] }, [...three, ep("fd00:1:1::5", { local: true })]),
    svc({}, []),
  ];
  for (const [i, a] of states.entries()) {
    for (const [j, b] of states.entries()) {
      if (i === j) continue;
      const ra = renderService(a, ctx), rb = renderService(b, ctx);
      let stale: string[] = [];
      const fake = await fakeWith(
        (tx) => renderBase(tx, ctx),
        (tx) => diffService(tx, undefined, ra),
        (tx) => {
          stale = diffService(tx, ra, rb);
        },
      );
      await fake.run(new NftTransaction("inet", PROXY_TABLE).add({ table: {} }));
      const cleanup = new NftTransaction("inet", PROXY_TABLE);
      for (const c of stale) cleanup.delete({ chain: { name: c } });
      await fake.run(cleanup);
      const fresh = await fakeWith((tx) => renderBase(tx, ctx), (tx) => diffService(tx, undefined, rb));
      assert.equal(blocks(fake.dump()), blocks(fresh.dump()), `state ${i} -> ${j}`);
    }
  }
});
