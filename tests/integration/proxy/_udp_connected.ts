/**
 * Sends one UDP datagram from a connected socket and prints the answer, `refused` when the kernel reports
 * ECONNREFUSED (an ICMP port unreachable came back: what a rejected Service answers), `error N` for another
 * ICMP error, or nothing after 1 s.
 * Deno's datagram sockets are not connected, so they never see the ICMP error: this goes through libc.
 * The error is read as a value (poll, then SO_ERROR), never through errno: the runtime can overwrite errno
 * between a failed call and its read, which once made a refusal read as ENOENT (see ffi/libc.ts, errno).
 * Usage: deno run --allow-ffi --allow-env --allow-read _udp_connected.ts TARGET PORT [MESSAGE]
 */
import {
  afOf,
  check,
  getsockoptInt,
  libc,
  parseIP,
  POLLERR,
  pollFds,
  POLLIN,
  pollRevents,
  SO_ERROR,
  SOCK_DGRAM,
  sockaddr,
  SOL_SOCKET,
} from "../../../ffi/mod.ts";

const ECONNREFUSED = 111;
const MSG_DONTWAIT = 0x40;
const [target = "", port = "0", msg = "hostname"] = Deno.args;
const family = parseIP(target)?.family;
if (!family) throw new TypeError(`not an address: ${target}`);
const c = libc();
const fd = check(c.socket(afOf(family), SOCK_DGRAM, 0), "socket");
const to = sockaddr(target, Number(port));
check(c.connect(fd, to, to.length), "connect");
const out = new TextEncoder().encode(msg);
check(c.sendto(fd, out, BigInt(out.length), 0, null, 0), "send");
const pfd = pollFds([{ fd, events: POLLIN }]);
const ready = check(c.poll(pfd, 1n, 1000), "poll");
let answer = "";
if (ready > 0) {
  const rev = pollRevents(pfd, 0);
  // A pending socket error (the ICMP error) comes back as SO_ERROR's value; reading it clears it.
  const err = rev & POLLERR ? getsockoptInt(fd, SOL_SOCKET, SO_ERROR) : 0;
  if (err === ECONNREFUSED) answer = "refused";
  else if (err !== 0) answer = `error ${err}`;
  else if (rev & POLLIN) {
    const buf = new Uint8Array(2048);
    const n = Number(c.recvfrom(fd, buf, BigInt(buf.length), MSG_DONTWAIT, null, null));
    if (n >= 0) answer = new TextDecoder().decode(buf.subarray(0, n));
  }
}
c.close(fd);
if (answer) console.log(answer);
