import assert from "node:assert/strict";
import type { V1EndpointSlice, V1Node, V1Service } from "@kubernetes/client-node";
import { type ConntrackEntry, NftTransaction } from "../../../ffi/mod.ts";
import { PROXY_TABLE, removeProxyTable } from "../../../modules/proxy/mod.ts";
import { proxySetup, TestNft } from "./_nft_setup.ts";

const node: V1Node = {
  metadata: { name: "n1", labels: { "topology.kubernetes.io/zone": "zone-a" } },
  spec: { podCIDR: "10.1.1.0/24", podCIDRs: ["10.1.1.0/24"] },
  status: { addresses: [{ type: "InternalIP", address: "192.168.1.100" }] },
};

function service(name: string, spec: V1Service["spec"] = {}): V1Service {
  return {
    metadata: { namespace: "default", name },
    spec: {
      type: "ClusterIP",
      clusterIP: `172.16.0.${10 + name.length}`,
      clusterIPs: [`172.16.0.${10 + name.length}`],
      ports: [{ name: "http", port: 80, protocol: "TCP", targetPort: 8080 }],
      ...spec,
    },
  };
}

function slice(svc: string, ips: string[], opts: { protocol?: string; node?: string; name?: string } = {}) {
  return {
    metadata: {
      namespace: "default",
      name: opts.name ?? `${svc}-abc`,
      labels: { "kubernetes.io/service-name": svc },
    },
    addressType: "IPv4",
    endpoints: ips.map((ip) => ({
      addresses: [ip],
      conditions: { ready: true },
      nodeName: opts.node ?? "n2",
    })),
    ports: [{ name: "http", port: 8080, protocol: opts.protocol ?? "TCP" }],
  } as V1EndpointSlice;
}

function setup(flags: string[] = [], entries: ConntrackEntry[] = []) {
  return proxySetup({ flags, conntrack: entries, probeMs: 2000, node });
}

