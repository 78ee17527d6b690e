/**
 * A synthetic cluster for the firewall benchmarks: `pods` pods in `namespaces` namespaces spread over
 * `nodes` nodes (this node, n1, gets `localPods` of them), and `policies` NetworkPolicies spread evenly
 * over the namespaces, mixing the constructs real clusters use: podSelector and namespaceSelector peers
 * (alone and together), ipBlock with except, numeric and named ports, endPort, egress rules.
 */
import type { V1Namespace, V1NetworkPolicy, V1Pod } from "@kubernetes/client-node";

export interface ClusterSize {
  namespaces: number;
  pods: number;
  localPods: number;
  policies: number;
}

export const DEFAULT_SIZE: ClusterSize = { namespaces: 100, pods: 5000, localPods: 110, policies: 1000 };

export function podIp(i: number): string {
  return `10.${1 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}`;
}

export function makePod(
  ns: string,
  i: number,
  local: boolean,
  app = `app${Math.floor(i / 100) % 20}`,
): V1Pod {
  return {
    metadata: {
      namespace: ns,
      name: `pod-${i}`,
      labels: { app, tier: i % 3 === 0 ? "db" : "web", shard: `s${i % 7}` },
    },
    spec: {
      nodeName: local ? "n1" : `n${2 + (i % 40)}`,
      containers: [{
        name: "c",
        ports: [{ name: "http", containerPort: 8080 }, { name: "dns", containerPort: 53, protocol: "UDP" }],
      }],
    },
    status: { phase: "Running", podIP: podIp(i), podIPs: [{ ip: podIp(i) }] },
  };
}

export function makeCluster(size: ClusterSize = DEFAULT_SIZE): {
  namespaces: V1Namespace[];
  pods: V1Pod[];
  policies: V1NetworkPolicy[];
} {
  const namespaces: V1Namespace[] = [];
  for (let n = 0; n < size.namespaces; n++) {
    namespaces.push({
      metadata: { name: `ns${n}`, labels: { team: `t${n % 10}`, env: n % 2 ? "prod" : "dev" } },
    });
  }
  const pods: V1Pod[] = [];
  // Local pods spread over every namespace: the k-th sits at k * stride + (k % stride).
  const stride = Math.floor(size.pods / size.localPods);
  const localIdx = new Set<number>();
  for (let k = 0; k < size.localPods; k++) localIdx.add(k * stride + (k % stride));
  for (let i = 0; i < size.pods; i++) pods.push(makePod(`ns${i % size.namespaces}`, i + 10, localIdx.has(i)));
  const policies: V1NetworkPolicy[] = [];
  for (let p = 0; p < size.policies; p++) {
    const ns = `ns${p % size.namespaces}`;
    const kind = p % 5;
    const spec: Record<string, unknown> = { podSelector: { matchLabels: { app: `app${p % 20}` } } };
    if (kind === 0) {
      spec.ingress = [{ from: [{ podSelector: { matchLabels: { tier: "web" } } }], ports: [{ port: 8080 }] }];
    } else if (kind === 1) {
      spec.ingress = [{
        from: [{
          namespaceSelector: { matchLabels: { team: `t${p % 10}` } },
          podSelector: { matchExpressions: [{ key: "shard", operator: "In", values: ["s1", "s2"] }] },
        }],
        ports: [{ port: "http" }, { protocol: "UDP", port: "dns" }],
      }];
    } else if (kind === 2) {
      spec.ingress = [{
        from: [{ ipBlock: { cidr: "10.0.0.0/8", except: [`10.1.${p % 256}.0/24`] } }],
        ports: [{ port: 9000, endPort: 9100 }],
      }];
    } else if (kind === 3) {
      spec.policyTypes = ["Ingress", "Egress"];
      spec.ingress = [{ from: [{ namespaceSelector: { matchLabels: { env: "prod" } } }] }];
      spec.egress = [{
        to: [{ namespaceSelector: {}, podSelector: { matchLabels: { tier: "db" } } }],
        ports: [{ port: "http" }],
      }, {
        to: [{ ipBlock: { cidr: "192.168.0.0/16" } }],
      }];
    } else {
      spec.podSelector = {};
      spec.policyTypes = ["Ingress"];
    }
    policies.push({ metadata: { namespace: ns, name: `pol-${p}` }, spec } as unknown as V1NetworkPolicy);
  }
  return { namespaces, pods, policies };
}
