/**
 * The lab's machines as network namespaces: one for the underlay bridge, one for kube-master, one per
 * node, each machine linked to the bridge by a veth pair. Every link is created inside a lab namespace
 * (`ip -n <underlay> link add … peer name eth0 netns <node>`), so nothing ever appears in the host's own
 * namespace.
 */
import { sh } from "./_sh.ts";
import type { LabHost, Topology } from "./topology.ts";

/** Namespaces whose name starts with `prefix` (from `ip netns list`). */
export async function listNetns(prefix: string): Promise<string[]> {
  const res = await sh(["ip", "netns", "list"], { check: false });
  return res.stdout.split("\n").map((l) => l.split(" ")[0] ?? "").filter((n) => n.startsWith(prefix));
}

async function addNetns(name: string): Promise<void> {
  await sh(["ip", "netns", "add", name]);
  await sh(["ip", "-n", name, "link", "set", "lo", "up"]);
}

/**
 * Creates the underlay and every machine. `record(name)` is called before each namespace is created so
 * the caller can persist it first.
 */
export async function createMachines(t: Topology, record: (netns: string) => void): Promise<void> {
  record(t.underlayNetns);
  await addNetns(t.underlayNetns);
  await sh(["ip", "-n", t.underlayNetns, "link", "add", "br0", "type", "bridge"]);
  await sh(["ip", "-n", t.underlayNetns, "link", "set", "br0", "up"]);
  const hosts: LabHost[] = [t.master, ...t.nodes];
  for (const h of hosts) {
    record(h.netns);
    await addNetns(h.netns);
  }
  // Batch the underlay side: one `ip -batch` for every veth instead of a process per command.
  const batch: string[] = [];
  for (const h of hosts) {
    batch.push(`link add ${h.peerIfname} type veth peer name ${h.ifname} netns ${h.netns}`);
    batch.push(`link set ${h.peerIfname} master br0 up`);
  }
  await sh(["ip", "-n", t.underlayNetns, "-batch", "-"], { stdin: batch.join("\n") + "\n" });
  await Promise.all(hosts.map(async (h) => {
    // Nodes get a default route, as real nodes have, so a process on a node can route a packet towards a
    // cluster IP (or anywhere) before any rewrite; it points at the master, so it stays inside the lab.
    const dflt = h === t.master ? "" : `route add default via ${t.master.ip} dev ${h.ifname}\n`;
    await sh(["ip", "-n", h.netns, "-batch", "-"], {
      stdin: `addr add ${h.ip}/${h.prefixLen} dev ${h.ifname}\nlink set ${h.ifname} up\n${dflt}`,
    });
    // Nodes route pod traffic (and the bridge plugin expects forwarding): enable it in the node only.
    // (/proc/sys/net belongs to the writer's network namespace.)
    await sh(["ip", "netns", "exec", h.netns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]);
  }));
}

/** Kills every process inside `name`, then deletes it. Idempotent. */
export async function removeNetns(name: string): Promise<void> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const pids = await sh(["ip", "netns", "pids", name], { check: false });
    const list = pids.stdout.split(/\s+/).filter(Boolean).map(Number);
    for (const pid of list) {
      try {
        Deno.kill(pid, "SIGKILL");
      } catch { /* gone */ }
    }
    if (list.length === 0) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await sh(["ip", "netns", "del", name], { check: false });
}

/**
 * Adds one more machine on the underlay (an external BGP router, a client outside the cluster): a
 * namespace with `eth0` at `ip/prefixLen` bridged to br0. `record` is called before it is created.
 */
export async function addUnderlayHost(
  t: Topology,
  netns: string,
  peerIfname: string,
  ip: string,
  prefixLen: number,
  record: (netns: string) => void,
): Promise<void> {
  record(netns);
  await addNetns(netns);
  await sh(["ip", "-n", t.underlayNetns, "-batch", "-"], {
    stdin:
      `link add ${peerIfname} type veth peer name eth0 netns ${netns}\nlink set ${peerIfname} master br0 up\n`,
  });
  await sh(["ip", "-n", netns, "-batch", "-"], {
    stdin: `addr add ${ip}/${prefixLen} dev eth0\nlink set eth0 up\n`,
  });
}
