/**
 * `lab up`, `lab down`, `lab status` and the helpers behind `lab kubectl`/`lab exec`: the lifecycle of
 * the lab cluster. `up` records every namespace and process in the state dir before creating it and
 * daemonizes the lab master and the agents (own session, output to files), so the lab keeps running after
 * `up` returns and `down` can always undo it.
 */
import { parseAllDocuments, stringify } from "yaml";
import { pidAlive, progress, sh, sleep, WaitAborted, waitFor } from "./_sh.ts";
import type { CniMode } from "./kubelet.ts";
import {
  EXTERNAL_ROUTER_IP,
  externalRouterFlags,
  type ExternalRouterKind,
  prepareExternalRouter,
  routerAnswers,
  routerCommand,
} from "./external_router.ts";
import { addUnderlayHost, createMachines, listNetns, removeNetns } from "./netns.ts";
import {
  defaultPrefix,
  defaultStateDir,
  type LabProcess,
  type LabState,
  nodeDir,
  readState,
  STATE_FILE,
  writeState,
} from "./state.ts";
import { type LabHost, MASTER_IP, SERVICE_CIDR, topology } from "./topology.ts";
import { AGENT_V8_FLAGS } from "../core/mod.ts";

export const REPO_ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
/** The DaemonSet manifest `lab up --daemonset` applies by default (all features, replacing kube-proxy). */
export const DAEMONSET_MANIFEST = `${REPO_ROOT}/dist/kube-router-daemonset.yaml`;
export const AGENT_HEALTH_PORT = 20244;

/** `lab up` refused or failed; the message says what to do. */
export class LabError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "LabError";
  }
}

export interface LabPaths {
  stateDir: string;
  prefix: string;
}

export interface UpOptions extends Partial<LabPaths> {
  nodes?: number;
  /** Start one agent per node (default true). */
  agents?: boolean;
  /** Extra agent flags, appended after the lab's defaults. */
  agentFlags?: string[];
  /** Run this agent binary (e.g. the output of `deno task compile`) instead of `deno run -A main.ts`. */
  agentBin?: string;
  /** Who writes the CNI conf (see kubelet.ts). Default: defaultCniMode(agents, agentFlags). */
  cni?: CniMode;
  /** Seconds the lab waits in auto mode for the agent's CNI conf. Default 10. */
  cniWaitSeconds?: number;
  /** Progress lines (default: none). */
  say?: (line: string) => void;
  /**
   * Add a real BGP router (gobgpd or BIRD 2) at 192.168.1.10, ASN 65000, peering with every node; the
   * agents get `--peer-router-ips=192.168.1.10 --peer-router-asns=65000` before `agentFlags`.
   */
  externalRouter?: ExternalRouterKind;
  /**
   * Run the agents as a DaemonSet from this manifest (the seed's `kubectl apply -f …`) instead of lab
   * processes: implies no agent processes; the lab's flags are appended to the kube-router container's args.
   */
  daemonset?: string;
  /** Overall timeout for the cluster and agents to become ready. Default 180 s. */
  timeoutMs?: number;
}

function paths(o: Partial<LabPaths>): LabPaths {
  return { stateDir: o.stateDir ?? defaultStateDir(), prefix: o.prefix ?? defaultPrefix() };
}

/** The flags every lab agent gets, before `--agent-flags`. */
export function defaultAgentFlags(stateDir: string): string[] {
  return [
    `--kubeconfig=${stateDir}/kubeconfig`,
    "--run-router=true",
    "--run-firewall=true",
    "--run-service-proxy=true",
    `--health-port=${AGENT_HEALTH_PORT}`,
    // /metrics on the health listener, so the demo and tests can read the agents' counters.
    `--metrics-port=${AGENT_HEALTH_PORT}`,
    `--service-cluster-ip-range=${SERVICE_CIDR}`,
  ];
}

/**
 * Who writes each node's CNI conf when `--cni` is not given: the agents' router module when agents run
 * with the router and CNI enabled (as kube-router does), otherwise the lab itself.
 */
export function defaultCniMode(agents: boolean, agentFlags: string[]): CniMode {
  if (!agents) return "lab";
  const off = (flag: string) =>
    agentFlags.some((f, i) =>
      new RegExp(`^--?${flag}=(false|f|0)$`, "i").test(f) ||
      (f === `--${flag}` && /^(false|f|0)$/i.test(agentFlags[i + 1] ?? ""))
    );
  return off("run-router") || off("enable-cni") ? "lab" : "agent";
}

