/**
 * End to end: the router module in the lab (issue 5). Pods on every node reach each other, routed and not
 * NATed, with 3 and with 10 nodes; a node deleted from the API loses its routes on the others; an agent
 * killed with SIGKILL and restarted with graceful restart drops no packet of a running ping; and a real
 * external router (gobgpd, BIRD 2) added by `lab up --external-router` learns every pod CIDR and a
 * Service's cluster IP, which it loses again when the Service is deleted. The same paths once more with the
 * agents as the DaemonSet of dist/kube-router-daemonset.yaml (configured in-cluster; the SIGKILL hits the
 * agent container, which the lab kubelet restarts).
 *
 * Each test has its own state dir and namespace prefix (`krlr<random>-`), so a user's lab (`krl-`,
 * `.lab/`) is never touched, and `lab down` runs in `finally`. Needs root, kubectl, curl, nsenter, the
 * Debian CNI plugins, busybox (ping), gobgpd and bird2.
 */
import assert from "node:assert/strict";
import { needs, run } from "../_support/netns.ts";
import {
  bgpNeighbors,
  eventually,
  k,
  netnsLeft,
  nodeMeshEstablished,
  peerLine,
  showLogTails,
} from "./_lab.ts";
import {
  agentHealthy,
  CLUSTER_ASN,
  DAEMONSET_MANIFEST,
  daemonSetAgentPid,
  execCommand,
  EXTERNAL_ROUTER_ASN,
  EXTERNAL_ROUTER_IP,
  type ExternalRouterKind,
  externalRouterRoutes,
  labDown,
  type LabState,
  labUp,
  type LearnedRoute,
  podCidrForIndex,
  REPO_ROOT,
  restartAgent,
  topology,
  type UpOptions,
} from "../../lab/mod.ts";

const REQ = {
  tools: ["ip", "kubectl", "curl", "nsenter", "busybox"],
  files: ["/usr/lib/cni/bridge", "/usr/lib/cni/host-local"],
};

async function pidsInNetns(ns: string): Promise<number> {
  const r = await run(["ip", "netns", "pids", ns], { check: false });
  return r.stdout.split(/\s+/).filter(Boolean).length;
}

/** Brings up an isolated lab, runs `fn`, and always takes the lab down; checks nothing of it is left. */
async function withLab(opts: UpOptions, fn: (state: LabState) => Promise<void>): Promise<void> {
  const id = crypto.randomUUID().slice(0, 6);
  const where = { stateDir: Deno.makeTempDirSync({ prefix: "krl-e2e-router-" }), prefix: `krlr${id}-` };
  let ok = false;
  let pids: number[] = [];
  try {
    const state = await labUp({ ...where, ...opts });
    pids = state.processes.map((p) => p.pid);
    await fn(state);
    ok = true;
  } finally {
    if (!ok) dumpLogs(where.stateDir);
    await labDown(where);
  }
  assert.deepEqual(await netnsLeft(where.prefix), [], "lab down removed every namespace of this lab");
  for (const pid of pids) {
    let alive = false;
    try {
      const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
      alive = !/\) [ZX] /.test(stat);
    } catch { /* gone */ }
    assert.equal(alive, false, `process ${pid} of the lab is gone after lab down`);
  }
}

/** On failure, shows what the lab's processes logged before `lab down` removes it. */
function dumpLogs(stateDir: string): void {
  const files = [`${stateDir}/master.log`, `${stateDir}/router/gobgp.log`, `${stateDir}/router/bird.log`];
  try {
    for (const n of Deno.readDirSync(`${stateDir}/nodes`)) {
      files.push(`${stateDir}/nodes/${n.name}/agent.log`, `${stateDir}/nodes/${n.name}/kubelet.log`);
      // With the DaemonSet, each agent logs as its pod's container.
      for (const p of Deno.readDirSync(`${stateDir}/nodes/${n.name}/pods`)) {
        if (p.isDirectory) files.push(`${stateDir}/nodes/${n.name}/pods/${p.name}/kube-router.log`);
      }
    }
  } catch { /* none */ }
  showLogTails(files, 25);
}

const podYaml = (name: string, node: string) =>
  `---
apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: default, labels: {app: web}}
spec:
  nodeName: ${node}
  containers:
  - name: netexec
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: ["netexec", "--http-port=8080"]
    ports: [{name: http, containerPort: 8080}]
`;

