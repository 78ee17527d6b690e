import assert from "node:assert/strict";
import type { V1EndpointSlice, V1Service } from "@kubernetes/client-node";
import { loadConfig } from "../../../core/config.ts";
import { servicesWithLocalEndpoints } from "../../../core/mod.ts";
import { importAllowed, importPolicy, serviceVips } from "../../../modules/router/advertise.ts";

const cfg = (...f: string[]) => loadConfig([...f, "--hostname-override=n1", "--enable-ipv6"]);

function svc(
  name: string,
  spec: NonNullable<V1Service["spec"]>,
  annotations: Record<string, string> = {},
  lb: string[] = [],
): V1Service {
  return {
    metadata: { namespace: "default", name, annotations },
    spec,
    status: { loadBalancer: { ingress: lb.map((ip) => ({ ip })) } },
  };
}

const web = svc(
  "web",
  {
    clusterIP: "172.16.0.10",
    clusterIPs: ["172.16.0.10", "fd00:16::10"],
    externalIPs: ["203.0.113.5"],
    type: "LoadBalancer",
  },
  {},
  ["198.51.100.7"],
);

Deno.test("service VIPs follow the --advertise-* flags", () => {
  assert.deepEqual(serviceVips(cfg(), [web], new Set()), []);
  assert.deepEqual(serviceVips(cfg("--advertise-cluster-ip"), [web], new Set()), [
    "172.16.0.10/32",
    "fd00:16::10/128",
  ]);
  assert.deepEqual(
    serviceVips(cfg("--advertise-external-ip", "--advertise-loadbalancer-ip"), [web], new Set()),
    ["198.51.100.7/32", "203.0.113.5/32"],
  );
});

Deno.test("per-service annotations override the flags either way", () => {
  const on = svc("a", { clusterIP: "172.16.0.11" }, { "kube-router.io/service.advertise.clusterip": "true" });
  const off = svc("b", { clusterIP: "172.16.0.12" }, {
    "kube-router.io/service.advertise.clusterip": "false",
  });
  assert.deepEqual(serviceVips(cfg(), [on, off], new Set()), ["172.16.0.11/32"]);
  assert.deepEqual(serviceVips(cfg("--advertise-cluster-ip"), [on, off], new Set()), ["172.16.0.11/32"]);
});

Deno.test("Local traffic policy VIPs are announced only from nodes with a local endpoint", () => {
  const local = svc("l", {
    clusterIP: "172.16.0.20",
    externalIPs: ["203.0.113.20"],
    externalTrafficPolicy: "Local",
  });
  const flags = cfg("--advertise-cluster-ip", "--advertise-external-ip");
  assert.deepEqual(
    serviceVips(flags, [local], new Set()),
    ["172.16.0.20/32"],
    "cluster IP follows internalTrafficPolicy",
  );
  assert.deepEqual(serviceVips(flags, [local], new Set(["default/l"])), [
    "172.16.0.20/32",
    "203.0.113.20/32",
  ]);
  const forced = svc("f", { clusterIP: "172.16.0.21" }, { "kube-router.io/service.local": "true" });
  assert.deepEqual(serviceVips(flags, [forced], new Set()), []);
});

Deno.test("headless, ExternalName, other proxies' services and LB ipMode Proxy are never announced", () => {
  const flags = cfg("--advertise-cluster-ip", "--advertise-loadbalancer-ip");
  const headless = svc("h", { clusterIP: "None" });
  const ext = svc("e", { type: "ExternalName", externalName: "example.com" });
  const other: V1Service = {
    ...svc("o", { clusterIP: "172.16.0.30" }),
    metadata: {
      namespace: "default",
      name: "o",
      labels: { "service.kubernetes.io/service-proxy-name": "cilium" },
    },
  };
  const proxied: V1Service = {
    ...svc("p", { clusterIP: "172.16.0.31" }),
    status: { loadBalancer: { ingress: [{ ip: "198.51.100.9", ipMode: "Proxy" }] } },
  };
  assert.deepEqual(serviceVips(flags, [headless, ext, other, proxied], new Set()), ["172.16.0.31/32"]);
});

Deno.test("local endpoints count ready or serving endpoints on this node, not terminating ones", () => {
  const slice = (name: string, eps: V1EndpointSlice["endpoints"]): V1EndpointSlice => ({
    addressType: "IPv4",
    metadata: { namespace: "default", name, labels: { "kubernetes.io/service-name": name.split("-")[0]! } },
    endpoints: eps,
  });
  const slices = [
    slice("a-1", [{ addresses: ["10.1.1.5"], nodeName: "n1", conditions: { ready: true } }]),
    slice("b-1", [{ addresses: ["10.1.2.5"], nodeName: "n2", conditions: { ready: true } }]),
    slice("c-1", [{
      addresses: ["10.1.1.6"],
      nodeName: "n1",
      conditions: { ready: false, serving: true, terminating: true },
    }]),
    slice("d-1", [{ addresses: ["10.1.1.7"], nodeName: "n1", conditions: { ready: false, serving: true } }]),
  ];
  assert.deepEqual([...servicesWithLocalEndpoints(slices, "n1")].sort(), ["default/a", "default/d"]);
});

Deno.test("import refuses VIP ranges, the default route and custom rejects, and accepts pod CIDRs", () => {
  const p = importPolicy(
    cfg("--service-cluster-ip-range=172.16.0.0/16", "--service-external-ip-range=203.0.113.0/24"),
    ["10.99.0.0/16"],
  );
  assert.equal(importAllowed(p, "10.1.2.0/24"), true);
  assert.equal(importAllowed(p, "fd00:1::/64"), true);
  assert.equal(importAllowed(p, "172.16.0.10/32"), false);
  assert.equal(importAllowed(p, "172.0.0.0/8"), false, "a covering prefix would swallow the VIP range");
  assert.equal(importAllowed(p, "203.0.113.5/32"), false);
  assert.equal(importAllowed(p, "0.0.0.0/0"), false);
  assert.equal(importAllowed(p, "::/0"), false);
  assert.equal(importAllowed(p, "10.99.3.0/24"), false);
  assert.equal(importAllowed(p, "garbage"), false);
});
