import assert from "node:assert/strict";
import type { V1Node } from "@kubernetes/client-node";
import { loadConfig } from "../../../core/config.ts";
import { nodeInfo } from "../../../modules/router/node_info.ts";
import { generatedRouterId, planPeers } from "../../../modules/router/peers.ts";

function node(
  name: string,
  ip: string,
  annotations: Record<string, string> = {},
  podCIDRs: string[] = [],
): V1Node {
  return {
    metadata: { name, annotations },
    spec: { podCIDRs, ...(podCIDRs[0] ? { podCIDR: podCIDRs[0] } : {}) },
    status: { addresses: [{ type: "InternalIP", address: ip }, { type: "Hostname", address: name }] },
  };
}

const cfg = (...flags: string[]) => loadConfig([...flags, "--hostname-override=n1"]);

Deno.test("node info reads addresses, pod CIDRs and every BGP annotation", () => {
  const n = nodeInfo(node("n1", "192.168.1.100", {
    "kube-router.io/node.asn": "65001",
    "kube-router.io/rr.server": "42",
    "kube-router.io/path-prepend.as": "65001",
    "kube-router.io/path-prepend.repeat-n": "3",
    "kube-router.io/node.bgp.communities": "65001:100,no-export,4294967041",
    "kube-router.io/node.bgp.customimportreject": "10.99.0.0/16, 10.98.0.1/32",
    "kube-router.io/bgp-local-addresses": "192.168.1.100",
    "kube-router.io/peers":
      "- remoteip: 192.168.1.1\n  remoteasn: 65000\n  password: c2VjcmV0\n  port: 1179\n- remoteip: 2001:db8::1\n  remoteasn: 65000\n  localip: 2001:db8::100\n",
  }, ["10.1.1.0/24", "fd00:1::/64"]));
  assert.deepEqual(n.problems, []);
  assert.equal(n.ipv4, "192.168.1.100");
  assert.deepEqual(n.podCidrs, ["10.1.1.0/24", "fd00:1::/64"]);
  assert.equal(n.asn, 65001);
  assert.equal(n.rrServer, "0.0.0.42");
  assert.deepEqual(n.pathPrepend, { asn: 65001, repeat: 3 });
  assert.deepEqual(n.communities, [65001 * 65536 + 100, 0xffffff01, 4294967041]);
  assert.deepEqual(n.customImportReject, ["10.99.0.0/16", "10.98.0.1/32"]);
  assert.deepEqual(n.peers, [
    { ip: "192.168.1.1", asn: 65000, port: 1179, password: "secret" },
    { ip: "2001:db8::1", asn: 65000, port: 179, localIp: "2001:db8::100" },
  ]);
});

Deno.test("node info takes pod CIDRs from the annotation when the spec has none", () => {
  const n = nodeInfo(node("n1", "192.168.1.100", { "kube-router.io/pod-cidrs": "10.1.7.0/24,fd00:7::/64" }));
  assert.deepEqual(n.podCidrs, ["10.1.7.0/24", "fd00:7::/64"]);
});

Deno.test("node info reads the deprecated positional peer annotations", () => {
  const n = nodeInfo(node("n1", "192.168.1.100", {
    "kube-router.io/peer.ips": "192.168.1.1,192.168.1.2",
    "kube-router.io/peer.asns": "65000,65010",
    "kube-router.io/peer.passwords": "c2VjcmV0,",
    "kube-router.io/peer.ports": ",1790",
  }));
  assert.deepEqual(n.problems, []);
  assert.deepEqual(n.peers, [
    { ip: "192.168.1.1", asn: 65000, port: 179, password: "secret" },
    { ip: "192.168.1.2", asn: 65010, port: 1790 },
  ]);
});

Deno.test("a bad peers annotation is reported and skipped while the good entries are kept", () => {
  const n = nodeInfo(node("n1", "192.168.1.100", {
    "kube-router.io/peers":
      "- remoteip: 192.168.1.1\n  remoteasn: 65000\n- remoteip: not-an-ip\n  remoteasn: 65000\n- remoteip: 192.168.1.3\n  remoteasn: banana\n",
  }));
  assert.deepEqual(n.peers, [{ ip: "192.168.1.1", asn: 65000, port: 179 }]);
  assert.equal(n.problems.length, 2);
  assert.match(n.problems[0]!, /kube-router.io\/peers\[1\]: remoteip "not-an-ip"/);
  assert.match(n.problems[1]!, /kube-router.io\/peers\[2\]: remoteasn "banana"/);
  const broken = nodeInfo(node("n1", "192.168.1.100", { "kube-router.io/peers": "- remoteip: [unclosed" }));
  assert.deepEqual(broken.peers, []);
  assert.match(broken.problems[0]!, /not valid YAML/);
  const notList = nodeInfo(node("n1", "192.168.1.100", { "kube-router.io/peers": "remoteip: 1.2.3.4" }));
  assert.match(notList.problems[0]!, /expected a YAML list/);
});

