/**
 * Pod egress masquerading with the real nftables, in namespaces: a "pod" behind a "node" sends to an
 * outside address (masqueraded to the node's address), to another pod CIDR and to a node IP (both left
 * alone). conntrack in the node namespace shows which flows were NATed.
 */
import assert from "node:assert/strict";
import { linkVeth, needs, withNetns } from "../../_support/netns.ts";
import {
  egressCleanupTransactions,
  egressTransaction,
  legacyTableCleanupTransaction,
} from "../../../modules/router/egress.ts";

Deno.test({
  ...needs("pod egress masquerades only traffic leaving the cluster", { tools: ["nft", "conntrack"] }),
  async fn() {
    await withNetns(["pod", "node", "ext"], async (pod, node, ext) => {
      await linkVeth(pod, "eth0", "10.1.1.2/24", node, "vpod", "10.1.1.1/24");
      await linkVeth(node, "eth0", "192.168.1.100/24", ext, "eth0", "192.168.1.1/24");
      await ext.exec(["ip", "addr", "add", "203.0.113.1/32", "dev", "eth0"]);
      await ext.exec(["ip", "addr", "add", "10.1.2.9/32", "dev", "eth0"]);
      await ext.exec(["ip", "addr", "add", "192.168.1.101/32", "dev", "eth0"]);
      await pod.exec(["ip", "route", "add", "default", "via", "10.1.1.1"]);
      await node.exec(["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
      await node.exec(["ip", "route", "add", "203.0.113.0/24", "via", "192.168.1.1"]);
      await node.exec(["ip", "route", "add", "10.1.2.0/24", "via", "192.168.1.1"]);
      await ext.exec(["ip", "route", "add", "10.1.1.0/24", "via", "192.168.1.100"]);

      const tx = egressTransaction({
        podCidrs: ["10.1.1.0/24", "10.1.2.0/24", "fd00:1::/64"],
        nodeIps: ["192.168.1.100", "192.168.1.101"],
        families: [4, 6],
        masquerade: true,
      });
      await node.exec(["nft", "-f", "-"], { stdin: tx.render() });
      // Applying twice is idempotent (the table is updated in place, not duplicated).
      await node.exec(["nft", "-f", "-"], { stdin: tx.render() });
      const listed = (await node.exec(["nft", "list", "table", "inet", "kube_router_router"])).stdout;
      assert.equal(listed.match(/masquerade/g)?.length, 2, listed);

      for (const dst of ["203.0.113.1", "10.1.2.9", "192.168.1.101"]) {
        await pod.exec(["bash", "-c", `echo hi > /dev/udp/${dst}/9999`], { check: false });
      }
      const ct = (await node.exec(["conntrack", "-L", "-p", "udp"], { check: false })).stdout;
      const line = (dst: string) => ct.split("\n").find((l) => l.includes(`dst=${dst} `)) ?? "";
      assert.match(
        line("203.0.113.1"),
        /src=203\.0\.113\.1 dst=192\.168\.1\.100 /,
        `outside traffic masqueraded:\n${ct}`,
      );
      assert.match(
        line("10.1.2.9"),
        /src=10\.1\.2\.9 dst=10\.1\.1\.2 /,
        `pod-to-pod traffic keeps the pod address:\n${ct}`,
      );
      assert.match(
        line("192.168.1.101"),
        /src=192\.168\.1\.101 dst=10\.1\.1\.2 /,
        `pod-to-node traffic keeps the pod address:\n${ct}`,
      );

      for (let round = 0; round < 2; round++) {
        for (const c of egressCleanupTransactions()) {
          await node.exec(["nft", "-f", "-"], { stdin: c.render() });
        }
      }
      assert.doesNotMatch((await node.exec(["nft", "list", "tables"])).stdout, /kube_router/);
    });
  },
});

Deno.test({
  ...needs("the router's table is updated in place and the old-name table goes, other tables stay", {
    tools: ["nft"],
  }),
  async fn() {
    await withNetns(["node"], async (node) => {
      const nft = (stdin: string) => node.exec(["nft", "-f", "-"], { stdin });
      await nft("add table inet kube_router\nadd chain inet kube_router pod_egress\n");
      await nft("add table inet someone_else\nadd set inet someone_else s { type ipv4_addr; }\n");
      const unrelated = (await node.exec(["nft", "list", "table", "inet", "someone_else"])).stdout;
      const state = { podCidrs: ["10.1.1.0/24"], nodeIps: ["192.168.1.100"], families: [4, 6] as (4 | 6)[] };
      await nft(egressTransaction({ ...state, masquerade: true }).render());
      await nft(legacyTableCleanupTransaction().render());
      const handle = async () =>
        (await node.exec(["nft", "-a", "list", "table", "inet", "kube_router_router"])).stdout.match(
          /table inet kube_router_router \{ # handle (\d+)/,
        )?.[1];
      const first = await handle();
      assert.ok(first);
      await nft(
        egressTransaction({ ...state, podCidrs: ["10.1.1.0/24", "10.1.2.0/24"], masquerade: true }).render(),
      );
      assert.equal(await handle(), first, "the table was not recreated");
      const listed = (await node.exec(["nft", "list", "table", "inet", "kube_router_router"])).stdout;
      assert.match(listed, /10\.1\.2\.0\/24/);
      const tables = (await node.exec(["nft", "list", "tables"])).stdout;
      assert.doesNotMatch(tables, /inet kube_router\n/);
      assert.equal((await node.exec(["nft", "list", "table", "inet", "someone_else"])).stdout, unrelated);
      for (const c of egressCleanupTransactions()) await nft(c.render());
      assert.equal((await node.exec(["nft", "list", "tables"])).stdout.trim(), "table inet someone_else");
    });
  },
});
