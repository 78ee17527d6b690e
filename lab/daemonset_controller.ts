/**
 * The lab's DaemonSet controller: one pod of each DaemonSet on every node its nodeSelector matches, as
 * kube-controller-manager's daemon controller does, so `kubectl apply -f dist/kube-router-daemonset.yaml`
 * puts an agent on every node.
 *
 * - Pods are made from the template with the DaemonSet as controller owner, the labels
 *   `controller-revision-hash` (a hash of the template) and `pod-template-generation`, and `spec.nodeName`
 *   set directly (the lab's nodes carry no taints, so tolerations change nothing).
 * - A node whose pod is terminating gets its new pod only once the old one is gone (hostPorts and the
 *   agent's ports would clash otherwise), as the real controller waits.
 * - RollingUpdate (the default): when the template changes (`kubectl rollout restart` writes an
 *   annotation into it), pods of the old hash are deleted while fewer than `maxUnavailable` (default 1) of
 *   the DaemonSet's nodes lack a ready pod; OnDelete leaves old pods alone.
 * - Status (`desiredNumberScheduled`, `updatedNumberScheduled`, `numberAvailable`, `observedGeneration`…)
 *   is written so `kubectl rollout status ds/NAME` and `kubectl get ds` read as in Kubernetes.
 * - A deleted DaemonSet's pods are deleted (the garbage collector's part for these pods).
 */
import { CoalescingQueue } from "./_queue.ts";
import { canonicalJson, matchesSelector } from "./endpointslices.ts";
import { type Informer, isNotFound, keyOf, type KObject, type KubeClient } from "./kube_client.ts";
import type { Logger } from "../core/mod.ts";

export const REVISION_HASH_LABEL = "controller-revision-hash";
export const TEMPLATE_GENERATION_LABEL = "pod-template-generation";

