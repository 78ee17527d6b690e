/**
 * NetworkPolicy ipBlock: a CIDR with `except` holes, turned into the disjoint address ranges an
 * nftables interval set holds (`10.0.0.0-10.0.1.255`). Computing the difference here, instead of a
 * "match the CIDR and not the excepts" pair of rules, keeps one peer one set lookup and keeps the
 * holes exact whatever else the rule matches.
 */
import { type Cidr, type Family, formatCidr, formatIP, parseCidr } from "../../ffi/mod.ts";

export interface IpBlockRanges {
  family: Family;
  /** Disjoint, sorted, as nft interval elements: `a.b.c.d/nn` when a prefix, else `first-last`. */
  elements: string[];
  /** Canonical text of the block (`cidr except e1,e2`), for set keys and comments. */
  key: string;
}

export type IpBlockResult = { ok: true; ranges: IpBlockRanges } | { ok: false; error: string };

/** Parses and validates an ipBlock: invalid CIDRs, mixed families, and excepts outside the CIDR are errors. */
export function ipBlockRanges(cidr: unknown, except: unknown): IpBlockResult {
  if (typeof cidr !== "string") return { ok: false, error: "ipBlock.cidr is missing" };
  const base = parseCidr(cidr);
  if (!base) return { ok: false, error: `ipBlock.cidr ${JSON.stringify(cidr)} is not a valid CIDR` };
  const holes: Cidr[] = [];
  if (except !== undefined && except !== null) {
    if (!Array.isArray(except)) return { ok: false, error: "ipBlock.except is not a list" };
    for (const e of except) {
      const c = typeof e === "string" ? parseCidr(e) : undefined;
      if (!c) return { ok: false, error: `ipBlock.except ${JSON.stringify(e)} is not a valid CIDR` };
      if (c.family !== base.family) {
        return { ok: false, error: `ipBlock.except ${e} is not the same family as ${cidr}` };
      }
      // The API server requires a strict subset; a hole outside the block would only hide a typo.
      if (c.prefix <= base.prefix || !contains(base, c)) {
        return { ok: false, error: `ipBlock.except ${e} is not strictly inside ${cidr}` };
      }
      holes.push(c);
    }
  }
  const bits = base.family === 4 ? 32 : 128;
  let ranges: [bigint, bigint][] = [span(base, bits)];
  for (const h of holes) {
    const [hs, he] = span(h, bits);
    const next: [bigint, bigint][] = [];
    for (const [s, e] of ranges) {
      if (he < s || hs > e) {
        next.push([s, e]);
        continue;
      }
      if (hs > s) next.push([s, hs - 1n]);
      if (he < e) next.push([he + 1n, e]);
    }
    ranges = next;
  }
  ranges.sort((a, b) => (a[0] < b[0] ? -1 : 1));
  const key = formatCidr(base) +
    (holes.length ? " except " + [...new Set(holes.map(formatCidr))].sort().join(",") : "");
  return {
    ok: true,
    ranges: { family: base.family, elements: ranges.map(([s, e]) => rangeText(s, e, bits)), key },
  };
}

function contains(outer: Cidr, inner: Cidr): boolean {
  const bits = outer.family === 4 ? 32 : 128;
  const [os, oe] = span(outer, bits);
  const [is, ie] = span(inner, bits);
  return is >= os && ie <= oe;
}

function toBig(addr: Uint8Array): bigint {
  let v = 0n;
  for (const b of addr) v = (v << 8n) | BigInt(b);
  return v;
}

function fromBig(v: bigint, bits: number): Uint8Array {
  const out = new Uint8Array(bits / 8);
  for (let i = out.length - 1; i >= 0; i--) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  return out;
}

function span(c: Cidr, bits: number): [bigint, bigint] {
  const start = toBig(c.addr);
  return [start, start + (1n << BigInt(bits - c.prefix)) - 1n];
}

/** `first-last`, or `first/len` when the range is exactly one prefix. */
function rangeText(s: bigint, e: bigint, bits: number): string {
  const size = e - s + 1n;
  if ((size & (size - 1n)) === 0n && (s & (size - 1n)) === 0n) {
    const len = bits - (size.toString(2).length - 1);
    return len === bits ? formatIP(fromBig(s, bits)) : `${formatIP(fromBig(s, bits))}/${len}`;
  }
  return `${formatIP(fromBig(s, bits))}-${formatIP(fromBig(e, bits))}`;
}
