/** Service defaults and allocation in the store, as kube-apiserver's Service registry does them. */
import assert from "node:assert/strict";
import { isInvalid, type KubeObject, Store } from "../../../lab/apiserver/mod.ts";

const svc = (name: string, spec: KubeObject = {}): KubeObject => ({
  metadata: { name, namespace: "default" },
  spec: { selector: { app: name }, ports: [{ port: 80 }], ...spec },
});

function invalidWith(re: RegExp) {
  return (e: unknown) => isInvalid(e) && re.test((e as Error).message);
}

Deno.test("store defaults a ClientIP Service's affinity timeout to 10800 s and refuses a bad one", () => {
  const s = new Store({ serviceCidr: "172.16.0.0/16" });
  const a = s.create("services", svc("a", { sessionAffinity: "ClientIP" }));
  assert.deepEqual(a.spec.sessionAffinityConfig, { clientIP: { timeoutSeconds: 10800 } });
  const b = s.create(
    "services",
    svc("b", {
      sessionAffinity: "ClientIP",
      sessionAffinityConfig: { clientIP: { timeoutSeconds: 60 } },
    }),
  );
  assert.equal(b.spec.sessionAffinityConfig.clientIP.timeoutSeconds, 60);
  assert.throws(
    () =>
      s.create(
        "services",
        svc("c", {
          sessionAffinity: "ClientIP",
          sessionAffinityConfig: { clientIP: { timeoutSeconds: 90000 } },
        }),
      ),
    invalidWith(/timeoutSeconds: Invalid value: 90000/),
  );
  assert.throws(
    () => s.create("services", svc("d", { sessionAffinityConfig: { clientIP: { timeoutSeconds: 5 } } })),
    invalidWith(/must not be set when `sessionAffinity` is None/),
  );
  assert.equal(s.create("services", svc("e")).spec.sessionAffinityConfig, undefined);
});

Deno.test("store allocates a healthCheckNodePort only for LoadBalancer Services with Local external traffic", () => {
  const s = new Store({ serviceCidr: "172.16.0.0/16", nodePortRange: [30000, 30010] });
  const lb = s.create("services", svc("lb", { type: "LoadBalancer", externalTrafficPolicy: "Local" }));
  const hc = lb.spec.healthCheckNodePort;
  assert.ok(
    hc >= 30000 && hc <= 30010 && hc !== lb.spec.ports[0].nodePort,
    "a port of its own from the range",
  );
  const np = s.create("services", svc("np", { type: "NodePort", externalTrafficPolicy: "Local" }));
  assert.equal(np.spec.healthCheckNodePort, undefined, "NodePort Services get none (API reference)");
  assert.throws(
    () => s.create("services", svc("bad", { type: "NodePort", healthCheckNodePort: 30009 })),
    invalidWith(/healthCheckNodePort: Invalid value: 30009: may only be set when/),
  );
  // An update that leaves it out (kubectl apply) keeps it; switching to Cluster gives it back.
  const { healthCheckNodePort: _h, ...withoutHc } = structuredClone(lb.spec);
  const kept = s.update("services", { ...structuredClone(lb), spec: withoutHc });
  assert.equal(kept.spec.healthCheckNodePort, hc);
  const used = s.services.nodePorts.used;
  const cluster = s.patch("services", "default/lb", "merge", { spec: { externalTrafficPolicy: "Cluster" } });
  assert.equal(cluster.spec.healthCheckNodePort, undefined);
  assert.equal(s.services.nodePorts.used, used - 1, "the health check port is released");
  const chosen = s.create(
    "services",
    svc("chosen", {
      type: "LoadBalancer",
      externalTrafficPolicy: "Local",
      healthCheckNodePort: 30010,
    }),
  );
  assert.equal(chosen.spec.healthCheckNodePort, 30010);
  assert.throws(
    () => s.patch("services", "default/chosen", "merge", { spec: { healthCheckNodePort: 30009 } }),
    invalidWith(/healthCheckNodePort: Forbidden: field is immutable/),
  );
  s.delete("services", "default/chosen");
  assert.equal(s.services.nodePorts.check(30010, "x"), undefined, "deleting the Service frees its ports");
});

