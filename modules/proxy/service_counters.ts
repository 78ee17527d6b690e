/**
 * kube_router_service_* on the nftables backend: the same gauges, names and labels the IPVS backend takes
 * from IPVS's counters (ipvs_backend.ts), read from the element counters of the proxy's counted sets
 * (`service_stats_in|out|conns_vF`, see nft_render.ts), so a dashboard built for kube-router works on either
 * backend.
 *
 * The sets are read when metrics are scraped (Metrics.onCollect), not on a timer: an agent nobody scrapes
 * pays nothing. Each set is read with one netlink dump (ffi NftSetCounters): libnftables took 0.3 s of CPU
 * to print one set of 10,000 elements, the dump and its decoding about 20 ms (warm; a few MB of messages,
 * dropped after). Each element is mapped back to its Service through the keys the programmed Services were
 * counted on. Series
 * of Services, VIPs or ports that are gone are removed. A listing that fails is logged and counted
 * (kube_router_proxy_counter_read_errors_total); the gauges then keep their last values.
 *
 * Rates (pps, bps, cps) are not estimated by nftables as IPVS does (IPVS: a 2 s estimator, smoothed):
 * they are the counters' growth between the last two readings divided by the time between them, so their
 * window is the scrape interval (at least `minIntervalMs`: a scrape sooner than that reuses the last
 * reading). The first reading of a series, and one after a counter went backwards (the element was made
 * again), reports rate 0.
 */
import { type Logger, type Metrics, releaseMemory } from "../../core/mod.ts";
import { decodeConcatKey, isNotFound, type NftObject } from "../../ffi/mod.ts";
import { type CounterKey, counterSet, elementId, PROXY_TABLE, type RenderedService } from "./nft_render.ts";

/** The listing the reader falls back to (FakeNftables; Nftables too, but see SetCounterSource). */
export interface CounterNft {
  list(
    target: { set: { family: "inet"; table: string; name: string } },
    opts?: { outOfProcess?: boolean },
  ): Promise<NftObject[]>;
}

/** Element counters straight from the kernel (ffi NftSetCounters: one netlink dump per set). */
export interface SetCounterSource {
  read(
    family: string,
    table: string,
    set: string,
    each: (key: Uint8Array, packets: number, bytes: number) => void,
    restart?: () => void,
  ): Promise<void>;
}

/** The gauges, as the IPVS backend names them (ipvs_backend.ts STAT_METRICS), with nftables' help text. */
const GAUGES = [
  [
    "conns",
    "service_total_connections",
    "Total incoming connections made to the service (nftables counters)",
  ],
  ["inPkts", "service_packets_in", "Total incoming packets of the service (nftables counters)"],
  ["outPkts", "service_packets_out", "Total outgoing packets of the service (nftables counters)"],
  ["inBytes", "service_bytes_in", "Total incoming bytes of the service (nftables counters)"],
  ["outBytes", "service_bytes_out", "Total outgoing bytes of the service (nftables counters)"],
  ["inPps", "service_pps_in", "Incoming packets per second of the service (between the last two readings)"],
  ["outPps", "service_pps_out", "Outgoing packets per second of the service (between the last two readings)"],
  ["cps", "service_cps", "Connections per second of the service (between the last two readings)"],
  ["inBps", "service_bps_in", "Incoming bytes per second of the service (between the last two readings)"],
  ["outBps", "service_bps_out", "Outgoing bytes per second of the service (between the last two readings)"],
] as const;
type Stat = (typeof GAUGES)[number][0];

/** One element's counters. */
export interface ElementCount {
  packets: number;
  bytes: number;
}

/** One series' totals at one reading. */
interface Reading {
  at: number;
  conns: number;
  inPkts: number;
  outPkts: number;
  inBytes: number;
  outBytes: number;
}

/**
 * The counters of a counted set's listing, by element key (`10.96.0.10 . tcp . 80`, as nft prints the
 * parts). Elements without counters are left out.
 */
export function parseCounters(objs: readonly NftObject[]): Map<string, ElementCount> {
  const out = new Map<string, ElementCount>();
  for (const o of objs) {
    const body = (o as { set?: { elem?: unknown } }).set;
    if (!body || !Array.isArray(body.elem)) continue;
    for (const e of body.elem) {
      const elem = (e as { elem?: { val?: unknown; counter?: { packets?: unknown; bytes?: unknown } } }).elem;
      const c = elem?.counter;
      if (!c || typeof c.packets !== "number" || typeof c.bytes !== "number") continue;
      const val = elem.val as { concat?: unknown } | undefined;
      if (!val || !Array.isArray(val.concat)) continue;
      out.set(val.concat.map(String).join(" . "), { packets: c.packets, bytes: c.bytes });
    }
  }
  return out;
}

