/** A keyed work queue that coalesces bursts: each key is processed at most once per flush, serially. */
export class CoalescingQueue {
  readonly #dirty = new Set<string>();
  #timer: ReturnType<typeof setTimeout> | undefined;
  #running = false;
  #stopped = false;

  constructor(
    private readonly work: (key: string) => Promise<void>,
    private readonly onError: (key: string, e: unknown) => void,
    private readonly delayMs = 20,
  ) {}

  add(key: string): void {
    if (this.#stopped) return;
    this.#dirty.add(key);
    this.#schedule(this.delayMs);
  }

  stop(): void {
    this.#stopped = true;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
  }

  #schedule(ms: number): void {
    if (this.#timer !== undefined || this.#running) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#flush();
    }, ms);
  }

  async #flush(): Promise<void> {
    this.#running = true;
    const failed: string[] = [];
    try {
      while (this.#dirty.size > 0 && !this.#stopped) {
        const keys = [...this.#dirty];
        this.#dirty.clear();
        for (const k of keys) {
          try {
            await this.work(k);
          } catch (e) {
            this.onError(k, e);
            failed.push(k);
          }
        }
      }
    } finally {
      this.#running = false;
    }
    if (failed.length && !this.#stopped) {
      // Retry failures after a pause (e.g. a 409 conflict on a stale resourceVersion).
      setTimeout(() => failed.forEach((k) => this.add(k)), 500);
    } else if (this.#dirty.size > 0) this.#schedule(0);
  }
}
