/**
 * Conformance of what the service proxy writes: its whole ruleset (base chains, typeof endpoint maps keyed
 * by numgen and jhash slots, shared pick chains, dual-stack Services with every feature that changes the
 * rules) applied to FakeNftables and to the kernel reads back the same,
 * rule for rule, so the proxy's unit tests on the fake's dump say what the kernel holds; and the kernel's
 * JSON listing parses back to exactly the elements the proxy rendered (what its full resync diffs against).
 */
import assert from "node:assert/strict";
import type { ServiceInfo } from "../../../core/mod.ts";
import { ep, nodeCtx } from "../proxy/_fixtures.ts";
import { FakeNftables, type NftRuleset, NftTransaction } from "../../../ffi/mod.ts";
import {
  diffService,
  listKernelState,
  parseKernelState,
  PROXY_TABLE,
  type ProxyNodeContext,
  renderBase,
  type RenderedService,
  renderService,
  SharedObjects,
} from "../../../modules/proxy/mod.ts";
import { counterSet } from "../../../modules/proxy/nft_render.ts";
import { parseCounters } from "../../../modules/proxy/service_counters.ts";
import type { Case } from "./_conformance.ts";
import { dumpOf } from "./_nft_conformance.ts";

const ctx = nodeCtx;

function svc(name: string, o: Partial<ServiceInfo>): ServiceInfo {
  return {
    key: `default/${name}`,
    namespace: "default",
    name,
    type: "ClusterIP",
    clusterIPs: [],
    externalIPs: [],
    loadBalancerIPs: [],
    loadBalancerSourceRanges: [],
    externalTrafficPolicy: "Cluster",
    internalTrafficPolicy: "Cluster",
    annotations: {},
    problems: [],
    ports: [],
    ...o,
  };
}

const eps = [
  ep("10.1.1.5", { local: true }),
  ep("10.1.2.5"),
  ep("fd00:1:1::5", { local: true }),
  ep("fd00:1:2::5"),
];
const services = (): ServiceInfo[] => [
  svc("web", {
    clusterIPs: ["172.16.0.10", "fd00:172::10"],
    sessionAffinityTimeoutSeconds: 600,
    ports: [{ name: "http", protocol: "TCP", port: 80, endpoints: eps }],
  }),
  svc("lb", {
    type: "LoadBalancer",
    clusterIPs: ["172.16.0.11"],
    externalIPs: ["203.0.113.5"],
    loadBalancerIPs: ["198.51.100.7"],
    loadBalancerSourceRanges: ["192.168.1.0/24"],
    externalTrafficPolicy: "Local",
    healthCheckNodePort: 32000,
    annotations: { "kube-router.io/service.scheduler": "sh" },
    ports: [
      { name: "http", protocol: "TCP", port: 80, nodePort: 30080, endpoints: eps },
      { name: "dns", protocol: "UDP", port: 53, nodePort: 30053, endpoints: eps },
      { name: "sig", protocol: "SCTP", port: 3868, nodePort: 30068, endpoints: [] },
    ],
  }),
  svc("plain", {
    type: "NodePort",
    clusterIPs: ["172.16.0.13", "fd00:172::13"],
    ports: [
      { name: "http", protocol: "TCP", port: 80, nodePort: 30081, endpoints: [...eps, ep("10.1.3.5")] },
      { name: "dns", protocol: "UDP", port: 53, nodePort: 30054, endpoints: eps },
    ],
  }),
  svc("itp", {
    clusterIPs: ["172.16.0.12"],
    internalTrafficPolicy: "Local",
    ports: [{ name: "", protocol: "TCP", port: 8080, endpoints: [ep("10.1.2.6")] }],
  }),
];

async function program(n: NftRuleset, nctx: ProxyNodeContext): Promise<RenderedService[]> {
  const base = new NftTransaction("inet", PROXY_TABLE);
  renderBase(base, nctx);
  await n.run(base);
  const out: RenderedService[] = [];
  const shared = new SharedObjects();
  for (const s of services()) {
    const r = renderService(s, nctx);
    const tx = new NftTransaction("inet", PROXY_TABLE);
    diffService(tx, undefined, r, { shared });
    await n.run(tx);
    shared.commit(undefined, r);
    out.push(r);
  }
  return out;
}

