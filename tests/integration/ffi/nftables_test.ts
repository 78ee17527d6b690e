import assert from "node:assert/strict";
import { needs, withNetns } from "../../_support/netns.ts";
import { inNetns } from "./_in_netns.ts";
import type * as S from "./_scenarios.ts";

const SCEN = new URL("./_scenarios.ts", import.meta.url);
type R<K extends keyof typeof S> = Awaited<ReturnType<(typeof S)[K]>>;

Deno.test({
  ...needs(
    "libnftables applies a table with a 10,000-element verdict map atomically, without blocking the event loop, and lists it back (in process and in a child nft -j alike)",
    {
      tools: ["ip", "nft"],
    },
  ),
  fn: () =>
    withNetns(["nftmap"], async (ns) => {
      const res = await inNetns<R<"nftVerdictMap">>(ns, SCEN, "nftVerdictMap", [10_000]);
      assert.equal(res.elems, 10_000);
      assert.ok(res.ticks > 0, "the event loop ran during the load");
      assert.deepEqual(res.first?.[1], { jump: { target: "svc" } });
      assert.deepEqual(res.kinds, ["table", "map", "chain", "chain", "rule"]);
      assert.equal(res.sameOutOfProcess, true, "listing in a child nft -j gives the same objects");
      // nft itself sees the same map.
      const out = JSON.parse((await ns.exec(["nft", "-j", "list", "map", "ip", "krt", "vips"])).stdout) as {
        nftables: { map?: { elem?: unknown[] } }[];
      };
      assert.equal(out.nftables.find((o) => o.map)?.map?.elem?.length, 10_000);
    }),
});

Deno.test({
  ...needs("a failing nft transaction changes nothing and reports nft's message", { tools: ["ip", "nft"] }),
  fn: () =>
    withNetns(["nftfail"], async (ns) => {
      const res = await inNetns<R<"nftFailingTransaction">>(ns, SCEN, "nftFailingTransaction");
      assert.equal(res.failure !== "ok" && res.failure.name, "NftError");
      assert.equal(res.failure !== "ok" && res.failure.notFound, true);
      assert.match(res.message, /No such file or directory/);
      assert.equal(res.same, true);
      assert.deepEqual(res.operations, [2], "the error names the failing operation");
      const ruleset = (await ns.exec(["nft", "list", "ruleset"])).stdout;
      assert.doesNotMatch(ruleset, /krtfail/);
      assert.doesNotMatch(ruleset, /10\.0\.0\.1/);
      assert.match(ruleset, /table ip keep/);
    }),
});

Deno.test({
  ...needs("nft's own syntax is applied through the same libnftables context", { tools: ["ip", "nft"] }),
  fn: () =>
    withNetns(["nfttext"], async (ns) => {
      const res = await inNetns<R<"nftText">>(ns, SCEN, "nftText");
      assert.deepEqual(res.kinds, ["table", "chain", "rule"]);
      assert.equal(res.bad !== "ok" && res.bad.name, "NftError");
      assert.match(
        (await ns.exec(["nft", "list", "table", "inet", "krttext"])).stdout,
        /udp dport 53 accept/,
      );
    }),
});

Deno.test({
  ...needs(
    "large nft loads through a child nft are atomic and report nft's errors; dry runs change nothing",
    {
      tools: ["ip", "nft"],
    },
  ),
  fn: () =>
    withNetns(["nftchild"], async (ns) => {
      const res = await inNetns<R<"nftChildProcess">>(ns, SCEN, "nftChildProcess");
      const elems = (s: typeof res.set) => ((s[0]?.set as { elem?: string[] })?.elem ?? []).sort();
      assert.deepEqual(elems(res.set), ["10.0.0.1", "10.0.0.2"]);
      assert.equal(res.failure !== "ok" && res.failure.name, "NftError");
      assert.equal(res.failure !== "ok" && res.failure.notFound, true);
      assert.deepEqual(elems(res.after), ["10.0.0.1", "10.0.0.2"], "the failed transaction added nothing");
      assert.deepEqual(res.operations, [1], "the child's error names the failing operation");
      assert.equal(res.dry !== "ok" && res.dry.notFound, true);
      assert.ok(!res.ruleset.includes("dryonly"), "a dry run commits nothing");
      assert.ok(res.ruleset.includes("krtchild"));
    }),
});

Deno.test({
  ...needs("without an nft binary, loads and listings meant for a child nft are done in process", {
    tools: ["ip", "nft"],
  }),
  fn: () =>
    withNetns(["nftnochild"], async (ns) => {
      const res = await inNetns<R<"nftChildMissing">>(ns, SCEN, "nftChildMissing");
      assert.deepEqual(res.elems, ["10.0.0.7"]);
      assert.match((await ns.exec(["nft", "list", "set", "ip", "krtnochild", "s"])).stdout, /10\.0\.0\.7/);
    }),
});

