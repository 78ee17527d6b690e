/**
 * @module
 * The router: pod networking across nodes. It peers over BGP (./bgp/) with the other nodes and any
 * external routers, announces the node's pod CIDRs (and service VIPs to external peers), installs routes
 * learned from other nodes, writes the CNI config and masquerades pod egress.
 */
import { type ModuleDefinition, NFT_TABLES, type ResourceKind } from "../../core/mod.ts";
import { FouNetlink, NetlinkFdb, Nftables, ProcSysctl, Rtnetlink } from "../../ffi/mod.ts";
import { egressCleanupTransactions } from "./egress.ts";
import { Router, type RouterDeps } from "./router.ts";
import { RouteSync } from "./route_sync.ts";
import { Overlay, VXLAN_PORT } from "./overlay.ts";
import { IpTunnels } from "./tunnels.ts";

export { Router, type RouterDeps } from "./router.ts";
export { ROUTER_ROUTE_PROTOCOL } from "./route_sync.ts";
export { bgpCli } from "./bgp/mod.ts";

function realDeps(): RouterDeps {
  return { rtnl: new Rtnetlink(), nft: new Nftables(), sysctl: new ProcSysctl(), fdb: new NetlinkFdb() };
}

export const routerModule: ModuleDefinition = {
  name: "router",
  resources(): ResourceKind[] {
    // Services and EndpointSlices too, as kube-router's routing controller: VIPs are announced per the
    // --advertise-* flags or per-service annotations, and Local services only where an endpoint runs.
    return ["nodes", "services", "endpointslices"];
  },
  syncPeriodMs: (config) => Math.min(config.routesSyncPeriod, config.injectedRoutesSyncPeriod),
  create(ctx) {
    return new Router(ctx, realDeps());
  },
  async cleanup(config, log) {
    const deps = realDeps();
    const tunnels = new IpTunnels(deps.rtnl, () => new FouNetlink(), log, {
      encap: config.overlayEncap === "fou" ? "fou" : "ipip",
      port: config.overlayEncapPort,
    });
    try {
      const removed = await new RouteSync(deps.rtnl, log).removeAll();
      await new Overlay(deps.rtnl, deps.fdb, log, { port: VXLAN_PORT }).cleanup();
      // IPIP/FoU tunnels (tun-*), their table-77 routes and rules, and the FoU port.
      await tunnels.cleanup();
      for (const tx of egressCleanupTransactions()) await deps.nft.run(tx);
      log.info("router objects removed", {
        routes: removed,
        nft_tables: `inet ${NFT_TABLES.router}, inet ${NFT_TABLES.legacyRouter}`,
        tunnels: "kube-vxlan, kube-vxlan6, tun-*",
      });
    } finally {
      tunnels.close();
      deps.rtnl.close();
      deps.nft.close();
      deps.fdb.close();
    }
  },
};
