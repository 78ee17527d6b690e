/** Interop test support: our speaker in a namespace (via the driver), gobgpd and BIRD with temp configs. */
import { Driver } from "../../_support/driver.ts";
import { linkVeth, needs, type NetNs, withNetns } from "../../_support/netns.ts";
import type { BgpEvent, LearnedRoute, PeerStatus } from "../../../modules/router/bgp/speaker.ts";

const driverUrl = new URL("./_speaker_driver.ts", import.meta.url);

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `fn` until it returns a truthy value or `ms` passes. */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T> | T,
  ms = 20_000,
  every = 200,
): Promise<NonNullable<T>> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${last}` : ""}`);
    await sleep(every);
  }
}

/** Our speaker running in `ns` (`_speaker_driver.ts` behind the shared JSON-lines driver harness). */
export class SpeakerDriver {
  private constructor(readonly ns: NetNs, readonly driver: Driver) {}

  /** Starts the speaker's driver in `ns` and waits until it is ready for commands. */
  static async start(ns: NetNs): Promise<SpeakerDriver> {
    return new SpeakerDriver(ns, await Driver.start(ns, driverUrl));
  }

  get pid(): number {
    return this.driver.pid;
  }

  /** Every speaker event so far, oldest first. */
  get events(): BgpEvent[] {
    return this.driver.events<BgpEvent>("bgp");
  }

  /** The speaker's log lines so far. */
  get stderr(): string[] {
    return this.driver.stderr.split("\n").filter((l) => l);
  }

  call<T = unknown>(cmd: string, args: unknown = {}): Promise<T> {
    return this.driver.call<T>(cmd, args);
  }

  routes(family = "ipv4-unicast"): Promise<LearnedRoute[]> {
    return this.call("routes", { family });
  }
  async peer(address: string): Promise<PeerStatus | undefined> {
    return (await this.call<PeerStatus[]>("peers")).find((p) => p.address === address);
  }
  /** Waits until the speaker has learned `prefix` (in `family`) and returns it. */
  waitRoute(what: string, prefix: string, family = "ipv4-unicast"): Promise<LearnedRoute> {
    return waitFor(what, async () => (await this.routes(family)).find((r) => r.prefix === prefix));
  }
  async waitEstablished(address: string, ms = 30_000): Promise<PeerStatus> {
    return await waitFor(`session with ${address}`, async () => {
      const p = await this.peer(address);
      return p?.state === "Established" ? p : undefined;
    }, ms);
  }

  /** Kills the driver (the speaker dies without a NOTIFICATION, as on a crash). */
  kill(): Promise<void> {
    return this.driver.kill();
  }

  /** Stops the speaker (NOTIFICATION Cease to its peers), then ends the driver. */
  async close(): Promise<void> {
    await Promise.race([this.call("stop").catch(() => {}), sleep(3000)]);
    await this.driver.close();
  }
}

// ---------------------------------------------------------------------------------------------------
// Test scaffolding

/**
 * Declares a root test with a temp dir (for daemon configs and sockets) and throwaway namespaces tagged
 * `tags`, both removed even on failure. Sanitizers are off: the driver's and daemons' pipes are read by
 * loops that end only after the test body returns.
 */
export function interopTest(
  name: string,
  tools: string[],
  tags: string[],
  fn: (dir: string, ...ns: NetNs[]) => Promise<void>,
): void {
  Deno.test({
    ...needs(name, { tools }),
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const dir = await Deno.makeTempDir({ prefix: "krt-bgp-" });
      try {
        await withNetns(tags, (...ns) => fn(dir, ...ns));
      } finally {
        await Deno.remove(dir, { recursive: true }).catch(() => {});
      }
    },
  });
}

export interface PairOptions {
  /** The veth's subnets: ours 10.0.<subnet>.1/24, theirs .2 (and fd00:<subnet>::1 / ::2 with `ipv6`). */
  subnet: number;
  /** Also put IPv6 addresses on the veth (default true). */
  ipv6?: boolean;
  /** Tools needed besides the daemon's own. */
  tools?: string[];
}

/** Our speaker (in `us`, through its driver) facing one daemon (in `them`) on a veth. */
export interface Pair {
  us: NetNs;
  them: NetNs;
  dir: string;
  /** Closed at the end; a test that replaces it (after `kill`) has the new one closed instead. */
  drv: SpeakerDriver;
}

