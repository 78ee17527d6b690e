/**
 * Events about objects (core/v1 Event), as kubelet and kube-scheduler record them, so `kubectl describe
 * pod` and `kubectl get events` say why a pod is not running. A repeat of the same event (same object,
 * type, reason and message) bumps its count and lastTimestamp instead of adding one, as client-go's
 * event correlator aggregates them (`(x3 over 20s)` in describe). Recording never fails the caller: an event
 * that cannot be written is logged and dropped, as in Kubernetes.
 */
import type { KObject, KubeClient } from "./kube_client.ts";
import type { Logger } from "../core/mod.ts";

export type EventType = "Normal" | "Warning";

export interface EventRecorderOptions {
  client: KubeClient;
  /** `kubelet`, `default-scheduler`. */
  component: string;
  /** The node's name for a kubelet. */
  host?: string;
  log: Logger;
}

interface Recorded {
  name: string;
  namespace: string;
  count: number;
  firstTimestamp: string;
}

function now(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, "Z");
}

export class EventRecorder {
  /** What this recorder wrote, by correlation key; bounded by the objects and reasons it reports. */
  readonly #seen = new Map<string, Recorded>();
  constructor(private readonly o: EventRecorderOptions) {}

  /**
   * Records an event about `obj` (a namespaced object); `fieldPath` names a part of it
   * (`spec.containers{web}`), as kubelet does for container events.
   */
  async record(
    obj: KObject,
    type: EventType,
    reason: string,
    message: string,
    fieldPath?: string,
  ): Promise<void> {
    const namespace = obj.metadata.namespace ?? "default";
    const key = [obj.metadata.uid ?? obj.metadata.name, fieldPath ?? "", type, reason, message].join(
      "\u0000",
    );
    const t = now();
    const seen = this.#seen.get(key);
    try {
      if (seen) {
        seen.count++;
        await this.o.client.mergePatch(`/api/v1/namespaces/${seen.namespace}/events/${seen.name}`, {
          count: seen.count,
          lastTimestamp: t,
        });
        return;
      }
      const name = `${obj.metadata.name}.${
        (BigInt(Date.now()) * 1_000_000n + BigInt(this.#seen.size)).toString(16)
      }`;
      await this.o.client.create(`/api/v1/namespaces/${namespace}/events`, {
        apiVersion: "v1",
        kind: "Event",
        metadata: { name, namespace },
        involvedObject: {
          kind: obj.kind ?? "Pod",
          apiVersion: obj.apiVersion ?? "v1",
          namespace,
          name: obj.metadata.name,
          ...(obj.metadata.uid ? { uid: obj.metadata.uid } : {}),
          ...(fieldPath ? { fieldPath } : {}),
        },
        reason,
        message,
        type,
        source: { component: this.o.component, ...(this.o.host ? { host: this.o.host } : {}) },
        firstTimestamp: t,
        lastTimestamp: t,
        count: 1,
        reportingComponent: this.o.component,
        reportingInstance: this.o.host ?? "",
      });
      this.#seen.set(key, { name, namespace, count: 1, firstTimestamp: t });
    } catch (err) {
      this.o.log.warn("could not record an event", {
        object: `${namespace}/${obj.metadata.name}`,
        reason,
        err,
      });
    }
  }

  /** Forgets the events of an object that is gone (their API objects stay, as in Kubernetes, until TTL). */
  forget(uid: string): void {
    for (const k of this.#seen.keys()) if (k.startsWith(`${uid}\u0000`)) this.#seen.delete(k);
  }
}
