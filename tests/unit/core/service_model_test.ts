import assert from "node:assert/strict";
import type { V1EndpointSlice, V1Service } from "@kubernetes/client-node";
import {
  buildServiceInfo,
  EndpointSliceIndex,
  hasLocalEndpoint,
  nodeZone,
  type ServiceEndpoint,
  serviceSkipReason,
  servicesWithLocalEndpoints,
  usableEndpoints,
} from "../../../core/mod.ts";

type Spec = NonNullable<V1Service["spec"]>;
type Ep = NonNullable<V1EndpointSlice["endpoints"]>[number];

function svc(spec: Spec, extra: Partial<V1Service> = {}): V1Service {
  return { metadata: { namespace: "default", name: "web" }, spec, ...extra };
}

function slice(
  name: string,
  endpoints: Ep[],
  ports: V1EndpointSlice["ports"] = [{ name: "", port: 8080, protocol: "TCP" }],
  addressType = "IPv4",
  service = "web",
): V1EndpointSlice {
  return {
    addressType,
    metadata: { namespace: "default", name, labels: { "kubernetes.io/service-name": service } },
    endpoints,
    ports,
  };
}

const ep = (ip: string, conditions: Ep["conditions"] = {}, extra: Partial<Ep> = {}): Ep => ({
  addresses: [ip],
  conditions,
  ...extra,
});

const basic: Spec = { clusterIP: "172.16.0.10", clusterIPs: ["172.16.0.10"], ports: [{ port: 80 }] };

Deno.test("services of other proxies, headless and ExternalName services and ones without a cluster IP are skipped", () => {
  const labelled = (labels: Record<string, string>) => svc(basic, { metadata: { name: "x", labels } });
  assert.match(
    serviceSkipReason(labelled({ "service.kubernetes.io/service-proxy-name": "cilium" }))!,
    /cilium/,
  );
  assert.equal(
    serviceSkipReason(labelled({ "service.kubernetes.io/service-proxy-name": "kube-router" })),
    undefined,
  );
  assert.equal(serviceSkipReason(labelled({ "service.kubernetes.io/headless": "" })), "headless");
  assert.equal(serviceSkipReason(svc({ clusterIP: "None" })), "headless");
  assert.equal(
    serviceSkipReason(svc({ type: "ExternalName", externalName: "example.com" })),
    "type ExternalName",
  );
  assert.equal(serviceSkipReason(svc({ ports: [{ port: 80 }] })), "no cluster IP");
  assert.equal(serviceSkipReason({ metadata: { name: "bare" } }), "no spec");
  assert.equal(serviceSkipReason(svc(basic)), undefined);
});

Deno.test("a Service's addresses are read valid and normalized, with LB ingress of ipMode Proxy skipped", () => {
  const info = buildServiceInfo(
    svc({
      type: "LoadBalancer",
      clusterIP: "fd00:16:0:0::10",
      clusterIPs: ["fd00:16:0:0::10", "172.16.0.10"],
      externalIPs: ["203.0.113.5", "not-an-ip", "203.0.113.5"],
      loadBalancerSourceRanges: [" 10.0.0.0/8", "192.168.1.7/24", "bogus"],
    }, {
      status: {
        loadBalancer: {
          ingress: [{ ip: "198.51.100.7" }, { ip: "198.51.100.8", ipMode: "Proxy" }, {
            hostname: "lb.example",
          }, {
            ip: "198.51.100.9",
            ipMode: "VIP",
          }],
        },
      },
    }),
    [],
    "n1",
  );
  assert.equal(info.key, "default/web");
  assert.equal(info.type, "LoadBalancer");
  assert.deepEqual(info.clusterIPs, ["fd00:16::10", "172.16.0.10"]);
  assert.deepEqual(info.externalIPs, ["203.0.113.5"]);
  assert.deepEqual(info.loadBalancerIPs, ["198.51.100.7", "198.51.100.9"]);
  assert.deepEqual(info.loadBalancerSourceRanges, ["10.0.0.0/8", "192.168.1.0/24"]);
  assert.equal(info.problems.length, 2, info.problems.join("; "));
  assert.ok(info.problems.some((p) => p.includes("not-an-ip")));
  assert.ok(info.problems.some((p) => p.includes("bogus")));
});

