/**
 * Runs our BGP speaker inside a network namespace for the interop tests and the receive benchmark, through
 * the shared JSON-lines harness (tests/_support/driver.ts): `Driver.start(ns, this file)`, then
 * `call("start", SpeakerOptions)`, `call("addPeer", PeerConfig)`, …; speaker events arrive as `bgp` events.
 * Logs go to stderr.
 */
import { configureLogging } from "../../../core/log.ts";
import { Metrics } from "../../../core/metrics.ts";
import { prefixFilter } from "../../../modules/router/bgp/policy.ts";
import type { PeerConfig } from "../../../modules/router/bgp/session.ts";
import { BgpSpeaker, type SpeakerOptions } from "../../../modules/router/bgp/speaker.ts";
import type { Family } from "../../../modules/router/bgp/types.ts";
import { serveAdmin } from "../../../modules/router/bgp/admin.ts";
import { serveDriver } from "../../_support/driver.ts";

configureLogging({ level: (Deno.env.get("BGP_LOG") as "debug" | undefined) ?? "info" });

let speaker: BgpSpeaker | undefined;
let admin: { close(): Promise<void> } | undefined;
const metrics = new Metrics();

async function socketTransport(): Promise<SpeakerOptions["socketTransport"]> {
  try {
    const mod = await import("../../../ffi/tcp.ts");
    return mod.socketTransport;
  } catch {
    return undefined;
  }
}

type Args = Record<string, unknown>;
/** The running speaker; commands other than `start` and `stop` need one. */
const sp = (): BgpSpeaker => {
  if (!speaker) throw new Error("speaker not started");
  return speaker;
};

await serveDriver({
  start: async (params, emit) => {
    const a = (params ?? {}) as Args;
    const opts = a as unknown as SpeakerOptions & { useSocketTransport?: boolean; adminPort?: number };
    const st = opts.useSocketTransport ? await socketTransport() : undefined;
    if (opts.useSocketTransport && !st) throw new Error("ffi/tcp.ts socket transport unavailable");
    speaker = new BgpSpeaker({ ...opts, metrics, ...(st ? { socketTransport: st } : {}) });
    // `routeEvents: false` forwards only peer events (benchmarks: 100k route lines would dominate).
    const routeEvents = (a.routeEvents as boolean | undefined) ?? true;
    speaker.subscribe((event) => {
      if (routeEvents || event.type === "peer") emit("bgp", event);
    });
    await speaker.start();
    if (opts.adminPort) admin = serveAdmin(speaker, { port: opts.adminPort, metrics });
    return { port: speaker.listenPort };
  },
  addPeer: (a) => sp().addPeer(a as PeerConfig),
  updatePeer: (a) => sp().updatePeer(a as PeerConfig),
  removePeer: (a) => sp().removePeer((a as Args).address as string),
  set: (a) => sp().set((a as Args).family as Family, (a as Args).routes as never),
  routes: (a) => sp().routes((a as Args).family as Family),
  peers: () => sp().peers(),
  refresh: (a) => sp().refresh((a as Args).address as string, (a as Args).family as Family),
  rejectImport: (a) => {
    sp().setImportPolicy(prefixFilter(((a as Args).cidrs as string[]).map((cidr) => ({ cidr })), "reject"));
  },
  ribSize: (a) => sp().rib.size((a as Args | null)?.family as Family ?? "ipv4-unicast"),
  waitRibSize: async (params) => {
    const a = params as Args;
    // Polls in-process so the measured time is not padded by round trips.
    const t0 = performance.now();
    const family = (a.family as Family | undefined) ?? "ipv4-unicast";
    while (sp().rib.size(family) < (a.count as number)) {
      if (performance.now() - t0 > ((a.timeoutMs as number | undefined) ?? 120_000)) {
        throw new Error("timed out");
      }
      await new Promise((r) => setTimeout(r, 5));
    }
    // Also from the moment the session with `peer` became Established (epoch ms, as the speaker saw it).
    const up = a.peer ? sp().peer(a.peer as string)?.upSince : undefined;
    return {
      ms: performance.now() - t0,
      sinceEstablishedMs: up ? Date.now() - up : undefined,
      rss: Deno.memoryUsage().rss,
    };
  },
  memory: () => Deno.memoryUsage(),
  stop: async () => {
    await speaker?.stop();
    await admin?.close();
  },
});
await speaker?.stop();
await admin?.close();
Deno.exit(0);
