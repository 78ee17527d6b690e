/**
 * Benchmark: how long `lab up` takes for 3 and 10 nodes (with one agent per node), and how many pods per
 * second the lab kubelet brings to Ready. References, measured in the same run:
 * - for `lab up`: the same namespaces and underlay built by plain `ip` commands (what the plumbing alone
 *   costs), so the ratio shows what the control plane and the agents add;
 * - for pods: the same number of bare CNI ADDs (bridge + host-local, sequential) into fresh namespaces,
 *   which is the floor any kubelet using the real plugins pays.
 * Uses its own state dir and namespace prefix, so a user's lab is never touched.
 *
 * Run: deno run -A bench/lab_up.ts   →   bench/results/lab_up.md
 */
import { kubectl, labDown, labUp } from "../lab/mod.ts";

const PODS = 30;
const ROUNDS = 3;
const stateDir = await Deno.makeTempDir({ prefix: "krl-bench-" });
const prefix = `krlb${crypto.randomUUID().slice(0, 4)}-`;
const where = { stateDir, prefix };

async function sh(cmd: string[], stdin?: string): Promise<string> {
  const p = new Deno.Command(cmd[0]!, {
    args: cmd.slice(1),
    stdin: stdin !== undefined ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = p.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const o = await p.output();
  if (!o.success) throw new Error(`${cmd.join(" ")}: ${new TextDecoder().decode(o.stderr)}`);
  return new TextDecoder().decode(o.stdout);
}

/** Reference: the lab's namespaces and underlay with plain `ip`, then removed. */
async function plumbingOnly(nodes: number): Promise<number> {
  const p = `krlr${crypto.randomUUID().slice(0, 4)}-`;
  const names = [`${p}ul`, `${p}m`, ...Array.from({ length: nodes }, (_, i) => `${p}n${i + 1}`)];
  const t0 = performance.now();
  try {
    for (const n of names) {
      await sh(["ip", "netns", "add", n]);
      await sh(["ip", "-n", n, "link", "set", "lo", "up"]);
    }
    await sh(["ip", "-n", names[0]!, "link", "add", "br0", "type", "bridge"]);
    await sh(["ip", "-n", names[0]!, "link", "set", "br0", "up"]);
    for (const [i, n] of names.slice(1).entries()) {
      await sh([
        "ip",
        "-n",
        names[0]!,
        "link",
        "add",
        `v${i}`,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        n,
      ]);
      await sh(["ip", "-n", names[0]!, "link", "set", `v${i}`, "master", "br0", "up"]);
      await sh(["ip", "-n", n, "addr", "add", `192.168.1.${99 + i}/24`, "dev", "eth0"]);
      await sh(["ip", "-n", n, "link", "set", "eth0", "up"]);
    }
    return (performance.now() - t0) / 1000;
  } finally {
    for (const n of names) {
      await new Deno.Command("ip", { args: ["netns", "del", n], stderr: "null" }).output();
    }
  }
}

/** Reference: `count` sequential CNI ADDs (bridge + host-local) into fresh namespaces; returns pods/s. */
async function bareCni(count: number): Promise<number> {
  const p = `krlc${crypto.randomUUID().slice(0, 4)}-`;
  const dataDir = await Deno.makeTempDir({ prefix: "krl-bench-ipam-" });
  const node = `${p}node`;
  const pods = Array.from({ length: count }, (_, i) => `${p}p${i}`);
  const conf = JSON.stringify({
    cniVersion: "0.3.0",
    name: "mynet",
    type: "bridge",
    bridge: "kube-bridge",
    isDefaultGateway: true,
    hairpinMode: true,
    ipam: { type: "host-local", ranges: [[{ subnet: "10.1.1.0/24" }]], dataDir },
  });
  await sh(["ip", "netns", "add", node]);
  try {
    const t0 = performance.now();
    for (const [i, pod] of pods.entries()) {
      await sh(["ip", "netns", "add", pod]);
      const c = new Deno.Command("ip", {
        args: ["netns", "exec", node, "/usr/lib/cni/bridge"],
        env: {
          CNI_COMMAND: "ADD",
          CNI_CONTAINERID: `bench${i}`,
          CNI_NETNS: `/var/run/netns/${pod}`,
          CNI_IFNAME: "eth0",
          CNI_PATH: "/usr/lib/cni",
        },
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const w = c.stdin.getWriter();
      await w.write(new TextEncoder().encode(conf));
      await w.close();
      const o = await c.output();
      if (!o.success) throw new Error(`CNI ADD: ${new TextDecoder().decode(o.stdout)}`);
    }
    return count / ((performance.now() - t0) / 1000);
  } finally {
    for (const n of [...pods, node]) {
      await new Deno.Command("ip", { args: ["netns", "del", n], stderr: "null" }).output();
    }
    await Deno.remove(dataDir, { recursive: true });
  }
}

async function timeUp(nodes: number, agents: boolean): Promise<number> {
  const t0 = performance.now();
  try {
    await labUp({ ...where, nodes, agents, cni: "lab" });
    return (performance.now() - t0) / 1000;
  } finally {
    await labDown(where);
  }
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * Pods/s over `ROUNDS` rounds of PODS unpinned pods (each round in its own namespace), created at once
 * through the API from inside the master's namespace; the median. Also times `kubectl apply` of the same
 * number of pods once, which is slower because kubectl throttles its own requests.
 */
async function podsPerSecond(): Promise<{ rate: number; rssMiB: number; kubectlRate: number }> {
  const state = await labUp({ ...where, nodes: 3, agents: false, cni: "lab" });
  try {
    const rates: number[] = [];
    const burst = new URL("./_lab_pod_burst.ts", import.meta.url).pathname;
    for (let round = 0; round < ROUNDS; round++) {
      const out = await sh([
        "ip",
        "netns",
        "exec",
        `${prefix}master`,
        Deno.execPath(),
        "run",
        "-A",
        burst,
        stateDir,
        `burst${round}`,
        String(PODS),
      ]);
      rates.push(PODS / Number(out.trim()));
    }
    // Memory of one pod: the RSS of its netexec process.
    const rec = [...Deno.readDirSync(`${stateDir}/nodes/kube-node1/pods`)][0]!;
    const pid = JSON.parse(Deno.readTextFileSync(`${stateDir}/nodes/kube-node1/pods/${rec.name}`)).pid;
    const rss = Number(/VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${pid}/status`))?.[1] ?? 0) / 1024;

    let yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: viakubectl}\n";
    for (let i = 0; i < PODS; i++) {
      yaml += `---\napiVersion: v1\nkind: Pod\nmetadata: {name: p${i}, namespace: viakubectl}\n` +
        `spec:\n  containers:\n  - {name: c, image: agnhost, ports: [{containerPort: 8080}]}\n`;
    }
    const t0 = performance.now();
    await kubectl(state, ["apply", "-f", "-"], { stdin: yaml });
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      const out = await kubectl(state, [
        "get",
        "pods",
        "-n",
        "viakubectl",
        "-o",
        'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\\n"}{end}',
      ]);
      if (out.stdout.split("\n").filter((l) => l === "True").length === PODS) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const kubectlRate = PODS / ((performance.now() - t0) / 1000);
    return { rate: median(rates), rssMiB: rss, kubectlRate };
  } finally {
    await labDown(where);
  }
}

const rows: string[][] = [];
try {
  const ref3 = await plumbingOnly(3);
  const up3 = await timeUp(3, true);
  rows.push([
    "`lab up` 3 nodes, agents healthy (s)",
    up3.toFixed(1),
    `${ref3.toFixed(2)} (namespaces + underlay by \`ip\`)`,
    (up3 / ref3).toFixed(1),
    "< 30 s",
  ]);
  const ref10 = await plumbingOnly(10);
  const up10 = await timeUp(10, true);
  rows.push([
    "`lab up` 10 nodes, agents healthy (s)",
    up10.toFixed(1),
    `${ref10.toFixed(2)} (namespaces + underlay by \`ip\`)`,
    (up10 / ref10).toFixed(1),
    "< 60 s",
  ]);
  const up10n = await timeUp(10, false);
  rows.push([
    "`lab up` 10 nodes, --no-agents (s)",
    up10n.toFixed(1),
    `${ref10.toFixed(2)}`,
    (up10n / ref10).toFixed(1),
    "< 30 s",
  ]);
  const ref = median([await bareCni(PODS), await bareCni(PODS), await bareCni(PODS)]);
  const pods = await podsPerSecond();
  rows.push([
    `pods to Ready, ${PODS} unpinned pods created at once through the API, 3 nodes (pods/s, median of ${ROUNDS})`,
    pods.rate.toFixed(1),
    `${ref.toFixed(1)} (bare CNI ADD, sequential)`,
    (pods.rate / ref).toFixed(2),
    ">= 5 pods/s",
  ]);
  rows.push([
    `same, created by one \`kubectl apply\` (pods/s; kubectl throttles itself)`,
    pods.kubectlRate.toFixed(1),
    `${ref.toFixed(1)}`,
    (pods.kubectlRate / ref).toFixed(2),
    "",
  ]);
  rows.push(["RSS of one pod's netexec process (MiB)", pods.rssMiB.toFixed(0), "—", "—", "< 64 MiB"]);
} finally {
  await labDown(where).catch(() => {});
  await Deno.remove(stateDir, { recursive: true }).catch(() => {});
}

const md = `## Lab: cluster bring-up and pod start rate

| measure | ours | reference | ratio | target |
| --- | --- | --- | --- | --- |
${rows.map((r) => `| ${r.join(" | ")} |`).join("\n")}

Measured by bench/lab_up.ts on this machine: wall time of \`labUp()\` until every node is Ready with its pod CIDR and (with agents) every agent's /healthz answers 200, against building the same namespaces and veths with plain \`ip\`; pods/s from creating ${PODS} unpinned pods at once (API calls from the master's namespace, polled every 50 ms; and once with \`kubectl apply\`, polled with \`kubectl get\`) until every pod is Ready, against sequential bare CNI ADDs of the same plugins (pods/s: median of ${ROUNDS} rounds; lab up: one run each).
`;
await Deno.mkdir(new URL("./results", import.meta.url), { recursive: true });
await Deno.writeTextFile(new URL("./results/lab_up.md", import.meta.url), md);
console.log(md);