/** One netexec pod per node (`p1` on kube-node1 …); returns pod name -> pod IP. */
async function podPerNode(state: LabState): Promise<Map<string, string>> {
  const names = topology(state.nodes, state.prefix).nodes.map((_, i) => `p${i + 1}`);
  await k(state, ["apply", "-f", "-"], names.map((n, i) => podYaml(n, `kube-node${i + 1}`)).join(""));
  await k(state, ["wait", "--for=condition=Ready", "pod", ...names, "--timeout=120s"]);
  const pods = JSON.parse(await k(state, ["get", "pods", "-o", "json"])).items as Array<
    { metadata: { name: string }; spec: { nodeName: string }; status: { podIP: string } }
  >;
  const ips = new Map<string, string>();
  for (const p of pods) {
    const i = Number(p.metadata.name.slice(1));
    assert.equal(p.spec.nodeName, `kube-node${i}`);
    assert.ok(
      p.status.podIP?.startsWith(`10.1.${i}.`),
      `${p.metadata.name} ${p.status.podIP} in 10.1.${i}.0/24`,
    );
    ips.set(p.metadata.name, p.status.podIP);
  }
  assert.equal(ips.size, names.length);
  return ips;
}

/** The `proto 17` routes of one node as `<dst> via <gateway>`. */
async function routerRoutes(state: LabState, node: string): Promise<string[]> {
  const r = await run(execCommand(state, node, ["ip", "-j", "route", "show", "proto", "17"]));
  return (JSON.parse(r.stdout || "[]") as Array<{ dst: string; gateway?: string }>).map((x) =>
    `${x.dst} via ${x.gateway ?? "-"}`
  );
}

/** Waits until every node routes every other node's pod CIDR via that node's underlay address. */
async function waitFullMesh(state: LabState, ms = 60_000): Promise<void> {
  const nodes = topology(state.nodes, state.prefix).nodes;
  await Promise.all(
    nodes.map((h, i) =>
      eventually(`${h.name} routes every other node's pod CIDR`, async () => {
        const have = await routerRoutes(state, h.name);
        return nodes.every((o, j) => j === i || have.includes(`${podCidrForIndex(j + 1)} via ${o.ip}`));
      }, ms)
    ),
  );
}

async function curlFromPod(state: LabState, pod: string, url: string): Promise<string> {
  const r = await run(execCommand(state, `default/${pod}`, ["curl", "-s", "-m", "3", url]), { check: false });
  return r.stdout.trim();
}

/** `busybox ping` every 100 ms from `pod` to `ip`, `count` times; resolves with what it sent and got back. */
async function pingDuring(
  state: LabState,
  pod: string,
  ip: string,
  count: number,
): Promise<{ sent: number; received: number; summary: string }> {
  const cmd = execCommand(state, `default/${pod}`, [
    "busybox",
    "ping",
    "-i",
    "0.1",
    "-c",
    `${count}`,
    "-W",
    "2",
    ip,
  ]);
  const out = await new Deno.Command(cmd[0]!, { args: cmd.slice(1), stdout: "piped", stderr: "piped" })
    .output();
  const summary = new TextDecoder().decode(out.stdout).trim().split("\n").slice(-2).join(" ");
  const m = /(\d+) packets transmitted, (\d+) packets received/.exec(summary);
  if (!m) throw new Error(`ping printed no summary: ${summary} ${new TextDecoder().decode(out.stderr)}`);
  return { sent: Number(m[1]), received: Number(m[2]), summary };
}

/** Every pod curls every other pod's /hostname and /clientip; returns the failures (empty when all held). */
async function podMatrix(state: LabState, ips: Map<string, string>): Promise<string[]> {
  const failures: string[] = [];
  // Sources in parallel, each source's targets in turn: bounded concurrency on 2 cores.
  await Promise.all([...ips].map(async ([src, srcIp]) => {
    for (const [dst, dstIp] of ips) {
      if (dst === src) continue;
      const name = await curlFromPod(state, src, `http://${dstIp}:8080/hostname`);
      if (name !== dst) failures.push(`${src} -> ${dst} /hostname: got ${JSON.stringify(name)}`);
      const client = await curlFromPod(state, src, `http://${dstIp}:8080/clientip`);
      if (client.split(":")[0] !== srcIp) {
        failures.push(`${src} -> ${dst} /clientip: got ${JSON.stringify(client)}, want ${srcIp}:<port>`);
      }
    }
  }));
  return failures;
}

