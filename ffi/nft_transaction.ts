/**
 * `NftTransaction`: nftables changes built in memory as typed operations and rendered once to nft's own
 * text language (the `nft -f` syntax), applied as one atomic buffer (`NftRuleset.run`). Every object lives
 * in the one table named at construction; rules are nft rule bodies as text.
 *
 * Why text and not libnftables' JSON: the text is several times smaller for big maps, it is what an
 * operator reads and can replay with `nft -f`, and nft reports an error as `line:column` of it, which maps
 * back to the operation (and, for elements, to the very element) that failed: see `operationsAt`.
 *
 * nft 1.0.6 (Debian 12) has no `destroy` command, so `destroy` is emulated the way knftables does for old
 * nft: `add` then `delete` of the same object in the same transaction, which succeeds whether or not the
 * object existed. A consequence: destroying a set or map needs its real shape (types, flags, counter,
 * timeout: the kernel refuses to re-declare a set differently), and destroying a map element needs the
 * value it has (the kernel refuses an `add` whose value differs from the present one).
 *
 * Names are rendered bare: nft 1.0.6's grammar has no quoted identifiers, so names that are not nft
 * identifiers, or are nft keywords ("fwd", "ct", "missing": `NFT_KEYWORDS`), are refused when the
 * operation is added (an `NftSpecError`), never at apply time, so a caller can log the object and skip it. Comments are quoted; nft strings cannot contain `"`.
 *
 * ```ts
 * const tx = new NftTransaction("inet", "kube_router_proxy")
 *   .add({ table: {} })
 *   .add({ chain: { name: "svc-web" } })
 *   .add({ map: { name: "vips", type: "ipv4_addr . inet_proto . inet_service", map: "verdict" } })
 *   .add({ element: { set: "vips", key: ["172.16.0.10", "tcp", "80"], value: ["goto svc-web"] } });
 * await nft.run(tx);
 * ```
 */

export type NftFamily = "ip" | "ip6" | "inet" | "bridge" | "arp" | "netdev";

/** The transaction's table (its family and name are given once, to the constructor). */
export interface NftTableSpec {
  comment?: string;
}

/** A chain; a base chain has all three of type, hook and priority. */
export interface NftChainSpec {
  name: string;
  type?: "filter" | "nat" | "route";
  hook?: "prerouting" | "input" | "forward" | "output" | "postrouting";
  /** Numeric priority; the values modules agree on live in core/netfilter.ts. */
  priority?: number;
  policy?: "accept" | "drop";
  comment?: string;
}

/** A rule: a body in nft syntax, e.g. `ip daddr 172.16.0.10 tcp dport 80 goto svc-web-abc`. */
export interface NftRuleSpec {
  chain: string;
  rule: string;
  /** Rendered as `comment "…"`: at most 128 bytes, no `"`. */
  comment?: string;
  /** The rule to delete or replace; for add/insert, the rule to add after/insert before. */
  handle?: number;
  /** For add/insert: position by index in the chain. */
  index?: number;
}

/**
 * A set; `type` is a data type or a concatenation such as "ipv4_addr . inet_proto . inet_service", or
 * `typeof` and expressions ("typeof ip daddr . th dport . numgen random mod 65536"): the only way to key
 * by a generated number (numgen, jhash), whose integer type has no name. In a typeof map, `map` is an
 * expression too ("ip daddr . tcp dport").
 */
export interface NftSetSpec {
  name: string;
  type: string;
  flags?: ("interval" | "timeout" | "constant" | "dynamic")[];
  /** Default element timeout, e.g. "10800s". */
  timeout?: string;
  /** Count packets and bytes per element. */
  counter?: boolean;
  comment?: string;
}

/** A map: a set with a value type ("verdict", "ipv4_addr", "ipv4_addr . inet_service", …). */
export interface NftMapSpec extends NftSetSpec {
  map: string;
}

