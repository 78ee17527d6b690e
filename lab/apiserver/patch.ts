/**
 * The three patch formats `kubectl` sends: JSON merge patch (RFC 7386; `kubectl label`, `annotate`),
 * strategic merge patch (`kubectl apply`, `kubectl patch`: like merge patch, but lists of named items
 * such as containers and ports are merged by key) and JSON patch (RFC 6902; `kubectl patch --type json`).
 */
import { ApiError, badRequest } from "./errors.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

const isObject = (v: unknown): v is Record<string, Json> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/** RFC 7386: objects merge recursively, `null` deletes a key, anything else (lists too) replaces. */
export function jsonMergePatch(target: Json, patch: Json): Json {
  if (!isObject(patch)) return structuredClone(patch);
  const out: Record<string, Json> = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = jsonMergePatch(out[k], v);
  }
  return out;
}

/**
 * Merge keys of the lists the strategic merge patch merges item by item, by field name and, where the
 * same name means different lists, by the parent field (the `x-kubernetes-patch-merge-key` of the
 * Kubernetes OpenAPI schema, for the resources this server serves).
 */
function mergeKeyFor(field: string, path: readonly string[]): string | undefined {
  const parent = path[path.length - 1];
  switch (field) {
    case "containers":
    case "initContainers":
    case "ephemeralContainers":
    case "volumes":
    case "env":
    case "imagePullSecrets":
    case "conditions":
      return field === "conditions" ? "type" : "name";
    case "volumeMounts":
      return "mountPath";
    case "volumeDevices":
      return "devicePath";
    case "ports":
      // Container ports merge on containerPort; Service ports on port. EndpointSlice and NetworkPolicy
      // ports are atomic lists (replaced).
      if (path.includes("containers") || path.includes("initContainers")) return "containerPort";
      if (parent === "spec" && path.length === 1) return "port";
      return undefined;
    case "ownerReferences":
      return "uid";
    case "addresses":
      return path[0] === "status" ? "type" : undefined;
    case "taints":
      return "key";
    case "hostAliases":
      return "ip";
    default:
      return undefined;
  }
}

/** Lists of scalars that strategic merge unions rather than replaces. */
function isMergedScalarList(field: string, path: readonly string[]): boolean {
  return field === "finalizers" && path.length === 1 && path[0] === "metadata";
}

/**
 * Strategic merge patch for the cases kubectl produces: maps merge, `null` deletes, keyed lists merge
 * by key (with `$patch: delete` items and `$setElementOrder/<field>` ordering), other lists are
 * replaced, `$patch: replace` replaces a map and `$retainKeys` drops keys not listed.
 */
export function strategicMergePatch(target: Json, patch: Json, path: readonly string[] = []): Json {
  if (!isObject(patch)) return structuredClone(patch);
  if (patch["$patch"] === "replace") {
    const { $patch: _, ...rest } = patch;
    return stripDirectives(rest);
  }
  if (patch["$patch"] === "delete") return undefined;
  let out: Record<string, Json> = isObject(target) ? { ...target } : {};
  const orders = new Map<string, Json[]>();
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith("$setElementOrder/")) {
      if (Array.isArray(v)) orders.set(k.slice("$setElementOrder/".length), v);
      continue;
    }
    if (k.startsWith("$deleteFromPrimitiveList/")) {
      const field = k.slice("$deleteFromPrimitiveList/".length);
      if (Array.isArray(out[field]) && Array.isArray(v)) {
        out[field] = out[field].filter((x: Json) => !v.includes(x));
      }
      continue;
    }
    if (k === "$retainKeys" || k === "$patch") continue;
    if (v === null) {
      delete out[k];
      continue;
    }
    if (Array.isArray(v)) {
      const key = mergeKeyFor(k, path);
      if (key && Array.isArray(out[k])) out[k] = mergeKeyedList(out[k], v, key, [...path, k]);
      else if (isMergedScalarList(k, path) && Array.isArray(out[k])) {
        out[k] = [...out[k], ...v.filter((x) => !out[k].includes(x))];
      } else out[k] = key ? mergeKeyedList([], v, key, [...path, k]) : stripDirectives(v);
      continue;
    }
    const merged = strategicMergePatch(out[k], v, [...path, k]);
    if (merged === undefined) delete out[k];
    else out[k] = merged;
  }
  if (Array.isArray(patch["$retainKeys"])) {
    const keep = new Set<string>(patch["$retainKeys"]);
    out = Object.fromEntries(Object.entries(out).filter(([k]) => keep.has(k)));
  }
  for (const [field, order] of orders) {
    const key = mergeKeyFor(field, path);
    if (key && Array.isArray(out[field])) out[field] = applyOrder(out[field], order, key);
  }
  return out;
}

function mergeKeyedList(target: Json[], patch: Json[], key: string, path: readonly string[]): Json[] {
  const out = [...target];
  for (const item of patch) {
    if (!isObject(item) || !(key in item)) {
      // Not a keyed item: the whole list is replaced, as the real server does for malformed input.
      return stripDirectives(patch);
    }
    const idx = out.findIndex((t) => isObject(t) && t[key] === item[key]);
    if (item["$patch"] === "delete") {
      if (idx >= 0) out.splice(idx, 1);
      continue;
    }
    if (idx >= 0) out[idx] = strategicMergePatch(out[idx], item, path);
    else out.push(strategicMergePatch(undefined, item, path));
  }
  return out;
}

