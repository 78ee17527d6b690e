/**
 * A one-node world for service proxy tests with real traffic: the node namespace (bridge cbr0 with the
 * pod subnet, eth0 towards a client namespace standing for another machine), three pod namespaces each
 * running lab/netexec.ts (HTTP /hostname and /clientip on 8080, IPv6 HTTP on 8090, UDP on 8081), and the
 * proxy under test in the node namespace through a driver. Backend-neutral: the cases in _cases.ts only
 * use `env`, so another backend (IPVS, in a VM) can run the same table: `--service-proxy-backend=ipvs` among
 * the flags of startProxy makes the driver run the IPVS backend, and `env.backend` tells a case which one
 * it faces where the two differ by design (each such case says why).
 */
import type { V1EndpointSlice, V1Node, V1Service } from "@kubernetes/client-node";
import { Driver } from "../../_support/driver.ts";
import { linkVeth, NetNs, run } from "../../_support/netns.ts";

const root = new URL("../../../", import.meta.url).pathname;

export const NODE_IP = "192.168.77.1";
export const CLIENT_IP = "192.168.77.2";
export const NODE_IP6 = "fd00:77::1";
export const CLIENT_IP6 = "fd00:77::2";
export const POD_IPS = ["10.1.1.10", "10.1.1.11", "10.1.1.12"];
export const POD_IPS6 = ["fd00:1:1::10", "fd00:1:1::11", "fd00:1:1::12"];
export const POD_NAMES = ["pod-a", "pod-b", "pod-c"];

export const NODE: V1Node = {
  metadata: { name: "n1", labels: { "topology.kubernetes.io/zone": "zone-a" } },
  spec: { podCIDR: "10.1.1.0/24", podCIDRs: ["10.1.1.0/24", "fd00:1:1::/64"] },
  status: {
    addresses: [{ type: "InternalIP", address: NODE_IP }, { type: "InternalIP", address: NODE_IP6 }],
  },
};

export const BASE_FLAGS = [
  "--service-cluster-ip-range=172.16.0.0/16",
  "--service-cluster-ip-range=fd00:172::/112",
  "--enable-ipv6",
  "--service-external-ip-range=203.0.113.0/24",
  "--loadbalancer-ip-range=198.51.100.0/24",
];

export interface EndpointOpts {
  node?: string;
  ready?: boolean;
  serving?: boolean;
  terminating?: boolean;
}

export function service(name: string, spec: V1Service["spec"], extra: Partial<V1Service> = {}): V1Service {
  return {
    metadata: { namespace: "default", name, ...(extra.metadata ?? {}) },
    spec: {
      ports: [{ name: "http", port: 80, protocol: "TCP", targetPort: "http" as unknown as number }],
      ...spec,
    },
    ...(extra.status ? { status: extra.status } : {}),
  };
}

/** One IPv4 slice (and an IPv6 one with `v6`) for pods given by index. */
export function slices(
  svc: string,
  pods: number[],
  opts: EndpointOpts & { perPod?: Record<number, EndpointOpts>; v6?: boolean; udp?: boolean } = {},
): V1EndpointSlice[] {
  const mk = (family: 4 | 6): V1EndpointSlice => ({
    metadata: {
      namespace: "default",
      name: `${svc}-v${family}`,
      labels: { "kubernetes.io/service-name": svc },
    },
    addressType: family === 4 ? "IPv4" : "IPv6",
    endpoints: pods.map((i) => {
      const o = { ...opts, ...(opts.perPod?.[i] ?? {}) };
      return {
        addresses: [family === 4 ? POD_IPS[i]! : POD_IPS6[i]!],
        conditions: {
          ready: o.ready ?? true,
          ...(o.serving !== undefined ? { serving: o.serving } : {}),
          ...(o.terminating !== undefined ? { terminating: o.terminating } : {}),
        },
        nodeName: o.node ?? "n1",
        targetRef: { kind: "Pod", namespace: "default", name: POD_NAMES[i]! },
      };
    }),
    ports: [
      { name: "http", port: family === 4 ? 8080 : 8090, protocol: "TCP" },
      ...(opts.udp ? [{ name: "dns", port: 8081, protocol: "UDP" }] : []),
    ],
  });
  return opts.v6 ? [mk(4), mk(6)] : [mk(4)];
}

