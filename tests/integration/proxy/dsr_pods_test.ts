/**
 * Finding a DSR pod's network namespace from the node's side, on this machine's kernel (root, throwaway
 * namespaces): a "node" namespace whose pods hang off a routed veth or a bridge of veths, the way CNI
 * plugins attach them. The tunnel inside the pod needs the ipip module, which this kernel lacks: that part
 * and the traffic run in the VM tier (tests/vm/proxy/dsr_guest.ts).
 */
import assert from "node:assert/strict";
import { netnsIdentity, Rtnetlink } from "../../../ffi/mod.ts";
import { DsrPodError, kernelDsrPodsDeps, NetnsDsrPods } from "../../../modules/proxy/mod.ts";
import { linkVeth, needs, withNetns } from "../../_support/netns.ts";

Deno.test({
  ...needs(
    "DSR finds each pod's namespace from the node's veth or bridge port, and names what it cannot find",
    {
      tools: ["ip"],
    },
  ),
  fn: () =>
    withNetns(["dsrnode", "dsrpodA", "dsrpodB", "dsrpodC"], async (node, a, b, c) => {
      // Pod A: a routed veth (ptp-style CNI), a /32 route to it on the node.
      await linkVeth(node, "vetha", "169.254.1.1/32", a, "eth0", "10.2.0.5/32");
      await node.exec(["ip", "route", "add", "10.2.0.5/32", "dev", "vetha"]);
      // Pods B and C: veths on a bridge (the bridge CNI, kube-router's own), the pod subnet on the bridge.
      await node.exec(["ip", "link", "add", "kbr0", "type", "bridge"]);
      await node.exec(["ip", "addr", "add", "10.1.1.1/24", "dev", "kbr0"]);
      await node.exec(["ip", "link", "set", "kbr0", "up"]);
      await linkVeth(node, "vethb", undefined, b, "eth0", "10.1.1.11/24");
      await linkVeth(node, "vethc", undefined, c, "eth0", "10.1.1.12/24");
      for (const v of ["vethb", "vethc"]) await node.exec(["ip", "link", "set", v, "master", "kbr0"]);
      // A bridge with no pod on it, and a subnet behind a device that is neither a veth nor a bridge.
      await node.exec(["ip", "link", "add", "kbr1", "type", "bridge"]);
      await node.exec(["ip", "addr", "add", "10.9.0.1/24", "dev", "kbr1"]);
      await node.exec(["ip", "link", "set", "kbr1", "up"]);
      await node.exec(["ip", "link", "add", "vx0", "type", "vxlan", "id", "7", "dstport", "4789"]);
      await node.exec(["ip", "addr", "add", "10.8.0.1/24", "dev", "vx0"]);
      await node.exec(["ip", "link", "set", "vx0", "up"]);

      const rtnl = new Rtnetlink({ netns: `/run/netns/${node.name}` });
      try {
        const pods = new NetnsDsrPods(kernelDsrPodsDeps(rtnl));
        const same = (path: string, ns: string) => netnsIdentity(path) === netnsIdentity(`/run/netns/${ns}`);
        const pa = await pods.locate("10.2.0.5");
        assert.ok(same(pa.path, a.name), `10.2.0.5 found in ${pa.path}, not in ${a.name}`);
        const pb = await pods.locate("10.1.1.11");
        assert.ok(same(pb.path, b.name), `10.1.1.11 found in ${pb.path}`);
        const pc = await pods.locate("10.1.1.12");
        assert.ok(same(pc.path, c.name), `10.1.1.12 found in ${pc.path}`);

        await assert.rejects(
          () => pods.locate("10.1.1.99"),
          (e: unknown) =>
            e instanceof DsrPodError && /no network namespace behind kbr0's veths holds it/.test(e.message),
        );
        await assert.rejects(
          () => pods.locate("10.9.0.5"),
          (e: unknown) => e instanceof DsrPodError && /no network namespace behind kbr1/.test(e.message),
        );
        await assert.rejects(
          () => pods.locate("10.8.0.5"),
          (e: unknown) =>
            e instanceof DsrPodError && /through vx0 \(vxlan\), neither a veth nor a bridge/.test(e.message),
        );
        await assert.rejects(
          () => pods.locate("10.1.1.1"),
          (e: unknown) => e instanceof DsrPodError && /address of the node itself/.test(e.message),
        );
        await assert.rejects(
          () => pods.locate("192.0.2.1"),
          (e: unknown) => e instanceof DsrPodError && /no route/.test(e.message),
        );
        // Setting up the tunnel needs ipip; where the kernel lacks it the pod cannot be used for DSR, and
        // the error says which pod and why (the backend then serves the Service through NAT).
        const ipip = await pods.ensure("10.1.1.11", ["203.0.113.7"]).then(() => undefined, (e: unknown) => e);
        if (ipip !== undefined) {
          assert.ok(ipip instanceof DsrPodError, String(ipip));
          assert.match(ipip.message, /^pod 10\.1\.1\.11: cannot set up kube-tunnel-if/);
        }
        // Nothing of ours is left behind the node's veths after --cleanup-config.
        await pods.cleanupAll();
        for (const ns of [a, b, c]) {
          const links = (await ns.exec(["ip", "-o", "link", "show"])).stdout;
          assert.doesNotMatch(links, /kube-tunnel/);
        }
      } finally {
        rtnl.close();
      }
    }),
});
