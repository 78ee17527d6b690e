/**
 * @module
 * The acts of `deno task demo`, in order. To add one (each module's issue adds its own): write
 * `lab/acts/<name>.ts` exporting an `Act` (see types.ts; helpers in _helpers.ts), then append it to
 * `ACTS` below. Acts run in one lab, in order, and may build on what earlier acts created (namespace
 * `demo`, pods web-1 and web-2 on kube-node1, Service web, and web-3 on kube-node2).
 */
import { clusterAct } from "./cluster.ts";
import { crossNodeAct } from "./cross_node.ts";
import { daemonSetAct } from "./daemonset.ts";
import { networkPolicyAct } from "./network_policy.ts";
import { sameNodeAct } from "./same_node.ts";
import { serviceProxyAct } from "./service_proxy.ts";
import type { Act } from "./types.ts";

export { type Act, type DemoContext, ExpectationFailed, type Step } from "./types.ts";
export { clusterAct, crossNodeAct, daemonSetAct, networkPolicyAct, sameNodeAct, serviceProxyAct };

/** The scenario, in order. */
export const ACTS: Act[] = [clusterAct, sameNodeAct, crossNodeAct, serviceProxyAct, networkPolicyAct];
