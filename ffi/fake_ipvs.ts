/**
 * In-memory IPVS with the kernel's observable behaviour (the conformance suite in
 * tests/unit/ffi/_ipvs_conformance.ts runs against both): the same errno for a duplicate (EEXIST), a
 * missing service (ESRCH), a missing destination or an unknown scheduler (ENOENT); destinations listed
 * newest first; the default timeouts 900/120/300; counters at zero. Input is validated by the very
 * encoders the real one sends, so bad values fail identically.
 */
import { NetlinkError } from "./errors.ts";
import {
  encodeDestCmd,
  encodeServiceCmd,
  encodeSetTimeouts,
  type Ipvs,
  IpvsCmd,
  type IpvsDestination,
  type IpvsOp,
  type IpvsOpFailure,
  type IpvsService,
  IpvsServiceFlag,
  type IpvsServiceKey,
  type IpvsTimeouts,
  serviceKey,
  serviceKeyString,
  settle,
  zeroIpvsStats,
} from "./ipvs.ts";
import { type Family, formatIP, ipBytes } from "./ip.ts";
import { NlWriter } from "./netlink.ts";

const ENOENT = 2;
const ESRCH = 3;
const EEXIST = 17;

/** Scheduler modules a Debian kernel ships (net/netfilter/ipvs/ip_vs_*.ko). */
const SCHEDULERS = new Set([
  "rr",
  "wrr",
  "lc",
  "wlc",
  "lblc",
  "lblcr",
  "dh",
  "sh",
  "sed",
  "nq",
  "fo",
  "ovf",
  "mh",
  "twos",
]);

function destKey(d: { address: string; port: number; family?: Family }, svcFamily: Family): string {
  const f = d.family ?? svcFamily;
  return `${formatIP(ipBytes(d.address, f))}/${d.port}`;
}

interface Entry {
  service: IpvsService;
  dests: Map<string, IpvsDestination>;
}

export class FakeIpvs implements Ipvs {
  #services = new Map<string, Entry>();
  #timeouts: IpvsTimeouts = { tcp: 900, tcpFin: 120, udp: 300 };
  #scratch = new NlWriter();
  /** Calls made, for tests that count kernel work ("addService tcp/10.96.0.10:80"). */
  readonly calls: string[] = [];

  /** Each change through its single-call method, in order, collecting failures (the kernel's semantics). */
  async apply(ops: readonly IpvsOp[]): Promise<IpvsOpFailure[]> {
    const failures: IpvsOpFailure[] = [];
    for (const [index, o] of ops.entries()) {
      try {
        switch (o.op) {
          case "addService":
            await this.addService(o.service);
            break;
          case "editService":
            await this.editService(o.service);
            break;
          case "delService":
            await this.delService(o.service);
            break;
          case "addDestination":
            await this.addDestination(o.service, o.destination);
            break;
          case "editDestination":
            await this.editDestination(o.service, o.destination);
            break;
          case "delDestination":
            await this.delDestination(o.service, o.destination);
            break;
        }
      } catch (e) {
        failures.push({ index, error: e instanceof Error ? e : new Error(String(e)) });
      }
    }
    return failures;
  }

  #check(f: (w: NlWriter) => void): void {
    this.#scratch.reset();
    f(this.#scratch);
  }

