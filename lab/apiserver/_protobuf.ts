/**
 * Just enough of Kubernetes' protobuf encoding to accept what kubectl's typed clients send as protobuf
 * (`kubectl create namespace NAME`): the `k8s\0` envelope (runtime.Unknown with its TypeMeta) and the
 * ObjectMeta fields a created object carries. Other kinds answer 415, as before.
 */
import type { KubeObject, ObjectMeta } from "./types.ts";

const MAGIC = [0x6b, 0x38, 0x73, 0x00]; // "k8s\0"

interface Field {
  no: number;
  wire: number;
  /** Varint value (wire 0). */
  int?: number;
  /** Bytes (wire 2). */
  bytes?: Uint8Array;
}

function* fields(buf: Uint8Array): Generator<Field> {
  let i = 0;
  const varint = (): number => {
    let v = 0, mul = 1;
    for (;;) {
      if (i >= buf.length) throw new RangeError("truncated varint");
      const b = buf[i++]!;
      v += (b & 0x7f) * mul;
      if (!(b & 0x80)) return v;
      mul *= 128;
    }
  };
  while (i < buf.length) {
    const tag = varint();
    const no = Math.floor(tag / 8), wire = tag & 7;
    if (wire === 0) yield { no, wire, int: varint() };
    else if (wire === 2) {
      const len = varint();
      if (i + len > buf.length) throw new RangeError("truncated field");
      yield { no, wire, bytes: buf.subarray(i, i + len) };
      i += len;
    } else if (wire === 1) i += 8;
    else if (wire === 5) i += 4;
    else throw new RangeError(`unsupported wire type ${wire}`);
  }
}

const text = (b: Uint8Array | undefined): string => new TextDecoder().decode(b ?? new Uint8Array());

function mapEntry(b: Uint8Array): [string, string] {
  let k = "", v = "";
  for (const f of fields(b)) {
    if (f.no === 1) k = text(f.bytes);
    if (f.no === 2) v = text(f.bytes);
  }
  return [k, v];
}

function objectMeta(b: Uint8Array): ObjectMeta {
  const m: ObjectMeta = {};
  for (const f of fields(b)) {
    switch (f.no) {
      case 1:
        m.name = text(f.bytes);
        break;
      case 2:
        m.generateName = text(f.bytes);
        break;
      case 3:
        m.namespace = text(f.bytes);
        break;
      case 6:
        m.resourceVersion = text(f.bytes);
        break;
      case 11: {
        const [k, v] = mapEntry(f.bytes!);
        (m.labels ??= {})[k] = v;
        break;
      }
      case 12: {
        const [k, v] = mapEntry(f.bytes!);
        (m.annotations ??= {})[k] = v;
        break;
      }
      case 14:
        (m.finalizers ??= []).push(text(f.bytes));
        break;
    }
  }
  return m;
}

/** Whether a body is in the protobuf envelope. */
export function isProtobuf(body: Uint8Array): boolean {
  return MAGIC.every((b, i) => body[i] === b);
}

/**
 * Decodes a protobuf-encoded object into its JSON form, for the kinds whose fields beyond metadata are
 * understood here (Namespace); returns undefined for any other kind.
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
  if (kind !== "Namespace" || apiVersion !== "v1" || !raw) return undefined;
  const obj: KubeObject = { apiVersion, kind };
  for (const f of fields(raw)) {
    if (f.no === 1 && f.bytes) obj.metadata = objectMeta(f.bytes);
    if (f.no === 2 && f.bytes) {
      const finalizers: string[] = [];
      for (const s of fields(f.bytes)) if (s.no === 1) finalizers.push(text(s.bytes));
      obj.spec = finalizers.length ? { finalizers } : {};
    }
  }
  return obj;
}
