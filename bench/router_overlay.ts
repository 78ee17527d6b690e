/**
 * Overlay programming speed: `Overlay.sync` bringing up kube-vxlan with 1,000 remote nodes (a permanent
 * neighbour and FDB entry each), re-syncing it unchanged, and tearing it down, in a throwaway namespace,
 * against iproute2 doing the same work in the same run (`ip -batch` for the device and neighbours,
 * `bridge -batch` for the FDB; `ip neigh show` + `bridge fdb show` as the reference for a no-change
 * re-sync, which lists both tables). Our side runs in its own `ip netns exec … deno` process, as the agent
 * would; its times are taken inside that process.
 *
 * Run: `deno run -A bench/router_overlay.ts [remotes]` (root). Writes bench/results/router_overlay.md.
 */
import { getLogger, MemorySink } from "../core/log.ts";
import { NetlinkFdb, Rtnetlink } from "../ffi/mod.ts";
import { Overlay, type OverlayRemote, vtepMac } from "../modules/router/overlay.ts";
import { NetNs } from "../tests/_support/netns.ts";
import { median, timeCmd } from "./_ffi_support.ts";

const LOCAL = { ip: "192.168.1.100", family: 4 as const };

function remotes(n: number): OverlayRemote[] {
  const out: OverlayRemote[] = [];
  for (let i = 0; i < n; i++) {
    out.push({ nodeIp: `172.16.${i >> 7}.${(i & 127) + 1}`, podCidrs: [`10.${i >> 8}.${i & 255}.0/24`] });
  }
  return out;
}

interface Figures {
  up: number;
  resync: number;
  down: number;
}

/** Worker, inside the namespace: alternating rounds of ours and the reference. */
async function worker(n: number, rounds: number): Promise<{ ours: Figures[]; ref: Figures[] }> {
  const rtnl = new Rtnetlink();
  const fdb = new NetlinkFdb();
  const overlay = new Overlay(rtnl, fdb, getLogger({}, new MemorySink()), { port: 4789 });
  const rs = remotes(n);
  const dir = await Deno.makeTempDir({ prefix: "krt-bench-ovl-" });
  try {
    const ipUp = [
      "link add kube-vxlan address 0a:58:c0:a8:01:64 mtu 1450 type vxlan id 19282 local 192.168.1.100 dev eth0 dstport 4789 nolearning",
      "link set kube-vxlan up",
      ...rs.map((r) => `neigh replace ${r.nodeIp} lladdr ${vtepMac(r.nodeIp)} dev kube-vxlan nud permanent`),
    ].join("\n") + "\n";
    const bridgeUp = rs.map((r) =>
      `fdb replace ${vtepMac(r.nodeIp)} dst ${r.nodeIp} dev kube-vxlan self permanent`
    )
      .join("\n") + "\n";
    await Deno.writeTextFile(`${dir}/ip_up`, ipUp);
    await Deno.writeTextFile(`${dir}/bridge_up`, bridgeUp);
    const ours: Figures[] = [];
    const ref: Figures[] = [];
    const runOurs = async () => {
      const t0 = performance.now();
      const routes = await overlay.sync(LOCAL, rs);
      const t1 = performance.now();
      await overlay.sync(LOCAL, rs);
      const t2 = performance.now();
      await overlay.sync(LOCAL, []);
      const t3 = performance.now();
      if (routes.length !== n) throw new Error(`ours: ${routes.length} routes`);
      ours.push({ up: t1 - t0, resync: t2 - t1, down: t3 - t2 });
    };
    const runRef = async () => {
      const up = (await timeCmd(["ip", "-batch", `${dir}/ip_up`])) +
        (await timeCmd(["bridge", "-batch", `${dir}/bridge_up`]));
      const entries = (await fdb.fdbList((await rtnl.linkGet("kube-vxlan"))!.index)).length;
      if (entries !== n) throw new Error(`reference: ${entries} fdb entries`);
      const resync = (await timeCmd(["ip", "neigh", "show", "dev", "kube-vxlan"])) +
        (await timeCmd(["bridge", "fdb", "show", "dev", "kube-vxlan"]));
      const down = await timeCmd(["ip", "link", "del", "kube-vxlan"]);
      ref.push({ up, resync, down });
    };
    for (let i = 0; i < rounds; i++) {
      if (i % 2 === 0) {
        await runOurs();
        await runRef();
      } else {
        await runRef();
        await runOurs();
      }
    }
    return { ours, ref };
  } finally {
    await Deno.remove(dir, { recursive: true });
    fdb.close();
    rtnl.close();
  }
}

if (Deno.args[0] === "--worker") {
  const res = await worker(Number(Deno.args[1]), Number(Deno.args[2]));
  console.log("@@RESULT@@" + JSON.stringify(res));
  Deno.exit(0);
}

const n = Number(Deno.args[0] ?? 1000);
const rounds = 5;
const ns = await NetNs.create("bench-ovl");
try {
  await ns.exec(["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]);
  await ns.exec(["ip", "link", "set", "eth0", "up"]);
  await ns.exec(["ip", "link", "set", "eth0p", "up"]);
  await ns.exec(["ip", "addr", "add", "192.168.1.100/24", "dev", "eth0"]);
  const out = await ns.exec([
    Deno.execPath(),
    "run",
    "-A",
    new URL(import.meta.url).pathname,
    "--worker",
    String(n),
    String(rounds),
  ]);
  const line = out.stdout.split("\n").find((l) => l.startsWith("@@RESULT@@"));
  if (!line) throw new Error(`worker printed no result: ${out.stderr}`);
  const { ours, ref } = JSON.parse(line.slice(10)) as { ours: Figures[]; ref: Figures[] };
  const row = (what: string, k: keyof Figures) => {
    const o = median(ours.map((f) => f[k]));
    const r = median(ref.map((f) => f[k]));
    return `| ${what} | ${o.toFixed(1)} | ${r.toFixed(1)} | ${(o / r).toFixed(2)} | — |`;
  };
  const md = [
    `## Router overlay: kube-vxlan with ${n.toLocaleString("en")} remote nodes`,
    "",
    "| measure | ours | reference | ratio | target |",
    "| --- | --- | --- | --- | --- |",
    row("bring up: device + a neighbour and an FDB entry per node (ms, median)", "up"),
    row("re-sync with nothing to change (ms, median)", "resync"),
    row("tear down when no node needs the tunnel (ms, median)", "down"),
    "",
    `Measured by bench/router_overlay.ts in a throwaway namespace, median of ${rounds} alternating rounds: ours = ` +
    "`Overlay.sync` timed inside its own `ip netns exec` Deno process (one request/ACK per entry); reference = " +
    "`ip -batch` (device, neighbours) + `bridge -batch` (FDB) of the same entries for bring-up, `ip neigh show` + " +
    "`bridge fdb show` for the re-sync (ours also checks the device), `ip link del` for tear-down, each timed " +
    "around the process (start-up included). No target is set for this figure.",
    "",
  ].join("\n");
  await Deno.mkdir(new URL("./results/", import.meta.url), { recursive: true });
  await Deno.writeTextFile(new URL("./results/router_overlay.md", import.meta.url), md);
  console.log(md);
} finally {
  await ns.remove();
}
