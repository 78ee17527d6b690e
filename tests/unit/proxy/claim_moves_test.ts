/**
 * A claim (a NodePort, or an external IP and port, with their elements) moving from one Service to another
 * in one partial sync, with every Service in a transaction of its own: the kernel must never be asked to
 * add an element another Service still holds with another value (it refuses: "File exists"), whatever
 * the Services' key order. The fake refuses such an add as the kernel does.
 */
import assert from "node:assert/strict";
import type { V1EndpointSlice, V1Service } from "@kubernetes/client-node";
import type { FakeNftables } from "../../../ffi/mod.ts";
import type { MemorySource } from "../../_support/kube_source.ts";
import { proxySetup } from "./_nft_setup.ts";

function service(name: string, ip: string, nodePort: number, externalIPs: string[]): V1Service {
  return {
    metadata: { namespace: "default", name },
    spec: {
      type: "NodePort",
      clusterIP: ip,
      clusterIPs: [ip],
      externalIPs,
      ports: [{ name: "http", port: 80, protocol: "TCP", targetPort: 8080, nodePort }],
    },
  };
}

function slice(svc: string, ip: string): V1EndpointSlice {
  return {
    metadata: { namespace: "default", name: `${svc}-1`, labels: { "kubernetes.io/service-name": svc } },
    addressType: "IPv4",
    endpoints: [{ addresses: [ip], conditions: { ready: true }, nodeName: "n2" }],
    ports: [{ name: "http", port: 8080, protocol: "TCP" }],
  } as V1EndpointSlice;
}

/** The proxy's elements that lead to an endpoint, by NodePort or external IP, sorted. */
function endpointsOf(fake: FakeNftables): string[] {
  const dump = fake.dump();
  return [
    ...dump.matchAll(/(3008\d) \. 0 : (10\.1\.2\.\d+) \. 8080/g),
    ...dump.matchAll(/(203\.0\.113\.\d+) \. 80 \. 0 : (10\.1\.2\.\d+) \. 8080/g),
  ].map((m) => `${m[1]} -> ${m[2]}`).sort();
}

type World = { [name: string]: { ip: string; nodePort: number; externalIPs: string[]; endpoint: string } };

function put(src: MemorySource, world: World) {
  for (const [name, s] of Object.entries(world)) {
    src.put("services", service(name, s.ip, s.nodePort, s.externalIPs));
    src.put("endpointslices", slice(name, s.endpoint));
  }
}

/**
 * Programs `before`, then `after` in one partial sync, one Service per transaction (Services that take
 * each other's claims share one: `transactions` is how many the partial sync has at least).
 */
async function move(before: World, after: World, transactions = 2): Promise<void> {
  const s = await proxySetup({ flags: ["--service-external-ip-range=203.0.113.0/24"], chunkOps: 1 });
  put(s.source, before);
  s.source.markSynced();
  await s.settle();
  const runs = s.nft.runs;
  put(s.source, after);
  // One partial sync (then the deletion of the chains it flushed).
  await s.sync();
  await s.settle();
  assert.ok(s.nft.runs - runs >= transactions, `${s.nft.runs - runs} transactions`);
  assert.deepEqual(s.sink.lines.filter((l) => /rejected|conflict|error/i.test(l)), []);
  const want = [];
  for (const w of Object.values(after)) {
    want.push(`${w.nodePort} -> ${w.endpoint}`);
    for (const e of w.externalIPs) want.push(`${e} -> ${w.endpoint}`);
  }
  assert.deepEqual(endpointsOf(s.nft.fake), want.sort());
  for (const [name, w] of Object.entries(after)) {
    const r = s.proxy.programmed.get(`default/${name}`);
    assert.ok(r, name);
    assert.ok([...r.claims.keys()].some((c) => c.endsWith(`nodePort tcp . ${w.nodePort}`)), name);
  }
  await s.stop();
}

const A = { ip: "172.16.0.30", endpoint: "10.1.2.30" };
const B = { ip: "172.16.0.31", endpoint: "10.1.2.31" };

Deno.test("a NodePort and an external IP:port given up by one Service and taken by one sorting before it move in one partial sync", async () => {
  await move(
    {
      aa: { ...A, nodePort: 30081, externalIPs: [] },
      bb: { ...B, nodePort: 30080, externalIPs: ["203.0.113.9"] },
    },
    {
      aa: { ...A, nodePort: 30080, externalIPs: ["203.0.113.9"] },
      bb: { ...B, nodePort: 30082, externalIPs: [] },
    },
  );
});

