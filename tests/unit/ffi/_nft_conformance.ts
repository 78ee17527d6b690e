/**
 * Conformance cases for typed nftables transactions (`NftRuleset.run`), run against FakeNftables and the
 * kernel by the same runners as the rest of _conformance.ts. States are compared as `nft list ruleset` text
 * (the fake's `dump()`, the kernel's `dumpText()`), normalised only for what the kernel does not keep in a
 * stable form: element order (hash order), line wrapping of element lists, and timeouts' `expires`.
 */
import assert from "node:assert/strict";
import { isBusy, isExists, isNotFound, NftError, type NftRuleset, NftTransaction } from "../../../ffi/mod.ts";
import { type Case, rejects } from "./_conformance.ts";

/** The ruleset as `nft list ruleset` prints it, normalised (see the module comment). */
export async function dumpOf(n: NftRuleset): Promise<string> {
  const d = n as unknown as { dump?: () => string; dumpText?: () => Promise<string> };
  const text = d.dump ? d.dump() : await d.dumpText!();
  return normalizeDump(text);
}

/** Sorts and unwraps element lists and drops `expires …`. */
export function normalizeDump(text: string): string {
  return text.replace(/elements = \{([^}]*)\}/g, (_m, body: string) => {
    const elems = body.split(",").map((e) => e.replace(/\s+/g, " ").replace(/ expires \S+/, "").trim());
    return `elements = { ${elems.sort().join(", ")} }`;
  }).split("\n").map((l) => l.trimEnd()).join("\n").trim();
}

const tx = () => new NftTransaction("inet", "ctx");

/** Table ctx with a chain "svc" and "other", a verdict map "vips" on ipv4 and "vips6" on ipv6. */
function base(): NftTransaction {
  return tx()
    .add({ table: {} })
    .add({ chain: { name: "svc" } })
    .add({ chain: { name: "other" } })
    .add({ map: { name: "vips", type: "ipv4_addr . inet_proto . inet_service", map: "verdict" } })
    .add({ map: { name: "vips6", type: "ipv6_addr . inet_proto . inet_service", map: "verdict" } });
}

async function expectDump(n: NftRuleset, expected: string): Promise<void> {
  assert.equal(await dumpOf(n), normalizeDump(expected));
}

async function failure(p: Promise<unknown>): Promise<NftError> {
  const e = await p.then(() => undefined, (e) => e);
  assert.ok(e instanceof NftError, `expected an NftError, got ${String(e)}`);
  return e;
}

