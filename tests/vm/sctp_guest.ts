/**
 * SCTP with real traffic, in the VM tier's guest (listed in tests/vm/vm_test.ts): this machine's kernel has
 * no SCTP, so only the guest's Debian kernel (sctp module, SCTP conntrack and NAT) can show that the rules
 * the firewall and the nftables proxy write for `protocol: SCTP` carry and stop real associations.
 *
 * - The NetworkPolicy firewall on the integration tests' node (tests/integration/firewall/_node.ts): an
 *   ingress policy allowing SCTP to one port from labelled clients, checked with a second port and an
 *   unlabelled client.
 * - The nftables service proxy in the integration tests' one-node world (tests/integration/proxy/_env.ts):
 *   an SCTP ClusterIP Service spread over three pods.
 *
 * SCTP peers are python3 (socket.IPPROTO_SCTP, one-to-one style SOCK_STREAM; Deno has no SCTP). A guest
 * kernel without SCTP fails the first test and every SCTP probe, never skips: a skip here would hide that
 * the tier lost what it exists for.
 */
import assert from "node:assert/strict";
import type { V1EndpointSlice, V1Service } from "@kubernetes/client-node";
import { FirewallNode } from "../integration/firewall/_node.ts";
import { POD_IPS, POD_NAMES, ProxyEnv } from "../integration/proxy/_env.ts";
import { needs, type NetNs, run } from "../_support/netns.ts";

if (Deno.env.get("KRT_IN_VM") !== "1") {
  throw new Error("tests/vm/sctp_guest.ts needs a kernel with SCTP: it runs only in the VM tier");
}

/**
 * The SCTP peer. `serve NAME PORT…` answers NAME on every association to each port, on IPv4 and IPv6,
 * and prints `ready` once listening; `ask IP PORT COUNT TIMEOUT_S` makes COUNT associations one after
 * another, sending a line on each and printing the answer, or `error: …` for one that failed.
 */
const PEER = `
import selectors, socket, sys
def serve(name, ports):
    sel = selectors.DefaultSelector()
    for p in ports:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_SCTP)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", int(p)))
        s.listen(16)
        sel.register(s, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            c, _ = key.fileobj.accept()
            try:
                c.settimeout(2)
                c.recv(100)
                c.sendall(name.encode())
            except OSError:
                pass
            c.close()
def ask(ip, port, count, timeout):
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    for _ in range(count):
        try:
            s = socket.socket(fam, socket.SOCK_STREAM, socket.IPPROTO_SCTP)
        except OSError as e:
            print("error: no SCTP socket: %s" % e, flush=True)
            continue
        try:
            s.settimeout(timeout)
            s.connect((ip, port))
            s.sendall(b"hello\\n")
            data = s.recv(100)
            print(data.decode() if data else "error: closed without an answer", flush=True)
        except socket.timeout:
            print("error: timed out", flush=True)
        except OSError as e:
            print("error: %s" % e.strerror, flush=True)
        finally:
            s.close()
if sys.argv[1] == "serve":
    serve(sys.argv[2], sys.argv[3:])
else:
    ask(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
`;

/** Starts an SCTP server answering `name` on `ports` inside `ns`; resolves once it listens. */
async function sctpServer(ns: NetNs, name: string, ports: number[]): Promise<Deno.ChildProcess> {
  const child = ns.spawn(["python3", "-c", PEER, "serve", name, ...ports.map(String)], {
    stdout: "piped",
    stderr: "piped",
  });
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const { value } = await reader.read();
  reader.releaseLock();
  if (!value?.includes("ready")) {
    const err = await new Response(child.stderr).text().catch(() => "");
    throw new Error(`the SCTP server ${name} in ${ns.name} did not start: ${err.trim()}`);
  }
  child.stderr.cancel().catch(() => {});
  return child;
}

