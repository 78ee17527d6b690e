/**
 * A small cluster for router integration tests: "nodes" are network namespaces joined by veths to a
 * shared underlay namespace (a bridge), each running the real agent (main.ts) against a lab API server
 * that runs in node 1. Pods are namespaces wired up by the real CNI bridge plugin with the conf the router
 * wrote. Everything lives in namespaces the test made; `close()` kills every process it started.
 */
import { type NetNs, run } from "../../_support/netns.ts";

const root = new URL("../../../", import.meta.url).pathname;

export class AgentProc {
  log = "";
  exited: number | undefined;
  constructor(readonly child: Deno.ChildProcess) {
    void child.status.then((s) => this.exited = s.code);
    void (async () => {
      for await (const c of child.stderr.pipeThrough(new TextDecoderStream())) this.log += c;
    })();
  }
}

export class TestCluster {
  readonly procs: Deno.ChildProcess[] = [];
  readonly agents = new Map<string, AgentProc>();
  readonly kubeconfig: string;

  constructor(
    readonly dir: string,
    readonly underlay: NetNs,
    readonly nodes: NetNs[],
    readonly dualStack = false,
    readonly twoSubnets = false,
  ) {
    this.kubeconfig = `${dir}/api/kubeconfig`;
  }

  /** Node i's address: 192.168.77.0/24, or with twoSubnets every second node in 192.168.78.0/24. */
  nodeIp(i: number): string {
    return `192.168.${this.twoSubnets && i % 2 === 1 ? 78 : 77}.${i + 1}`;
  }

  static nodeIp6(i: number): string {
    return `fd00:77::${i + 1}`;
  }

