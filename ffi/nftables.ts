/**
 * nftables through libnftables (`libnftables.so.1`, Debian package libnftables1). Changes are typed
 * transactions (`NftTransaction`, ./nft_transaction.ts) rendered to nft's own text syntax: one `run(tx)`
 * is one buffer is one atomic kernel transaction, either every operation takes effect or none does.
 * Reading (`list`) uses libnftables' JSON output, which names objects however they are called. The library path can be overridden with KUBE_ROUTER_LIBNFTABLES. Calls run on a worker
 * thread (the event loop keeps running during a large load) and are serialised per context.
 */
import { LibraryLoadError, NftError } from "./errors.ts";
import { cstring, mallocTrimAsync } from "./libc.ts";
import { errorLocations, type NftElementText, type NftTransaction } from "./nft_transaction.ts";
import { type ElementBatch, encodeElements, NftUnencodable, sendElements } from "./nft_elements.ts";
import { NETLINK_NETFILTER, NlWriter } from "./netlink.ts";
import { NetlinkSocket } from "./netlink_socket.ts";
import { NftNetlinkReader, type NftSetInfo, type NftTableLayout } from "./nft_netlink.ts";

/** libnftables symbols (nftables/libnftables.h). */
export const NFT_SYMBOLS = {
  /** struct nft_ctx *nft_ctx_new(uint32_t flags); */
  nft_ctx_new: { parameters: ["u32"], result: "pointer" },
  /** void nft_ctx_free(struct nft_ctx *ctx); */
  nft_ctx_free: { parameters: ["pointer"], result: "void" },
  /** unsigned int nft_ctx_output_get_flags(struct nft_ctx *ctx); */
  nft_ctx_output_get_flags: { parameters: ["pointer"], result: "u32" },
  /** void nft_ctx_output_set_flags(struct nft_ctx *ctx, unsigned int flags); */
  nft_ctx_output_set_flags: { parameters: ["pointer", "u32"], result: "void" },
  /** int nft_ctx_buffer_output(struct nft_ctx *ctx); */
  nft_ctx_buffer_output: { parameters: ["pointer"], result: "i32" },
  /** int nft_ctx_buffer_error(struct nft_ctx *ctx); */
  nft_ctx_buffer_error: { parameters: ["pointer"], result: "i32" },
  /** const char *nft_ctx_get_output_buffer(struct nft_ctx *ctx); */
  nft_ctx_get_output_buffer: { parameters: ["pointer"], result: "pointer" },
  /** const char *nft_ctx_get_error_buffer(struct nft_ctx *ctx); */
  nft_ctx_get_error_buffer: { parameters: ["pointer"], result: "pointer" },
  /** void nft_ctx_set_dry_run(struct nft_ctx *ctx, bool dry); */
  nft_ctx_set_dry_run: { parameters: ["pointer", "bool"], result: "void" },
  /** int nft_run_cmd_from_buffer(struct nft_ctx *nft, const char *buf);  on a worker thread */
  nft_run_cmd_from_buffer: { parameters: ["pointer", "buffer"], result: "i32", nonblocking: true },
  /** int nft_run_cmd_from_filename(struct nft_ctx *nft, const char *filename);  on a worker thread */
  nft_run_cmd_from_filename: { parameters: ["pointer", "buffer"], result: "i32", nonblocking: true },
} as const satisfies Deno.ForeignLibraryInterface;

/** NFT_CTX_OUTPUT_* flags. JSON (16) must be set for JSON *input* to be parsed too. */
export const NftOutput = { handle: 1 << 3, json: 1 << 4, echo: 1 << 5, terse: 1 << 11 } as const;

/** A listed object, e.g. `{map: {family, table, name, type, map, elem, handle}}`. */
export type NftObject = Record<string, unknown>;

/** What to list. */
export type NftListTarget =
  | { ruleset: true }
  | { table: { family: string; name: string } }
  | { chain: { family: string; table: string; name: string } }
  | { set: { family: string; table: string; name: string } }
  | { map: { family: string; table: string; name: string } };

