import assert from "node:assert/strict";
import type { V1EndpointSlice, V1Service } from "@kubernetes/client-node";
import { FakeNftables, NftTransaction } from "../../../ffi/mod.ts";
import { PROXY_TABLE, renderBase, renderService } from "../../../modules/proxy/mod.ts";
import { claimOf } from "../../../modules/proxy/nft_render.ts";
import { parseCounters } from "../../../modules/proxy/service_counters.ts";
import { ep, nodeCtx, svc } from "./_fixtures.ts";
import { proxySetup } from "./_nft_setup.ts";

const counted = { ...nodeCtx, serviceCounters: true };

function ids(elements: ReadonlyMap<string, string>, set: string): string[] {
  return [...elements.keys()].filter((id) => id.startsWith(`${set}|`)).map((id) => id.slice(set.length + 1))
    .sort();
}

Deno.test("with counters on, every VIP and port and each node IP's NodePort get an element in the three counted sets", () => {
  const r = renderService(
    svc({
      type: "LoadBalancer",
      clusterIPs: ["172.16.0.10", "fd00:172::10"],
      externalIPs: ["203.0.113.7"],
      loadBalancerIPs: ["198.51.100.9"],
      ports: [{ name: "dns", protocol: "UDP", port: 53, nodePort: 30053, endpoints: [ep("10.1.2.5")] }],
    }),
    counted,
  );
  const v4 = [
    "172.16.0.10 . udp . 53",
    "192.168.1.100 . udp . 30053",
    "198.51.100.9 . udp . 53",
    "203.0.113.7 . udp . 53",
  ];
  for (const set of ["service_stats_in_v4", "service_stats_out_v4", "service_stats_conns_v4"]) {
    assert.deepEqual(ids(r.elements, set), v4, set);
    assert.equal(r.elements.get(`${set}|172.16.0.10 . udp . 53`), "", "a plain set element, no value");
  }
  // The IPv6 cluster IP and NodePort are counted even with no IPv6 endpoint (the traffic is rejected, still counted).
  assert.deepEqual(ids(r.elements, "service_stats_in_v6"), [
    "fd00:172::10 . udp . 53",
    "fd00::100 . udp . 30053",
  ]);
  assert.deepEqual(
    r.counters.map((k) => `${k.family} ${k.vip} ${k.protocol} ${k.port}`).sort(),
    [
      "4 172.16.0.10 udp 53",
      "4 192.168.1.100 udp 30053",
      "4 198.51.100.9 udp 53",
      "4 203.0.113.7 udp 53",
      "6 fd00:172::10 udp 53",
      "6 fd00::100 udp 30053",
    ],
  );
  // A counter element belongs to the claim of the VIP and port it counts: a Service that loses the VIP
  // loses its counters with it.
  assert.equal(
    claimOf("service_stats_out_v4|203.0.113.7 . udp . 53"),
    claimOf("service_ips_v4|203.0.113.7 . udp . 53"),
  );
  assert.equal(claimOf("service_stats_conns_v6|fd00:172::10 . udp . 53"), "v6 fd00:172::10 . udp . 53");

  const off = renderService(svc({}, [ep("10.1.2.5")]), nodeCtx);
  assert.deepEqual([...off.elements.keys()].filter((id) => id.startsWith("service_stats")), []);
  assert.deepEqual(off.counters, []);
});

