/**
 * Driver: the real service proxy in the node namespace it runs in, fed from an in-memory Kubernetes source
 * the test fills over JSON lines. With `--service-proxy-backend=ipvs` among the flags it is the IPVS
 * backend (real IPVS, rtnetlink, sysctls: only a kernel with IPVS, i.e. the VM tier), otherwise the
 * nftables one (real libnftables, ctnetlink); both serve healthCheckNodePorts. Killing and restarting it is
 * an agent restart: the kernel state stays.
 */
import { serveDriver } from "../../_support/driver.ts";
import { MemorySource, moduleContext } from "../../_support/kube_source.ts";
import {
  Bus,
  getLogger,
  loadConfig,
  type ModuleInstance,
  type ResourceKind,
  type ResourceTypes,
} from "../../../core/mod.ts";
import { Conntrack, Nftables, NftSetCounters, ProcSysctl, Rtnetlink } from "../../../ffi/mod.ts";
import {
  IpvsProxy,
  kernelDsrPodsDeps,
  NetnsDsrPods,
  openIpvs,
  PROXY_TABLE,
  proxyModule,
  ServiceProxy,
} from "../../../modules/proxy/mod.ts";

let source: MemorySource | undefined;
let t: ReturnType<typeof moduleContext> | undefined;
let proxy: ModuleInstance | undefined;
let ipvsMode = false;
const nft = new Nftables();
const conntrack = new Conntrack();
const closers: (() => void)[] = [];

/**
 * How long a sync may take before the driver gives up: generous in the VM tier, whose emulated CPU runs a
 * sync (and the first one's setup) many times slower than this machine, more so on a loaded host.
 */
const LIMIT_MS = Deno.env.get("KRT_IN_VM") === "1" ? 90_000 : 20_000;

/**
 * Until a sync that started after the caller's change has finished. The first sync to finish may have been
 * running already when the change came (and drained the changes before it), so a second is asked for once
 * the first is done: that one started after the change.
 */
async function settle(): Promise<number> {
  const t0 = Date.now();
  for (let round = 0; round < 2; round++) {
    const before = t!.syncs.ok + t!.syncs.failed;
    t!.runners[0]!.run();
    while (t!.syncs.ok + t!.syncs.failed === before) {
      if (Date.now() - t0 > LIMIT_MS) throw new Error(`no sync within ${LIMIT_MS / 1000} s`);
      await new Promise((r) => setTimeout(r, 10));
    }
    if (t!.syncs.failed) throw new Error(`sync failed: ${t!.syncs.lastError}`);
  }
  return Date.now() - t0;
}

async function sh(cmd: string[]): Promise<string> {
  const out = await new Deno.Command(cmd[0]!, { args: cmd.slice(1), stderr: "piped" }).output();
  return new TextDecoder().decode(out.success ? out.stdout : out.stderr);
}

await serveDriver({
  /** Starts the proxy with flags and the initial objects (delivered as the first list). */
  start: async (p) => {
    const { flags, objects } = p as { flags: string[]; objects: { kind: ResourceKind; obj: unknown }[] };
    const config = loadConfig(["--hostname-override=n1", ...flags]);
    source = new MemorySource(new Bus(), { synced: false });
    t = moduleContext({
      config,
      source,
      log: getLogger({ driver: "proxy" }),
      periodMs: config.ipvsSyncPeriod,
    });
    ipvsMode = config.serviceProxyBackend === "ipvs";
    if (ipvsMode) {
      const ipvs = openIpvs();
      const rtnl = new Rtnetlink();
      closers.push(() => ipvs.close(), () => rtnl.close());
      // As the module builds it (ipvs_module.ts), DSR's pod namespaces included.
      const dsrPods = new NetnsDsrPods(kernelDsrPodsDeps(rtnl));
      proxy = new IpvsProxy(t.ctx, { ipvs, nft, rtnl, conntrack, sysctl: new ProcSysctl(), dsrPods });
    } else {
      // As the module builds it (mod.ts): the per-Service counters read over netlink.
      const setCounters = new NftSetCounters();
      closers.push(() => setCounters.close());
      proxy = new ServiceProxy(t.ctx, { nft, conntrack, probeMs: 500, setCounters });
    }
    source.start(["services", "endpointslices", "nodes"]);
    await proxy.start();
    for (const o of objects) source.put(o.kind, o.obj as ResourceTypes[typeof o.kind]);
    source.markSynced();
    const t0 = Date.now();
    while (t.syncs.ok === 0) {
      if (t.syncs.failed) throw new Error(`first sync failed: ${t.syncs.lastError}`);
      if (Date.now() - t0 > LIMIT_MS) throw new Error(`no first sync within ${LIMIT_MS / 1000} s`);
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
  /** What the backend programmed: the proxy's table, and with IPVS the virtual services too. */
  dump: async () =>
    (ipvsMode ? `${await sh(["ipvsadm", "-Ln"])}\n` : "") +
    await nft.dumpText({ family: "inet", name: PROXY_TABLE }).catch((e) => `(no table: ${e})`),
  /**
   * The agent's /metrics text as a scrape gets it: the collectors first (the nftables backend reads its
   * per-Service counters then), the IPVS backend's kube_router_service_* gauges as its last sync left them.
   */
  metrics: async () => {
    await t!.ctx.metrics.collect();
    return t!.ctx.metrics.render();
  },
  stop: async () => {
    await proxy?.stop();
    await t?.stop();
    return null;
  },
  /** Stops the proxy and runs the module's --cleanup-config with the same flags. */
  cleanup: async (p) => {
    const { flags } = p as { flags: string[] };
    await proxy?.stop();
    await t?.stop();
    await proxyModule.cleanup(
      loadConfig(["--hostname-override=n1", ...flags]),
      getLogger({ driver: "proxy" }),
    );
    return null;
  },
});
for (const close of closers) close();
nft.close();
conntrack.close();
