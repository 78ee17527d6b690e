/**
 * The lab's workload controllers, as kube-controller-manager runs them: the ReplicaSet controller keeps
 * `spec.replicas` pods of a template (owned through ownerReferences, removed gracefully, worst first);
 * the Deployment controller rolls a template out through ReplicaSets named and labelled by the
 * pod-template hash (RollingUpdate within maxSurge/maxUnavailable, or Recreate), keeps revision history
 * for `kubectl rollout undo`, and reports what `kubectl rollout status` reads; the DaemonSet controller
 * keeps one pod on every node its template fits (nodeSelector, node affinity, taints) and replaces them
 * node by node on a template change. All three work through the API, like the other lab controllers.
 */
import { CoalescingQueue } from "./_queue.ts";
import { canonicalJson, podIsReady } from "./endpointslices.ts";
import {
  type Informer,
  isConflict,
  isNotFound,
  keyOf,
  type KObject,
  type KubeClient,
} from "./kube_client.ts";
import {
  CONTROLLER_REVISION_HASH,
  controllerOf,
  controllerRef,
  daemonPodMisfit,
  daemonTolerations,
  deletionOrder,
  DESIRED_REPLICAS_ANNOTATION,
  isControlledBy,
  isPodActive,
  isPodAvailable,
  MAX_REPLICAS_ANNOTATION,
  POD_TEMPLATE_HASH,
  podFromTemplate,
  REVISION_ANNOTATION,
  rollingLimits,
  templateHash,
  templateWithoutHash,
} from "./workloads.ts";
import type { Logger } from "../core/mod.ts";

/** How long a created or deleted pod is remembered before the informer is trusted again without it. */
const EXPECTATION_TTL_MS = 30_000;

/**
 * The pods a controller owns, as the informer shows them plus what it created or deleted itself and
 * the informer has not shown yet (kube's ControllerExpectations): without it a burst of events would
 * see too few pods and create more than asked.
 */
class OwnedPods {
  readonly #created = new Map<string, Map<string, { pod: KObject; at: number }>>();
  readonly #deleted = new Map<string, Map<string, number>>();
  constructor(private readonly pods: Informer<KObject>) {}

  of(owner: KObject): KObject[] {
    const uid = owner.metadata.uid ?? "";
    const now = Date.now();
    const seen = this.pods.list().filter((p) => isControlledBy(p, owner));
    const names = new Set(seen.map((p) => p.metadata.name));
    const created = this.#created.get(uid);
    for (const [n, c] of created ?? []) {
      if (names.has(n) || now - c.at > EXPECTATION_TTL_MS) created!.delete(n);
      else seen.push(c.pod);
    }
    const deleted = this.#deleted.get(uid);
    return seen.map((p) => {
      const at = deleted?.get(p.metadata.name);
      if (at === undefined) return p;
      if (p.metadata.deletionTimestamp || now - at > EXPECTATION_TTL_MS) {
        deleted!.delete(p.metadata.name);
        return p;
      }
      return { ...p, metadata: { ...p.metadata, deletionTimestamp: new Date(at).toISOString() } };
    });
  }

