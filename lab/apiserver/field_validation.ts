/**
 * Field validation as kube-apiserver does it for a JSON body (`?fieldValidation=Strict|Warn|Ignore` on
 * create, update and patch): a field the kind does not have is an error (Strict, 400 `strict decoding
 * error: unknown field "spec.foo"`), a `Warning:` header (Warn, the default when the parameter is absent) or
 * nothing (Ignore); in the last two cases the field is dropped, as decoding into Kubernetes' Go types drops
 * it, so it is never stored. kubectl 1.32 sends `fieldValidation=Strict` once the server's OpenAPI v3
 * document lists the parameter for the kind's PATCH (see {@link openApiV3}).
 *
 * The known fields of each kind are the Kubernetes protobuf messages' fields (`_protobuf_schema.ts`, read
 * from kubectl v1.32's own descriptors), so every field Kubernetes 1.32 has is accepted and no invented one
 * is. Values of opaque types (timestamps, quantities, int-or-string, managedFields' fieldsV1) and map keys
 * are not looked into. Not done: duplicate keys (JSON.parse keeps the last) and type mismatches.
 */
import { badRequest, invalid } from "./errors.ts";
import { PROTOBUF_MESSAGES, PROTOBUF_ROOTS } from "./_protobuf_schema.ts";
import { EMBEDDED_FIELDS } from "./_protobuf.ts";
import { apiVersionOf, type ResourceInfo, RESOURCES } from "./resources.ts";
import type { KubeObject } from "./types.ts";

export type FieldValidation = "Strict" | "Warn" | "Ignore";

/** The directive of a request (kube-apiserver: absent means Warn); an unsupported value is 422. */
export function fieldValidationOf(
  q: URLSearchParams,
  options: "CreateOptions" | "UpdateOptions" | "PatchOptions",
): FieldValidation {
  const v = q.get("fieldValidation") ?? "";
  if (v === "") return "Warn";
  if (v === "Strict" || v === "Warn" || v === "Ignore") return v;
  throw invalid(`${options}.meta.k8s.io`, "meta.k8s.io", "", [{
    field: "fieldValidation",
    reason: "FieldValueNotSupported",
    message: `Unsupported value: ${JSON.stringify(v)}: supported values: "Ignore", "Strict", "Warn"`,
  }]);
}

interface FieldType {
  repeated: boolean;
  /** A message name, `{k:v}` for a map, or a scalar letter (s, i, b, y, d, f). */
  type: string;
}

const compiled = new Map<string, Map<string, FieldType>>();

function fieldsOf(message: string): Map<string, FieldType> | undefined {
  const text = PROTOBUF_MESSAGES[message];
  if (text === undefined || text === "") return undefined;
  let m = compiled.get(message);
  if (m) return m;
  m = new Map();
  for (const part of text.split(" ").filter(Boolean)) {
    const eq = part.indexOf("="), colon = part.indexOf(":");
    const name = part.slice(0, eq), type = part.slice(colon + 1);
    if (EMBEDDED_FIELDS.has(`${message}.${name}`)) {
      // An inlined struct's fields are the parent's own in JSON.
      for (const [k, f] of fieldsOf(type) ?? []) m.set(k, f);
      continue;
    }
    m.set(name, { repeated: type.startsWith("*"), type: type.replace(/^\*/, "") });
  }
  compiled.set(message, m);
  return m;
}

/** The message of a served kind, or undefined for kinds without one (reviews, Binding). */
function rootOf(r: ResourceInfo): string | undefined {
  return PROTOBUF_ROOTS[`${apiVersionOf(r)}/${r.kind}`];
}

/** Whether the lab knows the fields of this resource's kind. */
export function hasSchema(r: ResourceInfo): boolean {
  return rootOf(r) !== undefined;
}

/**
 * The unknown fields of `obj` (a `kind` object of resource `r`) as kube-apiserver names them
 * (`spec.template.spec.containers[0].bar`), in document order; with `prune` they are also deleted from
 * `obj` (which must be the caller's own copy).
 */
export function unknownFields(r: ResourceInfo, obj: KubeObject, prune: boolean): string[] {
  const root = rootOf(r);
  if (!root) return [];
  const out: string[] = [];
  walkMessage(obj, root, "", out, prune, true);
  return out;
}