Deno.test("traffic policies default to Cluster and the health check node port is kept only for Local LoadBalancers", () => {
  const cluster = buildServiceInfo(
    svc({ ...basic, type: "LoadBalancer", healthCheckNodePort: 30999 }),
    [],
    "n1",
  );
  assert.equal(cluster.externalTrafficPolicy, "Cluster");
  assert.equal(cluster.internalTrafficPolicy, "Cluster");
  assert.equal(cluster.healthCheckNodePort, undefined);
  const local = buildServiceInfo(
    svc({
      ...basic,
      type: "LoadBalancer",
      externalTrafficPolicy: "Local",
      internalTrafficPolicy: "Local",
      healthCheckNodePort: 30999,
    }),
    [],
    "n1",
  );
  assert.equal(local.externalTrafficPolicy, "Local");
  assert.equal(local.internalTrafficPolicy, "Local");
  assert.equal(local.healthCheckNodePort, 30999);
  const odd = buildServiceInfo(svc({ ...basic, externalTrafficPolicy: "Sometimes" }), [], "n1");
  assert.equal(odd.externalTrafficPolicy, "Cluster");
  assert.match(odd.problems[0]!, /Sometimes/);
});

Deno.test("ClientIP affinity defaults its timeout to 10800 s, and no affinity leaves it unset", () => {
  const unset = buildServiceInfo(svc({ ...basic, sessionAffinity: "ClientIP" }), [], "n1");
  assert.equal(unset.sessionAffinityTimeoutSeconds, 10800);
  const set = buildServiceInfo(
    svc({
      ...basic,
      sessionAffinity: "ClientIP",
      sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } },
    }),
    [],
    "n1",
  );
  assert.equal(set.sessionAffinityTimeoutSeconds, 60);
  const none = buildServiceInfo(
    svc({ ...basic, sessionAffinity: "None", sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } } }),
    [],
    "n1",
  );
  assert.equal(none.sessionAffinityTimeoutSeconds, undefined);
  const bad = buildServiceInfo(
    svc({
      ...basic,
      sessionAffinity: "ClientIP",
      sessionAffinityConfig: { clientIP: { timeoutSeconds: 0 } },
    }),
    [],
    "n1",
  );
  assert.equal(bad.sessionAffinityTimeoutSeconds, 10800);
  assert.equal(bad.problems.length, 1);
});

Deno.test("trafficDistribution and annotations are carried, node ports only for NodePort and LoadBalancer", () => {
  const spec = {
    ...basic,
    type: "NodePort",
    trafficDistribution: "PreferClose",
    ports: [{ name: "http", port: 80, nodePort: 30080 }, {
      name: "dns",
      port: 53,
      protocol: "UDP",
      nodePort: 30053,
    }],
  } as Spec;
  const info = buildServiceInfo(
    svc(spec, { metadata: { namespace: "default", name: "web", annotations: { a: "b" } } }),
    [],
    "n1",
  );
  assert.equal(info.trafficDistribution, "PreferClose");
  assert.deepEqual(info.annotations, { a: "b" });
  assert.deepEqual(info.ports.map((p) => [p.name, p.protocol, p.port, p.nodePort]), [
    ["http", "TCP", 80, 30080],
    ["dns", "UDP", 53, 30053],
  ]);
  const clusterIP = buildServiceInfo(svc({ ...spec, type: "ClusterIP" }), [], "n1");
  assert.deepEqual(clusterIP.ports.map((p) => p.nodePort), [undefined, undefined]);
});

Deno.test("named target ports resolve per slice: each endpoint carries its own slice's port number", () => {
  const spec: Spec = {
    ...basic,
    ports: [{ name: "http", port: 80, targetPort: "web" as unknown as never }, {
      name: "dns",
      port: 53,
      protocol: "UDP",
    }],
  };
  const slices = [
    slice("web-a", [ep("10.1.1.5")], [{ name: "http", port: 8080, protocol: "TCP" }, {
      name: "dns",
      port: 5353,
      protocol: "UDP",
    }]),
    slice("web-b", [ep("10.1.2.5")], [{ name: "http", port: 9090, protocol: "TCP" }]),
    // Same name, other protocol: not the UDP port's.
    slice("web-c", [ep("10.1.3.5")], [{ name: "dns", port: 53, protocol: "TCP" }]),
  ];
  const info = buildServiceInfo(svc(spec), slices, "n1");
  const http = info.ports.find((p) => p.name === "http")!;
  assert.deepEqual(http.endpoints.map((e) => `${e.ip}:${e.port}`), ["10.1.1.5:8080", "10.1.2.5:9090"]);
  const dns = info.ports.find((p) => p.name === "dns")!;
  assert.deepEqual(dns.endpoints.map((e) => `${e.ip}:${e.port}`), ["10.1.1.5:5353"]);
  assert.deepEqual(info.problems, []);
});