/** Splits an `--agent-flags "…"` string as a shell would: whitespace separates, quotes group and are removed. */
export function splitFlags(text: string): string[] {
  const out: string[] = [];
  let cur = "";
  let has = false;
  let quote: string | undefined;
  for (const ch of text) {
    if (quote) {
      if (ch === quote) quote = undefined;
      else cur += ch;
    } else if (ch === '"' || ch === "'") {
      quote = ch;
      has = true;
    } else if (/\s/.test(ch)) {
      if (has) out.push(cur);
      cur = "";
      has = false;
    } else {
      cur += ch;
      has = true;
    }
  }
  if (has) out.push(cur);
  return out;
}

/** Starts `cmd` detached in its own session with stdout+stderr appended to `logFile`; returns its pid. */
function daemonize(cmd: string[], logFile: string, env: Record<string, string> = {}): number {
  // `detached` makes the child a session leader (setsid), so a Ctrl-C of `lab up` does not reach it;
  // sh execs ip which execs the program, so the pid stays the program's.
  const child = new Deno.Command("sh", {
    args: ["-c", 'exec "$@" </dev/null >>"$LAB_LOG" 2>&1', "sh", ...cmd],
    env: { ...env, LAB_LOG: logFile },
    stdin: "null",
    stdout: "null",
    stderr: "null",
    detached: true,
  }).spawn();
  child.unref();
  return child.pid;
}

function cmdlineHas(pid: number, marker: string): boolean {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`).replaceAll("\0", " ").includes(marker);
  } catch {
    return false;
  }
}

function tail(path: string, lines = 20): string {
  try {
    return Deno.readTextFileSync(path).trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/** Is the agent of `host` answering /healthz with 200? */
export async function agentHealthy(host: LabHost): Promise<boolean> {
  const res = await sh([
    "ip",
    "netns",
    "exec",
    host.netns,
    "curl",
    "-s",
    "-o",
    "/dev/null",
    "-w",
    "%{http_code}",
    "-m",
    "2",
    `http://127.0.0.1:${AGENT_HEALTH_PORT}/healthz`,
  ], { check: false });
  return res.stdout.trim() === "200";
}

/** Starts the agent of one node, daemonized; returns its process record. */
export function startAgent(state: LabState, host: LabHost): LabProcess {
  const dir = nodeDir(state.stateDir, host.name);
  Deno.mkdirSync(`${dir}/cni`, { recursive: true });
  const main = `${REPO_ROOT}/main.ts`;
  // The agent from source, or a built binary (`lab up --agent-bin dist/kube-router`).
  // The same V8 flags as `deno task start` and the compiled binary (smaller heaps, see BENCHMARKS.md).
  const program = state.agentBin
    ? [state.agentBin]
    : [Deno.execPath(), "run", "-A", `--v8-flags=${AGENT_V8_FLAGS}`, main];
  const pid = daemonize(
    [
      "ip",
      "netns",
      "exec",
      host.netns,
      "env",
      `NODE_NAME=${host.name}`,
      `KUBE_ROUTER_CNI_CONF_FILE=${dir}/cni/10-kuberouter.conflist`,
      ...program,
      ...defaultAgentFlags(state.stateDir),
      ...externalRouterFlags(state.externalRouter),
      ...state.agentFlags,
    ],
    `${dir}/agent.log`,
  );
  // The kubeconfig flag is on every agent's command line, whatever runs it, and names this lab.
  return { role: "agent", node: host.name, pid, marker: `--kubeconfig=${state.stateDir}/kubeconfig` };
}

/**
 * Brings the lab up and returns once every node is Ready with its pod CIDR and every agent's /healthz
 * answers 200. Refuses (LabError) when a lab is already up in this state dir or namespaces with this
 * prefix exist. On failure the partial lab stays recorded; `labDown` removes it.
 */
