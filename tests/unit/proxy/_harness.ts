/**
 * What both proxy backends' unit-test harnesses (_nft_setup.ts, _ipvs_setup.ts) start from: a module
 * context for node n1 over a MemorySource whose caches are not synced yet, a fake clock, the log in a
 * MemorySink, the periodic sync every 5 min. Flags come after `--hostname-override=n1
 * --service-cluster-ip-range=172.16.0.0/16`.
 */
import assert from "node:assert/strict";
import { Bus, FakeClock, getLogger, loadConfig } from "../../../core/mod.ts";
import { MemorySink } from "../../../core/log.ts";
import { MemorySource, moduleContext } from "../../_support/kube_source.ts";

export function proxyHarness(flags: readonly string[]) {
  const clock = new FakeClock();
  const sink = new MemorySink();
  const source = new MemorySource(new Bus(), { synced: false });
  const t = moduleContext({
    config: loadConfig(["--hostname-override=n1", "--service-cluster-ip-range=172.16.0.0/16", ...flags]),
    source,
    clock,
    log: getLogger({}, sink),
    periodMs: 300_000,
  });
  /** Advances the clock until one more sync has finished; throws its error. */
  const sync = async () => {
    const before = t.syncs.ok + t.syncs.failed;
    for (let i = 0; i < 100 && t.syncs.ok + t.syncs.failed === before; i++) await clock.advance(50);
    assert.ok(t.syncs.ok + t.syncs.failed > before, "no sync ran");
    if (t.syncs.lastError) throw t.syncs.lastError;
  };
  /** Advances the clock by `ms` (3 s: a sync, and the deletion of chains it flushed a second later). */
  const settle = async (ms = 3000) => {
    for (let i = 0; i < ms / 50; i++) await clock.advance(50);
    if (t.syncs.lastError) throw t.syncs.lastError;
  };
  return { clock, sink, source, t, sync, settle };
}
