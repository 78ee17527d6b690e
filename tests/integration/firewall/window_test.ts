/**
 * The no-open-window guarantee on real traffic: a client hammers a pod's address from before the pod's
 * network exists until well after the agent has learnt its IP, and not one forbidden connection may get
 * through. Plus restarts (the old rules enforce until the new ones replace them) and the periodic full
 * sync repairing hand edits.
 */
import assert from "node:assert/strict";
import { needs } from "../../_support/netns.ts";
import { FirewallNode, fwNeeds, type TestPod } from "./_node.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

/** One connection attempt of the hammer: when it ended (epoch ms) and whether the server answered. */
interface Attempt {
  at: number;
  ok: boolean;
}

/**
 * Starts a loop inside `from` that opens a TCP connection to ip:port again and again and prints one line
 * per attempt, "ok <ns>" when the server answered, "no <ns>" otherwise. Returns a stop function giving
 * the attempts.
 */
function hammer(from: TestPod, ip: string, port: number): () => Promise<Attempt[]> {
  const script = `while :; do if curl -s -m 0.3 --connect-timeout 0.3 -o /dev/null http://${ip}:${port}/; ` +
    `then echo ok $(date +%s%N); else echo no $(date +%s%N); fi; done`;
  const child = from.ns.spawn(["sh", "-c", script], { stdout: "piped" });
  const text = new Response(child.stdout).text();
  return async () => {
    child.kill("SIGKILL");
    await child.status;
    return (await text).split("\n").filter((l) => /^(ok|no) \d+$/.test(l)).map((l) => {
      const [r, ns] = l.split(" ");
      return { at: Number(BigInt(ns!) / 1_000_000n), ok: r === "ok" };
    });
  };
}

