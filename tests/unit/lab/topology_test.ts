import assert from "node:assert/strict";
import { allocatePodCidr, ipInCidr, MAX_NODES, podNetnsName, topology } from "../../../lab/mod.ts";

Deno.test("the default topology is the seed's: master .99, nodes .100-.102 in a /24", () => {
  const t = topology(3);
  assert.equal(t.master.ip, "192.168.1.99");
  assert.deepEqual(t.nodes.map((n) => [n.name, n.ip, n.prefixLen]), [
    ["kube-node1", "192.168.1.100", 24],
    ["kube-node2", "192.168.1.101", 24],
    ["kube-node3", "192.168.1.102", 24],
  ]);
  assert.deepEqual([t.underlayNetns, t.master.netns, t.nodes[0]!.netns], [
    "krl-underlay",
    "krl-master",
    "krl-node1",
  ]);
});

Deno.test("155 nodes stay in 192.168.1.0/24 and more widen the underlay to a /16", () => {
  const t155 = topology(155);
  assert.equal(t155.nodes.at(-1)!.ip, "192.168.1.254");
  assert.equal(t155.master.prefixLen, 24);
  const t156 = topology(157);
  assert.equal(t156.nodes.at(-2)!.ip, "192.168.1.255");
  assert.equal(t156.nodes.at(-1)!.ip, "192.168.2.0");
  assert.ok(t156.nodes.every((n) => n.prefixLen === 16) && t156.master.prefixLen === 16);
  const ips = new Set(topology(MAX_NODES).nodes.map((n) => n.ip));
  assert.equal(ips.size, MAX_NODES);
  assert.ok(!ips.has("192.168.1.99"));
});

Deno.test("topology refuses node counts the addressing cannot hold and bad prefixes", () => {
  assert.throws(() => topology(0), RangeError);
  assert.throws(() => topology(MAX_NODES + 1), RangeError);
  assert.throws(() => topology(3, "Bad Prefix"), RangeError);
});

Deno.test("kube-nodeN gets 10.1.N.0/24 and a taken CIDR falls back to the lowest free one", () => {
  assert.equal(allocatePodCidr("kube-node2", []), "10.1.2.0/24");
  assert.equal(allocatePodCidr("kube-node2", ["10.1.2.0/24", "10.1.1.0/24"]), "10.1.3.0/24");
  assert.equal(allocatePodCidr("worker", ["10.1.1.0/24"]), "10.1.2.0/24");
  assert.equal(allocatePodCidr("kube-node300", []), "10.1.1.0/24");
  const all = Array.from({ length: 255 }, (_, i) => `10.1.${i + 1}.0/24`);
  assert.equal(allocatePodCidr("kube-node1", all), undefined);
});

Deno.test("ipInCidr tells inside from outside", () => {
  assert.ok(ipInCidr("10.1.1.7", "10.1.1.0/24"));
  assert.ok(!ipInCidr("10.1.2.7", "10.1.1.0/24"));
  assert.ok(ipInCidr("172.16.200.1", "172.16.0.0/16"));
  assert.ok(ipInCidr("8.8.8.8", "0.0.0.0/0"));
});

Deno.test("pod namespaces are named from the prefix and the pod uid", () => {
  assert.equal(podNetnsName("krl-", "9ac9d595-c58c-4d1e-8a34-1f15d1acf01d"), "krl-pod-9ac9d595c58c");
});
