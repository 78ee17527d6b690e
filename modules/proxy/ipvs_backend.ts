/**
 * The IPVS backend of the service proxy (`--service-proxy-backend=ipvs`), kube-router's own data plane:
 * virtual services in the kernel's IPVS (planned by ipvs_plan.ts, reconciled by ipvs_sync.ts), their
 * VIPs on the `kube-dummy-if` dummy interface so the node accepts traffic to them, and the nftables rules
 * IPVS cannot do itself (ipvs_nft.ts: masquerade, hairpin, the VIP accept/reject).
 *
 * Every sync plans every Service (planning is cheap and pure) and the reconciler changes only what
 * differs from what IPVS holds, so the periodic sync also repairs hand edits. While destinations drain
 * (graceful termination) a sync is re-run every second to delete them as soon as they are idle.
 *
 * On start it sets the sysctls kube-router sets for IPVS (connection tracking of IPVS traffic, so the
 * masquerade works; expiring connections to removed destinations; ARP settings so the VIPs on the dummy
 * interface are not announced) and the IPVS timeouts from --service-tcp-timeout, --service-tcpfin-timeout
 * and --service-udp-timeout. `kube_router_service_*` metrics carry each virtual service's IPVS counters.
 *
 * Direct server return (`kube-router.io/service.dsr=tunnel`): before a DSR Service is planned for good,
 * each of its local pods is entered (dsr_pods.ts) and given the VIPs on its IPIP tunnel interface; a pod
 * that cannot be entered makes that one Service fall back to NAT, logged with its name. The node side is
 * kube-router's: packets to the VIP:port get the Service's firewall mark (ipvs_nft.ts), the policy rule
 * `fwmark 0x8000/0x8000 lookup 78` with `local default dev lo` in table 78 hands them to IPVS locally
 * (the VIP is on no interface of the node), and the firewall-mark service tunnels them to a pod, which
 * answers the client itself.
 */
import { isNotFound, type Route, RouteScope, RouteType, type Rtnl } from "../../ffi/mod.ts";
import {
  buildServiceInfo,
  EndpointSliceIndex,
  type ModuleContext,
  type ModuleInstance,
  NFT_MARK,
  serviceSkipReason,
  type SyncReason,
  type TimerId,
} from "../../core/mod.ts";
import {
  type AddrOp,
  type ConntrackTable,
  type Family,
  type Ipvs,
  type IpvsService,
  NftTransaction,
  parseIP,
  serviceKeyString,
  type Sysctl,
} from "../../ffi/mod.ts";
import {
  type HealthCheckOptions,
  type HealthCheckServers,
  healthCheckServers,
  type HealthCheckTarget,
} from "./health_server.ts";
import { canonicalIp } from "./nft_render.ts";
import {
  type IpvsPlan,
  type IpvsPlanContext,
  mergePlans,
  type PlannedService,
  planService,
  type ServicePlan,
} from "./ipvs_plan.ts";
import type { DsrPods } from "./dsr_pods.ts";
import { renderIpvsTable } from "./ipvs_nft.ts";
import { IpvsReconciler, type ReconcileResult } from "./ipvs_sync.ts";
import { nodeContext } from "./node_context.ts";

/** The dummy interface holding every service VIP (kube-router's name). */
export const DUMMY_IF = "kube-dummy-if";

/** The routing table that delivers DSR-marked packets locally, and its policy rule's priority (kube-router's). */
export const DSR_TABLE = 78;
export const DSR_RULE_PRIORITY = 32764;

/** The policy rule sending DSR-marked packets to table 78 (`ip rule add prio 32764 fwmark 0x8000/0x8000 lookup 78`). */
export function dsrRule(family: Family) {
  return {
    family,
    priority: DSR_RULE_PRIORITY,
    fwmark: NFT_MARK.dsr,
    fwmask: NFT_MARK.dsr,
    table: DSR_TABLE,
  };
}

