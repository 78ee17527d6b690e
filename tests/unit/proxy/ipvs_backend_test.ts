import assert from "node:assert/strict";
import type { V1EndpointSlice, V1Service } from "@kubernetes/client-node";
import { loadConfig } from "../../../core/mod.ts";
import { FakeIpvs, FakeRtnetlink, FakeSysctl, NetlinkError, NftTransaction } from "../../../ffi/mod.ts";
import {
  DUMMY_IF,
  ipvsPreflight,
  IpvsUnavailableError,
  openIpvs,
  proxyModule,
} from "../../../modules/proxy/mod.ts";
import { dsrRoutes } from "../../../modules/proxy/ipvs_backend.ts";
import { ipvsSetup, node } from "./_ipvs_setup.ts";

function service(name: string, ip: string, spec: V1Service["spec"] = {}, annotations = {}): V1Service {
  return {
    metadata: { namespace: "default", name, annotations },
    spec: {
      type: "ClusterIP",
      clusterIP: ip,
      clusterIPs: [ip],
      ports: [{ name: "http", port: 80, protocol: "TCP", targetPort: 8080 }],
      ...spec,
    },
  };
}

function slice(svc: string, ips: string[], nodeName = "n2"): V1EndpointSlice {
  return {
    metadata: { namespace: "default", name: `${svc}-abc`, labels: { "kubernetes.io/service-name": svc } },
    addressType: "IPv4",
    endpoints: ips.map((ip) => ({ addresses: [ip], conditions: { ready: true }, nodeName })),
    ports: [{ name: "http", port: 8080, protocol: "TCP" }],
  };
}

function setup(flags: string[] = []) {
  return ipvsSetup({
    flags,
    sysctl: new FakeSysctl({
      "net.ipv4.vs.conntrack": 0,
      "net.ipv4.vs.conn_reuse_mode": 1,
      "net.ipv4.vs.expire_nodest_conn": 0,
      "net.ipv4.vs.expire_quiescent_template": 0,
      "net.ipv4.conf.all.arp_ignore": 0,
      "net.ipv4.conf.all.arp_announce": 0,
    }),
  });
}

Deno.test("the IPVS backend programs virtual services, VIPs on kube-dummy-if, sysctls and its nftables table", async () => {
  const s = await setup(["--service-tcp-timeout=600s", "--service-udp-timeout=30s"]);
  s.source.put(
    "services",
    service("web", "172.16.0.10", {
      type: "NodePort",
      ports: [{ name: "http", port: 80, protocol: "TCP", targetPort: 8080, nodePort: 30080 }],
    }),
  );
  s.source.put("endpointslices", slice("web", ["10.1.2.5", "10.1.3.5"]));
  s.source.markSynced();
  await s.sync();
  const services = (await s.ipvs.services()).map((x) => `${x.protocol}/${x.address}:${x.port} ${x.scheduler}`)
    .sort();
  assert.deepEqual(services, ["tcp/172.16.0.10:80 rr", "tcp/192.168.1.100:30080 rr"]);
  const dests = await s.ipvs.destinations({ family: 4, protocol: "tcp", address: "172.16.0.10", port: 80 });
  assert.deepEqual(dests.map((d) => `${d.address}:${d.port} ${d.forward} w${d.weight}`).sort(), [
    "10.1.2.5:8080 masq w1",
    "10.1.3.5:8080 masq w1",
  ]);
  assert.deepEqual(await s.vips(), ["172.16.0.10/32"], "node addresses never go on the dummy interface");
  assert.equal((await s.rtnl.linkGet(DUMMY_IF))?.kind, "dummy");
  assert.equal(await s.sysctl.get("net.ipv4.vs.conntrack"), "1");
  assert.equal(await s.sysctl.get("net.ipv4.vs.conn_reuse_mode"), "0");
  assert.equal(await s.sysctl.get("net.ipv4.vs.expire_nodest_conn"), "1");
  assert.equal(await s.sysctl.get("net.ipv4.vs.expire_quiescent_template"), "1");
  assert.equal(await s.sysctl.get("net.ipv4.conf.all.arp_ignore"), "1");
  assert.equal(await s.sysctl.get("net.ipv4.conf.all.arp_announce"), "2");
  assert.deepEqual(await s.ipvs.timeouts(), { tcp: 600, tcpFin: 120, udp: 30 });
  const dump = s.nft.dump();
  assert.match(dump, /table inet kube_router_proxy/);
  assert.match(dump, /172\.16\.0\.10 \. tcp \. 80/);
  assert.match(dump, /192\.168\.1\.100 \. tcp \. 30080/);
  assert.match(dump, /ip saddr != @pod_cidrs_v4 meta mark set meta mark \| 0x00004000/);
  assert.doesNotMatch(dump, /reject/, "--ipvs-permit-all (default) rejects nothing");
  await s.stop();
});

