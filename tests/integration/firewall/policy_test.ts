/**
 * NetworkPolicy enforced on real traffic: pods in network namespaces on one node's bridge and one
 * remote "node", the firewall module programming the node namespace's nftables.
 */
import assert from "node:assert/strict";
import { needs } from "../../_support/netns.ts";
import { FirewallNode, fwNeeds } from "./_node.ts";

/** x/a, x/b, y/c on this node; z/r on the remote node. Servers on TCP and UDP 80 and 81. */
async function standard(flags: string[] = []): Promise<FirewallNode> {
  const n = await FirewallNode.create();
  try {
    n.putNamespace("x", { ns: "x" });
    n.putNamespace("y", { ns: "y" });
    n.putNamespace("z", { ns: "z" });
    await n.addPodNetwork("x", "a");
    await n.addPodNetwork("x", "b");
    await n.addPodNetwork("y", "c");
    await n.addRemotePod("z", "r", 5);
    await n.remote.exec(["true"]);
    n.putPod("x", "a", {
      labels: { pod: "a" },
      ports: [{ name: "serve-80", containerPort: 80 }, {
        name: "serve-81-udp",
        containerPort: 81,
        protocol: "UDP",
      }],
    });
    n.putPod("x", "b", { labels: { pod: "b" } });
    n.putPod("y", "c", { labels: { pod: "c" } });
    n.putPod("z", "r", { labels: { pod: "r" }, ports: [{ name: "serve-80", containerPort: 80 }] });
    await n.startAgent(flags);
    await n.settle();
    return n;
  } catch (err) {
    await n.close();
    throw err;
  }
}

const t = (name: string, fn: (n: FirewallNode) => Promise<void>, flags: string[] = []) =>
  Deno.test({
    ...needs(name, fwNeeds),
    sanitizeOps: false,
    sanitizeResources: false,
    async fn() {
      const n = await standard(flags);
      try {
        await fn(n);
      } finally {
        await n.close();
      }
    },
  });

t("without policies every pod reaches every other, on both families", async (n) => {
  assert.ok(await n.reach("x/b", "x/a", 80));
  assert.ok(await n.reach("x/b", "x/a", 81, { udp: true }));
  assert.ok(await n.reach("y/c", "x/a", 80, { v6: true }));
});

t(
  "deny-all ingress blocks; an allow rule for a labelled client lets only it through; the drop is counted",
  async (n) => {
    n.putPolicy("x", "deny-all", { podSelector: {} });
    await n.settle();
    assert.equal(await n.reach("x/b", "x/a", 80), false);
    assert.equal(await n.reach("y/c", "x/a", 80, { v6: true }), false);
    assert.ok(await n.reach("x/a", "y/c", 80), "egress is not isolated, and replies pass");
    n.putPolicy("x", "allow-client", {
      podSelector: { matchLabels: { pod: "a" } },
      ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { role: "client" } } }] }],
    });
    n.putPod("y", "c", { labels: { pod: "c", role: "client" } });
    await n.settle();
    assert.ok(await n.reach("y/c", "x/a", 80));
    assert.ok(await n.reach("y/c", "x/a", 81, { udp: true }));
    assert.ok(await n.reach("y/c", "x/a", 80, { v6: true }));
    assert.equal(await n.reach("x/b", "x/a", 80), false, "others stay blocked");
    const counts = await n.firewall!.refreshDropCounters();
    assert.ok((counts.get("x/deny-all") ?? 0) >= 3, `drops counted for x/deny-all: ${[...counts]}`);
    assert.ok((counts.get("x/allow-client") ?? 0) >= 1);
    const metrics = n.agent!.metrics.render();
    assert.match(metrics, /kube_router_netpol_dropped_packets_total\{policy="x\/deny-all"\} [3-9]/);
    // A full sync rewrites every chain but keeps the per-policy counts.
    n.firewall!.requestFullSync();
    await n.settle();
    assert.equal(n.firewall!.lastSync?.kind, "full");
    const after = await n.firewall!.refreshDropCounters();
    assert.ok((after.get("x/deny-all") ?? 0) >= counts.get("x/deny-all")!, `kept: ${[...after]}`);
  },
);

