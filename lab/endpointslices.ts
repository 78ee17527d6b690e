/**
 * What the EndpointSlice controller computes, as a pure function: the slices a Service should have, given
 * the pods of its namespace. It follows kube-controller-manager's endpointslice controller closely enough
 * for a proxy to be tested against it: pods matching the Service selector that have an IP, conditions
 * ready/serving/terminating, named target ports resolved per pod (pods that resolve differently land in
 * different slices), at most 100 endpoints per slice, label kubernetes.io/service-name.
 */
import type { KObject } from "./kube_client.ts";

export const SERVICE_NAME_LABEL = "kubernetes.io/service-name";
export const MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by";
export const MANAGED_BY = "endpointslice-controller.k8s.io";
export const MAX_ENDPOINTS_PER_SLICE = 100;
/** Set on the slices of a headless Service (kube-controller-manager's `service.kubernetes.io/headless`). */
export const HEADLESS_LABEL = "service.kubernetes.io/headless";

/** The pod's address of one family (`IPv4`/`IPv6`) from status.podIPs, else status.podIP. */
export function podIpOf(pod: KObject, family: string): string | undefined {
  const ips: string[] = ((pod.status?.podIPs ?? []) as Array<{ ip?: string }>).map((p) => p.ip ?? "")
    .filter(Boolean);
  if (ips.length === 0 && typeof pod.status?.podIP === "string" && pod.status.podIP) {
    ips.push(pod.status.podIP);
  }
  return ips.find((ip) => (ip.includes(":") ? "IPv6" : "IPv4") === family);
}

export interface SlicePort {
  name: string;
  port: number;
  protocol: string;
}

/** Does `labels` satisfy the equality-based `selector` (a Service's spec.selector)? */
export function matchesSelector(
  selector: Record<string, string>,
  labels: Record<string, string> | undefined,
): boolean {
  for (const [k, v] of Object.entries(selector)) if (labels?.[k] !== v) return false;
  return true;
}

/** Is the pod's Ready condition True? */
export function podIsReady(pod: KObject): boolean {
  const conds = (pod.status?.conditions ?? []) as Array<{ type: string; status: string }>;
  return conds.some((c) => c.type === "Ready" && c.status === "True");
}

/** Resolves a Service port's targetPort against a pod's containers; undefined when a name is not found. */
export function resolveTargetPort(
  sp: { port: number; targetPort?: number | string; protocol?: string },
  pod: KObject,
): number | undefined {
  const t = sp.targetPort;
  if (t === undefined || t === "" || t === 0) return sp.port;
  if (typeof t === "number") return t;
  if (/^\d+$/.test(t)) return Number(t);
  const proto = sp.protocol ?? "TCP";
  for (
    const c of (pod.spec?.containers ?? []) as Array<
      { ports?: Array<{ name?: string; containerPort: number; protocol?: string }> }
    >
  ) {
    for (const p of c.ports ?? []) {
      if (p.name === t && (p.protocol ?? "TCP") === proto) return p.containerPort;
    }
  }
  return undefined;
}

function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(36).padStart(7, "0").slice(0, 7);
}

/**
 * The EndpointSlices `svc` should have. Returns undefined for Services the controller does not manage
 * (no selector, or type ExternalName), whose slices are someone else's.
 */
