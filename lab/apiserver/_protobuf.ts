/**
 * Accepts what kubectl's typed clients send as protobuf (`kubectl create service|deployment|
 * serviceaccount|role|token …` post `application/vnd.kubernetes.protobuf` and never fall back to JSON):
 * the `k8s\0` envelope (runtime.Unknown with its TypeMeta) around the object, decoded field by field
 * with the tables of `_protobuf_schema.ts` into the object's JSON form. Kinds not in the tables answer
 * 415, as kube-apiserver does for a type it cannot decode.
 */
import { type Field, fields } from "./_protobuf_wire.ts";
import { PROTOBUF_MESSAGES, PROTOBUF_ROOTS } from "./_protobuf_schema.ts";
import type { KubeObject } from "./types.ts";

const MAGIC = [0x6b, 0x38, 0x73, 0x00]; // "k8s\0"

/**
 * Pointer fields in Go, where a zero value that was sent means something (replicas: 0 is not 1).
 * Every other scalar left at its zero value is dropped, as the JSON encoding's omitempty does: gogo
 * protobuf writes non-pointer fields even when empty.
 */
const ZERO_KEPT = new Set([
  "replicas",
  "automountServiceAccountToken",
  "allocateLoadBalancerNodePorts",
  "terminationGracePeriodSeconds",
  "revisionHistoryLimit",
  "progressDeadlineSeconds",
  "expirationSeconds",
  "readOnlyRootFilesystem",
  "runAsNonRoot",
  "privileged",
]);

/**
 * Fields of Go structs embedded with `json:",inline"`: in protobuf a message field of its own, in JSON
 * its fields sit in the parent (a Probe's `httpGet`, a Volume's `hostPath`), as `message.field`.
 */
export const EMBEDDED_FIELDS: ReadonlySet<string> = new Set([
  "core.v1.Probe.handler",
  "core.v1.Volume.volumeSource",
  "core.v1.EphemeralContainer.ephemeralContainerCommon",
]);

interface FieldSpec {
  name: string;
  repeated: boolean;
  /** s, i, b, y, d, f; a message name; or `{k:v}` for a map. */
  type: string;
}

const compiled = new Map<string, Map<number, FieldSpec>>();

function messageSpec(name: string): Map<number, FieldSpec> {
  let m = compiled.get(name);
  if (m) return m;
  const text = PROTOBUF_MESSAGES[name];
  if (text === undefined) throw new RangeError(`no protobuf table for ${name}`);
  m = new Map();
  for (const part of text.split(" ").filter(Boolean)) {
    const eq = part.indexOf("="), colon = part.indexOf(":");
    const type = part.slice(colon + 1);
    m.set(Number(part.slice(eq + 1, colon)), {
      name: part.slice(0, eq),
      repeated: type.startsWith("*"),
      type: type.replace(/^\*/, ""),
    });
  }
  compiled.set(name, m);
  return m;
}

const dec = new TextDecoder("utf-8", { fatal: true });
const text = (b: Uint8Array | undefined): string => dec.decode(b ?? new Uint8Array());

function b64(b: Uint8Array): string {
  let s = "";
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s);
}

function rfc3339(seconds: number, nanos: number, micro: boolean): string {
  const iso = new Date(seconds * 1000).toISOString().replace(/\.\d+Z$/, "");
  return micro ? `${iso}.${String(Math.floor(nanos / 1000)).padStart(6, "0")}Z` : `${iso}Z`;
}

/** The messages whose JSON form is not their fields (timestamps, int-or-string, quantities, raw JSON). */
function decodeOpaque(name: string, b: Uint8Array): unknown {
  const f = new Map<number, Field>();
  for (const x of fields(b)) f.set(x.no, x);
  switch (name) {
    case "meta.v1.Time":
    case "meta.v1.MicroTime": {
      const s = f.get(1)?.int ?? 0, n = f.get(2)?.int ?? 0;
      return s === 0 && n === 0 ? undefined : rfc3339(s, n, name === "meta.v1.MicroTime");
    }
    case "meta.v1.Duration": {
      const ns = f.get(1)?.int ?? 0;
      return `${ns / 1e9}s`;
    }
    case "util.intstr.IntOrString":
      return f.get(1)?.int === 1 ? text(f.get(3)?.bytes) : (f.get(2)?.int ?? 0);
    case "api.resource.Quantity":
      return text(f.get(1)?.bytes);
    case "runtime.RawExtension":
    case "meta.v1.FieldsV1": {
      const raw = f.get(1)?.bytes;
      return raw && raw.length ? JSON.parse(text(raw)) : undefined;
    }
  }
  throw new RangeError(`no decoder for ${name}`);
}