export async function labUp(opts: UpOptions = {}): Promise<LabState> {
  const { stateDir, prefix } = paths(opts);
  const say = opts.say ?? (() => {});
  const nodes = opts.nodes ?? 3;
  const topo = topology(nodes, prefix);
  if (Deno.uid() !== 0) throw new LabError("the lab needs root (it creates network namespaces)");
  const missing = preflight(opts.agents ?? true, opts.agentBin, opts.externalRouter);
  if (opts.daemonset) {
    try {
      Deno.statSync(opts.daemonset);
    } catch {
      missing.push(`${opts.daemonset} (the DaemonSet manifest)`);
    }
  }
  if (missing.length) {
    throw new LabError(`the lab needs ${missing.join(", ")}; \`deno task setup demo\` installs them`);
  }
  let existing = readState(stateDir);
  if (existing && await isStale(existing)) {
    // Left by a lab whose namespaces and processes are all gone (a reboot): nothing to protect.
    say(
      `removing the stale state of a lab created ${existing.createdAt} (no namespace or process of it is left)`,
    );
    await labDown({ stateDir, prefix: existing.prefix });
    existing = undefined;
  }
  if (existing) {
    throw new LabError(
      `a lab is already up (state in ${stateDir}, created ${existing.createdAt}, phase ${existing.phase}); ` +
        "run `deno task lab down` first",
    );
  }
  const stale = await listNetns(prefix);
  if (stale.length) {
    throw new LabError(
      `namespaces ${
        stale.join(", ")
      } already exist (a lab from another state dir, or a crash); run \`deno task lab down\` first`,
    );
  }
  const state: LabState = {
    version: 1,
    prefix,
    stateDir,
    nodes,
    createdAt: new Date().toISOString(),
    upPid: Deno.pid,
    phase: "creating",
    netns: [],
    processes: [],
    agents: opts.daemonset ? false : opts.agents ?? true,
    agentFlags: opts.agentFlags ?? [],
    ...(opts.daemonset ? { daemonset: absolute(opts.daemonset) } : {}),
    ...(opts.agentBin
      ? { agentBin: opts.agentBin.startsWith("/") ? opts.agentBin : `${Deno.cwd()}/${opts.agentBin}` }
      : {}),
    cniMode: opts.cni ??
      (opts.daemonset ? "auto" : defaultCniMode(opts.agents ?? true, opts.agentFlags ?? [])),
  };
  Deno.mkdirSync(stateDir, { recursive: true });
  writeState(state);
  const deadline = Date.now() + (opts.timeoutMs ?? 180_000);
  const left = () => Math.max(1000, deadline - Date.now());
  try {
    say(
      `creating namespaces: ${topo.underlayNetns} (bridge), ${topo.master.netns} ${MASTER_IP}, ` +
        `${topo.nodes.length} node(s) ${topo.nodes[0]!.ip}…${topo.nodes.at(-1)!.ip}`,
    );
    await createMachines(topo, (ns) => {
      state.netns.push(ns);
      writeState(state);
    });

    say("starting the lab master (API server, controllers, kubelets) in " + topo.master.netns);
    const masterScript = `${REPO_ROOT}/lab/master.ts`;
    // nsenter --net, not `ip netns exec`: the master creates pod namespaces (`ip netns add`), and their
    // bind mounts must land in the host's mount namespace, not in a private one only the master sees.
    const masterPid = daemonize([
      "nsenter",
      `--net=/var/run/netns/${topo.master.netns}`,
      Deno.execPath(),
      "run",
      "-A",
      masterScript,
      `--state-dir=${stateDir}`,
      `--nodes=${nodes}`,
      `--prefix=${prefix}`,
      `--cni=${state.cniMode}`,
      `--cni-wait=${opts.cniWaitSeconds ?? 10}`,
      ...(state.agentBin ? [`--agent-bin=${state.agentBin}`] : []),
    ], `${stateDir}/master.log`);
    state.processes.push({ role: "master", pid: masterPid, marker: `--state-dir=${stateDir}` });
    writeState(state);
    const stopCpTicker = progress(
      say,
      (s) => `waiting for the control plane: ${masterProgress(stateDir, topo.nodes)} (${s} s)`,
    );
    await waitFor("the lab control plane", () => {
      if (!pidAlive(masterPid)) {
        throw new WaitAborted(
          new LabError(
            `the lab master exited; last lines of ${stateDir}/master.log:\n${tail(`${stateDir}/master.log`)}`,
          ),
        );
      }
      try {
        Deno.statSync(`${stateDir}/master.ready`);
        return true;
      } catch {
        return false;
      }
    }, left()).finally(stopCpTicker);
    say(`control plane ready: ${nodes} node(s) registered with pod CIDRs; kubeconfig ${stateDir}/kubeconfig`);

    if (opts.externalRouter) {
      await startExternalRouter(state, opts.externalRouter, left());
      say(
        `external router ${opts.externalRouter} at ${EXTERNAL_ROUTER_IP} (ASN ${
          state.externalRouter!.asn
        }) ` +
          `in ${state.externalRouter!.netns}, peering with every node`,
      );
    }

    if (state.agents) {
      say(
        `starting ${nodes} agent(s): main.ts ${
          [
            ...defaultAgentFlags("<state>").slice(1),
            ...externalRouterFlags(state.externalRouter),
            ...state.agentFlags,
          ].join(" ")
        }`,
      );
      for (const h of topo.nodes) {
        state.processes.push(startAgent(state, h));
        writeState(state);
      }
      const healthy = new Set<string>();
      const stopAgentTicker = progress(say, (s) => {
        const waiting = topo.nodes.filter((h) => !healthy.has(h.name)).map((h) => h.name);
        return `waiting for ${waiting.length} agent(s) to answer /healthz 200: ${
          waiting.slice(0, 8).join(", ")
        }${waiting.length > 8 ? ", …" : ""} (${s} s; logs: deno task lab logs <node>)`;
      });
      await Promise.all(topo.nodes.map((h) =>
        waitFor(
          `agent /healthz on ${h.name}`,
          async () => {
            const p = state.processes.find((x) => x.role === "agent" && x.node === h.name)!;
            if (!pidAlive(p.pid)) {
              throw new WaitAborted(
                new LabError(
                  `the agent on ${h.name} exited; last lines of its log:\n${
                    tail(`${nodeDir(stateDir, h.name)}/agent.log`)
                  }`,
                ),
              );
            }
            const ok = await agentHealthy(h);
            if (ok) healthy.add(h.name);
            return ok;
          },
          left(),
          300,
        )
      )).finally(stopAgentTicker);
      say(`every agent answers /healthz 200 on :${AGENT_HEALTH_PORT}`);
    }
    if (state.daemonset) await installDaemonSet(state, say, left());
    state.phase = "up";
    writeState(state);
    return state;
  } catch (e) {
    state.phase = "failed";
    writeState(state);
    throw e;
  }
}

