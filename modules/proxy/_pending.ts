/**
 * TEMPORARY: the shape of CONTRACTS.md A (typed nftables transactions) while its owner lands it. Deleted as soon as ffi/mod.ts exports it; nothing here is meant to stay.
 */

export type NftFamily = "ip" | "ip6" | "inet" | "bridge" | "arp" | "netdev";
export interface NftTableSpec {
  comment?: string;
}
export interface NftChainSpec {
  name: string;
  type?: "filter" | "nat" | "route";
  hook?: "prerouting" | "input" | "forward" | "output" | "postrouting";
  priority?: number;
  policy?: "accept" | "drop";
  comment?: string;
}
export interface NftRuleSpec {
  chain: string;
  rule: string;
  comment?: string;
  handle?: number;
  index?: number;
}
export interface NftSetSpec {
  name: string;
  type: string;
  flags?: ("interval" | "timeout" | "constant" | "dynamic")[];
  timeout?: string;
  counter?: boolean;
  comment?: string;
}
export interface NftMapSpec extends NftSetSpec {
  map: string;
}
export interface NftElementSpec {
  set: string;
  key: string[];
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

/** Minimal stand-in for contract A's NftTransaction (text rendering only). */
export class NftTransaction {
  #lines: string[] = [];
  constructor(readonly family: NftFamily, readonly table: string) {}
  #obj(verb: string, o: NftObjectSpec): string {
    const t = `${this.family} ${this.table}`;
    if ("table" in o) return `${verb} table ${t}`;
    if ("chain" in o) {
      const c = o.chain;
      if (c.type && verb !== "delete" && verb !== "flush") {
        return `${verb} chain ${t} ${c.name} { type ${c.type} hook ${c.hook} priority ${c.priority} ; policy ${
          c.policy ?? "accept"
        } ; }`;
      }
      return `${verb} chain ${t} ${c.name}`;
    }
    if ("rule" in o) {
      const r = o.rule;
      return `${verb} rule ${t} ${r.chain}${r.handle !== undefined ? ` handle ${r.handle}` : ""} ${r.rule}${
        r.comment ? ` comment "${r.comment}"` : ""
      }`;
    }
    if ("map" in o) {
      const m = o.map;
      if (verb === "delete" || verb === "flush") return `${verb} map ${t} ${m.name}`;
      return `${verb} map ${t} ${m.name} { type ${m.type} : ${m.map} ;${
        m.flags?.length ? ` flags ${m.flags.join(",")} ;` : ""
      } }`;
    }
    if ("set" in o) {
      const s = o.set;
      if (verb === "delete" || verb === "flush") return `${verb} set ${t} ${s.name}`;
      return `${verb} set ${t} ${s.name} { type ${s.type} ;${
        s.flags?.length ? ` flags ${s.flags.join(",")} ;` : ""
      }${s.timeout ? ` timeout ${s.timeout} ;` : ""} }`;
    }
    const e = o.element;
    const k = e.key.join(" . ");
    return `${verb} element ${t} ${e.set} { ${k}${
      e.value && verb !== "delete" ? ` : ${e.value.join(" . ")}` : ""
    } }`;
  }
  add(o: NftObjectSpec): this {
    this.#lines.push(this.#obj("add", o));
    return this;
  }
  flush(o: NftObjectSpec): this {
    this.#lines.push(this.#obj("flush", o));
    return this;
  }
  delete(o: NftObjectSpec): this {
    this.#lines.push(this.#obj("delete", o));
    return this;
  }
  destroy(o: NftObjectSpec): this {
    this.#lines.push(this.#obj("add", o), this.#obj("delete", o));
    return this;
  }
  get size(): number {
    return this.#lines.length;
  }
  render(): string {
    return this.#lines.join("\n") + "\n";
  }
}
