/**
 * The V8 flags the agent runs with, everywhere it runs: `deno task start` (deno.json), the compiled binary
 * (dist/compile.ts), the lab's agents and the benchmarks' agents. One definition; a unit test checks
 * deno.json says the same.
 *
 * - `--optimize-for-size`: smaller heaps (the watch layer's cache of 5,000 Services and 10,000 Pods stays
 *   under 200 MiB, BENCHMARKS.md).
 * - `--heap-growing-percent=50`: under `--optimize-for-size` alone the old generation grows by a few
 *   percent at a time, so a cold sync of 10,000 Services ran about 18 full collections, each marking the
 *   whole informer cache: half of the sync's CPU was garbage collection. Growing by half (V8's default
 *   without the flag is larger still) halved the agent's CPU for that sync with the same peak RSS
 *   (bench/proxy_scale.ts, BENCHMARKS.md).
 * - `--expose-gc`: so that the agent can collect at once after a full sync or a large scrape
 *   (core/memory.ts) instead of letting the heap grow by half first.
 */
export const AGENT_V8_FLAGS = "--optimize-for-size,--heap-growing-percent=50,--expose-gc";
