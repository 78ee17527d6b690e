/**
 * The periodic full resync compares the kernel with what the proxy believes it programmed and repairs the
 * differences (kernel_state.ts compareKernelState, proxy.ts #kernelView): every case ends in the state a
 * cold sync of the same objects writes into an empty table, and an element already right costs nothing.
 */
import assert from "node:assert/strict";
import type { V1EndpointSlice, V1Node, V1Service } from "@kubernetes/client-node";
import { type FakeNftables, NftTransaction } from "../../../ffi/mod.ts";
import { PROXY_TABLE } from "../../../modules/proxy/mod.ts";
import type { MemorySource } from "../../_support/kube_source.ts";
import { proxySetup } from "./_nft_setup.ts";

const node = (name = "n1", podCIDR = "10.1.1.0/24", ip = "192.168.1.100"): V1Node => ({
  metadata: { name, labels: {} },
  spec: { podCIDR, podCIDRs: [podCIDR] },
  status: { addresses: [{ type: "InternalIP", address: ip }] },
});

function service(name: string, ip: string, spec: V1Service["spec"] = {}): V1Service {
  return {
    metadata: { namespace: "default", name },
    spec: {
      type: "ClusterIP",
      clusterIP: ip,
      clusterIPs: [ip],
      ports: [{
        name: "http",
        port: 80,
        protocol: "TCP",
        targetPort: 8080,
        nodePort: 30000 + Number(ip.split(".")[3]),
      }],
      ...spec,
    },
  };
}

function slice(svc: string, ips: string[]): V1EndpointSlice {
  return {
    metadata: { namespace: "default", name: `${svc}-1`, labels: { "kubernetes.io/service-name": svc } },
    addressType: "IPv4",
    endpoints: ips.map((ip, i) => ({
      addresses: [ip],
      conditions: { ready: true },
      nodeName: i % 2 ? "n1" : "n2",
    })),
    ports: [{ name: "http", port: 8080, protocol: "TCP" }],
  } as V1EndpointSlice;
}

/** The proxy with `objects` programmed by its first sync. */
async function setup(objects: (source: MemorySource) => void) {
  // Small chunks: Services are committed while later ones are built, as at scale.
  const s = await proxySetup({
    flags: ["--service-external-ip-range=203.0.113.0/24"],
    chunkOps: 12,
    node: node(),
  });
  objects(s.source);
  s.source.markSynced();
  // Long enough for a sync, and for chains flushed by it to be deleted a second later.
  await s.settle();
  assert.ok(s.t.syncs.ok > 0);
  return s;
}

/**
 * The table as text, element lists sorted and its chains, maps and sets sorted by name (a repaired table
 * holds them in another order).
 */
function state(fake: FakeNftables): string {
  const text = fake.dump().replace(/elements = \{([^}]*)\}/g, (_m, body: string) => {
    const elems = body.split(",").map((e) => e.replace(/\s+/g, " ").trim());
    return `elements = { ${elems.sort().join(", ")} }`;
  });
  const blocks = text.split(/\n(?=\t(?:chain|map|set) )/);
  const head = blocks.shift()!;
  return [head, ...blocks.map((b) => b.trimEnd().replace(/\n}$/, "")).sort()].join("\n");
}

/** What a cold sync of the same objects writes into an empty table. */
async function reference(objects: (source: MemorySource) => void): Promise<string> {
  const r = await setup(objects);
  const out = state(r.nft.fake);
  await r.stop();
  return out;
}

const base = (src: MemorySource) => {
  src.put("services", service("web", "172.16.0.10", { sessionAffinity: "ClientIP" }));
  src.put("endpointslices", slice("web", ["10.1.2.5", "10.1.1.6"]));
  src.put("services", service("np", "172.16.0.11", { type: "NodePort" }));
  src.put("endpointslices", slice("np", ["10.1.2.7", "10.1.1.8", "10.1.2.9"]));
  src.put("services", service("solo", "172.16.0.12"));
  src.put("endpointslices", slice("solo", ["10.1.1.10"]));
};

Deno.test("a full resync with nothing changed writes no element and changes nothing", async () => {
  const s = await setup(base);
  const good = state(s.nft.fake);
  s.nft.texts = [];
  await s.clock.advance(300_000);
  await s.settle();
  assert.ok(s.nft.texts.length > 0, "the resync ran");
  const elementOps = s.nft.texts.join("\n").split("\n").filter((l) =>
    / element /.test(l) && !/ (nodeport_ips|pod_cidrs)_v[46] /.test(l)
  );
  assert.deepEqual(elementOps, []);
  assert.equal(state(s.nft.fake), good);
  await s.stop();
});

