/**
 * Sends one UDP datagram from a connected socket and prints the answer, `refused` when the kernel reports
 * ECONNREFUSED (an ICMP port unreachable came back: what a rejected Service answers), or nothing after 1 s.
 * Deno's datagram sockets are not connected, so they never see the ICMP error: this goes through libc.
 * Usage: deno run --allow-ffi --allow-env --allow-read _udp_connected.ts TARGET PORT [MESSAGE]
 */
import {
  afOf,
  check,
  errno,
  libc,
  parseIP,
  SO_RCVTIMEO,
  SOCK_DGRAM,
  sockaddr,
  SOL_SOCKET,
} from "../../../ffi/mod.ts";

const ECONNREFUSED = 111;
const [target = "", port = "0", msg = "hostname"] = Deno.args;
const family = parseIP(target)?.family;
if (!family) throw new TypeError(`not an address: ${target}`);
const c = libc();
const fd = check(c.socket(afOf(family), SOCK_DGRAM, 0), "socket");
const timeout = new BigInt64Array([1n, 0n]); // struct timeval: 1 s
check(c.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, new Uint8Array(timeout.buffer), 16), "setsockopt");
const to = sockaddr(target, Number(port));
check(c.connect(fd, to, to.length), "connect");
const out = new TextEncoder().encode(msg);
check(c.sendto(fd, out, BigInt(out.length), 0, null, 0), "send");
const buf = new Uint8Array(2048);
const n = Number(c.recvfrom(fd, buf, BigInt(buf.length), 0, null, null));
const e = n < 0 ? errno() : 0;
c.close(fd);
if (n >= 0) console.log(new TextDecoder().decode(buf.subarray(0, n)));
else if (e === ECONNREFUSED) console.log("refused");
