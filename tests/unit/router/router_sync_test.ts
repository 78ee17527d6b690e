/**
 * The router's partial sync: a Service or EndpointSlice change re-announces VIPs without the whole
 * sync's kernel reads, while node changes still run the whole sync. Kernel reads are counted on the
 * fakes (FakeRtnetlink's address, link and route dumps; FakeSysctl's reads).
 */
import assert from "node:assert/strict";
import type { V1EndpointSlice, V1Node, V1Service } from "@kubernetes/client-node";
import { loadConfig } from "../../../core/config.ts";
import { FakeFdb, FakeNftables, FakeRtnetlink, FakeSysctl } from "../../../ffi/mod.ts";
import { MemoryNetwork } from "../../../modules/router/bgp/transport.ts";
import { Router } from "../../../modules/router/mod.ts";
import { moduleContext } from "../../_support/kube_source.ts";

const node = (annotations: Record<string, string> = {}): V1Node => ({
  metadata: { name: "n1", annotations },
  spec: { podCIDR: "10.1.1.0/24", podCIDRs: ["10.1.1.0/24"] },
  status: { addresses: [{ type: "InternalIP", address: "192.168.77.1" }] },
});

const service = (
  name: string,
  ip: string,
  spec: Partial<NonNullable<V1Service["spec"]>> = {},
): V1Service => ({
  metadata: { namespace: "default", name },
  spec: { clusterIP: ip, clusterIPs: [ip], ports: [{ port: 80 }], ...spec },
});

const slice = (svc: string, ready: boolean): V1EndpointSlice => ({
  addressType: "IPv4",
  metadata: { namespace: "default", name: `${svc}-x`, labels: { "kubernetes.io/service-name": svc } },
  ports: [{ name: "", port: 8080, protocol: "TCP" }],
  endpoints: [{ addresses: ["10.1.1.5"], nodeName: "n1", conditions: { ready } }],
});

/** Wraps methods so their calls are counted. */
function count<T extends object>(obj: T, names: (keyof T & string)[], counts: Record<string, number>): T {
  for (const n of names) {
    const f = obj[n] as (...a: unknown[]) => unknown;
    counts[n] = 0;
    (obj as Record<string, unknown>)[n] = (...a: unknown[]) => {
      counts[n]!++;
      return f.apply(obj, a);
    };
  }
  return obj;
}

async function eventually(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

async function setup() {
  const rtnl = new FakeRtnetlink();
  await rtnl.linkAdd({ kind: "veth", name: "eth0", peer: "eth0p" });
  await rtnl.linkSet("eth0", { up: true });
  const eth0 = (await rtnl.linkGet("eth0"))!;
  await rtnl.addrAdd({ family: 4, index: eth0.index, address: "192.168.77.1", prefix: 24 });
  const reads: Record<string, number> = {};
  count(rtnl, ["addrList", "linkList", "routeList"], reads);
  const sysctl = count(new FakeSysctl({ "net.ipv4.ip_forward": 0 }), ["get"], reads);
  const config = loadConfig([
    "--hostname-override=n1",
    "--enable-cni=false",
    "--bgp-admin-port=0",
    "--advertise-cluster-ip",
    "--advertise-external-ip",
  ]);
  const t = moduleContext({ config });
  t.source.put("nodes", node());
  t.source.put("services", service("web", "10.96.0.10"));
  const router = new Router(t.ctx, {
    rtnl,
    nft: new FakeNftables(),
    sysctl,
    fdb: new FakeFdb(rtnl),
    bgpTransport: new MemoryNetwork().transportFor("192.168.77.1"),
  });
  await router.start();
  await eventually("the first sync", () => t.syncs.ok >= 1 && router.speaker !== undefined);
  const vips = () =>
    new Set(
      router.speaker!.routes("ipv4-unicast").map((r) => r.prefix).filter((p) =>
        p.startsWith("10.96.") || p.startsWith("203.")
      ),
    );
  const stop = async () => {
    await t.stop();
    await router.stop();
  };
  return { t, router, reads, vips, stop };
}

const settle = () => new Promise((r) => setTimeout(r, 300));

Deno.test({
  name: "Service and EndpointSlice changes re-announce VIPs without the whole sync's kernel reads",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const { t, reads, vips, stop } = await setup();
    try {
      assert.deepEqual([...vips()], ["10.96.0.10/32"]);
      assert.ok(reads.addrList! >= 1 && reads.get! >= 1, "the first sync is whole");
      const before = { ...reads };
      const syncs = t.syncs.ok;

      t.source.put("services", service("api", "10.96.0.11"));
      await eventually("the new VIP", () => vips().has("10.96.0.11/32"));
      // A Local Service's external IP is announced only once its local endpoint is ready.
      t.source.put(
        "services",
        service("loc", "10.96.0.12", { externalIPs: ["203.0.113.9"], externalTrafficPolicy: "Local" }),
      );
      t.source.put("endpointslices", slice("loc", false));
      await eventually("the Local Service's cluster IP", () => vips().has("10.96.0.12/32"));
      await settle();
      assert.ok(!vips().has("203.0.113.9/32"), "no ready local endpoint yet");
      t.source.put("endpointslices", slice("loc", true));
      await eventually("the Local external IP", () => vips().has("203.0.113.9/32"));
      t.source.delete("endpointslices", "default/loc-x");
      await eventually("the Local external IP withdrawn", () => !vips().has("203.0.113.9/32"));
      t.source.delete("services", "default/web");
      await eventually("the deleted Service's VIP withdrawn", () => !vips().has("10.96.0.10/32"));
      await settle();

      assert.ok(t.syncs.ok > syncs, "the changes ran syncs");
      assert.deepEqual(reads, before, "no address, link or route dump and no sysctl read");
      assert.deepEqual([...vips()].sort(), ["10.96.0.11/32", "10.96.0.12/32"]);
    } finally {
      await stop();
    }
  },
});

Deno.test({
  name: "a node change runs the whole sync, which announces the same VIPs the partial syncs left",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const { t, reads, vips, stop } = await setup();
    try {
      t.source.put("services", service("api", "10.96.0.11"));
      t.source.put("services", service("dup", "10.96.0.11")); // two Services sharing one IP
      await eventually("the new VIP", () => vips().has("10.96.0.11/32"));
      t.source.delete("services", "default/dup");
      await settle();
      assert.ok(vips().has("10.96.0.11/32"), "still given by default/api");
      const partial = [...vips()].sort();
      const before = { ...reads };

      t.source.put("nodes", node({ "kube-router.io/node.bgp.communities": "64512:1" }));
      await eventually("the whole sync's kernel reads", () => reads.addrList! > before.addrList!);
      await eventually("the sysctl read", () => reads.get! > before.get!);
      assert.deepEqual([...vips()].sort(), partial);
    } finally {
      await stop();
    }
  },
});