Deno.test("endpoint conditions take Kubernetes' defaults: ready when missing, serving follows ready, not terminating", () => {
  const slices = [slice("web-a", [
    ep("10.1.1.1"),
    ep("10.1.1.2", { ready: false }),
    ep("10.1.1.3", { ready: false, serving: true, terminating: true }),
    { addresses: ["10.1.1.4"] },
  ])];
  const eps = buildServiceInfo(svc(basic), slices, "n1").ports[0]!.endpoints;
  const c = (e: ServiceEndpoint) => [e.ip, e.ready, e.serving, e.terminating];
  assert.deepEqual(eps.map(c), [
    ["10.1.1.1", true, true, false],
    ["10.1.1.2", false, false, false],
    ["10.1.1.3", false, true, true],
    ["10.1.1.4", true, true, false],
  ]);
});

Deno.test("endpoints carry node, zone, hostname, hints and whether they are local; IPv6 is normalized", () => {
  const slices = [
    slice("web-a", [
      ep("10.1.1.5", { ready: true }, {
        nodeName: "n1",
        zone: "z1",
        hostname: "web-0",
        hints: { forZones: [{ name: "z1" }], forNodes: [{ name: "n1" }] } as NonNullable<Ep["hints"]>,
      }),
      ep("10.1.2.5", {}, { nodeName: "n2" }),
    ]),
    slice("web-6", [ep("fd00:1:0::5", {}, { nodeName: "n1" })], undefined, "IPv6"),
  ];
  const eps = buildServiceInfo(svc(basic), slices, "n1").ports[0]!.endpoints;
  assert.deepEqual(eps[0], {
    ip: "10.1.1.5",
    family: 4,
    port: 8080,
    nodeName: "n1",
    zone: "z1",
    hostname: "web-0",
    ready: true,
    serving: true,
    terminating: false,
    hintZones: ["z1"],
    hintNodes: ["n1"],
    local: true,
  });
  assert.equal(eps[1]!.local, false);
  assert.deepEqual([eps[2]!.ip, eps[2]!.family, eps[2]!.local], ["fd00:1::5", 6, true]);
});

Deno.test("an address in two slices gives one endpoint, the non-terminating one whichever slice comes first", () => {
  for (const order of [["a", "b"], ["b", "a"]]) {
    const s = {
      a: slice("web-a", [ep("10.1.1.5", { ready: false, serving: true, terminating: true })]),
      b: slice("web-b", [ep("10.1.1.5", { ready: true })]),
    } as Record<string, V1EndpointSlice>;
    const eps = buildServiceInfo(svc(basic), order.map((k) => s[k]!), "n1").ports[0]!.endpoints;
    assert.equal(eps.length, 1);
    assert.equal(eps[0]!.terminating, false, `order ${order}`);
  }
});

Deno.test("FQDN slices give no endpoints, and addresses of the wrong family or none are problems", () => {
  const slices = [
    slice("web-f", [ep("web.example.com")], undefined, "FQDN"),
    slice("web-a", [ep("fd00::1"), ep("10.1.1.5"), { addresses: [] }, ep("10.1.1.999")]),
  ];
  const info = buildServiceInfo(svc(basic), slices, "n1");
  assert.deepEqual(info.ports[0]!.endpoints.map((e) => e.ip), ["10.1.1.5"]);
  assert.equal(info.problems.length, 3, info.problems.join("; "));
});