Deno.test("a Service removed takes its virtual services and VIP with it; a changed one keeps its untouched parts", async () => {
  const s = await setup();
  s.source.put("services", service("web", "172.16.0.10"));
  s.source.put("services", service("api", "172.16.0.11"));
  s.source.put("endpointslices", slice("web", ["10.1.2.5"]));
  s.source.markSynced();
  await s.sync();
  assert.deepEqual(await s.vips(), ["172.16.0.10/32", "172.16.0.11/32"]);
  const mark = s.ipvs.calls.length;
  s.source.delete("services", "default/api");
  await s.sync();
  assert.deepEqual(s.ipvs.calls.slice(mark), ["delService tcp/172.16.0.11:80"]);
  assert.deepEqual(await s.vips(), ["172.16.0.10/32"]);
  assert.doesNotMatch(s.nft.dump(), /172\.16\.0\.11/);
  await s.stop();
});

Deno.test("a bad scheduler annotation is logged once with the Service's name and rr is used", async () => {
  const s = await setup();
  s.source.put(
    "services",
    service("web", "172.16.0.10", {}, { "kube-router.io/service.scheduler": "fastest" }),
  );
  s.source.put("services", service("ok", "172.16.0.12", {}, { "kube-router.io/service.scheduler": "sh" }));
  s.source.markSynced();
  await s.sync();
  const scheds = (await s.ipvs.services()).map((x) => `${x.address} ${x.scheduler}`).sort();
  assert.deepEqual(scheds, ["172.16.0.10 rr", "172.16.0.12 sh"]);
  s.source.put("endpointslices", slice("web", ["10.1.2.5"]));
  await s.sync();
  const lines = s.sink.lines.filter((l) => l.includes("fastest"));
  assert.equal(lines.length, 1, lines.join("\n"));
  assert.match(lines[0]!, /default\/web/);
  await s.stop();
});

Deno.test("--ipvs-permit-all=false rejects traffic to a VIP except on its service ports and ICMP echo", async () => {
  const s = await setup(["--ipvs-permit-all=false", "--masquerade-all"]);
  s.source.put("services", service("web", "172.16.0.10"));
  s.source.markSynced();
  await s.sync();
  const dump = s.nft.dump();
  assert.match(dump, /ip daddr @vips_v4 jump vip_check/);
  assert.match(dump, /ip daddr \. meta l4proto \. th dport @vip_ports_v4 accept/);
  assert.match(dump, /icmp type echo-request accept/);
  assert.match(dump, /reject/);
  assert.doesNotMatch(dump, /saddr != @pod_cidrs_v4/, "--masquerade-all marks every packet to a service");
  await s.stop();
});

Deno.test("graceful termination keeps a removed endpoint at weight 0 and re-syncs until it is deleted", async () => {
  const s = await setup(["--ipvs-graceful-termination", "--ipvs-graceful-period=5s"]);
  s.source.put("services", service("web", "172.16.0.10"));
  s.source.put("endpointslices", slice("web", ["10.1.2.5", "10.1.3.5"]));
  s.source.markSynced();
  await s.sync();
  // A live connection on the endpoint about to go (the fake's counters are what a kernel would report).
  const key = { family: 4 as const, protocol: "tcp" as const, address: "172.16.0.10", port: 80 };
  const real = s.ipvs.destinations.bind(s.ipvs);
  s.ipvs.destinations = async (k) =>
    (await real(k)).map((d) => (d.address === "10.1.3.5" ? { ...d, activeConns: 1 } : d));
  s.source.put("endpointslices", slice("web", ["10.1.2.5"]));
  await s.sync();
  const w = async () => (await real(key)).map((d) => `${d.address} w${d.weight}`).sort();
  assert.deepEqual(await w(), ["10.1.2.5 w1", "10.1.3.5 w0"]);
  await s.clock.advance(3000);
  assert.deepEqual(await w(), ["10.1.2.5 w1", "10.1.3.5 w0"], "still draining inside the period");
  await s.clock.advance(3000);
  assert.deepEqual(await w(), ["10.1.2.5 w1"], "deleted once the period ended, without any other event");
  await s.stop();
});

