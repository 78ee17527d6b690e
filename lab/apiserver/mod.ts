/**
 * @module
 * The lab's Kubernetes API server: an in-memory, etcd-like {@link Store} (revisions, history,
 * compaction, server-side defaults and validation) served over HTTPS with the real Kubernetes REST
 * protocol, so the agent's watch layer, kubectl v1.32 and the lab's controllers all talk to the same
 * thing. Shared by the unit tests (loopback, random port) and the lab (`main.ts` in the master's netns).
 *
 * Served: namespaces, nodes, pods (+ status, binding), services (+ status), serviceaccounts,
 * discovery.k8s.io/v1 endpointslices, networking.k8s.io/v1 networkpolicies, apps/v1 deployments and
 * replicasets (+ status, scale), daemonsets (+ status), rbac.authorization.k8s.io/v1 roles, clusterroles
 * and their bindings (enforced for service-account tokens and impersonated users, `kubectl auth can-i`
 * through authorization.k8s.io/v1 selfsubjectaccessreviews); discovery, `/version`, Table output for
 * `kubectl get`. Services are defaulted and
 * allocated as kube-apiserver does (dual-stack families, cluster IPs, node ports, health check ports:
 * service_allocator.ts); namespace deletion waits for terminating pods. Bodies in JSON, or in protobuf for
 * the kinds kubectl's typed clients send that way. Where it knowingly differs from kube-apiserver: no
 * server-side apply (415), no dryRun (400), OpenAPI v3 only tells kubectl that writes take
 * `fieldValidation` (field_validation.ts: unknown fields refused, warned about or dropped as kube-apiserver
 * does) and v2 is an empty document, status given at create is kept, continue tokens page over the
 * current state rather than a snapshot.
 */
export {
  type ApiServer,
  type ApiServerOptions,
  ensureKubernetesService,
  type KubeconfigOptions,
  type MintedToken,
  startApiServer,
  type TokenOptions,
} from "./server.ts";
export {
  ADMIN_USER,
  authorize,
  BOOTSTRAP_POLICY,
  type Decision,
  forbidden,
  MASTERS_GROUP,
  ruleAllows,
  serviceAccountUser,
  type UserInfo,
} from "./rbac.ts";
export { type BoundObject, type MintOptions, TOKEN_ISSUER, type TokenClaims, TokenIssuer } from "./tokens.ts";
export {
  type DeleteOptions,
  keyOf,
  type ListOptions,
  type ListResult,
  selectorString,
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
  type LabelSelector,
  labelSelectorMatches,
  objectMatches,
  parseFieldSelector,
  parseLabelSelector,
  type Selector,
} from "./selectors.ts";
export { apiVersionOf, RBAC_GROUP, type ResourceInfo, resourceInfo, RESOURCES } from "./resources.ts";
export { type IpFamily, ServiceAllocator, type ServiceAllocatorOptions } from "./service_allocator.ts";
export {
  type NonResourceRequest,
  type RequestInfo,
  requestInfo,
  type ResourceRequest,
} from "./request_info.ts";
export { CertError, ensurePki, type Pki } from "./certs.ts";
