/**
 * `deno task demo`: the seed's asciicast as a narrated, checked scenario. A scenario is a list of acts,
 * each a list of named steps; a step runs commands against the lab (printing each command and what it
 * saw) and states expectations. The demo exits 0 only if every expectation held. Each module's issue adds
 * its own act to `ACTS` (cross-node traffic with the router, service load balancing with the proxy,
 * network policy with the firewall).
 */
import { sh, sleep } from "./_sh.ts";
import { execCommand, kubectl, labDown, labUp, NODE_COLUMNS, type UpOptions } from "./lab.ts";
import type { LabState } from "./state.ts";
import { ipInCidr, MASTER_IP, SERVICE_CIDR, topology } from "./topology.ts";

/** An expectation did not hold; the step stops there. */
export class ExpectationFailed extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ExpectationFailed";
  }
}

export interface DemoContext {
  state: LabState;
  /** Prints a narration line. */
  say(line: string): void;
  /** Runs kubectl (printing `$ kubectl …` and its output unless quiet); throws if it fails. */
  kubectl(args: string[], opts?: { stdin?: string; quiet?: boolean }): Promise<string>;
  /** Runs a command in a pod (`ns/name`) or machine (`kube-node1`); returns stdout, or throws. */
  exec(
    target: string,
    cmd: string[],
    opts?: { quiet?: boolean; check?: boolean },
  ): Promise<{ code: number; stdout: string }>;
  /** Records an expectation; a false one fails the step. */
  expect(ok: boolean, what: string, detail?: string): void;
  /** Polls until `fn` returns true (or times out, which fails the expectation `what`). */
  eventually(what: string, fn: () => Promise<boolean>, timeoutMs?: number): Promise<void>;
}

export interface Step {
  name: string;
  run(ctx: DemoContext): Promise<void>;
}

export interface Act {
  name: string;
  /** What the seed's asciicast shows here, in a sentence. */
  story: string;
  /** The act shows what the agents do; it is skipped (and says so) in a lab without agents. */
  needsAgents?: boolean;
  /** Fewest nodes the act needs (default 1); skipped, and says so, in a smaller lab. */
  minNodes?: number;
  steps: Step[];
}

export interface DemoResult {
  expectations: number;
  /** Expectations that did not hold (a step that threw counts as one). */
  unmet: number;
  /** Acts not run (they need agents and the lab has none). */
  skipped: string[];
  failed: Array<{ act: string; step: string; message: string }>;
}

const nodesAsJson = async (ctx: DemoContext) =>
  // deno-lint-ignore no-explicit-any
  JSON.parse(await ctx.kubectl(["get", "nodes", "-o", "json"], { quiet: true })).items as any[];

// deno-lint-ignore no-explicit-any
const podsAsJson = async (ctx: DemoContext, ns: string, selector: string): Promise<any[]> =>
  JSON.parse(await ctx.kubectl(["get", "pods", "-n", ns, "-l", selector, "-o", "json"], { quiet: true }))
    .items;

/** Act 1: the cluster of the seed, up and answering kubectl. */
export const clusterAct: Act = {
  name: "the cluster",
  story:
    "kube-master 192.168.1.99 and the nodes at 192.168.1.100+ register; each node gets a /24 of 10.1.0.0/16.",
  steps: [{
    name: "kubectl get nodes shows every node Ready with its pod CIDR",
    async run(ctx) {
      await ctx.kubectl(["get", "nodes", "-o", "wide"]);
      await ctx.kubectl(["get", "nodes", "-o", NODE_COLUMNS]);
      const items = await nodesAsJson(ctx);
      const topo = topology(ctx.state.nodes, ctx.state.prefix);
      ctx.expect(
        items.length === topo.nodes.length,
        `${topo.nodes.length} nodes registered`,
        `got ${items.length}`,
      );
      for (const [i, h] of topo.nodes.entries()) {
        const n = items.find((x) => x.metadata.name === h.name);
        const ready = n?.status?.conditions?.some((c: { type: string; status: string }) =>
          c.type === "Ready" && c.status === "True"
        );
        const ip = n?.status?.addresses?.find((a: { type: string }) => a.type === "InternalIP")?.address;
        ctx.expect(
          !!ready && ip === h.ip && n?.spec?.podCIDR === `10.1.${i + 1}.0/24`,
          `${h.name} Ready at ${h.ip} with pod CIDR 10.1.${i + 1}.0/24`,
          `ready=${ready} ip=${ip} podCIDR=${n?.spec?.podCIDR}`,
        );
      }
    },
  }, {
    name: "the kubernetes Service has the first cluster IP of 172.16.0.0/16",
    async run(ctx) {
      const out = await ctx.kubectl(["get", "service", "kubernetes", "-o", "jsonpath={.spec.clusterIP}"], {
        quiet: true,
      });
      ctx.say(`kubernetes Service cluster IP: ${out}`);
      ctx.expect(ipInCidr(out.trim(), SERVICE_CIDR), `cluster IP ${out.trim()} is inside ${SERVICE_CIDR}`);
      const master = await ctx.exec("kube-node1", [
        "curl",
        "-sk",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        `https://${MASTER_IP}:6443/version`,
      ], {
        check: false,
      });
      ctx.expect(
        /^[1-5]\d\d$/.test(master.stdout.trim()),
        `kube-node1 reaches the API server at https://${MASTER_IP}:6443 over the underlay (HTTP ${master.stdout.trim()})`,
        "no HTTP answer",
      );
    },
  }],
};