const count = (a: Attempt[], from = 0, to = Infinity) => {
  const inside = a.filter((x) => x.at >= from && x.at <= to);
  return { ok: inside.filter((x) => x.ok).length, no: inside.filter((x) => !x.ok).length };
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test({
  ...needs(
    "a pod selected by a deny policy passes no packet between its IP appearing and its rules",
    fwNeeds,
  ),
  ...opts,
  async fn() {
    const n = await FirewallNode.create();
    try {
      n.putNamespace("x");
      await n.addPodNetwork("x", "client");
      n.putPod("x", "client", { labels: { role: "client" } });
      n.putPolicy("x", "deny-new", {
        podSelector: { matchLabels: { app: "new" } },
        policyTypes: ["Ingress"],
      });
      await n.startAgent();
      await n.settle();
      // The scheduler placed the pod here; it has no IP yet (the kubelet is still running CNI).
      n.putPod("x", "new", { labels: { app: "new" }, withIp: false });
      await n.settle();
      const client = n.pods.get("x/client")!;
      const nextIp = "10.1.1.3"; // the harness hands out .2, .3, … in order
      const stop = hammer(client, nextIp, 80);
      await sleep(300);
      const pod = await n.addPodNetwork("x", "new"); // the IP appears and the server listens at once
      assert.equal(pod.ip, nextIp);
      const windowOpens = Date.now();
      await sleep(1500); // the agent does not know the IP yet: the window kube-router #873 is about
      const windowCloses = Date.now();
      n.putPod("x", "new", { labels: { app: "new" } }); // the kubelet reports the IP
      await n.settle();
      await sleep(500);
      const attempts = await stop();
      assert.equal(count(attempts).ok, 0, `no connection may succeed: ${JSON.stringify(count(attempts))}`);
      const inWindow = count(attempts, windowOpens, windowCloses);
      assert.ok(inWindow.no >= 3, `the client kept trying through the window: ${JSON.stringify(inWindow)}`);

      // The same hammering reaches a pod nobody selects while the agent does not know it yet: the test
      // can see an open window when there is one.
      n.putPod("x", "open", { labels: { app: "open" }, withIp: false });
      await n.settle();
      const stop2 = hammer(client, "10.1.1.4", 80);
      await n.addPodNetwork("x", "open");
      await sleep(1000);
      const counts2 = count(await stop2());
      assert.ok(counts2.ok > 0, `an unselected pod is open: ${JSON.stringify(counts2)}`);
    } finally {
      await n.close();
    }
  },
});

Deno.test({
  ...needs(
    "--netpol-default-deny refuses a pod the agent has never heard of until its rules are in",
    fwNeeds,
  ),
  ...opts,
  async fn() {
    const n = await FirewallNode.create();
    try {
      n.putNamespace("x");
      await n.addPodNetwork("x", "client");
      n.putPod("x", "client");
      n.putPolicy("x", "deny-new", {
        podSelector: { matchLabels: { app: "new" } },
        policyTypes: ["Ingress", "Egress"],
      });
      await n.startAgent(["--netpol-default-deny"]);
      await n.settle();
      const client = n.pods.get("x/client")!;
      const stop = hammer(client, "10.1.1.3", 80);
      const pod = await n.addPodNetwork("x", "new");
      // The new pod talks out too, before the agent has seen it at all.
      const stopOut = hammer(pod, client.ip, 80);
      await sleep(1000);
      n.putPod("x", "new", { labels: { app: "new" } });
      await n.settle();
      await sleep(500);
      const inbound = count(await stop()), outbound = count(await stopOut());
      assert.equal(inbound.ok, 0, `inbound: ${JSON.stringify(inbound)}`);
      assert.equal(outbound.ok, 0, `outbound: ${JSON.stringify(outbound)}`);
      assert.ok(inbound.no >= 3 && outbound.no >= 3, JSON.stringify({ inbound, outbound }));
      // Known now, and its policy isolates it both ways.
      assert.equal(await n.reach("x/new", "x/client", 80), false);
      n.source.remove("networkpolicies", "x/deny-new");
      await n.settle();
      assert.ok(await n.reach("x/client", "x/new", 80), "once known and unselected, the pod is open");
    } finally {
      await n.close();
    }
  },
});

Deno.test({
  ...needs(
    "an agent restart keeps the rules enforcing until the new agent's first sync replaces them",
    fwNeeds,
  ),
  ...opts,
  async fn() {
    const n = await FirewallNode.create();
    try {
      n.putNamespace("x");
      await n.addPodNetwork("x", "a");
      await n.addPodNetwork("x", "b");
      n.putPod("x", "a", { labels: { pod: "a" } });
      n.putPod("x", "b", { labels: { pod: "b" } });
      n.putPolicy("x", "deny-a", { podSelector: { matchLabels: { pod: "a" } } });
      await n.startAgent();
      await n.settle();
      const b = n.pods.get("x/b")!, a = n.pods.get("x/a")!;
      const stop = hammer(b, a.ip, 80);
      await n.stopAgent();
      await sleep(500);
      assert.match(
        (await n.node.exec(["nft", "list", "table", "inet", "kube_router_firewall"])).stdout,
        /reject/,
      );
      await n.startAgent();
      await n.settle();
      assert.equal(n.firewall!.lastSync?.kind, "full");
      await sleep(300);
      const counts = count(await stop());
      assert.equal(counts.ok, 0, JSON.stringify(counts));
      assert.ok(counts.no >= 3, JSON.stringify(counts));
      assert.equal(n.nft.transactions.length, 2, "one transaction per agent start");
    } finally {
      await n.close();
    }
  },
});

Deno.test({
  ...needs("the periodic full sync repairs a hand edit", fwNeeds),
  ...opts,
  async fn() {
    const n = await FirewallNode.create();
    try {
      n.putNamespace("x");
      await n.addPodNetwork("x", "a");
      await n.addPodNetwork("x", "b");
      n.putPod("x", "a", { labels: { pod: "a" } });
      n.putPod("x", "b", { labels: { pod: "b" } });
      n.putPolicy("x", "deny-a", { podSelector: { matchLabels: { pod: "a" } } });
      await n.startAgent(["--iptables-sync-period=2s"]);
      await n.settle();
      assert.equal(await n.reach("x/b", "x/a", 80), false);
      await n.node.exec(["nft", "flush", "map", "inet", "kube_router_firewall", "ingress-v4"]);
      await n.node.exec(["nft", "add", "chain", "inet", "kube_router_firewall", "hand-made"]);
      assert.ok(await n.reach("x/b", "x/a", 80), "the hand edit opened the pod");
      const deadline = Date.now() + 6000;
      while (await n.reach("x/b", "x/a", 80)) {
        assert.ok(Date.now() < deadline, "the periodic sync did not repair the map");
        await sleep(200);
      }
      const table = (await n.node.exec(["nft", "list", "table", "inet", "kube_router_firewall"])).stdout;
      assert.doesNotMatch(table, /hand-made/);
    } finally {
      await n.close();
    }
  },
});

Deno.test({
  ...needs(
    "a Service is judged by the endpoint the proxy's DNAT chose and by the client's address before masquerade",
    fwNeeds,
  ),
  ...opts,
  async fn() {
    const n = await FirewallNode.create();
    try {
      n.putNamespace("x");
      await n.addPodNetwork("x", "a");
      await n.addPodNetwork("x", "b");
      await n.addPodNetwork("x", "c");
      n.putPod("x", "a", { labels: { pod: "a" } });
      n.putPod("x", "b", { labels: { pod: "b" } });
      n.putPod("x", "c", { labels: { pod: "c" } });
      // b may talk to a only; the Service VIP itself is in no rule.
      n.putPolicy("x", "b-to-a", {
        podSelector: { matchLabels: { pod: "b" } },
        policyTypes: ["Egress"],
        egress: [{ to: [{ podSelector: { matchLabels: { pod: "a" } } }] }],
      });
      await n.startAgent();
      await n.settle();
      // Stand-in for the proxy: DNAT in prerouting at -100 in its own table.
      const a = n.pods.get("x/a")!, c = n.pods.get("x/c")!;
      await n.node.exec(["nft", "-f", "-"], {
        stdin: `table ip test_proxy {
  chain pre { type nat hook prerouting priority -100; policy accept;
    ip daddr 172.16.0.10 tcp dport 80 dnat to ${a.ip}:80
    ip daddr 172.16.0.11 tcp dport 80 dnat to ${c.ip}:80
  }
}
`,
      });
      // b's route to the VIPs goes via the node (its default route).
      const b = n.pods.get("x/b")!;
      const get = (vip: string) =>
        b.ns.exec(["curl", "-s", "-m", "1", `http://${vip}:80/`], { check: false }).then((r) => r.stdout);
      assert.equal(await get("172.16.0.10"), "a");
      assert.equal(await get("172.16.0.11"), "", "the endpoint c is not allowed");

      // Ingress through a Service whose traffic the proxy masquerades: the firewall judges the client's
      // real address, before the source NAT in postrouting.
      n.putPolicy("x", "a-from-c-only", {
        podSelector: { matchLabels: { pod: "a" } },
        ingress: [{ from: [{ podSelector: { matchLabels: { pod: "c" } } }] }],
      });
      await n.settle();
      await n.node.exec(["nft", "-f", "-"], {
        stdin: `table ip test_proxy {
  chain post { type nat hook postrouting priority 100; policy accept;
    ip daddr ${a.ip} tcp dport 80 masquerade
  }
}
`,
      });
      const viaVip = (from: string) =>
        n.pods.get(from)!.ns.exec(["curl", "-s", "-m", "1", "http://172.16.0.10:80/"], { check: false })
          .then((r) => r.stdout);
      assert.equal(await viaVip("x/c"), "a", "c is allowed although its packets leave masqueraded");
      n.putPolicy("x", "b-to-a", {
        podSelector: { matchLabels: { pod: "b" } },
        policyTypes: ["Egress"],
        egress: [{}],
      });
      await n.settle();
      assert.equal(
        await viaVip("x/b"),
        "",
        "b is refused although masquerading would make it look like the node",
      );
    } finally {
      await n.close();
    }
  },
});

Deno.test({
  ...needs("--cleanup-config removes the firewall's table and nothing else", { ...fwNeeds }),
  ...opts,
  async fn() {
    const n = await FirewallNode.create();
    try {
      n.putNamespace("x");
      await n.addPodNetwork("x", "a");
      n.putPod("x", "a");
      n.putPolicy("x", "deny", {});
      await n.startAgent();
      await n.settle();
      await n.stopAgent();
      await n.node.exec(["nft", "add", "table", "inet", "someone_else"]);
      const root = new URL("../../../", import.meta.url).pathname;
      const cleanup = () =>
        n.node.exec([
          Deno.execPath(),
          "run",
          "--allow-all",
          `${root}main.ts`,
          "--cleanup-config",
          "--run-router=false",
          "--run-service-proxy=false",
        ], {
          check: false,
        });
      const out = await cleanup();
      assert.equal(out.code, 0, out.stderr);
      const tables = (await n.node.exec(["nft", "list", "tables"])).stdout;
      assert.doesNotMatch(tables, /kube_router_firewall/);
      assert.match(tables, /inet someone_else/);
      assert.equal((await cleanup()).code, 0, "a second cleanup finds nothing and succeeds");
    } finally {
      await n.close();
    }
  },
});
