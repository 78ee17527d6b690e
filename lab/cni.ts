/**
 * Invoking the real CNI plugins (containernetworking-plugins in /usr/lib/cni) the way a container runtime
 * does: find the node's network configuration (the lexically first *.conf/*.conflist/*.json in its CNI conf
 * dir, as kubelet/libcni do), then run each plugin of the list in order with CNI_COMMAND=ADD and the
 * previous plugin's result as prevResult; DEL runs them in reverse. Plugins run inside the node's network
 * namespace (`ip netns exec <node> /usr/lib/cni/bridge`), so kube-bridge and the veths live there.
 *
 * The lab adds `ipam.dataDir` to host-local plugins that do not set one, so IP leases are written under
 * the lab's state dir and never to /var/lib/cni.
 */
import { sh } from "./_sh.ts";

export const CNI_BIN_DIR = "/usr/lib/cni";

/** A CNI plugin failed; `code` and `msg` come from the plugin's error result when it gave one. */
export class CniError extends Error {
  constructor(readonly plugin: string, readonly command: string, readonly code: number, msg: string) {
    super(`CNI ${command} ${plugin}: ${msg}`);
    this.name = "CniError";
  }
}

// deno-lint-ignore no-explicit-any
export type Json = any;

export interface NetworkList {
  cniVersion: string;
  name: string;
  plugins: Json[];
}

/** The conf file a runtime would pick from `dir`, normalised to a list; undefined if there is none. */
export function loadNetworkConfig(dir: string): { path: string; list: NetworkList } | undefined {
  let names: string[];
  try {
    names = [...Deno.readDirSync(dir)].filter((e) => e.isFile && /\.(conf|conflist|json)$/.test(e.name)).map((
      e,
    ) => e.name);
  } catch {
    return undefined;
  }
  for (const name of names.sort()) {
    const path = `${dir}/${name}`;
    let conf: Json;
    try {
      conf = JSON.parse(Deno.readTextFileSync(path));
    } catch {
      continue; // half-written or invalid: a runtime skips it too
    }
    if (Array.isArray(conf.plugins)) {
      return {
        path,
        list: { cniVersion: conf.cniVersion ?? "0.3.1", name: conf.name ?? "cni", plugins: conf.plugins },
      };
    }
    if (typeof conf.type === "string") {
      return {
        path,
        list: { cniVersion: conf.cniVersion ?? "0.3.1", name: conf.name ?? "cni", plugins: [conf] },
      };
    }
  }
  return undefined;
}

/** Does this configuration give host-local something to allocate from (a subnet or ranges)? */
export function hasIpamRange(list: NetworkList): boolean {
  return list.plugins.some((p) => {
    const ipam = p?.ipam;
    if (!ipam) return false;
    if (typeof ipam.subnet === "string" && ipam.subnet) return true;
    return Array.isArray(ipam.ranges) &&
      ipam.ranges.some((r: Json) => Array.isArray(r) && r.some((x: Json) => x?.subnet));
  });
}

/**
 * The configuration the lab writes when no agent provides one: the same shape kube-router's router
 * writes (bridge kube-bridge as default gateway with hairpin mode, host-local over the node's pod CIDR).
 */
export function labNetworkConfig(podCidrs: string[]): NetworkList {
  return {
    cniVersion: "0.3.0",
    name: "mynet",
    plugins: [{
      name: "kubernetes",
      type: "bridge",
      bridge: "kube-bridge",
      isDefaultGateway: true,
      hairpinMode: true,
      ipam: { type: "host-local", ranges: podCidrs.map((c) => [{ subnet: c }]) },
    }],
  };
}

export interface CniRuntime {
  /** Network namespace the plugins run in (the node). */
  nodeNetns: string;
  /** Path of the pod's network namespace, e.g. /var/run/netns/krl-pod-… */
  podNetnsPath: string;
  containerId: string;
  ifname: string;
  /** Where host-local keeps its leases when the conf does not say. */
  ipamDataDir: string;
  /** hostPort mappings for plugins with capabilities.portMappings (portmap). */
  portMappings?: Array<{ hostPort: number; containerPort: number; protocol: string }>;
}

function pluginConf(list: NetworkList, plugin: Json, rt: CniRuntime, prevResult: Json | undefined): Json {
  const conf: Json = { ...plugin, cniVersion: list.cniVersion, name: list.name };
  if (conf.ipam?.type === "host-local" && !conf.ipam.dataDir) {
    conf.ipam = { ...conf.ipam, dataDir: rt.ipamDataDir };
  }
  if (conf.capabilities?.portMappings && rt.portMappings?.length) {
    conf.runtimeConfig = { ...(conf.runtimeConfig ?? {}), portMappings: rt.portMappings };
  }
  if (prevResult !== undefined) conf.prevResult = prevResult;
  return conf;
}

async function invoke(command: "ADD" | "DEL" | "CHECK", conf: Json, rt: CniRuntime): Promise<Json> {
  const type = String(conf.type);
  if (!/^[A-Za-z0-9_-]+$/.test(type)) throw new CniError(type, command, -1, "invalid plugin type");
  const res = await sh(["ip", "netns", "exec", rt.nodeNetns, `${CNI_BIN_DIR}/${type}`], {
    check: false,
    stdin: JSON.stringify(conf),
    env: {
      CNI_COMMAND: command,
      CNI_CONTAINERID: rt.containerId,
      CNI_NETNS: rt.podNetnsPath,
      CNI_IFNAME: rt.ifname,
      CNI_PATH: CNI_BIN_DIR,
    },
  });
  let out: Json = undefined;
  try {
    out = res.stdout.trim() ? JSON.parse(res.stdout) : undefined;
  } catch { /* not JSON */ }
  if (res.code !== 0) {
    const msg = out?.msg
      ? `${out.msg}${out.details ? `: ${out.details}` : ""}`
      : (res.stderr || res.stdout).trim();
    throw new CniError(type, command, Number(out?.code ?? res.code), msg);
  }
  return out;
}

/** CNI ADD through every plugin of `list`; returns the final result (interfaces, ips, routes). */
export async function cniAdd(list: NetworkList, rt: CniRuntime): Promise<Json> {
  let prev: Json | undefined;
  for (const p of list.plugins) prev = await invoke("ADD", pluginConf(list, p, rt, prev), rt);
  return prev;
}

/** CNI DEL through every plugin of `list` in reverse order; every plugin runs even if one fails. */
export async function cniDel(list: NetworkList, rt: CniRuntime, prevResult: Json | undefined): Promise<void> {
  let first: unknown;
  for (const p of [...list.plugins].reverse()) {
    try {
      await invoke("DEL", pluginConf(list, p, rt, prevResult), rt);
    } catch (e) {
      first ??= e;
    }
  }
  if (first) throw first;
}

/** The pod's IPv4 addresses (without prefix length) from a CNI result (0.3.0 and later). */
export function resultIPs(result: Json): string[] {
  const ips = (result?.ips ?? []) as Array<{ address?: string }>;
  return ips.map((i) => String(i.address ?? "").split("/")[0]!).filter((a) => a !== "");
}
