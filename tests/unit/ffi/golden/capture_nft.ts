/**
 * Re-captures nft.json from the real nft (needs root): the golden ruleset (nft_golden.ts) is applied with
 * `nft -f` in a throwaway namespace, then what `nft -j list table` and `nft list table` print is stored.
 * Run: `deno run -A tests/unit/ffi/golden/capture_nft.ts`.
 */
import { NetNs } from "../../../_support/netns.ts";
import { goldenTransaction } from "./nft_golden.ts";

const ns = await NetNs.create("golden");
try {
  const input = goldenTransaction().render();
  await ns.exec(["nft", "-f", "-"], { stdin: input });
  const json = await ns.exec(["nft", "-j", "list", "table", "inet", "golden"]);
  const text = await ns.exec(["nft", "list", "table", "inet", "golden"]);
  const path = new URL("./nft.json", import.meta.url);
  await Deno.writeTextFile(
    path,
    JSON.stringify({ input, output: JSON.parse(json.stdout), text: text.stdout }, null, 2) + "\n",
  );
  console.log(`wrote ${path.pathname}`);
} finally {
  await ns.remove();
}