/** The routes of table 78 (none when the kernel has never had that table: its dump fails with ENOENT). */
export async function dsrRoutes(rtnl: Pick<Rtnl, "routeList">, family: Family): Promise<Route[]> {
  try {
    return await rtnl.routeList({ family, table: DSR_TABLE });
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
}

/** What kube-router sets for IPVS (pkg/controllers/proxy: ipvs sysctls and ARP). */
export const IPVS_SYSCTLS: readonly [string, string][] = [
  // IPVS connections in conntrack: the masquerade in postrouting needs it.
  ["net.ipv4.vs.conntrack", "1"],
  // Do not reuse a connection to a destination that is gone (port reuse under load; kube-proxy sets it too).
  ["net.ipv4.vs.conn_reuse_mode", "0"],
  // Drop connections whose destination was removed, so the client retries to a live one.
  ["net.ipv4.vs.expire_nodest_conn", "1"],
  // Expire persistence templates of a quiesced (weight 0) destination.
  ["net.ipv4.vs.expire_quiescent_template", "1"],
  // VIPs on kube-dummy-if must not be answered or announced over ARP on other interfaces.
  ["net.ipv4.conf.all.arp_ignore", "1"],
  ["net.ipv4.conf.all.arp_announce", "2"],
];

export interface IpvsProxyDeps extends HealthCheckOptions {
  ipvs: Ipvs;
  nft: { run(tx: NftTransaction): Promise<void> };
  rtnl: Pick<
    Rtnl,
    | "linkGet"
    | "linkList"
    | "linkAdd"
    | "linkSet"
    | "addrList"
    | "addrAdd"
    | "addrBatch"
    | "addrDel"
    | "ruleList"
    | "ruleAdd"
    | "ruleDel"
    | "routeList"
    | "routeReplace"
    | "routeDel"
  >;
  sysctl: Sysctl;
  conntrack: ConntrackTable;
  /** The pods' side of direct server return; without it every DSR Service is served through NAT. */
  dsrPods?: DsrPods;
  /** How often a sync re-runs while destinations drain (ms; default 1000). */
  drainCheckMs?: number;
}

const STAT_METRICS = [
  ["conns", "service_total_connections", "Total incoming connections made to the service (IPVS)"],
  ["inPkts", "service_packets_in", "Total incoming packets of the service (IPVS)"],
  ["outPkts", "service_packets_out", "Total outgoing packets of the service (IPVS)"],
  ["inBytes", "service_bytes_in", "Total incoming bytes of the service (IPVS)"],
  ["outBytes", "service_bytes_out", "Total outgoing bytes of the service (IPVS)"],
  ["inPps", "service_pps_in", "Incoming packets per second of the service (IPVS estimate)"],
  ["outPps", "service_pps_out", "Outgoing packets per second of the service (IPVS estimate)"],
  ["cps", "service_cps", "Connections per second of the service (IPVS estimate)"],
  ["inBps", "service_bps_in", "Incoming bytes per second of the service (IPVS estimate)"],
  ["outBps", "service_bps_out", "Outgoing bytes per second of the service (IPVS estimate)"],
] as const;

export class IpvsProxy implements ModuleInstance {
  readonly #ctx: ModuleContext;
  readonly #deps: IpvsProxyDeps;
  readonly #runner;
  readonly #reconciler: IpvsReconciler;
  readonly #health: HealthCheckServers | undefined;
  #unsubscribe: (() => void)[] = [];
  #logged = new Map<string, string>();
  #lastTable: string | undefined;
  #started = false;
  #stopped = false;
  #drainTimer: TimerId | undefined;
  #series = new Map<string, Record<string, string>>();
  /** The last plan's DSR firewall marks, so a VIP:port keeps its mark from sync to sync. */
  #fwmarks = new Map<string, number>();
  /** Set while the node's MTU cannot be found (warned once until it can). */
  #mtuWarned = false;
  /** EndpointSlices by Service, kept current from events (and rebuilt from the store on a full sync). */
  readonly #index = new EndpointSliceIndex();
  /** Services (namespace/name) an event touched since the last sync began. */
  #dirty = new Set<string>();
  /** Set when something other than Services and EndpointSlices changed (nodes) or a sync failed. */
  #needFull = true;
  /** What the last successful sync planned, per Service and merged: the base of a partial sync. */
  #last: { plans: Map<string, ServicePlan>; plan: IpvsPlan; pctx: IpvsPlanContext } | undefined;
  #m;

  constructor(ctx: ModuleContext, deps: IpvsProxyDeps) {
    this.#ctx = ctx;
    this.#deps = deps;
    const { config } = ctx;
    this.#runner = ctx.runner({ sync: (reason) => this.#sync(reason), minIntervalMs: 100 });
    this.#reconciler = new IpvsReconciler(deps.ipvs, {
      graceful: config.ipvsGracefulTermination,
      gracefulPeriodMs: config.ipvsGracefulPeriod,
      excludedCidrs: config.excludedCidrs,
      now: () => ctx.clock.now(),
      conntrack: deps.conntrack,
      onError: (owner, what, err) =>
        ctx.log.warn("IPVS change failed", { ...(owner ? { service: owner } : {}), what, err: String(err) }),
    });
    this.#health = healthCheckServers(ctx.log, deps, () => this.#runner.failures === 0);
    const m = ctx.metrics;
    this.#m = {
      services: m.gauge("kube_router_proxy_services", "Services programmed by the service proxy."),
      virtualServices: m.gauge("kube_router_proxy_ipvs_services", "IPVS virtual services programmed."),
      draining: m.gauge(
        "kube_router_proxy_ipvs_draining_destinations",
        "IPVS destinations draining (weight 0).",
      ),
      changes: m.counter("kube_router_proxy_ipvs_changes_total", "IPVS changes made, by kind."),
      stats: Object.fromEntries(
        STAT_METRICS.map(([k, name, help]) => [k, m.gauge(`kube_router_${name}`, help)]),
      ) as Record<(typeof STAT_METRICS)[number][0], ReturnType<typeof m.gauge>>,
    };
  }

  start(): Promise<void> {
    const bus = this.#ctx.bus;
    const run = () => this.#runner.run();
    this.#unsubscribe.push(
      bus.onResource("services", (ev) => {
        this.#dirty.add(ev.key);
        run();
      }),
      bus.onResource("endpointslices", (ev) => {
        for (const k of this.#index.touched(ev.previous, ev.current)) this.#dirty.add(k);
        run();
      }),
      bus.onResource("nodes", () => {
        this.#needFull = true;
        run();
      }),
    );
    return Promise.resolve();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const u of this.#unsubscribe.splice(0)) u();
    if (this.#drainTimer !== undefined) this.#ctx.clock.clearTimeout(this.#drainTimer);
    await this.#runner.stop();
    await this.#health?.close();
  }

  /** Sysctls and IPVS timeouts, once (a failure is logged, the proxy still runs). */
  async #setup(): Promise<void> {
    const { config, log } = this.#ctx;
    for (const [key, value] of IPVS_SYSCTLS) {
      try {
        await this.#deps.sysctl.set(key, value);
      } catch (err) {
        log.warn("cannot set a sysctl IPVS needs", { sysctl: key, value, err: String(err) });
      }
    }
    const sec = (ms: number) => Math.round(ms / 1000);
    const t = {
      tcp: sec(config.serviceTcpTimeout),
      tcpFin: sec(config.serviceTcpfinTimeout),
      udp: sec(config.serviceUdpTimeout),
    };
    // 0 leaves the kernel's value: only the flags that were given change anything.
    if (t.tcp || t.tcpFin || t.udp) await this.#deps.ipvs.setTimeouts(t);
  }

  async #sync(reason: SyncReason): Promise<void> {
    const dirty = this.#dirty;
    this.#dirty = new Set();
    try {
      // A change to a few Services' endpoints (or anything else that leaves their virtual services, VIPs
      // and table rules as they are) is applied to those Services alone; everything else, the periodic
      // sync and retries take the full path, which re-reads the kernel and repairs hand edits.
      if (reason === "requested" && !this.#needFull && this.#last && dirty.size > 0) {
        if (await this.#syncPartial(dirty, this.#last)) return;
      }
      this.#needFull = true;
      await this.#syncFull(reason);
      this.#needFull = false;
    } catch (err) {
      this.#last = undefined;
      throw err;
    }
  }

  /**
   * The partial sync of the Services in `dirty`: returns false (nothing done) when any of them changed
   * more than its destinations and scheduling (virtual services, VIPs, problems, table entries, health checks).
   */
  async #syncPartial(
    dirty: ReadonlySet<string>,
    last: { plans: Map<string, ServicePlan>; plan: IpvsPlan; pctx: IpvsPlanContext },
  ): Promise<boolean> {
    const { config, store } = this.#ctx;
    const changes: { key: string; before: PlannedService; after: PlannedService }[] = [];
    const replans = new Map<string, ServicePlan>();
    for (const key of dirty) {
      const svc = store.get("services", key);
      const before = last.plans.get(key);
      if (!svc || serviceSkipReason(svc)) {
        if (before) return false;
        continue;
      }
      const info = buildServiceInfo(svc, this.#index.slicesFor(key), config.nodeName);
      if (info.healthCheckNodePort !== undefined && info.externalTrafficPolicy === "Local") return false;
      const after = planService(info, last.pctx);
      if (!before || !sameShape(before, after)) return false;
      for (const [i, ps] of after.services.entries()) {
        const k = serviceKeyString(ps.service);
        const held = last.plan.services.get(k);
        // Only virtual services this Service owns in the merged plan (a clash is the full path's business).
        if (!held || held !== before.services[i]) return false;
        changes.push({ key: k, before: held, after: ps });
      }
      replans.set(key, after);
    }
    const r = await this.#reconciler.applyChanged(changes);
    for (const [key, p] of replans) last.plans.set(key, p);
    for (const c of changes) last.plan.services.set(c.key, c.after);
    this.#count(r);
    await this.#updateStatsOf(changes.map((c) => c.after));
    this.#m.draining.set({}, r.draining);
    if (r.failures) throw new Error(`${r.failures} IPVS changes failed (logged above); retrying`);
    this.#armDrain(r.draining);
    return true;
  }

  #count(r: ReconcileResult): void {
    for (
      const [kind, n] of [
        ["service_add", r.servicesAdded],
        ["service_edit", r.servicesEdited],
        ["service_delete", r.servicesDeleted],
        ["destination_add", r.destinationsAdded],
        ["destination_edit", r.destinationsEdited],
        ["destination_delete", r.destinationsDeleted],
        ["destination_drain", r.destinationsDrained],
      ] as const
    ) if (n) this.#m.changes.inc({ kind }, n);
  }

  async #syncFull(reason: SyncReason): Promise<void> {
    // The periodic sync (and a retry) rewrites the table even if unchanged: it may have been edited by hand.
    if (reason !== "requested") this.#lastTable = undefined;
    if (!this.#started) {
      await this.#setup();
      this.#started = true;
    }
    const { config, store, log } = this.#ctx;
    const nctx = nodeContext(config, store.list("nodes"));
    const link = await this.#ensureDummy();
    const nodePortIps = config.nodeportBindonAllIp ? await this.#localAddresses(link.index) : nctx.nodeIps;
    const pctx = { ...nctx, nodePortIps };
    const index = this.#index;
    index.reset(store.list("endpointslices"));

    const plans: ServicePlan[] = [];
    const health = new Map<number, HealthCheckTarget & { key: string }>();
    const present = new Set<string>();
    for (const svc of store.list("services")) {
      const key = `${svc.metadata?.namespace ?? ""}/${svc.metadata?.name ?? ""}`;
      present.add(key);
      const skip = serviceSkipReason(svc);
      if (skip) {
        this.#logOnce(
          key,
          `skip:${skip}`,
          () => log.debug("service skipped", { service: key, reason: skip }),
        );
        continue;
      }
      const info = buildServiceInfo(svc, index.slicesFor(key), config.nodeName);
      let planned = planService(info, pctx);
      if (planned.dsr) {
        const fallback = await this.#enterPods(planned.dsr);
        if (fallback !== undefined) planned = planService(info, pctx, fallback);
      }
      plans.push(planned);
      if (info.healthCheckNodePort !== undefined && info.externalTrafficPolicy === "Local") {
        // Ready local endpoints only, as kube-proxy counts them: a node left with terminating ones still
        // sends them traffic but fails the check, so the load balancer drains it.
        const local = new Set(
          info.ports.flatMap((p) => p.endpoints.filter((e) => e.local && e.ready).map((e) => e.ip)),
        );
        health.set(info.healthCheckNodePort, {
          key,
          namespace: info.namespace,
          name: info.name,
          localEndpoints: local.size,
        });
      }
    }
    for (const k of [...this.#logged.keys()]) if (!present.has(k)) this.#logged.delete(k);
    const plan = mergePlans(plans, this.#fwmarks);
    this.#fwmarks = plan.fwmarks;
    for (const p of plans) {
      const problems = plan.problems.get(p.key) ?? [];
      this.#logOnce(p.key, problems.join("\n"), () => {
        if (problems.length) {
          log.warn("service has invalid parts, skipped or replaced", { service: p.key, problems });
        }
      });
    }

    const r = await this.#reconciler.apply(plan);
    this.#count(r);

    const usesDsr = [...plan.services.values()].some((p) => p.dsr && p.service.fwmark !== undefined);
    const dsrMtu = usesDsr ? await this.#nodeMtu(nctx.nodeIps) : undefined;
    const tx = renderIpvsTable(plan, {
      families: nctx.families,
      podCidrs: nctx.podCidrs,
      masqueradeAll: config.masqueradeAll,
      permitAll: config.ipvsPermitAll,
      ...(dsrMtu !== undefined ? { dsrMtu } : {}),
    });
    const text = tx.render();
    if (text !== this.#lastTable) {
      await this.#deps.nft.run(tx);
      this.#lastTable = text;
    }
    const dsrFailures = await this.#syncDsr(plan, nctx.families);
    const vipFailures = await this.#syncVips(link.index, plan.vips) + dsrFailures;
    await this.#updateStats(plan.services);
    this.#m.services.set({}, plans.length);
    this.#m.virtualServices.set({}, plan.services.size);
    this.#m.draining.set({}, r.draining);
    await this.#health?.sync(health);
    if (r.failures || vipFailures) {
      throw new Error(
        `${r.failures} IPVS changes and ${vipFailures} VIP changes failed (logged above); retrying`,
      );
    }
    this.#last = { plans: new Map(plans.map((p) => [p.key, p])), plan, pctx };
    this.#armDrain(r.draining);
  }

  /** Sets up a DSR Service's local pods; returns why it must fall back to NAT, or undefined. */
  async #enterPods(dsr: NonNullable<ServicePlan["dsr"]>): Promise<string | undefined> {
    const pods = this.#deps.dsrPods;
    if (dsr.localEndpoints.length === 0) return undefined;
    if (!pods) return "this agent cannot enter pod network namespaces";
    for (const ep of dsr.localEndpoints) {
      try {
        await pods.ensure(ep, dsr.vips);
      } catch (err) {
        return err instanceof Error ? err.message : String(err);
      }
    }
    return undefined;
  }

  /**
   * The node side of DSR: the policy rule and the local default route of table 78 while any Service uses
   * DSR in a family (removed when none does), and the pods' tunnels pruned to what the plan wants.
   * Returns how many changes failed.
   */
  async #syncDsr(plan: IpvsPlan, families: readonly Family[]): Promise<number> {
    let failures = 0;
    const rtnl = this.#deps.rtnl;
    const used = new Set<Family>();
    for (const ps of plan.services.values()) if (ps.dsr) used.add(ps.dsr.family);
    let lo: number | undefined;
    for (const f of families) {
      const want = used.has(f);
      try {
        const rule = dsrRule(f);
        const rules = (await rtnl.ruleList(f)).filter((r) =>
          r.table === DSR_TABLE && r.fwmark === rule.fwmark && (r.fwmask ?? 0xffffffff) === rule.fwmask
        );
        const routes = await dsrRoutes(rtnl, f);
        if (want) {
          // The route first: the rule then never points at an empty table.
          lo ??= (await rtnl.linkGet("lo"))?.index;
          if (lo === undefined) throw new Error("the node has no loopback interface");
          const dst = f === 4 ? "0.0.0.0/0" : "::/0";
          if (!routes.some((r) => r.type === RouteType.local && r.dev === lo && r.dst === dst)) {
            // Equivalent to: ip route replace local default dev lo table 78
            await rtnl.routeReplace({
              family: f,
              dst,
              table: DSR_TABLE,
              type: RouteType.local,
              scope: RouteScope.host,
              dev: lo,
            });
          }
          if (rules.length === 0) await rtnl.ruleAdd(rule);
        } else {
          for (const r of rules) await rtnl.ruleDel(r);
          for (const r of routes) await rtnl.routeDel(r);
        }
      } catch (err) {
        failures++;
        this.#ctx.log.warn("cannot set up policy routing for DSR", { family: f, err: String(err) });
      }
    }
    if (this.#deps.dsrPods) {
      for (const err of await this.#deps.dsrPods.prune(plan.dsrPods)) {
        failures++;
        this.#ctx.log.warn("cannot take DSR VIPs back from a pod", { err: err.message });
      }
    }
    return failures;
  }

  #armDrain(draining: number): void {
    if (draining === 0 || this.#drainTimer !== undefined || this.#stopped) return;
    this.#drainTimer = this.#ctx.clock.setTimeout(() => {
      this.#drainTimer = undefined;
      this.#runner.run();
    }, this.#deps.drainCheckMs ?? 1000);
  }

  #logOnce(key: string, what: string, log: () => void): void {
    if (this.#logged.get(key) === what) return;
    this.#logged.set(key, what);
    log();
  }

  async #ensureDummy() {
    const rtnl = this.#deps.rtnl;
    let link = await rtnl.linkGet(DUMMY_IF);
    if (!link) {
      await rtnl.linkAdd({ kind: "dummy", name: DUMMY_IF, up: true });
      link = await rtnl.linkGet(DUMMY_IF);
      if (!link) throw new Error(`${DUMMY_IF} was created but cannot be found`);
    } else if (!link.up) {
      await rtnl.linkSet(DUMMY_IF, { up: true });
    }
    return link;
  }

  /** Local addresses NodePorts answer on with --nodeport-bindon-all-ip (not loopback, link-local or VIPs). */
  async #localAddresses(dummyIndex: number): Promise<string[]> {
    const out: string[] = [];
    for (const a of await this.#deps.rtnl.addrList()) {
      if (a.index === dummyIndex) continue;
      const c = canonicalIp(a.address);
      if (!c) continue;
      if (c.family === 4 && c.ip.startsWith("127.")) continue;
      if (c.family === 6 && (c.ip === "::1" || c.ip.startsWith("fe80:"))) continue;
      out.push(c.ip);
    }
    return [...new Set(out)];
  }

  /** The VIPs on kube-dummy-if: exactly the planned ones. Returns how many changes failed. */
  async #syncVips(index: number, vips: ReadonlyMap<string, Family>): Promise<number> {
    const rtnl = this.#deps.rtnl;
    const have = new Map<string, { family: Family; prefix: number }>();
    for (const a of await rtnl.addrList({ index })) {
      const c = canonicalIp(a.address);
      if (c) have.set(c.ip, { family: c.family, prefix: a.prefix });
    }
    // One batch (many messages per system call): a cold sync puts thousands of VIPs on the interface.
    const ops: AddrOp[] = [];
    for (const [ip, family] of vips) {
      if (have.has(ip)) continue;
      ops.push({
        op: "add",
        addr: {
          family,
          index,
          address: ip,
          prefix: family === 4 ? 32 : 128,
          ...(family === 6 ? { nodad: true } : {}),
        },
      });
    }
    for (const [ip, a] of have) {
      if (vips.has(ip)) continue;
      // IPv6 link-local addresses the kernel puts on the link itself stay.
      if (a.family === 6 && parseIP(ip) && ip.startsWith("fe80:")) continue;
      ops.push({ op: "del", addr: { family: a.family, index, address: ip, prefix: a.prefix } });
    }
    if (ops.length === 0) return 0;
    const { failures } = await rtnl.addrBatch(ops);
    for (const f of failures) {
      const o = ops[f.index]!;
      this.#ctx.log.warn(
        o.op === "add"
          ? "cannot add a service VIP to the dummy interface"
          : "cannot remove a VIP from the dummy interface",
        { vip: o.addr.address, err: String(f.error) },
      );
    }
    return failures.length;
  }

  /**
   * The MTU of the interface holding the node's address, the path MTU kube-router clamps DSR's TCP MSS to;
   * undefined (logged once) when no interface holds it, and then no clamp.
   */
  async #nodeMtu(nodeIps: readonly string[]): Promise<number | undefined> {
    const rtnl = this.#deps.rtnl;
    const wanted = new Set(nodeIps.map((ip) => canonicalIp(ip)?.ip));
    const addr = (await rtnl.addrList()).find((a) => wanted.has(canonicalIp(a.address)?.ip));
    const mtu = addr && (await rtnl.linkList()).find((l) => l.index === addr.index)?.mtu;
    if (!mtu && !this.#mtuWarned) {
      this.#ctx.log.warn("no interface holds the node's address: DSR TCP MSS not clamped", {
        nodeIps: nodeIps.join(","),
      });
    }
    this.#mtuWarned = !mtu;
    return mtu || undefined;
  }

  /** The gauges of a few virtual services, each read on its own (a partial sync). */
  async #updateStatsOf(planned: readonly PlannedService[]): Promise<void> {
    for (const p of planned) {
      const s = await this.#deps.ipvs.getService(p.service);
      if (!s?.stats) continue;
      const labels = statLabels(p, s);
      for (const [stat] of STAT_METRICS) this.#m.stats[stat].set(labels, s.stats[stat]);
      this.#series.set(serviceKeyString(s), labels);
    }
  }

  /** kube_router_service_* gauges from the counters IPVS keeps per virtual service. */
  async #updateStats(planned: ReadonlyMap<string, PlannedService>): Promise<void> {
    const seen = new Set<string>();
    for (const s of await this.#deps.ipvs.services()) {
      const k = serviceKeyString(s);
      const p = planned.get(k);
      if (!p || !s.stats) continue;
      const labels = statLabels(p, s);
      for (const [stat] of STAT_METRICS) this.#m.stats[stat].set(labels, s.stats[stat]);
      this.#series.set(k, labels);
      seen.add(k);
    }
    for (const [k, labels] of this.#series) {
      if (seen.has(k)) continue;
      for (const [stat] of STAT_METRICS) this.#m.stats[stat].remove(labels);
      this.#series.delete(k);
    }
  }
}

