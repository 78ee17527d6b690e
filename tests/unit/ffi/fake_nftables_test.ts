import assert from "node:assert/strict";
import { FakeNftables, isBusy, isExists, isNotFound, NftError, NftTransaction } from "../../../ffi/mod.ts";

const tx = () => new NftTransaction("inet", "kube_router_proxy");

function base(): NftTransaction {
  return tx()
    .add({ table: { comment: "rules for Services" } })
    .add({ chain: { name: "nat-pre", type: "nat", hook: "prerouting", priority: -100, comment: "dnat" } })
    .add({ chain: { name: "filter-in", type: "filter", hook: "input", priority: 10, policy: "drop" } })
    .add({ chain: { name: "svc-web" } })
    .add({ set: { name: "cidrs", type: "ipv4_addr", flags: ["interval"] } })
    .add({
      map: {
        name: "vips",
        type: "ipv4_addr . inet_proto . inet_service",
        map: "verdict",
        flags: ["timeout"],
        timeout: "10800s",
        counter: true,
        comment: "vips",
      },
    })
    .add({ element: { set: "vips", key: ["172.16.0.11", "udp", "53"], value: ["goto svc-web"] } })
    .add({
      element: { set: "vips", key: ["172.16.0.10", "tcp", "80"], value: ["goto svc-web"], comment: "web" },
    })
    .add({ element: { set: "cidrs", key: ["10.0.0.0/8"] } })
    .add({
      rule: { chain: "nat-pre", rule: "ip daddr . meta l4proto . th dport vmap @vips", comment: "services" },
    })
    .add({ rule: { chain: "svc-web", rule: "counter accept" } });
}

Deno.test("dump prints the ruleset in nft list ruleset form, deterministically", async () => {
  const n = new FakeNftables();
  await n.run(base());
  const expected = `table inet kube_router_proxy {
	comment "rules for Services"
	set cidrs {
		type ipv4_addr
		flags interval
		elements = { 10.0.0.0/8 }
	}

	map vips {
		type ipv4_addr . inet_proto . inet_service : verdict
		counter
		timeout 3h
		comment "vips"
		elements = { 172.16.0.10 . tcp . 80 counter packets 0 bytes 0 comment "web" : goto svc-web,
			     172.16.0.11 . udp . 53 counter packets 0 bytes 0 : goto svc-web }
	}

	chain nat-pre {
		comment "dnat"
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr . meta l4proto . th dport vmap @vips comment "services"
	}

	chain filter-in {
		type filter hook input priority filter + 10; policy drop;
	}

	chain svc-web {
		counter packets 0 bytes 0 accept
	}
}
`;
  assert.equal(n.dump(), expected);
  // The same state reached in another order dumps the same.
  const m = new FakeNftables();
  const ops = base().operations;
  const again = tx();
  for (const op of ops.slice(0, 6)) again.add(op.object);
  again.add(ops[7]!.object).add(ops[6]!.object);
  for (const op of ops.slice(8)) again.add(op.object);
  await m.run(again);
  assert.equal(m.dump(), expected);
});

Deno.test("a failing operation undoes the whole transaction and names its index", async () => {
  const n = new FakeNftables();
  await n.run(base());
  const before = n.dump();
  const bad = tx()
    .add({ chain: { name: "svc-new" } })
    .delete({ element: { set: "vips", key: ["172.16.0.11", "udp", "53"] } })
    .flush({ set: { name: "cidrs", type: "ipv4_addr" } })
    .add({ element: { set: "vips", key: ["172.16.0.12", "tcp", "80"], value: ["goto svc-new"] } })
    .delete({ rule: { chain: "svc-web", rule: "", handle: 999 } });
  const err = await n.run(bad).then(() => undefined, (e) => e);
  assert.ok(err instanceof NftError && isNotFound(err), String(err));
  assert.deepEqual(err.operations, [4]);
  assert.equal(n.dump(), before);
  assert.equal(n.transactions, 1);
});

