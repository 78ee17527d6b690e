/**
 * `lab up --external-router gobgp|bird`: a real BGP router outside the cluster, on the underlay at
 * 192.168.1.10 with ASN 65000, peering with every node (the nodes keep the cluster ASN 64512, so each
 * session is eBGP, as with a top-of-rack router). The lab passes `--peer-router-ips=192.168.1.10
 * --peer-router-asns=65000` to every agent, so the agents announce their pod CIDRs (and, with
 * `--advertise-cluster-ip`, the Services' cluster IPs) to it. The router only learns: it exports nothing
 * back, so the cluster's own routes are not disturbed.
 *
 * gobgpd keeps its gRPC API on 127.0.0.1:50051 inside its own namespace (`lab exec router -- gobgp global
 * rib`); BIRD's control socket is `<state>/router/bird.ctl` (`lab exec router -- birdc -s … show route`).
 */
import { sh } from "./_sh.ts";
import type { ExternalRouterInfo, LabState } from "./state.ts";
import { topology } from "./topology.ts";

export const EXTERNAL_ROUTER_IP = "192.168.1.10";
export const EXTERNAL_ROUTER_ASN = 65000;
/** The ASN the lab's nodes run iBGP under (the agent's default for --cluster-asn). */
export const CLUSTER_ASN = 64512;
export const EXTERNAL_ROUTER_KINDS = ["gobgp", "bird"] as const;
export type ExternalRouterKind = typeof EXTERNAL_ROUTER_KINDS[number];

/** One route the external router learned. */
export interface LearnedRoute {
  prefix: string;
  nexthop: string;
}

/** gobgpd's TOML config: one eBGP neighbor per node, IPv4 unicast, connect retry 1 s. */
export function gobgpdConfig(nodeIps: string[], ip = EXTERNAL_ROUTER_IP, asn = EXTERNAL_ROUTER_ASN): string {
  let s = `[global.config]\n  as = ${asn}\n  router-id = "${ip}"\n  port = 179\n`;
  for (const n of nodeIps) {
    s += `[[neighbors]]\n  [neighbors.config]\n    neighbor-address = "${n}"\n    peer-as = ${CLUSTER_ASN}\n`;
    s +=
      `  [neighbors.timers.config]\n    connect-retry = 1\n    hold-time = 90\n    keepalive-interval = 30\n`;
    s +=
      `  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = "ipv4-unicast"\n`;
  }
  return s;
}

/** BIRD 2's config: a `bgp` protocol per node that imports everything and exports nothing. */
export function birdConfig(nodeIps: string[], ip = EXTERNAL_ROUTER_IP, asn = EXTERNAL_ROUTER_ASN): string {
  const lines = [
    `router id ${ip};`,
    "log stderr all;",
    // Without the device protocol BIRD knows no interface and cannot resolve a directly connected next hop.
    "protocol device { scan time 10; }",
    "template bgp kube_node {",
    `  local ${ip} as ${asn};`,
    "  connect retry time 1;",
    // eBGP in BIRD 2 rejects everything unless a filter says otherwise (RFC 8212).
    "  ipv4 { import all; export none; };",
    "}",
  ];
  nodeIps.forEach((n, i) =>
    lines.push(`protocol bgp node${i + 1} from kube_node { neighbor ${n} as ${CLUSTER_ASN}; }`)
  );
  return lines.join("\n") + "\n";
}

/** The command that runs the router in the foreground (the lab daemonizes it). */
export function routerCommand(r: ExternalRouterInfo): string[] {
  return r.kind === "gobgp"
    ? ["ip", "netns", "exec", r.netns, "gobgpd", "-f", r.config, "--api-hosts=127.0.0.1:50051", "-l", "warn"]
    : ["ip", "netns", "exec", r.netns, "bird", "-f", "-c", r.config, "-s", r.socket!];
}

