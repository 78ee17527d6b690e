/**
 * The service proxy's IPVS backend under real traffic, in the VM tier's guest (a kernel with IPVS; listed in
 * tests/vm/vm_test.ts). The same world as the nftables backend's integration test (tests/integration/proxy:
 * a node namespace, three pods behind a bridge, a client namespace standing for another machine) runs:
 *
 * 1. the SAME Service semantics cases (CASES of tests/integration/proxy/_cases.ts), case for case, with the
 *    proxy started as `--service-proxy-backend=ipvs` (where the backends differ by design a case says so);
 * 2. then, after an agent restart with `--ipvs-graceful-termination`, what only IPVS has: each scheduler of
 *    `kube-router.io/service.scheduler` made observable in traffic, graceful termination draining a live
 *    connection, the kube_router_service_* counters, and --cleanup-config.
 *
 * Each case is a test step, so each becomes its own step on the host.
 */
import assert from "node:assert/strict";
import { CASES, type ProxyCase } from "../../integration/proxy/_cases.ts";
import { NODE_IP, POD_NAMES, ProxyEnv, service, slices } from "../../integration/proxy/_env.ts";

if (Deno.env.get("KRT_IN_VM") !== "1") {
  throw new Error("tests/vm/proxy/ipvs_cases_guest.ts needs a kernel with IPVS: it runs only in the VM tier");
}

const IPVS_FLAGS = ["--service-proxy-backend=ipvs", "--ipvs-sync-period=3s"];
const GRACEFUL_PERIOD_S = 12;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function eventually(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!(await check())) {
    if (Date.now() - t0 > ms) throw new Error(`not within ${ms} ms: ${what}`);
    await sleep(200);
  }
}

const ipvsadm = async (env: ProxyEnv, ...args: string[]) =>
  (await env.node.exec(["ipvsadm", "-Ln", ...args])).stdout;

const cip = (n: number) => ({ clusterIP: `172.16.1.${n}`, clusterIPs: [`172.16.1.${n}`] });

/** A Service on 172.16.1.n with a scheduler (and flags) over the three pods; pods may reach themselves. */
async function scheduled(env: ProxyEnv, name: string, n: number, scheduler: string, flags?: string) {
  await env.put(service(name, cip(n), {
    metadata: {
      annotations: {
        "kube-router.io/service.scheduler": scheduler,
        "kube-router.io/service.hairpin": "",
        ...(flags ? { "kube-router.io/service.schedflags": flags } : {}),
      },
    },
  }));
  await env.put(slices(name, [0, 1, 2])[0]!);
  assert.match(await ipvsadm(env), new RegExp(`172\\.16\\.1\\.${n}:80 ${scheduler}\\b`));
}

const sorted = (m: Map<string, number>) => [...m.entries()].sort();

/**
 * One TCP connection from the client held open: HTTP/1.1 keep-alive requests over `busybox nc`, each
 * answered by the pod the connection went to.
 */
class HeldConnection {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #reader: ReadableStreamDefaultReader<Uint8Array>;
  #buf = "";

  constructor(env: ProxyEnv, ip: string, port: number) {
    this.#child = new Deno.Command("ip", {
      args: ["netns", "exec", env.client.name, "busybox", "nc", ip, String(port)],
      stdin: "piped",
      stdout: "piped",
      stderr: "null",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.#reader = this.#child.stdout.getReader();
  }

