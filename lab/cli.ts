/**
 * The lab's command line (`deno task lab <command>`, `deno task demo`).
 *
 *   up [--nodes N] [--agent-flags "…"] [--agent-bin PATH] [--no-agents] [--cni auto|lab|agent]
 *      [--external-router gobgp|bird] [--daemonset [--manifest FILE]]
 *   status
 *   kubectl -- <args>                 kubectl with the lab kubeconfig, run inside kube-master's namespace
 *   exec <ns>/<pod> -- <command>      run a command in a pod's network namespace
 *   exec <node> -- <command>          … or in a machine's (kube-master, kube-node1, underlay)
 *   logs <node> [agent|kubelet]       a node's agent (default) or kubelet log; `logs master` for the master
 *   add-host <name> <ip>              add a machine outside the cluster on the underlay (external router, client)
 *   restart-agent <node> [--kill]     restart one node's agent (--kill: SIGKILL, as a crash); pods keep running
 *   down                              remove every namespace, process and file the lab made
 *   demo [--nodes N] [--keep] [--daemonset [--manifest FILE]]
 *                                     up, the narrated scenario, down; exit 0 only if every expectation held
 *
 * Global options: --state-dir DIR (default <repo>/.lab, env KRL_LAB_STATE_DIR),
 * --prefix P (namespace prefix, default krl-, env KRL_LAB_PREFIX).
 */
import { parseArgs } from "node:util";
import { runDemo } from "./demo.ts";
import { CommandError } from "./_sh.ts";
import {
  addExternalHost,
  DAEMONSET_MANIFEST,
  daemonSetAgentLog,
  execCommand,
  kubectlCommand,
  labDown,
  LabError,
  labStatus,
  labUp,
  machineNetns,
  NODE_COLUMNS,
  requireState,
  restartAgent,
  splitFlags,
} from "./lab.ts";
import type { CniMode } from "./kubelet.ts";
import { EXTERNAL_ROUTER_KINDS, type ExternalRouterKind, routerPeersCommand } from "./external_router.ts";
import { defaultStateDir, nodeDir, readState } from "./state.ts";
import { topology } from "./topology.ts";

const USAGE = `usage: deno task lab <command> [options]

commands:
  up [--nodes N] [--agent-flags "…"] [--agent-bin PATH] [--no-agents] [--cni auto|lab|agent]
                               build the seed's cluster in network namespaces and start it in the background;
                               --cni: who writes each node's CNI conf (default: the agents' router, or the
                               lab with --no-agents / --enable-cni=false; auto: the lab after 10 s without one);
                               --external-router: a gobgpd or BIRD 2 router at 192.168.1.10, ASN 65000,
                               peering with every node (agents get --peer-router-ips/--peer-router-asns);
                               'exec router -- gobgp global rib' or 'exec router -- birdc -s <state>/router/bird.ctl show route'
                               --daemonset: no agent processes; the agents run as the DaemonSet of
                               dist/kube-router-daemonset.yaml (or --manifest FILE), applied with kubectl
  status                       what is up: namespaces, processes, nodes
  kubectl -- <args>            kubectl with the lab kubeconfig (inside kube-master's namespace)
  exec <ns>/<pod> -- <cmd>     run a command in a pod's network namespace
  exec <machine> -- <cmd>      run a command in kube-master, kube-nodeN or underlay
  logs <node> [agent|kubelet]  show a node's agent (default) or kubelet log; 'logs master' for the master
  add-host <name> <ip>         add a machine outside the cluster on the underlay (an external BGP
                               router, a client); 'exec <name>' reaches it, 'down' removes it
  restart-agent <node> [--kill]
                               restart one agent (pods and kubelet keep running); --kill: SIGKILL it first,
                               as in a crash (for graceful restart)
  down                         remove every namespace, process and file the lab made
  demo [--nodes N] [--keep] [--daemonset [--manifest FILE]]
                               up, the narrated scenario, down (exit 0 only if every expectation held);
                               --daemonset: every act with the agents as a DaemonSet

options: --state-dir DIR (default <repo>/.lab), --prefix P (namespace prefix, default krl-)`;

async function passthrough(cmd: string[]): Promise<number> {
  const st = await new Deno.Command(cmd[0]!, {
    args: cmd.slice(1),
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
  })
    .spawn().status;
  return st.code;
}

