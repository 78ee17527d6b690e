/**
 * @module
 * The service proxy: Services and EndpointSlices to nftables (default) or IPVS.
 *
 * Status: the module definition, its resources, lifecycle and health are in place; the data plane
 * arrives with the service proxy issue.
 */
import { type ModuleDefinition, type ResourceKind, trackingModule } from "../../core/mod.ts";

export const proxyModule: ModuleDefinition = {
  name: "proxy",
  resources(): ResourceKind[] {
    // Nodes: NodePort services need this node's addresses.
    return ["services", "endpointslices", "nodes"];
  },
  syncPeriodMs: (config) => config.ipvsSyncPeriod,
  create(ctx) {
    return trackingModule(ctx, this.resources(ctx.config), (s) => {
      ctx.log.debug("proxy sync", { reason: s.reason, changed: s.changed });
      return Promise.resolve();
    });
  },
  cleanup(_config, log) {
    log.debug("proxy has created no kernel objects yet; nothing to remove");
    return Promise.resolve();
  },
};
