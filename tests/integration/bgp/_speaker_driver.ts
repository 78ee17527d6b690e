/**
 * Runs our BGP speaker inside a network namespace for the interop tests:
 * `ip netns exec NS deno run -A tests/integration/bgp/_speaker_driver.ts`. It reads one JSON command per
 * line on stdin and answers one JSON line per command on stdout (`{id, ok, result|error}`); speaker
 * events are written as `{event}` lines. Logs go to stderr.
 */
import { configureLogging } from "../../../core/log.ts";
import { Metrics } from "../../../core/metrics.ts";
import {
  BgpSpeaker,
  type Family,
  type PeerConfig,
  prefixFilter,
  type SpeakerOptions,
} from "../../../modules/router/bgp/mod.ts";
import { serveAdmin } from "../../../modules/router/bgp/mod.ts";

configureLogging({ level: (Deno.env.get("BGP_LOG") as "debug" | undefined) ?? "info" });
const out = (obj: unknown) => Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(obj) + "\n"));

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

async function handle(cmd: string, a: Record<string, unknown>): Promise<unknown> {
  switch (cmd) {
    case "start": {
      const opts = a as unknown as SpeakerOptions & { useSocketTransport?: boolean; adminPort?: number };
      const st = opts.useSocketTransport ? await socketTransport() : undefined;
      if (opts.useSocketTransport && !st) throw new Error("ffi/tcp.ts socket transport unavailable");
      speaker = new BgpSpeaker({ ...opts, metrics, ...(st ? { socketTransport: st } : {}) });
      // `routeEvents: false` forwards only peer events (benchmarks: 100k route lines would dominate).
      const routeEvents = (a.routeEvents as boolean | undefined) ?? true;
      speaker.subscribe((event) => {
        if (routeEvents || event.type === "peer") out({ event });
      });
      await speaker.start();
      if (opts.adminPort) admin = serveAdmin(speaker, { port: opts.adminPort, metrics });
      return { port: speaker.listenPort };
    }
    case "addPeer":
      speaker!.addPeer(a as unknown as PeerConfig);
      return null;
    case "updatePeer":
      speaker!.updatePeer(a as unknown as PeerConfig);
      return null;
    case "removePeer":
      speaker!.removePeer(a.address as string);
      return null;
    case "set":
      speaker!.set(a.family as Family, a.routes as never);
      return null;
    case "routes":
      return speaker!.routes(a.family as Family);
    case "peers":
      return speaker!.peers();
    case "refresh":
      return speaker!.refresh(a.address as string, a.family as Family);
    case "rejectImport":
      speaker!.setImportPolicy(prefixFilter((a.cidrs as string[]).map((cidr) => ({ cidr })), "reject"));
      return null;
    case "ribSize":
      return speaker!.rib.size(a.family as Family ?? "ipv4-unicast");
    case "waitRibSize": {
      // Polls in-process so the measured time is not padded by round trips.
      const t0 = performance.now();
      const family = (a.family as Family | undefined) ?? "ipv4-unicast";
      while (speaker!.rib.size(family) < (a.count as number)) {
        if (performance.now() - t0 > ((a.timeoutMs as number | undefined) ?? 120_000)) {
          throw new Error("timed out");
        }
        await new Promise((r) => setTimeout(r, 5));
      }
      // Also from the moment the session with `peer` became Established (epoch ms, as the speaker saw it).
      const up = a.peer ? speaker!.peer(a.peer as string)?.upSince : undefined;
      return {
        ms: performance.now() - t0,
        sinceEstablishedMs: up ? Date.now() - up : undefined,
        rss: Deno.memoryUsage().rss,
      };
    }
    case "memory":
      return Deno.memoryUsage();
    case "stop":
      await speaker?.stop();
      await admin?.close();
      return null;
    default:
      throw new Error(`unknown command ${cmd}`);
  }
}

const decoder = new TextDecoder();
let buf = "";
for await (const chunk of Deno.stdin.readable) {
  buf += decoder.decode(chunk, { stream: true });
  let nl;
  while ((nl = buf.indexOf("\n")) >= 0) {
    const line = buf.slice(0, nl);
    buf = buf.slice(nl + 1);
    if (!line.trim()) continue;
    const { id, cmd, args } = JSON.parse(line);
    try {
      out({ id, ok: true, result: await handle(cmd, args ?? {}) });
    } catch (e) {
      out({
        id,
        ok: false,
        error: e instanceof Error ? `${e.message}${e.cause ? `: ${e.cause}` : ""}` : String(e),
      });
    }
  }
}
await speaker?.stop();
await admin?.close();
Deno.exit(0);
