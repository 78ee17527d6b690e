/**
 * sysctl read/write through /proc/sys. Networking sysctls (net.*) are per network namespace: /proc/sys/net
 * shows the namespace of the process reading it, so an agent started with `ip netns exec NS` reads and
 * writes that namespace's values, never the host's.
 */

/** A sysctl could not be read or written. */
export class SysctlError extends Error {
  readonly key: string;
  constructor(key: string, message: string, options?: ErrorOptions) {
    super(`sysctl ${key}: ${message}`, options);
    this.name = "SysctlError";
    this.key = key;
  }
}

/**
 * Path under /proc/sys for a key. Dotted keys ("net.ipv4.ip_forward") map dots to slashes; a key written
 * with slashes ("net/ipv4/conf/eth0.100/rp_filter") is taken as is, for interface names with dots.
 */
export function sysctlPath(key: string, root = "/proc/sys"): string {
  if (key.includes("..") || key.startsWith("/") || key.length === 0) {
    throw new SysctlError(key, "invalid key");
  }
  const rel = key.includes("/") ? key : key.replaceAll(".", "/");
  return `${root}/${rel}`;
}

/** Reads and writes sysctls; `ProcSysctl` uses /proc/sys, `FakeSysctl` a map. */
export interface Sysctl {
  /** Equivalent to: `sysctl -n KEY` */
  get(key: string): Promise<string>;
  /** Equivalent to: `sysctl -w KEY=VALUE` */
  set(key: string, value: string | number): Promise<void>;
}

/** sysctls of the current network namespace through /proc/sys. */
export class ProcSysctl implements Sysctl {
  constructor(readonly root = "/proc/sys") {}

  async get(key: string): Promise<string> {
    try {
      return (await Deno.readTextFile(sysctlPath(key, this.root))).trim();
    } catch (cause) {
      throw new SysctlError(key, cause instanceof Error ? cause.message : String(cause), { cause });
    }
  }

  async set(key: string, value: string | number): Promise<void> {
    try {
      await Deno.writeTextFile(sysctlPath(key, this.root), `${value}\n`, { create: false });
    } catch (cause) {
      throw new SysctlError(key, cause instanceof Error ? cause.message : String(cause), { cause });
    }
  }
}

/** In-memory sysctls for unit tests; unknown keys fail like a missing /proc/sys file. */
export class FakeSysctl implements Sysctl {
  readonly values: Map<string, string>;
  constructor(initial: Record<string, string | number> = {}) {
    this.values = new Map(Object.entries(initial).map(([k, v]) => [k.replaceAll("/", "."), String(v)]));
  }
  get(key: string): Promise<string> {
    const v = this.values.get(key.replaceAll("/", "."));
    return v === undefined
      ? Promise.reject(new SysctlError(key, "No such file or directory"))
      : Promise.resolve(v);
  }
  set(key: string, value: string | number): Promise<void> {
    const k = key.replaceAll("/", ".");
    if (!this.values.has(k)) return Promise.reject(new SysctlError(key, "No such file or directory"));
    this.values.set(k, String(value));
    return Promise.resolve();
  }
}
