/** Discovery documents (`/version`, `/api`, `/apis`, resource lists) that kubectl reads before anything else. */
import { apiVersionOf, type ResourceInfo, RESOURCES } from "./resources.ts";

export function versionInfo(): Record<string, string> {
  return {
    major: "1",
    minor: "32",
    gitVersion: "v1.32.0-lab",
    gitCommit: "0000000000000000000000000000000000000000",
    gitTreeState: "clean",
    buildDate: "2026-11-28T00:00:00Z",
    goVersion: "n/a (Deno " + Deno.version.deno + ")",
    compiler: "deno",
    platform: `${Deno.build.os}/${Deno.build.arch === "x86_64" ? "amd64" : Deno.build.arch}`,
  };
}

export function apiVersions(serverAddress: string): Record<string, unknown> {
  return {
    kind: "APIVersions",
    versions: ["v1"],
    serverAddressByClientCIDRs: [{ clientCIDR: "0.0.0.0/0", serverAddress }],
  };
}

function groups(): Map<string, ResourceInfo[]> {
  const out = new Map<string, ResourceInfo[]>();
  for (const r of RESOURCES.values()) {
    if (!r.group) continue;
    const list = out.get(r.group) ?? [];
    list.push(r);
    out.set(r.group, list);
  }
  return out;
}

export function apiGroup(group: string): Record<string, unknown> | undefined {
  const rs = groups().get(group);
  if (!rs) return undefined;
  const gv = { groupVersion: `${group}/${rs[0]!.version}`, version: rs[0]!.version };
  return { kind: "APIGroup", apiVersion: "v1", name: group, versions: [gv], preferredVersion: gv };
}

export function apiGroupList(): Record<string, unknown> {
  return {
    kind: "APIGroupList",
    apiVersion: "v1",
    groups: [...groups().keys()].map((g) => {
      const { kind: _k, apiVersion: _a, ...rest } = apiGroup(g)!;
      return rest;
    }),
  };
}

const VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

/** Subresources whose objects are of another kind (and group) than their parent's. */
const SUBRESOURCE_KINDS: Record<string, Record<string, unknown>> = {
  scale: { group: "autoscaling", version: "v1", kind: "Scale", verbs: ["get", "patch", "update"] },
  token: { group: "authentication.k8s.io", version: "v1", kind: "TokenRequest", verbs: ["create"] },
};

/** The APIResourceList of `/api/v1` (group "") or `/apis/<group>/<version>`; undefined if not served. */
export function apiResourceList(group: string, version: string): Record<string, unknown> | undefined {
  const rs = [...RESOURCES.values()].filter((r) => r.group === group && r.version === version);
  if (rs.length === 0) return undefined;
  const resources: Record<string, unknown>[] = [];
  for (const r of rs) {
    resources.push({
      name: r.plural,
      singularName: r.singular,
      namespaced: r.namespaced,
      kind: r.kind,
      verbs: r.verbs ?? (r.plural === "namespaces" ? VERBS.filter((v) => v !== "deletecollection") : VERBS),
      ...(r.shortNames.length ? { shortNames: r.shortNames } : {}),
      ...(r.categories.length ? { categories: r.categories } : {}),
    });
    if (r.plural === "pods") {
      resources.push({
        name: "pods/binding",
        singularName: "",
        namespaced: true,
        kind: "Binding",
        verbs: ["create"],
      });
    }
    for (const sub of r.subresources) {
      resources.push({
        name: `${r.plural}/${sub}`,
        singularName: "",
        namespaced: r.namespaced,
        ...SUBRESOURCE_KINDS[sub] ?? { kind: r.kind, verbs: ["get", "patch", "update"] },
      });
    }
  }
  return { kind: "APIResourceList", apiVersion: "v1", groupVersion: apiVersionOf(rs[0]!), resources };
}
