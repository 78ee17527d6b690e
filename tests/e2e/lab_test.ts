/**
 * End to end: the lab cluster driven with real kubectl. Each test uses its own state dir and namespace
 * prefix (`krle<random>-`), so it never touches a lab a user has up (default prefix `krl-`, state `.lab/`).
 * Needs root, kubectl, curl, nsenter and the Debian CNI plugins.
 */
import assert from "node:assert/strict";
import { needs, run } from "../_support/netns.ts";
import { eventually, k, netnsLeft, showLogTails } from "./_lab.ts";
import {
  addExternalHost,
  execCommand,
  ipInCidr,
  labDown,
  LabError,
  type LabState,
  labUp,
  podNetns,
  readState,
  restartAgent,
} from "../../lab/mod.ts";

const REQ = {
  tools: ["ip", "kubectl", "curl", "nsenter", "nft", "bash"],
  files: ["/usr/lib/cni/bridge", "/usr/lib/cni/host-local"],
};

function isolated(): { stateDir: string; prefix: string } {
  const id = crypto.randomUUID().slice(0, 6);
  return { stateDir: Deno.makeTempDirSync({ prefix: "krl-e2e-state-" }), prefix: `krle${id}-` };
}

/** What the host's own network looks like: must be identical before `lab up` and after `lab down`. */
async function hostSnapshot(): Promise<Record<string, string>> {
  const netns = (await run(["ip", "netns", "list"])).stdout.split("\n")
    // Other test files create throwaway krt-* namespaces and other labs (krl*) concurrently; each test
    // checks separately that none of its own prefix is left.
    .filter((l) => l.trim() && !/^kr[lt]/.test(l)).map((l) => l.split(" ")[0]).sort().join("\n");
  return {
    netns,
    link: (await run(["ip", "-o", "link", "show"])).stdout.replace(/\s+link\/.*$/gm, ""),
    addr: (await run(["ip", "-o", "addr", "show"])).stdout,
    route: (await run(["ip", "route", "show", "table", "all"])).stdout,
    nft: (await run(["nft", "list", "ruleset"])).stdout,
    // host-local keeps its leases under the lab's state dir, never in /var/lib/cni.
    varLibCni: (await run(["sh", "-c", "find /var/lib/cni 2>/dev/null | sort"], { check: false })).stdout,
  };
}

/** On failure, shows what the lab's processes logged before `lab down` removes it. */
function dumpLogs(stateDir: string): void {
  const files = [`${stateDir}/master.log`];
  try {
    for (const n of Deno.readDirSync(`${stateDir}/nodes`)) {
      files.push(`${stateDir}/nodes/${n.name}/kubelet.log`, `${stateDir}/nodes/${n.name}/agent.log`);
    }
  } catch { /* none */ }
  showLogTails(files, 30);
}

/** Runs `fn`, showing the lab's logs if it fails, and always takes the lab at `where` down. */
async function dumpingLogs(
  where: { stateDir: string; prefix: string },
  fn: () => Promise<void>,
): Promise<void> {
  try {
    await fn();
  } catch (e) {
    dumpLogs(where.stateDir);
    throw e;
  } finally {
    await labDown(where);
  }
}

const MANIFEST = `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec:
  nodeName: kube-node1
  containers:
  - name: netexec
    image: agnhost
    ports: [{name: http, containerPort: 8080}, {name: udp, containerPort: 8081, protocol: UDP}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-2, namespace: shop, labels: {app: web}}
spec:
  nodeName: kube-node1
  containers:
  - name: netexec
    image: agnhost
    ports: [{name: http, containerPort: 8080}, {name: udp, containerPort: 8081, protocol: UDP}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-3, namespace: shop, labels: {app: web}}
spec:
  nodeName: kube-node2
  containers:
  - name: netexec
    image: agnhost
    ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: shop, labels: {app: db}}
spec:
  containers:
  - name: netexec
    image: agnhost
    ports: [{containerPort: 5432}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
`;

async function sliceState(state: LabState): Promise<string> {
  const out = await k(state, [
    "get",
    "endpointslices",
    "-n",
    "shop",
    "-l",
    "kubernetes.io/service-name=web",
    "-o",
    "jsonpath={range .items[*].endpoints[*]}{.targetRef.name}={.conditions.ready}/{.conditions.serving}/{.conditions.terminating}/{.nodeName} {end}",
  ]);
  return out.trim().split(" ").filter(Boolean).sort().join(" ");
}

