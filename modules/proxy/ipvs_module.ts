/**
 * Starting and cleaning up the IPVS backend with the real kernel interfaces (mod.ts picks it when
 * `--service-proxy-backend=ipvs`).
 */
import type { Config, Logger, ModuleContext, ModuleInstance } from "../../core/mod.ts";
import {
  Conntrack,
  type Ipvs,
  IpvsNetlink,
  NetlinkError,
  Nftables,
  ProcSysctl,
  Rtnetlink,
} from "../../ffi/mod.ts";
import { DSR_TABLE, dsrRoutes, dsrRule, DUMMY_IF, IpvsProxy } from "./ipvs_backend.ts";
import { kernelDsrPodsDeps, NetnsDsrPods } from "./dsr_pods.ts";
import { IpvsReconciler } from "./ipvs_sync.ts";

const ENOENT = 2;

/** The message a kernel without IPVS gets when the IPVS backend is asked for. */
export class IpvsUnavailableError extends Error {
  constructor(cause: unknown) {
    super(
      "--service-proxy-backend=ipvs needs the kernel's IPVS, but the generic netlink family IPVS is not " +
        "there: the kernel module ip_vs is not loaded and could not be loaded (modprobe ip_vs; or use " +
        "--service-proxy-backend=nftables)",
      { cause },
    );
    this.name = "IpvsUnavailableError";
  }
}

/** Opens IPVS, turning "no such family" into the message naming the flag and the module. */
export function openIpvs(open: () => Ipvs = () => new IpvsNetlink()): Ipvs {
  try {
    return open();
  } catch (err) {
    if (err instanceof NetlinkError && err.errno === ENOENT) throw new IpvsUnavailableError(err);
    throw err;
  }
}

/**
 * The proxy module's preflight with --service-proxy-backend=ipvs: opens IPVS once (which makes the kernel
 * load ip_vs if it can) and returns the problem for the user, or undefined when IPVS is there.
 */
export function ipvsPreflight(open: () => Ipvs = () => new IpvsNetlink()): string | undefined {
  try {
    openIpvs(open).close();
    return undefined;
  } catch (err) {
    if (err instanceof IpvsUnavailableError) return err.message;
    return `--service-proxy-backend=ipvs: cannot open the kernel's IPVS: ${
      err instanceof Error ? err.message : err
    }`;
  }
}

/** The IPVS backend's instance on the real kernel. */
export function createIpvsProxy(ctx: ModuleContext): ModuleInstance {
  const ipvs = openIpvs();
  const nft = new Nftables();
  const rtnl = new Rtnetlink();
  const conntrack = new Conntrack();
  const dsrPods = new NetnsDsrPods(kernelDsrPodsDeps(rtnl));
  if (ctx.config.runtimeEndpoint) {
    ctx.log.info("--runtime-endpoint is not used: DSR finds pods' network namespaces through their veths", {
      runtimeEndpoint: ctx.config.runtimeEndpoint,
    });
  }
  const proxy = new IpvsProxy(ctx, { ipvs, nft, rtnl, conntrack, sysctl: new ProcSysctl(), dsrPods });
  return {
    start: () => proxy.start(),
    stop: async () => {
      await proxy.stop();
      ipvs.close();
      nft.close();
      rtnl.close();
      conntrack.close();
    },
  };
}

/**
 * --cleanup-config for IPVS: every IPVS virtual service outside --excluded-cidrs, the dummy interface,
 * DSR's policy rule and table 78 route, and the DSR tunnel interfaces in the pods behind this node's veths
 * (the table is removed by the proxy's own cleanup). A kernel without IPVS has no IPVS services to remove.
 */
export async function cleanupIpvs(config: Config, log: Logger): Promise<void> {
  let ipvs: Ipvs | undefined;
  try {
    ipvs = new IpvsNetlink();
  } catch (err) {
    if (!(err instanceof NetlinkError && err.errno === ENOENT)) throw err;
    log.debug("no IPVS in this kernel: no IPVS services to remove");
  }
  if (ipvs) {
    try {
      const n = await new IpvsReconciler(ipvs, {
        graceful: false,
        gracefulPeriodMs: 0,
        excludedCidrs: config.excludedCidrs,
        now: () => Date.now(),
      }).deleteAll();
      log.info("IPVS services removed", { count: n });
    } finally {
      ipvs.close();
    }
  }
  const rtnl = new Rtnetlink();
  try {
    if (await rtnl.linkGet(DUMMY_IF)) {
      await rtnl.linkDel(DUMMY_IF);
      log.info("dummy interface removed", { link: DUMMY_IF });
    }
    for (const f of [4, 6] as const) {
      const rule = dsrRule(f);
      for (const r of await rtnl.ruleList(f)) {
        if (r.table === DSR_TABLE && r.fwmark === rule.fwmark) await rtnl.ruleDel(r);
      }
      for (const r of await dsrRoutes(rtnl, f)) await rtnl.routeDel(r);
    }
    const tunnels = await new NetnsDsrPods(kernelDsrPodsDeps(rtnl)).cleanupAll();
    if (tunnels) log.info("DSR tunnel interfaces removed from pods", { count: tunnels });
  } finally {
    rtnl.close();
  }
}
