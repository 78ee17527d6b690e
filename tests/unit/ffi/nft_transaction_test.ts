import assert from "node:assert/strict";
import { errorLocations, NftSpecError, NftTransaction } from "../../../ffi/mod.ts";

Deno.test("a transaction renders tables, chains, sets, maps, elements and rules in nft -f syntax, one command a line", () => {
  const tx = new NftTransaction("inet", "kube_router_proxy")
    .add({ table: { comment: "rules for Services" } })
    .add({
      chain: {
        name: "nat-pre",
        type: "nat",
        hook: "prerouting",
        priority: -100,
        policy: "accept",
        comment: "dnat",
      },
    })
    .add({ chain: { name: "svc-web" } })
    .add({ set: { name: "cidrs", type: "ipv4_addr", flags: ["interval"], comment: "pods" } })
    .add({
      map: {
        name: "vips",
        type: "ipv4_addr . inet_proto . inet_service",
        map: "verdict",
        flags: ["timeout"],
        timeout: "10800s",
        counter: true,
      },
    })
    .add({
      element: { set: "vips", key: ["172.16.0.10", "tcp", "80"], value: ["goto svc-web"], comment: "web" },
    })
    .add({ element: { set: "vips", key: ["172.16.0.11", "udp", "53"], value: ["goto svc-web"] } })
    .add({ element: { set: "cidrs", key: ["10.0.0.0/8"] } })
    .add({
      rule: { chain: "nat-pre", rule: "ip daddr . meta l4proto . th dport vmap @vips", comment: "services" },
    })
    .insert({ rule: { chain: "svc-web", rule: "counter", index: 0 } })
    .replace({ rule: { chain: "svc-web", rule: "accept", handle: 7 } })
    .delete({ rule: { chain: "svc-web", rule: "", handle: 9 } });
  assert.equal(tx.size, 12);
  assert.equal(
    tx.render(),
    [
      `add table inet kube_router_proxy { comment "rules for Services"; }`,
      `add chain inet kube_router_proxy nat-pre { type nat hook prerouting priority -100; policy accept; comment "dnat"; }`,
      `add chain inet kube_router_proxy svc-web`,
      `add set inet kube_router_proxy cidrs { type ipv4_addr; flags interval; comment "pods"; }`,
      `add map inet kube_router_proxy vips { type ipv4_addr . inet_proto . inet_service : verdict; flags timeout; timeout 10800s; counter; }`,
      `add element inet kube_router_proxy vips { 172.16.0.10 . tcp . 80 comment "web" : goto svc-web, 172.16.0.11 . udp . 53 : goto svc-web }`,
      `add element inet kube_router_proxy cidrs { 10.0.0.0/8 }`,
      `add rule inet kube_router_proxy nat-pre ip daddr . meta l4proto . th dport vmap @vips comment "services"`,
      `insert rule inet kube_router_proxy svc-web index 0 counter`,
      `replace rule inet kube_router_proxy svc-web handle 7 accept`,
      `delete rule inet kube_router_proxy svc-web handle 9`,
      "",
    ].join("\n"),
  );
});

Deno.test("flush, delete and create render their verbs, and deleting elements names keys only", () => {
  const tx = new NftTransaction("ip", "t")
    .create({ table: {} })
    .flush({ chain: { name: "c" } })
    .flush({ map: { name: "m", type: "ipv4_addr", map: "verdict" } })
    .flush({ table: {} })
    .delete({ element: { set: "m", key: ["10.0.0.1"], value: ["accept"] } })
    .delete({ element: { set: "m", key: ["10.0.0.2"] } })
    .delete({ set: { name: "s", type: "ipv4_addr" } })
    .delete({ chain: { name: "c" } })
    .delete({ table: {} });
  assert.deepEqual(tx.render().trimEnd().split("\n"), [
    "create table ip t",
    "flush chain ip t c",
    "flush map ip t m",
    "flush table ip t",
    "delete element ip t m { 10.0.0.1, 10.0.0.2 }",
    "delete set ip t s",
    "delete chain ip t c",
    "delete table ip t",
  ]);
});

Deno.test("destroy is rendered as add then delete of the same object (nft 1.0.6 has no destroy)", () => {
  const tx = new NftTransaction("inet", "t")
    .destroy({ chain: { name: "c", type: "filter", hook: "input", priority: 0 } })
    .destroy({ set: { name: "s", type: "ipv4_addr", flags: ["interval"] } })
    .destroy({ element: { set: "m", key: ["10.0.0.1", "tcp", "80"], value: ["goto c"] } })
    .destroy({ table: { comment: "x" } });
  assert.equal(tx.size, 4);
  assert.deepEqual(tx.render().trimEnd().split("\n"), [
    "add chain inet t c",
    "delete chain inet t c",
    "add set inet t s { type ipv4_addr; flags interval; }",
    "delete set inet t s",
    "add element inet t m { 10.0.0.1 . tcp . 80 : goto c }",
    "delete element inet t m { 10.0.0.1 . tcp . 80 }",
    "add table inet t",
    "delete table inet t",
  ]);
});