function pairTest<D>(
  name: string,
  tools: string[],
  tag: string,
  opts: PairOptions,
  daemon: (them: NetNs, dir: string) => D,
  stop: (d: D) => Promise<void>,
  fn: (p: Pair, d: D) => Promise<void>,
): void {
  interopTest(name, [...tools, ...(opts.tools ?? [])], ["bgp-us", tag], async (dir, us, them) => {
    const n = opts.subnet;
    await linkVeth(us!, "eth0", `10.0.${n}.1/24`, them!, "eth0", `10.0.${n}.2/24`);
    if (opts.ipv6 ?? true) {
      await us!.exec(["ip", "addr", "add", `fd00:${n}::1/64`, "dev", "eth0", "nodad"]);
      await them!.exec(["ip", "addr", "add", `fd00:${n}::2/64`, "dev", "eth0", "nodad"]);
    }
    const d = daemon(them!, dir);
    const p: Pair = { us: us!, them: them!, dir, drv: await SpeakerDriver.start(us!) };
    try {
      await fn(p, d);
    } finally {
      await p.drv.close();
      await stop(d);
    }
  });
}

/** A test of our speaker against gobgpd; gobgpd is stopped with `stopSignal` (default SIGTERM) at the end. */
export function gobgpTest(
  name: string,
  opts: PairOptions & { stopSignal?: Deno.Signal },
  fn: (p: Pair & { gob: Gobgp }) => Promise<void>,
): void {
  pairTest(
    name,
    ["gobgpd", "gobgp"],
    "bgp-gob",
    opts,
    (them, dir) => new Gobgp(them, dir),
    (gob) => gob.stop(opts.stopSignal),
    (p, gob) => fn(Object.assign(p, { gob })),
  );
}

/** A test of our speaker against BIRD, stopped at the end. */
export function birdTest(
  name: string,
  opts: PairOptions,
  fn: (p: Pair & { bird: Bird }) => Promise<void>,
): void {
  pairTest(
    name,
    ["bird", "birdc"],
    "bgp-bird",
    opts,
    (them, dir) => new Bird(them, dir),
    (bird) => bird.stop(),
    (p, bird) => fn(Object.assign(p, { bird })),
  );
}

// ---------------------------------------------------------------------------------------------------
// gobgpd

export interface GobgpNeighbor {
  address: string;
  asn: number;
  passive?: boolean;
  port?: number;
  holdTime?: number;
  gracefulRestart?: boolean;
  password?: string;
  rrClient?: boolean;
  families?: string[];
  localAddress?: string;
}

export function gobgpConfig(
  g: { asn: number; routerId: string; port?: number; neighbors: GobgpNeighbor[] },
): string {
  let s = `[global.config]\n  as = ${g.asn}\n  router-id = "${g.routerId}"\n  port = ${g.port ?? 179}\n`;
  for (const n of g.neighbors) {
    s +=
      `[[neighbors]]\n  [neighbors.config]\n    neighbor-address = "${n.address}"\n    peer-as = ${n.asn}\n`;
    if (n.password) s += `    auth-password = "${n.password}"\n`;
    s += `  [neighbors.timers.config]\n    connect-retry = 1\n    hold-time = ${
      n.holdTime ?? 90
    }\n    keepalive-interval = ${Math.max(1, Math.floor((n.holdTime ?? 90) / 3))}\n`;
    s += `  [neighbors.transport.config]\n    passive-mode = ${!!n.passive}\n`;
    if (n.port) s += `    remote-port = ${n.port}\n`;
    if (n.localAddress) s += `    local-address = "${n.localAddress}"\n`;
    if (n.rrClient) s += `  [neighbors.route-reflector.config]\n    route-reflector-client = true\n`;
    if (n.gracefulRestart) {
      s += `  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 60\n`;
    }
    for (const f of n.families ?? ["ipv4-unicast", "ipv6-unicast"]) {
      s += `  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = "${f}"\n`;
      if (n.gracefulRestart) {
        s += `    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n`;
      }
    }
  }
  return s;
}

