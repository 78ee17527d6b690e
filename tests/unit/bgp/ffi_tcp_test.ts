import assert from "node:assert/strict";
import { encodeMd5sig, parseSockaddr, sockaddr } from "../../../ffi/mod.ts";

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

Deno.test("sockaddr_in encodes family little-endian and port/address in network order", () => {
  const b = sockaddr("10.0.0.2", 179);
  assert.equal(b.length, 16);
  assert.equal(hex(b), "020000b30a000002" + "0000000000000000");
  assert.deepEqual(parseSockaddr(b), { family: 4, ip: "10.0.0.2", port: 179 });
});

Deno.test("sockaddr_in6 round-trips, and v4-mapped addresses decode as dotted quads", () => {
  const b = sockaddr("fd00:12::2", 1790);
  assert.equal(b.length, 28);
  assert.equal(hex(b.subarray(0, 4)), "0a0006fe");
  assert.deepEqual(parseSockaddr(b), { family: 6, ip: "fd00:12::2", port: 1790 });
  assert.deepEqual(parseSockaddr(sockaddr("::ffff:10.1.2.3", 5)), { family: 4, ip: "10.1.2.3", port: 5 });
  assert.throws(() => sockaddr("not-an-ip", 1), TypeError);
});

Deno.test("struct tcp_md5sig holds the peer in a 128-byte sockaddr_storage, then key length and key", () => {
  const b = encodeMd5sig("10.0.8.2", "s3cret-pw");
  assert.equal(b.length, 216);
  assert.equal(hex(b.subarray(0, 8)), "020000000a000802");
  assert.equal(b[130]! | (b[131]! << 8), 9);
  assert.equal(new TextDecoder().decode(b.subarray(136, 145)), "s3cret-pw");
  assert.equal(encodeMd5sig("10.0.8.2", "")[130], 0, "an empty key deletes it");
  assert.throws(() => encodeMd5sig("10.0.8.2", "x".repeat(81)), RangeError);
});
