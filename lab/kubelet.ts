/**
 * The lab kubelet of one node: registers the Node (InternalIP = the node's underlay address, Ready), and
 * for every Pod bound to the node creates a network namespace (`ip netns add <prefix>pod-<uid>`), wires it
 * with the real CNI plugins from the node's CNI conf dir, starts `netexec.ts` inside it on the pod's
 * declared container ports, and reports podIP(s), phase Running and the Ready condition. Deleting a pod
 * stops its process, runs CNI DEL and removes the namespace.
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
import { type LabHost, podNetnsName } from "./topology.ts";
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
  pid?: number;
  cniList?: NetworkList;
  cniResult?: unknown;
  /** hostPort mappings given to ADD; DEL needs the same ones (portmap finds its rules by them). */
  portMappings?: Array<{ hostPort: number; containerPort: number; protocol: string }>;
  startedAt: string;
}

interface PodRuntime {
  record: PodRecord;
  child?: Deno.ChildProcess;
  exited: boolean;
  /** How often the pod's process was restarted after exiting. */
  restarts: number;
  reportedReady?: boolean;
  stopping: boolean;
}

function now(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, "Z");
}

/** Container ports a pod declares, as netexec arguments; agnhost's defaults (8080/tcp, 8081/udp) if none. */
export function netexecPorts(pod: KObject): string[] {
  const out = new Set<string>();
  for (
    const c of (pod.spec?.containers ?? []) as Array<
      { ports?: Array<{ containerPort: number; protocol?: string }> }
    >
  ) {
    for (const p of c.ports ?? []) {
      const proto = (p.protocol ?? "TCP").toUpperCase();
      if (proto === "TCP" || proto === "UDP") out.add(`${proto.toLowerCase()}:${p.containerPort}`);
    }
  }
  return out.size ? [...out] : ["tcp:8080", "udp:8081"];
}

export class LabKubelet {
  readonly #pods = new Map<string, PodRuntime>();
  readonly #chains = new Map<string, Promise<void>>();
  readonly #startedAt = Date.now();
  #slots = 4;
  readonly #waiters: Array<() => void> = [];
  #firstAdd: Promise<void> | undefined;
  #stopped = false;

  constructor(private readonly o: KubeletOptions) {
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
    const rt: PodRuntime = { record, exited: false, stopping: false, restarts: 0 };
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
    await this.#runContainer(rt, pod);
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
    const rt: PodRuntime = { record, exited: false, stopping: false, restarts: 0 };
    this.#pods.set(uid, rt);
    this.#writeRecord(record);
    await this.#runContainer(rt, pod);
    this.o.log.info("hostNetwork pod running", { pod: `${ns}/${record.name}`, node: this.o.host.name });
    await this.#reportReadiness(rt, this.o.pods.get(keyOf(pod)) ?? pod, true);
  }