/** Options for `list`. */
export interface NftListOptions {
  /** Omit set and map elements (`nft -t`): cheap structure listings of tables with huge maps. */
  terse?: boolean;
  /**
   * List in a child `nft -j` instead of libnftables in this process: libnftables' cache and JSON of a map
   * with 100,000 elements cost this process hundreds of MiB of heap it may never give back (Nftables only;
   * the fake ignores it).
   */
  outOfProcess?: boolean;
}

/** How `NftRuleset.run` applies a transaction. */
export interface NftRunOptions {
  /**
   * Run it in a child `nft -f -` whatever its size (Nftables; the fake ignores it): for transactions that
   * make libnftables cache every element of a large table.
   */
  outOfProcess?: boolean;
  /**
   * Let go of atomicity for speed: runs of element operations given as text (addElement, deleteElement)
   * are written straight to the kernel over netlink (nft_elements.ts), each run one kernel transaction,
   * and the operations between them go to nft as transactions of their own, all in order. For loads that
   * are cut into chunks anyway (a full sync). Elements of sets netlink cannot write as nft would
   * (intervals, other types) go to nft. The fake applies the transaction as usual.
   */
  elementsOverNetlink?: boolean;
}

/**
 * The nftables operations the agent needs. Implemented by `Nftables` (libnftables, the kernel of the
 * current namespace) and `FakeNftables` (in memory).
 */
export interface NftRuleset {
  /**
   * Applies a typed transaction atomically: every operation takes effect or none does. Equivalent to:
   * `nft -f FILE` with `tx.render()`. Throws NftError whose `operations` name the failing operations.
   * `outOfProcess` runs it in a child `nft -f -` whatever its size (Nftables; the fake ignores it): for
   * transactions that make libnftables cache every element of a large table.
   */
  run(tx: NftTransaction, opts?: NftRunOptions): Promise<void>;
  /** Lists objects (without the metainfo entry). Equivalent to: `nft -j list table ip NAME`. */
  list(target: NftListTarget, opts?: NftListOptions): Promise<NftObject[]>;
  /**
   * The table's chain names and its sets and maps (without rules or elements), or undefined if there is
   * no such table. Like `nft -t list table`, but nothing of the elements is fetched.
   */
  listLayout(table: { family: string; name: string }): Promise<NftTableLayout | undefined>;
  /**
   * Streams the elements of one set or map of `listLayout`'s answer: `each(key, value)` per element in nft's
   * text form ("10.96.0.1 . tcp . 80", value "goto pick_v4_tcp_rr_2" or "10.1.2.5 . 8080"; "" for a set),
   * without ever holding the whole listing. `restart()` when the dump was interrupted by a change and
   * starts over. A missing table or set lists nothing. Throws NftUndecodable for sets whose types cannot
   * be printed so (interval sets among them): list those with `list`.
   */
  listElements(
    table: { family: string; name: string },
    set: NftSetInfo,
    each: (key: string, value: string) => void,
    restart?: () => void,
  ): Promise<void>;
  /** Releases the context. Idempotent. */
  close(): void;
}

/** Renders a list target as an nft command line. */
export function listCommand(t: NftListTarget): string {
  if ("ruleset" in t) return "list ruleset";
  if ("table" in t) return `list table ${t.table.family} ${t.table.name}`;
  if ("chain" in t) return `list chain ${t.chain.family} ${t.chain.table} ${t.chain.name}`;
  if ("set" in t) return `list set ${t.set.family} ${t.set.table} ${t.set.name}`;
  return `list map ${t.map.family} ${t.map.table} ${t.map.name}`;
}

/** A list target as the JSON `list` command's object. */
export function listJson(t: NftListTarget): Record<string, unknown> {
  return "ruleset" in t ? { ruleset: null } : t;
}

/** Path of libnftables: KUBE_ROUTER_LIBNFTABLES, else the soname. */
export function libnftablesPath(): string {
  return Deno.env.get("KUBE_ROUTER_LIBNFTABLES") || "libnftables.so.1";
}

let lib: Deno.DynamicLibrary<typeof NFT_SYMBOLS> | undefined;

