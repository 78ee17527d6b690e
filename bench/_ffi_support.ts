/**
 * Helpers shared by the ffi and overlay benchmarks (bench/ffi_nft.ts, bench/ffi_routes.ts,
 * bench/router_overlay.ts). The leading underscore keeps bench/run.ts from running it as a benchmark.
 */

/** Runs a reference command (e.g. `ip -batch FILE`) to completion; milliseconds, process start-up included. */
export async function timeCmd(args: string[]): Promise<number> {
  const t0 = performance.now();
  const out = await new Deno.Command(args[0]!, { args: args.slice(1), stdout: "null", stderr: "piped" })
    .output();
  if (!out.success) throw new Error(`${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  return performance.now() - t0;
}

/** Writes bench/results/NAME.md and formats it as `deno fmt --check` wants it (CI checks every file). */
export async function writeResult(name: string, md: string): Promise<void> {
  await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
  const out = new URL(`./results/${name}.md`, import.meta.url);
  await Deno.writeTextFile(out, md);
  await new Deno.Command(Deno.execPath(), {
    args: ["fmt", "-q", out.pathname],
    stdout: "null",
    stderr: "null",
  }).output();
}

/** The middle value (the upper one of an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
