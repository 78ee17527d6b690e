import assert from "node:assert/strict";
import { linkVeth, needs, withNetns } from "../../_support/netns.ts";
import { inNetns } from "./_in_netns.ts";
import type * as S from "./_scenarios.ts";

const SCEN = new URL("./_scenarios.ts", import.meta.url);
type R<K extends keyof typeof S> = Awaited<ReturnType<(typeof S)[K]>>;

Deno.test({
  ...needs(
    "conntrack entries made by real UDP traffic between two namespaces are listed and deleted by destination",
    {
      tools: ["ip", "nft", "conntrack", "bash"],
    },
  ),
  fn: () =>
    withNetns(["cta", "ctb"], async (a, b) => {
      await linkVeth(a, "ct0", "10.201.0.1/24", b, "ct1", "10.201.0.2/24");
      // Conntrack runs in a namespace only once something there uses it: a stateful rule does.
      await a.exec([
        "nft",
        "add table ip krtct; add chain ip krtct out { type filter hook output priority 0; }; add rule ip krtct out ct state new counter",
      ]);
      for (const port of [5353, 5353, 5354]) {
        for (let sport = 0; sport < 3; sport++) {
          await a.exec(["bash", "-c", `exec 3<>/dev/udp/10.201.0.2/${port}; echo ping >&3; exec 3>&-`]);
        }
      }
      const listedByTool =
        (await a.exec(["conntrack", "-L", "-p", "udp", "--orig-dst", "10.201.0.2"], { check: false })).stdout;
      assert.match(listedByTool, /dport=5353/);
      const res = await inNetns<R<"conntrackDelete">>(a, SCEN, "conntrackDelete", [
        { protocol: 17, dst: "10.201.0.2", dport: 5353 },
        { protocol: 17, dst: "10.201.0.2", dport: 5354 },
      ]);
      assert.ok(res.before.length >= 1, "entries for port 5353 were listed");
      for (const e of res.before) {
        assert.equal(e.orig.protocol, 17);
        assert.equal(e.orig.dst, "10.201.0.2");
        assert.equal(e.orig.dport, 5353);
        assert.equal(e.reply?.src, "10.201.0.2");
      }
      assert.equal(res.deleted, res.before.length);
      assert.equal(res.after, 0);
      assert.ok(res.otherBefore >= 1);
      assert.equal(res.otherAfter, res.otherBefore, "entries for other ports are kept");
      const tool =
        (await a.exec(["conntrack", "-L", "-p", "udp", "--orig-dst", "10.201.0.2"], { check: false })).stdout;
      assert.doesNotMatch(tool, /dport=5353/);
      assert.match(tool, /dport=5354/);
    }),
});

Deno.test({
  ...needs("IPv6 conntrack entries are listed and deleted by destination too", {
    tools: ["ip", "nft", "conntrack", "bash"],
  }),
  fn: () =>
    withNetns(["cta6", "ctb6"], async (a, b) => {
      await linkVeth(a, "ct0", undefined, b, "ct1", undefined);
      await a.exec(["ip", "-6", "addr", "add", "fd20::1/64", "dev", "ct0", "nodad"]);
      await b.exec(["ip", "-6", "addr", "add", "fd20::2/64", "dev", "ct1", "nodad"]);
      await a.exec([
        "nft",
        "add table ip6 krtct; add chain ip6 krtct out { type filter hook output priority 0; }; add rule ip6 krtct out ct state new counter",
      ]);
      for (const port of [5353, 5354]) {
        await a.exec(["bash", "-c", `exec 3<>/dev/udp/fd20::2/${port}; echo ping >&3; exec 3>&-`]);
      }
      const res = await inNetns<R<"conntrackDelete">>(a, SCEN, "conntrackDelete", [
        { family: 6, protocol: 17, dst: "fd20::2", dport: 5353 },
        { family: 6, protocol: 17, dst: "fd20::2", dport: 5354 },
      ]);
      assert.equal(res.before.length, 1);
      assert.deepEqual(res.before[0]!.orig, {
        src: "fd20::1",
        dst: "fd20::2",
        protocol: 17,
        sport: res.before[0]!.orig.sport,
        dport: 5353,
      });
      assert.equal(res.deleted, 1);
      assert.equal(res.after, 0);
      assert.equal(res.otherAfter, 1);
    }),
});
