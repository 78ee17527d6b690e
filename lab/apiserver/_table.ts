/**
 * Server-side printing: the `meta.k8s.io/v1` Table that `kubectl get` asks for (Accept `as=Table`), with
 * the columns kube-apiserver prints for these resources (`kubectl get pods -o wide` shows READY, STATUS,
 * IP, NODE...). Without it kubectl falls back to NAME and AGE only.
 */
import type { ResourceInfo } from "./resources.ts";
import type { KubeObject } from "./types.ts";

interface Column {
  name: string;
  type: "string" | "integer";
  format?: string;
  priority: number;
  cell: (o: KubeObject, now: number) => string | number;
}

/** kubectl's short human durations: 45s, 5m12s, 17m, 3h4m, 30h, 4d2h, 120d, 3y. */
export function humanDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 120) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 10) return s % 60 ? `${m}m${s % 60}s` : `${m}m`;
  if (m < 180) return `${m}m`;
  const h = Math.floor(m / 60);
  if (h < 8) return m % 60 ? `${h}h${m % 60}m` : `${h}h`;
  if (h < 48) return `${h}h`;
  const d = Math.floor(h / 24);
  if (d < 8) return h % 24 ? `${d}d${h % 24}h` : `${d}d`;
  if (d < 365 * 2) return `${d}d`;
  return `${Math.floor(d / 365)}y`;
}

const name: Column = {
  name: "Name",
  type: "string",
  format: "name",
  priority: 0,
  cell: (o) => o.metadata?.name ?? "",
};
const age: Column = {
  name: "Age",
  type: "string",
  priority: 0,
  cell: (o, now) => {
    const t = Date.parse(o.metadata?.creationTimestamp ?? "");
    return Number.isNaN(t) ? "<unknown>" : humanDuration(now - t);
  },
};

function selectorText(sel: Record<string, string> | undefined): string {
  const entries = Object.entries(sel ?? {});
  return entries.length ? entries.map(([k, v]) => `${k}=${v}`).join(",") : "<none>";
}