export function desiredEndpointSlices(svc: KObject, pods: KObject[]): KObject[] | undefined {
  const selector = svc.spec?.selector as Record<string, string> | undefined;
  if (!selector || Object.keys(selector).length === 0 || svc.spec?.type === "ExternalName") return undefined;
  const ns = svc.metadata.namespace ?? "default";
  const svcName = svc.metadata.name;
  const publishNotReady = svc.spec?.publishNotReadyAddresses === true;
  const svcPorts = (svc.spec?.ports ?? []) as Array<
    { name?: string; port: number; targetPort?: number | string; protocol?: string }
  >;

  // One set of slices per IP family of the Service (dual-stack Services get IPv4 and IPv6 slices).
  const families =
    ((svc.spec?.ipFamilies as string[] | undefined)?.length ? svc.spec.ipFamilies : ["IPv4"]) as string[];
  const groups = new Map<
    string,
    { family: string; ports: SlicePort[]; endpoints: Array<Record<string, unknown>> }
  >();
  const sorted = pods
    .filter((p) => (p.metadata.namespace ?? "default") === ns)
    .filter((p) => matchesSelector(selector, p.metadata.labels))
    .filter((p) => typeof p.status?.podIP === "string" && p.status.podIP !== "")
    .filter((p) => p.status?.phase !== "Succeeded" && p.status?.phase !== "Failed")
    .sort((a, b) => a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0);
  for (const pod of sorted) {
    const ports: SlicePort[] = [];
    for (const sp of svcPorts) {
      const target = resolveTargetPort(sp, pod);
      if (target === undefined) continue;
      ports.push({ name: sp.name ?? "", port: target, protocol: sp.protocol ?? "TCP" });
    }
    const terminating = typeof pod.metadata.deletionTimestamp === "string";
    const ready = podIsReady(pod);
    for (const family of families) {
      const ip = podIpOf(pod, family);
      if (!ip) continue;
      // Slice names stay what they were before dual-stack for IPv4.
      const key = JSON.stringify(ports) + (family === "IPv4" ? "" : `/${family}`);
      let g = groups.get(key);
      if (!g) groups.set(key, g = { family, ports, endpoints: [] });
      const ep: Record<string, unknown> = {
        addresses: [ip],
        conditions: {
          ready: publishNotReady || (ready && !terminating),
          serving: publishNotReady || ready,
          terminating,
        },
        targetRef: { kind: "Pod", namespace: ns, name: pod.metadata.name, uid: pod.metadata.uid ?? "" },
      };
      if (pod.spec?.nodeName) ep.nodeName = pod.spec.nodeName;
      g.endpoints.push(ep);
    }
  }

  // As kube-controller-manager: the Service's own labels, then the controller's (which win), and the
  // headless marker for a Service without a cluster IP.
  const labels: Record<string, string> = {
    ...(svc.metadata.labels ?? {}),
    [SERVICE_NAME_LABEL]: svcName,
    [MANAGED_BY_LABEL]: MANAGED_BY,
  };
  if (svc.spec?.clusterIP === "None") labels[HEADLESS_LABEL] = "";
  else delete labels[HEADLESS_LABEL];
  const base = (
    name: string,
    family: string,
    ports: SlicePort[],
    endpoints: Array<Record<string, unknown>>,
  ): KObject => ({
    apiVersion: "discovery.k8s.io/v1",
    kind: "EndpointSlice",
    metadata: {
      name,
      namespace: ns,
      labels: { ...labels },
      ownerReferences: [{
        apiVersion: "v1",
        kind: "Service",
        name: svcName,
        uid: svc.metadata.uid ?? "",
        controller: true,
        blockOwnerDeletion: true,
      }],
    },
    addressType: family,
    ports,
    endpoints,
  });

  const out: KObject[] = [];
  if (groups.size === 0) {
    for (const family of families) {
      out.push(base(`${svcName}-${fnv1a(family === "IPv4" ? "empty" : `empty/${family}`)}`, family, [], []));
    }
    return out;
  }
  for (const [key, g] of [...groups].sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0)) {
    for (let i = 0; i * MAX_ENDPOINTS_PER_SLICE < g.endpoints.length; i++) {
      const chunk = g.endpoints.slice(i * MAX_ENDPOINTS_PER_SLICE, (i + 1) * MAX_ENDPOINTS_PER_SLICE);
      out.push(base(`${svcName}-${fnv1a(key)}${i ? `-${i}` : ""}`, g.family, g.ports, chunk));
    }
  }
  return out;
}

/** JSON with object keys sorted, so equal content compares equal whatever order a server keeps. */
export function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(",")}]`;
  if (v && typeof v === "object") {
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) =>
      x !== undefined && x !== null
    )
      .sort(([a], [b]) => a < b ? -1 : a > b ? 1 : 0);
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

/** Do two slices carry the same content (ignoring server-set metadata)? */
export function sameSliceContent(a: KObject, b: KObject): boolean {
  const pick = (s: KObject) =>
    canonicalJson([
      s.addressType,
      s.ports ?? [],
      s.endpoints ?? [],
      s.metadata.labels ?? {},
    ]);
  return pick(a) === pick(b);
}
