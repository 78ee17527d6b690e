/**
 * The IPVS backend over fakes (IPVS, nftables, rtnetlink, sysctl, conntrack) with a fake clock: one
 * harness for the backend's and the DSR tests. Node n1 (pod CIDR 10.1.1.0/24, address 192.168.1.100),
 * service cluster IP range 172.16.0.0/16, the periodic sync every 5 min.
 */
import type { V1Node } from "@kubernetes/client-node";
import { FakeConntrack, FakeIpvs, FakeNftables, FakeRtnetlink, FakeSysctl } from "../../../ffi/mod.ts";
import { type DsrPods, DUMMY_IF, IpvsProxy } from "../../../modules/proxy/mod.ts";
import { proxyHarness } from "./_harness.ts";

export const node: V1Node = {
  metadata: { name: "n1" },
  spec: { podCIDR: "10.1.1.0/24", podCIDRs: ["10.1.1.0/24"] },
  status: { addresses: [{ type: "InternalIP", address: "192.168.1.100" }] },
};

export async function ipvsSetup(opts: { flags?: string[]; sysctl?: FakeSysctl; dsrPods?: DsrPods } = {}) {
  const { clock, sink, source, t, sync } = proxyHarness([
    "--service-proxy-backend=ipvs",
    ...(opts.flags ?? []),
  ]);
  const ipvs = new FakeIpvs();
  const nft = new FakeNftables();
  const rtnl = new FakeRtnetlink();
  const sysctl = opts.sysctl ?? new FakeSysctl();
  const proxy = new IpvsProxy(t.ctx, {
    ipvs,
    nft,
    rtnl,
    sysctl,
    conntrack: new FakeConntrack(),
    serveHealthChecks: false,
    ...(opts.dsrPods ? { dsrPods: opts.dsrPods } : {}),
  });
  source.start(["services", "endpointslices", "nodes"]);
  await proxy.start();
  source.put("nodes", node);
  /** The addresses on kube-dummy-if, `address/prefix`, sorted. */
  const vips = async () => {
    const link = await rtnl.linkGet(DUMMY_IF);
    return link
      ? (await rtnl.addrList({ index: link.index })).map((a) => `${a.address}/${a.prefix}`).sort()
      : [];
  };
  const stop = async () => {
    await proxy.stop();
    await t.stop();
  };
  return { clock, sink, source, t, ipvs, nft, rtnl, sysctl, proxy, sync, vips, stop, metrics: t.ctx.metrics };
}