Deno.test({
  ...needs(
    "the lab runs pods on real CNI, same-node pods talk, EndpointSlices follow them, and down restores the host",
    REQ,
  ),
  async fn() {
    const where = isolated();
    const before = await hostSnapshot();
    try {
      const state = await labUp({ ...where, nodes: 3 });
      assert.equal(state.phase, "up");

      // A second `up` on the same state dir, or with the same prefix, is refused, not half-built.
      await assert.rejects(() => labUp(where), LabError);
      const other = Deno.makeTempDirSync({ prefix: "krl-e2e-other-" });
      try {
        await assert.rejects(() => labUp({ prefix: where.prefix, stateDir: other }), /already exist/);
      } finally {
        Deno.removeSync(other, { recursive: true });
      }

      const nodes = JSON.parse(await k(state, ["get", "nodes", "-o", "json"])).items;
      assert.deepEqual(
        nodes.map((n: { metadata: { name: string }; spec: { podCIDR: string } }) =>
          `${n.metadata.name}=${n.spec.podCIDR}`
        ).sort(),
        ["kube-node1=10.1.1.0/24", "kube-node2=10.1.2.0/24", "kube-node3=10.1.3.0/24"],
      );

      await k(state, ["apply", "-f", "-"], MANIFEST);
      await k(state, ["wait", "-n", "shop", "--for=condition=Ready", "pod", "--all", "--timeout=120s"]);
      const pods = JSON.parse(await k(state, ["get", "pods", "-n", "shop", "-o", "json"])).items as Array<
        { metadata: { name: string }; spec: { nodeName: string }; status: { podIP: string; phase: string } }
      >;
      const cidrOf = Object.fromEntries(
        nodes.map((
          n: { metadata: { name: string }; spec: { podCIDR: string } },
        ) => [n.metadata.name, n.spec.podCIDR]),
      );
      const ip: Record<string, string> = {};
      for (const p of pods) {
        assert.equal(p.status.phase, "Running", p.metadata.name);
        assert.ok(p.spec.nodeName, `${p.metadata.name} was scheduled`);
        assert.ok(
          ipInCidr(p.status.podIP, cidrOf[p.spec.nodeName]),
          `${p.metadata.name} ${p.status.podIP} in ${cidrOf[p.spec.nodeName]}`,
        );
        ip[p.metadata.name] = p.status.podIP;
      }

      // Same-node pods reach each other's netexec over kube-bridge, TCP and UDP, without NAT.
      const inPod = (pod: string, cmd: string[]) =>
        run(execCommand(state, `shop/${pod}`, cmd), { check: false });
      assert.equal(
        (await inPod("web-1", ["curl", "-s", "-m", "5", `http://${ip["web-2"]}:8080/hostname`])).stdout,
        "web-2",
      );
      assert.equal(
        (await inPod("web-2", ["curl", "-s", "-m", "5", `http://${ip["web-1"]}:8080/hostname`])).stdout,
        "web-1",
      );
      const clientIp =
        (await inPod("web-1", ["curl", "-s", "-m", "5", `http://${ip["web-2"]}:8080/clientip`])).stdout;
      assert.equal(clientIp.split(":")[0], ip["web-1"]);
      const udp = await inPod("web-1", [
        "bash",
        "-c",
        `exec 3<>/dev/udp/${ip["web-2"]}/8081; printf hostname >&3; timeout 3 head -c 5 <&3`,
      ]);
      assert.equal(udp.stdout, "web-2");

      // EndpointSlices: every web pod ready, then follow readiness and deletion.
      await eventually(
        "three ready web endpoints",
        async () =>
          (await sliceState(state)) ===
            "web-1=true/true/false/kube-node1 web-2=true/true/false/kube-node1 web-3=true/true/false/kube-node2",
      );
      await k(state, ["annotate", "pod", "-n", "shop", "web-2", "lab.kube-router.io/ready=false"]);
      await eventually(
        "web-2 turns not ready",
        async () => (await sliceState(state)).includes("web-2=false/false/false/kube-node1"),
      );
      await k(state, ["annotate", "pod", "-n", "shop", "web-2", "lab.kube-router.io/ready-"]);
      await eventually(
        "web-2 is ready again",
        async () => (await sliceState(state)).includes("web-2=true/true/false/kube-node1"),
      );

      // A crashed pod process turns the pod not ready, then the kubelet restarts it.
      const web2Ns = podNetns(state, "shop", "web-2")!;
      for (const pid of (await run(["ip", "netns", "pids", web2Ns])).stdout.split(/\s+/).filter(Boolean)) {
        Deno.kill(Number(pid), "SIGKILL");
      }
      await eventually(
        "web-2 turns not ready after its process died",
        async () => (await sliceState(state)).includes("web-2=false/false/false/kube-node1"),
      );
      await eventually(
        "web-2 is restarted and ready again",
        async () => (await sliceState(state)).includes("web-2=true/true/false/kube-node1"),
      );
      assert.equal(
        (await k(state, [
          "get",
          "pod",
          "-n",
          "shop",
          "web-2",
          "-o",
          "jsonpath={.status.containerStatuses[0].restartCount}",
        ])).trim(),
        "1",
      );
      assert.equal(
        (await inPod("web-1", ["curl", "-s", "-m", "5", `http://${ip["web-2"]}:8080/hostname`])).stdout,
        "web-2",
      );

      const web3Ns = podNetns(state, "shop", "web-3");
      assert.ok(web3Ns, "web-3 has a recorded namespace");
      // Graceful deletion: web-3 keeps serving for 3 s (Terminating), then the kubelet removes it.
      await k(state, ["annotate", "pod", "-n", "shop", "web-3", "lab.kube-router.io/terminate-after=3"]);
      await k(state, ["delete", "pod", "-n", "shop", "web-3", "--wait=false"]);
      await eventually(
        "web-3 is a terminating, still serving endpoint",
        async () => (await sliceState(state)).includes("web-3=false/true/true/kube-node2"),
      );
      // Still serving while terminating: its node reaches it over kube-bridge.
      const fromNode2 = () =>
        run(
          execCommand(state, "kube-node2", ["curl", "-s", "-m", "3", `http://${ip["web-3"]}:8080/hostname`]),
          { check: false },
        );
      assert.equal((await fromNode2()).stdout, "web-3");
      await eventually("web-3 leaves the slice", async () => !(await sliceState(state)).includes("web-3"));
      await eventually(
        "web-3 is gone from the API",
        async () => !(await k(state, ["get", "pods", "-n", "shop", "-o", "name"])).includes("web-3"),
      );
      await eventually(
        "web-3's namespace is removed",
        async () => !(await run(["ip", "netns", "list"])).stdout.includes(web3Ns!),
      );

      // The kubelet survives an agent restart: pods keep running and answering.
      await restartAgent(state, "kube-node1");
      assert.equal(
        (await inPod("web-1", ["curl", "-s", "-m", "5", `http://${ip["web-2"]}:8080/hostname`])).stdout,
        "web-2",
      );
    } catch (e) {
      dumpLogs(where.stateDir);
      throw e;
    } finally {
      const report = await labDown(where);
      assert.ok(report.removedStateDir);
    }
    const after = await hostSnapshot();
    assert.deepEqual(after, before);
    const leftovers = await netnsLeft(where.prefix);
    assert.deepEqual(leftovers, []);
  },
});

