/**
 * `FakeNftables`: an in-memory `NftRuleset` that applies typed transactions (`run`) structurally, with
 * nft's transaction semantics: a failing operation undoes the whole transaction, and errors carry nft's
 * own message text ("No such file or directory", "File exists", "Device or resource busy") and the
 * failing operation's index, so `isNotFound`/`isExists`/`isBusy` and `NftError.operations` work the same
 * as against the kernel (tests/unit/ffi/_conformance.ts holds both to it).
 *
 * A transaction is undone through an undo log (one closure per change), never by copying the state: the
 * fake holds maps of 100,000 elements and a transaction touching three of them costs three entries.
 *
 * Modelled like the kernel: a verdict naming a missing chain and a rule naming a missing chain or `@set`
 * fail as not found; a chain jumped to (by a rule or a map element) and a set named by a rule cannot be
 * deleted (busy); adding a map element whose key exists with another value fails as exists. Not modelled:
 * rule expressions (kept as text, printed back as given but for `counter`), element timeouts, traffic
 * (`count()` adds to a counted element as a packet would), address canonicalisation (give canonical forms:
 * `fd00::1`). Interval sets (single-part keys) refuse an element overlapping another, as nft does ("interval overlaps with an existing one").
 *
 * `list` renders the model in libnftables' JSON listing form (what `Nftables.list` returns), except that a
 * rule carries its text (`text`) instead of nft's `expr` tree; `dump()` renders it as `nft list ruleset`.
 */
import { NftError } from "./errors.ts";
import { parseIP } from "./ip.ts";
import type { NftListOptions, NftListTarget, NftObject, NftRuleset } from "./nftables.ts";
import { NFT_SET, type NftSetInfo, type NftTableLayout, NftUndecodable } from "./nft_netlink.ts";
import {
  type NftChainSpec,
  type NftElementSpec,
  type NftMapSpec,
  type NftOperation,
  type NftSetSpec,
  type NftTransaction,
  type NftVerb,
  objectKind,
} from "./nft_transaction.ts";

interface FElem {
  key: string[];
  value?: string[];
  comment?: string;
  /** Traffic counted on the element of a set with `counter` (FakeNftables.count). */
  counter?: { packets: number; bytes: number };
}
interface FSet {
  spec: NftSetSpec | NftMapSpec;
  isMap: boolean;
  handle: number;
  elems: Map<string, FElem>;
  /**
   * Interval sets with single-part keys: the elements' ranges sorted by start, never overlapping (nft
   * refuses an element that overlaps another). Only its neighbours are checked when one is added.
   */
  intervals?: Interval[];
}
interface Interval {
  lo: bigint;
  hi: bigint;
  key: string;
}
interface FRule {
  handle: number;
  text: string;
  comment?: string;
  /** "chain:NAME" / "set:NAME" this rule refers to. */
  refs: string[];
}
interface FChain {
  spec: NftChainSpec;
  handle: number;
  rules: FRule[];
}
interface FTable {
  family: string;
  name: string;
  comment?: string;
  handle: number;
  chains: Map<string, FChain>;
  sets: Map<string, FSet>;
  /** Reference counts: "chain:NAME" (jumps, gotos, verdicts), "set:NAME" (rules' @NAME). */
  refs: Map<string, number>;
  nextHandle: number;
}

const ENOENT = "Error: Could not process rule: No such file or directory";
const EEXIST = "Error: Could not process rule: File exists";
const EBUSY = "Error: Could not process rule: Device or resource busy";
const EINVAL = "Error: Could not process rule: Invalid argument";
const EOPNOTSUPP = "Error: Could not process rule: Operation not supported";

type Undo = (() => void)[];

class OpError extends Error {
  constructor(readonly nft: string, readonly detail: string) {
    super(nft);
  }
}

function tkey(family: string, name: string): string {
  return `${family} ${name}`;
}

/** The identity of an element: its key as nft prints it (`/32` and `/128` prefixes are plain addresses). */
function elemKey(key: readonly string[]): string {
  return key.map((p) =>
    p.replace(/\/(32|128)$/, (m, len) => (p.includes(":") ? len === "128" : len === "32") ? "" : m)
  )
    .join(" . ");
}

