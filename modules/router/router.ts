/**
 * The router module's running instance: one sync (through the module's runner) makes the BGP speaker's
 * peers and announcements, the kernel's routes, the CNI config and the pod egress rules match the
 * cluster. Event handlers (Kubernetes changes, BGP best-path changes, kernel route deletions) only record
 * and ask for a sync.
 *
 * The sync is partial where it can be: a Service or EndpointSlice change can only move service VIPs, so
 * when nothing else asked for a sync it recomputes the VIPs of the Services that changed and re-announces
 * the difference, with no kernel reads. Node changes, BGP events, kernel route drift, start-up, retries
 * and the periodic resync run the whole sync, which also recomputes every VIP from the store.
 */
import type { V1Node } from "@kubernetes/client-node";
import type { ModuleContext, ModuleInstance, SyncReason } from "../../core/mod.ts";
import {
  type Cidr,
  cidrContains,
  type Family as IpFamily,
  type Fdb,
  type Fou,
  type NftRuleset,
  parseCidr,
  parseIP,
  type Rtnl,
  type Sysctl,
} from "../../ffi/mod.ts";
import {
  type AdminServer,
  BgpSpeaker,
  type Family,
  type LocalRoute,
  type PeerConfig,
  type Policy,
  serveAdmin,
  type Transport,
} from "./bgp/mod.ts";
import {
  buildServiceInfo,
  EndpointSliceIndex,
  hasLocalEndpoint,
  type ResourceEvent,
  serviceKey,
  serviceSkipReason,
} from "../../core/mod.ts";
import { importAllowed, type ImportPolicy, importPolicy, vipsOfService } from "./advertise.ts";
import { buildCniConf, podMtu, readCniConf, writeCniConf } from "./cni_conf.ts";
import {
  type LearnedRoute as TunnelRoute,
  Overlay,
  OverlayError,
  type OverlayMode,
  planTunnels,
  type TunnelPlan,
  VXLAN_PORT,
} from "./overlay.ts";
import { egressTransaction, legacyTableCleanupTransaction } from "./egress.ts";
import { IpTunnels, openFou } from "./tunnels.ts";
import { type NodeInfo, nodeInfo } from "./node_info.ts";
import { type PeerPlan, type PeerSpec, planPeers } from "./peers.ts";
import { RouteSync, type WantedRoute } from "./route_sync.ts";

export interface RouterDeps {
  rtnl: Rtnl;
  nft: NftRuleset;
  sysctl: Sysctl;
  fdb: Fdb;
  /** BGP connections; the default is real TCP. Unit tests pass the in-memory MemoryNetwork. */
  bgpTransport?: Transport;
  /** Opens FoU (generic netlink "fou") on first use; the default is the kernel's. */
  fou?: () => Fou;
}

const FAMILY_OF: Record<IpFamily, Family> = { 4: "ipv4-unicast", 6: "ipv6-unicast" };

/** After start, how long routes the kernel still holds from before are kept while BGP relearns them. */
const DEFAULT_RELEARN_MS = 30_000;

export class Router implements ModuleInstance {
  readonly #ctx: ModuleContext;
  readonly #deps: RouterDeps;
  readonly #routes: RouteSync;
  readonly #overlay: Overlay;
  readonly #tunnels: IpTunnels;
  readonly #runner;
  #speaker: BgpSpeaker | undefined;
  #admin: AdminServer | undefined;
  #speakerIdentity = "";
  #unsubscribe: (() => void)[] = [];
  #lastProblems = "";
  #lastEgress = "";
  #startedAt = 0;
  #restarting = false;
  /** Our routes already in the kernel at start, by destination. */
  #inherited = new Map<string, WantedRoute>();
  /** Destinations BGP has given us since start; their later withdrawal is honoured at once. */
  #everWanted = new Set<string>();
  #allUpSince: number | undefined;
  /** `peer|family` pairs whose End-of-RIB has arrived since start. */
  #endOfRib = new Set<string>();
  #importPolicyKey = "";
  #stopped = false;
  #metrics;
  /** Something other than Services and EndpointSlices changed: the next sync must be whole. */
  #fullNeeded = true;
  /** Services whose VIPs may have changed since the last sync. */
  #dirtyServices = new Set<string>();
  readonly #slices = new EndpointSliceIndex();
  /** The VIP prefixes each Service gives, and how many Services give each (one IP may be shared). */
  #vipsByService = new Map<string, string[]>();
  #vipRefs = new Map<string, number>();
  /** What the last whole sync gave every announced route besides its prefix. */
  #routeBase: { nextHop: Partial<Record<IpFamily, string>>; communities: number[] } | undefined;

