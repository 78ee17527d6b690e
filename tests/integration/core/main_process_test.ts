/**
 * main.ts as a process: what a user sees at the command line, and how it stops.
 * These run the real entry point with `deno run`; the SIGTERM test needs root because the agent refuses
 * to run without it.
 */
import assert from "node:assert/strict";
import { needs, withNetns } from "../../_support/netns.ts";
import { rootProblem } from "../../../main.ts";

const main = new URL("../../../main.ts", import.meta.url).pathname;
const apiMain = new URL("../../../lab/apiserver/main.ts", import.meta.url).pathname;

async function waitFor(check: () => Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function runMain(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", main, ...args],
    env: { NODE_NAME: "test-node", ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

Deno.test("kube-router --help lists the flags and exits 0", async () => {
  const r = await runMain(["--help"]);
  assert.equal(r.code, 0, r.stderr);
  for (
    const f of [
      "--run-router",
      "--peer-router-ips",
      "--service-proxy-backend",
      "--health-port",
      "--cleanup-config",
    ]
  ) {
    assert.ok(r.stdout.includes(f), `--help lacks ${f}`);
  }
});

Deno.test("kube-router --version and -V print the version", async () => {
  for (const flag of ["--version", "-V"]) {
    const r = await runMain([flag]);
    assert.equal(r.code, 0);
    assert.match(r.stdout, /^kube-router 0\.1\.0 /);
  }
});

Deno.test("kube-router stops with exit code 2 and names the flag for bad values", async () => {
  for (
    const [args, flag] of [
      [["--service-cluster-ip-range=10.0.0.0/40"], "service-cluster-ip-range"],
      [["--service-node-port-range=32000-31000"], "service-node-port-range"],
      [["--cluster-asn=70000"], "cluster-asn"],
      [["--peer-router-ips=10.0.0.1,10.0.0.2", "--peer-router-asns=65000"], "peer-router-asns"],
      [["--bogus"], "bogus"],
    ] as const
  ) {
    const r = await runMain([...args]);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, new RegExp(`invalid --${flag}`));
  }
});

Deno.test("the root check explains itself", () => {
  assert.equal(rootProblem(0), undefined);
  assert.match(rootProblem(1000) ?? "", /must run as root/);
});

Deno.test({
  ...needs("kube-router serves /healthz and stops within 5 s of SIGTERM with exit 0"),
  async fn() {
    const port = freePort();
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        main,
        "--run-router=false",
        "--run-service-proxy=false",
        "--run-firewall=false",
        `--health-port=${port}`,
        "--health-addr=127.0.0.1",
      ],
      env: { NODE_NAME: "test-node" },
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    try {
      let status = 0;
      for (let k = 0; k < 100 && status !== 200; k++) {
        try {
          const res = await fetch(`http://127.0.0.1:${port}/healthz`);
          status = res.status;
          await res.body?.cancel();
        } catch {
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      assert.equal(status, 200, "agent never answered /healthz");
      const t0 = performance.now();
      child.kill("SIGTERM");
      const out = await child.output();
      const elapsed = performance.now() - t0;
      const stderr = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, stderr);
      assert.ok(elapsed < 5000, `took ${elapsed} ms`);
      assert.match(stderr, /stopping; kernel state stays in place signal=SIGTERM/);
      assert.match(stderr, /INFO {2}stopped/);
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
    }
  },
});

Deno.test({
  ...needs(
    "kube-router with every module watches the API server, turns healthy once synced, and stops on SIGTERM",
    {
      tools: ["openssl", "kubectl", "curl"],
    },
  ),
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "krt-main-" });
    try {
      // Everything runs inside one throwaway namespace: the router programs routes and nftables there.
      await withNetns(["agent"], async (ns) => {
        const api = ns.spawn([
          Deno.execPath(),
          "run",
          "--allow-all",
          apiMain,
          "--port",
          "6443",
          "--state-dir",
          `${dir}/api`,
        ]);
        try {
          const kubeconfig = `${dir}/api/kubeconfig`;
          await waitFor(() => Deno.stat(kubeconfig).then(() => true, () => false), "API server kubeconfig");
          const node = {
            apiVersion: "v1",
            kind: "Node",
            metadata: { name: "test-node" },
            spec: { podCIDR: "10.1.1.0/24", podCIDRs: ["10.1.1.0/24"] },
            status: { addresses: [{ type: "InternalIP", address: "192.168.77.10" }] },
          };
          await waitFor(
            async () =>
              (await ns.exec(
                ["kubectl", "--kubeconfig", kubeconfig, "apply", "--validate=false", "-f", "-"],
                {
                  stdin: JSON.stringify(node),
                  check: false,
                },
              )).code === 0,
            "kubectl apply of the Node",
          );
          await ns.exec(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]);
          await ns.exec(["ip", "addr", "add", "192.168.77.10/24", "dev", "eth0"]);
          await ns.exec(["ip", "link", "set", "eth0", "up"]);
          const agent = new Deno.Command("ip", {
            args: [
              "netns",
              "exec",
              ns.name,
              Deno.execPath(),
              "run",
              "--allow-all",
              main,
              `--kubeconfig=${kubeconfig}`,
              "--health-port=20244",
              "--metrics-port=20245",
              "--bgp-port=1790",
              "--bgp-admin-port=0",
              "-v=1",
            ],
            env: { NODE_NAME: "test-node", KUBE_ROUTER_CNI_CONF_FILE: `${dir}/cni/10-kuberouter.conflist` },
            stdout: "piped",
            stderr: "piped",
          }).spawn();
          try {
            const curl = async (path: string) =>
              (await ns.exec(["curl", "-s", `http://127.0.0.1:${path}`], { check: false })).stdout;
            let body: { healthy?: boolean; modules?: Record<string, { lastSync: string | null }> } = {};
            await waitFor(async () => {
              try {
                body = JSON.parse(await curl("20244/healthz"));
              } catch {
                return false;
              }
              return !!body.healthy && Object.values(body.modules ?? {}).every((m) => m.lastSync);
            }, "every module healthy and synced");
            assert.deepEqual(Object.keys(body.modules ?? {}).sort(), ["firewall", "proxy", "router"]);
            const metrics = await curl("20245/metrics");
            assert.match(metrics, /kube_router_syncs_total\{module="proxy",result="success"\} [1-9]/);
            assert.match(metrics, /kube_router_build_info/);
            // The router wrote the CNI config for the node's pod CIDR.
            const conf = JSON.parse(await Deno.readTextFile(`${dir}/cni/10-kuberouter.conflist`));
            assert.deepEqual(conf.plugins[0].ipam.ranges, [[{ subnet: "10.1.1.0/24" }]]);
            agent.kill("SIGTERM");
            const out = await agent.output();
            const stderr = new TextDecoder().decode(out.stderr);
            assert.equal(out.code, 0, stderr);
            assert.match(stderr, /resources=nodes,services,endpointslices,pods,namespaces,networkpolicies/);
            // Stopping leaves the kernel state in place (the pod egress table stays).
            assert.match((await ns.exec(["nft", "list", "tables"])).stdout, /inet kube_router/);
          } finally {
            try {
              agent.kill("SIGKILL");
            } catch { /* exited */ }
          }
        } finally {
          try {
            api.kill("SIGKILL");
          } catch { /* exited */ }
          await api.status;
        }
      });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