  /**
   * Wires nodes to the underlay bridge, starts the API server in node 0 and registers every node. With
   * `twoSubnets`, every second node sits on a second bridge in another subnet, and the underlay namespace
   * routes between the two (it knows nothing of pod CIDRs: pod traffic between them needs the overlay).
   */
  static async start(
    dir: string,
    underlay: NetNs,
    nodes: NetNs[],
    opts: { dualStack?: boolean; twoSubnets?: boolean } = {},
  ): Promise<TestCluster> {
    const c = new TestCluster(dir, underlay, nodes, opts.dualStack ?? false, opts.twoSubnets ?? false);
    for (const br of c.twoSubnets ? ["br0", "br1"] : ["br0"]) {
      await underlay.exec(["ip", "link", "add", br, "type", "bridge"]);
      await underlay.exec(["ip", "link", "set", br, "up"]);
    }
    if (c.twoSubnets) {
      await underlay.exec(["ip", "addr", "add", "192.168.77.254/24", "dev", "br0"]);
      await underlay.exec(["ip", "addr", "add", "192.168.78.254/24", "dev", "br1"]);
      await underlay.exec(["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    }
    for (const [i, ns] of nodes.entries()) {
      const port = `vn${i}`;
      await underlay.exec([
        "ip",
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        ns.name,
      ]);
      const second = c.twoSubnets && i % 2 === 1;
      await underlay.exec(["ip", "link", "set", port, "master", second ? "br1" : "br0", "up"]);
      await ns.exec(["ip", "addr", "add", `${c.nodeIp(i)}/24`, "dev", "eth0"]);
      if (c.dualStack) {
        await ns.exec(["ip", "-6", "addr", "add", `${TestCluster.nodeIp6(i)}/64`, "dev", "eth0", "nodad"]);
      }
      await ns.exec(["ip", "link", "set", "eth0", "up"]);
      if (c.twoSubnets) {
        await ns.exec(["ip", "route", "add", "default", "via", second ? "192.168.78.254" : "192.168.77.254"]);
      }
    }
    c.procs.push(nodes[0]!.spawn([
      Deno.execPath(),
      "run",
      "--allow-all",
      `${root}lab/apiserver/main.ts`,
      "--host",
      "0.0.0.0",
      "--advertise-address",
      c.nodeIp(0),
      "--port",
      "6443",
      "--state-dir",
      `${dir}/api`,
    ]));
    await c.waitFor(() => Deno.stat(c.kubeconfig).then(() => true, () => false), "API server");
    const items = nodes.map((_, i) => c.nodeObject(i));
    await c.waitFor(async () => {
      const r = await c.kubectl(
        ["apply", "--validate=false", "-f", "-"],
        JSON.stringify({ apiVersion: "v1", kind: "List", items }),
        false,
      );
      return r.code === 0;
    }, "nodes registered");
    return c;
  }

  nodeObject(i: number): Record<string, unknown> {
    const podCIDRs = [`10.1.${i + 1}.0/24`, ...(this.dualStack ? [`fd00:1:${i + 1}::/64`] : [])];
    const addresses = [
      { type: "InternalIP", address: this.nodeIp(i) },
      ...(this.dualStack ? [{ type: "InternalIP", address: TestCluster.nodeIp6(i) }] : []),
    ];
    return {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: `n${i + 1}` },
      spec: { podCIDR: podCIDRs[0], podCIDRs },
      status: { addresses },
    };
  }

  kubectl(args: string[], stdin?: string, check = true) {
    return this.nodes[0]!.exec(["kubectl", "--kubeconfig", this.kubeconfig, ...args], {
      check,
      ...(stdin === undefined ? {} : { stdin }),
    });
  }

  confPath(i: number): string {
    return `${this.dir}/n${i + 1}/10-kuberouter.conflist`;
  }

  /**
   * Starts (or restarts) the agent of node i with extra flags. By default only the router runs;
   * `allModules` runs the proxy and the firewall too.
   */
  startAgent(i: number, flags: string[] = [], opts: { allModules?: boolean } = {}): AgentProc {
    const ns = this.nodes[i]!;
    const only = opts.allModules ? [] : ["--run-service-proxy=false", "--run-firewall=false"];
    const child = ns.spawn(
      [
        Deno.execPath(),
        "run",
        "--allow-all",
        `${root}main.ts`,
        `--kubeconfig=${this.kubeconfig}`,
        ...only,
        ...flags,
      ],
      {
        env: { NODE_NAME: `n${i + 1}`, KUBE_ROUTER_CNI_CONF_FILE: this.confPath(i) },
        stdout: "null",
        stderr: "piped",
      },
    );
    this.procs.push(child);
    const a = new AgentProc(child);
    this.agents.set(`n${i + 1}`, a);
    return a;
  }

  /** Polls `check` every 20 ms; fails at once if an agent died, else after `timeoutMs`. Returns the wait. */
  async waitFor(
    check: () => Promise<boolean>,
    what: string,
    timeoutMs = 30_000,
    allowExit = false,
  ): Promise<number> {
    // Under the VM tier's software emulation everything runs several times slower.
    if (Deno.env.get("KRT_IN_VM") === "1") timeoutMs *= 6;
    const t0 = Date.now();
    while (!(await check())) {
      const dead = [...this.agents.entries()].filter(([, a]) => a.exited !== undefined);
      if (!allowExit && dead.length) {
        throw new Error(
          `agent ${
            dead.map(([n, a]) => `${n} exited ${a.exited}:\n${a.log}`).join("\n")
          }\nwhile waiting for ${what}`,
        );
      }
      if (Date.now() - t0 > timeoutMs) {
        const logs = [...this.agents.entries()].map(([n, a]) => `--- ${n}\n${a.log}`).join("\n");
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}\n${logs}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    return Date.now() - t0;
  }

  /** `kube-router bgp neighbors` run on node i against its agent's admin endpoint. */
  async bgpNeighbors(i: number): Promise<string> {
    const r = await this.nodes[i]!.exec([
      Deno.execPath(),
      "run",
      "--allow-all",
      `${root}main.ts`,
      "bgp",
      "neighbors",
    ], { check: false });
    return r.stdout;
  }

  async routes(i: number): Promise<string> {
    return (await this.nodes[i]!.exec(["ip", "route", "show", "proto", "17"])).stdout;
  }

  /** Waits until every node has a proto-17 route to every other node's pod CIDR. */
  async waitConverged(timeoutMs = 60_000): Promise<number> {
    return await this.waitFor(
      async () => {
        for (let i = 0; i < this.nodes.length; i++) {
          const r = await this.routes(i);
          for (let j = 0; j < this.nodes.length; j++) {
            if (i !== j && !r.includes(`10.1.${j + 1}.0/24 via ${this.nodeIp(j)} `)) return false;
          }
        }
        return true;
      },
      "every node routes to every other node's pod CIDR",
      timeoutMs,
    );
  }

  /** Gives `pod` an interface on node i through the real CNI bridge plugin; returns its IP. */
  async addPod(i: number, pod: NetNs): Promise<string> {
    await this.waitFor(
      () => Deno.stat(this.confPath(i)).then(() => true, () => false),
      `CNI conf on n${i + 1}`,
    );
    const list = JSON.parse(await Deno.readTextFile(this.confPath(i)));
    const bridge = list.plugins.find((p: { type: string }) => p.type === "bridge");
    const conf = {
      cniVersion: list.cniVersion,
      name: list.name,
      ...bridge,
      ipam: { ...bridge.ipam, dataDir: `${this.dir}/n${i + 1}/ipam` },
    };
    const out = await this.nodes[i]!.exec([
      "env",
      "CNI_COMMAND=ADD",
      `CNI_CONTAINERID=${pod.name}`,
      `CNI_NETNS=/var/run/netns/${pod.name}`,
      "CNI_IFNAME=eth0",
      "CNI_PATH=/usr/lib/cni",
      "/usr/lib/cni/bridge",
    ], { stdin: JSON.stringify(conf) });
    return JSON.parse(out.stdout).ips[0].address.split("/")[0];
  }

  /** Like addPod, but returns every address the pod got (dual-stack: IPv4 and IPv6). */
  async addPodAll(i: number, pod: NetNs): Promise<string[]> {
    await this.addPod(i, pod);
    const addrs = JSON.parse((await pod.exec(["ip", "-j", "addr", "show", "eth0"])).stdout)[0].addr_info as {
      local: string;
      scope: string;
    }[];
    return addrs.filter((a) => a.scope === "global").map((a) => a.local);
  }

  async close(): Promise<void> {
    for (const p of this.procs) {
      try {
        p.kill("SIGKILL");
      } catch { /* gone */ }
    }
    await Promise.all(this.procs.map((p) => p.status));
    await run(["rm", "-rf", this.dir], { check: false });
  }
}

export const clusterNeeds = {
  tools: ["openssl", "kubectl", "curl", "busybox"],
  files: ["/usr/lib/cni/bridge", "/usr/lib/cni/host-local"],
};