  /**
   * Starts the pod's process (netexec) and waits until it listens. When it exits on its own, the pod turns
   * not Ready and, unless restartPolicy is Never, the process is started again after a backoff (1 s,
   * doubling to 10 s), as kubelet restarts a crashed container.
   */
  async #runContainer(rt: PodRuntime, pod: KObject): Promise<void> {
    const { namespace: ns, name, netns, uid } = rt.record;
    try {
      const child = new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          netns,
          Deno.execPath(),
          "run",
          "--allow-net",
          "--unstable-net",
          "--no-prompt",
          // netexec imports nothing: skip finding and reading the repo's deno.json and lock file.
          "--no-config",
          "--no-lock",
          new URL("./netexec.ts", import.meta.url).pathname,
          name,
          ...netexecPorts(pod),
        ],
        stdin: "null",
        stdout: "piped",
        stderr: "null",
      }).spawn();
      rt.child = child;
      rt.record.pid = child.pid;
      this.#writeRecord(rt.record);
      child.status.then(() => {
        if (rt.child !== child) return;
        rt.exited = true;
        if (rt.stopping) return;
        const cur = this.o.pods.get(keyOf(pod));
        if (!cur) return;
        this.#enqueue(uid, () => this.#reportReadiness(rt, cur));
        if (cur.spec?.restartPolicy === "Never") return;
        const backoff = Math.min(1000 * 2 ** rt.restarts, 10_000);
        setTimeout(() => {
          if (rt.stopping || this.#stopped) return;
          rt.restarts++;
          this.o.log.info("restarting pod process", { pod: `${ns}/${name}`, restarts: rt.restarts });
          this.#enqueue(uid, async () => {
            if (rt.stopping) return;
            await this.#runContainer(rt, this.o.pods.get(keyOf(pod)) ?? cur);
            await this.#reportReadiness(rt, this.o.pods.get(keyOf(pod)) ?? cur, true);
          });
        }, backoff);
      });
      await this.#waitReady(child);
      rt.exited = false;
    } catch (e) {
      this.o.log.error("pod process did not start", { pod: `${ns}/${name}`, err: e });
      rt.exited = true;
    }
  }

  async #waitReady(child: Deno.ChildProcess): Promise<void> {
    const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    const deadline = setTimeout(() => reader.cancel().catch(() => {}), 30_000);
    try {
      while (!buf.includes("ready")) {
        const { value, done } = await reader.read();
        if (done) throw new Error("netexec exited before it was ready");
        buf += value;
      }
    } finally {
      clearTimeout(deadline);
    }
    // Keep draining so the pipe never fills.
    (async () => {
      try {
        while (!(await reader.read()).done) { /* discard */ }
      } catch { /* closed */ }
    })();
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
    const ready = !rt.exited && pod.metadata.annotations?.[READY_ANNOTATION] !== "false";
    if (!force && rt.reportedReady === ready) return;
    const t = now();
    const st = ready ? "True" : "False";
    const containers = ((pod.spec?.containers ?? []) as Array<{ name: string; image?: string }>).map((c) => ({
      name: c.name,
      image: c.image ?? "",
      imageID: "",
      containerID: `lab://${rt.record.pid ?? 0}`,
      ready,
      started: !rt.exited,
      restartCount: rt.restarts,
      state: rt.exited
        ? { terminated: { exitCode: 1, reason: "Error", finishedAt: t } }
        : { running: { startedAt: rt.record.startedAt } },
    }));
    await this.#patchPodStatus(pod, {
      phase: rt.exited && pod.spec?.restartPolicy === "Never" ? "Failed" : "Running",
      hostIP: this.o.host.ip,
      hostIPs: [{ ip: this.o.host.ip }],
      podIP: rt.record.ips[0],
      podIPs: rt.record.ips.map((ip) => ({ ip })),
      startTime: rt.record.startedAt,
      conditions: [
        { type: "PodReadyToStartContainers", status: "True", lastTransitionTime: rt.record.startedAt },
        { type: "Initialized", status: "True", lastTransitionTime: rt.record.startedAt },
        {
          type: "Ready",
          status: st,
          lastTransitionTime: t,
          ...(ready ? {} : { reason: "ReadinessGatesNotReady" }),
        },
        { type: "ContainersReady", status: st, lastTransitionTime: t },
        { type: "PodScheduled", status: "True", lastTransitionTime: rt.record.startedAt },
      ],
      containerStatuses: containers,
    });
    rt.reportedReady = ready;
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
    this.o.log.info("pod stopped", {
      pod: `${rt.record.namespace}/${rt.record.name}`,
      node: this.o.host.name,
    });
  }

  /** Kills the pod's process, runs CNI DEL, deletes the namespace and the record. */
  async #teardown(rt: PodRuntime): Promise<void> {
    const r = rt.record;
    if (r.pid) {
      killPid(r.pid, "SIGTERM");
      for (let i = 0; i < 20 && pidAlive(r.pid); i++) await sleep(50);
      killPid(r.pid, "SIGKILL");
    }
    if (r.cniList) {
      await cniDel(r.cniList, this.#cniRuntime(r, undefined), r.cniResult).catch((e) =>
        this.o.log.warn("CNI DEL failed", { pod: `${r.namespace}/${r.name}`, err: e })
      );
    }
    if (!r.hostNetwork) await sh(["ip", "netns", "del", r.netns], { check: false });
    try {
      Deno.removeSync(`${this.o.nodeDir}/pods/${r.uid}.json`);
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
