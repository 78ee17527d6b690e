import assert from "node:assert/strict";
import {
  desiredEndpointSlices,
  HEADLESS_LABEL,
  type KObject,
  MANAGED_BY,
  MANAGED_BY_LABEL,
  MAX_ENDPOINTS_PER_SLICE,
  resolveTargetPort,
  sameSliceContent,
  SERVICE_NAME_LABEL,
} from "../../../lab/mod.ts";

function pod(name: string, ip: string | undefined, opts: {
  ready?: boolean;
  labels?: Record<string, string>;
  ns?: string;
  deleting?: boolean;
  ports?: Array<{ name?: string; containerPort: number; protocol?: string }>;
  phase?: string;
} = {}): KObject {
  return {
    metadata: {
      name,
      namespace: opts.ns ?? "shop",
      uid: `uid-${name}`,
      labels: opts.labels ?? { app: "web" },
      ...(opts.deleting ? { deletionTimestamp: "2026-11-28T00:00:00Z" } : {}),
    },
    spec: {
      nodeName: "kube-node1",
      containers: [{ name: "c", ports: opts.ports ?? [{ name: "http", containerPort: 8080 }] }],
    },
    status: {
      phase: opts.phase ?? "Running",
      ...(ip ? { podIP: ip } : {}),
      conditions: [{ type: "Ready", status: opts.ready === false ? "False" : "True" }],
    },
  };
}

const svc: KObject = {
  metadata: { name: "web", namespace: "shop", uid: "svc-uid" },
  spec: {
    selector: { app: "web" },
    ports: [{ name: "http", port: 80, targetPort: "http", protocol: "TCP" }],
  },
};

Deno.test("a service's slice lists matching pods with their conditions, node and targetRef", () => {
  const slices = desiredEndpointSlices(svc, [
    pod("b", "10.1.1.3", { ready: false }),
    pod("a", "10.1.1.2"),
    pod("other", "10.1.1.4", { labels: { app: "db" } }),
    pod("elsewhere", "10.1.1.5", { ns: "prod" }),
    pod("pending", undefined),
    pod("done", "10.1.1.6", { phase: "Succeeded" }),
  ])!;
  assert.equal(slices.length, 1);
  const s = slices[0]!;
  assert.equal(s.addressType, "IPv4");
  assert.equal(s.metadata.labels?.[SERVICE_NAME_LABEL], "web");
  assert.deepEqual(s.ports, [{ name: "http", port: 8080, protocol: "TCP" }]);
  const eps = s.endpoints as Array<Record<string, unknown>>;
  assert.deepEqual(eps.map((e) => e.addresses), [["10.1.1.2"], ["10.1.1.3"]]);
  assert.deepEqual(eps[0]!.conditions, { ready: true, serving: true, terminating: false });
  assert.deepEqual(eps[1]!.conditions, { ready: false, serving: false, terminating: false });
  assert.equal(eps[0]!.nodeName, "kube-node1");
  assert.deepEqual(eps[0]!.targetRef, { kind: "Pod", namespace: "shop", name: "a", uid: "uid-a" });
});

Deno.test("a terminating pod is not ready but still serving", () => {
  const s = desiredEndpointSlices(svc, [pod("a", "10.1.1.2", { deleting: true })])![0]!;
  assert.deepEqual((s.endpoints as Array<Record<string, unknown>>)[0]!.conditions, {
    ready: false,
    serving: true,
    terminating: true,
  });
});

Deno.test("publishNotReadyAddresses makes not-ready pods ready endpoints", () => {
  const s = desiredEndpointSlices({ ...svc, spec: { ...svc.spec, publishNotReadyAddresses: true } }, [
    pod("a", "10.1.1.2", { ready: false }),
  ])![0]!;
  assert.deepEqual((s.endpoints as Array<Record<string, unknown>>)[0]!.conditions, {
    ready: true,
    serving: true,
    terminating: false,
  });
});

Deno.test("pods that resolve a named port differently land in different slices", () => {
  const slices = desiredEndpointSlices(svc, [
    pod("a", "10.1.1.2", { ports: [{ name: "http", containerPort: 8080 }] }),
    pod("b", "10.1.1.3", { ports: [{ name: "http", containerPort: 9090 }] }),
    pod("c", "10.1.1.4", { ports: [{ name: "other", containerPort: 1 }] }),
  ])!;
  const byPort = slices.map((
    s,
  ) => [(s.ports as Array<{ port: number }>).map((p) => p.port), (s.endpoints as unknown[]).length]);
  assert.deepEqual(byPort.sort(), [[[], 1], [[8080], 1], [[9090], 1]]);
  assert.equal(new Set(slices.map((s) => s.metadata.name)).size, 3);
});