  created(owner: KObject, pod: KObject): void {
    const uid = owner.metadata.uid ?? "";
    if (!this.#created.has(uid)) this.#created.set(uid, new Map());
    this.#created.get(uid)!.set(pod.metadata.name, { pod, at: Date.now() });
  }

  deleted(owner: KObject, pod: KObject): void {
    const uid = owner.metadata.uid ?? "";
    if (!this.#deleted.has(uid)) this.#deleted.set(uid, new Map());
    this.#deleted.get(uid)!.set(pod.metadata.name, Date.now());
  }

  forget(uid: string): void {
    this.#created.delete(uid);
    this.#deleted.delete(uid);
  }
}

const apps = (kind: string, ns: string, name?: string) =>
  `/apis/apps/v1/namespaces/${ns}/${kind}${name ? `/${name}` : ""}`;
const generationOf = (o: KObject): number => Number(o.metadata.generation ?? 1);
const nsOf = (o: KObject): string => o.metadata.namespace ?? "default";

/** Writes `status` through the status subresource when it differs from what is stored. */
async function writeStatus(client: KubeClient, path: string, o: KObject, status: Record<string, unknown>) {
  const merged = { ...(o.status ?? {}), ...status };
  if (canonicalJson(merged) === canonicalJson(o.status ?? {})) return;
  try {
    await client.mergePatch(`${path}/status`, { status });
  } catch (e) {
    if (!isNotFound(e)) throw e;
  }
}

async function createPod(client: KubeClient, pods: OwnedPods, owner: KObject, pod: KObject): Promise<void> {
  const made = await client.create(`/api/v1/namespaces/${nsOf(owner)}/pods`, pod);
  pods.created(owner, made);
}

async function deletePod(client: KubeClient, pods: OwnedPods, owner: KObject, pod: KObject): Promise<void> {
  try {
    // With the uid as precondition: a pod recreated under the same name in the meantime is not ours to delete.
    await client.delete(`/api/v1/namespaces/${nsOf(pod)}/pods/${pod.metadata.name}`, {
      apiVersion: "v1",
      kind: "DeleteOptions",
      ...(pod.metadata.uid ? { preconditions: { uid: pod.metadata.uid } } : {}),
    });
  } catch (e) {
    if (!isNotFound(e) && !isConflict(e)) throw e;
  }
  pods.deleted(owner, pod);
}

/** Keeps each ReplicaSet's `spec.replicas` pods running and reports them in its status. */
export class ReplicaSetController {
  readonly #queue: CoalescingQueue;
  readonly #owned: OwnedPods;

  constructor(
    private readonly client: KubeClient,
    private readonly replicasets: Informer<KObject>,
    pods: Informer<KObject>,
    private readonly log: Logger,
  ) {
    this.#owned = new OwnedPods(pods);
    this.#queue = new CoalescingQueue(
      (k) => this.#sync(k),
      (k, e) => log.warn("replicaset sync failed", { replicaset: k, err: e }),
    );
    replicasets.on((type, rs) => {
      if (type === "DELETED") this.#owned.forget(rs.metadata.uid ?? "");
      else this.#queue.add(keyOf(rs));
    });
    pods.on((_t, p, old) => {
      for (const o of [p, old]) {
        if (!o) continue;
        const c = controllerOf(o);
        if (c?.kind === "ReplicaSet") this.#queue.add(`${nsOf(o)}/${c.name}`);
      }
    });
  }

  stop(): void {
    this.#queue.stop();
  }

  async #sync(key: string): Promise<void> {
    const rs = this.replicasets.get(key);
    if (!rs || rs.metadata.deletionTimestamp) return;
    const want = Number(rs.spec?.replicas ?? 1);
    const pods = this.#owned.of(rs);
    const active = pods.filter(isPodActive);
    const minReady = Number(rs.spec?.minReadySeconds ?? 0);
    const templateLabels = (rs.spec?.template?.metadata?.labels ?? {}) as Record<string, string>;
    await writeStatus(this.client, apps("replicasets", nsOf(rs), rs.metadata.name), rs, {
      replicas: active.length,
      fullyLabeledReplicas: active.filter((p) =>
        Object.entries(templateLabels).every(([k, v]) => p.metadata.labels?.[k] === v)
      ).length,
      readyReplicas: active.filter(podIsReady).length,
      availableReplicas: active.filter((p) => isPodAvailable(p, minReady)).length,
      observedGeneration: generationOf(rs),
    });
    if (active.length < want) {
      // kube's slow start is for big bursts against a slow API; the lab creates them in one go.
      const missing = Math.min(want - active.length, 500);
      for (let i = 0; i < missing; i++) {
        await createPod(this.client, this.#owned, rs, podFromTemplate(rs.spec.template, rs, "ReplicaSet"));
      }
      this.log.info("created pods", { replicaset: key, count: missing });
    } else if (active.length > want) {
      const victims = [...active].sort(deletionOrder).slice(0, active.length - want);
      for (const p of victims) await deletePod(this.client, this.#owned, rs, p);
      this.log.info("deleted pods", { replicaset: key, pods: victims.map((p) => p.metadata.name) });
    }
  }
}

/** Rolls each Deployment's template out through ReplicaSets and reports the rollout in its status. */
export class DeploymentController {
  readonly #queue: CoalescingQueue;
  /** ReplicaSets created but maybe not yet in the informer, by Deployment uid. */
  readonly #createdRs = new Map<string, KObject>();
  /** Per Deployment, the timer that checks its progress deadline. */
  readonly #deadlines = new Map<string, ReturnType<typeof setTimeout>>();
  /**
   * Per Deployment, when its rollout last made progress and what it looked like then (generation and
   * counts): kept here rather than read back from the informer's copy of the status, which may not have
   * caught up with the last status write when the deadline timer fires (the timeout then never came).
   */
  readonly #progress = new Map<string, { at: number; signature: string }>();
  /** Sizes written to ReplicaSets (by uid) and not yet seen back through the informer. */
  readonly #scaled = new Map<string, number>();

  constructor(
    private readonly client: KubeClient,
    private readonly deployments: Informer<KObject>,
    private readonly replicasets: Informer<KObject>,
    private readonly pods: Informer<KObject>,
    private readonly log: Logger,
  ) {
    this.#queue = new CoalescingQueue(
      (k) => this.#sync(k),
      (k, e) => log.warn("deployment sync failed", { deployment: k, err: e }),
    );
    deployments.on((type, d) => {
      if (type !== "DELETED") this.#queue.add(keyOf(d));
      else this.#createdRs.delete(d.metadata.uid ?? "");
    });
    replicasets.on((_t, rs, old) => {
      for (const o of [rs, old]) {
        if (!o) continue;
        const c = controllerOf(o);
        if (c?.kind === "Deployment") this.#queue.add(`${nsOf(o)}/${c.name}`);
      }
    });
    // Recreate waits for the old pods to be gone.
    pods.on((type, p) => {
      if (type !== "DELETED") return;
      const c = controllerOf(p);
      if (c?.kind !== "ReplicaSet") return;
      const rs = replicasets.get(`${nsOf(p)}/${c.name}`);
      const d = rs && controllerOf(rs);
      if (d?.kind === "Deployment") this.#queue.add(`${nsOf(p)}/${d.name}`);
    });
  }

  stop(): void {
    this.#queue.stop();
    for (const t of this.#deadlines.values()) clearTimeout(t);
  }

  #owned(d: KObject): KObject[] {
    // Scales this controller wrote but the informer has not shown yet win over the informer's copy:
    // sizing the new ReplicaSet against stale old sizes would overshoot maxSurge.
    const list = this.replicasets.list().filter((rs) => isControlledBy(rs, d)).map((rs) => {
      const uid = rs.metadata.uid ?? "";
      const pending = this.#scaled.get(uid);
      if (pending === undefined) return rs;
      if (Number(rs.spec?.replicas ?? 0) === pending) {
        this.#scaled.delete(uid);
        return rs;
      }
      return { ...rs, spec: { ...rs.spec, replicas: pending } };
    });
    const made = this.#createdRs.get(d.metadata.uid ?? "");
    if (made) {
      if (list.some((rs) => rs.metadata.name === made.metadata.name)) {
        this.#createdRs.delete(d.metadata.uid ?? "");
      } else list.push(made);
    }
    return list.sort((a, b) =>
      (Date.parse(a.metadata.creationTimestamp ?? "") || 0) -
        (Date.parse(b.metadata.creationTimestamp ?? "") || 0) ||
      (a.metadata.name < b.metadata.name ? -1 : 1)
    );
  }

  async #scale(rs: KObject, replicas: number, d: KObject, maxSurge: number): Promise<void> {
    if (
      Number(rs.spec?.replicas ?? 0) === replicas && rs.metadata.annotations?.[DESIRED_REPLICAS_ANNOTATION]
    ) return;
    await this.client.mergePatch(apps("replicasets", nsOf(rs), rs.metadata.name), {
      metadata: {
        annotations: {
          [DESIRED_REPLICAS_ANNOTATION]: String(d.spec?.replicas ?? 1),
          [MAX_REPLICAS_ANNOTATION]: String(Number(d.spec?.replicas ?? 1) + maxSurge),
        },
      },
      spec: { replicas },
    });
    this.#scaled.set(rs.metadata.uid ?? "", replicas);
    rs.spec = { ...rs.spec, replicas };
  }

