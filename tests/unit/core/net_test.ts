import assert from "node:assert/strict";
import fc from "fast-check";
import { cidrContains, formatCidr, formatIP, parseCidr, parseIP, parseIPv6 } from "../../../core/_net.ts";

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
