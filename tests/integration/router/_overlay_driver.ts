/**
 * Driver: an Overlay plus a RouteSync over the real rtnetlink and FDB of the namespace it runs in, used
 * as the router will use them: one overlay sync per underlay family, all routes merged into one RouteSync.
 */
import { serveDriver } from "../../_support/driver.ts";
import { NetlinkFdb, Rtnetlink } from "../../../ffi/mod.ts";
import { getLogger } from "../../../core/log.ts";
import { Overlay, type OverlayLocal, type OverlayRemote } from "../../../modules/router/overlay.ts";
import { RouteSync, type WantedRoute } from "../../../modules/router/route_sync.ts";

const port = Number(Deno.args[0] ?? 4789);
const rtnl = new Rtnetlink();
const fdb = new NetlinkFdb();
const log = getLogger({ driver: "overlay" });
const overlay = new Overlay(rtnl, fdb, log, { port });
const routes = new RouteSync(rtnl, log);
await serveDriver({
  async sync(params) {
    const { locals, remotes } = params as { locals: OverlayLocal[]; remotes: OverlayRemote[] };
    const wanted: WantedRoute[] = [];
    for (const local of locals) wanted.push(...await overlay.sync(local, remotes));
    const result = await routes.sync(wanted);
    return { wanted, result };
  },
  async cleanup() {
    await overlay.cleanup();
    return await routes.removeAll();
  },
});
fdb.close();
rtnl.close();
