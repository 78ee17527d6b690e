/**
 * The repository's own promises: the README's test command is what CI runs, and the tree passes the static
 * checks (`deno fmt --check`, `deno lint`, `deno task check`), which run here so the test command covers them.
 */
import assert from "node:assert/strict";

const root = new URL("../../", import.meta.url).pathname;
const read = (p: string) => Deno.readTextFileSync(`${root}${p}`);

/** The commands of the README's "The two commands" block, without comments. */
export function readmeCommands(readme: string): string[] {
  const section = readme.slice(readme.indexOf("## The two commands"));
  const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1] ?? "";
  return block.split("\n").map((l) => l.replace(/#.*$/, "").trim()).filter(Boolean);
}

/** The command of a shell line: leading VAR=value assignments, redirections and pipes dropped. */
export function bareCommand(line: string): string {
  return line.replace(/^(\s*[A-Z_]+=\S*\s+)*/, "").replace(/(\s*(\d?>&?\S*|\|.*))*$/, "").trim();
}

Deno.test(".ci/run runs exactly the README's test command, without its sudo (CI is root)", () => {
  const cmds = readmeCommands(read("README.md"));
  assert.equal(cmds.length, 2, `the README's block holds the two commands: ${cmds.join(" / ")}`);
  const test = cmds.find((c) => / task test$/.test(c));
  assert.ok(test, "one of them runs the tests");
  const ci = read(".ci/run").split("\n").filter((l) => !l.trimStart().startsWith("#"));
  const runs = ci.filter((l) => /\bdeno\b/.test(l)).map(bareCommand);
  assert.deepEqual(runs, [test.replace(/^sudo /, "")]);
});

Deno.test("the README's commands pin the Deno version of .deno-version", () => {
  const pinned = read(".deno-version").trim();
  for (const c of readmeCommands(read("README.md"))) {
    assert.match(c, new RegExp(`^sudo npx -y deno@${pinned.replaceAll(".", "\\.")} task (demo|test)$`));
  }
});

async function deno(args: string[]): Promise<{ code: number; out: string }> {
  const o = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: root,
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  return { code: o.code, out: new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr) };
}

Deno.test("the tree is formatted (deno fmt --check)", async () => {
  const r = await deno(["fmt", "--check"]);
  assert.equal(r.code, 0, r.out.slice(-3000));
});

Deno.test("deno lint finds nothing", async () => {
  const r = await deno(["lint"]);
  assert.equal(r.code, 0, r.out.slice(-3000));
});

Deno.test("the whole tree type-checks (deno task check)", async () => {
  const r = await deno(["task", "check"]);
  assert.equal(r.code, 0, r.out.slice(-3000));
});
