/**
 * `deno task demo`: the seed's asciicast as a narrated, checked scenario. The runner takes the acts of
 * lab/acts/ (each a list of named steps), runs them against a lab it brings up, prints every command and
 * what it saw, and exits 0 only if every expectation held, with a final summary line.
 */
import { progress, sh, sleep } from "./_sh.ts";
import { type Act, ACTS, clusterAct, daemonSetAct, type DemoContext, ExpectationFailed } from "./acts/mod.ts";
import { execCommand, kubectl, labDown, labUp, type UpOptions } from "./lab.ts";
import type { LabState } from "./state.ts";

export { type Act, ACTS, type DemoContext, ExpectationFailed, type Step } from "./acts/mod.ts";
export { clusterAct, crossNodeAct, daemonSetAct, sameNodeAct } from "./acts/mod.ts";

/** The acts of a demo: with the agents as a DaemonSet, the DaemonSet act follows the cluster act. */
export function demoActs(daemonset: boolean, acts: Act[] = ACTS): Act[] {
  if (!daemonset) return acts;
  const i = acts.indexOf(clusterAct);
  return [...acts.slice(0, i + 1), daemonSetAct, ...acts.slice(i + 1)];
}

export interface DemoResult {
  expectations: number;
  /** Expectations that did not hold (a step that threw counts as one). */
  unmet: number;
  /** Acts not run (they need agents and the lab has none). */
  skipped: string[];
  failed: Array<{ act: string; step: string; message: string }>;
}

function indent(text: string): string {
  return text.trimEnd().split("\n").map((l) => `    ${l}`).join("\n");
}

/** Runs `acts` against an up lab, narrating to `out`. */
export async function runActs(
  state: LabState,
  acts: Act[],
  out: (line: string) => void = console.log,
): Promise<DemoResult> {
  const result: DemoResult = { expectations: 0, unmet: 0, failed: [], skipped: [] };
  let stepFailed = false;
  const ctx: DemoContext = {
    state,
    say: (l) => out(`  ${l}`),
    async kubectl(args, opts = {}) {
      if (!opts.quiet) out(`  $ kubectl ${args.join(" ")}`);
      const stop = args[0] === "wait" || args.includes("--watch") || args[0] === "rollout"
        ? progress(out, (s) => `  … kubectl ${args[0]} is waiting (${s} s)`)
        : () => {};
      const r = await kubectl(state, args, {
        check: false,
        ...(opts.stdin !== undefined ? { stdin: opts.stdin } : {}),
      }).finally(stop);
      if (!opts.quiet && (r.stdout.trim() || r.stderr.trim())) out(indent(r.stdout + r.stderr));
      if (r.code !== 0) {
        throw new ExpectationFailed(`kubectl ${args.join(" ")} exited ${r.code}: ${r.stderr.trim()}`);
      }
      return r.stdout;
    },
    async exec(target, cmd, opts = {}) {
      if (!opts.quiet) out(`  $ lab exec ${target} -- ${cmd.join(" ")}`);
      const r = await sh(execCommand(state, target, cmd), { check: false });
      if (!opts.quiet && (r.stdout.trim() || r.stderr.trim())) out(indent(r.stdout + r.stderr));
      if (r.code !== 0 && (opts.check ?? true)) {
        throw new ExpectationFailed(`${cmd.join(" ")} in ${target} exited ${r.code}: ${r.stderr.trim()}`);
      }
      return { code: r.code, stdout: r.stdout };
    },
    expect(ok, what, detail) {
      result.expectations++;
      out(`  ${ok ? "✔" : "✘"} ${what}${ok || !detail ? "" : ` (${detail})`}`);
      if (!ok) {
        stepFailed = true;
        result.unmet++;
      }
    },
    async eventually(what, fn, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      const stop = progress(
        out,
        (s) => `  … waiting until ${what} (${s} s of at most ${timeoutMs / 1000} s)`,
      );
      try {
        while (Date.now() < deadline) {
          if (await fn().catch(() => false)) return ctx.expect(true, what);
          await sleep(250);
        }
      } finally {
        stop();
      }
      ctx.expect(false, what, `not within ${timeoutMs / 1000} s`);
    },
  };
  for (const [i, act] of acts.entries()) {
    out(`\n== Act ${i + 1}: ${act.name} ==`);
    out(`  ${act.story}`);
    if (act.needsAgents && !state.agents && !state.daemonset) {
      out("  (skipped: the lab runs without agents)");
      result.skipped.push(act.name);
      continue;
    }
    if ((act.minNodes ?? 1) > state.nodes) {
      out(`  (skipped: needs ${act.minNodes} nodes, the lab has ${state.nodes})`);
      result.skipped.push(act.name);
      continue;
    }
    for (const step of act.steps) {
      out(`\n-- ${step.name}`);
      stepFailed = false;
      const t0 = performance.now();
      try {
        await step.run(ctx);
        if (stepFailed) {
          result.failed.push({ act: act.name, step: step.name, message: "an expectation did not hold" });
        }
        out(`  (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
      } catch (e) {
        const message = e instanceof Error ? e.message : String(e);
        result.expectations++;
        result.unmet++;
        out(`  ✘ ${message}`);
        result.failed.push({ act: act.name, step: step.name, message });
      }
    }
  }
  return result;
}

export interface DemoOptions extends UpOptions {
  /** Leave the lab up afterwards. */
  keep?: boolean;
  acts?: Act[];
}

/** `deno task demo`: up, the scenario, down. Returns the exit code. */
export async function runDemo(opts: DemoOptions = {}): Promise<number> {
  const t0 = performance.now();
  console.log(
    `kube-router lab demo: the seed's cluster in network namespaces (${opts.nodes ?? 3} nodes${
      opts.daemonset ? `, agents as the DaemonSet of ${opts.daemonset}` : ""
    })`,
  );
  let result: DemoResult | undefined;
  let upError: unknown;
  try {
    const state = await labUp({ ...opts, say: (l) => console.log(`lab: ${l}`) });
    result = await runActs(state, demoActs(!!opts.daemonset, opts.acts ?? ACTS));
  } catch (e) {
    upError = e;
    console.log(`✘ the lab did not come up: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    if (!opts.keep) {
      try {
        const r = await labDown(opts);
        console.log(`\nlab: down (${r.netns.length} namespaces removed)`);
      } catch (e) {
        console.log(`\nlab: down failed: ${e instanceof Error ? e.message : String(e)}`);
      }
    } else console.log("\nlab: left up (--keep); remove it with `deno task lab down`");
  }
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  if (!result || upError) {
    console.log(`demo: FAILED — the lab did not come up (${secs} s)`);
    return 1;
  }
  const held = result.expectations - result.unmet;
  if (result.failed.length === 0) {
    const acts = demoActs(!!opts.daemonset, opts.acts ?? ACTS).length - result.skipped.length;
    const skipped = result.skipped.length ? `; skipped: ${result.skipped.join(", ")}` : "";
    console.log(
      `demo: PASSED — ${held}/${result.expectations} expectations held in ${acts} acts (${secs} s)${skipped}`,
    );
    return 0;
  }
  console.log(
    `demo: FAILED — ${result.failed.length} step(s) failed, ${held}/${result.expectations} expectations held (${secs} s)`,
  );
  for (const f of result.failed) console.log(`  ✘ ${f.act} / ${f.step}: ${f.message}`);
  return 1;
}
