/**
 * The ruleset of the nft golden (nft.json): built here, applied by capture_nft.ts with the real `nft -f`,
 * whose `nft -j list table` and `nft list table` outputs are stored; the fake must list and dump the same.
 */
import { NftTransaction } from "../../../../ffi/mod.ts";

export function goldenTransaction(): NftTransaction {
  return new NftTransaction("inet", "golden")
    .add({ table: { comment: "golden table" } })
    .add({ chain: { name: "svc" } })
    .add({ chain: { name: "pre", type: "nat", hook: "prerouting", priority: -100, policy: "accept" } })
    .add({
      chain: { name: "early", type: "filter", hook: "prerouting", priority: -110, comment: "before dnat" },
    })
    .add({ chain: { name: "post", type: "nat", hook: "postrouting", priority: 100 } })
    .add({ chain: { name: "fw", type: "filter", hook: "forward", priority: 0, policy: "drop" } })
    .add({ map: { name: "vips", type: "ipv4_addr . inet_proto . inet_service", map: "verdict" } })
    .add({ element: { set: "vips", key: ["10.96.0.10", "udp", "53"], value: ["goto svc"] } })
    .add({ element: { set: "vips", key: ["10.96.0.11", "tcp", "443"], value: ["jump svc"], comment: "web" } })
    .add({ map: { name: "vips6", type: "ipv6_addr . inet_proto . inet_service", map: "verdict" } })
    .add({ element: { set: "vips6", key: ["fd00::10", "tcp", "80"], value: ["goto svc"] } })
    .add({ set: { name: "blocks", type: "ipv4_addr", flags: ["interval"] } })
    .add({ element: { set: "blocks", key: ["10.0.0.0/8"] } })
    .add({ element: { set: "blocks", key: ["192.168.1.1"] } })
    .add({ set: { name: "ports", type: "inet_service", flags: ["interval"], comment: "node ports" } })
    .add({ element: { set: "ports", key: ["30000-32767"] } })
    .add({ set: { name: "seen", type: "ipv4_addr", counter: true } })
    .add({ element: { set: "seen", key: ["10.0.0.1"] } })
    .add({ map: { name: "backends", type: "ipv4_addr", map: "ipv4_addr . inet_service" } })
    .add({ element: { set: "backends", key: ["10.96.0.12"], value: ["10.1.2.3", "8080"] } })
    .add({ rule: { chain: "pre", rule: "ip daddr . meta l4proto . th dport vmap @vips" } })
    .add({ rule: { chain: "pre", rule: "ip saddr @blocks counter accept", comment: "blocked sources" } })
    .add({ rule: { chain: "early", rule: "meta mark set meta mark | 0x00004000" } })
    .add({ rule: { chain: "post", rule: "meta mark & 0x00004000 == 0x00004000 masquerade fully-random" } })
    .add({ chain: { name: "svc-tls" } })
    .add({ rule: { chain: "svc", rule: "tcp dport 443 jump svc-tls" } });
}
