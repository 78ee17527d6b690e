/**
 * Server-side defaults and validation for the served resources: what the real API server fills in
 * (Service clusterIP/nodePorts/protocols, Pod phase, the namespace name label) and the 422 Invalid
 * errors it answers for objects it refuses.
 */
import { type StatusCause } from "./errors.ts";
import type { ResourceInfo } from "./resources.ts";
import type { KubeObject } from "./types.ts";
import { labelSelectorMatches } from "./selectors.ts";

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const QUALIFIED_NAME =
  /^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

/** Names that must be DNS labels (they become DNS names or namespace names) rather than subdomains. */
const LABEL_NAMED = new Set(["namespaces", "services"]);

export function validateName(r: ResourceInfo, name: string): StatusCause[] {
  const causes: StatusCause[] = [];
  if (r.group === "rbac.authorization.k8s.io") {
    // RBAC names are path segments (`system:discovery`), as kube-apiserver's ValidateRBACName.
    if (name === "" || name === "." || name === ".." || /[/%]/.test(name)) {
      causes.push({
        field: "metadata.name",
        message: `Invalid value: "${name}": may not be '.' or '..' and may not contain '/' or '%'`,
      });
    }
    return causes;
  }
  const labelOnly = LABEL_NAMED.has(r.plural);
  const ok = labelOnly
    ? DNS1123_LABEL.test(name) && name.length <= 63
    : DNS1123_SUBDOMAIN.test(name) && name.length <= 253;
  if (!ok) {
    causes.push({
      field: "metadata.name",
      message: `Invalid value: "${name}": a lowercase RFC 1123 ${
        labelOnly ? "label" : "subdomain"
      } must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character`,
    });
  }
  return causes;
}

function validateMeta(obj: KubeObject): StatusCause[] {
  const causes: StatusCause[] = [];
  for (const [k, v] of Object.entries(obj.metadata?.labels ?? {})) {
    if (!QUALIFIED_NAME.test(k) || k.length > 316) {
      causes.push({
        field: "metadata.labels",
        message: `Invalid value: "${k}": name part must consist of alphanumeric characters, '-', '_' or '.'`,
      });
    }
    if (typeof v !== "string" || !LABEL_VALUE.test(v) || v.length > 63) {
      causes.push({
        field: "metadata.labels",
        message: `Invalid value: "${
          String(v)
        }": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.'`,
      });
    }
  }
  for (const [k, v] of Object.entries(obj.metadata?.annotations ?? {})) {
    if (!QUALIFIED_NAME.test(k)) {
      causes.push({
        field: "metadata.annotations",
        message: `Invalid value: "${k}": name part must consist of alphanumeric characters, '-', '_' or '.'`,
      });
    }
    if (typeof v !== "string") {
      causes.push({ field: `metadata.annotations[${k}]`, message: "Invalid value: must be a string" });
    }
  }
  return causes;
}

const PROTOCOLS = new Set(["TCP", "UDP", "SCTP"]);

function validatePort(n: unknown, field: string, causes: StatusCause[], allowZero = false): void {
  if (typeof n !== "number" || !Number.isInteger(n) || n < (allowZero ? 0 : 1) || n > 65535) {
    causes.push({
      field,
      message: `Invalid value: ${JSON.stringify(n)}: must be between 1 and 65535, inclusive`,
    });
  }
}

