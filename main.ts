/**
 * kube-router (TypeScript): parse flags into a Config, then run the enabled modules until SIGTERM, or
 * clean up (--cleanup-config), or run a subcommand (`bgp neighbors|routes`).
 *
 * Exit codes: 0 success, 1 runtime failure (e.g. not root, API server unreachable config), 2 bad flags
 * (including a flag this node cannot honour: a module's preflight, e.g. IPVS asked for and absent).
 */
import {
  Agent,
  Bus,
  cleanupAll,
  type Config,
  ConfigError,
  configureLogging,
  EmptySource,
  enabledModules,
  getLogger,
  loadConfig,
  Metrics,
  neededResources,
  parseFlags,
  type ResourceSource,
  startHttp,
  usage,
  VERSION,
} from "./core/mod.ts";
import type { Logger } from "./core/mod.ts";
import process from "node:process";
import { bgpCli, routerModule } from "./modules/router/mod.ts";
import { proxyModule } from "./modules/proxy/mod.ts";
import { firewallModule } from "./modules/firewall/mod.ts";

export const MODULES = [routerModule, proxyModule, firewallModule] as const;

/** How long SIGTERM may take before the process exits anyway. */
const STOP_DEADLINE_MS = 5_000;

function fail(code: number, message: string): never {
  console.error(`kube-router: ${message}`);
  Deno.exit(code);
}

/** kube-router refuses to run unless root: it programs routes, nftables and sysctls. */
export function rootProblem(uid: number | null): string | undefined {
  if (uid === 0) return undefined;
  return "must run as root (uid 0): the agent programs routes, nftables and sysctls; " +
    "--help and --version work for anyone";
}

async function runAgent(config: Config, log: Logger): Promise<void> {
  const bus = new Bus(log.with({ component: "bus" }));
  const metrics = new Metrics();
  let source: ResourceSource = new EmptySource();
  if (neededResources(config, MODULES).length > 0) {
    // Loaded only when informers are needed: the Kubernetes client costs start-up time and memory that
    // --help, --version, --cleanup-config and module-less runs should not pay.
    // client-node's HTTP stack requires Node's deprecated `punycode`; the warning is not the user's to act on.
    process.noDeprecation = true;
    const { loadKubeConfig, WatchLayer } = await import("./core/kube/mod.ts");
    let kubeConfig;
    try {
      kubeConfig = loadKubeConfig({ kubeconfig: config.kubeconfig, master: config.master });
    } catch (err) {
      fail(1, `cannot configure the Kubernetes client: ${err instanceof Error ? err.message : err}`);
    }
    source = new WatchLayer({ kubeConfig, bus, log: log.with({ component: "kube" }), metrics });
  }
  const running = new Agent({ config, modules: MODULES, source, log, bus, metrics });
  const http = startHttp({
    health: running.health,
    metrics: running.metrics,
    log: log.with({ component: "http" }),
    healthAddr: config.healthAddr,
    healthPort: config.healthPort,
    metricsAddr: config.metricsAddr,
    metricsPort: config.metricsPort,
    metricsPath: config.metricsPath,
  });
  log.info("starting", {
    version: VERSION,
    node: config.nodeName,
    modules: running.enabled().map((m) => m.name).join(",") || "none",
    resources: running.resources().join(","),
    health_port: http.healthPort ?? 0,
    metrics_port: http.metricsPort ?? 0,
  });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info("stopping; kernel state stays in place", { signal });
    const deadline = setTimeout(() => {
      log.error("stop took longer than the deadline; exiting anyway", { deadline_ms: STOP_DEADLINE_MS });
      Deno.exit(1);
    }, STOP_DEADLINE_MS);
    await running.stop();
    await http.shutdown();
    clearTimeout(deadline);
    log.info("stopped");
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", () => void stop("SIGTERM"));
  Deno.addSignalListener("SIGINT", () => void stop("SIGINT"));
  await running.start();
}

async function main(argv: string[]): Promise<void> {
  let parsed;
  try {
    parsed = parseFlags(argv);
  } catch (err) {
    if (err instanceof ConfigError) fail(2, err.message);
    throw err;
  }
  if (parsed.values.help) {
    console.log(usage());
    return;
  }
  if (parsed.values.version) {
    console.log(`kube-router ${VERSION} (deno ${Deno.version.deno}, typescript ${Deno.version.typescript})`);
    return;
  }
  let config: Config;
  try {
    config = loadConfig(argv);
  } catch (err) {
    if (err instanceof ConfigError) fail(2, err.message);
    throw err;
  }
  configureLogging({
    level: config.v > 0 ? "debug" : "info",
    format: config.logFormat === "json" ? "json" : "text",
  });
  const log = getLogger();

  if (config.args[0] === "bgp") {
    Deno.exit(await bgpCli(config.args.slice(1), config.bgpAdminPort));
  }
  if (config.args.length > 0) {
    fail(2, `unknown command "${config.args.join(" ")}" (see --help)`);
  }

  const problem = rootProblem(Deno.uid());
  if (problem) fail(1, problem);

  if (config.cleanupConfig) {
    const ok = await cleanupAll(config, MODULES, log);
    Deno.exit(ok ? 0 : 1);
  }
  // A flag the node cannot honour (e.g. --service-proxy-backend=ipvs on a kernel without IPVS) is a bad
  // flag for this node: stop before anything starts, naming the flag.
  for (const def of enabledModules(config, MODULES)) {
    const problem = def.preflight?.(config);
    if (problem) fail(2, problem);
  }
  await runAgent(config, log);
}

if (import.meta.main) {
  await main(Deno.args);
}
