/**
 * The IPVS backend of the service proxy against the guest kernel's IPVS, with real traffic (run by the VM
 * tier inside its guest, listed in tests/vm/vm_test.ts). The guest's root namespace is the node (the IPVS
 * director, running IpvsProxy with the real IPVS, nftables, rtnetlink, sysctl and conntrack); three pod
 * namespaces sit behind a bridge; the client sits in a namespace of its own (an IPVS client on the
 * director itself is not what kube-router serves from outside), routed through the node.
 *
 *   client ns  192.168.50.2 ── veth ── 192.168.50.1 (node address)  [root ns: IPVS, kube-dummy-if]
 *   pod ns be1..be3  10.1.1.11-13 ── veth ── bridge kbr0 10.1.1.1/24
 *
 * Pods serve HTTP (busybox httpd, answering their name) on 8080 and a line echo (busybox nc) on 8081 that
 * first says its name, which keeps a TCP connection open as long as the test wants.
 */
import assert from "node:assert/strict";
import type { V1EndpointSlice, V1Node, V1Service } from "@kubernetes/client-node";
import { Bus, getLogger, loadConfig } from "../../../core/mod.ts";
import { MemorySink } from "../../../core/log.ts";
import {
  Conntrack,
  IpvsNetlink,
  IpvsServiceFlag,
  Nftables,
  ProcSysctl,
  Rtnetlink,
} from "../../../ffi/mod.ts";
import { DUMMY_IF, IpvsProxy, proxyModule } from "../../../modules/proxy/mod.ts";
import { MemorySource, moduleContext } from "../../_support/kube_source.ts";
import { NetNs, run } from "../../_support/netns.ts";

if (Deno.env.get("KRT_IN_VM") !== "1") {
  throw new Error(
    "tests/vm/proxy/ipvs_proxy_guest.ts reconfigures the node's network: it runs only in the VM tier",
  );
}

const NODE_IP = "192.168.50.1";
const CLIENT_IP = "192.168.50.2";
const PODS = [
  { name: "be1", ip: "10.1.1.11" },
  { name: "be2", ip: "10.1.1.12" },
  { name: "be3", ip: "10.1.1.13" },
];
const DIR = "/tmp/ipvs-vm";
const FLAGS = [
  "--hostname-override=guest",
  "--service-cluster-ip-range=172.16.0.0/16",
  "--service-proxy-backend=ipvs",
  "--ipvs-graceful-termination",
  "--ipvs-graceful-period=20s",
  "--service-tcp-timeout=600s",
];

const node: V1Node = {
  metadata: { name: "guest" },
  spec: { podCIDR: "10.1.1.0/24", podCIDRs: ["10.1.1.0/24"] },
  status: { addresses: [{ type: "InternalIP", address: NODE_IP }] },
};

function service(name: string, ip: string, o: Partial<V1Service["spec"]> = {}, annotations = {}): V1Service {
  return {
    metadata: { namespace: "default", name, annotations },
    spec: {
      type: "ClusterIP",
      clusterIP: ip,
      clusterIPs: [ip],
      ports: [{ name: "http", port: 80, protocol: "TCP", targetPort: 8080 }],
      ...o,
    },
  };
}

function slice(svc: string, pods: readonly { ip: string }[], port = 8080): V1EndpointSlice {
  return {
    metadata: { namespace: "default", name: `${svc}-1`, labels: { "kubernetes.io/service-name": svc } },
    addressType: "IPv4",
    endpoints: pods.map((p) => ({ addresses: [p.ip], conditions: { ready: true }, nodeName: "guest" })),
    ports: [{ name: "http", port, protocol: "TCP" }],
  };
}

interface Lab {
  client: NetNs;
  pods: NetNs[];
  source: MemorySource;
  proxy: IpvsProxy;
  stopContext: () => Promise<void>;
  metrics: () => string;
  deps: { ipvs: IpvsNetlink; nft: Nftables; rtnl: Rtnetlink; conntrack: Conntrack };
}

let lab: Lab | undefined;