/** What the master has done so far (from its log and the kubelets' logs), for progress lines. */
function masterProgress(stateDir: string, hosts: LabHost[]): string {
  const read = (f: string) => {
    try {
      return Deno.readTextFileSync(f);
    } catch {
      return "";
    }
  };
  if (!read(`${stateDir}/master.log`).includes("API server listening")) return "starting the API server";
  const registered = hosts.filter((h) =>
    read(`${nodeDir(stateDir, h.name)}/kubelet.log`).includes("registered node")
  );
  return registered.length < hosts.length
    ? `API server up; ${registered.length}/${hosts.length} node(s) registered`
    : `${hosts.length} node(s) registered; waiting for pod CIDRs and Ready conditions`;
}

const absolute = (p: string) => p.startsWith("/") ? p : `${Deno.cwd()}/${p}`;

/**
 * The manifest as the lab applies it: the lab's flags (service CIDR, external router peering,
 * `--agent-flags`) appended to the args of every kube-router container unless the manifest sets that flag
 * itself, everything else as written.
 */
export function labManifest(text: string, extraArgs: string[]): string {
  const docs = parseAllDocuments(text);
  const out: string[] = [];
  for (const doc of docs) {
    const o = doc.toJS();
    if (!o) continue;
    if (o.kind === "DaemonSet") {
      for (const c of o.spec?.template?.spec?.containers ?? []) {
        if (!/kube-router/.test(String(c.image ?? ""))) continue;
        // A flag the manifest sets itself (e.g. --peer-router-ips) is the manifest's.
        const own = new Set(((c.args ?? []) as string[]).map((a) => a.split("=")[0]));
        c.args = [...(c.args ?? []), ...extraArgs.filter((a) => !own.has(a.split("=")[0]))];
      }
    }
    out.push(stringify(o));
  }
  return out.join("---\n");
}

