/**
 * main.ts as a process: what a user sees at the command line, and how it stops.
 * These run the real entry point with `deno run`; the SIGTERM test needs root because the agent refuses
 * to run without it.
 */
import assert from "node:assert/strict";
import { needs, withNetns } from "../../_support/netns.ts";
import { clusterNeeds, TestCluster } from "../router/_cluster.ts";
import { rootProblem } from "../../../main.ts";

const main = new URL("../../../main.ts", import.meta.url).pathname;

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
    clusterNeeds,
  ),
  async fn() {
    // The agent runs inside a throwaway namespace (the router programs routes and nftables there),
    // against a lab API server, as one node of the router tests' cluster harness.
    await withNetns(["ul", "n1"], async (ul, n1) => {
      const c = await TestCluster.start(await Deno.makeTempDir({ prefix: "krt-main-" }), ul, [n1]);
      try {
        const agent = c.startAgent(0, ["--metrics-port=20245", "-v=1"], { allModules: true });
        const curl = async (path: string) =>
          (await n1.exec(["curl", "-s", `http://127.0.0.1:${path}`], { check: false })).stdout;
        let body: { healthy?: boolean; modules?: Record<string, { lastSync: string | null }> } = {};
        await c.waitFor(async () => {
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
        const conf = JSON.parse(await Deno.readTextFile(c.confPath(0)));
        assert.deepEqual(conf.plugins[0].ipam.ranges, [[{ subnet: "10.1.1.0/24" }]]);
        agent.child.kill("SIGTERM");
        assert.equal((await agent.child.status).code, 0, agent.log);
        assert.match(agent.log, /resources=nodes,services,endpointslices,pods,namespaces,networkpolicies/);
        // Stopping leaves the kernel state in place (the pod egress table stays).
        assert.match((await n1.exec(["nft", "list", "tables"])).stdout, /inet kube_router/);
      } finally {
        await c.close();
      }
    });
  },
});

Deno.test({
  ...needs(
    "--service-proxy-backend=ipvs is checked before start: no IPVS in the kernel stops with exit code 2 naming the flag and ip_vs",
    { tools: ["ip", "ipvsadm"] },
  ),
  async fn() {
    await withNetns(["ipvspre"], async (ns) => {
      // ipvsadm is the independent judge of whether this kernel has IPVS (it loads ip_vs when it can).
      const hasIpvs = (await ns.exec(["ipvsadm", "-Ln"], { check: false })).code === 0;
      const r = await ns.exec([
        Deno.execPath(),
        "run",
        "--allow-all",
        main,
        "--service-proxy-backend=ipvs",
        "--run-router=false",
        "--run-firewall=false",
        "--kubeconfig=/nonexistent/kubeconfig",
        "--hostname-override=test-node",
      ], { check: false });
      assert.doesNotMatch(r.stderr, /Uncaught|^\s+at /m, "no uncaught error or stack trace");
      if (!hasIpvs) {
        assert.equal(r.code, 2, r.stderr);
        assert.match(r.stderr, /^kube-router: --service-proxy-backend=ipvs needs the kernel's IPVS/m);
        assert.match(r.stderr, /kernel module ip_vs is not loaded/);
      } else {
        // A kernel with IPVS passes the check and gets as far as the Kubernetes client.
        assert.equal(r.code, 1, r.stderr);
        assert.match(r.stderr, /cannot configure the Kubernetes client/);
        assert.doesNotMatch(r.stderr, /ip_vs/);
      }
    });
  },
});