function labelSelectorText(sel: KubeObject | undefined): string {
  const parts = Object.entries(sel?.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
  for (const e of sel?.matchExpressions ?? []) {
    parts.push(
      e.operator === "Exists"
        ? e.key
        : e.operator === "DoesNotExist"
        ? `!${e.key}`
        : `${e.key} ${String(e.operator).toLowerCase()} (${(e.values ?? []).join(",")})`,
    );
  }
  return parts.length ? parts.join(",") : "<none>";
}

function podStatus(o: KubeObject): string {
  if (o.metadata?.deletionTimestamp) return "Terminating";
  for (const c of o.status?.containerStatuses ?? []) {
    const reason = c.state?.waiting?.reason ?? c.state?.terminated?.reason;
    if (reason) return reason;
  }
  return o.status?.reason ?? o.status?.phase ?? "Unknown";
}

function servicePorts(o: KubeObject): string {
  const ports: KubeObject[] = o.spec?.ports ?? [];
  if (!ports.length) return "<none>";
  return ports.map((p) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ""}/${p.protocol ?? "TCP"}`).join(",");
}

function externalIp(o: KubeObject): string {
  const ingress = (o.status?.loadBalancer?.ingress ?? []).map((i: KubeObject) => i.ip ?? i.hostname).filter(
    Boolean,
  );
  const ips = [...(o.spec?.externalIPs ?? []), ...ingress];
  if (ips.length) return ips.join(",");
  if (o.spec?.type === "LoadBalancer") return "<pending>";
  if (o.spec?.type === "ExternalName") return o.spec.externalName ?? "<none>";
  return "<none>";
}

function nodeAddress(o: KubeObject, type: string): string {
  return (o.status?.addresses ?? []).find((a: KubeObject) => a.type === type)?.address ?? "<none>";
}

const int = (title: string, cell: (o: KubeObject) => number, priority = 0): Column => ({
  name: title,
  type: "integer",
  priority,
  cell,
});
const text = (title: string, cell: (o: KubeObject) => string, priority = 0): Column => ({
  name: title,
  type: "string",
  priority,
  cell,
});
const containerNames = text(
  "Containers",
  (o) => (o.spec?.template?.spec?.containers ?? []).map((c: KubeObject) => c.name).join(","),
  1,
);
const images = text(
  "Images",
  (o) => (o.spec?.template?.spec?.containers ?? []).map((c: KubeObject) => c.image).join(","),
  1,
);
const workloadSelector = text("Selector", (o) => labelSelectorText(o.spec?.selector), 1);
const subjectsOf = (kind: string) => (o: KubeObject) =>
  (o.subjects ?? []).filter((s: KubeObject) => s.kind === kind).map((s: KubeObject) =>
    kind === "ServiceAccount" ? `${s.namespace ?? ""}/${s.name}` : s.name
  ).join(", ");
const bindingColumns: Column[] = [
  name,
  text("Role", (o) => `${o.roleRef?.kind ?? ""}/${o.roleRef?.name ?? ""}`),
  age,
  text("Users", subjectsOf("User"), 1),
  text("Groups", subjectsOf("Group"), 1),
  text("ServiceAccounts", subjectsOf("ServiceAccount"), 1),
];

const COLUMNS: Record<string, Column[]> = {
  deployments: [
    name,
    text("Ready", (o) => `${o.status?.readyReplicas ?? 0}/${o.spec?.replicas ?? 0}`),
    int("Up-to-date", (o) => o.status?.updatedReplicas ?? 0),
    int("Available", (o) => o.status?.availableReplicas ?? 0),
    age,
    containerNames,
    images,
    workloadSelector,
  ],
  replicasets: [
    name,
    int("Desired", (o) => o.spec?.replicas ?? 0),
    int("Current", (o) => o.status?.replicas ?? 0),
    int("Ready", (o) => o.status?.readyReplicas ?? 0),
    age,
    containerNames,
    images,
    workloadSelector,
  ],
  daemonsets: [
    name,
    int("Desired", (o) => o.status?.desiredNumberScheduled ?? 0),
    int("Current", (o) => o.status?.currentNumberScheduled ?? 0),
    int("Ready", (o) => o.status?.numberReady ?? 0),
    int("Up-to-date", (o) => o.status?.updatedNumberScheduled ?? 0),
    int("Available", (o) => o.status?.numberAvailable ?? 0),
    text("Node Selector", (o) => selectorText(o.spec?.template?.spec?.nodeSelector)),
    age,
    containerNames,
    images,
    workloadSelector,
  ],
  serviceaccounts: [name, int("Secrets", (o) => (o.secrets ?? []).length), age],
  rolebindings: bindingColumns,
  clusterrolebindings: bindingColumns,
  roles: [name, text("Created At", (o) => o.metadata?.creationTimestamp ?? "")],
  clusterroles: [name, text("Created At", (o) => o.metadata?.creationTimestamp ?? "")],
  pods: [
    name,
    {
      name: "Ready",
      type: "string",
      priority: 0,
      cell: (o) => {
        const total = (o.spec?.containers ?? []).length;
        const ready = (o.status?.containerStatuses ?? []).filter((c: KubeObject) => c.ready).length;
        return `${ready}/${total}`;
      },
    },
    { name: "Status", type: "string", priority: 0, cell: podStatus },
    {
      name: "Restarts",
      type: "string",
      priority: 0,
      cell: (o) =>
        String(
          (o.status?.containerStatuses ?? []).reduce(
            (n: number, c: KubeObject) => n + (c.restartCount ?? 0),
            0,
          ),
        ),
    },
    age,
    { name: "IP", type: "string", priority: 1, cell: (o) => o.status?.podIP ?? "<none>" },
    { name: "Node", type: "string", priority: 1, cell: (o) => o.spec?.nodeName ?? "<none>" },
    {
      name: "Nominated Node",
      type: "string",
      priority: 1,
      cell: (o) => o.status?.nominatedNodeName ?? "<none>",
    },
    {
      name: "Readiness Gates",
      type: "string",
      priority: 1,
      cell: (o) => (o.spec?.readinessGates?.length ? String(o.spec.readinessGates.length) : "<none>"),
    },
  ],
  services: [
    name,
    { name: "Type", type: "string", priority: 0, cell: (o) => o.spec?.type ?? "ClusterIP" },
    { name: "Cluster-IP", type: "string", priority: 0, cell: (o) => o.spec?.clusterIP ?? "<none>" },
    { name: "External-IP", type: "string", priority: 0, cell: externalIp },
    { name: "Port(s)", type: "string", priority: 0, cell: servicePorts },
    age,
    { name: "Selector", type: "string", priority: 1, cell: (o) => selectorText(o.spec?.selector) },
  ],
  nodes: [
    name,
    {
      name: "Status",
      type: "string",
      priority: 0,
      cell: (o) => {
        const ready = (o.status?.conditions ?? []).find((c: KubeObject) => c.type === "Ready");
        const s = ready?.status === "True" ? "Ready" : ready ? "NotReady" : "Unknown";
        return o.spec?.unschedulable ? `${s},SchedulingDisabled` : s;
      },
    },
    {
      name: "Roles",
      type: "string",
      priority: 0,
      cell: (o) => {
        const roles = Object.keys(o.metadata?.labels ?? {}).filter((k) =>
          k.startsWith("node-role.kubernetes.io/")
        ).map((k) => k.slice(24));
        return roles.length ? roles.sort().join(",") : "<none>";
      },
    },
    age,
    { name: "Version", type: "string", priority: 0, cell: (o) => o.status?.nodeInfo?.kubeletVersion ?? "" },
    { name: "Internal-IP", type: "string", priority: 1, cell: (o) => nodeAddress(o, "InternalIP") },
    { name: "External-IP", type: "string", priority: 1, cell: (o) => nodeAddress(o, "ExternalIP") },
    {
      name: "OS-Image",
      type: "string",
      priority: 1,
      cell: (o) => o.status?.nodeInfo?.osImage ?? "<unknown>",
    },
    {
      name: "Kernel-Version",
      type: "string",
      priority: 1,
      cell: (o) => o.status?.nodeInfo?.kernelVersion ?? "<unknown>",
    },
    {
      name: "Container-Runtime",
      type: "string",
      priority: 1,
      cell: (o) => o.status?.nodeInfo?.containerRuntimeVersion ?? "<unknown>",
    },
  ],
  namespaces: [name, {
    name: "Status",
    type: "string",
    priority: 0,
    cell: (o) => o.status?.phase ?? "Active",
  }, age],
  endpointslices: [
    name,
    { name: "AddressType", type: "string", priority: 0, cell: (o) => o.addressType ?? "" },
    {
      name: "Ports",
      type: "string",
      priority: 0,
      cell: (
        o,
      ) => (o.ports?.length
        ? o.ports.map((p: KubeObject) => String(p.port ?? "<unset>")).join(",")
        : "<unset>"),
    },
    {
      name: "Endpoints",
      type: "string",
      priority: 0,
      cell: (o) => {
        const addrs: string[] = (o.endpoints ?? []).flatMap((e: KubeObject) => e.addresses ?? []);
        if (!addrs.length) return "<unset>";
        return addrs.length > 3
          ? `${addrs.slice(0, 3).join(",")} + ${addrs.length - 3} more...`
          : addrs.join(",");
      },
    },
    age,
  ],
  events: [
    {
      name: "Last Seen",
      type: "string",
      priority: 0,
      cell: (o, now) => {
        const last = Date.parse(o.lastTimestamp ?? o.eventTime ?? "");
        const first = Date.parse(o.firstTimestamp ?? "");
        const seen = Number.isNaN(last) ? "<unknown>" : humanDuration(now - last);
        return (o.count ?? 1) > 1 && !Number.isNaN(first)
          ? `${seen} (x${o.count} over ${humanDuration(now - first)})`
          : seen;
      },
    },
    { name: "Type", type: "string", priority: 0, cell: (o) => o.type ?? "" },
    { name: "Reason", type: "string", priority: 0, cell: (o) => o.reason ?? "" },
    {
      name: "Object",
      type: "string",
      priority: 0,
      cell: (o) => `${String(o.involvedObject?.kind ?? "").toLowerCase()}/${o.involvedObject?.name ?? ""}`,
    },
    { name: "Subobject", type: "string", priority: 1, cell: (o) => o.involvedObject?.fieldPath ?? "" },
    {
      name: "Source",
      type: "string",
      priority: 1,
      cell: (o) => [o.source?.component, o.source?.host].filter(Boolean).join(", "),
    },
    { name: "Message", type: "string", priority: 0, cell: (o) => o.message ?? "" },
    {
      name: "First Seen",
      type: "string",
      priority: 1,
      cell: (o, now) => humanDuration(now - Date.parse(o.firstTimestamp ?? "")),
    },
    { name: "Count", type: "string", priority: 1, cell: (o) => String(o.count ?? 1) },
    { ...name, priority: 1 },
  ],
  networkpolicies: [name, {
    name: "Pod-Selector",
    type: "string",
    priority: 0,
    cell: (o) => labelSelectorText(o.spec?.podSelector),
  }, age],
};

/** Whether an Accept header asks for a Table (kubectl get does, with JSON as fallback). */
export function wantsTable(accept: string | undefined): boolean {
  return /as=Table/.test(accept ?? "") && /g=meta\.k8s\.io/.test(accept ?? "");
}

function rowObject(o: KubeObject, includeObject: string | null): KubeObject {
  if (includeObject === "Object") return o;
  if (includeObject === "None") return {};
  return { kind: "PartialObjectMetadata", apiVersion: "meta.k8s.io/v1", metadata: o.metadata ?? {} };
}

/** A Table of these objects (one row each) in the form kube-apiserver answers. */
export function toTable(
  r: ResourceInfo,
  items: readonly KubeObject[],
  resourceVersion: string,
  includeObject: string | null,
  opts: { continue?: string } = {},
): KubeObject {
  const cols = COLUMNS[r.plural] ?? [name, age];
  const now = Date.now();
  return {
    kind: "Table",
    apiVersion: "meta.k8s.io/v1",
    metadata: { resourceVersion, ...(opts.continue ? { continue: opts.continue } : {}) },
    columnDefinitions: cols.map((c) => ({
      name: c.name,
      type: c.type,
      format: c.format ?? "",
      description: c.name,
      priority: c.priority,
    })),
    rows: items.map((o) => ({ cells: cols.map((c) => c.cell(o, now)), object: rowObject(o, includeObject) })),
  };
}