t(
  "a namespaceSelector peer follows namespace relabelling while a pod selector follows pod labels",
  async (n) => {
    n.putPolicy("x", "from-team", {
      ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: "blue" } } }] }],
    });
    await n.settle();
    assert.equal(await n.reach("y/c", "x/a", 80), false);
    n.putNamespace("y", { ns: "y", team: "blue" });
    await n.settle();
    assert.ok(await n.reach("y/c", "x/a", 80));
    assert.equal(await n.reach("x/b", "x/a", 80), false);
    n.putNamespace("y", { ns: "y" });
    await n.settle();
    assert.equal(await n.reach("y/c", "x/a", 80), false);
    assert.equal(n.firewall!.lastSync?.kind, "incremental");
  },
);

t("podSelector with matchExpressions in the policy's namespace only", async (n) => {
  n.putPolicy("x", "exprs", {
    podSelector: { matchLabels: { pod: "a" } },
    ingress: [{
      from: [{ podSelector: { matchExpressions: [{ key: "pod", operator: "NotIn", values: ["a"] }] } }],
    }],
  });
  await n.settle();
  assert.ok(await n.reach("x/b", "x/a", 80));
  assert.equal(
    await n.reach("y/c", "x/a", 80),
    false,
    "y/c matches the expression but is in another namespace",
  );
});

t("ipBlock with except admits the block and refuses the hole, for IPv4 and IPv6", async (n) => {
  n.putPolicy("x", "cidr", {
    podSelector: { matchLabels: { pod: "a" } },
    ingress: [{
      from: [
        { ipBlock: { cidr: "10.1.0.0/16", except: ["10.1.1.0/24"] } },
        { ipBlock: { cidr: "fd00::/16", except: ["fd00:2::/64"] } },
      ],
    }],
  });
  await n.settle();
  assert.ok(await n.reach("z/r", "x/a", 80), "10.1.2.5 is inside 10.1.0.0/16");
  assert.equal(await n.reach("x/b", "x/a", 80), false, "10.1.1.x is in the except");
  assert.ok(await n.reach("x/b", "x/a", 80, { v6: true }), "fd00:1::x is in fd00::/16");
  assert.equal(await n.reach("z/r", "x/a", 80, { v6: true }), false, "fd00:2::5 is in the except");
});

t("ports: a number, a named port resolved on the target pod, an endPort range, UDP", async (n) => {
  n.putPolicy("x", "ports", {
    podSelector: { matchLabels: { pod: "a" } },
    ingress: [{ ports: [{ port: "serve-80" }, { protocol: "UDP", port: 70, endPort: 81 }] }],
  });
  await n.settle();
  assert.ok(await n.reach("x/b", "x/a", 80));
  assert.equal(await n.reach("x/b", "x/a", 81), false, "TCP 81 is not allowed");
  assert.ok(await n.reach("x/b", "x/a", 81, { udp: true }));
  assert.ok(await n.reach("x/b", "x/a", 80, { udp: true }));
  n.putPolicy("x", "ports", {
    podSelector: { matchLabels: { pod: "a" } },
    ingress: [{ ports: [{ protocol: "UDP", port: "serve-81-udp" }] }],
  });
  await n.settle();
  assert.ok(await n.reach("x/b", "x/a", 81, { udp: true }));
  assert.equal(await n.reach("x/b", "x/a", 80, { udp: true }), false);
  assert.equal(await n.reach("x/b", "x/a", 80), false);
});

t("egress: deny all but a named port on pods of a selected namespace, and an ipBlock", async (n) => {
  n.putNamespace("z", { ns: "z", egress: "ok" });
  n.putPolicy("x", "egress", {
    podSelector: { matchLabels: { pod: "b" } },
    policyTypes: ["Egress"],
    egress: [
      { to: [{ namespaceSelector: { matchLabels: { egress: "ok" } } }], ports: [{ port: "serve-80" }] },
      { to: [{ ipBlock: { cidr: "10.1.1.0/24" } }], ports: [{ protocol: "UDP", port: 81 }] },
    ],
  });
  await n.settle();
  assert.ok(await n.reach("x/b", "z/r", 80), "z/r declares serve-80 as 80");
  assert.equal(await n.reach("x/b", "z/r", 81), false);
  assert.equal(await n.reach("x/b", "x/a", 80), false, "x is not selected by the namespaceSelector");
  assert.ok(await n.reach("x/b", "x/a", 81, { udp: true }));
  assert.equal(await n.reach("x/b", "y/c", 80), false);
  assert.ok(await n.reach("x/a", "y/c", 80), "x/a is not selected: open");
  assert.ok(await n.reach("y/c", "x/b", 80), "ingress to x/b is open, and the reply passes its egress");
});

