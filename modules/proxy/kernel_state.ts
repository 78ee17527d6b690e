/**
 * What the kernel really holds in the proxy's table. The periodic full resync diffs against it instead of
 * against what the agent believes it wrote, so an element or chain someone deleted or changed by hand is
 * put back, and leftovers from a previous run (another version, a crash) are removed.
 *
 * Read by `listKernelState`: the table's chain and set names, then each map and set's elements streamed
 * from the kernel one at a time (Nftables.listLayout / listElements, over netlink) straight into one Map
 * of element id -> value, with no listing text or JSON tree held. At 10,000 Services × 10 endpoints the
 * JSON way (a terse libnftables listing, then `nft -j list map` per map, parsed) took 8 s and the agent's
 * RSS to 444 MiB; a set whose types the netlink reader cannot print still goes that way
 * (`parseKernelState`).
 *
 * A periodic resync does not even keep that Map: `compareKernelState` checks each element against what the
 * agent believes it programmed as it streams by and keeps only the differences (an element's other value,
 * an element nobody believes in, a believed one missing), the 170,000-entry Map being about 30 MiB of the
 * agent's heap at 10,000 Services. The first sync of a run, with nothing believed yet, lists.
 */
import { isNotFound, type NftObject, type NftSetInfo, NftUndecodable } from "../../ffi/mod.ts";
import type { NftRuleset } from "../../ffi/mod.ts";
import { elementId, isServiceObjectName } from "./nft_render.ts";

export interface KernelState {
  /** Every chain in the table. */
  chains: Set<string>;
  /** Per-service sets (affinity sets): names containing "/". */
  serviceSets: Set<string>;
  /**
   * Elements of the fixed maps and sets, as RenderedService.elements ids -> verdict or endpoint ("" for set
   * elements).
   */
  elements: Map<string, string>;
}

function part(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (typeof v === "number") return String(v);
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    // An interval set element lists as a prefix; a single address in an interval set as the address.
    const p = o.prefix as { addr?: unknown; len?: unknown } | undefined;
    if (p && typeof p.addr === "string" && typeof p.len === "number") return `${p.addr}/${p.len}`;
    if ("elem" in o) return part((o.elem as Record<string, unknown>)?.val);
  }
  return undefined;
}

function keyParts(k: unknown): string[] | undefined {
  if (k && typeof k === "object" && "concat" in (k as object)) {
    const c = (k as { concat: unknown }).concat;
    if (!Array.isArray(c)) return undefined;
    const parts = c.map(part);
    return parts.every((p) => p !== undefined) ? parts as string[] : undefined;
  }
  if (k && typeof k === "object" && "elem" in (k as object)) {
    return keyParts((k as { elem: { val?: unknown } }).elem?.val);
  }
  const p = part(k);
  return p === undefined ? undefined : [p];
}

/**
 * `{goto: {target: "x"}}` -> "goto x", `{drop: null}` -> "drop"; an endpoint `{concat: ["10.1.2.5", 8080]}`
 * -> "10.1.2.5 . 8080".
 */
function verdict(v: unknown): string | undefined {
  if (typeof v === "string" || typeof v === "number") return String(v);
  if (!v || typeof v !== "object") return undefined;
  if ("concat" in v) return keyParts(v)?.join(" . ");
  const [k, body] = Object.entries(v as Record<string, unknown>)[0] ?? [];
  if (k === undefined) return undefined;
  if (k === "goto" || k === "jump") {
    const t = (body as { target?: unknown })?.target;
    return typeof t === "string" ? `${k} ${t}` : undefined;
  }
  return k;
}

export function parseKernelState(objs: readonly NftObject[]): KernelState {
  const out: KernelState = { chains: new Set(), serviceSets: new Set(), elements: new Map() };
  for (const o of objs) {
    if ("chain" in o) {
      const name = (o.chain as { name?: unknown }).name;
      if (typeof name === "string") out.chains.add(name);
      continue;
    }
    const isMap = "map" in o;
    if (!isMap && !("set" in o)) continue;
    const body = (isMap ? o.map : o.set) as { name?: unknown; elem?: unknown };
    if (typeof body.name !== "string") continue;
    if (isServiceObjectName(body.name)) {
      out.serviceSets.add(body.name);
      continue;
    }
    if (!Array.isArray(body.elem)) continue;
    for (const e of body.elem) {
      if (isMap) {
        if (!Array.isArray(e) || e.length !== 2) continue;
        const k = keyParts(e[0]);
        const v = verdict(e[1]);
        if (k && v) out.elements.set(elementId(body.name, k), v);
      } else {
        const k = keyParts(e);
        if (k) out.elements.set(elementId(body.name, k), "");
      }
    }
  }
  return out;
}

/** What `listKernelState` needs of nftables (Nftables and FakeNftables provide it). */
export type KernelReader = Pick<NftRuleset, "listLayout" | "listElements" | "list">;

/**
 * Lists the table's chains, its per-service sets, and the elements of every other set or map except
 * those `skip` names, one set at a time. An empty state if the table is gone.
 */