const OVERLAP = "Error: interval overlaps with an existing one";

function bytesToBig(b: Uint8Array): bigint {
  let v = 0n;
  for (const x of b) v = (v << 8n) | BigInt(x);
  return v;
}

/** One endpoint of an interval: an address or a number (port, protocol number, mark). */
function pointOf(s: string): { v: bigint; bits: number } | undefined {
  if (/^\d+$/.test(s)) return { v: BigInt(s), bits: 0 };
  if (/^0x[0-9a-f]+$/i.test(s)) return { v: BigInt(s), bits: 0 };
  const ip = parseIP(s);
  return ip ? { v: bytesToBig(ip.addr), bits: ip.family === 4 ? 32 : 128 } : undefined;
}

/** The range an interval-set key covers: `a`, `a/len` or `a-b`; undefined if not understood. */
export function intervalOf(key: string): { lo: bigint; hi: bigint } | undefined {
  const slash = key.indexOf("/");
  if (slash > 0) {
    const p = pointOf(key.slice(0, slash));
    const len = Number(key.slice(slash + 1));
    if (!p || !p.bits || !Number.isInteger(len) || len < 0 || len > p.bits) return undefined;
    const host = (1n << BigInt(p.bits - len)) - 1n;
    return { lo: p.v & ~host, hi: p.v | host };
  }
  const dash = key.indexOf("-");
  if (dash > 0) {
    const a = pointOf(key.slice(0, dash)), b = pointOf(key.slice(dash + 1));
    return a && b && a.v <= b.v ? { lo: a.v, hi: b.v } : undefined;
  }
  const p = pointOf(key);
  return p ? { lo: p.v, hi: p.v } : undefined;
}

/** Index of the first interval starting after `lo`. */
function upperBound(xs: readonly Interval[], lo: bigint): number {
  let a = 0, b = xs.length;
  while (a < b) {
    const m = (a + b) >> 1;
    if (xs[m]!.lo <= lo) a = m + 1;
    else b = m;
  }
  return a;
}

const VERDICT_REF = /^(jump|goto) (\S+)$/;

function ruleRefs(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/(?:^|\s)(?:jump|goto)\s+([A-Za-z_.][A-Za-z0-9_./-]*)/g)) {
    out.push(`chain:${m[1]}`);
  }
  for (const m of text.matchAll(/@([A-Za-z_.][A-Za-z0-9_./-]*)/g)) out.push(`set:${m[1]}`);
  return out;
}

/** A duration as nft prints it: "10800s" -> "3h", "90s" -> "1m30s". */
export function durationText(spec: string): string {
  const unit: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
  let ms = 0;
  for (const m of spec.matchAll(/(\d+)(ms|s|m|h|d)/g)) ms += Number(m[1]) * unit[m[2]!]!;
  let out = "";
  for (
    const [u, n] of [["d", 86_400_000], ["h", 3_600_000], ["m", 60_000], ["s", 1000], ["ms", 1]] as const
  ) {
    if (ms >= n) {
      out += `${Math.floor(ms / n)}${u}`;
      ms %= n;
    }
  }
  return out || "0s";
}

/** nft's standard priority names per family and hook, to print priorities as nft does. */
function priorityText(family: string, hook: string | undefined, prio: number): string {
  const names: [string, number, string[] | undefined][] = family === "bridge"
    ? [["dstnat", -300, ["prerouting"]], ["filter", -200, undefined], ["out", 100, ["output"]], [
      "srcnat",
      300,
      ["postrouting"],
    ]]
    : [
      ["raw", -300, undefined],
      ["mangle", -150, undefined],
      ["dstnat", -100, ["prerouting"]],
      [
        "filter",
        0,
        undefined,
      ],
      ["security", 50, undefined],
      ["srcnat", 100, ["postrouting"]],
    ];
  for (const [name, value, hooks] of names) {
    if (hooks && (!hook || !hooks.includes(hook))) continue;
    const off = prio - value;
    if (off === 0) return name;
    if (Math.abs(off) <= 10) return `${name} ${off > 0 ? "+" : "-"} ${Math.abs(off)}`;
  }
  return String(prio);
}