Deno.test("kube_router_service_* gauges carry IPVS's counters per virtual service and go with it", async () => {
  const s = await setup();
  const real = s.ipvs.services.bind(s.ipvs);
  s.ipvs.services = async () =>
    (await real()).map((x) => ({
      ...x,
      stats: { ...x.stats!, conns: 7, inPkts: 70, outPkts: 60, inBytes: 7000, outBytes: 6000, cps: 1 },
    }));
  s.source.put("services", service("web", "172.16.0.10"));
  s.source.markSynced();
  await s.sync();
  const labels =
    'port="80",protocol="tcp",service_name="web",service_vip="172.16.0.10",svc_namespace="default"';
  const text = s.t.ctx.metrics.render();
  assert.match(text, new RegExp(`kube_router_service_total_connections\\{${labels}\\} 7\\n`));
  assert.match(text, new RegExp(`kube_router_service_bytes_in\\{${labels}\\} 7000\\n`));
  assert.match(text, new RegExp(`kube_router_service_packets_out\\{${labels}\\} 60\\n`));
  s.source.delete("services", "default/web");
  await s.sync();
  assert.doesNotMatch(s.t.ctx.metrics.render(), /service_vip="172\.16\.0\.10"/);
  await s.stop();
});

Deno.test("the periodic sync rewrites a table deleted by hand and re-adds a VIP removed by hand", async () => {
  const s = await setup();
  s.source.put("services", service("web", "172.16.0.10"));
  s.source.markSynced();
  await s.sync();
  const tx = new NftTransaction("inet", "kube_router_proxy");
  tx.delete({ table: {} });
  await s.nft.run(tx);
  const link = (await s.rtnl.linkGet(DUMMY_IF))!;
  await s.rtnl.addrDel({ family: 4, index: link.index, address: "172.16.0.10", prefix: 32 });
  assert.doesNotMatch(s.nft.dump(), /kube_router_proxy/);
  const before = s.t.syncs.ok;
  await s.clock.advance(301_000);
  assert.ok(s.t.syncs.ok > before, "the periodic sync ran");
  assert.match(s.nft.dump(), /172\.16\.0\.10 \. tcp \. 80/);
  assert.deepEqual(await s.vips(), ["172.16.0.10/32"]);
  await s.stop();
});

Deno.test("a kernel without IPVS stops the IPVS backend with a message naming the flag and the ip_vs module", () => {
  assert.throws(
    () =>
      openIpvs(() => {
        throw new NetlinkError(2, "resolve generic netlink family IPVS", 0);
      }),
    (e: unknown) =>
      e instanceof IpvsUnavailableError && /--service-proxy-backend=ipvs/.test(e.message) &&
      /ip_vs/.test(e.message),
  );
});

Deno.test("the proxy's preflight checks IPVS only for the IPVS backend and words every failure for the user", () => {
  let closed = 0;
  const opened = () => {
    const ipvs = new FakeIpvs();
    const close = ipvs.close.bind(ipvs);
    ipvs.close = () => {
      closed++;
      close();
    };
    return ipvs;
  };
  assert.equal(ipvsPreflight(opened), undefined);
  assert.equal(closed, 1, "the probe's socket is closed");
  assert.match(
    ipvsPreflight(() => {
      throw new NetlinkError(2, "resolve generic netlink family IPVS", 0);
    }) ?? "",
    /^--service-proxy-backend=ipvs needs the kernel's IPVS.*ip_vs/,
  );
  assert.match(
    ipvsPreflight(() => {
      throw new NetlinkError(1, "socket(NETLINK_GENERIC)", 0);
    }) ?? "",
    /^--service-proxy-backend=ipvs: cannot open the kernel's IPVS: socket\(NETLINK_GENERIC\): EPERM/,
  );
  // With the nftables backend the proxy asks nothing of IPVS (this host's kernel has none).
  assert.equal(
    proxyModule.preflight?.(loadConfig(["--hostname-override=n1", "--service-proxy-backend=nftables"])),
    undefined,
  );
});

/** Counts the calls the backend makes that cost O(Services): listings, table writes, address listings. */
function countWholeStateCalls(s: Awaited<ReturnType<typeof setup>>) {
  const n = { services: 0, destinations: 0, getService: 0, nft: 0, addrList: 0 };
  const wrap = <T extends object, K extends keyof T & keyof typeof n>(o: T, k: K) => {
    const f = (o[k] as (...a: unknown[]) => unknown).bind(o);
    (o as Record<string, unknown>)[k] = (...a: unknown[]) => {
      n[k]++;
      return f(...a);
    };
  };
  wrap(s.ipvs, "services");
  wrap(s.ipvs, "destinations");
  wrap(s.ipvs, "getService");
  const run = s.nft.run.bind(s.nft);
  s.nft.run = (tx) => {
    n.nft++;
    return run(tx);
  };
  wrap(s.rtnl, "addrList");
  return n;
}

