import { ipInCidr, SERVICE_CIDR } from "../topology.ts";
import { DEMO_NS, expectNetexecReach, podsAsJson, podYaml, SLICE_COLUMNS } from "./_helpers.ts";
import type { Act } from "./types.ts";

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
      await expectNetexecReach(ctx, ip, "web-1", "web-2", "no NAT on the bridge");
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
      /** `kubectl get endpointslices -n demo -l kubernetes.io/service-name=web -o OUTPUT` */
      const getWebSlices = (output: string) => [
        "get",
        "endpointslices",
        "-n",
        DEMO_NS,
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        output,
      ];
      let slice = "";
      await ctx.eventually("the EndpointSlice of web lists both pods", async () => {
        slice = await ctx.kubectl(
          getWebSlices("jsonpath={range .items[*].endpoints[*]}{.targetRef.name}={.conditions.ready} {end}"),
          { quiet: true },
        );
        return slice.trim().split(" ").filter((x) => x.endsWith("=true")).length === 2;
      });
      await ctx.kubectl(getWebSlices(SLICE_COLUMNS));
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
