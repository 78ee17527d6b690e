/**
 * The V8 flags the agent runs with, everywhere it runs: `deno task start` (deno.json), the compiled binary
 * (dist/compile.ts), the lab's agents and the benchmarks' agents. One definition; a unit test checks
 * deno.json says the same.
 *
 * - `--optimize-for-size`: smaller heaps (the watch layer's cache of 5,000 Services and 10,000 Pods stays
 *   under 200 MiB, BENCHMARKS.md).
 * - `--heap-growing-percent=30`: under `--optimize-for-size` alone the old generation grows by a few
 *   percent at a time, so a cold sync of 10,000 Services ran about 18 full collections, each marking the
 *   whole informer cache: half of the sync's CPU was garbage collection. Growing by half halved that CPU,
 *   but the next collection then waits until the heap is half as large again as what was live, and at
 *   10,000 Services the agent's peak RSS landed anywhere from 200 to 250 MiB depending on where the
 *   collections fell. 30 % keeps most of the saving (a cold sync about 10 % slower than at 50 %) and
 *   the peaks at 200 to 215 MiB (bench/proxy_scale.ts; 20 % cost another 20 % of the sync for 10 MiB).
 * - `--expose-gc`: so that the agent can collect at once after a full sync or a large scrape
 *   (core/memory.ts) instead of letting the heap grow by half first.
 */
export const AGENT_V8_FLAGS = "--optimize-for-size,--heap-growing-percent=30,--expose-gc";