Deno.test("full mesh peers with every other node in the cluster ASN, plus external peers", () => {
  const nodes = [node("n1", "192.168.1.100"), node("n2", "192.168.1.101"), node("n3", "192.168.1.102")].map(
    nodeInfo,
  );
  const plan = planPeers(
    cfg("--peer-router-ips=192.168.1.1", "--peer-router-asns=65000", "--peer-router-multihop-ttl=3"),
    nodes[0]!,
    nodes,
  );
  assert.equal(plan.localAsn, 64512);
  assert.equal(plan.routerId, "192.168.1.100");
  assert.deepEqual(plan.peers, [
    { address: "192.168.1.101", asn: 64512, port: 179, kind: "node", node: "n2" },
    { address: "192.168.1.102", asn: 64512, port: 179, kind: "node", node: "n3" },
    { address: "192.168.1.1", asn: 65000, port: 179, kind: "external", multihopTtl: 3 },
  ]);
});

Deno.test("without full mesh only nodes of the same node.asn peer, and the ASN is required", () => {
  const nodes = [
    node("n1", "192.168.1.100", { "kube-router.io/node.asn": "65001" }),
    node("n2", "192.168.1.101", { "kube-router.io/node.asn": "65001" }),
    node("n3", "192.168.1.102", { "kube-router.io/node.asn": "65002" }),
    node("n4", "192.168.1.103"),
  ].map(nodeInfo);
  const plan = planPeers(cfg("--nodes-full-mesh=false"), nodes[0]!, nodes);
  assert.equal(plan.localAsn, 65001);
  assert.deepEqual(plan.peers.map((p) => p.node), ["n2"]);
  const orphan = planPeers(cfg("--nodes-full-mesh=false"), nodes[3]!, nodes);
  assert.equal(orphan.localAsn, undefined);
  assert.deepEqual(orphan.peers, []);
  assert.match(orphan.problems.join(), /needs the kube-router.io\/node.asn annotation/);
});

Deno.test("route reflector clients peer only with their servers; servers mark their clients", () => {
  const nodes = [
    node("rr1", "192.168.1.100", { "kube-router.io/rr.server": "42" }),
    node("rr2", "192.168.1.101", { "kube-router.io/rr.server": "0.0.0.42" }),
    node("c1", "192.168.1.102", { "kube-router.io/rr.client": "42" }),
    node("c2", "192.168.1.103", { "kube-router.io/rr.client": "42" }),
    node("c9", "192.168.1.104", { "kube-router.io/rr.client": "9" }),
  ].map(nodeInfo);
  const server = planPeers(cfg(), nodes[0]!, nodes);
  assert.equal(server.clusterId, "0.0.0.42");
  assert.deepEqual(server.peers.map((p) => [p.node, p.routeReflectorClient ?? false]), [
    ["rr2", false],
    ["c1", true],
    ["c2", true],
  ]);
  const client = planPeers(cfg(), nodes[2]!, nodes);
  assert.deepEqual(client.peers.map((p) => p.node), ["rr1", "rr2"]);
  assert.deepEqual(planPeers(cfg(), nodes[4]!, nodes).peers, []);
});

Deno.test("--enable-ibgp=false leaves only external peers; duplicates are reported once", () => {
  const nodes = [
    node("n1", "192.168.1.100", { "kube-router.io/peers": "- remoteip: 192.168.1.1\n  remoteasn: 65000\n" }),
    node("n2", "192.168.1.101"),
  ].map(nodeInfo);
  const plan = planPeers(
    cfg("--enable-ibgp=false", "--peer-router-ips=192.168.1.1", "--peer-router-asns=65000"),
    nodes[0]!,
    nodes,
  );
  assert.deepEqual(plan.peers.map((p) => p.address), ["192.168.1.1"]);
  assert.match(plan.problems.join(), /configured twice/);
});

Deno.test("router id: the flag, else the node's IPv4, else generated for IPv6-only nodes", () => {
  const v6 = nodeInfo(node("n1", "2001:db8::100"));
  assert.equal(planPeers(cfg("--router-id=10.0.0.1"), v6, [v6]).routerId, "10.0.0.1");
  const generated = planPeers(cfg("--router-id=generate", "--enable-ipv6"), v6, [v6]).routerId;
  assert.equal(generated, generatedRouterId("2001:db8::100"));
  assert.match(generated!, /^\d+\.\d+\.\d+\.\d+$/);
  const none = planPeers(cfg("--enable-ipv6"), v6, [v6]);
  assert.equal(none.routerId, undefined);
  assert.match(none.problems.join(), /router id/);
});