Deno.test("store gives dual-stack Services one cluster IP per family, as their ipFamilyPolicy asks", () => {
  const s = new Store({ serviceCidrs: ["172.16.0.0/16", "fd00:10:96::/108"] });
  const single = s.create("services", svc("single"));
  assert.deepEqual([single.spec.ipFamilies, single.spec.ipFamilyPolicy], [["IPv4"], "SingleStack"]);
  assert.equal(single.spec.clusterIPs.length, 1);
  const v6 = s.create("services", svc("v6", { ipFamilies: ["IPv6"] }));
  assert.match(v6.spec.clusterIP, /^fd00:10:96::[0-9a-f]+$/);
  const prefer = s.create("services", svc("prefer", { ipFamilyPolicy: "PreferDualStack" }));
  assert.deepEqual(prefer.spec.ipFamilies, ["IPv4", "IPv6"]);
  assert.match(prefer.spec.clusterIPs[0], /^172\.16\./);
  assert.match(prefer.spec.clusterIPs[1], /^fd00:10:96::/);
  const req6 = s.create(
    "services",
    svc("req6", { ipFamilyPolicy: "RequireDualStack", ipFamilies: ["IPv6"] }),
  );
  assert.deepEqual(req6.spec.ipFamilies, ["IPv6", "IPv4"]);
  const fixed = s.create(
    "services",
    svc("fixed", {
      ipFamilyPolicy: "RequireDualStack",
      clusterIPs: ["fd00:10:96::99", "172.16.9.9"],
    }),
  );
  assert.deepEqual([fixed.spec.clusterIP, fixed.spec.ipFamilies], ["fd00:10:96::99", ["IPv6", "IPv4"]]);
  assert.throws(
    () => s.create("services", svc("two", { ipFamilies: ["IPv4", "IPv6"] })),
    invalidWith(/must be RequireDualStack or PreferDualStack when multiple IP families/),
  );
  // Upgrade to dual-stack adds the second address; downgrading gives it back.
  const up = s.patch("services", "default/single", "merge", { spec: { ipFamilyPolicy: "PreferDualStack" } });
  assert.equal(up.spec.clusterIPs.length, 2);
  assert.equal(up.spec.clusterIPs[0], single.spec.clusterIP, "the primary address stays");
  const v6Used = s.services.clusterIps("IPv6")!.used;
  const down = s.patch("services", "default/single", "merge", {
    spec: { ipFamilyPolicy: "SingleStack", ipFamilies: ["IPv4"], clusterIPs: [single.spec.clusterIP] },
  });
  assert.deepEqual(down.spec.clusterIPs, [single.spec.clusterIP]);
  assert.equal(s.services.clusterIps("IPv6")!.used, v6Used - 1);
  assert.throws(
    () => s.patch("services", "default/v6", "merge", { spec: { ipFamilies: ["IPv4"], clusterIPs: null } }),
    invalidWith(/primary ipFamily can not be changed/),
  );
});

Deno.test("store refuses dual-stack and foreign families on a single-stack cluster with kube-apiserver's words", () => {
  const s = new Store({ serviceCidr: "172.16.0.0/16" });
  assert.throws(
    () => s.create("services", svc("a", { ipFamilyPolicy: "RequireDualStack" })),
    invalidWith(/"RequireDualStack": this cluster is not configured for dual-stack services/),
  );
  assert.throws(
    () => s.create("services", svc("b", { ipFamilies: ["IPv6"] })),
    invalidWith(/spec.ipFamilies\[0\]: Invalid value: "IPv6": not configured on this cluster/),
  );
  const p = s.create("services", svc("c", { ipFamilyPolicy: "PreferDualStack" }));
  assert.deepEqual([p.spec.ipFamilies, p.spec.clusterIPs.length], [["IPv4"], 1]);
  assert.throws(
    () => s.create("services", svc("d", { clusterIP: "10.0.0.1" })),
    invalidWith(/provided IP is not in the valid range. The range of valid IPs is 172.16.0.0\/16/),
  );
  assert.equal(s.services.clusterIps("IPv4")!.used, 1, "refused Services took nothing");
});

Deno.test("store keeps a namespace Terminating until its last terminating pod is gone", () => {
  const s = new Store({ gracefulPodDeletion: true });
  s.create("namespaces", { metadata: { name: "x" } });
  assert.ok(s.tryGet("serviceaccounts", "x/default"), "a new namespace gets its default ServiceAccount");
  s.create("pods", {
    metadata: { name: "p", namespace: "x" },
    spec: { nodeName: "n1", containers: [{ name: "c", image: "busybox" }] },
  });
  s.create("services", svc("s"));
  s.delete("namespaces", "x");
  assert.equal(s.get("namespaces", "x").status.phase, "Terminating");
  assert.ok(s.get("pods", "x/p").metadata!.deletionTimestamp);
  assert.equal(s.tryGet("serviceaccounts", "x/default"), undefined);
  s.delete("pods", "x/p", { gracePeriodSeconds: 0 });
  assert.equal(s.tryGet("namespaces", "x"), undefined, "gone with its last pod");
  s.create("namespaces", { metadata: { name: "y" } });
  s.delete("namespaces", "y");
  assert.equal(s.tryGet("namespaces", "y"), undefined, "an empty namespace goes at once");
});

Deno.test("store gives a pod the default ServiceAccount unless it names one, as the admission plugin does", () => {
  const s = new Store();
  const pod = (name: string, spec: KubeObject = {}) =>
    s.create("pods", { metadata: { name }, spec: { containers: [{ name: "c", image: "x" }], ...spec } });
  assert.deepEqual([pod("a").spec.serviceAccountName, pod("a2").spec.serviceAccount], ["default", "default"]);
  assert.equal(pod("b", { serviceAccountName: "kube-router" }).spec.serviceAccount, "kube-router");
  assert.equal(pod("c", { serviceAccount: "legacy" }).spec.serviceAccountName, "legacy");
});
