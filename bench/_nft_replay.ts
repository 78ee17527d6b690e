/**
 * The reference side of bench/proxy_scale.ts's event-latency figure, run inside the namespace that holds
 * the reference ruleset (the agent's ruleset loaded with `nft -f`): applies, in order, the transactions the
 * agent applied during its event window that carried events (added an endpoint slot for a 10.250.x.y
 * address; at most the second argument's number of them), each through libnftables in this process as
 * the agent does, and prints one JSON line with each one's wall time in ms. The agent's other
 * transactions (unused chains deleted) are left out: the ones replayed do not depend on them.
 */
import { Nftables } from "../ffi/mod.ts";

const text = await Deno.readTextFile(Deno.args[0]!);
const limit = Number(Deno.args[1] ?? Infinity);
const all = text.split(/^# tx \d+\n/m).filter((t) => t.trim());
const carries = (tx: string) => /^add element .*: 10\.250\.\d+\.\d+ \. 8080/m.test(tx);
// The first `limit` transactions that carried events (at 10,000 Services each costs seconds here).
const txs = all.filter(carries).slice(0, limit);
const nft = new Nftables();
const out: { ms: number; event: boolean }[] = [];
for (const tx of txs) {
  const t0 = performance.now();
  try {
    await nft.applyText(tx);
    out.push({ ms: performance.now() - t0, event: carries(tx) });
  } catch (err) {
    console.error(`replayed transaction failed: ${err}`);
    out.push({ ms: performance.now() - t0, event: false });
  }
}
nft.close();
console.log(JSON.stringify(out));
