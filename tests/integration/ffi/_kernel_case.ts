/** Runs one conformance case against the real kernel of the namespace this process is in (via inNetns). */
import { Nftables, Rtnetlink } from "../../../ffi/mod.ts";
import { type Case, nftCases, rtnlCases } from "../../unit/ffi/_conformance.ts";

async function runOne<T extends { close(): void }>(
  cases: Case<T>[],
  kind: string,
  name: string,
  open: () => T,
) {
  const c = cases.find((x) => x.name === name);
  if (!c) throw new Error(`no ${kind} case ${name}`);
  const impl = open();
  try {
    await c.fn(impl);
  } finally {
    impl.close();
  }
}

export async function runCase(kind: "rtnl" | "nft", name: string): Promise<string> {
  if (kind === "rtnl") await runOne(rtnlCases, kind, name, () => new Rtnetlink());
  else await runOne(nftCases, kind, name, () => new Nftables());
  return "ok";
}