Deno.test({
  ...needs(
    "with 3 nodes every pod reaches every other pod unNATed, a SIGKILLed agent with graceful restart drops no packet, and a deleted node loses its routes",
    REQ,
  ),
  async fn() {
    await withLab({ nodes: 3, agentFlags: ["--bgp-graceful-restart"] }, async (state) => {
      const ips = await podPerNode(state);
      await waitFullMesh(state);
      assert.deepEqual(await podMatrix(state, ips), []);

      // Graceful restart: a ping from p1 (kube-node1) to p2 (kube-node2) every 100 ms runs while
      // kube-node2's agent is SIGKILLed and restarted, and for a few seconds after it is healthy again.
      const oldPid = state.processes.find((p) => p.role === "agent" && p.node === "kube-node2")!.pid;
      const ping = pingDuring(state, "p1", ips.get("p2")!, 150);
      await new Promise((r) => setTimeout(r, 1000));
      await restartAgent(state, "kube-node2", { kill: true });
      const newPid = state.processes.find((p) => p.role === "agent" && p.node === "kube-node2")!.pid;
      assert.notEqual(newPid, oldPid, "kube-node2 runs a new agent");
      const { sent, received, summary } = await ping;
      assert.equal(sent, 150);
      assert.equal(received, 150, `no packet lost across the agent's SIGKILL and restart: ${summary}`);
      // And once the new agent is back, the mesh is whole and traffic still flows both ways.
      await waitFullMesh(state);
      assert.equal(await curlFromPod(state, "p1", `http://${ips.get("p2")}:8080/hostname`), "p2");
      assert.equal(await curlFromPod(state, "p2", `http://${ips.get("p1")}:8080/hostname`), "p1");

      // A node deleted from the API is dropped as a peer and its pod CIDR leaves the other nodes' tables.
      await k(state, ["delete", "node", "kube-node3"]);
      for (const node of ["kube-node1", "kube-node2"]) {
        await eventually(`${node} no longer routes kube-node3's 10.1.3.0/24`, async () => {
          const have = await routerRoutes(state, node);
          return !have.some((r) => r.startsWith("10.1.3.0/24"));
        });
      }
      assert.deepEqual(await routerRoutes(state, "kube-node1"), ["10.1.2.0/24 via 192.168.1.101"]);
      assert.deepEqual(await routerRoutes(state, "kube-node2"), ["10.1.1.0/24 via 192.168.1.100"]);
      assert.equal(await curlFromPod(state, "p1", `http://${ips.get("p2")}:8080/hostname`), "p2");
    });
  },
});

Deno.test({
  ...needs(
    "without graceful restart the same SIGKILL and restart drops cross-node packets (the graceful restart test can fail)",
    REQ,
  ),
  async fn() {
    await withLab({ nodes: 2 }, async (state) => {
      const ips = await podPerNode(state);
      await waitFullMesh(state);
      const ping = pingDuring(state, "p1", ips.get("p2")!, 80);
      await new Promise((r) => setTimeout(r, 1000));
      await restartAgent(state, "kube-node2", { kill: true });
      const { sent, received } = await ping;
      assert.equal(sent, 80);
      assert.ok(
        received < sent,
        `kube-node1 withdrew kube-node2's routes while its agent was down: ${received}/${sent}`,
      );
      await waitFullMesh(state);
      assert.equal(await curlFromPod(state, "p1", `http://${ips.get("p2")}:8080/hostname`), "p2");
    });
  },
});

Deno.test({
  ...needs(
    "with graceful restart, the routes of an agent that was SIGKILLed and does not come back are kept, then removed after the restart time",
    REQ,
  ),
  async fn() {
    await withLab(
      { nodes: 2, agentFlags: ["--bgp-graceful-restart", "--bgp-graceful-restart-time=8s"] },
      async (state) => {
        await waitFullMesh(state);
        const agent = state.processes.find((p) => p.role === "agent" && p.node === "kube-node2")!;
        Deno.kill(agent.pid, "SIGKILL");
        await eventually("kube-node2's agent is gone", () => {
          try {
            return Promise.resolve(/\) [ZX] /.test(Deno.readTextFileSync(`/proc/${agent.pid}/stat`)));
          } catch {
            return Promise.resolve(true);
          }
        }, 5000);
        // kube-node1 saw the session drop (kube-node2's kernel closed the socket) and keeps the route stale.
        await eventually("kube-node1 has lost its session with kube-node2", async () => {
          const r = await bgpNeighbors(state, "kube-node1", false);
          return r.code === 0 && !peerLine("192.168.1.101", CLUSTER_ASN).test(r.stdout);
        });
        assert.deepEqual(await routerRoutes(state, "kube-node1"), ["10.1.2.0/24 via 192.168.1.101"]);
        await eventually("kube-node1 drops the stale route once the restart time is over", async () => {
          return (await routerRoutes(state, "kube-node1")).length === 0;
        });
        // A new agent brings it back.
        await restartAgent(state, "kube-node2");
        await waitFullMesh(state);
      },
    );
  },
});

