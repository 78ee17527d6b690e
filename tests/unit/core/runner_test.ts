import assert from "node:assert/strict";
import { FakeClock } from "../../../core/clock.ts";
import { type SyncReason, SyncRunner } from "../../../core/runner.ts";

function setup(opts: { fail?: () => boolean; syncMs?: number; minIntervalMs?: number } = {}) {
  const clock = new FakeClock();
  const calls: { at: number; reason: SyncReason }[] = [];
  const failures: number[] = [];
  const runner = new SyncRunner({
    name: "t",
    clock,
    minIntervalMs: opts.minIntervalMs ?? 1000,
    periodMs: 60_000,
    retryMs: 500,
    maxRetryMs: 4000,
    sync: async (reason) => {
      calls.push({ at: clock.now() - t0, reason });
      if (opts.syncMs) await new Promise<void>((r) => clock.setTimeout(r, opts.syncMs!));
      if (opts.fail?.()) throw new Error("boom");
    },
    onFailure: (_e, _d, _r, next) => failures.push(next),
  });
  const t0 = clock.now();
  return { clock, calls, runner, failures };
}

Deno.test("runner does nothing until started, then syncs once at start", async () => {
  const { clock, calls, runner } = setup();
  runner.run();
  await clock.advance(5000);
  assert.equal(calls.length, 0);
  runner.start();
  await clock.advance(0);
  assert.equal(calls.length, 1);
  await runner.stop();
});

Deno.test("runner coalesces a burst of requests into one sync per minimum interval", async () => {
  const { clock, calls, runner } = setup();
  runner.start();
  await clock.advance(0);
  for (let k = 0; k < 100; k++) runner.run();
  await clock.advance(999);
  assert.equal(calls.length, 1, "no second sync inside the minimum interval");
  await clock.advance(1);
  assert.equal(calls.length, 2, "the burst became exactly one sync");
  assert.equal(calls[1]!.at, 1000);
  await clock.advance(10_000);
  assert.equal(calls.length, 2, "no further syncs without requests");
  await runner.stop();
});

Deno.test("runner never overlaps syncs and runs a request that arrived during a sync afterwards", async () => {
  const { clock, calls, runner } = setup({ syncMs: 3000 });
  runner.start();
  await clock.advance(0);
  runner.run();
  await clock.advance(2000);
  assert.equal(calls.length, 1, "still inside the first sync");
  await clock.advance(1000);
  assert.equal(calls.length, 2, "the pending request ran right after the first sync ended");
  assert.equal(calls[1]!.at, 3000);
  await clock.advance(3000);
  await runner.stop();
});

Deno.test("runner retries a failed sync with doubling backoff that resets on success", async () => {
  let failing = true;
  const { clock, calls, runner, failures } = setup({ fail: () => failing, minIntervalMs: 100 });
  runner.start();
  await clock.advance(0);
  await clock.advance(500);
  await clock.advance(1000);
  await clock.advance(2000);
  assert.deepEqual(calls.map((c) => [c.at, c.reason]), [[0, "requested"], [500, "retry"], [1500, "retry"], [
    3500,
    "retry",
  ]]);
  assert.deepEqual(failures, [500, 1000, 2000, 4000]);
  assert.equal(runner.failures, 4);
  await clock.advance(4000);
  assert.equal(calls.length, 5, "backoff capped at maxRetryMs");
  failing = false;
  await clock.advance(4000);
  assert.equal(calls.length, 6);
  assert.equal(runner.failures, 0);
  await clock.advance(30_000);
  assert.equal(calls.length, 6, "no retries after success");
  await runner.stop();
});

Deno.test("runner waits out the backoff even when new requests arrive after a failure", async () => {
  let failing = true;
  const { clock, calls, runner } = setup({ fail: () => failing, minIntervalMs: 100 });
  runner.start();
  await clock.advance(0);
  failing = false;
  runner.run();
  await clock.advance(499);
  assert.equal(calls.length, 1);
  await clock.advance(1);
  assert.equal(calls.length, 2);
  await runner.stop();
});

Deno.test("runner performs a periodic full resync without requests", async () => {
  const { clock, calls, runner } = setup();
  runner.start();
  await clock.advance(0);
  await clock.advance(60_000);
  await clock.advance(60_000);
  assert.deepEqual(calls.map((c) => c.reason), ["requested", "periodic", "periodic"]);
  await runner.stop();
});

Deno.test("runner's minimum interval also bounds retries", async () => {
  const { clock, calls, runner } = setup({ fail: () => true, minIntervalMs: 1000 });
  runner.start();
  await clock.advance(0);
  await clock.advance(999);
  assert.equal(calls.length, 1);
  await clock.advance(1);
  assert.equal(calls.length, 2);
  await runner.stop();
});

Deno.test("runner stops: no sync starts after stop() and pending timers are cleared", async () => {
  const { clock, calls, runner } = setup();
  runner.start();
  await clock.advance(0);
  runner.run();
  await runner.stop();
  await clock.advance(120_000);
  assert.equal(calls.length, 1);
  assert.equal(clock.pending, 0);
});
