/**
 * The traffic side of bench/proxy_scale.ts's connect() figure, run in a namespace of its own:
 *
 *   server --port P                      accepts TCP connections and closes them at once;
 *   client --targets IP:P,IP:P --rounds R --batch B
 *                                        R rounds; in each, B sequential connects to every target in turn
 *                                        (after one unrecorded warm-up round; the order alternating between rounds, so drifts in the machine's
 *                                        load fall on every target alike); prints one JSON line: per target
 *                                        the connect() times in ms (from the call to the established socket).
 */
import { parseArgs } from "node:util";

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    port: { type: "string", default: "8080" },
    targets: { type: "string", default: "" },
    rounds: { type: "string", default: "20" },
    batch: { type: "string", default: "50" },
  },
});

if (positionals[0] === "server") {
  const l = Deno.listen({ hostname: "0.0.0.0", port: Number(values.port) });
  console.log("listening");
  for await (const c of l) c.close();
} else if (positionals[0] === "client") {
  const targets = values.targets!.split(",").map((t) => {
    const [hostname, port] = t.split(":");
    return { hostname: hostname!, port: Number(port) };
  });
  const times: number[][] = targets.map(() => []);
  const failed: number[] = targets.map(() => 0);
  // Round -1 warms up (neighbour entries, routes, the JIT) and is not recorded.
  for (let r = -1; r < Number(values.rounds); r++) {
    const order = r % 2 ? [...targets.keys()].reverse() : [...targets.keys()];
    for (const i of order) {
      for (let b = 0; b < Number(values.batch); b++) {
        const t0 = performance.now();
        try {
          const c = await Deno.connect({ ...targets[i]!, transport: "tcp" });
          if (r >= 0) times[i]!.push(performance.now() - t0);
          c.close();
        } catch {
          if (r >= 0) failed[i]!++;
        }
      }
    }
  }
  console.log(JSON.stringify({ targets: values.targets!.split(","), times, failed }));
} else {
  console.error("usage: _proxy_connect.ts server|client …");
  Deno.exit(2);
}
