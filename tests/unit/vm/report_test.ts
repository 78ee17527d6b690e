import assert from "node:assert/strict";
import { cpioNewc, matchesFilter, parseJunit, parseReport } from "../../vm/_vm.ts";

const JUNIT = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="deno test" tests="4" failures="2" errors="0" time="0.022">
    <testsuite name="./a_test.ts" tests="4" disabled="1" errors="0" failures="2">
        <testcase name="passes fine" classname="./a_test.ts" time="0.001" line="1" col="6">
        </testcase>
        <testcase name="fails &lt;badly&gt; &amp; &quot;x&quot;" classname="./a_test.ts" time="0.001" line="2" col="6">
            <failure message="Uncaught Error: boom">Error: boom
line2 &lt;x&gt;</failure>
        </testcase>
        <testcase name="skipped one" classname="./a_test.ts" time="0.000" line="3" col="6">
            <skipped/>
        </testcase>
        <testcase name="with steps &gt; inner ok" classname="./a_test.ts" time="0.000" line="4" col="48">
        </testcase>
    </testsuite>
</testsuites>
`;

Deno.test("a JUnit report from deno test becomes one result per test case, with failure text unescaped", () => {
  assert.deepEqual(parseJunit(JUNIT), [
    { name: "passes fine", status: "passed" },
    { name: 'fails <badly> & "x"', status: "failed", message: "Error: boom\nline2 <x>" },
    { name: "skipped one", status: "skipped" },
    { name: "with steps > inner ok", status: "passed" },
  ]);
});

Deno.test("the results port's stream is split per plan entry and filtered-out tests are dropped", () => {
  const stream = `@@KRT-VM-BOOTED\n@@KRT-VM-BEGIN 0 1\n${JUNIT}@@KRT-VM-END 0\n@@KRT-VM-DONE\n`;
  const res = parseReport(stream, [{ file: "a_test.ts", filter: "/^(passes|skipped)/" }, {
    file: "b_test.ts",
  }]);
  assert.deepEqual(res.exitCodes, [1, undefined]);
  assert.deepEqual(res.results.map((r) => [r.file, r.name, r.status]), [
    ["a_test.ts", "passes fine", "passed"],
    ["a_test.ts", "skipped one", "skipped"],
  ]);
});

Deno.test("test filters follow deno test: a substring, or a regular expression between slashes", () => {
  assert.equal(matchesFilter("rtnetlink creates a dummy link", "dummy"), true);
  assert.equal(matchesFilter("rtnetlink creates a dummy link", "/creates a (dummy|ipip) link/"), true);
  assert.equal(matchesFilter("rtnetlink creates a bridge", "/creates a (dummy|ipip) link/"), false);
});

Deno.test("the initramfs archive is newc cpio: headers, names and data 4-byte aligned, ending in TRAILER!!!", () => {
  const data = new TextEncoder().encode("hello");
  const a = cpioNewc([{ name: "init", mode: 0o100755, data }]);
  const text = new TextDecoder().decode(a);
  assert.equal(text.slice(0, 6), "070701");
  // mode field (2nd), filesize (7th), namesize (12th): 8 hex digits each after the magic.
  const field = (i: number) => parseInt(text.slice(6 + i * 8, 14 + i * 8), 16);
  assert.equal(field(1), 0o100755);
  assert.equal(field(6), 5);
  assert.equal(field(11), 5);
  assert.equal(text.slice(110, 114), "init");
  // 110-byte header + "init\0" = 115, padded to 116, then the data.
  assert.equal(text.slice(116, 121), "hello");
  assert.equal(a.length % 4, 0);
  assert.ok(text.includes("TRAILER!!!"));
});