Deno.test("the proxy does not sync before the initial lists, then programs every Service", async () => {
  const s = await setup();
  s.source.put("services", service("web"));
  s.source.put("endpointslices", slice("web", ["10.1.2.5", "10.1.3.5"]));
  await s.clock.advance(5000);
  assert.equal(s.nft.runs, 0);
  s.source.markSynced();
  await s.sync();
  const dump = s.nft.fake.dump();
  assert.match(dump, /172\.16\.0\.13 \. tcp \. 80 : goto pick_v4_tcp_rr_2/);
  assert.match(
    dump,
    /chain pick_v4_tcp_rr_2 \{\n\t\tdnat ip to ip daddr \. tcp dport \. numgen random mod 2 map @service_endpoints_v4_tcp\n/,
  );
  assert.match(
    dump,
    /172\.16\.0\.13 \. 80 \. 0 : 10\.1\.2\.5 \. 8080,\s+172\.16\.0\.13 \. 80 \. 1 : 10\.1\.3\.5 \. 8080/,
  );
  assert.equal(s.proxy.programmed.get("default/web")?.endpoints, 2);
  await s.proxy.stop();
  await s.t.stop();
});

Deno.test("an EndpointSlice change rewrites only its Service", async () => {
  const s = await setup();
  s.source.put("services", service("web"));
  s.source.put("services", service("apis"));
  s.source.put("endpointslices", slice("web", ["10.1.2.5"]));
  s.source.put("endpointslices", slice("apis", ["10.1.2.6"]));
  s.source.markSynced();
  await s.sync();
  const apisBefore = s.proxy.programmed.get("default/apis");
  s.source.put("endpointslices", slice("web", ["10.1.2.5", "10.1.3.5"]));
  await s.sync();
  assert.equal(s.proxy.programmed.get("default/apis"), apisBefore, "the other Service was not re-rendered");
  assert.match(s.nft.fake.dump(), /172\.16\.0\.13 \. 80 \. 1 : 10\.1\.3\.5 \. 8080/);
  assert.match(s.nft.fake.dump(), /172\.16\.0\.13 \. tcp \. 80 : goto pick_v4_tcp_rr_2/);
  // apis still uses the 1-endpoint pick chain; when web leaves the 2-endpoint one, it goes a second later.
  s.source.put("endpointslices", slice("web", ["10.1.3.5"]));
  const runs = s.nft.runs;
  await s.sync();
  assert.equal(s.nft.runs, runs + 1, "one transaction");
  assert.match(s.nft.fake.dump(), /chain pick_v4_tcp_rr_2 \{/);
  await s.clock.advance(3000);
  assert.doesNotMatch(s.nft.fake.dump(), /pick_v4_tcp_rr_2|10\.1\.2\.5/);
  assert.match(s.nft.fake.dump(), /172\.16\.0\.13 \. 80 \. 0 : 10\.1\.3\.5 \. 8080/);
  assert.match(s.nft.fake.dump(), /172\.16\.0\.13 \. tcp \. 80 : goto pick_v4_tcp_rr_1/);
  await s.proxy.stop();
  await s.t.stop();
});

Deno.test("a deleted Service leaves nothing behind and answers with a reject while it has no endpoints", async () => {
  const s = await setup();
  s.source.put("services", service("web"));
  s.source.markSynced();
  await s.sync();
  assert.match(s.nft.fake.dump(), /172\.16\.0\.13 \. tcp \. 80 : goto reject_chain/);
  s.source.delete("services", "default/web");
  await s.sync();
  await s.clock.advance(3000);
  const dump = s.nft.fake.dump();
  assert.doesNotMatch(dump, /172\.16\.0\.13/);
  assert.doesNotMatch(dump, /default\/web/);
  await s.proxy.stop();
  await s.t.stop();
});

Deno.test("the periodic full resync puts back an element and a rule deleted by hand", async () => {
  const s = await setup();
  s.source.put("services", service("web"));
  s.source.put("endpointslices", slice("web", ["10.1.2.5"]));
  s.source.markSynced();
  await s.sync();
  const good = s.nft.fake.dump();
  const tx = new NftTransaction("inet", PROXY_TABLE);
  tx.delete({ element: { set: "service_ips_v4", key: ["172.16.0.13", "tcp", "80"] } });
  tx.delete({ element: { set: "service_endpoints_v4_tcp", key: ["172.16.0.13", "80", "0"] } });
  tx.add({
    element: { set: "service_endpoints_v4_tcp", key: ["172.16.0.13", "80", "1"], value: ["10.9.9.9", "80"] },
  });
  tx.add({ element: { set: "hairpin_v4", key: ["10.1.2.5", "10.1.2.5"] } });
  tx.flush({ chain: { name: "pick_v4_tcp_rr_1" } });
  tx.add({ element: { set: "service_ips_v4", key: ["172.16.0.99", "tcp", "80"], value: ["drop"] } });
  tx.add({ chain: { name: "pick_v4_tcp_rr_7" } });
  tx.add({ chain: { name: "svc4-default/gone/tcp/http" } });
  await s.nft.fake.run(tx);
  const before = s.t.syncs.ok;
  await s.clock.advance(300_000);
  await s.clock.advance(3000);
  assert.ok(s.t.syncs.ok > before);
  assert.equal(s.nft.fake.dump(), good);
  await s.proxy.stop();
  await s.t.stop();
});

Deno.test("a table deleted by hand is rewritten as soon as the probe notices", async () => {
  const s = await setup();
  s.source.put("services", service("web"));
  s.source.put("endpointslices", slice("web", ["10.1.2.5"]));
  s.source.markSynced();
  await s.sync();
  const good = s.nft.fake.dump();
  await removeProxyTable(s.nft);
  assert.equal(s.nft.fake.dump().trim(), "");
  const before = s.t.syncs.ok;
  await s.clock.advance(2500);
  assert.equal(s.t.syncs.ok, before + 1);
  assert.equal(s.nft.fake.dump(), good);
  await s.proxy.stop();
  await s.t.stop();
});

Deno.test("two Services claiming one NodePort: the first keeps it, the second is logged and gets it once free", async () => {
  const s = await setup();
  const np = (name: string) =>
    service(name, {
      type: "NodePort",
      ports: [{ name: "http", port: 80, protocol: "TCP", nodePort: 30080 }],
    });
  s.source.put("services", np("aa"));
  s.source.put("endpointslices", slice("aa", ["10.1.2.5"]));
  s.source.markSynced();
  await s.sync();
  s.source.put("services", np("b"));
  s.source.put("endpointslices", slice("b", ["10.1.2.6"]));
  await s.sync();
  assert.match(s.nft.fake.dump(), /tcp \. 30080 : goto ext_np_v4_tcp_rr_1/);
  assert.match(s.nft.fake.dump(), /30080 \. 0 : 10\.1\.2\.5 \. 8080/);
  assert.match(
    s.nft.fake.dump(),
    /172\.16\.0\.11 \. tcp \. 80 : goto pick_v4_tcp_rr_1/,
    "the rest of b works",
  );
  assert.match(s.nft.fake.dump(), /172\.16\.0\.11 \. 80 \. 0 : 10\.1\.2\.6 \. 8080/);
  const lines = s.sink.lines.filter((l) => l.includes("conflicts with another"));
  assert.equal(lines.length, 1);
  assert.match(lines[0]!, /default\/b/);
  await s.sync().catch(() => {}); // nothing new: no second log line
  assert.equal(s.sink.lines.filter((l) => l.includes("conflicts with another")).length, 1);
  s.source.delete("services", "default/aa");
  await s.sync();
  assert.match(s.nft.fake.dump(), /tcp \. 30080 : goto ext_np_v4_tcp_rr_1/);
  assert.match(s.nft.fake.dump(), /30080 \. 0 : 10\.1\.2\.6 \. 8080/);
  await s.proxy.stop();
  await s.t.stop();
});

Deno.test("garbage in an EndpointSlice is logged once with the Service's name and the rest programmed", async () => {
  const s = await setup();
  s.source.put("services", service("web"));
  const bad = slice("web", ["10.1.2.5", "not-an-ip", "10.1.2.999"]);
  (bad.ports as unknown[]).push({ name: "x", port: 99999, protocol: "TCP" });
  s.source.put("endpointslices", bad);
  s.source.markSynced();
  await s.sync();
  assert.match(s.nft.fake.dump(), /172\.16\.0\.13 \. 80 \. 0 : 10\.1\.2\.5 \. 8080 \}/);
  assert.match(s.nft.fake.dump(), /172\.16\.0\.13 \. tcp \. 80 : goto pick_v4_tcp_rr_1/);
  const warn = s.sink.lines.filter((l) => l.includes("invalid parts"));
  assert.equal(warn.length, 1);
  assert.match(warn[0]!, /default\/web/);
  await s.proxy.stop();
  await s.t.stop();
});

Deno.test("a Service the kernel rejects is skipped and every other Service is applied", async () => {
  const s = await setup();
  for (const n of ["a", "bb", "ccc", "dddd", "eeeee"]) {
    s.source.put("services", service(n));
    s.source.put("endpointslices", slice(n, ["10.1.2.5"]));
  }
  // ccc's cluster IP: 172.16.0.13
  s.nft.rejectText = '"172.16.0.13"';
  s.source.markSynced();
  await s.sync();
  const dump = s.nft.fake.dump();
  for (const ip of ["172.16.0.11", "172.16.0.12", "172.16.0.14", "172.16.0.15"]) {
    assert.match(dump, new RegExp(`${ip.replaceAll(".", "\\.")} \\. tcp \\. 80 : goto pick_v4_tcp_rr_1`));
  }
  assert.doesNotMatch(dump, /172\.16\.0\.13/);
  assert.equal(
    s.sink.lines.filter((l) => l.includes("kernel rejected") && l.includes("default/ccc")).length,
    1,
  );
  await s.proxy.stop();
  await s.t.stop();
});

Deno.test("a Service the kernel keeps rejecting is logged once, not at every periodic resync, and again once it has been applied and fails anew", async () => {
  const s = await setup();
  for (const n of ["a", "bb", "ccc"]) {
    s.source.put("services", service(n));
    s.source.put("endpointslices", slice(n, ["10.1.2.5"]));
  }
  s.nft.rejectText = '"172.16.0.13"'; // ccc's cluster IP
  s.source.markSynced();
  await s.sync();
  const rejected = () =>
    s.sink.lines.filter((l) => l.includes("kernel rejected") && l.includes("default/ccc"));
  assert.equal(rejected().length, 1);
  for (let i = 0; i < 3; i++) await s.clock.advance(300_000);
  assert.ok(s.t.syncs.ok >= 4, `${s.t.syncs.ok} syncs`);
  assert.equal(rejected().length, 1, "still once after three periodic resyncs");
  assert.doesNotMatch(s.nft.fake.dump(), /172\.16\.0\.13/);
  // The cause goes away: ccc is applied at the next resync; a new rejection later is news, logged again.
  s.nft.rejectText = undefined;
  await s.clock.advance(300_000);
  assert.match(s.nft.fake.dump(), /172\.16\.0\.13 \. tcp \. 80 : goto pick_v4_tcp_rr_1/);
  s.nft.rejectText = '"172.16.0.13"';
  s.source.put("endpointslices", slice("ccc", ["10.1.2.5", "10.1.2.6"]));
  await s.sync();
  assert.equal(rejected().length, 2);
  await s.proxy.stop();
  await s.t.stop();
});

Deno.test("large changes are cut into transactions of whole Services", async () => {
  const s = await proxySetup({ node, chunkOps: 20 });
  for (let i = 0; i < 20; i++) {
    s.source.put("services", {
      ...service(`s${i}`),
      spec: { ...service(`s${i}`).spec, clusterIP: `172.16.1.${i + 1}`, clusterIPs: [`172.16.1.${i + 1}`] },
    });
    s.source.put("endpointslices", slice(`s${i}`, ["10.1.2.5", "10.1.2.6"]));
  }
  s.source.markSynced();
  await s.sync();
  assert.equal(s.proxy.programmed.size, 20);
  assert.ok(s.nft.runs >= 5, `${s.nft.runs} transactions`);
  await s.stop();
});

Deno.test("a full sync writes a shared chain once, and again after the transaction that wrote it was refused", async () => {
  const put = (s: Awaited<ReturnType<typeof proxySetup>>) => {
    for (let i = 0; i < 6; i++) {
      s.source.put("services", {
        ...service(`s${i}`),
        spec: { ...service(`s${i}`).spec, clusterIP: `172.16.1.${i + 1}`, clusterIPs: [`172.16.1.${i + 1}`] },
      });
      s.source.put("endpointslices", slice(`s${i}`, ["10.1.2.5"]));
    }
    s.source.markSynced();
  };
  const writes = (s: Awaited<ReturnType<typeof proxySetup>>) =>
    s.nft.texts.join("\n").split("\n").filter((l) =>
      l.startsWith("add rule") && l.includes("pick_v4_tcp_rr_1 ")
    ).length;

  // One Service a transaction: six chunks, every Service's endpoint picked by the one shared chain.
  const clean = await proxySetup({ node, chunkOps: 1 });
  put(clean);
  await clean.sync();
  assert.equal(clean.proxy.programmed.size, 6);
  assert.ok(clean.nft.runs >= 6, `${clean.nft.runs} transactions`);
  assert.equal(writes(clean), 1, "written by the first chunk only");
  await clean.stop();

  // The first Service's transaction, which writes the chain, is refused: the next transaction, already
  // built without it, and every later one, must still find it.
  const s = await proxySetup({ node, chunkOps: 1 });
  s.nft.rejectText = '"172.16.1.1"';
  put(s);
  await s.sync();
  assert.deepEqual([...s.proxy.programmed.keys()].sort(), [
    "default/s1",
    "default/s2",
    "default/s3",
    "default/s4",
    "default/s5",
  ]);
  const rejected = s.sink.lines.filter((l) => l.includes("kernel rejected"));
  assert.equal(rejected.length, 1, rejected.join("\n"));
  assert.match(rejected[0]!, /default\/s0/);
  for (let i = 2; i <= 6; i++) {
    assert.match(s.nft.fake.dump(), new RegExp(`172\\.16\\.1\\.${i} \\. tcp \\. 80 : goto pick_v4_tcp_rr_1`));
  }
  await s.stop();
});

Deno.test("UDP flows are cleared when their endpoint goes, and when a Service gets its first endpoint", async () => {
  const flow = (dst: string, dport: number): ConntrackEntry => ({
    family: 4,
    orig: { src: "10.1.1.9", dst, protocol: 17, sport: 5000, dport },
  });
  const s = await setup([], [flow("172.16.0.13", 53), flow("172.16.0.99", 53)]);
  const udp = service("dns", { ports: [{ name: "http", port: 53, protocol: "UDP" }] });
  s.source.put("services", udp);
  s.source.put("endpointslices", slice("dns", ["10.1.2.5", "10.1.3.5"], { protocol: "UDP" }));
  s.source.markSynced();
  await s.sync();
  // First sync after a start keeps flows: they may be live ones from before the restart.
  assert.equal(s.conntrack.entries.length, 2);
  s.source.put("endpointslices", slice("dns", ["10.1.3.5"], { protocol: "UDP" }));
  await s.sync();
  assert.deepEqual(s.conntrack.entries.map((e) => e.orig.dst), ["172.16.0.99"]);
  s.source.put("endpointslices", slice("dns", [], { protocol: "UDP" }));
  await s.sync();
  s.conntrack.entries.push(flow("172.16.0.13", 53));
  s.source.put("endpointslices", slice("dns", ["10.1.4.5"], { protocol: "UDP" }));
  await s.sync();
  assert.deepEqual(s.conntrack.entries.map((e) => e.orig.dst), ["172.16.0.99"]);
  await s.proxy.stop();
  await s.t.stop();
});

Deno.test("--cleanup-config's removal deletes the proxy's table and nothing else", async () => {
  const nft = new TestNft();
  const other = new NftTransaction("inet", "kube_router_router").add({ table: {} });
  await nft.fake.run(other);
  await nft.fake.run(new NftTransaction("inet", PROXY_TABLE).add({ table: {} }));
  assert.equal(await removeProxyTable(nft), true);
  assert.match(nft.fake.dump(), /table inet kube_router_router/);
  assert.doesNotMatch(nft.fake.dump(), /kube_router_proxy/);
  assert.equal(await removeProxyTable(nft), false);
});
