/**
 * End to end: the lab kubelet as the firewall's and the DaemonSet's tests need it. Pods with several
 * containers each serving their own ports (agnhost netexec and serve-hostname arguments), pinned with
 * nodeName; `kubectl logs`; nodes with a default route that keeps packets inside the lab; a dozen
 * concurrent `lab exec`; a hostNetwork pod of the kube-router image running the agent through in-cluster
 * configuration, restarted when its liveness probe fails. Bad input answered as a real cluster answers it:
 * a host port clash and an image the lab cannot run (status and events in `kubectl describe`), an unknown
 * field (kube-apiserver's strict decoding error). Needs root, kubectl, curl, nsenter, bash and the Debian
 * CNI plugins.
 */
import assert from "node:assert/strict";
import { needs, run } from "../_support/netns.ts";
import { eventually, k, showLogTails } from "./_lab.ts";
import { execCommand, kubectl, labDown, type LabState, labUp, nodeDir, readState } from "../../lab/mod.ts";

const REQ = {
  tools: ["ip", "kubectl", "curl", "nsenter", "bash"],
  files: ["/usr/lib/cni/bridge", "/usr/lib/cni/host-local"],
};
const cli = new URL("../../lab/cli.ts", import.meta.url).pathname;

const PODS = `
apiVersion: v1
kind: Pod
metadata: {name: multi, namespace: default}
spec:
  nodeName: kube-node2
  containers:
  - name: c80
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: ["netexec", "--http-port=80", "--udp-port=80"]
  - name: c81
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    command: ["/agnhost", "serve-hostname", "--tcp", "--http=false", "--port", "81"]
  - name: c82
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    command: ["/agnhost", "serve-hostname", "--udp", "--http=false", "--port", "82"]
`;

const AGENT_POD = `
apiVersion: v1
kind: Pod
metadata: {name: kube-router-node1, namespace: kube-system, labels: {k8s-app: kube-router}}
spec:
  nodeName: kube-node1
  serviceAccountName: kube-router
  hostNetwork: true
  containers:
  - name: kube-router
    image: example.org/kube-router-ts:0.1.0
    args: [--run-router=true, --run-firewall=false, --run-service-proxy=false, --service-cluster-ip-range=172.16.0.0/16]
    env:
    - name: NODE_NAME
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    - name: KUBE_ROUTER_CNI_CONF_FILE
      value: /etc/cni/net.d/10-kuberouter.conflist
    livenessProbe:
      httpGet: {path: /healthz, port: 20244}
      initialDelaySeconds: 5
      periodSeconds: 2
      failureThreshold: 2
    volumeMounts:
    - {name: cni-conf-dir, mountPath: /etc/cni/net.d}
  volumes:
  - name: cni-conf-dir
    hostPath: {path: /etc/cni/net.d}
`;

async function inNs(state: LabState, target: string, cmd: string[]): Promise<string> {
  return (await run(execCommand(state, target, cmd), { check: false })).stdout;
}

