/**
 * Captures golden FoU bytes (generic netlink family "fou", and an ipip link with GUE encapsulation) from
 * iproute2 inside the VM tier's guest, whose kernel has the fou and ipip modules. Run from the host:
 *
 * ```sh
 * deno run -A tests/vm/_vm.ts --run deno run -A tests/unit/ffi/golden/capture_fou.ts \
 *   > tests/unit/ffi/golden/fou.json
 * ```
 */
if (Deno.env.get("KRT_IN_VM") !== "1") {
  console.error("capture_fou.ts runs inside the VM tier's guest (see its doc comment)");
  Deno.exit(2);
}

async function sh(args: string[]): Promise<{ code: number; stderr: string }> {
  const out = await new Deno.Command(args[0]!, { args: args.slice(1), stdout: "null", stderr: "piped" })
    .output();
  return { code: out.code, stderr: new TextDecoder().decode(out.stderr) };
}

function hexDumps(stderr: string, call: "sendmsg" | "recvmsg"): string[] {
  const out: string[] = [];
  let cur = false;
  for (const line of stderr.split("\n")) {
    if (/^\w+\(/.test(line)) {
      cur = line.startsWith(call + "(");
      if (cur) out.push("");
      continue;
    }
    if (!line.startsWith(" | ") || !cur) continue;
    out[out.length - 1] += line.slice(10, 58).trim().split(/\s+/).join("");
  }
  return out.filter((h) => h.length > 0);
}

const SETUP = ["ip", "link", "set", "lo", "up"];
const REQUESTS = [
  "ip fou add port 5555 gue",
  "ip -6 fou add port 5555 gue",
  "ip fou add port 5556 ipproto 4",
  "ip link add tun-x type ipip local 10.0.0.1 remote 10.0.0.2 ttl 225 encap gue encap-sport auto encap-dport 5555",
];
const strace = ["strace", "-e", "trace=sendmsg,recvmsg", "-e", "write=3,4,5,6", "-e", "read=3,4,5,6"];
const result = {
  captured: "iproute2 in the VM tier's guest (Debian 12 kernel); strace -e write/read",
  requests: {} as Record<string, string>,
  dumps: {} as Record<string, string[]>,
};
// Debian's fou.ko has no genetlink alias: the kernel cannot load it on demand (see openFou in tunnels.ts).
await sh(["modprobe", "-a", "fou", "fou6"]);
await sh(["ip", "netns", "add", "capfou"]);
try {
  const ns = (cmd: string[]) => ["ip", "netns", "exec", "capfou", ...cmd];
  await sh(ns(SETUP));
  for (const cmd of REQUESTS) {
    const res = await sh(ns([...strace, ...cmd.split(" ")]));
    if (res.code !== 0) throw new Error(`${cmd}: ${res.stderr}`);
    result.requests[cmd] = hexDumps(res.stderr, "sendmsg").at(-1)!;
  }
  for (const cmd of ["ip fou show", "ip -6 fou show", "ip fou del port 5556"]) {
    const res = await sh(ns([...strace, ...cmd.split(" ")]));
    if (res.code !== 0) throw new Error(`${cmd}: ${res.stderr}`);
    if (cmd.includes("show")) result.dumps[cmd] = hexDumps(res.stderr, "recvmsg");
    else result.requests[cmd] = hexDumps(res.stderr, "sendmsg").at(-1)!;
  }
} finally {
  await sh(["ip", "netns", "del", "capfou"]);
}
console.log(JSON.stringify(result, null, 2));
