/**
 * ONE conformance suite for the `Ipvs` interface: tests/unit/ffi/ipvs_fake_conformance_test.ts runs it
 * against FakeIpvs, tests/vm/ffi/ipvs_guest.ts against the kernel's IPVS in the VM tier. A case gets an
 * empty IPVS (no services, default timeouts) and asserts only what both must do identically.
 */
import assert from "node:assert/strict";
import {
  type Ipvs,
  type IpvsDestination,
  type IpvsService,
  IpvsServiceFlag,
  type IpvsServiceKey,
  isExists,
  isNotFound,
} from "../../../ffi/mod.ts";
import { type Case, rejects } from "./_conformance.ts";

const code = (e: unknown) => (e as { code?: string }).code;
const ZERO = {
  conns: 0,
  inPkts: 0,
  outPkts: 0,
  inBytes: 0,
  outBytes: 0,
  cps: 0,
  inPps: 0,
  outPps: 0,
  inBps: 0,
  outBps: 0,
};
const web: IpvsServiceKey = { family: 4, protocol: "tcp", address: "10.96.0.10", port: 80 };
const dns: IpvsServiceKey = { family: 4, protocol: "udp", address: "10.96.0.10", port: 53 };

function sorted(s: IpvsService[]): IpvsService[] {
  const k = (x: IpvsService) =>
    `${x.family} ${x.fwmark ?? ""} ${x.protocol ?? ""} ${x.address ?? ""} ${x.port ?? ""}`;
  return [...s].sort((a, b) => k(a).localeCompare(k(b)));
}

function dest(address: string, port: number, extra: Partial<IpvsDestination> = {}): IpvsDestination {
  return {
    address,
    port,
    forward: "masq",
    weight: 1,
    upperThreshold: 0,
    lowerThreshold: 0,
    activeConns: 0,
    inactiveConns: 0,
    persistConns: 0,
    stats: ZERO,
    ...extra,
  };
}

