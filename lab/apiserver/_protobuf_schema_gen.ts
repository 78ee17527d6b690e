/**
 * Writes `_protobuf_schema.ts`: the field tables of the Kubernetes protobuf messages kubectl sends,
 * read from the gzipped FileDescriptorProtos that every Go binary built with k8s.io/api embeds (kubectl
 * v1.32 here), so the numbers come from the same build that sends the bytes.
 *
 *   deno run -A lab/apiserver/_protobuf_schema_gen.ts [/usr/bin/kubectl]
 */
import { inflateRawSync } from "node:zlib";
import { fields } from "./_protobuf_wire.ts";

/**
 * Objects the lab serves, by `apiVersion/kind`: kubectl may send them as protobuf, and their fields are
 * the known fields of strict field validation (field_validation.ts).
 */
const ROOTS: Record<string, string> = {
  "v1/Namespace": ".k8s.io.api.core.v1.Namespace",
  "v1/Node": ".k8s.io.api.core.v1.Node",
  "v1/Pod": ".k8s.io.api.core.v1.Pod",
  "v1/Service": ".k8s.io.api.core.v1.Service",
  "v1/ServiceAccount": ".k8s.io.api.core.v1.ServiceAccount",
  "v1/Event": ".k8s.io.api.core.v1.Event",
  "apps/v1/Deployment": ".k8s.io.api.apps.v1.Deployment",
  "apps/v1/ReplicaSet": ".k8s.io.api.apps.v1.ReplicaSet",
  "apps/v1/DaemonSet": ".k8s.io.api.apps.v1.DaemonSet",
  "autoscaling/v1/Scale": ".k8s.io.api.autoscaling.v1.Scale",
  "discovery.k8s.io/v1/EndpointSlice": ".k8s.io.api.discovery.v1.EndpointSlice",
  "networking.k8s.io/v1/NetworkPolicy": ".k8s.io.api.networking.v1.NetworkPolicy",
  "rbac.authorization.k8s.io/v1/Role": ".k8s.io.api.rbac.v1.Role",
  "rbac.authorization.k8s.io/v1/ClusterRole": ".k8s.io.api.rbac.v1.ClusterRole",
  "rbac.authorization.k8s.io/v1/RoleBinding": ".k8s.io.api.rbac.v1.RoleBinding",
  "rbac.authorization.k8s.io/v1/ClusterRoleBinding": ".k8s.io.api.rbac.v1.ClusterRoleBinding",
  "authentication.k8s.io/v1/TokenRequest": ".k8s.io.api.authentication.v1.TokenRequest",
  "authorization.k8s.io/v1/SelfSubjectAccessReview": ".k8s.io.api.authorization.v1.SelfSubjectAccessReview",
};

/** Messages with a JSON form of their own, decoded by hand rather than field by field. */
const OPAQUE = new Set([
  ".k8s.io.apimachinery.pkg.apis.meta.v1.Time",
  ".k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime",
  ".k8s.io.apimachinery.pkg.apis.meta.v1.Duration",
  ".k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1",
  ".k8s.io.apimachinery.pkg.util.intstr.IntOrString",
  ".k8s.io.apimachinery.pkg.api.resource.Quantity",
  ".k8s.io.apimachinery.pkg.runtime.RawExtension",
]);

interface FieldDesc {
  name: string;
  no: number;
  repeated: boolean;
  type: number;
  typeName: string;
}
interface MsgDesc {
  fields: FieldDesc[];
  mapEntry: boolean;
}

const dec = new TextDecoder();
const messages = new Map<string, MsgDesc>();

function readMessage(b: Uint8Array, prefix: string): void {
  let name = "";
  const fl: FieldDesc[] = [];
  const nested: Uint8Array[] = [];
  let mapEntry = false;
  for (const f of fields(b)) {
    if (f.no === 1) name = dec.decode(f.bytes);
    else if (f.no === 2) {
      const d: FieldDesc = { name: "", no: 0, repeated: false, type: 0, typeName: "" };
      for (const g of fields(f.bytes!)) {
        if (g.no === 1) d.name = dec.decode(g.bytes);
        if (g.no === 3) d.no = g.int!;
        if (g.no === 4) d.repeated = g.int === 3;
        if (g.no === 5) d.type = g.int!;
        if (g.no === 6) d.typeName = dec.decode(g.bytes);
      }
      fl.push(d);
    } else if (f.no === 3) nested.push(f.bytes!);
    else if (f.no === 7) { for (const g of fields(f.bytes!)) if (g.no === 7) mapEntry = g.int === 1; }
  }
  const full = `${prefix}.${name}`;
  messages.set(full, { fields: fl, mapEntry });
  for (const n of nested) readMessage(n, full);
}

