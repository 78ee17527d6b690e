/**
 * Captures the golden IPVS generic-netlink bytes in ipvsadm.json from the real `ipvsadm` (libnl) inside
 * the VM tier's guest, whose kernel has IPVS (this machine's has not). Run from the host:
 *
 * ```sh
 * deno run -A tests/vm/_vm.ts --run deno run -A tests/unit/ffi/golden/capture_ipvs.ts \
 *   > tests/unit/ffi/golden/ipvsadm.json
 * ```
 *
 * Each command runs in a fresh network namespace (IPVS state is per namespace) after its setup commands,
 * under `strace -e write=N -e read=N` for the netlink socket's descriptor; the request is the command's
 * last sendmsg, a dump's replies are every recvmsg after the request. The JSON goes to stdout.
 */
if (Deno.env.get("KRT_IN_VM") !== "1") {
  console.error("capture_ipvs.ts runs inside the VM tier's guest (see its doc comment)");
  Deno.exit(2);
}

async function sh(args: string[], check = true): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(args[0]!, { args: args.slice(1), stdout: "piped", stderr: "piped" })
    .output();
  const res = {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
  if (check && out.code !== 0) throw new Error(`${args.join(" ")} exited ${out.code}: ${res.stderr}`);
  return res;
}

/** Requests: `[setup commands, the command]`. */
const REQUESTS: [string[], string][] = [
  [[], "ipvsadm -A -t 10.96.0.10:80 -s rr"],
  [[], "ipvsadm -A -u 10.96.0.10:53 -s wrr -p 300"],
  [[], "ipvsadm -A --sctp-service 10.96.0.11:9000 -s lc"],
  [[], "ipvsadm -A -f 7 -s sh -b sh-fallback,sh-port"],
  [[], "ipvsadm -A -t [fd00::10]:443 -s mh -b mh-port -p 60 -M 64"],
  [[], "ipvsadm -A -u 10.96.0.12:80 -s rr -o"],
  [["ipvsadm -A -t 10.96.0.10:80 -s rr"], "ipvsadm -E -t 10.96.0.10:80 -s wlc"],
  [["ipvsadm -A -t 10.96.0.10:80 -s rr"], "ipvsadm -D -t 10.96.0.10:80"],
  [
    ["ipvsadm -A -t 10.96.0.10:80 -s rr"],
    "ipvsadm -a -t 10.96.0.10:80 -r 10.1.1.5:8080 -m -w 3 -x 100 -y 10",
  ],
  [["ipvsadm -A -t 10.96.0.10:80 -s rr"], "ipvsadm -a -t 10.96.0.10:80 -r 10.1.1.6:8080 -i -w 1"],
  [["ipvsadm -A -f 7 -s rr"], "ipvsadm -a -f 7 -r 10.1.1.7:0 -g -w 2"],
  [["ipvsadm -A -t [fd00::10]:443 -s rr"], "ipvsadm -a -t [fd00::10]:443 -r [fd00::1:5]:8443 -m -w 1"],
  [
    ["ipvsadm -A -t 10.96.0.10:80 -s rr", "ipvsadm -a -t 10.96.0.10:80 -r 10.1.1.5:8080 -m -w 3"],
    "ipvsadm -e -t 10.96.0.10:80 -r 10.1.1.5:8080 -m -w 0",
  ],
  [
    ["ipvsadm -A -t 10.96.0.10:80 -s rr", "ipvsadm -a -t 10.96.0.10:80 -r 10.1.1.5:8080 -m -w 3"],
    "ipvsadm -d -t 10.96.0.10:80 -r 10.1.1.5:8080",
  ],
  [[], "ipvsadm --set 900 120 300"],
  [["ipvsadm -A -t 10.96.0.10:80 -s rr"], "ipvsadm -C"],
  [["ipvsadm -A -t 10.96.0.10:80 -s rr"], "ipvsadm -Z"],
];