/** The lab's flags for DaemonSet agents (what `startAgent` gives agent processes besides the kubeconfig). */
export function daemonSetFlags(state: LabState): string[] {
  return [
    `--service-cluster-ip-range=${SERVICE_CIDR}`,
    // /metrics on the health listener, as the agent processes have it: the demo reads the agents' counters.
    `--metrics-port=${AGENT_HEALTH_PORT}`,
    ...externalRouterFlags(state.externalRouter),
    ...state.agentFlags,
  ];
}

/**
 * Applies the DaemonSet manifest and waits until every node's agent (a pod the lab kubelet runs) answers
 * /healthz 200, saying what it waits for.
 */
export async function installDaemonSet(state: LabState, say: (l: string) => void, timeoutMs: number) {
  const file = state.daemonset!;
  const extra = daemonSetFlags(state);
  say(`kubectl apply -f ${file} (kube-router container args += ${extra.join(" ")})`);
  await kubectl(state, ["apply", "-f", "-"], { stdin: labManifest(Deno.readTextFileSync(file), extra) });
  const topo = topology(state.nodes, state.prefix);
  const healthy = new Set<string>();
  const stop = progress(say, (s) => {
    const waiting = topo.nodes.filter((h) => !healthy.has(h.name)).map((h) => h.name);
    return `waiting for the DaemonSet's agent pods to answer /healthz 200 on ${
      waiting.slice(0, 8).join(", ")
    }${waiting.length > 8 ? ", …" : ""} (${s} s; deno task lab kubectl -- get pods -n kube-system -o wide)`;
  });
  try {
    await Promise.all(
      topo.nodes.map((h) =>
        waitFor(
          `the DaemonSet's agent /healthz on ${h.name}`,
          async () => {
            const ok = await agentHealthy(h);
            if (ok) healthy.add(h.name);
            return ok;
          },
          timeoutMs,
          300,
        )
      ),
    );
  } finally {
    stop();
  }
  say(`every node's agent runs as a DaemonSet pod and answers /healthz 200 on :${AGENT_HEALTH_PORT}`);
}

/** The log file of the agent container of the DaemonSet pod on `node` (`lab logs <node>` in that mode). */
export function daemonSetAgentLog(state: LabState, node: string): string | undefined {
  const dir = `${nodeDir(state.stateDir, node)}/pods`;
  try {
    for (const f of Deno.readDirSync(dir)) {
      if (!f.name.endsWith(".json")) continue;
      try {
        const rec = JSON.parse(Deno.readTextFileSync(`${dir}/${f.name}`));
        if (!rec.hostNetwork || !rec.pids) continue;
        const c = Object.keys(rec.pids as Record<string, number>).find((n) => n.includes("kube-router"));
        if (c) return `${dir}/${rec.uid}/${c}.log`;
      } catch { /* partial record */ }
    }
  } catch { /* no pods */ }
  return undefined;
}

/** The agent container's process of a DaemonSet pod on `node`, from the lab kubelet's records. */
export function daemonSetAgentPid(state: LabState, node: string): number | undefined {
  try {
    for (const f of Deno.readDirSync(`${nodeDir(state.stateDir, node)}/pods`)) {
      if (!f.name.endsWith(".json")) continue;
      try {
        const rec = JSON.parse(Deno.readTextFileSync(`${nodeDir(state.stateDir, node)}/pods/${f.name}`));
        if (!rec.hostNetwork || !rec.pids) continue;
        for (const [container, pid] of Object.entries(rec.pids as Record<string, number>)) {
          if (container.includes("kube-router") && pidAlive(pid)) return pid;
        }
      } catch { /* partial record */ }
    }
  } catch { /* no pods */ }
  return undefined;
}

/** Adds the `router` machine on the underlay and starts gobgpd or BIRD in it, daemonized. */
async function startExternalRouter(
  state: LabState,
  kind: ExternalRouterKind,
  timeoutMs: number,
): Promise<void> {
  const netns = await addExternalHost(state, "router", EXTERNAL_ROUTER_IP);
  const r = prepareExternalRouter(state, kind, netns);
  state.externalRouter = r;
  writeState(state);
  const log = `${state.stateDir}/router/${kind}.log`;
  const pid = daemonize(routerCommand(r), log);
  // The config path is on the router's command line and names this lab.
  state.processes.push({ role: "router", pid, marker: r.config });
  writeState(state);
  await waitFor(`the external router (${kind})`, async () => {
    if (!pidAlive(pid)) {
      throw new WaitAborted(new LabError(`the external router exited; last lines of ${log}:\n${tail(log)}`));
    }
    return await routerAnswers(r);
  }, timeoutMs);
}

