/** The router's nftables table (pod egress) against FakeNftables; the kernel runs it in tests/integration/router/egress_test.ts. */
import assert from "node:assert/strict";
import { FakeNftables, NftTransaction } from "../../../ffi/mod.ts";
import {
  egressCleanupTransactions,
  egressTransaction,
  legacyTableCleanupTransaction,
} from "../../../modules/router/egress.ts";

const state = {
  podCidrs: ["10.1.1.0/24", "10.1.2.0/24", "fd00:1::/64"],
  nodeIps: ["192.168.1.100", "192.168.1.101", "fd00::100"],
  families: [4, 6] as (4 | 6)[],
  masquerade: true,
};

async function handles(n: FakeNftables): Promise<string[]> {
  const listed = await n.list({ table: { family: "inet", name: "kube_router_router" } });
  return listed.filter((o) => "table" in o || "chain" in o || "set" in o).map((o) => {
    const v = Object.values(o)[0] as { name: string; handle: number };
    return `${v.name}=${v.handle}`;
  });
}

Deno.test("the router's table is kube_router_router with pod egress masquerading for both families", async () => {
  const n = new FakeNftables();
  await n.run(egressTransaction(state));
  assert.equal(
    n.dump(),
    `table inet kube_router_router {
	comment "kube-router router: pod egress"
	set pod_subnets_v4 {
		type ipv4_addr
		flags interval
		elements = { 10.1.1.0/24,
			     10.1.2.0/24 }
	}

	set node_ips_v4 {
		type ipv4_addr
		elements = { 192.168.1.100,
			     192.168.1.101 }
	}

	set pod_subnets_v6 {
		type ipv6_addr
		flags interval
		elements = { fd00:1::/64 }
	}

	set node_ips_v6 {
		type ipv6_addr
		elements = { fd00::100 }
	}

	chain pod_egress {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr @pod_subnets_v4 ip daddr != @pod_subnets_v4 ip daddr != @node_ips_v4 masquerade fully-random comment "kube-router pod egress IPv4"
		ip6 saddr @pod_subnets_v6 ip6 daddr != @pod_subnets_v6 ip6 daddr != @node_ips_v6 masquerade fully-random comment "kube-router pod egress IPv6"
	}
}
`,
  );
});

Deno.test("a change updates the router's table in place: the table, chain and sets keep their handles", async () => {
  const n = new FakeNftables();
  await n.run(egressTransaction(state));
  const before = await handles(n);
  await n.run(egressTransaction({ ...state, podCidrs: ["10.1.1.0/24", "10.1.3.0/24", "fd00:1::/64"] }));
  assert.deepEqual(await handles(n), before);
  assert.match(n.dump(), /elements = \{ 10\.1\.1\.0\/24,\n\t+ +10\.1\.3\.0\/24 \}/);
  assert.doesNotMatch(n.dump(), /10\.1\.2\.0/);
  // Applying the same state again changes nothing.
  const dump = n.dump();
  await n.run(egressTransaction({ ...state, podCidrs: ["10.1.1.0/24", "10.1.3.0/24", "fd00:1::/64"] }));
  assert.equal(n.dump(), dump);
});

Deno.test("dropping a family removes its sets and rule; masquerade off leaves the sets and no rule", async () => {
  const n = new FakeNftables();
  await n.run(egressTransaction(state));
  await n.run(egressTransaction({ ...state, families: [4], masquerade: false }));
  const dump = n.dump();
  assert.doesNotMatch(dump, /_v6|masquerade/);
  assert.match(dump, /set pod_subnets_v4/);
  assert.match(
    dump,
    /chain pod_egress \{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n\t\}/,
  );
});

Deno.test("cleanup removes the router's table and the old-name table, and leaves an unrelated table untouched", async () => {
  const n = new FakeNftables();
  await n.run(
    new NftTransaction("inet", "kube_router").add({ table: {} }).add({ chain: { name: "pod_egress" } }),
  );
  await n.run(
    new NftTransaction("inet", "someone_else").add({ table: {} }).add({
      set: { name: "s", type: "ipv4_addr" },
    })
      .add({ element: { set: "s", key: ["10.0.0.1"] } }),
  );
  const unrelated = n.dump().slice(n.dump().indexOf("table inet someone_else"));
  await n.run(egressTransaction(state));
  // What the router does on start, after its own table is in place.
  await n.run(legacyTableCleanupTransaction());
  assert.doesNotMatch(n.dump(), /table inet kube_router \{/);
  assert.match(n.dump(), /table inet kube_router_router \{/);
  for (const tx of egressCleanupTransactions()) await n.run(tx);
  assert.equal(n.dump(), unrelated);
  // Nothing left to remove: cleanup still succeeds.
  for (const tx of egressCleanupTransactions()) await n.run(tx);
  assert.equal(n.dump(), unrelated);
});
