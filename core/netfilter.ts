/**
 * The netfilter values the modules must agree on, in one neutral place: the nftables tables each module
 * owns, the hook priorities that order their chains against each other, and the packet-mark bits they
 * share. Modules never import each other and never read each other's tables; they import these.
 *
 * Order of a packet through the hooks (lower priority first, per hook):
 *
 *   prerouting/output  -150 proxy mangle   (IPVS backend: DSR firewall marks, MSS clamp)
 *   prerouting/output  -110 proxy filter   (LoadBalancer source ranges; Services without endpoints rejected)
 *                      -100 proxy DNAT     (a Service address becomes one endpoint's)
 *   output              -90 proxy filter   (a cluster IP still the destination after DNAT: a port it lacks)
 *   input/forward/output 0  firewall       (NetworkPolicy judges the chosen endpoint, after DNAT)
 *   postrouting         100 proxy, router  (masquerade marked packets; pod egress)
 */

/** Every agent table is an `inet` table: one table serves IPv4 and IPv6. */
export const NFT_FAMILY = "inet";

/**
 * Table names, one per module that programs nftables, named for their owner so nothing else ever shares
 * them: each module may flush, diff or delete its own table without asking anyone.
 */
export const NFT_TABLES = {
  /** Router: pod egress masquerading (modules/router/egress.ts). */
  router: "kube_router_router",
  /** Service proxy: Service DNAT, source ranges, no-endpoint rejects, masquerading of marked packets. */
  proxy: "kube_router_proxy",
  /** Firewall: NetworkPolicy. */
  firewall: "kube_router_firewall",
  /**
   * The router's table before each module had its own: named for the whole agent. The router deletes it on
   * start and in --cleanup-config; nothing creates it any more.
   */
  legacyRouter: "kube_router",
} as const;

/**
 * Hook priorities (nft's numbers; nft prints them by name: dstnat = -100, filter = 0, srcnat = 100).
 * The proxy's values are kube-proxy's nftables mode, so packets meet Services as they would there.
 */
export const NFT_PRIORITY = {
  /**
   * mangle (-150), prerouting and output (a route chain there, so a packet the node sends is routed again
   * once marked): the IPVS backend's DSR firewall marks and TCP MSS clamp, set before routing so the policy
   * rule for DSR delivers the packet locally to IPVS, and before any other chain reads or sets a mark.
   */
  proxyMangle: -150,
  /**
   * dstnat - 10, proxy filter chains in prerouting, input, forward and output: LoadBalancer source ranges
   * and rejects for Services without endpoints must judge the Service address, so they run before DNAT
   * rewrites it to an endpoint's.
   */
  proxyFilter: -110,
  /** dstnat: the proxy's DNAT in prerouting (traffic arriving) and output (traffic from this host). */
  proxyDnat: -100,
  /**
   * dstnat + 10, proxy filter in output after DNAT: a locally sent packet still addressed to a cluster IP
   * after DNAT asked for a port the Service does not expose, and is rejected.
   */
  proxyFilterPostDnat: -90,
  /**
   * filter: the firewall in input, forward and output. After DNAT (-100), so NetworkPolicy judges the
   * endpoint a Service packet was sent to, not the Service address; and after the proxy's filters, so a
   * Service without endpoints is rejected with a clear error rather than dropped by policy.
   */
  firewall: 0,
  /**
   * srcnat: the proxy's masquerading of marked packets and the router's pod egress masquerading, both in
   * postrouting. They never touch the same packet twice: a masquerade takes effect once per connection.
   */
  srcnat: 100,
} as const;

/**
 * Packet-mark bits (meta mark). Each owner sets and reads only its own bit with its mask, never the
 * whole mark, so CNI plugins and other software keep the other bits.
 */
export const NFT_MARK = {
  /**
   * "Masquerade this packet" (kube-proxy's 0x4000): set by the proxy on hairpin and external traffic
   * in its DNAT chains, honoured by the proxy's own postrouting chain. Set with
   * `meta mark set meta mark | 0x4000`, tested with `meta mark & 0x4000 == 0x4000`.
   */
  masquerade: 0x4000,
  /**
   * "Already accepted by NetworkPolicy" (kube-router's network-policy mark 0x20000): the firewall may
   * set it when one of its chains accepted a packet, so a later pass (e.g. forward after input) skips
   * the policy check. Only the firewall sets or reads it.
   */
  firewallAccepted: 0x20000,
  /**
   * "IPVS direct server return" (the proxy's IPVS backend, `kube-router.io/service.dsr=tunnel`): packets
   * to a DSR external/LoadBalancer IP get a firewall mark 0x8000 | N (N in 1..0x3fff, one per VIP, protocol
   * and port) in the proxy's prerouting and output chains at mangle priority, before anyone else marks
   * them. IPVS
   * matches fwmark services on the WHOLE mark, so this is the one mark set as a whole value; the bit
   * 0x8000 alone is what the policy rule `fwmark 0x8000/0x8000 lookup 78` tests.
   */
  dsr: 0x8000,
} as const;

/** The masks that go with the marks: each mark is one bit, so its mask is itself (DSR: bit and index). */
export const NFT_MARK_MASK = {
  masquerade: NFT_MARK.masquerade,
  firewallAccepted: NFT_MARK.firewallAccepted,
  dsr: 0xbfff,
} as const;