Deno.test("malformed Services and slices give problems, never a throw, and keep what is valid", () => {
  const garbage = {
    metadata: { namespace: "default", name: "junk" },
    spec: {
      type: "Weird",
      clusterIP: "172.16.0.9",
      clusterIPs: "172.16.0.9",
      externalIPs: [7, null],
      ports: [null, "x", { port: 0 }, { port: 80, protocol: "ICMP" }, { port: 81 }, { port: 81 }, {
        name: "np",
        port: 82,
        nodePort: 99999,
      }],
      loadBalancerSourceRanges: [{}],
      sessionAffinity: "Sticky",
    },
    status: { loadBalancer: { ingress: [null, { ip: "nope" }] } },
  } as unknown as V1Service;
  const badSlices = [
    { metadata: { name: "s" }, endpoints: "x", ports: "y" },
    {
      addressType: "IPv4",
      metadata: { namespace: "default", name: "t", labels: { "kubernetes.io/service-name": "junk" } },
      endpoints: [null, { addresses: [5] }, { addresses: ["10.1.1.5"], conditions: null }],
      ports: [{ port: 8080 }, { name: "", port: "http" }, { name: "", port: 81, protocol: "TCP" }],
    },
  ] as unknown as V1EndpointSlice[];
  const info = buildServiceInfo(garbage, badSlices, "n1");
  assert.equal(info.type, "ClusterIP");
  assert.deepEqual(info.clusterIPs, ["172.16.0.9"]);
  assert.deepEqual(info.ports.map((p) => p.port), [81, 82]);
  assert.deepEqual(info.ports[0]!.endpoints.map((e) => `${e.ip}:${e.port}`), ["10.1.1.5:81"]);
  assert.ok(info.problems.length >= 10, info.problems.join("\n"));
  assert.doesNotThrow(() => buildServiceInfo({} as V1Service, [{} as V1EndpointSlice], ""));
  assert.doesNotThrow(() => serviceSkipReason({} as V1Service));
});

// ---------------------------------------------------------------------------------------------------

function e(ip: string, o: Partial<ServiceEndpoint> = {}): ServiceEndpoint {
  return { ip, family: 4, port: 80, ready: true, serving: true, terminating: false, local: false, ...o };
}
const ips = (eps: ServiceEndpoint[]) => eps.map((x) => x.ip);
const terminating = { ready: false, serving: true, terminating: true };

Deno.test("the ready endpoints are chosen; serving-and-terminating ones only when none is ready", () => {
  const ready = e("10.0.0.1");
  const term = e("10.0.0.2", terminating);
  const notServing = e("10.0.0.3", { ready: false, serving: false, terminating: true });
  const unready = e("10.0.0.4", { ready: false, serving: true, terminating: false });
  assert.deepEqual(ips(usableEndpoints([ready, term, notServing, unready])), ["10.0.0.1"]);
  assert.deepEqual(ips(usableEndpoints([term, notServing, unready])), ["10.0.0.2"]);
  assert.deepEqual(ips(usableEndpoints([notServing, unready])), []);
});

Deno.test("a Local policy keeps local endpoints only, falling back to local terminating ones", () => {
  const remote = e("10.0.0.1");
  const localReady = e("10.0.0.2", { local: true });
  const localTerm = e("10.0.0.3", { local: true, ...terminating });
  assert.deepEqual(ips(usableEndpoints([remote, localReady, localTerm], { localOnly: true })), ["10.0.0.2"]);
  assert.deepEqual(ips(usableEndpoints([remote, localTerm], { localOnly: true })), ["10.0.0.3"]);
  assert.deepEqual(ips(usableEndpoints([remote], { localOnly: true })), []);
});

