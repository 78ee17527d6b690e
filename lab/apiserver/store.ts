/**
 * The lab API server's storage: an in-memory, etcd-like object store with one global revision counter,
 * a history of changes that watches replay from any retained revision, and compaction (after which a
 * watch from an older revision gets 410 Gone, as from a real API server). It applies the server-side
 * defaults and validation, so in-process users (the lab's controllers) and HTTP clients see the same
 * objects. Stored objects are deep-frozen and shared: clone before changing one.
 */
import { alreadyExists, ApiError, badRequest, conflict, gone, invalid, notFound } from "./errors.ts";
import { applyStaticDefaults, validate } from "./_defaults.ts";
import { ServiceAllocator } from "./service_allocator.ts";
import { applyPatch, type PatchType } from "./patch.ts";
import { BOOTSTRAP_POLICY } from "./rbac.ts";
import { apiVersionOf, type ResourceInfo, resourceInfo, RESOURCES } from "./resources.ts";
import { objectMatches, parseFieldSelector, parseLabelSelector, type Selector } from "./selectors.ts";
import type { KubeObject, StoreEvent, WatchEventType } from "./types.ts";

export interface StoreOptions {
  /** Service cluster IP range. Default 10.96.0.0/12, as kube-apiserver. */
  serviceCidr?: string;
  /**
   * Service cluster IP ranges, at most one per family, primary first (kube-apiserver's
   * `--service-cluster-ip-range=10.96.0.0/12,fd00:10:96::/108`); overrides `serviceCidr`.
   */
  serviceCidrs?: readonly string[];
  /** Node port range, inclusive. Default [30000, 32767]. */
  nodePortRange?: [number, number];
  /** Events kept before the oldest half is compacted automatically. Default 200,000. */
  historyLimit?: number;
  /** Namespaces that exist from the start. Default ["default", "kube-system"]. */
  initialNamespaces?: readonly string[];
  /**
   * How long a deleted namespace stays `Terminating` before it and its objects are removed, as the
   * namespace controller does it a moment later. Default 0: removed at once, synchronously.
   */
  namespaceDeletionDelayMs?: number;
  /**
   * Pods bound to a node are deleted gracefully, as kube-apiserver does: DELETE sets
   * metadata.deletionTimestamp and deletionGracePeriodSeconds (from DeleteOptions, else
   * spec.terminationGracePeriodSeconds, else 30) and the pod stays until the node's kubelet deletes it
   * with gracePeriodSeconds 0. Default false: removed at once (no kubelet to finish the job).
   */
  gracefulPodDeletion?: boolean;
}

export interface ListOptions {
  /** Only objects of this namespace (namespaced resources). */
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** Page size; with `continue`, the next page. */
  limit?: number;
  continue?: string;
}

export interface ListResult {
  items: KubeObject[];
  /** The store revision the list reflects (the list's metadata.resourceVersion). */
  resourceVersion: string;
  /** Token for the next page, when `limit` cut the list short. */
  continue?: string;
  remainingItemCount?: number;
}

export interface WatchOptions {
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
}

export interface DeleteOptions {
  /** Preconditions: the object must still have this resourceVersion / uid. */
  resourceVersion?: string;
  uid?: string;
  /** For pods on a node: how long they may take to stop (default: the pod's terminationGracePeriodSeconds). */
  gracePeriodSeconds?: number;
  /** `Orphan` keeps the object's dependents (dropping their reference to it); otherwise they are deleted. */
  propagationPolicy?: "Orphan" | "Background" | "Foreground";
}

export interface WriteOptions {
  /** `status` writes only `.status`; a write to the main resource never changes `.status` then. */
  subresource?: "status";
  /**
   * For a patch: checks the patched object for unknown fields and returns what to store (the server's
   * fieldValidation, field_validation.ts); may throw.
   */
  checkPatched?: (patched: KubeObject) => KubeObject;
}

/** One delivered watch event (after namespace and selector filtering). */
export interface WatchEvent {
  type: WatchEventType;
  object: KubeObject;
  revision: number;
}

type Watcher = {
  resource: string;
  namespace: string | undefined;
  labels: Selector;
  fields: Selector;
  cb: (e: WatchEvent) => void;
};

