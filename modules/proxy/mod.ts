/**
 * @module
 * The service proxy: Services and EndpointSlices to nftables (the `inet kube_router_proxy` table), in
 * kube-proxy's nftables shape — one verdict-map lookup per packet whatever the number of Services.
 * See nft_render.ts for the ruleset and proxy.ts for how it is kept in sync.
 */
import type { ModuleDefinition, ResourceKind } from "../../core/mod.ts";
import { Conntrack, isNotFound, Nftables, NftSetCounters } from "../../ffi/mod.ts";
import { NftTransaction } from "../../ffi/mod.ts";
import { PROXY_TABLE } from "./nft_render.ts";
import { type ProxyDeps, type ProxyNft, ServiceProxy } from "./proxy.ts";
import { cleanupIpvs, createIpvsProxy, ipvsPreflight } from "./ipvs_module.ts";

export { ServiceProxy } from "./proxy.ts";
export type { ProxyDeps, ProxyNft } from "./proxy.ts";
export {
  addDeferred,
  diffService,
  MASQUERADE_MARK,
  PROXY_TABLE,
  type ProxyNodeContext,
  renderBase,
  type RenderedService,
  renderService,
  SharedObjects,
} from "./nft_render.ts";
export { healthResponse } from "./health_server.ts";
export {
  DSR_RULE_PRIORITY,
  DSR_TABLE,
  dsrRule,
  DUMMY_IF,
  IPVS_SYSCTLS,
  IpvsProxy,
  type IpvsProxyDeps,
} from "./ipvs_backend.ts";
export {
  DSR_TUNNEL_IF,
  DsrPodError,
  type DsrPods,
  type DsrPodsDeps,
  kernelDsrPodsDeps,
  NetnsDsrPods,
  type PodRtnl,
} from "./dsr_pods.ts";
export { ipvsPreflight, IpvsUnavailableError, openIpvs } from "./ipvs_module.ts";
export {
  assignFwmarks,
  DSR_INDEX_MASK,
  dsrKey,
  type IpvsPlan,
  mergePlans,
  planService,
} from "./ipvs_plan.ts";
export { IpvsReconciler } from "./ipvs_sync.ts";
export { type KernelReader, type KernelState, listKernelState, parseKernelState } from "./kernel_state.ts";
export { nodeContext } from "./node_context.ts";

/**
 * The proxy's nftables context: transactions over 256 KiB of text (the chunks of a full sync) run in a
 * child `nft -f -`, so parsing them, and the cache of the whole table libnftables builds for them, never
 * grow the agent (bench/proxy_scale.ts: at 3,000 Services × 10 endpoints 119 MiB of RSS instead of 193);
 * the small transactions of partial syncs stay in process, without a process start.
 */
export const PROXY_NFT_OPTIONS = { outOfProcessAboveBytes: 1 << 18 } as const;

function realDeps(): ProxyDeps & { close(): void } {
  const nft = new Nftables(PROXY_NFT_OPTIONS);
  const conntrack = new Conntrack();
  // Its netlink socket is opened on the first read (only with --metrics-port, on a scrape).
  const setCounters = new NftSetCounters();
  return {
    nft,
    conntrack,
    setCounters,
    close() {
      nft.close();
      conntrack.close();
      setCounters.close();
    },
  };
}

/** Removes exactly the proxy's table. Equivalent to: `nft delete table inet kube_router_proxy`. */
export async function removeProxyTable(nft: ProxyNft): Promise<boolean> {
  const tx = new NftTransaction("inet", PROXY_TABLE);
  tx.delete({ table: {} });
  try {
    await nft.run(tx);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

export const proxyModule: ModuleDefinition = {
  name: "proxy",
  resources(): ResourceKind[] {
    // Nodes: this node's addresses (NodePorts) and zone (topology), every node's pod CIDRs (masquerade).
    return ["services", "endpointslices", "nodes"];
  },
  syncPeriodMs: (config) => config.ipvsSyncPeriod,
  preflight: (config) => config.serviceProxyBackend === "ipvs" ? ipvsPreflight() : undefined,
  create(ctx) {
    // --service-proxy-backend=ipvs: kube-router's IPVS data plane (ipvs_backend.ts).
    if (ctx.config.serviceProxyBackend === "ipvs") return createIpvsProxy(ctx);
    const deps = realDeps();
    const proxy = new ServiceProxy(ctx, deps);
    return {
      start: () => proxy.start(),
      stop: async () => {
        await proxy.stop();
        deps.close();
      },
    };
  },
  async cleanup(config, log) {
    const nft = new Nftables();
    try {
      const removed = await removeProxyTable(nft);
      log.info(removed ? "proxy table removed" : "proxy table was not there", {
        nft_table: `inet ${PROXY_TABLE}`,
      });
    } finally {
      nft.close();
    }
    await cleanupIpvs(config, log);
  },
};