/** Spec checks per resource; only what would break a consumer (the watch layer, the lab's controllers). */
function validateSpec(r: ResourceInfo, obj: KubeObject): StatusCause[] {
  const causes: StatusCause[] = [];
  switch (r.plural) {
    case "pods": {
      const containers = obj.spec?.containers;
      if (!Array.isArray(containers) || containers.length === 0) {
        causes.push({ field: "spec.containers", reason: "FieldValueRequired", message: "Required value" });
      } else {
        containers.forEach((c: KubeObject, i: number) => {
          if (typeof c?.name !== "string" || !DNS1123_LABEL.test(c.name)) {
            causes.push({
              field: `spec.containers[${i}].name`,
              message: `Invalid value: ${JSON.stringify(c?.name)}`,
            });
          }
          if (typeof c?.image !== "string" || c.image === "") {
            causes.push({
              field: `spec.containers[${i}].image`,
              reason: "FieldValueRequired",
              message: "Required value",
            });
          }
          (c?.ports ?? []).forEach((p: KubeObject, j: number) =>
            validatePort(p?.containerPort, `spec.containers[${i}].ports[${j}].containerPort`, causes)
          );
        });
      }
      break;
    }
    case "services": {
      const spec = obj.spec ?? {};
      const type = spec.type ?? "ClusterIP";
      if (!["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].includes(type)) {
        causes.push({
          field: "spec.type",
          reason: "FieldValueNotSupported",
          message: `Unsupported value: "${type}"`,
        });
      }
      const ports = spec.ports ?? [];
      if (!Array.isArray(ports)) {
        causes.push({ field: "spec.ports", message: "Invalid value: must be a list" });
      } else {
        if (ports.length === 0 && type !== "ExternalName" && spec.clusterIP !== "None") {
          causes.push({ field: "spec.ports", reason: "FieldValueRequired", message: "Required value" });
        }
        const seen = new Set<string>();
        ports.forEach((p: KubeObject, i: number) => {
          validatePort(p?.port, `spec.ports[${i}].port`, causes);
          if (p?.protocol !== undefined && !PROTOCOLS.has(p.protocol)) {
            causes.push({
              field: `spec.ports[${i}].protocol`,
              reason: "FieldValueNotSupported",
              message: `Unsupported value: "${p.protocol}"`,
            });
          }
          if (ports.length > 1 && !p?.name) {
            causes.push({
              field: `spec.ports[${i}].name`,
              reason: "FieldValueRequired",
              message: "Required value",
            });
          }
          const k = `${p?.port}/${p?.protocol ?? "TCP"}`;
          if (seen.has(k)) {
            causes.push({
              field: `spec.ports[${i}]`,
              reason: "FieldValueDuplicate",
              message: `Duplicate value: ${k}`,
            });
          }
          seen.add(k);
          if (p?.nodePort !== undefined && p.nodePort !== 0) {
            validatePort(p.nodePort, `spec.ports[${i}].nodePort`, causes);
          }
        });
      }
      if (!["None", "ClientIP"].includes(spec.sessionAffinity)) {
        causes.push({
          field: "spec.sessionAffinity",
          reason: "FieldValueNotSupported",
          message: `Unsupported value: "${spec.sessionAffinity}": supported values: "ClientIP", "None"`,
        });
      } else if (spec.sessionAffinity === "None" && spec.sessionAffinityConfig) {
        causes.push({
          field: "spec.sessionAffinityConfig",
          reason: "FieldValueForbidden",
          message: "Forbidden: must not be set when `sessionAffinity` is None",
        });
      } else if (spec.sessionAffinity === "ClientIP") {
        const t = spec.sessionAffinityConfig?.clientIP?.timeoutSeconds;
        if (!Number.isInteger(t) || t <= 0 || t > 86400) {
          causes.push({
            field: "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            message: `Invalid value: ${JSON.stringify(t)}: must be greater than 0 and less than 86400`,
          });
        }
      }
      for (
        const [field, value, allowed] of [
          ["externalTrafficPolicy", spec.externalTrafficPolicy, ["Cluster", "Local"]],
          ["internalTrafficPolicy", spec.internalTrafficPolicy, ["Cluster", "Local"]],
        ] as const
      ) {
        if (value !== undefined && !(allowed as readonly string[]).includes(value)) {
          causes.push({
            field: `spec.${field}`,
            reason: "FieldValueNotSupported",
            message: `Unsupported value: "${value}": supported values: "Cluster", "Local"`,
          });
        }
      }
      break;
    }
    case "endpointslices": {
      if (!["IPv4", "IPv6", "FQDN"].includes(obj.addressType)) {
        causes.push({
          field: "addressType",
          reason: "FieldValueNotSupported",
          message: `Unsupported value: ${JSON.stringify(obj.addressType)}`,
        });
      }
      if (obj.endpoints !== undefined && obj.endpoints !== null && !Array.isArray(obj.endpoints)) {
        causes.push({ field: "endpoints", message: "Invalid value: must be a list" });
      }
      (obj.endpoints ?? []).forEach((e: KubeObject, i: number) => {
        if (!Array.isArray(e?.addresses) || e.addresses.length === 0) {
          causes.push({
            field: `endpoints[${i}].addresses`,
            reason: "FieldValueRequired",
            message: "Required value",
          });
        }
      });
      break;
    }
    case "deployments":
    case "replicasets":
    case "daemonsets":
      validateWorkload(obj, causes);
      break;
    case "roles":
    case "clusterroles":
      (obj.rules ?? []).forEach((rule: KubeObject, i: number) => {
        if (!Array.isArray(rule?.verbs) || rule.verbs.length === 0) {
          causes.push({
            field: `rules[${i}].verbs`,
            reason: "FieldValueRequired",
            message: "Required value",
          });
        }
        const resourceRule = Array.isArray(rule?.resources) && rule.resources.length > 0;
        const urlRule = Array.isArray(rule?.nonResourceURLs) && rule.nonResourceURLs.length > 0;
        if (resourceRule && urlRule) {
          causes.push({
            field: `rules[${i}].nonResourceURLs`,
            message: "Invalid value: rules cannot apply to both regular resources and non-resource URLs",
          });
        }
        if (urlRule && r.plural === "roles") {
          causes.push({
            field: `rules[${i}].nonResourceURLs`,
            message: "Invalid value: namespaced rules cannot apply to non-resource URLs",
          });
        }
        if (resourceRule && !Array.isArray(rule?.apiGroups)) {
          causes.push({
            field: `rules[${i}].apiGroups`,
            reason: "FieldValueRequired",
            message: "Required value: resource rules must supply at least one api group",
          });
        }
      });
      break;
    case "rolebindings":
    case "clusterrolebindings": {
      const ref = obj.roleRef;
      const kinds = r.plural === "rolebindings" ? ["Role", "ClusterRole"] : ["ClusterRole"];
      if (!ref?.name) {
        causes.push({ field: "roleRef.name", reason: "FieldValueRequired", message: "Required value" });
      }
      if (!kinds.includes(ref?.kind)) {
        causes.push({
          field: "roleRef.kind",
          reason: "FieldValueNotSupported",
          message: `Unsupported value: "${ref?.kind ?? ""}": supported values: ${
            kinds.map((k) => `"${k}"`).join(", ")
          }`,
        });
      }
      (obj.subjects ?? []).forEach((s: KubeObject, i: number) => {
        if (!["ServiceAccount", "User", "Group"].includes(String(s?.kind))) {
          causes.push({
            field: `subjects[${i}].kind`,
            reason: "FieldValueNotSupported",
            message: `Unsupported value: "${
              s?.kind ?? ""
            }": supported values: "Group", "ServiceAccount", "User"`,
          });
        }
        if (!s?.name) {
          causes.push({
            field: `subjects[${i}].name`,
            reason: "FieldValueRequired",
            message: "Required value",
          });
        }
        if (s?.kind === "ServiceAccount" && r.plural === "clusterrolebindings" && !s.namespace) {
          causes.push({
            field: `subjects[${i}].namespace`,
            reason: "FieldValueRequired",
            message: "Required value",
          });
        }
      });
      break;
    }
    case "networkpolicies": {
      if (obj.spec?.podSelector === undefined || obj.spec?.podSelector === null) {
        causes.push({ field: "spec.podSelector", reason: "FieldValueRequired", message: "Required value" });
      }
      for (const t of obj.spec?.policyTypes ?? []) {
        if (t !== "Ingress" && t !== "Egress") {
          causes.push({
            field: "spec.policyTypes",
            reason: "FieldValueNotSupported",
            message: `Unsupported value: "${t}"`,
          });
        }
      }
      break;
    }
  }
  return causes;
}

/** A Deployment's, ReplicaSet's or DaemonSet's selector and template, as apps/v1 validation checks them. */
function validateWorkload(obj: KubeObject, causes: StatusCause[]): void {
  const sel = obj.spec?.selector;
  const empty = !sel ||
    (Object.keys(sel.matchLabels ?? {}).length === 0 && (sel.matchExpressions ?? []).length === 0);
  if (empty) {
    causes.push({ field: "spec.selector", reason: "FieldValueRequired", message: "Required value" });
  } else if (!labelSelectorMatches(sel, obj.spec?.template?.metadata?.labels)) {
    causes.push({
      field: "spec.template.metadata.labels",
      message: `Invalid value: ${
        JSON.stringify(obj.spec?.template?.metadata?.labels ?? {})
      }: \`selector\` does not match template \`labels\``,
    });
  }
  const replicas = obj.spec?.replicas;
  if (replicas !== undefined && (!Number.isInteger(replicas) || replicas < 0)) {
    causes.push({
      field: "spec.replicas",
      message: `Invalid value: ${JSON.stringify(replicas)}: must be greater than or equal to 0`,
    });
  }
  const containers = obj.spec?.template?.spec?.containers;
  if (!Array.isArray(containers) || containers.length === 0) {
    causes.push({
      field: "spec.template.spec.containers",
      reason: "FieldValueRequired",
      message: "Required value",
    });
  } else {
    containers.forEach((c: KubeObject, i: number) => {
      if (typeof c?.name !== "string" || !DNS1123_LABEL.test(c.name)) {
        causes.push({
          field: `spec.template.spec.containers[${i}].name`,
          message: `Invalid value: ${JSON.stringify(c?.name)}`,
        });
      }
      if (typeof c?.image !== "string" || c.image === "") {
        causes.push({
          field: `spec.template.spec.containers[${i}].image`,
          reason: "FieldValueRequired",
          message: "Required value",
        });
      }
    });
  }
  const restart = obj.spec?.template?.spec?.restartPolicy;
  if (restart !== undefined && restart !== "Always") {
    causes.push({
      field: "spec.template.spec.restartPolicy",
      reason: "FieldValueNotSupported",
      message: `Unsupported value: "${restart}": supported values: "Always"`,
    });
  }
}

/** Everything wrong with an object about to be stored (empty when it is fine). */
export function validate(r: ResourceInfo, obj: KubeObject): StatusCause[] {
  return [...validateName(r, obj.metadata?.name ?? ""), ...validateMeta(obj), ...validateSpec(r, obj)];
}

/** The pod spec defaults kube-apiserver fills in, for pods and for the pod templates of workloads. */
function podSpecDefaults(spec: KubeObject | undefined): void {
  if (!spec || typeof spec !== "object") return;
  spec.restartPolicy ??= "Always";
  spec.dnsPolicy ??= "ClusterFirst";
  spec.terminationGracePeriodSeconds ??= 30;
  spec.schedulerName ??= "default-scheduler";
  spec.securityContext ??= {};
  for (const c of [...(spec.containers ?? []), ...(spec.initContainers ?? [])]) {
    if (!c || typeof c !== "object") continue;
    for (const p of c.ports ?? []) p.protocol ??= "TCP";
    c.imagePullPolicy ??= c.image?.endsWith(":latest") || !String(c.image ?? "").includes(":")
      ? "Always"
      : "IfNotPresent";
    c.terminationMessagePath ??= "/dev/termination-log";
    c.terminationMessagePolicy ??= "File";
    c.resources ??= {};
  }
}

/** Defaults that need no allocation; the store allocates clusterIPs and nodePorts itself. */
export function applyStaticDefaults(r: ResourceInfo, obj: KubeObject): void {
  switch (r.plural) {
    case "namespaces":
      obj.metadata!.labels = { ...obj.metadata!.labels, "kubernetes.io/metadata.name": obj.metadata!.name! };
      obj.spec ??= { finalizers: ["kubernetes"] };
      obj.status = { phase: "Active", ...obj.status };
      break;
    case "pods":
      podSpecDefaults(obj.spec);
      // kube-apiserver's ServiceAccount admission: every pod runs as an account, `default` unless named.
      if (obj.spec && typeof obj.spec === "object") {
        obj.spec.serviceAccountName ||= obj.spec.serviceAccount || "default";
        obj.spec.serviceAccount = obj.spec.serviceAccountName;
      }
      obj.status ??= {};
      obj.status.phase ??= "Pending";
      break;
    case "deployments": {
      const spec = obj.spec ??= {};
      spec.replicas ??= 1;
      spec.strategy ??= {};
      spec.strategy.type ??= "RollingUpdate";
      if (spec.strategy.type === "RollingUpdate") {
        spec.strategy.rollingUpdate ??= {};
        spec.strategy.rollingUpdate.maxUnavailable ??= "25%";
        spec.strategy.rollingUpdate.maxSurge ??= "25%";
      }
      spec.revisionHistoryLimit ??= 10;
      spec.progressDeadlineSeconds ??= 600;
      podSpecDefaults((spec.template ??= {}).spec);
      break;
    }
    case "replicasets":
      obj.spec ??= {};
      obj.spec.replicas ??= 1;
      podSpecDefaults((obj.spec.template ??= {}).spec);
      break;
    case "daemonsets": {
      const spec = obj.spec ??= {};
      spec.updateStrategy ??= {};
      spec.updateStrategy.type ??= "RollingUpdate";
      if (spec.updateStrategy.type === "RollingUpdate") {
        spec.updateStrategy.rollingUpdate ??= {};
        spec.updateStrategy.rollingUpdate.maxUnavailable ??= 1;
        spec.updateStrategy.rollingUpdate.maxSurge ??= 0;
      }
      spec.revisionHistoryLimit ??= 10;
      podSpecDefaults((spec.template ??= {}).spec);
      break;
    }
    case "clusterrolebindings":
    case "rolebindings":
      for (const s of obj.subjects ?? []) {
        if (s?.kind === "ServiceAccount") s.apiGroup ??= "";
        else if (s?.kind === "User" || s?.kind === "Group") s.apiGroup ??= "rbac.authorization.k8s.io";
      }
      break;
    case "services": {
      const spec = (obj.spec ??= {});
      spec.type ??= "ClusterIP";
      spec.sessionAffinity ??= "None";
      for (const p of spec.ports ?? []) {
        p.protocol ??= "TCP";
        if (spec.type !== "ExternalName") p.targetPort ??= p.port;
      }
      // IP families and policy are decided with the cluster IPs (service_allocator.ts).
      if (spec.type !== "ExternalName") spec.internalTrafficPolicy ??= "Cluster";
      if (spec.type === "NodePort" || spec.type === "LoadBalancer") spec.externalTrafficPolicy ??= "Cluster";
      if (spec.type === "LoadBalancer") spec.allocateLoadBalancerNodePorts ??= true;
      if (spec.sessionAffinity === "ClientIP") {
        // kube-apiserver's DefaultClientIPServiceAffinitySeconds: three hours.
        const cfg = spec.sessionAffinityConfig ??= {};
        cfg.clientIP ??= {};
        cfg.clientIP.timeoutSeconds ??= 10800;
      }
      obj.status ??= { loadBalancer: {} };
      break;
    }
    case "networkpolicies":
      obj.spec.policyTypes ??= obj.spec.egress ? ["Ingress", "Egress"] : ["Ingress"];
      for (const rule of [...(obj.spec.ingress ?? []), ...(obj.spec.egress ?? [])]) {
        for (const p of rule?.ports ?? []) p.protocol ??= "TCP";
      }
      break;
    case "endpointslices":
      for (const p of obj.ports ?? []) p.protocol ??= "TCP";
      obj.endpoints ??= [];
      break;
  }
}
