/**
 * The firewall module instance: NetworkPolicy enforced in `inet kube_router_firewall`.
 *
 * Handlers only record which objects changed and ask the runner for a sync; the runner starts it at
 * once (no debounce: events that arrive while a sync runs are coalesced into the next one). An
 * incremental sync feeds the changed objects, read from the watch caches, to the FirewallState
 * (firewall_state.ts), which updates only the sets, chains and map entries they affect, and moves the
 * kernel there in ONE atomic transaction holding just the differences. A full sync (the first, after a
 * failure, and every periodic resync, which repairs hand edits) rebuilds the state from every object
 * and rewrites the whole table in one transaction (flush and refill, delete what is stale). On start
 * nothing is touched before the first sync: the previous run's rules keep enforcing until the first
 * full sync replaces them atomically.
 */
import type { V1Node } from "@kubernetes/client-node";
import {
  type Counter,
  type Gauge,
  type ModuleContext,
  type ModuleInstance,
  objectKey,
  type SyncReason,
  type TimerId,
} from "../../core/mod.ts";
import { type NftListTarget, type NftObject, NftTransaction, type Sysctl } from "../../ffi/mod.ts";
import type { Problem } from "./policy_compiler.ts";
import {
  type DesiredTable,
  DROPS_SET,
  type ExistingTable,
  FIREWALL_FAMILY,
  fullSyncOps,
  incrementalOps,
  policyDropKey,
} from "./nft_render.ts";
import { FirewallState } from "./firewall_state.ts";

export const FIREWALL_TABLE = "kube_router_firewall";
/** How often the per-policy drop counters are read into /metrics between syncs. */
export const COUNTER_REFRESH_MS = 5_000;

/** The nftables operations the firewall needs (Nftables and FakeNftables both provide them). */
export interface FirewallNft {
  run(tx: NftTransaction): Promise<void>;
  list(target: NftListTarget, opts?: { terse?: boolean }): Promise<NftObject[]>;
}

export interface FirewallDeps {
  nft: FirewallNft;
  sysctl: Sysctl;
}

/** What the last sync did, for tests and logs. */
export interface FirewallSyncResult {
  kind: "full" | "incremental";
  operations: number;
  /**
   * Time to bring the rendered table up to date (compile and render the changes: everything on a full
   * sync), to diff it and build the transaction, and to apply it.
   */
  compileMs: number;
  renderMs: number;
  applyMs: number;
}

