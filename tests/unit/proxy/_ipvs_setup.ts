/**
 * The IPVS backend over fakes (IPVS, nftables, rtnetlink, sysctl, conntrack) with a fake clock: one
 * harness for the backend's and the DSR tests. Node n1 (pod CIDR 10.1.1.0/24, address 192.168.1.100),
 * service cluster IP range 172.16.0.0/16, the periodic sync every 5 min.
 */
import assert from "node:assert/strict";
import type { V1Node } from "@kubernetes/client-node";
import { Bus, FakeClock, getLogger, loadConfig } from "../../../core/mod.ts";
import { MemorySink } from "../../../core/log.ts";
import { FakeConntrack, FakeIpvs, FakeNftables, FakeRtnetlink, FakeSysctl } from "../../../ffi/mod.ts";
import { type DsrPods, DUMMY_IF, IpvsProxy } from "../../../modules/proxy/mod.ts";
import { MemorySource, moduleContext } from "../../_support/kube_source.ts";

export const node: V1Node = {
  metadata: { name: "n1" },
  spec: { podCIDR: "10.1.1.0/24", podCIDRs: ["10.1.1.0/24"] },
  status: { addresses: [{ type: "InternalIP", address: "192.168.1.100" }] },
};

export async function ipvsSetup(opts: { flags?: string[]; sysctl?: FakeSysctl; dsrPods?: DsrPods } = {}) {
  const clock = new FakeClock();
  const sink = new MemorySink();
  const source = new MemorySource(new Bus(), { synced: false });
  const t = moduleContext({
    config: loadConfig([
      "--hostname-override=n1",
      "--service-cluster-ip-range=172.16.0.0/16",
      "--service-proxy-backend=ipvs",
      ...(opts.flags ?? []),
    ]),
    source,
    clock,
    log: getLogger({}, sink),
    periodMs: 300_000,
  });
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
  /** Advances the clock until a sync ran; throws its error. */
  const sync = async () => {
    const before = t.syncs.ok + t.syncs.failed;
    for (let i = 0; i < 100 && t.syncs.ok + t.syncs.failed === before; i++) await clock.advance(50);
    assert.ok(t.syncs.ok + t.syncs.failed > before, "no sync ran");
    if (t.syncs.lastError) throw t.syncs.lastError;
  };
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
