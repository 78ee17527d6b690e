/**
 * The lab kubelet of one node: registers the Node (InternalIP = the node's underlay address, Ready), and
 * for every Pod bound to the node creates a network namespace (`ip netns add <prefix>pod-<uid>`), wires it
 * with the real CNI plugins from the node's CNI conf dir, starts one process per container (containers.ts
 * says which: netexec.ts on that container's ports, or the agent for the kube-router image), and reports
 * podIP(s), phase Running, the Ready condition and per-container statuses with restart counts. Each
 * container logs to `<nodeDir>/pods/<uid>/<container>.log` (the API server serves it as pods/log). A
 * container that exits, or fails its liveness probe `failureThreshold` times, is restarted with a backoff.
 * Deleting a pod stops its processes, runs CNI DEL and removes the namespace. What a real kubelet reports
 * as events it reports too, for what goes wrong: a pod whose host ports are taken (NodePorts) and an image
 * the lab cannot run (ErrImagePull, ImagePullBackOff; containers.ts says which images it runs).
 *
 * An agent container (kube-router image, hostNetwork) runs in the node's namespace inside its own mount
 * namespace, where its volumes appear at their mountPaths (hostPath /etc/cni/net.d is the node's CNI conf
 * dir; /lib/modules and /run/netns are the host's own, where the lab's namespaces are named; other hostPaths
 * live under `<nodeDir>/hostpath/`) and the service-account token, CA and namespace
 * at /var/run/secrets/kubernetes.io/serviceaccount, where in-cluster configuration finds them. Missing
 * mount points are made on a private overlay of their parent directory, so the host's /etc and /run are
 * never written. KUBERNETES_SERVICE_HOST/PORT name the API server's own address (192.168.1.99:6443), as
 * kubelets are set up in clusters whose service proxy is the agent itself.
 *
 * CNI configuration (CniMode): `agent` waits for the file the agent's router module writes
 * (KUBE_ROUTER_CNI_CONF_FILE), `lab` writes kube-router's bridge + host-local conf from the node's pod CIDR
 * itself, `auto` waits `cniWaitMs` for the agent and then writes it. Pods wait (Pending, NetworkNotReady)
 * until there is a usable conf.
 *
 * Lab-only controls, as pod annotations:
 * - `lab.kube-router.io/ready: "false"` reports the pod not Ready (its netexec keeps serving), so tests can
 *   flip readiness without timing.
 * - `lab.kube-router.io/terminate-after: "<seconds>"` keeps a deleted pod serving (Terminating) for that
 *   long, bounded by its grace period, like an application draining connections.
 */
import {
  cniAdd,
  cniDel,
  type CniRuntime,
  hasIpamRange,
  labNetworkConfig,
  loadNetworkConfig,
  type NetworkList,
  resultIPs,
} from "./cni.ts";
import { type Informer, isNotFound, keyOf, type KObject, type KubeClient } from "./kube_client.ts";
import { killPid, pidAlive, sh, sleep } from "./_sh.ts";
import {
  containerEnv,
  type ContainerProgram,
  containerProgram,
  type ContainerSpec,
  KNOWN_IMAGES,
  type Probe,
} from "./containers.ts";
import { type LabHost, podNetnsName } from "./topology.ts";
import { EventRecorder } from "./events.ts";
import type { Logger } from "../core/mod.ts";

export const READY_ANNOTATION = "lab.kube-router.io/ready";
export const TERMINATE_AFTER_ANNOTATION = "lab.kube-router.io/terminate-after";
/** The file the router module writes and the lab writes in its place when no agent does. */
export const CNI_CONF_NAME = "10-kuberouter.conflist";

/** Who provides the node's CNI configuration. */
export type CniMode = "lab" | "agent" | "auto";

export interface KubeletOptions {
  client: KubeClient;
  pods: Informer<KObject>;
  nodes: Informer<KObject>;
  host: LabHost;
  prefix: string;
  /** .lab/nodes/<node> */
  nodeDir: string;
  cniConfDir: string;
  cniMode: CniMode;
  /** In auto mode: how long to wait for an agent's conf before writing the lab's. */
  cniWaitMs: number;
  log: Logger;
  /** What agent containers (the kube-router image) run; without it such a pod fails with a clear status. */
  agent?: AgentRuntime;
}

/** How the kubelet runs kube-router image containers and what in-cluster config they get. */
export interface AgentRuntime {
  /** The agent's command line before the container's args (deno run … main.ts, or a built binary). */
  program: string[];
  /** KUBERNETES_SERVICE_HOST / _PORT given to every container. */
  apiHost: string;
  apiPort: number;
  /** The cluster CA (ca.crt of the service-account volume). */
  caCertPem: string;
  /**
   * Token for pods when the API server serves no TokenRequest (serviceaccounts/token): the lab's admin
   * token. Used only then, and logged.
   */
  fallbackToken?: string;
}

/** What the kubelet knows about a running pod; also written to <nodeDir>/pods/<uid>.json for `lab exec`. */
export interface PodRecord {
  namespace: string;
  name: string;
  uid: string;
  node: string;
  netns: string;
  /** The pod uses its node's namespace (`netns` is the node's, never deleted with the pod). */
  hostNetwork?: boolean;
  ips: string[];
  /** The first container's process (kept for older readers), and every container's. */
  pid?: number;
  pids?: Record<string, number>;
  cniList?: NetworkList;
  cniResult?: unknown;
  /** hostPort mappings given to ADD; DEL needs the same ones (portmap finds its rules by them). */
  portMappings?: Array<{ hostPort: number; containerPort: number; protocol: string }>;
  startedAt: string;
}

interface ContainerRuntime {
  spec: ContainerSpec;
  program: ContainerProgram;
  child?: Deno.ChildProcess;
  pid?: number;
  running: boolean;
  restarts: number;
  startedAt?: string;
  lastTerminated?: { exitCode: number; reason: string; startedAt?: string; finishedAt: string };
  /** Why it is not running (waiting reason), e.g. CrashLoopBackOff or a start error. */
  waiting?: { reason: string; message?: string } | undefined;
  probeTimer?: ReturnType<typeof setInterval> | undefined;
  livenessFailures: number;
  /** Set while the kubelet itself kills the process (liveness failure), to name the reason. */
  killedFor?: string | undefined;
}