export class Firewall implements ModuleInstance {
  readonly #ctx: ModuleContext;
  readonly #deps: FirewallDeps;
  readonly #runner;
  readonly #unsubscribe: (() => void)[] = [];
  /** What the kernel holds, as far as we know; undefined forces the next sync to be full. */
  #programmed: DesiredTable | undefined;
  #problems = new Set<string>();
  #stopped = false;
  #lastCounts = new Map<string, number>();
  #counterTimer: TimerId | undefined;
  readonly #metrics: {
    drops: Counter;
    policies: Gauge;
    isolated: Gauge;
    operations: Counter;
  };
  /** The last sync's outcome (tests). */
  lastSync: FirewallSyncResult | undefined;
  #requests = 0;
  #forceFull = false;
  /** The rendered table, kept up to date between syncs; a full sync rebuilds it from every object. */
  #state: FirewallState | undefined;
  /** Objects changed since the last sync started, by resource (keys into the watch caches). */
  readonly #changed = {
    pods: new Set<string>(),
    namespaces: new Set<string>(),
    networkpolicies: new Set<string>(),
  };
  /** Local pods isolated after the last sync, by direction (tests, benchmarks). */
  isolatedPods = { ingress: 0, egress: 0 };
  #syncedRequests = 0;

  constructor(ctx: ModuleContext, deps: FirewallDeps) {
    this.#ctx = ctx;
    this.#deps = deps;
    // No minimum interval: a lone event is synced at once (a new pod's rules must be in place within
    // milliseconds); a burst is coalesced by the runner into the sync after the running one.
    this.#runner = ctx.runner({ sync: (reason) => this.#sync(reason), minIntervalMs: 0 });
    const m = ctx.metrics;
    this.#metrics = {
      drops: m.counter(
        "kube_router_netpol_dropped_packets_total",
        "Packets refused by network policy, by the policy isolating the pod (a packet refused for a pod " +
          "isolated by several policies counts once under each).",
      ),
      policies: m.gauge("kube_router_netpol_policies", "NetworkPolicies known to the firewall."),
      isolated: m.gauge("kube_router_netpol_isolated_pods", "Local pods isolated by policy, by direction."),
      operations: m.counter(
        "kube_router_netpol_nft_operations_total",
        "nftables operations applied by the firewall, by sync kind.",
      ),
    };
  }

  start(): Promise<void> {
    this.#scheduleCounterRefresh();
    for (const r of ["pods", "namespaces", "networkpolicies"] as const) {
      // Handlers only note the key and ask for a sync; the sync reads the watch caches.
      this.#unsubscribe.push(this.#ctx.bus.onResource(r, (ev) => {
        this.#changed[r].add(ev.key);
        this.requestSync();
      }));
    }
    // This node's pod CIDRs are read on every sync.
    this.#unsubscribe.push(this.#ctx.bus.onResource("nodes", () => this.requestSync()));
    return Promise.resolve();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#counterTimer !== undefined) this.#ctx.clock.clearTimeout(this.#counterTimer);
    for (const u of this.#unsubscribe.splice(0)) u();
    await this.#runner.stop();
    // The table stays: policies keep being enforced while the agent restarts.
  }

  /** Asks for a sync now (tests, and the agent after a change). */
  requestSync(): void {
    this.#requests++;
    this.#runner.run();
  }

  /** Asks for a full sync (the whole table rewritten in one transaction) as the periodic one does. */
  requestFullSync(): void {
    this.#forceFull = true;
    this.requestSync();
  }

  /** True when the last successful sync started after every change seen so far (tests wait on it). */
  get settled(): boolean {
    return this.lastSync !== undefined && this.#syncedRequests === this.#requests;
  }

  async #sync(reason: SyncReason): Promise<void> {
    if (this.#stopped) return;
    const upTo = this.#requests;
    const { config, store, log } = this.#ctx;
    const full = this.#programmed === undefined || reason !== "requested" || this.#forceFull;
    this.#forceFull = false;
    // br_netfilter is checked on full syncs (start, periodic, after a failure), not per pod event.
    if (full) await this.#ensureBridgeNetfilter();
    const t0 = performance.now();
    const state = this.#updateState(full);
    state.setPodCidrs(podCidrs(store.get("nodes", config.nodeName)));
    const desired = state.table();
    this.#logProblems(state.problems());
    const t1 = performance.now();
    const tx = new NftTransaction(FIREWALL_FAMILY, FIREWALL_TABLE);
    let t2 = t1;
    try {
      if (full) fullSyncOps(tx, desired, await this.#existing());
      else incrementalOps(tx, this.#programmed!, desired);
      t2 = performance.now();
      if (tx.size > 0) await this.#deps.nft.run(tx);
    } catch (err) {
      this.#programmed = undefined;
      if (full) this.#forceFull = true;
      throw err;
    }
    this.#programmed = desired;
    this.#syncedRequests = upTo;
    const t3 = performance.now();
    this.lastSync = {
      kind: full ? "full" : "incremental",
      operations: tx.size,
      compileMs: t1 - t0,
      renderMs: t2 - t1,
      applyMs: t3 - t2,
    };
    this.#metrics.operations.inc({ kind: full ? "full" : "incremental" }, tx.size);
    const counts = state.counts;
    this.#metrics.policies.set({}, counts.policies);
    this.isolatedPods = { ingress: counts.ingress, egress: counts.egress };
    this.#metrics.isolated.set({ direction: "ingress" }, counts.ingress);
    this.#metrics.isolated.set({ direction: "egress" }, counts.egress);
    if (full || tx.size > 0) {
      log.debug("firewall synced", { ...this.lastSync, reason });
    }
    // Counters are read on full syncs and by the timer: a listing per pod event would cost more than the
    // event's own transaction.
    if (full) await this.refreshDropCounters().catch((err) => log.warn("cannot read drop counters", { err }));
  }

  /**
   * The state with every change since the last sync applied; on a full sync a new state built from
   * every object in the watch caches (so it can never drift from them for longer than a period).
   */
  #updateState(full: boolean): FirewallState {
    const { config, store } = this.#ctx;
    const changed = this.#changed;
    let state = this.#state;
    if (full || !state) {
      for (const keys of Object.values(changed)) keys.clear();
      state = new FirewallState({ nodeName: config.nodeName, defaultDeny: config.netpolDefaultDeny });
      for (const ns of store.list("namespaces")) state.setNamespace(ns.metadata?.name ?? "", ns);
      for (const pod of store.list("pods")) state.setPod(objectKey(pod), pod);
      for (const pol of store.list("networkpolicies")) state.setPolicy(objectKey(pol), pol);
      this.#state = state;
      return state;
    }
    // Namespaces first (their pods' set memberships), then pods, then policies (their pods' chains).
    for (const k of changed.namespaces) state.setNamespace(k, store.get("namespaces", k));
    for (const k of changed.pods) state.setPod(k, store.get("pods", k));
    for (const k of changed.networkpolicies) state.setPolicy(k, store.get("networkpolicies", k));
    for (const keys of Object.values(changed)) keys.clear();
    return state;
  }

  /** Drop counters are read from the kernel after every sync and every COUNTER_REFRESH_MS between. */
  #scheduleCounterRefresh(): void {
    this.#counterTimer = this.#ctx.clock.setTimeout(() => {
      if (this.#stopped) return;
      this.refreshDropCounters()
        .catch((err) => this.#ctx.log.warn("cannot read drop counters", { err }))
        .finally(() => {
          if (!this.#stopped) this.#scheduleCounterRefresh();
        });
    }, COUNTER_REFRESH_MS);
  }

  /** Reads the per-policy drop counters from the kernel into /metrics. */
  async refreshDropCounters(): Promise<Map<string, number>> {
    const counts = await readDropCounters(this.#deps.nft, this.#state?.policyKeys() ?? []);
    for (const [policy, packets] of counts) {
      const last = this.#lastCounts.get(policy) ?? 0;
      // A counter re-created (policy deleted and re-added) starts again at zero.
      const delta = packets >= last ? packets - last : packets;
      if (delta > 0) this.#metrics.drops.inc({ policy }, delta);
      this.#lastCounts.set(policy, packets);
    }
    for (const policy of [...this.#lastCounts.keys()]) {
      if (!counts.has(policy)) this.#lastCounts.delete(policy);
    }
    return counts;
  }

  /** The table as the kernel holds it (names, and policy-drops' elements), or undefined if absent. */
  async #existing(): Promise<ExistingTable | undefined> {
    const nft = this.#deps.nft;
    let objects: NftObject[];
    try {
      objects = await nft.list({ table: { family: FIREWALL_FAMILY, name: FIREWALL_TABLE } }, { terse: true });
    } catch {
      // No table yet (first start on this node).
      return undefined;
    }
    const table: ExistingTable = { chains: new Set(), sets: new Map() };
    for (const o of objects) {
      const chain = o.chain as { name?: string } | undefined;
      if (chain?.name) table.chains.add(chain.name);
      for (const kind of ["set", "map"] as const) {
        const s = o[kind] as
          | { name?: string; type?: string | string[]; map?: string; flags?: string[] }
          | undefined;
        if (!s?.name) continue;
        const type = Array.isArray(s.type) ? s.type.join(" . ") : s.type ?? "ipv4_addr";
        table.sets.set(s.name, {
          kind,
          spec: kind === "map" ? { name: s.name, type, map: s.map ?? "verdict" } : { name: s.name, type },
        });
      }
    }
    const drops = table.sets.has(DROPS_SET) ? await readDropElements(nft) : undefined;
    // Unreadable: the full sync flushes and refills policy-drops (the counts restart, nothing goes stale).
    if (drops) table.dropKeys = new Set(drops.keys());
    return table;
  }

  /** Bridged pod-to-pod traffic reaches the inet hooks only through br_netfilter (as kube-router). */
  async #ensureBridgeNetfilter(): Promise<void> {
    for (const key of ["net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables"]) {
      try {
        if ((await this.#deps.sysctl.get(key)).trim() !== "1") await this.#deps.sysctl.set(key, 1);
      } catch (err) {
        if (!this.#problems.has(`sysctl ${key}`)) {
          this.#problems.add(`sysctl ${key}`);
          this.#ctx.log.warn(
            "cannot enable br_netfilter; pod-to-pod traffic on this node's bridge is not policed",
            {
              key,
              err,
            },
          );
        }
      }
    }
  }

  /** Logs each policy problem once, when it appears. */
  #logProblems(problems: Problem[]): void {
    const now = new Set<string>();
    for (const p of problems) {
      const k = `${p.policy}\0${p.message}`;
      now.add(k);
      if (!this.#problems.has(k)) {
        this.#ctx.log.warn("network policy partly ignored", { policy: p.policy, problem: p.message });
      }
    }
    for (const k of this.#problems) if (!k.startsWith("sysctl ")) this.#problems.delete(k);
    for (const k of now) this.#problems.add(k);
  }
}

/** The node's pod CIDRs (spec.podCIDRs, else spec.podCIDR). */
export function podCidrs(node: V1Node | undefined): string[] {
  const list = node?.spec?.podCIDRs ?? (node?.spec?.podCIDR ? [node.spec.podCIDR] : []);
  return list.filter((c) => typeof c === "string" && c.includes("/"));
}

/**
 * policy-drops' elements as the kernel holds them: key text (as policyDropKey writes it) to packets;
 * undefined when the set cannot be listed (absent).
 */
async function readDropElements(nft: FirewallNft): Promise<Map<string, number> | undefined> {
  const out = new Map<string, number>();
  let objects: NftObject[];
  try {
    objects = await nft.list({ set: { family: FIREWALL_FAMILY, table: FIREWALL_TABLE, name: DROPS_SET } });
  } catch {
    return undefined;
  }
  const hex = (v: unknown) => `0x${(Number(v) >>> 0).toString(16).padStart(8, "0")}`;
  for (const o of objects) {
    const set = o.set as { elem?: unknown[] } | undefined;
    for (const e of set?.elem ?? []) {
      // An element with a counter is {elem: {val, counter}}; a bare one is its value.
      const wrapped = (e as { elem?: { val?: unknown; counter?: { packets?: number } } }).elem;
      const val = wrapped ? wrapped.val : e;
      const parts = (val as { concat?: unknown[] } | undefined)?.concat;
      if (!Array.isArray(parts) || parts.length !== 2) continue;
      out.set(`${hex(parts[0])} . ${hex(parts[1])}`, wrapped?.counter?.packets ?? 0);
    }
  }
  return out;
}

/** Packets refused per policy (`namespace/name`), from policy-drops, for the policies given. */
export async function readDropCounters(
  nft: FirewallNft,
  policies: Iterable<string>,
): Promise<Map<string, number>> {
  const byKey = new Map<string, string[]>();
  for (const p of policies) {
    const k = policyDropKey(p);
    byKey.set(k, [...(byKey.get(k) ?? []), p]);
  }
  const out = new Map<string, number>();
  for (const [k, packets] of await readDropElements(nft) ?? []) {
    for (const p of byKey.get(k) ?? []) out.set(p, packets);
  }
  return out;
}