const DEMO_NS = "demo";
const SLICE_COLUMNS = "custom-columns=NAME:.metadata.name,ADDRESSTYPE:.addressType,PORTS:.ports[*].port," +
  "ENDPOINTS:.endpoints[*].addresses[0],READY:.endpoints[*].conditions.ready";
const podYaml = (name: string, node: string) =>
  `---
apiVersion: v1
kind: Pod
metadata:
  name: ${name}
  namespace: ${DEMO_NS}
  labels: {app: web}
spec:
  nodeName: ${node}
  containers:
  - name: netexec
    image: registry.k8s.io/e2e-test-images/agnhost:2.53
    args: ["netexec", "--http-port=8080", "--udp-port=8081"]
    ports:
    - {name: http, containerPort: 8080, protocol: TCP}
    - {name: udp, containerPort: 8081, protocol: UDP}
`;

/** Act 2: pods on one node talk over kube-bridge, and a Service gets a cluster IP and endpoints. */
export const sameNodeAct: Act = {
  name: "pods on one node",
  story: "Two pods on kube-node1 get addresses from 10.1.1.0/24 and reach each other over kube-bridge.",
  steps: [{
    name: "two pods on kube-node1 get IPs from 10.1.1.0/24",
    async run(ctx) {
      const yaml = `apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ${DEMO_NS}\n` +
        podYaml("web-1", "kube-node1") +
        podYaml("web-2", "kube-node1");
      ctx.say("creating namespace demo and pods web-1, web-2 (netexec on 8080/tcp, 8081/udp) on kube-node1");
      await ctx.kubectl(["apply", "-f", "-"], { stdin: yaml });
      await ctx.kubectl([
        "wait",
        "-n",
        DEMO_NS,
        "--for=condition=Ready",
        "pod",
        "-l",
        "app=web",
        "--timeout=90s",
      ]);
      await ctx.kubectl(["get", "pods", "-n", DEMO_NS, "-o", "wide"]);
      const pods = await podsAsJson(ctx, DEMO_NS, "app=web");
      for (const p of pods) {
        ctx.expect(
          ipInCidr(p.status?.podIP ?? "0.0.0.0", "10.1.1.0/24"),
          `${p.metadata.name} has IP ${p.status?.podIP} from kube-node1's 10.1.1.0/24`,
        );
      }
    },
  }, {
    name: "web-1 reaches web-2's netexec on the same node",
    async run(ctx) {
      const pods = await podsAsJson(ctx, DEMO_NS, "app=web");
      const ip = (n: string) => pods.find((p) => p.metadata.name === n)?.status?.podIP as string;
      const r = await ctx.exec(`${DEMO_NS}/web-1`, [
        "curl",
        "-s",
        "-m",
        "3",
        `http://${ip("web-2")}:8080/hostname`,
      ]);
      ctx.expect(
        r.stdout.trim() === "web-2",
        `curl http://${ip("web-2")}:8080/hostname from web-1 answers web-2`,
        `got ${JSON.stringify(r.stdout)}`,
      );
      const c = await ctx.exec(`${DEMO_NS}/web-1`, [
        "curl",
        "-s",
        "-m",
        "3",
        `http://${ip("web-2")}:8080/clientip`,
      ]);
      ctx.expect(
        c.stdout.trim().split(":")[0] === ip("web-1"),
        `web-2 sees the caller as web-1's own IP ${ip("web-1")} (no NAT on the bridge)`,
        `got ${JSON.stringify(c.stdout)}`,
      );
    },
  }, {
    name: "a Service gets a cluster IP and an EndpointSlice listing both pods",
    async run(ctx) {
      const svc = `apiVersion: v1
kind: Service
metadata: {name: web, namespace: ${DEMO_NS}}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http, protocol: TCP}
`;
      await ctx.kubectl(["apply", "-f", "-"], { stdin: svc });
      await ctx.kubectl(["get", "service", "-n", DEMO_NS, "web"]);
      let slice = "";
      await ctx.eventually("the EndpointSlice of web lists both pods", async () => {
        slice = await ctx.kubectl([
          "get",
          "endpointslices",
          "-n",
          DEMO_NS,
          "-l",
          "kubernetes.io/service-name=web",
          "-o",
          "jsonpath={range .items[*].endpoints[*]}{.targetRef.name}={.conditions.ready} {end}",
        ], { quiet: true });
        return slice.trim().split(" ").filter((x) => x.endsWith("=true")).length === 2;
      });
      await ctx.kubectl([
        "get",
        "endpointslices",
        "-n",
        DEMO_NS,
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        SLICE_COLUMNS,
      ]);
      const ip = await ctx.kubectl([
        "get",
        "service",
        "-n",
        DEMO_NS,
        "web",
        "-o",
        "jsonpath={.spec.clusterIP}",
      ], { quiet: true });
      ctx.expect(
        ipInCidr(ip.trim(), SERVICE_CIDR),
        `Service web got cluster IP ${ip.trim()} from ${SERVICE_CIDR}`,
      );
    },
  }],
};