Deno.test("names that are not nft identifiers, bad comments and impossible verbs are refused when added", () => {
  const tx = new NftTransaction("inet", "t");
  const refused = (f: () => unknown, what: string) => assert.throws(f, NftSpecError, what);
  refused(() => tx.add({ chain: { name: "9lives" } }), "leading digit");
  refused(() => tx.add({ chain: { name: "a b" } }), "space");
  refused(() => tx.add({ chain: { name: "c", comment: 'say "hi"' } }), "quote in comment");
  refused(() => tx.add({ rule: { chain: "c", rule: "accept", comment: "x".repeat(129) } }), "long comment");
  refused(() => tx.add({ rule: { chain: "c", rule: "accept; delete table inet t" } }), "injected command");
  refused(() => tx.add({ rule: { chain: "c", rule: "accept\nflush ruleset" } }), "newline");
  refused(() => tx.add({ element: { set: "s", key: ["10.0.0.1, 10.0.0.2"] } }), "two keys in one part");
  refused(() => tx.add({ element: { set: "s", key: [] } }), "empty key");
  refused(
    () => tx.add({ chain: { name: "c", type: "filter", hook: "input" } }),
    "base chain without priority",
  );
  refused(() => tx.destroy({ rule: { chain: "c", rule: "accept" } }), "destroy rule");
  refused(() => tx.delete({ rule: { chain: "c", rule: "" } }), "delete rule without handle");
  refused(() => tx.add({ set: { name: "s", type: "ipv4_addr; flush ruleset" } }), "type injection");
  refused(() => new NftTransaction("inet", "kube router"), "table name");
  refused(() => tx.add({ chain: { name: "c".repeat(256) } }), "longer than the kernel's 255 characters");
  tx.add({ chain: { name: "c".repeat(255) } });
  assert.equal(tx.size, 1);
  refused(() => tx.add({ chain: { name: "fwd" } }), "a keyword (nft reads fwd as the fwd statement)");
  refused(() => tx.add({ rule: { chain: "ct", rule: "accept" } }), "keyword chain in a rule");
  refused(() => tx.add({ set: { name: "ll", type: "ipv4_addr" } }), "keyword after @");
  assert.equal(tx.size, 1);
  tx.add({ rule: { chain: "c", rule: "accept", comment: "é".repeat(64) } });
  assert.equal(tx.size, 2);
});

Deno.test("nft's error locations map back to the operation, and inside a merged element line to the element", () => {
  const tx = new NftTransaction("inet", "t")
    .add({ table: {} })
    .add({ chain: { name: "svc" } })
    .add({ element: { set: "m", key: ["10.0.0.3", "tcp", "80"], value: ["goto svc"] } })
    .add({ element: { set: "m", key: ["10.0.0.4", "tcp", "81"], value: ["goto nosuch"] } })
    .destroy({ table: {} });
  const text = tx.render().split("\n");
  const line3 = text[2]!;
  const from = line3.indexOf("10.0.0.4") + 1;
  const to = line3.indexOf("nosuch") + "nosuch".length;
  // What nft 1.0.6 prints for the kernel refusing one element of a batch.
  const message = `/dev/stdin:3:${from}-${to}: Error: Could not process rule: No such file or directory\n` +
    `${line3}\n${" ".repeat(from - 1)}${"^".repeat(to - from + 1)}\n`;
  const locs = errorLocations(message);
  assert.deepEqual(locs, [{ line: 3, from, to }]);
  assert.deepEqual(tx.operationsAt(locs), [3]);
  // A location on the set's name names every element of the line.
  const setCol = line3.indexOf(" m ") + 2;
  assert.deepEqual(tx.operationsAt([{ line: 3, from: setCol, to: setCol }]), [2, 3]);
  // Both lines of an emulated destroy name the destroy.
  assert.deepEqual(tx.operationsAt(errorLocations("<cmdline>:5:1-20: Error: x\n")), [4]);
  assert.deepEqual(tx.operationsAt(errorLocations("<cmdline>:1:1-3: Error: x\n<cmdline>:2:5-9: Error: y")), [
    0,
    1,
  ]);
  assert.deepEqual(tx.operationsAt([]), []);
});

Deno.test("IPv6 addresses are accepted as element keys and values, but a spaced ' : ' inside a part is not", () => {
  const tx = new NftTransaction("inet", "t");
  tx.add({ element: { set: "s6", key: ["fd00:172::10", "tcp", "80"], value: ["goto svc6-a"] } });
  tx.add({ element: { set: "m6", key: ["fd00::1"], value: ["[fd00:1::5]:8080"] } });
  assert.match(tx.render(), /add element inet t s6 \{ fd00:172::10 \. tcp \. 80 : goto svc6-a \}/);
  assert.match(tx.render(), /\{ fd00::1 : \[fd00:1::5\]:8080 \}/);
  assert.throws(() => tx.add({ element: { set: "s", key: ["a : b"] } }), NftSpecError);
});

