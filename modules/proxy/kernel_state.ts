/**
 * What the kernel really holds in the proxy's table, read back from libnftables' JSON listings (pure
 * parsing): the table listed terse (chains and sets without elements), then each map and set on its own,
 * so no listing holds the whole table (1.6 GiB of JSON at 10,000 Services with chains per endpoint). The periodic full resync diffs against it instead of against what the
 * agent believes it wrote, so an element or chain someone deleted or changed by hand is put back, and
 * leftovers from a previous run (another version, a crash) are removed.
 */
import type { NftObject } from "../../ffi/mod.ts";
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
