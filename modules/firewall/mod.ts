/**
 * @module
 * The firewall: Kubernetes NetworkPolicy (networking.k8s.io/v1) enforced for this node's pods in the
 * nftables table `inet kube_router_firewall`. policy_compiler.ts holds the semantics (pure),
 * nft_render.ts the nftables layout and the sync transactions, firewall.ts the module instance.
 */
import type { ModuleDefinition, ResourceKind } from "../../core/mod.ts";
import { Nftables, NftTransaction, ProcSysctl } from "../../ffi/mod.ts";
import { Firewall, FIREWALL_TABLE } from "./firewall.ts";
import { FIREWALL_FAMILY } from "./nft_render.ts";

export {
  Firewall,
  FIREWALL_TABLE,
  type FirewallDeps,
  type FirewallNft,
  readDropCounters,
} from "./firewall.ts";
export { compileFirewall, type FirewallModel } from "./policy_compiler.ts";
export { renderFirewall } from "./nft_render.ts";

export const firewallModule: ModuleDefinition = {
  name: "firewall",
  resources(): ResourceKind[] {
    // Nodes for this node's pod CIDRs (the addresses of local pods the agent does not know yet).
    return ["pods", "namespaces", "networkpolicies", "nodes"];
  },
  syncPeriodMs: (config) => config.iptablesSyncPeriod,
  create(ctx) {
    return new Firewall(ctx, { nft: new Nftables(), sysctl: new ProcSysctl() });
  },
  async cleanup(_config, log) {
    const nft = new Nftables();
    try {
      // Exactly the firewall's table; destroy never fails when it is absent.
      await nft.run(new NftTransaction(FIREWALL_FAMILY, FIREWALL_TABLE).destroy({ table: {} }));
      log.info("firewall objects removed", { nft_table: `${FIREWALL_FAMILY} ${FIREWALL_TABLE}` });
    } finally {
      nft.close();
    }
  },
};