Deno.test("create, delete and destroy give exists, not found and never-fails as the kernel does", async () => {
  const n = new FakeNftables();
  await n.run(base());
  await assert.rejects(n.run(tx().create({ chain: { name: "svc-web" } })), isExists);
  await assert.rejects(n.run(tx().delete({ set: { name: "nope", type: "ipv4_addr" } })), isNotFound);
  await assert.rejects(
    n.run(tx().add({ element: { set: "vips", key: ["172.16.0.10", "tcp", "80"], value: ["accept"] } })),
    isExists,
    "same key, other value",
  );
  await n.run(
    tx().destroy({ chain: { name: "nope" } }).destroy({ element: { set: "cidrs", key: ["10.0.0.0/8"] } }),
  );
  await n.run(tx().destroy({ element: { set: "cidrs", key: ["10.0.0.0/8"] } }));
  assert.doesNotMatch(n.dump(), /10\.0\.0\.0\/8/);
  await assert.rejects(n.run(tx().delete({ chain: { name: "svc-web" } })), isBusy, "jumped to by the map");
  // Once nothing refers to it, the chain goes.
  await n.run(
    tx().flush({ map: { name: "vips", type: "x", map: "verdict" } }).delete({ chain: { name: "svc-web" } }),
  );
  assert.doesNotMatch(n.dump(), /svc-web/);
  await assert.rejects(
    n.run(tx().delete({ set: { name: "vips", type: "x" } })),
    isNotFound,
    "a map is not deleted as a set",
  );
  await assert.rejects(
    n.run(tx().delete({ map: { name: "vips", type: "x", map: "verdict" } })),
    isBusy,
    "@vips used",
  );
});

Deno.test("rules are placed by index and handle, replaced and deleted by handle", async () => {
  const n = new FakeNftables();
  await n.run(
    tx().add({ table: {} }).add({ chain: { name: "c" } }).add({
      rule: { chain: "c", rule: "tcp dport 1 accept" },
    }),
  );
  const h1 = 2; // handles count per table: chain 1, first rule 2
  await n.run(
    tx().add({ rule: { chain: "c", rule: "tcp dport 3 accept" } })
      .insert({ rule: { chain: "c", rule: "tcp dport 0 accept" } })
      .add({ rule: { chain: "c", rule: "tcp dport 2 accept", handle: h1 } })
      .insert({ rule: { chain: "c", rule: "tcp dport 9 drop", index: 0 } }),
  );
  const rules = () => n.dump().split("\n").filter((l) => l.startsWith("\t\ttcp")).map((l) => l.trim());
  assert.deepEqual(rules(), [
    "tcp dport 9 drop",
    "tcp dport 0 accept",
    "tcp dport 1 accept",
    "tcp dport 2 accept",
    "tcp dport 3 accept",
  ]);
  await n.run(tx().replace({ rule: { chain: "c", rule: "tcp dport 1 drop", handle: h1 } }));
  const listed = await n.list({ chain: { family: "inet", table: "kube_router_proxy", name: "c" } });
  const handles = listed.filter((o) => "rule" in o).map((o) => (o.rule as { handle: number }).handle);
  await n.run(tx().delete({ rule: { chain: "c", rule: "", handle: handles[0]! } }));
  assert.deepEqual(rules(), [
    "tcp dport 0 accept",
    "tcp dport 1 drop",
    "tcp dport 2 accept",
    "tcp dport 3 accept",
  ]);
  await assert.rejects(n.run(tx().add({ rule: { chain: "c", rule: "jump nosuch" } })), isNotFound);
});

Deno.test("a transaction on a 100,000-element map touches only what it names (no copy of the state)", async () => {
  const n = new FakeNftables();
  const load = tx().add({ table: {} }).add({ chain: { name: "svc" } })
    .add({ map: { name: "vips", type: "ipv4_addr", map: "verdict" } });
  for (let i = 0; i < 100_000; i++) {
    load.add({
      element: { set: "vips", key: [`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`], value: ["goto svc"] },
    });
  }
  await n.run(load);
  // A thousand small transactions, one of them failing: a state copy each would take minutes, not this.
  for (let i = 0; i < 1000; i++) {
    const k = `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`;
    const t = tx().delete({ element: { set: "vips", key: [k] } }).add({
      element: { set: "vips", key: [`11.0.${i >> 8}.${i & 255}`], value: ["goto svc"] },
    });
    if (i === 500) t.delete({ element: { set: "vips", key: ["12.0.0.0"] } });
    await n.run(t).catch((e) => assert.ok(isNotFound(e) && i === 500));
  }
  const [m] = await n.list({ map: { family: "inet", table: "kube_router_proxy", name: "vips" } });
  const elems = (m?.map as { elem: unknown[] }).elem;
  assert.equal(elems.length, 100_000);
  assert.ok(
    elems.some((e) => JSON.stringify(e) === '["10.0.1.244",{"goto":{"target":"svc"}}]'),
    "i=500 kept",
  );
  assert.equal(n.transactions, 1 + 999);
});