async function setupLab(): Promise<Lab> {
  await run(["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
  await Deno.mkdir(DIR, { recursive: true });
  await run(["ip", "link", "add", "kbr0", "type", "bridge"]);
  await run(["ip", "addr", "add", "10.1.1.1/24", "dev", "kbr0"]);
  await run(["ip", "link", "set", "kbr0", "up"]);
  const pods: NetNs[] = [];
  for (const [i, p] of PODS.entries()) {
    const ns = await NetNs.create(p.name);
    pods.push(ns);
    await run(["ip", "link", "add", `vpod${i}`, "type", "veth", "peer", "name", "eth0", "netns", ns.name]);
    await run(["ip", "link", "set", `vpod${i}`, "master", "kbr0", "up"]);
    await ns.exec(["ip", "addr", "add", `${p.ip}/24`, "dev", "eth0"]);
    await ns.exec(["ip", "link", "set", "eth0", "up"]);
    await ns.exec(["ip", "route", "add", "default", "via", "10.1.1.1"]);
    await Deno.mkdir(`${DIR}/${p.name}`, { recursive: true });
    await Deno.writeTextFile(`${DIR}/${p.name}/index.html`, `${p.name}\n`);
    await Deno.writeTextFile(`${DIR}/echo-${p.name}.sh`, `#!/bin/sh\necho ${p.name}\nexec cat\n`, {
      mode: 0o755,
    });
    ns.spawn(["busybox", "httpd", "-f", "-p", "8080", "-h", `${DIR}/${p.name}`]);
    ns.spawn(["busybox", "nc", "-ll", "-p", "8081", "-e", `${DIR}/echo-${p.name}.sh`]);
  }
  const client = await NetNs.create("client");
  await run(["ip", "link", "add", "vclient", "type", "veth", "peer", "name", "eth0", "netns", client.name]);
  await run(["ip", "addr", "add", `${NODE_IP}/24`, "dev", "vclient"]);
  await run(["ip", "link", "set", "vclient", "up"]);
  await client.exec(["ip", "addr", "add", `${CLIENT_IP}/24`, "dev", "eth0"]);
  await client.exec(["ip", "link", "set", "eth0", "up"]);
  await client.exec(["ip", "route", "add", "default", "via", NODE_IP]);

  const source = new MemorySource(new Bus(), { synced: false });
  const t = moduleContext({
    config: loadConfig(FLAGS),
    source,
    log: getLogger({}, new MemorySink()),
    periodMs: 300_000,
  });
  const deps = {
    ipvs: new IpvsNetlink(),
    nft: new Nftables(),
    rtnl: new Rtnetlink(),
    conntrack: new Conntrack(),
  };
  await deps.ipvs.flush();
  const proxy = new IpvsProxy(t.ctx, { ...deps, sysctl: new ProcSysctl(), serveHealthChecks: false });
  source.start(["services", "endpointslices", "nodes"]);
  await proxy.start();
  source.put("nodes", node);
  source.markSynced();
  return { client, pods, source, proxy, stopContext: t.stop, metrics: () => t.ctx.metrics.render(), deps };
}

async function getLab(): Promise<Lab> {
  lab ??= await setupLab();
  return lab;
}

/** Waits until `f` holds (the proxy syncs on its own after each change). */
async function until(what: string, f: () => Promise<boolean>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await f()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(
    `timed out waiting for ${what}\n${(await run(["ipvsadm", "-Ln"], { check: false })).stdout}`,
  );
}

async function ipvsadm(): Promise<string> {
  return (await run(["ipvsadm", "-Ln"])).stdout;
}

/** One HTTP request from the client namespace; the answering pod's name. */
async function get(url: string): Promise<string> {
  const r = await lab!.client.exec(["curl", "-sS", "--max-time", "5", url], { check: false });
  if (r.code !== 0) throw new Error(`curl ${url} from the client failed (${r.code}): ${r.stderr}`);
  return r.stdout.trim();
}

async function answers(url: string, n: number): Promise<Map<string, number>> {
  const counts = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const who = await get(url);
    counts.set(who, (counts.get(who) ?? 0) + 1);
  }
  return counts;
}

const opts = { sanitizeOps: false, sanitizeResources: false };

Deno.test({
  ...opts,
  name:
    "IPVS ClusterIP: a client in its own namespace reaches every pod in turn (rr), through the VIP on kube-dummy-if",
  fn: async () => {
    const l = await getLab();
    l.source.put("services", service("web", "172.16.0.10"));
    l.source.put("endpointslices", slice("web", PODS));
    await until(
      "the cluster IP's three destinations and its VIP on kube-dummy-if",
      async () =>
        (await ipvsadm()).split("-> 10.1.1.").length === 4 &&
        /172\.16\.0\.10\/32/.test((await run(["ip", "-o", "addr", "show", "dev", DUMMY_IF])).stdout),
    );
    const counts = await answers("http://172.16.0.10/", 6);
    assert.deepEqual([...counts.entries()].sort(), [["be1", 2], ["be2", 2], ["be3", 2]]);
    assert.match(await ipvsadm(), /TCP {2}172\.16\.0\.10:80 rr/);
    // The counters come from IPVS itself, which folds its per-CPU counters into them every 2 s: each poll
    // touches the Service so a sync reads them again.
    let touch = 0;
    await until("kube_router_service_total_connections of the cluster IP at 6 or more", () => {
      l.source.put("services", service("web", "172.16.0.10", {}, { touched: String(++touch) }));
      const m = l.metrics().match(
        /kube_router_service_total_connections\{[^}]*service_vip="172\.16\.0\.10"[^}]*\} (\d+)/,
      );
      return Promise.resolve(m !== null && Number(m[1]) >= 6);
    });
  },
});

