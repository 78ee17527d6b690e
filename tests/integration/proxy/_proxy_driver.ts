/**
 * Driver: the real ServiceProxy (real libnftables, ctnetlink, healthCheckNodePort servers) in the node
 * namespace it runs in, fed from an in-memory Kubernetes source the test fills over JSON lines. Killing
 * and restarting it is an agent restart: the kernel state stays.
 */
import { serveDriver } from "../../_support/driver.ts";
import { MemorySource, moduleContext } from "../../_support/kube_source.ts";
import { Bus, getLogger, loadConfig, type ResourceKind, type ResourceTypes } from "../../../core/mod.ts";
import { Conntrack, Nftables } from "../../../ffi/mod.ts";
import { PROXY_TABLE, ServiceProxy } from "../../../modules/proxy/mod.ts";

let source: MemorySource | undefined;
let t: ReturnType<typeof moduleContext> | undefined;
let proxy: ServiceProxy | undefined;
const nft = new Nftables();
const conntrack = new Conntrack();

async function settle(): Promise<number> {
  const before = t!.syncs.ok + t!.syncs.failed;
  t!.runners[0]!.run();
  const t0 = Date.now();
  while (t!.syncs.ok + t!.syncs.failed === before) {
    if (Date.now() - t0 > 20_000) throw new Error("no sync within 20 s");
    await new Promise((r) => setTimeout(r, 10));
  }
  if (t!.syncs.failed) throw new Error(`sync failed: ${t!.syncs.lastError}`);
  return Date.now() - t0;
}

await serveDriver({
  /** Starts the proxy with flags and the initial objects (delivered as the first list). */
  start: async (p) => {
    const { flags, objects } = p as { flags: string[]; objects: { kind: ResourceKind; obj: unknown }[] };
    source = new MemorySource(new Bus(), { synced: false });
    t = moduleContext({
      config: loadConfig(["--hostname-override=n1", ...flags]),
      source,
      log: getLogger({ driver: "proxy" }),
      periodMs: loadConfig(flags).ipvsSyncPeriod,
    });
    proxy = new ServiceProxy(t.ctx, { nft, conntrack, probeMs: 500 });
    source.start(["services", "endpointslices", "nodes"]);
    await proxy.start();
    for (const o of objects) source.put(o.kind, o.obj as ResourceTypes[typeof o.kind]);
    source.markSynced();
    const t0 = Date.now();
    while (t.syncs.ok === 0) {
      if (t.syncs.failed) throw new Error(`first sync failed: ${t.syncs.lastError}`);
      if (Date.now() - t0 > 20_000) throw new Error("no first sync");
      await new Promise((r) => setTimeout(r, 10));
    }
    return null;
  },
  put: async (p) => {
    const { kind, obj } = p as { kind: ResourceKind; obj: unknown };
    source!.put(kind, obj as ResourceTypes[typeof kind]);
    return await settle();
  },
  delete: async (p) => {
    const { kind, key } = p as { kind: ResourceKind; key: string };
    source!.delete(kind, key);
    return await settle();
  },
  settle: () => settle(),
  syncs: () => ({ ...t!.syncs, lastError: String(t!.syncs.lastError ?? "") }),
  dump: () => nft.dumpText({ family: "inet", name: PROXY_TABLE }),
  stop: async () => {
    await proxy?.stop();
    await t?.stop();
    return null;
  },
});
nft.close();
conntrack.close();
