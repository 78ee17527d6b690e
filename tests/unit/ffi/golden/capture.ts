/**
 * Re-captures the golden netlink bytes in iproute2.json from the real tools (needs root, strace,
 * iproute2). Run: `deno run -A tests/unit/ffi/golden/capture.ts`. Each command runs in a throwaway
 * namespace with lo (index 1) and an up bridge br0 (index 2, 10.9.0.1/24, fd00::1/64), under
 * `strace -e write=3` (requests) or `-e read=3` (kernel replies to a dump).
 */
import { NetNs } from "../../../_support/netns.ts";

const SETUP = [
  ["ip", "link", "add", "br0", "type", "bridge"],
  ["ip", "link", "set", "br0", "up"],
  ["ip", "addr", "add", "10.9.0.1/24", "dev", "br0"],
  ["ip", "-6", "addr", "add", "fd00::1/64", "dev", "br0", "nodad"],
];

/** Requests: the last sendmsg of each command. */
const REQUESTS = [
  "ip route add 10.1.2.0/24 via 10.9.0.2 table 100 proto 17",
  "ip route add 10.1.3.0/24 via 10.9.0.2 src 10.9.0.1 metric 20 table 1000 dev br0",
  "ip route del 10.1.2.0/24 table 100",
  "ip route replace 10.1.4.0/24 dev br0 proto 17 scope link",
  "ip -6 route add fd01::/64 via fd00::2 metric 5 dev br0",
  "ip route add 10.11.0.0/16 table 1000 nexthop via 10.9.0.2 weight 2 nexthop via 10.9.0.3",
  "ip route add blackhole 10.12.0.0/16 table 100",
  "ip rule add from 10.1.0.0/16 pref 100 table 77",
  "ip rule add fwmark 0x2000/0xf000 pref 101 table 300",
  "ip addr add 10.9.1.1/24 dev br0",
  "ip -6 addr add fd00::5/64 dev br0",
  "ip link add v0 type veth peer name v1",
  "ip link add vx0 type vxlan id 42 local 10.9.0.1 nolearning dstport 4789",
  "ip link add br1 mtu 1400 type bridge",
  // This kernel lacks ipip/ip6tnl; the request bytes are captured all the same (the kernel then refuses).
  "ip link add kt0 type ipip local 10.0.0.1 remote 10.0.0.2",
  "ip link add kt1 type ipip local 10.0.0.1 remote 10.0.0.2 ttl 64 dev br0 encap fou encap-sport auto encap-dport 5555",
  "ip link add kt2 type ip6tnl mode ip6ip6 local fd00::1 remote fd00::2",
  "ip link set br0 mtu 1450",
  "ip neigh add 10.9.0.7 lladdr 02:00:00:00:00:07 dev br0 nud permanent",
];

/** Kernel replies: every recvmsg of a dump, after these extra setup commands. */
const DUMPS: { setup: string[]; cmd: string }[] = [
  {
    setup: [
      "ip route add 10.1.2.0/24 via 10.9.0.2 table 100 proto 17",
      "ip route add 10.11.0.0/16 table 100 nexthop via 10.9.0.2 weight 2 nexthop via 10.9.0.3",
      "ip -6 route add fd01::/64 via fd00::2 metric 5 dev br0 table 100",
    ],
    cmd: "ip route show table 100",
  },
  {
    setup: ["ip -6 route add fd01::/64 via fd00::2 metric 5 dev br0 table 100"],
    cmd: "ip -6 route show table 100",
  },
  { setup: ["ip rule add from 10.1.0.0/16 pref 100 table 77"], cmd: "ip -4 rule show" },
];

function hexDumps(stderr: string, call: "sendmsg" | "recvmsg"): string[] {
  const out: string[] = [];
  let cur: string[] | undefined;
  for (const line of stderr.split("\n")) {
    if (line.startsWith(call + "(")) {
      cur = [];
      out.push("");
      continue;
    }
    if (!line.startsWith(" | ")) {
      if (!line.startsWith(" * ")) cur = undefined;
      continue;
    }
    if (!cur) continue;
    const hex = line.slice(10, 58).trim().split(/\s+/).join("");
    out[out.length - 1] += hex;
  }
  return out.filter((h) => h.length > 0);
}

const result: {
  requests: Record<string, string>;
  replies: Record<string, string>;
  dumps: Record<string, string[]>;
} = {
  requests: {},
  replies: {},
  dumps: {},
};
const strace = ["strace", "-f", "-e", "trace=sendmsg,recvmsg"];

for (const cmd of REQUESTS) {
  const ns = await NetNs.create("golden");
  try {
    for (const s of SETUP) await ns.exec(s);
    // Some commands fail on purpose (a delete of a missing route), to capture the kernel's error reply.
    const res = await ns.exec([...strace, "-e", "write=3", "-e", "read=3", ...cmd.split(" ")], {
      check: false,
    });
    const sent = hexDumps(res.stderr, "sendmsg");
    const got = hexDumps(res.stderr, "recvmsg");
    result.requests[cmd] = sent[sent.length - 1]!;
    result.replies[cmd] = got[got.length - 1]!;
  } finally {
    await ns.remove();
  }
}
for (const d of DUMPS) {
  const ns = await NetNs.create("golden");
  try {
    for (const s of SETUP) await ns.exec(s);
    for (const s of d.setup) await ns.exec(s.split(" "));
    const res = await ns.exec([...strace, "-e", "read=3", ...d.cmd.split(" ")]);
    result.dumps[d.cmd] = hexDumps(res.stderr, "recvmsg");
  } finally {
    await ns.remove();
  }
}
const path = new URL("./iproute2.json", import.meta.url);
await Deno.writeTextFile(path, JSON.stringify(result, null, 2) + "\n");
console.log(
  `wrote ${path.pathname}: ${Object.keys(result.requests).length} requests, ${
    Object.keys(result.dumps).length
  } dumps`,
);
