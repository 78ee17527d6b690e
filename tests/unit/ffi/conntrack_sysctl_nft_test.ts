import assert from "node:assert/strict";
import {
  type ConntrackEntry,
  conntrackMatches,
  decodeConntrackEntry,
  encodeConntrackDelete,
  FakeSysctl,
  NetlinkDecodeError,
  NftError,
  NlWriter,
  parseListOutput,
  parseMessages,
  SysctlError,
  sysctlPath,
} from "../../../ffi/mod.ts";

const entry: ConntrackEntry = {
  family: 4,
  orig: { src: "10.201.0.1", dst: "10.201.0.2", protocol: 17, sport: 40000, dport: 5353 },
  id: 0x1234,
};

function encodeDelete(e: ConntrackEntry): Uint8Array {
  const w = new NlWriter();
  const off = w.beginMsg(0x102, 1, 9);
  encodeConntrackDelete(w, e);
  w.endMsg(off);
  return w.toBytes();
}

Deno.test("a conntrack delete request carries the original tuple and id in ctnetlink's layout", () => {
  const b = encodeDelete(entry);
  const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  // nfgenmsg AF_INET v0, then CTA_TUPLE_ORIG (nested) > CTA_TUPLE_IP (nested) > V4 src/dst, CTA_TUPLE_PROTO.
  assert.equal(
    hex,
    "50000000020101000900000000000000" + "02000000" +
      "3400" + "0180" + "1400" + "0180" + "0800" + "0100" + "0ac90001" + "0800" + "0200" + "0ac90002" +
      "1c00" + "0280" + "0500" + "0100" + "11000000" + "0600" + "0200" + "9c400000" + "0600" + "0300" +
      "14e90000" +
      "0800" + "0c00" + "00001234",
  );
});

Deno.test("a conntrack entry decodes back from the bytes that describe it", () => {
  const m = parseMessages(encodeDelete(entry))[0]!;
  assert.deepEqual(decodeConntrackEntry(m), entry);
});

Deno.test("a conntrack entry whose tuple lacks addresses is a NetlinkDecodeError", () => {
  const w = new NlWriter();
  const off = w.beginMsg(0x100, 0, 1);
  w.u8(2).u8(0).be16(0);
  const n = w.beginNest(1);
  const p = w.beginNest(2);
  w.attrU8(1, 17);
  w.endNest(p);
  w.endNest(n);
  w.endMsg(off);
  assert.throws(() => decodeConntrackEntry(parseMessages(w.toBytes())[0]!), NetlinkDecodeError);
  const short = { ...parseMessages(w.toBytes())[0]!, payload: new Uint8Array(2) };
  assert.throws(() => decodeConntrackEntry(short), NetlinkDecodeError);
});

Deno.test("conntrack filters match protocol, original destination and port", () => {
  assert.ok(conntrackMatches(entry, { protocol: 17, dst: "10.201.0.2", dport: 5353 }));
  assert.ok(!conntrackMatches(entry, { protocol: 6 }));
  assert.ok(!conntrackMatches(entry, { dport: 53 }));
  assert.ok(!conntrackMatches(entry, { family: 6 }));
  assert.ok(
    conntrackMatches({ ...entry, family: 6, orig: { ...entry.orig, dst: "fd00::2" } }, { dst: "fd00:0::2" }),
  );
});

Deno.test("sysctl keys map to /proc/sys paths, slashes keep dotted interface names", () => {
  assert.equal(sysctlPath("net.ipv4.ip_forward"), "/proc/sys/net/ipv4/ip_forward");
  assert.equal(sysctlPath("net/ipv4/conf/eth0.100/rp_filter"), "/proc/sys/net/ipv4/conf/eth0.100/rp_filter");
  assert.throws(() => sysctlPath("../etc/passwd"), SysctlError);
  assert.throws(() => sysctlPath("/etc/passwd"), SysctlError);
});

Deno.test("the fake sysctl reads and writes known keys and refuses unknown ones", async () => {
  const s = new FakeSysctl({ "net.ipv4.ip_forward": 0 });
  await s.set("net.ipv4.ip_forward", 1);
  assert.equal(await s.get("net/ipv4/ip_forward"), "1");
  await assert.rejects(s.get("net.ipv4.nope"), SysctlError);
  await assert.rejects(s.set("net.ipv4.nope", 1), SysctlError);
});

Deno.test("nft JSON listings drop the metainfo entry", () => {
  const out =
    '{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, {"table": {"family": "ip", "name": "t", "handle": 1}}]}';
  assert.deepEqual(parseListOutput(out), [{ table: { family: "ip", name: "t", handle: 1 } }]);
  assert.deepEqual(parseListOutput(""), []);
  assert.throws(() => parseListOutput("{not json"), NftError);
  assert.throws(() => parseListOutput('{"other": []}'), NftError);
});

Deno.test("the fake conntrack deletes exactly the entries matching a filter", async () => {
  const { FakeConntrack } = await import("../../../ffi/mod.ts");
  const ct = new FakeConntrack([
    entry,
    { ...entry, orig: { ...entry.orig, sport: 40001 } },
    { ...entry, orig: { ...entry.orig, dport: 5354 } },
    { ...entry, orig: { ...entry.orig, protocol: 6 } },
  ]);
  assert.equal(await ct.deleteMatching({ protocol: 17, dst: "10.201.0.2", dport: 5353 }), 2);
  assert.deepEqual((await ct.list()).map((e) => [e.orig.protocol, e.orig.dport]), [[17, 5354], [6, 5353]]);
});

Deno.test("the fake nftables lists and dumps a ruleset the way nft printed it after loading the same text (golden)", async () => {
  const { FakeNftables } = await import("../../../ffi/mod.ts");
  const { normalize } = await import("./_conformance.ts");
  const { normalizeDump } = await import("./_nft_conformance.ts");
  const { goldenTransaction } = await import("./golden/nft_golden.ts");
  const golden = JSON.parse(await Deno.readTextFile(new URL("./golden/nft.json", import.meta.url))) as {
    input: string;
    output: unknown;
    text: string;
  };
  const tx = goldenTransaction();
  // The golden was captured from this very transaction (re-capture with golden/capture_nft.ts).
  assert.equal(tx.render(), golden.input);
  const fake = new FakeNftables();
  await fake.run(tx);
  assert.equal(normalizeDump(fake.dump()), normalizeDump(golden.text));
  // The JSON listing too, but for rules: the fake keeps a rule's text, nft lists its expression tree.
  const noRules = (xs: Record<string, unknown>[]) =>
    xs.filter((o) => !("rule" in o)).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
  const ours = normalize(await fake.list({ table: { family: "inet", name: "golden" } }));
  const nft = normalize(parseListOutput(JSON.stringify(golden.output)));
  assert.deepEqual(noRules(ours), noRules(nft));
  assert.equal(ours.length, nft.length);
});
