/** Helpers shared by the lab's end-to-end tests (lab_test.ts, router_test.ts, services_test.ts). */
import { run } from "../_support/netns.ts";
import { execCommand, kubectl, type LabState, REPO_ROOT, topology } from "../../lab/mod.ts";

/** `kubectl ARGS` against the lab; its stdout, or throws with its stderr. */
export async function k(state: LabState, args: string[], stdin?: string): Promise<string> {
  const r = await kubectl(state, args, { check: false, ...(stdin !== undefined ? { stdin } : {}) });
  if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
}

/** Polls `fn` every `everyMs` until it returns true; throws (with the last error as cause) after `ms`. */
export async function eventually(
  what: string,
  fn: () => Promise<boolean>,
  ms = 30_000,
  everyMs = 200,
): Promise<void> {
  const end = Date.now() + ms;
  let last: unknown;
  while (Date.now() < end) {
    try {
      if (await fn()) return;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`not within ${ms} ms: ${what}`, { cause: last });
}

/** The network namespaces whose names start with `prefix` (a lab's own; none once `lab down` ran). */
export async function netnsLeft(prefix: string): Promise<string[]> {
  return (await run(["ip", "netns", "list"])).stdout.split("\n").filter((l) => l.startsWith(prefix));
}

/** Prints the last `lines` lines of each file that exists, to show what a lab logged before it goes. */
export function showLogTails(files: string[], lines: number): void {
  for (const f of files) {
    try {
      console.error(`--- ${f}\n${Deno.readTextFileSync(f).split("\n").slice(-lines).join("\n")}`);
    } catch { /* missing */ }
  }
}

/** `kube-router bgp neighbors` run on `node` (as the agent's own CLI, through its status socket). */
export function bgpNeighbors(state: LabState, node: string, check = true) {
  return run(
    execCommand(state, node, [Deno.execPath(), "run", "-A", `${REPO_ROOT}/main.ts`, "bgp", "neighbors"]),
    { check },
  );
}

/** A line of `kube-router bgp neighbors` (gobgp's layout) for an established session with `ip`. */
export function peerLine(ip: string, asn: number): RegExp {
  return new RegExp(`^${ip.replaceAll(".", "\\.")}\\s+${asn}\\s.*Establ`, "m");
}

/**
 * Waits until every node of the lab holds an established session with every other node (`asn`: the
 * cluster's): the pod network is converged. A session can go down and up again right after the agents
 * start (a connection collision both sides lose; the higher router id reconnects at once).
 */
export async function nodeMeshEstablished(state: LabState, asn: number, ms = 30_000): Promise<void> {
  const nodes = topology(state.nodes, state.prefix).nodes;
  await eventually("every node's sessions with the others are established", async () => {
    for (const n of nodes) {
      const out = (await bgpNeighbors(state, n.name, false)).stdout;
      if (!nodes.every((o) => o === n || peerLine(o.ip, asn).test(out))) return false;
    }
    return true;
  }, ms);
}
