/**
 * Giving memory back after work that leaves a lot of garbage at once: a full sync of thousands of
 * Services, or a scrape of 100,000 per-Service series. The agent runs with `--expose-gc` (AGENT_V8_FLAGS)
 * and `--heap-growing-percent=30`: V8 would otherwise let the old generation grow by 30 % over what is live
 * before collecting it, and at 10,000 Services a few scrapes took the agent's RSS from 190 to over 270 MiB.
 * One full collection right after such work (about 100 ms at that size, next to the seconds of a full sync
 * or the hundreds of milliseconds of a scrape) keeps it near what is live. Without `--expose-gc` (tests,
 * plain `deno run`) it does nothing.
 */

/** Heap used after the last collection this file asked for. */
let baseline = 0;

/**
 * Runs a full garbage collection if the heap grew by at least `minGrowthBytes` since the last one asked
 * for here; returns whether it did.
 */
export function releaseMemory(minGrowthBytes = 32 * 2 ** 20): boolean {
  const gc = (globalThis as { gc?: () => void }).gc;
  if (typeof gc !== "function") return false;
  if (Deno.memoryUsage().heapUsed - baseline < minGrowthBytes) return false;
  gc();
  baseline = Deno.memoryUsage().heapUsed;
  return true;
}
