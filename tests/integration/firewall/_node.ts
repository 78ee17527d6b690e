/**
 * One Kubernetes node in network namespaces for the firewall's integration tests, with the firewall
 * module running in-process against the node namespace's real nftables (through `ip netns exec nft`):
 *
 * ```
 *  pod netns (one per pod)          node netns                               remote netns
 *  eth0 10.1.1.N/24, fd00:1::N/64 -- veth -- kube-bridge 10.1.1.1/24        eth0 192.168.77.2
 *                                             fd00:1::1/64                    lo 10.1.2.N (remote pods)
 *                                   eth0 192.168.77.1 ---------------------
 * ```
 *
 * br_netfilter is on in the node namespace (the module turns it on), so bridged pod-to-pod traffic goes
 * through the inet forward hook as it does on a real node. Traffic is real: curl for TCP, _udp_probe.ts
 * for UDP, from inside the pod namespaces.
 */
import type { V1Namespace, V1NetworkPolicy, V1Pod } from "@kubernetes/client-node";
import { Agent } from "../../../core/agent.ts";
import { Bus } from "../../../core/bus.ts";
import { MapSource } from "../../unit/firewall/_fixtures.ts";
import { loadConfig } from "../../../core/config.ts";
import { getLogger, MemorySink } from "../../../core/log.ts";
import type { ModuleDefinition } from "../../../core/module.ts";
import { Firewall, firewallModule, type FirewallNft } from "../../../modules/firewall/mod.ts";
import { parseListOutput, type Sysctl } from "../../../ffi/mod.ts";
import { NetNs, run } from "../../_support/netns.ts";

export const fwNeeds = { tools: ["nft", "curl", "busybox"] };
const serverScript = new URL("./_server.ts", import.meta.url).pathname;
const udpProbeScript = new URL("./_udp_probe.ts", import.meta.url).pathname;
/** How long settle() waits for a sync: generous under the VM tier's emulation, more so on a loaded host. */
const SETTLE_MS = Deno.env.get("KRT_IN_VM") === "1" ? 90_000 : 10_000;

/** The node namespace's nftables through the nft binary: the same text libnftables would get. */
export function nsNft(ns: NetNs): FirewallNft & { transactions: string[] } {
  const transactions: string[] = [];
  return {
    transactions,
    async run(tx) {
      const text = tx.render();
      transactions.push(text);
      await ns.exec(["nft", "-f", "-"], { stdin: text });
    },
    async list(target, opts) {
      let what: string[];
      if ("table" in target) what = ["table", target.table.family, target.table.name];
      else if ("set" in target) what = ["set", target.set.family, target.set.table, target.set.name];
      else throw new Error("only tables and sets are listed here");
      const out = await ns.exec(["nft", "-j", ...(opts?.terse ? ["-t"] : []), "list", ...what]);
      return parseListOutput(out.stdout);
    },
  };
}

export function nsSysctl(ns: NetNs): Sysctl {
  return {
    async get(key) {
      return (await ns.exec(["sysctl", "-n", key])).stdout.trim();
    },
    async set(key, value) {
      await ns.exec(["sysctl", "-qw", `${key}=${value}`]);
    },
  };
}

export interface TestPod {
  namespace: string;
  name: string;
  ns: NetNs;
  ip: string;
  ip6: string;
  server?: Deno.ChildProcess;
}

export class FirewallNode {
  readonly bus = new Bus();
  readonly source = new MapSource(this.bus);
  readonly pods = new Map<string, TestPod>();
  readonly log = new MemorySink();
  agent: Agent | undefined;
  firewall: Firewall | undefined;
  nft: ReturnType<typeof nsNft>;
  #made: NetNs[] = [];
  #next = 2;

  private constructor(readonly node: NetNs, readonly remote: NetNs) {
    this.nft = nsNft(node);
  }