  constructor(ctx: ModuleContext, deps: RouterDeps) {
    this.#ctx = ctx;
    this.#deps = deps;
    this.#routes = new RouteSync(deps.rtnl, ctx.log);
    const c = ctx.config;
    this.#overlay = new Overlay(deps.rtnl, deps.fdb, ctx.log.with({ component: "overlay" }), {
      port: c.overlayEncap === "vxlan" ? c.overlayEncapPort : VXLAN_PORT,
    });
    this.#tunnels = new IpTunnels(
      deps.rtnl,
      deps.fou ?? (() => openFou()),
      ctx.log.with({ component: "tunnels" }),
      { encap: c.overlayEncap === "fou" ? "fou" : "ipip", port: c.overlayEncapPort },
    );
    // A short minimum interval: a route deleted behind our back should be back well within a second.
    this.#runner = ctx.runner({ sync: (reason) => this.#sync(reason), minIntervalMs: 200 });
    const m = ctx.metrics;
    this.#metrics = {
      routes: m.gauge(
        "kube_router_routes_installed",
        "Routes to other nodes' pod CIDRs installed by the router.",
      ),
      routeChanges: m.counter(
        "kube_router_route_changes_total",
        "Kernel route changes made by the router, by op.",
      ),
      routeSync: m.histogram("kube_router_route_sync_duration_seconds", "Time to reconcile kernel routes."),
      peers: m.gauge("kube_router_bgp_peers", "Configured BGP peers, by kind."),
      syncKinds: m.counter(
        "kube_router_router_syncs_total",
        "Router syncs by kind: full (kernel, peers, routes, VIPs) or services (VIPs of changed Services only).",
      ),
    };
  }

  async start(): Promise<void> {
    const { bus } = this.#ctx;
    this.#unsubscribe.push(
      bus.onResource("nodes", () => this.#requestFull()),
      bus.onResource("services", (e) => this.#serviceChanged(e.key)),
      bus.onResource("endpointslices", (e) => this.#sliceChanged(e)),
    );
    this.#startedAt = this.#ctx.clock.now();
    // Routes of ours already in the kernel mean we are restarting with forwarding state kept (RFC 4724).
    try {
      for (const w of await this.#routes.installed()) this.#inherited.set(w.dst, w);
      this.#restarting = this.#inherited.size > 0;
    } catch (err) {
      this.#ctx.log.warn("cannot list routes at start", { err });
    }
    this.#routes.watch((why) => {
      this.#ctx.log.info("kernel routes drifted; resyncing", { why });
      this.#requestFull();
    });
  }

  #requestFull(): void {
    this.#fullNeeded = true;
    this.#runner.run();
  }

  #serviceChanged(key: string): void {
    this.#dirtyServices.add(key);
    this.#runner.run();
  }

  #sliceChanged(e: ResourceEvent<"endpointslices">): void {
    for (const key of this.#slices.touched(e.previous, e.current)) this.#dirtyServices.add(key);
    this.#runner.run();
  }

  /** The BGP speaker once the first sync made it (for tests). */
  get speaker(): BgpSpeaker | undefined {
    return this.#speaker;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    for (const u of this.#unsubscribe.splice(0)) u();
    this.#routes.stopWatching();
    await this.#admin?.close();
    this.#admin = undefined;
    // With graceful restart, stopping is restarting (SIGTERM from kubelet on a rollout): the sessions drop
    // without a Cease, so the peers keep this node's routes until the new agent has re-announced them.
    await this.#speaker?.stop({ notify: !this.#ctx.config.bgpGracefulRestart });
    this.#tunnels.close();
    // Kernel routes, the CNI config and nft rules stay: traffic keeps flowing while the agent restarts.
  }

  #selfNode(): V1Node {
    const node = this.#ctx.store.get("nodes", this.#ctx.config.nodeName);
    if (!node) {
      throw new Error(
        `node ${this.#ctx.config.nodeName} is not in the API (check --hostname-override/NODE_NAME)`,
      );
    }
    return node;
  }

  #families(): IpFamily[] {
    const c = this.#ctx.config;
    return [...(c.enableIpv4 ? [4 as const] : []), ...(c.enableIpv6 ? [6 as const] : [])];
  }

  async #sync(reason: SyncReason): Promise<void> {
    if (this.#stopped) return;
    if (reason === "requested" && !this.#fullNeeded && this.#speaker && this.#routeBase) {
      this.#syncServices();
      this.#metrics.syncKinds.inc({ kind: "services" });
      return;
    }
    this.#fullNeeded = false;
    this.#dirtyServices.clear();
    try {
      await this.#fullSync();
    } catch (err) {
      this.#fullNeeded = true;
      throw err;
    }
    this.#metrics.syncKinds.inc({ kind: "full" });
  }

  async #fullSync(): Promise<void> {
    const { config, store, log } = this.#ctx;
    const self = nodeInfo(this.#selfNode());
    const nodes = store.list("nodes").map(nodeInfo);
    const plan = planPeers(config, self, nodes);
    const problems = plan.problems.join("; ");
    if (problems !== this.#lastProblems) {
      for (const p of plan.problems) log.warn("ignoring bad BGP configuration", { problem: p });
      this.#lastProblems = problems;
    }
    const policy = importPolicy(config, self.customImportReject);
    const linkMtu = await this.#readInterfaces(self);

    if (plan.localAsn !== undefined && plan.routerId !== undefined) {
      await this.#ensureSpeaker(plan, self, policy);
      this.#speaker!.setPeers(plan.peers.map((p) => this.#peerConfig(p, self)));
      this.#metrics.peers.set({ kind: "node" }, plan.peers.filter((p) => p.kind === "node").length);
      this.#metrics.peers.set({ kind: "external" }, plan.peers.filter((p) => p.kind === "external").length);
      this.#announce(self, plan);
    }

    const t0 = performance.now();
    const wanted = await this.#wantedRoutes(self, nodes, policy);
    for (const w of wanted) this.#everWanted.add(w.dst);
    const result = await this.#routes.sync([...wanted, ...this.#inheritedToKeep(plan, wanted)]);
    this.#metrics.routeSync.observe({}, (performance.now() - t0) / 1000);
    this.#metrics.routes.set({}, wanted.length);
    for (const op of ["added", "replaced", "removed"] as const) {
      if (result[op]) this.#metrics.routeChanges.inc({ op }, result[op]);
    }
    if (result.added || result.replaced || result.removed) log.info("routes synced", { ...result });

    await this.#ensureForwarding();
    if (config.enableCni) await this.#writeCni(self, linkMtu);
    await this.#applyEgress(nodes);
  }

  /**
   * Routes found in the kernel at start (left by the previous run of the agent) stay while BGP relearns
   * them, so a restart does not cut traffic: until each is learned again or withdrawn, or the relearn
   * window closes. It closes when every planned peer has sent End-of-RIB for every family (its whole
   * table has arrived); without graceful restart also once every peer has been established for 3 s;
   * at the latest after the graceful restart time (capped by the deferral time), or 30 s without GR.
   */
  #inheritedToKeep(plan: PeerPlan, wanted: WantedRoute[]): WantedRoute[] {
    if (this.#inherited.size === 0) return [];
    const c = this.#ctx.config;
    const now = this.#ctx.clock.now();
    const cap = c.bgpGracefulRestart
      ? Math.min(c.bgpGracefulRestartDeferralTime, c.bgpGracefulRestartTime)
      : DEFAULT_RELEARN_MS;
    const families = this.#families().map((f) => FAMILY_OF[f]);
    const allEor = plan.peers.every((p) => families.every((f) => this.#endOfRib.has(`${p.address}|${f}`)));
    const peers = this.#speaker?.peers() ?? [];
    const allUp = peers.length >= plan.peers.length && peers.every((p) => p.state === "Established");
    if (allUp) this.#allUpSince ??= now;
    else this.#allUpSince = undefined;
    const settled = !c.bgpGracefulRestart && this.#allUpSince !== undefined && now - this.#allUpSince >= 3000;
    if (now - this.#startedAt >= cap || allEor || settled) {
      const dropped = [...this.#inherited.keys()].filter((d) => !this.#everWanted.has(d));
      this.#ctx.log.info("relearn window closed", {
        why: allEor ? "End-of-RIB from every peer" : settled ? "every peer established" : "time limit",
        dropped: dropped.join(",") || "none",
      });
      this.#inherited.clear();
      return [];
    }
    const want = new Set(wanted.map((w) => w.dst));
    return [...this.#inherited.values()].filter((r) => !want.has(r.dst) && !this.#everWanted.has(r.dst));
  }

  async #ensureSpeaker(plan: PeerPlan, self: NodeInfo, policy: ImportPolicy): Promise<void> {
    const c = this.#ctx.config;
    const identity = `${plan.localAsn}|${plan.routerId}|${plan.clusterId ?? ""}|${
      self.localAddresses.join(",")
    }`;
    const policyKey = JSON.stringify(policy);
    if (this.#speaker && identity === this.#speakerIdentity) {
      // Re-evaluating every received route is not free, and it re-announces best paths: only on change.
      if (policyKey !== this.#importPolicyKey) {
        this.#speaker.setImportPolicy(this.#importPolicy(policy));
        this.#importPolicyKey = policyKey;
      }
      return;
    }
    this.#importPolicyKey = policyKey;
    if (this.#speaker) {
      this.#ctx.log.info("BGP identity changed; restarting the speaker", {
        from: this.#speakerIdentity,
        to: identity,
      });
      await this.#admin?.close();
      this.#admin = undefined;
      await this.#speaker.stop();
    }
    const speaker = new BgpSpeaker({
      asn: plan.localAsn!,
      routerId: plan.routerId!,
      port: c.bgpPort,
      ...(self.localAddresses.length ? { listenAddresses: self.localAddresses } : {}),
      clock: this.#ctx.clock,
      log: this.#ctx.log.with({ component: "bgp" }),
      metrics: this.#ctx.metrics,
      gracefulRestart: {
        enabled: c.bgpGracefulRestart,
        restartTime: Math.round(c.bgpGracefulRestartTime / 1000),
        restarting: c.bgpGracefulRestart && this.#restarting,
        // Selection deferral (RFC 4724 4.1): after our restart, wait for peers' End-of-RIB this long.
        deferralTime: Math.round(c.bgpGracefulRestartDeferralTime / 1000),
      },
      ...(plan.clusterId ? { clusterId: plan.clusterId } : {}),
      importPolicy: this.#importPolicy(policy),
      exportPolicy: this.#exportPolicy(),
      ...(this.#deps.bgpTransport
        ? { transport: this.#deps.bgpTransport, socketTransport: this.#deps.bgpTransport }
        : {}),
    });
    speaker.subscribe((e) => {
      if (e.type === "peer") {
        this.#ctx.log.info("bgp peer state", { peer: e.peer, asn: e.asn, from: e.previous, to: e.state });
      } else if (e.type === "endOfRib") {
        this.#endOfRib.add(`${e.peer}|${e.family}`);
      }
      this.#requestFull();
    });
    await speaker.start();
    this.#speaker = speaker;
    this.#speakerIdentity = identity;
    if (c.bgpAdminPort !== 0) {
      try {
        this.#admin = serveAdmin(speaker, { port: c.bgpAdminPort, metrics: this.#ctx.metrics });
      } catch (err) {
        this.#ctx.log.warn("BGP admin endpoint not started", { port: c.bgpAdminPort, err });
      }
    }
  }

  #importPolicy(policy: ImportPolicy): Policy {
    return (route) => (importAllowed(policy, route.prefix) ? route.attrs : undefined);
  }

  /** Our own routes go out per kube-router's rules; learned ones only as a route reflector to iBGP. */
  #exportPolicy(): Policy {
    return (route, peer) => {
      const own = this.#announced.get(route.prefix);
      if (own === "pod") return peer.ebgp && !this.#ctx.config.advertisePodCidr ? undefined : route.attrs;
      if (own === "vip") return this.#externalPeers.has(peer.address) ? route.attrs : undefined;
      // Another node's route: never to external peers (kube-router announces only its own prefixes
      // there); to iBGP peers the speaker's own rules decide (only a route reflector passes them on).
      return peer.ebgp ? undefined : route.attrs;
    };
  }

  #announced = new Map<string, "pod" | "vip">();
  #externalPeers = new Set<string>();

  #peerConfig(p: PeerSpec, self: NodeInfo): PeerConfig {
    const c = this.#ctx.config;
    const families = this.#families().map((f) => FAMILY_OF[f]);
    const cfg: PeerConfig = {
      address: p.address,
      asn: p.asn,
      port: p.port,
      families,
      holdTime: Math.round(c.bgpHoldtime / 1000),
      gracefulRestart: c.bgpGracefulRestart,
      description: p.kind === "node" ? `node ${p.node}` : "external",
    };
    if (p.password) cfg.password = p.password;
    if (p.localAddress) cfg.localAddress = p.localAddress;
    if (p.multihopTtl) cfg.multihopTtl = p.multihopTtl;
    if (p.routeReflectorClient) cfg.routeReflectorClient = true;
    if (c.overrideNexthop) cfg.nextHopSelf = true;
    if (p.kind === "external" && self.pathPrepend) {
      cfg.asPathPrepend = { count: self.pathPrepend.repeat, asn: self.pathPrepend.asn };
    }
    // One session carries both families: give the other family's next hop explicitly.
    if (self.ipv6 && c.enableIpv6) cfg.ipv6NextHop = self.ipv6;
    if (self.ipv4 && c.enableIpv4) cfg.ipv4NextHop = self.ipv4;
    return cfg;
  }

  #announce(self: NodeInfo, plan: PeerPlan): void {
    const speaker = this.#speaker!;
    this.#recomputeAllVips();
    this.#announced = new Map();
    for (const c of self.podCidrs) this.#announced.set(c, "pod");
    for (const v of this.#vipRefs.keys()) this.#announced.set(v, "vip");
    this.#externalPeers = new Set(plan.peers.filter((p) => p.kind === "external").map((p) => p.address));
    this.#routeBase = {
      nextHop: { ...(self.ipv4 ? { 4: self.ipv4 } : {}), ...(self.ipv6 ? { 6: self.ipv6 } : {}) },
      communities: self.communities,
    };
    for (const fam of this.#families()) {
      const routes: LocalRoute[] = [];
      for (const [prefix] of this.#announced) {
        if (parseCidr(prefix)?.family !== fam) continue;
        routes.push(this.#localRoute(prefix, fam));
      }
      speaker.set(FAMILY_OF[fam], routes);
    }
  }

  #localRoute(prefix: string, fam: IpFamily): LocalRoute {
    const base = this.#routeBase!;
    const r: LocalRoute = { prefix };
    const nextHop = base.nextHop[fam];
    if (nextHop) r.nextHop = nextHop;
    if (base.communities.length) r.communities = base.communities;
    return r;
  }

  /** The VIP prefixes of one Service now (none for a Service that is gone or not ours). */
  #serviceVips(key: string): string[] {
    const { config, store } = this.#ctx;
    const svc = store.get("services", key);
    if (!svc || serviceSkipReason(svc) !== undefined) return [];
    const info = buildServiceInfo(svc, [], "");
    return vipsOfService(config, info, hasLocalEndpoint(this.#slices.slicesFor(key), config.nodeName));
  }

  /** The whole sync's reading: the slice index and every Service's VIPs from the store. */
  #recomputeAllVips(): void {
    const { store } = this.#ctx;
    this.#slices.reset(store.list("endpointslices"));
    this.#vipsByService = new Map();
    this.#vipRefs = new Map();
    for (const svc of store.list("services")) {
      const key = serviceKey(svc);
      const vips = this.#serviceVips(key);
      if (!vips.length) continue;
      this.#vipsByService.set(key, vips);
      for (const v of vips) this.#vipRefs.set(v, (this.#vipRefs.get(v) ?? 0) + 1);
    }
  }

  /**
   * The partial sync: the VIPs of the Services that changed since the last sync, and only the prefixes
   * that appear or disappear re-announced. No kernel reads, no peer or route work.
   */
  #syncServices(): void {
    const speaker = this.#speaker!;
    const added: string[] = [];
    const removed: string[] = [];
    for (const key of this.#dirtyServices) {
      const before = this.#vipsByService.get(key) ?? [];
      const after = this.#serviceVips(key);
      if (after.length) this.#vipsByService.set(key, after);
      else this.#vipsByService.delete(key);
      for (const v of before) {
        if (after.includes(v)) continue;
        const n = (this.#vipRefs.get(v) ?? 1) - 1;
        if (n > 0) this.#vipRefs.set(v, n);
        else {
          this.#vipRefs.delete(v);
          removed.push(v);
        }
      }
      for (const v of after) {
        if (before.includes(v)) continue;
        const n = (this.#vipRefs.get(v) ?? 0) + 1;
        this.#vipRefs.set(v, n);
        if (n === 1) added.push(v);
      }
    }
    this.#dirtyServices.clear();
    for (const fam of this.#families()) {
      const add: LocalRoute[] = [];
      const withdraw: string[] = [];
      for (const v of added) {
        if (parseCidr(v)?.family !== fam || this.#announced.get(v) === "pod") continue;
        this.#announced.set(v, "vip");
        add.push(this.#localRoute(v, fam));
      }
      for (const v of removed) {
        if (parseCidr(v)?.family !== fam || this.#announced.get(v) !== "vip") continue;
        this.#announced.delete(v);
        withdraw.push(v);
      }
      if (add.length || withdraw.length) speaker.update(FAMILY_OF[fam], add, withdraw);
    }
  }

  /**
   * Best learned routes as kernel routes: via the next hop when it sits on a connected subnet, through the
   * overlay when it is a node that needs a tunnel (--enable-overlay, --overlay-type; IPIP or FoU tunnels per
   * node, or the VXLAN device, per --overlay-encap), else skipped with one warning per route.
   */
  async #wantedRoutes(self: NodeInfo, nodes: NodeInfo[], policy: ImportPolicy): Promise<WantedRoute[]> {
    const speaker = this.#speaker;
    if (!speaker) return [];
    const c = this.#ctx.config;
    const own = new Set(self.podCidrs);
    const learned: TunnelRoute[] = [];
    for (const fam of this.#families()) {
      for (const r of speaker.routes(FAMILY_OF[fam])) {
        if (!r.best || own.has(r.prefix) || !importAllowed(policy, r.prefix)) continue;
        if (!parseIP(r.nextHop) || r.nextHop === self.ipv4 || r.nextHop === self.ipv6) continue;
        learned.push({ prefix: r.prefix, nextHop: r.nextHop });
      }
    }
    const connected = this.#connectedSubnets;
    const plan: TunnelPlan = c.enableOverlay
      ? planTunnels(
        c.overlayType as OverlayMode,
        connected,
        learned,
        nodes.flatMap((n) => [n.ipv4, n.ipv6].filter((x): x is string => !!x)),
      )
      : { direct: learned, remotes: [] };
    const out: WantedRoute[] = [];
    for (const r of plan.direct) {
      const nh = parseIP(r.nextHop)!;
      if (connected.length && !connected.some((s) => cidrContains(s, nh.addr))) {
        this.#unreachable(r.prefix, r.nextHop);
        continue;
      }
      out.push({ dst: r.prefix, gateway: r.nextHop });
    }
    if (!c.enableOverlay) {
      await this.#overlay.cleanup();
      await this.#tunnels.cleanup();
      return out;
    }
    const vxlan = c.overlayEncap === "vxlan";
    for (const fam of [4, 6] as const) {
      const ip = fam === 4 ? self.ipv4 : self.ipv6;
      const remotes = plan.remotes.filter((r) => parseIP(r.nodeIp)?.family === fam);
      if (!ip || !this.#families().includes(fam) || !remotes.length) {
        await this.#overlay.clear(fam);
        await this.#tunnels.clear(fam);
        continue;
      }
      if (vxlan) {
        out.push(...await this.#overlay.sync({ ip, family: fam }, remotes));
        await this.#tunnels.clear(fam);
        continue;
      }
      await this.#overlay.clear(fam);
      try {
        out.push(...await this.#tunnels.sync({ ip, family: fam }, remotes, self.podCidrs));
        this.#tunnelProblem.delete(fam);
      } catch (err) {
        if (!(err instanceof OverlayError)) throw err;
        // The kernel cannot make the tunnels (e.g. no ipip module): the tunnelled routes are skipped,
        // the direct ones stay; said once per distinct problem.
        if (this.#tunnelProblem.get(fam) !== err.message) {
          this.#tunnelProblem.set(fam, err.message);
          this.#ctx.log.error("overlay tunnels cannot be set up; routes through them are skipped", {
            family: fam,
            overlay_encap: c.overlayEncap,
            err,
          });
        }
      }
    }
    return out;
  }

  #tunnelProblem = new Map<IpFamily, string>();

  #warnedUnreachable = new Set<string>();
  #unreachable(prefix: string, nextHop: string): void {
    const k = `${prefix}|${nextHop}`;
    if (this.#warnedUnreachable.has(k)) return;
    this.#warnedUnreachable.add(k);
    this.#ctx.log.warn("not installing a route whose next hop is on no connected subnet and is not a node", {
      prefix,
      next_hop: nextHop,
    });
  }

  #connectedSubnets: Cidr[] = [];

  /** Refreshes the node's connected subnets and the MTU of the interface holding the node address. */
  async #readInterfaces(self: NodeInfo): Promise<number | undefined> {
    const addrs = await this.#deps.rtnl.addrList();
    this.#connectedSubnets = addrs.flatMap((a) => {
      const c = parseCidr(`${a.address}/${a.prefix}`);
      return c && !a.address.startsWith("127.") && a.address !== "::1" ? [c] : [];
    });
    const nodeAddr = addrs.find((a) => a.address === self.ipv4 || a.address === self.ipv6);
    if (!nodeAddr) return undefined;
    const link = (await this.#deps.rtnl.linkList()).find((l) => l.index === nodeAddr.index);
    return link?.mtu;
  }

  async #writeCni(self: NodeInfo, linkMtu: number | undefined): Promise<void> {
    const c = this.#ctx.config;
    if (self.podCidrs.length === 0) {
      this.#ctx.log.warn("node has no pod CIDR yet; CNI config not written", { node: self.name });
      return;
    }
    const path = c.cniConfFile;
    const existing = await readCniConf(path);
    if (existing.problem) {
      this.#ctx.log.warn("CNI config unreadable; rewriting it", { path, problem: existing.problem });
    }
    const conf = buildCniConf(existing.value, {
      podCidrs: self.podCidrs.filter((p) => this.#families().includes(parseCidr(p)!.family)),
      ...(c.autoMtu && linkMtu
        ? {
          mtu: podMtu(linkMtu, {
            enabled: c.enableOverlay,
            underlay: self.ipv4 ? 4 : 6,
            encap: c.overlayEncap === "fou" ? "fou" : c.overlayEncap === "vxlan" ? "vxlan" : "ipip",
          }),
        }
        : {}),
      hairpin: true,
      list: !path.endsWith(".conf"),
    });
    if (await writeCniConf(path, conf)) this.#ctx.log.info("CNI config written", { path });
  }

  /** A node routes pod traffic only with forwarding on; a node set up by hand may not have it. */
  async #ensureForwarding(): Promise<void> {
    const keys = this.#families().map((f) =>
      f === 4 ? "net.ipv4.ip_forward" : "net.ipv6.conf.all.forwarding"
    );
    for (const key of keys) {
      if ((await this.#deps.sysctl.get(key)) !== "1") {
        await this.#deps.sysctl.set(key, 1);
        this.#ctx.log.info("enabled forwarding", { sysctl: key });
      }
    }
  }

  async #applyEgress(nodes: NodeInfo[]): Promise<void> {
    const tx = egressTransaction({
      podCidrs: nodes.flatMap((n) => n.podCidrs),
      nodeIps: nodes.flatMap((n) => [n.ipv4, n.ipv6].filter((x): x is string => !!x)),
      families: this.#families(),
      masquerade: this.#ctx.config.enablePodEgress,
    });
    const text = tx.render();
    if (text === this.#lastEgress) return;
    await this.#deps.nft.run(tx);
    if (!this.#lastEgress) {
      // Once per start, with the new table in place: the table of older versions goes (both masquerading
      // for a moment is harmless, neither would not be).
      await this.#deps.nft.run(legacyTableCleanupTransaction());
    }
    this.#lastEgress = text;
  }
}
