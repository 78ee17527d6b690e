/**
 * Throwaway network namespaces for integration tests. Every namespace a test makes is named
 * `krt-<tag>-<random>` and removed in `finally`, even when the test fails; `sweepStaleNamespaces()` removes
 * any left by a killed run. Tests that need root or a tool call `requireRoot()`/`requireTool()` first,
 * which gives Deno.test's `ignore` with a stated reason instead of passing silently.
 */
import { sh, type ShOptions, type ShResult } from "../../lab/_sh.ts";

export const isRoot = Deno.uid?.() === 0;

/** Returns the reason a test cannot run, or undefined if it can. */
export function skipReason(
  opts: { root?: boolean; tools?: string[]; files?: string[] } = {},
): string | undefined {
  if (opts.root !== false && !isRoot) return "needs root (network namespaces)";
  for (const t of opts.tools ?? []) if (!which(t)) return `needs ${t} (install it with apt-get)`;
  for (const f of opts.files ?? []) {
    try {
      Deno.statSync(f);
    } catch {
      return `needs ${f}`;
    }
  }
  return undefined;
}

/** Deno.test options that skip with a visible reason when root or tools are missing. */
export function needs(name: string, opts: { root?: boolean; tools?: string[]; files?: string[] } = {}): {
  name: string;
  ignore: boolean;
} {
  const reason = skipReason(opts);
  if (reason) {
    console.error(`SKIP ${name}: ${reason}`);
    return { name: `${name} [skipped: ${reason}]`, ignore: true };
  }
  return { name, ignore: false };
}

export function which(tool: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/sbin:/usr/bin:/sbin:/bin").split(":")) {
    try {
      const p = `${dir}/${tool}`;
      if (Deno.statSync(p).isFile) return p;
    } catch { /* not here */ }
  }
  return undefined;
}

/** What `run` returns: exit code and output. */
export type RunResult = ShResult;

/**
 * Runs a command and returns its output; throws CommandError (exit code and output) if `check` (the
 * default) and it fails, and reports a command that is not installed as exit code 127 naming its Debian
 * package. This is the lab's runner (lab/_sh.ts): tests may import the lab, the lab never imports tests/,
 * so the one copy lives there.
 */
export const run: (cmd: string[], opts?: ShOptions) => Promise<RunResult> = sh;

/** A network namespace owned by one test. */
export class NetNs {
  private constructor(readonly name: string) {}

  static async create(tag: string): Promise<NetNs> {
    const name = `krt-${tag}-${crypto.randomUUID().slice(0, 8)}`;
    await run(["ip", "netns", "add", name]);
    const ns = new NetNs(name);
    await ns.exec(["ip", "link", "set", "lo", "up"]);
    return ns;
  }

  /** Runs a command inside this namespace. */
  exec(cmd: string[], opts: { check?: boolean; stdin?: string } = {}): Promise<RunResult> {
    return run(["ip", "netns", "exec", this.name, ...cmd], opts);
  }

  /** Starts a long-running process inside this namespace. */
  spawn(
    cmd: string[],
    opts: {
      env?: Record<string, string>;
      stdout?: "piped" | "null" | "inherit";
      stderr?: "piped" | "null" | "inherit";
    } = {},
  ): Deno.ChildProcess {
    return new Deno.Command("ip", {
      args: ["netns", "exec", this.name, ...cmd],
      stdin: "null",
      stdout: opts.stdout ?? "null",
      stderr: opts.stderr ?? "null",
      ...(opts.env ? { env: opts.env } : {}),
    }).spawn();
  }

  /** Kills every process still in the namespace, then deletes it. Idempotent. */
  async remove(): Promise<void> {
    const pids = await run(["ip", "netns", "pids", this.name], { check: false });
    for (const pid of pids.stdout.split(/\s+/).filter(Boolean)) {
      try {
        Deno.kill(Number(pid), "SIGKILL");
      } catch { /* already gone */ }
    }
    await run(["ip", "netns", "del", this.name], { check: false });
  }
}

/**
 * Runs `fn` with fresh namespaces and removes them afterwards whatever happens.
 * Example: `await withNetns(["a", "b"], async (a, b) => { ... })`.
 */
export async function withNetns<T>(tags: string[], fn: (...ns: NetNs[]) => Promise<T>): Promise<T> {
  const made: NetNs[] = [];
  try {
    for (const t of tags) made.push(await NetNs.create(t));
    return await fn(...made);
  } finally {
    for (const ns of made.reverse()) await ns.remove();
  }
}

/** Connects two namespaces with a veth pair and addresses (CIDR notation), bringing both ends up. */
export async function linkVeth(
  a: NetNs,
  aIf: string,
  aAddr: string | undefined,
  b: NetNs,
  bIf: string,
  bAddr: string | undefined,
): Promise<void> {
  const tmp = `krtv${crypto.randomUUID().slice(0, 6)}`;
  // Create inside `a` directly, so no interface ever appears in the host's namespace.
  await a.exec(["ip", "link", "add", aIf, "type", "veth", "peer", "name", tmp]);
  await a.exec(["ip", "link", "set", tmp, "netns", b.name]);
  await b.exec(["ip", "link", "set", tmp, "name", bIf]);
  if (aAddr) await a.exec(["ip", "addr", "add", aAddr, "dev", aIf]);
  if (bAddr) await b.exec(["ip", "addr", "add", bAddr, "dev", bIf]);
  await a.exec(["ip", "link", "set", aIf, "up"]);
  await b.exec(["ip", "link", "set", bIf, "up"]);
}

/** Removes namespaces named krt-* left by an earlier, killed run. */
export async function sweepStaleNamespaces(): Promise<void> {
  const res = await run(["ip", "netns", "list"], { check: false });
  for (const line of res.stdout.split("\n")) {
    const name = line.split(" ")[0];
    if (name?.startsWith("krt-")) await run(["ip", "netns", "del", name], { check: false });
  }
}