Deno.test({
  ...needs(
    "set element counters read over netlink equal what nft lists, for IPv4 and IPv6 concatenated keys",
    { tools: ["ip", "nft"] },
  ),
  fn: () =>
    withNetns(["nftcount"], async (ns) => {
      const res = await inNetns<R<"nftSetCounters">>(ns, SCEN, "nftSetCounters");
      assert.equal(res.refused, "ConnectionRefused");
      // 5 datagrams of 100 bytes (+ 8 UDP + 20 IP); one SYN (the reset comes back from lo, not to port 9).
      assert.deepEqual(res.v4, [
        ["127.0.0.1 . tcp . 9", 1, res.v4[0]![2]],
        ["127.0.0.1 . udp . 9", 5, 5 * 128],
        ["127.0.0.2 . sctp . 65535", 0, 0],
      ]);
      assert.ok(res.v4[0]![2] >= 40, "a SYN is at least 40 bytes");
      assert.deepEqual(res.v6, [["fd00:99::1 . udp . 53", 3, 3 * 148]]);
      assert.deepEqual(res.v4, res.listed4, "the same as libnftables lists");
      assert.deepEqual(res.v6, res.listed6);
      assert.equal(res.missing?.notFound, true, "an absent set is not found");
    }),
});

Deno.test({
  ...needs(
    "a table's layout and each set's elements read over netlink print as nft prints them, and interval and other types are refused",
    { tools: ["ip", "nft"] },
  ),
  fn: () =>
    withNetns(["nftnl"], async (ns) => {
      const res = await inNetns<R<"nftNetlinkListing">>(ns, SCEN, "nftNetlinkListing");
      assert.deepEqual(res.chains, ["a", "b"]);
      assert.deepEqual(res.sets, [
        "aff",
        "big map",
        "cidrs interval",
        "counted",
        "empty map",
        "eps map",
        "macs",
        "pairs",
        "v4 map",
        "v6 map",
      ]);
      assert.deepEqual(res.read, {
        aff: [["10.9.9.9", ""]],
        counted: [["10.96.0.1 . tcp . 80", ""]],
        empty: [],
        eps: [["10.96.0.1 . 80 . 0", "10.1.2.5 . 8080"], ["10.96.0.1 . 80 . 65535", "10.1.2.6 . 8080"]],
        pairs: [["10.1.1.5 . 10.1.1.5", ""]],
        v4: [["10.0.0.1", "accept"], ["10.0.0.2", "return"]],
        v6: [["2001:db8::1 . udp . 53", "jump b"], ["::1 . sctp . 3868", "drop"], [
          "fd00:172::10 . tcp . 80",
          "goto a",
        ]],
      });
      assert.deepEqual(res.refused, ["cidrs NftUndecodable", "macs NftUndecodable"]);
      assert.equal(res.big, 3000, "every element of a dump spread over several datagrams");
      assert.match(res.bigFirst, /^10\.200\.\d+\.\d+ \. \d+ : goto a$/);
      assert.equal(res.gone, null);
      // nft itself agrees on the numgen slots and the IPv6 keys.
      const text = (await ns.exec(["nft", "list", "table", "inet", "krtnl"])).stdout;
      assert.match(text, /10\.96\.0\.1 \. 80 \. 65535 : 10\.1\.2\.6 \. 8080/);
      assert.match(text, /fd00:172::10 \. tcp \. 80 : goto a/);
    }),
});

Deno.test({
  ...needs(
    "elements written over netlink give the very table nft gives for the same operations, and a refused element batch names its element and leaves nothing",
    { tools: ["ip", "nft"] },
  ),
  fn: () =>
    withNetns(["nftnlw"], async (ns) => {
      const res = await inNetns<R<"nftElementsOverNetlink">>(ns, SCEN, "nftElementsOverNetlink");
      assert.equal(res.overNetlink, res.text, "the same listing, element for element");
      // Three runs written over netlink (the first one, the one after chain b, the second transaction, all
      // elements, without the option); the one with an interval and a MAC address through nft.
      assert.deepEqual(res.runs, { netlink: 3, nft: 1 });
      // The listing is a real one: every kind of element is in it.
      assert.match(res.text, /10\.96\.0\.1 \. 80 \. 65535 : 10\.1\.2\.6 \. 8080/);
      assert.match(res.text, /2001:db8::1 \. udp \. 53 : jump b/);
      assert.match(res.text, /10\.96\.0\.1 \. udp \. 53 counter packets 0 bytes 0/);
      assert.match(res.text, /10\.1\.0\.0\/16/);
      assert.match(res.text, /02:00:00:00:00:01/);
      assert.doesNotMatch(res.text, /10\.0\.0\.2 :/);
      assert.equal((res.text.match(/10\.200\.\d+\.\d+ \. \d+ : goto a/g) ?? []).length, 1500);

      assert.equal(res.clash.ok, false);
      assert.equal(res.clash.name, "NftError");
      assert.deepEqual(res.clash.operations, [2], "the element whose value differs, by the kernel's offset");
      assert.match(res.clash.message, /add element inet krtnl v4 \{ 10\.0\.0\.1 : drop \}/);
      assert.equal(res.missing.ok, false);
      assert.deepEqual(res.missing.operations, [1]);
      assert.match(
        res.missing.message,
        /No such file or directory\ndelete element inet krtnl pairs \{ 10\.9\.9\.9 \. 10\.9\.9\.9 \}/,
      );
      assert.equal(res.missing.notFound, true, "classified as nft's own errors are");
      assert.equal(res.noChain.ok, false);
      assert.deepEqual(res.noChain.operations, [2], "indexes count the operations before the element run");
      // Refused batches leave none of their elements; the chain added before the run stays.
      assert.doesNotMatch(res.after, /10\.0\.0\.(9|8|7|20|21) /);
      assert.match(res.after, /10\.1\.1\.5 \. 10\.1\.1\.5/);
      assert.match(res.after, /chain d \{/);
    }),
});
