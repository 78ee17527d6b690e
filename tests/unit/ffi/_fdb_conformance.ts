/**
 * ONE conformance suite for the `Fdb` interface: tests/unit/ffi/fdb_test.ts runs every case against
 * FakeFdb over FakeRtnetlink, tests/integration/ffi/fdb_conformance_test.ts runs the very same cases
 * against NetlinkFdb and Rtnetlink in a throwaway namespace. A case gets an empty namespace (only `lo`).
 */
import assert from "node:assert/strict";
import { type Fdb, isNotFound, isNotSupported, type Rtnl } from "../../../ffi/mod.ts";
import { type Case, rejects } from "./_conformance.ts";

export interface FdbImpl {
  rtnl: Rtnl;
  fdb: Fdb;
}

export type FdbCase = Case<FdbImpl>;

/** A VXLAN device without a default destination, as the overlay makes it; returns its index. */
async function vxlan(rtnl: Rtnl, name = "vx0", local = "10.9.0.1"): Promise<number> {
  await rtnl.linkAdd({ kind: "vxlan", name, vni: 42, port: 4789, local, learning: false });
  return (await rtnl.linkGet(name))!.index;
}

function view(entries: { mac: string; dst?: string; state?: number; flags?: number }[]) {
  return entries.map((e) => `${e.mac} ${e.dst ?? "-"} ${e.state} ${e.flags}`).sort();
}

const A = "0a:58:c0:a8:02:64";
const B = "0a:58:c0:a8:03:64";
const ZERO = "00:00:00:00:00:00";

export const fdbCases: FdbCase[] = [
  {
    name: "replace creates an entry and overwrites its destination, listed as self permanent",
    async fn({ rtnl, fdb }) {
      const dev = await vxlan(rtnl);
      assert.deepEqual(await fdb.fdbList(dev), []);
      await fdb.fdbReplace({ dev, mac: A, dst: "192.168.2.100" });
      await fdb.fdbReplace({ dev, mac: B.toUpperCase(), dst: "192.168.3.100" });
      await fdb.fdbReplace({ dev, mac: A, dst: "192.168.2.101" });
      assert.deepEqual(view(await fdb.fdbList(dev)), [
        `${A} 192.168.2.101 192 2`,
        `${B} 192.168.3.100 192 2`,
      ]);
    },
  },
  {
    name: "append creates an entry, leaves a unicast MAC's destination alone, and adds default destinations",
    async fn({ rtnl, fdb }) {
      const dev = await vxlan(rtnl);
      await fdb.fdbAppend({ dev, mac: A, dst: "192.168.2.100" });
      await fdb.fdbAppend({ dev, mac: A, dst: "192.168.2.101" });
      assert.deepEqual(view(await fdb.fdbList(dev)), [`${A} 192.168.2.100 192 2`]);
      await fdb.fdbAppend({ dev, mac: ZERO, dst: "192.168.2.100" });
      await fdb.fdbAppend({ dev, mac: ZERO, dst: "192.168.2.101" });
      await fdb.fdbAppend({ dev, mac: ZERO, dst: "192.168.2.101" });
      assert.deepEqual(view(await fdb.fdbList(dev)), [
        `${ZERO} 192.168.2.100 192 2`,
        `${ZERO} 192.168.2.101 192 2`,
        `${A} 192.168.2.100 192 2`,
      ]);
    },
  },
  {
    name: "del with a destination removes that one, without removes the MAC, and a missing one is not found",
    async fn({ rtnl, fdb }) {
      const dev = await vxlan(rtnl);
      await fdb.fdbAppend({ dev, mac: ZERO, dst: "192.168.2.100" });
      await fdb.fdbAppend({ dev, mac: ZERO, dst: "192.168.2.101" });
      await fdb.fdbReplace({ dev, mac: B, dst: "192.168.3.100" });
      await fdb.fdbDel({ dev, mac: ZERO, dst: "192.168.2.100" });
      assert.deepEqual(view(await fdb.fdbList(dev)), [
        `${ZERO} 192.168.2.101 192 2`,
        `${B} 192.168.3.100 192 2`,
      ]);
      await fdb.fdbDel({ dev, mac: B });
      assert.deepEqual(view(await fdb.fdbList(dev)), [`${ZERO} 192.168.2.101 192 2`]);
      await rejects(fdb.fdbDel({ dev, mac: B }), isNotFound, "del of a missing MAC");
      await fdb.fdbDel({ dev, mac: ZERO, dst: "192.168.2.100" }); // a missing destination: no error
      assert.equal((await fdb.fdbList(dev)).length, 1);
      await fdb.fdbDel({ dev, mac: ZERO });
      assert.deepEqual(await fdb.fdbList(dev), []);
    },
  },
  {
    name: "entries are listed per device and go with their device",
    async fn({ rtnl, fdb }) {
      const d1 = await vxlan(rtnl, "vx1", "10.9.0.1");
      await rtnl.linkAdd({
        kind: "vxlan",
        name: "vx2",
        vni: 43,
        port: 4789,
        local: "10.9.0.1",
        learning: false,
      });
      const d2 = (await rtnl.linkGet("vx2"))!.index;
      await fdb.fdbReplace({ dev: d1, mac: A, dst: "192.168.2.100" });
      await fdb.fdbReplace({ dev: d2, mac: B, dst: "192.168.3.100" });
      assert.deepEqual(view(await fdb.fdbList(d1)), [`${A} 192.168.2.100 192 2`]);
      assert.deepEqual(view(await fdb.fdbList(d2)), [`${B} 192.168.3.100 192 2`]);
      await rtnl.linkDel("vx1");
      assert.deepEqual(await fdb.fdbList(d1), []);
      assert.equal((await fdb.fdbList(d2)).length, 1);
    },
  },
  {
    name: "an IPv6 device takes IPv6 destinations and refuses IPv4 ones, and vice versa",
    async fn({ rtnl, fdb }) {
      const v6 = await vxlan(rtnl, "vx6", "fd00:1::100");
      const v4 = await vxlan(rtnl, "vx4", "10.9.0.1");
      await fdb.fdbReplace({ dev: v6, mac: A, dst: "fd00:2::100" });
      assert.deepEqual(view(await fdb.fdbList(v6)), [`${A} fd00:2::100 192 2`]);
      await rejects(fdb.fdbReplace({ dev: v6, mac: B, dst: "192.168.3.100" }), isNotSupported, "v4 on v6");
      await rejects(fdb.fdbReplace({ dev: v4, mac: B, dst: "fd00:3::100" }), isNotSupported, "v6 on v4");
    },
  },
  {
    name: "an entry on a device that does not exist is not found",
    async fn({ fdb }) {
      await rejects(fdb.fdbReplace({ dev: 9999, mac: A, dst: "192.168.2.100" }), isNotFound, "no device");
    },
  },
];
