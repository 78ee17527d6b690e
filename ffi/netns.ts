/**
 * Network namespaces by path (`/run/netns/NAME`, `/proc/PID/ns/net`): entering one for a moment to open a
 * socket or write a sysctl there, telling namespaces apart, listing the ones on this machine, and the
 * RTM_GETNSID codec that asks the kernel which id (netnsid) a namespace has as seen from another.
 *
 * setns(2) moves only the calling thread, and Deno runs async work on other threads: whatever must happen
 * inside goes through `inNetns` as a synchronous function, run on the main thread between two setns
 * calls. A netlink socket opened there stays in that namespace for its whole life, so the async API of
 * `Rtnetlink({ netns })` works on it afterwards from anywhere (`ip -n NS …` works the same way).
 */
import { check, CLONE_NEWNET, cstring, libc, O_CLOEXEC, O_RDONLY } from "./libc.ts";
import { attrMap, type NlMsg, type NlWriter, read } from "./netlink.ts";
import { ErrnoError } from "./errors.ts";
import { type Sysctl, SysctlError, sysctlPath } from "./sysctl.ts";

/** rtnetlink message types for namespace ids. */
export const RTM_NEWNSID = 88;
export const RTM_GETNSID = 90;
const NETNSA_NSID = 1;
const NETNSA_FD = 3;

/** Where `ip netns add` keeps named namespaces (CNI runtimes use it too: containerd's cni-…). */
export const NETNS_RUN_DIR = "/run/netns";

/** Opens a namespace file read-only; the caller closes the fd. */
export function openNetns(path: string): number {
  return check(libc().open(cstring(path), O_RDONLY | O_CLOEXEC), `open(${path})`);
}

/** Closes an fd from `openNetns`. */
export function closeFd(fd: number): void {
  if (fd >= 0) libc().close(fd);
}

/**
 * What makes a namespace itself: "dev:inode" of its nsfs file (the same for every path that names it,
 * as `ip netns identify` compares them); undefined when the path names nothing (the process is gone).
 */
export function netnsIdentity(path: string): string | undefined {
  try {
    const st = Deno.statSync(path);
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

/** The identity of the namespace the calling thread is in. */
export function currentNetnsIdentity(): string | undefined {
  return netnsIdentity("/proc/thread-self/ns/net");
}

/**
 * Runs `fn` with the calling thread inside the namespace at `path`, then returns it to its own. `fn` must
 * be synchronous: anything it starts asynchronously would run elsewhere. If the thread cannot get back,
 * that is an error no caller can recover from, and it says so.
 */
export function inNetns<T>(path: string, fn: () => T): T {
  const c = libc();
  const home = openNetns("/proc/thread-self/ns/net");
  let target = -1;
  try {
    target = openNetns(path);
    check(c.setns(target, CLONE_NEWNET), `setns(${path})`);
    try {
      const out = fn();
      if (out instanceof Promise) {
        out.catch(() => {});
        throw new TypeError("inNetns runs synchronous functions only");
      }
      return out;
    } finally {
      if (c.setns(home, CLONE_NEWNET) < 0) {
        // deno-lint-ignore no-unsafe-finally
        throw new ErrnoError(
          1,
          "setns back to the agent's own network namespace failed: the main thread is lost",
        );
      }
    }
  } finally {
    closeFd(target);
    closeFd(home);
  }
}

/**
 * Every network namespace a path leads to on this machine, one path each: the named ones under
 * /run/netns first (the namespaces CNI runtimes and `ip netns add` make), then each process's
 * /proc/PID/ns/net. The caller's own namespace is left out. Equivalent to what `ip netns list-id` scans.
 */
export function listNetnsPaths(opts: { runDir?: string; proc?: string } = {}): string[] {
  const own = currentNetnsIdentity();
  const seen = new Set<string>(own ? [own] : []);
  const out: string[] = [];
  const consider = (path: string) => {
    const id = netnsIdentity(path);
    if (id === undefined || seen.has(id)) return;
    seen.add(id);
    out.push(path);
  };
  const runDir = opts.runDir ?? NETNS_RUN_DIR;
  try {
    const names = [...Deno.readDirSync(runDir)].map((e) => e.name).sort();
    for (const n of names) consider(`${runDir}/${n}`);
  } catch { /* no named namespaces */ }
  const proc = opts.proc ?? "/proc";
  try {
    const pids = [...Deno.readDirSync(proc)].map((e) => e.name).filter((n) => /^\d+$/.test(n));
    pids.sort((a, b) => Number(a) - Number(b));
    for (const p of pids) consider(`${proc}/${p}/ns/net`);
  } catch { /* no /proc */ }
  return out;
}

/** Body of RTM_GETNSID for a namespace fd (`ip netns list-id` asks the same for each namespace). */
export function encodeNsidGet(w: NlWriter, fd: number): void {
  // struct rtgenmsg (family AF_UNSPEC), padded to 4 bytes, then NETNSA_FD.
  w.u8(0).u8(0).u16(0);
  w.attrU32(NETNSA_FD, fd);
}

/** The id in RTM_NEWNSID; undefined when the kernel has assigned none (NETNSA_NSID_NOT_ASSIGNED, -1). */
export function decodeNsid(m: NlMsg): number | undefined {
  const a = attrMap(m.payload.subarray(4));
  const v = a.get(NETNSA_NSID);
  if (!v) return undefined;
  const id = read.i32(v, "NETNSA_NSID");
  return id < 0 ? undefined : id;
}

/**
 * sysctls of another network namespace: each read and write enters it (`inNetns`) and uses the
 * synchronous file calls, since /proc/sys/net shows the namespace of the thread that opens it.
 */
export class NetnsSysctl implements Sysctl {
  constructor(readonly netns: string, readonly root = "/proc/sys") {}

  get(key: string): Promise<string> {
    try {
      return Promise.resolve(
        inNetns(this.netns, () => Deno.readTextFileSync(sysctlPath(key, this.root))).trim(),
      );
    } catch (cause) {
      return Promise.reject(
        new SysctlError(key, cause instanceof Error ? cause.message : String(cause), { cause }),
      );
    }
  }

  set(key: string, value: string | number): Promise<void> {
    try {
      inNetns(
        this.netns,
        () => Deno.writeTextFileSync(sysctlPath(key, this.root), `${value}\n`, { create: false }),
      );
      return Promise.resolve();
    } catch (cause) {
      return Promise.reject(
        new SysctlError(key, cause instanceof Error ? cause.message : String(cause), { cause }),
      );
    }
  }
}
