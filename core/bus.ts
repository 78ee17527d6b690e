/**
 * Typed publish/subscribe between the watch layer and the modules (and between modules: the proxy
 * tells the router which service IPs to advertise without importing it). Delivery is synchronous and
 * in order; a handler that throws is logged and does not stop the others. Handlers only record
 * (STYLE.md "Data flow"): kernel I/O belongs in a module's sync, never in a handler.
 */
import type {
  V1EndpointSlice,
  V1Namespace,
  V1NetworkPolicy,
  V1Node,
  V1Pod,
  V1Service,
} from "@kubernetes/client-node";
import { getLogger, type Logger } from "./log.ts";

/** The Kubernetes resources a module can ask the watch layer for. */
export interface ResourceTypes {
  nodes: V1Node;
  services: V1Service;
  endpointslices: V1EndpointSlice;
  pods: V1Pod;
  namespaces: V1Namespace;
  networkpolicies: V1NetworkPolicy;
}
export type ResourceKind = keyof ResourceTypes;
export const RESOURCE_KINDS: readonly ResourceKind[] = [
  "nodes",
  "services",
  "endpointslices",
  "pods",
  "namespaces",
  "networkpolicies",
];

export type ChangeType = "ADDED" | "MODIFIED" | "DELETED";

/** One observed change of one object: `previous` is absent for ADDED, `current` for DELETED. */
export interface ResourceEvent<K extends ResourceKind = ResourceKind> {
  resource: K;
  type: ChangeType;
  /** `namespace/name` (or `name` for cluster-scoped objects). */
  key: string;
  previous?: ResourceTypes[K];
  current?: ResourceTypes[K];
}

/**
 * Topics other than resource changes. Every topic is declared here, in core, never by declaration
 * merging inside a module: a topic one module publishes and another reads is a contract between them,
 * and modules never import each other.
 */
export interface TopicTypes {
  /** The watch layer delivered the first full list of this resource. */
  synced: { resource: ResourceKind };
}

type AnyResourceEvent = { [K in ResourceKind]: ResourceEvent<K> }[ResourceKind];
type Handler<T> = (payload: T) => void;

export class Bus {
  #resourceHandlers = new Map<ResourceKind, Set<Handler<AnyResourceEvent>>>();
  #topicHandlers = new Map<string, Set<Handler<never>>>();
  #log: Logger;

  constructor(log: Logger = getLogger({ component: "bus" })) {
    this.#log = log;
  }

  /** Subscribes to changes of one resource; returns the unsubscribe function. */
  onResource<K extends ResourceKind>(resource: K, handler: Handler<ResourceEvent<K>>): () => void {
    let set = this.#resourceHandlers.get(resource);
    if (!set) this.#resourceHandlers.set(resource, set = new Set());
    const h = handler as unknown as Handler<AnyResourceEvent>;
    set.add(h);
    return () => set.delete(h);
  }

  publishResource<K extends ResourceKind>(event: ResourceEvent<K>): void {
    const set = this.#resourceHandlers.get(event.resource);
    if (!set) return;
    for (const h of [...set]) this.#deliver(h, event as unknown as AnyResourceEvent, event.resource);
  }

  on<T extends keyof TopicTypes>(topic: T, handler: Handler<TopicTypes[T]>): () => void {
    let set = this.#topicHandlers.get(topic);
    if (!set) this.#topicHandlers.set(topic, set = new Set());
    const h = handler as unknown as Handler<never>;
    set.add(h);
    return () => set.delete(h);
  }

  publish<T extends keyof TopicTypes>(topic: T, payload: TopicTypes[T]): void {
    const set = this.#topicHandlers.get(topic);
    if (!set) return;
    for (const h of [...set]) this.#deliver(h as unknown as Handler<TopicTypes[T]>, payload, topic);
  }

  /** Whether anyone listens to a resource; the watch layer uses it to skip informers nobody needs. */
  hasResourceSubscribers(resource: ResourceKind): boolean {
    return (this.#resourceHandlers.get(resource)?.size ?? 0) > 0;
  }

  #deliver<T>(h: Handler<T>, payload: T, topic: string): void {
    try {
      h(payload);
    } catch (err) {
      this.#log.error("event handler failed", { topic, err });
    }
  }
}

/** `namespace/name` of an object, the key every tracker uses. */
export function objectKey(obj: { metadata?: { namespace?: string; name?: string } }): string {
  const ns = obj.metadata?.namespace;
  const name = obj.metadata?.name ?? "";
  return ns ? `${ns}/${name}` : name;
}
