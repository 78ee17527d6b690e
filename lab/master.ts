/**
 * The lab master process: runs inside kube-master's namespace and plays the control plane and every
 * node's kubelet. It starts the lab API server on 0.0.0.0:6443 (advertised as https://192.168.1.99:6443,
 * service CIDR 172.16.0.0/16), writes the kubeconfig, runs node CIDR allocation, the scheduler, the
 * EndpointSlice controller, the ReplicaSet, Deployment and DaemonSet controllers, and one lab kubelet per
 * node (which uses `ip netns exec` for node work). It writes `master.ready` once every node is registered, Ready and has a pod CIDR.
 *
 * Started by `lab up` as: nsenter --net=/var/run/netns/<prefix>master deno run -A lab/master.ts --state-dir … --nodes N
 */
import { parseArgs } from "node:util";
import { startApiServer } from "./apiserver/mod.ts";
import { EndpointSliceController } from "./endpointslice_controller.ts";
import { DaemonSetController, DeploymentController, ReplicaSetController } from "./workload_controllers.ts";
import { Informer, isConflict, type KObject, KubeClient } from "./kube_client.ts";
import { type CniMode, LabKubelet } from "./kubelet.ts";
import { NodeIpamController } from "./node_ipam.ts";
import { Scheduler } from "./scheduler.ts";
import { nodeDir } from "./state.ts";
import { API_PORT, MASTER_IP, NODE_PORT_RANGE, SERVICE_CIDR, topology } from "./topology.ts";
import { sleep } from "./_sh.ts";
import { AGENT_V8_FLAGS, configureLogging, getLogger, type LogSink } from "../core/mod.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "state-dir": { type: "string" },
    "nodes": { type: "string", default: "3" },
    "prefix": { type: "string", default: "krl-" },
    "cni": { type: "string", default: "auto" },
    "cni-wait": { type: "string", default: "10" },
    "port": { type: "string", default: String(API_PORT) },
    "agent-bin": { type: "string" },
  },
});
const stateDir = values["state-dir"];
if (!stateDir) {
  console.error("--state-dir is required");
  Deno.exit(2);
}
const cniMode = values.cni as CniMode;
if (!["auto", "lab", "agent"].includes(cniMode)) {
  console.error(`--cni must be auto, lab or agent, got ${values.cni}`);
  Deno.exit(2);
}
const topo = topology(Number(values.nodes), values.prefix);
configureLogging({ level: Deno.env.get("KRL_LAB_DEBUG") ? "debug" : "info" });
const log = getLogger({ component: "lab-master" });

function fileSink(path: string): LogSink {
  const file = Deno.openSync(path, { append: true, create: true, write: true });
  const enc = new TextEncoder();
  return { write: (line) => void file.writeSync(enc.encode(line + "\n")) };
}

const api = await startApiServer({
  host: "0.0.0.0",
  port: Number(values.port),
  stateDir: `${stateDir}/apiserver`,
  advertiseAddress: MASTER_IP,
  sans: ["172.16.0.1"],
  serviceCidr: SERVICE_CIDR,
  nodePortRange: [NODE_PORT_RANGE[0], NODE_PORT_RANGE[1]],
  // The `kubernetes` Service (first cluster IP, 172.16.0.1) with the master as its endpoint.
  kubernetesService: true,
  // Pods on a node terminate gracefully (Terminating endpoints) until the lab kubelet removes them.
  gracefulPodDeletion: true,
  // `kubectl logs`: the lab kubelet's container log files (lab/kubelet.ts).
  podLogFile: (pod, container, previous) => {
    // deno-lint-ignore no-explicit-any
    const node = (pod as any).spec?.nodeName as string | undefined;
    const uid = pod.metadata?.uid;
    if (!node || !uid || !topo.nodes.some((h) => h.name === node)) return undefined;
    return `${nodeDir(stateDir, node)}/pods/${uid}/${container}${previous ? ".previous" : ""}.log`;
  },
  log: getLogger({ component: "lab-apiserver" }),
});
await api.writeKubeconfig(`${stateDir}/kubeconfig`);
log.info("API server listening", { url: api.url });