function onPath(tool: string): boolean {
  return (Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":").some((d) => {
    try {
      return Deno.statSync(`${d}/${tool}`).isFile;
    } catch {
      return false;
    }
  });
}

/** What `lab up` needs and is missing, each with the Debian package that provides it. */
export function preflight(agents: boolean, agentBin?: string, externalRouter?: ExternalRouterKind): string[] {
  const missing: string[] = [];
  const tools: Array<[string, string]> = [["ip", "iproute2"], ["nsenter", "util-linux"], [
    "kubectl",
    "kubectl v1.32",
  ]];
  if (agents) tools.push(["curl", "curl"]);
  if (externalRouter === "gobgp") tools.push(["gobgpd", "gobgpd"], ["gobgp", "gobgpd"]);
  if (externalRouter === "bird") tools.push(["bird", "bird2"], ["birdc", "bird2"]);
  for (const [t, pkg] of tools) if (!onPath(t)) missing.push(`${t} (${pkg})`);
  for (const plugin of ["bridge", "host-local"]) {
    try {
      Deno.statSync(`/usr/lib/cni/${plugin}`);
    } catch {
      missing.push(`/usr/lib/cni/${plugin} (containernetworking-plugins)`);
    }
  }
  if (agents) {
    const agent = agentBin ?? `${REPO_ROOT}/main.ts`;
    try {
      Deno.statSync(agent);
    } catch {
      missing.push(`${agent} (the agent; or use --no-agents)`);
    }
  }
  return missing;
}

/** True when nothing of a recorded lab exists any more: no namespace with its prefix, no live process. */
async function isStale(state: LabState): Promise<boolean> {
  if (state.processes.some((p) => pidAlive(p.pid) && cmdlineHas(p.pid, p.marker))) return false;
  return (await listNetns(state.prefix)).length === 0 && state.upPid !== Deno.pid && !pidAlive(state.upPid);
}

export interface DownReport {
  killed: number;
  netns: string[];
  removedStateDir: boolean;
}

/**
 * Removes everything the lab made: its processes, every namespace recorded in the state dir or named
 * with the prefix (pods first), and the state dir itself. Works on a half-built or crashed lab.
 */
export async function labDown(opts: Partial<LabPaths> = {}): Promise<DownReport> {
  const p = paths(opts);
  const state = readState(p.stateDir);
  const prefix = state?.prefix ?? p.prefix;
  let killed = 0;
  const procs = state?.processes ?? [];
  for (const proc of procs) {
    if (pidAlive(proc.pid) && cmdlineHas(proc.pid, proc.marker)) {
      try {
        Deno.kill(proc.pid, "SIGTERM");
        killed++;
      } catch { /* gone */ }
    }
  }
  for (let i = 0; i < 30 && procs.some((x) => pidAlive(x.pid) && cmdlineHas(x.pid, x.marker)); i++) {
    await sleep(100);
  }
  for (const proc of procs) {
    if (pidAlive(proc.pid) && cmdlineHas(proc.pid, proc.marker)) {
      try {
        Deno.kill(proc.pid, "SIGKILL");
      } catch { /* gone */ }
    }
  }
  // Pods first (their veths hang off the nodes' bridges), then machines, then the underlay.
  const podNs = new Set<string>();
  try {
    for (const n of Deno.readDirSync(`${p.stateDir}/nodes`)) {
      try {
        for (const f of Deno.readDirSync(`${p.stateDir}/nodes/${n.name}/pods`)) {
          try {
            const rec = JSON.parse(Deno.readTextFileSync(`${p.stateDir}/nodes/${n.name}/pods/${f.name}`));
            if (typeof rec.netns === "string" && !rec.hostNetwork) podNs.add(rec.netns);
          } catch { /* partial record */ }
        }
      } catch { /* no pods */ }
    }
  } catch { /* no nodes */ }
  const swept = await listNetns(prefix);
  for (const n of swept) if (n.startsWith(`${prefix}pod-`)) podNs.add(n);
  const machines = [...(state?.netns ?? []), ...swept.filter((n) => !podNs.has(n))];
  const order = [...podNs, ...new Set(machines.reverse())];
  const removed: string[] = [];
  for (const ns of new Set(order)) {
    await removeNetns(ns);
    removed.push(ns);
  }
  let removedStateDir = false;
  try {
    Deno.statSync(`${p.stateDir}/${STATE_FILE}`);
    await Deno.remove(p.stateDir, { recursive: true });
    removedStateDir = true;
  } catch { /* nothing recorded: leave an unknown directory alone */ }
  return { killed, netns: removed, removedStateDir };
}

