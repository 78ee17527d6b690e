import { addExternalHost } from "../lab.ts";
import { topology } from "../topology.ts";
import { DEMO_NS, podsAsJson, podYaml } from "./_helpers.ts";
import type { Act, DemoContext } from "./types.ts";

const NODE_PORT = 30080;
/** A machine outside the cluster on the underlay, as `lab add-host client 192.168.1.50` makes it. */
const CLIENT = "client";
const CLIENT_IP = "192.168.1.50";

/** curl from a pod (`demo/web-1`) or a machine (`kube-node1`); the body, or "" on failure. */
async function fetch(ctx: DemoContext, from: string, url: string): Promise<string> {
  const r = await ctx.exec(from, ["curl", "-s", "-m", "3", url], { quiet: true, check: false });
  return r.code === 0 ? r.stdout.trim() : "";
}

/** n answers from `from`, counted by body. */
async function tally(ctx: DemoContext, from: string, url: string, n: number): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const b = (await fetch(ctx, from, url)) || "(no answer)";
    out.set(b, (out.get(b) ?? 0) + 1);
  }
  return out;
}

const show = (m: Map<string, number>) => [...m].sort().map(([k, v]) => `${k}×${v}`).join(" ");

/** Act 4: the service proxy: kube-router, not kube-proxy, load-balances a Service across nodes. */
export const serviceProxyAct: Act = {
  name: "a Service load-balanced by kube-router (service proxy)",
  story:
    "Service web has pods on all three nodes; its cluster IP and NodePort answer from every pod and node, spread over the backends.",
  needsAgents: true,
  minNodes: 3,
  steps: [{
    name: "web gets a pod on kube-node3 and a NodePort; its EndpointSlice lists pods on every node",
    async run(ctx) {
      await ctx.kubectl(["apply", "-f", "-"], { stdin: podYaml("web-4", "kube-node3") });
      await ctx.kubectl(["wait", "-n", DEMO_NS, "--for=condition=Ready", "pod/web-4", "--timeout=90s"]);
      const svc = `apiVersion: v1
kind: Service
metadata: {name: web-np, namespace: ${DEMO_NS}}
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http, protocol: TCP, nodePort: ${NODE_PORT}}
`;
      await ctx.kubectl(["apply", "-f", "-"], { stdin: svc });
      await ctx.kubectl(["get", "service", "-n", DEMO_NS, "web-np"]);
      await ctx.eventually("the EndpointSlice of web-np lists the 4 pods ready", async () => {
        const s = await ctx.kubectl([
          "get",
          "endpointslices",
          "-n",
          DEMO_NS,
          "-l",
          "kubernetes.io/service-name=web-np",
          "-o",
          "jsonpath={range .items[*].endpoints[*]}{.conditions.ready} {end}",
        ], { quiet: true });
        return s.trim().split(" ").filter((x) => x === "true").length === 4;
      }, 60_000);
    },
  }, {
    name: "the cluster IP answers from every pod and every node, spread over all four pods",
    async run(ctx) {
      const vip = (await ctx.kubectl(
        ["get", "service", "-n", DEMO_NS, "web-np", "-o", "jsonpath={.spec.clusterIP}"],
        { quiet: true },
      )).trim();
      const topo = topology(ctx.state.nodes, ctx.state.prefix);
      const sources = [
        ...["web-1", "web-2", "web-3", "web-4"].map((p) => `${DEMO_NS}/${p}`),
        ...topo.nodes.map((n) => n.name),
      ];
      const all = new Map<string, number>();
      await ctx.eventually(`every node's proxy serves ${vip}`, async () => {
        for (const n of topo.nodes) if (!(await fetch(ctx, n.name, `http://${vip}/hostname`))) return false;
        return true;
      }, 60_000);
      for (const from of sources) {
        const m = await tally(ctx, from, `http://${vip}/hostname`, 8);
        ctx.say(`  ${from} -> ${vip}: ${show(m)}`);
        for (const [k, v] of m) all.set(k, (all.get(k) ?? 0) + v);
        ctx.expect(!m.has("(no answer)"), `${from} got an answer to each of 8 requests`);
      }
      ctx.say(`distribution over all sources: ${show(all)}`);
      ctx.expect(
        ["web-1", "web-2", "web-3", "web-4"].every((p) => (all.get(p) ?? 0) > 0),
        "all four backends answered",
      );
    },
  }, {
    name: "a pod's own IP is kept through the cluster IP",
    async run(ctx) {
      const pods = await podsAsJson(ctx, DEMO_NS, "app=web");
      const ip = (n: string) => pods.find((p) => p.metadata.name === n)?.status?.podIP as string;
      const vip = (await ctx.kubectl(
        ["get", "service", "-n", DEMO_NS, "web-np", "-o", "jsonpath={.spec.clusterIP}"],
        { quiet: true },
      )).trim();
      // Both questions go over one keep-alive connection, so the same backend answers them (two requests
      // could be balanced to two pods). An answer from web-1 itself is hairpin-masqueraded; ask until
      // another pod answers.
      let seen = "";
      for (let i = 0; i < 8 && !seen; i++) {
        const r = await ctx.exec(
          `${DEMO_NS}/web-1`,
          ["curl", "-s", "-m", "3", "-w", "\\n", `http://${vip}/hostname`, `http://${vip}/clientip`],
          { quiet: true, check: false },
        );
        const [who, client] = r.stdout.trim().split("\n");
        if (r.code === 0 && who && who !== "web-1") seen = client ?? "";
      }
      ctx.expect(
        seen.split(":")[0] === ip("web-1"),
        `the backend sees web-1's own IP ${ip("web-1")}`,
        `got ${JSON.stringify(seen)}`,
      );
    },
  }, {
    name: "the NodePort answers on every node, from the nodes and from kube-master outside the cluster",
    async run(ctx) {
      const topo = topology(ctx.state.nodes, ctx.state.prefix);
      for (const n of topo.nodes) {
        for (const from of [n.name, topo.master.name]) {
          const m = await tally(ctx, from, `http://${n.ip}:${NODE_PORT}/hostname`, 4);
          ctx.say(`  ${from} -> ${n.ip}:${NODE_PORT}: ${show(m)}`);
          ctx.expect(!m.has("(no answer)"), `${from} reaches ${n.name}'s NodePort every time`);
        }
      }
    },
  }, {
    name: "a client outside the cluster (lab add-host) reaches the NodePort on every node",
    async run(ctx) {
      const topo = topology(ctx.state.nodes, ctx.state.prefix);
      if (!ctx.state.netns.includes(`${ctx.state.prefix}ext-${CLIENT}`)) {
        ctx.say(`$ lab add-host ${CLIENT} ${CLIENT_IP}`);
        await addExternalHost(ctx.state, CLIENT, CLIENT_IP);
      }
      const all = new Map<string, number>();
      for (const n of topo.nodes) {
        const m = await tally(ctx, CLIENT, `http://${n.ip}:${NODE_PORT}/hostname`, 4);
        ctx.say(`  ${CLIENT} -> ${n.ip}:${NODE_PORT}: ${show(m)}`);
        for (const [k, v] of m) all.set(k, (all.get(k) ?? 0) + v);
        ctx.expect(!m.has("(no answer)"), `${CLIENT} (${CLIENT_IP}) reaches ${n.name}'s NodePort every time`);
      }
      ctx.say(`distribution seen by ${CLIENT}: ${show(all)}`);
      ctx.expect(
        [...all.keys()].filter((k) => k !== "(no answer)").length >= 2,
        `${CLIENT}'s calls spread over several backends`,
      );
    },
  }],
};
