/**
 * @module
 * The router: pod networking across nodes. It peers over BGP (./bgp/), advertises the node's pod
 * CIDRs, installs routes learned from other nodes, writes the CNI config and masquerades pod egress.
 *
 * Status: the module definition, its resources, lifecycle and health are in place; the BGP speaker and
 * the kernel programming arrive with the router issue.
 */
import type { ResourceKind } from "../../core/bus.ts";
import { trackingModule } from "../../core/skeleton_module.ts";
import type { ModuleDefinition } from "../../core/module.ts";

export const routerModule: ModuleDefinition = {
  name: "router",
  resources(): ResourceKind[] {
    // Services and EndpointSlices too, as kube-router's routing controller: VIPs are announced per the
    // --advertise-* flags or per-service annotations, and Local services only where an endpoint runs.
    return ["nodes", "services", "endpointslices"];
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