export async function listKernelState(
  nft: KernelReader,
  table: { family: string; name: string },
  skip: (set: string) => boolean,
): Promise<KernelState> {
  const out: KernelState = { chains: new Set(), serviceSets: new Set(), elements: new Map() };
  const layout = await nft.listLayout(table);
  if (!layout) return out;
  for (const c of layout.chains) out.chains.add(c);
  for (const set of layout.sets) {
    if (isServiceObjectName(set.name)) {
      out.serviceSets.add(set.name);
      continue;
    }
    if (skip(set.name)) continue;
    const prefix = `${set.name}|`;
    try {
      await nft.listElements(
        table,
        set,
        (key, value) => out.elements.set(prefix + key, value),
        () => {
          for (const id of out.elements.keys()) if (id.startsWith(prefix)) out.elements.delete(id);
        },
      );
    } catch (err) {
      if (!(err instanceof NftUndecodable)) throw err;
      // Types only nft prints right (an interval set's prefixes): its JSON listing, in a child nft.
      for (const [id, v] of (await listJson(nft, table, set)).elements) out.elements.set(id, v);
    }
  }
  return out;
}

/** What the agent believes the kernel holds in its maps and sets (the proxy's programmed Services). */
export interface Belief {
  /** The value it believes the kernel holds for an element id ("" for a set's element), or undefined. */
  valueOf(id: string): string | undefined;
  /** How many elements it believes each map or set holds, by name. */
  counts(): Map<string, number>;
  /** The element ids it believes one map or set holds. */
  idsOf(set: string): Iterable<string>;
}

/** Where the kernel differs from the belief, and the table's chains and per-service sets. */
export interface KernelDiff {
  chains: Set<string>;
  serviceSets: Set<string>;
  /** Elements the kernel holds with another value than believed, or not believed at all: id -> its value. */
  odd: Map<string, string>;
  /** Elements believed but not in the kernel. */
  missing: Set<string>;
}

/**
 * Compares the kernel's elements with the belief as they stream in, one set at a time, keeping only the
 * differences: an element the kernel holds as believed costs a lookup and nothing is kept of it. A set
 * holding fewer believed elements than believed is read a second time (keys only) to name the missing
 * ones. Undefined if the table is gone.
 */
export async function compareKernelState(
  nft: KernelReader,
  table: { family: string; name: string },
  skip: (set: string) => boolean,
  belief: Belief,
): Promise<KernelDiff | undefined> {
  const layout = await nft.listLayout(table);
  if (!layout) return undefined;
  const out: KernelDiff = {
    chains: new Set(layout.chains),
    serviceSets: new Set(),
    odd: new Map(),
    missing: new Set(),
  };
  const expected = belief.counts();
  const listed = new Set<string>();
  for (const set of layout.sets) {
    if (isServiceObjectName(set.name)) {
      out.serviceSets.add(set.name);
      continue;
    }
    if (skip(set.name)) continue;
    listed.add(set.name);
    const prefix = `${set.name}|`;
    let matched = 0;
    const oddHere: string[] = [];
    const visit = (id: string, value: string) => {
      if (belief.valueOf(id) === value) matched++;
      else {
        out.odd.set(id, value);
        oddHere.push(id);
      }
    };
    const restart = () => {
      matched = 0;
      for (const id of oddHere.splice(0)) out.odd.delete(id);
    };
    try {
      await nft.listElements(table, set, (key, value) => visit(prefix + key, value), restart);
    } catch (err) {
      if (!(err instanceof NftUndecodable)) throw err;
      restart();
      for (const [id, v] of (await listJson(nft, table, set)).elements) visit(id, v);
    }
    if (matched === (expected.get(set.name) ?? 0)) continue;
    // Some believed element is missing: which ones, from the set's keys.
    const present = new Set<string>();
    try {
      await nft.listElements(table, set, (key) => present.add(prefix + key), () => present.clear());
    } catch (err) {
      if (!(err instanceof NftUndecodable)) throw err;
      for (const id of (await listJson(nft, table, set)).elements.keys()) present.add(id);
    }
    for (const id of belief.idsOf(set.name)) if (!present.has(id)) out.missing.add(id);
  }
  // A believed set the table no longer has (its elements go with it): all of them missing.
  for (const name of expected.keys()) {
    if (!listed.has(name) && !skip(name)) { for (const id of belief.idsOf(name)) out.missing.add(id); }
  }
  return out;
}

/** One set's elements through nft's JSON listing, in a child nft (types only nft prints right). */
async function listJson(
  nft: KernelReader,
  table: { family: string; name: string },
  set: NftSetInfo,
): Promise<KernelState> {
  const ref = { family: table.family, table: table.name, name: set.name };
  try {
    return parseKernelState(await nft.list(set.map ? { map: ref } : { set: ref }, { outOfProcess: true }));
  } catch (e) {
    if (!isNotFound(e)) throw e;
    return parseKernelState([]);
  }
}
