/** lab/containers.ts: what the lab kubelet runs per container, and the agent container's mount script. */
import assert from "node:assert/strict";
import {
  containerEnv,
  containerProgram,
  type ContainerSpec,
  flagValue,
  imageName,
  isAgentImage,
  isKnownImage,
  netexecPorts,
} from "../../../lab/containers.ts";
import { hostPortClash, hostPorts, mountScript } from "../../../lab/kubelet.ts";
import { tailLines } from "../../../lab/apiserver/pod_logs.ts";
import type { KObject } from "../../../lab/kube_client.ts";

const pod = (containers: ContainerSpec[], extra: Record<string, unknown> = {}): KObject => ({
  metadata: { name: "p", namespace: "x", uid: "u-1", labels: { app: "a" } },
  spec: { nodeName: "kube-node2", containers, ...extra },
  status: { podIP: "10.1.2.5", hostIP: "192.168.1.101" },
});

Deno.test("agnhost netexec flags are honoured per container, in both flag spellings", () => {
  assert.deepEqual(netexecPorts({ name: "a", args: ["netexec", "--http-port=80", "--udp-port=80"] }, false), [
    "tcp:80",
    "udp:80",
  ]);
  assert.deepEqual(netexecPorts({ name: "a", args: ["netexec", "--http-port", "81"] }, false), [
    "tcp:81",
    "udp:8081",
  ]);
  assert.deepEqual(netexecPorts({ name: "a", command: ["/agnhost", "netexec"] }, true), [
    "tcp:8080",
    "udp:8081",
  ]);
});

Deno.test("agnhost serve-hostname runs raw TCP, UDP or HTTP on its --port as Kubernetes' netpol tests use it", () => {
  const sh = (args: string[]) =>
    netexecPorts({ name: "c", command: ["/agnhost", "serve-hostname", ...args] }, false);
  assert.deepEqual(sh(["--tcp", "--http=false", "--port", "80"]), ["tcpraw:80"]);
  assert.deepEqual(sh(["--udp", "--http=false", "--port", "81"]), ["udp:81"]);
  assert.deepEqual(sh([]), ["tcp:9376"]);
});

Deno.test("without agnhost arguments the declared ports are served; a lone bare container gets netexec's defaults", () => {
  const c = { name: "c", ports: [{ containerPort: 80 }, { containerPort: 53, protocol: "UDP" }] };
  assert.deepEqual(netexecPorts(c, false), ["tcp:80", "udp:53"]);
  assert.deepEqual(netexecPorts({ name: "bare" }, true), ["tcp:8080", "udp:8081"]);
  assert.deepEqual(netexecPorts({ name: "bare" }, false), []);
});

Deno.test("the kube-router image is the agent, whatever registry, tag or digest; its entrypoint is dropped", () => {
  for (
    const img of [
      "kube-router",
      "REPLACE-ME/kube-router-ts:0.1.0",
      "docker.io/cloudnativelabs/kube-router:v2.1",
      "r/kube-router@sha256:ab",
    ]
  ) {
    assert.ok(isAgentImage(img), img);
  }
  for (const img of ["registry.k8s.io/e2e-test-images/agnhost:2.53", "kube-router-tools/x:1", undefined]) {
    assert.ok(!isAgentImage(img), String(img));
  }
  const p = containerProgram(pod([]), {
    name: "kr",
    image: "x/kube-router:1",
    command: ["/usr/local/bin/kube-router"],
    args: ["--run-router=true"],
  });
  assert.deepEqual(p, { kind: "agent", args: ["--run-router=true"] });
});

Deno.test("env: values, $(VAR) expansion and downward-API fieldRefs; unsupported sources are reported", () => {
  const { env, problems } = containerEnv(
    pod([]),
    {
      name: "c",
      env: [
        { name: "NODE_NAME", valueFrom: { fieldRef: { fieldPath: "spec.nodeName" } } },
        { name: "POD_IP", valueFrom: { fieldRef: { fieldPath: "status.podIP" } } },
        { name: "APP", valueFrom: { fieldRef: { fieldPath: "metadata.labels['app']" } } },
        { name: "GREETING", value: "on $(NODE_NAME) via $(KUBERNETES_SERVICE_HOST) $(NOPE)" },
        { name: "SECRET", valueFrom: { secretKeyRef: { name: "s", key: "k" } } },
      ],
    },
    { KUBERNETES_SERVICE_HOST: "192.168.1.99" },
  );
  assert.equal(env.NODE_NAME, "kube-node2");
  assert.equal(env.POD_IP, "10.1.2.5");
  assert.equal(env.APP, "a");
  assert.equal(env.GREETING, "on kube-node2 via 192.168.1.99 $(NOPE)");
  assert.equal(env.SECRET, undefined);
  assert.deepEqual(problems, ["env SECRET: secretKeyRef is not supported by the lab kubelet"]);
});