/** A short stable hash of a pod template (FNV-1a over its canonical JSON), as a label value. */
export function templateHash(template: unknown): string {
  let h = 0x811c9dc5;
  for (const ch of canonicalJson(template ?? {})) {
    h ^= ch.charCodeAt(0);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}

/** Is the pod Ready (condition Ready True) and not terminating? */
export function podAvailable(p: KObject): boolean {
  if (p.metadata.deletionTimestamp) return false;
  return ((p.status?.conditions ?? []) as Array<{ type: string; status: string }>).some((c) =>
    c.type === "Ready" && c.status === "True"
  );
}

/** The uid of the DaemonSet that controls `p`, if any. */
function ownerUid(p: KObject): string | undefined {
  const refs = (p.metadata.ownerReferences ?? []) as Array<
    { kind: string; uid: string; controller?: boolean }
  >;
  return refs.find((r) => r.kind === "DaemonSet" && r.controller !== false)?.uid;
}

/** `maxUnavailable` of a RollingUpdate strategy as a number of nodes (percentages round up, at least 1). */
export function maxUnavailable(ds: KObject, desired: number): number {
  const v = ds.spec?.updateStrategy?.rollingUpdate?.maxUnavailable;
  if (typeof v === "number") return Math.max(1, v);
  if (typeof v === "string" && /^\d+%$/.test(v)) return Math.max(1, Math.ceil((desired * parseInt(v)) / 100));
  return 1;
}

export class DaemonSetController {
  readonly #queue: CoalescingQueue;
  readonly #deleted = new Map<string, string>();
  /**
   * Pods this controller deleted that its informer may still show as live (kube-controller-manager's
   * "expectations"): counted as gone, so a sync racing the informer never deletes a second node's pod.
   */
  readonly #deleting = new Set<string>();
  /** Nodes where this controller created a pod the informer has not shown yet. */
  readonly #creating = new Map<string, number>();

  constructor(
    private readonly client: KubeClient,
    private readonly daemonsets: Informer<KObject>,
    private readonly pods: Informer<KObject>,
    private readonly nodes: Informer<KObject>,
    private readonly log: Logger,
  ) {
    this.#queue = new CoalescingQueue(
      (k) => this.#sync(k),
      (k, e) => log.warn("daemonset sync failed", { daemonset: k, err: e }),
    );
    daemonsets.on((type, ds) => {
      if (type === "DELETED" && ds.metadata.uid) this.#deleted.set(keyOf(ds), ds.metadata.uid);
      this.#queue.add(keyOf(ds));
    });
    pods.on((_t, p) => {
      const uid = ownerUid(p);
      if (!uid) return;
      const ds = daemonsets.list().find((d) => d.metadata.uid === uid);
      if (ds) this.#queue.add(keyOf(ds));
      else for (const [k, u] of this.#deleted) if (u === uid) this.#queue.add(k);
    });
    nodes.on(() => {
      for (const ds of daemonsets.list()) this.#queue.add(keyOf(ds));
    });
  }

  stop(): void {
    this.#queue.stop();
  }

  async #deletePod(p: KObject): Promise<void> {
    if (p.metadata.uid) this.#deleting.add(p.metadata.uid);
    try {
      await this.client.delete(`/api/v1/namespaces/${p.metadata.namespace}/pods/${p.metadata.name}`, {
        apiVersion: "v1",
        kind: "DeleteOptions",
        preconditions: { uid: p.metadata.uid },
      });
    } catch (e) {
      if (!isNotFound(e) && !(e instanceof Error && /HTTP 409/.test(e.message))) throw e;
    }
  }

  async #sync(key: string): Promise<void> {
    const [ns, name] = key.split("/") as [string, string];
    const ds = this.daemonsets.get(key);
    if (!ds || ds.metadata.deletionTimestamp) {
      const uid = ds?.metadata.uid ?? this.#deleted.get(key);
      const owned = uid ? this.pods.list().filter((p) => ownerUid(p) === uid) : [];
      for (const p of owned) if (!p.metadata.deletionTimestamp) await this.#deletePod(p);
      if (owned.length === 0) this.#deleted.delete(key);
      return;
    }
    const uid = ds.metadata.uid!;
    const template = ds.spec?.template ?? {};
    const hash = templateHash(template);
    const selector = (template.spec?.nodeSelector ?? {}) as Record<string, string>;
    const eligible = this.nodes.list().filter((n) =>
      !n.metadata.deletionTimestamp && matchesSelector(selector, n.metadata.labels)
    ).map((n) => n.metadata.name).sort();
    const all = this.pods.list();
    const present = new Set(all.map((p) => p.metadata.uid));
    for (const u of this.#deleting) if (!present.has(u)) this.#deleting.delete(u);
    const owned = all.filter((p) => ownerUid(p) === uid);
    const byNode = new Map<string, KObject[]>();
    for (const p of owned) {
      const node = p.spec?.nodeName as string | undefined;
      if (!node || !eligible.includes(node)) {
        if (!p.metadata.deletionTimestamp) await this.#deletePod(p);
        continue;
      }
      byNode.set(node, [...(byNode.get(node) ?? []), p]);
    }

    for (const node of eligible) {
      const here = byNode.get(node) ?? [];
      const live = here.filter((p) => !p.metadata.deletionTimestamp && !this.#deleting.has(p.metadata.uid!));
      const pendingCreate = this.#creating.get(`${uid}/${node}`);
      if (here.length > 0 || (pendingCreate && Date.now() - pendingCreate > 30_000)) {
        this.#creating.delete(`${uid}/${node}`);
      }
      if (here.length === 0 && !this.#creating.has(`${uid}/${node}`)) {
        this.#creating.set(`${uid}/${node}`, Date.now());
        await this.#createPod(ds, node, hash);
        continue;
      }
      // Keep one: the current revision if there is one, else the oldest.
      const keep = live.find((p) => p.metadata.labels?.[REVISION_HASH_LABEL] === hash) ?? live[0];
      for (const p of live) if (p !== keep) await this.#deletePod(p);
    }

    // Rolling update: replace old-revision pods while at most maxUnavailable nodes lack an available pod.
    const strategy = ds.spec?.updateStrategy?.type ?? "RollingUpdate";
    const current = (node: string) => (byNode.get(node) ?? []).filter((p) => !p.metadata.deletionTimestamp);
    if (strategy === "RollingUpdate") {
      const unavailable = eligible.filter((n) => !current(n).some(podAvailable)).length;
      let budget = maxUnavailable(ds, eligible.length) - unavailable;
      const old = eligible.flatMap((n) => current(n)).filter((p) =>
        p.metadata.labels?.[REVISION_HASH_LABEL] !== hash
      );
      // Not-ready old pods first: replacing them costs no availability.
      for (const p of old.filter((x) => !podAvailable(x))) await this.#deletePod(p);
      for (const p of old.filter(podAvailable)) {
        if (budget <= 0) break;
        budget--;
        this.log.info("rolling update: replacing pod", {
          daemonset: key,
          pod: p.metadata.name,
          node: p.spec?.nodeName,
        });
        await this.#deletePod(p);
      }
    }

    const scheduled = eligible.filter((n) => current(n).length > 0);
    const updated = eligible.filter((n) =>
      current(n).some((p) => p.metadata.labels?.[REVISION_HASH_LABEL] === hash)
    );
    const ready = eligible.filter((n) => current(n).some(podAvailable));
    const status = {
      desiredNumberScheduled: eligible.length,
      currentNumberScheduled: scheduled.length,
      numberMisscheduled: 0,
      numberReady: ready.length,
      updatedNumberScheduled: updated.length,
      numberAvailable: ready.length,
      numberUnavailable: eligible.length - ready.length,
      observedGeneration: ds.metadata.generation ?? 1,
    };
    if (canonicalJson(pick(ds.status ?? {}, Object.keys(status))) !== canonicalJson(status)) {
      try {
        await this.client.mergePatch(`/apis/apps/v1/namespaces/${ns}/daemonsets/${name}/status`, { status });
      } catch (e) {
        if (!isNotFound(e)) throw e;
      }
    }
  }

  async #createPod(ds: KObject, node: string, hash: string): Promise<void> {
    const ns = ds.metadata.namespace ?? "default";
    const t = structuredClone(ds.spec?.template ?? {});
    const suffix = crypto.randomUUID().replace(/-/g, "").slice(0, 5);
    const pod: KObject = {
      apiVersion: "v1",
      kind: "Pod",
      metadata: {
        name: `${ds.metadata.name}-${suffix}`,
        namespace: ns,
        labels: {
          ...(t.metadata?.labels ?? {}),
          [REVISION_HASH_LABEL]: hash,
          [TEMPLATE_GENERATION_LABEL]: String(ds.metadata.generation ?? 1),
        },
        ...(t.metadata?.annotations ? { annotations: t.metadata.annotations } : {}),
        ownerReferences: [{
          apiVersion: "apps/v1",
          kind: "DaemonSet",
          name: ds.metadata.name,
          uid: ds.metadata.uid,
          controller: true,
          blockOwnerDeletion: true,
        }],
      },
      spec: { ...(t.spec ?? {}), nodeName: node },
    };
    await this.client.create(`/api/v1/namespaces/${ns}/pods`, pod);
    this.log.info("created daemon pod", { daemonset: keyOf(ds), pod: pod.metadata.name, node });
  }
}

function pick(o: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(keys.filter((k) => k in o).map((k) => [k, o[k]]));
}
