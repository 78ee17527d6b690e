/**
 * The speaker's Prometheus metrics (kube-router's `kube_router_bgp_*` names): made once per speaker,
 * peer gauges moved on every FSM change, counters and prefix gauges caught up from the peers' own
 * statistics on a timer (the session counts messages anyway; counting them twice on the hot path would
 * only cost).
 */
import type { Counter, Gauge, Metrics } from "../../../core/mod.ts";
import type { PeerRuntime } from "./peer_handling.ts";
import { type PeerState, STATE_NUMBER } from "./session.ts";
import type { PeerStatus } from "./speaker.ts";

export interface SpeakerMetrics {
  peerInfo: Gauge;
  peerState: Gauge;
  uptime: Gauge;
  sent: Counter;
  received: Counter;
  prefixesReceived: Gauge;
  prefixesAccepted: Gauge;
  prefixesAdvertised: Gauge;
  advSent: Counter;
  advReceived: Counter;
  malformed: Counter;
}

export function makeMetrics(m: Metrics): SpeakerMetrics {
  return {
    peerInfo: m.gauge(
      "kube_router_bgp_peer_info",
      "BGP peers, labelled with their AS and FSM state (value 1).",
    ),
    peerState: m.gauge("kube_router_bgp_peer_state", "BGP FSM state per peer (1 Idle ... 6 Established)."),
    uptime: m.gauge("kube_router_bgp_peer_uptime_seconds", "Seconds the BGP session has been established."),
    sent: m.counter("kube_router_bgp_messages_sent_total", "BGP messages sent per peer and type."),
    received: m.counter(
      "kube_router_bgp_messages_received_total",
      "BGP messages received per peer and type.",
    ),
    prefixesReceived: m.gauge(
      "kube_router_bgp_prefixes_received",
      "Prefixes received from a peer (before import policy).",
    ),
    prefixesAccepted: m.gauge(
      "kube_router_bgp_prefixes_accepted",
      "Prefixes from a peer accepted by import policy.",
    ),
    prefixesAdvertised: m.gauge("kube_router_bgp_prefixes_advertised", "Prefixes advertised to a peer."),
    advSent: m.counter("kube_router_bgp_advertisements_sent", "Route advertisements sent to peers."),
    advReceived: m.counter(
      "kube_router_bgp_advertisements_received",
      "Route advertisements received from peers.",
    ),
    malformed: m.counter(
      "kube_router_bgp_malformed_updates_total",
      "UPDATEs handled as withdraw because of malformed attributes (RFC 7606).",
    ),
  };
}

function infoLabels(r: PeerRuntime, state: PeerState = r.peer.state): Record<string, string> {
  return { peer: r.peer.address, asn: String(r.peer.config.asn), state };
}

/** Moves the peer's info and state gauges to its current FSM state. */
export function updatePeerGauges(m: SpeakerMetrics | undefined, r: PeerRuntime, previous?: PeerState): void {
  if (!m) return;
  if (previous) m.peerInfo.remove(infoLabels(r, previous));
  m.peerInfo.set(infoLabels(r), 1);
  m.peerState.set({ peer: r.peer.address }, STATE_NUMBER[r.peer.state]);
}

/** Drops the gauges of a removed peer (its counters stay: they are totals). */
export function removePeerGauges(m: SpeakerMetrics | undefined, key: string, r: PeerRuntime): void {
  if (!m) return;
  for (const g of [m.peerState, m.uptime]) g.remove({ peer: key });
  m.peerInfo.remove(infoLabels(r));
}

/** Brings one peer's gauges (uptime, prefix counts) and message counters up to its status. */
export function refreshPeerMetrics(m: SpeakerMetrics, peer: string, s: PeerStatus): void {
  m.uptime.set({ peer }, s.state === "Established" ? s.uptime : 0);
  m.peerState.set({ peer }, STATE_NUMBER[s.state]);
  for (const [family, c] of Object.entries(s.prefixes)) {
    m.prefixesReceived.set({ peer, family }, c.received);
    m.prefixesAccepted.set({ peer, family }, c.accepted);
    m.prefixesAdvertised.set({ peer, family }, c.advertised);
  }
  for (const [type, n] of Object.entries(s.messagesSent)) {
    const cur = m.sent.value({ peer, type });
    if (n > cur) m.sent.inc({ peer, type }, n - cur);
  }
  for (const [type, n] of Object.entries(s.messagesReceived)) {
    const cur = m.received.value({ peer, type });
    if (n > cur) m.received.inc({ peer, type }, n - cur);
  }
}