function exists(p: string): boolean {
  try {
    Deno.lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  ...needs(
    "the lab kubelet runs multi-container pods, serves kubectl logs, routes nodes by default, takes a dozen concurrent lab exec and runs the agent as a pod",
    REQ,
  ),
  async fn(t) {
    const id = crypto.randomUUID().slice(0, 6);
    const where = { stateDir: Deno.makeTempDirSync({ prefix: "krl-e2e-kubelet-" }), prefix: `krlk${id}-` };
    const hostHad = { secrets: exists("/run/secrets"), cni: exists("/etc/cni") };
    try {
      const state = await labUp({ ...where, nodes: 2, agents: false });

      await t.step("each container of a pinned pod serves its own ports: HTTP, raw TCP and UDP", async () => {
        await k(state, ["apply", "-f", "-"], PODS);
        await k(state, ["wait", "--for=condition=Ready", "pod/multi", "--timeout=60s"]);
        const pod = JSON.parse(await k(state, ["get", "pod", "multi", "-o", "json"]));
        assert.equal(pod.spec.nodeName, "kube-node2");
        assert.deepEqual(pod.status.containerStatuses.map((c: { ready: boolean }) => c.ready), [
          true,
          true,
          true,
        ]);
        const ip = pod.status.podIP as string;
        assert.equal(
          await inNs(state, "kube-node2", ["curl", "-s", "-m", "3", `http://${ip}:80/hostname`]),
          "multi",
        );
        assert.equal(
          await inNs(state, "kube-node2", ["curl", "-s", "-m", "3", `telnet://${ip}:81`]),
          "multi",
        );
        for (const port of [80, 82]) {
          const udp = `exec 3<>/dev/udp/${ip}/${port}; echo hostname >&3; timeout 2 cat <&3`;
          assert.equal(await inNs(state, "kube-node2", ["bash", "-c", udp]), "multi", `udp ${port}`);
        }
        // Port 81 is c81's raw TCP only: no HTTP there, no UDP on 81.
        assert.notEqual(
          await inNs(state, "kube-node2", ["curl", "-s", "-m", "2", `http://${ip}:81/hostname`]),
          "multi",
        );
      });

      await t.step(
        "kubectl logs shows one container's output; several containers need -c, as kube-apiserver says",
        async () => {
          assert.match(await k(state, ["logs", "multi", "-c", "c80"]), /^ready$/m);
          const r = await run([
            "ip",
            "netns",
            "exec",
            `${state.prefix}master`,
            "curl",
            "-sk",
            "-H",
            `Authorization: Bearer ${Deno.readTextFileSync(`${state.stateDir}/apiserver/token`).trim()}`,
            "https://127.0.0.1:6443/api/v1/namespaces/default/pods/multi/log",
          ], { check: false });
          assert.match(
            r.stdout,
            /a container name must be specified for pod multi, choose one of: \[c80 c81 c82\]/,
          );
        },
      );

      await t.step(
        "a node routes by default towards the master, so a cluster IP never leaves the lab",
        async () => {
          assert.match(
            await inNs(state, "kube-node1", ["ip", "route", "show", "default"]),
            /default via 192\.168\.1\.99 dev eth0/,
          );
          assert.match(
            await inNs(state, "kube-node1", ["ip", "route", "get", "172.16.0.1"]),
            /via 192\.168\.1\.99 dev eth0/,
          );
          // No service proxy runs: the master answers unreachable at once rather than the packet leaving.
          const r = await run(
            execCommand(state, "kube-node1", ["curl", "-s", "-m", "3", "http://172.16.0.1/"]),
            { check: false },
          );
          assert.equal(r.code, 7, `curl exit ${r.code}: refused/unreachable, not a timeout (28)`);
        },
      );

      await t.step("a dozen concurrent lab exec all answer", async () => {
        const pod = JSON.parse(await k(state, ["get", "pod", "multi", "-o", "json"]));
        const runs = await Promise.all(
          Array.from({ length: 12 }, (_, i) =>
            run([
              Deno.execPath(),
              "run",
              "-A",
              cli,
              "exec",
              i % 2 ? "default/multi" : "kube-node2",
              `--state-dir=${state.stateDir}`,
              `--prefix=${state.prefix}`,
              "--",
              "curl",
              "-s",
              "-m",
              "5",
              `http://${pod.status.podIP}:80/hostname`,
            ], { check: false })),
        );
        assert.deepEqual(runs.map((r) => `${r.code} ${r.stdout}`), Array(12).fill("0 multi"));
      });

      await t.step(
        "a hostNetwork pod of the kube-router image runs the agent through in-cluster config",
        async () => {
          // The manifest's ServiceAccount, ClusterRole and binding: the pod's token is that account's, and
          // the API server enforces RBAC for it.
          const manifest = Deno.readTextFileSync(
            new URL("../../dist/kube-router-daemonset.yaml", import.meta.url),
          );
          const rbac = manifest.split(/^---$/m).filter((d) =>
            /kind: (ServiceAccount|ClusterRole|ClusterRoleBinding)\n/.test(d)
          );
          assert.equal(rbac.length, 3, "the manifest has a ServiceAccount, a ClusterRole and its binding");
          await k(state, ["apply", "--validate=false", "-f", "-"], rbac.join("---\n"));
          await k(state, ["apply", "-f", "-"], AGENT_POD);
          await k(state, [
            "wait",
            "-n",
            "kube-system",
            "--for=condition=Ready",
            "pod/kube-router-node1",
            "--timeout=60s",
          ]);
          const pod = JSON.parse(
            await k(state, ["get", "pod", "-n", "kube-system", "kube-router-node1", "-o", "json"]),
          );
          assert.equal(pod.status.podIP, "192.168.1.100");
          await eventually(
            "the agent answers /healthz 200 on the node",
            async () =>
              (await inNs(state, "kube-node1", [
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-m",
                "2",
                "http://127.0.0.1:20244/healthz",
              ])) === "200",
            60_000,
          );
          // Its CNI conf lands in the node's CNI dir through the hostPath mount, not in the host's /etc.
          await eventually(
            "the agent wrote the node's CNI conf through its hostPath mount",
            () =>
              Promise.resolve(exists(`${nodeDir(state.stateDir, "kube-node1")}/cni/10-kuberouter.conflist`)),
            30_000,
          );
          const logs = await k(state, ["logs", "-n", "kube-system", "kube-router-node1"]);
          assert.match(logs, /CNI config written .*path=\/etc\/cni\/net\.d\/10-kuberouter\.conflist/);
          assert.doesNotMatch(logs, /kubeconfig/i);
          assert.equal(exists("/run/secrets"), hostHad.secrets, "the host's /run is untouched");
          assert.equal(exists("/etc/cni"), hostHad.cni, "the host's /etc is untouched");
        },
      );

      await t.step(
        "a failing liveness probe restarts the agent container, visible in its restart count",
        async () => {
          const rec = [...Deno.readDirSync(`${nodeDir(state.stateDir, "kube-node1")}/pods`)]
            .filter((e) => e.name.endsWith(".json"))
            .map((e) =>
              JSON.parse(Deno.readTextFileSync(`${nodeDir(state.stateDir, "kube-node1")}/pods/${e.name}`))
            )
            .find((r) => r.name === "kube-router-node1");
          const pid = rec.pids["kube-router"] as number;
          Deno.kill(pid, "SIGSTOP"); // alive but not answering: only the probe can notice
          await eventually("the pod reports one restart and is Ready again", async () => {
            const p = JSON.parse(
              await k(state, ["get", "pod", "-n", "kube-system", "kube-router-node1", "-o", "json"]),
            );
            const c = p.status.containerStatuses[0];
            return c.restartCount === 1 && c.ready === true && c.lastState?.terminated !== undefined;
            // Three missed probes, SIGKILL, a 2 s backoff, then a new agent starting: at a load average
            // of 13 the restart alone took most of a minute once.
          }, 120_000);
          assert.match(
            await k(state, ["logs", "-n", "kube-system", "kube-router-node1", "--previous"]),
            /CNI config written/,
          );
        },
      );
      await t.step(
        "a pod whose host port is taken on its node is rejected (Failed, NodePorts), the rest runs on",
        async () => {
          // The agent pod (hostNetwork) declares no ports; a hostNetwork pod on 20244 would clash with the
          // agent only in the kernel, so use two pods with the same hostPort.
          const hp = (name: string) =>
            `---
apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: default}
spec:
  nodeName: kube-node2
  containers:
  - name: c
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: ["netexec", "--http-port=8080"]
    ports: [{containerPort: 8080, hostPort: 30080}]
`;
          await k(state, ["apply", "-f", "-"], hp("hp-1"));
          await k(state, ["wait", "--for=condition=Ready", "pod/hp-1", "--timeout=60s"]);
          await k(state, ["apply", "-f", "-"], hp("hp-2"));
          await eventually("hp-2 is Failed with reason NodePorts", async () => {
            const p = JSON.parse(await k(state, ["get", "pod", "hp-2", "-o", "json"]));
            return p.status?.phase === "Failed" && p.status?.reason === "NodePorts" &&
              /TCP\/30080 taken by default\/hp-1/.test(p.status?.message ?? "");
          }, 30_000);
          // kubelet's rejectPod records a Warning event with the predicate, shown by describe and get events.
          const described = await k(state, ["describe", "pod", "hp-2"]);
          assert.match(
            described,
            /Warning\s+NodePorts\s+\S+\s+kubelet\s+Predicate NodePorts failed: node\(s\) didn't have free ports for the requested pod ports \(TCP\/30080 taken by default\/hp-1\)/,
          );
          assert.match(
            await k(state, ["get", "events", "--field-selector", "involvedObject.name=hp-2"]),
            /Warning\s+NodePorts\s+pod\/hp-2\s+Predicate NodePorts failed/,
          );
          const multi = JSON.parse(await k(state, ["get", "pod", "multi", "-o", "json"]));
          assert.equal(multi.status.phase, "Running");
        },
      );
      await t.step(
        "an image the lab cannot run is reported as kubelet reports a failed pull (ErrImagePull, ImagePullBackOff, events), the rest runs on",
        async () => {
          await k(
            state,
            ["apply", "-f", "-"],
            `apiVersion: v1
kind: Pod
metadata: {name: db, namespace: default}
spec:
  nodeName: kube-node1
  containers:
  - {name: postgres, image: "postgres:16", ports: [{containerPort: 5432}]}
---
apiVersion: v1
kind: Pod
metadata: {name: sleeper, namespace: default}
spec:
  nodeName: kube-node1
  containers:
  - {name: c, image: "busybox:1.36", command: [sleep, "3600"]}
`,
          );
          const waitingReasons = new Set<string>();
          await eventually(
            "db went through ErrImagePull and ImagePullBackOff",
            async () => {
              const p = JSON.parse(await k(state, ["get", "pod", "db", "-o", "json"]));
              const w = p.status?.containerStatuses?.[0]?.state?.waiting;
              if (w?.reason) waitingReasons.add(w.reason);
              assert.equal(p.status.phase, "Pending");
              return waitingReasons.has("ErrImagePull") && waitingReasons.has("ImagePullBackOff");
            },
            60_000,
            100,
          );
          const described = await k(state, ["describe", "pod", "db"]);
          assert.match(described, /State:\s+Waiting\n\s+Reason:\s+(ErrImagePull|ImagePullBackOff)/);
          assert.match(described, /Normal\s+Pulling\s+.*kubelet\s+Pulling image "postgres:16"/);
          assert.match(
            described,
            /Warning\s+Failed\s+.*kubelet\s+Failed to pull image "postgres:16": the kube-router lab does not run image "postgres:16"/,
          );
          assert.match(described, /Warning\s+Failed\s+.*kubelet\s+Error: ErrImagePull/);
          assert.match(described, /Normal\s+BackOff\s+.*kubelet\s+Back-off pulling image "postgres:16"/);
          const events = await k(state, ["get", "events", "--field-selector", "involvedObject.name=db"]);
          assert.match(events, /Warning\s+Failed\s+pod\/db\s+Failed to pull image "postgres:16"/);
          // Nothing plays the unknown image: no process answers on its port.
          const ip = JSON.parse(await k(state, ["get", "pod", "db", "-o", "json"])).status.podIP as string;
          assert.notEqual(
            (await run(execCommand(state, "kube-node1", ["curl", "-s", "-m", "2", `http://${ip}:5432/`]), {
              check: false,
            })).code,
            0,
          );
          // busybox is known: it runs (holding no port), and the node's other pods are untouched.
          await k(state, ["wait", "--for=condition=Ready", "pod/sleeper", "--timeout=60s"]);
          const multi = JSON.parse(await k(state, ["get", "pod", "multi", "-o", "json"]));
          assert.equal(multi.status.phase, "Running");
          await k(state, ["delete", "pod", "db", "sleeper", "--wait=true"]);
        },
      );
      await t.step(
        "lab kubectl apply of a manifest with an unknown field gets kube-apiserver's 400; --validate=warn a Warning",
        async () => {
          const manifest = `apiVersion: v1
kind: Service
metadata: {name: typo, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080, protocl: TCP}]
`;
          const r = await kubectl(state, ["apply", "-f", "-"], { check: false, stdin: manifest });
          assert.equal(r.code, 1);
          assert.match(
            r.stderr,
            /Error from server \(BadRequest\): error when creating "STDIN": Service in version "v1" cannot be handled as a Service: strict decoding error: unknown field "spec.ports\[0\].protocl"/,
          );
          const warned = await kubectl(state, ["apply", "--validate=warn", "-f", "-"], {
            check: false,
            stdin: manifest,
          });
          assert.equal(warned.code, 0, warned.stderr);
          assert.match(warned.stderr, /Warning: unknown field "spec.ports\[0\].protocl"/);
          await k(state, ["delete", "service", "typo"]);
        },
      );
      assert.equal(readState(state.stateDir)?.phase, "up");
    } catch (e) {
      const files = [`${where.stateDir}/master.log`];
      for (const n of ["kube-node1", "kube-node2"]) files.push(`${nodeDir(where.stateDir, n)}/kubelet.log`);
      showLogTails(files, 30);
      throw e;
    } finally {
      await labDown(where);
    }
  },
});
