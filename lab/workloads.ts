/**
 * What kube-controller-manager's workload controllers decide, as pure functions over objects: the pod
 * template hash, which pods a controller owns, which pods to remove first, how far a rolling update may
 * go (maxSurge / maxUnavailable), and where a DaemonSet's pods belong (nodeSelector, required node
 * affinity, taints against tolerations). The controllers in workload_controllers.ts apply them.
 */
import { canonicalJson, podIsReady } from "./endpointslices.ts";
import type { KObject } from "./kube_client.ts";

export const POD_TEMPLATE_HASH = "pod-template-hash";
export const CONTROLLER_REVISION_HASH = "controller-revision-hash";
export const REVISION_ANNOTATION = "deployment.kubernetes.io/revision";
export const DESIRED_REPLICAS_ANNOTATION = "deployment.kubernetes.io/desired-replicas";
export const MAX_REPLICAS_ANNOTATION = "deployment.kubernetes.io/max-replicas";

const SAFE = "bcdfghjklmnpqrstvwxz2456789";

/**
 * The hash kube-controller-manager names ReplicaSets and labels pods with: FNV-1a over the template,
 * written as its decimal digits mapped to consonants and digits (`rand.SafeEncodeString`), e.g.
 * `5d59d67564`. The template is hashed in canonical JSON (Go hashes its own struct dump; only
 * stability and sensitivity to every change matter here).
 */
export function templateHash(template: unknown, collisionCount = 0): string {
  const text = canonicalJson(template) + (collisionCount ? `#${collisionCount}` : "");
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(text)) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return [...String(h)].map((c) => SAFE[c.charCodeAt(0) % SAFE.length]).join("");
}

/** The template without the hash label the controller added, for comparing a ReplicaSet with its Deployment. */
export function templateWithoutHash(template: KObject | undefined): unknown {
  const t = structuredClone(template ?? {}) as KObject;
  if (t.metadata?.labels) {
    delete t.metadata.labels[POD_TEMPLATE_HASH];
    if (Object.keys(t.metadata.labels).length === 0) delete t.metadata.labels;
  }
  return t;
}

/** The object's controller (the ownerReference with `controller: true`). */
export function controllerOf(o: KObject): { kind: string; name: string; uid: string } | undefined {
  const ref = (o.metadata.ownerReferences ?? []).find((r) => r.controller === true);
  return ref ? { kind: String(ref.kind), name: String(ref.name), uid: String(ref.uid) } : undefined;
}

export function isControlledBy(o: KObject, owner: KObject): boolean {
  return controllerOf(o)?.uid === owner.metadata.uid;
}

/** An ownerReference making `owner` the controller of a new object. */
export function controllerRef(owner: KObject, kind: string, apiVersion = "apps/v1"): Record<string, unknown> {
  return {
    apiVersion,
    kind,
    name: owner.metadata.name,
    uid: owner.metadata.uid ?? "",
    controller: true,
    blockOwnerDeletion: true,
  };
}

/** A pod that counts towards replicas: not being deleted, not finished. */
export function isPodActive(p: KObject): boolean {
  return !p.metadata.deletionTimestamp && p.status?.phase !== "Succeeded" && p.status?.phase !== "Failed";
}

/** Ready for at least `minReadySeconds` (the Ready condition's lastTransitionTime), as controllers count "available". */
export function isPodAvailable(p: KObject, minReadySeconds = 0, now = Date.now()): boolean {
  if (!podIsReady(p)) return false;
  if (minReadySeconds <= 0) return true;
  const cond = ((p.status?.conditions ?? []) as Array<{ type: string; lastTransitionTime?: string }>)
    .find((c) => c.type === "Ready");
  const since = Date.parse(cond?.lastTransitionTime ?? "");
  return Number.isNaN(since) || since + minReadySeconds * 1000 <= now;
}

