/** Running the commands the lab is made of (`ip`, CNI plugins, `kubectl`): one small helper. */

export interface ShResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A command the lab ran failed; `result` holds its exit code and output. */
export class CommandError extends Error {
  constructor(readonly cmd: string[], readonly result: ShResult) {
    super(`${cmd.join(" ")} exited ${result.code}: ${(result.stderr || result.stdout).trim().slice(0, 500)}`);
    this.name = "CommandError";
  }
}

export interface ShOptions {
  /** Throw CommandError on a non-zero exit (default true). */
  check?: boolean;
  stdin?: string;
  env?: Record<string, string>;
  cwd?: string;
}

/** The Debian packages of the commands the lab runs, for "not installed" messages. */
const PACKAGE_OF: Record<string, string> = {
  ip: "iproute2",
  nsenter: "util-linux",
  curl: "curl",
  nft: "nftables",
  conntrack: "conntrack",
  gobgpd: "gobgpd",
  gobgp: "gobgpd",
  bird: "bird2",
  birdc: "bird2",
  busybox: "busybox-static",
};

/**
 * Runs `cmd`, collecting its output. A command that is not installed is exit code 127 with a message naming
 * its package (thrown as CommandError when checked), never a raw spawn error: callers that clean up with
 * `check: false` keep going and the user sees what to install.
 */
export async function sh(cmd: string[], opts: ShOptions = {}): Promise<ShResult> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(cmd[0]!, {
      args: cmd.slice(1),
      stdin: opts.stdin !== undefined ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
      ...(opts.env ? { env: opts.env } : {}),
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
    }).spawn();
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
    const pkg = PACKAGE_OF[cmd[0]!];
    const res = {
      code: 127,
      stdout: "",
      stderr: `${cmd[0]}: command not found${pkg ? ` (install the Debian package ${pkg})` : ""}`,
    };
    if (opts.check ?? true) throw new CommandError(cmd, res);
    return res;
  }
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  const out = await child.output();
  const res = {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
  if ((opts.check ?? true) && res.code !== 0) throw new CommandError(cmd, res);
  return res;
}

/** Sleeps `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Is process `pid` alive (and not a zombie)? */
export function pidAlive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

/** Sends `sig` to `pid`, ignoring a process that is already gone. */
export function killPid(pid: number, sig: Deno.Signal = "SIGTERM"): void {
  try {
    Deno.kill(pid, sig);
  } catch { /* gone */ }
}

/** Thrown from a `waitFor` probe to stop waiting at once (e.g. the awaited process died). */
export class WaitAborted extends Error {
  constructor(readonly reason: Error) {
    super(reason.message, { cause: reason });
    this.name = "WaitAborted";
  }
}

/**
 * Polls `fn` every `everyMs` until it returns a value other than undefined/false, or throws on timeout.
 * A probe that throws WaitAborted ends the wait with its `reason`; other throws count as "not yet".
 */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs: number,
  everyMs = 200,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  while (true) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      if (e instanceof WaitAborted) throw e.reason;
      lastErr = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`, { cause: lastErr });
    }
    await sleep(everyMs);
  }
}

/**
 * Calls `say(status())` every `everyMs` until the returned function is called: progress for long waits
 * (`lab up` and the demo say what they are waiting for rather than going quiet).
 */
export function progress(say: (line: string) => void, status: (secs: number) => string, everyMs = 5000) {
  const t0 = Date.now();
  const id = setInterval(() => say(status(Math.round((Date.now() - t0) / 1000))), everyMs);
  Deno.unrefTimer(id);
  return () => clearInterval(id);
}