  async #sync(key: string): Promise<void> {
    const d = this.deployments.get(key);
    if (!d || d.metadata.deletionTimestamp) {
      this.#progress.delete(key);
      return;
    }
    const ns = nsOf(d);
    const replicas = Number(d.spec?.replicas ?? 1);
    const recreate = d.spec?.strategy?.type === "Recreate";
    const { maxSurge, maxUnavailable } = recreate
      ? { maxSurge: 0, maxUnavailable: replicas }
      : rollingLimits(d.spec?.strategy?.rollingUpdate, replicas);
    const all = this.#owned(d);
    const want = canonicalJson(templateWithoutHash(d.spec?.template));
    let newRs = all.find((rs) => canonicalJson(templateWithoutHash(rs.spec?.template)) === want);
    const revisionOf = (rs: KObject) => Number(rs.metadata.annotations?.[REVISION_ANNOTATION] ?? 0);
    const maxRevision = Math.max(0, ...all.map(revisionOf));
    const olds = all.filter((rs) => rs !== newRs);
    const sum = (list: KObject[], f: (rs: KObject) => number) => list.reduce((n, rs) => n + f(rs), 0);
    const specReplicas = (rs: KObject) => Number(rs.spec?.replicas ?? 0);

    if (d.spec?.paused) {
      // `kubectl rollout pause`: no new revision and no rolling, but a replica count change still applies
      // to the newest ReplicaSet (kube scales paused Deployments too).
      const newest = newRs ?? [...all].sort((a, b) => revisionOf(b) - revisionOf(a))[0];
      if (
        newest && olds.every((rs) => rs === newest || specReplicas(rs) === 0) &&
        specReplicas(newest) !== replicas
      ) {
        await this.#scale(newest, replicas, d, maxSurge);
      }
      if (newest) await this.#status(d, newest, all, replicas, maxUnavailable);
      return;
    }
    if (!newRs) {
      const current = sum(olds, specReplicas);
      const initial = recreate
        ? (current > 0 ? 0 : replicas)
        : Math.max(0, Math.min(replicas, replicas + maxSurge - current));
      newRs = await this.#createReplicaSet(d, maxRevision + 1, initial, maxSurge);
      all.push(newRs);
    } else if (revisionOf(newRs) < maxRevision) {
      // Back to an old template (`kubectl rollout undo`): its ReplicaSet becomes the newest revision.
      await this.client.mergePatch(apps("replicasets", ns, newRs.metadata.name), {
        metadata: { annotations: { [REVISION_ANNOTATION]: String(maxRevision + 1) } },
      });
    }
    const revision = String(
      Math.max(revisionOf(newRs), maxRevision + (revisionOf(newRs) < maxRevision ? 1 : 0)),
    );
    if (d.metadata.annotations?.[REVISION_ANNOTATION] !== revision) {
      await this.client.mergePatch(apps("deployments", ns, d.metadata.name), {
        metadata: { annotations: { [REVISION_ANNOTATION]: revision } },
      });
    }