Deno.test("flagValue reads --f=v, --f v and a bare boolean", () => {
  assert.equal(flagValue(["--port=5"], "port"), "5");
  assert.equal(flagValue(["--port", "6"], "port"), "6");
  assert.equal(flagValue(["--tcp", "--port", "6"], "tcp"), "true");
  assert.equal(flagValue(["--x"], "port"), undefined);
});

Deno.test("the mount script overlays a missing mount point's parent (never writing the host's) and binds", () => {
  const scratch = Deno.makeTempDirSync({ prefix: "krl-mnt-test-" });
  try {
    const script = mountScript([
      { source: "/tmp/sa", target: "/var/run/secrets/kubernetes.io/serviceaccount", file: false },
      { source: "/tmp/sb", target: "/var/run/secrets/other", file: false },
      { source: "/tmp/cni", target: "/tmp", file: false },
    ], `${scratch}/m`);
    const lines = script.split("\n");
    assert.equal(lines[0], "set -e");
    assert.match(lines[1]!, /^mount -t tmpfs -o mode=0755 lab-scratch '.*\/m'$/);
    const run = Deno.realPathSync("/var/run");
    // One overlay on the existing parent (/run), then mkdir inside it; none for an existing target.
    assert.equal(lines.filter((l) => l.startsWith("mount -t overlay")).length, 1);
    assert.ok(lines.some((l) => l.includes(`lowerdir=${run},`) && l.endsWith(`'${run}'`)), script);
    assert.ok(lines.includes(`mkdir -p '${run}/secrets/kubernetes.io/serviceaccount'`), script);
    assert.ok(lines.includes(`mount --bind '/tmp/cni' '/tmp'`), script);
    assert.equal(lines.at(-1), 'exec "$@" >>"$LAB_LOG" 2>&1');
  } finally {
    Deno.removeSync(scratch, { recursive: true });
  }
});

Deno.test("kubectl logs --tail keeps the last N lines", () => {
  const t = (s: string, n: number) => new TextDecoder().decode(tailLines(new TextEncoder().encode(s), n));
  assert.equal(t("a\nb\nc\n", 2), "b\nc\n");
  assert.equal(t("a\nb\nc", 2), "b\nc");
  assert.equal(t("a\nb\n", 5), "a\nb\n");
  assert.equal(t("a\n", 0), "");
});

Deno.test("host ports: declared hostPorts, every port of a hostNetwork pod, and the clash between two pods", () => {
  const a = pod([{
    name: "c",
    ports: [{ containerPort: 80, hostPort: 8080 }, { containerPort: 53, protocol: "UDP" }],
  }]);
  const b = { ...pod([{ name: "c", ports: [{ containerPort: 8080 }] }], { hostNetwork: true }) };
  b.metadata = { ...b.metadata, name: "b", uid: "u-2" };
  assert.deepEqual(hostPorts(a), ["TCP/8080"]);
  assert.deepEqual(hostPorts(b), ["TCP/8080"]);
  assert.equal(hostPortClash(b, [a]), "TCP/8080 taken by x/p");
  assert.equal(hostPortClash(a, [a]), undefined, "a pod never clashes with itself");
  const udp = pod([{ name: "c", ports: [{ containerPort: 1, hostPort: 8080, protocol: "UDP" }] }]);
  udp.metadata = { ...udp.metadata, uid: "u-3" };
  assert.equal(hostPortClash(udp, [a]), undefined, "another protocol is another port");
});

Deno.test("the lab plays only the images it knows; any other image is one it cannot run, never netexec", () => {
  const one = (c: ContainerSpec) => containerProgram(pod([c]), c);
  assert.deepEqual(one({ name: "c", image: "registry.k8s.io/e2e-test-images/agnhost:2.53" }), {
    kind: "netexec",
    ports: ["tcp:8080", "udp:8081"],
  });
  assert.deepEqual(one({ name: "c", image: "nginx" }), { kind: "netexec", ports: ["tcp:80"] });
  assert.deepEqual(
    one({ name: "c", image: "docker.io/library/nginx:1.27@sha256:ab", ports: [{ containerPort: 8080 }] }),
    {
      kind: "netexec",
      ports: ["tcp:8080"],
    },
  );
  assert.deepEqual(one({ name: "c", image: "busybox:1.36", command: ["sleep", "3600"] }), { kind: "idle" });
  assert.deepEqual(one({ name: "c", image: "registry.k8s.io/pause:3.10" }), { kind: "idle" });
  for (
    const image of ["postgres:16", "ghcr.io/x/agnhost-fork:1", "nginx-unprivileged", "localhost:5000/app"]
  ) {
    assert.ok(!isKnownImage(image), image);
    assert.deepEqual(one({ name: "c", image }), { kind: "unknown-image", image });
  }
  assert.equal(imageName("localhost:5000/team/busybox:1@sha256:x"), "busybox");
});
