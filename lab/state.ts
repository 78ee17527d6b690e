/**
 * The lab's state directory (default `<repo>/.lab/`): what `lab up` created, recorded before it is created,
 * so `lab down` can remove everything even after a crash or a `kill -9` of `lab up`.
 *
 * Layout:
 *   lab-state.json           LabState (namespaces, processes, options)
 *   kubeconfig               admin kubeconfig (server https://192.168.1.99:6443), works in any lab namespace
 *   master.log               the lab master process (API server, controllers, kubelets)
 *   master.ready             written by the master once every node is registered and has a pod CIDR
 *   apiserver/               PKI and token of the lab API server
 *   nodes/<node>/agent.log   the agent's output
 *   nodes/<node>/kubelet.log the lab kubelet's log for that node
 *   nodes/<node>/cni/        the node's CNI conf dir (KUBE_ROUTER_CNI_CONF_FILE points here)
 *   nodes/<node>/cni-ipam/   host-local leases
 *   nodes/<node>/pods/<uid>.json  one record per running pod (its namespace, IPs, processes)
 *   nodes/<node>/pods/<uid>/      its containers' logs (<container>.log, .previous.log), service-account files
 *   nodes/<node>/hostpath/        hostPath volumes of agent pods (other than /etc/cni/net.d → cni/)
 */
import { DEFAULT_PREFIX } from "./topology.ts";

export const STATE_FILE = "lab-state.json";

/** A process the lab started and must stop. */
export interface LabProcess {
  role: "master" | "agent" | "router";
  /** The node for agents. */
  node?: string;
  pid: number;
  /** A string /proc/<pid>/cmdline must contain, so a recycled pid is never killed. */
  marker: string;
}

export interface LabState {
  version: 1;
  prefix: string;
  stateDir: string;
  nodes: number;
  createdAt: string;
  /** pid of the `lab up` that made this lab. */
  upPid: number;
  phase: "creating" | "up" | "failed";
  /** Every namespace created for the lab machines, in creation order (pods are in nodes/*\/pods). */
  netns: string[];
  processes: LabProcess[];
  agents: boolean;
  agentFlags: string[];
  /** Absolute path of an agent binary run instead of `deno run -A main.ts`. */
  agentBin?: string;
  /**
   * The agents run as a DaemonSet applied from this manifest (`lab up --daemonset`), not as lab processes:
   * the lab kubelet runs each node's pod of the kube-router image.
   */
  daemonset?: string;
  cniMode: string;
  /** The external BGP router `lab up --external-router` added (namespace `<prefix>ext-router`). */
  externalRouter?: ExternalRouterInfo;
}

/** An external BGP router on the underlay that every agent peers with (`--peer-router-ips/-asns`). */
export interface ExternalRouterInfo {
  kind: "gobgp" | "bird";
  /** Underlay address (192.168.1.10). */
  ip: string;
  /** Its ASN (65000); the nodes keep the cluster ASN 64512, so the sessions are eBGP. */
  asn: number;
  netns: string;
  /** Config file (gobgpd.toml or bird.conf) under `<state>/router/`. */
  config: string;
  /** BIRD's control socket (`birdc -s`), for kind bird. */
  socket?: string;
}

/** Where the lab keeps its state; `KRL_LAB_STATE_DIR` overrides the default `<repo>/.lab`. */
export function defaultStateDir(): string {
  return Deno.env.get("KRL_LAB_STATE_DIR") ?? new URL("../.lab", import.meta.url).pathname;
}

/** The namespace name prefix; `KRL_LAB_PREFIX` overrides the default `krl-`. */
export function defaultPrefix(): string {
  return Deno.env.get("KRL_LAB_PREFIX") ?? DEFAULT_PREFIX;
}

export function readState(dir: string): LabState | undefined {
  try {
    return JSON.parse(Deno.readTextFileSync(`${dir}/${STATE_FILE}`)) as LabState;
  } catch {
    return undefined;
  }
}

/** Writes the state atomically (write + rename), so a crash never leaves half a file. */
export function writeState(s: LabState): void {
  Deno.mkdirSync(s.stateDir, { recursive: true });
  const path = `${s.stateDir}/${STATE_FILE}`;
  Deno.writeTextFileSync(`${path}.tmp`, JSON.stringify(s, null, 2) + "\n");
  Deno.renameSync(`${path}.tmp`, path);
}

export function nodeDir(stateDir: string, node: string): string {
  return `${stateDir}/nodes/${node}`;
}