export interface Answer {
  ok: boolean;
  body: string;
  /** curl's exit code: 7 = refused, 28 = timed out. */
  code: number;
  ms: number;
}

export class ProxyEnv {
  driver!: Driver;
  pods: NetNs[] = [];
  podProcs: Deno.ChildProcess[] = [];
  flags: string[] = [];

  constructor(readonly node: NetNs, readonly client: NetNs) {}

  static async create(): Promise<ProxyEnv> {
    const node = await NetNs.create("pxnode");
    const client = await NetNs.create("pxclient");
    const env = new ProxyEnv(node, client);
    try {
      await linkVeth(node, "eth0", `${NODE_IP}/24`, client, "eth0", `${CLIENT_IP}/24`);
      await node.exec(["ip", "-6", "addr", "add", `${NODE_IP6}/64`, "dev", "eth0", "nodad"]);
      await client.exec(["ip", "-6", "addr", "add", `${CLIENT_IP6}/64`, "dev", "eth0", "nodad"]);
      // The client routes pods, cluster IPs, external and LB IPs through the node (as a BGP peer would).
      for (const dst of ["10.1.0.0/16", "172.16.0.0/16", "203.0.113.0/24", "198.51.100.0/24"]) {
        await client.exec(["ip", "route", "add", dst, "via", NODE_IP]);
      }
      for (const dst of ["fd00:1::/32", "fd00:172::/112"]) {
        await client.exec(["ip", "-6", "route", "add", dst, "via", NODE_IP6]);
      }
      // A real node has a default route; without it a local process cannot even route to a cluster IP.
      await node.exec(["ip", "route", "add", "default", "via", CLIENT_IP]);
      await node.exec(["ip", "-6", "route", "add", "default", "via", CLIENT_IP6]);
      // A node's prerequisite (kube-router's router and firewall turn it on, kubeadm asks for it): bridged
      // traffic passes the IP hooks, so a pod's reply to a pod on the same bridge that reached it through a
      // Service is un-NATed (by conntrack, or by IPVS) instead of going straight back with the wrong source.
      // This machine's kernel has br_netfilter; the VM tier's Debian kernel loads it as a module.
      if (!(await exists("/proc/sys/net/bridge"))) await run(["modprobe", "br_netfilter"]);
      await node.exec(["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=1"]);
      await node.exec(["sysctl", "-qw", "net.bridge.bridge-nf-call-ip6tables=1"]);
      // The kernel limits the ICMP errors it sends to one host (IcmpOutRateLimitHost in `nstat`: about one a
      // second after a small burst), a node's rejects included, kube-proxy's as much as ours. The cases send
      // many from one client machine within seconds, so the node's namespace lifts the limit: a missing ICMP
      // error then means a blackhole, not a spent token.
      await node.exec(["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"]);
      await node.exec(["sysctl", "-qw", "net.ipv6.icmp.ratelimit=0"]);
      await node.exec(["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
      await node.exec(["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
      await node.exec(["ip", "link", "add", "cbr0", "type", "bridge"]);
      await node.exec(["ip", "addr", "add", "10.1.1.1/24", "dev", "cbr0"]);
      await node.exec(["ip", "-6", "addr", "add", "fd00:1:1::1/64", "dev", "cbr0", "nodad"]);
      await node.exec(["ip", "link", "set", "cbr0", "up"]);
      for (const [i, ip] of POD_IPS.entries()) {
        const pod = await NetNs.create(`pxpod${i}`);
        env.pods.push(pod);
        await linkVeth(node, `vp${i}`, undefined, pod, "eth0", `${ip}/24`);
        await node.exec(["ip", "link", "set", `vp${i}`, "master", "cbr0"]);
        // What the CNI bridge plugin does with hairpinMode (the conf the router writes asks for it): a
        // frame routed back to the port it came from may leave through it.
        await node.exec(["ip", "link", "set", `vp${i}`, "type", "bridge_slave", "hairpin", "on"]);
        await pod.exec(["ip", "-6", "addr", "add", `${POD_IPS6[i]}/64`, "dev", "eth0", "nodad"]);
        await pod.exec(["ip", "route", "add", "default", "via", "10.1.1.1"]);
        await pod.exec(["ip", "-6", "route", "add", "default", "via", "fd00:1:1::1"]);
        const proc = pod.spawn([
          Deno.execPath(),
          "run",
          "--allow-net",
          "--unstable-net",
          `${root}lab/netexec.ts`,
          POD_NAMES[i]!,
          "tcp:8080",
          "udp:8081",
          "tcp6:8090",
        ], { stdout: "piped" });
        env.podProcs.push(proc);
      }
      // The pods' programs start side by side (a Deno start is seconds under the VM tier's emulation).
      await Promise.all(env.podProcs.map(async (proc, i) => {
        const reader = proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
        const { value } = await reader.read();
        if (!value?.includes("ready")) throw new Error(`netexec in ${env.pods[i]!.name} did not start`);
        reader.releaseLock();
      }));
      return env;
    } catch (e) {
      await env.close();
      throw e;
    }
  }

  /** Which backend the driver runs (from the flags it was started with). */
  get backend(): "nftables" | "ipvs" {
    return this.flags.includes("--service-proxy-backend=ipvs") ? "ipvs" : "nftables";
  }

  /** (Re)starts the proxy driver with flags and the initial objects. */
  async startProxy(flags: string[], objects: (V1Service | V1EndpointSlice | V1Node)[]): Promise<void> {
    this.flags = flags;
    // A Deno start in the VM tier's emulated CPU on a loaded host can take most of a minute.
    const readyMs = Deno.env.get("KRT_IN_VM") === "1" ? 120_000 : 30_000;
    this.driver = await Driver.start(this.node, new URL("./_proxy_driver.ts", import.meta.url), [], readyMs);
    try {
      await this.driver.call("start", {
        flags: [...BASE_FLAGS, ...flags],
        objects: [NODE, ...objects].map((obj) => ({ kind: kindOf(obj), obj })),
      });
    } catch (err) {
      // What the proxy logged says why (the reply only says that something failed).
      throw new Error(`${err}\n--- the proxy's log (tail) ---\n${this.driver.stderr.slice(-4000)}`);
    }
  }

  put(obj: V1Service | V1EndpointSlice | V1Node): Promise<number> {
    return this.driver.call("put", { kind: kindOf(obj), obj });
  }

  remove(kind: "services" | "endpointslices", key: string): Promise<number> {
    return this.driver.call("delete", { kind, key });
  }

  dump(): Promise<string> {
    return this.driver.call("dump");
  }

  /** The agent's /metrics text. */
  metrics(): Promise<string> {
    return this.driver.call("metrics");
  }

  /** Stops the proxy and runs --cleanup-config with its flags (the driver stays up, idle). */
  cleanup(): Promise<null> {
    return this.driver.call("cleanup", { flags: [...BASE_FLAGS, ...this.flags] });
  }

  /** HTTP GET from a namespace ("client", "node", or a pod index). */
  async get(from: "client" | "node" | number, url: string, timeoutS = 4): Promise<Answer> {
    const ns = from === "client" ? this.client : from === "node" ? this.node : this.pods[from]!;
    const t0 = performance.now();
    const r = await ns.exec(["curl", "-gs", "--max-time", String(timeoutS), url], { check: false });
    return { ok: r.code === 0, body: r.stdout.trim(), code: r.code, ms: performance.now() - t0 };
  }

  /**
   * Distinct bodies of n requests, each on a new connection ("error CODE" for a failed one, with curl's
   * exit code). One curl makes them all (the request asks the server to close, so no connection is
   * reused): a process start per request is what costs most under the VM tier's emulation.
   */
  async spread(
    from: "client" | "node" | number,
    url: string,
    n: number,
    timeoutS = 4,
  ): Promise<Map<string, number>> {
    const ns = from === "client" ? this.client : from === "node" ? this.node : this.pods[from]!;
    const r = await ns.exec([
      "curl",
      "-gs",
      "--max-time",
      String(timeoutS),
      "-H",
      "Connection: close",
      "-w",
      "\n@@%{exitcode}\n",
      ...Array.from({ length: n }, () => url),
    ], { check: false });
    const out = new Map<string, number>();
    const answers = [...r.stdout.matchAll(/([^\n]*)\n@@(\d+)\n/g)];
    if (answers.length !== n) throw new Error(`curl gave ${answers.length} answers of ${n}: ${r.stdout}`);
    for (const [, body, code] of answers) {
      const k = code === "0" ? body!.trim() : `error ${code}`;
      out.set(k, (out.get(k) ?? 0) + 1);
    }
    return out;
  }

  /**
   * Requests until every one of `names` has answered (or `max` requests): endpoints are picked at random
   * (as kube-proxy does), so a fixed number of requests could miss one by chance (3 backends, 9 requests:
   * 8 % of runs); 40 make that 2 in 10 million. Returns the distinct bodies with their counts.
   */
  async reaches(
    from: "client" | "node" | number,
    url: string,
    names: readonly string[],
    max = 40,
  ): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    // In rounds of as many requests as names, each round one curl (see spread).
    for (let sent = 0; sent < max && !names.every((n) => out.has(n)); sent += names.length) {
      for (const [k, n] of await this.spread(from, url, Math.min(names.length, max - sent))) {
        out.set(k, (out.get(k) ?? 0) + n);
      }
    }
    return out;
  }

  /** One UDP request from the client from a fixed source port (so the same conntrack flow each time). */
  async udp(target: string, port: number, srcPort: number, msg = "hostname"): Promise<string> {
    const r = await this.client.exec([
      Deno.execPath(),
      "run",
      "--allow-net",
      "--unstable-net",
      new URL("./_udp_client.ts", import.meta.url).pathname,
      target,
      String(port),
      String(srcPort),
      msg,
    ], { check: false });
    return r.stdout.trim();
  }

  /**
   * One UDP request over a connected socket (from "client", "node" or a pod index): the answer, "refused"
   * if an ICMP port unreachable came back, "" if nothing did within 1 s.
   */
  async udpConnected(
    from: "client" | "node" | number,
    target: string,
    port: number,
    msg = "hostname",
  ): Promise<string> {
    const ns = from === "client" ? this.client : from === "node" ? this.node : this.pods[from]!;
    const r = await ns.exec([
      Deno.execPath(),
      "run",
      "--allow-ffi",
      "--allow-env",
      "--allow-read",
      new URL("./_udp_connected.ts", import.meta.url).pathname,
      target,
      String(port),
      msg,
    ], { check: false });
    if (r.code !== 0) throw new Error(`_udp_connected.ts failed: ${r.stderr}`);
    return r.stdout.trim();
  }

  async close(): Promise<void> {
    await this.driver?.kill().catch(() => {});
    for (const p of this.podProcs) {
      try {
        p.kill("SIGKILL");
      } catch { /* gone */ }
      await p.status.catch(() => {});
    }
    for (const ns of [...this.pods, this.client, this.node]) await ns.remove();
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

function kindOf(obj: object): "services" | "endpointslices" | "nodes" {
  if ("addressType" in obj) return "endpointslices";
  const m = obj as { metadata?: { namespace?: string } };
  return m.metadata?.namespace ? "services" : "nodes";
}

export { run };
