/**
 * Child of errors_libc_test.ts: a fresh process (its code still being compiled, when the runtime is most
 * likely to leave an errno of its own) asks an empty netlink socket for a datagram without waiting, N
 * times (argument, default 2000). Each must come back as "nothing queued" (EAGAIN); prints the ones that
 * threw instead, and why.
 */
import { NETLINK_ROUTE, NetlinkSocket } from "../../../ffi/mod.ts";

const sock = NetlinkSocket.open(NETLINK_ROUTE);
const wrong: string[] = [];
for (let i = 0; i < Number(Deno.args[0] ?? 2000); i++) {
  try {
    if (sock.recv(true) !== undefined) wrong.push(`${i}: a datagram`);
  } catch (e) {
    wrong.push(`${i}: ${e instanceof Error ? e.message : e}`);
  }
}
sock.close();
console.log(JSON.stringify(wrong));
