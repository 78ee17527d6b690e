/** Runs one conformance case against the real kernel of the namespace this process is in (via inNetns). */
import { Nftables, Rtnetlink } from "../../../ffi/mod.ts";
import { nftCases, rtnlCases } from "../../unit/ffi/_conformance.ts";

export async function runCase(kind: "rtnl" | "nft", name: string): Promise<string> {
  if (kind === "rtnl") {
    const c = rtnlCases.find((x) => x.name === name);
    if (!c) throw new Error(`no rtnl case ${name}`);
    const r = new Rtnetlink();
    try {
      await c.fn(r);
    } finally {
      r.close();
    }
  } else {
    const c = nftCases.find((x) => x.name === name);
    if (!c) throw new Error(`no nft case ${name}`);
    const n = new Nftables();
    try {
      await c.fn(n);
    } finally {
      n.close();
    }
  }
  return "ok";
}
