/**
 * @module
 * The firewall: NetworkPolicy to nftables.
 *
 * Status: the module definition, its resources, lifecycle and health are in place; the rules arrive
 * with the network policy issue.
 */
import { type ModuleDefinition, type ResourceKind, trackingModule } from "../../core/mod.ts";

export const firewallModule: ModuleDefinition = {
  name: "firewall",
  resources(): ResourceKind[] {
    return ["pods", "namespaces", "networkpolicies"];
  },
  syncPeriodMs: (config) => config.iptablesSyncPeriod,
  create(ctx) {
    return trackingModule(ctx, this.resources(ctx.config), (s) => {
      ctx.log.debug("firewall sync", { reason: s.reason, changed: s.changed });
      return Promise.resolve();
    });
  },
  cleanup(_config, log) {
    log.debug("firewall has created no kernel objects yet; nothing to remove");
    return Promise.resolve();
  },
};
