/**
 * `FakeNftables`: an in-memory `NftRuleset` that understands the subset of nft's JSON commands the agent
 * uses (add/create/delete/flush of tables, chains, sets, maps, elements and rules) with nft's
 * transaction semantics: a failing command rolls back the whole batch, and errors carry nft's own
 * message text ("No such file or directory", "File exists") so `isNotFound`/`isExists` work the same.
 * Rule expressions and element forms are kept as given (nft prints the common ones back unchanged; see the
 * golden test); element timeouts, counters, `replace rule` and rule positions are not modelled.
 */
import { NftError } from "./errors.ts";
import type { NftCommand, NftListOptions, NftListTarget, NftObject, NftRuleset } from "./nftables.ts";

interface FakeSet {
  props: Record<string, unknown>;
  isMap: boolean;
  /** key (JSON) -> element as given (value for sets, [key, value] for maps) */
  elems: Map<string, unknown>;
  handle: number;
}
interface FakeChain {
  props: Record<string, unknown>;
  rules: { handle: number; expr: unknown; comment?: string }[];
  handle: number;
}
interface FakeTable {
  family: string;
  name: string;
  handle: number;
  chains: Map<string, FakeChain>;
  sets: Map<string, FakeSet>;
  nextHandle: number;
}
interface State {
  tables: Map<string, FakeTable>;
  nextTableHandle: number;
}

const ENOENT = "Error: Could not process rule: No such file or directory";
const EEXIST = "Error: Could not process rule: File exists";
const EBUSY = "Error: Could not process rule: Device or resource busy";

function tkey(family: string, name: string): string {
  return `${family} ${name}`;
}

function str(o: Record<string, unknown>, k: string): string {
  const v = o[k];
  if (typeof v !== "string") throw new NftError(1, `Error: missing or invalid "${k}"`);
  return v;
}

function elemKey(e: unknown, isMap: boolean): string {
  const k = isMap && Array.isArray(e) ? e[0] : e;
  return JSON.stringify(k);
}

function cloneState(s: State): State {
  return structuredClone(s);
}

/** In-memory nftables with atomic transactions. */
export class FakeNftables implements NftRuleset {
  #state: State = { tables: new Map(), nextTableHandle: 1 };
  /** Number of transactions applied successfully (for tests asserting on batching). */
  transactions = 0;

  apply(commands: readonly NftCommand[]): Promise<void> {
    if (commands.length === 0) return Promise.resolve();
    const next = cloneState(this.#state);
    try {
      for (const c of commands) this.#exec(next, c);
    } catch (e) {
      return Promise.reject(e instanceof NftError ? e : new NftError(1, String(e), { cause: e }));
    }
    this.#state = next;
    this.transactions++;
    return Promise.resolve();
  }

  #table(s: State, o: Record<string, unknown>, tableKey = "table"): FakeTable {
    const t = s.tables.get(tkey(str(o, "family"), str(o, tableKey)));
    if (!t) throw new NftError(1, ENOENT);
    return t;
  }