export interface GobgpPath {
  nexthop: string;
  attrs: { type: number; [k: string]: unknown }[];
  stale?: boolean;
}

export class Gobgp {
  #proc: Deno.ChildProcess | undefined;
  constructor(readonly ns: NetNs, readonly dir: string, readonly name = "gobgpd") {}

  async start(conf: string): Promise<void> {
    await Deno.writeTextFile(`${this.dir}/${this.name}.toml`, conf);
    this.#proc = this.ns.spawn([
      "gobgpd",
      "-f",
      `${this.dir}/${this.name}.toml`,
      "--api-hosts=127.0.0.1:50051",
      "-l",
      "warn",
    ]);
    await waitFor("gobgpd API", async () => (await this.cli("global")).code === 0, 10_000);
  }

  cli(...args: string[]) {
    return this.ns.exec(["gobgp", ...args], { check: false });
  }

  /** `gobgp -j global rib`: prefix -> paths, with the next hop lifted out of NEXT_HOP/MP_REACH_NLRI. */
  async ribPrefixes(family: "ipv4" | "ipv6"): Promise<Record<string, GobgpPath[]>> {
    const r = await this.cli("-j", "global", "rib", "-a", family);
    if (r.code !== 0) throw new Error(r.stderr || r.stdout);
    const txt = r.stdout.trim();
    const rib: Record<string, GobgpPath[]> = txt ? JSON.parse(txt) : {};
    for (const paths of Object.values(rib)) {
      for (const p of paths) {
        const nh = p.attrs.find((a) => a.type === 3 || a.type === 14) as { nexthop?: string } | undefined;
        p.nexthop = nh?.nexthop ?? "";
      }
    }
    return rib;
  }

  /** Waits until gobgpd's RIB holds `prefix` and returns its paths. */
  waitPrefix(what: string, family: "ipv4" | "ipv6", prefix: string): Promise<GobgpPath[]> {
    return waitFor(what, async () => (await this.ribPrefixes(family))[prefix]);
  }

  async neighborState(address: string): Promise<string> {
    const r = await this.cli("-j", "neighbor", address);
    if (r.code !== 0) return "";
    const j = JSON.parse(r.stdout);
    // gobgp -j prints the FSM state as its protobuf enum number.
    const names = ["unknown", "idle", "connect", "active", "opensent", "openconfirm", "established"];
    const st = j?.state?.session_state;
    return typeof st === "number" ? (names[st] ?? String(st)) : String(st ?? "").toLowerCase();
  }

  get pid(): number | undefined {
    return this.#proc?.pid;
  }

  signal(sig: Deno.Signal): void {
    try {
      this.#proc?.kill(sig);
    } catch { /* gone */ }
  }

  async stop(sig: Deno.Signal = "SIGTERM"): Promise<void> {
    if (!this.#proc) return;
    this.signal("SIGCONT");
    this.signal(sig);
    await this.#proc.status;
    this.#proc = undefined;
  }
}

// ---------------------------------------------------------------------------------------------------
// BIRD

export class Bird {
  #proc: Deno.ChildProcess | undefined;
  constructor(readonly ns: NetNs, readonly dir: string) {}
  get sock(): string {
    return `${this.dir}/bird.ctl`;
  }
  async start(conf: string): Promise<void> {
    await Deno.writeTextFile(`${this.dir}/bird.conf`, conf);
    this.#proc = this.ns.spawn(["bird", "-c", `${this.dir}/bird.conf`, "-s", this.sock, "-f"]);
    await waitFor("bird control socket", async () => (await this.cli("show", "status")).code === 0, 10_000);
  }
  cli(...args: string[]) {
    return this.ns.exec(["birdc", "-s", this.sock, ...args], { check: false });
  }
  /** Waits until `birdc show route <prefix> all` mentions `text` and returns that output. */
  waitRoute(what: string, prefix: string, text: string): Promise<string> {
    return waitFor(what, async () => {
      const out = (await this.cli("show", "route", prefix, "all")).stdout;
      return out.includes(text) ? out : undefined;
    });
  }
  async stop(): Promise<void> {
    if (!this.#proc) return;
    try {
      this.#proc.kill("SIGTERM");
    } catch { /* gone */ }
    await this.#proc.status;
    this.#proc = undefined;
  }
}