Deno.test({
  ...needs("with 10 nodes every pod reaches every other pod across nodes, unNATed", REQ),
  async fn() {
    await withLab({ nodes: 10 }, async (state) => {
      const ips = await podPerNode(state);
      await waitFullMesh(state, 90_000);
      const failures = await podMatrix(state, ips);
      assert.deepEqual(failures, [], `${failures.length} of 180 checks failed`);
    });
  },
});

const SERVICE = `
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
`;

for (const kind of ["gobgp", "bird"] as ExternalRouterKind[]) {
  Deno.test({
    ...needs(
      `lab up --external-router ${kind} peers with every node, learns each pod CIDR and a Service's cluster IP, and loses the cluster IP when the Service is deleted`,
      {
        ...REQ,
        tools: [...REQ.tools, ...(kind === "gobgp" ? ["gobgpd", "gobgp"] : ["bird", "birdc"])],
      },
    ),
    async fn() {
      let routerNetns = "";
      await withLab(
        { nodes: 3, externalRouter: kind, agentFlags: ["--advertise-cluster-ip"] },
        async (state) => {
          const r = state.externalRouter!;
          assert.equal(r.kind, kind);
          assert.equal(r.ip, EXTERNAL_ROUTER_IP);
          assert.equal(r.asn, EXTERNAL_ROUTER_ASN);
          routerNetns = r.netns;
          assert.ok(state.processes.some((p) => p.role === "router"), "the router is a recorded lab process");
          const nodes = topology(state.nodes, state.prefix).nodes;
          const want = nodes.map((h, i) => `${podCidrForIndex(i + 1)} via ${h.ip}`);
          let learned: LearnedRoute[] = [];
          const show = (l: LearnedRoute[]) => l.map((x) => `${x.prefix} via ${x.nexthop}`);
          await eventually(`${kind} learns every node's pod CIDR`, async () => {
            learned = await externalRouterRoutes(r);
            return want.every((w) => show(learned).includes(w));
          }, 60_000);
          // Exactly one path per pod CIDR: from its own node, never relayed by another.
          for (const [i] of nodes.entries()) {
            assert.deepEqual(
              show(learned.filter((x) => x.prefix === podCidrForIndex(i + 1))),
              [want[i]],
            );
          }

          // The agents see the router as an established eBGP peer (`kube-router bgp neighbors`), and
          // `lab status` shows the router and its sessions.
          // (A node-to-node session may be coming back from a connection collision both sides lost.)
          await nodeMeshEstablished(state, CLUSTER_ASN);
          const neighbors = await bgpNeighbors(state, "kube-node1");
          assert.match(neighbors.stdout, peerLine(EXTERNAL_ROUTER_IP, EXTERNAL_ROUTER_ASN), neighbors.stdout);
          for (const h of nodes.slice(1)) {
            assert.match(neighbors.stdout, peerLine(h.ip, CLUSTER_ASN), neighbors.stdout);
          }
          const status = await run([
            Deno.execPath(),
            "run",
            "-A",
            `${REPO_ROOT}/lab/cli.ts`,
            "status",
            `--state-dir=${state.stateDir}`,
            `--prefix=${state.prefix}`,
          ]);
          assert.ok(
            status.stdout.includes(
              `external router: ${kind} at ${EXTERNAL_ROUTER_IP}, ASN ${EXTERNAL_ROUTER_ASN}`,
            ),
            status.stdout,
          );
          assert.match(status.stdout, /router pid \d+ running/);
          // gobgp prints "Establ" per neighbor, birdc "Established" per protocol: one per node.
          assert.equal(status.stdout.match(/Establ/g)?.length, nodes.length, status.stdout);

          await k(state, ["apply", "-f", "-"], SERVICE);
          const vip = (await k(state, ["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"])).trim();
          assert.match(vip, /^172\.16\.\d+\.\d+$/);
          await eventually(`${kind} learns ${vip}/32 from every node`, async () => {
            learned = await externalRouterRoutes(r);
            const hops = learned.filter((x) => x.prefix === `${vip}/32`).map((x) => x.nexthop).sort();
            return JSON.stringify(hops) === JSON.stringify(nodes.map((h) => h.ip).sort());
          });

          await k(state, ["delete", "service", "web"]);
          await eventually(`${kind} no longer has ${vip}/32`, async () => {
            learned = await externalRouterRoutes(r);
            return !learned.some((x) => x.prefix === `${vip}/32`);
          });
          // The pod CIDRs stay.
          assert.ok(want.every((w) => show(learned).includes(w)), show(learned).join(", "));
        },
      );
      // withLab checked the namespace and every process (the router's too) are gone; say it for the router.
      assert.ok(routerNetns.endsWith("ext-router"));
      assert.equal(await pidsInNetns(routerNetns).catch(() => 0), 0);
    },
  });
}