Deno.test({
  ...needs("lab down cleans up after lab up was killed with SIGKILL halfway", REQ),
  async fn() {
    const where = isolated();
    const before = await hostSnapshot();
    const cli = new URL("../../lab/cli.ts", import.meta.url).pathname;
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        cli,
        "up",
        "--no-agents",
        "--nodes",
        "2",
        `--state-dir=${where.stateDir}`,
        `--prefix=${where.prefix}`,
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      // Kill it once the detached lab master runs (so `down` must stop a process `up` left behind).
      await eventually(
        "lab up started the lab master",
        () => Promise.resolve((readState(where.stateDir)?.processes.length ?? 0) > 0),
        30_000,
      );
      child.kill("SIGKILL");
      await child.status;
      assert.ok(readState(where.stateDir), "the state was recorded before the kill");
      // Refused while the remains are there.
      await assert.rejects(() => labUp(where), LabError);
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* already dead */ }
      await labDown(where);
    }
    assert.deepEqual(await hostSnapshot(), before);
    assert.deepEqual(
      await netnsLeft(where.prefix),
      [],
    );
    // The master (if it started) is gone too: nothing runs with this state dir on its command line.
    const ps = await run(["ps", "-eo", "args"]);
    assert.ok(!ps.stdout.includes(where.stateDir), "no lab process is left");
  },
});

