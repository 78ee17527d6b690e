/**
 * The nftables service proxy over the fake nftables and conntrack with a fake clock: one harness for the
 * proxy's unit tests (proxy_test, full_resync_test, service_counters_test, claim_moves_test). Node n1
 * (pod CIDR 10.1.1.0/24, address 192.168.1.100) unless another is given, service cluster IP range
 * 172.16.0.0/16, the periodic full resync every 5 min.
 */
import assert from "node:assert/strict";
import type { V1Node } from "@kubernetes/client-node";
import {
  type ConntrackEntry,
  FakeConntrack,
  FakeNftables,
  NftError,
  type NftListOptions,
  type NftListTarget,
  type NftSetInfo,
  type NftTransaction,
} from "../../../ffi/mod.ts";
import { PROXY_TABLE, ServiceProxy } from "../../../modules/proxy/mod.ts";
import { proxyHarness } from "./_harness.ts";

/**
 * ProxyNft over the fake, recording what it is asked: the text of every transaction applied, and
 * listings of the counted sets. It can be made to reject a transaction holding a given text (as the
 * kernel would, naming the operation) and to fail those listings.
 */
export class TestNft {
  fake = new FakeNftables();
  /** Transactions applied. */
  runs = 0;
  /** Their nft text. */
  texts: string[] = [];
  rejectText: string | undefined;
  /** The rejection does not say which operation failed (nft names no line): the proxy must halve. */
  rejectUnnamed = false;
  /** Thrown by the next transaction instead of applying it (a failure that is not the kernel's refusal). */
  throwOnce: Error | undefined;
  failLists = false;
  /** Listings of the counted sets (service_stats_*), each asserted to be asked out of process. */
  counterLists = 0;

  async run(tx: NftTransaction): Promise<void> {
    const fail = this.throwOnce;
    if (fail) {
      this.throwOnce = undefined;
      throw fail;
    }
    if (this.rejectText) {
      const i = tx.operations.findIndex((o) => JSON.stringify(o).includes(this.rejectText!));
      if (i >= 0) {
        throw new NftError(
          1,
          "Error: Could not process rule: Invalid argument",
          this.rejectUnnamed ? {} : { operations: [i] },
        );
      }
    }
    await this.fake.run(tx);
    this.runs++;
    this.texts.push(tx.render());
  }
  list(t: NftListTarget, o?: NftListOptions) {
    if ("set" in t && t.set.name.startsWith("service_stats")) {
      assert.equal(o?.outOfProcess, true, "counted sets are listed out of process");
      this.counterLists++;
      if (this.failLists) {
        return Promise.reject(new NftError(1, "Error: Could not process rule: Invalid argument"));
      }
    }
    return this.fake.list(t, o);
  }
  listLayout(table: { family: string; name: string }) {
    return this.fake.listLayout(table);
  }
  listElements(
    table: { family: string; name: string },
    set: NftSetInfo,
    each: (key: string, value: string) => void,
  ) {
    return this.fake.listElements(table, set, each);
  }
  /** Sets an element's counter in the proxy's table (as traffic would). */
  count(set: string, key: string[], packets: number, bytes: number) {
    this.fake.count({ family: "inet", table: PROXY_TABLE, set }, key, packets, bytes);
  }
}

export const defaultNode: V1Node = {
  metadata: { name: "n1", labels: {} },
  spec: { podCIDR: "10.1.1.0/24", podCIDRs: ["10.1.1.0/24"] },
  status: { addresses: [{ type: "InternalIP", address: "192.168.1.100" }] },
};

export interface ProxySetupOptions {
  /** Flags after `--hostname-override=n1 --service-cluster-ip-range=172.16.0.0/16`. */
  flags?: string[];
  /** The node object put before anything else. */
  node?: V1Node;
  /** Conntrack entries the fake starts with. */
  conntrack?: ConntrackEntry[];
  chunkOps?: number;
  probeMs?: number;
}

/**
 * A started proxy (on proxyHarness) whose caches are not synced yet: put objects, then
 * `source.markSynced()` and `sync()` or `settle()`.
 */
export async function proxySetup(opts: ProxySetupOptions = {}) {
  const { clock, sink, source, t, sync, settle } = proxyHarness(opts.flags ?? []);
  const nft = new TestNft();
  const conntrack = new FakeConntrack(opts.conntrack ?? []);
  const proxy = new ServiceProxy(t.ctx, {
    nft,
    conntrack,
    serveHealthChecks: false,
    ...(opts.chunkOps !== undefined ? { chunkOps: opts.chunkOps } : {}),
    ...(opts.probeMs !== undefined ? { probeMs: opts.probeMs } : {}),
  });
  source.start(["services", "endpointslices", "nodes"]);
  await proxy.start();
  source.put("nodes", opts.node ?? defaultNode);
  const scrape = async () => {
    await t.ctx.metrics.collect();
    return t.ctx.metrics.render();
  };
  const stop = async () => {
    await proxy.stop();
    await t.stop();
  };
  return { clock, sink, source, t, nft, conntrack, proxy, sync, settle, scrape, stop };
}