t("several policies add up, and deleting one takes its rules away", async (n) => {
  n.putPolicy("x", "p80", {
    podSelector: { matchLabels: { pod: "a" } },
    ingress: [{ ports: [{ port: 80 }] }],
  });
  n.putPolicy("x", "p81", {
    podSelector: { matchLabels: { pod: "a" } },
    ingress: [{ ports: [{ port: 81 }] }],
  });
  await n.settle();
  assert.ok(await n.reach("x/b", "x/a", 80));
  assert.ok(await n.reach("x/b", "x/a", 81));
  assert.equal(await n.reach("x/b", "x/a", 80, { udp: true }), false);
  n.source.remove("networkpolicies", "x/p81");
  await n.settle();
  assert.ok(await n.reach("x/b", "x/a", 80));
  assert.equal(await n.reach("x/b", "x/a", 81), false);
  n.source.remove("networkpolicies", "x/p80");
  await n.settle();
  assert.ok(await n.reach("x/b", "x/a", 81));
});

t("an established connection survives relabelling; new connections follow the new labels", async (n) => {
  n.putPolicy("x", "clients", {
    podSelector: { matchLabels: { pod: "a" } },
    ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { role: "client" } } }] }],
  });
  n.putPod("y", "c", { labels: { pod: "c", role: "client" } });
  await n.settle();
  const a = n.pods.get("x/a")!, c = n.pods.get("y/c")!;
  // A long-lived TCP connection from y/c to x/a:81 with data flowing both ways: x/a's end echoes with cat.
  const listener = a.ns.spawn(["busybox", "nc", "-l", "-p", "9000", "-e", "cat"]);
  await new Promise((r) => setTimeout(r, 300));
  const client = new Deno.Command("ip", {
    args: ["netns", "exec", c.ns.name, "busybox", "nc", a.ip, "9000"],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const w = client.stdin.getWriter();
  const r = client.stdout.getReader();
  const roundTrip = async (msg: string) => {
    await w.write(new TextEncoder().encode(msg + "\n"));
    const { value } = await Promise.race([
      r.read(),
      new Promise<never>((_, rej) => setTimeout(() => rej(new Error("no echo")), 3000)),
    ]);
    return new TextDecoder().decode(value).trim();
  };
  try {
    assert.equal(await roundTrip("one"), "one");
    n.putPod("y", "c", { labels: { pod: "c" } });
    await n.settle();
    assert.equal(await n.reach("y/c", "x/a", 80), false, "a new connection is refused after the relabel");
    assert.equal(await roundTrip("two"), "two", "the established one keeps flowing");
  } finally {
    await w.close().catch(() => {});
    for (const child of [client, listener]) {
      try {
        child.kill("SIGKILL");
      } catch { /* already exited */ }
      await child.status;
    }
  }
});

t("an invalid policy is logged and its valid parts enforced; other policies unaffected", async (n) => {
  n.putPolicy("x", "broken", {
    podSelector: { matchLabels: { pod: "a" } },
    ingress: [{ from: [{ ipBlock: { cidr: "10.1.0.0/99" } }] }, {
      ports: [{ protocol: "ICMP", port: 80 }, { port: 81 }],
    }],
  });
  n.putPolicy("y", "good", { ingress: [{ from: [{ namespaceSelector: { matchLabels: { ns: "x" } } }] }] });
  await n.settle();
  assert.equal(await n.reach("x/b", "x/a", 80), false, "x/a stays isolated: the broken peer allows nothing");
  assert.ok(await n.reach("x/b", "x/a", 81), "the valid port of the broken policy is kept");
  assert.ok(await n.reach("x/a", "y/c", 80));
  assert.ok(
    n.log.lines.some((l) => l.includes("x/broken") && l.includes("10.1.0.0/99")),
    "logged with the policy name",
  );
});

t("traffic from the node itself to an isolated pod passes (kubelet probes)", async (n) => {
  n.putPolicy("x", "deny-all", {});
  await n.settle();
  const r = await n.node.exec(["curl", "-s", "-m", "1", `http://${n.pods.get("x/a")!.ip}:80/`], {
    check: false,
  });
  assert.equal(r.stdout, "a");
});
