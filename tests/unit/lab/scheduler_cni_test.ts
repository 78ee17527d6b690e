import assert from "node:assert/strict";
import {
  defaultCniMode,
  hasIpamRange,
  type KObject,
  labNetworkConfig,
  loadNetworkConfig,
  netexecPorts,
  pickNode,
  resultIPs,
  splitFlags,
} from "../../../lab/mod.ts";

const node = (name: string, ready = true): KObject => ({
  metadata: { name },
  status: { conditions: [{ type: "Ready", status: ready ? "True" : "False" }] },
});
const podOn = (n: string): KObject => ({
  metadata: { name: `p-${n}-${Math.random()}` },
  spec: { nodeName: n },
});

Deno.test("the scheduler picks the least loaded Ready node, lowest name on ties", () => {
  const nodes = [node("kube-node10"), node("kube-node2"), node("kube-node1"), node("kube-node3", false)];
  assert.equal(pickNode(nodes, []), "kube-node1");
  assert.equal(pickNode(nodes, [podOn("kube-node1")]), "kube-node2");
  assert.equal(pickNode(nodes, [podOn("kube-node1"), podOn("kube-node2")]), "kube-node10");
  assert.equal(pickNode([node("a", false)], []), undefined);
});

Deno.test("the scheduler places a pod only where its nodeSelector, node affinity and tolerations let it", () => {
  const labelled = (name: string, labels: Record<string, string>, taints: unknown[] = []): KObject => ({
    ...node(name),
    metadata: { name, labels },
    spec: { taints },
  });
  const nodes = [
    labelled("a", { disk: "hdd" }),
    labelled("b", { disk: "ssd" }, [{ key: "dedicated", value: "db", effect: "NoSchedule" }]),
    labelled("c", { disk: "ssd" }),
  ];
  const pod = (spec: Record<string, unknown>): KObject => ({ metadata: { name: "p" }, spec });
  assert.equal(pickNode(nodes, [], pod({})), "a");
  assert.equal(
    pickNode(nodes, [], pod({ nodeSelector: { disk: "ssd" } })),
    "c",
    "b's taint is not tolerated",
  );
  const tolerant = pod({
    nodeSelector: { disk: "ssd" },
    tolerations: [{ key: "dedicated", operator: "Equal", value: "db" }],
  });
  assert.equal(pickNode(nodes, [podOn("c")], tolerant), "b");
  assert.equal(
    pickNode(nodes, [], pod({ nodeSelector: { disk: "nvme" } })),
    undefined,
    "no node fits: it stays Pending",
  );
  const affinity = {
    nodeAffinity: {
      requiredDuringSchedulingIgnoredDuringExecution: {
        nodeSelectorTerms: [{ matchExpressions: [{ key: "disk", operator: "NotIn", values: ["ssd"] }] }],
      },
    },
  };
  assert.equal(pickNode(nodes, [podOn("a")], pod({ affinity })), "a");
});

Deno.test("the lab's CNI conf is kube-router's bridge + host-local over the pod CIDR", () => {
  const c = labNetworkConfig(["10.1.1.0/24"]);
  const p = c.plugins[0];
  assert.equal(p.type, "bridge");
  assert.equal(p.bridge, "kube-bridge");
  assert.equal(p.isDefaultGateway, true);
  assert.equal(p.hairpinMode, true);
  assert.deepEqual(p.ipam, { type: "host-local", ranges: [[{ subnet: "10.1.1.0/24" }]] });
  assert.ok(hasIpamRange(c));
  assert.ok(
    !hasIpamRange({
      cniVersion: "0.3.0",
      name: "x",
      plugins: [{ type: "bridge", ipam: { type: "host-local" } }],
    }),
  );
});

Deno.test("the first valid conf file in lexical order is used, single confs become lists", () => {
  const dir = Deno.makeTempDirSync({ prefix: "krl-cni-" });
  try {
    assert.equal(loadNetworkConfig(dir), undefined);
    Deno.writeTextFileSync(
      `${dir}/20-b.conf`,
      JSON.stringify({ cniVersion: "0.4.0", name: "b", type: "bridge" }),
    );
    Deno.writeTextFileSync(`${dir}/05-broken.conflist`, "{ not json");
    Deno.writeTextFileSync(`${dir}/README`, "ignored");
    const got = loadNetworkConfig(dir)!;
    assert.equal(got.path, `${dir}/20-b.conf`);
    assert.deepEqual(got.list, {
      cniVersion: "0.4.0",
      name: "b",
      plugins: [{ cniVersion: "0.4.0", name: "b", type: "bridge" }],
    });
    Deno.writeTextFileSync(
      `${dir}/10-a.conflist`,
      JSON.stringify({ cniVersion: "1.0.0", name: "a", plugins: [{ type: "bridge" }, { type: "portmap" }] }),
    );
    assert.deepEqual(loadNetworkConfig(dir)!.list.plugins.map((p) => p.type), ["bridge", "portmap"]);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("pod IPs are read from a CNI result without their prefix length", () => {
  assert.deepEqual(resultIPs({ ips: [{ address: "10.1.1.5/24" }, { address: "fd00::5/64" }] }), [
    "10.1.1.5",
    "fd00::5",
  ]);
  assert.deepEqual(resultIPs(undefined), []);
});

Deno.test("netexec listens on the pod's declared ports, or agnhost's defaults", () => {
  assert.deepEqual(netexecPorts({ metadata: { name: "p" }, spec: { containers: [{ name: "c" }] } }), [
    "tcp:8080",
    "udp:8081",
  ]);
  assert.deepEqual(
    netexecPorts({
      metadata: { name: "p" },
      spec: {
        containers: [{ name: "c", ports: [{ containerPort: 80 }, { containerPort: 53, protocol: "UDP" }] }, {
          name: "d",
          ports: [{ containerPort: 80, protocol: "TCP" }, { containerPort: 9, protocol: "SCTP" }],
        }],
      },
    }),
    ["tcp:80", "udp:53"],
  );
});

Deno.test("--agent-flags is split like a shell would for simple quoting", () => {
  assert.deepEqual(splitFlags(`--v=2  --peer-router-ips="1.1.1.1" '--x=a b'`), [
    "--v=2",
    "--peer-router-ips=1.1.1.1",
    "--x=a b",
  ]);
  assert.deepEqual(splitFlags(""), []);
});

Deno.test("the agents' router writes the CNI conf unless agents are off or run without router or CNI", () => {
  assert.equal(defaultCniMode(true, []), "agent");
  assert.equal(defaultCniMode(false, []), "lab");
  assert.equal(defaultCniMode(true, ["--enable-cni=false"]), "lab");
  assert.equal(defaultCniMode(true, ["--run-router", "false"]), "lab");
  assert.equal(defaultCniMode(true, ["--enable-cni=true", "--v=2"]), "agent");
});