/**
 * The order in which a ReplicaSet removes pods (kube's ActivePods ordering): unassigned before assigned,
 * pending before running, not ready before ready, then the newest first.
 */
export function deletionOrder(a: KObject, b: KObject): number {
  const rank = (p: KObject) => [
    p.spec?.nodeName ? 1 : 0,
    p.status?.phase === "Pending" ? 0 : p.status?.phase === "Unknown" ? 1 : 2,
    podIsReady(p) ? 1 : 0,
  ];
  const ra = rank(a), rb = rank(b);
  for (let i = 0; i < ra.length; i++) if (ra[i] !== rb[i]) return ra[i]! - rb[i]!;
  const ta = Date.parse(a.metadata.creationTimestamp ?? "") || 0;
  const tb = Date.parse(b.metadata.creationTimestamp ?? "") || 0;
  return tb - ta;
}

/** An int-or-percent (`25%`, `1`) against a total, rounded up (maxSurge) or down (maxUnavailable). */
export function scaledValue(v: number | string | undefined, total: number, roundUp: boolean): number {
  if (v === undefined || v === null) return 0;
  if (typeof v === "number") return v;
  const m = /^(\d+)%$/.exec(v);
  if (!m) return /^\d+$/.test(v) ? Number(v) : 0;
  const x = (Number(m[1]) * total) / 100;
  return roundUp ? Math.ceil(x) : Math.floor(x);
}

/** maxSurge and maxUnavailable of a rolling update; both zero would deadlock, so unavailable becomes 1. */
export function rollingLimits(
  rolling: { maxSurge?: number | string; maxUnavailable?: number | string } | undefined,
  replicas: number,
  defaults: { maxSurge: number | string; maxUnavailable: number | string } = {
    maxSurge: "25%",
    maxUnavailable: "25%",
  },
): { maxSurge: number; maxUnavailable: number } {
  const maxSurge = scaledValue(rolling?.maxSurge ?? defaults.maxSurge, replicas, true);
  let maxUnavailable = scaledValue(rolling?.maxUnavailable ?? defaults.maxUnavailable, replicas, false);
  if (maxSurge === 0 && maxUnavailable === 0) maxUnavailable = 1;
  return { maxSurge, maxUnavailable };
}

/** A new pod for a template, owned by `owner`. */
export function podFromTemplate(
  template: KObject,
  owner: KObject,
  ownerKind: string,
  extra: { labels?: Record<string, string>; spec?: Record<string, unknown> } = {},
): KObject {
  const t = structuredClone(template) as KObject;
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: {
      name: "",
      generateName: `${owner.metadata.name}-`,
      namespace: owner.metadata.namespace ?? "default",
      labels: { ...(t.metadata?.labels ?? {}), ...(extra.labels ?? {}) },
      ...(t.metadata?.annotations ? { annotations: t.metadata.annotations } : {}),
      ownerReferences: [controllerRef(owner, ownerKind)],
    },
    spec: { ...(t.spec ?? {}), ...(extra.spec ?? {}) },
  };
}

// ---- DaemonSet placement ----

interface Taint {
  key: string;
  value?: string;
  effect: string;
}
interface Toleration {
  key?: string;
  operator?: string;
  value?: string;
  effect?: string;
}

/**
 * Tolerations every DaemonSet pod gets (kube's AddOrUpdateDaemonPodTolerations): it stays on nodes
 * that are not ready, unreachable, under pressure or cordoned, and hostNetwork pods on nodes whose
 * network is not up yet (a CNI agent's own DaemonSet must start there).
 */
