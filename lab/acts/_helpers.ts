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

/**
 * Pod `from` fetches netexec's `/hostname` and `/clientip` from pod `to` (`curl -s -m 3`, as a visitor
 * would), expecting `to` to answer with its own name and to see `from`'s own pod IP as the caller
 * (`how` says why no NAT hides it). `ip` maps a demo pod's name to its IP.
 */
export async function expectNetexecReach(
  ctx: DemoContext,
  ip: (pod: string) => string,
  from: string,
  to: string,
  how: string,
  check = true,
): Promise<void> {
  const curl = (path: string) =>
    ctx.exec(`${DEMO_NS}/${from}`, ["curl", "-s", "-m", "3", `http://${ip(to)}:8080/${path}`], { check });
  const r = await curl("hostname");
  ctx.expect(
    r.stdout.trim() === to,
    `curl http://${ip(to)}:8080/hostname from ${from} answers ${to}`,
    `got ${JSON.stringify(r.stdout)}`,
  );
  const c = await curl("clientip");
  ctx.expect(
    c.stdout.trim().split(":")[0] === ip(from),
    `${to} sees the caller as ${from}'s own IP ${ip(from)} (${how})`,
    `got ${JSON.stringify(c.stdout)}`,
  );
}
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
