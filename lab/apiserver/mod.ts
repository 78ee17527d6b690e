/**
 * @module
 * The lab's Kubernetes API server: an in-memory, etcd-like {@link Store} (revisions, history,
 * compaction, server-side defaults and validation) served over HTTPS with the real Kubernetes REST
 * protocol, so the agent's watch layer, kubectl v1.32 and the lab's controllers all talk to the same
 * thing. Shared by the unit tests (loopback, random port) and the lab (`main.ts` in the master's netns).
 */
export {
  type ApiServer,
  type ApiServerOptions,
  ensureKubernetesService,
  type KubeconfigOptions,
  startApiServer,
} from "./server.ts";
export {
  keyOf,
  type ListOptions,
  type ListResult,
  Store,
  type StoreOptions,
  type WatchEvent,
  type WatchOptions,
  type WriteOptions,
} from "./store.ts";
export type { KubeObject, ObjectMeta, StoreEvent, WatchEventType } from "./types.ts";
export {
  ApiError,
  isAlreadyExists,
  isConflict,
  isGone,
  isInvalid,
  isNotFound,
  type StatusCause,
  type StatusObject,
  type StatusReason,
} from "./errors.ts";
export { applyPatch, jsonMergePatch, jsonPatch, type PatchType, strategicMergePatch } from "./patch.ts";
export {
  fieldValue,
  objectMatches,
  parseFieldSelector,
  parseLabelSelector,
  type Selector,
} from "./selectors.ts";
export { apiVersionOf, type ResourceInfo, resourceInfo, RESOURCES } from "./resources.ts";
export { CertError, ensurePki, type Pki } from "./certs.ts";