/** One element of a set or map. */
export interface NftElementSpec {
  /** The set's or map's name. */
  set: string;
  /** Concatenation parts: ["172.16.0.10", "tcp", "80"]; "10.0.0.0/8" or "30000-32767" in interval sets. */
  key: string[];
  /** Maps only: ["goto svc-web-abc"], ["10.1.2.3", "8080"]. */
  value?: string[];
  comment?: string;
}

export type NftObjectSpec =
  | { table: NftTableSpec }
  | { chain: NftChainSpec }
  | { rule: NftRuleSpec }
  | { set: NftSetSpec }
  | { map: NftMapSpec }
  | { element: NftElementSpec };

export type NftVerb = "add" | "create" | "insert" | "replace" | "flush" | "delete" | "destroy";

/** One operation of a transaction, as given. */
export interface NftOperation {
  readonly verb: NftVerb;
  readonly object: NftObjectSpec;
}

/** An object that cannot be expressed (bad name, comment, verb for its kind): thrown when it is added. */
export class NftSpecError extends TypeError {
  constructor(message: string) {
    super(message);
    this.name = "NftSpecError";
  }
}

/** The kind of an object spec: "table", "chain", "rule", "set", "map" or "element". */
export function objectKind(o: NftObjectSpec): "table" | "chain" | "rule" | "set" | "map" | "element" {
  if ("element" in o) return "element";
  if ("rule" in o) return "rule";
  if ("chain" in o) return "chain";
  if ("map" in o) return "map";
  if ("set" in o) return "set";
  return "table";
}

/**
 * nft 1.0.6's identifier token (scanner.l `string`): a letter, `_` or `.`, then letters, digits, `/-_.`;
 * at most 255 characters (the kernel's NFT_NAME_MAXLEN, 256 with the terminating NUL: longer names fail
 * with ERANGE).
 */
const NAME = /^[A-Za-z_.][A-Za-z0-9_./-]{0,254}$/;
/**
 * Words nft 1.0.6's scanner always reads as keywords, so they cannot be names (found by trying every word
 * of nft(8), and the scanner's other keywords, as a chain name: `nft -c add chain inet t WORD`). After `@`
 * (a set reference) "ll" and "nh" are keywords too.
 */
export const NFT_KEYWORDS: ReadonlySet<string> = new Set([
  "accept",
  "add",
  "ah",
  "all",
  "and",
  "arp",
  "bridge",
  "cgroup",
  "chain",
  "comment",
  "comp",
  "constant",
  "continue",
  "counter",
  "cpu",
  "create",
  "ct",
  "day",
  "dccp",
  "define",
  "delete",
  "describe",
  "device",
  "devices",
  "dnat",
  "drop",
  "dst",
  "dup",
  "dynamic",
  "ecn",
  "element",
  "elements",
  "eq",
  "esp",
  "ether",
  "exists",
  "expires",
  "export",
  "exthdr",
  "fib",
  "flags",
  "flow",
  "flowtable",
  "flush",
  "frag",
  "fwd",
  "ge",
  "get",
  "goto",
  "gt",
  "handle",
  "hbh",
  "hook",
  "hour",
  "ibrname",
  "icmp",
  "icmpv6",
  "igmp",
  "iif",
  "iifgroup",
  "iifname",
  "iiftype",
  "import",
  "include",
  "index",
  "inet",
  "insert",
  "interval",
  "ip",
  "ip6",
  "ipsec",
  "jhash",
  "jump",
  "le",
  "limit",
  "list",
  "log",
  "lshift",
  "lt",
  "map",
  "mark",
  "masquerade",
  "meta",
  "meter",
  "mh",
  "missing",
  "monitor",
  "ne",
  "netdev",
  "nftrace",
  "not",
  "notrack",
  "numgen",
  "obrname",
  "offload",
  "oif",
  "oifgroup",
  "oifname",
  "oiftype",
  "or",
  "osf",
  "pkttype",
  "policy",
  "position",
  "priority",
  "queue",
  "quota",
  "random",
  "redefine",
  "redirect",
  "reject",
  "rename",
  "reset",
  "return",
  "rshift",
  "rt",
  "rt0",
  "rt2",
  "rtclassid",
  "rule",
  "ruleset",
  "sctp",
  "secmark",
  "set",
  "size",
  "skgid",
  "skuid",
  "snat",
  "socket",
  "srh",
  "symhash",
  "synproxy",
  "table",
  "tcp",
  "th",
  "time",
  "timeout",
  "tproxy",
  "type",
  "typeof",
  "udp",
  "udplite",
  "undefine",
  "update",
  "vlan",
  "vmap",
  "xor",
  "xt",
]);
const SET_KEYWORDS = new Set(["ll", "nh"]);
const TYPE = /^[a-z0-9_]+( \. [a-z0-9_]+)*$/;
/** `typeof` and selector expressions: words and numbers separated by single spaces, joined by " . ". */
const TYPEOF = /^typeof [a-z0-9_-]+( [a-z0-9_-]+)*( \. [a-z0-9_-]+( [a-z0-9_-]+)*)*$/;
const TYPEOF_VALUE = /^[a-z0-9_-]+( [a-z0-9_-]+)*( \. [a-z0-9_-]+( [a-z0-9_-]+)*)*$/;
const TIMEOUT = /^(\d+(ms|s|m|h|d))+$/;
/**
 * A key or value part: no spaces or nft punctuation, or one quoted string (interface names). A ":" is
 * allowed inside a part (IPv6 addresses, `[fd00::1]:80`): without spaces it can never read as the " : "
 * between key and value; a part that is ":" alone is refused.
 */
