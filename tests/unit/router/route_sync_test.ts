import assert from "node:assert/strict";
import { FakeRtnetlink } from "../../../ffi/mod.ts";
import { getLogger, MemorySink } from "../../../core/log.ts";
import { ROUTER_ROUTE_PROTOCOL, RouteSync } from "../../../modules/router/route_sync.ts";

async function setup() {
  const rtnl = new FakeRtnetlink();
  await rtnl.linkAdd({ kind: "veth", name: "eth0", peer: "eth0p" });
  await rtnl.linkSet("eth0", { up: true });
  const eth0 = (await rtnl.linkGet("eth0"))!;
  await rtnl.addrAdd({ family: 4, index: eth0.index, address: "192.168.1.100", prefix: 24 });
  return { rtnl, sync: new RouteSync(rtnl, getLogger({}, new MemorySink())) };
}

Deno.test("route sync installs, changes and removes only the router's own routes", async () => {
  const { rtnl, sync } = await setup();
  // Someone else's route must survive every sync.
  await rtnl.routeAdd({ family: 4, dst: "10.9.0.0/16", gateway: "192.168.1.1", protocol: 4 });
  let r = await sync.sync([{ dst: "10.1.2.0/24", gateway: "192.168.1.101" }, {
    dst: "10.1.3.0/24",
    gateway: "192.168.1.102",
  }]);
  assert.deepEqual(r, { added: 2, replaced: 0, removed: 0, failed: 0 });
  r = await sync.sync([{ dst: "10.1.2.0/24", gateway: "192.168.1.101" }, {
    dst: "10.1.3.0/24",
    gateway: "192.168.1.103",
  }]);
  assert.deepEqual(r, { added: 0, replaced: 1, removed: 0, failed: 0 });
  r = await sync.sync([{ dst: "10.1.3.0/24", gateway: "192.168.1.103" }]);
  assert.deepEqual(r, { added: 0, replaced: 0, removed: 1, failed: 0 });
  const ours = await rtnl.routeList({ protocol: ROUTER_ROUTE_PROTOCOL });
  assert.deepEqual(ours.map((x) => [x.dst, x.gateway]), [["10.1.3.0/24", "192.168.1.103"]]);
  assert.equal((await rtnl.routeList({ protocol: 4 })).length, 1, "the static route was not touched");
  assert.equal(await sync.removeAll(), 1);
  assert.equal((await rtnl.routeList({ protocol: ROUTER_ROUTE_PROTOCOL })).length, 0);
  assert.equal((await rtnl.routeList({ protocol: 4 })).length, 1);
});

Deno.test("route sync notices a wanted route deleted behind its back", async () => {
  const { rtnl, sync } = await setup();
  await sync.sync([{ dst: "10.1.2.0/24", gateway: "192.168.1.101" }]);
  const drift: string[] = [];
  sync.watch((why) => drift.push(why));
  await rtnl.routeDel({ family: 4, dst: "10.1.2.0/24", protocol: ROUTER_ROUTE_PROTOCOL });
  for (let k = 0; k < 20 && drift.length === 0; k++) await new Promise((r) => setTimeout(r, 5));
  assert.deepEqual(drift, ["route 10.1.2.0/24 was deleted"]);
  assert.deepEqual(await sync.sync([{ dst: "10.1.2.0/24", gateway: "192.168.1.101" }]), {
    added: 1,
    replaced: 0,
    removed: 0,
    failed: 0,
  });
  sync.stopWatching();
});

Deno.test("route sync reports a route the kernel refuses and still applies the rest", async () => {
  const { rtnl, sync } = await setup();
  await assert.rejects(
    sync.sync([{ dst: "10.1.2.0/24", gateway: "192.168.1.101" }, {
      dst: "10.1.4.0/24",
      gateway: "172.31.0.1",
    }]),
    /1 of 2 route changes failed/,
  );
  const ours = await rtnl.routeList({ protocol: ROUTER_ROUTE_PROTOCOL });
  assert.deepEqual(ours.map((x) => x.dst), ["10.1.2.0/24"]);
});