function elementKey(k: CounterKey): string {
  return `${k.vip} . ${k.protocol} . ${k.port}`;
}

export interface ServiceCountersOptions {
  /** Where the counters are read: the kernel over netlink, else a JSON listing (the fake). */
  source: { kernel: SetCounterSource } | { nft: CounterNft };
  metrics: Metrics;
  log: Logger;
  /** Epoch milliseconds (the module's clock). */
  now: () => number;
  families: () => readonly (4 | 6)[];
  /** The Services programmed now. */
  programmed: () => ReadonlyMap<string, RenderedService>;
  /** A scrape within this long of the last reading reuses it (ms; default 1000). */
  minIntervalMs?: number;
}

export class ServiceCounters {
  readonly #o: ServiceCountersOptions;
  readonly #gauges: Record<Stat, ReturnType<Metrics["gauge"]>>;
  readonly #errors;
  /**
   * Series key -> its labels, its last reading and whether its rates are 0 (then unchanged counters need
   * no update).
   */
  #series = new Map<
    string,
    { labels: Readonly<Record<string, string>>; last?: Reading; spare?: Reading | undefined; still: boolean }
  >();
  #lastRead: number | undefined;
  #reading: Promise<void> | undefined;

  constructor(o: ServiceCountersOptions) {
    this.#o = o;
    const m = o.metrics;
    this.#gauges = Object.fromEntries(
      GAUGES.map(([k, name, help]) => [k, m.gauge(`kube_router_${name}`, help)]),
    ) as Record<Stat, ReturnType<Metrics["gauge"]>>;
    this.#errors = m.counter(
      "kube_router_proxy_counter_read_errors_total",
      "Readings of the per-Service nftables counters that failed.",
    );
  }

  /** Reads the counters (one reading at a time; a scrape soon after the last reuses it). */
  collect(): Promise<void> {
    if (this.#reading) return this.#reading;
    const now = this.#o.now();
    if (this.#lastRead !== undefined && now - this.#lastRead < (this.#o.minIntervalMs ?? 1000)) {
      return Promise.resolve();
    }
    this.#reading = this.#read().finally(() => {
      this.#reading = undefined;
      // A reading of 10,000 Services' counters leaves tens of MiB of garbage: collected now.
      releaseMemory();
    });
    return this.#reading;
  }

  /** Drops every series (the module stops). */
  clear(): void {
    for (const { labels } of this.#series.values()) {
      for (const g of Object.values(this.#gauges)) g.remove(labels);
    }
    this.#series.clear();
  }

  /** One counted set's counters by element key (`10.96.0.10 . tcp . 80`). */
  async #list(f: 4 | 6, set: string): Promise<Map<string, ElementCount>> {
    const src = this.#o.source;
    if ("nft" in src) {
      return parseCounters(
        await src.nft.list({ set: { family: "inet", table: PROXY_TABLE, name: set } }, {
          outOfProcess: true,
        }),
      );
    }
    const types = [f === 4 ? "ipv4_addr" : "ipv6_addr", "inet_proto", "inet_service"] as const;
    const out = new Map<string, ElementCount>();
    await src.kernel.read("inet", PROXY_TABLE, set, (key, packets, bytes) => {
      const parts = decodeConcatKey(key, types);
      if (parts) out.set(parts.join(" . "), { packets, bytes });
    }, () => out.clear());
    return out;
  }

  async #read(): Promise<void> {
    const listed: Record<"in" | "out" | "conns", Map<string, ElementCount>>[] = [];
    const families = this.#o.families();
    try {
      for (const f of families) {
        // Before the first sync (no table, or an old table without the sets): nothing counted yet.
        const one = async (kind: "in" | "out" | "conns") => {
          const set = counterSet(kind, f);
          // Each dump runs synchronously (tens of ms at 10,000 Services): timers and I/O get a turn between.
          await new Promise((r) => setTimeout(r, 0));
          try {
            return await this.#list(f, set);
          } catch (err) {
            if (isNotFound(err)) return new Map<string, ElementCount>();
            throw err;
          }
        };
        listed[f] = { in: await one("in"), out: await one("out"), conns: await one("conns") };
      }
    } catch (err) {
      this.#errors.inc();
      this.#o.log.warn("cannot read the per-Service counters; kube_router_service_* keep their last values", {
        err,
      });
      return;
    }
    const at = this.#o.now();
    this.#lastRead = at;
    const seen = new Set<string>();
    // Nothing is allocated here for a series that exists (every scrape of 10,000 Services walks 10,000 or
    // more): its names are cached with its counter key, its two readings are reused in turn. What a
    // scrape leaves behind would otherwise live until the next one and grow the old generation.
    for (const r of this.#o.programmed().values()) {
      if (!r.counters.length) continue;
      for (const k of r.counters) {
        const sets = listed[k.family];
        const names = namesOf(r.key, k);
        // A VIP and port another Service holds (a conflict this one lost) are not this one's to report.
        if (!r.elements.has(names.inId)) continue;
        const inC = sets?.in.get(names.ek);
        // Not in the kernel yet (or its set could not be read): no series rather than a false zero.
        if (!sets || !inC) continue;
        const outC = sets.out.get(names.ek);
        const id = names.id;
        seen.add(id);
        let st = this.#series.get(id);
        if (!st) {
          const [namespace, name] = splitKey(r.key);
          // Frozen: the ten gauges share this one object, its key and its rendered text (core/metrics.ts).
          const labels = Object.freeze({
            svc_namespace: namespace,
            service_name: name,
            service_vip: k.vip,
            protocol: k.protocol,
            port: String(k.port),
          });
          this.#series.set(id, st = { labels, still: false });
        }
        const prev = st.last;
        const now: Reading = st.spare ?? { at: 0, conns: 0, inPkts: 0, outPkts: 0, inBytes: 0, outBytes: 0 };
        now.at = at;
        now.conns = sets.conns.get(names.ek)?.packets ?? 0;
        now.inPkts = inC.packets;
        now.outPkts = outC?.packets ?? 0;
        now.inBytes = inC.bytes;
        now.outBytes = outC?.bytes ?? 0;
        st.last = now;
        st.spare = prev;
        // Most Services are idle at any moment: unchanged counters and rates already 0 need no update.
        if (
          st.still && prev && prev.conns === now.conns && prev.inPkts === now.inPkts &&
          prev.outPkts === now.outPkts && prev.inBytes === now.inBytes && prev.outBytes === now.outBytes
        ) continue;
        const rate = (stat: keyof Omit<Reading, "at">) => {
          if (!prev || at <= prev.at || now[stat] < prev[stat]) return 0;
          return (now[stat] - prev[stat]) / ((at - prev.at) / 1000);
        };
        const values: Record<Stat, number> = {
          conns: now.conns,
          inPkts: now.inPkts,
          outPkts: now.outPkts,
          inBytes: now.inBytes,
          outBytes: now.outBytes,
          inPps: rate("inPkts"),
          outPps: rate("outPkts"),
          cps: rate("conns"),
          inBps: rate("inBytes"),
          outBps: rate("outBytes"),
        };
        for (const [stat] of GAUGES) this.#gauges[stat].set(st.labels, values[stat]);
        st.still = prev !== undefined && values.inPps === 0 && values.outPps === 0 && values.cps === 0 &&
          values.inBps === 0 && values.outBps === 0;
      }
    }
    for (const [id, { labels }] of this.#series) {
      if (seen.has(id)) continue;
      for (const g of Object.values(this.#gauges)) g.remove(labels);
      this.#series.delete(id);
    }
  }
}

/** A counter key's names, made once per render of its Service (the key objects live as long as it). */
const names = new WeakMap<CounterKey, { ek: string; id: string; inId: string }>();
function namesOf(serviceKey: string, k: CounterKey): { ek: string; id: string; inId: string } {
  let n = names.get(k);
  if (!n) {
    const ek = elementKey(k);
    n = { ek, id: `${serviceKey}|${k.family}|${ek}`, inId: elementId(counterSet("in", k.family), [ek]) };
    names.set(k, n);
  }
  return n;
}

function splitKey(key: string): [string, string] {
  const i = key.indexOf("/");
  return [key.slice(0, i), key.slice(i + 1)];
}