Deno.test({
  ...needs(
    "a conflist with portmap runs each plugin in order, DEL removes the hostPort rules, hostNetwork pods use the node",
    {
      ...REQ,
      files: [...REQ.files, "/usr/lib/cni/portmap"],
      tools: [...REQ.tools, "iptables"],
    },
  ),
  async fn() {
    const where = isolated();
    await dumpingLogs(where, async () => {
      // cni=agent: the lab writes no conf and uses what it finds, as when the router module provides one.
      const state = await labUp({ ...where, nodes: 2, agents: false, cni: "agent" });
      Deno.writeTextFileSync(
        `${where.stateDir}/nodes/kube-node1/cni/10-kuberouter.conflist`,
        JSON.stringify({
          cniVersion: "0.3.0",
          name: "mynet",
          plugins: [
            {
              name: "kubernetes",
              type: "bridge",
              bridge: "kube-bridge",
              isDefaultGateway: true,
              hairpinMode: true,
              ipam: { type: "host-local", ranges: [[{ subnet: "10.1.1.0/24" }]] },
            },
            { type: "portmap", capabilities: { snat: true, portMappings: true } },
          ],
        }),
      );
      await k(
        state,
        ["apply", "-f", "-"],
        `apiVersion: v1
kind: Pod
metadata: {name: hostport, namespace: default}
spec:
  nodeName: kube-node1
  containers:
  - {name: c, image: agnhost, ports: [{containerPort: 8080, hostPort: 30080}]}
`,
      );
      await k(state, ["wait", "--for=condition=Ready", "pod/hostport", "--timeout=60s"]);
      const viaHostPort = await run(
        execCommand(state, "kube-node2", ["curl", "-s", "-m", "5", "http://192.168.1.100:30080/hostname"]),
        {
          check: false,
        },
      );
      assert.equal(viaHostPort.stdout, "hostport");
      // …and from a machine outside the cluster, added to the underlay.
      await addExternalHost(state, "client", "192.168.1.10");
      const fromOutside = await run(
        execCommand(state, "client", ["curl", "-s", "-m", "5", "http://192.168.1.100:30080/hostname"]),
        { check: false },
      );
      assert.equal(fromOutside.stdout, "hostport");
      await assert.rejects(() => addExternalHost(state, "clash", "192.168.1.100"), LabError);
      const rules = async () =>
        (await run(execCommand(state, "kube-node1", ["nft", "list", "ruleset"]))).stdout;
      assert.match(await rules(), /dport 30080/);
      await k(state, ["delete", "pod", "hostport", "--wait=true"]);
      await eventually("portmap's DNAT rule is gone", async () => !/dport 30080/.test(await rules()));
      // A hostNetwork pod shares its node's namespace and address; deleting it leaves the node alone.
      await k(
        state,
        ["apply", "-f", "-"],
        `apiVersion: v1
kind: Pod
metadata: {name: onhost, namespace: default}
spec:
  nodeName: kube-node2
  hostNetwork: true
  containers:
  - {name: c, image: agnhost, ports: [{containerPort: 9376}]}
`,
      );
      await k(state, ["wait", "--for=condition=Ready", "pod/onhost", "--timeout=60s"]);
      assert.equal(
        (await k(state, ["get", "pod", "onhost", "-o", "jsonpath={.status.podIP}"])).trim(),
        "192.168.1.101",
      );
      const viaNode = await run(
        execCommand(state, "kube-node1", ["curl", "-s", "-m", "5", "http://192.168.1.101:9376/hostname"]),
        {
          check: false,
        },
      );
      assert.equal(viaNode.stdout, "onhost");
      await k(state, ["delete", "pod", "onhost", "--wait=true"]);
      await eventually(
        "the hostNetwork pod's process is gone",
        async () =>
          (await run(
            execCommand(state, "kube-node1", ["curl", "-s", "-m", "2", "http://192.168.1.101:9376/hostname"]),
            {
              check: false,
            },
          )).code !== 0,
      );
      assert.ok(
        (await run(["ip", "netns", "list"])).stdout.includes(`${where.prefix}node2`),
        "the node namespace stays",
      );

      // host-local released the address (DEL runs portmap first, then bridge): no lease file is left.
      await eventually("host-local released the lease", () => {
        const leases = [...Deno.readDirSync(`${where.stateDir}/nodes/kube-node1/cni-ipam/mynet`)].map((e) =>
          e.name
        );
        return Promise.resolve(!leases.some((n) => /^\d+\.\d+\.\d+\.\d+$/.test(n)));
      });
    });
    assert.deepEqual(
      await netnsLeft(where.prefix),
      [],
    );
  },
});

