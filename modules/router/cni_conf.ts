/**
 * The CNI network config the router writes for the node's pods (KUBE_ROUTER_CNI_CONF_FILE): the `bridge`
 * plugin on `kube-bridge` with host-local IPAM ranges from the node's pod CIDRs, plus `portmap` for
 * hostPort. Keys a user added are kept; only the ones the router owns are set. The file is replaced
 * atomically (write to a temporary file in the same directory, then rename) and only when it changes,
 * so the container runtime never reads a half-written file.
 */
import { parseCidr } from "../../ffi/mod.ts";
import { encapOverhead } from "./tunnels.ts";

export const BRIDGE_NAME = "kube-bridge";

/**
 * The pod MTU: the node interface's MTU, less what the overlay's encapsulation adds (`encapOverhead`:
 * the outer IPv4 or IPv6 header, plus UDP and GUE for FoU, plus UDP, VXLAN and Ethernet for VXLAN) when
 * the overlay may carry pod traffic. `encap` defaults to VXLAN, the largest.
 */
export function podMtu(
  linkMtu: number,
  overlay: { enabled: boolean; underlay: 4 | 6; encap?: "vxlan" | "ipip" | "fou" },
): number {
  if (!overlay.enabled) return linkMtu;
  return linkMtu - encapOverhead(overlay.encap ?? "vxlan", overlay.underlay);
}

type Json = Record<string, unknown>;

export interface CniConfOptions {
  podCidrs: readonly string[];
  /** Set with --auto-mtu; undefined leaves any MTU a user wrote alone. */
  mtu?: number;
  hairpin: boolean;
  /** Whether the file is a .conflist (plugin chain) or a single-plugin .conf. */
  list: boolean;
}

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function bridgePlugin(existing: Json | undefined, o: CniConfOptions): Json {
  const ipamIn = isObject(existing?.ipam) ? existing.ipam : {};
  const { subnet: _oldSubnet, ...ipamRest } = ipamIn;
  // One range set per pod CIDR: host-local hands out one address per set, so dual-stack pods get both.
  const ranges = o.podCidrs.map((c) => [{ subnet: c }]);
  const ipam: Json = { ...ipamRest, type: "host-local", ranges };
  const plugin: Json = {
    ...existing,
    type: "bridge",
    bridge: BRIDGE_NAME,
    isDefaultGateway: true,
    hairpinMode: o.hairpin,
    ipam,
  };
  if (o.mtu !== undefined) plugin.mtu = o.mtu;
  return plugin;
}

/**
 * Builds the config to write from what is on disk now (undefined if nothing or unreadable).
 * Throws only for pod CIDRs that are not CIDRs (a bug upstream: node info validated them already).
 */
export function buildCniConf(existing: unknown, o: CniConfOptions): Json {
  for (const c of o.podCidrs) if (!parseCidr(c)) throw new Error(`pod CIDR ${c} is not a CIDR`);
  const base = isObject(existing) ? existing : undefined;
  if (!o.list) {
    return { cniVersion: "0.3.1", name: "mynet", ...bridgePlugin(base, o) };
  }
  const plugins = Array.isArray(base?.plugins) ? [...base.plugins as unknown[]] : [];
  const bridgeAt = plugins.findIndex((p) => isObject(p) && p.type === "bridge");
  const bridge = bridgePlugin(bridgeAt >= 0 ? plugins[bridgeAt] as Json : undefined, o);
  if (bridgeAt >= 0) plugins[bridgeAt] = bridge;
  else plugins.unshift(bridge);
  if (!plugins.some((p) => isObject(p) && p.type === "portmap")) {
    plugins.push({ type: "portmap", capabilities: { portMappings: true, snat: true } });
  }
  return { cniVersion: "0.3.1", name: "kubernetes", ...base, plugins };
}

/** Reads the current config; undefined if absent, and undefined (with the reason) if unparsable. */
export async function readCniConf(path: string): Promise<{ value: unknown; problem?: string }> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return { value: undefined };
    return { value: undefined, problem: `cannot read ${path}: ${err}` };
  }
  try {
    return { value: JSON.parse(text) };
  } catch (err) {
    return { value: undefined, problem: `${path} is not JSON (${err}); rewriting it` };
  }
}

/**
 * Writes `conf` to `path` atomically if its content differs. Returns true if the file changed.
 * Equivalent to: `cat > path.tmp && mv path.tmp path`.
 */
export async function writeCniConf(path: string, conf: Json): Promise<boolean> {
  const text = JSON.stringify(conf, null, 2) + "\n";
  try {
    if (await Deno.readTextFile(path) === text) return false;
  } catch { /* absent: write it */ }
  const dir = path.slice(0, path.lastIndexOf("/")) || "/";
  await Deno.mkdir(dir, { recursive: true });
  const tmp = `${dir}/.${path.slice(dir.length + 1)}.${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    await Deno.writeTextFile(tmp, text, { mode: 0o644 });
    await Deno.rename(tmp, path);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
  return true;
}