function applyOrder(list: Json[], order: Json[], key: string): Json[] {
  const rank = new Map<unknown, number>();
  order.forEach((o, i) => isObject(o) && rank.set(o[key], i));
  return [...list].sort((a, b) => (rank.get(a?.[key]) ?? Infinity) - (rank.get(b?.[key]) ?? Infinity));
}

function stripDirectives(v: Json): Json {
  if (Array.isArray(v)) return v.map(stripDirectives);
  if (!isObject(v)) return v;
  const out: Record<string, Json> = {};
  for (const [k, x] of Object.entries(v)) if (!k.startsWith("$")) out[k] = stripDirectives(x);
  return out;
}

function pointer(path: string): string[] {
  if (path === "") return [];
  if (!path.startsWith("/")) throw badRequest(`invalid JSON pointer "${path}"`);
  return path.slice(1).split("/").map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function resolveParent(doc: Json, parts: string[]): [Json, string] {
  let cur = doc;
  for (const p of parts.slice(0, -1)) {
    cur = Array.isArray(cur) ? cur[Number(p)] : isObject(cur) ? cur[p] : undefined;
    if (cur === undefined) throw new ApiError(422, "Invalid", `doc is missing path: "/${parts.join("/")}"`);
  }
  return [cur, parts[parts.length - 1]!];
}

/** RFC 6902 JSON patch: add, remove, replace, move, copy, test. */
export function jsonPatch(doc: Json, ops: Json): Json {
  if (!Array.isArray(ops)) throw badRequest("a JSON patch must be a list of operations");
  let out = structuredClone(doc);
  const get = (path: string): Json => {
    let cur = out;
    for (const p of pointer(path)) {
      cur = Array.isArray(cur) ? cur[Number(p)] : isObject(cur) ? cur[p] : undefined;
      if (cur === undefined) throw new ApiError(422, "Invalid", `doc is missing path: "${path}"`);
    }
    return cur;
  };
  const remove = (path: string): Json => {
    const parts = pointer(path);
    const [parent, last] = resolveParent(out, parts);
    if (Array.isArray(parent)) return parent.splice(Number(last), 1)[0];
    if (!isObject(parent) || !(last in parent)) {
      throw new ApiError(422, "Invalid", `doc is missing path: "${path}"`);
    }
    const v = parent[last];
    delete parent[last];
    return v;
  };
  const add = (path: string, value: Json, replace: boolean): void => {
    const parts = pointer(path);
    if (parts.length === 0) {
      out = structuredClone(value);
      return;
    }
    const [parent, last] = resolveParent(out, parts);
    if (Array.isArray(parent)) {
      const i = last === "-" ? parent.length : Number(last);
      if (!(i >= 0 && i <= parent.length)) {
        throw new ApiError(422, "Invalid", `index out of range: "${path}"`);
      }
      if (replace) parent[i] = structuredClone(value);
      else parent.splice(i, 0, structuredClone(value));
    } else if (isObject(parent)) {
      if (replace && !(last in parent)) throw new ApiError(422, "Invalid", `doc is missing key: "${path}"`);
      parent[last] = structuredClone(value);
    } else throw new ApiError(422, "Invalid", `doc is missing path: "${path}"`);
  };
  for (const op of ops) {
    if (!isObject(op) || typeof op.path !== "string") throw badRequest("invalid JSON patch operation");
    switch (op.op) {
      case "add":
        add(op.path, op.value, false);
        break;
      case "replace":
        add(op.path, op.value, true);
        break;
      case "remove":
        remove(op.path);
        break;
      case "move":
        add(op.path, remove(String(op.from)), false);
        break;
      case "copy":
        add(op.path, structuredClone(get(String(op.from))), false);
        break;
      case "test":
        if (JSON.stringify(get(op.path)) !== JSON.stringify(op.value)) {
          throw new ApiError(422, "Invalid", `testing value ${op.path} failed`);
        }
        break;
      default:
        throw badRequest(`unknown JSON patch operation ${String(op.op)}`);
    }
  }
  return out;
}

export type PatchType = "merge" | "strategic" | "json";

/** The patch type of a `Content-Type` header of a PATCH request. */
export function patchTypeOf(contentType: string | undefined): PatchType | undefined {
  const ct = (contentType ?? "").split(";")[0]!.trim();
  if (ct === "application/merge-patch+json") return "merge";
  if (ct === "application/strategic-merge-patch+json") return "strategic";
  if (ct === "application/json-patch+json") return "json";
  return undefined;
}

/** Applies a patch of the given type to a JSON document. */
export function applyPatch(type: PatchType, doc: Json, patch: Json): Json {
  switch (type) {
    case "merge":
      return jsonMergePatch(doc, patch);
    case "strategic":
      return strategicMergePatch(doc, patch);
    case "json":
      return jsonPatch(doc, patch);
  }
}