const client = new KubeClient({
  server: `https://127.0.0.1:${api.port}`,
  caCert: api.caCertPem,
  token: api.token,
});
const onErr = (what: string) => (e: unknown) => log.warn("watch failed, retrying", { what, err: e });
const nodes = new Informer<KObject>(client, "/api/v1/nodes", onErr("nodes"));
const pods = new Informer<KObject>(client, "/api/v1/pods", onErr("pods"));
const services = new Informer<KObject>(client, "/api/v1/services", onErr("services"));
const slices = new Informer<KObject>(
  client,
  "/apis/discovery.k8s.io/v1/endpointslices",
  onErr("endpointslices"),
);

const deployments = new Informer<KObject>(client, "/apis/apps/v1/deployments", onErr("deployments"));
const replicasets = new Informer<KObject>(client, "/apis/apps/v1/replicasets", onErr("replicasets"));
const daemonsets = new Informer<KObject>(client, "/apis/apps/v1/daemonsets", onErr("daemonsets"));

const controllers = [
  new NodeIpamController(client, nodes, log.with({ controller: "nodeipam" })),
  new Scheduler(client, pods, nodes, log.with({ controller: "scheduler" })),
  new EndpointSliceController(client, services, pods, slices, log.with({ controller: "endpointslice" })),
  new ReplicaSetController(client, replicasets, pods, log.with({ controller: "replicaset" })),
  new DeploymentController(client, deployments, replicasets, pods, log.with({ controller: "deployment" })),
  new DaemonSetController(client, daemonsets, pods, nodes, log.with({ controller: "daemonset" })),
];
const informers = [nodes, pods, services, slices, deployments, replicasets, daemonsets];
const kubelets = topo.nodes.map((host) => {
  const dir = nodeDir(stateDir, host.name);
  Deno.mkdirSync(dir, { recursive: true });
  return new LabKubelet({
    client,
    pods,
    nodes,
    host,
    prefix: topo.prefix,
    nodeDir: dir,
    cniConfDir: `${dir}/cni`,
    cniMode,
    cniWaitMs: Number(values["cni-wait"]) * 1000,
    // kube-router image containers (the DaemonSet path) run the agent from this checkout or --agent-bin.
    agent: {
      program: values["agent-bin"] ? [values["agent-bin"]] : [
        Deno.execPath(),
        "run",
        "-A",
        `--v8-flags=${AGENT_V8_FLAGS}`,
        new URL("../main.ts", import.meta.url).pathname,
      ],
      apiHost: MASTER_IP,
      apiPort: api.port,
      caCertPem: api.caCertPem,
      fallbackToken: api.token,
    },
    log: getLogger({ component: "lab-kubelet", node: host.name }, fileSink(`${dir}/kubelet.log`)),
  });
});

async function ensure(path: string, obj: KObject): Promise<void> {
  try {
    await client.create(path, obj);
  } catch (e) {
    if (!isConflict(e) && !(e instanceof Error && /HTTP 409/.test(e.message))) throw e;
  }
}

for (const ns of ["default", "kube-system", "kube-public", "kube-node-lease"]) {
  await ensure("/api/v1/namespaces", { apiVersion: "v1", kind: "Namespace", metadata: { name: ns } });
}
await Promise.all(informers.map((i) => i.start()));
await Promise.all(kubelets.map((k) => k.register()));

// Ready once every node is Ready with a pod CIDR.
while (true) {
  const ok = topo.nodes.every((h) => {
    const n = nodes.get(h.name);
    return n?.spec?.podCIDR &&
      ((n.status?.conditions ?? []) as Array<{ type: string; status: string }>).some((c) =>
        c.type === "Ready" && c.status === "True"
      );
  });
  if (ok) break;
  await sleep(100);
}
Deno.writeTextFileSync(`${stateDir}/master.ready`, `${new Date().toISOString()}\n`);
log.info("lab control plane ready", { nodes: topo.nodes.length });

const shutdown = async () => {
  log.info("lab master stopping");
  for (const k of kubelets) k.stop();
  for (const c of controllers) c.stop();
  for (const i of informers) i.stop();
  await api.stop().catch(() => {});
  Deno.exit(0);
};
Deno.addSignalListener("SIGTERM", shutdown);
Deno.addSignalListener("SIGINT", shutdown);