Deno.test("a service without pods gets one empty slice and one without selector gets none", () => {
  const empty = desiredEndpointSlices(svc, [])!;
  assert.equal(empty.length, 1);
  assert.deepEqual(empty[0]!.endpoints, []);
  assert.equal(desiredEndpointSlices({ ...svc, spec: { ports: svc.spec.ports } }, []), undefined);
  assert.equal(desiredEndpointSlices({ ...svc, spec: { ...svc.spec, type: "ExternalName" } }, []), undefined);
});

Deno.test("more than 100 endpoints are split across slices", () => {
  const pods = Array.from(
    { length: 250 },
    (_, i) => pod(`p${String(i).padStart(3, "0")}`, `10.1.${1 + (i >> 8)}.${i & 255}`),
  );
  const slices = desiredEndpointSlices(svc, pods)!;
  assert.deepEqual(slices.map((s) => (s.endpoints as unknown[]).length), [
    MAX_ENDPOINTS_PER_SLICE,
    MAX_ENDPOINTS_PER_SLICE,
    50,
  ]);
});

Deno.test("target ports resolve by number, by name and protocol, or default to the port", () => {
  const p = pod("a", "10.1.1.2", { ports: [{ name: "dns", containerPort: 53, protocol: "UDP" }] });
  assert.equal(resolveTargetPort({ port: 80 }, p), 80);
  assert.equal(resolveTargetPort({ port: 80, targetPort: 8080 }, p), 8080);
  assert.equal(resolveTargetPort({ port: 80, targetPort: "8081" }, p), 8081);
  assert.equal(resolveTargetPort({ port: 53, targetPort: "dns", protocol: "UDP" }, p), 53);
  assert.equal(resolveTargetPort({ port: 53, targetPort: "dns", protocol: "TCP" }, p), undefined);
});

Deno.test("slice comparison ignores key order and server metadata but not conditions", () => {
  const [a] = desiredEndpointSlices(svc, [pod("a", "10.1.1.2")])!;
  const reverseKeys = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(reverseKeys)
      : v && typeof v === "object"
      ? Object.fromEntries(Object.entries(v).reverse().map(([k, x]) => [k, reverseKeys(x)]))
      : v;
  const reordered = reverseKeys(a) as KObject;
  reordered.metadata = { ...a!.metadata, resourceVersion: "42", uid: "x" };
  assert.ok(sameSliceContent(a!, reordered));
  const [b] = desiredEndpointSlices(svc, [pod("a", "10.1.1.2", { ready: false })])!;
  assert.ok(!sameSliceContent(a!, b!));
});

Deno.test("slices carry the Service's labels under the controller's own, and headless Services are marked", () => {
  const labelled: KObject = {
    ...svc,
    metadata: { ...svc.metadata, labels: { team: "shop", [SERVICE_NAME_LABEL]: "spoofed" } },
  };
  const [slice] = desiredEndpointSlices(labelled, [pod("a", "10.1.1.2")])!;
  assert.deepEqual(slice!.metadata.labels, {
    team: "shop",
    [SERVICE_NAME_LABEL]: "web",
    [MANAGED_BY_LABEL]: MANAGED_BY,
  });
  const headless = { ...labelled, spec: { ...svc.spec, clusterIP: "None" } };
  assert.equal(
    desiredEndpointSlices(headless, [pod("a", "10.1.1.2")])![0]!.metadata.labels?.[HEADLESS_LABEL],
    "",
  );
  const relabelled = { ...labelled, metadata: { ...labelled.metadata, labels: { team: "web" } } };
  assert.ok(
    !sameSliceContent(slice!, desiredEndpointSlices(relabelled, [pod("a", "10.1.1.2")])![0]!),
    "a label change on the Service is a slice change",
  );
});

Deno.test("a dual-stack Service gets one slice per family with each pod's address of that family", () => {
  const dual = {
    ...svc,
    spec: { ...svc.spec, ipFamilies: ["IPv4", "IPv6"], ipFamilyPolicy: "RequireDualStack" },
  };
  const p = pod("a", "10.1.1.2");
  p.status.podIPs = [{ ip: "10.1.1.2" }, { ip: "fd00:1:1::2" }];
  const slices = desiredEndpointSlices(dual, [p, pod("b", "10.1.1.3")])!;
  const byFamily = Object.fromEntries(slices.map((s) => [s.addressType as string, s]));
  assert.deepEqual(Object.keys(byFamily).sort(), ["IPv4", "IPv6"]);
  const addrs = (s: KObject) => (s.endpoints as Array<{ addresses: string[] }>).map((e) => e.addresses[0]);
  assert.deepEqual(addrs(byFamily.IPv4!), ["10.1.1.2", "10.1.1.3"]);
  assert.deepEqual(addrs(byFamily.IPv6!), ["fd00:1:1::2"]);
  assert.notEqual(byFamily.IPv4!.metadata.name, byFamily.IPv6!.metadata.name);
  assert.equal(
    byFamily.IPv4!.metadata.name,
    desiredEndpointSlices(svc, [p, pod("b", "10.1.1.3")])![0]!.metadata.name,
    "IPv4 slice names are what they were before dual-stack",
  );
});