Deno.test({
  ...needs(
    "with the agents as the DaemonSet (in-cluster config): pods reach each other unNATed, gobgpd learns pod CIDRs and a cluster IP, a SIGKILLed agent container restarted by the kubelet drops no packet (graceful restart), a deleted node loses its routes",
    { ...REQ, tools: [...REQ.tools, "gobgpd", "gobgp"] },
  ),
  async fn() {
    await withLab(
      {
        nodes: 3,
        daemonset: DAEMONSET_MANIFEST,
        externalRouter: "gobgp",
        agentFlags: ["--advertise-cluster-ip"],
      },
      async (state) => {
        assert.ok(
          !state.processes.some((p) => p.role === "agent"),
          "no agent processes: the agents are pods",
        );
        const ips = await podPerNode(state);
        await waitFullMesh(state);
        assert.deepEqual(await podMatrix(state, ips), []);

        // The external router learns every pod CIDR from its own node, and a Service's cluster IP.
        const r = state.externalRouter!;
        const nodes = topology(state.nodes, state.prefix).nodes;
        const want = nodes.map((h, i) => `${podCidrForIndex(i + 1)} via ${h.ip}`);
        const show = (l: LearnedRoute[]) => l.map((x) => `${x.prefix} via ${x.nexthop}`);
        await eventually("gobgpd learns every node's pod CIDR", async () => {
          const learned = show(await externalRouterRoutes(r));
          return want.every((w) => learned.includes(w));
        }, 60_000);
        await k(state, ["apply", "-f", "-"], SERVICE);
        const vip = (await k(state, ["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"])).trim();
        await eventually(`gobgpd learns ${vip}/32 from every node`, async () => {
          const hops = (await externalRouterRoutes(r)).filter((x) => x.prefix === `${vip}/32`).map((x) =>
            x.nexthop
          );
          return JSON.stringify(hops.sort()) === JSON.stringify(nodes.map((h) => h.ip).sort());
        });
        await k(state, ["delete", "service", "web"]);
        await eventually(`gobgpd no longer has ${vip}/32`, async () => {
          return !(await externalRouterRoutes(r)).some((x) => x.prefix === `${vip}/32`);
        });

        // The manifest sets --bgp-graceful-restart: kube-node2's agent container is SIGKILLed while p1
        // pings p2 every 100 ms; the kubelet restarts it and no packet is lost.
        const oldPid = daemonSetAgentPid(state, "kube-node2");
        assert.ok(oldPid, "kube-node2's agent container runs");
        const ping = pingDuring(state, "p1", ips.get("p2")!, 150);
        await new Promise((r) => setTimeout(r, 1000));
        Deno.kill(oldPid, "SIGKILL");
        await eventually("the kubelet restarted kube-node2's agent container and it is healthy", async () => {
          const pid = daemonSetAgentPid(state, "kube-node2");
          return pid !== undefined && pid !== oldPid && await agentHealthy(nodes[1]!);
        }, 60_000);
        const { sent, received, summary } = await ping;
        assert.equal(sent, 150);
        assert.equal(
          received,
          150,
          `no packet lost across the agent container's SIGKILL and restart: ${summary}`,
        );
        const restarts = JSON.parse(
          await k(state, [
            "get",
            "pods",
            "-n",
            "kube-system",
            "--field-selector",
            "spec.nodeName=kube-node2",
            "-o",
            "json",
          ]),
        ).items[0].status.containerStatuses[0].restartCount;
        assert.equal(restarts, 1);
        await waitFullMesh(state);

        // A node deleted from the API loses its routes on the others.
        await k(state, ["delete", "node", "kube-node3"]);
        for (const node of ["kube-node1", "kube-node2"]) {
          await eventually(`${node} no longer routes kube-node3's 10.1.3.0/24`, async () => {
            return !(await routerRoutes(state, node)).some((x) => x.startsWith("10.1.3.0/24"));
          });
        }
        assert.equal(await curlFromPod(state, "p1", `http://${ips.get("p2")}:8080/hostname`), "p2");
      },
    );
  },
});
