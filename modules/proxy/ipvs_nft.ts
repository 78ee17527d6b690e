/**
 * The nftables rules IPVS still needs, in the proxy's own `inet kube_router_proxy` table (pure: renders a
 * transaction). IPVS balances, but it neither masquerades nor filters; kube-router adds iptables rules
 * and ipsets for that (KUBE-ROUTER-SERVICES, kube-router-svip/-svip-prt, KUBE-ROUTER-HAIRPIN, MASQUERADE
 * with `-m ipvs`), which become here:
 *
 *   nat_prerouting / nat_output (dstnat): a packet to a virtual service (`masq_ports_vF`: address,
 *     protocol, port, NodePorts on node addresses included; not the external addresses of a Service with
 *     externalTrafficPolicy Local, whose pods must see the client) from outside the pod CIDRs (or any,
 *     with --masquerade-all) gets the masquerade mark; IPVS then rewrites its destination in LOCAL_IN.
 *   nat_postrouting (srcnat): marked packets are masqueraded; so is hairpin traffic, a pod reaching
 *     itself through a Service (`hairpin_vF`: endpoint . endpoint, this node's endpoints of every
 *     Service, as the nftables backend always does), which would otherwise get its own reply from the
 *     wrong address.
 *   filter_input (before IPVS's LOCAL_IN hook): traffic to a service VIP (`vips_vF`: cluster, external
 *     and LoadBalancer IPs, the addresses on kube-dummy-if) is accepted on the service ports and for ICMP
 *     echo; anything else to a VIP is rejected, unless --ipvs-permit-all (the default) accepts it all, as
 *     kube-router's flag does. Node addresses are never in `vips_vF`, so the node's own ports stay open.
 *     Before that, a LoadBalancer IP with loadBalancerSourceRanges (`lb_ranged_vF`) drops sources outside
 *     them (`lb_allowed_vF`: address . protocol . port . source CIDR). The node's own connections are
 *     balanced by IPVS in LOCAL_OUT, before any input hook, so they are not subject to source ranges.
 *   mangle_prerouting (mangle, only while a Service uses direct server return): a packet to a DSR
 *     VIP:port (`dsr_marks_vF`: address . protocol . port -> firewall mark) gets that service's mark, as
 *     kube-router's mangle rule does; the policy rule for the DSR bit then delivers it locally, where the
 *     IPVS firewall-mark service tunnels it to a pod.
 *   mangle_output (route type, mangle): the same marks for packets this node sends itself (its own
 *     processes and host-network pods), as kube-router marks in mangle OUTPUT too; a route chain makes the
 *     kernel look the route up again after the mark changed, so the policy rule applies to them as well.
 *   MSS clamping (both mangle chains): a TCP SYN to a DSR VIP:port, and the pod's SYN-ACK coming back from
 *     it, has its MSS option lowered to what fits the tunnel (`dsrMtu` less the outer header, the inner IP
 *     header and TCP's: 60 for ipip, 100 for ip6ip6), as kube-router's TCPMSS rules do: a client's
 *     full-size segment would otherwise no longer fit once IPVS wraps it for the pod.
 *
 * The whole table is rewritten in one transaction (destroyed and re-made, so a table left by the nftables
 * backend is replaced too); the caller renders it only when its content changed.
 */
import { NFT_MARK, NFT_PRIORITY, NFT_TABLES } from "../../core/mod.ts";
import { cidrContains, type Family, formatIP, NftTransaction, parseCidr } from "../../ffi/mod.ts";
import { canonicalIp } from "./nft_render.ts";
import type { IpvsPlan } from "./ipvs_plan.ts";

const IP = { 4: "ip", 6: "ip6" } as const;
const ADDR = { 4: "ipv4_addr", 6: "ipv6_addr" } as const;

/** What the table needs from the agent's flags. */
export interface IpvsNftOptions {
  families: readonly Family[];
  podCidrs: readonly string[];
  masqueradeAll: boolean;
  permitAll: boolean;
  /**
   * The MTU on the way to DSR pods (kube-router takes the interface holding the node's address); absent:
   * no MSS clamping (the backend logs why).
   */
  dsrMtu?: number;
}

