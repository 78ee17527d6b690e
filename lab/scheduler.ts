/**
 * The lab scheduler: binds every pod without spec.nodeName to the Ready node running the fewest pods
 * among those it fits (nodeSelector, node affinity, taints; ties go to the lowest name), through the
 * pods/binding subresource as kube-scheduler does.
 * Equivalent to: `POST /api/v1/namespaces/<ns>/pods/<pod>/binding {"target":{"kind":"Node","name":…}}`.
 */
import { CoalescingQueue } from "./_queue.ts";
import { ApiError, type Informer, keyOf, type KObject, type KubeClient } from "./kube_client.ts";
import { podMisfit } from "./workloads.ts";
import type { Logger } from "../core/mod.ts";

/**
 * Picks the node for a new pod: least loaded among the Ready, schedulable nodes the pod fits (its
 * nodeSelector, required node affinity and tolerations against the node's taints, as kube-scheduler's
 * filters), by name on ties. Pure.
 */
export function pickNode(nodes: KObject[], pods: KObject[], pod?: KObject): string | undefined {
  const ready = nodes.filter((n) =>
    !n.spec?.unschedulable && (!pod || !podMisfit(pod.spec, n)) &&
    ((n.status?.conditions ?? []) as Array<{ type: string; status: string }>).some((c) =>
      c.type === "Ready" && c.status === "True"
    )
  );
  if (ready.length === 0) return undefined;
  const load = new Map<string, number>(ready.map((n) => [n.metadata.name, 0]));
  for (const p of pods) {
    const n = p.spec?.nodeName as string | undefined;
    if (n && load.has(n) && p.status?.phase !== "Succeeded" && p.status?.phase !== "Failed") {
      load.set(n, load.get(n)! + 1);
    }
  }
  const collator = new Intl.Collator("en", { numeric: true });
  return [...load].sort(([a, la], [b, lb]) => la - lb || collator.compare(a, b))[0]?.[0];
}

export class Scheduler {
  readonly #queue: CoalescingQueue;
  /** Bindings sent but not yet seen in the informer, so a burst spreads across nodes. */
  readonly #assumed = new Map<string, string>();
  /** The server has no pods/binding subresource (the lab API server): patch spec.nodeName instead. */
  #noBinding = false;

  constructor(
    private readonly client: KubeClient,
    private readonly pods: Informer<KObject>,
    private readonly nodes: Informer<KObject>,
    private readonly log: Logger,
  ) {
    this.#queue = new CoalescingQueue(
      (k) => this.#schedule(k),
      (k, e) => log.warn("scheduling failed", { pod: k, err: e }),
    );
    pods.on((type, p) => {
      if (type === "DELETED" || p.spec?.nodeName) this.#assumed.delete(keyOf(p));
      if (type !== "DELETED" && !p.spec?.nodeName && !p.metadata.deletionTimestamp) this.#queue.add(keyOf(p));
    });
    // A node turning Ready may unblock pending pods.
    nodes.on(() => {
      for (const p of pods.list()) {
        if (!p.spec?.nodeName && !p.metadata.deletionTimestamp) this.#queue.add(keyOf(p));
      }
    });
  }

  stop(): void {
    this.#queue.stop();
  }

  /** POST pods/binding; on a server without it (the lab API server), patch spec.nodeName instead. */
  async #bind(ns: string, name: string, node: string): Promise<void> {
    const patch = () =>
      this.client.mergePatch(`/api/v1/namespaces/${ns}/pods/${name}`, { spec: { nodeName: node } });
    if (this.#noBinding) {
      await patch();
      return;
    }
    try {
      await this.client.create(`/api/v1/namespaces/${ns}/pods/${name}/binding`, {
        apiVersion: "v1",
        kind: "Binding",
        metadata: { name, namespace: ns },
        target: { apiVersion: "v1", kind: "Node", name: node },
      });
    } catch (e) {
      if (!(e instanceof ApiError && (e.status === 404 || e.status === 405))) throw e;
      // 404 is also what a deleted pod gives; the patch then fails with 404 too.
      await patch();
      this.#noBinding = true;
    }
  }

  async #schedule(key: string): Promise<void> {
    const pod = this.pods.get(key);
    if (!pod || pod.spec?.nodeName || pod.metadata.deletionTimestamp || this.#assumed.has(key)) return;
    const view = this.pods.list().map((p) => {
      const a = this.#assumed.get(keyOf(p));
      return a && !p.spec?.nodeName ? { ...p, spec: { ...p.spec, nodeName: a } } : p;
    });
    const node = pickNode(this.nodes.list(), view, pod);
    if (!node) return; // retried when a node changes
    const ns = pod.metadata.namespace ?? "default";
    const name = pod.metadata.name;
    this.#assumed.set(key, node);
    try {
      await this.#bind(ns, name, node);
    } catch (e) {
      this.#assumed.delete(key);
      throw e;
    }
    this.log.info("scheduled pod", { pod: key, node });
  }
}