function walkMessage(
  // deno-lint-ignore no-explicit-any
  v: any,
  message: string,
  path: string,
  out: string[],
  prune: boolean,
  top = false,
): void {
  if (v === null || typeof v !== "object" || Array.isArray(v)) return;
  const fields = fieldsOf(message);
  if (!fields) return; // opaque (Time, Quantity, IntOrString, FieldsV1, RawExtension)
  for (const key of Object.keys(v)) {
    const f = fields.get(key);
    const here = path ? `${path}.${key}` : key;
    if (!f) {
      if (top && (key === "apiVersion" || key === "kind")) continue;
      out.push(here);
      if (prune) delete v[key];
      continue;
    }
    walkValue(v[key], f, here, out, prune);
  }
}

// deno-lint-ignore no-explicit-any
function walkValue(v: any, f: FieldType, path: string, out: string[], prune: boolean): void {
  if (v === null || v === undefined) return;
  const map = /^\{[^:]+:(.+)\}$/.exec(f.type);
  if (map) {
    // A map field (labels, nodeSelector, resources' limits): its keys are data, its values may be messages.
    if (typeof v !== "object" || Array.isArray(v)) return;
    const inner: FieldType = { repeated: false, type: map[1]! };
    for (const k of Object.keys(v)) walkValue(v[k], inner, `${path}.${k}`, out, prune);
    return;
  }
  if (!PROTOBUF_MESSAGES[f.type]) return; // scalar
  if (f.repeated && Array.isArray(v)) {
    v.forEach((x, i) => walkMessage(x, f.type, `${path}[${i}]`, out, prune));
    return;
  }
  walkMessage(v, f.type, path, out, prune);
}

/** What a write does about unknown fields: the directive and where to put warnings. */
export interface FieldCheck {
  mode: FieldValidation;
  /** Receives the Warn mode's messages (`unknown field "spec.foo"`), one per field. */
  warn: (message: string) => void;
}

const unknownText = (paths: string[]) => paths.map((p) => `unknown field ${JSON.stringify(p)}`);

/**
 * Checks a create or update body (already the server's own copy): Strict throws kube-apiserver's 400
 * (`Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: …`), Warn warns,
 * and both Warn and Ignore drop the unknown fields from `body`.
 */
export function checkBody(r: ResourceInfo, body: KubeObject, check: FieldCheck): void {
  const paths = unknownFields(r, body, check.mode !== "Strict");
  if (!paths.length) return;
  if (check.mode === "Strict") {
    throw badRequest(
      `${r.kind} in version ${
        JSON.stringify(r.version)
      } cannot be handled as a ${r.kind}: strict decoding error: ${unknownText(paths).join(", ")}`,
    );
  }
  if (check.mode === "Warn") { for (const w of unknownText(paths)) check.warn(w); }
}

/**
 * Checks the result of a patch and returns what to store (without the unknown fields). Strict answers as kube-apiserver's patch handler:
 * 422 with the cause on field `patch` whose value is the patch as Go prints a map (strategic merge) or the
 * patched object's JSON (merge and JSON patches).
 */
export function checkPatched(
  r: ResourceInfo,
  patched: KubeObject,
  check: FieldCheck,
  patch: unknown,
  strategic: boolean,
): KubeObject {
  // Parts of a patched object are the stored (frozen) ones: look first, copy only to drop something.
  const paths = unknownFields(r, patched, false);
  if (!paths.length) return patched;
  if (check.mode === "Strict") {
    const value = strategic ? goValue(patch) : JSON.stringify(patched);
    throw invalid("", "", "", [{
      field: "patch",
      message: `Invalid value: ${JSON.stringify(value)}: strict decoding error: ${
        unknownText(paths).join(", ")
      }`,
    }]);
  }
  if (check.mode === "Warn") { for (const w of unknownText(paths)) check.warn(w); }
  const copy = structuredClone(patched);
  unknownFields(r, copy, true);
  return copy;
}

/** A JSON value as Go's `%+v` prints the map it decodes to: `map[spec:map[foo:1]]`, keys sorted. */
export function goValue(v: unknown): string {
  if (v === null || v === undefined) return "<nil>";
  if (Array.isArray(v)) return `[${v.map(goValue).join(" ")}]`;
  if (typeof v === "object") {
    const keys = Object.keys(v as object).sort();
    return `map[${keys.map((k) => `${k}:${goValue((v as Record<string, unknown>)[k])}`).join(" ")}]`;
  }
  return String(v);
}