export async function main(argv: string[]): Promise<number> {
  const dd = argv.indexOf("--");
  // `--agent-flags "--foo --bar"`: parseArgs refuses a separate value that starts with "-", so glue it on.
  const head = (dd >= 0 ? argv.slice(0, dd) : argv).flatMap((a, i, all) =>
    a === "--agent-flags" && i + 1 < all.length
      ? []
      : i > 0 && all[i - 1] === "--agent-flags"
      ? [`--agent-flags=${a}`]
      : [a]
  );
  const rest = dd >= 0 ? argv.slice(dd + 1) : [];
  const { values, positionals } = parseArgs({
    args: head,
    allowPositionals: true,
    options: {
      "nodes": { type: "string" },
      "agent-flags": { type: "string" },
      "agent-bin": { type: "string" },
      "no-agents": { type: "boolean" },
      "cni": { type: "string" },
      "state-dir": { type: "string" },
      "prefix": { type: "string" },
      "keep": { type: "boolean" },
      "external-router": { type: "string" },
      "kill": { type: "boolean" },
      "daemonset": { type: "boolean" },
      "manifest": { type: "string" },
      "help": { type: "boolean", short: "h" },
    },
  });
  const where = {
    ...(values["state-dir"] ? { stateDir: values["state-dir"] } : {}),
    ...(values.prefix ? { prefix: values.prefix } : {}),
  };
  const [cmd, ...args] = positionals;
  if (values.help || !cmd) {
    console.log(USAGE);
    return cmd || values.help ? 0 : 2;
  }
  const nodes = values.nodes !== undefined ? Number(values.nodes) : undefined;
  const cni = values.cni as CniMode | undefined;
  if (cni !== undefined && !["auto", "lab", "agent"].includes(cni)) {
    throw new LabError("--cni must be auto, lab or agent");
  }
  const externalRouter = values["external-router"] as ExternalRouterKind | undefined;
  if (externalRouter !== undefined && !EXTERNAL_ROUTER_KINDS.includes(externalRouter)) {
    throw new LabError("--external-router must be gobgp or bird");
  }
  const daemonset = values.daemonset || values.manifest
    ? { daemonset: values.manifest ?? DAEMONSET_MANIFEST }
    : {};
  switch (cmd) {
    case "up": {
      const t0 = performance.now();
      // Ctrl-C while coming up: remove what was built rather than leave half a cluster running.
      const onInterrupt = () => {
        console.error("lab: interrupted; removing the partial lab");
        labDown(where).finally(() => Deno.exit(130));
      };
      Deno.addSignalListener("SIGINT", onInterrupt);
      let st;
      try {
        st = await labUp({
          ...where,
          ...(nodes !== undefined ? { nodes } : {}),
          agents: !values["no-agents"],
          agentFlags: splitFlags(values["agent-flags"] ?? ""),
          ...(values["agent-bin"] ? { agentBin: values["agent-bin"] } : {}),
          ...(cni ? { cni } : {}),
          ...(externalRouter ? { externalRouter } : {}),
          ...daemonset,
          say: (l) => console.log(`lab: ${l}`),
        });
      } catch (e) {
        const mine = readState(where.stateDir ?? defaultStateDir());
        if (mine?.upPid === Deno.pid) {
          console.error(
            `lab: up failed; the partial lab is kept for inspection (logs in ${mine.stateDir}); ` +
              "remove it with `deno task lab down`",
          );
        }
        throw e;
      } finally {
        Deno.removeSignalListener("SIGINT", onInterrupt);
      }
      console.log(
        `lab: up in ${
          ((performance.now() - t0) / 1000).toFixed(1)
        } s (${st.nodes} nodes). Try: deno task lab kubectl -- get nodes`,
      );
      return 0;
    }
    case "down": {
      const r = await labDown(where);
      console.log(
        `lab: down: stopped ${r.killed} process(es), removed ${r.netns.length} namespace(s)` +
          (r.removedStateDir ? ", removed the state dir" : ""),
      );
      return 0;
    }
    case "status": {
      const s = await labStatus(where);
      if (!s.state && s.netns.length === 0) {
        console.log("lab: no lab is up");
        return 1;
      }
      if (s.state) {
        console.log(
          `lab: ${s.state.nodes} node(s), phase ${s.state.phase}, created ${s.state.createdAt}, state ${s.state.stateDir}`,
        );
        for (const p of s.processes) {
          console.log(
            `  ${p.role}${p.node ? ` ${p.node}` : ""} pid ${p.pid} ${p.alive ? "running" : "NOT RUNNING"}`,
          );
        }
        if (s.state.daemonset) console.log(`  agents: the DaemonSet of ${s.state.daemonset}`);
        const r = s.state.externalRouter;
        if (r) {
          console.log(
            `  external router: ${r.kind} at ${r.ip}, ASN ${r.asn}, namespace ${r.netns}, config ${r.config}`,
          );
        }
      } else console.log("lab: no state file, but namespaces exist (run `deno task lab down`)");
      console.log(`  namespaces: ${s.netns.join(" ")}`);
      if (s.state && s.processes.some((p) => p.role === "master" && p.alive)) {
        await passthrough(kubectlCommand(s.state, ["get", "nodes", "-o", NODE_COLUMNS]));
        await passthrough(kubectlCommand(s.state, ["get", "pods", "-A", "-o", "wide"]));
      }
      const router = s.state?.externalRouter;
      if (router && s.processes.some((p) => p.role === "router" && p.alive)) {
        await passthrough(routerPeersCommand(router));
      }
      return 0;
    }
    case "kubectl":
      return await passthrough(kubectlCommand(requireState(where), [...args, ...rest]));
    case "exec": {
      const target = args[0];
      if (!target || rest.length === 0) {
        throw new LabError("usage: lab exec <ns>/<pod>|<machine> -- <command>");
      }
      return await passthrough(execCommand(requireState(where), target, rest));
    }
    case "logs": {
      const st = requireState(where);
      const target = args[0] ?? "master";
      if (target === "master" || target === "kube-master") {
        console.log(Deno.readTextFileSync(`${st.stateDir}/master.log`));
        return 0;
      }
      const host = topology(st.nodes, st.prefix).nodes.find((n) =>
        n.name === target || n.name === `kube-${target}`
      );
      if (!host || !machineNetns(st, target)) throw new LabError(`unknown node ${target}`);
      const which = args[1] ?? "agent";
      if (which !== "agent" && which !== "kubelet") throw new LabError("logs: agent or kubelet");
      try {
        const file = which === "agent" && st.daemonset
          ? daemonSetAgentLog(st, host.name)
          : `${nodeDir(st.stateDir, host.name)}/${which}.log`;
        if (!file) throw new Error("none");
        console.log(Deno.readTextFileSync(file));
      } catch {
        console.log(`(no ${which} log for ${host.name})`);
      }
      return 0;
    }
    case "add-host": {
      const st = requireState(where);
      const [name, ip] = args;
      if (!name || !ip) {
        throw new LabError("usage: lab add-host <name> <ip>   (e.g. lab add-host router 192.168.1.10)");
      }
      const ns = await addExternalHost(st, name, ip);
      console.log(
        `lab: ${name} is up at ${ip} on the underlay (namespace ${ns}); try: deno task lab exec ${name} -- ip addr`,
      );
      return 0;
    }
    case "restart-agent": {
      const st = requireState(where);
      if (!args[0]) throw new LabError("usage: lab restart-agent <node>");
      await restartAgent(st, args[0], { kill: values.kill ?? false });
      console.log(`lab: agent on ${args[0]} ${values.kill ? "killed (SIGKILL), " : ""}restarted and healthy`);
      return 0;
    }
    case "demo":
      return await runDemo({
        ...where,
        ...(nodes !== undefined ? { nodes } : {}),
        keep: values.keep ?? false,
        ...(values["agent-flags"] ? { agentFlags: splitFlags(values["agent-flags"]) } : {}),
        agents: !values["no-agents"],
        ...(cni ? { cni } : {}),
        ...(externalRouter ? { externalRouter } : {}),
        ...daemonset,
      });
    default:
      console.error(`lab: unknown command ${cmd}\n${USAGE}`);
      return 2;
  }
}

if (import.meta.main) {
  try {
    Deno.exit(await main(Deno.args));
  } catch (e) {
    if (e instanceof LabError || e instanceof RangeError || e instanceof CommandError) {
      console.error(`lab: ${e.message}`);
      Deno.exit(1);
    }
    console.error("lab: failed:", e);
    Deno.exit(1);
  }
}