  #exec(s: State, cmd: NftCommand): void {
    const verbs = Object.keys(cmd);
    if (verbs.length !== 1) {
      throw new NftError(1, `Error: command must have one verb, got ${verbs.join(",")}`);
    }
    const verb = verbs[0]!;
    const body = cmd[verb] as Record<string, Record<string, unknown>>;
    const kinds = Object.keys(body ?? {});
    if (kinds.length !== 1) throw new NftError(1, `Error: ${verb} needs one object`);
    const kind = kinds[0]!;
    const o = body[kind]!;
    switch (`${verb} ${kind}`) {
      case "add table":
      case "create table": {
        const k = tkey(str(o, "family"), str(o, "name"));
        if (s.tables.has(k)) {
          if (verb === "create") throw new NftError(1, EEXIST);
          return;
        }
        s.tables.set(k, {
          family: str(o, "family"),
          name: str(o, "name"),
          handle: s.nextTableHandle++,
          chains: new Map(),
          sets: new Map(),
          nextHandle: 1,
        });
        return;
      }
      case "delete table":
      case "destroy table": {
        const k = tkey(str(o, "family"), str(o, "name"));
        if (!s.tables.delete(k) && verb === "delete") throw new NftError(1, ENOENT);
        return;
      }
      case "flush table": {
        const t = this.#table(s, o, "name");
        for (const c of t.chains.values()) c.rules = [];
        for (const st of t.sets.values()) st.elems.clear();
        return;
      }
      case "add chain":
      case "create chain": {
        const t = this.#table(s, o);
        const name = str(o, "name");
        if (t.chains.has(name)) {
          if (verb === "create") throw new NftError(1, EEXIST);
          return;
        }
        const { family: _f, table: _t, ...props } = o;
        t.chains.set(name, { props, rules: [], handle: t.nextHandle++ });
        return;
      }
      case "delete chain":
      case "destroy chain": {
        const t = s.tables.get(tkey(str(o, "family"), str(o, "table")));
        const c = t?.chains.get(str(o, "name"));
        if (!t || !c) {
          if (verb === "delete") throw new NftError(1, ENOENT);
          return;
        }
        // The kernel refuses to delete a chain that a rule or a map element jumps to; its own rules go with it.
        const name = str(o, "name");
        const ref = [
          `{"jump":{"target":${JSON.stringify(name)}}}`,
          `{"goto":{"target":${JSON.stringify(name)}}}`,
        ];
        const refers = (x: unknown) => ref.some((r) => JSON.stringify(x).includes(r));
        const referenced = [...t.chains.values()].some((ch) => ch.rules.some((r) => refers(r.expr))) ||
          [...t.sets.values()].some((st) => st.isMap && [...st.elems.values()].some(refers));
        if (referenced) throw new NftError(1, EBUSY);
        t.chains.delete(name);
        return;
      }
      case "flush chain": {
        const c = this.#table(s, o).chains.get(str(o, "name"));
        if (!c) throw new NftError(1, ENOENT);
        c.rules = [];
        return;
      }
      case "add set":
      case "create set":
      case "add map":
      case "create map": {
        const t = this.#table(s, o);
        const name = str(o, "name");
        if (t.sets.has(name)) {
          if (verb === "create") throw new NftError(1, EEXIST);
        } else {
          const { family: _f, table: _t, elem: _e, ...props } = o;
          t.sets.set(name, { props, isMap: kind === "map", elems: new Map(), handle: t.nextHandle++ });
        }
        if (Array.isArray(o.elem)) {
          this.#exec(s, { add: { element: { family: o.family, table: o.table, name, elem: o.elem } } });
        }
        return;
      }
      case "delete set":
      case "delete map":
      case "destroy set":
      case "destroy map": {
        const t = s.tables.get(tkey(str(o, "family"), str(o, "table")));
        if (!t || !t.sets.delete(str(o, "name"))) {
          if (verb === "delete") throw new NftError(1, ENOENT);
        }
        return;
      }
      case "flush set":
      case "flush map": {
        const st = this.#table(s, o).sets.get(str(o, "name"));
        if (!st) throw new NftError(1, ENOENT);
        st.elems.clear();
        return;
      }
      case "add element":
      case "create element":
      case "delete element":
      case "destroy element": {
        const st = this.#table(s, o).sets.get(str(o, "name"));
        if (!st) throw new NftError(1, ENOENT);
        const elems = Array.isArray(o.elem) ? o.elem : [o.elem];
        for (const e of elems) {
          const k = elemKey(e, st.isMap);
          if (verb === "delete" || verb === "destroy") {
            if (!st.elems.delete(k) && verb === "delete") throw new NftError(1, ENOENT);
          } else {
            if (st.elems.has(k) && verb === "create") throw new NftError(1, EEXIST);
            // Like the kernel, a verdict may only name a chain that exists in the same table.
            if (st.isMap && Array.isArray(e)) {
              const v = e[1] as Record<string, { target?: unknown }> | undefined;
              const target = v?.jump?.target ?? v?.goto?.target;
              if (typeof target === "string" && !this.#table(s, o).chains.has(target)) {
                throw new NftError(1, ENOENT);
              }
            }
            st.elems.set(k, structuredClone(e));
          }
        }
        return;
      }
      case "add rule":
      case "insert rule": {
        const t = this.#table(s, o);
        const c = t.chains.get(str(o, "chain"));
        if (!c) throw new NftError(1, ENOENT);
        const r: FakeChain["rules"][number] = { handle: t.nextHandle++, expr: structuredClone(o.expr ?? []) };
        if (typeof o.comment === "string") r.comment = o.comment;
        if (verb === "insert") c.rules.unshift(r);
        else c.rules.push(r);
        return;
      }
      case "delete rule": {
        const t = this.#table(s, o);
        const c = t.chains.get(str(o, "chain"));
        const i = c ? c.rules.findIndex((r) => r.handle === o.handle) : -1;
        if (!c || i < 0) throw new NftError(1, ENOENT);
        c.rules.splice(i, 1);
        return;
      }
      default:
        throw new NftError(1, `Error: FakeNftables does not support "${verb} ${kind}"`);
    }
  }

  #render(t: FakeTable): NftObject[] {
    const out: NftObject[] = [{ table: { family: t.family, name: t.name, handle: t.handle } }];
    for (const [name, st] of t.sets) out.push(this.#renderSet(t, name, st));
    for (const [name, c] of t.chains) {
      out.push({ chain: { family: t.family, table: t.name, name, handle: c.handle, ...c.props } });
    }
    for (const [name, c] of t.chains) {
      for (const r of c.rules) {
        out.push({
          rule: {
            family: t.family,
            table: t.name,
            chain: name,
            handle: r.handle,
            ...(r.comment ? { comment: r.comment } : {}),
            expr: r.expr,
          },
        });
      }
    }
    return out;
  }

  #renderSet(t: FakeTable, name: string, st: FakeSet): NftObject {
    const o: Record<string, unknown> = {
      family: t.family,
      name,
      table: t.name,
      ...st.props,
      handle: st.handle,
    };
    if (st.elems.size) o.elem = [...st.elems.values()].map((e) => structuredClone(e));
    return { [st.isMap ? "map" : "set"]: o };
  }

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

  #list(target: NftListTarget): Promise<NftObject[]> {
    const s = this.#state;
    if ("ruleset" in target) return Promise.resolve([...s.tables.values()].flatMap((t) => this.#render(t)));
    if ("table" in target) {
      const t = s.tables.get(tkey(target.table.family, target.table.name));
      return t
        ? Promise.resolve(this.#render(t))
        : Promise.reject(new NftError(1, "Error: No such file or directory"));
    }
    const [kind, ref] = "chain" in target
      ? ["chain", target.chain] as const
      : "set" in target
      ? ["set", target.set] as const
      : ["map", target.map] as const;
    const t = s.tables.get(tkey(ref.family, ref.table));
    if (kind === "chain") {
      const c = t?.chains.get(ref.name);
      if (!t || !c) return Promise.reject(new NftError(1, "Error: No such file or directory"));
      return Promise.resolve(
        this.#render(t).filter((o) =>
          ("chain" in o && (o.chain as { name: string }).name === ref.name) ||
          ("rule" in o && (o.rule as { chain: string }).chain === ref.name)
        ),
      );
    }
    const st = t?.sets.get(ref.name);
    if (!t || !st || st.isMap !== (kind === "map")) {
      return Promise.reject(new NftError(1, "Error: No such file or directory"));
    }
    return Promise.resolve([this.#renderSet(t, ref.name, st)]);
  }

  close(): void {}
}