/**
 * The labels of one virtual service's gauges: the Service's namespace and name, and the address, protocol
 * and port it serves. A firewall-mark (DSR) service has no address of its own in IPVS: it is labelled
 * with the VIP:port its mark stands for, so it reads like any other external IP's series.
 */
function statLabels(p: PlannedService, s: IpvsService): Record<string, string> {
  const [namespace, name] = p.owner.split("/");
  const at = s.fwmark !== undefined && p.dsr
    ? { vip: p.dsr.vip, protocol: p.dsr.protocol, port: p.dsr.port }
    : { vip: s.address, protocol: s.protocol, port: s.port };
  return {
    svc_namespace: namespace ?? "",
    service_name: name ?? "",
    service_vip: at.vip ?? "",
    protocol: at.protocol ?? "",
    port: String(at.port ?? 0),
  };
}

/**
 * Whether two plans of one Service differ at most in destinations and scheduling: the same virtual services
 * in the same order, VIPs and problems, the same table entries (hairpin destinations on this node,
 * masquerading, source ranges) and no DSR.
 */
function sameShape(a: ServicePlan, b: ServicePlan): boolean {
  // DSR Services enter their pods and mark packets per VIP: always the full path.
  if (a.dsr || b.dsr) return false;
  if (a.services.length !== b.services.length || a.vips.join() !== b.vips.join()) return false;
  if (a.problems.join("\n") !== b.problems.join("\n")) return false;
  return a.services.every((x, i) => {
    const y = b.services[i]!;
    return !x.dsr && !y.dsr && x.kind === y.kind && x.masquerade === y.masquerade &&
      x.hairpin.join() === y.hairpin.join() &&
      (x.sourceRanges ?? []).join() === (y.sourceRanges ?? []).join() &&
      serviceKeyString(x.service) === serviceKeyString(y.service);
  });
}