Deno.test("the base ruleset counts before DNAT at prerouting and output and replies after srcnat, only with counters on", async () => {
  const dump = async (ctx: typeof nodeCtx) => {
    const fake = new FakeNftables();
    const tx = new NftTransaction("inet", PROXY_TABLE);
    renderBase(tx, ctx);
    await fake.run(tx);
    return fake.dump();
  };
  const on = await dump(counted);
  assert.match(
    on,
    /chain filter_prerouting \{\n\t\ttype filter hook prerouting priority dstnat - 10; policy accept;\n\t\tip daddr \. meta l4proto \. th dport @service_stats_in_v4\n\t\tct state new ip daddr \. meta l4proto \. th dport @service_stats_conns_v4\n\t\tip6 daddr \. meta l4proto \. th dport @service_stats_in_v6\n/,
  );
  assert.match(
    on,
    /chain filter_output \{\n[^\n]*\n\t\tip daddr \. meta l4proto \. th dport @service_stats_in_v4\n/,
  );
  assert.match(
    on,
    /chain stats_postrouting \{\n\t\ttype filter hook postrouting priority srcnat \+ 10; policy accept;\n\t\tip saddr \. meta l4proto \. th sport @service_stats_out_v4\n\t\tip6 saddr \. meta l4proto \. th sport @service_stats_out_v6\n/,
  );
  assert.match(
    on,
    /chain stats_input \{\n[^\n]*input priority 110;[^\n]*\n\t\tip saddr \. meta l4proto \. th sport @service_stats_out_v4\n/,
  );
  assert.match(
    on,
    /set service_stats_conns_v6 \{\n\t\ttype ipv6_addr \. inet_proto \. inet_service\n\t\tcounter\n/,
  );

  // Off: the sets and (empty) chains are still declared, so switching never re-declares a set differently.
  const off = await dump(nodeCtx);
  assert.doesNotMatch(off, /@service_stats/);
  assert.match(
    off,
    /set service_stats_in_v4 \{\n\t\ttype ipv4_addr \. inet_proto \. inet_service\n\t\tcounter\n/,
  );
  assert.match(
    off,
    /chain stats_input \{\n\t\ttype filter hook input priority 110; policy accept;\n\t\}/,
  );
});

Deno.test("parseCounters reads the element counters of a counted set's JSON listing as nft 1.0.6 prints it", () => {
  // `nft -j list set inet t s` on nft 1.0.6, trimmed.
  const listed = JSON.parse(
    '[{"set": {"family": "inet", "name": "s", "table": "t", "type": ["ipv4_addr", "inet_proto", "inet_service"], "handle": 8, "elem": [{"elem": {"val": {"concat": ["10.96.0.10", "udp", 53]}, "counter": {"packets": 8, "bytes": 1024}}}, {"elem": {"val": {"concat": ["10.96.0.10", "tcp", 80]}, "counter": {"packets": 31, "bytes": 2062}}}], "stmt": [{"counter": null}]}}]',
  );
  assert.deepEqual(
    [...parseCounters(listed)],
    [["10.96.0.10 . udp . 53", { packets: 8, bytes: 1024 }], ["10.96.0.10 . tcp . 80", {
      packets: 31,
      bytes: 2062,
    }]],
  );
});

// The proxy end to end on the fake: traffic simulated with FakeNftables.count, gauges read as a scrape does.

function service(name: string, ip: string, spec: V1Service["spec"] = {}): V1Service {
  return {
    metadata: { namespace: "default", name },
    spec: {
      type: "ClusterIP",
      clusterIP: ip,
      clusterIPs: [ip],
      ports: [{ name: "http", port: 80, protocol: "TCP", targetPort: 8080 }],
      ...spec,
    },
  };
}

function slice(svcName: string, ips: string[]): V1EndpointSlice {
  return {
    metadata: {
      namespace: "default",
      name: `${svcName}-abc`,
      labels: { "kubernetes.io/service-name": svcName },
    },
    addressType: "IPv4",
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName: "n2" })),
    ports: [{ name: "http", port: 8080, protocol: "TCP" }],
  };
}

function setup(flags: string[]) {
  return proxySetup({ flags });
}

function value(text: string, metric: string, labels: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`kube_router_${metric}{${labels}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

const WEB = 'port="80",protocol="tcp",service_name="web",service_vip="172.16.0.10",svc_namespace="default"';
const WEB_NP =
  'port="30080",protocol="tcp",service_name="web",service_vip="192.168.1.100",svc_namespace="default"';
const DB = 'port="80",protocol="tcp",service_name="db",service_vip="172.16.0.20",svc_namespace="default"';

Deno.test("a scrape reads each Service's counters into kube_router_service_* with IPVS's labels, rates from the last two readings", async () => {
  const s = await setup(["--metrics-port=20241"]);
  s.source.put(
    "services",
    service("web", "172.16.0.10", {
      type: "NodePort",
      ports: [{ name: "http", port: 80, protocol: "TCP", targetPort: 8080, nodePort: 30080 }],
    }),
  );
  s.source.put("endpointslices", slice("web", ["10.1.2.5"]));
  s.source.put("services", service("db", "172.16.0.20"));
  s.source.put("endpointslices", slice("db", ["10.1.2.6"]));
  s.source.markSynced();
  await s.sync();

  s.nft.count("service_stats_in_v4", ["172.16.0.10", "tcp", "80"], 10, 1000);
  s.nft.count("service_stats_out_v4", ["172.16.0.10", "tcp", "80"], 8, 4000);
  s.nft.count("service_stats_conns_v4", ["172.16.0.10", "tcp", "80"], 2, 120);
  s.nft.count("service_stats_in_v4", ["192.168.1.100", "tcp", "30080"], 3, 180);
  let text = await s.scrape();
  assert.equal(value(text, "service_packets_in", WEB), 10);
  assert.equal(value(text, "service_bytes_in", WEB), 1000);
  assert.equal(value(text, "service_packets_out", WEB), 8);
  assert.equal(value(text, "service_bytes_out", WEB), 4000);
  assert.equal(value(text, "service_total_connections", WEB), 2);
  assert.equal(value(text, "service_pps_in", WEB), 0, "no rate before a second reading");
  assert.equal(
    value(text, "service_packets_in", WEB_NP),
    3,
    "the NodePort is its own series, on the node IP",
  );
  assert.equal(value(text, "service_packets_in", DB), 0, "another Service's series is not touched");

  // Within the minimum interval a scrape reuses the last reading.
  const lists = s.nft.counterLists;
  await s.clock.advance(500);
  await s.scrape();
  assert.equal(s.nft.counterLists, lists);

  await s.clock.advance(1500); // 2 s after the first reading
  s.nft.count("service_stats_in_v4", ["172.16.0.10", "tcp", "80"], 20, 3000);
  s.nft.count("service_stats_conns_v4", ["172.16.0.10", "tcp", "80"], 4, 240);
  text = await s.scrape();
  assert.equal(value(text, "service_packets_in", WEB), 30);
  assert.equal(value(text, "service_pps_in", WEB), 10);
  assert.equal(value(text, "service_bps_in", WEB), 1500);
  assert.equal(value(text, "service_cps", WEB), 2);
  assert.equal(value(text, "service_pps_out", WEB), 0);
  assert.equal(value(text, "service_packets_in", DB), 0);

  // A removed Service's series go; the other's stay.
  s.source.delete("services", "default/web");
  await s.sync();
  await s.clock.advance(2000);
  text = await s.scrape();
  assert.doesNotMatch(text, /service_name="web"/);
  assert.equal(value(text, "service_packets_in", DB), 0);
  await s.proxy.stop();
  await s.t.stop();
});

Deno.test("a failed counter listing is logged and counted, the gauges keep their values and the proxy keeps syncing", async () => {
  const s = await setup(["--metrics-port=20241"]);
  s.source.put("services", service("db", "172.16.0.20"));
  s.source.put("endpointslices", slice("db", ["10.1.2.6"]));
  s.source.markSynced();
  await s.sync();
  s.nft.count("service_stats_in_v4", ["172.16.0.20", "tcp", "80"], 5, 500);
  assert.equal(value(await s.scrape(), "service_packets_in", DB), 5);
  s.nft.failLists = true;
  await s.clock.advance(2000);
  const text = await s.scrape();
  assert.equal(value(text, "service_packets_in", DB), 5);
  assert.match(text, /kube_router_proxy_counter_read_errors_total 1\n/);
  assert.ok(s.sink.lines.some((l) => l.includes("cannot read the per-Service counters")));
  s.source.put("endpointslices", slice("db", ["10.1.2.7"]));
  await s.sync();
  await s.proxy.stop();
  await s.t.stop();
});

Deno.test("the periodic full resync keeps the counted elements and their counts, and removes a Service's", async () => {
  const s = await setup(["--metrics-port=20241"]);
  s.source.put("services", service("db", "172.16.0.20"));
  s.source.put("endpointslices", slice("db", ["10.1.2.6"]));
  s.source.markSynced();
  await s.sync();
  s.nft.count("service_stats_in_v4", ["172.16.0.20", "tcp", "80"], 7, 700);
  // A leftover element of a Service this agent does not know (a previous run).
  const tx = new NftTransaction("inet", PROXY_TABLE);
  tx.add({ element: { set: "service_stats_in_v4", key: ["172.16.0.99", "tcp", "80"] } });
  await s.nft.fake.run(tx);
  const full = s.t.syncs.ok;
  await s.clock.advance(300_000);
  await s.clock.advance(3000);
  assert.ok(s.t.syncs.ok > full, "the periodic full resync ran");
  const dump = s.nft.fake.dump();
  assert.match(dump, /172\.16\.0\.20 \. tcp \. 80 counter packets 7 bytes 700/);
  assert.doesNotMatch(dump, /172\.16\.0\.99/);
  assert.equal(value(await s.scrape(), "service_packets_in", DB), 7);
  await s.proxy.stop();
  await s.t.stop();
});

Deno.test("without --metrics-port nothing is counted and no scrape lists the kernel", async () => {
  const s = await setup([]);
  s.source.put("services", service("db", "172.16.0.20"));
  s.source.markSynced();
  await s.sync();
  assert.doesNotMatch(s.nft.fake.dump(), /@service_stats|172\.16\.0\.20 \. tcp \. 80 counter/);
  assert.doesNotMatch(await s.scrape(), /kube_router_service_packets_in/);
  assert.equal(s.nft.counterLists, 0);
  await s.proxy.stop();
  await s.t.stop();
});

Deno.test("a Service that lost an external IP:port to another reports no series for it; the holder does", async () => {
  const s = await setup(["--metrics-port=20241", "--service-external-ip-range=203.0.113.0/24"]);
  s.source.put("services", service("aaa", "172.16.0.30", { externalIPs: ["203.0.113.9"] }));
  s.source.put("endpointslices", slice("aaa", ["10.1.2.6"]));
  s.source.put("services", service("bbb", "172.16.0.31", { externalIPs: ["203.0.113.9"] }));
  s.source.put("endpointslices", slice("bbb", ["10.1.2.7"]));
  s.source.markSynced();
  await s.sync();
  s.nft.count("service_stats_in_v4", ["203.0.113.9", "tcp", "80"], 4, 400);
  const text = await s.scrape();
  const at = (name: string, vip: string) =>
    `port="80",protocol="tcp",service_name="${name}",service_vip="${vip}",svc_namespace="default"`;
  assert.equal(value(text, "service_packets_in", at("aaa", "203.0.113.9")), 4);
  assert.equal(value(text, "service_packets_in", at("bbb", "203.0.113.9")), undefined);
  assert.equal(value(text, "service_packets_in", at("bbb", "172.16.0.31")), 0, "its cluster IP is its own");
  assert.ok(s.sink.lines.some((l) => l.includes("203.0.113.9 . tcp . 80 is already used by default/aaa")));
  await s.proxy.stop();
  await s.t.stop();
});