Deno.test({
  ...opts,
  name: "IPVS NodePort: the node's address at the NodePort answers from the pods",
  fn: async () => {
    const l = await getLab();
    l.source.put(
      "services",
      service("np", "172.16.0.11", {
        type: "NodePort",
        ports: [{ name: "http", port: 80, protocol: "TCP", targetPort: 8080, nodePort: 30080 }],
      }),
    );
    l.source.put("endpointslices", slice("np", PODS.slice(0, 2)));
    await until("the NodePort service", async () => (await ipvsadm()).includes(`${NODE_IP}:30080`));
    const counts = await answers(`http://${NODE_IP}:30080/`, 4);
    assert.deepEqual([...counts.entries()].sort(), [["be1", 2], ["be2", 2]]);
    assert.doesNotMatch(
      (await run(["ip", "-o", "addr", "show", "dev", DUMMY_IF])).stdout,
      /192\.168\.50\.1/,
      "the node's own address is never put on the dummy interface",
    );
  },
});

Deno.test({
  ...opts,
  name:
    "IPVS schedulers: wrr spreads over every pod, sh keeps one client on one pod, mh with flags is programmed",
  fn: async () => {
    const l = await getLab();
    const sched = (name: string, ip: string, s: string, extra = {}) => {
      l.source.put(
        "services",
        service(name, ip, {}, { "kube-router.io/service.scheduler": s, ...extra }),
      );
      l.source.put("endpointslices", slice(name, PODS));
    };
    sched("wrr", "172.16.0.12", "wrr");
    sched("sh", "172.16.0.13", "sh");
    sched("mh", "172.16.0.14", "mh", { "kube-router.io/service.schedflags": "flag-1,flag-2" });
    await until("three scheduled services", async () => {
      const t = await ipvsadm();
      return /172\.16\.0\.12:80 wrr/.test(t) && /172\.16\.0\.13:80 sh/.test(t) &&
        /172\.16\.0\.14:80 mh/.test(t);
    });
    const wrr = await answers("http://172.16.0.12/", 6);
    assert.deepEqual(
      [...wrr.keys()].sort(),
      ["be1", "be2", "be3"],
      "wrr with equal weights serves every pod",
    );
    const sh = await answers("http://172.16.0.13/", 6);
    assert.equal(sh.size, 1, `sh: one client, one pod (${[...sh.keys()].join(", ")})`);
    const mhService = await l.deps.ipvs.getService({
      family: 4,
      protocol: "tcp",
      address: "172.16.0.14",
      port: 80,
    });
    assert.equal(
      (mhService?.flags ?? 0) & (IpvsServiceFlag.sched1 | IpvsServiceFlag.sched2 | IpvsServiceFlag.sched3),
      IpvsServiceFlag.sched1 | IpvsServiceFlag.sched2,
      "flag-1,flag-2 are mh-fallback and mh-port in the kernel",
    );
    const mh = await answers("http://172.16.0.14/", 3);
    assert.ok(mh.size >= 1);
  },
});

Deno.test({
  ...opts,
  name: "IPVS ClientIP affinity keeps a client on one pod (persistence)",
  fn: async () => {
    const l = await getLab();
    l.source.put(
      "services",
      service("aff", "172.16.0.15", {
        sessionAffinity: "ClientIP",
        sessionAffinityConfig: { clientIP: { timeoutSeconds: 300 } },
      }),
    );
    l.source.put("endpointslices", slice("aff", PODS));
    await until(
      "the persistent service",
      async () => /172\.16\.0\.15:80 rr persistent 300/.test(await ipvsadm()),
    );
    const counts = await answers("http://172.16.0.15/", 6);
    assert.equal(counts.size, 1, [...counts.keys()].join(", "));
  },
});