export const ipvsCases: Case<Ipvs>[] = [
  {
    name: "adds TCP, UDP, SCTP and fwmark services and lists them with scheduler, flags, timeout and netmask",
    fn: async (ipvs) => {
      const { persistent, sched1, sched2, onePacket } = IpvsServiceFlag;
      await ipvs.addService({ ...web, scheduler: "rr" });
      await ipvs.addService({ ...dns, scheduler: "wrr", flags: persistent, timeout: 300 });
      await ipvs.addService({
        family: 4,
        protocol: "sctp",
        address: "10.96.0.11",
        port: 9000,
        scheduler: "lc",
      });
      await ipvs.addService({ family: 4, fwmark: 7, scheduler: "sh", flags: sched1 | sched2 });
      await ipvs.addService({
        family: 4,
        protocol: "udp",
        address: "10.96.0.12",
        port: 80,
        scheduler: "mh",
        flags: onePacket | sched2,
      });
      const base = { flags: 0, timeout: 0, netmask: 32, stats: ZERO };
      assert.deepEqual(
        sorted(await ipvs.services()),
        sorted([
          { ...web, scheduler: "rr", ...base },
          { ...dns, scheduler: "wrr", ...base, flags: persistent, timeout: 300 },
          { family: 4, protocol: "sctp", address: "10.96.0.11", port: 9000, scheduler: "lc", ...base },
          { family: 4, fwmark: 7, scheduler: "sh", ...base, flags: sched1 | sched2 },
          {
            family: 4,
            protocol: "udp",
            address: "10.96.0.12",
            port: 80,
            scheduler: "mh",
            ...base,
            flags: onePacket | sched2,
          },
        ]),
      );
      // getService answers for one service exactly what the listing says of it.
      assert.deepEqual(await ipvs.getService(dns), {
        ...dns,
        scheduler: "wrr",
        ...base,
        flags: persistent,
        timeout: 300,
      });
      assert.deepEqual(await ipvs.getService({ family: 4, fwmark: 7 }), {
        family: 4,
        fwmark: 7,
        scheduler: "sh",
        ...base,
        flags: sched1 | sched2,
      });
      assert.equal(await ipvs.getService({ ...dns, port: 54 }), undefined);
      assert.equal(await ipvs.getService({ family: 4, fwmark: 8 }), undefined);
    },
  },
  {
    name: "IPv6 services keep their address, port and persistence prefix",
    fn: async (ipvs) => {
      const v6: IpvsServiceKey = { family: 6, protocol: "tcp", address: "fd00:0::10", port: 443 };
      await ipvs.addService({
        ...v6,
        scheduler: "rr",
        flags: IpvsServiceFlag.persistent,
        timeout: 60,
        netmask: 64,
      });
      await ipvs.addService({ family: 6, fwmark: 9, scheduler: "wlc" });
      await ipvs.addDestination(v6, { address: "fd00::1:5", port: 8443, weight: 2 });
      assert.deepEqual(
        sorted(await ipvs.services()),
        sorted([
          { family: 6, fwmark: 9, scheduler: "wlc", flags: 0, timeout: 0, netmask: 128, stats: ZERO },
          {
            family: 6,
            protocol: "tcp",
            address: "fd00::10",
            port: 443,
            scheduler: "rr",
            flags: IpvsServiceFlag.persistent,
            timeout: 60,
            netmask: 64,
            stats: ZERO,
          },
        ]),
      );
      assert.deepEqual(await ipvs.destinations(v6), [dest("fd00::1:5", 8443, { weight: 2 })]);
    },
  },
  {
    name: "a duplicate service is EEXIST; editing or deleting a missing one is ESRCH (not found)",
    fn: async (ipvs) => {
      await ipvs.addService({ ...web, scheduler: "rr" });
      await rejects(ipvs.addService({ ...web, scheduler: "wrr" }), (e) => isExists(e), "duplicate");
      await rejects(
        ipvs.editService({ ...dns, scheduler: "rr" }),
        (e) => code(e) === "ESRCH",
        "edit missing",
      );
      await rejects(ipvs.delService(dns), (e) => code(e) === "ESRCH" && isNotFound(e), "delete missing");
      assert.equal((await ipvs.services()).length, 1);
    },
  },
  {
    name: "a scheduler the kernel does not have is refused with ENOENT and adds nothing",
    fn: async (ipvs) => {
      await rejects(
        ipvs.addService({ ...web, scheduler: "nosuchsched" }),
        (e) => code(e) === "ENOENT",
        "sched",
      );
      assert.deepEqual(await ipvs.services(), []);
    },
  },
  {
    name: "editing a service changes its scheduler and persistence and keeps its destinations",
    fn: async (ipvs) => {
      await ipvs.addService({ ...web, scheduler: "rr" });
      await ipvs.addDestination(web, { address: "10.1.1.5", port: 8080 });
      await ipvs.editService({ ...web, scheduler: "wlc", flags: IpvsServiceFlag.persistent, timeout: 10800 });
      const s = await ipvs.getService(web);
      assert.equal(s?.scheduler, "wlc");
      assert.equal(s?.flags, IpvsServiceFlag.persistent);
      assert.equal(s?.timeout, 10800);
      assert.equal((await ipvs.destinations(web)).length, 1);
    },
  },
  {
    name: "destinations carry weight, forwarding method and thresholds, listed newest first",
    fn: async (ipvs) => {
      await ipvs.addService({ ...web, scheduler: "wrr" });
      await ipvs.addDestination(web, {
        address: "10.1.1.5",
        port: 8080,
        forward: "masq",
        weight: 3,
        upperThreshold: 100,
        lowerThreshold: 10,
      });
      await ipvs.addDestination(web, { address: "10.1.1.6", port: 80, forward: "tunnel", weight: 1 });
      await ipvs.addDestination(web, { address: "10.1.1.7", port: 80, forward: "route", weight: 65535 });
      assert.deepEqual(await ipvs.destinations(web), [
        dest("10.1.1.7", 80, { forward: "route", weight: 65535 }),
        dest("10.1.1.6", 80, { forward: "tunnel" }),
        dest("10.1.1.5", 8080, { weight: 3, upperThreshold: 100, lowerThreshold: 10 }),
      ]);
      await ipvs.addService({ family: 4, fwmark: 7, scheduler: "rr" });
      await ipvs.addDestination({ family: 4, fwmark: 7 }, { address: "10.1.1.8", port: 0, forward: "route" });
      assert.deepEqual(await ipvs.destinations({ family: 4, fwmark: 7 }), [
        dest("10.1.1.8", 0, { forward: "route" }),
      ]);
    },
  },
  {
    name: "destination errors: duplicate EEXIST, missing destination ENOENT, missing service ESRCH",
    fn: async (ipvs) => {
      await ipvs.addService({ ...web, scheduler: "rr" });
      await ipvs.addDestination(web, { address: "10.1.1.5", port: 8080 });
      await rejects(ipvs.addDestination(web, { address: "10.1.1.5", port: 8080 }), isExists, "duplicate");
      await rejects(
        ipvs.editDestination(web, { address: "10.1.1.9", port: 8080 }),
        (e) => code(e) === "ENOENT",
        "edit missing",
      );
      await rejects(
        ipvs.delDestination(web, { address: "10.1.1.5", port: 9090 }),
        (e) => code(e) === "ENOENT" && isNotFound(e),
        "delete missing",
      );
      await rejects(
        ipvs.addDestination(dns, { address: "10.1.1.5", port: 53 }),
        (e) => code(e) === "ESRCH",
        "no service",
      );
      await rejects(
        ipvs.addDestination(web, { address: "10.1.1.6", port: 80, weight: 65536 }),
        (e) => e instanceof RangeError,
        "weight out of range",
      );
      assert.equal((await ipvs.destinations(web)).length, 1);
    },
  },
  {
    name: "a destination drained to weight 0 stays listed until deleted",
    fn: async (ipvs) => {
      await ipvs.addService({ ...web, scheduler: "rr" });
      await ipvs.addDestination(web, { address: "10.1.1.5", port: 8080, weight: 5 });
      await ipvs.editDestination(web, { address: "10.1.1.5", port: 8080, weight: 0 });
      assert.deepEqual(await ipvs.destinations(web), [dest("10.1.1.5", 8080, { weight: 0 })]);
      await ipvs.delDestination(web, { address: "10.1.1.5", port: 8080 });
      assert.deepEqual(await ipvs.destinations(web), []);
    },
  },
  {
    name: "deleting a service removes its destinations (listing them is empty); flush removes every service",
    fn: async (ipvs) => {
      await ipvs.addService({ ...web, scheduler: "rr" });
      await ipvs.addService({ ...dns, scheduler: "rr" });
      await ipvs.addDestination(web, { address: "10.1.1.5", port: 8080 });
      await ipvs.delService(web);
      // The kernel's destination dump of a missing service is simply empty, not an error.
      assert.deepEqual(await ipvs.destinations(web), []);
      await ipvs.addService({ ...web, scheduler: "rr" });
      assert.deepEqual(await ipvs.destinations(web), []);
      await ipvs.flush();
      assert.deepEqual(await ipvs.services(), []);
    },
  },
  {
    name:
      "a batch applies its changes in order; each failure has its index and error, the others still happen",
    fn: async (ipvs) => {
      const d5 = { address: "10.1.1.5", port: 8080 };
      const failures = await ipvs.apply([
        { op: "addService", service: { ...web, scheduler: "rr" } },
        { op: "addDestination", service: web, destination: d5 },
        { op: "addDestination", service: web, destination: d5 },
        { op: "addService", service: { ...dns, scheduler: "nosuch" } },
        { op: "addDestination", service: dns, destination: { address: "10.1.1.5", port: 53 } },
        { op: "delDestination", service: web, destination: { address: "10.1.1.9", port: 8080 } },
        {
          op: "addDestination",
          service: web,
          destination: { address: "10.1.1.6", port: 8080, weight: 65536 },
        },
        { op: "addDestination", service: web, destination: { address: "10.1.1.7", port: 8080 } },
        { op: "editDestination", service: web, destination: { ...d5, weight: 3 } },
        { op: "delDestination", service: web, destination: { address: "10.1.1.7", port: 8080 } },
        { op: "addService", service: { ...dns, scheduler: "wrr" } },
        { op: "editService", service: { ...dns, scheduler: "lc" } },
      ]);
      assert.deepEqual(
        failures.map((f) => [f.index, code(f.error) ?? f.error.name]),
        [[2, "EEXIST"], [3, "ENOENT"], [4, "ESRCH"], [5, "ENOENT"], [6, "RangeError"]],
      );
      assert.match(
        failures[0]!.error.message,
        /^IPVS add destination 10\.1\.1\.5:8080 to tcp\/10\.96\.0\.10:80/,
      );
      assert.ok(isExists(failures[0]!.error));
      assert.deepEqual(await ipvs.destinations(web), [dest("10.1.1.5", 8080, { weight: 3 })]);
      assert.deepEqual((await ipvs.services()).map((s) => `${s.protocol} ${s.scheduler}`).sort(), [
        "tcp rr",
        "udp lc",
      ]);
      assert.deepEqual(await ipvs.apply([]), []);
    },
  },
  {
    name: "timeouts start at 900/120/300, are set, and a 0 leaves one unchanged",
    fn: async (ipvs) => {
      assert.deepEqual(await ipvs.timeouts(), { tcp: 900, tcpFin: 120, udp: 300 });
      await ipvs.setTimeouts({ tcp: 3600, tcpFin: 0, udp: 30 });
      assert.deepEqual(await ipvs.timeouts(), { tcp: 3600, tcpFin: 120, udp: 30 });
      await ipvs.setTimeouts({ tcp: 900, udp: 300 });
      assert.deepEqual(await ipvs.timeouts(), { tcp: 900, tcpFin: 120, udp: 300 });
    },
  },
  {
    name: "info reports IPVS 1.2.1 and its connection table size",
    fn: async (ipvs) => {
      const info = await ipvs.info();
      assert.equal(info.version, "1.2.1");
      assert.ok(info.connTableSize >= 4096, `conn table ${info.connTableSize}`);
    },
  },
];
