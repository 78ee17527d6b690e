/**
 * Authorization as kube-apiserver's RBAC authorizer decides it: a request is allowed when a rule of a
 * (Cluster)Role bound to the user — by a ClusterRoleBinding, or for a namespaced request by a RoleBinding
 * in that namespace — matches its verb, API group, resource (`pods`, `nodes/status`, `*\/scale`, `*`) and
 * name, or its path for a non-resource request (`/healthz`, `/apis/*`). Users in `system:masters` are
 * allowed everything (the lab's admin token and client certificate). A refusal is the 403 Status
 * kube-apiserver answers, word for word, with `RBAC: … not found` when a binding names a missing role.
 */
import { ApiError } from "./errors.ts";
import type { RequestInfo } from "./request_info.ts";
import { RBAC_GROUP } from "./resources.ts";
import type { Store } from "./store.ts";
import type { KubeObject } from "./types.ts";

/** Who a request is from, after authentication. */
export interface UserInfo {
  name: string;
  uid?: string;
  groups: readonly string[];
}

export const MASTERS_GROUP = "system:masters";

/** The lab's admin credentials (the static token and the client certificate). */
export const ADMIN_USER: UserInfo = { name: "admin", groups: [MASTERS_GROUP, "system:authenticated"] };

/** The user a service-account token authenticates as. */
export function serviceAccountUser(namespace: string, name: string, uid: string): UserInfo {
  return {
    name: `system:serviceaccount:${namespace}:${name}`,
    uid,
    groups: ["system:serviceaccounts", `system:serviceaccounts:${namespace}`, "system:authenticated"],
  };
}

export interface Decision {
  allowed: boolean;
  /** Why not, when a binding pointed at a role that does not exist (kube-apiserver's `RBAC: …`). */
  reason: string;
}

interface Rule {
  verbs?: string[];
  apiGroups?: string[];
  resources?: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
}

const has = (list: readonly string[] | undefined, v: string): boolean =>
  (list ?? []).some((x) => x === "*" || x === v);

/** Does one PolicyRule allow the request? (kube's RuleAllows) */
export function ruleAllows(rule: Rule, info: RequestInfo): boolean {
  if (!has(rule.verbs, info.verb)) return false;
  if (!info.resourceRequest) {
    return (rule.nonResourceURLs ?? []).some((u) =>
      u === "*" || u === info.path || (u.endsWith("*") && info.path.startsWith(u.slice(0, -1)))
    );
  }
  if (!has(rule.apiGroups, info.apiGroup)) return false;
  const sub = info.subresource;
  const combined = sub ? `${info.resource}/${sub}` : info.resource;
  const resourceOk = (rule.resources ?? []).some((r) =>
    r === "*" || r === combined || (sub && r === `*/${sub}`)
  );
  if (!resourceOk) return false;
  const names = rule.resourceNames ?? [];
  return names.length === 0 || (info.name !== undefined && names.includes(info.name));
}

function subjectMatches(s: KubeObject, user: UserInfo, bindingNamespace: string | undefined): boolean {
  switch (s?.kind) {
    case "User":
      return s.name === user.name;
    case "Group":
      return user.groups.includes(s.name);
    case "ServiceAccount": {
      const ns = s.namespace || bindingNamespace;
      return !!ns && user.name === `system:serviceaccount:${ns}:${s.name}`;
    }
  }
  return false;
}

/** The RBAC decision for one request. */
export function authorize(store: Store, user: UserInfo, info: RequestInfo): Decision {
  if (user.groups.includes(MASTERS_GROUP)) return { allowed: true, reason: "" };
  const errors: string[] = [];
  const rulesOf = (kind: string, name: string, namespace: string | undefined): Rule[] => {
    const role = kind === "ClusterRole"
      ? store.tryGet("clusterroles", name)
      : namespace
      ? store.tryGet("roles", `${namespace}/${name}`)
      : undefined;
    if (!role) {
      errors.push(`${kind.toLowerCase()}.${RBAC_GROUP} "${name}" not found`);
      return [];
    }
    return (role.rules ?? []) as Rule[];
  };
  const allowedBy = (binding: KubeObject, namespace: string | undefined): boolean => {
    if (!(binding.subjects ?? []).some((s: KubeObject) => subjectMatches(s, user, namespace))) return false;
    return rulesOf(binding.roleRef?.kind, binding.roleRef?.name, namespace).some((r) => ruleAllows(r, info));
  };
  for (const b of store.list("clusterrolebindings").items) {
    if (allowedBy(b, undefined)) return { allowed: true, reason: "" };
  }
  const ns = info.resourceRequest ? info.namespace : undefined;
  if (ns) {
    for (const b of store.list("rolebindings", { namespace: ns }).items) {
      if (allowedBy(b, ns)) return { allowed: true, reason: "" };
    }
  }
  return { allowed: false, reason: errors.length ? `RBAC: [${errors.join(", ")}]` : "" };
}

