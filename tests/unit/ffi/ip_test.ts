import assert from "node:assert/strict";
import fc from "fast-check";
import {
  cidrContains,
  formatCidr,
  formatIP,
  parseCidr,
  parseIP,
  parseIPv4,
  parseIPv4Fast,
  parseIPv6,
} from "../../../ffi/mod.ts";

Deno.test("IPv6 addresses parse and print in RFC 5952 form", () => {
  for (
    const [text, canon] of [
      ["2001:db8::1", "2001:db8::1"],
      ["::", "::"],
      ["::1", "::1"],
      ["fe80:0:0:0:0:0:0:1", "fe80::1"],
      ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
      ["::ffff:10.1.2.3", "::ffff:a01:203"],
    ] as const
  ) {
    const ip = parseIP(text);
    assert.ok(ip, text);
    assert.equal(formatIP(ip.addr), canon);
  }
  for (const bad of ["1::2::3", "12345::", "1:2:3:4:5:6:7:8:9", ":", "g::1", "1:2:3:4:5:6:7"]) {
    assert.equal(parseIPv6(bad), undefined, bad);
  }
});

Deno.test("IPv6 formatting round-trips for any 16 bytes", () => {
  fc.assert(fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (bytes) => {
    const back = parseIPv6(formatIP(bytes));
    assert.deepEqual(back, bytes);
  }));
});

Deno.test("CIDRs clear host bits and contain their addresses", () => {
  const c = parseCidr("10.1.2.3/16")!;
  assert.equal(formatCidr(c), "10.1.0.0/16");
  assert.ok(cidrContains(c, parseIP("10.1.255.1")!.addr));
  assert.ok(!cidrContains(c, parseIP("10.2.0.1")!.addr));
  assert.ok(!cidrContains(c, parseIP("::1")!.addr));
  assert.equal(parseCidr("10.0.0.0/33"), undefined);
  assert.equal(parseCidr("10.0.0.0"), undefined);
  assert.equal(parseCidr("010.0.0.0/8"), undefined);
  assert.equal(formatCidr(parseCidr("2001:db8::1/64")!), "2001:db8::/64");
});

/** The rule both IPv4 entry points implement, written out plainly: four decimal octets, no leading zeros. */
function referenceIPv4(s: string): number[] | undefined {
  const parts = s.split(".");
  if (parts.length !== 4) return undefined;
  const out: number[] = [];
  for (const p of parts) {
    if (!/^\d{1,3}$/.test(p) || (p.length > 1 && p[0] === "0") || Number(p) > 255) return undefined;
    out.push(Number(p));
  }
  return out;
}

Deno.test("the allocation-free IPv4 parser and the byte parser both accept exactly dotted quads (property)", () => {
  const octet = fc.oneof(
    fc.integer({ min: 0, max: 300 }).map(String),
    fc.constantFrom("", "00", "01", "a", "-1", "1 ", "+1"),
  );
  fc.assert(
    fc.property(fc.array(octet, { minLength: 1, maxLength: 5 }), (parts) => {
      const s = parts.join(".");
      const want = referenceIPv4(s);
      const bytes = parseIPv4(s);
      const fast = parseIPv4Fast(s);
      if (!want) {
        assert.equal(bytes, undefined, s);
        assert.equal(fast, -1, s);
      } else {
        assert.deepEqual(bytes && [...bytes], want, s);
        assert.equal(fast, ((want[0]! << 24) >>> 0) + (want[1]! << 16) + (want[2]! << 8) + want[3]!, s);
      }
    }),
  );
});
