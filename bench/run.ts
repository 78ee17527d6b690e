/**
 * `deno task bench`: runs every benchmark script in bench/ (each measures its figure and its reference
 * in the same run and writes bench/results/<name>.md), then assembles BENCHMARKS.md from the results.
 * `deno task bench ffi_routes kube_informers` runs only those; `--assemble` only rebuilds BENCHMARKS.md.
 */
const here = new URL(".", import.meta.url).pathname;
const root = new URL("..", import.meta.url).pathname;

async function benchNames(): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(here)) {
    if (e.isFile && e.name.endsWith(".ts") && e.name !== "run.ts" && !e.name.startsWith("_")) {
      names.push(e.name.slice(0, -3));
    }
  }
  return names.sort();
}

async function machine(): Promise<string> {
  const out = async (cmd: string[]) => {
    try {
      const r = await new Deno.Command(cmd[0]!, { args: cmd.slice(1), stdout: "piped", stderr: "null" })
        .output();
      return new TextDecoder().decode(r.stdout).trim();
    } catch {
      return "?";
    }
  };
  const cpu = (await out(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"])).trim();
  return `${await out(["nproc"])} cores (${cpu}), kernel ${await out([
    "uname",
    "-r",
  ])}, deno ${Deno.version.deno}`;
}

async function assemble(): Promise<void> {
  const parts: string[] = [];
  try {
    const files = [];
    for await (const e of Deno.readDir(`${here}results`)) if (e.name.endsWith(".md")) files.push(e.name);
    for (const f of files.sort()) parts.push((await Deno.readTextFile(`${here}results/${f}`)).trim());
  } catch { /* no results yet */ }
  const text = [
    "# Benchmarks",
    "",
    "Written by `deno task bench` (bench/run.ts) from bench/results/. Each figure is measured together with",
    "its reference in the same run on the same machine; the ratio is ours / reference for times, reference /",
    "ours for rates, so below 1 is better than the reference for times and above 1 is better for rates",
    "unless a row says otherwise. Benchmarks report; they never fail the test suite.",
    "",
    `Last assembled: ${new Date().toISOString()} on ${await machine()}.`,
    "",
    ...parts.flatMap((p) => [p, ""]),
  ].join("\n");
  await Deno.writeTextFile(`${root}BENCHMARKS.md`, text);
  console.log(`wrote BENCHMARKS.md (${parts.length} sections)`);
}

if (import.meta.main) {
  const args = Deno.args.filter((a) => !a.startsWith("--"));
  if (!Deno.args.includes("--assemble")) {
    const all = await benchNames();
    const chosen = args.length ? all.filter((n) => args.includes(n)) : all;
    let failed = 0;
    for (const name of chosen) {
      console.log(`== bench ${name}`);
      const r = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-all", `${here}${name}.ts`],
        stdout: "inherit",
        stderr: "inherit",
      }).output();
      if (!r.success) {
        failed++;
        console.error(`bench ${name} exited ${r.code}; its previous result (if any) is kept`);
      }
    }
    if (failed) console.error(`${failed} benchmark(s) failed`);
  }
  await assemble();
}
