/**
 * The resources the lab API server serves, with what discovery and kubectl need to know about each:
 * group/version, kind, whether it is namespaced, short names and which subresources exist.
 */

export interface ResourceInfo {
  /** Plural name as used in URLs: `pods`. */
  plural: string;
  singular: string;
  kind: string;
  listKind: string;
  /** "" for the core group. */
  group: string;
  version: string;
  namespaced: boolean;
  shortNames: readonly string[];
  /** Subresources with their own endpoint (`pods/status`). */
  subresources: readonly string[];
  /** Whether a write to the main resource may change `.status` (false when a status subresource exists). */
  hasStatusSubresource: boolean;
  categories: readonly string[];
  /** The verbs served, when not every one (a review is only created, never stored). */
  verbs?: readonly string[];
}

function info(
  plural: string,
  kind: string,
  group: string,
  namespaced: boolean,
  shortNames: string[],
  status: boolean,
  categories: string[] = [],
  more: string[] = [],
): ResourceInfo {
  return {
    plural,
    singular: kind.toLowerCase(),
    kind,
    listKind: `${kind}List`,
    group,
    version: "v1",
    namespaced,
    shortNames,
    subresources: [...(status ? ["status"] : []), ...more],
    hasStatusSubresource: status,
    categories,
  };
}

export const RBAC_GROUP = "rbac.authorization.k8s.io";

/** Every served resource, by plural name. */
export const RESOURCES: ReadonlyMap<string, ResourceInfo> = new Map(
  [
    info("namespaces", "Namespace", "", false, ["ns"], true),
    info("nodes", "Node", "", false, ["no"], true),
    info("pods", "Pod", "", true, ["po"], true, ["all"]),
    info("services", "Service", "", true, ["svc"], true, ["all"]),
    info("endpointslices", "EndpointSlice", "discovery.k8s.io", true, [], false),
    info("networkpolicies", "NetworkPolicy", "networking.k8s.io", true, ["netpol"], false),
    info("serviceaccounts", "ServiceAccount", "", true, ["sa"], false, [], ["token"]),
    info("events", "Event", "", true, ["ev"], false),
    info("deployments", "Deployment", "apps", true, ["deploy"], true, ["all"], ["scale"]),
    info("replicasets", "ReplicaSet", "apps", true, ["rs"], true, ["all"], ["scale"]),
    info("daemonsets", "DaemonSet", "apps", true, ["ds"], true, ["all"]),
    info("roles", "Role", RBAC_GROUP, true, [], false),
    info("clusterroles", "ClusterRole", RBAC_GROUP, false, [], false),
    info("rolebindings", "RoleBinding", RBAC_GROUP, true, [], false),
    info("clusterrolebindings", "ClusterRoleBinding", RBAC_GROUP, false, [], false),
    {
      ...info(
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        "authorization.k8s.io",
        false,
        [],
        false,
      ),
      verbs: ["create"],
    },
  ].map((r) => [r.plural, r]),
);

/** `v1` or `group/v1`: the apiVersion objects of this resource carry. */
export function apiVersionOf(r: ResourceInfo): string {
  return r.group ? `${r.group}/${r.version}` : r.version;
}

/** Looks a resource up by its plural name; throws for an unknown one (a programming error in-process). */
export function resourceInfo(plural: string): ResourceInfo {
  const r = RESOURCES.get(plural);
  if (!r) throw new RangeError(`unknown resource ${plural}`);
  return r;
}

/** The resource served at `/api/v1` (group "") or `/apis/<group>/<version>`. */
export function findResource(group: string, version: string, plural: string): ResourceInfo | undefined {
  const r = RESOURCES.get(plural);
  return r && r.group === group && r.version === version ? r : undefined;
}
