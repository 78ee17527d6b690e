/**
 * Runs the lab API server until SIGINT/SIGTERM and writes a kubeconfig to `<state-dir>/kubeconfig`.
 *
 *   deno run -A lab/apiserver/main.ts --port 6443 --state-dir DIR [--host 0.0.0.0]
 *     [--advertise-address 192.168.1.99] [--service-cidr 172.16.0.0/16[,fd00:10:96::/108]] [--node-port-range 30000-32767]
 *     [--san 172.16.0.1]... [--auth token|cert] [--bookmark-interval-ms 60000] [--kubernetes-service]
 *     [--namespace-deletion-delay-ms 500]
 */
import { parseArgs } from "node:util";
import { getLogger } from "../../core/mod.ts";
import { startApiServer } from "./mod.ts";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "6443" },
    host: { type: "string", default: "127.0.0.1" },
    "state-dir": { type: "string" },
    "advertise-address": { type: "string" },
    "service-cidr": { type: "string", default: "10.96.0.0/12" },
    "node-port-range": { type: "string", default: "30000-32767" },
    san: { type: "string", multiple: true, default: [] },
    auth: { type: "string", default: "token" },
    "bookmark-interval-ms": { type: "string", default: "60000" },
    "kubernetes-service": { type: "boolean", default: false },
    "namespace-deletion-delay-ms": { type: "string", default: "500" },
  },
});

const log = getLogger({ component: "lab-apiserver" });
const stateDir = values["state-dir"];
if (!stateDir) {
  console.error("--state-dir is required");
  Deno.exit(2);
}
const [lo, hi] = values["node-port-range"].split("-").map(Number);
const server = await startApiServer({
  host: values.host,
  port: Number(values.port),
  stateDir,
  ...(values["advertise-address"] ? { advertiseAddress: values["advertise-address"] } : {}),
  serviceCidr: values["service-cidr"],
  nodePortRange: [lo ?? 30000, hi ?? 32767],
  sans: values.san,
  bookmarkIntervalMs: Number(values["bookmark-interval-ms"]),
  kubernetesService: values["kubernetes-service"],
  namespaceDeletionDelayMs: Number(values["namespace-deletion-delay-ms"]),
  log,
});
const kubeconfigPath = await server.writeKubeconfig(undefined, {
  auth: values.auth === "cert" ? "cert" : "token",
});
log.info("lab API server listening", { url: server.url, kubeconfig: kubeconfigPath });

const shutdown = async () => {
  await server.stop();
  Deno.exit(0);
};
Deno.addSignalListener("SIGINT", shutdown);
Deno.addSignalListener("SIGTERM", shutdown);