/** A TCP connection from the client namespace to the echo port, kept open. */
class LiveConnection {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buf = "";
  constructor(ns: NetNs, ip: string, port: number) {
    this.#child = new Deno.Command("ip", {
      args: ["netns", "exec", ns.name, "busybox", "nc", ip, String(port)],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#reader = this.#child.stdout.getReader();
  }
  async line(ms = 5000): Promise<string> {
    const end = Date.now() + ms;
    while (!this.#buf.includes("\n")) {
      const left = end - Date.now();
      if (left <= 0) throw new Error("no line from the live connection");
      let timer: ReturnType<typeof setTimeout> | undefined;
      const r = await Promise.race([
        this.#reader.read(),
        new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error("no line in time")), left))),
      ]).finally(() => clearTimeout(timer));
      if (r.done) throw new Error("the live connection closed");
      this.#buf += new TextDecoder().decode(r.value);
    }
    const i = this.#buf.indexOf("\n");
    const l = this.#buf.slice(0, i);
    this.#buf = this.#buf.slice(i + 1);
    return l;
  }
  async echo(text: string): Promise<string> {
    await this.#writer.write(new TextEncoder().encode(`${text}\n`));
    return await this.line();
  }
  async close(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* gone */ }
    await this.#child.status;
    await this.#reader.cancel().catch(() => {});
  }
}

Deno.test({
  ...opts,
  name:
    "IPVS graceful termination: a removed pod's live connection keeps working at weight 0, new ones avoid it, and it goes after the period",
  fn: async () => {
    const l = await getLab();
    l.source.put(
      "services",
      service("echo", "172.16.0.20", {
        ports: [{ name: "http", port: 81, protocol: "TCP", targetPort: 8081 }],
      }),
    );
    l.source.put("endpointslices", slice("echo", PODS.slice(0, 2), 8081));
    await until(
      "the echo service",
      async () => (await ipvsadm()).split("\n").filter((x) => /-> 10\.1\.1\.1[12]:8081/.test(x)).length === 2,
    );
    const conn = new LiveConnection(l.client, "172.16.0.20", 81);
    try {
      const first = await conn.line();
      assert.ok(first === "be1" || first === "be2", first);
      assert.equal(await conn.echo("hello"), "hello");
      const gone = PODS.find((p) => p.name === first)!;
      const stays = PODS.find((p) => p.name !== first && p.name !== "be3")!;
      l.source.put("endpointslices", slice("echo", [stays], 8081));
      const drained = new RegExp(`-> ${gone.ip.replaceAll(".", "\\.")}:8081 +Masq +0 +1 `);
      await until(
        "the removed pod at weight 0 with its connection",
        async () => drained.test(await ipvsadm()),
      );
      assert.equal(await conn.echo("still there"), "still there", "the live connection survives the removal");
      for (let i = 0; i < 3; i++) {
        const c = new LiveConnection(l.client, "172.16.0.20", 81);
        try {
          assert.equal(await c.line(), stays.name, "new connections never go to the draining pod");
        } finally {
          await c.close();
        }
      }
      await new Promise((r) => setTimeout(r, 2000));
      assert.match(await ipvsadm(), drained, "still draining while the connection lives, inside the period");
      assert.equal(await conn.echo("later"), "later");
    } finally {
      await conn.close();
    }
    await until(
      "the drained destination deleted after --ipvs-graceful-period",
      async () => (await ipvsadm()).split("\n").filter((x) => /-> 10\.1\.1\.1[12]:8081/.test(x)).length === 1,
      40_000,
    );
  },
});

Deno.test({
  ...opts,
  name: "IPVS --cleanup-config leaves no IPVS service, no kube-dummy-if and no proxy table",
  fn: async () => {
    const l = await getLab();
    assert.match(await ipvsadm(), /TCP/);
    await l.proxy.stop();
    await l.stopContext();
    await proxyModule.cleanup(loadConfig(FLAGS), getLogger({}, new MemorySink()));
    assert.doesNotMatch(await ipvsadm(), /TCP|UDP|SCTP/);
    const link = await run(["ip", "link", "show", DUMMY_IF], { check: false });
    assert.notEqual(link.code, 0, "kube-dummy-if is gone");
    assert.doesNotMatch((await run(["nft", "list", "tables"])).stdout, /kube_router_proxy/);
    const r = await l.client.exec(["curl", "-sS", "--max-time", "2", "http://172.16.0.10/"], {
      check: false,
    });
    assert.notEqual(r.code, 0, "the cluster IP no longer answers");
    for (const ns of [l.client, ...l.pods]) await ns.remove();
    for (const d of Object.values(l.deps)) d.close();
  },
});
