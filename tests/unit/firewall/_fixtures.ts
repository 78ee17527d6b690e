/** Small builders for pods, namespaces and policies in the firewall's unit tests. */
import type { V1Namespace, V1NetworkPolicy, V1Pod } from "@kubernetes/client-node";
import type { ResourceSource } from "../../../core/agent.ts";
import type { Bus, ResourceKind, ResourceTypes } from "../../../core/bus.ts";

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

/** The API objects the agent sees, published on its bus like the watch layer does. */
export class MapSource implements ResourceSource {
  readonly objects = new Map<ResourceKind, Map<string, unknown>>();
  constructor(readonly bus: Bus) {}
  start(): void {}
  waitForSync(): Promise<boolean> {
    return Promise.resolve(true);
  }
  stop(): Promise<void> {
    return Promise.resolve();
  }
  list<K extends ResourceKind>(r: K): ResourceTypes[K][] {
    return [...(this.objects.get(r)?.values() ?? [])] as ResourceTypes[K][];
  }
  get<K extends ResourceKind>(r: K, key: string): ResourceTypes[K] | undefined {
    return this.objects.get(r)?.get(key) as ResourceTypes[K] | undefined;
  }
  put<K extends ResourceKind>(r: K, obj: ResourceTypes[K]): void {
    const md = (obj as { metadata?: { name?: string; namespace?: string } }).metadata ?? {};
    const key = md.namespace ? `${md.namespace}/${md.name}` : `${md.name}`;
    let m = this.objects.get(r);
    if (!m) this.objects.set(r, m = new Map());
    const previous = m.get(key) as ResourceTypes[K] | undefined;
    m.set(key, structuredClone(obj));
    this.bus.publishResource({
      resource: r,
      type: previous ? "MODIFIED" : "ADDED",
      key,
      current: obj,
      ...(previous ? { previous } : {}),
    });
  }
  remove<K extends ResourceKind>(r: K, key: string): void {
    const m = this.objects.get(r);
    const previous = m?.get(key) as ResourceTypes[K] | undefined;
    if (!previous) return;
    m!.delete(key);
    this.bus.publishResource({ resource: r, type: "DELETED", key, previous });
  }
}
