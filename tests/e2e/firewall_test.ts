/**
 * End to end: the firewall in the lab against Kubernetes' own network-policy e2e cases (the table in
 * _netpol_cases.ts). Three nodes; namespaces x, y, z with pods a, b, c pinned to kube-node1..3, each pod
 * four agnhost `serve-hostname` containers (TCP and UDP on 80 and 81) as the suite's pods have. For every
 * step of every case the full 9 x 9 matrix on TCP and UDP ports 80 and 81 is probed with real traffic
 * (one prober per source pod, all targets at once) and compared with the expected matrix, retried while
 * the agents converge. Also the demo's act: deny-all ingress, an allow rule for a labelled client, and
 * the drop in the agent's /metrics. Needs root, kubectl, curl, nsenter and the Debian CNI plugins.
 *
 * A subset runs again with the agents as the DaemonSet (DAEMONSET_CASES says which and why).
 * `KRT_NETPOL_ONLY=substring` runs only the cases whose name contains it, in both.
 */
import assert from "node:assert/strict";
import { needs, run } from "../_support/netns.ts";
import { eventually, k, showLogTails } from "./_lab.ts";
import {
  DAEMONSET_MANIFEST,
  daemonSetAgentLog,
  execCommand,
  labDown,
  type LabState,
  labUp,
  nodeDir,
} from "../../lab/mod.ts";
import {
  ALL_PODS,
  type Case,
  CASES,
  NAMESPACES,
  POD_NAMES,
  type Policy,
  PORTS,
  PROTOS,
  Reach,
  type Step,
} from "./_netpol_cases.ts";

const REQ = {
  tools: ["ip", "kubectl", "curl", "nsenter"],
  files: ["/usr/lib/cni/bridge", "/usr/lib/cni/host-local"],
};
const probeScript = new URL("./_netpol_probe.ts", import.meta.url).pathname;

/** Objects as one kubectl input (a v1 List). */
function list(items: unknown[]): string {
  return JSON.stringify({ apiVersion: "v1", kind: "List", items });
}

function podsYaml(): string {
  const docs: unknown[] = [];
  for (const ns of NAMESPACES) docs.push({ apiVersion: "v1", kind: "Namespace", metadata: { name: ns } });
  NAMESPACES.forEach((ns) => {
    POD_NAMES.forEach((p, i) => {
      const containers = PORTS.flatMap((port) =>
        PROTOS.map((proto) => ({
          name: `cont-${port}-${proto}`,
          image: "registry.k8s.io/e2e-test-images/agnhost:2.53",
          command: ["/agnhost", "serve-hostname", `--${proto}`, "--http=false", "--port", String(port)],
          ports: [{ name: `serve-${port}-${proto}`, containerPort: port, protocol: proto.toUpperCase() }],
        }))
      );
      docs.push({
        apiVersion: "v1",
        kind: "Pod",
        metadata: { namespace: ns, name: p, labels: { pod: p } },
        spec: { nodeName: `kube-node${i + 1}`, containers },
      });
    });
  });
  return list(docs);
}

async function podIps(state: LabState): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const ns of NAMESPACES) {
    const list = JSON.parse(await k(state, ["get", "pods", "-n", ns, "-o", "json"])) as {
      items: { metadata: { name: string }; status?: { podIP?: string; phase?: string } }[];
    };
    for (const p of list.items) {
      if (p.status?.podIP && p.status.phase === "Running") out[`${ns}/${p.metadata.name}`] = p.status.podIP;
    }
  }
  return out;
}

/** Probes the whole matrix: one prober per source pod, all 36 targets at once. */
async function probeAll(state: LabState, ips: Record<string, string>): Promise<Map<string, boolean>> {
  const results = new Map<string, boolean>();
  await Promise.all(ALL_PODS.map(async (from) => {
    const targets = ALL_PODS.flatMap((to) =>
      PORTS.flatMap((port) =>
        PROTOS.map((proto) => ({ to, ip: ips[to]!, port, proto, name: to.split("/")[1]! }))
      )
    );
    const cmd = execCommand(state, from, [
      Deno.execPath(),
      "run",
      "--allow-net",
      "--unstable-net",
      "--no-config",
      probeScript,
      JSON.stringify(targets.map(({ ip, port, proto, name }) => ({ ip, port, proto, name }))),
      "1500",
    ]);
    const r = await run(cmd, { check: false });
    let got: boolean[] = [];
    try {
      got = JSON.parse(r.stdout.trim().split("\n").pop() ?? "[]");
    } catch { /* counted as unreachable */ }
    targets.forEach((t, i) => results.set(`${from}>${t.to}>${t.port}/${t.proto}`, got[i] === true));
  }));
  return results;
}