/** In-memory nftables with atomic transactions. */
export class FakeNftables implements NftRuleset {
  #tables = new Map<string, FTable>();
  #nextTableHandle = 1;
  /** Number of transactions applied successfully (for tests asserting on batching). */
  transactions = 0;

  /**
   * Traffic for tests: adds packets and bytes to the counter of one element of a set with `counter`, as a
   * packet the kernel looks up in it would. Throws if the set or element does not exist or is not counted.
   */
  count(
    ref: { family: string; table: string; set: string },
    key: readonly string[],
    packets: number,
    bytes: number,
  ): void {
    const s = this.#tables.get(tkey(ref.family, ref.table))?.sets.get(ref.set);
    if (!s?.spec.counter) throw new Error(`no counted set ${ref.set} in ${ref.family} ${ref.table}`);
    const e = s.elems.get(elemKey(key));
    if (!e) throw new Error(`no element ${key.join(" . ")} in ${ref.set}`);
    e.counter = { packets: (e.counter?.packets ?? 0) + packets, bytes: (e.counter?.bytes ?? 0) + bytes };
  }

  run(tx: NftTransaction): Promise<void> {
    if (tx.size === 0) return Promise.resolve();
    try {
      this.#transact(tx.operations.map((op) => ({ family: tx.family, table: tx.table, op })));
    } catch (e) {
      return Promise.reject(e);
    }
    return Promise.resolve();
  }

