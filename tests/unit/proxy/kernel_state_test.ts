import assert from "node:assert/strict";
import { FakeNftables, type NftSetInfo, NftTransaction } from "../../../ffi/mod.ts";
import { type Belief, compareKernelState, type KernelReader } from "../../../modules/proxy/kernel_state.ts";

const TABLE = { family: "inet", name: "krt" };

/** A table with a verdict map, an endpoint map, a plain set, an interval set and a per-service set. */
async function table(): Promise<FakeNftables> {
  const fake = new FakeNftables();
  await fake.run(
    new NftTransaction("inet", "krt")
      .add({ table: {} })
      .add({ chain: { name: "pick" } })
      .add({ chain: { name: "svc4-default/web/tcp/http" } })
      .add({ map: { name: "vips", type: "ipv4_addr . inet_proto . inet_service", map: "verdict" } })
      .add({ map: { name: "eps", type: "ipv4_addr . inet_service . mark", map: "ipv4_addr . inet_service" } })
      .add({ set: { name: "ips", type: "ipv4_addr" } })
      .add({ set: { name: "ranges", type: "ipv4_addr", flags: ["interval"] } })
      .add({ set: { name: "aff-default/web", type: "ipv4_addr", flags: ["timeout"] } })
      .add({ map: { name: "skipped", type: "ipv4_addr", map: "verdict" } })
      .add({ element: { set: "vips", key: ["10.96.0.1", "tcp", "80"], value: ["goto pick"] } })
      .add({ element: { set: "vips", key: ["10.96.0.2", "tcp", "80"], value: ["drop"] } })
      .add({ element: { set: "vips", key: ["10.96.0.9", "tcp", "80"], value: ["goto pick"] } })
      .add({ element: { set: "eps", key: ["10.96.0.1", "80", "0"], value: ["10.1.2.5", "8080"] } })
      .add({ element: { set: "ips", key: ["10.96.0.1"] } })
      .add({ element: { set: "ranges", key: ["10.1.0.0/16"] } })
      .add({ element: { set: "skipped", key: ["10.0.0.1"], value: ["drop"] } }),
  );
  return fake;
}

/** A belief over a plain Map of element ids. */
function belief(ids: Record<string, string>): Belief {
  const m = new Map(Object.entries(ids));
  return {
    valueOf: (id) => m.get(id),
    counts: () => {
      const n = new Map<string, number>();
      for (const id of m.keys()) n.set(id.split("|")[0]!, (n.get(id.split("|")[0]!) ?? 0) + 1);
      return n;
    },
    idsOf: (set) => [...m.keys()].filter((id) => id.startsWith(`${set}|`)),
  };
}

/** The fake, counting listElements calls per set. */
function counting(fake: FakeNftables): KernelReader & { lists: Map<string, number> } {
  const lists = new Map<string, number>();
  return {
    lists,
    list: (t, o) => fake.list(t, o),
    listLayout: (t) => fake.listLayout(t),
    listElements: (t, set: NftSetInfo, each) => {
      lists.set(set.name, (lists.get(set.name) ?? 0) + 1);
      return fake.listElements(t, set, each);
    },
  };
}

Deno.test("elements the kernel holds as believed leave nothing behind, and each set is listed once", async () => {
  const nft = counting(await table());
  const diff = await compareKernelState(
    nft,
    TABLE,
    (s) => s === "skipped",
    belief({
      "vips|10.96.0.1 . tcp . 80": "goto pick",
      "vips|10.96.0.2 . tcp . 80": "drop",
      "vips|10.96.0.9 . tcp . 80": "goto pick",
      "eps|10.96.0.1 . 80 . 0": "10.1.2.5 . 8080",
      "ips|10.96.0.1": "",
      "ranges|10.1.0.0/16": "",
    }),
  );
  assert.ok(diff);
  assert.deepEqual(diff.odd, new Map());
  assert.deepEqual(diff.missing, new Set());
  assert.deepEqual([...diff.chains].sort(), ["pick", "svc4-default/web/tcp/http"]);
  assert.deepEqual([...diff.serviceSets], ["aff-default/web"]);
  // The interval set is refused by listElements and read through nft's JSON listing instead; the skipped
  // map is not read at all.
  assert.deepEqual(Object.fromEntries(nft.lists), { vips: 1, eps: 1, ips: 1, ranges: 1 });
});

Deno.test("another value, an element nobody believes in, missing ones and a believed set the table lacks are the differences", async () => {
  const nft = counting(await table());
  const diff = await compareKernelState(
    nft,
    TABLE,
    (s) => s === "skipped",
    belief({
      "vips|10.96.0.1 . tcp . 80": "goto pick",
      "vips|10.96.0.2 . tcp . 80": "goto pick", // the kernel says drop
      "vips|10.96.0.3 . tcp . 80": "goto pick", // not in the kernel
      "eps|10.96.0.1 . 80 . 0": "10.1.2.5 . 8080",
      "ips|10.96.0.1": "",
      "ranges|10.1.0.0/16": "",
      "ranges|10.2.0.0/16": "", // not in the kernel (an interval set: read through JSON)
      "gone|10.0.0.7": "", // a set the table does not have
    }),
  );
  assert.ok(diff);
  assert.deepEqual(
    diff.odd,
    new Map([["vips|10.96.0.2 . tcp . 80", "drop"], ["vips|10.96.0.9 . tcp . 80", "goto pick"]]),
  );
  assert.deepEqual([...diff.missing].sort(), [
    "gone|10.0.0.7",
    "ranges|10.2.0.0/16",
    "vips|10.96.0.3 . tcp . 80",
  ]);
  // Only the sets with a missing element are read a second time (keys only).
  assert.deepEqual(Object.fromEntries(nft.lists), { vips: 2, eps: 1, ips: 1, ranges: 2 });
});

Deno.test("a table that is gone compares to nothing", async () => {
  const diff = await compareKernelState(
    counting(new FakeNftables()),
    TABLE,
    () => false,
    belief({ "ips|1.2.3.4": "" }),
  );
  assert.equal(diff, undefined);
});