const binary = Deno.args[0] ?? "/usr/bin/kubectl";
const data = await Deno.readFile(binary);
const magic = [0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00];
for (let i = data.indexOf(0x1f); i >= 0 && i < data.length - 10; i = data.indexOf(0x1f, i + 1)) {
  if (!magic.every((b, j) => data[i + j] === b)) continue;
  let out: Uint8Array;
  try {
    out = new Uint8Array(inflateRawSync(data.subarray(i + 10, i + 10 + 400_000), { finishFlush: 2 }));
  } catch {
    continue;
  }
  let file = "", pkg = "";
  try {
    for (const f of fields(out)) {
      if (f.no === 1) file = dec.decode(f.bytes);
      if (f.no === 2) pkg = dec.decode(f.bytes);
    }
  } catch {
    continue;
  }
  if (!file.startsWith("k8s.io/") || !file.endsWith("generated.proto")) continue;
  for (const f of fields(out)) if (f.no === 4) readMessage(f.bytes!, `.${pkg}`);
}

const short = (n: string) =>
  n.replace(/^\.k8s\.io\.api\./, "").replace(/^\.k8s\.io\.apimachinery\.pkg\.apis\./, "")
    .replace(/^\.k8s\.io\.apimachinery\.pkg\./, "");

const SCALAR: Record<number, string> = {
  1: "d",
  2: "f",
  3: "i",
  4: "i",
  5: "i",
  8: "b",
  9: "s",
  12: "y",
  13: "i",
};
function typeOf(f: FieldDesc, need: string[]): string {
  if (f.type !== 11) {
    const t = SCALAR[f.type];
    if (!t) throw new Error(`field ${f.name}: unsupported protobuf type ${f.type}`);
    return t;
  }
  const m = messages.get(f.typeName);
  if (!m) throw new Error(`unknown message ${f.typeName}`);
  if (m.mapEntry) {
    const k = m.fields.find((x) => x.no === 1)!, v = m.fields.find((x) => x.no === 2)!;
    return `{${typeOf(k, need)}:${typeOf(v, need)}}`;
  }
  need.push(f.typeName);
  return short(f.typeName);
}

/**
 * The JSON name of a field: the proto name, except where go-to-protobuf lower-cased only the first
 * letter of an all-capitals Go name (BoundObjectReference's `UID` is `uID` in protobuf, `uid` in JSON).
 */
function jsonName(name: string): string {
  return /^[a-z][A-Z]+$/.test(name) ? name.toLowerCase() : name;
}

const out: Record<string, string> = {};
const stack = Object.values(ROOTS);
while (stack.length) {
  const name = stack.pop()!;
  const s = short(name);
  if (s in out) continue;
  if (OPAQUE.has(name)) {
    out[s] = "";
    continue;
  }
  const m = messages.get(name);
  if (!m) throw new Error(`message ${name} not found in ${binary}`);
  out[s] = m.fields.map((f) => `${jsonName(f.name)}=${f.no}:${f.repeated ? "*" : ""}${typeOf(f, stack)}`)
    .join(" ");
}
const roots = Object.fromEntries(Object.entries(ROOTS).map(([k, v]) => [k, short(v)]));
const sorted = Object.fromEntries(Object.entries(out).sort(([a], [b]) => a < b ? -1 : 1));
const text = `// Generated by _protobuf_schema_gen.ts from ${binary} (${(await new Deno.Command(binary, {
  args: ["version", "--client", "-o", "json"],
}).output().then((o) => JSON.parse(dec.decode(o.stdout)).clientVersion.gitVersion).catch(() =>
  "unknown version"
))}); do not edit.
// Each message: space-separated \`jsonName=fieldNumber:type\`; \`*\` repeated, \`{k:v}\` a map, s string,
// i integer, b bool, y bytes, d/f double/float, otherwise a message name ("" = decoded by hand).

/** The message of each object kubectl may send as protobuf, by \`apiVersion/kind\`. */
export const PROTOBUF_ROOTS: Readonly<Record<string, string>> = ${JSON.stringify(roots, null, 2)};

/** Field tables of every message reachable from the roots. */
export const PROTOBUF_MESSAGES: Readonly<Record<string, string>> = ${JSON.stringify(sorted, null, 2)};
`;
const target = new URL("./_protobuf_schema.ts", import.meta.url);
await Deno.writeTextFile(target, text);
console.log(`wrote ${Object.keys(sorted).length} messages to ${target.pathname}`);