Deno.test("the periodic full resync repairs a changed value, deleted elements, a flushed map, a deleted chain and extras", async () => {
  const s = await setup(base);
  const good = state(s.nft.fake);
  assert.equal(good, await reference(base));
  const dump = s.nft.fake.dump();
  // web's own chain (affinity) and the element leading to it.
  const svcChain = /goto (svc4-default\/web\/[^\s,]+)/.exec(dump)?.[1];
  assert.ok(svcChain, dump);
  const tx = new NftTransaction("inet", PROXY_TABLE)
    // A value changed: solo's cluster IP now drops.
    .delete({ element: { set: "service_ips_v4", key: ["172.16.0.12", "tcp", "80"] } })
    .add({ element: { set: "service_ips_v4", key: ["172.16.0.12", "tcp", "80"], value: ["drop"] } })
    // An endpoint slot pointing elsewhere.
    .delete({ element: { set: "service_endpoints_v4_tcp", key: ["172.16.0.11", "80", "1"] } })
    .add({
      element: {
        set: "service_endpoints_v4_tcp",
        key: ["172.16.0.11", "80", "1"],
        value: ["10.9.9.9", "80"],
      },
    })
    // Deleted: web's dispatch element and its chain; np's NodePort elements; a hairpin element.
    .delete({ element: { set: "service_ips_v4", key: ["172.16.0.10", "tcp", "80"] } })
    .flush({ chain: { name: svcChain } })
    .delete({ chain: { name: svcChain } })
    .delete({ element: { set: "cluster_ips_v4", key: ["172.16.0.11"] } })
    .delete({ element: { set: "hairpin_v4", key: ["10.1.1.6", "10.1.1.6"] } })
    // Extras nobody wants.
    .add({ element: { set: "service_ips_v4", key: ["172.16.0.99", "tcp", "80"], value: ["drop"] } })
    .add({ element: { set: "hairpin_v4", key: ["10.1.1.99", "10.1.1.99"] } })
    .add({ chain: { name: "pick_v4_tcp_rr_7" } });
  await s.nft.fake.run(tx);
  // Every NodePort endpoint slot gone at once (a map emptied by hand).
  const np = new NftTransaction("inet", PROXY_TABLE);
  for (const m of dump.matchAll(/(\d+) \. (\d+) : (10\.1\.\d+\.\d+) \. 8080/g)) {
    if (m[1] === "30011") np.delete({ element: { set: "nodeport_endpoints_v4_tcp", key: [m[1], m[2]!] } });
  }
  assert.ok(np.size >= 3, dump);
  await s.nft.fake.run(np);
  assert.notEqual(state(s.nft.fake), good);
  await s.clock.advance(300_000);
  await s.settle();
  assert.equal(state(s.nft.fake), good);
  assert.deepEqual(s.sink.lines.filter((l) => /rejected|error/i.test(l)), []);
  await s.stop();
});

Deno.test("a full resync where Services change and claims move between them in both key orders ends as a cold sync of the same objects", async () => {
  // aa takes the external IP zz holds; yy takes the one bb holds (bb sorts first, so it is committed
  // before yy asks what the kernel holds for it).
  const before = (src: MemorySource) => {
    base(src);
    src.put("services", service("zz", "172.16.0.20", { externalIPs: ["203.0.113.9"] }));
    src.put("endpointslices", slice("zz", ["10.1.2.20"]));
    src.put("services", service("aa", "172.16.0.21"));
    src.put("endpointslices", slice("aa", ["10.1.2.21", "10.1.1.21"]));
    src.put("services", service("bb", "172.16.0.22", { externalIPs: ["203.0.113.8"] }));
    src.put("endpointslices", slice("bb", ["10.1.2.22"]));
    src.put("services", service("yy", "172.16.0.23"));
    src.put("endpointslices", slice("yy", ["10.1.1.23"]));
  };
  const after = (src: MemorySource) => {
    base(src);
    src.put("services", service("zz", "172.16.0.20"));
    src.put("endpointslices", slice("zz", ["10.1.2.20", "10.1.2.30"]));
    src.put("services", service("aa", "172.16.0.21", { externalIPs: ["203.0.113.9"] }));
    src.put("endpointslices", slice("aa", ["10.1.2.21"]));
    src.put("services", service("bb", "172.16.0.22"));
    src.put("endpointslices", slice("bb", ["10.1.2.22"]));
    src.put("services", service("yy", "172.16.0.23", { externalIPs: ["203.0.113.8"] }));
    src.put("endpointslices", slice("yy", ["10.1.1.23", "10.1.2.24"]));
    src.delete("services", "default/solo");
  };
  const s = await setup(before);
  assert.match(s.nft.fake.dump(), /203\.0\.113\.9 \. tcp \. 80 : goto/);
  // All of it in one sync, made a full one by a new node (its pod CIDR changes the base ruleset).
  const n2 = (src: MemorySource) => src.put("nodes", node("n2", "10.1.2.0/24", "192.168.1.101"));
  after(s.source);
  n2(s.source);
  s.nft.texts = [];
  await s.settle();
  assert.match(
    s.nft.texts.join("\n"),
    /add element inet kube_router_proxy pod_cidrs_v4 \{[^}]*10\.1\.2\.0\/24/,
  );
  assert.equal(
    state(s.nft.fake),
    await reference((src) => {
      n2(src);
      after(src);
    }),
  );
  assert.deepEqual(s.sink.lines.filter((l) => /rejected|conflict|error/i.test(l)), []);
  await s.stop();
});

