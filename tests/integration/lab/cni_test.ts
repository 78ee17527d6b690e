/**
 * lab/cni.ts against the real plugins (/usr/lib/cni) in throwaway namespaces: ADD through a list with
 * prevResult chaining, DEL in reverse, leases under the given dataDir. Needs root.
 */
import assert from "node:assert/strict";
import { needs, withNetns } from "../../_support/netns.ts";
import { cniAdd, cniDel, CniError, labNetworkConfig, type NetworkList, resultIPs } from "../../../lab/mod.ts";

const REQ = {
  tools: ["ip", "nft", "iptables", "busybox"],
  files: ["/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/portmap"],
};

/** Runs `fn` with a fresh host-local data dir (the leases), removed afterwards even on failure. */
async function withIpamDir(fn: (dataDir: string) => Promise<void>): Promise<void> {
  const dataDir = await Deno.makeTempDir({ prefix: "krl-cni-ipam-" });
  try {
    await fn(dataDir);
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
}

Deno.test({
  ...needs("CNI ADD wires a pod to kube-bridge from the pod CIDR and DEL undoes it", REQ),
  async fn() {
    await withIpamDir((dataDir) =>
      withNetns(["cninode", "cnipod"], async (node, pod) => {
        const list = labNetworkConfig(["10.1.9.0/24"]);
        const rt = {
          nodeNetns: node.name,
          podNetnsPath: `/var/run/netns/${pod.name}`,
          containerId: "c0ffee01",
          ifname: "eth0",
          ipamDataDir: dataDir,
        };
        const result = await cniAdd(list, rt);
        const [ip] = resultIPs(result);
        assert.match(ip!, /^10\.1\.9\.\d+$/);
        assert.match(
          (await node.exec(["ip", "-br", "addr", "show", "kube-bridge"])).stdout,
          /10\.1\.9\.1\/24/,
        );
        assert.match(
          (await pod.exec(["ip", "-br", "addr", "show", "eth0"])).stdout,
          new RegExp(`${ip!.replaceAll(".", "\\.")}/24`),
        );
        assert.match((await pod.exec(["ip", "route", "show", "default"])).stdout, /via 10\.1\.9\.1/);
        assert.ok(Deno.statSync(`${dataDir}/mynet/${ip}`).isFile, "the lease is under dataDir");
        // The node reaches the pod over the bridge.
        await pod.exec(["ip", "link", "set", "lo", "up"]);
        assert.equal(
          (await node.exec(["busybox", "ping", "-c", "1", "-W", "2", ip!], { check: false })).code,
          0,
        );

        await cniDel(list, rt, result);
        assert.throws(() => Deno.statSync(`${dataDir}/mynet/${ip}`), "the lease is released");
        assert.doesNotMatch((await pod.exec(["ip", "-br", "link"])).stdout, /eth0/);
      })
    );
  },
});

Deno.test({
  ...needs("a bridge + portmap list passes prevResult along and DEL removes the hostPort DNAT", REQ),
  async fn() {
    await withIpamDir((dataDir) =>
      withNetns(["cninode", "cnipod"], async (node, pod) => {
        const list: NetworkList = {
          ...labNetworkConfig(["10.1.8.0/24"]),
          plugins: [...labNetworkConfig(["10.1.8.0/24"]).plugins, {
            type: "portmap",
            capabilities: { portMappings: true, snat: true },
          }],
        };
        const rt = {
          nodeNetns: node.name,
          podNetnsPath: `/var/run/netns/${pod.name}`,
          containerId: "c0ffee02",
          ifname: "eth0",
          ipamDataDir: dataDir,
          portMappings: [{ hostPort: 31234, containerPort: 8080, protocol: "tcp" }],
        };
        const result = await cniAdd(list, rt);
        assert.equal(resultIPs(result).length, 1, "portmap returns the bridge's result (prevResult)");
        assert.match((await node.exec(["nft", "list", "ruleset"])).stdout, /dport 31234/);
        await cniDel(list, rt, result);
        assert.doesNotMatch((await node.exec(["nft", "list", "ruleset"])).stdout, /dport 31234/);
      })
    );
  },
});

Deno.test({
  ...needs("a plugin's error result becomes a CniError naming the plugin", REQ),
  async fn() {
    await withIpamDir((dataDir) =>
      withNetns(["cninode"], async (node) => {
        const rt = {
          nodeNetns: node.name,
          podNetnsPath: "/var/run/netns/krt-does-not-exist",
          containerId: "c0ffee03",
          ifname: "eth0",
          ipamDataDir: dataDir,
        };
        await assert.rejects(
          () => cniAdd(labNetworkConfig(["10.1.7.0/24"]), rt),
          (e) => e instanceof CniError && e.plugin === "bridge",
        );
      })
    );
  },
});