/** kube-apiserver's 403 for a refused request. */
export function forbidden(user: UserInfo, info: RequestInfo, reason: string): ApiError {
  const why = reason ? `: ${reason}` : "";
  if (!info.resourceRequest) {
    return new ApiError(
      403,
      "Forbidden",
      `forbidden: User "${user.name}" cannot ${info.verb} path "${info.path}"${why}`,
      {},
    );
  }
  const resource = info.subresource ? `${info.resource}/${info.subresource}` : info.resource;
  const scope = info.namespace ? `in the namespace "${info.namespace}"` : "at the cluster scope";
  const msg =
    `User "${user.name}" cannot ${info.verb} resource "${resource}" in API group "${info.apiGroup}" ${scope}`;
  const qualified = info.apiGroup ? `${resource}.${info.apiGroup}` : resource;
  const what = info.name ? `${qualified} "${info.name}"` : qualified;
  return new ApiError(403, "Forbidden", `${what} is forbidden: ${msg}${why}`, {
    ...(info.name ? { name: info.name } : {}),
    group: info.apiGroup,
    kind: resource,
  });
}

const DISCOVERY_URLS = [
  "/api",
  "/api/*",
  "/apis",
  "/apis/*",
  "/healthz",
  "/livez",
  "/openapi",
  "/openapi/*",
  "/readyz",
  "/version",
  "/version/",
];
const PUBLIC_INFO_URLS = ["/healthz", "/livez", "/readyz", "/version", "/version/"];

const bootstrapLabels = { "kubernetes.io/bootstrapping": "rbac-defaults" };
const clusterRole = (name: string, rules: Rule[]): KubeObject => ({
  metadata: {
    name,
    labels: bootstrapLabels,
    annotations: { "rbac.authorization.kubernetes.io/autoupdate": "true" },
  },
  rules,
});
const groupBinding = (name: string, role: string, groups: string[]): KubeObject => ({
  metadata: {
    name,
    labels: bootstrapLabels,
    annotations: { "rbac.authorization.kubernetes.io/autoupdate": "true" },
  },
  roleRef: { apiGroup: RBAC_GROUP, kind: "ClusterRole", name: role },
  subjects: groups.map((g) => ({ apiGroup: RBAC_GROUP, kind: "Group", name: g })),
});

/**
 * The part of kube-apiserver's bootstrap policy the lab needs: `cluster-admin` (bound to
 * system:masters), discovery and `kubectl auth can-i` (system:basic-user) for every authenticated
 * user, and the health and version endpoints for everyone. (The aggregated `admin`/`edit`/`view` roles
 * are not created.)
 */
export const BOOTSTRAP_POLICY: ReadonlyArray<{ resource: string; object: KubeObject }> = [
  {
    resource: "clusterroles",
    object: clusterRole("cluster-admin", [
      { apiGroups: ["*"], resources: ["*"], verbs: ["*"] },
      { nonResourceURLs: ["*"], verbs: ["*"] },
    ]),
  },
  {
    resource: "clusterroles",
    object: clusterRole("system:discovery", [{ nonResourceURLs: DISCOVERY_URLS, verbs: ["get"] }]),
  },
  {
    resource: "clusterroles",
    object: clusterRole("system:public-info-viewer", [{ nonResourceURLs: PUBLIC_INFO_URLS, verbs: ["get"] }]),
  },
  {
    resource: "clusterroles",
    object: clusterRole("system:basic-user", [{
      apiGroups: ["authorization.k8s.io"],
      resources: ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
      verbs: ["create"],
    }]),
  },
  {
    resource: "clusterrolebindings",
    object: groupBinding("cluster-admin", "cluster-admin", [MASTERS_GROUP]),
  },
  {
    resource: "clusterrolebindings",
    object: groupBinding("system:basic-user", "system:basic-user", ["system:authenticated"]),
  },
  {
    resource: "clusterrolebindings",
    object: groupBinding("system:discovery", "system:discovery", ["system:authenticated"]),
  },
  {
    resource: "clusterrolebindings",
    object: groupBinding("system:public-info-viewer", "system:public-info-viewer", [
      "system:authenticated",
      "system:unauthenticated",
    ]),
  },
];