export interface StatusReport {
  state: LabState | undefined;
  netns: string[];
  processes: Array<LabProcess & { alive: boolean }>;
}

export async function labStatus(opts: Partial<LabPaths> = {}): Promise<StatusReport> {
  const p = paths(opts);
  const state = readState(p.stateDir);
  return {
    state,
    netns: await listNetns(state?.prefix ?? p.prefix),
    processes: (state?.processes ?? []).map((x) => ({
      ...x,
      alive: pidAlive(x.pid) && cmdlineHas(x.pid, x.marker),
    })),
  };
}

/** Reads the state or explains that no lab is up. */
export function requireState(opts: Partial<LabPaths> = {}): LabState {
  const p = paths(opts);
  const s = readState(p.stateDir);
  if (!s) throw new LabError(`no lab is up (no ${p.stateDir}/${STATE_FILE}); run \`deno task lab up\``);
  return s;
}

/** kubectl custom columns for nodes (the lab API server serves no server-side tables). */
export const NODE_COLUMNS =
  'custom-columns=NAME:.metadata.name,READY:.status.conditions[?(@.type=="Ready")].status,' +
  'INTERNAL-IP:.status.addresses[?(@.type=="InternalIP")].address,POD-CIDR:.spec.podCIDR';
/** kubectl custom columns for pods. */
export const POD_COLUMNS =
  "custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,STATUS:.status.phase," +
  'READY:.status.conditions[?(@.type=="Ready")].status,IP:.status.podIP,NODE:.spec.nodeName';

/**
 * The command line that runs kubectl against the lab from the host (inside the master namespace). Writes
 * are validated as on a real cluster: kubectl finds `fieldValidation` in the lab's OpenAPI v3 and sends
 * Strict, so an unknown field is refused by the API server.
 */
export function kubectlCommand(state: LabState, args: string[]): string[] {
  return [
    "ip",
    "netns",
    "exec",
    `${state.prefix}master`,
    "kubectl",
    `--kubeconfig=${state.stateDir}/kubeconfig`,
    ...args,
  ];
}

/** Runs kubectl against the lab and returns its output. */
export function kubectl(state: LabState, args: string[], opts: { check?: boolean; stdin?: string } = {}) {
  return sh(kubectlCommand(state, args), opts);
}

/** The namespace of `kube-node1`, `node1`, `kube-master`, `master` or `underlay`. */
export function machineNetns(state: LabState, machine: string): string | undefined {
  const t = topology(state.nodes, state.prefix);
  if (machine === "master" || machine === "kube-master") return t.master.netns;
  if (machine === "underlay") return t.underlayNetns;
  const ext = `${state.prefix}ext-${machine}`;
  if (state.netns.includes(ext)) return ext;
  const h = t.nodes.find((n) => n.name === machine || n.name === `kube-${machine}` || n.netns === machine);
  return h?.netns;
}

/** The namespace of pod `namespace/name`, from the kubelet's records. */
export function podNetns(state: LabState, namespace: string, name: string): string | undefined {
  try {
    for (const n of Deno.readDirSync(`${state.stateDir}/nodes`)) {
      try {
        for (const f of Deno.readDirSync(`${state.stateDir}/nodes/${n.name}/pods`)) {
          if (!f.name.endsWith(".json")) continue;
          try {
            const rec = JSON.parse(Deno.readTextFileSync(`${state.stateDir}/nodes/${n.name}/pods/${f.name}`));
            if (rec.namespace === namespace && rec.name === name) return rec.netns as string;
          } catch { /* partial */ }
        }
      } catch { /* no pods dir */ }
    }
  } catch { /* no nodes */ }
  return undefined;
}

