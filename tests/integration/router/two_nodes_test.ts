/**
 * The router module end to end on two "nodes" (network namespaces joined by a veth), each running the real
 * agent (main.ts) against a lab API server: the nodes peer over BGP, install each other's pod CIDR routes,
 * write the CNI config that the real bridge plugin uses for a pod on each node, and the pods reach each
 * other. A route deleted by hand comes back; a bad peers annotation is logged and everything keeps working.
 */
import assert from "node:assert/strict";
import { linkVeth, needs, type NetNs, withNetns } from "../../_support/netns.ts";

const root = new URL("../../../", import.meta.url).pathname;

/** Agents that died; waitFor gives up at once when one has. */
const exited: string[] = [];

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<number> {
  const t0 = Date.now();
  while (!(await check())) {
    if (exited.length) throw new Error(`${exited.join("; ")} while waiting for ${what}`);
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return Date.now() - t0;
}

async function cniAdd(node: NetNs, pod: NetNs, confPath: string, dataDir: string): Promise<string> {
  const list = JSON.parse(await Deno.readTextFile(confPath));
  const bridge = list.plugins.find((p: { type: string }) => p.type === "bridge");
  const conf = { cniVersion: list.cniVersion, name: list.name, ...bridge, ipam: { ...bridge.ipam, dataDir } };
  const out = await node.exec([
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

Deno.test({
  ...needs(
    "two nodes exchange pod CIDRs over BGP, route pod traffic, repair a deleted route and shrug off a bad annotation",
    {
      tools: ["openssl", "kubectl", "curl", "busybox"],
      files: ["/usr/lib/cni/bridge", "/usr/lib/cni/host-local"],
    },
  ),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "krt-2nodes-" });
    const procs: Deno.ChildProcess[] = [];
    try {
      await withNetns(["n1", "n2", "p1", "p2"], async (n1, n2, p1, p2) => {
        await linkVeth(n1, "eth0", "192.168.77.1/24", n2, "eth0", "192.168.77.2/24");
        for (const n of [n1, n2]) await n.exec(["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        procs.push(n1.spawn([
          Deno.execPath(),
          "run",
          "--allow-all",
          `${root}lab/apiserver/main.ts`,
          "--host",
          "0.0.0.0",
          "--advertise-address",
          "192.168.77.1",
          "--port",
          "6443",
          "--state-dir",
          `${dir}/api`,
        ]));
        const kubeconfig = `${dir}/api/kubeconfig`;
        await waitFor(() => Deno.stat(kubeconfig).then(() => true, () => false), "API server");
        const kubectl = (ns: NetNs, args: string[], stdin?: string) =>
          ns.exec(["kubectl", "--kubeconfig", kubeconfig, ...args], stdin === undefined ? {} : { stdin });
        const nodes = [1, 2].map((i) => ({
          apiVersion: "v1",
          kind: "Node",
          metadata: { name: `n${i}` },
          spec: { podCIDR: `10.1.${i}.0/24`, podCIDRs: [`10.1.${i}.0/24`] },
          status: { addresses: [{ type: "InternalIP", address: `192.168.77.${i}` }] },
        }));
        await waitFor(async () => {
          try {
            await kubectl(
              n1,
              ["apply", "--validate=false", "-f", "-"],
              JSON.stringify({ apiVersion: "v1", kind: "List", items: nodes }),
            );
            return true;
          } catch {
            return false;
          }
        }, "nodes created");

        const agents: Record<string, { err: string }> = {};
        for (const [i, ns] of [[1, n1], [2, n2]] as const) {
          const child = new Deno.Command("ip", {
            args: [
              "netns",
              "exec",
              ns.name,
              Deno.execPath(),
              "run",
              "--allow-all",
              `${root}main.ts`,
              `--kubeconfig=${kubeconfig}`,
              "--run-service-proxy=false",
              "--run-firewall=false",
            ],
            env: { NODE_NAME: `n${i}`, KUBE_ROUTER_CNI_CONF_FILE: `${dir}/n${i}/10-kuberouter.conflist` },
            stdout: "null",
            stderr: "piped",
          }).spawn();
          procs.push(child);
          const log = agents[`n${i}`] = { err: "" };
          void child.status.then((s) => exited.push(`n${i} agent exited with ${s.code}`));
          void (async () => {
            for await (const c of child.stderr.pipeThrough(new TextDecoderStream())) log.err += c;
          })();
        }
        const routes = async (ns: NetNs) => (await ns.exec(["ip", "route", "show", "proto", "17"])).stdout;
        await waitFor(
          async () => /10\.1\.2\.0\/24 via 192\.168\.77\.2 dev eth0/.test(await routes(n1)),
          "n1 learns n2's pod CIDR",
          60_000,
        )
          .catch((e) => {
            throw new Error(`${e.message}\nn1 log:\n${agents.n1!.err}\nn2 log:\n${agents.n2!.err}`);
          });
        await waitFor(
          async () => /10\.1\.1\.0\/24 via 192\.168\.77\.1 dev eth0/.test(await routes(n2)),
          "n2 learns n1's pod CIDR",
        );

        await waitFor(
          () => Deno.stat(`${dir}/n2/10-kuberouter.conflist`).then(() => true, () => false),
          "CNI conf on n2",
        );
        const ip1 = await cniAdd(n1, p1, `${dir}/n1/10-kuberouter.conflist`, `${dir}/n1/ipam`);
        const ip2 = await cniAdd(n2, p2, `${dir}/n2/10-kuberouter.conflist`, `${dir}/n2/ipam`);
        assert.match(ip1, /^10\.1\.1\./);
        assert.match(ip2, /^10\.1\.2\./);
        const ping = await p1.exec(["busybox", "ping", "-c", "2", "-W", "2", ip2], { check: false });
        assert.equal(ping.code, 0, `pod on n1 cannot reach pod on n2: ${ping.stdout}${ping.stderr}`);

        // A route deleted behind the agent's back is put back.
        await n1.exec(["ip", "route", "del", "10.1.2.0/24"]);
        const repairMs = await waitFor(
          async () => /10\.1\.2\.0\/24 via 192\.168\.77\.2/.test(await routes(n1)),
          "route repaired",
          5000,
        );
        assert.ok(repairMs < 1000, `route came back after ${repairMs} ms, more than a second`);

        // A malformed peers annotation is reported and ignored; the mesh and the routes stay.
        await kubectl(n1, [
          "annotate",
          "node",
          "n1",
          "kube-router.io/peers=- remoteip: not-an-ip\n  remoteasn: 65000\n",
        ]);
        await waitFor(
          async () => agents.n1!.err.includes("ignoring bad BGP configuration"),
          "the bad annotation logged",
        );
        assert.match(agents.n1!.err, /kube-router.io\/peers\[0\]: remoteip \\?"not-an-ip\\?"/);
        const ping2 = await p1.exec(["busybox", "ping", "-c", "1", "-W", "2", ip2], { check: false });
        assert.equal(ping2.code, 0, "traffic still flows after the bad annotation");
        const neighbors = await n1.exec([
          Deno.execPath(),
          "run",
          "--allow-all",
          `${root}main.ts`,
          "bgp",
          "neighbors",
        ]);
        assert.match(neighbors.stdout, /192\.168\.77\.2\s+64512\s+.*Establ/);
      });
    } finally {
      for (const p of procs) {
        try {
          p.kill("SIGKILL");
        } catch { /* gone */ }
      }
      await Promise.all(procs.map((p) => p.status));
      await Deno.remove(dir, { recursive: true });
    }
  },
});