  static async create(): Promise<FirewallNode> {
    const node = await NetNs.create("fwnode");
    const remote = await NetNs.create("fwremote");
    const n = new FirewallNode(node, remote);
    n.#made.push(node, remote);
    await node.exec(["ip", "link", "add", "kube-bridge", "type", "bridge"]);
    await node.exec(["ip", "addr", "add", "10.1.1.1/24", "dev", "kube-bridge"]);
    await node.exec(["ip", "addr", "add", "fd00:1::1/64", "dev", "kube-bridge", "nodad"]);
    await node.exec(["ip", "link", "set", "kube-bridge", "up"]);
    await node.exec(["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]);
    const tmp = `krtfw${crypto.randomUUID().slice(0, 6)}`;
    await node.exec(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", tmp]);
    await node.exec(["ip", "link", "set", tmp, "netns", remote.name]);
    await remote.exec(["ip", "link", "set", tmp, "name", "eth0"]);
    await node.exec(["ip", "addr", "add", "192.168.77.1/24", "dev", "eth0"]);
    await node.exec(["ip", "addr", "add", "fd77::1/64", "dev", "eth0", "nodad"]);
    await remote.exec(["ip", "addr", "add", "192.168.77.2/24", "dev", "eth0"]);
    await remote.exec(["ip", "addr", "add", "fd77::2/64", "dev", "eth0", "nodad"]);
    await node.exec(["ip", "link", "set", "eth0", "up"]);
    await remote.exec(["ip", "link", "set", "eth0", "up"]);
    await node.exec(["ip", "route", "add", "10.1.2.0/24", "via", "192.168.77.2"]);
    await node.exec(["ip", "-6", "route", "add", "fd00:2::/64", "via", "fd77::2"]);
    await remote.exec(["ip", "route", "add", "default", "via", "192.168.77.1"]);
    await remote.exec(["ip", "-6", "route", "add", "default", "via", "fd77::1"]);
    n.source.put("nodes", { metadata: { name: "n1" }, spec: { podCIDRs: ["10.1.1.0/24", "fd00:1::/64"] } });
    n.source.put("nodes", { metadata: { name: "n2" }, spec: { podCIDRs: ["10.1.2.0/24", "fd00:2::/64"] } });
    return n;
  }

  /** Starts the agent with the firewall module only. */
  async startAgent(flags: string[] = []): Promise<Firewall> {
    const def: ModuleDefinition = {
      ...firewallModule,
      create: (ctx) => this.firewall = new Firewall(ctx, { nft: this.nft, sysctl: nsSysctl(this.node) }),
    };
    const config = loadConfig([
      "--hostname-override=n1",
      "--run-router=false",
      "--run-service-proxy=false",
      "--enable-ipv6",
      "--health-port=0",
      ...flags,
    ]);
    this.agent = new Agent({
      config,
      bus: this.bus,
      source: this.source,
      log: getLogger({}, this.log),
      modules: [def],
    });
    await this.agent.start();
    return this.firewall!;
  }

  async stopAgent(): Promise<void> {
    await this.agent?.stop();
    this.agent = undefined;
  }

  /**
   * Waits until the firewall's last sync saw the current objects (the runner is idle and synced). The VM
   * tier (tests/vm/sctp_guest.ts) drives this node too, where the emulated CPU makes a first sync many times
   * slower: there the wait is longer.
   */
  async settle(): Promise<void> {
    const fw = this.firewall!;
    await eventually("a firewall sync after the last change", () => fw.settled, SETTLE_MS);
  }

  /** Makes a local pod's network (netns, veth into the bridge, addresses) and starts its server. */
  async addPodNetwork(
    namespace: string,
    name: string,
    ports: string[] = ["tcp:80", "tcp:81", "udp:80", "udp:81"],
  ): Promise<TestPod> {
    const i = this.#next++;
    const ns = await NetNs.create("fwpod");
    this.#made.push(ns);
    const host = `vfw${i}${crypto.randomUUID().slice(0, 4)}`;
    await this.node.exec(["ip", "link", "add", host, "type", "veth", "peer", "name", `${host}p`]);
    await this.node.exec(["ip", "link", "set", `${host}p`, "netns", ns.name]);
    await ns.exec(["ip", "link", "set", `${host}p`, "name", "eth0"]);
    await this.node.exec(["ip", "link", "set", host, "master", "kube-bridge", "up"]);
    const pod: TestPod = { namespace, name, ns, ip: `10.1.1.${i}`, ip6: `fd00:1::${i}` };
    await ns.exec(["ip", "addr", "add", `${pod.ip}/24`, "dev", "eth0"]);
    await ns.exec(["ip", "addr", "add", `${pod.ip6}/64`, "dev", "eth0", "nodad"]);
    await ns.exec(["ip", "link", "set", "eth0", "up"]);
    await ns.exec(["ip", "route", "add", "default", "via", "10.1.1.1"]);
    await ns.exec(["ip", "-6", "route", "add", "default", "via", "fd00:1::1"]);
    pod.server = await startServer(ns, name, ports);
    this.pods.set(`${namespace}/${name}`, pod);
    return pod;
  }

  /** A pod on the other node: an address on the remote namespace's lo, with its server. */
  async addRemotePod(namespace: string, name: string, i: number): Promise<TestPod> {
    const pod: TestPod = { namespace, name, ns: this.remote, ip: `10.1.2.${i}`, ip6: `fd00:2::${i}` };
    await this.remote.exec(["ip", "addr", "add", `${pod.ip}/32`, "dev", "lo"]);
    await this.remote.exec(["ip", "addr", "add", `${pod.ip6}/128`, "dev", "lo", "nodad"]);
    // One server answers for every remote pod address (so one remote pod per test node).
    pod.server = await startServer(this.remote, name, ["tcp:80", "tcp:81", "udp:80", "udp:81"]);
    this.pods.set(`${namespace}/${name}`, pod);
    return pod;
  }

  /** Publishes a pod object for a pod made with addPodNetwork/addRemotePod (or without an IP yet). */
  putPod(
    namespace: string,
    name: string,
    o: {
      labels?: Record<string, string>;
      node?: string;
      ports?: { name: string; containerPort: number; protocol?: string }[];
      withIp?: boolean;
    } = {},
  ): void {
    const p = this.pods.get(`${namespace}/${name}`);
    const withIp = o.withIp ?? p !== undefined;
    const pod: V1Pod = {
      metadata: { namespace, name, labels: o.labels ?? {} },
      spec: {
        nodeName: o.node ?? (p?.ns === this.remote ? "n2" : "n1"),
        containers: [{ name: "c", ports: o.ports ?? [] }],
      },
      status: {
        phase: "Running",
        ...(withIp && p ? { podIP: p.ip, podIPs: [{ ip: p.ip }, { ip: p.ip6 }] } : {}),
      },
    };
    this.source.put("pods", pod);
  }

  putNamespace(name: string, labels: Record<string, string> = {}): void {
    this.source.put("namespaces", { metadata: { name, labels } } as V1Namespace);
  }

  putPolicy(namespace: string, name: string, spec: Record<string, unknown>): void {
    this.source.put(
      "networkpolicies",
      { metadata: { namespace, name }, spec: { podSelector: {}, ...spec } } as V1NetworkPolicy,
    );
  }

  /** Whether `from` reaches `to` on a port: TCP through curl, UDP through _udp_probe.ts. */
  reach(
    from: string,
    to: string,
    port: number,
    o: { udp?: boolean; v6?: boolean } = {},
  ): Promise<boolean> {
    const src = this.pods.get(from)!, dst = this.pods.get(to)!;
    return probe(src.ns, o.v6 ? dst.ip6 : dst.ip, port, {
      ...o,
      expect: dst.name,
      ...(src.ns === this.remote ? { source: o.v6 ? src.ip6 : src.ip } : {}),
    });
  }

  async close(): Promise<void> {
    await this.stopAgent().catch(() => {});
    for (const p of this.pods.values()) {
      try {
        p.server?.kill("SIGKILL");
        await p.server?.status;
      } catch { /* gone */ }
    }
    for (const ns of this.#made.reverse()) await ns.remove();
  }
}

export async function startServer(ns: NetNs, name: string, ports: string[]): Promise<Deno.ChildProcess> {
  const child = ns.spawn([
    Deno.execPath(),
    "run",
    "--allow-net",
    "--unstable-net",
    serverScript,
    name,
    ...ports,
  ], {
    stdout: "piped",
  });
  const reader = child.stdout.getReader();
  const { value } = await reader.read();
  reader.releaseLock();
  if (!new TextDecoder().decode(value).includes("ready")) throw new Error(`server ${name} did not start`);
  child.stdout.cancel().catch(() => {});
  return child;
}

/** One connection attempt: true when the expected server answered. */
export async function probe(
  ns: NetNs,
  ip: string,
  port: number,
  o: { udp?: boolean; expect: string; source?: string; timeoutS?: number },
): Promise<boolean> {
  const host = ip.includes(":") ? `[${ip}]` : ip;
  const t = String(o.timeoutS ?? 1);
  if (!o.udp) {
    const r = await ns.exec([
      "curl",
      "-s",
      "-m",
      t,
      "--connect-timeout",
      t,
      ...(o.source ? ["--interface", o.source] : []),
      `http://${host}:${port}/`,
    ], { check: false });
    return r.code === 0 && r.stdout === o.expect;
  }
  const r = await ns.exec([
    Deno.execPath(),
    "run",
    "--allow-net",
    "--unstable-net",
    udpProbeScript,
    ip,
    String(port),
    String(Number(t) * 1000),
    ...(o.source ? [o.source] : []),
  ], { check: false });
  return r.code === 0 && r.stdout.trim() === o.expect;
}

export async function eventually(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export { run };