export const nftProxyCases: Case<NftRuleset>[] = [
  {
    name:
      "the service proxy's ruleset reads back as the fake holds it, and its listing parses to the rendered elements",
    fn: async (n) => {
      const contexts: ProxyNodeContext[] = [
        ctx,
        { ...ctx, nodePortBindOnAllIp: true, masqueradeAll: true },
        { ...ctx, serviceCounters: true },
      ];
      for (const nctx of contexts) {
        const rendered = await program(n, nctx);
        const fake = new FakeNftables();
        await program(fake, nctx);
        assert.equal(await dumpOf(n), await dumpOf(fake));
        // Listed as the proxy's full resync lists it: the table terse, then each map and set on its own.
        const table = { family: "inet", name: PROXY_TABLE } as const;
        const terse = await n.list({ table }, { terse: true });
        const objs = [...terse];
        for (const o of terse) {
          const kind = "map" in o ? "map" : "set" in o ? "set" : undefined;
          if (!kind) continue;
          const ref = { family: "inet", table: PROXY_TABLE, name: (o[kind] as { name: string }).name };
          objs.push(...await n.list(kind === "map" ? { map: ref } : { set: ref }));
        }
        const kernel = parseKernelState(objs);
        const want = new Map<string, string>();
        for (const r of rendered) for (const [k, v] of r.elements) want.set(k, v);
        for (const r of rendered) for (const k of r.sharedElements) want.set(k, "");
        const got = new Map([...kernel.elements].filter(([k]) => !/^(nodeport_ips|pod_cidrs)_/.test(k)));
        assert.deepEqual(new Map([...got].sort()), new Map([...want].sort()));
        // The resync's own reading (names, then each set's elements streamed: netlink on the kernel, an
        // interval set through the JSON listing) finds exactly what the JSON listing holds.
        const streamed = await listKernelState(n, table, () => false);
        assert.deepEqual(new Map([...streamed.elements].sort()), new Map([...kernel.elements].sort()));
        assert.deepEqual([...streamed.chains].sort(), [...kernel.chains].sort());
        assert.deepEqual([...streamed.serviceSets].sort(), [...kernel.serviceSets].sort());
        assert.ok([...streamed.elements.keys()].some((id) => id.startsWith("pod_cidrs_v4|")));
        for (const r of rendered) for (const c of r.chains.keys()) assert.ok(kernel.chains.has(c), c);
        for (const r of rendered) for (const c of r.shared.keys()) assert.ok(kernel.chains.has(c), c);
        assert.deepEqual(
          [...kernel.serviceSets].sort(),
          rendered.flatMap((r) => [...r.sets.keys()]).sort(),
        );
        // The counted sets list with a counter on every element, keyed as the Services were counted.
        for (const f of [4, 6] as const) {
          const ref = { family: "inet", table: PROXY_TABLE, name: counterSet("in", f) };
          assert.deepEqual(
            [...parseCounters(await n.list({ set: ref }))].sort(),
            rendered.flatMap((r) => r.counters.filter((k) => k.family === f))
              .map((k) => [`${k.vip} . ${k.protocol} . ${k.port}`, { packets: 0, bytes: 0 }]).sort(),
          );
        }
        // A full resync over it: the base (typeof maps declared again) and every shared chain rewritten
        // in one transaction, naming maps libnftables now reads back from the kernel.
        const again = new NftTransaction("inet", PROXY_TABLE);
        renderBase(again, nctx);
        const kernelElements = new Map(kernel.elements);
        for (const r of rendered) diffService(again, undefined, r, { rewrite: true, kernelElements });
        const before = await dumpOf(n);
        await n.run(again);
        assert.equal(await dumpOf(n), before);
        await n.run(new NftTransaction("inet", PROXY_TABLE).delete({ table: {} }));
      }
    },
  },
];