Deno.test("an endpoint change among many Services is applied to that Service alone: no listing of every service, no table or VIP rewrite", async () => {
  const s = await setup();
  for (let i = 0; i < 50; i++) {
    s.source.put("services", service(`svc${i}`, `172.16.1.${i}`));
    s.source.put("endpointslices", slice(`svc${i}`, [`10.1.2.${i}`, `10.1.3.${i}`]));
  }
  s.source.markSynced();
  await s.sync();
  const n = countWholeStateCalls(s);
  const mark = s.ipvs.calls.length;
  s.source.put("endpointslices", slice("svc7", ["10.1.2.7", "10.1.4.7"]));
  await s.sync();
  assert.deepEqual(s.ipvs.calls.slice(mark).sort(), [
    "addDestination tcp/172.16.1.7:80 10.1.4.7:8080",
    "delDestination tcp/172.16.1.7:80 10.1.3.7:8080",
  ]);
  assert.deepEqual(n, { services: 0, destinations: 0, getService: 1, nft: 0, addrList: 0 });
  const dests = await s.ipvs.destinations({ family: 4, protocol: "tcp", address: "172.16.1.7", port: 80 });
  assert.deepEqual(dests.map((d) => d.address).sort(), ["10.1.2.7", "10.1.4.7"]);
  // A change of shape (a second port: a new virtual service) takes the full path.
  s.source.put(
    "services",
    service("svc7", "172.16.1.7", {
      ports: [
        { name: "http", port: 80, protocol: "TCP", targetPort: 8080 },
        { name: "alt", port: 81, protocol: "TCP", targetPort: 8080 },
      ],
    }),
  );
  await s.sync();
  assert.equal(n.services, 2, "the full path lists the services (reconcile and stats)");
  assert.ok(await s.ipvs.getService({ family: 4, protocol: "tcp", address: "172.16.1.7", port: 81 }));
  // A node change takes the full path too (node addresses and pod CIDRs shape every Service).
  s.source.put("nodes", { ...node, spec: { podCIDR: "10.1.9.0/24", podCIDRs: ["10.1.9.0/24"] } });
  await s.sync();
  assert.equal(n.services, 4);
  assert.match(s.nft.dump(), /10\.1\.9\.0\/24/);
  await s.stop();
});

Deno.test("a partial sync that finds a virtual service gone fails, and the retry's full sync puts it back", async () => {
  const s = await setup();
  s.source.put("services", service("web", "172.16.0.10"));
  s.source.put("services", service("api", "172.16.0.11"));
  s.source.put("endpointslices", slice("web", ["10.1.2.5"]));
  s.source.markSynced();
  await s.sync();
  const key = { family: 4 as const, protocol: "tcp" as const, address: "172.16.0.10", port: 80 };
  await s.ipvs.delService(key);
  s.source.put("endpointslices", slice("web", ["10.1.2.5", "10.1.2.6"]));
  await assert.rejects(s.sync(), /IPVS changes failed/);
  s.t.syncs.lastError = undefined;
  await s.sync();
  assert.deepEqual((await s.ipvs.destinations(key)).map((d) => d.address).sort(), ["10.1.2.5", "10.1.2.6"]);
  await s.stop();
});

Deno.test("table 78 that was never used reads as empty (the kernel's ENOENT), other errors still fail", async () => {
  const enoent = new NetlinkError(2, "ip route show", 1, "ipv4: FIB table does not exist");
  const failing = (err: Error) => ({ routeList: () => Promise.reject(err) });
  assert.deepEqual(await dsrRoutes(failing(enoent), 4), []);
  const eperm = new NetlinkError(1, "ip route show", 1);
  await assert.rejects(() => dsrRoutes(failing(eperm), 4), (e) => e === eperm);
  assert.deepEqual(await dsrRoutes(new FakeRtnetlink(), 6), []);
});

Deno.test("a pod on this node reaching itself is masqueraded for every Service, and follows its endpoint changes", async () => {
  const s = await setup();
  s.source.put("services", service("web", "172.16.0.10"));
  s.source.put("endpointslices", slice("web", ["10.1.1.5", "10.1.3.5"], "n1"));
  s.source.markSynced();
  await s.sync();
  assert.match(s.nft.dump(), /10\.1\.1\.5 \. 10\.1\.1\.5/);
  assert.match(
    s.nft.dump(),
    /10\.1\.3\.5 \. 10\.1\.3\.5/,
    "endpoints named for this node, whatever their CIDR",
  );
  // An endpoint change that changes the local endpoints rewrites the hairpin entries (not a partial sync).
  s.source.put("endpointslices", slice("web", ["10.1.1.6"], "n1"));
  await s.sync();
  assert.match(s.nft.dump(), /10\.1\.1\.6 \. 10\.1\.1\.6/);
  assert.doesNotMatch(s.nft.dump(), /10\.1\.1\.5 \. 10\.1\.1\.5/);
  // Endpoints on other nodes never hairpin here.
  s.source.put("endpointslices", slice("web", ["10.1.2.7"], "n2"));
  await s.sync();
  assert.doesNotMatch(s.nft.dump(), /10\.1\.2\.7 \. 10\.1\.2\.7|10\.1\.1\.6 \. 10\.1\.1\.6/);
  await s.stop();
});
