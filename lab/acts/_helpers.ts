/** Small helpers the acts share. */
import type { DemoContext } from "./types.ts";

export const nodesAsJson = async (ctx: DemoContext) =>
  // deno-lint-ignore no-explicit-any
  JSON.parse(await ctx.kubectl(["get", "nodes", "-o", "json"], { quiet: true })).items as any[];

// deno-lint-ignore no-explicit-any
export const podsAsJson = async (ctx: DemoContext, ns: string, selector: string): Promise<any[]> =>
  JSON.parse(await ctx.kubectl(["get", "pods", "-n", ns, "-l", selector, "-o", "json"], { quiet: true }))
    .items;

export const DEMO_NS = "demo";
export const SLICE_COLUMNS =
  "custom-columns=NAME:.metadata.name,ADDRESSTYPE:.addressType,PORTS:.ports[*].port," +
  "ENDPOINTS:.endpoints[*].addresses[0],READY:.endpoints[*].conditions.ready";
export const podYaml = (name: string, node: string) =>
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