/** Opens libnftables once. A missing library says which Debian package provides it. */
export function loadLibnftables(): Deno.DynamicLibrary<typeof NFT_SYMBOLS>["symbols"] {
  if (lib) return lib.symbols;
  const path = libnftablesPath();
  try {
    lib = Deno.dlopen(path, NFT_SYMBOLS);
  } catch (cause) {
    throw new LibraryLoadError(
      `cannot load libnftables from ${path}: install the Debian package libnftables1 ` +
        `(apt-get install libnftables1) or point KUBE_ROUTER_LIBNFTABLES at the library`,
      path,
      { cause },
    );
  }
  return lib.symbols;
}

/** Inputs larger than this are followed by malloc_trim(0), so a huge load does not keep its heap. */
const TRIM_ABOVE_BYTES = 1 << 20;

/** An nftables context over libnftables. */
export class Nftables implements NftRuleset {
  #ctx: Deno.PointerValue;
  #queue: Promise<unknown> = Promise.resolve();
  #sym: Deno.DynamicLibrary<typeof NFT_SYMBOLS>["symbols"];

  #trimAbove: number;
  #trimming: Promise<void> = Promise.resolve();
  #outOfProcessAbove: number;
  /**
   * Whether the nft binary can be started. Out-of-process work only keeps large loads off the agent's heap;
   * on a node with libnftables but without the `nft` binary it is done in process instead of failing.
   */
  #childUsable = true;

  /**
   * `trimAboveBytes`: inputs larger than this are followed by malloc_trim(0) (default 1 MiB), so a huge
   * load does not keep its heap; Infinity disables it. `outOfProcessAboveBytes`: transactions whose text
   * is larger than this run in a child `nft -f -` (KUBE_ROUTER_NFT, default `nft`) so the parse never grows the
   * agent at all (default Infinity: always in process).
   */
  constructor(opts: { trimAboveBytes?: number; outOfProcessAboveBytes?: number } = {}) {
    this.#trimAbove = opts.trimAboveBytes ?? TRIM_ABOVE_BYTES;
    this.#outOfProcessAbove = opts.outOfProcessAboveBytes ?? Infinity;
    this.#sym = loadLibnftables();
    const ctx = this.#sym.nft_ctx_new(0);
    if (ctx === null) throw new NftError(-1, "nft_ctx_new failed");
    this.#ctx = ctx;
    this.#sym.nft_ctx_buffer_output(ctx);
    this.#sym.nft_ctx_buffer_error(ctx);
  }

  /**
   * Runs one nft buffer (JSON when `json`, else nft's own syntax) and returns its output. All commands
   * in the buffer form one transaction. Throws NftError with nft's message.
   */
  runBuffer(
    buffer: string,
    opts: { json?: boolean; dryRun?: boolean; terse?: boolean } = {},
  ): Promise<string> {
    const next = this.#queue.then(() => this.#runNow(buffer, opts));
    this.#queue = next.catch(() => undefined);
    return next;
  }