interface PodRuntime {
  record: PodRecord;
  /** The pod as it was started (its host ports, for admission of later pods). */
  pod: KObject;
  containers: ContainerRuntime[];
  reportedKey?: string;
  stopping: boolean;
  /** Problems to show in the pod's status message (unsupported env, volumes). */
  problems: string[];
}

function now(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, "Z");
}

/** Container ports of a pod's first container as netexec arguments (see containers.ts for all rules). */
export function netexecPorts(pod: KObject): string[] {
  const cs = (pod.spec?.containers ?? []) as ContainerSpec[];
  const c = cs[0];
  if (!c) return ["tcp:8080", "udp:8081"];
  const p = containerProgram(pod, c);
  return p.kind === "netexec" ? p.ports : [];
}

export class LabKubelet {
  readonly #pods = new Map<string, PodRuntime>();
  readonly #chains = new Map<string, Promise<void>>();
  readonly #startedAt = Date.now();
  readonly #events: EventRecorder;
  #slots = 4;
  readonly #waiters: Array<() => void> = [];
  #firstAdd: Promise<void> | undefined;
  #stopped = false;

  constructor(private readonly o: KubeletOptions) {
    this.#events = new EventRecorder({
      client: o.client,
      component: "kubelet",
      host: o.host.name,
      log: o.log,
    });
    Deno.mkdirSync(`${o.nodeDir}/pods`, { recursive: true });
    Deno.mkdirSync(o.cniConfDir, { recursive: true });
    o.pods.on((type, pod) => {
      if (pod.spec?.nodeName !== o.host.name) return;
      const uid = pod.metadata.uid ?? keyOf(pod);
      this.#enqueue(uid, () => this.#reconcile(uid, type === "DELETED" ? undefined : pod));
    });
  }

  /** Creates or refreshes the Node object with its address and a Ready condition. */
  async register(): Promise<void> {
    const h = this.o.host;
    const node: KObject = {
      apiVersion: "v1",
      kind: "Node",
      metadata: {
        name: h.name,
        labels: {
          "kubernetes.io/hostname": h.name,
          "kubernetes.io/os": "linux",
          "kubernetes.io/arch": "amd64",
          "beta.kubernetes.io/os": "linux",
          "beta.kubernetes.io/arch": "amd64",
        },
      },
      spec: {},
    };
    try {
      await this.o.client.create("/api/v1/nodes", node);
    } catch (e) {
      if (!(e instanceof Error && /HTTP 409/.test(e.message))) throw e;
    }
    await this.#patchStatus(`/api/v1/nodes/${h.name}`, this.#nodeStatus());
    this.o.log.info("registered node", { node: h.name, ip: h.ip });
  }

  #nodeStatus(): Record<string, unknown> {
    const t = now();
    return {
      addresses: [{ type: "InternalIP", address: this.o.host.ip }, {
        type: "Hostname",
        address: this.o.host.name,
      }],
      conditions: [
        {
          type: "Ready",
          status: "True",
          reason: "KubeletReady",
          message: "lab kubelet is posting ready status",
          lastHeartbeatTime: t,
          lastTransitionTime: t,
        },
        {
          type: "MemoryPressure",
          status: "False",
          reason: "KubeletHasSufficientMemory",
          lastHeartbeatTime: t,
          lastTransitionTime: t,
        },
        {
          type: "DiskPressure",
          status: "False",
          reason: "KubeletHasNoDiskPressure",
          lastHeartbeatTime: t,
          lastTransitionTime: t,
        },
        {
          type: "PIDPressure",
          status: "False",
          reason: "KubeletHasSufficientPID",
          lastHeartbeatTime: t,
          lastTransitionTime: t,
        },
      ],
      capacity: { cpu: "2", memory: "4Gi", pods: "110" },
      allocatable: { cpu: "2", memory: "4Gi", pods: "110" },
      nodeInfo: {
        machineID: "",
        systemUUID: "",
        bootID: "",
        kernelVersion: Deno.osRelease(),
        osImage: "kube-router lab",
        containerRuntimeVersion: "lab://netexec",
        kubeletVersion: "v1.32.0-lab",
        kubeProxyVersion: "",
        operatingSystem: "linux",
        architecture: "amd64",
      },
    };
  }

  /** PATCH the status subresource, falling back to the object for servers without one. */
  async #patchStatus(path: string, status: Record<string, unknown>): Promise<void> {
    try {
      await this.o.client.mergePatch(`${path}/status`, { status });
    } catch (e) {
      if (!isNotFound(e) && !(e instanceof Error && /HTTP 405/.test(e.message))) throw e;
      await this.o.client.mergePatch(path, { status });
    }
  }

  /** Stops watching; pods keep running until `lab down` removes their namespaces. */
  stop(): void {
    this.#stopped = true;
  }

  /** The pods this kubelet runs now. */
  records(): PodRecord[] {
    return [...this.#pods.values()].map((p) => p.record);
  }

  #enqueue(uid: string, fn: () => Promise<void>): void {
    const prev = this.#chains.get(uid) ?? Promise.resolve();
    const next = prev.then(fn).catch((e) =>
      this.o.log.warn("pod sync failed", { node: this.o.host.name, uid, err: e })
    );
    this.#chains.set(uid, next);
    next.finally(() => {
      if (this.#chains.get(uid) === next) this.#chains.delete(uid);
    });
  }

  async #reconcile(uid: string, pod: KObject | undefined): Promise<void> {
    if (this.#stopped) return;
    const rt = this.#pods.get(uid);
    if (!pod) {
      if (rt) await this.#stopPod(rt, undefined);
      return;
    }
    if (pod.metadata.deletionTimestamp) {
      if (rt) await this.#stopPod(rt, pod);
      await this.#finalDelete(pod);
      return;
    }
    if (!rt) {
      if (pod.status?.phase === "Succeeded" || pod.status?.phase === "Failed") return;
      await this.#startPod(uid, pod);
      return;
    }
    await this.#reportReadiness(rt, pod);
  }

  async #acquire(): Promise<void> {
    if (this.#slots > 0) {
      this.#slots--;
      return;
    }
    await new Promise<void>((r) => this.#waiters.push(r));
  }
  #release(): void {
    const w = this.#waiters.shift();
    if (w) w();
    else this.#slots++;
  }

  /** The CNI configuration to use, writing the lab's own when the mode says so. */
  async #networkConfig(): Promise<NetworkList> {
    const file = `${this.o.cniConfDir}/${CNI_CONF_NAME}`;
    while (!this.#stopped) {
      const found = loadNetworkConfig(this.o.cniConfDir);
      if (found && hasIpamRange(found.list)) return found.list;
      const node = this.o.nodes.get(this.o.host.name);
      const cidrs = (node?.spec?.podCIDRs as string[] | undefined) ??
        (node?.spec?.podCIDR ? [node.spec.podCIDR as string] : []);
      const waited = Date.now() - this.#startedAt;
      const labWrites = this.o.cniMode === "lab" || (this.o.cniMode === "auto" && waited >= this.o.cniWaitMs);
      if (labWrites && cidrs.length > 0 && !found) {
        const tmp = `${file}.tmp`;
        Deno.writeTextFileSync(tmp, JSON.stringify(labNetworkConfig(cidrs), null, 2) + "\n");
        Deno.renameSync(tmp, file);
        if (this.o.cniMode === "auto") {
          this.o.log.warn("no CNI configuration from the agent; the lab wrote its own", {
            node: this.o.host.name,
            file,
          });
        } else this.o.log.info("wrote CNI configuration", { node: this.o.host.name, file });
        continue;
      }
      await sleep(250);
    }
    throw new Error("kubelet stopped");
  }

  async #startPod(uid: string, pod: KObject): Promise<void> {
    const clash = hostPortClash(pod, [...this.#pods.values()].filter((p) => !p.stopping).map((p) => p.pod));
    if (clash) {
      // Admission, as kubelet rejects a pod whose host ports are taken: Failed with the reason, never a hang.
      this.o.log.warn("pod rejected", { pod: `${pod.metadata.namespace}/${pod.metadata.name}`, clash });
      const why =
        `Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports (${clash})`;
      // kubelet's rejectPod: a Warning event with the predicate as reason, then the Failed status.
      await this.#events.record(pod, "Warning", "NodePorts", why);
      await this.#patchPodStatus(pod, {
        phase: "Failed",
        reason: "NodePorts",
        message: `Pod was rejected: ${why}`,
      });
      return;
    }
    if (pod.spec?.hostNetwork === true) return await this.#startHostNetworkPod(uid, pod);
    const ns = pod.metadata.namespace ?? "default";
    const name = pod.metadata.name;
    const netns = podNetnsName(this.o.prefix, uid);
    const record: PodRecord = {
      namespace: ns,
      name,
      uid,
      node: this.o.host.name,
      netns,
      ips: [],
      startedAt: now(),
    };
    const rt = this.#newRuntime(record, pod);
    this.#pods.set(uid, rt);
    // Record the namespace before creating it, so `lab down` finds it even if we crash in between.
    this.#writeRecord(record);
    const pendingConf = this.#networkConfig();
    const waiting = setTimeout(() => {
      // Say why the pod is not starting, as kubelet does ("cni config uninitialized").
      this.#patchPodStatus(pod, {
        phase: "Pending",
        conditions: [{ type: "PodScheduled", status: "True" }, {
          type: "Ready",
          status: "False",
          reason: "NetworkNotReady",
          message:
            `network is not ready: no CNI configuration with an IPAM range in ${this.o.cniConfDir} (cni mode ${this.o.cniMode})`,
        }],
      }).catch(() => {});
    }, 2000);
    let list: NetworkList;
    try {
      list = await pendingConf;
    } finally {
      clearTimeout(waiting);
    }
    await this.#acquire();
    try {
      await sh(["ip", "netns", "add", netns]);
      await sh(["ip", "-n", netns, "link", "set", "lo", "up"]);
      const cniRt = this.#cniRuntime(record, pod);
      if (cniRt.portMappings) record.portMappings = cniRt.portMappings;
      if (!this.#firstAdd) {
        // The first ADD on a node creates kube-bridge; let it finish before running others alongside.
        this.#firstAdd = cniAdd(list, cniRt).then((r) => {
          record.cniResult = r;
        });
        await this.#firstAdd;
      } else {
        await this.#firstAdd.catch(() => {});
        record.cniResult = await cniAdd(list, cniRt);
      }
      record.cniList = list;
      record.ips = resultIPs(record.cniResult);
      this.#writeRecord(record);
      // The slot bounds concurrent CNI ADDs; starting the pod's process needs no slot.
      this.#release();
    } catch (e) {
      if (this.#firstAdd && !record.cniResult) this.#firstAdd = undefined;
      this.#release();
      this.o.log.error("pod network setup failed", { pod: `${ns}/${name}`, err: e });
      await this.#patchPodStatus(pod, {
        phase: "Pending",
        conditions: [{ type: "PodScheduled", status: "True" }, {
          type: "Ready",
          status: "False",
          reason: "NetworkNotReady",
          message: String(e instanceof Error ? e.message : e).slice(0, 300),
        }],
      }).catch(() => {});
      await this.#teardown(rt).catch(() => {});
      this.#pods.delete(uid);
      // Retry later, as kubelet does with a failing sandbox.
      setTimeout(() => {
        const cur = this.o.pods.get(keyOf(pod));
        if (cur && cur.metadata.uid === uid && !this.#stopped) {
          this.#enqueue(uid, () => this.#reconcile(uid, cur));
        }
      }, 2000);
      return;
    }
    await this.#startContainers(rt, pod);
    this.o.log.info("pod running", { pod: `${ns}/${name}`, node: this.o.host.name, ip: record.ips[0] });
    const cur = this.o.pods.get(keyOf(pod)) ?? pod;
    await this.#reportReadiness(rt, cur, true);
  }

  /**
   * A hostNetwork pod (e.g. kube-router's own DaemonSet) shares its node's namespace: no CNI, its IP is
   * the node's, and its process runs in the node namespace.
   */
  async #startHostNetworkPod(uid: string, pod: KObject): Promise<void> {
    const ns = pod.metadata.namespace ?? "default";
    const record: PodRecord = {
      namespace: ns,
      name: pod.metadata.name,
      uid,
      node: this.o.host.name,
      netns: this.o.host.netns,
      hostNetwork: true,
      ips: [this.o.host.ip],
      startedAt: now(),
    };
    const rt = this.#newRuntime(record, pod);
    this.#pods.set(uid, rt);
    this.#writeRecord(record);
    await this.#startContainers(rt, pod);
    this.o.log.info("hostNetwork pod running", { pod: `${ns}/${record.name}`, node: this.o.host.name });
    await this.#reportReadiness(rt, this.o.pods.get(keyOf(pod)) ?? pod, true);
  }

  #newRuntime(record: PodRecord, pod: KObject): PodRuntime {
    const specs = (pod.spec?.containers ?? []) as ContainerSpec[];
    return {
      record,
      pod,
      stopping: false,
      problems: [],
      containers: specs.map((spec) => ({
        spec,
        program: containerProgram(pod, spec),
        running: false,
        restarts: 0,
        livenessFailures: 0,
      })),
    };
  }

  /** `<nodeDir>/pods/<uid>`: container logs, service-account files, volumes. */
  #podDir(uid: string): string {
    return `${this.o.nodeDir}/pods/${uid}`;
  }

  /** The log file of one container (`previous`: the one before its last restart). */
  containerLog(uid: string, container: string, previous = false): string {
    return `${this.#podDir(uid)}/${container}${previous ? ".previous" : ""}.log`;
  }

  async #startContainers(rt: PodRuntime, pod: KObject): Promise<void> {
    Deno.mkdirSync(this.#podDir(rt.record.uid), { recursive: true });
    await Promise.all(rt.containers.map((c) => this.#runContainer(rt, c, pod)));
  }

  /**
   * Starts one container's process and, for netexec, waits until it listens. When it exits on its own (or
   * the kubelet kills it for a failed liveness probe), the pod turns not Ready and, unless restartPolicy is
   * Never, the container is started again after a backoff (2 s, doubling to 10 s), as kubelet restarts a
   * crashed container.
   */
  async #runContainer(rt: PodRuntime, c: ContainerRuntime, pod: KObject): Promise<void> {
    const { namespace: ns, name, uid } = rt.record;
    if (c.program.kind === "unknown-image") return await this.#pullFailed(rt, c, pod, c.program.image, 0);
    const log = this.containerLog(uid, c.spec.name);
    if (c.restarts > 0) {
      try {
        Deno.renameSync(log, this.containerLog(uid, c.spec.name, true));
      } catch { /* no log yet */ }
    }
    try {
      const { cmd, env } = await this.#containerCommand(rt, c, pod, log);
      const child = new Deno.Command(cmd[0]!, {
        args: cmd.slice(1),
        env,
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      c.child = child;
      c.pid = child.pid;
      c.running = true;
      c.waiting = undefined;
      c.startedAt = now();
      c.livenessFailures = 0;
      rt.record.pids = { ...rt.record.pids, [c.spec.name]: child.pid };
      rt.record.pid ??= child.pid;
      this.#writeRecord(rt.record);
      child.status.then((st) => this.#containerExited(rt, c, child, st, pod));
      if (c.program.kind === "netexec") await this.#waitListening(child, log);
      this.#startProbes(rt, c);
    } catch (e) {
      this.o.log.error("container did not start", { pod: `${ns}/${name}`, container: c.spec.name, err: e });
      c.running = false;
      c.waiting = { reason: "RunContainerError", message: String(e instanceof Error ? e.message : e) };
      this.#scheduleRestart(rt, c, pod);
    }
  }

  /**
   * An image the lab cannot run, reported as kubelet reports an image it cannot pull: events Pulling and
   * `Failed to pull image "…"`, the container waiting in ErrImagePull, then in ImagePullBackOff (event
   * BackOff) until the next try, with a backoff of 5 s doubling to 60 s (kubelet: 10 s to 5 min). The
   * rest of the pod and of the node go on.
   */
  async #pullFailed(rt: PodRuntime, c: ContainerRuntime, pod: KObject, image: string, attempt: number) {
    if (rt.stopping || this.#stopped) return;
    const where = `spec.containers{${c.spec.name}}`;
    const why = `the kube-router lab does not run image "${image}": it plays only the images ${
      Object.keys(KNOWN_IMAGES).join(", ")
    } and kube-router (any registry or tag; see README, The lab)`;
    this.o.log.warn("image not runnable", { pod: `${rt.record.namespace}/${rt.record.name}`, image });
    await this.#events.record(pod, "Normal", "Pulling", `Pulling image "${image}"`, where);
    await this.#events.record(pod, "Warning", "Failed", `Failed to pull image "${image}": ${why}`, where);
    await this.#events.record(pod, "Warning", "Failed", "Error: ErrImagePull", where);
    c.running = false;
    c.waiting = { reason: "ErrImagePull", message: why };
    const backoff = Math.min(5000 * 2 ** attempt, 60_000);
    const backOff = setTimeout(() => {
      this.#enqueue(rt.record.uid, async () => {
        if (rt.stopping || this.#stopped) return;
        c.waiting = { reason: "ImagePullBackOff", message: `Back-off pulling image "${image}"` };
        await this.#events.record(pod, "Normal", "BackOff", `Back-off pulling image "${image}"`, where);
        await this.#events.record(pod, "Warning", "Failed", "Error: ImagePullBackOff", where);
        await this.#reportReadiness(rt, this.o.pods.get(keyOf(pod)) ?? pod);
      });
      const retry = setTimeout(() => {
        this.#enqueue(rt.record.uid, async () => {
          const cur = this.o.pods.get(keyOf(pod)) ?? pod;
          await this.#pullFailed(rt, c, cur, image, attempt + 1);
          await this.#reportReadiness(rt, cur);
        });
      }, backoff);
      Deno.unrefTimer(retry);
    }, 2000);
    Deno.unrefTimer(backOff);
  }

  #containerExited(
    rt: PodRuntime,
    c: ContainerRuntime,
    child: Deno.ChildProcess,
    st: Deno.CommandStatus,
    pod: KObject,
  ): void {
    if (c.child !== child) return;
    c.running = false;
    if (c.probeTimer !== undefined) clearInterval(c.probeTimer);
    c.probeTimer = undefined;
    c.lastTerminated = {
      exitCode: st.signal ? 128 + (st.signal === "SIGKILL" ? 9 : 15) : st.code,
      reason: c.killedFor ?? (st.code === 0 && !st.signal ? "Completed" : "Error"),
      ...(c.startedAt ? { startedAt: c.startedAt } : {}),
      finishedAt: now(),
    };
    c.killedFor = undefined;
    if (rt.stopping) return;
    const cur = this.o.pods.get(keyOf(pod));
    if (!cur) return;
    this.o.log.info("container exited", {
      pod: `${rt.record.namespace}/${rt.record.name}`,
      container: c.spec.name,
      code: st.code,
      reason: c.lastTerminated.reason,
    });
    if (cur.spec?.restartPolicy !== "Never") {
      c.waiting = {
        reason: "CrashLoopBackOff",
        message: `back-off restarting failed container ${c.spec.name}`,
      };
    }
    this.#enqueue(rt.record.uid, () => this.#reportReadiness(rt, cur));
    if (cur.spec?.restartPolicy === "Never") return;
    this.#scheduleRestart(rt, c, cur);
  }

  #scheduleRestart(rt: PodRuntime, c: ContainerRuntime, pod: KObject): void {
    // 2 s, doubling to 10 s (kubelet: 10 s to 5 min; shorter here so tests stay quick, long enough that a
    // crashed container's not-Ready is seen by the API's watchers on a loaded machine).
    const backoff = Math.min(2000 * 2 ** c.restarts, 10_000);
    setTimeout(() => {
      if (rt.stopping || this.#stopped) return;
      c.restarts++;
      this.o.log.info("restarting container", {
        pod: `${rt.record.namespace}/${rt.record.name}`,
        container: c.spec.name,
        restarts: c.restarts,
      });
      this.#enqueue(rt.record.uid, async () => {
        if (rt.stopping) return;
        const cur = this.o.pods.get(keyOf(pod)) ?? pod;
        await this.#runContainer(rt, c, cur);
        await this.#reportReadiness(rt, this.o.pods.get(keyOf(pod)) ?? cur, true);
      });
    }, backoff);
  }

  /** The command line and environment of one container. */
  async #containerCommand(
    rt: PodRuntime,
    c: ContainerRuntime,
    pod: KObject,
    log: string,
  ): Promise<{ cmd: string[]; env: Record<string, string> }> {
    const r = rt.record;
    // `exec` keeps the pid the program's; output goes to the container's log file.
    const toLog = ["sh", "-c", 'exec "$@" >>"$LAB_LOG" 2>&1', "sh"];
    if (c.program.kind === "netexec") {
      return {
        cmd: [
          "ip",
          "netns",
          "exec",
          r.netns,
          ...toLog,
          Deno.execPath(),
          "run",
          "--allow-net",
          "--unstable-net",
          "--no-prompt",
          // netexec imports nothing: skip finding and reading the repo's deno.json and lock file.
          "--no-config",
          "--no-lock",
          new URL("./netexec.ts", import.meta.url).pathname,
          r.name,
          ...c.program.ports,
        ],
        env: { LAB_LOG: log },
      };
    }
    if (c.program.kind === "idle") {
      // busybox or pause with no declared port: a process that holds no port.
      return { cmd: ["ip", "netns", "exec", r.netns, ...toLog, "sleep", "infinity"], env: { LAB_LOG: log } };
    }
    if (c.program.kind !== "agent") throw new Error(`image ${c.spec.image}: not runnable`);
    const agent = this.o.agent;
    if (!agent) throw new Error(`image ${c.spec.image}: the lab runs the agent only when started by lab up`);
    const base: Record<string, string> = {
      KUBERNETES_SERVICE_HOST: agent.apiHost,
      KUBERNETES_SERVICE_PORT: String(agent.apiPort),
      KUBERNETES_SERVICE_PORT_HTTPS: String(agent.apiPort),
      KUBERNETES_PORT: `tcp://${agent.apiHost}:${agent.apiPort}`,
      HOSTNAME: pod.spec?.hostNetwork ? this.o.host.name : r.name,
    };
    const { env, problems } = containerEnv(pod, c.spec, base, {
      ...(r.ips[0] ? { podIP: r.ips[0] } : {}),
      hostIP: this.o.host.ip,
    });
    const mounts = await this.#agentMounts(rt, c, pod, problems);
    rt.problems = problems;
    for (const p of problems) {
      this.o.log.warn("container spec", { pod: `${r.namespace}/${r.name}`, problem: p });
    }
    return {
      cmd: [
        "ip",
        "netns",
        "exec",
        r.netns,
        "sh",
        "-c",
        mountScript(mounts, `${this.#podDir(r.uid)}/mnt-${c.spec.name}`),
        "sh",
        ...agent.program,
        ...c.program.args,
      ],
      env: { ...env, LAB_LOG: log },
    };
  }

  /**
   * The bind mounts of an agent container: its volumes (hostPath, emptyDir, the service-account token) at
   * their mountPaths. Unsupported volume kinds are reported as problems and left out.
   */
  async #agentMounts(
    rt: PodRuntime,
    c: ContainerRuntime,
    pod: KObject,
    problems: string[],
  ): Promise<Mount[]> {
    const dir = this.#podDir(rt.record.uid);
    const volumes = (pod.spec?.volumes ?? []) as Array<
      { name: string; hostPath?: { path: string; type?: string }; emptyDir?: unknown; [k: string]: unknown }
    >;
    const mounts: Mount[] = [];
    for (const vm of c.spec.volumeMounts ?? []) {
      const v = volumes.find((x) => x.name === vm.name);
      if (!v) {
        problems.push(`volumeMount ${vm.name}: no such volume`);
        continue;
      }
      let source: string;
      let file = false;
      if (v.hostPath) {
        const hp = v.hostPath.path.replace(/\/+$/, "") || "/";
        if (hp === "/etc/cni/net.d") source = this.o.cniConfDir;
        else if (["/lib/modules", "/usr/lib/modules", "/run/netns", "/var/run/netns"].includes(hp)) {
          source = hp;
        } else source = `${this.o.nodeDir}/hostpath${hp}`;
        file = v.hostPath.type === "FileOrCreate" || v.hostPath.type === "File";
        if (file) {
          Deno.mkdirSync(source.slice(0, source.lastIndexOf("/")), { recursive: true });
          Deno.writeFileSync(source, new Uint8Array(), { append: true });
        } else Deno.mkdirSync(source, { recursive: true });
      } else if ("emptyDir" in v) {
        source = `${dir}/volumes/${v.name}`;
        Deno.mkdirSync(source, { recursive: true });
      } else {
        problems.push(
          `volume ${v.name}: only hostPath and emptyDir volumes are supported by the lab kubelet`,
        );
        continue;
      }
      if (source !== vm.mountPath) mounts.push({ source, target: vm.mountPath, file });
    }
    if (pod.spec?.automountServiceAccountToken !== false) {
      const sa = `${dir}/serviceaccount`;
      Deno.mkdirSync(sa, { recursive: true });
      const ns = rt.record.namespace;
      Deno.writeTextFileSync(`${sa}/token`, await this.#serviceAccountToken(pod));
      Deno.writeTextFileSync(`${sa}/ca.crt`, this.o.agent!.caCertPem);
      Deno.writeTextFileSync(`${sa}/namespace`, ns);
      mounts.push({ source: sa, target: SERVICE_ACCOUNT_DIR, file: false });
    }
    return mounts;
  }

  /**
   * A token for the pod's service account through the TokenRequest API, as kubelet gets projected tokens.
   * When the API server does not serve it, the lab's admin token (logged, so it is never silent).
   */
  async #serviceAccountToken(pod: KObject): Promise<string> {
    const ns = pod.metadata.namespace ?? "default";
    const sa = (pod.spec?.serviceAccountName as string | undefined) ?? "default";
    try {
      const r = await this.o.client.create<KObject>(`/api/v1/namespaces/${ns}/serviceaccounts/${sa}/token`, {
        apiVersion: "authentication.k8s.io/v1",
        kind: "TokenRequest",
        metadata: { name: sa, namespace: ns },
        spec: {
          audiences: [],
          expirationSeconds: 86_400,
          boundObjectRef: { kind: "Pod", apiVersion: "v1", name: pod.metadata.name, uid: pod.metadata.uid },
        },
      });
      const token = r.status?.token;
      if (typeof token === "string" && token) return token;
      throw new Error("TokenRequest answered without a token");
    } catch (e) {
      const status = (e as { status?: number }).status;
      if ((status === 404 || status === 405) && this.o.agent?.fallbackToken && !isSaMissing(e)) {
        this.o.log.warn("the API server serves no TokenRequest; the pod gets the lab's admin token", {
          pod: `${ns}/${pod.metadata.name}`,
          serviceAccount: sa,
        });
        return this.o.agent.fallbackToken;
      }
      throw e;
    }
  }

  /** Liveness probing, as kubelet: after initialDelaySeconds, every periodSeconds; failureThreshold misses kill. */
  #startProbes(rt: PodRuntime, c: ContainerRuntime): void {
    const probe = c.spec.livenessProbe;
    if (!probe || (!probe.httpGet && !probe.tcpSocket)) return;
    const period = Math.max(1, probe.periodSeconds ?? 10) * 1000;
    const threshold = Math.max(1, probe.failureThreshold ?? 3);
    const child = c.child;
    const begin = setTimeout(() => {
      if (c.child !== child || !c.running) return;
      c.probeTimer = setInterval(async () => {
        if (c.child !== child || !c.running || rt.stopping) return;
        const ok = await this.#probe(rt, c, probe);
        if (c.child !== child || !c.running) return;
        if (ok) {
          c.livenessFailures = 0;
          return;
        }
        c.livenessFailures++;
        if (c.livenessFailures < threshold) return;
        this.o.log.warn("liveness probe failed; restarting the container", {
          pod: `${rt.record.namespace}/${rt.record.name}`,
          container: c.spec.name,
          failures: c.livenessFailures,
        });
        clearInterval(c.probeTimer);
        c.probeTimer = undefined;
        c.killedFor = "Error";
        const pid = c.pid;
        if (pid) {
          killPid(pid, "SIGTERM");
          setTimeout(() => {
            if (c.child === child && pidAlive(pid)) killPid(pid, "SIGKILL");
          }, 5000);
        }
      }, period);
    }, Math.max(0, probe.initialDelaySeconds ?? 0) * 1000);
    Deno.unrefTimer(begin);
  }

  async #probe(rt: PodRuntime, c: ContainerRuntime, probe: Probe): Promise<boolean> {
    const named = (p: number | string) =>
      typeof p === "number" ? p : Number(c.spec.ports?.find((x) => x.name === p)?.containerPort ?? p);
    const ip = rt.record.ips[0] ?? "127.0.0.1";
    // kubelet's timeout counts from the request; ours also covers spawning `ip netns exec curl`, which on a
    // loaded machine takes a while itself: allow 2 s for that on top.
    const timeout = String(Math.max(1, probe.timeoutSeconds ?? 1) + 2);
    if (probe.httpGet) {
      const h = probe.httpGet;
      const host = h.host ?? ip;
      const url = `${(h.scheme ?? "HTTP").toLowerCase()}://${host.includes(":") ? `[${host}]` : host}:${
        named(h.port)
      }${h.path ?? "/"}`;
      const r = await sh(
        [
          "ip",
          "netns",
          "exec",
          rt.record.netns,
          "curl",
          "-sk",
          "-o",
          "/dev/null",
          "-w",
          "%{http_code}",
          "-m",
          timeout,
          url,
        ],
        { check: false },
      );
      const code = Number(r.stdout.trim());
      return code >= 200 && code < 400;
    }
    const r = await sh(
      [
        "ip",
        "netns",
        "exec",
        rt.record.netns,
        "curl",
        "-s",
        "-m",
        timeout,
        `telnet://${ip}:${named(probe.tcpSocket!.port)}`,
      ],
      { check: false, stdin: "" },
    );
    // curl's telnet: 0 when connected and closed, 28 on a timeout after connecting (still up).
    return r.code === 0 || r.code === 28;
  }

  /** Waits until netexec prints `ready` in its log (every port listens), or fails if it exits first. */
  async #waitListening(child: Deno.ChildProcess, log: string): Promise<void> {
    let exited = false;
    child.status.then(() => exited = true);
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      try {
        if (Deno.readTextFileSync(log).includes("ready\n")) return;
      } catch { /* not yet */ }
      if (exited) throw new Error(`netexec exited before it was ready: ${tailOf(log)}`);
      await sleep(20);
    }
    throw new Error("netexec did not listen within 30 s");
  }

  #cniRuntime(record: PodRecord, pod: KObject | undefined): CniRuntime {
    const mappings: Array<{ hostPort: number; containerPort: number; protocol: string }> = pod
      ? []
      : [...(record.portMappings ?? [])];
    for (
      const c of (pod?.spec?.containers ?? []) as Array<
        { ports?: Array<{ containerPort: number; hostPort?: number; protocol?: string }> }
      >
    ) {
      for (const p of c.ports ?? []) {
        if (p.hostPort) {
          mappings.push({
            hostPort: p.hostPort,
            containerPort: p.containerPort,
            protocol: (p.protocol ?? "TCP").toLowerCase(),
          });
        }
      }
    }
    return {
      nodeNetns: this.o.host.netns,
      podNetnsPath: `/var/run/netns/${record.netns}`,
      containerId: record.uid.replace(/-/g, ""),
      ifname: "eth0",
      ipamDataDir: `${this.o.nodeDir}/cni-ipam`,
      ...(mappings.length ? { portMappings: mappings } : {}),
    };
  }

  #writeRecord(r: PodRecord): void {
    const path = `${this.o.nodeDir}/pods/${r.uid}.json`;
    Deno.writeTextFileSync(`${path}.tmp`, JSON.stringify(r, null, 2));
    Deno.renameSync(`${path}.tmp`, path);
  }

  async #reportReadiness(rt: PodRuntime, pod: KObject, force = false): Promise<void> {
    if (rt.stopping) return;
    const gate = pod.metadata.annotations?.[READY_ANNOTATION] !== "false";
    const containers = rt.containers.map((c) => ({
      name: c.spec.name,
      image: c.spec.image ?? "",
      imageID: "",
      containerID: `lab://${c.pid ?? 0}`,
      ready: c.running && gate,
      started: c.running,
      restartCount: c.restarts,
      state: c.running
        ? { running: { startedAt: c.startedAt } }
        : c.waiting
        ? { waiting: c.waiting }
        : c.lastTerminated
        ? { terminated: c.lastTerminated }
        : { waiting: { reason: "ContainerCreating" } },
      ...(c.lastTerminated && (c.running || c.waiting)
        ? { lastState: { terminated: c.lastTerminated } }
        : {}),
    }));
    const ready = containers.length > 0 && containers.every((c) => c.ready);
    const key = JSON.stringify(containers.map((c) => [c.ready, c.restartCount, c.containerID, c.state]));
    if (!force && rt.reportedKey === key) return;
    const t = now();
    const st = ready ? "True" : "False";
    const allDone = rt.containers.every((c) => !c.running && c.lastTerminated);
    const never = pod.spec?.restartPolicy === "Never";
    // Pending while a container has never started (an image that cannot be pulled), as kubelet reports it.
    const phase = rt.containers.some((c) => !c.startedAt)
      ? "Pending"
      : never && allDone
      ? (rt.containers.every((c) => c.lastTerminated?.exitCode === 0) ? "Succeeded" : "Failed")
      : "Running";
    await this.#patchPodStatus(pod, {
      phase,
      hostIP: this.o.host.ip,
      hostIPs: [{ ip: this.o.host.ip }],
      podIP: rt.record.ips[0],
      podIPs: rt.record.ips.map((ip) => ({ ip })),
      startTime: rt.record.startedAt,
      ...(rt.problems.length ? { message: rt.problems.join("; ").slice(0, 500) } : {}),
      conditions: [
        { type: "PodReadyToStartContainers", status: "True", lastTransitionTime: rt.record.startedAt },
        { type: "Initialized", status: "True", lastTransitionTime: rt.record.startedAt },
        {
          type: "Ready",
          status: st,
          lastTransitionTime: t,
          ...(ready ? {} : { reason: gate ? "ContainersNotReady" : "ReadinessGatesNotReady" }),
        },
        { type: "ContainersReady", status: st, lastTransitionTime: t },
        { type: "PodScheduled", status: "True", lastTransitionTime: rt.record.startedAt },
      ],
      containerStatuses: containers,
    });
    rt.reportedKey = key;
  }

  async #patchPodStatus(pod: KObject, status: Record<string, unknown>): Promise<void> {
    const ns = pod.metadata.namespace ?? "default";
    try {
      await this.#patchStatus(`/api/v1/namespaces/${ns}/pods/${pod.metadata.name}`, status);
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
  }

  async #stopPod(rt: PodRuntime, pod: KObject | undefined): Promise<void> {
    if (rt.stopping) return;
    if (pod) {
      const after = Number(pod.metadata.annotations?.[TERMINATE_AFTER_ANNOTATION] ?? 0);
      const grace = Number(
        pod.metadata.deletionGracePeriodSeconds ?? pod.spec?.terminationGracePeriodSeconds ?? 30,
      );
      const wait = Math.max(0, Math.min(Number.isFinite(after) ? after : 0, grace));
      if (wait > 0) await sleep(wait * 1000);
    }
    rt.stopping = true;
    await this.#teardown(rt);
    this.#pods.delete(rt.record.uid);
    this.#events.forget(rt.record.uid);
    this.o.log.info("pod stopped", {
      pod: `${rt.record.namespace}/${rt.record.name}`,
      node: this.o.host.name,
    });
  }

  /**
   * Stops the pod's containers (SIGTERM, SIGKILL after up to 10 s: an agent closes its BGP sessions and
   * keeps its routes), runs CNI DEL, deletes the namespace, the record and the pod's directory.
   */
  async #teardown(rt: PodRuntime): Promise<void> {
    const r = rt.record;
    for (const c of rt.containers) if (c.probeTimer !== undefined) clearInterval(c.probeTimer);
    const pids = [...new Set([...Object.values(r.pids ?? {}), ...(r.pid ? [r.pid] : [])])];
    for (const pid of pids) killPid(pid, "SIGTERM");
    const agent = rt.containers.some((c) => c.program.kind === "agent");
    for (let i = 0; i < (agent ? 200 : 20) && pids.some(pidAlive); i++) await sleep(50);
    for (const pid of pids) killPid(pid, "SIGKILL");
    if (r.cniList) {
      await cniDel(r.cniList, this.#cniRuntime(r, undefined), r.cniResult).catch((e) =>
        this.o.log.warn("CNI DEL failed", { pod: `${r.namespace}/${r.name}`, err: e })
      );
    }
    if (!r.hostNetwork) await sh(["ip", "netns", "del", r.netns], { check: false });
    try {
      Deno.removeSync(`${this.o.nodeDir}/pods/${r.uid}.json`);
    } catch { /* gone */ }
    try {
      Deno.removeSync(this.#podDir(r.uid), { recursive: true });
    } catch { /* gone */ }
  }

  /** Removes a terminating pod from the API, as kubelet does once its containers are gone. */
  async #finalDelete(pod: KObject): Promise<void> {
    const ns = pod.metadata.namespace ?? "default";
    try {
      await this.o.client.delete(`/api/v1/namespaces/${ns}/pods/${pod.metadata.name}`, {
        apiVersion: "v1",
        kind: "DeleteOptions",
        gracePeriodSeconds: 0,
        preconditions: { uid: pod.metadata.uid },
      });
    } catch (e) {
      if (!isNotFound(e) && !(e instanceof Error && /HTTP 409/.test(e.message))) throw e;
    }
  }
}