Deno.test("zone hints narrow the choice only when every ready endpoint has one and one names our zone", () => {
  const a = e("10.0.0.1", { hintZones: ["z1"] });
  const b = e("10.0.0.2", { hintZones: ["z2"] });
  const c = e("10.0.0.3", { hintZones: ["z1", "z3"] });
  const unhinted = e("10.0.0.4");
  const termUnhinted = e("10.0.0.5", terminating);
  assert.deepEqual(ips(usableEndpoints([a, b, c], { zone: "z1" })), ["10.0.0.1", "10.0.0.3"]);
  assert.deepEqual(ips(usableEndpoints([a, b, c, termUnhinted], { zone: "z1" })), ["10.0.0.1", "10.0.0.3"]);
  assert.deepEqual(ips(usableEndpoints([a, b, unhinted], { zone: "z1" })), [
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.4",
  ]);
  assert.deepEqual(ips(usableEndpoints([a, b, c], { zone: "z9" })), ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
  assert.deepEqual(
    ips(usableEndpoints([a, b, c], {})),
    ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
    "node without zone",
  );
  assert.deepEqual(
    ips(usableEndpoints([a, b, c], { zone: "z1", topologyAware: false })),
    ["10.0.0.1", "10.0.0.2", "10.0.0.3"],
  );
  assert.deepEqual(
    ips(usableEndpoints([a, b], { zone: "z1", localOnly: true })),
    [],
    "Local policy ignores hints (no local endpoint here)",
  );
});

Deno.test("node hints take precedence over zone hints when every ready endpoint has one for our node", () => {
  const a = e("10.0.0.1", { hintZones: ["z1"], hintNodes: ["n1"] });
  const b = e("10.0.0.2", { hintZones: ["z1"], hintNodes: ["n2"] });
  assert.deepEqual(ips(usableEndpoints([a, b], { zone: "z1", nodeName: "n1" })), ["10.0.0.1"]);
  assert.deepEqual(ips(usableEndpoints([a, b], { zone: "z1", nodeName: "n3" })), ["10.0.0.1", "10.0.0.2"]);
});

// ---------------------------------------------------------------------------------------------------

Deno.test("the slice index follows adds, updates, deletions and a slice moving to another Service", () => {
  const idx = new EndpointSliceIndex();
  const a1 = slice("web-b", [ep("10.1.1.5")]);
  const a2 = slice("web-a", [ep("10.1.1.6")]);
  assert.equal(idx.update(undefined, a1), "default/web");
  assert.equal(idx.update(undefined, a2), "default/web");
  assert.deepEqual(idx.slicesFor("default/web").map((s) => s.metadata!.name), ["web-a", "web-b"]);
  const a1b = slice("web-b", [ep("10.1.1.7")]);
  assert.equal(idx.update(a1, a1b), "default/web");
  assert.equal(idx.slicesFor("default/web")[1], a1b);
  const moved = slice("web-b", [ep("10.1.1.7")], undefined, "IPv4", "api");
  assert.deepEqual(idx.touched(a1b, moved), ["default/web", "default/api"]);
  assert.deepEqual(idx.slicesFor("default/web").map((s) => s.metadata!.name), ["web-a"]);
  assert.equal(idx.update(a2, undefined), "default/web");
  assert.deepEqual(idx.slicesFor("default/web"), []);
  assert.deepEqual(idx.services(), ["default/api"]);
  const orphan: V1EndpointSlice = {
    addressType: "IPv4",
    metadata: { namespace: "default", name: "o" },
    endpoints: [],
  };
  assert.equal(idx.update(undefined, orphan), undefined);
  idx.reset([a1, a2]);
  assert.deepEqual(idx.services(), ["default/web"]);
});

Deno.test("a local endpoint is one on this node that is ready or serving and not terminating", () => {
  const slices = [
    slice("a-1", [ep("10.1.1.5", { ready: true }, { nodeName: "n1" })], undefined, "IPv4", "a"),
    slice("b-1", [ep("10.1.2.5", { ready: true }, { nodeName: "n2" })], undefined, "IPv4", "b"),
    slice("c-1", [ep("10.1.1.6", terminating, { nodeName: "n1" })], undefined, "IPv4", "c"),
    slice(
      "d-1",
      [ep("10.1.1.7", { ready: false, serving: true }, { nodeName: "n1" })],
      undefined,
      "IPv4",
      "d",
    ),
    slice("e-1", [ep("10.1.1.8", { ready: false }, { nodeName: "n1" })], undefined, "IPv4", "e"),
  ];
  assert.deepEqual([...servicesWithLocalEndpoints(slices, "n1")].sort(), ["default/a", "default/d"]);
  assert.equal(hasLocalEndpoint(slices.slice(1, 3), "n1"), false);
  assert.equal(hasLocalEndpoint(slices, ""), false, "no node name, nothing is local");
  assert.equal(nodeZone({ metadata: { labels: { "topology.kubernetes.io/zone": "z1" } } }), "z1");
  assert.equal(nodeZone({ metadata: {} }), undefined);
});
