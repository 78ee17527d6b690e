import assert from "node:assert/strict";
import { Agent } from "../../../core/agent.ts";
import { Bus } from "../../../core/bus.ts";
import { loadConfig } from "../../../core/config.ts";
import { getLogger, MemorySink } from "../../../core/log.ts";
import type { ModuleDefinition } from "../../../core/module.ts";
import { FakeNftables, FakeSysctl, NftTransaction } from "../../../ffi/mod.ts";
import { Firewall, firewallModule } from "../../../modules/firewall/mod.ts";
import { MapSource, ns, pod, policy } from "./_fixtures.ts";

async function start(flags: string[] = []) {
  const bus = new Bus();
  const source = new MapSource(bus);
  source.put("nodes", { metadata: { name: "n1" }, spec: { podCIDRs: ["10.1.1.0/24", "fd00:1::/64"] } });
  source.put("namespaces", ns("x"));
  source.put("namespaces", ns("y"));
  source.put("pods", pod("x", "a", { labels: { pod: "a" }, ips: ["10.1.1.2", "fd00:1::2"] }));
  source.put("pods", pod("x", "b", { labels: { pod: "b" }, ips: ["10.1.1.3"] }));
  source.put("pods", pod("y", "c", { node: "n2", labels: { pod: "c" }, ips: ["10.1.2.4"] }));
  source.put(
    "networkpolicies",
    policy("x", "allow-c", {
      podSelector: { matchLabels: { pod: "a" } },
      ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { role: "client" } } }] }],
    }),
  );
  const nft = new FakeNftables();
  const sysctl = new FakeSysctl({
    "net.bridge.bridge-nf-call-iptables": 0,
    "net.bridge.bridge-nf-call-ip6tables": 0,
  });
  let fw: Firewall | undefined;
  const def: ModuleDefinition = {
    ...firewallModule,
    create: (ctx) => fw = new Firewall(ctx, { nft, sysctl }),
  };
  const config = loadConfig([
    "--hostname-override=n1",
    "--run-router=false",
    "--run-service-proxy=false",
    "--health-port=0",
    "--enable-ipv6",
    ...flags,
  ]);
  const agent = new Agent({ config, bus, source, log: getLogger({}, new MemorySink()), modules: [def] });
  await agent.start();
  const settle = async () => {
    const deadline = Date.now() + 5000;
    while (!fw!.settled) {
      if (Date.now() > deadline) throw new Error("firewall did not settle");
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  await settle();
  return { agent, source, nft, sysctl, fw: fw!, settle };
}

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false, fn });

test("the first sync builds the whole table in one transaction and turns br_netfilter on", async () => {
  const { agent, nft, sysctl, fw } = await start();
  try {
    assert.equal(fw.lastSync?.kind, "full");
    assert.equal(nft.transactions, 1);
    const dump = nft.dump();
    assert.match(dump, /table inet kube_router_firewall/);
    assert.match(dump, /type filter hook forward priority (0|filter); policy accept;/);
    assert.match(dump, /10\.1\.1\.2 : goto in-[0-9a-f]+/);
    assert.match(dump, /fd00:1::2 : goto in-[0-9a-f]+/);
    assert.doesNotMatch(dump, /10\.1\.1\.3 : goto/, "x/b is selected by no policy");
    assert.equal(await sysctl.get("net.bridge.bridge-nf-call-iptables"), "1");
    assert.equal(await sysctl.get("net.bridge.bridge-nf-call-ip6tables"), "1");
  } finally {
    await agent.stop();
  }
});

test("relabelling a remote pod changes set elements only: no chain is rewritten", async () => {
  const { agent, source, fw, settle } = await start();
  try {
    source.put(
      "pods",
      pod("y", "c", { node: "n2", labels: { pod: "c", role: "client" }, ips: ["10.1.2.4"] }),
    );
    await settle();
    assert.equal(fw.lastSync?.kind, "incremental");
    assert.equal(fw.lastSync?.operations, 1, "one element added");
  } finally {
    await agent.stop();
  }
});