/** Act 3: the router at work: BGP-learned routes carry pod traffic between nodes, unNATed. */
export const crossNodeAct: Act = {
  name: "pods on different nodes (router)",
  story:
    "Each agent announces its node's pod CIDR over iBGP; web-1 on kube-node1 reaches web-3 on kube-node2.",
  needsAgents: true,
  minNodes: 2,
  steps: [{
    name: "every node routes the other nodes' pod CIDRs via their underlay addresses",
    async run(ctx) {
      const topo = topology(ctx.state.nodes, ctx.state.prefix);
      for (const [i, h] of topo.nodes.entries()) {
        const want = topo.nodes.filter((o) => o !== h).map((o) =>
          `${podCidrOf(topo.nodes.indexOf(o))} via ${o.ip}`
        );
        let have: string[] = [];
        await ctx.eventually(`${h.name} has routes to ${want.length} other pod CIDR(s)`, async () => {
          const r = await ctx.exec(h.name, ["ip", "-j", "route", "show", "proto", "17"], {
            quiet: true,
            check: false,
          });
          have = (JSON.parse(r.stdout || "[]") as Array<{ dst: string; gateway?: string }>).map((x) =>
            `${x.dst} via ${x.gateway}`
          );
          return want.every((w) => have.includes(w));
        });
        if (i === 0) await ctx.exec(h.name, ["ip", "route", "show"]);
      }
    },
  }, {
    name: "web-1 on kube-node1 reaches web-3 on kube-node2, which sees web-1's own IP",
    async run(ctx) {
      await ctx.kubectl(["apply", "-f", "-"], { stdin: podYaml("web-3", "kube-node2") });
      await ctx.kubectl(["wait", "-n", DEMO_NS, "--for=condition=Ready", "pod/web-3", "--timeout=90s"]);
      await ctx.kubectl(["get", "pods", "-n", DEMO_NS, "-o", "wide"]);
      const pods = await podsAsJson(ctx, DEMO_NS, "app=web");
      const ip = (n: string) => pods.find((p) => p.metadata.name === n)?.status?.podIP as string;
      ctx.expect(
        ipInCidr(ip("web-3") ?? "0.0.0.0", "10.1.2.0/24"),
        `web-3 has IP ${ip("web-3")} from kube-node2's 10.1.2.0/24`,
      );
      const r = await ctx.exec(`${DEMO_NS}/web-1`, [
        "curl",
        "-s",
        "-m",
        "3",
        `http://${ip("web-3")}:8080/hostname`,
      ], { check: false });
      ctx.expect(
        r.stdout.trim() === "web-3",
        `curl http://${ip("web-3")}:8080/hostname from web-1 answers web-3`,
        `got ${JSON.stringify(r.stdout)}`,
      );
      const c = await ctx.exec(`${DEMO_NS}/web-1`, [
        "curl",
        "-s",
        "-m",
        "3",
        `http://${ip("web-3")}:8080/clientip`,
      ], { check: false });
      ctx.expect(
        c.stdout.trim().split(":")[0] === ip("web-1"),
        `web-3 sees the caller as web-1's own IP ${ip("web-1")} (routed, not NATed)`,
        `got ${JSON.stringify(c.stdout)}`,
      );
    },
  }],
};

function podCidrOf(index: number): string {
  return `10.1.${index + 1}.0/24`;
}

/** The scenario, in order. Later issues append their acts here. */
export const ACTS: Act[] = [clusterAct, sameNodeAct, crossNodeAct];

function indent(text: string): string {
  return text.trimEnd().split("\n").map((l) => `    ${l}`).join("\n");
}

