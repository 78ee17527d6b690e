/**
 * A machine without the lab's tools: the demo and `lab down` say what is missing and exit 1; no stack trace
 * (`ip` missing used to crash `lab down` with "NotFound: Failed to spawn 'ip'").
 */
import assert from "node:assert/strict";

const cli = new URL("../../../lab/cli.ts", import.meta.url).pathname;

async function labWithoutTools(args: string[]): Promise<{ code: number; out: string }> {
  const empty = Deno.makeTempDirSync({ prefix: "krl-emptybin-" });
  const state = `${empty}/state`;
  try {
    const o = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", cli, ...args, `--state-dir=${state}`, "--prefix=krlmiss-"],
      env: { PATH: empty, NO_COLOR: "1" },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: o.code, out: new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr) };
  } finally {
    Deno.removeSync(empty, { recursive: true });
  }
}

Deno.test("without ip, nsenter, kubectl and curl the demo names what is missing and fails cleanly", async () => {
  const r = await labWithoutTools(["demo"]);
  assert.equal(r.code, 1, r.out);
  if (Deno.uid() === 0) {
    assert.match(r.out, /the lab needs ip \(iproute2\), nsenter \(util-linux\), kubectl .*curl/);
    assert.match(r.out, /deno task setup demo/);
  } else assert.match(r.out, /the lab needs root/);
  assert.match(r.out, /demo: FAILED — the lab did not come up/);
  assert.doesNotMatch(r.out, /NotFound|at file:\/\/|Stack backtrace/);
});

Deno.test("lab down without ip on PATH finishes without a stack trace", async () => {
  const r = await labWithoutTools(["down"]);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, /lab: down: stopped 0 process\(es\), removed 0 namespace\(s\)/);
  assert.doesNotMatch(r.out, /NotFound|at file:\/\//);
});