export function daemonTolerations(hostNetwork: boolean): Toleration[] {
  const t: Toleration[] = [
    { key: "node.kubernetes.io/not-ready", operator: "Exists", effect: "NoExecute" },
    { key: "node.kubernetes.io/unreachable", operator: "Exists", effect: "NoExecute" },
    { key: "node.kubernetes.io/disk-pressure", operator: "Exists", effect: "NoSchedule" },
    { key: "node.kubernetes.io/memory-pressure", operator: "Exists", effect: "NoSchedule" },
    { key: "node.kubernetes.io/pid-pressure", operator: "Exists", effect: "NoSchedule" },
    { key: "node.kubernetes.io/unschedulable", operator: "Exists", effect: "NoSchedule" },
  ];
  if (hostNetwork) {
    t.push({ key: "node.kubernetes.io/network-unavailable", operator: "Exists", effect: "NoSchedule" });
  }
  return t;
}

/** Does the toleration tolerate the taint? (kube's ToleratesTaint) */
export function tolerates(t: Toleration, taint: Taint): boolean {
  if (t.effect && t.effect !== taint.effect) return false;
  if (t.key && t.key !== taint.key) return false;
  if (!t.key && t.operator !== "Exists") return false;
  if (t.operator === "Exists") return true;
  return (t.value ?? "") === (taint.value ?? "");
}

interface SelectorRequirement {
  key: string;
  operator: string;
  values?: string[];
}
interface NodeSelectorTerm {
  matchExpressions?: SelectorRequirement[];
  matchFields?: SelectorRequirement[];
}

function termMatches(term: NodeSelectorTerm, node: KObject): boolean {
  const labels = node.metadata.labels ?? {};
  const exprs = (term.matchExpressions ?? []).map((e) => ({ e, v: labels[e.key] }));
  for (const f of term.matchFields ?? []) {
    exprs.push({ e: f, v: f.key === "metadata.name" ? node.metadata.name : undefined });
  }
  if (exprs.length === 0) return false;
  return exprs.every(({ e, v }) => {
    const vals = e.values ?? [];
    switch (e.operator) {
      case "In":
        return v !== undefined && vals.includes(v);
      case "NotIn":
        return v === undefined || !vals.includes(v);
      case "Exists":
        return v !== undefined;
      case "DoesNotExist":
        return v === undefined;
      case "Gt":
        return v !== undefined && Number(v) > Number(vals[0]);
      case "Lt":
        return v !== undefined && Number(v) < Number(vals[0]);
    }
    return false;
  });
}

/**
 * Why a pod with this spec cannot run on `node`, or undefined if it can, as kube-scheduler's filters
 * judge it: the nodeSelector, the required node affinity, and every NoSchedule/NoExecute taint of the
 * node against the pod's tolerations (plus `extraTolerations`).
 */
export function podMisfit(
  spec: KObject["spec"],
  node: KObject,
  extraTolerations: readonly Toleration[] = [],
): string | undefined {
  spec ??= {};
  const labels = node.metadata.labels ?? {};
  for (const [k, v] of Object.entries((spec.nodeSelector ?? {}) as Record<string, string>)) {
    if (labels[k] !== v) return `node selector ${k}=${v} does not match`;
  }
  const terms = spec.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution
    ?.nodeSelectorTerms;
  if (
    Array.isArray(terms) && terms.length > 0 && !terms.some((t: NodeSelectorTerm) => termMatches(t, node))
  ) {
    return "required node affinity does not match";
  }
  const tolerations = [...(spec.tolerations ?? []), ...extraTolerations];
  for (const taint of (node.spec?.taints ?? []) as Taint[]) {
    if (taint.effect !== "NoSchedule" && taint.effect !== "NoExecute") continue;
    if (!tolerations.some((t: Toleration) => tolerates(t, taint))) {
      return `untolerated taint ${taint.key}${taint.value ? `=${taint.value}` : ""}:${taint.effect}`;
    }
  }
  return undefined;
}

/** Why a DaemonSet's pod cannot run on `node` ({@link podMisfit} with the DaemonSet default tolerations). */
export function daemonPodMisfit(template: KObject, node: KObject): string | undefined {
  const spec = template.spec ?? {};
  return podMisfit(spec, node, daemonTolerations(spec.hostNetwork === true));
}
