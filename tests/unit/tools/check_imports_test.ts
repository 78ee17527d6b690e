import assert from "node:assert/strict";
import { checkImports, formatViolations, importsOf, readTree } from "../../../tools/check_imports.ts";

const ROOT = new URL("../../../", import.meta.url).pathname.replace(/\/$/, "");

Deno.test("the repository's imports keep to the floors and go through each folder's mod.ts", async () => {
  const files = await readTree(ROOT);
  assert.ok(files.has("ffi/mod.ts") && files.has("core/mod.ts"), "the walk found the tree");
  const violations = checkImports(files);
  assert.equal(violations.length, 0, `\n${formatViolations(violations)}`);
});

/** A small tree that obeys every rule; each bad case below adds one file to it. */
const GOOD: Record<string, string> = {
  "ffi/mod.ts": `export * from "./ip.ts";\nexport { libc } from "./libc.ts";`,
  "ffi/ip.ts": `export const parseIP = (s: string) => s;`,
  "ffi/libc.ts": `import { parseIP } from "./ip.ts";\nexport const libc = parseIP;`,
  "ffi/_private.ts": `export const x = 1;`,
  "core/mod.ts": `export * from "./log.ts";`,
  "core/log.ts": `import { parseIP } from "../ffi/mod.ts";\nexport const log = parseIP;`,
  "core/kube/mod.ts": `export * from "./transport.ts";`,
  "core/kube/transport.ts": `import { log } from "../log.ts";\nexport const t = log;`,
  "modules/router/mod.ts":
    `import { log } from "../../core/mod.ts";\nimport { speaker } from "./bgp/mod.ts";`,
  "modules/router/bgp/mod.ts": `export { speaker } from "./speaker.ts";`,
  "modules/router/bgp/speaker.ts":
    `import type { t } from "../../../core/kube/mod.ts";\nimport { libc } from "../../../ffi/mod.ts";`,
  "modules/proxy/mod.ts": `import { log } from "../../core/mod.ts";`,
  "lab/mod.ts": `import { routerModule } from "../modules/router/mod.ts";\nimport "./cli.ts";`,
  "lab/cli.ts": `const { t } = await import("../core/kube/mod.ts");`,
  "main.ts": `import { routerModule } from "./modules/router/mod.ts";`,
  "tests/unit/x_test.ts":
    `import { x } from "../../ffi/_private.ts";\nimport "../../modules/router/bgp/speaker.ts";`,
  "bench/y.ts":
    `import { t } from "../core/kube/transport.ts";\nimport { NetNs } from "../tests/_support/netns.ts";`,
};

function withFile(path: string, source: string): Map<string, string> {
  return new Map([...Object.entries(GOOD), [path, source]]);
}

Deno.test("a tree that keeps the rules passes, tests and benchmarks importing internals included", () => {
  assert.deepEqual(checkImports(new Map(Object.entries(GOOD))), []);
});