/** The answers (or `error: …`) of `count` SCTP associations from `ns` to ip:port, one after another. */
async function sctpAsk(ns: NetNs, ip: string, port: number, count = 1, timeoutS = 2): Promise<string[]> {
  const r = await ns.exec(
    ["python3", "-c", PEER, "ask", ip, String(port), String(count), String(timeoutS)],
    { check: false },
  );
  if (r.code !== 0) throw new Error(`the SCTP client failed (exit ${r.code}): ${r.stderr}`);
  return r.stdout.trim().split("\n");
}

async function stopAll(procs: Deno.ChildProcess[]): Promise<void> {
  for (const p of procs) {
    try {
      p.kill("SIGKILL");
    } catch { /* gone */ }
    await p.status.catch(() => {});
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

const NEEDS = { tools: ["python3", "nft", "curl", "busybox"] };

Deno.test({
  ...needs("the guest kernel loads the sctp module and opens one-to-one SCTP sockets", NEEDS),
  async fn() {
    const mod = await run(["modprobe", "sctp"], { check: false });
    assert.equal(mod.code, 0, `modprobe sctp failed in the guest: ${mod.stderr}`);
    assert.ok(await exists("/proc/net/sctp"), "no /proc/net/sctp after modprobe sctp: the kernel lacks SCTP");
    const r = await run([
      "python3",
      "-c",
      "import socket; socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_SCTP).close()",
    ], { check: false });
    assert.equal(r.code, 0, `python3 cannot open an SCTP socket in the guest: ${r.stderr}`);
  },
});

Deno.test({
  ...needs(
    "a NetworkPolicy allowing SCTP to one port from labelled clients lets only those associations through",
    NEEDS,
  ),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    await run(["modprobe", "sctp"], { check: false });
    // Bridged pod-to-pod traffic reaches the firewall's hooks only through br_netfilter (a module here).
    if (!(await exists("/proc/sys/net/bridge"))) await run(["modprobe", "br_netfilter"]);
    const n = await FirewallNode.create();
    const servers: Deno.ChildProcess[] = [];
    try {
      n.putNamespace("x", { ns: "x" });
      n.putNamespace("y", { ns: "y" });
      // No TCP/UDP servers: the pods serve SCTP on 80 and 81 instead.
      const a = await n.addPodNetwork("x", "a", []);
      const b = await n.addPodNetwork("x", "b", []);
      const c = await n.addPodNetwork("y", "c", []);
      servers.push(await sctpServer(a.ns, "a", [80, 81]));
      n.putPod("x", "a", { labels: { pod: "a" } });
      n.putPod("x", "b", { labels: { pod: "b", role: "client" } });
      n.putPod("y", "c", { labels: { pod: "c" } });
      await n.startAgent();
      await n.settle();

      await t.step("without a policy both clients reach both SCTP ports, on both families", async () => {
        assert.deepEqual(await sctpAsk(b.ns, a.ip, 80), ["a"]);
        assert.deepEqual(await sctpAsk(b.ns, a.ip, 81), ["a"]);
        assert.deepEqual(await sctpAsk(c.ns, a.ip, 80), ["a"]);
        assert.deepEqual(await sctpAsk(c.ns, a.ip6, 81), ["a"]);
      });

      n.putPolicy("x", "allow-sctp-80", {
        podSelector: { matchLabels: { pod: "a" } },
        policyTypes: ["Ingress"],
        ingress: [{
          from: [{ namespaceSelector: {}, podSelector: { matchLabels: { role: "client" } } }],
          ports: [{ protocol: "SCTP", port: 80 }],
        }],
      });
      await n.settle();

      await t.step("the labelled client's SCTP associations to the allowed port pass", async () => {
        assert.deepEqual(await sctpAsk(b.ns, a.ip, 80), ["a"]);
        assert.deepEqual(await sctpAsk(b.ns, a.ip6, 80), ["a"]);
      });
      await t.step("the labelled client cannot open an association to the port not allowed", async () => {
        const [answer] = await sctpAsk(b.ns, a.ip, 81);
        assert.match(answer!, /^error: /);
      });
      await t.step("an unselected client cannot open an association even to the allowed port", async () => {
        const [v4] = await sctpAsk(c.ns, a.ip, 80);
        assert.match(v4!, /^error: /);
        const [v6] = await sctpAsk(c.ns, a.ip6, 80);
        assert.match(v6!, /^error: /);
      });
      await t.step("the isolated pod still opens associations out, and their replies pass", async () => {
        servers.push(await sctpServer(c.ns, "c", [82]));
        assert.deepEqual(await sctpAsk(a.ns, c.ip, 82), ["c"]);
      });
    } finally {
      await stopAll(servers);
      await n.close();
    }
  },
});

const SCTP_VIP = "172.16.0.90";
const SCTP_PORT = 9132;

const sctpService: V1Service = {
  metadata: { namespace: "default", name: "sctp" },
  spec: {
    type: "ClusterIP",
    clusterIP: SCTP_VIP,
    clusterIPs: [SCTP_VIP],
    ports: [{ name: "assoc", port: SCTP_PORT, protocol: "SCTP", targetPort: 7132 as unknown as number }],
  },
};

const sctpSlice: V1EndpointSlice = {
  metadata: { namespace: "default", name: "sctp-v4", labels: { "kubernetes.io/service-name": "sctp" } },
  addressType: "IPv4",
  endpoints: POD_IPS.map((ip, i) => ({
    addresses: [ip],
    conditions: { ready: true },
    nodeName: "n1",
    targetRef: { kind: "Pod", namespace: "default", name: POD_NAMES[i]! },
  })),
  ports: [{ name: "assoc", port: 7132, protocol: "SCTP" }],
};

Deno.test({
  ...needs("the nftables proxy spreads SCTP associations to a ClusterIP over every endpoint", NEEDS),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    await run(["modprobe", "sctp"], { check: false });
    const env = await ProxyEnv.create();
    const servers: Deno.ChildProcess[] = [];
    try {
      for (const [i, pod] of env.pods.entries()) servers.push(await sctpServer(pod, POD_NAMES[i]!, [7132]));
      await env.startProxy([], [sctpService, sctpSlice]);

      await t.step("associations from another machine to the ClusterIP reach all three pods", async () => {
        const seen = new Map<string, number>();
        // Endpoints are picked at random: rounds until each pod answered (3 x 10 associations at most).
        for (let round = 0; round < 10 && !POD_NAMES.every((p) => seen.has(p)); round++) {
          for (const a of await sctpAsk(env.client, SCTP_VIP, SCTP_PORT, 3)) {
            seen.set(a, (seen.get(a) ?? 0) + 1);
          }
        }
        assert.deepEqual(
          [...seen.keys()].sort(),
          [...POD_NAMES].sort(),
          `answers: ${JSON.stringify([...seen])}\n${await env.dump()}`,
        );
      });
      await t.step(
        "a pod's association to the ClusterIP is load-balanced too, back to itself included",
        async () => {
          const seen = new Set<string>();
          for (let round = 0; round < 10 && !POD_NAMES.every((p) => seen.has(p)); round++) {
            for (const a of await sctpAsk(env.pods[0]!, SCTP_VIP, SCTP_PORT, 3)) seen.add(a);
          }
          assert.deepEqual([...seen].sort(), [...POD_NAMES].sort());
        },
      );
      await t.step("a port the Service does not have gets no SCTP association", async () => {
        const [answer] = await sctpAsk(env.client, SCTP_VIP, 7132);
        assert.match(answer!, /^error: /);
      });
      await t.step("removing the endpoints leaves the ClusterIP refusing SCTP associations", async () => {
        await env.put({ ...sctpSlice, endpoints: [] });
        const [answer] = await sctpAsk(env.client, SCTP_VIP, SCTP_PORT);
        assert.match(answer!, /^error: /);
      });
    } finally {
      await stopAll(servers);
      await env.close();
    }
  },
});
