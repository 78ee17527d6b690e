/** Small builders for pods, namespaces and policies in the firewall's unit tests. */
import type { V1Namespace, V1NetworkPolicy, V1Pod } from "@kubernetes/client-node";

export function ns(name: string, labels: Record<string, string> = {}): V1Namespace {
  return { metadata: { name, labels } };
}

export interface PodOpts {
  node?: string;
  labels?: Record<string, string>;
  ips?: string[];
  hostNetwork?: boolean;
  phase?: string;
  /** Container ports: `name:port/PROTO`, e.g. `http:8080/TCP`. */
  ports?: string[];
}

export function pod(namespace: string, name: string, o: PodOpts = {}): V1Pod {
  return {
    metadata: { namespace, name, labels: o.labels ?? {} },
    spec: {
      nodeName: o.node ?? "n1",
      ...(o.hostNetwork ? { hostNetwork: true } : {}),
      containers: [{
        name: "c",
        ports: (o.ports ?? []).map((p) => {
          const [n, rest] = p.split(":");
          const [port, proto] = rest!.split("/");
          return { name: n!, containerPort: Number(port), protocol: proto ?? "TCP" };
        }),
      }],
    },
    status: { phase: o.phase ?? "Running", podIPs: (o.ips ?? []).map((ip) => ({ ip })) },
  };
}

/** A policy as the API's JSON (`from`, not client-node's `_from`); `podSelector` defaults to `{}`. */
export function policy(namespace: string, name: string, spec: Record<string, unknown>): V1NetworkPolicy {
  return { metadata: { namespace, name }, spec: { podSelector: {}, ...spec } } as V1NetworkPolicy;
}

/** The API objects the agent sees: the shared in-memory Kubernetes source (tests/_support/kube_source.ts). */
export { MemorySource as MapSource } from "../../_support/kube_source.ts";