/** The `Warning` response header value of one message (RFC 7234 warn-code 299, as kube-apiserver). */
export function warningHeader(message: string): string {
  return `299 - ${JSON.stringify(message)}`;
}

/**
 * The OpenAPI v3 discovery kubectl reads to learn that a kind's writes take `fieldValidation`: the index
 * (`/openapi/v3`) and one document per group version with, for every served kind, its PATCH operation
 * naming the parameter. Nothing else is described (no schemas, no request bodies), so kubectl keeps
 * computing apply patches from its built-in types and `kubectl explain` finds nothing.
 */
export function openApiV3(path: string): KubeObject | undefined {
  const gvs = new Map<string, ResourceInfo[]>();
  for (const r of RESOURCES.values()) {
    if (!hasSchema(r) || (r.verbs && !r.verbs.includes("patch"))) continue;
    const gv = r.group ? `apis/${r.group}/${r.version}` : `api/${r.version}`;
    gvs.set(gv, [...(gvs.get(gv) ?? []), r]);
  }
  if (path === "/openapi/v3" || path === "/openapi/v3/") {
    return {
      paths: Object.fromEntries(
        [...gvs.keys()].map((gv) => [gv, { serverRelativeURL: `/openapi/v3/${gv}?hash=${HASH}` }]),
      ),
    };
  }
  const resources = gvs.get(path.replace(/^\/openapi\/v3\//, ""));
  if (!resources) return undefined;
  const paths: Record<string, unknown> = {};
  for (const r of resources) {
    const base = `/${r.group ? `apis/${r.group}` : "api"}/${r.version}`;
    const item = r.namespaced
      ? `${base}/namespaces/{namespace}/${r.plural}/{name}`
      : `${base}/${r.plural}/{name}`;
    paths[item] = {
      patch: {
        operationId: `patch${r.kind}`,
        parameters: [{
          name: "fieldValidation",
          in: "query",
          description: "Strict, Warn (default) or Ignore: what the server does about unknown fields.",
          schema: { type: "string", uniqueItems: true },
        }],
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": { group: r.group, version: r.version, kind: r.kind },
      },
    };
  }
  return { openapi: "3.0.0", info: { title: "Kubernetes (kube-router lab)", version: "v1.32.0" }, paths };
}

/**
 * `/openapi/v2`: an empty Swagger 2.0 document (no definitions, no paths), in protobuf when asked for it as
 * kubectl does. kubectl validates a kind client-side against v2 when v3 does not list `fieldValidation`
 * for it (a `v1 List`, kinds the lab does not serve); finding no schema it leaves the object to the server,
 * which still gets `fieldValidation=Strict` for each item. Without the document kubectl refused such input
 * with "failed to download openapi".
 */
export function openApiV2(accept: string | undefined): { contentType: string; body: Uint8Array } {
  const enc = new TextEncoder();
  if (/protobuf/.test(accept ?? "")) {
    // openapi_v2.Document: swagger = 1 (string), info = 2 (Info: title = 1, version = 2).
    const field = (no: number, bytes: Uint8Array) => [(no << 3) | 2, bytes.length, ...bytes];
    const info = field(1, enc.encode("Kubernetes (kube-router lab)")).concat(field(2, enc.encode("v1.32.0")));
    const body = new Uint8Array([...field(1, enc.encode("2.0")), ...field(2, new Uint8Array(info))]);
    return { contentType: "application/com.github.proto-openapi.spec.v2.v1.0+protobuf", body };
  }
  const json = {
    swagger: "2.0",
    info: { title: "Kubernetes (kube-router lab)", version: "v1.32.0" },
    paths: {},
  };
  return { contentType: "application/json", body: enc.encode(JSON.stringify(json)) };
}

/** Changes whenever the lab's documents could (they depend only on the served kinds). */
const HASH = [...new TextEncoder().encode([...RESOURCES.keys()].join(","))]
  .reduce((h, b) => (h * 31 + b) >>> 0, 7).toString(16).toUpperCase().padStart(8, "0");