const KEY_PART = /^((?!:$)[^\s,{}";#]+|"[^"\n\r]*")$/;
/** A value part may hold a verdict with its chain: "goto svc-web". */
const VALUE_PART = /^((?!:$)[^\s,{}";#]+( [^\s,{}";#:]+)?|"[^"\n\r]*")$/;
/**
 * A key or value as nft prints it: parts joined by " . " (a verdict with its chain, "goto x", is one
 * value part). Tokens separated by single spaces, none holding nft punctuation, none a lone ":"; no quoted
 * parts (use the typed form for those).
 */
const ELEMENT_TEXT = /^(?!(?:.* )?:(?: |$))[^\s,{}";#]+(?: [^\s,{}";#]+)*$/;
const encoder = new TextEncoder();

function checkName(what: string, name: string): void {
  if (!NAME.test(name)) throw new NftSpecError(`invalid ${what} name ${JSON.stringify(name)}`);
  if (NFT_KEYWORDS.has(name) || ((what === "set" || what === "map") && SET_KEYWORDS.has(name))) {
    throw new NftSpecError(`${what} name ${JSON.stringify(name)} is an nft keyword`);
  }
}

function checkComment(c: string | undefined): void {
  if (c === undefined) return;
  if (/["\n\r]/.test(c)) throw new NftSpecError(`comment ${JSON.stringify(c)} contains '"' or a newline`);
  if (encoder.encode(c).length > 128) throw new NftSpecError(`comment longer than 128 bytes: ${c}`);
}

function validate(verb: NftVerb, o: NftObjectSpec): void {
  const kind = objectKind(o);
  const bad = (why: string) => new NftSpecError(`${verb} ${kind}: ${why}`);
  if (verb === "insert" || verb === "replace") {
    if (kind !== "rule") throw bad(`only rules can be ${verb}ed`);
  }
  if (verb === "flush" && (kind === "rule" || kind === "element")) throw bad("cannot be flushed");
  if (kind === "rule" && (verb === "create" || verb === "destroy" || verb === "flush")) {
    throw bad("not supported for rules (nft 1.0.6 cannot destroy a rule; delete it by handle)");
  }
  if ("table" in o) checkComment(o.table.comment);
  else if ("chain" in o) {
    const c = o.chain;
    checkName("chain", c.name);
    checkComment(c.comment);
    const base = [c.type, c.hook, c.priority].filter((x) => x !== undefined).length;
    if (base !== 0 && base !== 3) throw bad(`${c.name}: a base chain needs type, hook and priority`);
    if (c.priority !== undefined && !Number.isInteger(c.priority)) throw bad(`${c.name}: priority`);
    if (c.policy !== undefined && base === 0) throw bad(`${c.name}: a policy needs a base chain`);
  } else if ("rule" in o) {
    const r = o.rule;
    checkName("chain", r.chain);
    checkComment(r.comment);
    if ((verb === "add" || verb === "insert" || verb === "replace") && !r.rule.trim()) {
      throw bad("empty rule");
    }
    if (/[\n\r;#]/.test(r.rule)) throw bad(`rule contains a newline, ';' or '#': ${r.rule}`);
    if ((verb === "delete" || verb === "replace") && r.handle === undefined) throw bad("needs a handle");
    if (r.handle !== undefined && !(Number.isInteger(r.handle) && r.handle > 0)) throw bad("handle");
    if (r.index !== undefined && !(Number.isInteger(r.index) && r.index >= 0)) throw bad("index");
  } else if ("element" in o) {
    const e = o.element;
    checkName("set", e.set);
    checkComment(e.comment);
    if (e.key.length === 0) throw bad(`${e.set}: empty key`);
    for (const p of e.key) {
      if (!KEY_PART.test(p)) throw bad(`${e.set}: invalid key part ${JSON.stringify(p)}`);
    }
    for (const p of e.value ?? []) {
      if (!VALUE_PART.test(p)) throw bad(`${e.set}: invalid value part ${JSON.stringify(p)}`);
    }
    if (e.value !== undefined && e.value.length === 0) throw bad(`${e.set}: empty value`);
  } else {
    const s = "map" in o ? o.map : o.set;
    checkName(kind, s.name);
    checkComment(s.comment);
    const isTypeof = s.type.startsWith("typeof ");
    if (!(isTypeof ? TYPEOF : TYPE).test(s.type)) {
      throw bad(`${s.name}: invalid type ${JSON.stringify(s.type)}`);
    }
    if ("map" in o && !(isTypeof ? TYPEOF_VALUE : TYPE).test(o.map.map)) {
      throw bad(`${s.name}: invalid value type ${o.map.map}`);
    }
    if (s.timeout !== undefined && !TIMEOUT.test(s.timeout)) {
      throw bad(`${s.name}: invalid timeout ${s.timeout}`);
    }
  }
}

function q(comment: string): string {
  return `"${comment}"`;
}

/** `{ type …; flags …; … }` of a set or map. */
function setBody(s: NftSetSpec | NftMapSpec): string {
  const kind = s.type.startsWith("typeof ") ? "" : "type ";
  const parts = [`${kind}${s.type}${"map" in s ? ` : ${s.map}` : ""};`];
  if (s.flags?.length) parts.push(`flags ${s.flags.join(",")};`);
  if (s.timeout) parts.push(`timeout ${s.timeout};`);
  if (s.counter) parts.push("counter;");
  if (s.comment !== undefined) parts.push(`comment ${q(s.comment)};`);
  return ` { ${parts.join(" ")} }`;
}

function chainBody(c: NftChainSpec): string {
  const parts: string[] = [];
  if (c.type !== undefined) parts.push(`type ${c.type} hook ${c.hook} priority ${c.priority};`);
  if (c.policy !== undefined) parts.push(`policy ${c.policy};`);
  if (c.comment !== undefined) parts.push(`comment ${q(c.comment)};`);
  return parts.length ? ` { ${parts.join(" ")} }` : "";
}

/** One element as it appears between braces: `k1 . k2 comment "c" : v1 . v2`. */
export function renderElement(e: NftElementSpec, withValue: boolean): string {
  let s = e.key.join(" . ");
  if (withValue && e.comment !== undefined) s += ` comment ${q(e.comment)}`;
  if (withValue && e.value !== undefined) s += ` : ${e.value.join(" . ")}`;
  return s;
}

/** One element operation, key and value as nft prints them ("10.96.0.1 . tcp . 80", "goto x"). */
export interface NftElementText {
  readonly verb: "add" | "delete";
  readonly set: string;
  readonly key: string;
  readonly value: string | undefined;
}

/**
 * An element operation given as text (NftTransaction.addElement / deleteElement): one object instead of
 * the typed form's five, for the hundreds of thousands a full service sync writes. Materialized into the
 * typed form only when `operations` is read.
 */
class ElementText implements NftElementText {
  constructor(
    readonly verb: "add" | "delete",
    readonly set: string,
    readonly key: string,
    readonly value: string | undefined,
  ) {}

  toOperation(): NftOperation {
    const element: NftElementSpec = { set: this.set, key: this.key.split(" . ") };
    if (this.value !== undefined) element.value = this.value.split(" . ");
    return { verb: this.verb, object: { element } };
  }
}

/** Where an operation's text lies: 1-based line, 1-based inclusive columns. */
interface Span {
  line: number;
  from: number;
  to: number;
  op: number;
}

/** A transaction on one table. */
export class NftTransaction {
  readonly family: NftFamily;
  readonly table: string;
  #ops: (NftOperation | ElementText)[] = [];
  /** The last set name addElement/deleteElement checked (runs of elements name the same set). */
  #checkedSet = "";
  /** render()'s text, kept until the next operation is added. */
  #text: string | undefined;

  constructor(family: NftFamily, table: string) {
    checkName("table", table);
    this.family = family;
    this.table = table;
  }

  #push(verb: NftVerb, o: NftObjectSpec): this {
    validate(verb, o);
    this.#ops.push({ verb, object: o });
    this.#text = undefined;
    return this;
  }

  /** Adds the object; a no-op for an existing table, chain, set, map or identical element. */
  add(o: NftObjectSpec): this {
    return this.#push("add", o);
  }
  /** Adds the object; fails (isExists) if it is present. Not for rules. */
  create(o: NftObjectSpec): this {
    return this.#push("create", o);
  }
  /** Inserts a rule at the chain's head (or before `handle` / at `index`). */
  insert(o: { rule: NftRuleSpec }): this {
    return this.#push("insert", o);
  }
  /** Replaces the rule with `handle`. */
  replace(o: { rule: NftRuleSpec }): this {
    return this.#push("replace", o);
  }
  /** Empties a table (the rules of all its chains; sets and maps keep their elements), a chain, a set or a map. */
  flush(
    o: { table: NftTableSpec } | { chain: NftChainSpec } | { set: NftSetSpec } | { map: NftMapSpec },
  ): this {
    return this.#push("flush", o);
  }
  /** Deletes the object; fails (isNotFound) if it is absent. Rules by handle. */
  delete(o: NftObjectSpec): this {
    return this.#push("delete", o);
  }
  /** Deletes the object if present (emulated as add then delete, see the module comment). Not for rules. */
  destroy(o: NftObjectSpec): this {
    return this.#push("destroy", o);
  }

  /**
   * `add({ element: { set, key, value } })` with key and value as nft prints them: parts joined by " . "
   * ("10.96.0.1 . tcp . 80", "goto svc-web", "10.1.2.5 . 8080"). The same operation, held in one small
   * object and rendered without splitting and joining again; for the large element loads of a full sync.
   */
  addElement(set: string, key: string, value?: string): this {
    return this.#pushText("add", set, key, value);
  }

  /** `delete({ element: { set, key } })`, the key as nft prints it (see addElement). */
  deleteElement(set: string, key: string): this {
    return this.#pushText("delete", set, key, undefined);
  }

  #pushText(verb: "add" | "delete", set: string, key: string, value: string | undefined): this {
    if (set !== this.#checkedSet) {
      checkName("set", set);
      this.#checkedSet = set;
    }
    const bad = (why: string) => new NftSpecError(`${verb} element: ${set}: ${why}`);
    if (!ELEMENT_TEXT.test(key)) throw bad(`invalid key ${JSON.stringify(key)}`);
    if (value !== undefined && !ELEMENT_TEXT.test(value)) throw bad(`invalid value ${JSON.stringify(value)}`);
    this.#ops.push(new ElementText(verb, set, key, value));
    this.#text = undefined;
    return this;
  }

  /**
   * The operations cut into runs, in order: `elements`, a run of element operations given as text
   * (addElement / deleteElement), or `tx`, the operations between such runs as a transaction of their own.
   * `from` is the index here of the run's first operation. For appliers that write elements other than
   * as nft text (Nftables.run with `elementsOverNetlink`).
   */
  segments(): ({ from: number; elements: readonly NftElementText[] } | {
    from: number;
    tx: NftTransaction;
  })[] {
    const out: ({ from: number; elements: NftElementText[] } | { from: number; tx: NftTransaction })[] = [];
    const ops = this.#ops;
    for (let i = 0; i < ops.length;) {
      const text = ops[i] instanceof ElementText;
      let j = i + 1;
      while (j < ops.length && (ops[j] instanceof ElementText) === text) j++;
      if (text) out.push({ from: i, elements: ops.slice(i, j) as ElementText[] });
      else out.push({ from: i, tx: this.slice(i, j) });
      i = j;
    }
    return out;
  }

  /** Operations [from, to) as a transaction of their own (the same operation objects, not checked again). */
  slice(from: number, to: number): NftTransaction {
    const tx = new NftTransaction(this.family, this.table);
    tx.#ops = this.#ops.slice(from, to);
    return tx;
  }

  /** Number of operations. */
  get size(): number {
    return this.#ops.length;
  }

  /** The operations, in order (elements given as text in their typed form). */
  get operations(): readonly NftOperation[] {
    return this.#ops.map((o) => (o instanceof ElementText ? o.toOperation() : o));
  }

  /** The nft -f text. */
  render(): string {
    // Kept: a caller may render ahead of applying (the proxy renders the next chunk while nft applies the
    // previous one), and applying renders again.
    return this.#text ??= this.#render(undefined);
  }

  /**
   * The operations nft's error locations name: `locations` are (line, first column, last column) from
   * nft's `FILE:LINE:FROM-TO: Error:` lines. A location inside an element of a merged element command
   * names that element's operation alone; otherwise every operation on the line.
   */
  operationsAt(locations: readonly { line: number; from?: number; to?: number }[]): number[] {
    if (locations.length === 0) return [];
    const spans: Span[] = [];
    this.#render(spans);
    const out = new Set<number>();
    for (const loc of locations) {
      const onLine = spans.filter((s) => s.line === loc.line);
      const from = loc.from, to = loc.to ?? loc.from;
      const inside = from === undefined
        ? []
        : onLine.filter((s) => s.from <= from && (to === undefined || to <= s.to));
      // The narrowest span containing the location (an element within its command's line).
      inside.sort((a, b) => (a.to - a.from) - (b.to - b.from));
      const pick = inside.length
        ? inside.filter((s) => s.to - s.from === inside[0]!.to - inside[0]!.from)
        : onLine;
      for (const s of pick) out.add(s.op);
    }
    return [...out].sort((a, b) => a - b);
  }

  #render(spans: Span[] | undefined): string {
    const lines: string[] = [];
    const t = `${this.family} ${this.table}`;
    /** Adds a whole-line command for operation `op`. */
    const line = (text: string, op: number) => {
      lines.push(text);
      spans?.push({ line: lines.length, from: 1, to: text.length, op });
    };
    const ops = this.#ops;
    /** The set of an element operation, either form; undefined for other objects. */
    const setOf = (op: NftOperation | ElementText) =>
      op instanceof ElementText ? op.set : "element" in op.object ? op.object.element.set : undefined;
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      const set = setOf(op);
      if (set !== undefined) {
        const verb = op.verb;
        // Consecutive element operations with the same verb on the same set share one command line.
        let j = i;
        while (j + 1 < ops.length) {
          const n = ops[j + 1]!;
          if (n.verb !== verb || setOf(n) !== set) break;
          j++;
        }
        const elementLine = (v: "add" | "create" | "delete", withValue: boolean) => {
          const head = `${v} element ${t} ${set} { `;
          const parts: string[] = [];
          let col = head.length + 1;
          const lineNo = lines.length + 1;
          for (let k = i; k <= j; k++) {
            const e = ops[k]!;
            const s = e instanceof ElementText
              ? (withValue && e.value !== undefined ? `${e.key} : ${e.value}` : e.key)
              : renderElement((e.object as { element: NftElementSpec }).element, withValue);
            parts.push(s);
            spans?.push({ line: lineNo, from: col, to: col + s.length - 1, op: k });
            col += s.length + 2;
          }
          const text = head + parts.join(", ") + " }";
          lines.push(text);
          // The whole line, for errors that name the command rather than one element.
          if (spans) {
            for (let k = i; k <= j; k++) spans.push({ line: lineNo, from: 1, to: text.length, op: k });
          }
        };
        if (verb === "destroy") {
          elementLine("add", true);
          elementLine("delete", false);
        } else elementLine(verb as "add" | "create" | "delete", verb !== "delete");
        i = j;
        continue;
      }
      const { verb, object: o } = op as NftOperation;
      if ("rule" in o) {
        const r = o.rule;
        const pos = r.index !== undefined
          ? ` index ${r.index}`
          : r.handle !== undefined
          ? ` handle ${r.handle}`
          : "";
        const comment = r.comment !== undefined ? ` comment ${q(r.comment)}` : "";
        if (verb === "delete") line(`delete rule ${t} ${r.chain} handle ${r.handle}`, i);
        else if (verb === "replace") {
          line(`replace rule ${t} ${r.chain} handle ${r.handle} ${r.rule}${comment}`, i);
        } else line(`${verb} rule ${t} ${r.chain}${pos} ${r.rule}${comment}`, i);
        continue;
      }
      let kind: string, ref: string, body: string;
      if ("chain" in o) {
        kind = "chain";
        ref = `${t} ${o.chain.name}`;
        body = chainBody(o.chain);
      } else if ("map" in o) {
        kind = "map";
        ref = `${t} ${o.map.name}`;
        body = setBody(o.map);
      } else if ("set" in o) {
        kind = "set";
        ref = `${t} ${o.set.name}`;
        body = setBody(o.set);
      } else {
        const table = (o as { table: NftTableSpec }).table;
        kind = "table";
        ref = t;
        body = table.comment !== undefined ? ` { comment ${q(table.comment)}; }` : "";
      }
      if (verb === "add" || verb === "create") line(`${verb} ${kind} ${ref}${body}`, i);
      else if (verb === "destroy") {
        // A chain is re-added without its hook: `add chain` of an existing base chain with no hook is a no-op.
        line(`add ${kind} ${ref}${kind === "chain" || kind === "table" ? "" : body}`, i);
        line(`delete ${kind} ${ref}`, i);
      } else line(`${verb} ${kind} ${ref}`, i);
    }
    return lines.length ? lines.join("\n") + "\n" : "";
  }
}

/**
 * nft's error locations: `FILE:LINE:FROM-TO: Error: …` (FILE is `<cmdline>` or `/dev/stdin`, or a path).
 */
export function errorLocations(message: string): { line: number; from: number; to: number }[] {
  const out: { line: number; from: number; to: number }[] = [];
  for (const m of message.matchAll(/^[^\n]*?:(\d+):(\d+)(?:-(\d+))?: Error/gm)) {
    const from = Number(m[2]);
    out.push({ line: Number(m[1]), from, to: m[3] !== undefined ? Number(m[3]) : from });
  }
  return out;
}