/** Dumps: setup, then a listing command whose replies are captured. */
const DUMPS: [string[], string][] = [
  [
    [
      "ipvsadm -A -t 10.96.0.10:80 -s wrr -p 300",
      "ipvsadm -a -t 10.96.0.10:80 -r 10.1.1.5:8080 -m -w 3 -x 100 -y 10",
      "ipvsadm -a -t 10.96.0.10:80 -r 10.1.1.6:8080 -i -w 1",
      "ipvsadm -A -f 7 -s sh -b sh-fallback,sh-port",
      "ipvsadm -A -u [fd00::10]:53 -s rr",
      "ipvsadm -a -u [fd00::10]:53 -r [fd00::1:5]:5353 -m -w 1",
    ],
    "ipvsadm -Ln --stats",
  ],
  [["ipvsadm --set 900 120 300"], "ipvsadm -L --timeout"],
  [[], "ipvsadm -v"],
];

/** Hex of each sendmsg/recvmsg's data on any descriptor strace dumped (` | 00000  2c 00 …` lines). */
function hexDumps(stderr: string, call: "sendmsg" | "recvmsg"): string[] {
  const out: string[] = [];
  let cur = false;
  for (const line of stderr.split("\n")) {
    if (/^(\[pid\s+\d+\] )?\w+\(/.test(line)) {
      cur = line.replace(/^\[pid\s+\d+\] /, "").startsWith(call + "(");
      if (cur) out.push("");
      continue;
    }
    if (!line.startsWith(" | ") || !cur) continue;
    out[out.length - 1] += line.slice(10, 58).trim().split(/\s+/).join("");
  }
  return out.filter((h) => h.length > 0);
}

const FDS = "3,4,5,6";
const result = {
  captured: "ipvsadm (libnl) in the VM tier's guest, Debian 12 kernel; strace -e write/read",
  versions: { ipvsadm: "", kernel: "" },
  requests: {} as Record<string, string>,
  /** Commands the kernel refused (their request bytes are still captured). */
  failed: {} as Record<string, string>,
  family: "",
  dumps: {} as Record<string, { request: string; replies: string[] }>,
};
result.versions.ipvsadm = (await sh(["ipvsadm", "-v"])).stdout.trim();
result.versions.kernel = (await sh(["uname", "-r"])).stdout.trim();
let n = 0;
async function inFreshNs<T>(fn: (exec: (cmd: string) => string[]) => Promise<T>): Promise<T> {
  const name = `cap${n++}`;
  await sh(["ip", "netns", "add", name]);
  // With lo down a namespace has no local routing table, and IPVS then refuses every destination address
  // ("address not unicast": inet_addr_type answers RTN_BROADCAST without a local table).
  await sh(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"]);
  try {
    return await fn((cmd) => ["ip", "netns", "exec", name, ...cmd.split(" ")]);
  } finally {
    await sh(["ip", "netns", "del", name], false);
  }
}
const strace = ["strace", "-f", "-e", "trace=sendmsg,recvmsg", "-e", `write=${FDS}`, "-e", `read=${FDS}`];
for (const [setup, cmd] of REQUESTS) {
  await inFreshNs(async (exec) => {
    for (const s of setup) await sh(exec(s));
    const res = await sh(exec(`${strace.join(" ")} ${cmd}`), false);
    if (res.code !== 0) {
      result.failed[cmd] = res.stderr.split("\n").filter((l) => !/^( \||\w+\(| \*)/.test(l)).join(" ").trim();
    }
    const sent = hexDumps(res.stderr, "sendmsg");
    if (sent.length < 2) {
      throw new Error(`${cmd}: expected a family lookup and a request, got ${sent.length}`);
    }
    // The first sendmsg resolves the "IPVS" family through the controller.
    if (!result.family) result.family = sent[0]!;
    result.requests[cmd] = sent.at(-1)!;
  });
}
for (const [setup, cmd] of DUMPS) {
  await inFreshNs(async (exec) => {
    for (const s of setup) await sh(exec(s));
    const res = await sh(exec(`${strace.join(" ")} ${cmd}`));
    const key = `${setup.join("; ")}${setup.length ? "; " : ""}${cmd}`;
    result.dumps[key] = {
      request: hexDumps(res.stderr, "sendmsg").at(-1) ?? "",
      replies: hexDumps(res.stderr, "recvmsg"),
    };
  });
}
console.log(JSON.stringify(result, null, 2));
