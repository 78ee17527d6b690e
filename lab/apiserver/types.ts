/** JSON shapes shared by the store and the HTTP layer. */

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  deletionGracePeriodSeconds?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: unknown[];
  managedFields?: unknown[];
  [k: string]: unknown;
}

/** Any Kubernetes object as JSON; the store never assumes more than `metadata`. */
export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata?: ObjectMeta;
  // deno-lint-ignore no-explicit-any
  [k: string]: any;
}

export type WatchEventType = "ADDED" | "MODIFIED" | "DELETED";

/** One change in the store's history; `object` is the state after the change (the last state for DELETED). */
export interface StoreEvent {
  revision: number;
  resource: string;
  type: WatchEventType;
  key: string;
  object: KubeObject;
  /** The state before the change (absent for ADDED); lets a filtered watch turn MODIFIED into ADDED/DELETED. */
  previous?: KubeObject;
}