/** What IPVS's tunnel adds to a packet plus the inner IP and TCP headers, by family (ipip, ip6ip6). */
export const DSR_MSS_OVERHEAD = { 4: 20 + 20 + 20, 6: 40 + 40 + 20 } as const;

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, "0")}`;
}

/** Valid CIDRs of one family, canonical, none covered by another (interval sets refuse overlaps). */
export function disjointCidrs(cidrs: readonly string[], f: Family): string[] {
  const parsed = cidrs.map((c) => parseCidr(c.trim())).filter((c) => c?.family === f).map((c) => c!);
  parsed.sort((a, b) => a.prefix - b.prefix);
  const kept: typeof parsed = [];
  for (const c of parsed) if (!kept.some((k) => cidrContains(k, c.addr))) kept.push(c);
  return [...new Set(kept.map((c) => `${formatIP(c.addr)}/${c.prefix}`))].sort();
}

/** Renders the IPVS-mode table for a plan: one transaction replacing the whole table. */
export function renderIpvsTable(plan: IpvsPlan, opts: IpvsNftOptions): NftTransaction {
  const tx = new NftTransaction("inet", NFT_TABLES.proxy);
  tx.destroy({ table: {} });
  tx.add({ table: { comment: "kube-router service proxy (ipvs)" } });
  const mark = hex(NFT_MARK.masquerade);
  const chains: Record<string, string[]> = {
    mark_for_masquerade: [],
    vip_check: [],
    masquerading: [],
    source_ranges: [],
  };
  chains.masquerading!.push(
    `meta mark & ${mark} == 0 return`,
    `meta mark set meta mark ^ ${mark}`,
    "masquerade fully-random",
  );
  if (opts.permitAll) chains.vip_check!.push("accept");

  for (const f of opts.families) {
    const ip = IP[f];
    const addr = ADDR[f];
    tx.add({ set: { name: `vips_v${f}`, type: addr } });
    tx.add({ set: { name: `vip_ports_v${f}`, type: `${addr} . inet_proto . inet_service` } });
    tx.add({ set: { name: `pod_cidrs_v${f}`, type: addr, flags: ["interval"] } });
    tx.add({ set: { name: `hairpin_v${f}`, type: `${addr} . ${addr}` } });
    tx.add({ set: { name: `masq_ports_v${f}`, type: `${addr} . inet_proto . inet_service` } });
    tx.add({ set: { name: `lb_ranged_v${f}`, type: `${addr} . inet_proto . inet_service` } });
    tx.add({
      set: {
        name: `lb_allowed_v${f}`,
        type: `${addr} . inet_proto . inet_service . ${addr}`,
        flags: ["interval"],
      },
    });
    for (const [vip, fam] of plan.vips) if (fam === f) tx.add({ element: { set: `vips_v${f}`, key: [vip] } });
    const hairpin = new Set<string>();
    for (const ps of plan.services.values()) {
      const s = ps.service;
      if (s.family !== f || s.fwmark !== undefined) continue;
      const key = [s.address, s.protocol, String(s.port)];
      tx.add({ element: { set: `vip_ports_v${f}`, key } });
      if (ps.masquerade) tx.add({ element: { set: `masq_ports_v${f}`, key } });
      if (ps.sourceRanges) {
        tx.add({ element: { set: `lb_ranged_v${f}`, key } });
        for (const c of ps.sourceRanges) tx.add({ element: { set: `lb_allowed_v${f}`, key: [...key, c] } });
      }
      for (const a of ps.hairpin) hairpin.add(canonicalIp(a)!.ip);
    }
    for (const h of [...hairpin].sort()) tx.add({ element: { set: `hairpin_v${f}`, key: [h, h] } });
    for (const c of disjointCidrs(opts.podCidrs, f)) {
      tx.add({ element: { set: `pod_cidrs_v${f}`, key: [c] } });
    }

    const dst = `${ip} daddr . meta l4proto . th dport`;
    const toService = `${dst} @vip_ports_v${f}`;
    chains.mark_for_masquerade!.push(
      opts.masqueradeAll
        ? `${dst} @masq_ports_v${f} meta mark set meta mark | ${mark}`
        : `${dst} @masq_ports_v${f} ${ip} saddr != @pod_cidrs_v${f} meta mark set meta mark | ${mark}`,
    );
    chains.source_ranges!.push(`${dst} @lb_ranged_v${f} ${dst} . ${ip} saddr != @lb_allowed_v${f} drop`);
    chains.masquerading!.unshift(`${ip} saddr . ${ip} daddr @hairpin_v${f} masquerade fully-random`);
    if (!opts.permitAll) {
      chains.vip_check!.push(`${toService} accept`);
      chains.vip_check!.push(f === 4 ? "icmp type echo-request accept" : "icmpv6 type echo-request accept");
    }
  }
  if (!opts.permitAll) {
    chains.vip_check!.push("meta l4proto tcp reject with tcp reset", "reject");
  }
  const dsrFamilies = new Set<Family>();
  for (const ps of plan.services.values()) {
    if (!ps.dsr || ps.service.fwmark === undefined || !opts.families.includes(ps.dsr.family)) continue;
    const f = ps.dsr.family;
    if (!dsrFamilies.has(f)) {
      dsrFamilies.add(f);
      tx.add({
        map: { name: `dsr_marks_v${f}`, type: `${ADDR[f]} . inet_proto . inet_service`, map: "mark" },
      });
      // The same keys as a plain set: the MSS clamp matches answers by source, which a map cannot serve.
      tx.add({ set: { name: `dsr_ports_v${f}`, type: `${ADDR[f]} . inet_proto . inet_service` } });
    }
    tx.add({
      element: {
        set: `dsr_marks_v${f}`,
        key: [ps.dsr.vip, ps.dsr.protocol, String(ps.dsr.port)],
        value: [hex(ps.service.fwmark)],
      },
    });
    tx.add({ element: { set: `dsr_ports_v${f}`, key: [ps.dsr.vip, ps.dsr.protocol, String(ps.dsr.port)] } });
  }
  for (const name of Object.keys(chains)) tx.add({ chain: { name } });
  for (const [name, rules] of Object.entries(chains)) {
    for (const rule of rules) tx.add({ rule: { chain: name, rule } });
  }
  const base = [
    { name: "nat_prerouting", type: "nat", hook: "prerouting", priority: NFT_PRIORITY.proxyDnat },
    { name: "nat_output", type: "nat", hook: "output", priority: NFT_PRIORITY.proxyDnat },
    { name: "nat_postrouting", type: "nat", hook: "postrouting", priority: NFT_PRIORITY.srcnat },
    { name: "filter_input", type: "filter", hook: "input", priority: NFT_PRIORITY.proxyFilter },
  ] as const;
  for (const b of base) tx.add({ chain: { ...b, policy: "accept" } });
  if (dsrFamilies.size) {
    const mangle = [
      { name: "mangle_prerouting", type: "filter", hook: "prerouting" },
      { name: "mangle_output", type: "route", hook: "output" },
    ] as const;
    for (const c of mangle) {
      tx.add({ chain: { ...c, priority: NFT_PRIORITY.proxyMangle, policy: "accept" } });
    }
    for (const f of [...dsrFamilies].sort()) {
      const ip = IP[f];
      // IPVS matches a firewall-mark service on the whole mark: this one is set as a whole value.
      const markRule = `meta mark set ${ip} daddr . meta l4proto . th dport map @dsr_marks_v${f}`;
      for (const c of mangle) tx.add({ rule: { chain: c.name, rule: markRule } });
      if (opts.dsrMtu === undefined) continue;
      const mss = opts.dsrMtu - DSR_MSS_OVERHEAD[f];
      if (mss < 536) continue; // below TCP's default MSS a clamp would do more harm than good
      // SYN and SYN-ACK (RST unset), only ever lowered: a smaller MSS a peer asked for stays.
      const clamp = `tcp flags & (syn | rst) == syn tcp option maxseg size > ${mss} ` +
        `tcp option maxseg size set ${mss}`;
      const toVip = `${ip} daddr . meta l4proto . th dport @dsr_ports_v${f} ${clamp}`;
      tx.add({ rule: { chain: "mangle_prerouting", rule: toVip } });
      tx.add({ rule: { chain: "mangle_output", rule: toVip } });
      // The pod's SYN-ACK, from the VIP, passes this node whenever the node is the pod's gateway.
      tx.add({
        rule: {
          chain: "mangle_prerouting",
          rule: `${ip} saddr . meta l4proto . th sport @dsr_ports_v${f} ${clamp}`,
        },
      });
    }
  }
  tx.add({ rule: { chain: "nat_prerouting", rule: "jump mark_for_masquerade" } });
  tx.add({ rule: { chain: "nat_output", rule: "jump mark_for_masquerade" } });
  tx.add({ rule: { chain: "nat_postrouting", rule: "jump masquerading" } });
  tx.add({ rule: { chain: "filter_input", rule: "jump source_ranges" } });
  for (const f of opts.families) {
    tx.add({ rule: { chain: "filter_input", rule: `${IP[f]} daddr @vips_v${f} jump vip_check` } });
  }
  return tx;
}