Deno.test("a typeof map renders its key and value expressions, and only plain expressions are taken", () => {
  const tx = new NftTransaction("inet", "t").add({
    map: {
      name: "eps",
      type: "typeof ip daddr . th dport . numgen random mod 65536",
      map: "ip daddr . tcp dport",
    },
  });
  assert.equal(
    tx.render(),
    "add map inet t eps { typeof ip daddr . th dport . numgen random mod 65536 : ip daddr . tcp dport; }\n",
  );
  const refused = (f: () => unknown, what: string) => assert.throws(f, NftSpecError, what);
  refused(() => tx.add({ set: { name: "s", type: "typeof ip daddr; flush ruleset" } }), "typeof injection");
  refused(
    () => tx.add({ map: { name: "m", type: "typeof ip daddr", map: "ip daddr }; flush ruleset" } }),
    "value injection",
  );
  refused(
    () => tx.add({ map: { name: "m", type: "ipv4_addr", map: "ip daddr . tcp dport" } }),
    "expression after type",
  );
  assert.equal(tx.size, 1);
});

Deno.test("elements given as text render, group, locate and read back exactly as their typed form", () => {
  const typed = new NftTransaction("inet", "t")
    .add({ chain: { name: "svc" } })
    .add({ element: { set: "m", key: ["10.0.0.3", "tcp", "80"], value: ["goto svc"] } })
    .add({ element: { set: "m", key: ["10.0.0.4", "tcp", "81"], value: ["drop"] } })
    .add({ element: { set: "eps", key: ["fd00::a", "80", "0"], value: ["fd00:1::5", "8080"] } })
    .add({ element: { set: "s", key: ["10.1.1.5", "10.1.1.5"] } })
    .delete({ element: { set: "m", key: ["10.0.0.9", "tcp", "80"] } });
  const text = new NftTransaction("inet", "t")
    .add({ chain: { name: "svc" } })
    .addElement("m", "10.0.0.3 . tcp . 80", "goto svc")
    .add({ element: { set: "m", key: ["10.0.0.4", "tcp", "81"], value: ["drop"] } })
    .addElement("eps", "fd00::a . 80 . 0", "fd00:1::5 . 8080")
    .addElement("s", "10.1.1.5 . 10.1.1.5")
    .deleteElement("m", "10.0.0.9 . tcp . 80");
  assert.equal(text.render(), typed.render());
  // Mixed forms on one set share one command line, as typed ones do.
  assert.equal(text.render().split("\n").filter((l) => l.startsWith("add element inet t m ")).length, 1);
  assert.deepEqual(text.operations, typed.operations);
  const line = text.render().split("\n")[1]!;
  const from = line.indexOf("10.0.0.4") + 1;
  assert.deepEqual(text.operationsAt([{ line: 2, from, to: from + 3 }]), [2]);
  assert.equal(text.size, typed.size);
});

Deno.test("elements given as text are refused when they hold nft punctuation, a lone ':' or a bad set name", () => {
  const tx = new NftTransaction("inet", "t");
  for (
    const key of ["", "a . b }", "a, b", "a ; b", "a # b", "10.0.0.1 : 80", "a\nb", "a  b", " a", 'a "b"']
  ) {
    assert.throws(() => tx.addElement("m", key), NftSpecError, JSON.stringify(key));
  }
  assert.throws(() => tx.addElement("m", "10.0.0.1", "goto x }"), NftSpecError);
  assert.throws(() => tx.addElement("m", "10.0.0.1", ": drop"), NftSpecError);
  assert.throws(() => tx.addElement("m", "10.0.0.1", ""), NftSpecError);
  assert.throws(() => tx.addElement("ct", "10.0.0.1"), NftSpecError);
  assert.throws(() => tx.deleteElement("bad name", "10.0.0.1"), NftSpecError);
  // After a refused name, the same name is still refused (nothing cached from a failure).
  assert.throws(() => tx.addElement("ct", "10.0.0.2"), NftSpecError);
  assert.equal(tx.size, 0);
  tx.addElement("m", "[fd00:1::5]:8080");
  assert.equal(tx.size, 1);
});

Deno.test("a transaction rendered ahead renders anew once an operation is added, in either form", () => {
  const tx = new NftTransaction("inet", "t").add({ chain: { name: "a" } });
  const first = tx.render();
  assert.equal(first, "add chain inet t a\n");
  tx.addElement("m", "10.0.0.1 . tcp . 80", "goto a");
  assert.equal(tx.render(), first + "add element inet t m { 10.0.0.1 . tcp . 80 : goto a }\n");
  tx.add({ chain: { name: "b" } });
  assert.match(tx.render(), /add chain inet t b\n$/);
  tx.deleteElement("m", "10.0.0.2 . tcp . 80");
  assert.match(tx.render(), /delete element inet t m \{ 10\.0\.0\.2 \. tcp \. 80 \}\n$/);
});