  async #runNow(
    buffer: string,
    opts: { json?: boolean; dryRun?: boolean; terse?: boolean },
  ): Promise<string> {
    const ctx = this.#ctx;
    if (ctx === null) throw new NftError(-1, "nftables context is closed");
    const s = this.#sym;
    s.nft_ctx_output_set_flags(
      ctx,
      (opts.json === false ? 0 : NftOutput.json) | (opts.terse ? NftOutput.terse : 0),
    );
    s.nft_ctx_set_dry_run(ctx, opts.dryRun ?? false);
    const input = cstring(buffer);
    const rc = await s.nft_run_cmd_from_buffer(ctx, input);
    const outP = s.nft_ctx_get_output_buffer(ctx);
    const errP = s.nft_ctx_get_error_buffer(ctx);
    const out = outP === null ? "" : Deno.UnsafePointerView.getCString(outP);
    const err = errP === null ? "" : Deno.UnsafePointerView.getCString(errP);
    // Off the caller's path and off the event loop: the next call may already run while this trims.
    if (input.length > this.#trimAbove) this.#trimming = mallocTrimAsync();
    if (rc !== 0) throw new NftError(rc, err);
    return out;
  }

  /** Equivalent to: `nft -f FILE` with nft's own syntax; atomic. */
  async applyText(script: string): Promise<void> {
    this.#setCache.clear();
    await this.runBuffer(script, { json: false });
  }

  /**
   * Applies `tx` as one `nft -f` buffer. On failure, the same text is checked again from a file (dry run:
   * the kernel sees the batch and aborts it), because only for file input does nft say which line and
   * columns failed; those name the failing operations (`NftError.operations`). The fast path stays a
   * plain buffer, without a file.
   */
  async run(tx: NftTransaction, opts: NftRunOptions = {}): Promise<void> {
    if (tx.size === 0) return;
    if (opts.elementsOverNetlink) return await this.#runSplit(tx, opts.outOfProcess ?? false);
    const segments = tx.segments();
    const only = segments.length === 1 ? segments[0]! : undefined;
    if (only && "elements" in only) {
      // Element operations only: one nfnetlink batch is the same atomic transaction nft would send.
      return await this.#writeElements(tx, only, opts.outOfProcess ?? false);
    }
    await this.#runText(tx, opts.outOfProcess ?? false);
  }

  /** `run` through nft: libnftables in process, or a child `nft -f -`. */
  async #runText(tx: NftTransaction, outOfProcess: boolean): Promise<void> {
    // It may declare or delete sets.
    this.#setCache.clear();
    const text = tx.render();
    try {
      if ((outOfProcess || text.length > this.#outOfProcessAbove) && this.#childUsable) {
        const next = this.#queue.then(() => applyInChild(text));
        this.#queue = next.catch(() => undefined);
        try {
          await next;
        } catch (e) {
          if (!(e instanceof NftBinaryMissing)) throw e;
          this.#childUsable = false;
          await this.applyText(text);
        }
      } else await this.applyText(text);
    } catch (e) {
      if (!(e instanceof NftError)) throw e;
      // A child `nft -f -` already names line:column (its input is /dev/stdin, a file).
      const located = errorLocations(e.nftMessage).length
        ? e.nftMessage
        : await this.#locate(text).catch(() => "");
      throw new NftError(e.rc, located || e.nftMessage, {
        operations: tx.operationsAt(errorLocations(located)),
        cause: e,
      });
    }
  }

  /** `run` with elementsOverNetlink: each segment in order, errors naming operations of `tx`. */
  async #runSplit(tx: NftTransaction, outOfProcess: boolean): Promise<void> {
    for (const seg of tx.segments()) {
      try {
        if ("tx" in seg) await this.#runText(seg.tx, outOfProcess);
        else await this.#writeElements(tx, seg, outOfProcess);
      } catch (e) {
        if (!(e instanceof NftError)) throw e;
        throw new NftError(e.rc, e.nftMessage, {
          operations: e.operations.map((o) => o + seg.from),
          cause: e,
        });
      }
    }
  }

  /**
   * One run of element operations of `tx` (`run.from` on) as one netlink batch; through nft if netlink
   * cannot write one of them.
   */
  async #writeElements(
    tx: NftTransaction,
    run: { from: number; elements: readonly NftElementText[] },
    outOfProcess: boolean,
  ): Promise<void> {
    const ops = run.elements;
    const sock = this.#writerSocket();
    const describe = (i: number) => {
      const op = ops[i]!;
      return `${op.verb} element ${tx.family} ${tx.table} ${op.set} { ${op.key}${
        op.verb !== "delete" && op.value !== undefined ? ` : ${op.value}` : ""
      } }`;
    };
    // Encoded in the queue: the writer's buffer is reused by every batch.
    const next = this.#queue.then(async () => {
      let batch: ElementBatch | undefined;
      for (let fresh = false; !batch; fresh = true) {
        try {
          const sets = this.#setsOf(tx.family, tx.table, fresh);
          batch = encodeElements(
            tx.family,
            tx.table,
            sets,
            ops,
            sock.reserveSeq(ops.length + 2),
            this.#writerBuf,
          );
        } catch (e) {
          if (!(e instanceof NftUnencodable)) throw e;
          // A set this context has not seen yet (declared by someone else): read the sets once more.
          if (fresh) return false;
        }
      }
      sock.reserveSendBuffer(batch.bytes.length);
      await sendElements(sock, batch, describe);
      return true;
    });
    this.#queue = next.catch(() => undefined);
    if (await next) {
      this.#elementRuns.netlink++;
      return;
    }
    this.#elementRuns.nft++;
    // An element netlink cannot write as nft would: the whole run through nft.
    await this.#runText(tx.slice(run.from, run.from + ops.length), outOfProcess);
  }

  /**
   * The sets of each table elements were written to, as the kernel described them: read again after any
   * transaction that went through nft (it may have declared or deleted sets), and when an element names
   * a set not in it.
   */
  #setCache = new Map<string, Map<string, NftSetInfo>>();
  #setsOf(family: string, table: string, fresh: boolean): Map<string, NftSetInfo> {
    const key = `${family} ${table}`;
    let sets = fresh ? undefined : this.#setCache.get(key);
    if (!sets) {
      sets = new Map(this.#reader().sets(family, table).map((s) => [s.name, s]));
      this.#setCache.set(key, sets);
    }
    return sets;
  }

  #elementRuns = { netlink: 0, nft: 0 };
  /**
   * Runs of element operations `run` was given with elementsOverNetlink: written over netlink, or given
   * to nft because netlink could not write one of their elements as nft would.
   */
  get elementRuns(): { readonly netlink: number; readonly nft: number } {
    return { ...this.#elementRuns };
  }

  #writer: NetlinkSocket | undefined;
  #writerBuf = new NlWriter(64 * 1024);
  #writerSocket(): NetlinkSocket {
    if (this.#ctx === null) throw new NftError(-1, "nftables context is closed");
    return this.#writer ??= NetlinkSocket.open(NETLINK_NETFILTER, { rcvbuf: 1 << 20 });
  }

  /** nft's error text for `text` read from a file in dry-run mode ("" if it now passes). */
  async #locate(text: string): Promise<string> {
    const file = await Deno.makeTempFile({ prefix: "krt-nft-", suffix: ".nft" });
    try {
      await Deno.writeTextFile(file, text);
      const next = this.#queue.then(async () => {
        const ctx = this.#ctx;
        if (ctx === null) throw new NftError(-1, "nftables context is closed");
        const s = this.#sym;
        s.nft_ctx_output_set_flags(ctx, 0);
        s.nft_ctx_set_dry_run(ctx, true);
        const rc = await s.nft_run_cmd_from_filename(ctx, cstring(file));
        const errP = s.nft_ctx_get_error_buffer(ctx);
        s.nft_ctx_set_dry_run(ctx, false);
        return rc === 0 || errP === null ? "" : Deno.UnsafePointerView.getCString(errP);
      });
      this.#queue = next.catch(() => undefined);
      return await next;
    } finally {
      await Deno.remove(file).catch(() => {});
    }
  }

  /** `nft list ruleset` (or one table) in nft's text form, for logs and test assertions. */
  async dumpText(table?: { family: string; name: string }): Promise<string> {
    return await this.runBuffer(table ? `list table ${table.family} ${table.name}` : "list ruleset", {
      json: false,
    });
  }

  /**
   * Checks a transaction without committing it: the kernel sees the batch and aborts it. Equivalent to:
   * `nft -c -f FILE`.
   */
  async check(tx: NftTransaction): Promise<void> {
    if (tx.size === 0) return;
    await this.runBuffer(tx.render(), { json: false, dryRun: true });
  }

  /** Equivalent to: `nft -j list …`; the metainfo entry is dropped. */
  async list(target: NftListTarget, opts: NftListOptions = {}): Promise<NftObject[]> {
    // The JSON form, because nft's text grammar cannot name objects called like keywords ("ct", "missing").
    const request = JSON.stringify({ nftables: [{ list: listJson(target) }] });
    if (opts.outOfProcess && this.#childUsable) {
      const next = this.#queue.then(() => listInChild(request, opts.terse ?? false));
      this.#queue = next.catch(() => undefined);
      try {
        return parseListOutput(await next);
      } catch (e) {
        if (!(e instanceof NftBinaryMissing)) throw e;
        this.#childUsable = false;
      }
    }
    const out = await this.runBuffer(request, { ...(opts.terse ? { terse: true } : {}) });
    return parseListOutput(out);
  }

  /**
   * Read over netlink (ffi/nft_netlink.ts), not through libnftables: its `-t` listing of a table still
   * fetched every element (240 MiB and two seconds at 170,000 elements in nft 1.0.6).
   */
  listLayout(table: { family: string; name: string }): Promise<NftTableLayout | undefined> {
    try {
      return Promise.resolve(this.#reader().layout(table.family, table.name));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** The kernel's element dump decoded as it arrives (ffi/nft_netlink.ts). */
  listElements(
    table: { family: string; name: string },
    set: NftSetInfo,
    each: (key: string, value: string) => void,
    restart?: () => void,
  ): Promise<void> {
    return this.#reader().elements(table.family, table.name, set, each, restart);
  }

  #netlink: NftNetlinkReader | undefined;
  #reader(): NftNetlinkReader {
    if (this.#ctx === null) throw new NftError(-1, "nftables context is closed");
    return this.#netlink ??= new NftNetlinkReader();
  }

  /** Resolves when the heap trim that follows a large load has finished (for measurements). */
  trimmed(): Promise<void> {
    return this.#trimming;
  }

  /** Frees the context once pending calls finish. Idempotent. */
  close(): void {
    const ctx = this.#ctx;
    if (ctx === null) return;
    this.#ctx = null;
    this.#netlink?.close();
    this.#netlink = undefined;
    this.#writer?.close();
    this.#writer = undefined;
    this.#queue.finally(() => this.#sym.nft_ctx_free(ctx));
  }
}

/** The nft binary could not be started: the caller does the work in process instead. */
export class NftBinaryMissing extends NftError {
  constructor(cause: unknown) {
    super(-1, `cannot run ${nftBinary()} (Debian package nftables; or set KUBE_ROUTER_NFT)`, { cause });
  }
}

/** Path of the nft binary used for out-of-process loads: KUBE_ROUTER_NFT, else `nft` on PATH. */
export function nftBinary(): string {
  return Deno.env.get("KUBE_ROUTER_NFT") || "nft";
}

/** Runs one transaction's text in a child `nft -f -`, in this process's network namespace. */
async function applyInChild(text: string): Promise<void> {
  await runChild(["-f", "-"], text);
}

/** Runs one JSON list request in a child `nft -j [-t] -f -`; returns its JSON output. */
function listInChild(request: string, terse: boolean): Promise<string> {
  return runChild([...(terse ? ["-t"] : []), "-j", "-f", "-"], request);
}

/** Feeds `input` to a child nft with `args`; its stdout, or NftError with its stderr. */
async function runChild(args: string[], input: string): Promise<string> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(nftBinary(), { args, stdin: "piped", stdout: "piped", stderr: "piped" }).spawn();
  } catch (cause) {
    throw new NftBinaryMissing(cause);
  }
  const w = child.stdin.getWriter();
  try {
    await w.write(new TextEncoder().encode(input));
    await w.close();
  } catch { /* the child exited early; its stderr says why */ }
  const out = await child.output();
  if (!out.success) throw new NftError(out.code, new TextDecoder().decode(out.stderr));
  return new TextDecoder().decode(out.stdout);
}

/** Parses `nft -j list` output into objects, dropping metainfo. */
export function parseListOutput(out: string): NftObject[] {
  if (!out.trim()) return [];
  let doc: unknown;
  try {
    doc = JSON.parse(out);
  } catch (cause) {
    throw new NftError(0, `unparseable JSON output from nft: ${out.slice(0, 200)}`, { cause });
  }
  const items = (doc as { nftables?: unknown }).nftables;
  if (!Array.isArray(items)) throw new NftError(0, "nft output has no nftables array");
  return items.filter((o): o is NftObject => typeof o === "object" && o !== null && !("metainfo" in o));
}