/** Runs `acts` against an up lab, narrating to `out`. */
export async function runActs(
  state: LabState,
  acts: Act[],
  out: (line: string) => void = console.log,
): Promise<DemoResult> {
  const result: DemoResult = { expectations: 0, unmet: 0, failed: [], skipped: [] };
  let stepFailed = false;
  const ctx: DemoContext = {
    state,
    say: (l) => out(`  ${l}`),
    async kubectl(args, opts = {}) {
      if (!opts.quiet) out(`  $ kubectl ${args.join(" ")}`);
      const r = await kubectl(state, args, {
        check: false,
        ...(opts.stdin !== undefined ? { stdin: opts.stdin } : {}),
      });
      if (!opts.quiet && (r.stdout.trim() || r.stderr.trim())) out(indent(r.stdout + r.stderr));
      if (r.code !== 0) {
        throw new ExpectationFailed(`kubectl ${args.join(" ")} exited ${r.code}: ${r.stderr.trim()}`);
      }
      return r.stdout;
    },
    async exec(target, cmd, opts = {}) {
      if (!opts.quiet) out(`  $ lab exec ${target} -- ${cmd.join(" ")}`);
      const r = await sh(execCommand(state, target, cmd), { check: false });
      if (!opts.quiet && (r.stdout.trim() || r.stderr.trim())) out(indent(r.stdout + r.stderr));
      if (r.code !== 0 && (opts.check ?? true)) {
        throw new ExpectationFailed(`${cmd.join(" ")} in ${target} exited ${r.code}: ${r.stderr.trim()}`);
      }
      return { code: r.code, stdout: r.stdout };
    },
    expect(ok, what, detail) {
      result.expectations++;
      out(`  ${ok ? "✔" : "✘"} ${what}${ok || !detail ? "" : ` (${detail})`}`);
      if (!ok) {
        stepFailed = true;
        result.unmet++;
      }
    },
    async eventually(what, fn, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        if (await fn().catch(() => false)) return ctx.expect(true, what);
        await sleep(250);
      }
      ctx.expect(false, what, `not within ${timeoutMs / 1000} s`);
    },
  };
  for (const [i, act] of acts.entries()) {
    out(`\n== Act ${i + 1}: ${act.name} ==`);
    out(`  ${act.story}`);
    if (act.needsAgents && !state.agents) {
      out("  (skipped: the lab runs without agents)");
      result.skipped.push(act.name);
      continue;
    }
    if ((act.minNodes ?? 1) > state.nodes) {
      out(`  (skipped: needs ${act.minNodes} nodes, the lab has ${state.nodes})`);
      result.skipped.push(act.name);
      continue;
    }
    for (const step of act.steps) {
      out(`\n-- ${step.name}`);
      stepFailed = false;
      const t0 = performance.now();
      try {
        await step.run(ctx);
        if (stepFailed) {
          result.failed.push({ act: act.name, step: step.name, message: "an expectation did not hold" });
        }
        out(`  (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
      } catch (e) {
        const message = e instanceof Error ? e.message : String(e);
        result.expectations++;
        result.unmet++;
        out(`  ✘ ${message}`);
        result.failed.push({ act: act.name, step: step.name, message });
      }
    }
  }
  return result;
}

export interface DemoOptions extends UpOptions {
  /** Leave the lab up afterwards. */
  keep?: boolean;
  acts?: Act[];
}

/** `deno task demo`: up, the scenario, down. Returns the exit code. */
export async function runDemo(opts: DemoOptions = {}): Promise<number> {
  const t0 = performance.now();
  console.log(`kube-router lab demo: the seed's cluster in network namespaces (${opts.nodes ?? 3} nodes)`);
  let result: DemoResult | undefined;
  let upError: unknown;
  try {
    const state = await labUp({ ...opts, say: (l) => console.log(`lab: ${l}`) });
    result = await runActs(state, opts.acts ?? ACTS);
  } catch (e) {
    upError = e;
    console.log(`✘ the lab did not come up: ${e instanceof Error ? e.message : String(e)}`);
  } finally {
    if (!opts.keep) {
      const r = await labDown(opts);
      console.log(`\nlab: down (${r.netns.length} namespaces removed)`);
    } else console.log("\nlab: left up (--keep); remove it with `deno task lab down`");
  }
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  if (!result || upError) {
    console.log(`demo: FAILED — the lab did not come up (${secs} s)`);
    return 1;
  }
  const held = result.expectations - result.unmet;
  if (result.failed.length === 0) {
    const acts = (opts.acts ?? ACTS).length - result.skipped.length;
    const skipped = result.skipped.length ? `; skipped: ${result.skipped.join(", ")}` : "";
    console.log(
      `demo: PASSED — ${held}/${result.expectations} expectations held in ${acts} acts (${secs} s)${skipped}`,
    );
    return 0;
  }
  console.log(
    `demo: FAILED — ${result.failed.length} step(s) failed, ${held}/${result.expectations} expectations held (${secs} s)`,
  );
  for (const f of result.failed) console.log(`  ✘ ${f.act} / ${f.step}: ${f.message}`);
  return 1;
}
