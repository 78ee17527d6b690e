/**
 * A coalescing sync runner, one per module (after kube-proxy's BoundedFrequencyRunner).
 *
 * - `run()` never blocks: it asks for a sync. Bursts of requests collapse into one sync.
 * - Syncs start at least `minIntervalMs` apart; one never overlaps another.
 * - A failed sync is retried after a backoff that starts at `retryMs`, doubles up to `maxRetryMs`,
 *   and resets on success.
 * - Every `periodMs` a full sync happens even without requests (the periodic resync that catches
 *   kernel state changed behind the agent's back).
 * - The clock is injected so tests advance time instead of sleeping.
 */
import { type Clock, systemClock, type TimerId } from "./clock.ts";

export interface SyncRunnerOptions {
  name: string;
  /** The work. Throwing (or rejecting) marks the sync failed and schedules a retry. */
  sync: (reason: SyncReason) => Promise<void>;
  minIntervalMs: number;
  periodMs: number;
  retryMs?: number;
  maxRetryMs?: number;
  clock?: Clock;
  onSuccess?: (durationMs: number, reason: SyncReason) => void;
  onFailure?: (err: unknown, durationMs: number, reason: SyncReason, nextRetryMs: number) => void;
}

/** Why a sync ran: a change was requested, the period elapsed, or a failed sync is retried. */
export type SyncReason = "requested" | "periodic" | "retry";

export class SyncRunner {
  readonly #opts: Required<Omit<SyncRunnerOptions, "onSuccess" | "onFailure">> & SyncRunnerOptions;
  readonly #clock: Clock;
  #started = false;
  #stopped = false;
  #running: Promise<void> | undefined;
  #pending: SyncReason | undefined;
  #timer: TimerId | undefined;
  #timerAt = Infinity;
  #periodTimer: TimerId | undefined;
  #lastStart = -Infinity;
  #failures = 0;
  #syncCount = 0;

  constructor(opts: SyncRunnerOptions) {
    this.#opts = { retryMs: 1000, maxRetryMs: 60_000, clock: systemClock, ...opts };
    this.#clock = this.#opts.clock;
  }

  /** Number of syncs that have run (succeeded or failed); for tests and metrics. */
  get syncCount(): number {
    return this.#syncCount;
  }

  /** Consecutive failures since the last success. */
  get failures(): number {
    return this.#failures;
  }

  /** Begins running: performs the first sync now and arms the periodic resync. */
  start(): void {
    if (this.#started || this.#stopped) return;
    this.#started = true;
    this.#request("requested");
  }

  /** Asks for a sync soon; never blocks, never runs the sync synchronously. */
  run(): void {
    this.#request("requested");
  }

  /** Stops timers and waits for a running sync to finish. No sync starts afterwards. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#clearTimer();
    if (this.#periodTimer !== undefined) this.#clock.clearTimeout(this.#periodTimer);
    this.#periodTimer = undefined;
    await this.#running?.catch(() => {});
  }

  #request(reason: SyncReason): void {
    if (this.#stopped) return;
    // A retry or periodic reason is stronger information than "requested"; keep the first non-default.
    if (this.#pending === undefined || this.#pending === "requested") this.#pending = reason;
    if (!this.#started || this.#running) return; // picked up when started / when the current sync ends
    const earliest = this.#lastStart + this.#opts.minIntervalMs;
    this.#schedule(Math.max(0, earliest - this.#clock.now()));
  }

  #schedule(delay: number): void {
    const at = this.#clock.now() + delay;
    if (this.#timer !== undefined && this.#timerAt <= at) return; // an earlier or equal timer is armed
    this.#clearTimer();
    this.#timerAt = at;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.#timerAt = Infinity;
      this.#fire();
    }, delay);
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
  }

  #armPeriodic(): void {
    if (this.#periodTimer !== undefined) this.#clock.clearTimeout(this.#periodTimer);
    this.#periodTimer = this.#clock.setTimeout(() => {
      this.#periodTimer = undefined;
      this.#request("periodic");
    }, this.#opts.periodMs);
  }

  #fire(): void {
    if (this.#stopped || this.#running || this.#pending === undefined) return;
    const reason = this.#pending;
    this.#pending = undefined;
    this.#lastStart = this.#clock.now();
    this.#armPeriodic();
    this.#running = this.#execute(reason).finally(() => {
      this.#running = undefined;
      if (this.#pending !== undefined) this.#request(this.#pending);
    });
  }

  async #execute(reason: SyncReason): Promise<void> {
    const t0 = performance.now();
    this.#syncCount++;
    try {
      await this.#opts.sync(reason);
      this.#failures = 0;
      this.#opts.onSuccess?.(performance.now() - t0, reason);
    } catch (err) {
      this.#failures++;
      const delay = Math.min(this.#opts.maxRetryMs, this.#opts.retryMs * 2 ** (this.#failures - 1));
      this.#opts.onFailure?.(err, performance.now() - t0, reason, delay);
      if (!this.#stopped) {
        if (this.#pending === undefined || this.#pending === "requested") this.#pending = "retry";
        // Wait at least the backoff before retrying, even if new requests arrive meanwhile.
        this.#lastStart = Math.max(this.#lastStart, this.#clock.now() + delay - this.#opts.minIntervalMs);
      }
    }
  }
}