Deno.test({
  ...needs("a 160-node lab widens the underlay to a /16 and every node reaches the master", REQ),
  async fn() {
    const where = isolated();
    await dumpingLogs(where, async () => {
      const state = await labUp({ ...where, nodes: 160, agents: false });
      const nodes = JSON.parse(await k(state, ["get", "nodes", "-o", "json"])).items as Array<
        {
          metadata: { name: string };
          spec: { podCIDR: string };
          status: { addresses: Array<{ type: string; address: string }> };
        }
      >;
      assert.equal(nodes.length, 160);
      const byName = new Map(nodes.map((n) => [n.metadata.name, n]));
      for (
        const [name, ip, cidr] of [
          ["kube-node1", "192.168.1.100", "10.1.1.0/24"],
          ["kube-node155", "192.168.1.254", "10.1.155.0/24"],
          ["kube-node156", "192.168.1.255", "10.1.156.0/24"],
          ["kube-node160", "192.168.2.3", "10.1.160.0/24"],
        ]
      ) {
        const n = byName.get(name!)!;
        assert.equal(n.status.addresses.find((a) => a.type === "InternalIP")?.address, ip, name);
        assert.equal(n.spec.podCIDR, cidr, name);
      }
      assert.equal(new Set(nodes.map((n) => n.spec.podCIDR)).size, 160);
      for (const node of ["kube-node1", "kube-node156", "kube-node160"]) {
        const r = await run(
          execCommand(state, node, [
            "curl",
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-m",
            "5",
            "https://192.168.1.99:6443/version",
          ]),
          { check: false },
        );
        assert.match(r.stdout, /^[1-5]\d\d$/, `${node} reaches the API server`);
      }
    });
    assert.deepEqual(
      await netnsLeft(where.prefix),
      [],
    );
  },
});

Deno.test({
  ...needs(
    "with --cni auto and an agent that writes no CNI conf, the lab writes kube-router's conf itself",
    REQ,
  ),
  async fn() {
    const where = isolated();
    await dumpingLogs(where, async () => {
      const state = await labUp({
        ...where,
        nodes: 1,
        agentFlags: ["--enable-cni=false"],
        cni: "auto",
        cniWaitSeconds: 1,
      });
      await k(
        state,
        ["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: solo}\nspec:\n  containers: [{name: c, image: agnhost}]\n",
      );
      await k(state, ["wait", "--for=condition=Ready", "pod/solo", "--timeout=60s"]);
      const ip = (await k(state, ["get", "pod", "solo", "-o", "jsonpath={.status.podIP}"])).trim();
      assert.ok(ipInCidr(ip, "10.1.1.0/24"), ip);
      const conf = JSON.parse(
        Deno.readTextFileSync(`${where.stateDir}/nodes/kube-node1/cni/10-kuberouter.conflist`),
      );
      assert.equal(conf.plugins[0].bridge, "kube-bridge");
      assert.deepEqual(conf.plugins[0].ipam.ranges, [[{ subnet: "10.1.1.0/24" }]]);
      assert.match(
        Deno.readTextFileSync(`${where.stateDir}/nodes/kube-node1/kubelet.log`),
        /the lab wrote its own/,
      );
      // The pod answers from its node over kube-bridge.
      const r = await run(
        execCommand(state, "kube-node1", ["curl", "-s", "-m", "5", `http://${ip}:8080/hostname`]),
        {
          check: false,
        },
      );
      assert.equal(r.stdout, "solo");
    });
  },
});
