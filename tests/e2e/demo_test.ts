/**
 * `deno task demo` end to end, through the command line, in its own state dir and namespace prefix.
 * Needs root, kubectl, curl, nsenter and the Debian CNI plugins.
 */
import assert from "node:assert/strict";
import { needs, run } from "../_support/netns.ts";
import { netnsLeft } from "./_lab.ts";
import { labDown } from "../../lab/mod.ts";

const REQ = {
  tools: ["ip", "kubectl", "curl", "nsenter"],
  files: ["/usr/lib/cni/bridge", "/usr/lib/cni/host-local"],
};
const cli = new URL("../../lab/cli.ts", import.meta.url).pathname;

/** `deno run -A lab/cli.ts ARGS… --state-dir=STATE_DIR --prefix=PREFIX`, by default not checked. */
const labCli = (args: string[], stateDir: string, prefix: string, check = false) =>
  run([Deno.execPath(), "run", "-A", cli, ...args, `--state-dir=${stateDir}`, `--prefix=${prefix}`], {
    check,
  });

Deno.test({
  ...needs("the demo narrates the seed's scenario, passes every expectation and leaves nothing behind", REQ),
  async fn() {
    const stateDir = Deno.makeTempDirSync({ prefix: "krl-e2e-demo-" });
    const prefix = `krld${crypto.randomUUID().slice(0, 4)}-`;
    try {
      const res = await labCli(["demo"], stateDir, prefix);
      assert.equal(res.code, 0, res.stdout + res.stderr);
      assert.match(res.stdout, /== Act 1: the cluster ==/);
      assert.match(res.stdout, /\$ kubectl get nodes -o wide/);
      assert.match(res.stdout, /✔ curl http:\/\/10\.1\.1\.\d+:8080\/hostname from web-1 answers web-2/);
      assert.match(res.stdout, /== Act 4: a Service load-balanced by kube-router \(service proxy\) ==/);
      assert.match(res.stdout, /✔ all four backends answered/);
      assert.match(res.stdout, /✔ kube-master reaches kube-node3's NodePort every time/);
      assert.match(res.stdout, /✔ client \(192\.168\.1\.50\) reaches kube-node3.s NodePort every time/);
      assert.doesNotMatch(res.stdout, /✘/);
      assert.match(res.stdout.trim().split("\n").at(-1)!, /^demo: PASSED — (\d+)\/\1 expectations held/);
      assert.deepEqual(await netnsLeft(prefix), []);
    } finally {
      await labDown({ stateDir, prefix });
      await Deno.remove(stateDir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  ...needs(
    "demo --daemonset runs every act with the agents as the DaemonSet of dist/kube-router-daemonset.yaml",
    REQ,
  ),
  async fn() {
    const stateDir = Deno.makeTempDirSync({ prefix: "krl-e2e-demods-" });
    const prefix = `krlds${crypto.randomUUID().slice(0, 4)}-`;
    try {
      const res = await labCli(["demo", "--daemonset"], stateDir, prefix);
      assert.equal(res.code, 0, res.stdout + res.stderr);
      assert.match(res.stdout, /kubectl apply -f .*dist\/kube-router-daemonset\.yaml/);
      assert.match(res.stdout, /== Act 2: kube-router as a DaemonSet ==/);
      assert.match(
        res.stdout,
        /✔ kube-node3 runs kube-router-\w+ \(Running, Ready, host network 192\.168\.1\.102\)/,
      );
      assert.doesNotMatch(res.stdout, /✘|skipped/);
      assert.match(res.stdout.trim().split("\n").at(-1)!, /^demo: PASSED — (\d+)\/\1 expectations held/);
      assert.deepEqual(await netnsLeft(prefix), []);
    } finally {
      await labDown({ stateDir, prefix });
      await Deno.remove(stateDir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  ...needs("lab up twice is refused with a clear message and the first lab keeps running", REQ),
  async fn() {
    const stateDir = Deno.makeTempDirSync({ prefix: "krl-e2e-twice-" });
    const prefix = `krlt${crypto.randomUUID().slice(0, 4)}-`;
    const up = () => labCli(["up", "--no-agents", "--nodes=1"], stateDir, prefix);
    try {
      const first = await up();
      assert.equal(first.code, 0, first.stderr);
      const second = await up();
      assert.equal(second.code, 1);
      assert.match(second.stderr, /a lab is already up .*run `deno task lab down` first/);
      const status = await labCli(["status"], stateDir, prefix, true);
      assert.match(status.stdout, /master pid \d+ running/);
      assert.match(status.stdout, /kube-node1\s+True\s+192\.168\.1\.100\s+10\.1\.1\.0\/24/);
    } finally {
      const down = await labCli(["down"], stateDir, prefix);
      assert.equal(down.code, 0, down.stderr);
      await Deno.remove(stateDir, { recursive: true }).catch(() => {});
    }
  },
});

Deno.test({
  ...needs("lab up replaces the state of a lab that no longer exists (after a reboot)", REQ),
  async fn() {
    const stateDir = Deno.makeTempDirSync({ prefix: "krl-e2e-stale-" });
    const prefix = `krls${crypto.randomUUID().slice(0, 4)}-`;
    Deno.writeTextFileSync(
      `${stateDir}/lab-state.json`,
      JSON.stringify({
        version: 1,
        prefix,
        stateDir,
        nodes: 1,
        createdAt: "2026-01-01T00:00:00Z",
        upPid: 2 ** 22 + 1, // above pid_max: never a live process
        phase: "up",
        netns: [`${prefix}underlay`],
        processes: [{ role: "master", pid: 2 ** 22 + 2, marker: `--state-dir=${stateDir}` }],
        agents: false,
        agentFlags: [],
        cniMode: "lab",
      }),
    );
    try {
      const res = await labCli(["up", "--no-agents", "--nodes=1"], stateDir, prefix);
      assert.equal(res.code, 0, res.stderr);
      assert.match(res.stdout, /removing the stale state of a lab created 2026-01-01/);
    } finally {
      await labDown({ stateDir, prefix });
      await Deno.remove(stateDir, { recursive: true }).catch(() => {});
    }
  },
});
