/**
 * Runs an exported function of a TypeScript module inside a network namespace, in a fresh
 * `ip netns exec NS deno run -A` process (setns through FFI would move only one thread), and returns its
 * JSON result. Used by the ffi integration tests so the code under test runs exactly as the agent will.
 *
 * As a script: `deno run -A _in_netns.ts MODULE_URL FUNCTION ARGS_JSON` prints the result after a marker.
 */
import type { NetNs } from "../../_support/netns.ts";

const MARKER = "@@KRT-RESULT@@";

/** The error a function raised inside the namespace, with its name, code and errno when it had them. */
export class RemoteError extends Error {
  constructor(
    message: string,
    readonly remoteName: string,
    readonly code: string | undefined,
    readonly stderr: string,
  ) {
    super(message);
    this.name = "RemoteError";
  }
}

/** Calls `fn(...args)` from `module` inside `ns` and returns its (JSON) result. */
export async function inNetns<T>(
  ns: NetNs,
  module: URL,
  fn: string,
  args: unknown[] = [],
  opts: { env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<T> {
  const child = new Deno.Command("ip", {
    args: [
      "netns",
      "exec",
      ns.name,
      Deno.execPath(),
      "run",
      "-A",
      import.meta.filename!,
      module.href,
      fn,
      JSON.stringify(args),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...(opts.env ? { env: opts.env } : {}),
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, opts.timeoutMs ?? 120_000);
  try {
    const out = await child.output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    const i = stdout.lastIndexOf(MARKER);
    if (i < 0) {
      throw new Error(
        `${fn} in ${ns.name} exited ${out.code} (signal ${out.signal}) without a result:\n${stderr}`,
      );
    }
    const res = JSON.parse(stdout.slice(i + MARKER.length)) as
      | { ok: true; value: T }
      | { ok: false; name: string; message: string; code?: string };
    if (!res.ok) throw new RemoteError(res.message, res.name, res.code, stderr);
    return res.value;
  } finally {
    clearTimeout(timer);
  }
}

if (import.meta.main) {
  const [mod, fn, argsJson] = Deno.args;
  let payload: unknown;
  try {
    const m = await import(mod!) as Record<string, (...a: unknown[]) => unknown>;
    const f = m[fn!];
    if (typeof f !== "function") throw new Error(`${mod} has no function ${fn}`);
    payload = { ok: true, value: (await f(...(JSON.parse(argsJson ?? "[]") as unknown[]))) ?? null };
  } catch (e) {
    const err = e as Error & { code?: string };
    payload = { ok: false, name: err?.name ?? "Error", message: String(err?.stack ?? err), code: err?.code };
  }
  await Deno.stdout.write(new TextEncoder().encode(`\n${MARKER}${JSON.stringify(payload)}\n`));
  Deno.exit(0);
}
