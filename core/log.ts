/**
 * Structured logging: one line per event, `key=value` pairs after a message, written to stderr.
 * kube-router logs through klog with `-v N`; we keep the same verbosity knob (`-v 0` info, `-v 1+` debug).
 */

export type Level = "debug" | "info" | "warn" | "error";
export type Fields = Record<string, unknown>;

const rank: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  /** A logger whose every line carries `fields` too (e.g. `{module: "proxy"}`). */
  with(fields: Fields): Logger;
}

export interface LogSink {
  write(line: string): void;
}

const encoder = new TextEncoder();
export const stderrSink: LogSink = {
  write(line) {
    Deno.stderr.writeSync(encoder.encode(line + "\n"));
  },
};

/** Keeps lines in memory; used by tests to assert what was logged. */
export class MemorySink implements LogSink {
  readonly lines: string[] = [];
  write(line: string): void {
    this.lines.push(line);
  }
}

let globalLevel: Level = "info";
let globalSink: LogSink = stderrSink;
let globalFormat: "text" | "json" = "text";

/** Sets the process-wide level, sink and format; called once by main.ts from `-v` and `--log-format`. */
export function configureLogging(opts: { level?: Level; sink?: LogSink; format?: "text" | "json" }): void {
  if (opts.level) globalLevel = opts.level;
  if (opts.sink) globalSink = opts.sink;
  if (opts.format) globalFormat = opts.format;
}

function renderValue(v: unknown): string {
  if (v instanceof Error) return quote(v.cause ? `${v.message}: ${String(v.cause)}` : v.message);
  if (typeof v === "string") return quote(v);
  if (v === undefined) return "undefined";
  if (typeof v === "bigint") return v.toString();
  if (typeof v === "object" && v !== null) return quote(JSON.stringify(v));
  return String(v);
}

function quote(s: string): string {
  return /^[A-Za-z0-9_.:/@+,-]+$/.test(s) ? s : JSON.stringify(s);
}

function serialize(v: unknown): unknown {
  if (v instanceof Error) return v.cause ? `${v.message}: ${String(v.cause)}` : v.message;
  if (typeof v === "bigint") return v.toString();
  return v;
}

/** Formats one log line; exported for tests. */
export function formatLine(level: Level, msg: string, fields: Fields, format: "text" | "json"): string {
  const ts = new Date().toISOString();
  if (format === "json") {
    const obj: Record<string, unknown> = { ts, level, msg };
    for (const [k, v] of Object.entries(fields)) obj[k] = serialize(v);
    return JSON.stringify(obj);
  }
  let line = `${ts} ${level.toUpperCase().padEnd(5)} ${msg}`;
  for (const [k, v] of Object.entries(fields)) line += ` ${k}=${renderValue(v)}`;
  return line;
}

class StructuredLogger implements Logger {
  constructor(private readonly base: Fields, private readonly sink?: LogSink) {}
  #log(level: Level, msg: string, fields?: Fields): void {
    if (rank[level] < rank[globalLevel]) return;
    const all = fields ? { ...this.base, ...fields } : this.base;
    (this.sink ?? globalSink).write(formatLine(level, msg, all, globalFormat));
  }
  debug(msg: string, fields?: Fields): void {
    this.#log("debug", msg, fields);
  }
  info(msg: string, fields?: Fields): void {
    this.#log("info", msg, fields);
  }
  warn(msg: string, fields?: Fields): void {
    this.#log("warn", msg, fields);
  }
  error(msg: string, fields?: Fields): void {
    this.#log("error", msg, fields);
  }
  with(fields: Fields): Logger {
    return new StructuredLogger({ ...this.base, ...fields }, this.sink);
  }
}

/** A logger; with `sink` it writes there regardless of the global sink (tests). */
export function getLogger(fields: Fields = {}, sink?: LogSink): Logger {
  return new StructuredLogger(fields, sink);
}
