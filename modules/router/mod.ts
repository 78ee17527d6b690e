/**
 * @module
 * The router: pod networking across nodes. It peers over BGP (./bgp/), advertises the node's pod
 * CIDRs, installs routes learned from other nodes, writes the CNI config and masquerades pod egress.
 *
 * Status: the module definition, its resources, lifecycle and health are in place; the BGP speaker and
 * the kernel programming arrive with the router issue.
 */
import type { ResourceKind } from "../../core/bus.ts";
import type { Config } from "../../core/config.ts";
import { trackingModule } from "../../core/skeleton_module.ts";
import type { ModuleDefinition } from "../../core/module.ts";

export const routerModule: ModuleDefinition = {
  name: "router",
  resources(config: Config): ResourceKind[] {
    const r: ResourceKind[] = ["nodes"];
    // kube-router's routing controller watches Services and EndpointSlices itself to advertise VIPs.
    if (config.advertiseClusterIp || config.advertiseExternalIp || config.advertiseLoadbalancerIp) {
      r.push("services", "endpointslices");
    }
    return r;
  },
  syncPeriodMs: (config) => config.routesSyncPeriod,
  create(ctx) {
    return trackingModule(ctx, this.resources(ctx.config), (s) => {
      ctx.log.debug("router sync", { reason: s.reason, changed: s.changed });
      return Promise.resolve();
    });
  },
  cleanup(_config, log) {
    log.debug("router has created no kernel objects yet; nothing to remove");
    return Promise.resolve();
  },
};