Deno.test("a NodePort and an external IP:port given up by one Service and taken by one sorting after it move in one partial sync", async () => {
  await move(
    {
      aa: { ...A, nodePort: 30080, externalIPs: ["203.0.113.9"] },
      bb: { ...B, nodePort: 30081, externalIPs: [] },
    },
    {
      aa: { ...A, nodePort: 30082, externalIPs: [] },
      bb: { ...B, nodePort: 30080, externalIPs: ["203.0.113.9"] },
    },
  );
});

Deno.test("two Services swapping their NodePorts and external IPs in one partial sync both get the other's", async () => {
  // ab, changed in the same sync, sorts between them: the swap's two still go in one transaction.
  const M = { ip: "172.16.0.33", nodePort: 30087, externalIPs: [] };
  await move(
    {
      aa: { ...A, nodePort: 30080, externalIPs: ["203.0.113.9"] },
      ab: { ...M, endpoint: "10.1.2.34" },
      bb: { ...B, nodePort: 30081, externalIPs: ["203.0.113.8"] },
    },
    {
      aa: { ...A, nodePort: 30081, externalIPs: ["203.0.113.8"] },
      ab: { ...M, endpoint: "10.1.2.35" },
      bb: { ...B, nodePort: 30080, externalIPs: ["203.0.113.9"] },
    },
  );
});

Deno.test("a chain of moves (c to b, b to a) and a Service in between keep working in one partial sync", async () => {
  const C = { ip: "172.16.0.32", endpoint: "10.1.2.32" };
  const M = { ip: "172.16.0.33", endpoint: "10.1.2.33" };
  await move(
    {
      aa: { ...A, nodePort: 30083, externalIPs: [] },
      bb: { ...B, nodePort: 30081, externalIPs: ["203.0.113.8"] },
      bm: { ...M, nodePort: 30084, externalIPs: [] },
      cc: { ...C, nodePort: 30082, externalIPs: ["203.0.113.9"] },
    },
    {
      aa: { ...A, nodePort: 30081, externalIPs: ["203.0.113.8"] },
      bb: { ...B, nodePort: 30082, externalIPs: ["203.0.113.9"] },
      bm: { ...M, nodePort: 30085, externalIPs: [] },
      cc: { ...C, nodePort: 30086, externalIPs: [] },
    },
  );
});

Deno.test("a chunk the kernel rejects without naming an operation is halved without cutting a swap in two", async () => {
  const s = await proxySetup({ flags: ["--service-external-ip-range=203.0.113.0/24"] });
  const Z = { ip: "172.16.0.39", nodePort: 30089, externalIPs: [], endpoint: "10.1.2.39" };
  const P = { ip: "172.16.0.38", nodePort: 30088, externalIPs: [], endpoint: "10.1.2.38" };
  const before: World = {
    a0: P,
    aa: { ...A, nodePort: 30080, externalIPs: ["203.0.113.9"] },
    bb: { ...B, nodePort: 30081, externalIPs: ["203.0.113.8"] },
    zz: Z,
  };
  put(s.source, before);
  s.source.markSynced();
  await s.settle();
  // One chunk: a0 changes, aa and bb swap, zz takes a cluster IP the kernel refuses without saying where.
  // Halved in the middle it would be [a0, aa] [bb, zz]: aa's additions fail on what bb still holds, and
  // bb's on what aa kept.
  s.nft.rejectText = "172.16.0.99";
  s.nft.rejectUnnamed = true;
  put(s.source, {
    a0: { ...P, endpoint: "10.1.2.37" },
    aa: { ...A, nodePort: 30081, externalIPs: ["203.0.113.8"] },
    bb: { ...B, nodePort: 30080, externalIPs: ["203.0.113.9"] },
    zz: { ...Z, ip: "172.16.0.99" },
  });
  await s.sync();
  const rejected = s.sink.lines.filter((l) => /rejected/.test(l));
  assert.equal(rejected.length, 1, rejected.join("\n"));
  assert.match(rejected[0]!, /default\/zz/);
  assert.deepEqual(endpointsOf(s.nft.fake), [
    "203.0.113.8 -> 10.1.2.30",
    "203.0.113.9 -> 10.1.2.31",
    "30080 -> 10.1.2.31",
    "30081 -> 10.1.2.30",
    "30088 -> 10.1.2.37",
    "30089 -> 10.1.2.39",
  ]);
  await s.stop();
});