    if (recreate) {
      for (const rs of olds) if (specReplicas(rs) > 0) await this.#scale(rs, 0, d, 0);
      const oldPods = this.pods.list().filter((p) => olds.some((rs) => isControlledBy(p, rs)));
      if (oldPods.length === 0 && specReplicas(newRs) !== replicas) await this.#scale(newRs, replicas, d, 0);
    } else {
      let changed = false;
      if (specReplicas(newRs) > replicas) {
        await this.#scale(newRs, replicas, d, maxSurge);
        changed = true;
      } else if (specReplicas(newRs) < replicas) {
        const current = sum(all, specReplicas);
        const room = replicas + maxSurge - current;
        if (room > 0) {
          await this.#scale(
            newRs,
            specReplicas(newRs) + Math.min(room, replicas - specReplicas(newRs)),
            d,
            maxSurge,
          );
          changed = true;
        }
      } else if (!newRs.metadata.annotations?.[DESIRED_REPLICAS_ANNOTATION]) {
        await this.#scale(newRs, replicas, d, maxSurge);
      }
      if (!changed) await this.#scaleDownOld(d, newRs, olds, replicas, maxUnavailable, maxSurge);
    }
    await this.#cleanup(d, olds);
    await this.#status(d, newRs, all, replicas, maxUnavailable);
  }

  async #createReplicaSet(
    d: KObject,
    revision: number,
    replicas: number,
    maxSurge: number,
  ): Promise<KObject> {
    const ns = nsOf(d);
    const collisions = Number(d.status?.collisionCount ?? 0);
    for (let c = collisions; c < collisions + 10; c++) {
      const hash = templateHash(templateWithoutHash(d.spec.template), c);
      const template = structuredClone(d.spec.template);
      template.metadata = { ...(template.metadata ?? {}) };
      template.metadata.labels = { ...(template.metadata.labels ?? {}), [POD_TEMPLATE_HASH]: hash };
      const rs: KObject = {
        apiVersion: "apps/v1",
        kind: "ReplicaSet",
        metadata: {
          name: `${d.metadata.name}-${hash}`,
          namespace: ns,
          labels: { ...template.metadata.labels },
          annotations: {
            [REVISION_ANNOTATION]: String(revision),
            [DESIRED_REPLICAS_ANNOTATION]: String(d.spec?.replicas ?? 1),
            [MAX_REPLICAS_ANNOTATION]: String(Number(d.spec?.replicas ?? 1) + maxSurge),
          },
          ownerReferences: [controllerRef(d, "Deployment")],
        },
        spec: {
          replicas,
          ...(d.spec?.minReadySeconds ? { minReadySeconds: d.spec.minReadySeconds } : {}),
          selector: {
            ...(d.spec.selector ?? {}),
            matchLabels: { ...(d.spec.selector?.matchLabels ?? {}), [POD_TEMPLATE_HASH]: hash },
          },
          template,
        },
      };
      try {
        const made = await this.client.create(apps("replicasets", ns), rs);
        this.#createdRs.set(d.metadata.uid ?? "", made);
        this.log.info("created replicaset", { deployment: keyOf(d), replicaset: rs.metadata.name, replicas });
        if (c !== collisions) {
          await this.client.mergePatch(`${apps("deployments", ns, d.metadata.name)}/status`, {
            status: { collisionCount: c },
          });
        }
        return made;
      } catch (e) {
        if (!(e instanceof Error && /HTTP 409/.test(e.message))) throw e;
        // A ReplicaSet of that name exists with another template (or is not ours): the next hash.
      }
    }
    throw new Error(`no free ReplicaSet name for deployment ${keyOf(d)} after 10 hash collisions`);
  }

  /** kube's reconcileOldReplicaSets: unhealthy old replicas first, then down to minAvailable. */
  async #scaleDownOld(
    d: KObject,
    newRs: KObject,
    olds: KObject[],
    replicas: number,
    maxUnavailable: number,
    maxSurge: number,
  ): Promise<void> {
    const spec = (rs: KObject) => Number(rs.spec?.replicas ?? 0);
    // A ReplicaSet never has more available pods than it is asked for: a status older than the last
    // scale-down must not count pods already on their way out.
    const available = (rs: KObject) => Math.min(Number(rs.status?.availableReplicas ?? 0), spec(rs));
    if (olds.every((rs) => spec(rs) === 0)) return;
    // Wait for every ReplicaSet's controller to have seen its latest size (kube's status lags the same
    // way; scaling down again on a stale count could take more pods than maxUnavailable allows).
    const unsynced = [newRs, ...olds].some((rs) =>
      this.#scaled.has(rs.metadata.uid ?? "") ||
      Number(rs.status?.observedGeneration ?? 0) < Number(rs.metadata.generation ?? 1)
    );
    if (unsynced) return;
    const all = [newRs, ...olds];
    const minAvailable = replicas - maxUnavailable;
    const newUnavailable = spec(newRs) - available(newRs);
    let budget = all.reduce((n, rs) => n + spec(rs), 0) - minAvailable - newUnavailable;
    if (budget <= 0) return;
    const target = new Map(olds.map((rs) => [rs, spec(rs)]));
    for (const rs of olds) {
      if (budget <= 0) break;
      const unhealthy = target.get(rs)! - available(rs);
      if (unhealthy <= 0) continue;
      const down = Math.min(budget, unhealthy);
      target.set(rs, target.get(rs)! - down);
      budget -= down;
    }
    const availableNow = all.reduce((n, rs) => n + available(rs), 0);
    let room = availableNow - minAvailable;
    for (const rs of olds) {
      if (room <= 0) break;
      const down = Math.min(target.get(rs)!, room);
      target.set(rs, target.get(rs)! - down);
      room -= down;
    }
    for (const [rs, n] of target) if (n !== spec(rs)) await this.#scale(rs, n, d, maxSurge);
  }

  /** Old ReplicaSets scaled to nothing beyond `revisionHistoryLimit` are deleted, oldest revision first. */
  async #cleanup(d: KObject, olds: KObject[]): Promise<void> {
    const limit = Number(d.spec?.revisionHistoryLimit ?? 10);
    const idle = olds.filter((rs) =>
      Number(rs.spec?.replicas ?? 0) === 0 && Number(rs.status?.replicas ?? 0) === 0
    )
      .sort((a, b) =>
        Number(a.metadata.annotations?.[REVISION_ANNOTATION] ?? 0) -
        Number(b.metadata.annotations?.[REVISION_ANNOTATION] ?? 0)
      );
    for (const rs of idle.slice(0, Math.max(0, idle.length - limit))) {
      try {
        await this.client.delete(apps("replicasets", nsOf(rs), rs.metadata.name));
      } catch (e) {
        if (!isNotFound(e)) throw e;
      }
    }
  }

  async #status(d: KObject, newRs: KObject, all: KObject[], replicas: number, maxUnavailable: number) {
    const sum = (f: (rs: KObject) => number) => all.reduce((n, rs) => n + f(rs), 0);
    const available = sum((rs) => Number(rs.status?.availableReplicas ?? 0));
    const total = sum((rs) => Number(rs.status?.replicas ?? 0));
    const updated = Number(newRs.status?.replicas ?? 0);
    const now = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    const old = (type: string) =>
      ((d.status?.conditions ?? []) as Array<Record<string, string>>).find((c) => c.type === type);
    const condition = (type: string, status: string, reason: string, message: string) => {
      const was = old(type);
      const same = was?.status === status;
      return {
        type,
        status,
        lastUpdateTime: same && was?.reason === reason ? was.lastUpdateTime ?? now : now,
        lastTransitionTime: same ? was?.lastTransitionTime ?? now : now,
        reason,
        message,
      };
    };
    const minimum = available >= replicas - maxUnavailable;
    const complete = updated === replicas && total === updated && available >= updated &&
      Number(newRs.spec?.replicas ?? 0) === replicas;
    const name = newRs.metadata.name;
    const counts = {
      replicas: total,
      updatedReplicas: updated,
      readyReplicas: sum((rs) => Number(rs.status?.readyReplicas ?? 0)),
      availableReplicas: available,
    };
    // Progress (kube's deployment progress check): any change of the counts, or a new template, moves
    // the Progressing condition's lastUpdateTime; none for progressDeadlineSeconds times the rollout out,
    // which `kubectl rollout status` reports as a failure instead of waiting forever.
    const key = keyOf(d);
    const signature = JSON.stringify([generationOf(d), newRs.metadata.name, counts]);
    const last = this.#progress.get(key);
    const progressed = last?.signature !== signature;
    if (progressed) this.#progress.set(key, { at: Date.now(), signature });
    const deadline = Number(d.spec?.progressDeadlineSeconds ?? 600);
    const since = progressed ? Date.now() : last!.at;
    const timedOut = !complete && !d.spec?.paused && Date.now() - since > deadline * 1000;
    let progressing;
    if (complete) {
      progressing = condition(
        "Progressing",
        "True",
        "NewReplicaSetAvailable",
        `ReplicaSet "${name}" has successfully progressed.`,
      );
    } else if (timedOut) {
      progressing = condition(
        "Progressing",
        "False",
        "ProgressDeadlineExceeded",
        `ReplicaSet "${name}" has timed out progressing.`,
      );
    } else {
      progressing = condition(
        "Progressing",
        "True",
        "ReplicaSetUpdated",
        `ReplicaSet "${name}" is progressing.`,
      );
      if (progressed) progressing.lastUpdateTime = now;
      // Look again when the deadline would pass without news.
      clearTimeout(this.#deadlines.get(key));
      const t = setTimeout(() => {
        this.#deadlines.delete(key);
        this.#queue.add(key);
      }, Math.max(0, since + deadline * 1000 - Date.now()) + 1000);
      Deno.unrefTimer(t);
      this.#deadlines.set(key, t);
    }
    await writeStatus(this.client, apps("deployments", nsOf(d), d.metadata.name), d, {
      observedGeneration: generationOf(d),
      ...counts,
      unavailableReplicas: Math.max(0, sum((rs) => Number(rs.spec?.replicas ?? 0)) - available),
      conditions: [
        minimum
          ? condition("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.")
          : condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
          ),
        progressing,
      ],
    });
  }
}