/** Where in-cluster configuration looks for the service-account token, CA and namespace. */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** A bind mount into an agent container's mount namespace. */
export interface Mount {
  source: string;
  target: string;
  /** A single file (hostPath type File/FileOrCreate) rather than a directory. */
  file: boolean;
}

function exists(p: string): boolean {
  try {
    Deno.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** `path` with every symlink in it resolved, as far as the path exists (the rest appended). */
function resolveExisting(path: string): { existing: string; rest: string[] } {
  const parts = path.split("/").filter(Boolean);
  for (let i = parts.length; i >= 0; i--) {
    const head = "/" + parts.slice(0, i).join("/");
    try {
      return { existing: Deno.realPathSync(head), rest: parts.slice(i) };
    } catch { /* go up */ }
  }
  return { existing: "/", rest: parts };
}

const shq = (s: string) => `'${s.replaceAll("'", `'"'"'`)}'`;

/**
 * The shell script that runs inside `ip netns exec` (which gives the process a private mount namespace,
 * / made a slave) before exec'ing the agent: a tmpfs at `scratch` for overlay upper layers; for every
 * mount whose target does not exist, an overlay on its nearest existing directory (so mkdir there writes to
 * the tmpfs, never to the host); then the bind mounts; then `exec "$@"` with output to $LAB_LOG.
 */
export function mountScript(mounts: Mount[], scratch: string): string {
  const lines = ["set -e"];
  if (mounts.length) {
    Deno.mkdirSync(scratch, { recursive: true });
    lines.push(`mount -t tmpfs -o mode=0755 lab-scratch ${shq(scratch)}`);
  }
  const overlaid: string[] = [];
  let n = 0;
  for (const m of mounts) {
    const { existing, rest } = resolveExisting(m.target);
    const target = existing === "/" ? "/" + rest.join("/") : [existing, ...rest].join("/");
    if (rest.length > 0) {
      if (existing === "/") {
        throw new Error(`cannot create mount point ${m.target}: no parent directory to overlay`);
      }
      if (!overlaid.some((o) => existing === o || existing.startsWith(`${o}/`))) {
        const u = `${scratch}/u${n}`, w = `${scratch}/w${n++}`;
        lines.push(
          `mkdir -p ${shq(u)} ${shq(w)}`,
          `mount -t overlay lab-overlay -o lowerdir=${existing},upperdir=${u},workdir=${w} ${shq(existing)}`,
        );
        overlaid.push(existing);
      }
      lines.push(
        m.file
          ? `mkdir -p ${shq(target.slice(0, target.lastIndexOf("/")) || "/")} && touch ${shq(target)}`
          : `mkdir -p ${shq(target)}`,
      );
    } else if (!exists(target)) lines.push(m.file ? `touch ${shq(target)}` : `mkdir -p ${shq(target)}`);
    lines.push(`mount --bind ${shq(m.source)} ${shq(target)}`);
  }
  lines.push('exec "$@" >>"$LAB_LOG" 2>&1');
  return lines.join("\n");
}

function tailOf(path: string): string {
  try {
    return Deno.readTextFileSync(path).trim().split("\n").slice(-5).join(" | ");
  } catch {
    return "(no output)";
  }
}

/** A TokenRequest refused because the service account does not exist (not because the API lacks it). */
function isSaMissing(e: unknown): boolean {
  return e instanceof Error && /serviceaccounts? .*not found/i.test(e.message);
}

/**
 * The host ports (`proto/port`) a pod takes on its node: declared hostPorts, and for a hostNetwork pod every
 * container port (its containerPort is a port of the node).
 */
export function hostPorts(pod: KObject): string[] {
  const out: string[] = [];
  for (const c of (pod.spec?.containers ?? []) as ContainerSpec[]) {
    for (const p of c.ports ?? []) {
      const port = pod.spec?.hostNetwork ? (p.hostPort ?? p.containerPort) : p.hostPort;
      if (port) out.push(`${(p.protocol ?? "TCP").toUpperCase()}/${port}`);
    }
  }
  return out;
}

/** The first host port `pod` wants that a running pod already has, as "TCP/8080 (taken by ns/name)". */
export function hostPortClash(pod: KObject, running: KObject[]): string | undefined {
  const want = new Set(hostPorts(pod));
  if (want.size === 0) return undefined;
  for (const other of running) {
    if (other.metadata.uid === pod.metadata.uid) continue;
    for (const hp of hostPorts(other)) {
      if (want.has(hp)) {
        return `${hp} taken by ${other.metadata.namespace ?? "default"}/${other.metadata.name}`;
      }
    }
  }
  return undefined;
}