test("a new local pod gets its chain, map element and known-pod entry in the same transaction", async () => {
  const { agent, source, nft, fw, settle } = await start();
  try {
    const before = nft.transactions;
    source.put("pods", pod("x", "d", { labels: { pod: "a" }, ips: ["10.1.1.9"] }));
    await settle();
    assert.equal(nft.transactions, before + 1);
    assert.equal(fw.lastSync?.kind, "incremental");
    const dump = nft.dump();
    assert.match(dump, /10\.1\.1\.9 : goto in-/);
    assert.match(dump, /set local-pods-v4 \{[^}]*10\.1\.1\.9/s);
  } finally {
    await agent.stop();
  }
});

test("a pod scheduled here without an IP yet, and selected, turns unknown local addresses to deny", async () => {
  const { agent, source, nft, settle } = await start();
  try {
    assert.match(nft.dump(), /chain unknown-ingress \{[^}]*\}/s);
    assert.doesNotMatch(nft.dump(), /chain unknown-ingress \{[^}]*reject/s);
    source.put("pods", pod("x", "new", { labels: { pod: "a" }, ips: [] }));
    await settle();
    assert.match(nft.dump(), /chain unknown-ingress \{[^}]*reject/s);
    assert.doesNotMatch(nft.dump(), /chain unknown-egress \{[^}]*reject/s);
  } finally {
    await agent.stop();
  }
});

test("--netpol-default-deny denies unknown local addresses both ways from the first sync", async () => {
  const { agent, nft } = await start(["--netpol-default-deny"]);
  try {
    assert.match(nft.dump(), /chain unknown-ingress \{[^}]*reject/s);
    assert.match(nft.dump(), /chain unknown-egress \{[^}]*reject/s);
  } finally {
    await agent.stop();
  }
});

test("deleting the last policy removes the pod's chain, its map element and the unused sets", async () => {
  const { agent, source, nft, settle } = await start();
  try {
    source.remove("networkpolicies", "x/allow-c");
    await settle();
    const dump = nft.dump();
    assert.doesNotMatch(dump, /chain in-/);
    assert.doesNotMatch(dump, /set pods-/);
    assert.doesNotMatch(dump, /chain drop-/);
  } finally {
    await agent.stop();
  }
});

test("a full sync over a table with stale objects deletes them and keeps the rest", async () => {
  const nft = new FakeNftables();
  await nft.run(
    new NftTransaction("inet", "kube_router_firewall")
      .add({ table: {} })
      .add({ chain: { name: "in-stale" } })
      .add({ rule: { chain: "in-stale", rule: "reject" } })
      .add({ set: { name: "pods-stale-v4", type: "ipv4_addr" } }),
  );
  await nft.run(
    new NftTransaction("inet", "someone_else").add({ table: {} }).add({ chain: { name: "keep" } }),
  );
  const bus = new Bus();
  const source = new MapSource(bus);
  let fw: Firewall | undefined;
  const def: ModuleDefinition = {
    ...firewallModule,
    create: (ctx) => fw = new Firewall(ctx, { nft, sysctl: new FakeSysctl({}) }),
  };
  const config = loadConfig([
    "--hostname-override=n1",
    "--run-router=false",
    "--run-service-proxy=false",
    "--health-port=0",
  ]);
  const agent = new Agent({ config, bus, source, log: getLogger({}, new MemorySink()), modules: [def] });
  await agent.start();
  try {
    const deadline = Date.now() + 5000;
    while (!fw?.settled && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    const dump = nft.dump();
    assert.doesNotMatch(dump, /in-stale|pods-stale/);
    assert.match(dump, /chain forward/);
    assert.match(dump, /table inet someone_else/);
  } finally {
    await agent.stop();
  }
});
