/** Runs one FDB conformance case against the real kernel of the namespace this process is in (via inNetns). */
import { NetlinkFdb, Rtnetlink } from "../../../ffi/mod.ts";
import { fdbCases } from "../../unit/ffi/_fdb_conformance.ts";

export async function runFdbCase(name: string): Promise<string> {
  const c = fdbCases.find((x) => x.name === name);
  if (!c) throw new Error(`no fdb case ${name}`);
  const rtnl = new Rtnetlink();
  const fdb = new NetlinkFdb();
  try {
    await c.fn({ rtnl, fdb });
  } finally {
    fdb.close();
    rtnl.close();
  }
  return "ok";
}