function scalar(type: string, f: Field): unknown {
  switch (type) {
    case "s":
      return text(f.bytes);
    case "i":
      return f.int;
    case "b":
      return f.int !== 0;
    case "y":
      return b64(f.bytes ?? new Uint8Array());
    case "d":
      return new DataView(f.fixed!.buffer, f.fixed!.byteOffset, 8).getFloat64(0, true);
    case "f":
      return new DataView(f.fixed!.buffer, f.fixed!.byteOffset, 4).getFloat32(0, true);
  }
  throw new RangeError(`unknown scalar type ${type}`);
}

/** A varint scalar sent packed (wire 2) in a repeated field. */
function unpack(type: string, f: Field): unknown[] {
  if (f.wire !== 2 || (type !== "i" && type !== "b")) return [scalar(type, f)];
  const out: unknown[] = [];
  // A packed run is a sequence of varints: read it as fields of a fake tag-less stream.
  let i = 0;
  const buf = f.bytes!;
  while (i < buf.length) {
    let v = 0n, shift = 0n;
    for (;;) {
      if (i >= buf.length) throw new RangeError("truncated packed varint");
      const b = buf[i++]!;
      v |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) break;
      shift += 7n;
    }
    const n = Number(BigInt.asIntN(64, v));
    out.push(type === "b" ? n !== 0 : n);
  }
  return out;
}

function value(type: string, f: Field): unknown {
  if (type.length === 1) return scalar(type, f);
  if (type.startsWith("{")) {
    const [k, v] = type.slice(1, -1).split(":") as [string, string];
    let key: unknown = k === "s" ? "" : 0, val: unknown;
    for (const g of fields(f.bytes!)) {
      if (g.no === 1) key = value(k, g);
      if (g.no === 2) val = value(v, g);
    }
    return [String(key), val ?? (v === "s" ? "" : v.length === 1 ? undefined : {})];
  }
  if (PROTOBUF_MESSAGES[type] === "") return decodeOpaque(type, f.bytes!);
  return decodeMessage(type, f.bytes!);
}

function isZero(v: unknown): boolean {
  return v === "" || v === 0 || v === false || v === undefined;
}

function decodeMessage(name: string, b: Uint8Array): Record<string, unknown> {
  const spec = messageSpec(name);
  const out: Record<string, unknown> = {};
  for (const f of fields(b)) {
    const s = spec.get(f.no);
    if (!s) continue; // a field newer than kubectl v1.32's tables: dropped, as an unknown JSON field
    if (s.type.startsWith("{")) {
      const [k, v] = value(s.type, f) as [string, unknown];
      ((out[s.name] ??= {}) as Record<string, unknown>)[k] = v;
    } else if (s.repeated) {
      const list = (out[s.name] ??= []) as unknown[];
      if (s.type.length === 1) list.push(...unpack(s.type, f));
      else list.push(value(s.type, f));
    } else {
      const v = value(s.type, f);
      if (EMBEDDED_FIELDS.has(`${name}.${s.name}`)) Object.assign(out, v);
      else if (v === undefined || (isZero(v) && !ZERO_KEPT.has(s.name))) delete out[s.name];
      else out[s.name] = v;
    }
  }
  return out;
}

/** Whether a body is in the protobuf envelope. */
export function isProtobuf(body: Uint8Array): boolean {
  return MAGIC.every((b, i) => body[i] === b);
}

/**
 * Decodes a protobuf-encoded object into its JSON form; undefined for a kind without tables. Throws
 * RangeError or TypeError on bytes that do not parse.
 */
export function decodeProtobufObject(body: Uint8Array): KubeObject | undefined {
  let apiVersion = "", kind = "";
  let raw: Uint8Array | undefined;
  for (const f of fields(body.subarray(MAGIC.length))) {
    if (f.no === 1 && f.bytes) {
      for (const t of fields(f.bytes)) {
        if (t.no === 1) apiVersion = text(t.bytes);
        if (t.no === 2) kind = text(t.bytes);
      }
    }
    if (f.no === 2) raw = f.bytes;
  }
  const root = PROTOBUF_ROOTS[`${apiVersion}/${kind}`];
  if (!root || !raw) return undefined;
  return { apiVersion, kind, ...decodeMessage(root, raw) };
}
