/**
 * The conf the router writes, read by the real CNI bridge + host-local plugins (Debian
 * containernetworking-plugins): a pod namespace gets an address from the node's pod CIDR, on kube-bridge,
 * with the bridge as default gateway and the MTU we set.
 */
import assert from "node:assert/strict";
import { needs, NetNs, withNetns } from "../../_support/netns.ts";
import { buildCniConf } from "../../../modules/router/cni_conf.ts";

const CNI_PATH = "/usr/lib/cni";

async function cni(command: "ADD" | "DEL", node: NetNs, pod: NetNs, conf: object, dataDir: string) {
  const out = await node.exec([
    "env",
    `CNI_COMMAND=${command}`,
    "CNI_CONTAINERID=krt-test",
    `CNI_NETNS=/var/run/netns/${pod.name}`,
    "CNI_IFNAME=eth0",
    `CNI_PATH=${CNI_PATH}`,
    `${CNI_PATH}/bridge`,
  ], {
    stdin: JSON.stringify({ ...conf, ipam: { ...(conf as { ipam: object }).ipam, dataDir } }),
    check: false,
  });
  if (out.code !== 0) throw new Error(`CNI ${command} failed: ${out.stdout} ${out.stderr}`);
  return out.stdout ? JSON.parse(out.stdout) : undefined;
}

Deno.test({
  ...needs("the real CNI bridge plugin gives a pod an address from the pod CIDR using the router's conf", {
    files: [`${CNI_PATH}/bridge`, `${CNI_PATH}/host-local`],
  }),
  async fn() {
    const dataDir = await Deno.makeTempDir({ prefix: "krt-cni-data-" });
    try {
      await withNetns(["node", "pod"], async (node, pod) => {
        const list = buildCniConf(undefined, {
          podCidrs: ["10.1.1.0/24"],
          mtu: 1400,
          hairpin: true,
          list: true,
        });
        const bridge = (list.plugins as object[])[0]!;
        const conf = { cniVersion: list.cniVersion, name: list.name, ...bridge };
        const result = await cni("ADD", node, pod, conf, dataDir);
        assert.match(result.ips[0].address, /^10\.1\.1\.\d+\/24$/);
        assert.equal(result.ips[0].gateway, "10.1.1.1");
        const addr = await pod.exec(["ip", "-j", "addr", "show", "eth0"]);
        const eth0 = JSON.parse(addr.stdout)[0];
        assert.equal(eth0.mtu, 1400);
        const route = await pod.exec(["ip", "route", "show", "default"]);
        assert.match(route.stdout, /default via 10\.1\.1\.1 dev eth0/);
        const br = JSON.parse((await node.exec(["ip", "-j", "-d", "link", "show", "kube-bridge"])).stdout)[0];
        assert.equal(br.linkinfo.info_kind, "bridge");
        await cni("DEL", node, pod, conf, dataDir);
        const after = await pod.exec(["ip", "link", "show", "eth0"], { check: false });
        assert.notEqual(after.code, 0, "eth0 removed by CNI DEL");
      });
    } finally {
      await Deno.remove(dataDir, { recursive: true });
    }
  },
});
