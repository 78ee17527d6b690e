/**
 * Stamps when the kernel commits nftables changes, for bench/proxy_scale.ts's event-latency figure: run
 * inside the agent's namespace, it joins the nftables netlink multicast group (NFNLGRP_NFTABLES, what
 * `nft monitor` listens to: the kernel notifies at commit) and, for every notification holding an endpoint
 * 10.250.x.y:8080 (the 6 bytes of an endpoint map element's value, address then port, in network order),
 * prints `<address> <wall ms>` the first time it sees that address. It
 * prints `ready` once subscribed. (`nft monitor` itself rebuilds its cache of the whole ruleset on
 * every generation, seconds at 10,000 Services, so it cannot keep up.)
 */
const lib = Deno.dlopen(Deno.env.get("KUBE_ROUTER_LIBC") ?? "libc.so.6", {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize", nonblocking: true },
});
const AF_NETLINK = 16, SOCK_RAW = 3, NETLINK_NETFILTER = 12, SOL_NETLINK = 270;
const NETLINK_ADD_MEMBERSHIP = 1, NFNLGRP_NFTABLES = 7, SOL_SOCKET = 1, SO_RCVBUFFORCE = 33;

const fd = lib.symbols.socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER);
if (fd < 0) throw new Error("socket(AF_NETLINK, NETLINK_NETFILTER) failed");
const sa = new Uint8Array(12); // sockaddr_nl: family, pad, pid 0 (kernel assigns), groups 0
new DataView(sa.buffer).setUint16(0, AF_NETLINK, true);
if (lib.symbols.bind(fd, sa, 12) < 0) throw new Error("bind failed");
const int = (v: number) => new Uint8Array(new Int32Array([v]).buffer);
lib.symbols.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, int(64 << 20), 4);
if (lib.symbols.setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, int(NFNLGRP_NFTABLES), 4) < 0) {
  throw new Error("NETLINK_ADD_MEMBERSHIP failed");
}
console.log("ready");
const buf = new Uint8Array(1 << 20);
const seen = new Set<string>();
for (;;) {
  const n = Number(await lib.symbols.recv(fd, buf, BigInt(buf.length), 0));
  const at = performance.timeOrigin + performance.now();
  if (n < 0) {
    console.log("overrun"); // ENOBUFS: notifications lost
    continue;
  }
  // 10.250.x.y then port 8080 (0x1f90).
  for (let i = 0; i + 6 <= n; i++) {
    if (buf[i] !== 10 || buf[i + 1] !== 250 || buf[i + 4] !== 0x1f || buf[i + 5] !== 0x90) continue;
    const ip = `10.250.${buf[i + 2]}.${buf[i + 3]}`;
    if (!seen.has(ip)) {
      seen.add(ip);
      console.log(`${ip} ${at.toFixed(3)}`);
    }
  }
}