/** The differences between expected and probed, as readable lines (loopback excluded). */
function mismatches(expected: Reach, got: Map<string, boolean>): string[] {
  const out: string[] = [];
  for (const from of ALL_PODS) {
    for (const to of ALL_PODS) {
      if (from === to) continue;
      for (const port of PORTS) {
        for (const proto of PROTOS) {
          const want = expected.get(from, to, port, proto);
          const have = got.get(`${from}>${to}>${port}/${proto}`);
          if (want !== have) {
            out.push(
              `${from} -> ${to} ${proto}/${port}: expected ${want ? "reach" : "blocked"}, got ${
                have ? "reach" : "blocked"
              }`,
            );
          }
        }
      }
    }
  }
  return out;
}

/** The probed matrix for one port and protocol, as the suite prints it (. reached, X blocked). */
function table(got: Map<string, boolean>, port: number, proto: string): string {
  const head = `${proto}/${port}  ` + ALL_PODS.map((p) => p.padEnd(4)).join("");
  const rows = ALL_PODS.map((f) =>
    f.padEnd(8) +
    ALL_PODS.map((t) => (f === t ? "-" : got.get(`${f}>${t}>${port}/${proto}`) ? "." : "X").padEnd(4)).join(
      "",
    )
  );
  return [head, ...rows].join("\n");
}

function policyObject(p: Policy): unknown {
  return ({
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: { namespace: p.namespace, name: p.name },
    spec: p.spec,
  });
}

async function label(state: LabState, args: string[], labels: Record<string, string | null>): Promise<void> {
  const items = Object.entries(labels).map(([key, v]) => (v === null ? `${key}-` : `${key}=${v}`));
  await k(state, ["label", "--overwrite", ...args, ...items]);
}

async function resetCluster(state: LabState): Promise<void> {
  for (const ns of NAMESPACES) await k(state, ["delete", "networkpolicy", "--all", "-n", ns]);
  // Labels cases add; removing an absent label is harmless.
  for (const ns of NAMESPACES) await kQuiet(state, ["label", "ns", ns, "ns2-", "team-"]);
  for (const ns of NAMESPACES) {
    for (const p of POD_NAMES) await kQuiet(state, ["label", "pod", "-n", ns, p, "pod2-", "target-"]);
  }
}

async function kQuiet(state: LabState, args: string[]): Promise<void> {
  await k(state, args).catch(() => {});
}

async function runStep(state: LabState, ips: Record<string, string>, step: Step): Promise<void> {
  if (step.deletePolicies === "all") {
    for (const ns of NAMESPACES) await k(state, ["delete", "networkpolicy", "--all", "-n", ns]);
  } else {
    for (const p of step.deletePolicies ?? []) {
      const [ns, name] = p.split("/");
      await k(state, ["delete", "networkpolicy", "-n", ns!, name!]);
    }
  }
  for (const [ns, labels] of Object.entries(step.nsLabels ?? {})) await label(state, ["ns", ns], labels);
  for (const [pod, labels] of Object.entries(step.podLabels ?? {})) {
    const [ns, name] = pod.split("/");
    await label(state, ["pod", "-n", ns!, name!], labels);
  }
  const policies = typeof step.policies === "function" ? step.policies(ips) : step.policies ?? [];
  if (policies.length) await k(state, ["apply", "-f", "-"], list(policies.map(policyObject)));
}

async function checkStep(
  state: LabState,
  ips: Record<string, string>,
  step: Step,
  what: string,
): Promise<void> {
  const expected = new Reach();
  step.expect(expected);
  let last: string[] = [];
  let got = new Map<string, boolean>();
  // The agents converge within a sync or two; a mismatch is retried for up to ~20 s.
  for (let attempt = 0; attempt < 8; attempt++) {
    got = await probeAll(state, ips);
    last = mismatches(expected, got);
    if (last.length === 0) return;
    await new Promise((r) => setTimeout(r, 1500));
  }
  const tables = PORTS.flatMap((p) => PROTOS.map((q) => table(got, p, q))).join("\n\n");
  assert.fail(`${what}: ${last.length} mismatches\n${last.slice(0, 40).join("\n")}\n\nprobed:\n${tables}`);
}

