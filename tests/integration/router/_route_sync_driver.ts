/** Driver: a RouteSync over the real rtnetlink of the namespace it runs in (see route_sync_test.ts). */
import { serveDriver } from "../../_support/driver.ts";
import { Rtnetlink } from "../../../ffi/mod.ts";
import { getLogger } from "../../../core/log.ts";
import { RouteSync, type WantedRoute } from "../../../modules/router/route_sync.ts";

const rtnl = new Rtnetlink();
const sync = new RouteSync(rtnl, getLogger({ driver: "route_sync" }));
await serveDriver({
  sync: (params) => sync.sync(params as WantedRoute[]),
  watch: (_p, emit) => sync.watch((why) => emit("drift", why)),
  removeAll: () => sync.removeAll(),
});
sync.stopWatching();
rtnl.close();