/**
 * `change` in a partial sync that fails before it writes anything (the changes it drained are lost), so the
 * full resync that retries it is the first to see them: it must render the changed Services anew, not keep
 * the renders it programmed before. Ends as a cold sync of the same objects.
 */
async function changedUnderFailure(
  before: (src: MemorySource) => void,
  change: (src: MemorySource) => void,
): Promise<void> {
  const s = await setup(before);
  s.nft.throwOnce = new Error("the partial sync fails");
  change(s.source);
  await s.clock.advance(200);
  assert.equal(s.t.syncs.failed, 1, "the partial sync failed");
  const ok = s.t.syncs.ok;
  // The retry (a full sync, a second later), and the deletion of the chains it flushed.
  for (let i = 0; i < 100; i++) await s.clock.advance(50);
  assert.ok(s.t.syncs.ok > ok, "the retry ran");
  assert.equal(s.t.syncs.failed, 1);
  assert.equal(
    state(s.nft.fake),
    await reference((src) => {
      before(src);
      change(src);
    }),
  );
  await s.stop();
}

Deno.test("a full resync renders a Service anew when its object changed since the render it programmed", async () => {
  await changedUnderFailure(base, (src) => {
    src.put("services", service("solo", "172.16.0.12", { sessionAffinity: "ClientIP" }));
  });
});

Deno.test("a full resync renders a Service anew when one of its EndpointSlices changed since the render it programmed", async () => {
  await changedUnderFailure(
    base,
    (src) => src.put("endpointslices", slice("solo", ["10.1.1.10", "10.1.2.11"])),
  );
});

Deno.test("a full resync renders anew a Service that lost a NodePort, and it gets the NodePort once its holder is gone", async () => {
  const np = (name: string, ip: string) =>
    service(name, ip, {
      type: "NodePort",
      ports: [{ name: "http", port: 80, protocol: "TCP", nodePort: 30080 }],
    });
  const before = (src: MemorySource) => {
    base(src);
    src.put("services", np("aa", "172.16.0.30"));
    src.put("endpointslices", slice("aa", ["10.1.2.30"]));
    src.put("services", np("bb", "172.16.0.31"));
    src.put("endpointslices", slice("bb", ["10.1.2.31"]));
  };
  const s = await setup(before);
  assert.ok(s.sink.lines.some((l) => l.includes("nodePort tcp . 30080 is already used by default/aa")));
  await s.stop();
  await changedUnderFailure(before, (src) => src.delete("services", "default/aa"));
});

Deno.test("a full resync after the node's zone changed renders every Service anew (topology hints pick other endpoints)", async () => {
  const zoned = (zone: string) => (src: MemorySource) =>
    src.put("nodes", {
      ...node(),
      metadata: { name: "n1", labels: { "topology.kubernetes.io/zone": zone } },
    });
  const hinted = (src: MemorySource) => {
    src.put("services", service("zones", "172.16.0.40"));
    src.put("endpointslices", {
      ...slice("zones", []),
      endpoints: [["10.1.2.40", "zone-a"], ["10.1.2.41", "zone-b"]].map(([ip, zone]) => ({
        addresses: [ip!],
        conditions: { ready: true },
        nodeName: "n2",
        hints: { forZones: [{ name: zone! }] },
      })),
    });
  };
  const s = await setup((src) => {
    zoned("zone-a")(src);
    hinted(src);
  });
  assert.match(s.nft.fake.dump(), /172\.16\.0\.40 \. 80 \. 0 : 10\.1\.2\.40 \. 8080/);
  const runs = s.nft.runs;
  zoned("zone-b")(s.source);
  await s.settle();
  assert.ok(s.nft.runs > runs);
  assert.match(s.nft.fake.dump(), /172\.16\.0\.40 \. 80 \. 0 : 10\.1\.2\.41 \. 8080/);
  assert.equal(
    state(s.nft.fake),
    await reference((src) => {
      zoned("zone-b")(src);
      hinted(src);
    }),
  );
  await s.stop();
});