const only = Deno.env.get("KRT_NETPOL_ONLY");
const selected: Case[] = CASES.filter((c) => !only || c.name.includes(only));

/**
 * The cases also run with the agents as the DaemonSet of dist/kube-router-daemonset.yaml (in-cluster
 * configuration, service-account token, RBAC of the manifest), one per firewall path, so that mode costs
 * about two minutes rather than the whole table's eleven: default deny of both directions (every chain),
 * pod and namespace selectors together (sets built from pods and namespaces across nodes), a named port
 * (resolved from the pods' specs), an egress ipBlock with except (CIDR sets), a pod relabelled under a
 * policy (update events over the agent's watch), and policies deleted (the agent's garbage collection).
 */
const DAEMONSET_CASES = [
  "should support a 'default-deny-all' policy",
  "should enforce policy based on PodSelector and NamespaceSelector",
  "should allow ingress access on one named port",
  "should enforce except clause while egress access to server in CIDR block",
  "should allow ingress access from updated pod",
  "should stop enforcing policies after they are deleted",
];
const daemonSetSelected: Case[] = selected.filter((c) => DAEMONSET_CASES.includes(c.name));

/** Brings up a 3-node lab (agents as processes, or as the DaemonSet), runs `cases` on it, takes it down. */
async function conformance(t: Deno.TestContext, cases: Case[], daemonset: boolean): Promise<void> {
  const id = crypto.randomUUID().slice(0, 6);
  const where = { stateDir: Deno.makeTempDirSync({ prefix: "krl-e2e-fw-" }), prefix: `krlf${id}-` };
  let ok = false;
  let state: LabState | undefined;
  try {
    state = await labUp({ ...where, nodes: 3, ...(daemonset ? { daemonset: DAEMONSET_MANIFEST } : {}) });
    await k(state, ["apply", "-f", "-"], podsYaml());
    let ips: Record<string, string> = {};
    await eventually(
      "all nine pods running with IPs",
      async () => {
        ips = await podIps(state!);
        return ALL_PODS.every((p) => ips[p]);
      },
      180_000,
      1000,
    );
    // Baseline: with no policy every pod reaches every other on every port.
    await checkStep(state, ips, { expect: () => {} }, "baseline without policies");
    let passed = 0;
    for (const c of cases) {
      const okCase = await t.step(c.name, async () => {
        await resetCluster(state!);
        for (const [i, step] of c.steps.entries()) {
          await runStep(state!, ips, step);
          await checkStep(state!, ips, step, `${c.name}, step ${i + 1}`);
        }
      });
      if (okCase) passed++;
    }
    console.log(`conformance${daemonset ? " (DaemonSet)" : ""}: ${passed}/${cases.length} cases passed`);
    assert.equal(passed, cases.length);
    ok = true;
  } finally {
    if (!ok) {
      showLogTails([
        `${where.stateDir}/master.log`,
        ...[1, 2, 3].flatMap((i) => {
          const node = `kube-node${i}`;
          const dsLog = state && daemonset ? daemonSetAgentLog(state, node) : undefined;
          return [`${nodeDir(where.stateDir, node)}/agent.log`, ...(dsLog ? [dsLog] : [])];
        }),
      ], 40);
    }
    await labDown(where);
  }
}

Deno.test({
  ...needs(
    `firewall conformance: ${selected.length} cases of Kubernetes' network-policy suite in the lab`,
    REQ,
  ),
  sanitizeOps: false,
  sanitizeResources: false,
  fn: (t) => conformance(t, selected, false),
});

Deno.test({
  ...needs(
    `firewall conformance with the agents as the DaemonSet: ${daemonSetSelected.length} cases of the suite`,
    REQ,
  ),
  ignore: daemonSetSelected.length === 0,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: (t) => {
    if (!only) {
      assert.equal(
        daemonSetSelected.length,
        DAEMONSET_CASES.length,
        "each DaemonSet case names a case of the table",
      );
    }
    return conformance(t, daemonSetSelected, true);
  },
});