export const nftTxCases: Case<NftRuleset>[] = [
  {
    name:
      "transactions: verdict maps keyed by address . protocol . port hold IPv4 and IPv6 elements with jumps and gotos",
    fn: async (n) => {
      await n.run(
        base()
          .add({ element: { set: "vips", key: ["172.16.0.10", "tcp", "80"], value: ["goto svc"] } })
          .add({ element: { set: "vips", key: ["172.16.0.10", "udp", "53"], value: ["jump other"] } })
          .add({ element: { set: "vips", key: ["172.16.0.11", "sctp", "9000"], value: ["drop"] } })
          .add({ element: { set: "vips6", key: ["fd00::10", "tcp", "443"], value: ["goto svc"] } })
          .add({ element: { set: "vips6", key: ["fd00::11", "udp", "53"], value: ["accept"] } }),
      );
      await expectDump(
        n,
        `table inet ctx {
	map vips {
		type ipv4_addr . inet_proto . inet_service : verdict
		elements = { 172.16.0.10 . tcp . 80 : goto svc, 172.16.0.10 . udp . 53 : jump other, 172.16.0.11 . sctp . 9000 : drop }
	}

	map vips6 {
		type ipv6_addr . inet_proto . inet_service : verdict
		elements = { fd00::10 . tcp . 443 : goto svc, fd00::11 . udp . 53 : accept }
	}

	chain svc {
	}

	chain other {
	}
}`,
      );
    },
  },
  {
    name: "transactions: interval sets hold CIDRs, single addresses and port ranges",
    fn: async (n) => {
      await n.run(
        tx().add({ table: {} })
          .add({ set: { name: "cidrs", type: "ipv4_addr", flags: ["interval"] } })
          .add({ set: { name: "cidrs6", type: "ipv6_addr", flags: ["interval"] } })
          .add({ set: { name: "ports", type: "inet_service", flags: ["interval"] } })
          .add({ element: { set: "cidrs", key: ["10.0.0.0/8"] } })
          .add({ element: { set: "cidrs", key: ["192.168.1.1"] } })
          .add({ element: { set: "cidrs", key: ["172.16.0.0/12"] } })
          .add({ element: { set: "cidrs6", key: ["fd00::/8"] } })
          .add({ element: { set: "ports", key: ["30000-32767"] } })
          .add({ element: { set: "ports", key: ["80"] } }),
      );
      await n.run(tx().delete({ element: { set: "cidrs", key: ["172.16.0.0/12"] } }));
      await expectDump(
        n,
        `table inet ctx {
	set cidrs {
		type ipv4_addr
		flags interval
		elements = { 10.0.0.0/8, 192.168.1.1 }
	}

	set cidrs6 {
		type ipv6_addr
		flags interval
		elements = { fd00::/8 }
	}

	set ports {
		type inet_service
		flags interval
		elements = { 80, 30000-32767 }
	}
}`,
      );
    },
  },
  {
    name: "transactions: an interval overlapping another is refused, in a later transaction or the same one",
    fn: async (n) => {
      await n.run(
        tx().add({ table: {} })
          .add({ set: { name: "cidrs", type: "ipv4_addr", flags: ["interval"] } })
          .add({ set: { name: "ports", type: "inet_service", flags: ["interval"] } })
          .add({ element: { set: "cidrs", key: ["10.0.0.0/8"] } })
          .add({ element: { set: "ports", key: ["30000-32767"] } }),
      );
      const before = await dumpOf(n);
      const inside = await failure(
        n.run(
          tx().add({ element: { set: "cidrs", key: ["192.168.0.0/16"] } })
            .add({ element: { set: "cidrs", key: ["10.1.0.0/16"] } }),
        ),
      );
      assert.deepEqual(inside.operations, [1]);
      const ports = await failure(n.run(tx().add({ element: { set: "ports", key: ["32000"] } })));
      assert.deepEqual(ports.operations, [0]);
      const same = await failure(
        n.run(
          tx().add({ element: { set: "cidrs", key: ["11.0.0.0/8"] } })
            .add({ element: { set: "cidrs", key: ["11.0.0.5"] } }),
        ),
      );
      assert.ok(same.operations.includes(1), `operations ${same.operations}`);
      assert.equal(await dumpOf(n), before);
      // Adjacent, not overlapping; and the same element again is a no-op.
      await n.run(
        tx().add({ element: { set: "cidrs", key: ["11.0.0.0/8"] } })
          .add({ element: { set: "cidrs", key: ["10.0.0.0/8"] } })
          .add({ element: { set: "ports", key: ["32768"] } }),
      );
      assert.match(await dumpOf(n), /elements = \{ 10\.0\.0\.0\/8, 11\.0\.0\.0\/8 \}/);
    },
  },
  {
    name: "transactions: a 20,000-element map takes element-wise deletes and adds without a reload",
    fn: async (n) => {
      const key = (i: number) => [`10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`, "tcp", String(80 + (i % 3))];
      const load = base();
      for (let i = 0; i < 20_000; i++) {
        load.add({ element: { set: "vips", key: key(i), value: ["goto svc"] } });
      }
      await n.run(load);
      const change = tx();
      for (let i = 0; i < 20_000; i += 10) change.delete({ element: { set: "vips", key: key(i) } });
      for (let i = 20_000; i < 20_500; i++) {
        change.add({ element: { set: "vips", key: key(i), value: ["jump other"] } });
      }
      await n.run(change);
      const [m] = await n.list({ map: { family: "inet", table: "ctx", name: "vips" } });
      const elems = (m?.map as { elem: unknown[] }).elem.map((e) => JSON.stringify(e));
      assert.equal(elems.length, 20_000 - 2_000 + 500);
      const has = (i: number) =>
        elems.includes(JSON.stringify([{ concat: [key(i)[0], "tcp", Number(key(i)[2])] }, {
          [i >= 20_000 ? "jump" : "goto"]: { target: i >= 20_000 ? "other" : "svc" },
        }]));
      assert.ok(!has(0) && !has(19_990), "deleted");
      assert.ok(has(1) && has(19_999) && has(20_499), "kept and added");
    },
  },
  {
    name: "transactions: counters on sets and rules, and rule comments, list back",
    fn: async (n) => {
      await n.run(
        tx().add({ table: {} })
          .add({ chain: { name: "in", type: "filter", hook: "input", priority: 0, policy: "accept" } })
          .add({ set: { name: "seen", type: "ipv4_addr", counter: true, comment: "counted" } })
          .add({ element: { set: "seen", key: ["10.0.0.1"] } })
          .add({ rule: { chain: "in", rule: "ip saddr @seen counter accept", comment: "kube-router: seen" } })
          .add({ rule: { chain: "in", rule: "tcp dport 22 counter drop" } }),
      );
      await expectDump(
        n,
        `table inet ctx {
	set seen {
		type ipv4_addr
		counter
		comment "counted"
		elements = { 10.0.0.1 counter packets 0 bytes 0 }
	}

	chain in {
		type filter hook input priority filter; policy accept;
		ip saddr @seen counter packets 0 bytes 0 accept comment "kube-router: seen"
		tcp dport 22 counter packets 0 bytes 0 drop
	}
}`,
      );
    },
  },
  {
    name: "transactions: base chains print their priorities as nft names them, and rules jump and goto",
    fn: async (n) => {
      await n.run(
        base()
          .add({ chain: { name: "pre", type: "nat", hook: "prerouting", priority: -100 } })
          .add({ chain: { name: "early", type: "filter", hook: "prerouting", priority: -110 } })
          .add({ chain: { name: "out", type: "nat", hook: "output", priority: -100 } })
          .add({ chain: { name: "forward", type: "filter", hook: "forward", priority: 0, policy: "drop" } })
          .add({ chain: { name: "post", type: "nat", hook: "postrouting", priority: 100, comment: "snat" } })
          .add({ rule: { chain: "pre", rule: "ip daddr 172.16.0.10 jump svc" } })
          .add({ rule: { chain: "pre", rule: "ip daddr . meta l4proto . th dport vmap @vips" } })
          .add({ rule: { chain: "svc", rule: "meta mark set 0x00004000 goto other" } })
          .add({ rule: { chain: "post", rule: "meta mark & 0x00004000 == 0x00004000 masquerade" } }),
      );
      await expectDump(
        n,
        `table inet ctx {
	map vips {
		type ipv4_addr . inet_proto . inet_service : verdict
	}

	map vips6 {
		type ipv6_addr . inet_proto . inet_service : verdict
	}

	chain svc {
		meta mark set 0x00004000 goto other
	}

	chain other {
	}

	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		ip daddr 172.16.0.10 jump svc
		ip daddr . meta l4proto . th dport vmap @vips
	}

	chain early {
		type filter hook prerouting priority dstnat - 10; policy accept;
	}

	chain out {
		type nat hook output priority -100; policy accept;
	}

	chain forward {
		type filter hook forward priority filter; policy drop;
	}

	chain post {
		comment "snat"
		type nat hook postrouting priority srcnat; policy accept;
		meta mark & 0x00004000 == 0x00004000 masquerade
	}
}`,
      );
      // A chain jumped to by a rule, or used by a rule's @map, cannot go; a jump to a missing chain fails.
      await rejects(n.run(tx().delete({ chain: { name: "other" } })), isBusy, "goto target");
      await rejects(n.run(tx().delete({ map: { name: "vips", type: "x", map: "verdict" } })), isBusy, "vmap");
      await rejects(
        n.run(tx().add({ rule: { chain: "pre", rule: "jump nosuch" } })),
        isNotFound,
        "jump nowhere",
      );
    },
  },
  {
    name: "transactions: flushing a chain empties it, and then the chains it jumped to can be deleted",
    fn: async (n) => {
      await n.run(
        base()
          .add({ rule: { chain: "svc", rule: "jump other" } })
          .add({ rule: { chain: "svc", rule: "accept" } }),
      );
      await rejects(n.run(tx().delete({ chain: { name: "other" } })), isBusy, "jumped to");
      await n.run(tx().flush({ chain: { name: "svc" } }).delete({ chain: { name: "other" } }));
      await expectDump(
        n,
        `table inet ctx {
	map vips {
		type ipv4_addr . inet_proto . inet_service : verdict
	}

	map vips6 {
		type ipv6_addr . inet_proto . inet_service : verdict
	}

	chain svc {
	}
}`,
      );
    },
  },
  {
    name: "transactions: flushing a table empties its chains and leaves set and map elements",
    fn: async (n) => {
      await n.run(
        base()
          .add({ rule: { chain: "svc", rule: "jump other" } })
          .add({ element: { set: "vips", key: ["10.0.0.1", "tcp", "80"], value: ["goto other"] } }),
      );
      await n.run(tx().flush({ table: {} }));
      // "other" is still the target of a map element: busy.
      await rejects(n.run(tx().delete({ chain: { name: "other" } })), isBusy, "still a verdict");
      await expectDump(
        n,
        `table inet ctx {
	map vips {
		type ipv4_addr . inet_proto . inet_service : verdict
		elements = { 10.0.0.1 . tcp . 80 : goto other }
	}

	map vips6 {
		type ipv6_addr . inet_proto . inet_service : verdict
	}

	chain svc {
	}

	chain other {
	}
}`,
      );
    },
  },
  {
    name: "transactions: adding an existing base chain updates its policy, never its hook or priority",
    fn: async (n) => {
      const chain = { name: "in", type: "filter", hook: "input", priority: 0, policy: "accept" } as const;
      await n.run(tx().add({ table: {} }).add({ chain }).add({ chain: { name: "plain" } }));
      await n.run(tx().add({ chain: { ...chain, policy: "drop" } }).add({ chain: { name: "in" } }));
      await failure(n.run(tx().add({ chain: { ...chain, priority: 10 } })));
      const { policy: _p, ...noPolicy } = chain;
      await rejects(n.run(tx().add({ chain: { ...noPolicy, name: "plain" } })), isExists, "regular to base");
      assert.ok(
        !isExists(await failure(n.run(tx().add({ chain: { ...chain, name: "plain" } })))),
        "with a policy",
      );
      await expectDump(
        n,
        `table inet ctx {
	chain in {
		type filter hook input priority filter; policy drop;
	}

	chain plain {
	}
}`,
      );
    },
  },
  {
    name: "transactions: create of an existing table, chain, map or element fails as exists",
    fn: async (n) => {
      await n.run(
        base().add({ element: { set: "vips", key: ["10.0.0.1", "tcp", "80"], value: ["goto svc"] } }),
      );
      const before = await dumpOf(n);
      await rejects(n.run(tx().create({ table: {} })), isExists, "table");
      await rejects(n.run(tx().create({ chain: { name: "svc" } })), isExists, "chain");
      await rejects(
        n.run(
          tx().create({
            map: { name: "vips", type: "ipv4_addr . inet_proto . inet_service", map: "verdict" },
          }),
        ),
        isExists,
        "map",
      );
      await rejects(
        n.run(tx().create({ element: { set: "vips", key: ["10.0.0.1", "tcp", "80"], value: ["goto svc"] } })),
        isExists,
        "element",
      );
      await rejects(
        n.run(tx().add({ element: { set: "vips", key: ["10.0.0.1", "tcp", "80"], value: ["jump other"] } })),
        isExists,
        "element with another value",
      );
      // A set or map declared again with another shape exists already; another comment is ignored.
      await n.run(tx().add({ set: { name: "s", type: "ipv4_addr", flags: ["interval"] } }));
      await rejects(n.run(tx().add({ set: { name: "s", type: "ipv4_addr" } })), isExists, "other flags");
      await rejects(
        n.run(tx().add({ set: { name: "s", type: "ipv4_addr", flags: ["interval"], counter: true } })),
        isExists,
        "counter",
      );
      await rejects(
        n.run(tx().add({ set: { name: "s", type: "ipv6_addr", flags: ["interval"] } })),
        isExists,
        "type",
      );
      await rejects(
        n.run(tx().add({ map: { name: "s", type: "ipv4_addr", map: "verdict" } })),
        isExists,
        "as a map",
      );
      await n.run(tx().add({ set: { name: "s", type: "ipv4_addr", flags: ["interval"], comment: "later" } }));
      await n.run(tx().delete({ set: { name: "s", type: "ipv4_addr" } }));
      // add of what exists is a no-op
      await n.run(
        base().add({ element: { set: "vips", key: ["10.0.0.1", "tcp", "80"], value: ["goto svc"] } }),
      );
      assert.equal(await dumpOf(n), before);
    },
  },
  {
    name: "transactions: delete of a missing table, chain, set, map, element or rule fails as not found",
    fn: async (n) => {
      await rejects(n.run(tx().delete({ table: {} })), isNotFound, "table");
      await n.run(base().add({ set: { name: "s", type: "ipv4_addr" } }));
      await rejects(n.run(tx().delete({ chain: { name: "nochain" } })), isNotFound, "chain");
      await rejects(n.run(tx().delete({ set: { name: "noset", type: "ipv4_addr" } })), isNotFound, "set");
      await rejects(
        n.run(tx().delete({ map: { name: "nomap", type: "ipv4_addr", map: "verdict" } })),
        isNotFound,
        "map",
      );
      await rejects(n.run(tx().delete({ element: { set: "s", key: ["10.0.0.1"] } })), isNotFound, "element");
      await rejects(
        n.run(tx().delete({ element: { set: "noset", key: ["10.0.0.1"] } })),
        isNotFound,
        "element of",
      );
      await rejects(
        n.run(tx().delete({ rule: { chain: "svc", rule: "", handle: 4242 } })),
        isNotFound,
        "rule",
      );
      await rejects(n.run(tx().flush({ chain: { name: "nochain" } })), isNotFound, "flush chain");
    },
  },
  {
    name: "transactions: destroy removes present objects and ignores missing ones",
    fn: async (n) => {
      // Missing: the table, then objects in an existing table.
      await n.run(tx().destroy({ table: {} }));
      assert.equal(await dumpOf(n), "");
      await n.run(
        base()
          .add({ set: { name: "s", type: "ipv4_addr", flags: ["interval"] } })
          .add({ element: { set: "s", key: ["10.0.0.0/8"] } })
          .add({ element: { set: "vips", key: ["10.0.0.1", "tcp", "80"], value: ["goto svc"] } })
          .add({ chain: { name: "in", type: "filter", hook: "input", priority: 0 } }),
      );
      await n.run(
        tx().destroy({ chain: { name: "gone" } })
          .destroy({ set: { name: "gone", type: "ipv4_addr" } })
          .destroy({ map: { name: "gone", type: "ipv4_addr", map: "verdict" } })
          .destroy({ element: { set: "s", key: ["192.168.0.0/16"] } })
          .destroy({ element: { set: "vips", key: ["10.0.0.2", "tcp", "80"], value: ["goto svc"] } }),
      );
      // Present: elements, a base chain, a set, a map.
      await n.run(
        tx().destroy({ element: { set: "s", key: ["10.0.0.0/8"] } })
          .destroy({ element: { set: "vips", key: ["10.0.0.1", "tcp", "80"], value: ["goto svc"] } })
          .destroy({ chain: { name: "in" } })
          .destroy({ set: { name: "s", type: "ipv4_addr", flags: ["interval"] } })
          .destroy({ map: { name: "vips6", type: "ipv6_addr . inet_proto . inet_service", map: "verdict" } }),
      );
      await expectDump(
        n,
        `table inet ctx {
	map vips {
		type ipv4_addr . inet_proto . inet_service : verdict
	}

	chain svc {
	}

	chain other {
	}
}`,
      );
      await n.run(tx().destroy({ table: {} }));
      assert.equal(await dumpOf(n), "");
    },
  },
  {
    name: "transactions: a failing transaction changes nothing and names the failing operation",
    fn: async (n) => {
      await n.run(
        base().add({ element: { set: "vips", key: ["10.0.0.1", "tcp", "80"], value: ["goto svc"] } }),
      );
      const before = await dumpOf(n);
      const bad = tx()
        .add({ chain: { name: "svc-new" } })
        .flush({ chain: { name: "svc" } })
        .delete({ element: { set: "vips", key: ["10.0.0.1", "tcp", "80"] } })
        .add({ element: { set: "vips", key: ["10.0.0.2", "tcp", "80"], value: ["goto svc-new"] } })
        .add({ element: { set: "vips", key: ["10.0.0.3", "tcp", "80"], value: ["goto nosuch"] } })
        .add({ element: { set: "vips", key: ["10.0.0.4", "tcp", "80"], value: ["goto svc"] } });
      const e = await failure(n.run(bad));
      assert.ok(isNotFound(e), e.message);
      assert.deepEqual(e.operations, [4]);
      assert.equal(await dumpOf(n), before);
      const e2 = await failure(
        n.run(tx().add({ chain: { name: "x" } }).delete({ chain: { name: "nochain" } })),
      );
      assert.deepEqual(e2.operations, [1]);
      assert.equal(await dumpOf(n), before);
    },
  },
];
