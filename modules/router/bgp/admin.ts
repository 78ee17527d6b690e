/**
 * The admin endpoint (JSON over HTTP on localhost, port `--bgp-admin-port`, default 50051, where
 * kube-router's embedded GoBGP served gRPC) and the `kube-router bgp neighbors|routes` subcommand that
 * reads it and prints tables shaped like `gobgp neighbor` and `gobgp global rib`.
 */
import type { Metrics } from "../../../core/mod.ts";
import type { LearnedRoute, PeerStatus } from "./speaker.ts";
import type { BgpSpeaker } from "./speaker.ts";
import { FAMILIES, type Family, formatAsPath, formatCommunity, originName } from "./types.ts";

export interface AdminServer {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * Serves `GET /neighbors`, `GET /neighbors/<address>`, `GET /routes?family=ipv4-unicast|ipv6-unicast`
 * and `GET /metrics` on 127.0.0.1. Localhost only: it is an operator's tool, not an API.
 */
export function serveAdmin(
  speaker: BgpSpeaker,
  opts: { port: number; hostname?: string; metrics?: Metrics },
): AdminServer {
  const server = Deno.serve(
    { port: opts.port, hostname: opts.hostname ?? "127.0.0.1", onListen() {} },
    (req) => {
      const url = new URL(req.url);
      const json = (v: unknown, status = 200) =>
        new Response(JSON.stringify(v, null, 1), { status, headers: { "content-type": "application/json" } });
      if (req.method !== "GET") return json({ error: "method not allowed" }, 405);
      if (url.pathname === "/neighbors") return json(speaker.peers());
      if (url.pathname.startsWith("/neighbors/")) {
        const p = speaker.peer(decodeURIComponent(url.pathname.slice(11)));
        return p ? json(p) : json({ error: "no such neighbor" }, 404);
      }
      if (url.pathname === "/routes") {
        const family = (url.searchParams.get("family") ?? "ipv4-unicast") as Family;
        if (!FAMILIES.includes(family)) return json({ error: `unknown family ${family}` }, 400);
        return json(speaker.routes(family));
      }
      if (url.pathname === "/metrics" && opts.metrics) {
        speaker.refreshMetrics();
        return new Response(opts.metrics.render(), {
          headers: { "content-type": "text/plain; version=0.0.4" },
        });
      }
      return json({ error: "not found" }, 404);
    },
  );
  return {
    port: server.addr.port,
    close: async () => {
      await server.shutdown();
    },
  };
}

const SHORT_STATE: Record<string, string> = {
  Idle: "Idle",
  Connect: "Connect",
  Active: "Active",
  OpenSent: "Sent",
  OpenConfirm: "Confirm",
  Established: "Establ",
};

/** `00:01:02`, or `1d 02:03:04` beyond a day, as gobgp prints durations. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400);
  const hms = [Math.floor(s / 3600) % 24, Math.floor(s / 60) % 60, s % 60].map((n) =>
    String(n).padStart(2, "0")
  ).join(":");
  return d ? `${d}d ${hms}` : hms;
}

/** The neighbor table, as `gobgp neighbor` prints it. */
export function formatNeighbors(peers: PeerStatus[]): string {
  const rows = peers.map((p) => {
    let rcv = 0, acc = 0;
    for (const c of Object.values(p.prefixes)) {
      rcv += c.received;
      acc += c.accepted;
    }
    return [
      p.address,
      String(p.asn),
      formatDuration(p.uptime),
      SHORT_STATE[p.state] ?? p.state,
      String(rcv),
      String(acc),
    ];
  });
  const w = [4, 2, 7, 5].map((min, i) => Math.max(min, ...rows.map((r) => r[i]!.length)));
  const lines = [
    `${"Peer".padEnd(w[0]!)} ${"AS".padStart(w[1]!)} ${"Up/Down".padStart(w[2]!)} ${
      "State".padEnd(11)
    } |#Received  Accepted`,
  ];
  for (const r of rows) {
    lines.push(
      `${r[0]!.padEnd(w[0]!)} ${r[1]!.padStart(w[1]!)} ${r[2]!.padStart(w[2]!)} ${r[3]!.padEnd(11)} |${
        r[4]!.padStart(9)
      } ${r[5]!.padStart(9)}`,
    );
  }
  return lines.join("\n");
}

/** Details of one neighbor, like `gobgp neighbor <address>`. */
export function formatNeighbor(p: PeerStatus): string {
  const lines = [
    `BGP neighbor is ${p.address}, remote AS ${p.asn}`,
    `  BGP version 4, remote router ID ${p.routerId ?? "unknown"}`,
    `  BGP state = ${p.state}, up for ${formatDuration(p.uptime)}`,
    `  Local address ${
      p.localAddress ?? "unknown"
    }; hold time ${p.holdTime}, keepalive interval ${p.keepalive} seconds`,
    `  Neighbor capabilities: ${p.capabilities.join(", ") || "none"}`,
    "  Message statistics:",
    "                         Sent       Rcvd",
  ];
  for (const t of ["open", "notification", "update", "keepalive", "refresh"]) {
    lines.push(
      `    ${(t[0]!.toUpperCase() + t.slice(1) + ":").padEnd(18)} ${
        String(p.messagesSent[t] ?? 0).padStart(10)
      } ${String(p.messagesReceived[t] ?? 0).padStart(10)}`,
    );
  }
  lines.push("  Route statistics:");
  for (const [f, c] of Object.entries(p.prefixes)) {
    lines.push(`    ${f}: received ${c.received}, accepted ${c.accepted}, advertised ${c.advertised}`);
  }
  if (p.lastError) lines.push(`  Last error: ${p.lastError}`);
  return lines.join("\n");
}

/** The Loc-RIB, as `gobgp global rib` prints it. */
export function formatRoutes(routes: LearnedRoute[], now = Date.now()): string {
  const lines = [
    `   ${"Network".padEnd(20)} ${"Next Hop".padEnd(20)} ${"AS_PATH".padEnd(20)} ${"Age".padEnd(10)} Attrs`,
  ];
  for (const r of routes) {
    const attrs = [`{Origin: ${originName(r.attrs.origin)}}`];
    if (r.attrs.med !== undefined) attrs.push(`{Med: ${r.attrs.med}}`);
    if (r.attrs.localPref !== undefined) attrs.push(`{LocalPref: ${r.attrs.localPref}}`);
    if (r.attrs.communities?.length) {
      attrs.push(`{Communities: ${r.attrs.communities.map(formatCommunity).join(", ")}}`);
    }
    if (r.attrs.originatorId) attrs.push(`{Originator: ${r.attrs.originatorId}}`);
    if (r.attrs.clusterList?.length) attrs.push(`{ClusterList: [${r.attrs.clusterList.join(", ")}]}`);
    const mark = (r.stale ? "S" : "*") + (r.best ? ">" : " ");
    const nh = r.source === "local" && !r.nextHop ? "0.0.0.0" : r.nextHop;
    lines.push(
      `${mark} ${r.prefix.padEnd(20)} ${nh.padEnd(20)} ${formatAsPath(r.attrs.asPath).padEnd(20)} ${
        formatDuration((now - r.since) / 1000).padEnd(10)
      } [${attrs.join(" ")}]`,
    );
  }
  return lines.join("\n");
}

/**
 * `kube-router bgp neighbors [address] [--json]` and `kube-router bgp routes [-a ipv4|ipv6] [--json]`:
 * asks the running agent's admin endpoint on 127.0.0.1:`port` and prints. Returns the exit code.
 */
export async function bgpCli(args: string[], port: number): Promise<number> {
  const json = args.includes("--json") || args.includes("-j");
  const rest = args.filter((a) => a !== "--json" && a !== "-j");
  const [sub, ...more] = rest;
  const get = async (path: string) => {
    const res = await fetch(`http://127.0.0.1:${port}${path}`);
    const body = await res.json();
    if (!res.ok) throw new Error(body?.error ?? `HTTP ${res.status}`);
    return body;
  };
  try {
    if (sub === "neighbors" || sub === "neighbor") {
      if (more[0]) {
        const p = await get(`/neighbors/${encodeURIComponent(more[0])}`) as PeerStatus;
        console.log(json ? JSON.stringify(p, null, 2) : formatNeighbor(p));
      } else {
        const ps = await get("/neighbors") as PeerStatus[];
        console.log(json ? JSON.stringify(ps, null, 2) : formatNeighbors(ps));
      }
      return 0;
    }
    if (sub === "routes" || sub === "rib") {
      let family: Family = "ipv4-unicast";
      const ai = more.findIndex((a) => a === "-a" || a === "--address-family");
      if (ai >= 0) {
        const f = more[ai + 1] ?? "";
        family = f.startsWith("ipv6")
          ? "ipv6-unicast"
          : f.startsWith("ipv4")
          ? "ipv4-unicast"
          : (f as Family);
        if (!FAMILIES.includes(family)) {
          console.error(`unknown address family ${f} (ipv4 or ipv6)`);
          return 2;
        }
      }
      const rs = await get(`/routes?family=${family}`) as LearnedRoute[];
      console.log(json ? JSON.stringify(rs, null, 2) : formatRoutes(rs));
      return 0;
    }
    console.error(
      "usage: kube-router bgp neighbors [address] [--json] | kube-router bgp routes [-a ipv4|ipv6] [--json]",
    );
    return 2;
  } catch (e) {
    console.error(
      `cannot reach the BGP admin endpoint on 127.0.0.1:${port}: ${e instanceof Error ? e.message : e}`,
    );
    return 1;
  }
}