  #entry(key: IpvsServiceKey, op: string): Entry {
    const e = this.#services.get(serviceKeyString(key));
    if (!e) throw new NetlinkError(ESRCH, op, 0);
    return e;
  }

  info(): Promise<{ version: string; connTableSize: number }> {
    return Promise.resolve({ version: "1.2.1", connTableSize: 4096 });
  }

  services(): Promise<IpvsService[]> {
    return settle(() => {
      return [...this.#services.values()].map((e) => structuredClone(e.service));
    });
  }

  getService(key: IpvsServiceKey): Promise<IpvsService | undefined> {
    return settle(() => {
      const e = this.#services.get(serviceKeyString(key));
      return e ? structuredClone(e.service) : undefined;
    });
  }

  #normal(s: IpvsService): IpvsService {
    if (!SCHEDULERS.has(s.scheduler)) {
      throw new NetlinkError(ENOENT, `IPVS service ${serviceKeyString(s)}: scheduler ${s.scheduler}`, 0);
    }
    const k = serviceKey(s);
    const canonical: IpvsServiceKey = k.fwmark !== undefined
      ? k
      : { ...k, address: formatIP(ipBytes(k.address, k.family)) };
    return {
      ...canonical,
      scheduler: s.scheduler,
      flags: (s.flags ?? 0) & ~IpvsServiceFlag.hashed,
      timeout: s.timeout ?? 0,
      netmask: s.netmask ?? (s.family === 6 ? 128 : 32),
      ...(s.pe ? { pe: s.pe } : {}),
      stats: zeroIpvsStats(),
    } as IpvsService;
  }

  addService(s: IpvsService): Promise<void> {
    return settle(() => {
      const op = `IPVS add service ${serviceKeyString(s)}`;
      this.#check((w) => encodeServiceCmd(w, IpvsCmd.newService, s));
      this.calls.push(`addService ${serviceKeyString(s)}`);
      const k = serviceKeyString(s);
      if (this.#services.has(k)) throw new NetlinkError(EEXIST, op, 0);
      this.#services.set(k, { service: this.#normal(s), dests: new Map() });
    });
  }

  editService(s: IpvsService): Promise<void> {
    return settle(() => {
      this.#check((w) => encodeServiceCmd(w, IpvsCmd.setService, s));
      this.calls.push(`editService ${serviceKeyString(s)}`);
      const e = this.#entry(s, `IPVS edit service ${serviceKeyString(s)}`);
      e.service = { ...this.#normal(s), stats: e.service.stats! };
    });
  }

  delService(key: IpvsServiceKey): Promise<void> {
    return settle(() => {
      this.calls.push(`delService ${serviceKeyString(key)}`);
      this.#entry(key, `IPVS delete service ${serviceKeyString(key)}`);
      this.#services.delete(serviceKeyString(key));
    });
  }

  destinations(key: IpvsServiceKey): Promise<IpvsDestination[]> {
    return settle(() => {
      // The kernel's dump of a missing service's destinations is empty, not ESRCH.
      const e = this.#services.get(serviceKeyString(key));
      if (!e) return [];
      // The kernel adds destinations at the head of the service's list.
      return [...e.dests.values()].reverse().map((d) => structuredClone(d));
    });
  }

  #dest(key: IpvsServiceKey, d: IpvsDestination): IpvsDestination {
    const family = d.family ?? key.family;
    return {
      address: formatIP(ipBytes(d.address, family)),
      port: d.port,
      ...(family !== key.family ? { family } : {}),
      forward: d.forward ?? "masq",
      weight: d.weight ?? 1,
      upperThreshold: d.upperThreshold ?? 0,
      lowerThreshold: d.lowerThreshold ?? 0,
      activeConns: 0,
      inactiveConns: 0,
      persistConns: 0,
      stats: zeroIpvsStats(),
    };
  }

  addDestination(key: IpvsServiceKey, d: IpvsDestination): Promise<void> {
    return settle(() => {
      const op = `IPVS add destination ${d.address}:${d.port} to ${serviceKeyString(key)}`;
      this.#check((w) => encodeDestCmd(w, IpvsCmd.newDest, key, d));
      this.calls.push(`addDestination ${serviceKeyString(key)} ${d.address}:${d.port}`);
      const e = this.#entry(key, op);
      const k = destKey(d, key.family);
      if (e.dests.has(k)) throw new NetlinkError(EEXIST, op, 0);
      e.dests.set(k, this.#dest(key, d));
    });
  }

  editDestination(key: IpvsServiceKey, d: IpvsDestination): Promise<void> {
    return settle(() => {
      const op = `IPVS edit destination ${d.address}:${d.port} of ${serviceKeyString(key)}`;
      this.#check((w) => encodeDestCmd(w, IpvsCmd.setDest, key, d));
      this.calls.push(`editDestination ${serviceKeyString(key)} ${d.address}:${d.port}`);
      const e = this.#entry(key, op);
      const k = destKey(d, key.family);
      const old = e.dests.get(k);
      if (!old) throw new NetlinkError(ENOENT, op, 0);
      e.dests.set(k, { ...this.#dest(key, d), stats: old.stats! });
    });
  }

  delDestination(key: IpvsServiceKey, d: { address: string; port: number; family?: Family }): Promise<void> {
    return settle(() => {
      const op = `IPVS delete destination ${d.address}:${d.port} of ${serviceKeyString(key)}`;
      this.#check((w) => encodeDestCmd(w, IpvsCmd.delDest, key, d));
      this.calls.push(`delDestination ${serviceKeyString(key)} ${d.address}:${d.port}`);
      const e = this.#entry(key, op);
      if (!e.dests.delete(destKey(d, key.family))) throw new NetlinkError(ENOENT, op, 0);
    });
  }

  flush(): Promise<void> {
    return settle(() => {
      this.calls.push("flush");
      this.#services.clear();
    });
  }

  zero(): Promise<void> {
    return settle(() => {
      for (const e of this.#services.values()) {
        e.service.stats = zeroIpvsStats();
        for (const d of e.dests.values()) d.stats = zeroIpvsStats();
      }
    });
  }

  timeouts(): Promise<IpvsTimeouts> {
    return settle(() => {
      return { ...this.#timeouts };
    });
  }

  setTimeouts(t: Partial<IpvsTimeouts>): Promise<void> {
    return settle(() => {
      this.#check((w) => encodeSetTimeouts(w, t));
      for (const k of ["tcp", "tcpFin", "udp"] as const) if (t[k]) this.#timeouts[k] = t[k];
    });
  }

  close(): void {}
}