Deno.test("a deliberate bad import fails the check with the file, line and rule", () => {
  const cases: [string, string, string, RegExp][] = [
    ["ffi/nft.ts", `import { log } from "../core/mod.ts";`, "floor", /ffi\/ must not import core\//],
    [
      "core/agent.ts",
      `// why\nimport { m } from "../modules/router/mod.ts";`,
      "floor",
      /core\/ must not import modules/,
    ],
    ["core/lab_glue.ts", `import { lab } from "../lab/mod.ts";`, "floor", /core\/ must not import lab/],
    [
      "modules/router/x.ts",
      `import { lab } from "../../lab/mod.ts";`,
      "floor",
      /modules\/ must not import lab/,
    ],
    [
      "modules/proxy/svc.ts",
      `import { r } from "../router/mod.ts";`,
      "module",
      /proxy must not import module router/,
    ],
    [
      "modules/router/y.ts",
      `import type { Log } from "../../core/log.ts";`,
      "surface",
      /behind core\/mod\.ts/,
    ],
    ["lab/z.ts", `export { ip } from "../ffi/ip.ts";`, "surface", /behind ffi\/mod\.ts/],
    ["core/agent.ts", `import { t } from "./kube/transport.ts";`, "surface", /behind core\/kube\/mod\.ts/],
    [
      "lab/w.ts",
      `import { s } from "../modules/router/bgp/speaker.ts";`,
      "surface",
      /behind modules\/router\/bgp/,
    ],
    ["main.ts", `const m = await import("./core/log.ts");`, "surface", /behind core\/mod\.ts/],
    [
      "lab/x.ts",
      `import { run } from "../tests/_support/netns.ts";`,
      "floor",
      /only tests\/ and bench\/ may import tests/,
    ],
    ["core/y.ts", `import { b } from "../bench/run.ts";`, "floor", /may import bench/],
  ];
  for (const [path, source, rule, message] of cases) {
    const vs = checkImports(withFile(path, source));
    assert.equal(vs.length, 1, `${path}: ${formatViolations(vs)}`);
    assert.equal(vs[0]!.file, path);
    assert.equal(vs[0]!.rule, rule, path);
    assert.match(vs[0]!.message, message);
    assert.equal(vs[0]!.line, source.split("\n").length, "the line of the import");
  }
});

Deno.test("a mod.ts that re-exports a private file fails the check", () => {
  const vs = checkImports(
    withFile("ffi/mod.ts", `export * from "./ip.ts";\nexport { x } from "./_private.ts";`),
  );
  assert.deepEqual(vs.map((v) => [v.file, v.line, v.rule]), [["ffi/mod.ts", 2, "private-export"]]);
  // Importing a private file for its own use is fine; passing it on is not.
  assert.deepEqual(
    checkImports(withFile("ffi/mod.ts", `import { x } from "./_private.ts";\nexport const y = x;`)),
    [],
  );
});

Deno.test("imports are found in every declaration form, and never in comments, strings or templates", () => {
  const src = [
    `/**`,
    ` * import { Rtnetlink } from "../ffi/rtnetlink.ts";`,
    ` */`,
    `// import "./commented.ts";`,
    `import assert from "node:assert/strict";`,
    `import type { A } from "./a.ts";`,
    `import * as ns from './b.ts';`,
    `import D, {`,
    `  e,`,
    `  type F,`,
    `} from "./c.ts";`,
    `import "./side.ts";`,
    `export * from "./d.ts";`,
    `export type * from "./e.ts";`,
    `export { g as h } from "./f.ts";`,
    `export { local };`,
    `const s = "import x from './not.ts'";`,
    'const t = `import y from "./not2.ts" ${ns.x({ a: 1 })} import("./not3.ts")`;',
    `const re = /"from "/g;`,
    `const half = 4 / 2; const z = await import("./dyn.ts");`,
    `type T = typeof import("./typeof.ts");`,
    `const meta = import.meta.url;`,
    `obj.import("./method.ts");`,
  ].join("\n");
  assert.deepEqual(importsOf(src).map((r) => [r.specifier, r.line, r.reexport]), [
    ["node:assert/strict", 5, false],
    ["./a.ts", 6, false],
    ["./b.ts", 7, false],
    ["./c.ts", 11, false],
    ["./side.ts", 12, false],
    ["./d.ts", 13, true],
    ["./e.ts", 14, true],
    ["./f.ts", 15, true],
    ["./dyn.ts", 20, false],
    ["./typeof.ts", 21, false],
  ]);
});

Deno.test("the command line exits 1 and names the offending import in a tree on disk", async () => {
  const dir = await Deno.makeTempDir({ prefix: "check_imports_" });
  try {
    for (const [path, source] of withFile("ffi/bad.ts", `import { m } from "../modules/router/mod.ts";`)) {
      await Deno.mkdir(`${dir}/${path.slice(0, path.lastIndexOf("/") + 1) || "."}`, { recursive: true });
      await Deno.writeTextFile(`${dir}/${path}`, source);
    }
    const tool = new URL("../../../tools/check_imports.ts", import.meta.url).pathname;
    const run = async () => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--allow-read", tool, dir],
        stdout: "piped",
        stderr: "piped",
      }).output();
      return {
        code: out.code,
        text: new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr),
      };
    };
    const bad = await run();
    assert.equal(bad.code, 1, bad.text);
    assert.match(bad.text, /ffi\/bad\.ts:1: \[floor\] ffi\/ must not import modules\//);
    await Deno.remove(`${dir}/ffi/bad.ts`);
    const good = await run();
    assert.equal(good.code, 0, good.text);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