function deepFreeze<T>(v: T): T {
  if (typeof v === "object" && v !== null && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}

export function keyOf(namespace: string | undefined, name: string): string {
  return namespace ? `${namespace}/${name}` : name;
}

function splitKey(key: string): [string | undefined, string] {
  const i = key.indexOf("/");
  return i < 0 ? [undefined, key] : [key.slice(0, i), key.slice(i + 1)];
}

function randomSuffix(n: number): string {
  const chars = "bcdfghjklmnpqrstvwxz2456789";
  let s = "";
  for (let i = 0; i < n; i++) s += chars[Math.floor(Math.random() * chars.length)];
  return s;
}

function withoutMetaAndStatus(o: KubeObject): string {
  const { metadata: _m, status: _s, ...rest } = o;
  return JSON.stringify(rest);
}

export class Store {
  #objects = new Map<string, Map<string, KubeObject>>();
  #sortedKeys = new Map<string, string[]>();
  #history: StoreEvent[] = [];
  #revision = 1;
  #compacted = 0;
  #watchers = new Set<Watcher>();
  #historyLimit: number;
  #nsDelayMs: number;
  #gracefulPods: boolean;
  #pending = new Set<number>();
  /** Owner uid → `resource\0key` of the objects naming it in their ownerReferences. */
  #dependents = new Map<string, Set<string>>();
  /** Terminating namespaces whose delayed purge has not run yet. */
  #awaitingPurge = new Set<string>();
  /** Cluster IPs, node ports and health check ports of Services. */
  readonly services: ServiceAllocator;

  constructor(opts: StoreOptions = {}) {
    this.services = new ServiceAllocator({
      serviceCidrs: opts.serviceCidrs?.length ? opts.serviceCidrs : [opts.serviceCidr ?? "10.96.0.0/12"],
      nodePortRange: opts.nodePortRange ?? [30000, 32767],
    });
    this.#historyLimit = opts.historyLimit ?? 200_000;
    this.#nsDelayMs = opts.namespaceDeletionDelayMs ?? 0;
    this.#gracefulPods = opts.gracefulPodDeletion ?? false;
    for (const r of RESOURCES.keys()) this.#objects.set(r, new Map());
    for (const ns of opts.initialNamespaces ?? ["default", "kube-system"]) {
      this.create("namespaces", { metadata: { name: ns } });
    }
    for (const { resource, object } of BOOTSTRAP_POLICY) this.create(resource, object);
  }

  /** The current revision: the resourceVersion of the last write. */
  get revision(): number {
    return this.#revision;
  }

  /** The oldest revision a watch can still start from. */
  get compactedRevision(): number {
    return this.#compacted;
  }

  /** Number of retained history events. */
  get historySize(): number {
    return this.#history.length;
  }

  #map(resource: string): Map<string, KubeObject> {
    const m = this.#objects.get(resource);
    if (!m) throw new RangeError(`unknown resource ${resource}`);
    return m;
  }

  /** An object by `namespace/name` (or `name`); undefined when absent. */
  tryGet(resource: string, key: string): KubeObject | undefined {
    return this.#map(resource).get(key);
  }

  /** An object by `namespace/name` (or `name`); throws NotFound when absent. */
  get(resource: string, key: string): KubeObject {
    const o = this.tryGet(resource, key);
    if (!o) {
      const r = resourceInfo(resource);
      throw notFound(r.plural, r.group, splitKey(key)[1]);
    }
    return o;
  }

  #keys(resource: string): string[] {
    let keys = this.#sortedKeys.get(resource);
    if (!keys) {
      keys = [...this.#map(resource).keys()].sort();
      this.#sortedKeys.set(resource, keys);
    }
    return keys;
  }

  /** Objects of one resource, sorted by key, filtered and paged as `GET .../<resource>` does. */
  list(resource: string, opts: ListOptions = {}): ListResult {
    const labels = parseLabelSelector(opts.labelSelector);
    const fields = parseFieldSelector(opts.fieldSelector);
    const map = this.#map(resource);
    let keys = this.#keys(resource);
    let rv = this.#revision;
    if (opts.continue) {
      let token: { rv: number; start: string };
      try {
        token = JSON.parse(atob(opts.continue));
      } catch (err) {
        throw new ApiError(400, "BadRequest", "continue key is not valid: " + String(err), undefined, {
          cause: err,
        });
      }
      if (token.rv < this.#compacted) {
        throw gone(
          "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        );
      }
      rv = token.rv;
      keys = keys.slice(lowerBound(keys, token.start));
    }
    const prefix = opts.namespace ? `${opts.namespace}/` : undefined;
    const items: KubeObject[] = [];
    const limit = opts.limit && opts.limit > 0 ? opts.limit : Infinity;
    let i = 0;
    for (; i < keys.length; i++) {
      const k = keys[i]!;
      if (prefix && !k.startsWith(prefix)) continue;
      const o = map.get(k)!;
      if (!objectMatches(o, labels, fields)) continue;
      if (items.length >= limit) break;
      items.push(o);
    }
    const result: ListResult = { items, resourceVersion: String(rv) };
    if (i < keys.length) {
      result.continue = btoa(JSON.stringify({ rv, start: keys[i] }));
      if (labels.empty && fields.empty && !prefix) result.remainingItemCount = keys.length - i;
    }
    return result;
  }

  /** Creates an object (name or generateName required); returns the stored object. */
  create(resource: string, input: KubeObject): KubeObject {
    const r = resourceInfo(resource);
    const obj: KubeObject = structuredClone(input);
    obj.metadata ??= {};
    const meta = obj.metadata;
    if (!meta.name && meta.generateName) meta.name = meta.generateName + randomSuffix(5);
    if (!meta.name) {
      throw invalid(r.kind, r.group, "", [{
        field: "metadata.name",
        reason: "FieldValueRequired",
        message: "Required value: name or generateName is required",
      }]);
    }
    if (r.namespaced) {
      if (!meta.namespace) meta.namespace = "default";
      const ns = this.#map("namespaces").get(meta.namespace);
      if (!ns) {
        throw new ApiError(404, "NotFound", `namespaces "${meta.namespace}" not found`, {
          name: meta.namespace,
          kind: "namespaces",
        });
      }
      if (ns.metadata?.deletionTimestamp) {
        throw new ApiError(
          403,
          "Forbidden",
          `${r.plural} "${meta.name}" is forbidden: unable to create new content in namespace ${meta.namespace} because it is being terminated`,
        );
      }
    } else delete meta.namespace;
    const key = keyOf(meta.namespace, meta.name);
    if (this.#map(resource).has(key)) throw alreadyExists(r.plural, r.group, meta.name);
    obj.apiVersion = apiVersionOf(r);
    obj.kind = r.kind;
    meta.uid = crypto.randomUUID();
    meta.creationTimestamp = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    meta.generation = 1;
    delete meta.resourceVersion;
    delete meta.deletionTimestamp;
    delete meta.managedFields;
    // kube-apiserver's create strategy for workloads: the status is the controllers' to write.
    if (r.group === "apps") obj.status = {};
    applyStaticDefaults(r, obj);
    this.#check(r, obj);
    if (r.plural === "services") this.services.allocate(obj, undefined, key);
    const stored = this.#commit(resource, "ADDED", key, obj, undefined);
    // kube-controller-manager's serviceaccounts controller gives every namespace its `default` account.
    if (resource === "namespaces" && !this.tryGet("serviceaccounts", `${meta.name}/default`)) {
      this.create("serviceaccounts", { metadata: { name: "default", namespace: meta.name } });
    }
    return stored;
  }

  /** Replaces an object (PUT); a stale metadata.resourceVersion gets 409 Conflict. */
  update(resource: string, input: KubeObject, opts: WriteOptions = {}): KubeObject {
    return this.#update(resource, input, opts, false);
  }

  #update(resource: string, input: KubeObject, opts: WriteOptions, binding: boolean): KubeObject {
    const r = resourceInfo(resource);
    const name = input.metadata?.name;
    if (!name) {
      throw invalid(r.kind, r.group, "", [{
        field: "metadata.name",
        reason: "FieldValueRequired",
        message: "Required value",
      }]);
    }
    const ns = r.namespaced ? input.metadata?.namespace ?? "default" : undefined;
    const key = keyOf(ns, name);
    const old = this.get(resource, key);
    const rv = input.metadata?.resourceVersion;
    if (rv && rv !== old.metadata?.resourceVersion) {
      throw conflict(
        r.plural,
        r.group,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
      );
    }
    let obj: KubeObject;
    if (opts.subresource === "status") {
      obj = structuredClone(old);
      if (input.status === undefined) delete obj.status;
      else obj.status = structuredClone(input.status);
    } else {
      obj = structuredClone(input);
      obj.metadata ??= {};
      if (r.hasStatusSubresource) {
        if (old.status === undefined) delete obj.status;
        else obj.status = structuredClone(old.status);
      }
    }
    const meta = obj.metadata!;
    const oldMeta = old.metadata!;
    meta.name = name;
    if (ns) meta.namespace = ns;
    else delete meta.namespace;
    meta.uid = oldMeta.uid!;
    meta.creationTimestamp = oldMeta.creationTimestamp!;
    meta.generation = oldMeta.generation ?? 1;
    delete meta.managedFields;
    obj.apiVersion = apiVersionOf(r);
    obj.kind = r.kind;
    applyStaticDefaults(r, obj);
    if (r.plural === "services") this.services.carry(obj, old);
    const immutable = IMMUTABLE[r.plural];
    if (immutable && canonical(immutable.get(obj)) !== canonical(immutable.get(old))) {
      throw invalid(r.kind, r.group, name, [{
        field: immutable.field,
        reason: "FieldValueInvalid",
        message: immutable.message(immutable.get(obj)),
      }]);
    }
    if (r.plural === "pods" && opts.subresource !== "status" && !binding) {
      const why = podSpecChange(old.spec, obj.spec);
      if (why) {
        throw invalid(r.kind, r.group, name, [{
          field: "spec",
          reason: "FieldValueForbidden",
          message: why,
        }]);
      }
    }
    this.#check(r, obj);
    if (r.plural === "services") this.services.allocate(obj, old, key);
    if (withoutMetaAndStatus(obj) !== withoutMetaAndStatus(old)) {
      meta.generation = (oldMeta.generation ?? 1) + 1;
    }
    // A no-op write keeps the resourceVersion and produces no event, as in Kubernetes.
    const { resourceVersion: _a, ...m1 } = meta;
    const { resourceVersion: _b, ...m2 } = oldMeta;
    if (JSON.stringify({ ...obj, metadata: m1 }) === JSON.stringify({ ...old, metadata: m2 })) return old;
    return this.#commit(resource, "MODIFIED", key, obj, old);
  }

  /** Patches an object (PATCH) with a JSON merge, strategic merge or JSON patch. */
  patch(resource: string, key: string, type: PatchType, patch: unknown, opts: WriteOptions = {}): KubeObject {
    const old = this.get(resource, key);
    let patched = applyPatch(type, old, patch);
    if (typeof patched !== "object" || patched === null || Array.isArray(patched)) {
      throw badRequest("patch did not produce an object");
    }
    if (opts.checkPatched) patched = opts.checkPatched(patched);
    const [ns, name] = splitKey(key);
    // Untouched subtrees of the patched result are still the stored (frozen) ones.
    patched.metadata = { ...patched.metadata };
    if (patched.metadata.name !== name || (ns && patched.metadata.namespace !== ns)) {
      throw badRequest("the name or namespace of the object may not be changed by a patch");
    }
    // A patch is conditional only when it carries a resourceVersion itself.
    const patchRv = (patch as KubeObject)?.metadata?.resourceVersion;
    if (!patchRv) patched.metadata.resourceVersion = old.metadata?.resourceVersion;
    return this.update(resource, patched, opts);
  }

  /**
   * Assigns a pending pod to a node (the `pods/binding` subresource kube-scheduler posts to); a pod
   * already assigned gets 409 Conflict.
   */
  bind(key: string, nodeName: string): KubeObject {
    const old = this.get("pods", key);
    const name = old.metadata!.name!;
    if (old.spec?.nodeName) {
      throw conflict(
        "pods/binding",
        "",
        name,
        `pod ${name} is already assigned to node "${old.spec.nodeName}"`,
      );
    }
    if (old.metadata?.deletionTimestamp) {
      throw conflict("pods/binding", "", name, `pod ${name} is being deleted, cannot be assigned to a host`);
    }
    const obj = structuredClone(old);
    obj.spec.nodeName = nodeName;
    return this.#update("pods", obj, {}, true);
  }

  /** Deletes an object; deleting a namespace first deletes everything in it. Returns the last state. */
  delete(
    resource: string,
    key: string,
    opts: DeleteOptions = {},
  ): KubeObject {
    const r = resourceInfo(resource);
    const old = this.get(resource, key);
    if (opts.resourceVersion && opts.resourceVersion !== old.metadata?.resourceVersion) {
      throw conflict(
        r.plural,
        r.group,
        old.metadata!.name!,
        "the object has been modified; please apply your changes to the latest version and try again",
      );
    }
    if (opts.uid && opts.uid !== old.metadata?.uid) {
      throw conflict(
        r.plural,
        r.group,
        old.metadata!.name!,
        `Precondition failed: UID in precondition: ${opts.uid}, UID in object meta: ${old.metadata?.uid}`,
      );
    }
    if (resource === "pods" && this.#gracefulPods && old.spec?.nodeName) {
      const spec = old.spec as { terminationGracePeriodSeconds?: number };
      const grace = opts.gracePeriodSeconds ?? spec.terminationGracePeriodSeconds ?? 30;
      if (grace > 0) {
        const meta = old.metadata!;
        // Already terminating: a second DELETE may only shorten the grace period.
        if (meta.deletionTimestamp && (meta.deletionGracePeriodSeconds ?? 0) <= grace) return old;
        const terminating = structuredClone(old);
        terminating.metadata!.deletionTimestamp = new Date(Date.now() + grace * 1000).toISOString().replace(
          /\.\d+Z$/,
          "Z",
        );
        terminating.metadata!.deletionGracePeriodSeconds = grace;
        return this.#commit(resource, "MODIFIED", key, terminating, old);
      }
    }
    if (resource === "namespaces") {
      if (old.metadata?.deletionTimestamp) return old;
      if (this.#nsDelayMs > 0) {
        const stored = this.#markTerminating(key, old);
        this.#awaitingPurge.add(key);
        const id = setTimeout(() => {
          this.#pending.delete(id);
          this.#awaitingPurge.delete(key);
          if (this.tryGet("namespaces", key)?.metadata?.uid === old.metadata?.uid) this.#purgeNamespace(key);
        }, this.#nsDelayMs) as unknown as number;
        // A pending purge must not keep a process alive that has nothing else to do.
        Deno.unrefTimer(id);
        this.#pending.add(id);
        return stored;
      }
      // Removed at once when nothing in it needs time to go (pods terminating on a node do).
      this.#deleteContents(key);
      if (this.#namespaceEmpty(key)) return this.#commit(resource, "DELETED", key, undefined, old);
      return this.#markTerminating(key, old);
    }
    if (resource === "services") this.services.release(old);
    const gone = this.#commit(resource, "DELETED", key, undefined, old);
    this.#collectDependents(old, opts.propagationPolicy === "Orphan");
    return gone;
  }

  /**
   * The garbage collector's work, done at once: objects whose only owner was `owner` are deleted
   * (background propagation: a Deployment takes its ReplicaSets, they take their pods, which terminate
   * gracefully); with `orphan`, or when other owners remain, only the reference to `owner` is dropped.
   */
  #collectDependents(owner: KubeObject, orphan: boolean): void {
    const uid = owner.metadata?.uid;
    const deps = uid ? this.#dependents.get(uid) : undefined;
    if (!uid || !deps) return;
    this.#dependents.delete(uid);
    for (const ref of [...deps]) {
      const [resource, key] = ref.split("\u0000") as [string, string];
      const dep = this.tryGet(resource, key);
      const refs = (dep?.metadata?.ownerReferences ?? []) as Array<{ uid?: string }>;
      if (!dep || !refs.some((o) => o.uid === uid)) continue;
      if (!orphan && refs.length === 1) {
        if (!dep.metadata?.deletionTimestamp) this.delete(resource, key);
        continue;
      }
      const kept = structuredClone(dep);
      kept.metadata!.ownerReferences = refs.filter((o) => o.uid !== uid);
      if (kept.metadata!.ownerReferences.length === 0) delete kept.metadata!.ownerReferences;
      this.#commit(resource, "MODIFIED", key, kept, dep);
    }
  }

  /** The `scale` subresource of a Deployment or ReplicaSet, as an autoscaling/v1 Scale. */
  getScale(resource: string, key: string): KubeObject {
    const o = this.get(resource, key);
    const m = o.metadata!;
    return {
      kind: "Scale",
      apiVersion: "autoscaling/v1",
      metadata: {
        name: m.name!,
        ...(m.namespace ? { namespace: m.namespace } : {}),
        uid: m.uid!,
        resourceVersion: m.resourceVersion!,
        creationTimestamp: m.creationTimestamp!,
      },
      spec: { replicas: o.spec?.replicas ?? 0 },
      status: { replicas: o.status?.replicas ?? 0, selector: selectorString(o.spec?.selector) },
    };
  }

  /** Writes `spec.replicas` through the scale subresource (`kubectl scale`); a stale resourceVersion conflicts. */
  updateScale(resource: string, key: string, scale: KubeObject): KubeObject {
    const r = resourceInfo(resource);
    const o = this.get(resource, key);
    const replicas = scale?.spec?.replicas;
    if (!Number.isInteger(replicas) || replicas < 0) {
      throw invalid("Scale", "autoscaling", o.metadata!.name!, [{
        field: "spec.replicas",
        message: `Invalid value: ${JSON.stringify(replicas)}: must be greater than or equal to 0`,
      }]);
    }
    const rv = scale?.metadata?.resourceVersion;
    if (rv && rv !== o.metadata?.resourceVersion) {
      throw conflict(
        r.plural,
        r.group,
        o.metadata!.name!,
        "the object has been modified; please apply your changes to the latest version and try again",
      );
    }
    const next = structuredClone(o);
    next.spec.replicas = replicas;
    this.update(resource, next);
    return this.getScale(resource, key);
  }

  /** Patches the scale subresource: the patch applies to the Scale, whose replicas are then written. */
  patchScale(resource: string, key: string, type: PatchType, patch: unknown): KubeObject {
    const patched = applyPatch(type, this.getScale(resource, key), patch);
    const patchRv = (patch as KubeObject)?.metadata?.resourceVersion;
    if (!patchRv && patched?.metadata) delete patched.metadata.resourceVersion;
    return this.updateScale(resource, key, patched);
  }

  /**
   * Watches one resource from a revision: replays retained history after `fromRevision`, then delivers
   * live changes, synchronously and in order. Throws 410 Gone if `fromRevision` was compacted away.
   * Returns the function that stops the watch.
   */
  watch(
    resource: string,
    fromRevision: number,
    cb: (e: WatchEvent) => void,
    opts: WatchOptions = {},
  ): () => void {
    this.#map(resource);
    if (fromRevision < this.#compacted) {
      throw gone(`too old resource version: ${fromRevision} (${this.#compacted})`);
    }
    const w: Watcher = {
      resource,
      namespace: opts.namespace,
      labels: parseLabelSelector(opts.labelSelector),
      fields: parseFieldSelector(opts.fieldSelector),
      cb,
    };
    for (let i = lowerBoundRev(this.#history, fromRevision + 1); i < this.#history.length; i++) {
      const e = this.#history[i]!;
      if (e.resource === resource) this.#deliver(w, e);
    }
    this.#watchers.add(w);
    return () => this.#watchers.delete(w);
  }

  /** The namespace controller's first step: the namespace is Terminating, new content is refused. */
  #markTerminating(key: string, old: KubeObject): KubeObject {
    const terminating = structuredClone(old);
    terminating.metadata!.deletionTimestamp = new Date().toISOString().replace(/\.\d+Z$/, "Z");
    terminating.metadata!.deletionGracePeriodSeconds = 0;
    terminating.status = { ...terminating.status, phase: "Terminating" };
    return this.#commit("namespaces", "MODIFIED", key, terminating, old);
  }

  /** Deletes everything in a namespace (pods on a node gracefully: they stay until their kubelet is done). */
  #deleteContents(ns: string): void {
    for (const other of RESOURCES.values()) {
      if (!other.namespaced) continue;
      for (const k of [...this.#keys(other.plural)]) {
        if (!k.startsWith(`${ns}/`)) continue;
        const o = this.tryGet(other.plural, k);
        if (o && !o.metadata?.deletionTimestamp) this.delete(other.plural, k);
      }
    }
  }

  #namespaceEmpty(ns: string): boolean {
    for (const other of RESOURCES.values()) {
      if (other.namespaced && this.#keys(other.plural).some((k) => k.startsWith(`${ns}/`))) return false;
    }
    return true;
  }

  /**
   * The namespace controller's second step: delete the contents, and remove the namespace once they
   * are gone; pods still terminating finish it later (see #commit).
   */
  #purgeNamespace(key: string): void {
    this.#deleteContents(key);
    const ns = this.tryGet("namespaces", key);
    if (ns && this.#namespaceEmpty(key)) this.#commit("namespaces", "DELETED", key, undefined, ns);
  }

  #indexOwners(
    resource: string,
    key: string,
    before: KubeObject | undefined,
    after: KubeObject | undefined,
  ): void {
    const uids = (o: KubeObject | undefined) =>
      ((o?.metadata?.ownerReferences ?? []) as Array<{ uid?: string }>).map((r) => r.uid).filter(
        Boolean,
      ) as string[];
    const ref = `${resource}\u0000${key}`;
    const was = uids(before), is = uids(after);
    for (const u of was) if (!is.includes(u)) this.#dependents.get(u)?.delete(ref);
    for (const u of is) {
      let set = this.#dependents.get(u);
      if (!set) this.#dependents.set(u, set = new Set());
      set.add(ref);
    }
  }

  /** Cancels pending namespace purges (they are otherwise done after `namespaceDeletionDelayMs`). */
  close(): void {
    for (const id of this.#pending) clearTimeout(id);
    this.#pending.clear();
  }

  /** Drops history up to `revision` (default: all of it); watches from before then get 410 Gone. */
  compact(revision: number = this.#revision): void {
    const rev = Math.min(revision, this.#revision);
    if (rev <= this.#compacted) return;
    this.#history = this.#history.slice(lowerBoundRev(this.#history, rev + 1));
    this.#compacted = rev;
  }

  #deliver(w: Watcher, e: StoreEvent): void {
    const match = (o: KubeObject | undefined): boolean => {
      if (!o) return false;
      if (w.namespace && o.metadata?.namespace !== w.namespace) return false;
      return objectMatches(o, w.labels, w.fields);
    };
    let type: WatchEventType | undefined;
    if (e.type === "MODIFIED") {
      const was = match(e.previous);
      const is = match(e.object);
      type = was && is ? "MODIFIED" : is ? "ADDED" : was ? "DELETED" : undefined;
    } else if (match(e.object)) type = e.type;
    if (!type) return;
    try {
      w.cb({ type, object: e.object, revision: e.revision });
    } catch {
      // A failing watcher must not break the write that triggered it; it is its own problem.
    }
  }

  #check(r: ResourceInfo, obj: KubeObject): void {
    const causes = validate(r, obj);
    if (causes.length) throw invalid(r.kind, r.group, obj.metadata?.name ?? "", causes);
  }

  #commit(
    resource: string,
    type: WatchEventType,
    key: string,
    obj: KubeObject | undefined,
    old: KubeObject | undefined,
  ): KubeObject {
    const revision = ++this.#revision;
    let stored: KubeObject;
    if (type === "DELETED") {
      // The last state of a deleted object carries the deletion's revision, as in Kubernetes.
      stored = deepFreeze({ ...old!, metadata: { ...old!.metadata, resourceVersion: String(revision) } });
      this.#map(resource).delete(key);
      this.#sortedKeys.delete(resource);
    } else {
      obj!.metadata!.resourceVersion = String(revision);
      stored = deepFreeze(obj!);
      if (!old) this.#sortedKeys.delete(resource);
      this.#map(resource).set(key, stored);
    }
    this.#indexOwners(resource, key, old, type === "DELETED" ? undefined : stored);
    const event: StoreEvent = {
      revision,
      resource,
      type,
      key,
      object: stored,
      ...(old ? { previous: old } : {}),
    };
    this.#history.push(event);
    if (this.#history.length > this.#historyLimit) {
      this.compact(this.#history[Math.floor(this.#history.length / 2)]!.revision);
    }
    for (const w of this.#watchers) if (w.resource === resource) this.#deliver(w, event);
    if (type === "DELETED" && resource !== "namespaces") {
      const ns = stored.metadata?.namespace;
      const nsObj = ns ? this.tryGet("namespaces", ns) : undefined;
      // The last object of a Terminating namespace gone: the namespace goes too.
      if (
        ns && nsObj?.metadata?.deletionTimestamp && !this.#awaitingPurge.has(ns) && this.#namespaceEmpty(ns)
      ) this.#commit("namespaces", "DELETED", ns, undefined, nsObj);
    }
    return stored;
  }
}

/** Fields an update may not change, per resource, with kube-apiserver's message. */
const IMMUTABLE: Record<
  string,
  { field: string; get: (o: KubeObject) => unknown; message: (v: unknown) => string }
> = {
  deployments: workloadSelector(),
  replicasets: workloadSelector(),
  daemonsets: workloadSelector(),
  rolebindings: {
    field: "roleRef",
    get: (o) => o.roleRef,
    message: (v) => `Invalid value: ${JSON.stringify(v)}: cannot change roleRef`,
  },
  clusterrolebindings: {
    field: "roleRef",
    get: (o) => o.roleRef,
    message: (v) => `Invalid value: ${JSON.stringify(v)}: cannot change roleRef`,
  },
};

function workloadSelector() {
  return {
    field: "spec.selector",
    get: (o: KubeObject) => o.spec?.selector,
    message: (v: unknown) => `Invalid value: ${JSON.stringify(v)}: field is immutable`,
  };
}

/** A LabelSelector in the text form of `?labelSelector=` (the Scale's status.selector). */
export function selectorString(sel: KubeObject | undefined): string {
  const parts = Object.entries(sel?.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
  for (const e of sel?.matchExpressions ?? []) {
    const vals = (e.values ?? []).join(",");
    if (e.operator === "In") parts.push(`${e.key} in (${vals})`);
    else if (e.operator === "NotIn") parts.push(`${e.key} notin (${vals})`);
    else if (e.operator === "Exists") parts.push(e.key);
    else if (e.operator === "DoesNotExist") parts.push(`!${e.key}`);
  }
  return parts.join(",");
}

/** JSON with object keys sorted, so two equal objects compare equal whatever their key order. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v && typeof v === "object") {
    return `{${
      Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
        .join(",")
    }}`;
  }
  return JSON.stringify(v) ?? "null";
}

/**
 * Why a pod update is refused, or undefined: as in Kubernetes, a pod's spec is immutable except for
 * container images, activeDeadlineSeconds, added tolerations and terminationGracePeriodSeconds; the
 * node is set once, through the binding subresource.
 */
function podSpecChange(before: KubeObject | undefined, after: KubeObject | undefined): string | undefined {
  const mask = (spec: KubeObject | undefined): KubeObject => {
    const m = structuredClone(spec ?? {});
    for (const list of ["containers", "initContainers"]) for (const c of m[list] ?? []) delete c.image;
    delete m.activeDeadlineSeconds;
    delete m.tolerations;
    delete m.terminationGracePeriodSeconds;
    return m;
  };
  const kept = (before?.tolerations ?? []).every((t: unknown) =>
    (after?.tolerations ?? []).some((u: unknown) => canonical(t) === canonical(u))
  );
  if (canonical(mask(before)) === canonical(mask(after)) && kept) return undefined;
  return "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";
}

function lowerBound(keys: string[], k: string): number {
  let lo = 0, hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (keys[mid]! < k) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Index of the first event with revision >= rev. */
function lowerBoundRev(events: StoreEvent[], rev: number): number {
  let lo = 0, hi = events.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (events[mid]!.revision < rev) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