/** The command line that runs `cmd` inside a pod (`ns/name`) or a machine (`kube-node1`). */
export function execCommand(state: LabState, target: string, cmd: string[]): string[] {
  let ns: string | undefined;
  if (target.includes("/")) {
    const [pns, pname] = target.split("/", 2) as [string, string];
    ns = podNetns(state, pns, pname);
    if (!ns) throw new LabError(`pod ${target} is not running in the lab (no kubelet record)`);
  } else {
    ns = machineNetns(state, target);
    if (!ns) {
      throw new LabError(
        `unknown machine ${target} (kube-master, kube-node1…kube-node${state.nodes}, underlay)`,
      );
    }
  }
  return ["ip", "netns", "exec", ns, ...cmd];
}

/**
 * Restarts the agent of one node (the kubelet and pods keep running). With `kill`, the old agent gets
 * SIGKILL instead of SIGTERM: it dies as in a crash, without closing its BGP sessions or cleaning up, which
 * is what graceful restart is for.
 */
export async function restartAgent(
  state: LabState,
  node: string,
  opts: { kill?: boolean } = {},
): Promise<void> {
  const t = topology(state.nodes, state.prefix);
  const host = t.nodes.find((n) => n.name === node || n.name === `kube-${node}`);
  if (!host) throw new LabError(`unknown node ${node}`);
  if (state.daemonset) {
    // The agent is a container: stop its process and the lab kubelet restarts it (RESTARTS + 1).
    const old = daemonSetAgentPid(state, host.name);
    if (!old) throw new LabError(`no running kube-router pod on ${host.name}`);
    Deno.kill(old, opts.kill ? "SIGKILL" : "SIGTERM");
    await waitFor(`agent on ${host.name} to stop`, () => !pidAlive(old), 10_000).catch(() =>
      Deno.kill(old, "SIGKILL")
    );
    await waitFor(
      `the restarted agent container on ${host.name}`,
      async () => {
        const pid = daemonSetAgentPid(state, host.name);
        return pid !== undefined && pid !== old && await agentHealthy(host);
      },
      120_000,
      300,
    );
    return;
  }
  const i = state.processes.findIndex((x) => x.role === "agent" && x.node === host.name);
  if (i >= 0) {
    const old = state.processes[i]!;
    if (pidAlive(old.pid) && cmdlineHas(old.pid, old.marker)) {
      Deno.kill(old.pid, opts.kill ? "SIGKILL" : "SIGTERM");
    }
    await waitFor(`agent on ${host.name} to stop`, () => !pidAlive(old.pid), 10_000).catch(() =>
      Deno.kill(old.pid, "SIGKILL")
    );
    state.processes.splice(i, 1);
  }
  state.processes.push(startAgent(state, host));
  writeState(state);
  await waitFor(`agent /healthz on ${host.name}`, () => agentHealthy(host), 120_000, 300);
}

/**
 * Adds a machine outside the cluster to the underlay, e.g. an external BGP router for
 * `--peer-router-ips` or a client for NodePorts: namespace `<prefix>ext-<name>` with `ip` on eth0.
 * `lab exec <name> -- …` runs commands in it; `lab down` removes it.
 */
export async function addExternalHost(state: LabState, name: string, ip: string): Promise<string> {
  if (!/^[a-z0-9]{1,12}$/.test(name)) throw new LabError("external host names are 1-12 of [a-z0-9]");
  const t = topology(state.nodes, state.prefix);
  const taken = [t.master.ip, ...t.nodes.map((n) => n.ip)];
  if (taken.includes(ip)) throw new LabError(`${ip} belongs to a lab machine`);
  const netns = `${state.prefix}ext-${name}`;
  if (state.netns.includes(netns)) throw new LabError(`external host ${name} exists already`);
  const wide = t.master.prefixLen === 16;
  const inUnderlay = wide ? /^192\.168\.\d{1,3}\.\d{1,3}$/.test(ip) : /^192\.168\.1\.\d{1,3}$/.test(ip);
  if (!inUnderlay) {
    throw new LabError(`${ip} is not in the underlay ${wide ? "192.168.0.0/16" : "192.168.1.0/24"}`);
  }
  const index = state.netns.filter((n) => n.startsWith(`${state.prefix}ext-`)).length;
  await addUnderlayHost(t, netns, `x${index}`, ip, t.master.prefixLen, (ns) => {
    state.netns.push(ns);
    writeState(state);
  });
  return netns;
}
