/**
 * The Loc-RIB and the decision process (RFC 4271 9.1.2, with RFC 4456's tie-breaks for reflected
 * routes). Every candidate path to a prefix is kept, per source; `set`/`remove` return whether the best
 * path changed so the speaker only re-advertises what moved.
 */
import { asPathLength, type Family, firstAs, type PathAttributes } from "./types.ts";

/** Where a path came from: the speaker itself (`set()`), or a neighbour. */
export interface PathSource {
  /** "local" or the peer address. */
  id: string;
  ebgp: boolean;
  /** The peer's BGP identifier ("0.0.0.0" for local). */
  routerId: string;
  /** The peer's address (for the last tie-break). */
  address: string;
  /** The peer is our route reflector client. */
  rrClient: boolean;
}

export interface Path {
  source: PathSource;
  attrs: PathAttributes;
  /** Marked by graceful restart while the peer is away; swept after its End-of-RIB or timer. */
  stale: boolean;
  /** Epoch ms when this path was learned. */
  since: number;
}

export const LOCAL_SOURCE: PathSource = {
  id: "local",
  ebgp: false,
  routerId: "0.0.0.0",
  address: "0.0.0.0",
  rrClient: false,
};

export const DEFAULT_LOCAL_PREF = 100;

function ipKey(s: string): string {
  // Comparable text: IPv4 dotted quads padded, IPv6 as is (peer addresses of one family compare fine).
  if (s.includes(".") && !s.includes(":")) return s.split(".").map((x) => x.padStart(3, "0")).join(".");
  return s;
}

/**
 * Compares two paths; negative when `a` is better. The order: highest LOCAL_PREF, locally originated,
 * shortest AS_PATH, lowest ORIGIN, lowest MED (only between paths from the same neighbour AS), eBGP over
 * iBGP, lowest router id (ORIGINATOR_ID for reflected paths), shortest CLUSTER_LIST, lowest peer address.
 */
export function comparePaths(a: Path, b: Path): number {
  const lpA = a.attrs.localPref ?? DEFAULT_LOCAL_PREF, lpB = b.attrs.localPref ?? DEFAULT_LOCAL_PREF;
  if (lpA !== lpB) return lpB - lpA;
  const locA = a.source.id === "local" ? 0 : 1, locB = b.source.id === "local" ? 0 : 1;
  if (locA !== locB) return locA - locB;
  const alA = asPathLength(a.attrs.asPath), alB = asPathLength(b.attrs.asPath);
  if (alA !== alB) return alA - alB;
  if (a.attrs.origin !== b.attrs.origin) return a.attrs.origin - b.attrs.origin;
  const nA = firstAs(a.attrs.asPath), nB = firstAs(b.attrs.asPath);
  if (nA === nB) {
    const mA = a.attrs.med ?? 0, mB = b.attrs.med ?? 0;
    if (mA !== mB) return mA - mB;
  }
  if (a.source.ebgp !== b.source.ebgp) return a.source.ebgp ? -1 : 1;
  const idA = ipKey(a.attrs.originatorId ?? a.source.routerId),
    idB = ipKey(b.attrs.originatorId ?? b.source.routerId);
  if (idA !== idB) return idA < idB ? -1 : 1;
  const clA = a.attrs.clusterList?.length ?? 0, clB = b.attrs.clusterList?.length ?? 0;
  if (clA !== clB) return clA - clB;
  const adA = ipKey(a.source.address), adB = ipKey(b.source.address);
  return adA < adB ? -1 : adA > adB ? 1 : 0;
}

/** Picks the best path; the pairwise walk keeps MED's "same neighbour AS only" rule deterministic. */
export function selectBest(paths: Iterable<Path>): Path | undefined {
  let best: Path | undefined;
  for (const p of paths) if (!best || comparePaths(p, best) < 0) best = p;
  return best;
}

/**
 * A prefix's paths. Almost every prefix has one path, so that case is the Path itself (no Map or array
 * per prefix: 100k prefixes cost tens of MiB less); several paths live in a small array.
 */
interface Multi {
  multi: true;
  paths: Path[];
  best: Path;
}
type Entry = Path | Multi;

const isMulti = (e: Entry): e is Multi => "multi" in e;

/** What a RIB write did to the best path of a prefix; undefined when the best path did not change. */
export type RibChange = { before: Path | undefined; after: Path | undefined } | undefined;

export class LocRib {
  #tables: Record<Family, Map<string, Entry>> = { "ipv4-unicast": new Map(), "ipv6-unicast": new Map() };

  /** Adds or replaces the path from `path.source`; returns the previous and new best when the best changed. */
  set(family: Family, prefix: string, path: Path): RibChange {
    const t = this.#tables[family];
    const e = t.get(prefix);
    if (!e) {
      t.set(prefix, path);
      return { before: undefined, after: path };
    }
    if (!isMulti(e)) {
      if (e.source.id === path.source.id) {
        t.set(prefix, path);
        return { before: e, after: path };
      }
      const best = comparePaths(path, e) < 0 ? path : e;
      t.set(prefix, { multi: true, paths: [e, path], best });
      return best !== e ? { before: e, after: best } : undefined;
    }
    const before = e.best;
    const i = e.paths.findIndex((p) => p.source.id === path.source.id);
    const old = i >= 0 ? e.paths[i] : undefined;
    if (i >= 0) e.paths[i] = path;
    else e.paths.push(path);
    if (before === old) e.best = selectBest(e.paths)!;
    else if (comparePaths(path, before) < 0) e.best = path;
    return e.best !== before ? { before, after: e.best } : undefined;
  }

  remove(family: Family, prefix: string, sourceId: string): RibChange {
    const t = this.#tables[family];
    const e = t.get(prefix);
    if (!e) return undefined;
    if (!isMulti(e)) {
      if (e.source.id !== sourceId) return undefined;
      t.delete(prefix);
      return { before: e, after: undefined };
    }
    const i = e.paths.findIndex((p) => p.source.id === sourceId);
    if (i < 0) return undefined;
    const old = e.paths[i]!;
    e.paths.splice(i, 1);
    const before = e.best;
    if (e.paths.length === 1) {
      const only = e.paths[0]!;
      t.set(prefix, only);
      return only !== before ? { before, after: only } : undefined;
    }
    if (before === old) e.best = selectBest(e.paths)!;
    return e.best !== before ? { before, after: e.best } : undefined;
  }

  best(family: Family, prefix: string): Path | undefined {
    const e = this.#tables[family].get(prefix);
    return e && (isMulti(e) ? e.best : e);
  }

  paths(family: Family, prefix: string): Path[] {
    const e = this.#tables[family].get(prefix);
    return !e ? [] : isMulti(e) ? [...e.paths] : [e];
  }

  get(family: Family, prefix: string, sourceId: string): Path | undefined {
    const e = this.#tables[family].get(prefix);
    if (!e) return undefined;
    if (!isMulti(e)) return e.source.id === sourceId ? e : undefined;
    return e.paths.find((p) => p.source.id === sourceId);
  }

  /** Every prefix with its best path and all its paths. */
  *entries(family: Family): IterableIterator<[string, Path, Path[]]> {
    for (const [prefix, e] of this.#tables[family]) {
      if (isMulti(e)) yield [prefix, e.best, [...e.paths]];
      else yield [prefix, e, [e]];
    }
  }

  size(family: Family): number {
    return this.#tables[family].size;
  }
}