/** Writes the router's config for the lab's nodes and returns its description (not yet started). */
export function prepareExternalRouter(
  state: LabState,
  kind: ExternalRouterKind,
  netns: string,
): ExternalRouterInfo {
  const dir = `${state.stateDir}/router`;
  Deno.mkdirSync(dir, { recursive: true });
  const ips = topology(state.nodes, state.prefix).nodes.map((n) => n.ip);
  const config = `${dir}/${kind === "gobgp" ? "gobgpd.toml" : "bird.conf"}`;
  Deno.writeTextFileSync(config, kind === "gobgp" ? gobgpdConfig(ips) : birdConfig(ips));
  return {
    kind,
    ip: EXTERNAL_ROUTER_IP,
    asn: EXTERNAL_ROUTER_ASN,
    netns,
    config,
    ...(kind === "bird" ? { socket: `${dir}/bird.ctl` } : {}),
  };
}

/** The flags every agent gets so it peers with the external router. */
export function externalRouterFlags(r: ExternalRouterInfo | undefined): string[] {
  return r ? [`--peer-router-ips=${r.ip}`, `--peer-router-asns=${r.asn}`] : [];
}

/** The router's own CLI (`gobgp …` or `birdc -s <sock> …`) run in its namespace. */
export function routerCli(r: ExternalRouterInfo, args: string[]): string[] {
  return r.kind === "gobgp"
    ? ["ip", "netns", "exec", r.netns, "gobgp", ...args]
    : ["ip", "netns", "exec", r.netns, "birdc", "-s", r.socket!, ...args];
}

/** Does the router answer its CLI (gobgpd's API is up, BIRD's socket accepts)? */
export async function routerAnswers(r: ExternalRouterInfo): Promise<boolean> {
  const res = await sh(routerCli(r, r.kind === "gobgp" ? ["global"] : ["show", "status"]), { check: false });
  return res.code === 0;
}

/** What the router's CLI shows a person about its sessions (`gobgp neighbor`, `birdc show protocols`). */
export function routerPeersCommand(r: ExternalRouterInfo): string[] {
  return routerCli(r, r.kind === "gobgp" ? ["neighbor"] : ["show", "protocols"]);
}

/** Every IPv4 route in the router's table, one entry per path. */
export async function externalRouterRoutes(r: ExternalRouterInfo): Promise<LearnedRoute[]> {
  if (r.kind === "gobgp") {
    const res = await sh(routerCli(r, ["-j", "global", "rib", "-a", "ipv4"]));
    const txt = res.stdout.trim();
    const rib = (txt ? JSON.parse(txt) : {}) as Record<
      string,
      Array<{ attrs: Array<{ type: number; nexthop?: string }> }>
    >;
    const out: LearnedRoute[] = [];
    for (const [prefix, paths] of Object.entries(rib)) {
      for (const p of paths) {
        // NEXT_HOP (3) or MP_REACH_NLRI (14) carries the next hop.
        const nh = p.attrs.find((a) => a.type === 3 || a.type === 14)?.nexthop ?? "";
        out.push({ prefix, nexthop: nh });
      }
    }
    return out;
  }
  const res = await sh(routerCli(r, ["show", "route"]));
  return parseBirdRoutes(res.stdout);
}

/**
 * Parses `birdc show route`: a line starting with a prefix opens a route, each `via <ip>` line under it
 * is one path (further paths of the same prefix start with blanks).
 */
export function parseBirdRoutes(text: string): LearnedRoute[] {
  const out: LearnedRoute[] = [];
  let prefix: string | undefined;
  for (const line of text.split("\n")) {
    const p = /^(\d+\.\d+\.\d+\.\d+\/\d+)\s/.exec(line);
    if (p) prefix = p[1];
    const v = /^\s+via (\d+\.\d+\.\d+\.\d+)/.exec(line);
    if (v && prefix) out.push({ prefix, nexthop: v[1]! });
  }
  return out;
}