/** Whether a pod template takes ports of its node (hostNetwork, or a container hostPort). */
function usesHostPorts(template: KObject): boolean {
  const spec = template.spec ?? {};
  if (spec.hostNetwork === true) return true;
  return (spec.containers ?? []).some((c: { ports?: Array<{ hostPort?: number }> }) =>
    (c.ports ?? []).some((p) => (p.hostPort ?? 0) > 0)
  );
}

/** Keeps one pod of each DaemonSet on every node it fits, and rolls template changes node by node. */
export class DaemonSetController {
  readonly #queue: CoalescingQueue;
  readonly #owned: OwnedPods;

  constructor(
    private readonly client: KubeClient,
    private readonly daemonsets: Informer<KObject>,
    pods: Informer<KObject>,
    private readonly nodes: Informer<KObject>,
    private readonly log: Logger,
  ) {
    this.#owned = new OwnedPods(pods);
    this.#queue = new CoalescingQueue(
      (k) => this.#sync(k),
      (k, e) => log.warn("daemonset sync failed", { daemonset: k, err: e }),
    );
    daemonsets.on((type, ds) => {
      if (type === "DELETED") this.#owned.forget(ds.metadata.uid ?? "");
      else this.#queue.add(keyOf(ds));
    });
    pods.on((_t, p, old) => {
      for (const o of [p, old]) {
        if (!o) continue;
        const c = controllerOf(o);
        if (c?.kind === "DaemonSet") this.#queue.add(`${nsOf(o)}/${c.name}`);
      }
    });
    nodes.on(() => {
      for (const ds of daemonsets.list()) this.#queue.add(keyOf(ds));
    });
  }

  stop(): void {
    this.#queue.stop();
  }

  #newPod(ds: KObject, node: string, hash: string): KObject {
    const spec = ds.spec.template.spec ?? {};
    const tolerations = [...(spec.tolerations ?? [])];
    for (const t of daemonTolerations(spec.hostNetwork === true)) {
      if (!tolerations.some((u: Record<string, unknown>) => u.key === t.key && u.effect === t.effect)) {
        tolerations.push(t);
      }
    }
    return podFromTemplate(ds.spec.template, ds, "DaemonSet", {
      labels: { [CONTROLLER_REVISION_HASH]: hash, "pod-template-generation": String(generationOf(ds)) },
      spec: {
        // Placed directly (the lab scheduler only binds pods without a node), with the node affinity
        // kube-controller-manager writes so the pod says where it belongs.
        nodeName: node,
        affinity: {
          ...(spec.affinity ?? {}),
          nodeAffinity: {
            requiredDuringSchedulingIgnoredDuringExecution: {
              nodeSelectorTerms: [{
                matchFields: [{ key: "metadata.name", operator: "In", values: [node] }],
              }],
            },
          },
        },
        tolerations,
      },
    });
  }

  async #sync(key: string): Promise<void> {
    const ds = this.daemonsets.get(key);
    if (!ds || ds.metadata.deletionTimestamp) return;
    const hash = templateHash(ds.spec?.template);
    const pods = this.#owned.of(ds);
    const byNode = new Map<string, KObject[]>();
    for (const p of pods) {
      const n = String(p.spec?.nodeName ?? "");
      if (!byNode.has(n)) byNode.set(n, []);
      byNode.get(n)!.push(p);
    }
    const minReady = Number(ds.spec?.minReadySeconds ?? 0);
    const rolling = ds.spec?.updateStrategy?.type !== "OnDelete";
    const nodes = this.nodes.list().sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
    const eligible = nodes.filter((n) => {
      const why = daemonPodMisfit(ds.spec.template, n);
      if (why) {
        this.log.debug("daemonset pod does not fit node", { daemonset: key, node: n.metadata.name, why });
      }
      return !why;
    });
    const desired = eligible.length;
    const { maxSurge, maxUnavailable } = rollingLimits(ds.spec?.updateStrategy?.rollingUpdate, desired, {
      maxSurge: 0,
      maxUnavailable: 1,
    });
    const isNew = (p: KObject) => p.metadata.labels?.[CONTROLLER_REVISION_HASH] === hash;
    let current = 0, ready = 0, available = 0, updated = 0, misscheduled = 0;
    const create: string[] = [];
    const remove: KObject[] = [];
    const oldOnNode: Array<{ node: string; old: KObject; fresh: KObject | undefined }> = [];
    for (const n of nodes) {
      const name = n.metadata.name;
      const active = (byNode.get(name) ?? []).filter(isPodActive);
      if (!eligible.includes(n)) {
        if (active.length) misscheduled++;
        remove.push(...active);
        continue;
      }
      if (active.length === 0) {
        // A pod on the host's ports waits for its terminating predecessor, as kube-scheduler's NodePorts
        // check makes it wait; the lab also waits for hostNetwork pods (two agents in one node's
        // network namespace would fight over its ports).
        const leaving = (byNode.get(name) ?? []).some((p) => p.metadata.deletionTimestamp);
        if (!(leaving && usesHostPorts(ds.spec.template))) create.push(name);
        continue;
      }
      current++;
      const fresh = active.filter(isNew).sort(deletionOrder).reverse();
      const old = active.filter((p) => !isNew(p));
      if (fresh.length) updated++;
      if (active.some(podIsReady)) ready++;
      if (active.some((p) => isPodAvailable(p, minReady))) available++;
      // More than one pod of the same revision: keep the oldest.
      if (fresh.length > 1) remove.push(...fresh.slice(1));
      if (old.length > 1 || (old.length && !rolling && fresh.length)) remove.push(...old.slice(1));
      if (old.length && rolling) oldOnNode.push({ node: name, old: old[0]!, fresh: fresh[0] });
    }
    // The rolling update: a node whose new pod is available lets its old one go; otherwise old pods go
    // (unavailable ones first) while fewer than maxUnavailable nodes are down, or new pods start beside
    // them while fewer than maxSurge are surging.
    let unavailable = desired - available;
    let surging = oldOnNode.filter((x) => x.fresh).length;
    const ordered = [...oldOnNode].sort((a, b) => Number(podIsReady(a.old)) - Number(podIsReady(b.old)));
    for (const x of ordered) {
      if (x.fresh) {
        if (isPodAvailable(x.fresh, minReady)) remove.push(x.old);
        continue;
      }
      const oldAvailable = isPodAvailable(x.old, minReady);
      if (!oldAvailable) remove.push(x.old);
      else if (maxSurge > 0) {
        if (surging < maxSurge) {
          create.push(x.node);
          surging++;
        }
      } else if (unavailable < maxUnavailable) {
        remove.push(x.old);
        unavailable++;
      }
    }
    await writeStatus(this.client, apps("daemonsets", nsOf(ds), ds.metadata.name), ds, {
      desiredNumberScheduled: desired,
      currentNumberScheduled: current,
      numberMisscheduled: misscheduled,
      numberReady: ready,
      numberAvailable: available,
      numberUnavailable: Math.max(0, desired - available),
      updatedNumberScheduled: updated,
      observedGeneration: generationOf(ds),
    });
    for (const node of create) await createPod(this.client, this.#owned, ds, this.#newPod(ds, node, hash));
    for (const p of remove) await deletePod(this.client, this.#owned, ds, p);
    if (create.length || remove.length) {
      this.log.info("daemonset pods changed", {
        daemonset: key,
        created: create,
        deleted: remove.map((p) => `${p.metadata.name}@${p.spec?.nodeName ?? ""}`),
      });
    }
  }
}