  #transact(ops: readonly FakeOp[]): void {
    const undo: Undo = [];
    for (let i = 0; i < ops.length; i++) {
      const o = ops[i]!;
      try {
        if (o.op.verb === "destroy") {
          this.#exec(o, "add", undo);
          this.#exec(o, "delete", undo);
        } else this.#exec(o, o.op.verb, undo);
      } catch (e) {
        for (let k = undo.length - 1; k >= 0; k--) undo[k]!();
        if (e instanceof OpError) {
          throw new NftError(1, `${e.nft}\n${e.detail}`, { operations: [i] });
        }
        throw e;
      }
    }
    this.transactions++;
  }

  #table(family: string, name: string): FTable {
    const t = this.#tables.get(tkey(family, name));
    if (!t) throw new OpError(ENOENT, `table ${family} ${name}`);
    return t;
  }

  #handle(t: FTable, undo: Undo): number {
    const h = t.nextHandle++;
    undo.push(() => t.nextHandle = h);
    return h;
  }

  #ref(t: FTable, key: string, delta: number, undo: Undo): void {
    const n = (t.refs.get(key) ?? 0) + delta;
    if (n === 0) t.refs.delete(key);
    else t.refs.set(key, n);
    undo.push(() => {
      const m = (t.refs.get(key) ?? 0) - delta;
      if (m === 0) t.refs.delete(key);
      else t.refs.set(key, m);
    });
  }

  #valueRef(t: FTable, e: FElem, delta: number, undo: Undo): void {
    const m = e.value?.length === 1 ? VERDICT_REF.exec(e.value[0]!) : null;
    if (m) this.#ref(t, `chain:${m[2]}`, delta, undo);
  }

  #exec(fo: FakeOp, verb: NftVerb, undo: Undo): void {
    const { family, table, op } = fo;
    const o = op.object;
    const what = `${verb} ${objectKind(o)}`;
    if ("table" in o) {
      const k = tkey(family, table);
      const t = this.#tables.get(k);
      if (verb === "add" || verb === "create") {
        if (t) {
          if (verb === "create") throw new OpError(EEXIST, `table ${k}`);
          return;
        }
        const nt: FTable = {
          family,
          name: table,
          handle: this.#nextTableHandle++,
          chains: new Map(),
          sets: new Map(),
          refs: new Map(),
          nextHandle: 1,
        };
        if (o.table.comment !== undefined) nt.comment = o.table.comment;
        this.#tables.set(k, nt);
        undo.push(() => {
          this.#tables.delete(k);
          this.#nextTableHandle--;
        });
        return;
      }
      if (!t) throw new OpError(ENOENT, `table ${k}`);
      if (verb === "delete") {
        this.#tables.delete(k);
        undo.push(() => this.#tables.set(k, t));
        return;
      }
      if (verb === "flush") {
        // Like the kernel: every chain's rules go; sets and maps keep their elements.
        for (const c of t.chains.values()) this.#flushChain(t, c, undo);
        return;
      }
      throw new OpError(EINVAL, what);
    }
    const t = this.#table(family, table);
    if ("chain" in o) {
      const name = o.chain.name;
      const c = t.chains.get(name);
      if (verb === "add" || verb === "create") {
        if (c) {
          if (verb === "create") throw new OpError(EEXIST, `chain ${name}`);
          this.#updateChain(c, o.chain, undo);
          return;
        }
        const nc: FChain = { spec: { ...o.chain }, handle: this.#handle(t, undo), rules: [] };
        t.chains.set(name, nc);
        undo.push(() => t.chains.delete(name));
        return;
      }
      if (!c) throw new OpError(ENOENT, `chain ${name}`);
      if (verb === "flush") return this.#flushChain(t, c, undo);
      if (verb === "delete") {
        if (t.refs.has(`chain:${name}`)) throw new OpError(EBUSY, `chain ${name} is jumped to`);
        this.#flushChain(t, c, undo);
        t.chains.delete(name);
        undo.push(() => t.chains.set(name, c));
        return;
      }
      throw new OpError(EINVAL, what);
    }
    if ("rule" in o) {
      const r = o.rule;
      const c = t.chains.get(r.chain);
      if (!c) throw new OpError(ENOENT, `chain ${r.chain}`);
      const at = (h: number) => {
        const i = c.rules.findIndex((x) => x.handle === h);
        if (i < 0) throw new OpError(ENOENT, `rule handle ${h} in ${r.chain}`);
        return i;
      };
      if (verb === "delete" || verb === "replace") {
        const i = at(r.handle!);
        const old = c.rules[i]!;
        for (const ref of old.refs) this.#ref(t, ref, -1, undo);
        if (verb === "delete") {
          c.rules.splice(i, 1);
          undo.push(() => c.rules.splice(i, 0, old));
          return;
        }
        const nr = this.#newRule(t, fo, undo);
        c.rules[i] = nr;
        undo.push(() => c.rules[i] = old);
        return;
      }
      if (verb !== "add" && verb !== "insert") throw new OpError(EINVAL, what);
      let pos: number;
      if (r.index !== undefined) {
        if (r.index >= c.rules.length) throw new OpError(ENOENT, `rule index ${r.index} in ${r.chain}`);
        pos = verb === "add" ? r.index + 1 : r.index;
      } else if (r.handle !== undefined) pos = at(r.handle) + (verb === "add" ? 1 : 0);
      else pos = verb === "add" ? c.rules.length : 0;
      const nr = this.#newRule(t, fo, undo);
      c.rules.splice(pos, 0, nr);
      undo.push(() => c.rules.splice(pos, 1));
      return;
    }
    if ("set" in o || "map" in o) {
      const isMap = "map" in o;
      const spec = "map" in o ? o.map : (o as { set: NftSetSpec }).set;
      const s = t.sets.get(spec.name);
      if (verb === "add" || verb === "create") {
        if (s) {
          // Like the kernel: a set declared again must match in kind, types, flags, counter and timeout (a
          // different comment is accepted and ignored).
          const flags = (x: NftSetSpec) => [...(x.flags ?? [])].sort().join(",");
          const sameShape = s.isMap === isMap && s.spec.type === spec.type &&
            (!isMap || (s.spec as NftMapSpec).map === (spec as NftMapSpec).map) &&
            flags(s.spec) === flags(spec) && !!s.spec.counter === !!spec.counter &&
            (s.spec.timeout ?? "") === (spec.timeout ?? "");
          if (verb === "create" || !sameShape) throw new OpError(EEXIST, `set ${spec.name}`);
          return;
        }
        const ns: FSet = { spec: { ...spec }, isMap, handle: this.#handle(t, undo), elems: new Map() };
        if (spec.flags?.includes("interval") && !spec.type.includes(" . ")) ns.intervals = [];
        t.sets.set(spec.name, ns);
        undo.push(() => t.sets.delete(spec.name));
        return;
      }
      if (!s || s.isMap !== isMap) throw new OpError(ENOENT, `${isMap ? "map" : "set"} ${spec.name}`);
      if (verb === "flush") return this.#flushSet(t, s, undo);
      if (verb === "delete") {
        if (t.refs.has(`set:${spec.name}`)) throw new OpError(EBUSY, `set ${spec.name} is used by a rule`);
        this.#flushSet(t, s, undo);
        t.sets.delete(spec.name);
        undo.push(() => t.sets.set(spec.name, s));
        return;
      }
      throw new OpError(EINVAL, what);
    }
    const e = (o as { element: NftElementSpec }).element;
    const s = t.sets.get(e.set);
    if (!s) throw new OpError(ENOENT, `set ${e.set}`);
    const k = elemKey(e.key);
    const old = s.elems.get(k);
    if (verb === "add" || verb === "create") {
      if (s.isMap !== (e.value !== undefined)) throw new OpError(EINVAL, `element ${k} of ${e.set}: value`);
      if (old) {
        const differs = s.isMap && old.value!.join(" . ") !== e.value!.join(" . ");
        if (verb === "create" || differs) throw new OpError(EEXIST, `element ${k} of ${e.set}`);
        return;
      }
      const ne: FElem = { key: [...e.key] };
      if (e.value) ne.value = [...e.value];
      if (e.comment !== undefined) ne.comment = e.comment;
      const m = ne.value?.length === 1 ? VERDICT_REF.exec(ne.value[0]!) : null;
      if (m && !t.chains.has(m[2]!)) throw new OpError(ENOENT, `element ${k}: chain ${m[2]}`);
      if (s.intervals) this.#addInterval(s, k, undo);
      this.#valueRef(t, ne, 1, undo);
      const elems = s.elems;
      elems.set(k, ne);
      undo.push(() => elems.delete(k));
      return;
    }
    if (verb === "delete") {
      if (!old) throw new OpError(ENOENT, `element ${k} of ${e.set}`);
      if (s.intervals) this.#removeInterval(s, k, undo);
      this.#valueRef(t, old, -1, undo);
      const elems = s.elems;
      elems.delete(k);
      undo.push(() => elems.set(k, old));
      return;
    }
    throw new OpError(EINVAL, what);
  }

  /**
   * `add chain` of an existing chain, as the kernel takes it: a bare name (or a comment) changes nothing; a
   * base chain's policy is updated; its type, hook or priority cannot change (not supported), and a regular
   * chain cannot become a base chain (exists; not supported when a policy is given).
   */
  #updateChain(c: FChain, spec: NftChainSpec, undo: Undo): void {
    if (spec.type === undefined) return;
    const old = c.spec;
    if (old.type === undefined) {
      // The kernel refuses the policy first (not supported), then the hook (exists).
      throw new OpError(
        spec.policy !== undefined ? EOPNOTSUPP : EEXIST,
        `chain ${spec.name} is not a base chain`,
      );
    }
    if (old.type !== spec.type || old.hook !== spec.hook || old.priority !== spec.priority) {
      throw new OpError(EOPNOTSUPP, `chain ${spec.name}: type, hook and priority cannot change`);
    }
    if (spec.policy !== undefined && spec.policy !== (old.policy ?? "accept")) {
      c.spec = { ...old, policy: spec.policy };
      undo.push(() => c.spec = old);
    }
  }

  #newRule(t: FTable, fo: FakeOp, undo: Undo): FRule {
    const r = (fo.op.object as { rule: { rule: string; comment?: string } }).rule;
    const refs = ruleRefs(r.rule);
    for (const ref of refs) {
      const [kind, name] = ref.split(":") as [string, string];
      if (!(kind === "chain" ? t.chains.has(name) : t.sets.has(name))) {
        throw new OpError(ENOENT, `${kind} ${name}`);
      }
    }
    for (const ref of refs) this.#ref(t, ref, 1, undo);
    const nr: FRule = { handle: this.#handle(t, undo), text: r.rule, refs };
    if (r.comment !== undefined) nr.comment = r.comment;
    return nr;
  }

  #flushChain(t: FTable, c: FChain, undo: Undo): void {
    const old = c.rules;
    for (const r of old) for (const ref of r.refs) this.#ref(t, ref, -1, undo);
    c.rules = [];
    undo.push(() => c.rules = old);
  }

  #flushSet(t: FTable, s: FSet, undo: Undo): void {
    const old = s.elems;
    if (s.isMap) { for (const e of old.values()) this.#valueRef(t, e, -1, undo); }
    s.elems = new Map();
    undo.push(() => s.elems = old);
    const oldIntervals = s.intervals;
    if (oldIntervals) {
      s.intervals = [];
      undo.push(() => s.intervals = oldIntervals);
    }
  }

  /** Files an interval-set element's range, refusing one that overlaps another (as nft does). */
  #addInterval(s: FSet, key: string, undo: Undo): void {
    const r = intervalOf(key);
    if (!r) return;
    const xs = s.intervals!;
    const i = upperBound(xs, r.lo);
    const prev = xs[i - 1], next = xs[i];
    if ((prev && prev.hi >= r.lo) || (next && next.lo <= r.hi)) {
      throw new OpError(OVERLAP, `element ${key} overlaps ${prev && prev.hi >= r.lo ? prev.key : next!.key}`);
    }
    const entry = { ...r, key };
    xs.splice(i, 0, entry);
    undo.push(() => {
      const list = s.intervals!;
      const j = list.indexOf(entry, Math.max(0, upperBound(list, entry.lo) - 1));
      if (j >= 0) list.splice(j, 1);
    });
  }

  #removeInterval(s: FSet, key: string, undo: Undo): void {
    const r = intervalOf(key);
    if (!r) return;
    const xs = s.intervals!;
    const i = upperBound(xs, r.lo) - 1;
    const entry = xs[i];
    if (!entry || entry.key !== key) return;
    xs.splice(i, 1);
    undo.push(() => {
      const list = s.intervals!;
      list.splice(upperBound(list, entry.lo), 0, entry);
    });
  }

  /**
   * The whole ruleset in `nft list ruleset` form: tables in creation order, in each its sets and maps,
   * then its chains, in creation order; elements sorted by key (the kernel's order is its hash order).
   */
  dump(): string {
    const out: string[] = [];
    for (const t of this.#tables.values()) out.push(this.#dumpTable(t));
    return out.join("");
  }

  #dumpTable(t: FTable): string {
    const blocks: string[] = [];
    for (const [name, s] of t.sets) blocks.push(this.#dumpSet(name, s));
    for (const [name, c] of t.chains) blocks.push(this.#dumpChain(t, name, c));
    const head = `table ${t.family} ${t.name} {\n` +
      (t.comment !== undefined ? `\tcomment "${t.comment}"\n` : "");
    return head + blocks.join("\n") + "}\n";
  }

  #dumpSet(name: string, s: FSet): string {
    const sp = s.spec;
    const lines = [`\t${s.isMap ? "map" : "set"} ${name} {`];
    const kind = sp.type.startsWith("typeof ") ? "" : "type ";
    lines.push(`\t\t${kind}${sp.type}${s.isMap ? ` : ${(sp as NftMapSpec).map}` : ""}`);
    // The kernel gives a set that rules add to (flag dynamic) a size of 65535 when none was asked for.
    if (sp.flags?.includes("dynamic")) lines.push("\t\tsize 65535");
    // nft leaves out a lone "timeout" flag when the set has a default timeout.
    const flags = sp.timeout && sp.flags?.length === 1 && sp.flags[0] === "timeout" ? [] : sp.flags ?? [];
    if (flags.length) lines.push(`\t\tflags ${flags.join(",")}`);
    if (sp.counter) lines.push("\t\tcounter");
    if (sp.timeout) lines.push(`\t\ttimeout ${durationText(sp.timeout)}`);
    if (sp.comment !== undefined) lines.push(`\t\tcomment "${sp.comment}"`);
    if (s.elems.size) {
      const keys = [...s.elems.keys()].sort();
      const items = keys.map((k) => {
        const e = s.elems.get(k)!;
        let str = k;
        if (sp.counter) str += ` counter packets ${e.counter?.packets ?? 0} bytes ${e.counter?.bytes ?? 0}`;
        if (e.comment !== undefined) str += ` comment "${e.comment}"`;
        if (e.value) str += ` : ${e.value.join(" . ")}`;
        return str;
      });
      lines.push(`\t\telements = { ${items.join(",\n\t\t\t     ")} }`);
    }
    lines.push("\t}");
    return lines.join("\n") + "\n";
  }

  #dumpChain(t: FTable, name: string, c: FChain): string {
    const sp = c.spec;
    const lines = [`\tchain ${name} {`];
    if (sp.comment !== undefined) lines.push(`\t\tcomment "${sp.comment}"`);
    if (sp.type !== undefined) {
      lines.push(
        `\t\ttype ${sp.type} hook ${sp.hook} priority ${
          priorityText(t.family, sp.hook, sp.priority!)
        }; policy ${sp.policy ?? "accept"};`,
      );
    }
    for (const r of c.rules) {
      const text = r.text.replace(/\bcounter\b(?! packets)/g, "counter packets 0 bytes 0");
      lines.push(`\t\t${text}${r.comment !== undefined ? ` comment "${r.comment}"` : ""}`);
    }
    lines.push("\t}");
    return lines.join("\n") + "\n";
  }

  // ---- libnftables' JSON listing form ----

  async list(target: NftListTarget, opts: NftListOptions = {}): Promise<NftObject[]> {
    const out = await this.#list(target);
    if (!opts.terse) return out;
    return out.map((o) => {
      const k = Object.keys(o)[0]!;
      if (k !== "set" && k !== "map") return o;
      const { elem: _e, ...rest } = o[k] as Record<string, unknown>;
      return { [k]: rest };
    });
  }

  // ---- the netlink listing's form (Nftables.listLayout / listElements) ----

  listLayout(table: { family: string; name: string }): Promise<NftTableLayout | undefined> {
    const t = this.#tables.get(tkey(table.family, table.name));
    if (!t) return Promise.resolve(undefined);
    const sets: NftSetInfo[] = [];
    for (const [name, s] of t.sets) {
      const interval = s.spec.flags?.includes("interval") ?? false;
      const timeout = s.spec.flags?.includes("timeout") ?? false;
      const flags = (s.isMap ? NFT_SET.map : 0) | (interval ? NFT_SET.interval : 0) |
        (timeout ? NFT_SET.timeout : 0);
      // The fake keeps elements as text: its types are never decoded, so they are left 0.
      sets.push({ name, flags, map: s.isMap, interval, keyType: 0, keyLen: 0 });
    }
    return Promise.resolve({ chains: [...t.chains.keys()], sets });
  }

  listElements(
    table: { family: string; name: string },
    set: NftSetInfo,
    each: (key: string, value: string) => void,
  ): Promise<void> {
    const s = this.#tables.get(tkey(table.family, table.name))?.sets.get(set.name);
    // As the kernel reader: interval sets are listed as ranges only nft turns back into prefixes.
    if (set.interval) {
      return Promise.reject(new NftUndecodable(set.name, "interval set (ranges, not elements)"));
    }
    for (const e of s?.elems.values() ?? []) each(e.key.join(" . "), e.value?.join(" . ") ?? "");
    return Promise.resolve();
  }

  #render(t: FTable): NftObject[] {
    // nft 1.0.6's JSON leaves out table and chain comments (its text listing shows them).
    const table: Record<string, unknown> = { family: t.family, name: t.name, handle: t.handle };
    const out: NftObject[] = [{ table }];
    for (const [name, s] of t.sets) out.push(this.#renderSet(t, name, s));
    for (const [name, c] of t.chains) out.push(this.#renderChain(t, name, c));
    for (const [name, c] of t.chains) out.push(...this.#renderRules(t, name, c));
    return out;
  }

  #renderChain(t: FTable, name: string, c: FChain): NftObject {
    const sp = c.spec;
    const o: Record<string, unknown> = { family: t.family, table: t.name, name, handle: c.handle };
    if (sp.type !== undefined) {
      Object.assign(o, { type: sp.type, hook: sp.hook, prio: sp.priority, policy: sp.policy ?? "accept" });
    }
    return { chain: o };
  }

  #renderRules(t: FTable, name: string, c: FChain): NftObject[] {
    return c.rules.map((r) => ({
      rule: {
        family: t.family,
        table: t.name,
        chain: name,
        handle: r.handle,
        ...(r.comment !== undefined ? { comment: r.comment } : {}),
        text: r.text,
      },
    }));
  }

  #renderSet(t: FTable, name: string, s: FSet): NftObject {
    const sp = s.spec;
    const o: Record<string, unknown> = {
      family: t.family,
      name,
      table: t.name,
      type: sp.type.includes(" . ") ? sp.type.split(" . ") : sp.type,
      handle: s.handle,
    };
    if (s.isMap) o.map = (sp as NftMapSpec).map;
    if (sp.flags?.length) o.flags = [...sp.flags];
    if (sp.comment !== undefined) o.comment = sp.comment;
    if (sp.counter) o.stmt = [{ counter: null }];
    const interval = sp.flags?.includes("interval") ?? false;
    if (s.elems.size) {
      o.elem = [...s.elems.values()].map((e) => {
        let key = keyJson(e.key, interval);
        // An element with a comment or a counter is wrapped: {elem: {val, comment, counter}}.
        if (e.comment !== undefined || sp.counter) {
          const elem: Record<string, unknown> = { val: key };
          if (e.comment !== undefined) elem.comment = e.comment;
          if (sp.counter) elem.counter = { packets: e.counter?.packets ?? 0, bytes: e.counter?.bytes ?? 0 };
          key = { elem };
        }
        return s.isMap ? [key, valueJson(e.value!)] : key;
      });
    }
    return { [s.isMap ? "map" : "set"]: o };
  }

  #list(target: NftListTarget): Promise<NftObject[]> {
    const notFound = () => Promise.reject(new NftError(1, "Error: No such file or directory"));
    if ("ruleset" in target) {
      return Promise.resolve([...this.#tables.values()].flatMap((t) => this.#render(t)));
    }
    if ("table" in target) {
      const t = this.#tables.get(tkey(target.table.family, target.table.name));
      return t ? Promise.resolve(this.#render(t)) : notFound();
    }
    const [kind, ref] = "chain" in target
      ? ["chain", target.chain] as const
      : "set" in target
      ? ["set", target.set] as const
      : ["map", target.map] as const;
    const t = this.#tables.get(tkey(ref.family, ref.table));
    if (!t) return notFound();
    if (kind === "chain") {
      const c = t.chains.get(ref.name);
      if (!c) return notFound();
      return Promise.resolve([this.#renderChain(t, ref.name, c), ...this.#renderRules(t, ref.name, c)]);
    }
    const s = t.sets.get(ref.name);
    if (!s || s.isMap !== (kind === "map")) return notFound();
    return Promise.resolve([this.#renderSet(t, ref.name, s)]);
  }

  close(): void {}
}

/** One operation with its table. */
interface FakeOp {
  family: string;
  table: string;
  op: NftOperation;
}

function partJson(p: string, interval: boolean): unknown {
  if (/^\d+$/.test(p)) return Number(p);
  const slash = p.indexOf("/");
  if (slash > 0) return { prefix: { addr: p.slice(0, slash), len: Number(p.slice(slash + 1)) } };
  const dash = p.indexOf("-");
  if (interval && dash > 0) {
    return { range: [partJson(p.slice(0, dash), false), partJson(p.slice(dash + 1), false)] };
  }
  return p;
}

function keyJson(key: readonly string[], interval: boolean): unknown {
  return key.length === 1 ? partJson(key[0]!, interval) : { concat: key.map((p) => partJson(p, interval)) };
}

function valueJson(value: readonly string[]): unknown {
  if (value.length === 1) {
    const v = value[0]!;
    const m = VERDICT_REF.exec(v);
    if (m) return { [m[1]!]: { target: m[2] } };
    if (/^(accept|drop|continue|return)$/.test(v)) return { [v]: null };
  }
  return keyJson(value, false);
}