  /** GET /hostname on the held connection: the answering pod's name. */
  async ask(ms = 5000): Promise<string> {
    await this.#writer.write(new TextEncoder().encode("GET /hostname HTTP/1.1\r\nHost: svc\r\n\r\n"));
    const end = Date.now() + ms;
    for (;;) {
      const head = this.#buf.indexOf("\r\n\r\n");
      const len = Number(/content-length:\s*(\d+)/i.exec(this.#buf)?.[1] ?? -1);
      if (head >= 0 && len >= 0 && this.#buf.length >= head + 4 + len) {
        const body = this.#buf.slice(head + 4, head + 4 + len);
        this.#buf = this.#buf.slice(head + 4 + len);
        return body;
      }
      const left = end - Date.now();
      if (left <= 0) throw new Error("no answer on the held connection");
      let timer: ReturnType<typeof setTimeout> | undefined;
      const r = await Promise.race([
        this.#reader.read(),
        new Promise<never>((_, rej) => (timer = setTimeout(() => rej(new Error("no answer in time")), left))),
      ]).finally(() => clearTimeout(timer));
      if (r.done) throw new Error("the held connection closed");
      this.#buf += new TextDecoder().decode(r.value);
    }
  }

  async close(): Promise<void> {
    await this.#writer.close().catch(() => {});
    const t = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 2000);
    await this.#child.status;
    clearTimeout(t);
    await this.#reader.cancel().catch(() => {});
  }
}

/** What only IPVS has; run after CASES, on the same world, with graceful termination on. */
const IPVS_CASES: ProxyCase[] = [
  {
    name:
      "IPVS rr (the default) takes the pods strictly in turn; the cluster IP sits on kube-dummy-if, the node's address never",
    async run(env) {
      await env.put(service("rr", {
        ...cip(1),
        type: "NodePort",
        ports: [{ name: "http", port: 80, protocol: "TCP", nodePort: 30100 }],
      }));
      await env.put(slices("rr", [0, 1, 2])[0]!);
      assert.match(await ipvsadm(env), /172\.16\.1\.1:80 rr/);
      assert.deepEqual(sorted(await env.spread("client", "http://172.16.1.1/hostname", 6)), [
        ["pod-a", 2],
        ["pod-b", 2],
        ["pod-c", 2],
      ]);
      assert.deepEqual(sorted(await env.spread("client", `http://${NODE_IP}:30100/hostname`, 3)), [
        ["pod-a", 1],
        ["pod-b", 1],
        ["pod-c", 1],
      ]);
      const addrs = (await env.node.exec(["ip", "-o", "addr", "show", "dev", "kube-dummy-if"])).stdout;
      assert.match(addrs, /172\.16\.1\.1\/32/);
      assert.doesNotMatch(addrs, new RegExp(NODE_IP.replaceAll(".", "\\.")));
    },
  },
  {
    name: "IPVS wrr with kube-router's weights (1 for every endpoint) serves the pods in equal shares",
    async run(env) {
      await scheduled(env, "wrr", 2, "wrr");
      const dests = (await ipvsadm(env, "-t", "172.16.1.2:80")).split("\n").filter((l) => l.includes("->"));
      assert.equal(dests.filter((l) => /Masq +1 /.test(l)).length, 3, dests.join("\n"));
      assert.deepEqual(sorted(await env.spread("client", "http://172.16.1.2/hostname", 6)), [
        ["pod-a", 2],
        ["pod-b", 2],
        ["pod-c", 2],
      ]);
    },
  },
  {
    name: "IPVS lc sends new connections away from the pod holding a live connection",
    async run(env) {
      await scheduled(env, "lc", 3, "lc");
      const held = new HeldConnection(env, "172.16.1.3", 80);
      try {
        const busy = await held.ask();
        assert.ok(POD_NAMES.includes(busy), busy);
        const fresh = await env.spread("client", "http://172.16.1.3/hostname", 6);
        assert.deepEqual(
          [...fresh.keys()].sort(),
          POD_NAMES.filter((p) => p !== busy),
          `the busy pod is ${busy}; fresh connections went to ${JSON.stringify(sorted(fresh))}`,
        );
        assert.equal(await held.ask(), busy, "the held connection still works");
      } finally {
        await held.close();
      }
    },
  },
  {
    name: "IPVS dh sends every connection to one VIP to the same pod, whichever the source",
    async run(env) {
      await scheduled(env, "dh", 4, "dh");
      const seen = new Map<string, number>();
      for (const from of ["client", "node", 0, 1, 2] as const) {
        for (const [pod, n] of await env.spread(from, "http://172.16.1.4/hostname", 2)) {
          seen.set(pod, (seen.get(pod) ?? 0) + n);
        }
      }
      assert.equal(seen.size, 1, JSON.stringify(sorted(seen)));
      assert.ok(POD_NAMES.includes([...seen.keys()][0]!), JSON.stringify(sorted(seen)));
    },
  },
  {
    name: "IPVS sh keeps each source on one pod, and different sources on different pods",
    async run(env) {
      await scheduled(env, "sh", 5, "sh");
      const chosen = new Set<string>();
      for (const from of ["client", "node", 0, 1, 2] as const) {
        const seen = await env.spread(from, "http://172.16.1.5/hostname", 3);
        assert.equal(seen.size, 1, `from ${from}: ${JSON.stringify(sorted(seen))}`);
        assert.ok(POD_NAMES.includes([...seen.keys()][0]!), `from ${from}: ${JSON.stringify(sorted(seen))}`);
        chosen.add([...seen.keys()][0]!);
      }
      assert.ok(chosen.size >= 2, `five sources hashed to ${[...chosen].join(", ")}`);
    },
  },
  {
    name:
      "IPVS mh hashes the source address (one client, one pod); with schedflags flag-2 (mh-port) the source port too",
    async run(env) {
      await scheduled(env, "mh", 6, "mh");
      await scheduled(env, "mhport", 7, "mh", "flag-1,flag-2");
      assert.match(await ipvsadm(env, "-t", "172.16.1.7:80"), /mh \(mh-fallback,mh-port\)/);
      const pinned = await env.spread("client", "http://172.16.1.6/hostname", 6);
      assert.equal(pinned.size, 1, JSON.stringify(sorted(pinned)));
      const spread = await env.spread("client", "http://172.16.1.7/hostname", 9);
      assert.ok(
        spread.size >= 2,
        `mh-port: one client's connections spread (${JSON.stringify(sorted(spread))})`,
      );
      for (const k of spread.keys()) assert.ok(POD_NAMES.includes(k), k);
    },
  },
  {
    name:
      "IPVS graceful termination: a removed pod's live connection keeps working at weight 0, new ones avoid it, it goes after --ipvs-graceful-period",
    async run(env) {
      await env.put(service("drain", cip(8)));
      await env.put(slices("drain", [0, 1])[0]!);
      const held = new HeldConnection(env, "172.16.1.8", 80);
      let closed = false;
      try {
        const first = await held.ask();
        const gone = POD_NAMES.indexOf(first);
        assert.ok(gone === 0 || gone === 1, first);
        const stays = 1 - gone;
        await env.put(slices("drain", [stays])[0]!);
        const t0 = Date.now();
        const goneDest = new RegExp(`-> 10\\.1\\.1\\.1${gone}:8080 +Masq +0 +1 `);
        assert.match(await ipvsadm(env, "-t", "172.16.1.8:80"), goneDest, "weight 0, one active connection");
        assert.equal(await held.ask(), first, "the live connection survives the removal");
        assert.deepEqual(sorted(await env.spread("client", "http://172.16.1.8/hostname", 3)), [[
          POD_NAMES[stays]!,
          3,
        ]]);
        await sleep(1500);
        assert.match(await ipvsadm(env, "-t", "172.16.1.8:80"), goneDest, "still draining inside the period");
        assert.equal(await held.ask(), first);
        assert.ok(Date.now() - t0 < GRACEFUL_PERIOD_S * 1000, "the checks above ran inside the period");
        await held.close();
        closed = true;
        // A closed connection stays in IPVS as inactive (TIME_WAIT) for 2 minutes, so the period ends it.
        await eventually(
          "the drained destination deleted after the graceful period",
          async () => !(await ipvsadm(env, "-t", "172.16.1.8:80")).includes(`10.1.1.1${gone}:8080`),
          GRACEFUL_PERIOD_S * 1000 + 10_000,
        );
        assert.ok(Date.now() - t0 >= GRACEFUL_PERIOD_S * 1000 - 1000, "not before the period");
      } finally {
        if (!closed) await held.close();
      }
    },
  },
  {
    name: "IPVS kube_router_service_total_connections counts a virtual service's connections",
    async run(env) {
      // IPVS folds its per-CPU counters into the totals every 2 s, and the gauges are read at each sync:
      // every poll re-puts the Service, which syncs.
      let touch = 0;
      await eventually("kube_router_service_total_connections of 172.16.1.1 at 6 or more", async () => {
        await env.put(service("rr", {
          ...cip(1),
          type: "NodePort",
          ports: [{ name: "http", port: 80, protocol: "TCP", nodePort: 30100 }],
        }, { metadata: { annotations: { touched: String(++touch) } } }));
        const m = (await env.metrics()).match(
          /kube_router_service_total_connections\{[^}]*service_vip="172\.16\.1\.1"[^}]*\} (\d+)/,
        );
        return m !== null && Number(m[1]) >= 6;
      });
    },
  },
  {
    name: "IPVS --cleanup-config leaves no IPVS service, no kube-dummy-if and no proxy table",
    async run(env) {
      assert.match(await ipvsadm(env), /TCP/);
      await env.cleanup();
      assert.doesNotMatch(await ipvsadm(env), /TCP|UDP|SCTP/);
      const link = await env.node.exec(["ip", "link", "show", "kube-dummy-if"], { check: false });
      assert.notEqual(link.code, 0, "kube-dummy-if is gone");
      assert.doesNotMatch((await env.node.exec(["nft", "list", "tables"])).stdout, /kube_router_proxy/);
      assert.equal((await env.get("client", "http://172.16.1.1/hostname", 2)).ok, false);
    },
  },
];

Deno.test({
  name: "the IPVS service proxy passes the Service semantics cases, then the IPVS-only ones",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const env = await ProxyEnv.create();
    try {
      await env.startProxy(IPVS_FLAGS, []);
      assert.equal(env.backend, "ipvs");
      for (const c of CASES) {
        const ok = await t.step(c.name, () => c.run(env));
        if (!ok) console.error(await env.dump(), env.driver.stderr);
      }
      // An agent restart (the kernel state stays) with graceful termination for what follows.
      await env.driver.kill();
      await env.startProxy(
        [...IPVS_FLAGS, "--ipvs-graceful-termination", `--ipvs-graceful-period=${GRACEFUL_PERIOD_S}s`],
        [],
      );
      for (const c of IPVS_CASES) {
        const ok = await t.step(c.name, () => c.run(env));
        if (!ok) console.error(await env.dump().catch((e) => String(e)), env.driver.stderr);
      }
    } finally {
      await env.close();
    }
  },
});
