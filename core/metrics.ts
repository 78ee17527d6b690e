/**
 * A small Prometheus registry: counters, gauges and histograms with labels, rendered in the text
 * exposition format (version 0.0.4). Written here instead of pulling in prom-client, which is built for
 * Node's runtime and costs memory on every node; what an agent needs fits in this file.
 */

export type Labels = Record<string, string>;

interface Series<V> {
  labels: Labels;
  value: V;
}

/**
 * Keys and rendered `{…}` text of label objects that cannot change: frozen ones (a caller that sets
 * thousands of series on every scrape freezes its label objects and passes the same object to several
 * metrics: they share one key, one copy and one text) and the registry's own copies. A scrape of 100,000
 * series then re-sorts no labels.
 */
const keys = new WeakMap<Labels, string>();
const texts = new WeakMap<Labels, string>();

function labelKey(labels: Labels): string {
  let k = keys.get(labels);
  if (k === undefined) {
    k = Object.keys(labels).sort().map((k) => `${k}=${labels[k]}`).join("\u0000");
    if (Object.isFrozen(labels)) keys.set(labels, k);
  }
  return k;
}

/** renderLabels of a series' labels (the registry's copy, or a frozen object), made once. */
function labelsText(labels: Labels): string {
  let t = texts.get(labels);
  if (t === undefined) texts.set(labels, t = renderLabels(labels));
  return t;
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function renderLabels(labels: Labels, extra?: [string, string]): string {
  const parts = Object.keys(labels).sort().map((k) => `${k}="${escapeLabel(labels[k]!)}"`);
  if (extra) parts.push(`${extra[0]}="${escapeLabel(extra[1])}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

function renderNumber(n: number): string {
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  if (Number.isNaN(n)) return "NaN";
  return String(n);
}

abstract class Metric<V> {
  protected series = new Map<string, Series<V>>();
  constructor(readonly name: string, readonly help: string, readonly type: string) {}
  protected get(labels: Labels, init: () => V): Series<V> {
    const key = labelKey(labels);
    let s = this.series.get(key);
    // A frozen label object is kept as it is (shared by the metrics given it), any other copied.
    if (!s) {
      this.series.set(key, s = { labels: Object.isFrozen(labels) ? labels : { ...labels }, value: init() });
    }
    return s;
  }
  /** Drops one labelled series (e.g. a BGP peer that was removed). */
  remove(labels: Labels): void {
    this.series.delete(labelKey(labels));
  }
  reset(): void {
    this.series.clear();
  }
  /** The series' lines, one at a time. */
  abstract seriesLines(): Iterable<string>;
  /** HELP, TYPE and the series, each line ending in a newline, in pieces of at most `batch` lines. */
  *chunks(batch = 1000): Generator<string> {
    yield `# HELP ${this.name} ${this.help.replace(/\n/g, " ")}\n# TYPE ${this.name} ${this.type}\n`;
    let lines: string[] = [];
    for (const line of this.seriesLines()) {
      lines.push(line);
      if (lines.length >= batch) {
        yield lines.join("\n") + "\n";
        lines = [];
      }
    }
    if (lines.length) yield lines.join("\n") + "\n";
  }
  render(): string {
    return [...this.chunks()].join("").slice(0, -1);
  }
}

export class Counter extends Metric<number> {
  constructor(name: string, help: string) {
    super(name, help, "counter");
  }
  inc(labels: Labels = {}, by = 1): void {
    if (by < 0) throw new RangeError(`counter ${this.name} cannot decrease`);
    this.get(labels, () => 0).value += by;
  }
  value(labels: Labels = {}): number {
    return this.series.get(labelKey(labels))?.value ?? 0;
  }
  *seriesLines(): Generator<string> {
    for (const s of this.series.values()) {
      yield `${this.name}${labelsText(s.labels)} ${renderNumber(s.value)}`;
    }
  }
}

export class Gauge extends Metric<number> {
  constructor(name: string, help: string) {
    super(name, help, "gauge");
  }
  set(labels: Labels, value: number): void {
    this.get(labels, () => 0).value = value;
  }
  inc(labels: Labels = {}, by = 1): void {
    this.get(labels, () => 0).value += by;
  }
  value(labels: Labels = {}): number | undefined {
    return this.series.get(labelKey(labels))?.value;
  }
  *seriesLines(): Generator<string> {
    for (const s of this.series.values()) {
      yield `${this.name}${labelsText(s.labels)} ${renderNumber(s.value)}`;
    }
  }
}

interface HistogramValue {
  buckets: number[];
  sum: number;
  count: number;
}

export const DEFAULT_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

export class Histogram extends Metric<HistogramValue> {
  constructor(name: string, help: string, readonly bounds: readonly number[] = DEFAULT_BUCKETS) {
    super(name, help, "histogram");
  }
  observe(labels: Labels, value: number): void {
    const s = this.get(labels, () => ({ buckets: this.bounds.map(() => 0), sum: 0, count: 0 }));
    for (let k = 0; k < this.bounds.length; k++) if (value <= this.bounds[k]!) s.value.buckets[k]!++;
    s.value.sum += value;
    s.value.count++;
  }
  count(labels: Labels = {}): number {
    return this.series.get(labelKey(labels))?.value.count ?? 0;
  }
  *seriesLines(): Generator<string> {
    for (const s of this.series.values()) {
      for (let k = 0; k < this.bounds.length; k++) {
        yield `${this.name}_bucket${renderLabels(s.labels, ["le", renderNumber(this.bounds[k]!)])} ${
          s.value.buckets[k]
        }`;
      }
      yield `${this.name}_bucket${renderLabels(s.labels, ["le", "+Inf"])} ${s.value.count}`;
      yield `${this.name}_sum${renderLabels(s.labels)} ${renderNumber(s.value.sum)}`;
      yield `${this.name}_count${renderLabels(s.labels)} ${s.value.count}`;
    }
  }
}

/** All metrics of one agent. Names are registered once; asking again returns the same metric. */
export class Metrics {
  #metrics = new Map<string, Metric<unknown>>();
  #collectors = new Set<() => Promise<void>>();

  /**
   * Registers work to run before each scrape (e.g. reading kernel counters into gauges); returns its
   * removal. A collector handles its own errors: one that throws is skipped for that scrape.
   */
  onCollect(fn: () => Promise<void>): () => void {
    this.#collectors.add(fn);
    return () => this.#collectors.delete(fn);
  }

  /** Runs the collectors (together); a scrape awaits it before render(). */
  async collect(): Promise<void> {
    await Promise.allSettled([...this.#collectors].map((fn) => fn()));
  }

  counter(name: string, help: string): Counter {
    return this.#register(name, () => new Counter(name, help), Counter);
  }
  gauge(name: string, help: string): Gauge {
    return this.#register(name, () => new Gauge(name, help), Gauge);
  }
  histogram(name: string, help: string, bounds?: readonly number[]): Histogram {
    return this.#register(name, () => new Histogram(name, help, bounds), Histogram);
  }

  // deno-lint-ignore no-explicit-any
  #register<M extends Metric<any>>(name: string, make: () => M, cls: abstract new (...a: any[]) => M): M {
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(name)) throw new Error(`invalid metric name ${name}`);
    const existing = this.#metrics.get(name);
    if (existing) {
      if (!(existing instanceof cls)) throw new Error(`metric ${name} already registered with another type`);
      return existing as M;
    }
    const m = make();
    this.#metrics.set(name, m as unknown as Metric<unknown>);
    return m;
  }

  /** The whole registry in Prometheus text format, in pieces (see stream). */
  *chunks(): Generator<string> {
    for (const m of this.#metrics.values()) yield* m.chunks();
  }

  /** The whole registry in Prometheus text format. */
  render(): string {
    return [...this.chunks()].join("");
  }

  /**
   * The same text as a byte stream, rendered a thousand series at a time as the client reads it: with
   * 10,000 Services the proxy's per-Service gauges are 100,000 series (12 MiB of text), which as one string
   * left about 30 MiB of garbage per scrape in the old generation and took the agent's RSS past 250 MiB.
   */
  stream(): ReadableStream<Uint8Array> {
    const pieces = this.chunks();
    const encoder = new TextEncoder();
    return new ReadableStream({
      pull(controller) {
        const next = pieces.next();
        if (next.done) controller.close();
        else controller.enqueue(encoder.encode(next.value));
      },
    });
  }
}
