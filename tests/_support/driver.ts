/**
 * Runs a TypeScript "driver" inside a network namespace (`ip netns exec NS deno run -A driver.ts`) and
 * talks to it in JSON lines: the test sends `{id, method, params}`, the driver answers `{id, result}` or
 * `{id, error}`, and may push `{event, data}` lines at any time. Code that uses the kernel through FFI
 * must run inside the namespace this way: setns moves only one thread of a Deno process.
 *
 * A driver calls `serveDriver({method: async (params) => result, ...})`.
 */
import type { NetNs } from "./netns.ts";

type Handler = (params: unknown, emit: (event: string, data: unknown) => void) => unknown;

/** Driver side: serves requests from stdin until it closes. */
export async function serveDriver(handlers: Record<string, Handler>): Promise<void> {
  const enc = new TextEncoder();
  const write = (obj: unknown) => Deno.stdout.writeSync(enc.encode(JSON.stringify(obj) + "\n"));
  const emit = (event: string, data: unknown) => write({ event, data });
  write({ event: "ready", data: null });
  let buf = "";
  const dec = new TextDecoder();
  for await (const chunk of Deno.stdin.readable) {
    buf += dec.decode(chunk, { stream: true });
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!line.trim()) continue;
      const { id, method, params } = JSON.parse(line);
      const h = handlers[method];
      try {
        if (!h) throw new Error(`no method ${method}`);
        write({ id, result: (await h(params, emit)) ?? null });
      } catch (err) {
        write({ id, error: describe(err) });
      }
    }
  }
}

/** An error as one line for the test side, with its cause (the typed errors wrap the OS error). */
function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  return `${err.name}: ${err.message}${err.cause ? `: ${err.cause}` : ""}`;
}

/** Test side: a running driver process. */
export class Driver {
  #child: Deno.ChildProcess;
  #writer: WritableStreamDefaultWriter<Uint8Array>;
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #nextId = 1;
  #events: { event: string; data: unknown }[] = [];
  #eventWaiters: (() => void)[] = [];
  #stderr = "";
  readonly done: Promise<void>;

  private constructor(child: Deno.ChildProcess) {
    this.#child = child;
    this.#writer = child.stdin.getWriter();
    this.done = this.#readLoop();
    void (async () => {
      const dec = new TextDecoder();
      for await (const c of child.stderr) this.#stderr += dec.decode(c);
    })();
  }

  /** Starts `script` inside `ns` and waits for its ready line. */
  static async start(
    ns: NetNs,
    script: string | URL,
    args: string[] = [],
    readyMs = 30_000,
  ): Promise<Driver> {
    const path = script instanceof URL ? script.pathname : script;
    const child = new Deno.Command("ip", {
      args: ["netns", "exec", ns.name, Deno.execPath(), "run", "--allow-all", path, ...args],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const d = new Driver(child);
    await d.nextEvent("ready", readyMs);
    return d;
  }

  get stderr(): string {
    return this.#stderr;
  }

  get pid(): number {
    return this.#child.pid;
  }

  /** The data of the events named `name` received so far and not consumed by `nextEvent`, oldest first. */
  events<T = unknown>(name: string): T[] {
    return this.#events.filter((e) => e.event === name).map((e) => e.data as T);
  }

  async #readLoop(): Promise<void> {
    const dec = new TextDecoder();
    let buf = "";
    for await (const chunk of this.#child.stdout) {
      buf += dec.decode(chunk, { stream: true });
      let nl;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        let msg;
        try {
          msg = JSON.parse(line);
        } catch {
          continue; // not ours (a library printing to stdout)
        }
        if (msg.event !== undefined) {
          this.#events.push({ event: msg.event, data: msg.data });
          for (const w of this.#eventWaiters.splice(0)) w();
        } else if (msg.id !== undefined) {
          const p = this.#pending.get(msg.id);
          this.#pending.delete(msg.id);
          if (msg.error !== undefined) p?.reject(new Error(msg.error));
          else p?.resolve(msg.result);
        }
      }
    }
    for (const p of this.#pending.values()) p.reject(new Error(`driver exited; stderr: ${this.#stderr}`));
    this.#pending.clear();
    for (const w of this.#eventWaiters.splice(0)) w();
  }

  call<T = unknown>(method: string, params: unknown = null): Promise<T> {
    const id = this.#nextId++;
    const p = new Promise<T>((resolve, reject) =>
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject })
    );
    // A driver that is gone rejects the call (not an unhandled rejection of the write).
    this.#writer.write(new TextEncoder().encode(JSON.stringify({ id, method, params }) + "\n")).catch((e) => {
      this.#pending.get(id)?.reject(new Error(`driver gone; stderr: ${this.#stderr}`, { cause: e }));
      this.#pending.delete(id);
    });
    return p;
  }

  /** Waits for (and consumes) the next event with this name; rejects after `timeoutMs`. */
  async nextEvent<T = unknown>(name: string, timeoutMs = 10_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.#events.findIndex((e) => e.event === name);
      if (i >= 0) return this.#events.splice(i, 1)[0]!.data as T;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no "${name}" event within ${timeoutMs} ms; stderr: ${this.#stderr}`);
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((r) => {
        this.#eventWaiters.push(r);
        timer = setTimeout(r, left);
      });
      clearTimeout(timer);
    }
  }

  /** Kills the driver at once (SIGKILL: no cleanup, as on a crash) and waits for it to exit. */
  async kill(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch { /* gone */ }
    await this.#child.status;
    await this.done;
  }

  /** Closes stdin (the driver's loop ends) and waits; kills it if it lingers. */
  async close(): Promise<void> {
    try {
      await this.#writer.close();
    } catch { /* already closed */ }
    const t = setTimeout(() => {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 5000);
    await this.#child.status;
    clearTimeout(t);
    await this.done;
  }
}
